"""Adaptive pilots on the toy bandit: do their G* intervals still cover, and what do they cost?

An adaptive pilot (``ustat_grpo.pilot.run_pilot(..., stop=width_rule(target))``) adds prompts in
batches until the 95% interval of G*_exact = 1 + sqrt(A3/A1) is narrow enough.  Stopping on the
data can bias an interval, so this script runs ``replicates`` independent adaptive pilots on the
built-in contextual bandit, whose exact G* is known (``ustat_grpo.mse.constants``), and reports:

* coverage of the exact G* by the final interval, with its Clopper-Pearson interval;
* the same for fixed-size pilots of the adaptive pilots' median size (the reference);
* rollouts spent (prompts x samples per prompt, one backward pass each on a real model) against one
  training run of the paper's Table 2 (800 steps x 1024 rollouts) and its grid search (6 values of G).

    python simulations/adaptive_pilot.py                      # ~1-2 min on 2 cores
    python simulations/adaptive_pilot.py --replicates 400 --target 0.5
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from ustat_grpo._cli import options_from_args, parser_from_dataclass  # noqa: E402
from ustat_grpo.bandits import default_bandit  # noqa: E402
from ustat_grpo.constants import constants_from_statistics  # noqa: E402
from ustat_grpo.mse import constants as exact_constants  # noqa: E402
from ustat_grpo.pilot import BanditSampler, run_pilot, width_rule  # noqa: E402

#: one training run of arXiv 2603.01162's Table 2: 800 steps x 1024 rollouts
TRAINING_RUN_ROLLOUTS = 800 * 1024


@dataclass(frozen=True, kw_only=True)
class Config:
    """Options of ``simulations/adaptive_pilot.py`` (one help line each)."""

    replicates: int = field(default=200, metadata={"help": "independent adaptive pilots"})
    target: float = field(default=0.6, metadata={"help": "stop when (high - low) / G* of the 95% interval is at most this"})
    samples_per_prompt: int = field(default=16, metadata={"help": "M, rollouts per prompt"})
    batch_size: int = field(default=8, metadata={"help": "prompts between two checks of the stop rule"})
    max_prompts: int = field(default=1024, metadata={"help": "cap on prompts per pilot"})
    min_prompts: int = field(default=128, metadata={"help": "prompts before the stop rule is first asked"})
    budget: int = field(default=256, metadata={"help": "rollouts per step N at which G* is reported"})
    seed: int = field(default=0, metadata={"help": "root seed (replicate r uses seed + r)"})


def _covers(st, g_true, budget):
    res = constants_from_statistics(st).optimal_group_size(budget=budget)
    lo, hi = res.g_star_exact_interval
    return bool(lo <= g_true <= hi)


def simulate(cfg: Config) -> dict:
    policy = default_bandit()
    A = np.asarray(exact_constants(policy.moments()), float)[:3]
    g_true = 1 + np.sqrt(A[2] / A[0])
    sampler = BanditSampler(policy, cfg.samples_per_prompt)
    stop = width_rule(cfg.target, budget=cfg.budget, min_prompts=cfg.min_prompts)
    sizes, hits = [], []
    for r in range(cfg.replicates):
        st = run_pilot(sampler, num_prompts=cfg.max_prompts, seed=cfg.seed + r, batch_size=cfg.batch_size, stop=stop)
        sizes.append(len(st))
        hits.append(_covers(st, g_true, cfg.budget))
    fixed_p = int(np.median(sizes))
    fixed = [_covers(run_pilot(sampler, num_prompts=fixed_p, seed=10_000 + cfg.seed + r), g_true, cfg.budget)
             for r in range(cfg.replicates)]
    return dict(g_true=float(g_true), sizes=np.array(sizes), hits=np.array(hits), fixed_prompts=fixed_p,
                fixed_hits=np.array(fixed))


def _cp(k, n):
    ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="exact")
    return ci.low, ci.high


def main(argv=None) -> int:
    parser = parser_from_dataclass(Config, prog="simulations/adaptive_pilot.py", description=__doc__.split("\n\n")[0])
    cfg = options_from_args(Config, parser.parse_args(argv))
    out = simulate(cfg)
    n, M = cfg.replicates, cfg.samples_per_prompt
    k, kf = int(out["hits"].sum()), int(out["fixed_hits"].sum())
    rollouts = out["sizes"] * M
    print(f"toy bandit, exact G*_exact = {out['g_true']:.3f}; target relative width {cfg.target}, M = {M}, "
          f"at least {cfg.min_prompts} prompts")
    print(f"adaptive pilots: coverage {k}/{n} = {k / n:.3f}, 95% CP [{_cp(k, n)[0]:.3f}, {_cp(k, n)[1]:.3f}] "
          f"(nominal 0.95); prompts median {int(np.median(out['sizes']))}, range "
          f"[{out['sizes'].min()}, {out['sizes'].max()}]")
    print(f"fixed pilots of {out['fixed_prompts']} prompts: coverage {kf}/{n} = {kf / n:.3f}, "
          f"95% CP [{_cp(kf, n)[0]:.3f}, {_cp(kf, n)[1]:.3f}]")
    med = float(np.median(rollouts))
    print(f"cost: median {med:.0f} rollouts (+ as many backward passes) = {med / TRAINING_RUN_ROLLOUTS:.2%} of one "
          f"Table-2 training run, {med / (6 * TRAINING_RUN_ROLLOUTS):.3%} of its 6-run grid search over G")
    return 0


if __name__ == "__main__":
    sys.exit(main())
