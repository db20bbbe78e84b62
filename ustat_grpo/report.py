"""Text, Markdown and figures for a group-size recommendation.

Every renderer takes a :class:`~ustat_grpo.recommend.Recommendation` (``kind`` "mse" or
"performance") and only formats its fields: no statistic is derived here, so the text, Markdown,
figures and JSON (:meth:`Recommendation.to_dict`) are views of the same numbers.
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


def _headline(r) -> list[str]:
    pct = f"{100 * r.level:g}%"
    lines = []
    if r.kind == "mse":
        n, g = r.budget, r.num_generations
        if r.interior:
            lines.append(f"RECOMMENDATION: use G = {g} generations per prompt "
                         f"(B = {_num(n / g, '.4g')} prompts) for a budget of N = {n} rollouts per step.")
            lines.append(f"  {pct} confidence interval for the optimal G: {_iv(r.optimum.g_star_integer_interval, 'g')}"
                         f" (continuous optimum {_num(r.g_star)}, {pct} CI {_iv(r.g_star_interval)}).")
            div = r.best_divisor
            if div and div["num_generations"] != g:
                lines.append(f"  G = {g} does not divide N; the best divisor is G = "
                             f"{div['num_generations']} (B = {div['num_prompts']}), predicted MSE "
                             f"{100 * (div['relative'] - 1):.1f}% above the optimum.")
        else:
            lines.append(f"RECOMMENDATION: no interior optimum can be certified for N = {n}: the "
                         "prompt-variance constant A1 is not significantly > 0, so the MSE keeps falling "
                         "with G within the budget.")
            lines.append(f"  Largest useful G by the point estimate: {g}; "
                         f"{pct} interval for G*: {_iv(r.optimum.g_star_integer_interval, 'g')}.")
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
    if r.kind == "mse":
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
        rows = [[t.num_generations, _num(t.num_prompts, ".4g"), _num(t.mse), _iv([t.low, t.high], ".3g"),
                 _num(t.relative, ".3f"), "<- recommended" if t.num_generations == r.num_generations else ""]
                for t in r.mse_table]
        out += _table(["G", "B", "MSE", "band", "MSE / min", ""], rows, md)
    else:
        out += h("Performance-table fit")
        out += ["  " + line for line in r.performance.summary().splitlines()]
    if getattr(r, "estimators", None):
        out += _estimator_lines(r.estimators, h, md)
    if getattr(r, "card", None):
        out += h("Estimator card")
        out += _card_lines(r.card)
    pv = r.provenance
    out += h("Provenance")
    out += [f"  source: {pv.get('source', '-')}; input sha256: {str(pv.get('input_hash', '-'))[:16]}...; "
            f"form: {r.form}; seed: {pv.get('seed', '-')}; ustat_grpo {pv.get('version', '-')}"]
    for w in r.warnings:
        out.append(f"  warning: {w}")
    return out


def _estimator_lines(est, h, md):
    out = h(f"MSE(G) per estimator at N = {est['budget']} (pool-resampled, +- 1 s.e.)")
    gs = est["num_generations"]
    rows = []
    for name, mse, se in zip(est["estimators"], est["mse"], est["mse_se"]):
        b = est["best"][name]
        rows.append([name] + [f"{_num(m)} +- {_num(s, '.2g')}" for m, s in zip(mse, se)] + [b["num_generations"]])
    out += _table(["estimator"] + [f"G={g}" for g in gs] + ["best G"], rows, md)
    loo = est["best"].get("leave_one_out", {})
    if "closed_form_g_star" in loo:
        out.append(f"  leave-one-out from the constants: G* = {_num(loo['closed_form_g_star'])} "
                   f"(integer {loo['closed_form_g_integer']}); grid best {loo['num_generations']}.")
    out.append(f"  {est['note']}.")
    for name, target in est.get("targets", {}).items():
        out.append(f"  {name}: {target}")
    return out


def _card_lines(c):
    s, d, rw, pr = c["sampler"], c["drift"], c["reward"], c["params"]
    chk = d["score_mean"]
    rewards = "; ".join(f"{n} (w={w:g}, {st}, None {100 * nr:.1f}%, errors {e})" for n, w, st, nr, e in
                        zip(rw["names"], rw["weights"], rw["styles"], rw["none_rate"], rw["error_count"]))
    lora = pr.get("peft")
    return [
        f"  sampler: T = {s['temperature']:g}, top_p = {s['top_p']:g}, top_k = {s['top_k']}, min_p = {s['min_p']}, "
        f"repetition_penalty = {s['repetition_penalty']:g}, max_completion_length = {s['max_completion_length']}; "
        f"model generation_config {s['model_generation_config']}",
        f"  score: {c['score_policy']}",
        f"  case: {c['case']}; unbiased for: {c['unbiased_for']}",
        f"  drift: mean truncated mass {_num(d['mean_truncated_mass'], '.3g')}, mean log(pi_T/q) "
        f"{_num(d['mean_log_ratio'], '.3g')}; ||E S||^2 = {_num(chk['statistic'], '.3g')} +- "
        f"{_num(chk['standard_error'], '.2g')} (z = {_num(chk['z'], '.2f')}): self-check {chk['verdict']}",
        f"  prompts: {c['prompt_format']}, chat template sha256 {c['chat_template_hash'] or '-'}, "
        f"kwargs {c['chat_template_kwargs'] or '{}'}, special tokens: {c['add_special_tokens']}",
        f"  rewards: {rewards}; unscorable {100 * rw['unscorable_rate']:.1f}%; on error: {rw['on_error']}",
        f"  completions: truncated {100 * c['truncated_fraction']:.1f}%, empty {100 * c['empty_fraction']:.1f}%, "
        f"mean length {_num(c['mean_completion_length'], '.3g')} tokens; mask_truncated_completions "
        f"{c['mask_truncated_completions']}",
        f"  parameters: {pr['selection']} ({pr['count']} tensors, {pr['num_parameters']} scalars"
        + (f", sketched to {pr['sketch_dim']}" if pr["sketch_dim"] else "") + ")"
        + (f"; LoRA {lora}" if lora else ""),
        f"  data: {c['dataset']['source']} ({c['num_prompts']} prompts x {c['samples_per_prompt']} samples, "
        f"{c['prompts_left_out']} left out as unscorable)",
        "  versions: " + ", ".join(f"{k} {v}" for k, v in c["versions"].items()),
    ]


def render_text(rec) -> str:
    """Plain-text report of a :class:`~ustat_grpo.recommend.Recommendation`."""
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
    if obs:
        yerr = obs.get("mse_se")
        ax.errorbar(obs["num_generations"], obs["mse"], yerr=(None if yerr is None else [1.96 * s for s in yerr]),
                    fmt="o", color="k", ms=4, label="measured (95% error bars)" if yerr is not None else "measured")
    if rec.exact is not None:
        ec = rec.exact.curve
        ax.plot(ec.num_generations, ec.mse, "--", color="C2", label="exact (toy)")
    g = rec.num_generations
    lo, hi = rec.optimum.g_star_integer_interval
    top = float(max(c.num_generations))
    ax.axvspan(lo, min(hi, top), color="C3", alpha=0.08, label=f"{100 * rec.level:g}% CI for G*")
    ax.axvline(g, color="C3", lw=1.5, label=f"recommended G = {g}")
    ax.set_yscale("log")
    return _finish(fig, ax, path, xlabel="group size G (B = N / G prompts)",
                   ylabel="gradient MSE at fixed budget",
                   title=f"MSE vs group size at N = {rec.budget} rollouts per step")


def plot_performance(rec, path: str) -> str:
    """Figure: observed score vs G per budget with the fitted shared-optimum curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pf, obs = rec.performance, rec.observed
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    G = np.asarray(obs["num_generations"], float)
    y = np.asarray(obs["score"], float)
    N = np.asarray(obs["budget"], float)
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
    if rec.kind == "mse":
        plot_mse_curve(rec, os.path.join(directory, "mse_vs_group_size.png"))
        figs.append("mse_vs_group_size.png")
    else:
        plot_performance(rec, os.path.join(directory, "score_vs_group_size.png"))
        figs.append("score_vs_group_size.png")
    md = os.path.join(directory, "report.md")
    with open(md, "w") as fh:
        fh.write(render_markdown(rec, figures=tuple(figs)))
    return md
