"""Success amplification under GRPO (arXiv 2503.06639v4): PoS trajectories, fixed points and cycle map.

Iterates the probability-of-success recurrence ``p_n = h_{eps,p_ref}(p_{n-1})`` (KL to the
reference; spec section 3) from ``p_0 = p_ref`` on a log grid of ``(p_ref, beta)`` for several
smoothing values ``eps``, classifies each cell as converged / 2-cycle (or longer) / to 1 / not
converged, and solves the fixed-point equation directly (all roots, with their stability).
Writes

* ``<out>/amplification.nc``: dims ``(p_ref, beta, eps)`` with ``status`` (1 converged, 2 cycle,
  3 to one, 0 not converged), ``period``, ``p_low``/``p_high`` (attractor range), ``amplification``
  (``p_low - p_ref``), ``num_fixed_points``, ``num_stable_fixed_points``; dims ``(case, step)``
  with example trajectories of every variant; provenance attributes (seed as a string, package
  version, git describe, command, config JSON, creation time);
* ``<out>/amplification.png``: trajectories, a cobweb of the 2-cycle example, and the status map per
  ``eps``.

The computation is deterministic (no random numbers); ``seed`` is recorded for uniformity only.

Usage: ``python -m simulations.amplification --out results/amplification``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np


from ustat_grpo.theory import amplification as amp
from ustat_grpo.theory import attractor
from ustat_grpo.cli.options import options_from_args, parser_from_dataclass
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf


@dataclass(frozen=True)
class Config:
    p_ref_min: float = field(default=1e-4, metadata={"help": "smallest reference PoS (log grid)"})
    p_ref_max: float = field(default=0.9, metadata={"help": "largest reference PoS (log grid)"})
    num_p_ref: int = field(default=60, metadata={"help": "grid points in p_ref"})
    beta_min: float = field(default=0.1, metadata={"help": "smallest KL weight beta (log grid)"})
    beta_max: float = field(default=30.0, metadata={"help": "largest KL weight beta (log grid)"})
    num_beta: int = field(default=60, metadata={"help": "grid points in beta"})
    eps: str = field(default="0,1e-5,1e-3,1e-1", metadata={"help": "comma-separated smoothing values varepsilon"})
    num_iter: int = field(default=3000, metadata={"help": "iterations of the recurrence per cell"})
    max_period: int = field(default=8, metadata={"help": "longest cycle period looked for"})
    fixed_point_grid: int = field(default=8001, metadata={"help": "bracketing grid (logit space) of the root finder"})
    seed: int = field(default=0, metadata={"help": "recorded only: the computation draws no random numbers"})
    out: str = field(default="results/amplification", metadata={"help": "output directory"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})


# example trajectories: (label, variant, p_ref, beta, eps, alpha)
CASES = (
    ("ref: 2-cycle (p_ref=1e-4, beta=7.24, eps=1e-5)", "ref", 1e-4, 7.24, 1e-5, None),
    ("ref: converges (p_ref=0.1, beta=1, eps=1e-3)", "ref", 0.1, 1.0, 1e-3, None),
    ("both KLs, alpha=0.5 (p_ref=0.1, beta=1, eps=1e-3)", "both", 0.1, 1.0, 1e-3, 0.5),
    ("mirror (p_ref=0.1, beta=5, eps=0)", "mirror", 0.1, 5.0, 0.0, None),
    ("Dr.GRPO (p_ref=0.1, beta=1)", "dr_grpo", 0.1, 1.0, 1e-3, None),
    ("mirror Dr.GRPO (p_ref=0.1, beta=5)", "mirror_dr_grpo", 0.1, 5.0, 1e-3, None),
)
TRAJ_STEPS = 40


def simulate(cfg: Config, *, command: str = ""):
    """Run the grid; returns an ``xarray.Dataset``."""
    import xarray as xr

    p_ref = np.logspace(np.log10(cfg.p_ref_min), np.log10(cfg.p_ref_max), cfg.num_p_ref)
    beta = np.logspace(np.log10(cfg.beta_min), np.log10(cfg.beta_max), cfg.num_beta)
    eps = np.array([float(x) for x in cfg.eps.split(",")])
    P, B, E = np.meshgrid(p_ref, beta, eps, indexing="ij")                    # (p_ref, beta, eps)
    status, period, p_low, p_high = amp.classify_grid(P, B, E, num_iter=cfg.num_iter, max_period=cfg.max_period)
    n_fp = np.zeros(P.shape, int)
    n_stable = np.zeros(P.shape, int)
    for idx in np.ndindex(P.shape):
        fps = attractor.fixed_points(P[idx], B[idx], E[idx], grid_size=cfg.fixed_point_grid)
        n_fp[idx] = len(fps)
        n_stable[idx] = sum(f.stable for f in fps)
    traj = np.full((len(CASES), TRAJ_STEPS + 1), np.nan)
    case_status = []
    for i, (_, variant, pr_, b_, e_, a_) in enumerate(CASES):
        tr = amp.iterate_pos(pr_, b_, e_, variant, alpha=a_, max_iter=TRAJ_STEPS)
        traj[i, :len(tr.p)] = tr.p
        traj[i, len(tr.p):] = tr.p[-1] if tr.status != "to_one" else 1.0
        case_status.append(tr.status)
    ds = xr.Dataset(
        dict(status=(("p_ref", "beta", "eps"), status), period=(("p_ref", "beta", "eps"), period),
             p_low=(("p_ref", "beta", "eps"), p_low), p_high=(("p_ref", "beta", "eps"), p_high),
             amplification=(("p_ref", "beta", "eps"), p_low - P),
             num_fixed_points=(("p_ref", "beta", "eps"), n_fp),
             num_stable_fixed_points=(("p_ref", "beta", "eps"), n_stable),
             trajectory=(("case", "step"), traj)),
        coords=dict(p_ref=p_ref, beta=beta, eps=eps, case=[c[0] for c in CASES], step=np.arange(TRAJ_STEPS + 1)))
    ds["status"].attrs["codes"] = json.dumps(amp.STATUS_CODES)
    ds["trajectory"].attrs["variants"] = json.dumps([c[1] for c in CASES])
    ds["trajectory"].attrs["status"] = json.dumps(case_status)
    ds.attrs.update(provenance_attrs(seed=cfg.seed, config=asdict(cfg), command=command),
                    source="arXiv 2503.06639v4, spec section 3.4; recurrence p_n = sigmoid(logit p_ref + Omega_eps(p_{n-1})/beta)")
    return ds


def summarize(ds) -> dict:
    st = ds["status"].values
    out = dict(cells=int(st.size), converged=int((st == 1).sum()), cycle=int((st == 2).sum()),
               period2=int(((st == 2) & (ds["period"].values == 2)).sum()), to_one=int((st == 3).sum()),
               not_converged=int((st == 0).sum()),
               min_amplification=float(np.nanmin(ds["amplification"].values)),
               max_fixed_points=int(ds["num_fixed_points"].max()))
    out["cycle_by_eps"] = {f"{e:g}": int((ds["status"].sel(eps=e).values == 2).sum()) for e in ds["eps"].values}
    return out


def plot(ds, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    eps = ds["eps"].values
    ncol = max(3, len(eps))
    fig, axes = plt.subplots(2, ncol, figsize=(4.8 * ncol, 10.5), constrained_layout=True)
    # (a) trajectories
    ax = axes[0, 0]
    for i, lab in enumerate(ds["case"].values):
        ax.plot(ds["step"].values, ds["trajectory"].values[i], marker=".", ms=3, lw=1.2, label=lab)
    ax.set_xlabel("iteration n")
    ax.set_ylabel("probability of success p_n")
    ax.set_title("PoS trajectories from p_0 = p_ref")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)
    # (b) cobweb of the 2-cycle example, in logit space (the low point is 1.5e-4)
    from scipy.special import expit, logit

    ax = axes[0, 1]
    L = np.linspace(-10, 4, 4000)
    ax.plot(L, logit(amp.pos_map(expit(L), 1e-4, 7.24, 1e-5)), color="C0", label="logit h(p): p_ref=1e-4, beta=7.24, eps=1e-5")
    ax.plot(L, L, color="grey", lw=0.8, label="identity")
    tr = amp.iterate_pos(1e-4, 7.24, 1e-5, max_iter=60)
    lx, ly = [tr.logit[0]], [tr.logit[0]]
    for a, b in zip(tr.logit[:-1], tr.logit[1:]):
        lx += [a, b]
        ly += [b, b]
    ax.plot(lx, ly, color="C3", lw=0.7, label="iteration from p_ref")
    cyc = attractor.two_cycles(1e-4, 7.24, 1e-5)[0]
    ax.scatter(logit([cyc.p_low, cyc.p_high]), logit([cyc.p_high, cyc.p_low]), color="k", zorder=5,
               label=f"stable 2-cycle {{{cyc.p_low:.5f}, {cyc.p_high:.3f}}}")
    for f in attractor.fixed_points(1e-4, 7.24, 1e-5):
        if f.logit < 4:
            ax.scatter([f.logit], [f.logit], marker="x", color="k", zorder=5,
                       label=f"unstable fixed point p*={f.p:.4f}, h'={f.derivative:.2f}")
    ax.set_xlabel("logit p_{n-1}")
    ax.set_ylabel("logit p_n")
    ax.set_title("cobweb: convergence is local only")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    # (c) attained PoS (upper attractor point) for one eps
    ax = axes[0, 2]
    e_show = eps[min(2, len(eps) - 1)]
    sub = ds.sel(eps=e_show)
    im = ax.pcolormesh(ds["beta"].values, ds["p_ref"].values, sub["p_high"].values, shading="nearest",
                       cmap="viridis", vmin=0, vmax=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("beta")
    ax.set_ylabel("p_ref")
    ax.set_title(f"limit PoS (upper point of attractor), eps={e_show:g}")
    fig.colorbar(im, ax=ax, label="p*")
    if ncol > 3:
        ax = axes[0, 3]
        e_fp = eps[min(1, len(eps) - 1)]
        nf = ds["num_fixed_points"].sel(eps=e_fp).values
        im = ax.pcolormesh(ds["beta"].values, ds["p_ref"].values, nf, shading="nearest",
                           cmap=plt.get_cmap("magma", int(nf.max()) + 1), vmin=-0.5, vmax=nf.max() + 0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("beta")
        ax.set_ylabel("p_ref")
        ax.set_title(f"number of fixed points with logit p* <= 60, eps={e_fp:g}")
        fig.colorbar(im, ax=ax, ticks=range(int(nf.max()) + 1))
    for j in range(4, ncol):
        axes[0, j].axis("off")
    # (d) status maps per eps
    cmap = ListedColormap(["#bbbbbb", "#4c72b0", "#dd4444", "#55a868"])   # not conv., converged, cycle, to one
    for j, e in enumerate(eps):
        ax = axes[1, j]
        st = ds["status"].sel(eps=e).values
        ax.pcolormesh(ds["beta"].values, ds["p_ref"].values, st, shading="nearest", cmap=cmap, vmin=-0.5, vmax=3.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("beta")
        ax.set_ylabel("p_ref")
        ax.set_title(f"eps = {e:g}: {int((st == 2).sum())} of {st.size} cells cycle")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(k)) for k in range(4)]
    fig.legend(handles, ["not converged", "converged (fixed point)", "cycle (period >= 2)", "p -> 1 within 2e-16 (logit > 36)"],
               loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.03), fontsize=9)
    fig.suptitle("GRPO success amplification: p_n = h(p_{n-1}) (Mroueh, arXiv 2503.06639v4)", fontsize=12)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = parser_from_dataclass(Config, prog="python -m simulations.amplification", description=__doc__.split("\n\n")[0])
    cfg = options_from_args(Config, p.parse_args(argv))
    command = " ".join(["python", "-m", "simulations.amplification", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.perf_counter()
    try:
        ds = simulate(cfg, command=command)
    except ValueError as exc:
        print(f"amplification.py: {exc}", file=sys.stderr)
        return 2
    os.makedirs(cfg.out, exist_ok=True)
    nc = os.path.join(cfg.out, "amplification.nc")
    write_netcdf(ds, nc)
    outs = [nc]
    if not cfg.no_plot:
        outs.append(plot(ds, os.path.join(cfg.out, "amplification.png")))
    print(f"done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(json.dumps(dict(outputs=outs, summary=summarize(ds)), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
