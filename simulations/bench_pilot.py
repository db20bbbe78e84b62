"""What an adaptive pilot costs, as a fraction of one GRPO training run and of the paper's grid search.

An adaptive pilot (``ustat_grpo.measurement.pilot.run_pilot(..., stop=width_rule(target))``) adds prompts until
the 95% interval of G*_exact = 1 + sqrt(A3/A1) has relative width ``(high - low) / G*`` at most
``target``.  Each of its rollouts is scored with one backward pass (per-sample scores).  The
references, from arXiv 2603.01162's Table 2: one training run = 800 steps x 1,024 rollouts =
819,200 rollouts, each with a backward pass; the grid search behind Table 2 = 6 values of G x one
full run each.  Sources:

* ``bandit``: the built-in toy bandit (``BanditSampler``; scores in closed form, so its "backward
  passes" are the ones a model would need);
* ``lm``: the built-in transformer on the arithmetic task (``measure_lm(..., target_width=...)``,
  the command line's ``--target-width``), scores sketched to 256 dimensions;
* a fixed pilot of the paper's size (500 prompts x 64), priced, not run.

    python -m simulations.bench_pilot                      # ~1 min on 2 cores
    python -m simulations.bench_pilot --sources bandit --target 0.3
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field


from ustat_grpo import __version__
from ustat_grpo.cli.options import options_from_args, parser_from_dataclass

#: one training run of arXiv 2603.01162's Table 2: 800 steps x 1,024 rollouts, one backward pass each
TRAINING_RUN_ROLLOUTS = 800 * 1024
#: the paper's grid search over G: 6 values x one full run
GRID_RUNS = 6


@dataclass(frozen=True, kw_only=True)
class Config:
    """Options of ``simulations/bench_pilot.py`` (one help line each)."""

    sources: str = field(default="bandit,lm", metadata={"help": "comma-separated: bandit, lm"})
    target: float = field(default=0.5, metadata={"help": "stop when (high - low) / G* of the 95% interval is at most this"})
    samples_per_prompt: int | None = field(default=None, metadata={"help": "M, rollouts per prompt (None: 16 on "
                                                                       "the bandit, 8 on the LM, as "
                                                                       "fit_scaling --target-width)"})
    max_prompts: int = field(default=1024, metadata={"help": "cap on prompts (fit_scaling --target-width's; "
                                                             "1024 x 8 rollouts = 1% of a Table-2 run)"})
    budget: int = field(default=256, metadata={"help": "rollouts per step N at which G* is reported"})
    seed: int = field(default=0, metadata={"help": "pilot seed"})


@dataclass(frozen=True, kw_only=True)
class Row:
    """One pilot: its size, cost and what it measured (``g_star`` None for a priced-only row).

    ``reached``: the interval met the target width (False: the pilot stopped at ``max_prompts``).
    """

    source: str
    num_prompts: int
    samples_per_prompt: int
    g_star: float | None = None
    interval: tuple | None = None
    wall_s: float | None = None
    reached: bool | None = None

    @property
    def rollouts(self) -> int:
        return self.num_prompts * self.samples_per_prompt

    @property
    def backward_passes(self) -> int:
        return self.rollouts                             # one per-sample score per rollout

    @property
    def fraction_of_run(self) -> float:
        return (self.rollouts + self.backward_passes) / (2 * TRAINING_RUN_ROLLOUTS)

    @property
    def fraction_of_grid(self) -> float:
        return self.fraction_of_run / GRID_RUNS


def _gstar(constants, cfg):
    """``G*_exact``, its interval, and whether that interval is as narrow as the target."""
    res = constants.optimal_group_size(budget=cfg.budget)
    lo, hi = res.g_star_exact_interval
    return dict(g_star=res.g_star_exact, interval=(lo, hi), reached=bool((hi - lo) / res.g_star_exact <= cfg.target))


def bandit_row(cfg: Config) -> Row:
    from ustat_grpo.policies.bandits import default_bandit
    from ustat_grpo.scaling.constants import constants_from_statistics
    from ustat_grpo.measurement.pilot import BanditSampler, run_pilot, width_rule

    M = cfg.samples_per_prompt or 16
    t0 = time.perf_counter()
    st = run_pilot(BanditSampler(default_bandit(), M), num_prompts=cfg.max_prompts,
                   seed=cfg.seed, stop=width_rule(cfg.target, budget=cfg.budget))
    return Row(source="toy bandit, adaptive", num_prompts=len(st), samples_per_prompt=M,
               wall_s=time.perf_counter() - t0, **_gstar(constants_from_statistics(st), cfg))


def lm_row(cfg: Config) -> Row:
    from ustat_grpo.measurement.measure import measure_lm
    from ustat_grpo.measurement.pilot import ADAPTIVE_SAMPLES_PER_PROMPT

    M = cfg.samples_per_prompt or ADAPTIVE_SAMPLES_PER_PROMPT
    t0 = time.perf_counter()
    m = measure_lm(num_prompts=cfg.max_prompts, samples_per_prompt=M, seed=cfg.seed,
                   projection_dim=256, target_width=cfg.target, budget=cfg.budget)
    return Row(source="built-in model, adaptive", num_prompts=m.constants.num_prompts,
               samples_per_prompt=M, wall_s=time.perf_counter() - t0, **_gstar(m.constants, cfg))


def benchmark(cfg: Config) -> list[Row]:
    """The pilots of ``cfg.sources`` (run) and the paper-size fixed pilot (priced)."""
    makers = {"bandit": bandit_row, "lm": lm_row}
    names = [s.strip() for s in cfg.sources.split(",") if s.strip()]
    unknown = sorted(set(names) - set(makers))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; choose from {sorted(makers)}")
    rows = [makers[n](cfg) for n in names]
    return rows + [Row(source="fixed 500 x 64 (not run)", num_prompts=500, samples_per_prompt=64)]


def render(rows: list[Row], cfg: Config) -> str:
    lines = [f"pilot cost, target relative width {cfg.target} of the 95% G*_exact interval (N = {cfg.budget}), "
             f"seed {cfg.seed}, ustat_grpo {__version__}",
             f"reference: one Table-2 run = {TRAINING_RUN_ROLLOUTS:,} rollouts + as many backward passes; grid "
             f"search = {GRID_RUNS} runs",
             f"  {'source':<26} {'P x M':>9} {'rollouts':>9} {'backward':>9} {'of 1 run':>9} {'of grid':>8} "
             f"{'G* [95% CI]':>22} {'wall':>7}"]
    for r in rows:
        if r.g_star is None:
            gs, wall = "-", "-"
        else:
            hi = "inf" if math.isinf(r.interval[1]) else f"{r.interval[1]:.2f}"
            gs, wall = f"{r.g_star:.2f} [{r.interval[0]:.2f}, {hi}]", f"{r.wall_s:.0f} s"
        cap = "" if r.reached in (None, True) else "  cap hit: width not reached"
        lines.append(f"  {r.source:<26} {f'{r.num_prompts}x{r.samples_per_prompt}':>9} {r.rollouts:>9,} "
                     f"{r.backward_passes:>9,} {r.fraction_of_run:>9.2%} {r.fraction_of_grid:>8.3%} {gs:>22} {wall:>7}"
                     + cap)
    lines.append("  backward = per-sample score passes; on CPU one costs 1.33-1.42x a batched forward+backward "
                 "(simulations/bench_lm.py), so in compute the pilot's share is up to ~1.4x the fraction shown")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = parser_from_dataclass(Config, prog="python -m simulations.bench_pilot", description=__doc__.split("\n\n")[0])
    cfg = options_from_args(Config, parser.parse_args(argv))
    try:
        rows = benchmark(cfg)
    except ValueError as e:
        print(f"bench_pilot: {e}", file=sys.stderr)
        return 2
    print(render(rows, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
