"""Coverage of G* intervals on the same fixed-size pilots: Fieller, skewness-corrected, bootstrap-t.

The per-prompt pieces of ``A1`` can be very heavy-tailed (on the built-in model the 2% of prompts
with the largest ``||g(x)||^2`` carry 64% of the sum), and then Fieller's interval of
``rho = A3/A1`` undercovers: a pilot that misses the heavy prompts underestimates ``A1`` and its
jackknife spread together.  This script draws ``replicates`` fixed pilots of ``num_prompts``
prompts (seeds ``10000 + seed + r``, the fixed pilots of ``simulations/adaptive_pilot.py``) from
the same sources and scores three intervals of ``rho`` on each, against the known truth:

* ``fieller``: the package default (delete-a-group jackknife covariance, t quantiles);
* ``fieller_skew``: ``interval="fieller_skew"`` (Hall's skewness-corrected pivot,
  :func:`ustat_grpo.scaling.optimum.skew_fieller_ratio_interval`);
* ``bootstrap_t``: a prototype, not in the package: Fieller's pivot ``(A3 - rho A1)/se(rho)``
  with a linearised (influence-function) standard error, calibrated by ``bootstrap`` resamples of
  the prompts (quantiles of the pivot at ``rho-hat``), inverted on a grid of ``arctan(rho)``.

    python -m simulations.ratio_interval_compare --source lm --num-prompts 368 --replicates 300
    python -m simulations.ratio_interval_compare --source bandit --num-prompts 272 --replicates 200
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from simulations.adaptive_pilot import Config as PilotConfig, pilot_source
from ustat_grpo.cli.options import options_from_args, parser_from_dataclass
from ustat_grpo.scaling.constants import constants_from_statistics
from ustat_grpo.measurement.pilot import run_pilot

METHODS = ("fieller", "fieller_skew", "bootstrap_t")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Options of ``simulations/ratio_interval_compare.py`` (one help line each)."""

    source: str = field(default="lm", metadata={"help": "bandit or lm (as simulations/adaptive_pilot.py)",
                                                "choices": ("bandit", "lm")})
    num_prompts: int = field(default=368, metadata={"help": "prompts per fixed pilot"})
    replicates: int = field(default=300, metadata={"help": "pilots (seeds 10000 + seed + r)"})
    samples_per_prompt: int = field(default=16, metadata={"help": "M, rollouts per prompt"})
    bootstrap: int = field(default=999, metadata={"help": "bootstrap resamples of the prompts (bootstrap_t)"})
    seed: int = field(default=0, metadata={"help": "root seed (pilots and bootstrap)"})


def _ustat(w, g, g2, a3):
    """``(A1, A3)`` of resampling weights ``w (B, P)`` (counts / P): the pilot's formulas over the
    resampled positions (cross products over distinct positions)."""
    P = g.shape[0]
    sg = (w * P) @ g                                      # (B, d)
    cross = (np.einsum("bd,bd->b", sg, sg) - (w * P) @ np.einsum("pd,pd->p", g, g)) / (P * (P - 1))
    return w @ g2 - cross, w @ a3


def _pivot(rho, A1, A3, g, g2, a3, w):
    """``(A3 - rho A1) / se`` with the influence values ``a3 - rho (g2 - 2 g . gbar)`` (one per row)."""
    P = g.shape[0]
    h = a3[None] - rho[:, None] * (g2[None] - 2 * (w @ g) @ g.T)   # (B, P)
    m = (w * h).sum(1, keepdims=True)
    var = (w * (h - m) ** 2).sum(1) / (P - 1)
    return (A3 - rho * A1) / np.sqrt(var)


def bootstrap_t_interval(st, rng, *, bootstrap=999, level=0.95):
    """Bootstrap-t set ``{rho >= 0 : q_lo <= T(rho) <= q_hi}`` (hull; ``inf`` if unbounded)."""
    g, g2, a3 = st.g, st.g_norm2, st.sigma2_trI + st.g_norm2
    P = len(g2)
    one = np.full((1, P), 1.0 / P)
    A1, A3 = (x[0] for x in _ustat(one, g, g2, a3))
    rho_hat = max(A3 / A1, 0.0) if A1 > 0 else np.inf
    w = rng.multinomial(P, np.full(P, 1.0 / P), size=bootstrap) / P  # (B, P)
    A1s, A3s = _ustat(w, g, g2, a3)
    t = _pivot(np.full(bootstrap, min(rho_hat, 1e12)), A1s, A3s, g, g2, a3, w)
    lo_q, hi_q = np.quantile(t, [(1 - level) / 2, (1 + level) / 2])
    rho = np.tan(np.linspace(0, np.pi / 2 - 1e-9, 4001))
    T = _pivot(rho, A1, A3, g, g2, a3, np.repeat(one, len(rho), 0))
    ok = np.flatnonzero((T >= lo_q) & (T <= hi_q))
    if ok.size == 0:
        return rho_hat, rho_hat
    return rho[ok[0]], (rho[ok[-1]] if ok[-1] < len(rho) - 1 else np.inf)


def simulate(cfg: Config) -> dict:
    """``{method: (R, 2) intervals of rho}``, the true rho and the source's description."""
    sampler, A, what, *_ = pilot_source(PilotConfig(source=cfg.source, samples_per_prompt=cfg.samples_per_prompt))
    rng = np.random.default_rng(cfg.seed)
    out = {m: [] for m in METHODS}
    for r in range(cfg.replicates):
        st = run_pilot(sampler, num_prompts=cfg.num_prompts, seed=10_000 + cfg.seed + r)
        c = constants_from_statistics(st)
        for m in METHODS[:2]:
            out[m].append(tuple(c.optimal_group_size(interval=m).ratio_interval))
        out["bootstrap_t"].append(bootstrap_t_interval(st, rng, bootstrap=cfg.bootstrap))
    return dict(what=what, rho=float(A[2] / A[0]), intervals={m: np.array(v) for m, v in out.items()})


def main(argv=None) -> int:
    parser = parser_from_dataclass(Config, prog="python -m simulations.ratio_interval_compare",
                                   description=__doc__.split("\n\n")[0])
    cfg = options_from_args(Config, parser.parse_args(argv))
    out = simulate(cfg)
    rho, n = out["rho"], cfg.replicates
    print(f"{out['what']}: G*_exact = {1 + np.sqrt(rho):.4f}; {n} fixed pilots of {cfg.num_prompts} prompts, "
          f"M = {cfg.samples_per_prompt}, seed {cfg.seed}")
    for m, v in out["intervals"].items():
        below, above = int((rho < v[:, 0]).sum()), int((rho > v[:, 1]).sum())
        k = n - below - above
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        width = np.median(np.sqrt(v[:, 1]) - np.sqrt(v[:, 0]))
        print(f"  {m:<13} coverage {k}/{n} = {k / n:.3f}, 95% CP [{ci.low:.3f}, {ci.high:.3f}]; truth below "
              f"{below}, above {above}; median width of the G* interval {width:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
