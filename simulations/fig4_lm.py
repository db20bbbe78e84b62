"""Figure 4 of arXiv 2603.01162 (oracle property) on transformer policies: MSE vs G.

For each panel (policy) and each of ``num_prompts`` arithmetic questions, a pool of ``pool``
completions is sampled exactly from the policy, rewarded by the verifier, and scored
(``W = grad log pi(y|x)`` over all parameters, or a ``--params`` subset / ``--projection-dim``
sketch); only the Gram matrix ``K = S S^T`` of the pool is kept.  Each replicate draws a random
group of G pool members for the estimator and uses the remaining ``pool - G`` completions
(>= 192 by default; independent of the group) as the reference sample:

* ``v = mean_j Z_j W_j`` over the reference, an unbiased estimate of the true gradient g(x);
* ``|g(x)|^2`` by the unbiased U-statistic ``sum_{j != k} Z_j Z_k <W_j, W_k> / (m (m - 1))``;
* ``V(x) = mean_j Z_j`` over the reference (the oracle's baseline).

The squared error of each estimator ``sum_i w_i W_i`` (weights from ``ustat_grpo.theory.estimators``,
obtained by feeding the identity matrix as scores) is then the Gram identity
``w^T K w - 2 w^T S v + |g|^2``, an unbiased estimate of its MSE (the reference is independent
of the group).  The paper aggregates the gradient over all questions (eq. 8); with P questions
``MSE(aggregate) = (1/P^2) sum_x MSE_x``; we report the per-question mean ``(1/P) sum_x MSE_x``
(= P x the aggregate MSE) with a 95% interval over questions (the questions are a random sample
of the task, so the interval covers question sampling and Monte Carlo error together), and the
paired differences vanilla - GRPO and GRPO - oracle.

Panels: the built-in ``weak`` / ``strong`` / ``fewshot`` policies (mirroring base / Instruct /
Instruct + ICL), or with ``--model PATH`` that model with the paper's zero-shot and few-shot
prompts.  Outputs ``fig4_lm.nc`` (NetCDF, provenance attributes) and ``fig4_lm.png``; stdout gives
the table and whether the ordering vanilla > GRPO >= oracle holds.  Usage::

    python -m simulations.fig4_lm                      # built-in policies, ~3 min on 1 CPU thread
    python -m simulations.fig4_lm --model PATH --device cuda --num-prompts 500 --pool 1088
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np


import torch

from ustat_grpo.policies import arithmetic, lm
from ustat_grpo.scaling import constants
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf

ESTIMATOR_NAMES = ("vanilla", "leave_one_out", "oracle")
COLORS = {"vanilla": "tab:blue", "leave_one_out": "tab:orange", "oracle": "tab:green"}


@dataclass(frozen=True)
class Config:
    num_generations: str = field(default="4,8,16,32,64", metadata={"help": "comma-separated group sizes G"})
    num_prompts: int = field(default=64, metadata={"help": "questions (first P of make_dataset(500, seed=0))"})
    pool: int = field(default=256, metadata={"help": "completions sampled per question (group + reference)"})
    num_replicates: int = field(default=200, metadata={"help": "random groups per (question, G)"})
    seed: int = field(default=20260304, metadata={"help": "root seed (one stream per panel and question)"})
    model: str = field(default="", metadata={"help": "local HF model directory (default: built-in policies)"})
    panels: str = field(default="weak,strong,fewshot", metadata={"help": "built-in variants, or templates zero_shot,few_shot with --model"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "parameter dtype"})
    params: str = field(default="", metadata={"help": "substring selecting a parameter subset (default: all)"})
    projection_dim: int = field(default=0, metadata={"help": "sketch scores to this dimension (0: exact)"})
    chunk_size: int = field(default=32, metadata={"help": "sequences per vmap call"})
    out: str = field(default="results/fig4_lm", metadata={"help": "output directory"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.fig4_lm", description=__doc__.split("\n\n")[0])


def estimator_weights(rewards: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """Weights ``w`` (R, G) with ``estimate = sum_i w_i W_i`` for vanilla, GRPO, oracle.

    Every estimator is linear in the scores, so feeding the identity as scores returns its weights.
    """
    from ustat_grpo.theory.estimators import ESTIMATORS

    R, G = rewards.shape
    eye = np.broadcast_to(np.eye(G), (R, G, G))  # (R, G, G)
    return {"vanilla": ESTIMATORS["vanilla"](rewards, eye),
            "leave_one_out": ESTIMATORS["leave_one_out"](rewards, eye),
            "oracle": ESTIMATORS["oracle"](rewards, eye, values=values)}


def theory_pieces(z: np.ndarray, S) -> tuple[np.ndarray, float]:
    """Theorem 2 for one question from its pool: ``(G * MSE_e for e in ESTIMATOR_NAMES, A3)``.

    ``G MSE_vanilla = E[Z^2 |W|^2] - |g|^2``, ``G MSE_oracle = A2 = tr Sigma_oracle`` and
    ``G MSE_grpo = A2 + A3 / (G - 1)``; every piece is an unbiased U-statistic of the pool
    (``constants.prompt_constants``) of the whole pool; the Monte Carlo draws groups from the same pool.
    """
    w = S.double().cpu().numpy()[None] if torch.is_tensor(S) else np.asarray(S, float)[None]  # (1, N, d)
    zz = np.asarray(z, float)[None]                                                           # (1, N)
    a2, a3, g2 = constants.prompt_constants(zz, w)
    vanilla = float(np.mean(zz[0] ** 2 * np.einsum("nd,nd->n", w[0], w[0])) - g2[0])
    return np.array([vanilla, a2[0], a2[0]]), float(a3[0])


def replicate_errors(K: np.ndarray, z: np.ndarray, G: int, R: int, *, rng) -> dict[str, np.ndarray]:
    """Unbiased squared-error draws (R,) per estimator from one question's pool.

    ``K`` (N, N) Gram matrix of the pool's scores, ``z`` (N,) rewards.  Group = G random pool
    members, reference = the other N - G.  ``rng``: anything ``numpy.random.default_rng`` accepts.
    """
    rng = np.random.default_rng(rng)
    N = len(z)
    m = N - G
    Kz = K @ z  # (N,)  = S (sum_j z_j s_j)
    zKz = z @ Kz
    diag = np.diag(K)
    sq_all = (z * z * diag).sum()
    idx = np.stack([rng.permutation(N)[:G] for _ in range(R)])  # (R, G)
    zg = z[idx]  # (R, G)
    Kgg = K[idx[:, :, None], idx[:, None, :]]  # (R, G, G)
    # S_G (sum_{j in ref} z_j s_j) = (K z)_G - K_GG z_G
    Kgz = Kz[idx] - np.einsum("rij,rj->ri", Kgg, zg)  # (R, G)
    cross = Kgz / m  # (R, G)  = S_G v
    zKz_ref = zKz - 2 * (zg * Kz[idx]).sum(-1) + np.einsum("ri,rij,rj->r", zg, Kgg, zg)
    sq_ref = sq_all - (zg * zg * diag[idx]).sum(-1)
    g_norm2 = (zKz_ref - sq_ref) / (m * (m - 1))  # (R,)  unbiased |g|^2
    values = (z.sum() - zg.sum(-1)) / m  # (R,)
    out = {}
    for name, w in estimator_weights(zg, values).items():
        out[name] = (np.einsum("ri,rij,rj->r", w, Kgg, w) - 2 * (w * cross).sum(-1) + g_norm2)
    return out


def panel_policies(cfg: Config):
    names = [s for s in cfg.panels.split(",") if s]
    if cfg.model:
        return [(t, lm.load_policy(cfg.model, template=t, device=cfg.device, dtype=cfg.dtype))
                for t in names]
    return [(v, lm.load_policy(None, variant=v, device=cfg.device, dtype=cfg.dtype)) for v in names]


def _measure_panel(cfg: Config, policy, problems, Gs, pseed) -> dict[str, np.ndarray]:
    """One panel: per question, Monte Carlo MSE per (estimator, G) and the Theorem 2 pieces."""
    P, E = len(problems), len(ESTIMATOR_NAMES)
    out = dict(mse=np.zeros((E, len(Gs), P)), value=np.zeros(P), trace_fisher=np.zeros(P),
               cov_zw2=np.zeros(P),
               theory=np.zeros((E, P)),         # Theorem 2 per-question MSE x G (G-free parts)
               residual=np.zeros(P))            # A3(x) = sigma^2 tr I + |g|^2
    params = cfg.params or None
    d = sum(policy.model.get_parameter(n).numel() for n in lm.parameter_names(policy.model, params))
    sketch = lm.Sketch(d, cfg.projection_dim, seed=cfg.seed) if cfg.projection_dim else None
    for x, (prob, qseed) in enumerate(zip(problems, pseed.spawn(P))):
        sample_seed, mc_seed = qseed.spawn(2)
        comp, z = lm.sample_prompt(policy, prob, cfg.pool, rng=sample_seed)
        S = lm.per_sample_scores(policy.model, comp.sequences, comp.completion_mask,
                                 params=params, chunk_size=cfg.chunk_size, projection=sketch)
        K = lm.gram(S)  # (N, N) float64
        w2 = np.diag(K)  # (N,) |W_i|^2
        out["value"][x], out["trace_fisher"][x] = z.mean(), w2.mean()
        out["cov_zw2"][x] = np.mean((z - z.mean()) * (w2 - w2.mean()))
        out["theory"][:, x], out["residual"][x] = theory_pieces(z, S)
        rng = np.random.default_rng(mc_seed)
        for j, G in enumerate(Gs):
            errs = replicate_errors(K, z, G, cfg.num_replicates, rng=rng)
            for e, name in enumerate(ESTIMATOR_NAMES):
                out["mse"][e, j, x] = errs[name].mean()
    return out


def simulate(cfg: Config, *, command: str | None = None):
    Gs = [int(g) for g in cfg.num_generations.split(",")]
    if max(Gs) + 3 > cfg.pool:
        raise ValueError("pool must exceed the largest G by at least 3")
    problems = arithmetic.make_dataset(500, seed=0)[:cfg.num_prompts]
    panels = panel_policies(cfg)
    results, seconds = [], []
    for (pname, policy), pseed in zip(panels, np.random.SeedSequence(cfg.seed).spawn(len(panels))):
        t0 = time.time()
        results.append(_measure_panel(cfg, policy, problems, Gs, pseed))
        seconds.append(time.time() - t0)
        print(f"[fig4_lm] panel {pname}: {seconds[-1]:.0f}s, mean V {results[-1]['value'].mean():.3f}",
              file=sys.stderr)
    per = {k: np.stack([r[k] for r in results]) for k in results[0]}   # (panel, ...)
    ds = _dataset(per, Gs, problems, [p for p, _ in panels])
    ds.attrs.update(provenance_attrs(seed=cfg.seed, config=dataclasses.asdict(cfg), command=command))
    ds.attrs["title"] = "Figure 4 (arXiv 2603.01162) on transformer policies, arithmetic task"
    ds.attrs["policies"] = json.dumps({p: pol.name + " / " + pol.template for p, pol in panels})
    ds.attrs["num_parameters"] = int(panels[0][1].num_parameters)
    ds.attrs["panel_seconds"] = json.dumps([round(s, 1) for s in seconds])
    return ds


def _dataset(per, Gs, problems, names):
    """The per-question measurements and Theorem 2 predictions, and their means over questions."""
    import xarray as xr

    P = len(problems)
    G_arr = np.array(Gs, float)
    # Theorem 2: MSE_x(G) = T_x / G, plus A3(x) / (G (G - 1)) for GRPO
    pred = per["theory"][:, :, None, :] / G_arr[None, None, :, None]     # (panel, E, G, P)
    pred[:, ESTIMATOR_NAMES.index("leave_one_out")] += per["residual"][:, None, :] / (G_arr * (G_arr - 1))[:, None]
    ds = xr.Dataset(
        {"mse_prompt": (("panel", "estimator", "num_generations", "prompt"), per["mse"],
                        {"long_name": "per-question MSE estimate (mean over replicates)"}),
         "value": (("panel", "prompt"), per["value"], {"long_name": "pool success rate V(x)"}),
         "trace_fisher": (("panel", "prompt"), per["trace_fisher"], {"long_name": "pool mean |W|^2"}),
         "cov_reward_score_norm": (("panel", "prompt"), per["cov_zw2"],
                                   {"long_name": "pool Cov(Z, |W|^2)"}),
         "mse_theory_prompt": (("panel", "estimator", "num_generations", "prompt"), pred,
                               {"long_name": "Theorem 2 per-question MSE from unbiased U-statistics "
                                             "of the pool (constants.prompt_constants)"})},
        coords={"panel": names, "estimator": list(ESTIMATOR_NAMES), "num_generations": Gs,
                "prompt": np.arange(P), "question": ("prompt", [p.text for p in problems])})
    ds["mse"] = ds.mse_prompt.mean("prompt")
    ds["mse_se"] = ds.mse_prompt.std("prompt", ddof=1) / np.sqrt(P)
    ds["mse_theory"] = ds.mse_theory_prompt.mean("prompt")
    gap = ds.mse_prompt - ds.mse_theory_prompt          # paired over questions: Monte Carlo - theory
    ds["theory_gap"], ds["theory_gap_se"] = gap.mean("prompt"), gap.std("prompt", ddof=1) / np.sqrt(P)
    for lo, hi, other in (("vanilla", "leave_one_out", "diff_vanilla_grpo"),
                          ("leave_one_out", "oracle", "diff_grpo_oracle")):
        diff = ds.mse_prompt.sel(estimator=lo) - ds.mse_prompt.sel(estimator=hi)
        ds[other] = diff.mean("prompt")
        ds[other + "_se"] = diff.std("prompt", ddof=1) / np.sqrt(P)
    # Theorem 2 (exact, prompt-only baseline C = 0): G (MSE_vanilla - MSE_oracle)
    #   = V^2 tr I + 2 V Cov(Z, |W|^2), negative when Cov(Z, |W|^2) < -V tr I / 2.
    ds["vanilla_minus_oracle_times_G_plugin"] = (
        ds.value ** 2 * ds.trace_fisher + 2 * ds.value * ds.cov_reward_score_norm).mean("prompt")
    return ds


def check(ds) -> tuple[bool, list[str]]:
    """Ordering vanilla > GRPO (every G) and GRPO - oracle small relative to oracle at G >= 32."""
    lines, ok = [], True
    z = 1.959963984540054
    for p in ds.panel.values:
        d = ds.sel(panel=p)
        for G in ds.num_generations.values:
            m = {e: float(d.mse.sel(estimator=e, num_generations=G)) for e in ESTIMATOR_NAMES}
            h = {e: z * float(d.mse_se.sel(estimator=e, num_generations=G)) for e in ESTIMATOR_NAMES}
            dv = float(d.diff_vanilla_grpo.sel(num_generations=G))
            dvs = float(d.diff_vanilla_grpo_se.sel(num_generations=G))
            dg = float(d.diff_grpo_oracle.sel(num_generations=G))
            dgs = float(d.diff_grpo_oracle_se.sel(num_generations=G))
            van_gt = dv - z * dvs > 0
            ok &= van_gt
            lines.append(
                f"{p:>10} G={G:<3} vanilla {m['vanilla']:.4g}±{h['vanilla']:.2g}  leave_one_out {m['leave_one_out']:.4g}±{h['leave_one_out']:.2g}"
                f"  oracle {m['oracle']:.4g}±{h['oracle']:.2g} | van-grpo {dv:.3g}±{z * dvs:.2g}"
                f" {'>0' if van_gt else 'NOT >0'} | grpo-oracle {dg:.3g}±{z * dgs:.2g}"
                f" ({100 * dg / m['oracle']:.1f}% of oracle)")
    return bool(ok), lines


def plot(ds, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ds.sizes["panel"], figsize=(4.2 * ds.sizes["panel"], 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    Gs = ds.num_generations.values
    for ax, p in zip(axes, ds.panel.values):
        d = ds.sel(panel=p)
        for e in ESTIMATOR_NAMES:
            m = d.mse.sel(estimator=e).values
            h = 1.96 * d.mse_se.sel(estimator=e).values
            ax.errorbar(Gs, m, yerr=h, marker="o", ms=3, capsize=2, color=COLORS[e], label=e)
            if "mse_theory" in d:
                ax.plot(Gs, d.mse_theory.sel(estimator=e).values, ls="--", lw=1, color=COLORS[e],
                        label=f"{e}, Theorem 2" if ax is axes[0] else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{p} (mean V = {float(d.value.mean()):.2f})")
        ax.set_xlabel("group size G")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("per-question MSE of gradient (95% CI)")
    # A bar reaching the bottom axis: the interval includes 0 (log scale).
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Oracle property on transformer policies (arithmetic, {ds.sizes['prompt']} questions; "
                 "dashed: Theorem 2 from U-statistics of the pool; bars to the axis include 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = Config(**vars(_parser().parse_args(args)))
    except SystemExit as exc:
        return int(exc.code or 0)
    torch.manual_seed(0)
    command = shlex.join(["python", "-m", "simulations.fig4_lm", *args])
    try:
        ds = simulate(cfg, command=command)
    except (ValueError, FileNotFoundError) as exc:
        print(f"fig4_lm.py: {exc}", file=sys.stderr)
        return 2
    os.makedirs(cfg.out, exist_ok=True)
    nc = os.path.join(cfg.out, "fig4_lm.nc")
    write_netcdf(ds, nc)
    if not cfg.no_plot:
        plot(ds, os.path.join(cfg.out, "fig4_lm.png"))
    ok, lines = check(ds)
    print("\n".join(lines))
    print(f"ordering vanilla > GRPO at every G (95% paired interval): {'holds' if ok else 'FAILS'}")
    for p in ds.panel.values:
        d = ds.sel(panel=p)
        print(f"{p}: plug-in G*(MSE_vanilla - MSE_oracle) = V^2 trI + 2V Cov(Z,|W|^2) = "
              f"{float(d.vanilla_minus_oracle_times_G_plugin):.4g} (mean over questions; "
              f"mean trI {float(d.trace_fisher.mean()):.4g}, mean Cov(Z,|W|^2) "
              f"{float(d.cov_reward_score_norm.mean()):.4g})")
    t = (ds.theory_gap / ds.theory_gap_se).transpose("panel", "estimator", "num_generations").values
    print(f"Monte Carlo vs Theorem 2 (paired over questions): max |t| = {np.abs(t).max():.2f} over {t.size}")
    print(f"wrote {nc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
