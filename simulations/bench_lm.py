"""Benchmark per-sample scores against one batched forward + backward pass.

For G completions of one arithmetic question (sampled from the policy), times

* ``per_sample``: ``ustat_grpo.lm.per_sample_scores`` (vmap(grad) over functional_call; all
  parameters, one chunk of G, flattened to (G, d));
* ``per_sample`` unflattened: the same, returned as one (G, *shape) tensor per parameter
  (``flatten=False``), i.e. without the copy into one (G, d) matrix;
* ``batched``: one forward + backward of ``sum_i log pi(y_i | x)`` over the same padded batch
  (the cost of an ordinary policy-gradient step);

and reports their ratio (target <= 2), tokens per second of the per-sample path, and peak memory
(CUDA: ``torch.cuda.max_memory_allocated``; CPU: growth of the process's peak RSS, a coarse
high-water mark).  Runs on the GPU when one is present.  Writes ``bench_lm.nc``.  Usage::

    python simulations/bench_lm.py                        # built-in strong model, CPU, ~1 min
    python simulations/bench_lm.py --model PATH --device cuda --num-generations 8,16,32,64
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import torch  # noqa: E402

from ustat_grpo import arithmetic, lm  # noqa: E402
from ustat_grpo._cli import parser_from_dataclass  # noqa: E402
from ustat_grpo.provenance import provenance_attrs, write_netcdf  # noqa: E402


@dataclass(frozen=True)
class Config:
    num_generations: str = field(default="8,16,32,64", metadata={"help": "comma-separated G"})
    repeats: int = field(default=9, metadata={"help": "timed repetitions (median reported)"})
    model: str = field(default="", metadata={"help": "local HF model directory (default: built-in strong)"})
    template: str = field(default="", metadata={"help": "prompt template (default: the policy's)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "parameter dtype"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    out: str = field(default="results/bench_lm", metadata={"help": "output directory"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="bench_lm.py", description=__doc__.split("\n\n")[0])


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, dev) -> float:
    _sync(dev)
    t = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t


def _interleaved_times(fa, fb, repeats, dev):
    """Median times of ``fa`` and ``fb`` and the median of their per-repeat ratio.

    The two are timed alternately so that load from other processes hits both alike.
    """
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_timed(fa, dev))
        tb.append(_timed(fb, dev))
    ta, tb = np.array(ta), np.array(tb)
    return float(np.median(ta)), float(np.median(tb)), float(np.median(ta / tb))


def _peak(fn, dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main(argv=None) -> int:
    import xarray as xr

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = Config(**vars(_parser().parse_args(args)))
    except SystemExit as exc:
        return int(exc.code or 0)
    torch.set_num_threads(cfg.threads)
    policy = lm.load_policy(cfg.model or None, variant="strong", device=cfg.device,
                            dtype=cfg.dtype, template=cfg.template or None)
    dev = policy.device
    model = policy.model
    prob = arithmetic.make_dataset(500, seed=0)[0]
    Gs = [int(g) for g in cfg.num_generations.split(",")]
    rows = []
    for G in Gs:
        comp, _ = lm.sample_prompt(policy, prob, G, rng=np.random.SeedSequence([cfg.seed, G]))
        ids, mask = comp.sequences.to(dev), comp.completion_mask.to(dev)  # (G, T)

        def per_sample():
            return lm.per_sample_scores(model, ids, mask, chunk_size=G)

        def batched():
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
            lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
            (lp * mask[:, 1:]).sum().backward()

        def per_sample_dict():
            return lm.per_sample_scores(model, ids, mask, chunk_size=G, flatten=False)

        t_ps, t_b, ratio = _interleaved_times(per_sample, batched, cfg.repeats, dev)
        t_pd, _, ratio_dict = _interleaved_times(per_sample_dict, batched, cfg.repeats, dev)
        mem_b, mem_ps = _peak(batched, dev), _peak(per_sample, dev)
        tokens = int(ids.numel())
        out_mib = G * policy.num_parameters * torch.finfo(next(model.parameters()).dtype).bits / 8 / 2 ** 20
        rows.append((t_ps, t_b, ratio, tokens / t_ps, mem_ps, mem_b, tokens, out_mib, t_pd, ratio_dict))
        print(f"G={G:<3} T={ids.shape[1]:<4} per-sample {1e3 * t_ps:8.1f} ms  batched fwd+bwd "
              f"{1e3 * t_b:8.1f} ms  ratio {ratio:5.2f} (unflattened {ratio_dict:4.2f})  {tokens / t_ps:9.0f} tok/s  "
              f"peak +{mem_ps:.0f} MiB (batched +{mem_b:.0f} MiB; score matrix {out_mib:.1f} MiB)")
    a = np.array(rows)
    ds = xr.Dataset(
        {"per_sample_seconds": ("num_generations", a[:, 0]), "batched_seconds": ("num_generations", a[:, 1]),
         "ratio": ("num_generations", a[:, 2]), "tokens_per_second": ("num_generations", a[:, 3]),
         "peak_mib_per_sample": ("num_generations", a[:, 4]), "peak_mib_batched": ("num_generations", a[:, 5]),
         "tokens": ("num_generations", a[:, 6].astype(np.int64)),
         "score_matrix_mib": ("num_generations", a[:, 7]),
         "per_sample_unflattened_seconds": ("num_generations", a[:, 8]),
         "ratio_unflattened": ("num_generations", a[:, 9])},
        coords={"num_generations": Gs})
    ds.attrs.update(provenance_attrs(seed=cfg.seed, config=dataclasses.asdict(cfg),
                                     command=shlex.join(["python", "simulations/bench_lm.py", *args])))
    ds.attrs["device"] = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    ds.attrs["num_parameters"] = int(policy.num_parameters)
    ds.attrs["policy"] = json.dumps({"name": policy.name, "template": policy.template})
    write_netcdf(ds, os.path.join(cfg.out, "bench_lm.nc"))
    print(f"device {ds.attrs['device']}, d = {policy.num_parameters}; max ratio {a[:, 2].max():.2f}"
          f" (target <= 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
