"""Theorem 8 by simulation: the law of n * gap under Algorithm 1 vs the weighted chi-squared limit.

Runs Algorithm 1 (step beta/(t + t0)) on the over-parameterised Gaussian-policy bandit of check C7
for the vanilla, GRPO and oracle estimators, and writes

* ``<out>/chi2_limit.nc``: per-replicate ``n * gap`` (dims ``estimator, replicate``), the predicted
  weights (``estimator, k``), observed and predicted quantiles on a probability grid, the KS
  statistic and p-value, with provenance attributes (seed as a string, version, git describe,
  command, config JSON, creation time);
* ``<out>/chi2_limit.png``: per estimator, a QQ plot (empirical vs predicted quantiles, with the
  uncorrected paper display without beta^2 for contrast) and the empirical CDF over the predicted CDF.

Usage: ``python -m simulations.chi2_limit --replicates 4000 --num-steps 4000``.
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


from scipy import stats

from ustat_grpo.policies.bandits import GaussianPolicyBandit
from ustat_grpo.theory.limits import identifiable_subspace, limit_law
from ustat_grpo.experiments.algorithm1 import run_algorithm1
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf
from ustat_grpo.cli.options import parser_from_dataclass


@dataclass(frozen=True)
class Config:
    replicates: int = field(default=4000, metadata={"help": "independent runs of Algorithm 1 per estimator"})
    num_steps: int = field(default=4000, metadata={"help": "n, iterations per run (n * gap is recorded at n)"})
    estimators: str = field(default="vanilla,leave_one_out,oracle", metadata={"help": "comma-separated estimator names"})
    num_prompts: int = field(default=2, metadata={"help": "B, prompts per step"})
    num_generations: int = field(default=4, metadata={"help": "G, generations per prompt"})
    beta_factor: float = field(default=1.5, metadata={"help": "beta = beta_factor / lambda_min(K) (> 1/2 needed)"})
    t0: float = field(default=20.0, metadata={"help": "offset of the step beta / (t + t0)"})
    action_std: float = field(default=0.5, metadata={"help": "Gaussian policy standard deviation s"})
    reward_width: float = field(default=1.0, metadata={"help": "reward width tau of Z = exp(-(a - a*)^2 / (2 tau^2))"})
    offset: str = field(default="0.3,-0.2,0.1", metadata={"help": "theta_0 - theta* (comma-separated)"})
    seed: int = field(default=20260308, metadata={"help": "root seed (one SeedSequence child per estimator)"})
    out: str = field(default="results/chi2_limit", metadata={"help": "output directory"})
    ks_nodes: int = field(default=129, metadata={"help": "exact-cdf nodes of the interpolated cdf used by KS"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.chi2_limit", description=__doc__.split("\n\n")[0])


def simulate(cfg: Config, *, command: str = ""):
    """Run the simulation; returns an ``xarray.Dataset``."""
    import xarray as xr

    pol = GaussianPolicyBandit(action_std=cfg.action_std, reward_width=cfg.reward_width)
    th, _ = pol.optimum()
    _, K = identifiable_subspace(pol.hessian(th))
    beta = cfg.beta_factor / float(np.linalg.eigvalsh(K).min())
    offset = np.array([float(v) for v in cfg.offset.split(",")])
    ests = [e.strip() for e in cfg.estimators.split(",") if e.strip()]
    probs = np.array([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.99])
    streams = np.random.SeedSequence(cfg.seed).spawn(len(ests))
    n = cfg.num_steps
    ngap, wts, wbad, q_obs, q_pred, q_bad, ks, ksp, runtime = [], [], [], [], [], [], [], [], []
    for est, ss in zip(ests, streams):
        t = time.perf_counter()
        ll = limit_law(pol, est, num_prompts=cfg.num_prompts, num_generations=cfg.num_generations, beta=beta)
        bad = limit_law(pol, est, num_prompts=cfg.num_prompts, num_generations=cfg.num_generations, beta=beta,
                        paper_display=True)
        res = run_algorithm1(pol, est, num_prompts=cfg.num_prompts, num_generations=cfg.num_generations,
                             num_steps=n, step_size="harmonic", beta=beta, t0=cfg.t0, replicates=cfg.replicates,
                             rng=np.random.default_rng(ss), theta0=th + offset, record=[n])
        x = n * res.gap[:, -1]                                         # (R,) n * Delta(pi_theta_n)
        law = ll.law()
        k = stats.kstest(x, law.interpolated_cdf(num_nodes=cfg.ks_nodes))
        ngap.append(x)
        wts.append(ll.weights)
        wbad.append(bad.weights)
        q_obs.append(np.quantile(x, probs))
        q_pred.append(np.asarray(law.ppf(probs), float))
        q_bad.append(np.asarray(bad.law().ppf(probs), float))
        ks.append(k.statistic)
        ksp.append(k.pvalue)
        runtime.append(time.perf_counter() - t)
        print(f"[{est}] mean n*gap {x.mean():.4f} +- {x.std(ddof=1) / math.sqrt(x.size):.4f} vs sum w "
              f"{ll.mean():.4f}; KS p {k.pvalue:.3g} ({runtime[-1]:.1f} s)", file=sys.stderr)
    r = len(wts[0])
    ds = xr.Dataset(
        dict(n_gap=(("estimator", "replicate"), np.stack(ngap)),
             weights=(("estimator", "k"), np.stack(wts)),
             weights_paper_display=(("estimator", "k"), np.stack(wbad)),
             quantile_observed=(("estimator", "prob"), np.stack(q_obs)),
             quantile_predicted=(("estimator", "prob"), np.stack(q_pred)),
             quantile_paper_display=(("estimator", "prob"), np.stack(q_bad)),
             ks_statistic=(("estimator",), np.array(ks)), ks_pvalue=(("estimator",), np.array(ksp)),
             runtime_s=(("estimator",), np.array(runtime))),
        coords=dict(estimator=ests, replicate=np.arange(cfg.replicates), k=np.arange(r), prob=probs))
    ds.attrs.update(
        title="Theorem 8 (arXiv 2603.01162): n * gap under Algorithm 1 vs the weighted chi-squared limit",
        **provenance_attrs(seed=cfg.seed, config=dataclasses.asdict(cfg), command=command),
        beta=beta, num_steps=n,
        note="weights from the Lyapunov equation with beta^2 Omega (spec correction); "
             "weights_paper_display omit beta^2")
    return ds


def plot(ds, path: str) -> str:
    """QQ plot and CDF overlay per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ustat_grpo.stats.wchisq import WeightedChiSquared

    ests = list(ds.estimator.values)
    fig, axes = plt.subplots(2, len(ests), figsize=(4.2 * len(ests), 7.5), squeeze=False)
    pgrid = np.linspace(0.005, 0.995, 199)
    for j, est in enumerate(ests):
        x = np.sort(ds.n_gap.sel(estimator=est).values)
        law = WeightedChiSquared(ds.weights.sel(estimator=est).values)
        qp = np.asarray(law.ppf(ds.prob.values), float)
        ax = axes[0, j]
        emp = np.quantile(x, pgrid)
        ax.plot(np.asarray(law.ppf(pgrid[::11]), float), emp[::11], "o", ms=3, label="simulated vs limit")
        ax.plot(ds.quantile_paper_display.sel(estimator=est).values, ds.quantile_observed.sel(estimator=est).values,
                "x", ms=4, color="tab:red", label="vs paper display (no $\\beta^2$)")
        top = max(emp[-1], qp[-1])
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.set_xlim(0, top * 1.05)
        ax.set_title(f"{est}: QQ, n = {int(ds.attrs['num_steps'])}")
        ax.set_xlabel("predicted quantile of $\\sum_k w_k\\chi^2_1$")
        ax.set_ylabel("empirical quantile of $n\\,\\Delta_n$")
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[1, j]
        grid = np.linspace(0, np.quantile(x, 0.99), 60)
        ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=f"empirical (R = {x.size})")
        ax.plot(grid, law.cdf(grid), "r-", lw=1.2, label="Theorem 8 limit (Imhof)")
        ax.set_xlim(0, grid[-1])
        ax.set_title(f"{est}: KS p = {float(ds.ks_pvalue.sel(estimator=est)):.2g}")
        ax.set_xlabel("$n\\,\\Delta_n$")
        ax.set_ylabel("CDF")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    ns = _parser().parse_args(args)
    cfg = Config(**vars(ns))
    if cfg.replicates < 2 or cfg.num_steps < 1:
        print("chi2_limit.py: need --replicates >= 2 and --num-steps >= 1", file=sys.stderr)
        return 2
    try:
        ds = simulate(cfg, command=" ".join(["python", "-m", "simulations.chi2_limit", *args]))
    except ValueError as exc:  # e.g. beta * lambda_min(K) <= 1/2
        print(f"chi2_limit.py: {exc}", file=sys.stderr)
        return 2
    nc = write_netcdf(ds, os.path.join(cfg.out, "chi2_limit.nc"))
    outs = [nc]
    if not cfg.no_plot:
        outs.append(plot(ds, os.path.join(cfg.out, "chi2_limit.png")))
    summary = {est: dict(mean_n_gap=float(ds.n_gap.sel(estimator=est).mean()),
                         sum_weights=float(ds.weights.sel(estimator=est).sum()),
                         sum_weights_paper_display=float(ds.weights_paper_display.sel(estimator=est).sum()),
                         ks_pvalue=float(ds.ks_pvalue.sel(estimator=est)))
               for est in ds.estimator.values}
    print(json.dumps(dict(outputs=outs, beta=float(ds.attrs["beta"]), summary=summary), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
