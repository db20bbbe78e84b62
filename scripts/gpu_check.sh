#!/usr/bin/env bash
# One-command GPU check (issue 14, item 5), sized for 8 minutes on one GPU:
#
#   1. env           torch / CUDA versions, device name, memory            (limit  30 s)
#   2. gpu_tests     pytest -m gpu (CUDA scores vs CPU autograd, ...)      (limit  90 s)
#   3. bench_lm      python -m simulations.bench_lm --device cuda, float32, then  (limit  90 s each)
#                    bfloat16: score and sampling ratios to their floors,
#                    tokens/s, peak memory, score MFU against the device's
#                    dense peak at that dtype (table below)
#   4. fit_scaling   python -m ustat_grpo.fit_scaling --device cuda on the (limit 150 s)
#                    built-in model (JSON + Markdown report)
#
# Every step writes its log (and its outputs) into one folder; summary.txt lists each step's exit
# status and seconds.  Each step runs under `timeout`, so the whole check stops within 7.5 min.
#
# Usage:  scripts/gpu_check.sh [OUT_DIR]        (default: results/gpu_check/<UTC time>)
#         PYTHON=/path/to/python scripts/gpu_check.sh
#         GPU_PEAK_TFLOPS_FLOAT32=.. GPU_PEAK_TFLOPS_BFLOAT16=.. override the peak table.
#         GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh   rehearses every step on the CPU (the gpu
#         tests are then skipped), to catch a broken step before GPU time is spent on it.
# Exit:   0 every step passed; 77 no GPU (nothing run, nothing written); else the number of
#         failed steps.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
DEV=${GPU_CHECK_DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DEV" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no GPU (torch.cuda.is_available() is False): nothing run" >&2
    exit 77
fi

OUT=${1:-results/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT" || exit 1
: > "$OUT/summary.txt"
failed=0

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log to $OUT/NAME.log, record the status
    local name=$1 limit=$2 start rc cmd
    shift 2
    cmd="$*"
    cmd=${cmd//$'\n'/ }
    echo "== $name (limit ${limit} s)"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%-18s rc=%-4s %4s s  %.150s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$cmd" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || { failed=$((failed + 1)); tail -n 20 "$OUT/$name.log"; }
}

# Dense (no sparsity) peak TFLOP/s by device name: float32 without TF32 (torch's default for
# matmuls), bfloat16 on tensor cores.  Vendor data sheets; 0 = unknown (MFU not reported).
peak() {
    "$PY" - "$1" <<'EOF'
import os, sys, torch
dtype = sys.argv[1]
env = os.environ.get(f"GPU_PEAK_TFLOPS_{dtype.upper()}")
if env or not torch.cuda.is_available():
    print(env or 0)
    sys.exit()
name = torch.cuda.get_device_name(0)
table = [  # (substring, float32, bfloat16), most specific first
    ("H200", 66.9, 989.4), ("H100 PCIe", 51.2, 756.0), ("H100", 66.9, 989.4),
    ("A100", 19.5, 312.0), ("L40S", 91.6, 362.1), ("L4", 30.3, 121.0), ("A10", 31.2, 125.0),
    ("RTX 4090", 82.6, 165.2), ("RTX 3090", 35.6, 71.0), ("V100", 15.7, 0.0), ("T4", 8.1, 0.0),
]
for key, f32, bf16 in table:
    if key in name:
        print(f32 if dtype == "float32" else bf16)
        break
else:
    print(0)
EOF
}

step env 30 "$PY" -c '
import torch, transformers, numpy
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__,
      "numpy", numpy.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "capability", f"{p.major}.{p.minor}", "memory GiB",
          round(p.total_memory / 2**30, 1), "bf16", torch.cuda.is_bf16_supported())
else:
    print("device cpu (rehearsal)")'
step gpu_tests 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
for dtype in float32 bfloat16; do
    step "bench_lm_$dtype" 90 "$PY" -m simulations.bench_lm --device "$DEV" --dtype "$dtype" \
        --peak-tflops "$(peak "$dtype")" --out "$OUT/bench_lm_$dtype"
done
step fit_scaling 150 "$PY" -m ustat_grpo.fit_scaling --device "$DEV" --format json \
    --output "$OUT/fit_scaling.json" --report "$OUT/fit_scaling_report"

echo "gpu_check: $failed failed step(s); outputs in $OUT"
exit "$failed"
