"""Figure 4 of arXiv 2603.01162 (oracle property) on a toy problem: MSE vs G for vanilla, GRPO, oracle.

The paper's Figure 4 measures, for three policies of increasing strength (Qwen2.5-0.5B base,
Instruct, Instruct + ICL), the MSE of the gradient estimate at G in {4, 8, 16, 32, 64}, with the
gradient aggregated over all questions.  Here each panel is a K-armed softmax bandit (one prompt,
so there is no prompt-sampling term, as with the paper's full aggregation) with Bernoulli rewards
whose success probabilities are fixed; the policies differ by a tilt ``theta = beta * p`` chosen
so that the success rate ``V = J(theta)`` is 0.2, 0.5 and 0.8 ("weak", "medium", "strong").

Outputs (``--out``):

* ``fig4_bandit.nc``: ``ustat_grpo.experiments.montecarlo.run_grid`` statistics with dims
  ``(policy, estimator, num_generations, num_prompts)`` (``mse``, ``mse_se``, ``count``, ``m2``,
  ``exact``) plus the exact curves ``exact_curve (policy, estimator, G)`` on every integer G, and
  provenance attributes (seed as a string, version, git describe, command, config JSON, time).
* ``fig4_bandit.png``: three log-log panels, Monte Carlo means with 95% confidence bands and the
  exact curves (Theorem 2 in its exact form).

stdout: per panel the largest |z| of Monte Carlo vs exact and the Bonferroni bound; exit code 1 if
any exceeds it.  Usage: ``python -m simulations.fig4_bandit`` (about 20 s on 2 cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np


from scipy import optimize

from ustat_grpo.experiments import montecarlo as mc
from ustat_grpo.policies.bandits import SoftmaxBandit
from ustat_grpo.theory.mse import exact_mse
from ustat_grpo.core.testing import bonferroni_z
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf

#: Success probabilities of the K = 10 arms ("answers"): a few good, most poor.
SUCCESS_PROBS = (0.95, 0.9, 0.7, 0.5, 0.3, 0.15, 0.1, 0.05, 0.02, 0.0)
PANELS = (("weak", 0.2), ("medium", 0.5), ("strong", 0.8))
COLORS = {"vanilla": "tab:blue", "leave_one_out": "tab:orange", "oracle": "tab:green"}
LABELS = {"vanilla": "vanilla", "leave_one_out": "GRPO (leave-one-out)", "oracle": "oracle baseline V(x)"}


@dataclass(frozen=True)
class Config:
    num_generations: str = field(default="4,8,16,32,64", metadata={"help": "comma-separated group sizes G"})
    num_replicates: int = field(default=20_000, metadata={"help": "Monte Carlo replicates per (policy, G)"})
    seed: int = field(default=20260304, metadata={"help": "root seed (streams keyed by (G, B); shared by panels)"})
    out: str = field(default="results/fig4_bandit", metadata={"help": "output directory"})
    scheduler: str = field(default="processes", metadata={"help": "serial, processes or a Dask address tcp://..."})
    max_workers: int = field(default=0, metadata={"help": "process-pool size (0: all cores)"})
    checkpoint_dir: str = field(default="", metadata={"help": "directory for per-cell checkpoints (resume)"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.fig4_bandit", description=__doc__.split("\n\n")[0])


def panel_policy(target_value: float) -> SoftmaxBandit:
    """The bandit with ``theta = beta * p`` and success rate ``J(theta) = target_value``."""
    p = np.array(SUCCESS_PROBS)

    def gap(beta):
        return SoftmaxBandit(p, theta=beta * p).objective() - target_value

    beta = optimize.brentq(gap, -50.0, 50.0, xtol=1e-14)
    return SoftmaxBandit(p, theta=beta * p)


def simulate(cfg: Config, *, command: str | None = None):
    """Run the grid for the three panels; returns an ``xarray.Dataset``."""
    import xarray as xr

    Gs = [int(g) for g in cfg.num_generations.split(",")]
    estimators = ("vanilla", "leave_one_out", "oracle")
    panels = []
    for name, target in PANELS:
        print(f"panel {name} (V = {target}) ...", file=sys.stderr)
        pol = panel_policy(target)
        ckpt = os.path.join(cfg.checkpoint_dir, name) if cfg.checkpoint_dir else None
        ds = mc.run_grid(pol, num_generations=Gs, num_prompts=1, estimators=estimators,
                         num_replicates=cfg.num_replicates, seed=cfg.seed, scheduler=cfg.scheduler,
                         max_workers=cfg.max_workers or None, checkpoint_dir=ckpt,
                         progress=not cfg.quiet, command=command)
        fine = np.arange(min(Gs), max(Gs) + 1)
        m = pol.moments()
        curve = np.array([[exact_mse(m, e, G, 1).total for G in fine] for e in estimators])
        ds["exact_curve"] = (("estimator", "G"), curve, {"long_name": "exact MSE on every integer G"})
        ds = ds.assign_coords(G=fine)
        ds["value"] = ((), float(pol.objective()), {"long_name": "success rate J(theta) = V"})
        ds["theta"] = (("arm",), pol.theta)
        panels.append(ds.expand_dims(policy=[name]))
    out = xr.concat(panels, dim="policy", data_vars="different", coords="different", compat="equals",
                    join="outer", combine_attrs="drop_conflicts")
    out["success_probs"] = (("arm",), np.array(SUCCESS_PROBS))
    run_cfg = json.loads(panels[0].attrs["config"])
    config = {"script": dataclasses.asdict(cfg), "run_grid": run_cfg}
    out.attrs.update(provenance_attrs(seed=cfg.seed, config=config, command=command))
    out.attrs["title"] = "Figure 4 analogue (arXiv 2603.01162) on softmax bandits"
    return out


def check(ds) -> tuple[bool, list[str]]:
    """Largest |z| per panel against the Bonferroni bound over all cells."""
    z = (ds.mse - ds.exact) / ds.mse_se
    bound = bonferroni_z(1e-6, int(z.size))
    lines, ok = [], True
    for p in ds.policy.values:
        worst = float(np.abs(z.sel(policy=p)).max())
        ok &= worst <= bound
        lines.append(f"{p:>7s}: V = {float(ds.value.sel(policy=p)):.3f}, max |z| = {worst:.2f} "
                     f"(bound {bound:.2f} for {int(z.size)} cells)")
    return ok, lines


def plot(ds, path) -> None:
    """Top row: MSE vs G (log-log), Monte Carlo points, 95% bands, exact curves.  Bottom row: the
    Monte Carlo mean over the exact value with its 95% band (the bands are thinner than the
    markers on the top row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    Gs = ds.num_generations.values
    npan = ds.sizes["policy"]
    fig, axes = plt.subplots(2, npan, figsize=(4.2 * npan, 5.6), sharex=True, sharey="row",
                             gridspec_kw={"height_ratios": [3, 1.25]}, constrained_layout=True,
                             squeeze=False)
    for col, p in enumerate(ds.policy.values):
        ax, axr = axes[0, col], axes[1, col]
        d = ds.sel(policy=p, num_prompts=1)
        for k, e in enumerate(d.estimator.values):
            c = d.sel(estimator=e)
            mse, se, ex = c.mse.values, c.mse_se.values, c.exact.values
            ax.plot(d.G.values, c.exact_curve.values, color=COLORS[e], lw=1.3, alpha=0.9)
            ax.fill_between(Gs, mse - 1.96 * se, mse + 1.96 * se, color=COLORS[e], alpha=0.3, lw=0)
            ax.plot(Gs, mse, "o", color=COLORS[e], ms=4.5, label=LABELS[e])
            shift = 2.0 ** ((k - 1) * 0.06)                    # small dodge so bars do not overlap
            axr.errorbar(Gs * shift, mse / ex, yerr=1.96 * se / ex, fmt="o", color=COLORS[e], ms=3.5,
                         capsize=2, lw=1)
        axr.axhline(1.0, color="0.3", lw=1)
        for a in (ax, axr):
            a.set_xscale("log", base=2)
            a.xaxis.set_major_locator(FixedLocator(Gs))
            a.xaxis.set_major_formatter(ScalarFormatter())
            a.xaxis.set_minor_locator(NullLocator())
            a.grid(True, which="both", alpha=0.3)
        ax.set_yscale("log")
        axr.set_xlabel("group size G")
        ax.set_title(f"{p} policy (success rate V = {float(d.value):.1f})")
    axes[0, 0].set_ylabel(r"MSE  $E\,\|\hat g - g\|^2$")
    axes[1, 0].set_ylabel("Monte Carlo / exact\n(95% CI)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", lw=1.3))
    labels.append("exact MSE (Thm 2, exact form)")
    axes[0, 0].legend(handles, labels, fontsize=8.5, loc="lower left", framealpha=0.9)
    n = int(ds["count"].min())
    fig.suptitle(f"Figure 4 analogue: oracle property on a 10-armed softmax bandit "
                 f"(B = 1, {n} replicates per point, 95% bands)", fontsize=11)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    cfg = Config(**vars(_parser().parse_args(args)))
    try:
        Gs = [int(g) for g in cfg.num_generations.split(",")]
    except ValueError:
        print(f"fig4_bandit.py: --num-generations must be comma-separated integers, got "
              f"{cfg.num_generations!r}", file=sys.stderr)
        return 2
    if min(Gs) < 2 or cfg.num_replicates < 2 or cfg.max_workers < 0:
        print("fig4_bandit.py: need every G >= 2, --num-replicates >= 2, --max-workers >= 0",
              file=sys.stderr)
        return 2
    command = " ".join(["python", "-m", "simulations.fig4_bandit", *args])
    try:
        ds = simulate(cfg, command=command)
    except ValueError as exc:
        print(f"fig4_bandit.py: {exc}", file=sys.stderr)
        return 2
    os.makedirs(cfg.out, exist_ok=True)
    nc = os.path.join(cfg.out, "fig4_bandit.nc")
    write_netcdf(ds, nc)
    print(f"wrote {nc}", file=sys.stderr)
    if not cfg.no_plot:
        png = os.path.join(cfg.out, "fig4_bandit.png")
        plot(ds, png)
        print(f"wrote {png}", file=sys.stderr)
    ok, lines = check(ds)
    print("Monte Carlo vs exact MSE (alpha = 1e-6, Bonferroni):")
    print("\n".join(lines))
    for p in ds.policy.values:
        d = ds.sel(policy=p, num_prompts=1)
        ratio = (d.mse.sel(estimator="leave_one_out") / d.mse.sel(estimator="oracle")).values
        print(f"{p:>7s}: MSE(GRPO)/MSE(oracle) at G = {[int(g) for g in d.num_generations.values]}: "
              + ", ".join(f"{r:.3f}" for r in ratio))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
