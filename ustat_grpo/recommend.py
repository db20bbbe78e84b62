"""From measured constants (or a fitted table) to a group-size recommendation.

:func:`recommend` is the one path from a measurement to the advice that
``python -m ustat_grpo.fit_scaling`` prints: it takes the constants of the scaling law (from
samples, :class:`~ustat_grpo.constants.ScalingConstants`, or from an MSE grid,
:class:`~ustat_grpo.grid_fit.ScalingFit`) or a performance-table fit
(:class:`~ustat_grpo.performance.PerformanceFit`) and returns a :class:`Recommendation`: ``G*``
per form with Fieller intervals, the predicted MSE of every candidate ``G`` at the budget, the best
divisor of the budget, the fitted curve and the warnings.  Renderers (:mod:`ustat_grpo.report`)
only format a :class:`Recommendation`; JSON-safe conversion happens once, in
:meth:`Recommendation.to_dict`, whose keys are stable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._serialize import jsonable
from .grid_fit import ScalingFit
from .interval import ConfidenceInterval, json_float, json_interval
from .mse import C_CONVENTION
from .optimum import ConstantsEstimate, GroupSizeResult, mse_design, optimal_group_size
from .performance import PerformanceFit

__all__ = ["Recommendation", "MSERow", "Curve", "ExactAnswer", "recommend", "compare_estimators"]

@dataclass(frozen=True, kw_only=True)
class MSERow:
    """Predicted MSE of one candidate group size at the budget (``relative``: MSE / min)."""

    num_generations: int
    num_prompts: float
    mse: float
    low: float
    high: float
    relative: float


@dataclass(frozen=True, kw_only=True)
class Curve:
    """Predicted MSE over a fine grid of real ``G`` at the budget, with its pointwise band."""

    num_generations: np.ndarray
    mse: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def to_dict(self) -> dict:
        d = dict(num_generations=self.num_generations.tolist(), mse=self.mse.tolist())
        if self.low is not None:
            d.update(low=self.low.tolist(), high=self.high.tolist())
        return d


@dataclass(frozen=True, kw_only=True)
class ExactAnswer:
    """The exact answer of a toy policy, and whether the measured intervals cover it."""

    constants: np.ndarray
    optimum: GroupSizeResult
    curve: Curve
    covered: dict
    covered_by_grid_fit: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """A group-size recommendation and everything it rests on.

    Attributes
    ----------
    kind : "mse" (from constants of the scaling law) or "performance" (from a score-vs-G table).
    form : "exact" or "paper" (which shape drives the integer optimum); "log-quadratic" for
        performance tables.
    budget : rollouts per step ``N = B G`` (performance tables: the tuple of budgets).
    level : confidence level of every interval.
    num_generations : the recommended integer ``G`` (``None`` when a table cannot locate one).
    interior : whether a bounded interior optimum was certified.
    constants : exact-form constants ``(A1, A2, A3)`` with covariance (``kind="mse"``).
    model : the estimate behind the predictions and ``c1..c3`` (``constants``, or the paper-form
        grid fit with ``form="paper"``).
    optimum_exact, optimum : :class:`~ustat_grpo.optimum.GroupSizeResult` of the exact form and of
        ``form``.
    mse_table, best_divisor, curve : predicted MSE per candidate ``G``, the best divisor of the
        budget (``{num_generations, num_prompts, relative}``), and the smooth curve.
    grid_fit, grid_fit_optimum, grid_fit_is_primary : an MSE-grid fit (the constants themselves for
        grid inputs, or a Monte Carlo check for the toy) and its ``G*``.
    exact : the exact answer of a toy policy, when known.
    observed : the measured cells or rows, as plain lists.
    performance : the performance-table fit (``kind="performance"``).
    constants_source, warnings, provenance : how the numbers were measured; what to watch;
        tool, version, source, input hash, seed, command, runtime.
    card : the estimator card of a user's task (sampler, score, case, rewards, parameters,
        versions), or ``None``; JSON key ``card``, present only then.
    estimators : per-estimator MSE(G) from the pool and the G each recommends
        (:func:`compare_estimators`), or ``None``; JSON key ``estimators``, present only then.
    samples_choice : the samples per prompt ``M*`` a next pilot should draw, measured on this one
        (:class:`~ustat_grpo.pilot_design.SamplesPerPromptResult`), or ``None``; JSON key
        ``samples_per_prompt``, present only then.
    """

    kind: str
    form: str
    budget: int | tuple
    level: float
    divisors_only: bool = False
    num_generations: int | None
    interior: bool
    constants: ConstantsEstimate | None = None
    model: ConstantsEstimate | None = None
    optimum_exact: GroupSizeResult | None = None
    optimum: GroupSizeResult | None = None
    mse_table: tuple = ()
    best_divisor: dict | None = None
    curve: Curve | None = None
    grid_fit: ScalingFit | None = None
    grid_fit_optimum: GroupSizeResult | None = None
    grid_fit_is_primary: bool = False
    exact: ExactAnswer | None = None
    observed: dict | None = None
    performance: PerformanceFit | None = None
    constants_source: str = ""
    warnings: tuple = ()
    provenance: dict = field(default_factory=dict)
    card: dict | None = None
    estimators: dict | None = None
    samples_choice: object | None = None

    @property
    def g_star_exact(self) -> float:
        """``1 + sqrt(A3/A1)`` (exact form)."""
        return self.optimum_exact.g_star_exact

    @property
    def g_star_paper(self) -> float:
        """``sqrt(c3/c1)`` (paper form; from the paper-form fit when there is one)."""
        return self.optimum.g_star_paper

    @property
    def g_star(self) -> float | None:
        """Continuous optimum of ``form`` (performance tables: of the preferred shape)."""
        if self.kind == "performance":
            return self._performance_g_star()[0]
        return self.g_star_exact if self.form == "exact" else self.g_star_paper

    @property
    def g_star_interval(self) -> ConfidenceInterval | None:
        if self.kind == "performance":
            return self._performance_g_star()[1]
        return self.optimum.confidence_interval(which=self.form)

    def _performance_g_star(self):
        pf = self.performance
        if pf.distinguishable:
            return pf.recommended
        return (pf.g_star if pf.bounded else None), pf.g_star_interval

    def summary(self) -> str:
        """The headline: the recommended ``G`` with its interval (the report has the rest)."""
        pct = f"{100 * self.level:g}%"
        if self.kind == "performance":
            if self.num_generations is None:
                return "the table cannot distinguish the candidate group sizes (differences within noise)"
            if not self.performance.distinguishable:
                return (f"use G = {self.num_generations}, the best tested G (G matters, ANOVA p = "
                        f"{self.performance.effect_pvalue:.2g}; the optimum may lie beyond the tested range)")
            lo, hi = self.g_star_interval
            return f"use G = {self.num_generations} ({pct} CI for G*: [{lo:.3g}, {hi:.3g}], from a performance table)"
        lo, hi = self.optimum.g_star_integer_interval
        head = "use" if self.interior else "no interior optimum certified; largest useful"
        return (f"{head} G = {self.num_generations} at N = {self.budget} rollouts per step "
                f"({pct} CI [{lo:g}, {hi:g}]; continuous G* = {self.g_star:.4g})")

    __str__ = summary

    def to_dict(self) -> dict:
        """JSON-safe dict with the stable keys of ``fit_scaling --format json``."""
        out = self._performance_dict() if self.kind == "performance" else self._mse_dict()
        out["warnings"] = list(self.warnings)
        out.update(self.provenance)
        if self.card is not None:
            out["card"] = jsonable(self.card)
        if self.estimators is not None:
            out["estimators"] = jsonable(self.estimators)
        if self.samples_choice is not None:
            out["samples_per_prompt"] = self.samples_choice.to_dict()
        return out

    def _mse_dict(self) -> dict:
        A, m = self.constants, self.model
        ci_a, ci_c = A.confidence_interval(self.level), m.confidence_interval(self.level)
        out = dict(kind="mse", form=self.form, budget=int(self.budget), level=self.level,
                   divisors_only=self.divisors_only, constants_source=self.constants_source,
                   c_convention=C_CONVENTION, bounded=bool(self.optimum.bounded))
        for i, k in enumerate(("A1", "A2", "A3")):
            out[k], out[k + "_interval"] = json_float(A.params[i]), json_interval(ci_a[k])
        for i, k in enumerate(("c1", "c2", "c3")):
            out[k], out[k + "_interval"] = json_float(m.params[i]), json_interval(ci_c[m.names[i]])
        out.update(
            g_star_paper=json_float(self.g_star_paper),
            g_star_paper_interval=json_interval(self.optimum.g_star_paper_interval),
            g_star_exact=json_float(self.optimum_exact.g_star_exact),
            g_star_exact_interval=json_interval(self.optimum_exact.g_star_exact_interval),
            g_star_integer=int(self.num_generations),
            g_star_integer_interval=json_interval(self.optimum.g_star_integer_interval),
            recommendation=dict(num_generations=int(self.num_generations),
                                num_prompts=float(self.budget / self.num_generations),
                                budget=int(self.budget), interior=bool(self.interior),
                                best_divisor=self.best_divisor),
            mse_table=[r.__dict__.copy() for r in self.mse_table],
            curve=self.curve.to_dict())
        if self.grid_fit is not None:
            gd = self.grid_fit.to_dict()
            gg = self.grid_fit_optimum
            gd.update(primary=self.grid_fit_is_primary, g_star_exact=json_float(gg.g_star_exact),
                      g_star_exact_interval=json_interval(gg.g_star_exact_interval), bounded=gg.bounded)
            out["grid_fit"] = gd
        if self.exact is not None:
            ex = self.exact
            out["exact"] = dict(A1=json_float(ex.constants[0]), A2=json_float(ex.constants[1]),
                                A3=json_float(ex.constants[2]),
                                g_star_exact=json_float(ex.optimum.g_star_exact),
                                g_star_integer=int(ex.optimum.g_star_integer), covered=dict(ex.covered))
            if ex.covered_by_grid_fit is not None:
                out["exact"]["covered_by_grid_fit"] = ex.covered_by_grid_fit
            out["exact_curve"] = ex.curve.to_dict()
        if self.observed is not None:
            out["observed"] = self.observed
        return out

    def _performance_dict(self) -> dict:
        pf = self.performance
        pd = pf.to_dict()
        pd.update(summary=pf.summary(), params=[float(x) for x in pf.params],
                  higher_is_better=pf.higher_is_better)
        none = {k: None for k in ("A1", "A2", "A3", "c1", "c2", "c3")}
        none |= {k + "_interval": None for k in list(none)}
        none |= {k: None for k in ("g_star_paper", "g_star_paper_interval", "g_star_exact",
                                   "g_star_exact_interval", "g_star_integer_interval")}
        g, ci = self._performance_g_star()
        return dict(none, kind="performance", form="log-quadratic", budget=list(self.budget),
                    level=self.level, g_star=json_float(g), g_star_interval=json_interval(ci),
                    g_star_integer=self.num_generations, bounded=pf.bounded,
                    recommendation=dict(num_generations=self.num_generations,
                                        distinguishable=pf.distinguishable,
                                        group_size_matters=pf.effect_detected),
                    performance=pd, observed=self.observed)


# ---------------------------------------------------------------------------------- recommend

def compare_estimators(rec: Recommendation, pool) -> dict:
    """Side by side: the G each estimator's pool-resampled MSE(G) prefers, and the closed form.

    ``pool`` is a :class:`~ustat_grpo.pool.PoolMSE` at ``rec.budget``.  The leave-one-out row also
    carries ``G*`` of the constants (``rec``); ``agree`` says whether every estimator's best grid
    G is the same, and ``note`` says where they differ.
    """
    out = pool.to_dict()
    best = out["best"]
    if "leave_one_out" in best:
        best["leave_one_out"] = dict(best["leave_one_out"], closed_form_g_star=float(rec.g_star_exact),
                                     closed_form_g_integer=int(rec.num_generations))
    gs = {k: v.get("num_generations") for k, v in best.items() if "num_generations" in v}
    out["agree"] = len(set(gs.values())) <= 1
    out["note"] = ("all estimators prefer the same G on the grid" if out["agree"] else
                   "estimators disagree: " + ", ".join(f"{k} G={g}" for k, g in gs.items())
                   + " (the biased estimators trade bias for variance differently; see targets)")
    return out


def candidate_group_sizes(budget: int, divisors_only: bool, extra=()) -> list[int]:
    """Rows of the MSE table: powers of two up to the budget (or its divisors), plus ``extra``."""
    if divisors_only:
        gs = [g for g in range(2, budget + 1) if budget % g == 0]
    else:
        gs = [2 ** k for k in range(1, 31) if 2 ** k <= budget]
    return sorted(set(gs) | {int(x) for x in extra if 2 <= x <= budget})


def _best_divisor(model, budget, g_rec, level):
    divs = np.array([g for g in range(2, budget + 1) if budget % g == 0], float)
    if not len(divs):
        return None
    dm, _, _ = model.predict(divs, budget=budget, level=level)
    k = int(np.argmin(dm))
    rec_m, _, _ = model.predict(np.array([float(g_rec)]), budget=budget, level=level)
    return dict(num_generations=int(divs[k]), num_prompts=int(budget // divs[k]),
                relative=float(dm[k] / rec_m[0]))


def _exact_answer(exact, rec_kwargs, cg, A, optimum_exact, grid_optimum):
    exact = np.asarray(exact, float)
    ex = optimal_group_size(exact, None, **rec_kwargs)
    inside = lambda ci, x: bool(ci.low <= x <= ci.high)
    ci_a = A.confidence_interval()
    covered = {k: inside(ci_a[k], exact[i]) for i, k in enumerate(("A1", "A2", "A3"))}
    covered["g_star_exact"] = inside(optimum_exact.g_star_exact_interval, ex.g_star_exact)
    by_grid = None if grid_optimum is None else inside(grid_optimum.g_star_exact_interval, ex.g_star_exact)
    curve = Curve(num_generations=cg, mse=mse_design(rec_kwargs["budget"] / cg, cg, form="exact") @ exact)
    return ExactAnswer(constants=exact, optimum=ex, curve=curve, covered=covered,
                       covered_by_grid_fit=by_grid)


def _grid_warnings(fit: ScalingFit) -> tuple:
    out = []
    if fit.mse_se is None:
        out.append("no mse_se column: dispersion estimated from residuals (t intervals)")
    if fit.pvalue is not None and fit.pvalue < 0.01:
        out.append(f"the scaling law fits poorly (chi2 p = {fit.pvalue:.2g}); intervals may be too narrow")
    return tuple(out)


#: Share of ``sum_x ||g(x)||^2`` (the A1 pieces) carried by the top 2% of prompts above which a
#: recommendation warns that the G* interval may undercover.  A light-tailed (exponential) law of
#: per-prompt values gives about 10%; the built-in strong model about 60%.
CONCENTRATION_WARNING = 0.25


def _concentration_warnings(estimate) -> tuple:
    share = getattr(estimate, "concentration", None)
    if share is None or not share > CONCENTRATION_WARNING:
        return ()
    return (f"heavy-tailed prompts: the top 2% carry {share:.0%} of sum_x ||g(x)||^2 (the pieces of A1), so the "
            "G* interval can undercover when the pilot has few prompts: on the built-in model, 95% intervals "
            "from 368-prompt pilots (16 samples each) covered 0.905 [0.879, 0.927], adaptive pilots of 512-1024 "
            "prompts x 8 samples 0.948 [0.927, 0.965] (README, 'Do adaptive intervals cover?'); spend a pilot on "
            "more prompts with fewer samples each",)


def recommend(estimate, *, budget: int | None = None, form: str = "exact", divisors_only: bool = False,
              level: float | None = None, paper_fit: ScalingFit | None = None,
              grid_fit: ScalingFit | None = None, exact=None, observed: dict | None = None,
              constants_source: str = "", warnings: tuple = ()) -> Recommendation:
    """Recommend a group size from constants of the scaling law or from a performance fit.

    Parameters
    ----------
    estimate : ConstantsEstimate (exact form) or PerformanceFit
        The measured constants ``(A1, A2, A3)`` with their covariance (from samples or from an MSE
        grid), or a fitted performance-vs-G table.
    budget : int
        Rollouts per step ``N = B G`` (required for constants).
    form : {"exact", "paper"}
        Shape that drives the integer optimum: ``A3/(BG(G-1))`` or the paper's ``c3/(BG^2)``.
    divisors_only : bool
        Only recommend ``G`` that divide the budget.
    level : float, optional
        Confidence level (default: the estimate's).
    paper_fit : ScalingFit, optional
        A paper-form fit of the same grid; with ``form="paper"`` it drives predictions and ``c``.
    grid_fit : ScalingFit, optional
        An MSE-grid fit: ``estimate`` itself for grid inputs, or a Monte Carlo check.
    exact : array_like (3,), optional
        Exact constants of a toy policy, reported with coverage of the intervals.
    observed : dict of lists, optional
        The measured grid cells or table rows (plotted and echoed in JSON).

    Returns
    -------
    Recommendation

    Examples
    --------
    >>> from ustat_grpo.grid_fit import fit_mse_grid
    >>> G = np.array([2, 4, 8, 16, 32]); B = 256 // G
    >>> mse = mse_design(B, G) @ np.array([1.0, 2.0, 16.0])
    >>> rec = recommend(fit_mse_grid(B, G, mse, 0.01 * mse), budget=256)
    >>> rec.num_generations, round(rec.g_star, 3)
    (5, 5.0)
    """
    if isinstance(estimate, PerformanceFit):
        return _recommend_performance(estimate, observed=observed, warnings=warnings)
    if grid_fit is estimate:
        warnings = tuple(warnings) + _grid_warnings(grid_fit)
    if budget is None or budget < 2:
        raise ValueError(f"budget must be an integer >= 2, got {budget}")
    warnings = tuple(warnings) + _concentration_warnings(estimate)
    level = estimate.level if level is None else level
    budget = int(budget)
    kw = dict(budget=budget, divisors_only=divisors_only, level=level)
    opt_exact = estimate.optimal_group_size(**kw)
    model = paper_fit if (form == "paper" and paper_fit is not None) else estimate
    opt = opt_exact if form == "exact" else model.optimal_group_size(**kw, form=form)
    g_rec = int(opt.g_star_integer)
    extra = [g_rec] + list(observed["num_generations"] if observed else [])
    gs = candidate_group_sizes(budget, divisors_only, extra=extra)
    mean, lo, hi = model.predict(np.array(gs, float), budget=budget, level=level)
    mmin = float(np.min(mean))
    table = tuple(MSERow(num_generations=int(g), num_prompts=float(budget / g), mse=float(m), low=float(a),
                         high=float(b), relative=float(m / mmin)) for g, m, a, b in zip(gs, mean, lo, hi))
    cg = np.geomspace(2, min(budget, 4096), 200)          # real G: a smooth curve
    cm, cl, ch = model.predict(cg, budget=budget, level=level)
    grid_opt = grid_fit.optimal_group_size(**kw) if grid_fit is not None else None
    ex = None
    if exact is not None:
        ex = _exact_answer(exact, dict(form=form, budget=budget, divisors_only=divisors_only), cg,
                           estimate, opt_exact, grid_opt)
    return Recommendation(
        kind="mse", form=form, budget=budget, level=level, divisors_only=divisors_only,
        num_generations=g_rec, interior=bool(opt.interior), constants=estimate, model=model,
        optimum_exact=opt_exact, optimum=opt, mse_table=table,
        best_divisor=_best_divisor(model, budget, g_rec, level),
        curve=Curve(num_generations=cg, mse=cm, low=cl, high=ch), grid_fit=grid_fit,
        grid_fit_optimum=grid_opt, grid_fit_is_primary=grid_fit is estimate, exact=ex,
        observed=None if observed is None else {k: [float(x) for x in v] for k, v in observed.items()
                                                if k != "run"},
        constants_source=constants_source, warnings=tuple(warnings))


def _recommend_performance(fit: PerformanceFit, *, observed, warnings) -> Recommendation:
    # a located optimum; else, when G clearly matters, the best tested G (the optimum is at an edge)
    g_rec = (int(round(fit.recommended[0])) if fit.distinguishable else
             fit.best_adjusted if fit.effect_detected else None)
    obs = None if observed is None else {k: [float(x) for x in observed[k]]
                                         for k in ("budget", "num_generations", "score")}
    return Recommendation(kind="performance", form="log-quadratic", budget=tuple(fit.budgets),
                          level=fit.level, num_generations=g_rec, interior=bool(fit.distinguishable),
                          performance=fit, observed=obs, warnings=tuple(warnings))
