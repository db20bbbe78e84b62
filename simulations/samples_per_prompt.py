"""Samples per prompt of a pilot, chosen by measurement: predicted vs repeated pilots, and M* on the LM.

``ustat_grpo.measurement.samples_per_prompt.choose_samples_per_prompt`` fits ``v(M) = P Var(log G*-hat)`` from one
pilot's subsamples and returns the ``M`` that minimises the variance at a fixed cost ``P M``.  This
script checks the prediction against an independent computation and measures ``M*``:

* toy bandit: one pilot of ``pilot_prompts x pilot_samples`` -> the fit; then ``replicates``
  independent pilots at each ``(P, M)`` of ``points`` (a seeded Monte Carlo of the whole estimate):
  their sample variance of ``log G*``-hat against the prediction (z with both standard errors), and
  against two wrong models: the truncation ``a + b/M + c/M^2`` (fitted on the same measured ``v``)
  and "independent rollouts" ``v(M) = M0 v(M0) / M``;
* built-in model (``--lm``): one pilot of ``lm_prompts x lm_samples`` -> ``M*`` and its table.

    python -m simulations.samples_per_prompt              # bandit only, ~40 s on 2 cores
    python -m simulations.samples_per_prompt --lm         # + built-in model, ~4 min more
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls


from ustat_grpo import __version__
from ustat_grpo.cli.options import options_from_args, parser_from_dataclass
from ustat_grpo.policies.bandits import default_bandit
from ustat_grpo.scaling.constants import prompt_pieces
from ustat_grpo.measurement.samples_per_prompt import choose_samples_per_prompt


@dataclass(frozen=True, kw_only=True)
class Config:
    """Options of ``simulations/samples_per_prompt.py`` (one help line each)."""

    pilot_prompts: int = field(default=8192, metadata={"help": "P of the bandit pilot that is fitted"})
    pilot_samples: int = field(default=32, metadata={"help": "M of the bandit pilot that is fitted"})
    points: str = field(default="1024x16,128x64,64x128", metadata={"help": "PxM pilots simulated (comma-separated)"})
    replicates: int = field(default=1500, metadata={"help": "independent pilots per point"})
    seed: int = field(default=0, metadata={"help": "root seed (pilot, subsets, each point's stream)"})
    lm: bool = field(default=False, metadata={"help": "also measure M* on the built-in model"})
    lm_prompts: int = field(default=256, metadata={"help": "P of the built-in model's pilot"})
    lm_samples: int = field(default=64, metadata={"help": "M of the built-in model's pilot"})


def repeated_pilots(policy, num_prompts: int, samples_per_prompt: int, replicates: int, *, rng) -> np.ndarray:
    """``log G*``-hat of ``replicates`` independent pilots (prompts from ``f``), vectorised: ``(replicates,)``.

    ``G*``-hat = ``1 + sqrt(A3/A1)`` with the unbiased constants of
    :func:`ustat_grpo.scaling.constants.constants_from_statistics` (its cross-product form of ``A1``).
    """
    rng = np.random.default_rng(rng)
    P, M = int(num_prompts), int(samples_per_prompt)
    out, done = [], 0
    chunk = max(1, 2_000_000 // (P * M))                 # bound memory per draw
    while done < replicates:
        r = min(chunk, replicates - done)
        s = policy.sample(P, M, rng=rng, theta=np.broadcast_to(policy.theta, (r, policy.dim)))
        g, g2, st, _ = prompt_pieces(s.rewards.reshape(r * P, M), s.scores.reshape(r * P, M, -1))
        g, g2, a3 = g.reshape(r, P, -1), g2.reshape(r, P), st.reshape(r, P) + g2.reshape(r, P)   # (r, P, d), (r, P)
        sg = g.sum(1)                                    # (r, d)
        A1 = g2.mean(1) - (np.einsum("rd,rd->r", sg, sg) - np.einsum("rpd,rpd->r", g, g)) / (P * (P - 1))
        out.append(np.log1p(np.sqrt(np.maximum(a3.mean(1), 0) / A1)))
        done += r
    return np.concatenate(out)


def variance_with_se(x) -> tuple[float, float]:
    """Sample variance and its standard error ``sqrt((m4 - s^4) / n)``."""
    x = np.asarray(x, float)
    v = x.var(ddof=1)
    m4 = ((x - x.mean()) ** 4).mean()
    return float(v), float(np.sqrt((m4 - v * v) / len(x)))


def wrong_models(res):
    """Per-prompt variance ``v(M)`` of two wrong models fitted to the same measured ``v``-hat."""
    sizes, v = res.subsample_sizes.astype(float), res.measured
    X = np.stack([np.ones_like(sizes), 1 / sizes, 1 / sizes ** 2], -1)
    quad, _ = nnls(X / v[:, None], np.ones(len(sizes)))
    m0, v0 = sizes[-1], v[-1]
    return {"a + b/M + c/M^2": lambda m: quad @ [1.0, 1 / m, 1 / m ** 2],
            "independent rollouts": lambda m: m0 * v0 / m}


def bandit(cfg: Config) -> int:
    policy = default_bandit()
    seqs = np.random.SeedSequence(cfg.seed).spawn(2)
    s = policy.sample(cfg.pilot_prompts, cfg.pilot_samples, rng=np.random.default_rng(seqs[0]))
    t0 = time.perf_counter()
    res = choose_samples_per_prompt(s.rewards, s.scores, rng=seqs[1])
    print(f"toy bandit (ustat_grpo.policies.bandits.default_bandit), seed {cfg.seed}, ustat_grpo {__version__}; "
          f"fit in {time.perf_counter() - t0:.1f} s")
    print(res)
    wrong = wrong_models(res)
    points = [tuple(int(x) for x in p.split("x")) for p in cfg.points.split(",")]
    print(f"\nVar(log G*-hat) of {cfg.replicates} independent pilots vs the prediction (z uses both standard errors)")
    print(f"  {'P x M':>10} {'Monte Carlo':>18} {'predicted':>18} {'z':>6}   " + "   ".join(f"{k} (z)" for k in wrong))
    for (P, M), seq in zip(points, np.random.SeedSequence(cfg.seed + 1).spawn(len(points))):
        mc, se = variance_with_se(repeated_pilots(policy, P, M, cfg.replicates, rng=seq))
        pred, spred = float(res.variance(P, M)), float(res.standard_error(P, M))
        scale = np.hypot(se, spred)
        others = "   ".join(f"{f(M) / P:.3e} ({(f(M) / P - mc) / scale:+.1f})" for f in wrong.values())
        print(f"  {f'{P}x{M}':>10} {mc:.3e} +- {se:.1e} {pred:.3e} +- {spred:.1e} {(pred - mc) / scale:>+6.2f}   {others}")
    return 0


def lm(cfg: Config) -> int:
    from ustat_grpo.measurement.sampler import prompt_samples

    t0 = time.perf_counter()
    z, w = prompt_samples(None, num_prompts=cfg.lm_prompts, samples_per_prompt=cfg.lm_samples, rng=cfg.seed,
                          projection_dim=256)
    t1 = time.perf_counter()
    res = choose_samples_per_prompt(z, w, rng=cfg.seed)
    print(f"\nbuilt-in model (strong), arithmetic task, seed {cfg.seed}: pilot {cfg.lm_prompts} x {cfg.lm_samples} "
          f"in {t1 - t0:.0f} s, fit in {time.perf_counter() - t1:.1f} s")
    print(res)
    return 0


def main(argv=None) -> int:
    parser = parser_from_dataclass(Config, prog="python -m simulations.samples_per_prompt", description=__doc__.split("\n\n")[0])
    cfg = options_from_args(Config, parser.parse_args(argv))
    rc = bandit(cfg)
    if cfg.lm:
        rc = rc or lm(cfg)
    return rc


if __name__ == "__main__":
    sys.exit(main())
