"""Text, Markdown and figures for the group-size recommendation (shared by the CLIs).

Every renderer takes the JSON-safe *payload* dict built by :mod:`ustat_grpo.fit_scaling`
(``kind`` "mse" or "performance"), so the text, Markdown and JSON outputs are three views of
the same numbers.
"""
from __future__ import annotations

import math
import os

__all__ = ["render_text", "render_markdown", "plot_mse_curve", "plot_performance", "write_report"]


def _num(x, fmt=".4g"):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, fmt)


def _iv(ci, fmt=".3g"):
    if ci is None:
        return "-"
    return f"[{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]"


def _headline(p) -> list[str]:
    rec = p["recommendation"]
    pct = f"{100 * p['level']:g}%"
    lines = []
    if p["kind"] == "mse":
        n = p["budget"]
        if rec["interior"]:
            lines.append(f"RECOMMENDATION: use G = {rec['num_generations']} generations per prompt "
                         f"(B = {_num(rec['num_prompts'], '.4g')} prompts) for a budget of N = {n} rollouts per step.")
            lines.append(f"  {pct} confidence interval for the optimal G: {_iv(p['g_star_integer_interval'], 'g')}"
                         f" (continuous optimum {_num(p['g_star_' + p['form']])}, "
                         f"{pct} CI {_iv(p['g_star_' + p['form'] + '_interval'])}).")
            div = rec.get("best_divisor")
            if div and div["num_generations"] != rec["num_generations"]:
                lines.append(f"  G = {rec['num_generations']} does not divide N; the best divisor is G = "
                             f"{div['num_generations']} (B = {div['num_prompts']}), predicted MSE "
                             f"{100 * (div['relative'] - 1):.1f}% above the optimum.")
        else:
            lines.append(f"RECOMMENDATION: no interior optimum can be certified for N = {n}: the "
                         "prompt-variance constant A1 is not significantly > 0, so the MSE keeps falling "
                         "with G within the budget.")
            lines.append(f"  Largest useful G by the point estimate: {rec['num_generations']}; "
                         f"{pct} interval for G*: {_iv(p['g_star_integer_interval'], 'g')}.")
    else:
        pf = p["performance"]
        if pf["distinguishable"]:
            lines.append(f"RECOMMENDATION: the table locates an optimum near G = {_num(pf['recommended_g_star'], '.3g')} "
                         f"({pct} CI {_iv(pf['recommended_interval'])}, {pf['preferred_shape']} shape"
                         + ("" if pf["mse_shape"]["shapes_agree"] else "; the other candidate shape disagrees")
                         + ").")
        else:
            best = ", ".join(f"N={k}: G={v}" for k, v in pf["best_observed"].items())
            lines.append("RECOMMENDATION: the data cannot distinguish the candidate group sizes: the "
                         "differences in score are within run-to-run noise.")
            lines.append(f"  Best observed (not significant): {best}.")
    return lines


def _why(p) -> list[str]:
    if p["kind"] != "mse":
        return ["Why: score was fitted with two candidate curves that share one optimum across budgets",
                "  (Theorem 7: G* does not depend on N): a_N + b1 log2 G + b2 (log2 G)^2 and the fixed-budget",
                "  MSE law a_N - b (G + rho/(G-1)). The better-fitting curve locates an optimum only if its",
                "  interval (Fieller / profile likelihood) is bounded inside the observed G range."]
    return [
        "Why: the GRPO gradient's error is MSE(B, G) = A1/B + A2/(BG) + A3/(BG(G-1)) (Prop. 3, exact).",
        "  A1 = prompt-to-prompt variance of the true gradient, A2 = oracle variance,",
        "  A3 = U-statistic residual. At a fixed budget N = B*G, a larger G cuts the residual",
        "  but leaves fewer prompts, which raises A1/B. N*MSE = A1*G + A2 + A3/(G-1) is smallest at",
        f"  G* = 1 + sqrt(A3/A1) = {_num(p['g_star_exact'])} (paper's Theorem 7 form: sqrt(c3/c1) = "
        f"{_num(p['g_star_paper'])}; with c3 = 2*A3 it would be sqrt(2) times larger).",
        "  G* is the same for every budget and number of iterations (Theorem 7); only B = N/G changes.",
    ]


def _constants_rows(p):
    rows = []
    for k in ("A1", "A2", "A3"):
        rows.append([k, _num(p.get(k)), _iv(p.get(k + "_interval"), ".4g"),
                     _num((p.get("exact") or {}).get(k)) if p.get("exact") else None])
    return rows


def _table(head, rows, md=False):
    rows = [[("-" if c is None else str(c)) for c in r] for r in rows]
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return ["  " + fmt.format(*head)] + ["  " + fmt.format(*r) for r in rows]


def _sections(p, md):
    out = []
    h = (lambda s: ["", "## " + s, ""]) if md else (lambda s: ["", s])
    out += _headline(p)
    out += [""] + _why(p)
    if p["kind"] == "mse":
        out += h("Constants (" + p["constants_source"] + ")")
        head = ["name", "estimate", f"{100 * p['level']:g}% CI"] + (["exact (toy)"] if p.get("exact") else [])
        rows = [r if p.get("exact") else r[:3] for r in _constants_rows(p)]
        out += _table(head, rows, md)
        if p.get("grid_fit"):
            gf = p["grid_fit"]
            if gf.get("primary"):
                act = [k for k, v in gf["active_constraints"].items() if v]
                if act:
                    out += ["", f"  at the bound 0 (non-negative fit): {', '.join(act)}"]
            else:
                out += h("Monte Carlo grid fit (check of the scaling law)")
                c = gf["constants"]
                ci = gf["confidence_interval"]
                out += _table(["name", "estimate", "CI", "at bound 0"],
                              [[k, _num(c[k]), _iv(ci[k], ".4g"), "yes" if gf["active_constraints"][k] else ""]
                               for k in c], md)
            gof = f"chi2 = {_num(gf['chi2'], '.3g')} on {gf['dof']} dof"
            if gf.get("pvalue") not in (None, "nan"):
                gof += f", p = {_num(gf['pvalue'], '.3g')}"
            out += ["", f"  goodness of fit: {gof} ({gf['method']}, {gf['num_cells']} cells)"]
            if gf.get("g_star_exact") is not None and not gf.get("primary"):
                out += [f"  grid-fit G*_exact = {_num(gf['g_star_exact'])}, CI {_iv(gf['g_star_exact_interval'])}"]
        if p.get("exact"):
            ex = p["exact"]
            line = (f"  exact answer for this toy: G*_exact = {_num(ex['g_star_exact'])}, integer optimum "
                    f"{ex['g_star_integer']}; inside the constants' interval: "
                    f"{'yes' if ex['covered']['g_star_exact'] else 'NO'}")
            if "covered_by_grid_fit" in ex:
                line += f"; inside the grid-fit interval: {'yes' if ex['covered_by_grid_fit'] else 'NO'}"
            out += ["", line + f" (each {100 * p['level']:g}% interval misses in about "
                                f"{100 * (1 - p['level']):g}% of seeds)"]
        out += h(f"Predicted MSE per G at N = {p['budget']} (band: {100 * p['level']:g}% pointwise)")
        rows = [[r["num_generations"], _num(r["num_prompts"], ".4g"), _num(r["mse"]),
                 _iv([r["low"], r["high"]], ".3g"), _num(r["relative"], ".3f"),
                 "<- recommended" if r["num_generations"] == p["recommendation"]["num_generations"] else ""]
                for r in p["mse_table"]]
        out += _table(["G", "B", "MSE", "band", "MSE / min", ""], rows, md)
    else:
        pf = p["performance"]
        out += h("Performance-table fit")
        out += ["  " + line for line in pf["summary"].splitlines()]
    out += h("Provenance")
    out += [f"  source: {p['source']}; input sha256: {p['input_hash'][:16]}...; form: {p['form']}; "
            f"seed: {p['seed']}; ustat_grpo {p['version']}"]
    for w in p.get("warnings", []):
        out.append(f"  warning: {w}")
    return out


def render_text(payload: dict) -> str:
    """Plain-text report."""
    return "\n".join(_sections(payload, md=False)) + "\n"


def render_markdown(payload: dict, *, figures: tuple = ()) -> str:
    """Markdown report; ``figures`` are relative PNG paths to embed."""
    title = "# Group-size recommendation (ustat_grpo.fit_scaling)"
    body = _sections(payload, md=True)
    figs = [f"\n![{os.path.splitext(os.path.basename(f))[0]}]({f})" for f in figures]
    return "\n".join([title, ""] + body + figs) + "\n"


def plot_mse_curve(payload: dict, path: str) -> str:
    """Figure: predicted MSE vs G at the budget with its band, observed cells, optimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = payload["curve"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.fill_between(curve["num_generations"], curve["low"], curve["high"], color="C0", alpha=0.25,
                    label=f"{100 * payload['level']:g}% band")
    ax.plot(curve["num_generations"], curve["mse"], color="C0", lw=2, label="fitted MSE (exact form)")
    obs = payload.get("observed")
    if obs:
        yerr = obs.get("mse_se")
        ax.errorbar(obs["num_generations"], obs["mse"], yerr=(None if yerr is None else [1.96 * s for s in yerr]),
                    fmt="o", color="k", ms=4, label="measured (Monte Carlo)")
    if payload.get("exact_curve"):
        ec = payload["exact_curve"]
        ax.plot(ec["num_generations"], ec["mse"], "--", color="C2", label="exact (toy)")
    g = payload["recommendation"]["num_generations"]
    ci = payload["g_star_integer_interval"]
    hi = ci[1] if isinstance(ci[1], (int, float)) else max(curve["num_generations"])
    ax.axvspan(ci[0], min(hi, max(curve["num_generations"])), color="C3", alpha=0.08,
               label=f"{100 * payload['level']:g}% CI for G*")
    ax.axvline(g, color="C3", lw=1.5, label=f"recommended G = {g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("group size G (B = N / G prompts)")
    ax.set_ylabel("gradient MSE at fixed budget")
    ax.set_title(f"MSE vs group size at N = {payload['budget']} rollouts per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_performance(payload: dict, path: str) -> str:
    """Figure: observed score vs G per budget with the fitted shared-optimum curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pf = payload["performance"]
    obs = payload["observed"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    G = np.asarray(obs["num_generations"], float)
    y = np.asarray(obs["score"], float)
    N = np.asarray(obs["budget"], float)
    params = pf["params"]
    for i, b in enumerate(pf["budgets"]):
        m = N == b
        ax.plot(G[m], y[m], "o", color=f"C{i}", label=f"N = {b}")
        gg = np.geomspace(G.min(), G.max(), 100)
        u = np.log2(gg)
        sign = 1.0 if pf.get("higher_is_better", True) else -1.0
        ax.plot(gg, sign * (params[i] + params[-2] * u + params[-1] * u * u), "-", color=f"C{i}", lw=1)
    if pf["bounded"]:
        ax.axvspan(pf["g_star_interval"][0], pf["g_star_interval"][1], color="C3", alpha=0.1,
                   label="CI for G*")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("group size G")
    ax.set_ylabel("score")
    ax.set_title("score vs G (fit with a shared optimum across budgets)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(payload: dict, directory: str) -> str:
    """Write ``report.md`` and its figure(s) into ``directory``; return the Markdown path."""
    os.makedirs(directory, exist_ok=True)
    figs = []
    if payload["kind"] == "mse":
        plot_mse_curve(payload, os.path.join(directory, "mse_vs_group_size.png"))
        figs.append("mse_vs_group_size.png")
    else:
        plot_performance(payload, os.path.join(directory, "score_vs_group_size.png"))
        figs.append("score_vs_group_size.png")
    md = os.path.join(directory, "report.md")
    with open(md, "w") as fh:
        fh.write(render_markdown(payload, figures=tuple(figs)))
    return md
