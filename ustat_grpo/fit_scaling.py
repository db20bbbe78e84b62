"""``python -m ustat_grpo.fit_scaling``: recommend a GRPO group size for a rollout budget.

Fits the scaling law of the GRPO gradient's MSE (arXiv 2603.01162, Prop. 3 / Theorem 7),

    MSE(B, G) = A1/B + A2/(B G) + A3/(B G (G-1))       (exact form; paper form: c3/(B G^2)),

and turns it into a recommendation: at ``budget`` N = B*G rollouts per step, use
G* = 1 + sqrt(A3/A1) (paper: sqrt(c3/c1)), rounded to the best integer, with a confidence
interval.  With no arguments it measures the constants on the built-in transformer policy
(``--source lm``: a 113k-parameter GPT-2 trained by the project on the arithmetic task, all 500
questions x 64 sampled completions, per-sample scores by vmap(grad)) in about a minute on CPU.
``--source bandit`` runs the toy contextual bandit instead (constants from samples, a Monte Carlo
MSE grid as a check and the exact answer for comparison).

Inputs
------
A measurements file (CSV or NetCDF) or ``--source``:

MSE grid CSV (one row per grid cell; other columns are ignored)::

    num_prompts,num_generations,mse,mse_se
    128,2,0.0141,0.0003
    64,4,0.0092,0.0002
    32,8,0.0081,0.0002

Performance table CSV (one row per run; ``run`` optional), like the paper's Table 2::

    budget,num_generations,score,run
    1024,4,0.7677,0
    1024,8,0.7491,0
    1024,16,0.7753,0

NetCDF: the output of ``ustat_grpo.montecarlo.run_grid`` (variables ``mse`` [and ``mse_se``]
over dims ``num_generations``, ``num_prompts`` and optionally ``estimator``; ``--estimator``
picks one).

``--source lm`` (the default without FILE): per-sample rewards and scores from
``ustat_grpo.lm.prompt_samples`` -- the built-in model (``--variant weak|strong|fewshot``) or a local
Hugging Face causal-LM directory (``--model PATH``, ``--device cuda``).  ``--source bandit``: the
built-in toy contextual bandit, whose exact constants are known.

Exit codes: 0 success; 1 the analysis failed (reason on stderr); 2 bad usage or bad input
(one line naming the file, row and column).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from . import scaling as sc
from ._cli import AnalysisError, InputError, options_from_args, parser_from_dataclass, sha256_file, sha256_json

__all__ = ["Options", "main", "run", "load_measurements", "default_bandit"]

GRID_COLUMNS = ("num_prompts", "num_generations", "mse")
#: default (prompts, rollouts per prompt) of each source; lm: ~50 s on 2 CPU cores
SOURCE_DEFAULTS = {"lm": (500, 64), "bandit": (128, 256)}
PERF_COLUMNS = ("budget", "num_generations", "score")


@dataclass(frozen=True, kw_only=True)
class Options:
    """Options of ``python -m ustat_grpo.fit_scaling`` (one help line each)."""

    measurements: str | None = field(default=None, metadata=dict(
        help="CSV or NetCDF measurements file (formats below); omit to use --source",
        metavar="FILE"))
    source: str | None = field(default=None, metadata=dict(
        help="measure instead of reading a file: 'lm' (a transformer policy on the arithmetic task, "
             "the default without FILE) or 'bandit' (built-in toy with exact constants)",
        choices=("bandit", "lm")))
    budget: int | None = field(default=None, metadata=dict(
        help="rollouts per training step N = B*G (default: 256 for sources; for an MSE grid its "
             "largest B*G)"))
    form: str = field(default="exact", metadata=dict(
        help="scaling-law form driving the integer optimum: 'exact' A3/(BG(G-1)) or 'paper' c3/(BG^2)",
        choices=("exact", "paper")))
    format: str = field(default="text", metadata=dict(help="report format on stdout",
                                                       choices=("text", "json", "markdown")))
    output: str | None = field(default=None, metadata=dict(
        help="write the report to this file instead of stdout", metavar="PATH"))
    report: str | None = field(default=None, metadata=dict(
        help="also write a Markdown report with a figure into this directory", metavar="DIR"))
    seed: int = field(default=0, metadata=dict(help="seed of every random draw (sources, bootstrap)"))
    divisors_only: bool = field(default=False, metadata=dict(
        help="only recommend G that divide the budget (integer number of prompts B)"))
    level: float = field(default=0.95, metadata=dict(help="confidence level of all intervals"))
    estimator: str = field(default="leave_one_out", metadata=dict(
        help="estimator to select from a NetCDF grid with an 'estimator' dimension"))
    replicates: int = field(default=4000, metadata=dict(
        help="bandit source: Monte Carlo replicates per grid cell (0 = skip the grid check)"))
    num_prompts: int | None = field(default=None, metadata=dict(
        help="sources: prompts drawn to measure the constants (lm: 500, bandit: 128)"))
    samples_per_prompt: int | None = field(default=None, metadata=dict(
        help="sources: rollouts per prompt used to measure the constants, M >> G (lm: 64, bandit: 256)"))
    model: str | None = field(default=None, metadata=dict(
        help="lm source: a local Hugging Face causal-LM directory (default: the built-in model)",
        metavar="PATH"))
    variant: str = field(default="strong", metadata=dict(
        help="lm source: built-in model variant", choices=("weak", "strong", "fewshot")))
    device: str = field(default="auto", metadata=dict(help="lm source: torch device (auto: cuda if present)"))
    projection_dim: int = field(default=256, metadata=dict(
        help="lm source: random projection dimension of per-sample scores"))


# --------------------------------------------------------------------------------------------
# loading and validating measurements
# --------------------------------------------------------------------------------------------

def _parse_number(path, row, line, col, text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{path}: row {row} (line {line}), column '{col}': {text!r} is not a number") from None
    if math.isnan(v):
        raise InputError(f"{path}: row {row} (line {line}), column '{col}': value is NaN")
    if math.isinf(v):
        raise InputError(f"{path}: row {row} (line {line}), column '{col}': value is infinite")
    return v


def _load_csv(path):
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise InputError(f"{path}: file is empty") from None
            body = [r for r in reader]
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    cols = set(header)
    if set(GRID_COLUMNS) <= cols:
        kind, need, opt = "mse", GRID_COLUMNS, ("mse_se",)
    elif set(PERF_COLUMNS) <= cols:
        kind, need, opt = "performance", PERF_COLUMNS, ("run",)
    else:
        miss_g = [c for c in GRID_COLUMNS if c not in cols]
        miss_p = [c for c in PERF_COLUMNS if c not in cols]
        miss = miss_g if len(miss_g) <= len(miss_p) else miss_p
        raise InputError(f"{path}: missing column(s) {', '.join(repr(m) for m in miss)} (found: "
                         f"{', '.join(header) or 'none'}); expected num_prompts,num_generations,mse[,mse_se] "
                         "or budget,num_generations,score[,run]")
    idx = {c: header.index(c) for c in need + opt if c in cols}
    data = {c: [] for c in idx}
    rows = []
    for i, r in enumerate(body, start=1):
        line = i + 1
        if not any(x.strip() for x in r):
            continue  # blank line
        rows.append((i, line))
        for c, j in idx.items():
            if j >= len(r) or r[j].strip() == "":
                raise InputError(f"{path}: row {i} (line {line}), column '{c}': empty cell")
            if c == "run":
                data[c].append(r[j].strip())
            else:
                data[c].append(_parse_number(path, i, line, c, r[j].strip()))
    if not rows:
        raise InputError(f"{path}: no data rows")
    arrays = {c: (np.array(v, dtype=object) if c == "run" else np.array(v, float)) for c, v in data.items()}
    _validate(path, kind, arrays, rows)
    return kind, arrays


def _validate(path, kind, a, rows):
    def bad(mask, col, what):
        k = int(np.flatnonzero(mask)[0])
        i, line = rows[k]
        loc = f"row {i} (line {line})" if line is not None else f"cell {i}"
        raise InputError(f"{path}: {loc}, column '{col}': {what} (got {a[col][k]:g})")

    g = a["num_generations"]
    if np.any(g < 2):
        bad(g < 2, "num_generations", "must be >= 2 (GRPO needs at least two generations per prompt)")
    if np.any(g != np.round(g)):
        bad(g != np.round(g), "num_generations", "must be an integer")
    if kind == "mse":
        if np.any(a["num_prompts"] < 1):
            bad(a["num_prompts"] < 1, "num_prompts", "must be >= 1")
        if np.any(a["mse"] <= 0):
            bad(a["mse"] <= 0, "mse", "must be positive")
        if "mse_se" in a and np.any(a["mse_se"] <= 0):
            bad(a["mse_se"] <= 0, "mse_se", "must be positive")
    else:
        if np.any(a["budget"] <= 0):
            bad(a["budget"] <= 0, "budget", "must be positive")
    distinct = sorted(set(g.astype(int).tolist()))
    if len(distinct) < 3:
        raise InputError(f"{path}: column 'num_generations' has {len(distinct)} distinct value(s) "
                         f"{distinct}; need at least 3 to fit the scaling law")


def _load_netcdf(path, estimator):
    import xarray as xr

    try:
        ds = xr.load_dataset(path)
    except Exception as exc:  # any reader failure is bad input, reported in one line
        raise InputError(f"{path}: cannot read as NetCDF ({type(exc).__name__}: {exc})") from None
    if "mse" not in ds:
        raise InputError(f"{path}: missing variable 'mse' (found: {', '.join(map(str, ds.data_vars))})")
    for d in ("num_generations", "num_prompts"):
        if d not in ds["mse"].dims:
            raise InputError(f"{path}: variable 'mse' lacks dimension '{d}' (dims: {ds['mse'].dims})")
    if "estimator" in ds["mse"].dims:
        from .estimators import RENAMED

        names = [str(x) for x in ds["estimator"].values]
        label = next((n for n in (estimator, *[o for o, c in RENAMED.items() if c == estimator]) if n in names), None)
        if label is None:                     # grids written before the rename carry e.g. "grpo"
            raise InputError(f"{path}: estimator {estimator!r} not in the file (has: {', '.join(names)})")
        ds = ds.sel(estimator=label)
    mse = ds["mse"].transpose("num_prompts", "num_generations", ...)
    if mse.ndim != 2:
        raise InputError(f"{path}: variable 'mse' has extra dimensions {mse.dims}; select one slice first")
    se = ds["mse_se"].transpose("num_prompts", "num_generations") if "mse_se" in ds else None
    B, G = np.meshgrid(ds["num_prompts"].values.astype(float), ds["num_generations"].values.astype(float),
                       indexing="ij")
    y = mse.values.astype(float)
    keep = ~np.isnan(y)
    a = {"num_prompts": B[keep], "num_generations": G[keep], "mse": y[keep]}
    if se is not None:
        a["mse_se"] = se.values.astype(float)[keep]
        if np.any(np.isnan(a["mse_se"])):
            raise InputError(f"{path}: variable 'mse_se' is NaN where 'mse' is not")
    cells = [(f"num_prompts={int(b)}, num_generations={int(g)}", None)
             for b, g in zip(a["num_prompts"], a["num_generations"])]
    _validate(path, "mse", a, cells)
    return "mse", a


def load_measurements(path: str, *, estimator: str = "leave_one_out"):
    """Read and validate a measurements file -> ``(kind, arrays)``; raises :class:`InputError`."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if path.endswith((".nc", ".nc4", ".netcdf")) or magic.startswith((b"CDF", b"\x89HDF")):
        return _load_netcdf(path, estimator)
    return _load_csv(path)


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------

def default_bandit():
    """The built-in toy: a contextual softmax bandit (8 prompts, 6 arms, d = 4) with exact moments.

    Prompts share half of their features and success probabilities, so the prompt-to-prompt
    variance ``A1`` is small relative to the residual ``A3`` and ``G*_exact`` is about 9.4.
    """
    from .bandits import ContextualSoftmaxBandit

    rng = np.random.default_rng(0)                       # fixed: the toy is part of the tool
    P, K, d, shared = 8, 6, 4, 0.5
    base = rng.standard_normal((K, d))
    phi = shared * base + (1 - shared) * rng.standard_normal((P, K, d))     # (P, K, d)
    pb = rng.uniform(0.1, 0.9, K)
    p = np.clip(shared * pb + (1 - shared) * rng.uniform(0.05, 0.95, (P, K)), 0.02, 0.98)
    return ContextualSoftmaxBandit(phi, success_probs=p)


def exact_constants(policy, theta=None) -> np.ndarray:
    """Exact ``(A1, A2, A3)`` of a toy policy at ``theta`` (``mse.constants`` when available)."""
    m = policy.moments(theta)
    try:
        from .mse import constants

        return np.asarray(constants(m), float)[:3]
    except ImportError:  # pragma: no cover - mse.py is part of the package
        f, g = m.prompt_probs, m.grad
        gg = (g * g).sum(-1)
        trI = np.trace(m.fisher, axis1=1, axis2=2)
        trS = np.trace(m.sigma_oracle, axis1=1, axis2=2)
        return np.array([f @ gg - (f @ g) @ (f @ g), f @ trS, f @ (m.sigma2 * trI + gg)])


def _bandit_grid(policy, budget, replicates, rng, log):
    """Monte Carlo MSE of the GRPO minibatch gradient at N = budget for divisors G of N."""
    from .estimators import leave_one_out

    theta = policy.theta
    grad = policy.gradient()
    gs = [g for g in range(2, budget + 1) if budget % g == 0 and g <= 256]
    rows = []
    for G in gs:
        B = budget // G
        R = replicates
        chunk = max(1, int(2_000_000 // (B * G * policy.dim)))   # bound memory per draw
        errs = []
        done = 0
        while done < R:
            r = min(chunk, R - done)
            s = policy.sample(B, G, rng=rng, theta=np.broadcast_to(theta, (r, policy.dim)))
            est = leave_one_out(s.rewards, s.scores).mean(-2)                # (r, d)
            errs.append(((est - grad) ** 2).sum(-1))
            done += r
        e = np.concatenate(errs)
        rows.append((B, G, e.mean(), e.std(ddof=1) / math.sqrt(R)))
        log(f"  grid cell B={B:4d} G={G:4d}: MSE {e.mean():.4g} +- {e.std(ddof=1) / math.sqrt(R):.2g}")
    b, g, y, se = map(np.array, zip(*rows))
    return {"num_prompts": b.astype(float), "num_generations": g.astype(float), "mse": y, "mse_se": se}


# --------------------------------------------------------------------------------------------
# analysis -> payload
# --------------------------------------------------------------------------------------------

def _candidate_gs(budget, divisors_only, extra=()):
    if divisors_only:
        gs = [g for g in range(2, budget + 1) if budget % g == 0]
    else:
        gs = [2 ** k for k in range(1, 31) if 2 ** k <= budget]
    gs = sorted(set(gs) | {int(x) for x in extra if 2 <= x <= budget})
    return gs


def _mse_payload(primary, *, form, budget, level, divisors_only, paper=None, grid_fit=None,
                 exact=None, observed=None, constants_source=""):
    """Assemble the JSON-safe result for MSE-type inputs.

    primary: exact-form constants (ScalingConstants or ScalingFit, form "exact").
    paper: optional paper-form ScalingFit (grid inputs with --form paper).
    """
    gs_exact = primary.optimal_group_size(budget=budget, divisors_only=divisors_only, level=level)
    model = paper if (form == "paper" and paper is not None) else primary
    if form == "paper" and paper is None:
        # constants from samples: c_i := A_i (spec ambiguity 1); only the integer optimum changes
        gs_form = sc.optimal_group_size(primary.unconstrained, primary.covariance, form="paper", budget=budget,
                                        divisors_only=divisors_only, level=level, df=primary.df)
        pt = sc.optimal_group_size(primary.params, None, form="paper", budget=budget, divisors_only=divisors_only)
        gs_form = dataclasses.replace(gs_form, ratio=pt.ratio, g_star_paper=pt.g_star_paper,
                                      g_star_exact=pt.g_star_exact, g_star_integer=pt.g_star_integer)
    else:
        gs_form = model.optimal_group_size(budget=budget, divisors_only=divisors_only, level=level)
    ci_a = primary.confidence_interval(level)
    c_params = model.params if model is paper else primary.params
    ci_c = model.confidence_interval(level)
    g_rec = int(gs_form.g_star_integer)
    table_gs = _candidate_gs(budget, divisors_only, extra=[g_rec] + list(observed["num_generations"] if observed else []))
    # predicted MSE of the form's model; with form=paper from samples, A's shape is still the truth
    pred_model = model
    mean, lo, hi = pred_model.predict(np.array(table_gs, float), budget=budget, level=level)
    mmin = float(np.min(mean))
    table = [dict(num_generations=int(g), num_prompts=float(budget / g), mse=float(m), low=float(l),
                  high=float(h), relative=float(m / mmin)) for g, m, l, h in zip(table_gs, mean, lo, hi)]
    divs = np.array([g for g in range(2, budget + 1) if budget % g == 0], float)
    best_div = None
    if len(divs):
        dm, _, _ = pred_model.predict(divs, budget=budget, level=level)
        k = int(np.argmin(dm))
        rec_m, _, _ = pred_model.predict(np.array([float(g_rec)]), budget=budget, level=level)
        best_div = dict(num_generations=int(divs[k]), num_prompts=int(budget // divs[k]),
                        relative=float(dm[k] / rec_m[0]))
    cg = np.geomspace(2, min(budget, 4096), 200)                         # real G: smooth curve
    cm, cl, ch = pred_model.predict(cg, budget=budget, level=level)
    fv = sc._f
    out = dict(
        kind="mse", form=form, budget=int(budget), level=level, divisors_only=divisors_only,
        A1=fv(primary.params[0]), A2=fv(primary.params[1]), A3=fv(primary.params[2]),
        A1_interval=sc._ci(ci_a["A1"]), A2_interval=sc._ci(ci_a["A2"]), A3_interval=sc._ci(ci_a["A3"]),
        c1=fv(c_params[0]), c2=fv(c_params[1]), c3=fv(c_params[2]),
        c1_interval=sc._ci(ci_c[model.names[0]]), c2_interval=sc._ci(ci_c[model.names[1]]),
        c3_interval=sc._ci(ci_c[model.names[2]]),
        g_star_paper=fv((gs_form if form == "paper" else gs_exact).g_star_paper),
        g_star_paper_interval=sc._ci((gs_form if form == "paper" else gs_exact).g_star_paper_interval),
        g_star_exact=fv(gs_exact.g_star_exact), g_star_exact_interval=sc._ci(gs_exact.g_star_exact_interval),
        g_star_integer=g_rec, g_star_integer_interval=sc._ci(gs_form.g_star_integer_interval),
        bounded=bool(gs_form.bounded),
        recommendation=dict(num_generations=g_rec, num_prompts=float(budget / g_rec), budget=int(budget),
                            interior=bool(gs_form.interior), best_divisor=best_div),
        mse_table=table,
        curve=dict(num_generations=cg.tolist(), mse=cm.tolist(), low=cl.tolist(), high=ch.tolist()),
        constants_source=constants_source,
        c_convention="c_i := A_i (spec ambiguity 1); c3 = 2*A3 would multiply G*_paper by sqrt(2)",
    )
    if grid_fit is not None:
        gd = grid_fit.to_dict()
        gd["primary"] = grid_fit is primary
        gg = grid_fit.optimal_group_size(budget=budget, divisors_only=divisors_only, level=level)
        gd.update(g_star_exact=fv(gg.g_star_exact), g_star_exact_interval=sc._ci(gg.g_star_exact_interval),
                  bounded=gg.bounded)
        out["grid_fit"] = gd
    if exact is not None:
        ex = sc.optimal_group_size(exact, None, form=form, budget=budget, divisors_only=divisors_only)
        out["exact"] = dict(A1=fv(exact[0]), A2=fv(exact[1]), A3=fv(exact[2]), g_star_exact=fv(ex.g_star_exact),
                            g_star_integer=int(ex.g_star_integer))
        out["exact_curve"] = dict(num_generations=cg.tolist(),
                                  mse=(sc.mse_design(budget / cg, cg, form="exact") @ exact).tolist())
        if grid_fit is not None:
            gi = out["grid_fit"]["g_star_exact_interval"]
            out["exact"]["covered_by_grid_fit"] = bool(gi[0] <= ex.g_star_exact <= _hi(gi[1]))
        out["exact"]["covered"] = dict(
            {k: bool(out[k + "_interval"][0] <= exact[i] <= _hi(out[k + "_interval"][1]))
             for i, k in enumerate(("A1", "A2", "A3"))},
            g_star_exact=bool(out["g_star_exact_interval"][0] <= ex.g_star_exact
                              <= _hi(out["g_star_exact_interval"][1])))
    if observed is not None:
        out["observed"] = {k: [float(x) for x in v] for k, v in observed.items() if k != "run"}
    return out


def _hi(x):
    return math.inf if x == "inf" else x


def _performance_payload(a, *, level, seed):
    fit = sc.fit_performance_table(a["budget"], a["num_generations"], a["score"], a.get("run"),
                                   level=level, rng=seed)
    pd = fit.to_dict()
    pd.update(summary=fit.summary(), params=[float(x) for x in fit.params],
              higher_is_better=fit.higher_is_better)
    fv = sc._f
    out = dict(kind="performance", form="log-quadratic", budget=[int(b) for b in fit.budgets], level=level,
               A1=None, A2=None, A3=None, c1=None, c2=None, c3=None,
               A1_interval=None, A2_interval=None, A3_interval=None,
               c1_interval=None, c2_interval=None, c3_interval=None,
               g_star_paper=None, g_star_paper_interval=None, g_star_exact=None, g_star_exact_interval=None,
               g_star=fv(fit.g_star) if fit.bounded else None, g_star_interval=sc._ci(fit.g_star_interval),
               g_star_integer=None, g_star_integer_interval=None, bounded=fit.bounded,
               recommendation=dict(num_generations=None, distinguishable=fit.distinguishable),
               performance=pd,
               observed={"budget": [float(x) for x in a["budget"]],
                         "num_generations": [float(x) for x in a["num_generations"]],
                         "score": [float(x) for x in a["score"]]})
    if fit.distinguishable:
        g_rec, ci_rec = fit.recommended
        out["g_star"], out["g_star_interval"] = fv(g_rec), sc._ci(ci_rec)
        out["recommendation"]["num_generations"] = int(round(g_rec))
        out["g_star_integer"] = int(round(g_rec))
    return out


def run(opts: Options, *, log=lambda s: None) -> dict:
    """Run the analysis described by ``opts`` and return the JSON-safe payload.

    Raises :class:`InputError` (exit 2) or :class:`AnalysisError` (exit 1).
    """
    if opts.budget is not None and opts.budget <= 0:
        raise InputError(f"--budget must be a positive integer, got {opts.budget}")
    if opts.budget is not None and opts.budget < 2:
        raise InputError(f"--budget must be at least 2 (one prompt with two generations), got {opts.budget}")
    if not 0 < opts.level < 1:
        raise InputError(f"--level must be in (0, 1), got {opts.level}")
    if opts.measurements and opts.source:
        raise InputError("give a measurements FILE or --source, not both")
    warnings_ = []
    if opts.measurements:
        kind, a = load_measurements(opts.measurements, estimator=opts.estimator)
        input_hash = sha256_file(opts.measurements)
        src = f"file {opts.measurements}"
        if kind == "performance":
            payload = _performance_payload(a, level=opts.level, seed=opts.seed)
        else:
            nb = a["num_prompts"] * a["num_generations"]
            if opts.budget is None:
                vals = np.unique(nb)
                budget = int(vals.max())
                if len(vals) > 1:
                    log(f"budget not given: the grid has several B*G; using the largest, N = {budget} "
                        "(pass --budget for yours)")
            else:
                budget = int(opts.budget)
            se = a.get("mse_se")
            try:
                fit = sc.fit_mse_grid(a["num_prompts"], a["num_generations"], a["mse"], se, form="exact",
                                      level=opts.level)
                paper = sc.fit_mse_grid(a["num_prompts"], a["num_generations"], a["mse"], se, form="paper",
                                        level=opts.level) if opts.form == "paper" else None
            except ValueError as exc:
                raise InputError(f"{opts.measurements}: {exc}") from None
            if se is None:
                warnings_.append("no mse_se column: dispersion estimated from residuals (t intervals)")
            if fit.pvalue is not None and fit.pvalue < 0.01:
                warnings_.append(f"the scaling law fits poorly (chi2 p = {fit.pvalue:.2g}); intervals may be too narrow")
            payload = _mse_payload(fit, form=opts.form, budget=budget, level=opts.level,
                                   divisors_only=opts.divisors_only, paper=paper, grid_fit=fit,
                                   observed={k: v for k, v in a.items()},
                                   constants_source="fit of the MSE grid, " + fit.method)
    else:
        source = opts.source or "lm"
        budget = int(opts.budget or 256)
        num_prompts = opts.num_prompts or SOURCE_DEFAULTS[source][0]
        samples = opts.samples_per_prompt or SOURCE_DEFAULTS[source][1]
        opts = dataclasses.replace(opts, source=source, num_prompts=num_prompts, samples_per_prompt=samples)
        cfg = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("output", "report", "format")}
        input_hash = sha256_json(cfg)
        rng = np.random.default_rng(opts.seed)
        if opts.num_prompts < 3 or opts.samples_per_prompt < 4:
            raise InputError("--num-prompts must be >= 3 and --samples-per-prompt >= 4")
        if source != "lm" and (opts.model is not None):
            raise InputError("--model is only used with --source lm")
        if source == "lm":
            if opts.model is not None and not os.path.isdir(opts.model):
                raise InputError(f"--model {opts.model}: not a directory (a local Hugging Face model "
                                 "directory is expected; nothing is downloaded)")
            if opts.num_prompts > 500:
                raise InputError(f"--num-prompts must be <= 500 for --source lm (the arithmetic set), "
                                 f"got {opts.num_prompts}")
            who = opts.model if opts.model is not None else f"built-in {opts.variant} model"
            src = f"lm ({who}, arithmetic task; ustat_grpo.lm.prompt_samples)"
            try:
                from . import lm
            except ImportError as exc:
                raise AnalysisError(f"--source lm needs ustat_grpo.lm, which is not available ({exc})") from None
            log(f"sampling {opts.num_prompts} prompts x {opts.samples_per_prompt} rollouts from the LM ...")
            try:
                rewards, scores = lm.prompt_samples(opts.model, num_prompts=opts.num_prompts,
                                                    samples_per_prompt=opts.samples_per_prompt, seed=opts.seed,
                                                    device=opts.device, projection_dim=opts.projection_dim,
                                                    variant=opts.variant, progress=True)
            except Exception as exc:  # the LM stack failing is an analysis failure, reported in one line
                raise AnalysisError(f"lm.prompt_samples failed: {type(exc).__name__}: {exc}") from None
            est = sc.estimate_constants(np.asarray(rewards, float), np.asarray(scores, float), level=opts.level)
            payload = _mse_payload(est, form=opts.form, budget=budget, level=opts.level,
                                   divisors_only=opts.divisors_only,
                                   constants_source=f"{opts.num_prompts} LM prompts x {opts.samples_per_prompt} "
                                                    "samples, unbiased U-statistics + jackknife; scores "
                                                    f"sketched to {np.shape(scores)[-1]} dims (unbiased)")
        else:
            src = "bandit (built-in toy: contextual softmax bandit, 8 prompts, 6 arms, d = 4)"
            policy = default_bandit()
            exact = exact_constants(policy)
            log(f"measuring constants from {opts.num_prompts} prompts x {opts.samples_per_prompt} rollouts ...")
            s = policy.sample(opts.num_prompts, opts.samples_per_prompt, rng=rng)
            est = sc.estimate_constants(s.rewards, s.scores, level=opts.level)
            grid_fit, observed = None, None
            if opts.replicates > 0:
                log(f"Monte Carlo MSE grid at N = {budget} ({opts.replicates} replicates per cell) ...")
                grid = _bandit_grid(policy, budget, opts.replicates, rng, log)
                if len(grid["num_generations"]) >= 3:
                    grid_fit = sc.fit_mse_grid(grid["num_prompts"], grid["num_generations"], grid["mse"],
                                               grid["mse_se"], level=opts.level)
                    observed = grid
                else:
                    warnings_.append(f"budget {budget} has fewer than 3 divisors >= 2: grid check skipped")
            payload = _mse_payload(est, form=opts.form, budget=budget, level=opts.level,
                                   divisors_only=opts.divisors_only, grid_fit=grid_fit, exact=exact,
                                   observed=observed,
                                   constants_source=f"{opts.num_prompts} sampled prompts x "
                                                    f"{opts.samples_per_prompt} rollouts, unbiased "
                                                    "U-statistics + jackknife")
    payload.update(tool="ustat_grpo.fit_scaling", version=__version__, source=src, input_hash=input_hash,
                   seed=opts.seed, warnings=payload.get("warnings", []) + warnings_,
                   command="python -m ustat_grpo.fit_scaling")
    return payload


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  python -m ustat_grpo.fit_scaling                          # built-in transformer policy, ~1 min on CPU
  python -m ustat_grpo.fit_scaling --source bandit          # toy bandit with exact constants
  python -m ustat_grpo.fit_scaling --model ~/ckpt/qwen --device cuda   # your local HF model
  python -m ustat_grpo.fit_scaling grid.csv --budget 1024   # fit your MSE grid
  python -m ustat_grpo.fit_scaling table2.csv               # performance-vs-G table (Table 2 style)
  python -m ustat_grpo.fit_scaling --format json --report out/   # stable-key JSON + Markdown/PNG report

MSE grid CSV (num_prompts,num_generations,mse[,mse_se]; other columns ignored):
  num_prompts,num_generations,mse,mse_se
  128,2,0.0141,0.0003
  64,4,0.0092,0.0002
  32,8,0.0081,0.0002
  16,16,0.0088,0.0002

performance table CSV (budget,num_generations,score[,run]; one row per run):
  budget,num_generations,score,run
  1024,4,0.7677,0
  1024,8,0.7491,0
  1024,16,0.7753,0

NetCDF: output of ustat_grpo.montecarlo.run_grid (variables mse[, mse_se] over dims
num_generations, num_prompts[, estimator]; --estimator selects one).

JSON keys (stable): c1 c2 c3 A1 A2 A3 (+ _interval), g_star_paper g_star_exact g_star_integer
(+ _interval), budget, form, input_hash, version, recommendation, mse_table, warnings.
exit codes: 0 ok; 1 analysis failed; 2 bad usage or bad input.
"""


def _parser():
    doc = __doc__.split("\n\nInputs")[0]
    return parser_from_dataclass(Options, prog="python -m ustat_grpo.fit_scaling", description=doc,
                                 epilog=EXAMPLES, positional=("measurements",))


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    opts = options_from_args(Options, ns)
    log = lambda s: print(s, file=sys.stderr)
    t0 = time.perf_counter()
    try:
        payload = run(opts, log=log)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AnalysisError as exc:
        print(f"analysis failed: {exc}", file=sys.stderr)
        return 1
    payload["runtime_s"] = round(time.perf_counter() - t0, 2)
    from . import report as rp

    if opts.format == "json":
        text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    elif opts.format == "markdown":
        text = rp.render_markdown(payload)
    else:
        text = rp.render_text(payload)
    if opts.report:
        try:
            md = rp.write_report(payload, opts.report)
        except OSError as exc:
            print(f"error: {opts.report}: cannot write report ({exc.strerror})", file=sys.stderr)
            return 2
        log(f"report written to {md}")
    if opts.output:
        try:
            with open(opts.output, "w") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"error: {opts.output}: cannot write ({exc.strerror})", file=sys.stderr)
            return 2
        log(f"wrote {opts.output}")
    else:
        sys.stdout.write(text)
    for w in payload.get("warnings", []):
        log(f"warning: {w}")
    log(f"done in {payload['runtime_s']} s")
    return 0


def _console() -> None:
    """Console-script entry point ``ustat-fit-scaling`` (same as ``python -m ustat_grpo.fit_scaling``)."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
