"""Monte Carlo engine throughput vs the floor of drawing the same random numbers.

Problem: a K = 10 armed softmax bandit with Bernoulli rewards (d = 10), G = 64, B = 1, estimators
vanilla, GRPO and oracle, one grid cell run in this process (``scheduler="serial"``).

What is the floor?  Each generation needs an arm and a reward; the engine (like
``bandits.SoftmaxBandit.sample``) draws one float64 uniform for each, plus one per prompt slot,
and maps them by inverse CDF.  The floor is the time to draw exactly those uniforms from the same
per-block streams (``SeedSequence`` spawning included) into a reused buffer -- no sampler, no
estimator.  A second, lower floor is one single ``Generator.random`` call of the same size.  The
fast path reads the same streams as raw 64-bit words (``random_raw``; the uniform of a word ``w``
is ``(w >> 11) * 2**-53``, bit for bit) and skips the prompt slots with ``advance`` when there is
one prompt; the third row times exactly those draws, so "x raw" is the engine's own overhead.

Where the time goes (issue 14; this project's 2-core machine is shared with other jobs, so every
figure moves by up to 2x with the load; medians and minima of interleaved runs).  Before the C
kernel (numpy only, still the path without a compiler): one ``run_grid`` of 200,000 replicates
took ~0.23-0.27 s against a floor of ~0.07-0.08 s (ratio 2.6-3.5): the fused sampler's draws
plus seven numpy passes per block (two shifts, two table gathers, two adds, one ``bincount``)
~0.19 s, the B = 1 affine errors ~0.036 s (~0.85 ms per 4-block call, of which the einsum
~0.1 ms), the histogram -> sums matmuls ~0.008 s, the block statistics ~0.006 s, the per-block
``default_rng`` ~0.004 s, run_grid's fixed cost ~0.01-0.02 s (git describe ~4-6 ms, xarray
~2 ms, tables ~2 ms).  Numpy passes alone were ~1.3x the draws, so 2x needed compiled code.

With the C kernel (``ustat_grpo/_mc_kernel.c``, compiled on first use; the ``kernel:`` line
says which ran): one pass per pull counts the histogram, reading the block's words in the
stream order above (PCG64 stepped in C as four chains started by jump-ahead at their stream
positions; checked against ``random_raw``) with integer thresholds ``ceil(c 2**53)`` in place
of the float comparisons: ~0.55-0.65 ms per block of 1024 x 64 pulls, about ``Generator.random``
on the same 131k words (0.5-0.65 ms; one PCG64 chain is latency-bound at ~2.6 ns a word, four
chains reach ~1.5-2.2 ns on a quiet core, less when the other job shares it), i.e. ~1.0x the
floor over the run.  The B = 1 errors' ``g_hat - g`` is one C pass (~0.13 ms per call, the
same elementwise operations as numpy's) before numpy's einsum (~0.085 ms), ~0.02 s in all; the
matmuls, block statistics and fixed cost are unchanged (numpy/BLAS, for the same bits).  Measured
here in 14 runs: floor 0.073-0.079 s quiet (0.12-0.15 s under load), fast path 0.115-0.13 s
(0.16-0.21 s), ratio 1.24-1.66 in 13 and 2.26 once; the numbers are the same bits as without
the kernel (tests/test_ckernel.py).

stdout: the table (seconds, ns per generation, ratio to each floor).  Progress: stderr.
Usage: ``python -m simulations.bench_mc`` (about 15 s).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np


from ustat_grpo import finite_action
from ustat_grpo import montecarlo as mc
from ustat_grpo.bandits import SoftmaxBandit
from ustat_grpo.cli_options import parser_from_dataclass


@dataclass(frozen=True)
class Config:
    num_arms: int = field(default=10, metadata={"help": "K arms (d = K)"})
    num_generations: int = field(default=64, metadata={"help": "G, generations per prompt"})
    num_prompts: int = field(default=1, metadata={"help": "B, prompts per minibatch"})
    num_replicates: int = field(default=200_000, metadata={"help": "replicates of the fast path"})
    generic_replicates: int = field(default=10_000, metadata={"help": "replicates of the generic path"})
    estimators: str = field(default="vanilla,leave_one_out,oracle", metadata={"help": "comma-separated names"})
    repeats: int = field(default=5, metadata={"help": "timings per path, interleaved; the median is reported"})
    seed: int = field(default=0, metadata={"help": "seed of the bandit and of the Monte Carlo streams"})
    json: bool = field(default=False, metadata={"help": "print JSON instead of the table"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.bench_mc", description=__doc__.split("\n\n")[0])


def _medians(fns, repeats):
    """Median seconds of each callable, timed round-robin so that load changes hit all alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [float(np.median(ts)) for ts in times]


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

    fam = finite_action.FiniteActionModel.from_policy(policy)
    kernel = finite_action.samplers_for(fam)[-2].kernel if K > 1 else "numpy"     # this process
    kw = dict(num_generations=G, num_prompts=B, estimators=names, seed=cfg.seed, scheduler="serial",
              progress=False, exact=None)
    Rg = cfg.generic_replicates
    mc.run_grid(policy, num_replicates=min(R, 2 * bs), sampler="finite", **kw)     # warm-up
    print("timing the floors, the fast (finite-action) and the generic path ...", file=sys.stderr)
    t_floor, t_raw, t_words, t_fast, t_gen = _medians(
        [floor_streams, floor_one_call, floor_raw,
         lambda: mc.run_grid(policy, num_replicates=R, sampler="finite", **kw),
         lambda: mc.run_grid(policy, num_replicates=Rg, sampler="generic", **kw)], cfg.repeats)
    t_gen_scaled = t_gen * R / Rg
    rows = {
        "floor: same uniforms, same streams": t_floor,
        "floor: one Generator.random call": t_raw,
        "floor: same streams as raw words": t_words,
        "engine, fast path (sampler=finite)": t_fast,
        "engine, generic path (scaled)": t_gen_scaled,
    }
    return {
        "config": dataclasses.asdict(cfg), "block_size": bs, "generations": gens, "kernel": kernel,
        "seconds": rows,
        "ns_per_generation": {k: v / gens * 1e9 for k, v in rows.items()},
        "ratio_to_floor": {k: v / t_floor for k, v in rows.items()},
        "ratio_to_one_call": {k: v / t_raw for k, v in rows.items()},
        "ratio_to_raw_words": {k: v / t_words for k, v in rows.items()},
        "target_met": bool(t_fast <= 2 * t_floor),
    }


def main(argv=None) -> int:
    ns = _parser().parse_args(argv)
    cfg = Config(**vars(ns))
    if min(cfg.num_arms - 1, cfg.num_generations - 1, cfg.num_prompts, cfg.num_replicates - 1,
           cfg.generic_replicates - 1, cfg.repeats) < 1:
        print("bench_mc.py: need num_arms >= 2, num_generations >= 2, num_prompts >= 1, "
              "replicates >= 2, repeats >= 1", file=sys.stderr)
        return 2
    res = bench(cfg)
    if cfg.json:
        print(json.dumps(res, sort_keys=True, indent=1))
        return 0
    print(f"K={cfg.num_arms} arms, d={cfg.num_arms}, G={cfg.num_generations}, B={cfg.num_prompts}, "
          f"{cfg.num_replicates} replicates, estimators {cfg.estimators}; block {res['block_size']} "
          f"replicates; median of {cfg.repeats}, interleaved")
    print(f"{'path':40s} {'seconds':>9s} {'ns/gen':>8s} {'x floor':>8s} {'x 1-call':>8s} {'x raw':>8s}")
    for k, v in res["seconds"].items():
        print(f"{k:40s} {v:9.3f} {res['ns_per_generation'][k]:8.2f} {res['ratio_to_floor'][k]:8.2f} "
              f"{res['ratio_to_one_call'][k]:8.2f} {res['ratio_to_raw_words'][k]:8.2f}")
    print(f"kernel: {res['kernel']} (fast path's sampler and B = 1 errors; 'numpy' without a C "
          "compiler or with USTAT_GRPO_NO_CKERNEL=1: same bits)")
    print(f"target (fast path <= 2 x floor): {'met' if res['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
