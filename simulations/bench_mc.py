"""Monte Carlo engine throughput vs the floor of drawing the same random numbers.

Problem: a K = 10 armed softmax bandit with Bernoulli rewards (d = 10), G = 64, B = 1, estimators
vanilla, GRPO and oracle, one grid cell run in this process (``scheduler="serial"``).

What is the floor?  Each generation needs an arm and a reward; the engine (like
``bandits.SoftmaxBandit.sample``) draws one float64 uniform for each, plus one per prompt slot,
and maps them by inverse CDF.  The floor is the time to draw exactly those uniforms from the same
per-block streams (``SeedSequence`` spawning included) into a reused buffer -- no sampler, no
estimator.  A second floor is one single ``Generator.random`` call of the same size.  The fast
path reads the same streams as raw 64-bit words (the uniform of a word ``w`` is
``(w >> 11) * 2**-53``, bit for bit): the numpy twin with ``random_raw``, skipping the prompt
slots with ``advance``, the numba kernel one word at a time through ``next_uint64``; the third row
times ``random_raw``'s draws, so "x raw" is the engine's own overhead.

The engine's fast path (P = 1, M <= 2, affine estimators; ``ustat_grpo.experiments.finite_action``)
draws each block's uniforms, counts each group's (arm, reward) histogram, turns histograms into
per-group sums with one BLAS matmul per block, and reduces the affine estimators' squared errors
per replicate; ``run_grid`` adds a fixed cost per call (the xarray result and its provenance).
With the optional extra ``fast`` (numba; the ``kernel:`` line says which ran) the histograms come
from one jitted loop that draws the uniforms itself through numpy's ``BitGenerator.ctypes``
interface (no buffer of uniforms) and the B = 1 errors' ``g_hat - g`` from a second; numba
compiles them in memory on their first call in a process (the warm-up run below takes it).  The
row "fast path, numpy kernel" times the same run with ``USTAT_GRPO_NO_NUMBA=1`` (the numpy twin,
same bits: tests/test_mc_kernel.py).  Issue 24's target: the fast path within 2x the floor.

Measured numbers live in the stored result, not here: ``--out docs/results/bench_mc.json`` writes
it (with the machine, the versions and the git state) and the documentation's evidence page
renders it.  Time it alone on a quiet machine: every row moves with the load.

stdout: the table (seconds, ns per generation, ratio to each floor).  Progress: stderr.
Usage: ``python -m simulations.bench_mc [--out PATH]`` (about 20 s).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np


from ustat_grpo.experiments import finite_action
from ustat_grpo.experiments import montecarlo as mc
from ustat_grpo.policies.bandits import SoftmaxBandit
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.core.provenance import provenance_attrs


@dataclass(frozen=True)
class Config:
    num_arms: int = field(default=10, metadata={"help": "K arms (d = K)"})
    num_generations: int = field(default=64, metadata={"help": "G, generations per prompt"})
    num_prompts: int = field(default=1, metadata={"help": "B, prompts per minibatch"})
    num_replicates: int = field(default=200_000, metadata={"help": "replicates of the fast path"})
    generic_replicates: int = field(default=10_000, metadata={"help": "replicates of the generic path"})
    estimators: str = field(default="vanilla,leave_one_out,oracle", metadata={"help": "comma-separated names"})
    repeats: int = field(default=5, metadata={"help": "timings per path, interleaved; the median and the minimum are reported"})
    seed: int = field(default=0, metadata={"help": "seed of the bandit and of the Monte Carlo streams"})
    json: bool = field(default=False, metadata={"help": "print JSON instead of the table"})
    out: str = field(default="", metadata={"help": "also write the JSON, with the machine, versions and git "
                                                   "state, to this path (docs/results/bench_mc.json)"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.bench_mc", description=__doc__.split("\n\n")[0])


def _timings(fns, repeats):
    """Seconds of each callable, ``repeats`` times, timed round-robin so that load changes hit
    all alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return times


def _numpy_kernel(fn):
    """``fn`` run with ``USTAT_GRPO_NO_NUMBA=1`` (the numpy path of the same run)."""
    def run():
        old = os.environ.get("USTAT_GRPO_NO_NUMBA")
        os.environ["USTAT_GRPO_NO_NUMBA"] = "1"
        try:
            fn()
        finally:
            if old is None:
                del os.environ["USTAT_GRPO_NO_NUMBA"]
            else:
                os.environ["USTAT_GRPO_NO_NUMBA"] = old
    return run


def bench(cfg: Config) -> dict:
    """Time the floors and both engine paths; returns a JSON-safe dict."""
    rng = np.random.default_rng(cfg.seed)
    K, G, B, R = cfg.num_arms, cfg.num_generations, cfg.num_prompts, cfg.num_replicates
    policy = SoftmaxBandit(rng.uniform(size=K), theta=rng.normal(size=K))
    names = tuple(cfg.estimators.split(","))
    bs = mc.block_size_for(G, B)
    n_blocks = -(-R // bs)
    gens = R * B * G

    def floor_streams():                       # the uniforms the engine draws, same streams
        buf = np.empty((bs, B, G))
        for i, child in enumerate(mc.cell_seed_sequence(cfg.seed, G, B).spawn(n_blocks)):
            gen = np.random.default_rng(child)           # = Generator(PCG64(child)), as the engine
            r = min(bs, R - i * bs)
            out = buf if r == bs else np.empty((r, B, G))
            gen.random((r, B))                 # prompt slots
            gen.random(out=out)                # arms
            gen.random(out=out)                # rewards

    def floor_one_call():                      # raw generator throughput, one call
        np.random.default_rng(cfg.seed).random(out=np.empty(R * B * (2 * G + 1)))

    def floor_raw():                           # the same streams as words, as the fast path reads them
        for i, child in enumerate(mc.cell_seed_sequence(cfg.seed, G, B).spawn(n_blocks)):
            bg = np.random.default_rng(child).bit_generator
            r = min(bs, R - i * bs)
            bg.advance(r * B)                  # prompt slots
            bg.random_raw(2 * r * B * G)       # arms, then rewards

    kernel = finite_action.fast_path_kernel()                                     # this process
    kw = dict(num_generations=G, num_prompts=B, estimators=names, seed=cfg.seed, scheduler="serial",
              progress=False, exact=None)
    Rg = cfg.generic_replicates

    def fast():
        mc.run_grid(policy, num_replicates=R, sampler="finite", **kw)

    mc.run_grid(policy, num_replicates=min(R, 2 * bs), sampler="finite", **kw)     # warm-up (numba compiles)
    print("timing the floors, the fast (finite-action) and the generic path ...", file=sys.stderr)
    times = _timings(
        [floor_streams, floor_one_call, floor_raw, fast, _numpy_kernel(fast),
         lambda: mc.run_grid(policy, num_replicates=Rg, sampler="generic", **kw)], cfg.repeats)
    names_ = ["floor: same uniforms, same streams", "floor: one Generator.random call",
              "floor: same streams as raw words", f"engine, fast path ({kernel} kernel)",
              "engine, fast path, numpy kernel", "engine, generic path (scaled)"]
    scale = [1, 1, 1, 1, 1, R / Rg]
    out = {"config": dataclasses.asdict(cfg), "block_size": bs, "generations": gens, "kernel": kernel,
           "rows": names_}
    for stat, f in (("median", np.median), ("min", np.min)):
        rows = {k: float(f(ts)) * c for k, ts, c in zip(names_, times, scale)}
        t_floor, t_raw, t_words = (rows[k] for k in names_[:3])
        out[stat] = {
            "seconds": rows,
            "ns_per_generation": {k: v / gens * 1e9 for k, v in rows.items()},
            "ratio_to_floor": {k: v / t_floor for k, v in rows.items()},
            "ratio_to_one_call": {k: v / t_raw for k, v in rows.items()},
            "ratio_to_raw_words": {k: v / t_words for k, v in rows.items()},
            "target_met": bool(rows[names_[3]] <= 2 * t_floor),
        }
    return out


def _machine() -> dict:
    """Where the timings were taken: CPU model, cores, load averages, library versions."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    try:
        import numba
        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba_version,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    ns = _parser().parse_args(argv)
    cfg = Config(**vars(ns))
    if min(cfg.num_arms - 1, cfg.num_generations - 1, cfg.num_prompts, cfg.num_replicates - 1,
           cfg.generic_replicates - 1, cfg.repeats) < 1:
        print("bench_mc.py: need num_arms >= 2, num_generations >= 2, num_prompts >= 1, "
              "replicates >= 2, repeats >= 1", file=sys.stderr)
        return 2
    res = bench(cfg)
    if cfg.out:
        stored = dict(res, machine=_machine(),
                      provenance=provenance_attrs(seed=cfg.seed, config=dataclasses.asdict(cfg)))
        os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
        with open(cfg.out, "w") as fh:
            json.dump(stored, fh, sort_keys=True, indent=1)
            fh.write("\n")
        print(f"wrote {cfg.out}", file=sys.stderr)
    if cfg.json:
        print(json.dumps(res, sort_keys=True, indent=1))
        return 0
    print(f"K={cfg.num_arms} arms, d={cfg.num_arms}, G={cfg.num_generations}, B={cfg.num_prompts}, "
          f"{cfg.num_replicates} replicates, estimators {cfg.estimators}; block {res['block_size']} "
          f"replicates; {cfg.repeats} timings each, interleaved")
    for stat in ("median", "min"):
        r = res[stat]
        print(f"{stat + ' of ' + str(cfg.repeats):40s} {'seconds':>9s} {'ns/gen':>8s} {'x floor':>8s} "
              f"{'x 1-call':>8s} {'x raw':>8s}")
        for k, v in r["seconds"].items():
            print(f"{k:40s} {v:9.3f} {r['ns_per_generation'][k]:8.2f} {r['ratio_to_floor'][k]:8.2f} "
                  f"{r['ratio_to_one_call'][k]:8.2f} {r['ratio_to_raw_words'][k]:8.2f}")
        print(f"target (fast path <= 2 x floor, {stat}s): {'met' if r['target_met'] else 'NOT met'}")
    print(f"kernel: {res['kernel']} (fast path's sampler and B = 1 errors; 'numpy' without numba "
          "(pip install -e '.[fast]') or with USTAT_GRPO_NO_NUMBA=1: same bits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
