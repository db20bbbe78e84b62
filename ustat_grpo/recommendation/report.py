"""Text, Markdown and figures for a group-size recommendation.

Every renderer takes a :class:`~ustat_grpo.recommendation.recommend.Recommendation` (``kind`` "mse" or
"performance") and only formats its fields: no statistic is derived here, so the text, Markdown,
figures and JSON (:meth:`Recommendation.to_dict`) are views of the same numbers.
"""
from __future__ import annotations

import math
import os

from ..measurement.card import card_lines

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


def _headline(r) -> list[str]:
    pct = f"{100 * r.level:g}%"
    lines = []
    if r.kind == "mse" and r.constants is None:
        lines.append(f"NO RECOMMENDATION for N = {r.budget}: {r.reason}.")
    elif r.kind == "mse":
        n, g = r.budget, r.num_generations
        if g is not None and r.criterion == "scale_free":
            lo, hi = r.interval
            lines.append(f"RECOMMENDATION: use G = {g} generations per prompt (B = {_num(n / g, '.4g')} prompts) for a "
                         f"budget of N = {n} rollouts per step, for your trainer's {r.estimator} advantages.")
            lines.append(f"  By the scale-free criterion R(G) (the error after the best rescaling, which the step size "
                         f"absorbs); G not significantly worse: [{lo:g}, {hi:g}] (see 'Estimators').")
            lines.append(f"  The paper's leave-one-out GRPO: G = {r.optimum.g_star_integer} by the MSE law "
                         f"(continuous optimum {_num(r.g_star)}, {pct} CI {_iv(r.g_star_interval)}"
                         + ("" if r.interior else "; no interior optimum certified") + ").")
        elif g is not None:
            lines.append(f"RECOMMENDATION: use G = {g} generations per prompt "
                         f"(B = {_num(n / g, '.4g')} prompts) for a budget of N = {n} rollouts per step.")
            lines.append(f"  {pct} confidence interval for the optimal G: {_iv(r.optimum.g_star_integer_interval, 'g')}"
                         f" (continuous optimum {_num(r.g_star)}, {pct} CI {_iv(r.g_star_interval)}).")
            div = r.best_divisor
            if div and div.num_generations != g:
                lines.append(f"  G = {g} does not divide N; the best divisor is G = "
                             f"{div.num_generations} (B = {div.num_prompts}), predicted MSE "
                             f"{100 * (div.relative - 1):.1f}% above the optimum.")
        else:
            lines.append(f"NO RECOMMENDATION: {r.reason}.")
            lines.append(f"  {pct} interval for G*: {_iv(r.optimum.g_star_integer_interval, 'g')}.")
    else:
        pf = r.performance
        if pf.distinguishable:
            g_rec, ci_rec = pf.recommended
            lines.append(f"RECOMMENDATION: the table locates an optimum near G = {_num(g_rec, '.3g')} "
                         f"({pct} CI {_iv(ci_rec)}, {pf.preferred_shape} shape"
                         + ("" if pf.mse_shape.get("shapes_agree", True) else "; the other candidate shape disagrees")
                         + ").")
        elif pf.effect_detected:
            lines.append(f"RECOMMENDATION: G matters (ANOVA p = {_num(pf.effect_pvalue, '.2g')}); the best tested G is "
                         f"{pf.best_adjusted}, but no optimum is located inside the tested range: try G beyond "
                         "the edge of the grid before settling.")
        else:
            best = ", ".join(f"N={k}: G={v}" for k, v in pf.best_observed.items())
            lines.append("RECOMMENDATION: the data cannot distinguish the candidate group sizes: the "
                         "differences in score are within run-to-run noise.")
            lines.append(f"  Best observed (not significant): {best}.")
    return lines


def _why(r) -> list[str]:
    if r.kind != "mse":
        return ["Why: score was fitted with two candidate curves that share one optimum across budgets",
                "  (Theorem 7: G* does not depend on N): a_N + b1 log2 G + b2 (log2 G)^2 and the fixed-budget",
                "  MSE law a_N - b (G + rho/(G-1)). The better-fitting curve locates an optimum only if its",
                "  interval (Fieller / profile likelihood) is bounded inside the observed G range."]
    return [
        "Why: the GRPO gradient's error is MSE(B, G) = A1/B + A2/(BG) + A3/(BG(G-1)) (Prop. 3, exact).",
        "  A1 = prompt-to-prompt variance of the true gradient, A2 = oracle variance,",
        "  A3 = U-statistic residual. At a fixed budget N = B*G, a larger G cuts the residual",
        "  but leaves fewer prompts, which raises A1/B. N*MSE = A1*G + A2 + A3/(G-1) is smallest at",
        f"  G* = 1 + sqrt(A3/A1) = {_num(r.g_star_exact)} (paper's Theorem 7 form: sqrt(c3/c1) = "
        f"{_num(r.g_star_paper)}; with c3 = 2*A3 it would be sqrt(2) times larger).",
        "  G* is the same for every budget and number of iterations (Theorem 7); only B = N/G changes.",
    ]


def _constants_rows(r):
    A = r.constants
    ci = A.confidence_interval(r.level)
    ex = r.exact.constants if r.exact is not None else None
    return [[k, _num(float(A.params[i])), _iv(ci[k], ".4g")] + ([_num(float(ex[i]))] if ex is not None else [])
            for i, k in enumerate(("A1", "A2", "A3"))]


def _table(head, rows, md=False):
    rows = [[("-" if c is None else str(c)) for c in r] for r in rows]
    if md:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return ["  " + fmt.format(*head)] + ["  " + fmt.format(*r) for r in rows]


def _grid_fit_lines(r, h, md):
    gf, out = r.grid_fit, []
    if r.grid_fit_is_primary:
        act = [n for n, a in zip(gf.names, gf.active) if a]
        if act:
            out += ["", f"  at the bound 0 (non-negative fit): {', '.join(act)}"]
    else:
        out += h("Monte Carlo grid fit (check of the scaling law)")
        ci = gf.confidence_interval(r.level)
        out += _table(["name", "estimate", "CI", "at bound 0"],
                      [[n, _num(float(gf.params[i])), _iv(ci[n], ".4g"), "yes" if gf.active[i] else ""]
                       for i, n in enumerate(gf.names)], md)
    gof = f"chi2 = {_num(gf.chi2, '.3g')} on {gf.dof} dof"
    if gf.pvalue is not None and not math.isnan(gf.pvalue):
        gof += f", p = {_num(gf.pvalue, '.3g')}"
    out += ["", f"  goodness of fit: {gof} ({gf.method}, {len(gf.mse)} cells)"]
    if not r.grid_fit_is_primary:
        go = r.grid_fit_optimum
        out += [f"  grid-fit G*_exact = {_num(go.g_star_exact)}, CI {_iv(go.g_star_exact_interval)}"]
    return out


def _exact_line(r):
    ex = r.exact
    line = (f"  exact answer for this toy: G*_exact = {_num(ex.optimum.g_star_exact)}, integer optimum "
            f"{ex.optimum.g_star_integer}; inside the constants' interval: "
            f"{'yes' if ex.covered['g_star_exact'] else 'NO'}")
    if ex.covered_by_grid_fit is not None:
        line += f"; inside the grid-fit interval: {'yes' if ex.covered_by_grid_fit else 'NO'}"
    return line + f" (each {100 * r.level:g}% interval misses in about {100 * (1 - r.level):g}% of seeds)"


def _sections(r, md):
    out = []
    h = (lambda s: ["", "## " + s, ""]) if md else (lambda s: ["", s])
    out += _headline(r)
    out += [""] + _why(r)
    if r.kind == "mse" and r.constants is None:
        out += h("Pilot (" + r.constants_source + ")")
    elif r.kind == "mse":
        out += h("Constants (" + r.constants_source + ")")
        head = ["name", "estimate", f"{100 * r.level:g}% CI"] + (["exact (toy)"] if r.exact else [])
        out += _table(head, _constants_rows(r), md)
        if getattr(r, "samples_choice", None) is not None:
            out += ["", "  next pilot: " + r.samples_choice.line()]
        if r.grid_fit is not None:
            out += _grid_fit_lines(r, h, md)
        if r.exact is not None:
            out += ["", _exact_line(r)]
        out += h(f"Predicted MSE per G at N = {r.budget} (band: {100 * r.level:g}% pointwise)")
        mark = ("<- recommended" if r.num_generations is not None and r.criterion == "mse" else
                "<- leave-one-out optimum" if r.num_generations is not None else "<- point estimate (not certified)")
        g_mark = r.optimum.g_star_integer
        rows = [[t.num_generations, _num(t.num_prompts, ".4g"), _num(t.mse), _iv([t.low, t.high], ".3g"),
                 _num(t.relative, ".3f"), mark if t.num_generations == g_mark else ""]
                for t in r.mse_table]
        out += _table(["G", "B", "MSE", "band", "MSE / min", ""], rows, md)
        if getattr(r, "compute_budget", None) is not None:
            out += ["", "  compute budget: " + r.compute_budget.summary()]
        if getattr(r, "allocation", None) is not None:
            out += h("Rollouts allocated across strata of prompts (docs/allocation.md)")
            out += r.allocation.summary().splitlines()
        elif (getattr(r, "allocation_reason", None) or "").startswith("no allocation"):
            out += h("Rollouts allocated across strata of prompts")
            out += ["  " + r.allocation_reason]
    else:
        out += h("Performance-table fit")
        out += ["  " + line for line in r.performance.summary().splitlines()]
    if r.estimators is not None:
        out += _estimator_lines(r, h, md)
    if r.card is not None:
        out += h("Estimator card")
        out += card_lines(r.card)
    pv = r.provenance
    out += h("Provenance")
    out += [f"  source: {pv.source or '-'}; input sha256: {(pv.input_hash or '-')[:16]}...; "
            f"form: {r.form}; seed: {pv.seed if pv.seed is not None else '-'}; ustat_grpo {pv.version or '-'}"]
    if pv.command:
        out.append(f"  command: {pv.command}")
    for w in r.warnings:
        out.append(f"  warning: {w}")
    return out


def _estimator_lines(r, h, md):
    est = r.estimators
    out = h(f"Estimators: scale-free criterion R(G) at N = {est.budget} (pool-resampled, {100 * est.level:g}% CI)")
    out += ["  R(G) = min_c E||c g_hat - grad J||^2 / ||grad J||^2: the error left after the best rescaling "
            "(the step size absorbs the scale); 0 is a perfect direction, 1 no signal."]
    rows = []
    for e, name in enumerate(est.estimators):
        pick = est.recommended[name]
        cells = [f"{_num(float(c), '.3f')} {_iv([float(lo), float(hi)], '.3f')}" for c, lo, hi in
                 zip(est.criterion[e], est.criterion_low[e], est.criterion_high[e])]
        rows.append([name] + cells + [pick["num_generations"], _iv(pick["interval"], "g"),
                                      pick["raw_mse_num_generations"]])
    out += _table(["estimator"] + [f"G={g}" for g in est.num_generations] + ["best G", "not worse", "raw-MSE G"],
                  rows, md)
    if r.constants is not None:
        out.append(f"  leave-one-out from the constants: G* = {_num(r.g_star_exact)} "
                   f"(integer {r.optimum.g_star_integer}).")
    out.append(f"  {est.note}.")
    return out


def render_text(rec) -> str:
    """Plain-text report of a :class:`~ustat_grpo.recommendation.recommend.Recommendation`."""
    return "\n".join(_sections(rec, md=False)) + "\n"


def render_markdown(rec, *, figures: tuple = ()) -> str:
    """Markdown report; ``figures`` are relative PNG paths to embed."""
    title = "# Group-size recommendation (ustat_grpo.fit_scaling)"
    body = _sections(rec, md=True)
    figs = [f"\n![{os.path.splitext(os.path.basename(f))[0]}]({f})" for f in figures]
    return "\n".join([title, ""] + body + figs) + "\n"


def _finish(fig, ax, path, *, xlabel, ylabel, title) -> str:
    """Log2 G axis, labels, legend; save and close."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_mse_curve(rec, path: str) -> str:
    """Figure: predicted MSE vs G at the budget with its band, observed cells, optimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = rec.curve
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.fill_between(c.num_generations, c.low, c.high, color="C0", alpha=0.25,
                    label=f"{100 * rec.level:g}% band")
    ax.plot(c.num_generations, c.mse, color="C0", lw=2, label="fitted MSE (exact form)")
    obs = rec.observed
    if obs is not None and obs.mse is not None:
        yerr = obs.mse_se
        ax.errorbar(obs.num_generations, obs.mse, yerr=(None if yerr is None else [1.96 * s for s in yerr]),
                    fmt="o", color="k", ms=4, label="measured (95% error bars)" if yerr is not None else "measured")
    if rec.exact is not None:
        ec = rec.exact.curve
        ax.plot(ec.num_generations, ec.mse, "--", color="C2", label="exact (toy)")
    g = rec.num_generations
    lo, hi = rec.optimum.g_star_integer_interval
    top = float(max(c.num_generations))
    ax.axvspan(lo, min(hi, top), color="C3", alpha=0.08, label=f"{100 * rec.level:g}% CI for G*")
    if g is not None:
        ax.axvline(g, color="C3", lw=1.5, label=f"recommended G = {g}")
    ax.set_yscale("log")
    title = f"MSE vs group size at N = {rec.budget} rollouts per step"
    return _finish(fig, ax, path, xlabel="group size G (B = N / G prompts)",
                   ylabel="gradient MSE at fixed budget",
                   title=title if g is not None else title + "\n(no G recommended: no interior optimum certified)")


def plot_performance(rec, path: str) -> str:
    """Figure: observed score vs G per budget with the fitted shared-optimum curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pf, obs = rec.performance, rec.observed
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    G = np.asarray(obs.num_generations, float)
    y = np.asarray(obs.score, float)
    N = np.asarray(obs.budget, float)
    gg = np.geomspace(G.min(), G.max(), 100)
    for i, b in enumerate(pf.budgets):
        m = N == b
        ax.plot(G[m], y[m], "o", color=f"C{i}", label=f"N = {b}")
        ax.plot(gg, pf.predict(gg, budget=b), "-", color=f"C{i}", lw=1)
    if pf.bounded:
        ax.axvspan(pf.g_star_interval.low, pf.g_star_interval.high, color="C3", alpha=0.1, label="CI for G*")
    return _finish(fig, ax, path, xlabel="group size G", ylabel="score",
                   title="score vs G (fit with a shared optimum across budgets)")


def write_report(rec, directory: str) -> str:
    """Write ``report.md`` and its figure(s) into ``directory``; return the Markdown path."""
    os.makedirs(directory, exist_ok=True)
    figs = []
    if rec.kind == "mse" and rec.constants is None:
        pass                                             # nothing to plot: the reason is the report
    elif rec.kind == "mse":
        plot_mse_curve(rec, os.path.join(directory, "mse_vs_group_size.png"))
        figs.append("mse_vs_group_size.png")
    else:
        plot_performance(rec, os.path.join(directory, "score_vs_group_size.png"))
        figs.append("score_vs_group_size.png")
    md = os.path.join(directory, "report.md")
    with open(md, "w") as fh:
        fh.write(render_markdown(rec, figures=tuple(figs)))
    return md
