"""From measured constants (or a fitted table) to a group-size recommendation.

:func:`recommend` is the one path from a measurement to the advice that
``python -m ustat_grpo.fit_scaling`` prints: it takes the constants of the scaling law (from
samples, :class:`~ustat_grpo.scaling.constants.ScalingConstants`, or from an MSE grid,
:class:`~ustat_grpo.scaling.grid_fit.ScalingFit`) or a performance-table fit
(:class:`~ustat_grpo.scaling.performance.PerformanceFit`) and returns a :class:`Recommendation`: ``G*``
per form with Fieller intervals, the predicted MSE of every candidate ``G`` at the budget, the best
divisor of the budget, the fitted curve and the warnings.  Renderers (:mod:`ustat_grpo.recommendation.report`)
only format a :class:`Recommendation`; JSON-safe conversion happens once, in
:meth:`Recommendation.to_dict`, whose keys are stable.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..core._serialize import jsonable
from ..scaling.allocation import AllocationResult
from ..scaling.cost import TokenBudgetResult
from ..scaling.grid_fit import ScalingFit
from ..core.interval import ConfidenceInterval, json_float, json_interval
from ..theory.mse import C_CONVENTION
from ..scaling.optimum import ConstantsEstimate, GroupSizeResult, group_size_divisors, mse_design, optimal_group_size
from ..measurement.card import EstimatorCard
from ..scaling.performance import PerformanceFit
from ..measurement.samples_per_prompt import SamplesPerPromptResult
from ..scaling.pool import EstimatorComparison

__all__ = ["Recommendation", "MSERow", "Curve", "ExactAnswer", "BestDivisor", "Observed", "Provenance",
           "recommend"]

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
        return jsonable(d)


@dataclass(frozen=True, kw_only=True)
class BestDivisor:
    """The divisor ``G`` of the budget with the smallest predicted MSE (an integer ``B = N / G``);
    ``relative``: its predicted MSE over the recommended ``G``'s."""

    num_generations: int
    num_prompts: int
    relative: float

    def to_dict(self) -> dict:
        return jsonable(dict(num_generations=self.num_generations, num_prompts=self.num_prompts,
                    relative=json_float(self.relative)))


@dataclass(frozen=True, kw_only=True)
class Observed:
    """The measured cells of an MSE grid (``num_prompts, num_generations, mse[, mse_se]``) or the
    rows of a performance table (``budget, num_generations, score``), as tuples of floats."""

    num_generations: tuple
    num_prompts: tuple | None = None
    mse: tuple | None = None
    mse_se: tuple | None = None
    budget: tuple | None = None
    score: tuple | None = None

    @classmethod
    def of(cls, columns) -> "Observed":
        """From a dict (or an object with attributes) of columns; unknown columns are dropped."""
        get = columns.get if isinstance(columns, dict) else (lambda k: getattr(columns, k, None))
        return cls(**{k: tuple(float(x) for x in np.asarray(get(k)).ravel()) for k in cls.__dataclass_fields__
                      if get(k) is not None})

    def to_dict(self) -> dict:
        return {k: jsonable(list(v)) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """How a recommendation was made: tool, version, source, the input's SHA-256, seed, the command
    line and every option's resolved value, run time."""

    tool: str = "ustat_grpo"
    version: str = ""
    source: str = ""
    input_hash: str = ""
    seed: int | None = None
    command: str = ""
    options: dict = field(default_factory=dict)
    runtime_s: float | None = None

    def to_dict(self) -> dict:
        return jsonable(dict(self.__dict__))


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
    num_generations : the recommended integer ``G``; ``None`` when none can be certified (no
        interior optimum, rewards that never vary, a table that cannot locate one): ``reason`` says why.
    interior : whether a bounded interior optimum was certified.
    reason : why no ``G`` is recommended, else ``None``.
    constants : exact-form constants ``(A1, A2, A3)`` with covariance (``kind="mse"``).
    model : the estimate behind the predictions and ``c1..c3`` (``constants``, or the paper-form
        grid fit with ``form="paper"``).
    optimum_exact, optimum : :class:`~ustat_grpo.scaling.optimum.GroupSizeResult` of the exact form and of
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
    card : the :class:`~ustat_grpo.measurement.card.EstimatorCard` of a language-model pilot (sampler, score,
        case, rewards, parameters, versions), or ``None``; JSON key ``card``, present only then.
    estimators : :class:`~ustat_grpo.scaling.pool.EstimatorComparison`, the scale-free criterion ``R(G)``
        of several estimators resampled from the pilot and the G each recommends, or ``None``; JSON
        key ``estimators``, present only then.
    estimator : the estimator the headline speaks for: ``leave_one_out`` (the paper's GRPO), or
        the trainer's own (the card's ``std_normalized`` / ``group_mean``), whose G comes from the
        scale-free criterion (``criterion="scale_free"``) rather than the MSE law (``"mse"``).
    criterion : ``"mse"`` or ``"scale_free"``.
    interval : the integer interval of the recommended G: the MSE law's, or the criterion's set of
        G not significantly worse.
    samples_choice : the samples per prompt ``M*`` a next pilot should draw, measured on this one
        (:class:`~ustat_grpo.measurement.samples_per_prompt.SamplesPerPromptResult`), or ``None``; JSON key
        ``samples_per_prompt``, present only then.
    allocation, allocation_reason : the allocation of rollouts across strata of prompts
        (:class:`~ustat_grpo.scaling.allocation.AllocationResult`, ``fit_scaling --allocate``), or ``None``
        with the reason; JSON keys ``allocation`` and ``allocation_reason``, always present.
    compute_budget, compute_budget_reason : ``G*`` at a fixed token cost per step with the prompt
        prefilled once per group (:class:`~ustat_grpo.scaling.cost.TokenBudgetResult`), or ``None`` with the
        reason; JSON keys ``compute_budget`` and ``compute_budget_reason``, always present.
    """

    kind: str
    form: str
    budget: int | tuple
    level: float
    divisors_only: bool = False
    num_generations: int | None
    interior: bool
    reason: str | None = None
    estimator: str = "leave_one_out"
    criterion: str = "mse"
    interval: tuple | None = None
    constants: ConstantsEstimate | None = None
    model: ConstantsEstimate | None = None
    optimum_exact: GroupSizeResult | None = None
    optimum: GroupSizeResult | None = None
    mse_table: tuple = ()
    best_divisor: BestDivisor | None = None
    curve: Curve | None = None
    grid_fit: ScalingFit | None = None
    grid_fit_optimum: GroupSizeResult | None = None
    grid_fit_is_primary: bool = False
    exact: ExactAnswer | None = None
    observed: Observed | None = None
    performance: PerformanceFit | None = None
    constants_source: str = ""
    warnings: tuple = ()
    provenance: Provenance = field(default_factory=Provenance)
    card: EstimatorCard | None = None
    estimators: EstimatorComparison | None = None
    samples_choice: SamplesPerPromptResult | None = None
    allocation: AllocationResult | None = None
    allocation_reason: str | None = "not asked (fit_scaling --allocate STRATIFIER)"
    compute_budget: TokenBudgetResult | None = None
    compute_budget_reason: str | None = "needs a language-model pilot (prompt and completion token lengths)"

    @property
    def g_star_exact(self) -> float | None:
        """``1 + sqrt(A3/A1)`` (exact form)."""
        return None if self.optimum_exact is None else self.optimum_exact.g_star_exact

    @property
    def g_star_paper(self) -> float | None:
        """``sqrt(c3/c1)`` (paper form; from the paper-form fit when there is one)."""
        return None if self.optimum is None else self.optimum.g_star_paper

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
        return None if self.optimum is None else self.optimum.confidence_interval(which=self.form)

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
        if self.num_generations is None:
            return f"no group size recommended at N = {self.budget}: {self.reason}"
        lo, hi = self.interval
        if self.criterion == "scale_free":
            return (f"use G = {self.num_generations} at N = {self.budget} rollouts per step for {self.estimator} "
                    f"advantages (scale-free criterion; G not significantly worse: [{lo:g}, {hi:g}])")
        return (f"use G = {self.num_generations} at N = {self.budget} rollouts per step "
                f"({pct} CI [{lo:g}, {hi:g}]; continuous G* = {self.g_star:.4g})")

    __str__ = summary

    def to_dict(self) -> dict:
        """JSON-safe dict with the stable keys of ``fit_scaling --format json``."""
        out = self._performance_dict() if self.kind == "performance" else self._mse_dict()
        out["warnings"] = list(self.warnings)
        out["reason"] = self.reason
        out.update(self.provenance.to_dict())
        if self.card is not None:
            out["card"] = self.card.to_dict()
        if self.estimators is not None:
            out["estimators"] = self.estimators.to_dict()
        if self.samples_choice is not None:
            out["samples_per_prompt"] = self.samples_choice.to_dict()
        out["allocation"] = None if self.allocation is None else self.allocation.to_dict()
        out["allocation_reason"] = None if self.allocation is not None else self.allocation_reason
        out["compute_budget"] = None if self.compute_budget is None else self.compute_budget.to_dict()
        out["compute_budget_reason"] = None if self.compute_budget is not None else self.compute_budget_reason
        return jsonable(out)

    def _mse_dict(self) -> dict:
        if self.constants is None:                       # nothing measurable: the reason says why
            keys = ("A1", "A2", "A3", "c1", "c2", "c3", "g_star_paper", "g_star_exact", "g_star_integer")
            return dict({k: None for k in keys}, **{k + "_interval": None for k in keys},
                        kind="mse", form=self.form, budget=int(self.budget), level=self.level,
                        divisors_only=self.divisors_only, constants_source=self.constants_source,
                        c_convention=C_CONVENTION, bounded=False, mse_table=[], curve=None,
                        recommendation=dict(num_generations=None, num_prompts=None, budget=int(self.budget),
                                            interior=False, best_divisor=None, reason=self.reason))
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
            g_star_integer=int(self.optimum.g_star_integer),
            g_star_integer_interval=json_interval(self.optimum.g_star_integer_interval),
            recommendation=dict(num_generations=self.num_generations,
                                num_prompts=None if self.num_generations is None else
                                float(self.budget / self.num_generations),
                                budget=int(self.budget), interior=bool(self.interior),
                                best_divisor=None if self.best_divisor is None else self.best_divisor.to_dict(),
                                reason=self.reason, estimator=self.estimator, criterion=self.criterion,
                                interval=None if self.interval is None else [float(x) for x in self.interval]),
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
            out["observed"] = self.observed.to_dict()
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
                                        group_size_matters=pf.effect_detected, reason=self.reason),
                    performance=pd, observed=None if self.observed is None else self.observed.to_dict())


# ---------------------------------------------------------------------------------- recommend

def candidate_group_sizes(budget: int, divisors_only: bool, extra=()) -> list[int]:
    """Rows of the MSE table: powers of two up to the budget (or its divisors), plus ``extra``."""
    if divisors_only:
        gs = group_size_divisors(budget)
    else:
        gs = [2 ** k for k in range(1, 31) if 2 ** k <= budget]
    return sorted(set(gs) | {int(x) for x in extra if 2 <= x <= budget})


def _best_divisor(model, budget, g_rec, level):
    divs = np.array(group_size_divisors(budget), float)
    if not len(divs):
        return None
    dm, _, _ = model.predict(divs, budget=budget, level=level)
    k = int(np.argmin(dm))
    rec_m, _, _ = model.predict(np.array([float(g_rec)]), budget=budget, level=level)
    return BestDivisor(num_generations=int(divs[k]), num_prompts=int(budget // divs[k]),
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
#: per-prompt values gives about 10%; the built-in models' pools are far above it (the coverage
#: study: docs evidence page, "Adaptive pilots: do the intervals cover?").
CONCENTRATION_WARNING = 0.25


def _concentration_warnings(estimate) -> tuple:
    share = getattr(estimate, "concentration", None)
    if share is None or not share > CONCENTRATION_WARNING:
        return ()
    return (f"heavy-tailed prompts: the top 2% carry {share:.0%} of sum_x ||g(x)||^2 (the pieces of A1), so the "
            "G* interval can undercover when the pilot has few prompts (coverage study: the evidence page of the "
            "documentation, section 'Adaptive pilots: do the intervals cover?'); spend a pilot on more prompts "
            "with fewer samples each",)


def recommend(estimate, *, budget: int | None = None, form: str = "exact", divisors_only: bool = False,
              level: float | None = None, paper_fit: ScalingFit | None = None,
              grid_fit: ScalingFit | None = None, exact=None, observed=None,
              constants_source: str = "", warnings: tuple = (),
              provenance: Provenance | None = None, allocate=None, allocate_multiple: int = 1,
              seconds_per_token=None) -> Recommendation:
    """Recommend a group size from a measurement, from constants of the scaling law or from a
    performance fit: the whole result, ready to render.

    Parameters
    ----------
    estimate : Measurement, ConstantsEstimate (exact form) or PerformanceFit
        A :class:`~ustat_grpo.measurement.measure.Measurement` (constants, card, per-estimator pool, samples
        advice, Monte Carlo grid and exact answer of a toy: all carried into the result), the
        measured constants ``(A1, A2, A3)`` with their covariance (from samples or from an MSE
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
    observed : dict of columns or :class:`Observed`, optional
        The measured grid cells or table rows (plotted and echoed in JSON).
    provenance : Provenance, optional
    allocate : array_like of labels (one per pilot prompt), or "pass_rate" / "pass_rate:K", optional
        With a Measurement: allocate the rollouts across these strata
        (:func:`ustat_grpo.scaling.allocation.allocate`, sizes multiples of ``allocate_multiple``).
    seconds_per_token : (prefill, decode), optional
        Measured throughput for the compute-budget ``G*`` (costs in seconds instead of tokens).

    Returns
    -------
    Recommendation
        ``num_generations`` is ``None``, with ``reason``, where no group size can be certified: no
        interior optimum (``A1`` not significantly positive), or rewards that never vary.

    Examples
    --------
    >>> from ustat_grpo.scaling.grid_fit import fit_mse_grid
    >>> G = np.array([2, 4, 8, 16, 32]); B = 256 // G
    >>> mse = mse_design(B, G) @ np.array([1.0, 2.0, 16.0])
    >>> rec = recommend(fit_mse_grid(B, G, mse, 0.01 * mse), budget=256)
    >>> rec.num_generations, round(rec.g_star, 3)
    (5, 5.0)
    """
    from ..measurement.measure import Measurement

    provenance = provenance or Provenance()
    if observed is not None and not isinstance(observed, Observed):
        observed = Observed.of(observed)
    if isinstance(estimate, Measurement):
        return _recommend_measurement(estimate, budget=budget, form=form, divisors_only=divisors_only, level=level,
                                      warnings=warnings, provenance=provenance, allocate=allocate,
                                      allocate_multiple=allocate_multiple, seconds_per_token=seconds_per_token)
    if allocate is not None:
        raise ValueError("allocating rollouts across prompts needs a pilot's per-prompt statistics (a Measurement)")
    if isinstance(estimate, PerformanceFit):
        return _recommend_performance(estimate, observed=observed, warnings=warnings, provenance=provenance)
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
    g_point = int(opt.g_star_integer)
    interior = bool(opt.interior)
    reason = None if interior else (
        f"no interior optimum can be certified at N = {budget}: the prompt-variance constant A1 is not "
        f"significantly > 0, so the MSE keeps falling with G within the budget (point estimate G = {g_point}; "
        "measure more prompts, or take the largest G your budget allows)")
    extra = [g_point] + list(observed.num_generations if observed else [])
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
        num_generations=g_point if interior else None, interior=interior, reason=reason, constants=estimate,
        interval=tuple(float(x) for x in opt.g_star_integer_interval) if interior else None,
        model=model, optimum_exact=opt_exact, optimum=opt, mse_table=table,
        best_divisor=_best_divisor(model, budget, g_point, level) if interior else None,
        curve=Curve(num_generations=cg, mse=cm, low=cl, high=ch), grid_fit=grid_fit,
        grid_fit_optimum=grid_opt, grid_fit_is_primary=grid_fit is estimate, exact=ex, observed=observed,
        constants_source=constants_source, warnings=tuple(warnings), provenance=provenance)


def _recommend_measurement(m, *, budget, form, divisors_only, level, warnings, provenance, allocate=None,
                           allocate_multiple=1, seconds_per_token=None) -> Recommendation:
    """:func:`recommend` of a :class:`~ustat_grpo.measurement.measure.Measurement`: constants (or the reason
    there are none), grid check, exact answer, card, estimator comparison, samples advice."""
    from ..scaling.grid_fit import fit_mse_grid

    budget = int(budget or 256)
    warnings = tuple(warnings) + (m.card.warnings() if m.card is not None else ())
    if m.constants is None:
        return Recommendation(kind="mse", form=form, budget=budget, level=level or 0.95, divisors_only=divisors_only,
                              num_generations=None, interior=False, reason=m.reason,
                              constants_source=m.description, warnings=warnings + (m.reason,),
                              provenance=provenance, card=m.card, compute_budget_reason=f"no constants: {m.reason}",
                              **({} if allocate is None else {"allocation_reason": f"no allocation: {m.reason}"}))
    grid_fit = None
    if m.grid is not None and len(m.grid.num_generations) >= 3:
        grid_fit = fit_mse_grid(m.grid.num_prompts, m.grid.num_generations, m.grid.mse, m.grid.mse_se,
                                level=level or m.constants.level)
    elif m.grid is not None:
        warnings += (f"budget {budget} has fewer than 3 divisors >= 2: grid check skipped",)
    rec = recommend(m.constants, budget=budget, form=form, divisors_only=divisors_only, level=level,
                    grid_fit=grid_fit, exact=m.exact, observed=m.grid if grid_fit is not None else None,
                    constants_source=m.description, warnings=warnings, provenance=provenance)
    rec = _for_trainer(dataclasses.replace(rec, card=m.card, estimators=m.comparison,
                                           samples_choice=m.samples_choice,
                                           warnings=rec.warnings + _comparison_warnings(m.comparison)))
    return dataclasses.replace(rec, **_allocation_fields(m, rec, allocate, allocate_multiple),
                               **_compute_budget_fields(m, rec, seconds_per_token))


def _allocation_fields(m, rec, allocate, multiple) -> dict:
    """``allocation`` (or ``None``) and its reason, for ``fit_scaling --allocate``."""
    from ..scaling.allocation import allocate as _allocate

    if allocate is None:
        return {}
    g = rec.optimum.g_star_integer if rec.num_generations is None else rec.num_generations
    B = max(1, int(rec.budget) // int(g))
    try:
        res = _allocate(m, allocate, budget=int(rec.budget), num_prompts=B, multiple=int(multiple), level=rec.level)
    except ValueError as exc:
        return {"allocation": None, "allocation_reason": f"no allocation: {exc}"}
    return {"allocation": res, "allocation_reason": None}


def _compute_budget_fields(m, rec, seconds_per_token) -> dict:
    """``G*`` at the token cost of the recommended step (``B c_p + N c_c``), or ``None`` and why."""
    from ..scaling.cost import cost_model, optimal_group_size_tokens

    s = (None, None) if seconds_per_token is None else tuple(seconds_per_token)
    try:
        cost = cost_model(m, prefill_seconds_per_token=s[0], decode_seconds_per_token=s[1])
    except ValueError as exc:
        return {"compute_budget": None, "compute_budget_reason": str(exc)}
    g = rec.optimum.g_star_integer if rec.num_generations is None else rec.num_generations
    T = float(cost.step_cost(int(rec.budget) / int(g), int(g)))
    try:
        res = optimal_group_size_tokens(m.constants, cost, token_budget=T, level=rec.level)
    except ValueError as exc:
        return {"compute_budget": None, "compute_budget_reason": str(exc)}
    return {"compute_budget": res, "compute_budget_reason": None}


def _comparison_warnings(comparison) -> tuple:
    return () if comparison is None or comparison.agree else (comparison.note,)


def _for_trainer(rec: Recommendation) -> Recommendation:
    """Where the card says the trainer's advantage is not leave-one-out (std-normalised or
    Dr.GRPO), the headline speaks for it, with the G of the scale-free criterion (issue 21:
    training supports it where the raw MSE measures the estimator's scale, not its noise)."""
    name = "leave_one_out" if rec.card is None else rec.card.criterion_estimator
    comp = rec.estimators
    if name == "leave_one_out" or comp is None or name not in comp.estimators:
        return rec
    pick = comp.recommended[name]
    if pick["num_generations"] is None:
        return dataclasses.replace(rec, estimator=name, criterion="scale_free", num_generations=None, interval=None,
                                   reason=f"the scale-free criterion of {name} is undefined on this pilot (no signal)")
    return dataclasses.replace(rec, estimator=name, criterion="scale_free", num_generations=int(pick["num_generations"]),
                               interval=tuple(float(x) for x in pick["interval"]), reason=None, best_divisor=None)


def _recommend_performance(fit: PerformanceFit, *, observed, warnings, provenance) -> Recommendation:
    # a located optimum; else, when G clearly matters, the best tested G (the optimum is at an edge)
    g_rec = (int(round(fit.recommended[0])) if fit.distinguishable else
             fit.best_adjusted if fit.effect_detected else None)
    obs = None if observed is None else Observed(num_generations=observed.num_generations,
                                                 budget=observed.budget, score=observed.score)
    reason = None if g_rec is not None else ("the table cannot distinguish the candidate group sizes "
                                             "(differences within run-to-run noise)")
    return Recommendation(kind="performance", form="log-quadratic", budget=tuple(fit.budgets),
                          level=fit.level, num_generations=g_rec, interior=bool(fit.distinguishable),
                          reason=reason, performance=fit, observed=obs, warnings=tuple(warnings),
                          provenance=provenance)
