"""Theorem 7 universality on a toy: a Figure-5 / Table-2 analogue for the best group size.

Runs Algorithm 1 (GRPO, constant step ``beta``) on the interior-optimum contextual bandit of
check ``Thm7-universality`` (:func:`universality_bandit`: predicted
``G*_exact = 1 + sqrt(A3/A1) = 5.12`` at theta*) for several budgets ``N = B G``, group sizes
``G`` and iteration counts ``n``, from a far start, with independent replicates, and writes

* ``<out>/universality.nc``: per-replicate gap (window mean over iterations ``(0.75 n, n]``) with
  dims ``budget, iteration, num_generations, replicate``; per (budget, iteration) the fitted
  ``G*`` and its Fieller interval, the best observed G; provenance attributes (seed as a string,
  version, git describe, command, config JSON, creation time);
* ``<out>/universality.png``: Figure-5 analogue: one panel per iteration count, ``N x gap``
  (mean +- 95% CI over replicates) vs G, one line per budget, predicted ``G*`` marked;
* stdout: Table-2 analogue (final-iteration gap, best G per budget in bold) and the measured
  ``G*`` per (budget, iteration) against the prediction.

Usage: ``python -m simulations.universality`` (about a minute on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np


from ustat_grpo.scaling import grid_fit
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.policies.bandits import ContextualSoftmaxBandit
from ustat_grpo.theory.mse import constants
from ustat_grpo.experiments.algorithm1 import run_algorithm1
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf

__all__ = ["universality_bandit", "simulate_universality", "fit_universality", "simulate", "main"]


@dataclass(frozen=True)
class Config:
    budgets: str = field(default="24,48,96", metadata={"help": "budgets N = B*G (comma-separated)"})
    group_sizes: str = field(default="2,3,4,6,8,12,24", metadata={"help": "G values; each must divide every N"})
    iterations: str = field(default="100,200,400,800,1600", metadata={"help": "iteration counts n reported"})
    replicates: int = field(default=100, metadata={"help": "independent runs per (N, G)"})
    beta: float = field(default=1.0, metadata={"help": "constant step size"})
    start: str = field(default="far", metadata={"help": "'far' (theta0 = (-1.5, 1.5)) or 'optimum'"})
    seed: int = field(default=20261122, metadata={"help": "root seed (one SeedSequence child per (N, G))"})
    out: str = field(default="results/universality", metadata={"help": "output directory"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})


# ------------------------------------------------------------------------- the toy and its runs

def universality_bandit(seed: int = 0) -> ContextualSoftmaxBandit:
    """4 prompts, 4 arms in R^2: a best-on-average centre arm at 0 and three arms on the unit circle.

    The centre arm can never dominate a softmax over these features, so the maximiser is
    interior (theta* ~ (0.21, -0.54)) with non-vanishing gradient noise; prompts disagree on the
    circle arms' rewards, so A1 > 0 at theta* and ``G*_exact = 1 + sqrt(A3/A1) ~ 5.12``.  The
    3-fold symmetry makes the Hessian isotropic at theta* (k ~ 0.0167).
    """
    rng = np.random.default_rng(seed)
    P = 4
    ang = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    phi = np.zeros((P, 4, 2))                                     # (P, K, d)
    phi[:, 1:, :] = np.stack([np.cos(ang), np.sin(ang)], -1)
    p = np.zeros((P, 4))
    p[:, 0] = 0.7
    p[:, 1:] = np.clip(0.5 + 0.3 * rng.standard_normal((P, 3)), 0.02, 0.98)
    return ContextualSoftmaxBandit(phi, success_probs=p)


def simulate_universality(*, budgets=(48, 96), group_sizes=(2, 3, 4, 6, 8, 12, 16, 24),
                          iterations=(400,), replicates=64, beta=1.0, start="optimum",
                          window=0.75, seed=0, progress=None):
    """Gap of Algorithm 1 (GRPO, constant step) vs G at fixed budgets and iteration counts.

    Parameters
    ----------
    budgets, group_sizes, iterations : sequences of int
        ``N``, ``G`` (``B = N / G`` must be an integer) and the iteration counts ``n`` reported.
    replicates : int
        Independent runs per (N, G).
    beta : float
        Constant step size.
    start : {"optimum", "far"}
        ``theta_0 = theta*`` (stationary regime) or ``(-1.5, 1.5)`` (transient then stationary).
    window : float
        The gap "at n" is the per-replicate mean over iterations ``(window * n, n]``.
    seed : int
        One ``SeedSequence`` child per (N, G) cell.

    Returns
    -------
    gap : ndarray (len(budgets), len(iterations), len(group_sizes), replicates)
    info : dict  (theta_star, constants at theta*, G*_exact)
    """
    policy = universality_bandit()
    theta_star, _ = policy.optimum()
    A = np.array(constants(policy.moments(theta_star)))
    theta0 = theta_star if start == "optimum" else np.array([-1.5, 1.5])
    n_max = int(max(iterations))
    out = np.empty((len(budgets), len(iterations), len(group_sizes), replicates))
    seqs = np.random.SeedSequence(seed).spawn(len(budgets) * len(group_sizes))
    for i, N in enumerate(budgets):
        for j, G in enumerate(group_sizes):
            if N % G:
                raise ValueError(f"G = {G} does not divide N = {N}")
            rng = np.random.default_rng(seqs[i * len(group_sizes) + j])
            res = run_algorithm1(policy, "leave_one_out", num_prompts=N // G, num_generations=G, num_steps=n_max,
                                 step_size="constant", beta=beta, replicates=replicates, rng=rng,
                                 theta0=theta0, record=list(range(n_max + 1)))
            for k, n in enumerate(iterations):
                lo = int(window * n)
                out[i, k, j] = res.gap[:, lo + 1:n + 1].mean(1)      # (R,)
            if progress:
                progress(f"N={N} G={G} done")
    info = dict(theta_star=theta_star.tolist(), A=A.tolist(), g_star_exact=float(1 + math.sqrt(A[2] / A[0])))
    return out, info


def fit_universality(gap, *, budgets, group_sizes, level):
    """Fieller intervals of G* per (budget, iteration) from the replicate gaps."""
    G = np.asarray(group_sizes, float)
    res = {}
    for i, N in enumerate(budgets):
        for k in range(gap.shape[1]):
            y = gap[i, k].mean(-1)
            se = gap[i, k].std(-1, ddof=1) / math.sqrt(gap.shape[-1])
            fit = grid_fit.fit_mse_grid(N / G, G, y, se, form="exact")
            res[(i, k)] = (fit, fit.optimal_group_size(level=level))
    return res


# ------------------------------------------------------------------------- the script

def _ints(s):
    return tuple(int(x) for x in str(s).split(",") if x.strip())


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.universality", description=__doc__.split("\n\n")[0])


def simulate(cfg: Config, *, command: str = "", progress=None):
    """Run the grid and return an ``xarray.Dataset`` with provenance."""
    import xarray as xr

    budgets, gs, its = _ints(cfg.budgets), _ints(cfg.group_sizes), _ints(cfg.iterations)
    gap, info = simulate_universality(budgets=budgets, group_sizes=gs, iterations=its, replicates=cfg.replicates,
                                      beta=cfg.beta, start=cfg.start, seed=cfg.seed, progress=progress)
    fits = fit_universality(gap, budgets=budgets, group_sizes=gs, level=0.95)
    shape = (len(budgets), len(its))
    gstar, lo, hi, best, pval = (np.full(shape, np.nan) for _ in range(5))
    for (i, k), (fit, r) in fits.items():
        gstar[i, k] = r.g_star_exact
        lo[i, k], hi[i, k] = r.g_star_exact_interval
        best[i, k] = gs[int(np.argmin(gap[i, k].mean(-1)))]
        pval[i, k] = np.nan if fit.pvalue is None else fit.pvalue
    dims2 = ("budget", "iteration")
    ds = xr.Dataset(
        {"gap": (("budget", "iteration", "num_generations", "replicate"), gap),
         "gap_mean": (("budget", "iteration", "num_generations"), gap.mean(-1)),
         "gap_se": (("budget", "iteration", "num_generations"), gap.std(-1, ddof=1) / math.sqrt(gap.shape[-1])),
         "g_star": (dims2, gstar), "g_star_low": (dims2, lo), "g_star_high": (dims2, hi),
         "best_observed_g": (dims2, best), "fit_chi2_pvalue": (dims2, pval)},
        coords={"budget": list(budgets), "iteration": list(its), "num_generations": list(gs),
                "replicate": np.arange(gap.shape[-1])})
    ds.attrs.update(
        title="Theorem 7 universality of the optimal group size (toy)",
        **provenance_attrs(seed=cfg.seed, config=dataclasses.asdict(cfg), command=command),
        g_star_predicted=info["g_star_exact"], constants_at_theta_star=json.dumps(info["A"]),
        theta_star=json.dumps(info["theta_star"]),
        note="gap at n = per-replicate mean of J* - J(theta_i) over i in (0.75 n, n]; g_star: Fieller 95% "
             "interval of 1 + sqrt(a3/a1) from the fit of N*gap = a1 G + a2 + a3/(G-1)")
    return ds


def plot(ds, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = ds["iteration"].values
    ncol = min(3, len(its))
    nrow = math.ceil(len(its) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), dpi=100, squeeze=False)
    G = ds["num_generations"].values
    g_pred = float(ds.attrs["g_star_predicted"])
    for k, n in enumerate(its):
        ax = axes.flat[k]
        for i, N in enumerate(ds["budget"].values):
            m = ds["gap_mean"].values[i, k] * N
            se = ds["gap_se"].values[i, k] * N
            ax.errorbar(G, m, yerr=1.96 * se, marker="o", ms=3, capsize=2, label=f"N = {N}")
            gs = ds["g_star"].values[i, k]
            if np.isfinite(ds["g_star_high"].values[i, k]) and G.min() <= gs <= G.max():  # bounded only
                ax.plot([gs], [np.interp(gs, G, m)], "v", color=f"C{i}", ms=7)
        ax.axvline(g_pred, color="k", ls="--", lw=1, label=f"predicted G* = {g_pred:.2f}")
        ax.set_xscale("log", base=2)
        ax.set_title(f"n = {n}")
        ax.set_xlabel("group size G (B = N/G)")
        ax.set_ylabel("N x gap (mean, 95% CI)")
    for ax in list(axes.flat)[len(its):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Algorithm 1 (GRPO, constant step): gap vs G at fixed budgets (triangles: fitted G*)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def tables(ds) -> str:
    G = ds["num_generations"].values
    n_last = int(ds["iteration"].values[-1])
    lines = [f"Table-2 analogue: mean gap at n = {n_last} (x 1e3; best G per budget in bold)", "",
             "| N \\ G | " + " | ".join(str(g) for g in G) + " |", "|---|" + "---|" * len(G)]
    for i, N in enumerate(ds["budget"].values):
        m = ds["gap_mean"].values[i, -1] * 1e3
        b = int(np.argmin(m))
        cells = [f"**{v:.3f}**" if j == b else f"{v:.3f}" for j, v in enumerate(m)]
        lines.append(f"| {N} | " + " | ".join(cells) + " |")
    lines += ["", f"fitted G* (95% Fieller) per budget and iteration; predicted "
                  f"1 + sqrt(A3/A1) = {float(ds.attrs['g_star_predicted']):.3f}", "",
              "| N \\ n | " + " | ".join(str(n) for n in ds["iteration"].values) + " |",
              "|---|" + "---|" * ds.sizes["iteration"]]
    for i, N in enumerate(ds["budget"].values):
        cells = []
        for k in range(ds.sizes["iteration"]):
            gs, lo, hi = (float(ds[v].values[i, k]) for v in ("g_star", "g_star_low", "g_star_high"))
            cells.append(f"{gs:.2f} [{lo:.2f}, {'inf' if not math.isfinite(hi) else f'{hi:.2f}'}] "
                         f"(best obs {int(ds['best_observed_g'].values[i, k])})")
        lines.append(f"| {N} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ns = _parser().parse_args(argv)
    cfg = Config(**vars(ns))
    if cfg.start not in ("far", "optimum"):
        print(f"error: --start must be 'far' or 'optimum', got {cfg.start!r}", file=sys.stderr)
        return 2
    try:
        budgets, gs, its = _ints(cfg.budgets), _ints(cfg.group_sizes), _ints(cfg.iterations)
    except ValueError as exc:
        print(f"error: bad integer list ({exc})", file=sys.stderr)
        return 2
    bad = [(n, g) for n in budgets for g in gs if n % g]
    if bad or len(gs) < 3 or min(gs) < 2 or cfg.replicates < 2 or not its:
        print("error: need >= 3 group sizes >= 2 dividing every budget, >= 2 replicates and >= 1 iteration"
              + (f" (G = {bad[0][1]} does not divide N = {bad[0][0]})" if bad else ""), file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    os.makedirs(cfg.out, exist_ok=True)
    command = "python -m simulations.universality " + " ".join(sys.argv[1:] if argv is None else argv)
    ds = simulate(cfg, command=command, progress=lambda s: print(s, file=sys.stderr))
    nc = os.path.join(cfg.out, "universality.nc")
    write_netcdf(ds, nc)
    print(tables(ds))
    if not cfg.no_plot:
        png = plot(ds, os.path.join(cfg.out, "universality.png"))
        print(f"\nwrote {nc} and {png}", file=sys.stderr)
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
