"""Adaptive pilots: do their G* intervals still cover, and what do they cost?

An adaptive pilot (``ustat_grpo.measurement.pilot.run_pilot(..., stop=width_rule(target))``) adds prompts in
batches until the 95% interval of G*_exact = 1 + sqrt(A3/A1) is narrow enough.  Stopping on the
data can bias an interval, so this script runs ``replicates`` independent adaptive pilots whose
true G* is known and reports:

* coverage of the true G* by the final interval, with its Clopper-Pearson interval;
* the same for fixed-size pilots of the adaptive pilots' median size (the reference);
* rollouts spent (prompts x samples per prompt, one backward pass each on a real model) against one
  training run of the paper's Table 2 (800 steps x 1024 rollouts) and its grid search (6 values of G).

Two sources:

* ``--source bandit``: the built-in contextual bandit, whose exact G* is known
  (``ustat_grpo.theory.mse.constants``);
* ``--source lm``: the built-in transformer, by resampling one stored pool (see :class:`PoolSampler`
  and :func:`pool_truth`): ``sampler.prompt_samples`` draws ``pool_prompts`` questions x
  ``pool_samples`` completions once (cached under ``results/``, a few minutes of CPU), and every
  simulated pilot then runs ``run_pilot`` with the same stop rule on prompts resampled from the
  pool, so no model call is needed per pilot (~0.5 s each).

Results (measured numbers live on the documentation's evidence page, not here): the built-in
models' runs with the defaults are stored in ``docs/results/adaptive_pilot_lm_{strong,weak}_seed{0,1000}.nc``
and rendered there with their Clopper-Pearson intervals; the other settings are listed there as
studies whose results are not stored.  What they showed: the strong model's pool is heavy-tailed (a
few prompts of middling success rate carry most of A1), the weak model's less so; with the
defaults (``M = 8``, ``pilot.ADAPTIVE_SAMPLES_PER_PROMPT``; at least ``pilot.ADAPTIVE_MIN_PROMPTS``
prompts) both cover near nominal; with fewer minimum prompts the weak model's pilots stop early and
undercover, and ``--samples-per-prompt 16`` at a fixed cost draws half as many prompts, so too few
of the heavy ones: the strong model's intervals then undercover, with or without
``--interval fieller_skew``.  On the toy bandit an ``M`` far below its measured ``M*`` undercovers:
choose ``M`` by measurement (``samples_per_prompt.choose_samples_per_prompt``).

    python -m simulations.adaptive_pilot                      # bandit
    python -m simulations.adaptive_pilot --replicates 400 --target 0.5
    python -m simulations.adaptive_pilot --source lm --target 0.5 --replicates 300 --max-prompts 1024 \
        --output results/adaptive_pilot_lm_strong_seed0.nc
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy import stats


from ustat_grpo.cli.options import options_from_args, parser_from_dataclass
from ustat_grpo.policies.bandits import default_bandit
from ustat_grpo.scaling.constants import constants_from_statistics, estimate_constants, prompt_pieces
from ustat_grpo.theory.mse import constants as exact_constants
from ustat_grpo.measurement.pilot import (ADAPTIVE_MAX_PROMPTS, ADAPTIVE_MIN_PROMPTS,
                              ADAPTIVE_SAMPLES_PER_PROMPT, BanditSampler, run_pilot, width_rule)
from ustat_grpo.core.provenance import provenance_attrs

#: one training run of arXiv 2603.01162's Table 2: 800 steps x 1024 rollouts
TRAINING_RUN_ROLLOUTS = 800 * 1024
_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Options of ``simulations/adaptive_pilot.py`` (one help line each)."""

    source: str = field(default="bandit", metadata={"help": "bandit: the built-in toy bandit (exact G*); lm: "
                                                            "the built-in transformer, resampled from one pool",
                                                    "choices": ("bandit", "lm")})
    replicates: int = field(default=200, metadata={"help": "independent adaptive pilots"})
    target: float = field(default=0.6, metadata={"help": "stop when (high - low) / G* of the 95 percent "
                                                         "interval is at most this"})
    samples_per_prompt: int | None = field(default=None, metadata={"help": "M, rollouts per prompt (None: 16 "
                                                                       "bandit, 8 lm = fit_scaling "
                                                                       "--target-width's default)"})
    batch_size: int | None = field(default=None, metadata={"help": "prompts between two checks of the stop "
                                                                  "rule (None: 8 bandit, 16 lm = run_pilot's "
                                                                  "default, as fit_scaling --target-width)"})
    max_prompts: int | None = field(default=None, metadata={"help": "cap on prompts per pilot (None: 1024 bandit, "
                                                                   "1024 lm = fit_scaling --target-width's cap)"})
    min_prompts: int | None = field(default=None, metadata={"help": "prompts before the stop rule is first asked "
                                                                "(None: 128 bandit, 512 lm = fit_scaling "
                                                                "--target-width's default)"})
    budget: int = field(default=256, metadata={"help": "rollouts per step N at which G* is reported"})
    seed: int = field(default=0, metadata={"help": "root seed (replicate r uses seed + r)"})
    variant: str = field(default="strong", metadata={"help": "--source lm: built-in model variant"})
    pool_prompts: int = field(default=500, metadata={"help": "--source lm: questions in the pool"})
    pool_samples: int = field(default=64, metadata={"help": "--source lm: completions per pool question"})
    projection_dim: int = field(default=256, metadata={"help": "--source lm: score sketch dimension"})
    pool_seed: int = field(default=0, metadata={"help": "--source lm: seed of sampler.prompt_samples for the pool"})
    interval: str = field(default="fieller", metadata={"help": "G* interval, of the stop rule and of the "
                                                               "coverage: fieller, or fieller_skew (Hall's "
                                                               "skewness-corrected pivot)",
                                                       "choices": ("fieller", "fieller_skew")})
    fixed_prompts: int | None = field(default=None, metadata={"help": "prompts of the fixed-size reference "
                                                                     "pilots (None: the adaptive pilots' median)"})
    skip_fixed: bool = field(default=False, metadata={"help": "skip the fixed-size reference pilots"})
    output: str | None = field(default=None, metadata={"help": "write the per-pilot results (size, G*, interval, "
                                                               "covers) with provenance to this NetCDF file",
                                                       "metavar": "PATH"})
    pool_cache: str = field(default="results/adaptive_pilot_pool_{variant}_{pool_prompts}x{pool_samples}"
                                    "_k{projection_dim}_seed{pool_seed}.npz",
                            metadata={"help": "--source lm: the pool's cache file (fields of this config "
                                              "in braces; relative to the repository root)"})


@dataclass(frozen=True)
class PoolSampler:
    """``sample_prompt(p, seq)`` of a pilot that resamples a stored pool of ``(P0, M0)`` samples.

    Each call draws, from ``numpy.random.default_rng(seq)``, one pool prompt uniformly (with
    replacement across calls: the ``P0`` pool prompts are the prompt population) and
    ``samples_per_prompt`` of its ``M0`` samples without replacement.  ``run_pilot`` gives every
    pilot prompt its own stream, so the draws of different pilot prompts are independent.

    Why the pool is the truth (:func:`pool_truth`): conditional on the pool prompt ``x``, a
    U-statistic over a simple random subsample of ``m`` of the ``M0`` samples has expectation equal
    to the same U-statistic over all ``M0`` (each index tuple of the subsample is a uniformly
    random distinct tuple of the pool), so every per-prompt piece of
    :class:`~ustat_grpo.scaling.constants.PromptStatistics` (``g``, ``g_norm2``, ``sigma2_trI``, ``zzq``) is
    unbiased for the full-pool piece of its prompt.  Pilot prompts are i.i.d. uniform over the pool,
    and two pilot prompts have independent subsamples even when they hit the same pool prompt, so
    the pilot's estimates of ``A1..A3`` (pieces averaged; cross products over distinct pilot
    prompts) are unbiased for the constants of the population "uniform over the pool prompts,
    subsamples of the pool's samples".  The pilots' jackknife over i.i.d. prompts estimates their
    variance in this world.  This is exact in its own world: it checks the adaptive stop rule and
    the intervals on the model's real reward/score distribution, not the pool's distance to the
    model's population.
    """

    rewards: np.ndarray         # (P0, M0)
    scores: np.ndarray          # (P0, M0, k)
    samples_per_prompt: int

    def __call__(self, p: int, seq) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seq)
        x = rng.integers(self.rewards.shape[0])
        idx = rng.choice(self.rewards.shape[1], size=self.samples_per_prompt, replace=False)
        return self.rewards[x, idx], self.scores[x, idx]


def pool_truth(rewards, scores) -> np.ndarray:
    """``(A1, A2, A3)`` that pilots resampled by :class:`PoolSampler` estimate without bias.

    With full-pool pieces ``g_x``, ``G2_x`` (order-4 U-statistic of ``||g(x)||^2``), ``st_x``,
    ``zzq_x`` of each pool prompt ``x`` (:func:`ustat_grpo.scaling.constants.prompt_pieces`, the code of
    the pilots) and uniform prompt weights:

    ``A1 = mean_x G2_x - ||mean_x g_x||^2``,  ``A2 = mean_x (zzq_x - G2_x)``,
    ``A3 = mean_x (st_x + G2_x)``.

    ``E[g_i . g_j] = ||mean_x g_x||^2`` for two distinct pilot prompts (independent), and
    ``E[g2_i] = mean_x G2_x``; so ``A1`` keeps ``||g_x||^2`` in the diagonal of
    ``||mean g||^2`` where the fixed-prompt-set formula (``prompt_probs`` uniform) has ``G2_x``,
    and has no ``P0/(P0-1)`` factor of the sampled-prompts formula (the pool is the population,
    not a sample of it).  Both differ by ``O(1/P0)``: on the default pool their G* are 3.3998 and
    3.4022 against 3.4028 (the script prints them), far inside any pilot's interval.  The truth is
    ``G* = 1 + sqrt(A3/A1)`` of these constants, as the real pilot's target is that of the
    population's.
    """
    g, g2, st, zzq = prompt_pieces(np.asarray(rewards, float), np.asarray(scores, float))
    gbar = g.mean(0)                                     # (k,)
    return np.array([g2.mean() - gbar @ gbar, (zzq - g2).mean(), (st + g2).mean()])


def load_pool(cfg: Config) -> tuple[np.ndarray, np.ndarray, dict]:
    """The pool ``rewards (P0, M0)``, ``scores (P0, M0, k)`` of the built-in model, cached as ``.npz``.

    Drawn once by ``sampler.prompt_samples(None, variant=..., num_prompts=pool_prompts,
    samples_per_prompt=pool_samples, rng=pool_seed, projection_dim=projection_dim, device="cpu")``;
    the file stores the provenance (:func:`ustat_grpo.core.provenance.provenance_attrs`) as JSON, and a
    cache whose recorded config differs from ``cfg``'s pool settings is redrawn.
    """
    keys = ("variant", "pool_prompts", "pool_samples", "projection_dim", "pool_seed")
    pool_cfg = {k: getattr(cfg, k) for k in keys}
    path = os.path.join(_ROOT, cfg.pool_cache.format(**asdict(cfg)))
    if os.path.exists(path):
        with np.load(path) as f:
            meta = json.loads(str(f["provenance"]))
            if json.loads(meta["config"]) == pool_cfg:
                return f["rewards"], f["scores"], meta
    from ustat_grpo.measurement import sampler

    print(f"sampling the pool ({cfg.pool_prompts} x {cfg.pool_samples}) from the built-in {cfg.variant} "
          f"model -> {path}", file=sys.stderr)
    z, w = sampler.prompt_samples(None, variant=cfg.variant, num_prompts=cfg.pool_prompts,
                                  samples_per_prompt=cfg.pool_samples, rng=cfg.pool_seed,
                                  projection_dim=cfg.projection_dim, device="cpu", progress=True)
    meta = provenance_attrs(seed=cfg.pool_seed, config=pool_cfg,
                            command="simulations/adaptive_pilot.py load_pool: ustat_grpo.measurement.sampler.prompt_samples")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, rewards=z, scores=w, provenance=json.dumps(meta))
    os.replace(tmp, path)
    return z, w, meta


def _interval(st, budget, interval="fieller"):
    """``(G*_exact, low, high)`` of a pilot's statistics, as ``width_rule`` computes them."""
    res = constants_from_statistics(st).optimal_group_size(budget=budget, interval=interval)
    lo, hi = res.g_star_exact_interval
    return float(res.g_star_exact), float(lo), float(hi)


def pilot_source(cfg: Config):
    """``(sampler, true G*, description, defaults (batch_size, max_prompts), extra)`` of ``cfg.source``."""
    if cfg.source == "bandit":
        policy = default_bandit()
        A = np.asarray(exact_constants(policy.moments()), float)[:3]
        return BanditSampler(policy, cfg.samples_per_prompt), A, "toy bandit, exact", (8, 1024), {}
    z, w, meta = load_pool(cfg)
    A = pool_truth(z, w)
    # the two O(1/P0) variants, for the record: sampled-prompts estimate of a larger population,
    # and the fixed-prompt-set formula (G2_x on the diagonal); the truth is A (see pool_truth)
    P0 = z.shape[0]
    alt = {"sampled prompts": estimate_constants(z, w).unconstrained,
           "fixed prompt set": estimate_constants(z, w, prompt_probs=np.full(P0, 1.0 / P0)).unconstrained}
    g2 = np.sort(prompt_pieces(z, w)[1])[::-1]           # (P0,) per-prompt ||g(x)||^2, largest first
    top = max(1, round(0.02 * P0))
    extra = {"alternatives": {k: float(1 + np.sqrt(v[2] / v[0])) for k, v in alt.items()},
             "heavy": (top, float(g2[:top].sum() / g2.sum()), float(stats.skew(g2))),
             "pool": f"{P0} x {z.shape[1]} of the built-in {cfg.variant} model, k = {w.shape[2]}, "
                     f"seed {cfg.pool_seed}, git {meta.get('git_describe')}"}
    what = f"built-in {cfg.variant} model, pool"
    return PoolSampler(z, w, cfg.samples_per_prompt), A, what, (16, ADAPTIVE_MAX_PROMPTS), extra


def with_defaults(cfg: Config) -> Config:
    """``cfg`` with ``samples_per_prompt`` and ``min_prompts`` set: 16 and 128 on the bandit,
    ``ADAPTIVE_SAMPLES_PER_PROMPT`` (8) and ``ADAPTIVE_MIN_PROMPTS`` (512) on lm."""
    bandit = cfg.source == "bandit"
    if cfg.samples_per_prompt is None:
        cfg = replace(cfg, samples_per_prompt=16 if bandit else ADAPTIVE_SAMPLES_PER_PROMPT)
    if cfg.min_prompts is None:
        cfg = replace(cfg, min_prompts=128 if bandit else ADAPTIVE_MIN_PROMPTS)
    return cfg


def simulate(cfg: Config) -> dict:
    """``replicates`` adaptive pilots (seeds ``seed + r``) and as many fixed pilots of their median size."""
    cfg = with_defaults(cfg)
    sampler, A, what, (batch, cap), extra = pilot_source(cfg)
    batch, cap = cfg.batch_size or batch, cfg.max_prompts or cap
    g_true = 1 + np.sqrt(A[2] / A[0])
    stop = width_rule(cfg.target, budget=cfg.budget, min_prompts=cfg.min_prompts, interval=cfg.interval)
    sizes, ints = [], []
    for r in range(cfg.replicates):
        st = run_pilot(sampler, num_prompts=cap, seed=cfg.seed + r, batch_size=batch, stop=stop)
        sizes.append(len(st))
        ints.append(_interval(st, cfg.budget, cfg.interval))
    fixed_p = cfg.fixed_prompts or int(np.median(sizes))
    fixed = [_interval(run_pilot(sampler, num_prompts=fixed_p, seed=10_000 + cfg.seed + r), cfg.budget,
                       cfg.interval)
             for r in range(0 if cfg.skip_fixed else cfg.replicates)]
    ints, fixed = np.array(ints), np.array(fixed).reshape(-1, 3)  # (R, 3): G*, low, high
    hit = lambda a: (a[:, 1] <= g_true) & (g_true <= a[:, 2])
    return dict(what=what, A=A, g_true=float(g_true), sizes=np.array(sizes), intervals=ints, hits=hit(ints),
                fixed_prompts=fixed_p, fixed_hits=hit(fixed), batch_size=batch, max_prompts=cap, **extra)


def write_output(cfg: Config, out: dict, path: str) -> None:
    """Per-pilot results as NetCDF (dims ``replicate``, ``fixed_replicate``) with the provenance."""
    import xarray as xr

    from ustat_grpo.core.provenance import write_netcdf

    ints, fixed = out["intervals"], np.array(out["fixed_hits"], bool)
    ds = xr.Dataset({"num_prompts": ("replicate", out["sizes"]), "g_star": ("replicate", ints[:, 0]),
                     "low": ("replicate", ints[:, 1]), "high": ("replicate", ints[:, 2]),
                     "covers": ("replicate", out["hits"].astype(np.int8)),
                     "fixed_covers": ("fixed_replicate", fixed.astype(np.int8))},
                    coords={"replicate": np.arange(len(ints))})
    ds.attrs.update(g_true=out["g_true"], constants=json.dumps([float(a) for a in out["A"]]),
                    fixed_prompts=out["fixed_prompts"], description=out["what"])
    write_netcdf(ds, path, provenance=provenance_attrs(seed=cfg.seed, config=asdict(cfg)))


def _cp(k, n):
    ci = stats.binomtest(int(k), int(n)).proportion_ci(0.95, method="exact")
    return ci.low, ci.high


def main(argv=None) -> int:
    parser = parser_from_dataclass(Config, prog="python -m simulations.adaptive_pilot", description=__doc__.split("\n\n")[0])
    cfg = with_defaults(options_from_args(Config, parser.parse_args(argv)))
    out = simulate(cfg)
    n, M = cfg.replicates, cfg.samples_per_prompt
    k, kf = int(out["hits"].sum()), int(out["fixed_hits"].sum())
    g, ints, sizes = out["g_true"], out["intervals"], out["sizes"]
    rollouts = sizes * M
    print(f"{out['what']} G*_exact = {g:.4f} (A1..A3 = {', '.join(f'{a:.5g}' for a in out['A'])}); target relative "
          f"width {cfg.target}, M = {M}, at least {cfg.min_prompts} prompts, batches of {out['batch_size']}, "
          f"cap {out['max_prompts']}, N = {cfg.budget}, seeds {cfg.seed}..{cfg.seed + n - 1}")
    if "pool" in out:
        alt = ", ".join(f"{k_} {v:.4f}" for k_, v in out["alternatives"].items())
        top, share, skew = out["heavy"]
        print(f"pool: {out['pool']}; G* by the O(1/P0) variants of the pool's constants: {alt}; the {top} "
              f"prompts of largest ||g(x)||^2 carry {share:.0%} of its sum (skewness {skew:.1f})")
    print(f"adaptive pilots: coverage {k}/{n} = {k / n:.3f}, 95% CP [{_cp(k, n)[0]:.3f}, {_cp(k, n)[1]:.3f}] "
          f"(nominal 0.95); truth below the interval {int((g < ints[:, 1]).sum())}, above "
          f"{int((g > ints[:, 2]).sum())}; prompts median {int(np.median(sizes))}, range "
          f"[{sizes.min()}, {sizes.max()}], {int((sizes >= out['max_prompts']).sum())} at the cap; "
          f"median estimate {np.median(ints[:, 0]):.4f}")
    early = sizes < out["max_prompts"]
    for name, sel in (("stopped by the rule", early), ("at the cap", ~early)):
        if sel.any():
            ks, ns = int(out["hits"][sel].sum()), int(sel.sum())
            print(f"  {name}: {ks}/{ns} = {ks / ns:.3f}, 95% CP [{_cp(ks, ns)[0]:.3f}, {_cp(ks, ns)[1]:.3f}]")
    if not cfg.skip_fixed:
        print(f"fixed pilots of {out['fixed_prompts']} prompts: coverage {kf}/{n} = {kf / n:.3f}, "
              f"95% CP [{_cp(kf, n)[0]:.3f}, {_cp(kf, n)[1]:.3f}]")
    if cfg.output:
        write_output(cfg, out, cfg.output)
    med = float(np.median(rollouts))
    print(f"cost: median {med:.0f} rollouts (+ as many backward passes) = {med / TRAINING_RUN_ROLLOUTS:.2%} of one "
          f"Table-2 training run, {med / (6 * TRAINING_RUN_ROLLOUTS):.3%} of its 6-run grid search over G")
    return 0


if __name__ == "__main__":
    sys.exit(main())
