"""Scaling-law constants, scaling-law fits and the optimal group size.

The minibatch MSE of the GRPO gradient (arXiv 2603.01162, Proposition 3, eq. (9)) is, exactly,

.. math::

    \\mathrm{MSE}(B, G) = \\frac{A_1}{B} + \\frac{A_2}{BG} + \\frac{A_3}{BG(G-1)},

with :math:`A_1 = \\mathbb E\\|g(X) - g\\|^2` (prompt-sampling variance),
:math:`A_2 = \\mathbb E\\,\\mathrm{tr}\\,\\Sigma_{\\rm oracle}(X)` (oracle variance) and
:math:`A_3 = \\mathbb E[\\sigma^2(X)\\,\\mathrm{tr} I(X) + \\|g(X)\\|^2]` (U-statistic residual).
Theorem 7 (eq. (11)) writes the same shape as :math:`c_1/B + c_2/(BG) + c_3/(BG^2)`; following the
spec's ambiguity 1 we identify :math:`c_i := A_i`.  At a fixed number of rollouts per iteration
``budget`` :math:`N = BG` (and equally at a fixed total budget :math:`nBG`) the MSE is
:math:`(A_1 G + A_2 + A_3/(G-1))/N`, minimised at :math:`G^*_{\\rm exact} = 1 + \\sqrt{A_3/A_1}`;
the paper's form gives :math:`G^*_{\\rm paper} = \\sqrt{c_3/c_1}` (eq. (12)).  The paper only
defines :math:`c_3` up to a constant: :math:`c_3 = 2A_3` (a bound valid for every :math:`G \\ge 2`)
would multiply :math:`G^*_{\\rm paper}` by :math:`\\sqrt 2`.

Public functions
----------------
estimate_constants
    :math:`A_1, A_2, A_3` from per-prompt samples (``M >> G`` rollouts per prompt), with
    unbiased U-statistic plug-ins and jackknife confidence intervals.
fit_mse_grid
    Fit measured ``MSE(B, G)`` to the exact or the paper form: non-negative point estimate,
    WLS / Gamma-GLM covariance, goodness of fit.
optimal_group_size
    :math:`G^*` (paper, exact, integer) with Fieller intervals, from any constants + covariance.
fit_performance_table
    Fit an observed score-vs-G table at fixed budget (like the paper's Table 2) and locate its
    interior optimum with an honest interval.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

__all__ = [
    "ConfidenceInterval", "ScalingConstants", "ScalingFit", "GroupSizeResult",
    "PerformanceFit", "estimate_constants", "fit_mse_grid", "optimal_group_size",
    "fit_performance_table", "mse_design", "fieller_ratio_interval", "integer_optimum",
    "prompt_constants",
]

FORMS = ("exact", "paper")
_NAMES = {"exact": ("A1", "A2", "A3"), "paper": ("c1", "c2", "c3")}


class ConfidenceInterval(NamedTuple):
    """A ``(low, high)`` interval; ``high`` may be ``inf`` (unbounded)."""

    low: float
    high: float


def _f(x):
    """JSON-safe float (``inf``/``nan`` become strings, like ``json`` with allow_nan off would need)."""
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    return "inf" if x > 0 else ("-inf" if x < 0 else "nan")


def _ci(ci):
    return None if ci is None else [_f(ci[0]), _f(ci[1])]


# --------------------------------------------------------------------------------------------
# design and the optimum of a fitted curve
# --------------------------------------------------------------------------------------------

def mse_design(num_prompts, num_generations, *, form: str = "exact") -> np.ndarray:
    """Design matrix of the scaling law, linear in the three constants.

    Parameters
    ----------
    num_prompts, num_generations : array_like, broadcastable
        ``B`` and ``G`` (``G >= 2``).
    form : {"exact", "paper"}
        ``exact``: columns ``[1/B, 1/(BG), 1/(BG(G-1))]`` (Prop. 3, exact form);
        ``paper``: ``[1/B, 1/(BG), 1/(BG^2)]`` (Theorem 7, eq. (11)).

    Returns
    -------
    X : ndarray, shape (..., 3)
    """
    _check_form(form)
    b, g = np.broadcast_arrays(np.asarray(num_prompts, float), np.asarray(num_generations, float))
    last = 1.0 / (b * g * (g - 1.0)) if form == "exact" else 1.0 / (b * g * g)
    return np.stack([1.0 / b, 1.0 / (b * g), last], axis=-1)


def _check_form(form):
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")


def _shape(g, form):
    """k(G) in N*MSE/first = G + second/first + rho * k(G)."""
    g = np.asarray(g, float)
    return 1.0 / (g - 1.0) if form == "exact" else 1.0 / g


def _continuous_optimum(rho, form):
    if not rho >= 0:
        rho = 0.0
    if math.isinf(rho):
        return math.inf
    return (1.0 + math.sqrt(rho)) if form == "exact" else math.sqrt(rho)


def integer_optimum(rho: float, *, form: str = "exact", budget: int | None = None,
                    divisors_only: bool = False, max_group_size: int = 1 << 20) -> int:
    """Integer ``G >= 2`` minimising ``G + rho * k(G)`` (the fixed-budget MSE up to constants).

    ``k(G) = 1/(G-1)`` (exact) or ``1/G`` (paper).  Candidates are ``2..budget`` (``B >= 1``), or
    only the divisors of ``budget`` (integer ``B``) with ``divisors_only``.  The argmin is a
    non-decreasing function of ``rho`` (single crossing), which makes intervals map to intervals.
    """
    _check_form(form)
    hi = int(budget) if budget is not None else max_group_size
    if hi < 2:
        raise ValueError(f"budget must allow G >= 2, got {budget}")
    if divisors_only:
        if budget is None:
            raise ValueError("divisors_only needs a budget")
        cand = np.array([d for d in range(2, hi + 1) if hi % d == 0], float)
    else:
        gc = _continuous_optimum(rho, form)
        if math.isinf(gc):
            return hi
        lo_c = min(max(math.floor(gc), 2), hi)
        cand = np.unique(np.clip([lo_c - 1, lo_c, lo_c + 1, lo_c + 2], 2, hi)).astype(float)
    if math.isinf(rho):
        return int(cand.max())
    obj = cand + max(rho, 0.0) * _shape(cand, form)
    return int(cand[int(np.argmin(obj))])


def fieller_ratio_interval(num: float, den: float, var_num: float, var_den: float, cov: float,
                           *, level: float = 0.95, df: float | None = None,
                           nonnegative: bool = True) -> tuple[ConfidenceInterval, bool]:
    """Fieller (1954) confidence set for ``rho = num_true / den_true``.

    The set is ``{rho : (num - rho den)^2 <= q^2 (var_num - 2 rho cov + rho^2 var_den)}`` with
    ``q`` the normal (or Student-t with ``df``) two-sided quantile.  It is a bounded interval iff
    ``den^2 > q^2 var_den`` (the denominator is significantly non-zero); otherwise it is unbounded
    and ``(low, inf)`` is returned with ``bounded=False``.

    Returns
    -------
    interval : ConfidenceInterval
    bounded : bool
    """
    q = stats.norm.isf((1 - level) / 2) if df is None else stats.t.isf((1 - level) / 2, df)
    q2 = q * q
    a = den * den - q2 * var_den
    b = -2.0 * (num * den - q2 * cov)
    c = num * num - q2 * var_num
    disc = b * b - 4 * a * c
    floor = 0.0 if nonnegative else -math.inf
    if a > 0:
        disc = max(disc, 0.0)  # the point estimate num/den always lies in the set
        r = math.sqrt(disc)
        lo, hi = sorted(((-b - r) / (2 * a), (-b + r) / (2 * a)))
        if nonnegative and hi < 0:
            return ConfidenceInterval(0.0, 0.0), True
        return ConfidenceInterval(max(lo, floor), hi), True
    # unbounded: the whole line, or the complement of (r1, r2)
    if disc <= 0 or a == 0:
        return ConfidenceInterval(floor, math.inf), False
    r = math.sqrt(disc)
    r1, r2 = sorted(((-b - r) / (2 * a), (-b + r) / (2 * a)))
    # set = (-inf, r1] U [r2, inf); restricted to rho >= floor
    low = floor if r1 >= floor else max(r2, floor)
    return ConfidenceInterval(low, math.inf), False


# --------------------------------------------------------------------------------------------
# optimal group size
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class GroupSizeResult:
    """Optimal group size at a fixed rollout budget (arXiv 2603.01162, Theorem 7, eq. (12)).

    Attributes
    ----------
    form : "exact" or "paper" -- which MSE shape drives ``g_star_integer``.
    ratio : point estimate of ``rho = third / first`` constant (``A3/A1`` or ``c3/c1``).
    ratio_interval : Fieller interval of ``rho``.
    bounded : False when the first constant is not significantly > 0 -> "no interior optimum".
    g_star_paper, g_star_exact : ``sqrt(rho)`` and ``1 + sqrt(rho)`` (``inf`` if first == 0).
    g_star_integer : integer minimiser of the fitted fixed-budget MSE (``G >= 2``).
    budget : rollouts per iteration ``N = B G`` (``None``: no cap).
    level : confidence level of the intervals.
    """

    form: str
    ratio: float
    ratio_interval: ConfidenceInterval
    bounded: bool
    g_star_paper: float
    g_star_exact: float
    g_star_integer: int
    g_star_paper_interval: ConfidenceInterval
    g_star_exact_interval: ConfidenceInterval
    g_star_integer_interval: ConfidenceInterval
    budget: int | None
    divisors_only: bool
    level: float

    @property
    def interior(self) -> bool:
        """A finite interior optimum was found *and* its interval is bounded."""
        return self.bounded and math.isfinite(self.g_star_exact)

    @property
    def g_star(self) -> float:
        """Continuous optimum of the chosen form."""
        return self.g_star_exact if self.form == "exact" else self.g_star_paper

    def confidence_interval(self, level: float | None = None, which: str | None = None):
        """Interval of ``G*`` for ``which`` in {"exact", "paper", "integer"} (default: form).

        Only the level used at construction is stored; pass ``level=None`` or that level.
        """
        if level is not None and abs(level - self.level) > 1e-12:
            raise ValueError(f"intervals were computed at level {self.level}; recompute with "
                             "optimal_group_size(..., level=...)")
        which = which or self.form
        return {"exact": self.g_star_exact_interval, "paper": self.g_star_paper_interval,
                "integer": self.g_star_integer_interval}[which]

    def summary(self) -> str:
        pct = f"{100 * self.level:g}%"
        hi = lambda ci: "inf" if math.isinf(ci.high) else f"{ci.high:.3g}"
        lines = [f"optimal group size ({self.form} form, budget={self.budget or 'any'})"]
        if not self.bounded:
            lines.append(f"  no interior optimum can be certified: the prompt-variance constant "
                         f"is not significantly > 0 ({pct} Fieller set for G* is unbounded)")
        lines += [
            f"  rho = third/first constant = {self.ratio:.4g}  {pct} CI [{self.ratio_interval.low:.4g}, "
            f"{hi(self.ratio_interval)}]",
            f"  G*_paper = sqrt(rho)   = {self.g_star_paper:.4g}  [{self.g_star_paper_interval.low:.3g}, "
            f"{hi(self.g_star_paper_interval)}]",
            f"  G*_exact = 1+sqrt(rho) = {self.g_star_exact:.4g}  [{self.g_star_exact_interval.low:.3g}, "
            f"{hi(self.g_star_exact_interval)}]",
            f"  G*_integer             = {self.g_star_integer}  [{self.g_star_integer_interval.low:g}, "
            f"{hi(self.g_star_integer_interval)}]" + ("  (divisors of budget only)" if self.divisors_only else ""),
            "  note: c3 = 2*A3 (a bound valid for all G >= 2) would multiply G*_paper by sqrt(2)",
        ]
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return dict(form=self.form, ratio=_f(self.ratio), ratio_interval=_ci(self.ratio_interval),
                    bounded=self.bounded, interior=self.interior,
                    g_star_paper=_f(self.g_star_paper), g_star_exact=_f(self.g_star_exact),
                    g_star_integer=int(self.g_star_integer),
                    g_star_paper_interval=_ci(self.g_star_paper_interval),
                    g_star_exact_interval=_ci(self.g_star_exact_interval),
                    g_star_integer_interval=_ci(self.g_star_integer_interval),
                    budget=self.budget, divisors_only=self.divisors_only, level=self.level)


def optimal_group_size(constants, covariance=None, *, form: str = "exact", budget: int | None = None,
                       divisors_only: bool = False, level: float = 0.95,
                       df: float | None = None) -> GroupSizeResult:
    """Optimal group size from the three constants and their covariance.

    Parameters
    ----------
    constants : array_like, shape (3,)
        ``(A1, A2, A3)`` (``form="exact"``) or ``(c1, c2, c3)`` (``form="paper"``); only the ratio
        ``rho = constants[2] / constants[0]`` matters.
    covariance : array_like, shape (3, 3), optional
        Covariance of ``constants``.  ``None``: constants are exact, intervals are points.
    form : {"exact", "paper"}
        Which MSE shape defines the integer optimum (both continuous optima are reported).
    budget : int, optional
        Rollouts per iteration ``N = B G``; caps ``G <= N``.  The optimum does not depend on it
        otherwise (nor on the number of iterations: a total budget ``n B G`` gives the same ``G*``).
    divisors_only : bool
        Restrict the integer optimum to divisors of ``budget`` (integer ``B``).
    level : float
        Confidence level (Fieller interval for ``rho``; ``G*`` intervals are its monotone images).
    df : float, optional
        Degrees of freedom for Student-t quantiles (when the covariance scale was estimated).

    Returns
    -------
    GroupSizeResult

    Notes
    -----
    ``G*_paper = sqrt(c3/c1)`` (eq. (12)); ``G*_exact = 1 + sqrt(A3/A1)`` minimises
    ``(A1 G + A2 + A3/(G-1))/N``.  The Fieller interval of ``rho`` is bounded iff ``c1`` is
    significantly positive; otherwise ``G*`` could be arbitrarily large and no interior
    optimum is claimed.

    Examples
    --------
    >>> r = optimal_group_size([1.0, 2.0, 16.0], form="exact", budget=64)
    >>> r.g_star_exact, r.g_star_integer
    (5.0, 5)
    """
    _check_form(form)
    c = np.asarray(constants, float).reshape(3)
    if budget is not None and (budget != int(budget) or budget < 2):
        raise ValueError(f"budget must be an integer >= 2, got {budget}")
    budget = None if budget is None else int(budget)
    rho = c[2] / c[0] if c[0] > 0 else (math.inf if c[2] > 0 else 0.0)
    rho = max(rho, 0.0)
    if covariance is None:
        rci, bounded = ConfidenceInterval(rho, rho), math.isfinite(rho)
    else:
        V = np.asarray(covariance, float).reshape(3, 3)
        rci, bounded = fieller_ratio_interval(c[2], c[0], V[2, 2], V[0, 0], V[0, 2], level=level, df=df)
    gp = _continuous_optimum(rho, "paper")
    ge = _continuous_optimum(rho, "exact")
    gi = integer_optimum(rho, form=form, budget=budget, divisors_only=divisors_only)
    img = lambda f: ConfidenceInterval(f(rci.low), f(rci.high))
    iint = lambda r: float(integer_optimum(r, form=form, budget=budget, divisors_only=divisors_only)) \
        if (math.isfinite(r) or budget is not None) else math.inf
    return GroupSizeResult(
        form=form, ratio=float(rho), ratio_interval=rci, bounded=bool(bounded),
        g_star_paper=gp, g_star_exact=ge, g_star_integer=gi,
        g_star_paper_interval=img(lambda r: _continuous_optimum(r, "paper")),
        g_star_exact_interval=img(lambda r: _continuous_optimum(r, "exact")),
        g_star_integer_interval=img(iint), budget=budget, divisors_only=divisors_only, level=level)


# --------------------------------------------------------------------------------------------
# fit of an MSE grid
# --------------------------------------------------------------------------------------------

class _ConstantsMixin:
    """Shared inference on three constants ``params`` with ``covariance`` (fields of the result)."""

    @property
    def standard_error(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    def _q(self, level):
        a = (1 - level) / 2
        return stats.norm.isf(a) if self.df is None else stats.t.isf(a, self.df)

    def confidence_interval(self, level: float | None = None) -> dict:
        """Wald intervals of the three constants, clipped at 0: ``{name: ConfidenceInterval}``."""
        level = self.level if level is None else level
        q = self._q(level)
        se = self.standard_error
        return {n: ConfidenceInterval(max(0.0, self.unconstrained[i] - q * se[i]),
                                      max(0.0, self.unconstrained[i] + q * se[i]))
                for i, n in enumerate(self.names)}

    def optimal_group_size(self, *, budget: int | None = None, divisors_only: bool = False,
                           level: float | None = None) -> GroupSizeResult:
        """:func:`optimal_group_size` at the point estimate with this fit's covariance."""
        level = self.level if level is None else level
        # Fieller uses the unconstrained estimate (the sampling law behind the covariance); the
        # point G* uses the non-negative estimate.
        res = optimal_group_size(self.unconstrained, self.covariance, form=self.form, budget=budget,
                                 divisors_only=divisors_only, level=level, df=self.df)
        pt = optimal_group_size(self.params, None, form=self.form, budget=budget,
                                divisors_only=divisors_only, level=level)
        return GroupSizeResult(**{**res.__dict__, "ratio": pt.ratio, "g_star_paper": pt.g_star_paper,
                                  "g_star_exact": pt.g_star_exact, "g_star_integer": pt.g_star_integer})

    def predict(self, num_generations, *, num_prompts=None, budget=None, level: float | None = None):
        """Predicted MSE and a pointwise band.

        Give ``num_prompts`` (B) or ``budget`` (N, then ``B = N / G``).

        Returns
        -------
        mean, low, high : ndarrays shaped like ``num_generations``
        """
        level = self.level if level is None else level
        g = np.asarray(num_generations, float)
        if (num_prompts is None) == (budget is None):
            raise ValueError("give exactly one of num_prompts or budget")
        b = g * 0 + num_prompts if num_prompts is not None else budget / g
        X = mse_design(b, g, form=self.form)
        mean = X @ self.params
        se = np.sqrt(np.einsum("...i,ij,...j->...", X, self.covariance, X))
        q = self._q(level)
        return mean, np.maximum(mean - q * se, 0.0), mean + q * se



@dataclass(frozen=True, kw_only=True)
class ScalingFit(_ConstantsMixin):
    """Result of :func:`fit_mse_grid`.

    Attributes
    ----------
    form : "exact" (A1, A2, A3) or "paper" (c1, c2, c3).
    names : names of the three constants.
    params : non-negative point estimate (NNLS on the whitened design), shape (3,).
    unconstrained : weighted least-squares estimate without the sign constraint, shape (3,).
    covariance : covariance of ``unconstrained`` (3, 3) (``statsmodels`` WLS, ``cov_type``
        "fixed scale" when the variances are known).
    active : which constraints ``param >= 0`` are active at the point estimate.
    method : "wls" (weights 1/mse_se^2), "gamma" (Gamma-GLM variance ``phi_i mu_i^2`` from the
        fitted means) or "gamma-estimated-scale" (no ``mse_se``: dispersion from residuals).
    chi2, dof, pvalue : goodness of fit (``pvalue`` is None when the scale was estimated).
    df : degrees of freedom for t quantiles (None: normal quantiles, variances known).
    level : default confidence level.
    num_prompts, num_generations, mse, mse_se : the data (1-D arrays).
    """

    form: str
    names: tuple
    params: np.ndarray
    unconstrained: np.ndarray
    covariance: np.ndarray
    active: tuple
    method: str
    chi2: float
    dof: int
    pvalue: float | None
    df: float | None
    level: float
    num_prompts: np.ndarray
    num_generations: np.ndarray
    mse: np.ndarray
    mse_se: np.ndarray | None

    def summary(self) -> str:
        ci = self.confidence_interval()
        pct = f"{100 * self.level:g}%"
        lines = [f"scaling-law fit, {self.form} form: MSE = {self.names[0]}/B + {self.names[1]}/(BG) + "
                 f"{self.names[2]}/" + ("(BG(G-1))" if self.form == "exact" else "(BG^2)"),
                 f"  method: {self.method}; {len(self.mse)} cells, G in "
                 f"{sorted(set(self.num_generations.astype(int).tolist()))}",
                 f"  {'name':<4} {'estimate':>11} {'std.err':>10}  {pct} CI"]
        for i, n in enumerate(self.names):
            act = "  (at bound 0)" if self.active[i] else ""
            lines.append(f"  {n:<4} {self.params[i]:>11.5g} {self.standard_error[i]:>10.3g}  "
                         f"[{ci[n].low:.4g}, {ci[n].high:.4g}]{act}")
        gof = f"chi2 = {self.chi2:.3g} on {self.dof} dof"
        gof += f", p = {self.pvalue:.3g}" if self.pvalue is not None else " (dispersion estimated)"
        lines.append("  goodness of fit: " + gof)
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        ci = self.confidence_interval()
        return dict(form=self.form, method=self.method,
                    constants={n: _f(self.params[i]) for i, n in enumerate(self.names)},
                    unconstrained={n: _f(self.unconstrained[i]) for i, n in enumerate(self.names)},
                    standard_error={n: _f(self.standard_error[i]) for i, n in enumerate(self.names)},
                    confidence_interval={n: _ci(ci[n]) for n in self.names},
                    covariance=[[_f(v) for v in row] for row in self.covariance],
                    active_constraints={n: bool(self.active[i]) for i, n in enumerate(self.names)},
                    chi2=_f(self.chi2), dof=int(self.dof), pvalue=_f(self.pvalue), level=self.level,
                    num_cells=int(len(self.mse)))


def _fit_mse_grid_iv(num_prompts, num_generations, mse, mse_se, form, method, level):
    _check_form(form)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    b = np.asarray(num_prompts, float).ravel()
    g = np.asarray(num_generations, float).ravel()
    y = np.asarray(mse, float).ravel()
    if not (b.shape == g.shape == y.shape):
        raise ValueError("num_prompts, num_generations and mse must have the same length")
    for name, v in (("num_prompts", b), ("num_generations", g), ("mse", y)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(b < 1):
        raise ValueError("num_prompts must be >= 1")
    if np.any(g < 2):
        raise ValueError("num_generations must be >= 2 (GRPO needs a group)")
    if np.any(y <= 0):
        raise ValueError("mse must be positive")
    if len(np.unique(g)) < 3:
        raise ValueError(f"need at least three distinct num_generations, got {sorted(set(g.tolist()))}")
    se = None
    if mse_se is not None:
        se = np.asarray(mse_se, float).ravel()
        if se.shape != y.shape or not np.all(np.isfinite(se)) or np.any(se <= 0):
            raise ValueError("mse_se must be positive and finite, one per cell")
    if method not in ("auto", "wls", "gamma"):
        raise ValueError(f"method must be 'auto', 'wls' or 'gamma', got {method!r}")
    return b, g, y, se


def fit_mse_grid(num_prompts, num_generations, mse, mse_se=None, *, form: str = "exact",
                 method: str = "auto", level: float = 0.95, max_iter: int = 50) -> ScalingFit:
    """Fit a measured MSE grid to the scaling law.

    Parameters
    ----------
    num_prompts, num_generations, mse : array_like, shape (n,)
        One row per grid cell: ``B``, ``G`` and the measured MSE (e.g. a Monte Carlo mean of
        squared errors).  At least three distinct ``G >= 2``.
    mse_se : array_like, shape (n,), optional
        Standard error of each ``mse``.
    form : {"exact", "paper"}
        ``exact``: ``A1/B + A2/(BG) + A3/(BG(G-1))``; ``paper``: ``c1/B + c2/(BG) + c3/(BG^2)``.
    method : {"auto", "wls", "gamma"}
        ``wls``: weighted least squares with the given ``mse_se`` as known standard errors
        (``statsmodels`` WLS, ``cov_type="fixed scale"``).  ``gamma``: Gamma-GLM variance
        function, ``Var(mse_i) = phi_i mu_i^2`` with ``mu_i`` the *fitted* mean, fitted by IRLS;
        ``phi_i = (mse_se_i / mse_i)^2`` when ``mse_se`` is given (known relative errors), else a
        common ``phi`` estimated from Pearson residuals (then t quantiles with ``n - 3`` dof).
        ``auto`` = ``gamma``: weighting by the observed ``mse_se`` couples each cell's weight to
        its own noise (cells that came out low get large weights); in the seeded coverage study
        of ``tests/test_scaling.py`` (2000 fits, R = 200 chi2_1 draws per cell) ``wls`` covers
        0.934-0.946 and ``gamma`` 0.941-0.943 at nominal 0.95.
    level : float
        Default confidence level.

    Returns
    -------
    ScalingFit

    Notes
    -----
    The model is linear in the constants, so the point estimate is a non-negative least-squares
    solution (``scipy.optimize.lsq_linear`` on the whitened design); active constraints are
    reported, and intervals come from the unconstrained weighted fit (Wald), which is the right
    sampling law away from the bound.

    Examples
    --------
    >>> G = np.array([2, 4, 8, 16, 32]); B = 1024 // G
    >>> mse = mse_design(B, G) @ np.array([1.0, 2.0, 8.0])
    >>> fit = fit_mse_grid(B, G, mse, 0.01 * mse)
    >>> np.round(fit.params, 6).tolist()
    [1.0, 2.0, 8.0]
    """
    import statsmodels.api as sm

    b, g, y, se = _fit_mse_grid_iv(num_prompts, num_generations, mse, mse_se, form, method, level)
    if method == "auto":
        method = "gamma"
    X = mse_design(b, g, form=form)                     # (n, 3)
    scale = np.abs(X).max(axis=0)                       # column scaling for conditioning
    Xs = X / scale
    n = len(y)

    def wls(var, fixed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sm.WLS(y, Xs, weights=1.0 / var)
            res = model.fit(cov_type="fixed scale") if fixed else model.fit()
        return res

    if method == "wls":
        if se is None:
            raise ValueError("method='wls' needs mse_se")
        var, fixed, label = se ** 2, True, "wls"
        res = wls(var, True)
    else:
        phi = (se / y) ** 2 if se is not None else np.ones(n)
        fixed = se is not None
        label = "gamma" if fixed else "gamma-estimated-scale"
        mu = y.copy()
        for _ in range(max_iter):
            var = phi * mu ** 2
            res = wls(var, fixed)
            mu_new = np.maximum(Xs @ res.params, 1e-3 * y)  # keep the variance function positive
            if np.max(np.abs(mu_new - mu) / mu) < 1e-10:
                mu = mu_new
                break
            mu = mu_new
        var = phi * mu ** 2
        res = wls(var, fixed)
    theta_u = np.asarray(res.params) / scale
    cov = np.asarray(res.cov_params()) / np.outer(scale, scale)
    w = 1.0 / np.sqrt(var)
    ls = optimize.lsq_linear(Xs * w[:, None], y * w, bounds=(0, np.inf), method="bvls")
    theta = np.maximum(ls.x, 0) / scale
    active = tuple(bool(a != 0) for a in ls.active_mask)
    resid = (y - X @ theta_u) / np.sqrt(var)
    dof = n - 3
    if fixed:
        chi2 = float(resid @ resid)
        pval = float(stats.chi2.sf(chi2, dof)) if dof > 0 else None
        df = None
    else:
        chi2 = float(resid @ resid)  # Pearson X2 with phi = 1; the estimated dispersion is chi2/dof
        pval = None
        df = float(dof) if dof > 0 else None
        if dof <= 0:
            raise ValueError("need more than three cells to estimate the dispersion without mse_se")
    return ScalingFit(form=form, names=_NAMES[form], params=theta, unconstrained=theta_u,
                      covariance=cov, active=active, method=label, chi2=chi2, dof=dof, pvalue=pval,
                      df=df, level=level, num_prompts=b, num_generations=g, mse=y, mse_se=se)


# --------------------------------------------------------------------------------------------
# constants from per-prompt samples
# --------------------------------------------------------------------------------------------

def _prompt_pieces(rewards, scores):
    """Unbiased per-prompt U-statistics, vectorised over prompts.

    Parameters
    ----------
    rewards : (P, M) ; scores : (P, M, d), ``M >= 4``.

    Returns
    -------
    g : (P, d)    U-statistic (6) of g(x) = Cov(W, Z | x)
    g2 : (P,)     order-4 U-statistic of ||g(x)||^2 (kernel <h(1,2), h(3,4)>)
    st : (P,)     order-3 U-statistic of sigma^2(x) tr I(x)
    zzq : (P,)    unbiased E[(Z - V)^2 ||W||^2 | x]
    """
    z = rewards                                          # (P, M)
    w = scores                                           # (P, M, d)
    M = z.shape[-1]
    q = np.einsum("pmd,pmd->pm", w, w)                   # (P, M) ||W_m||^2
    sz, szz = z.sum(-1), (z * z).sum(-1)                 # (P,)
    sw = w.sum(-2)                                       # (P, d)
    szw = np.einsum("pm,pmd->pd", z, w)                  # (P, d)
    sz2w = np.einsum("pm,pmd->pd", z * z, w)             # (P, d)
    zbar = sz / M
    dev2 = (z - zbar[:, None]) ** 2                      # (P, M)
    s2 = dev2.sum(-1) / (M - 1)                          # unbiased sigma^2
    # g: sample covariance of (W, Z) with ddof 1 == U-statistic with kernel h (Lemma 1)
    g = (szw - sw * zbar[:, None]) / (M - 1)             # (P, d)
    # a_i = sum_j h_ij, H = sum_i a_i
    a = 0.5 * (w * (M * z - sz[:, None])[..., None] - z[..., None] * sw[:, None, :] + szw[:, None, :])
    H = a.sum(-2)                                        # (P, d) == M(M-1) g
    # S2 = sum_{i != j} ||h_ij||^2
    t_q = (q * (M * z * z - 2 * z * sz[:, None] + szz[:, None])).sum(-1)
    t_w = 2 * np.einsum("pd,pd->p", sz2w, sw) - 2 * np.einsum("pd,pd->p", szw, szw)
    S2 = 0.25 * (2 * t_q - 2 * t_w)
    D = np.einsum("pd,pd->p", H, H) - 4 * np.einsum("pmd,pmd->p", a, a) + 2 * S2
    g2 = D / (M * (M - 1) * (M - 2) * (M - 3))
    # sigma^2 tr I over distinct triples: sum_k q_k [S - sum_j (z_k - z_j)^2]
    S = M * (M - 1) * s2                                 # sum_{i != j} (z_i - z_j)^2 / 2
    inner = S[:, None] - (M * dev2 + (M - 1) * s2[:, None])
    st = (q * inner).sum(-1) / (M * (M - 1) * (M - 2))
    # pair average of (z_i - z_j)^2 q_i has mean E[(Z-V)^2 q] + sigma^2 tr I
    t1 = (q * (M * dev2 + (M - 1) * s2[:, None])).sum(-1) / (M * (M - 1))
    return g, g2, st, t1 - st


def prompt_constants(rewards, scores):
    """Unbiased per-prompt constants ``A2(x), A3(x)`` of Theorem 2 (arXiv 2603.01162).

    ``A2(x) = tr Sigma_oracle(x) = E[(Z-V)^2 ||W||^2 | x] - ||g(x)||^2`` and
    ``A3(x) = sigma^2(x) tr I(x) + ||g(x)||^2``, so that the exact per-prompt MSE of the
    leave-one-out GRPO gradient is ``A2(x)/G + A3(x)/(G(G-1))`` and the oracle's is ``A2(x)/G``.

    Parameters
    ----------
    rewards : array_like, shape (P, M) ; scores : array_like, shape (P, M, d), ``M >= 4``.

    Returns
    -------
    a2, a3, g_norm2 : ndarray, shape (P,)
        U-statistics of ``A2(x)``, ``A3(x)`` and ``||g(x)||^2`` (unbiased; may be negative for
        small ``M``).
    """
    z, w = np.asarray(rewards, float), np.asarray(scores, float)
    if z.ndim != 2 or w.ndim != 3 or w.shape[:2] != z.shape or z.shape[1] < 4:
        raise ValueError(f"need rewards (P, M >= 4) and scores (P, M, d), got {z.shape} and {w.shape}")
    _, g2, st, zzq = _prompt_pieces(z, w)
    return zzq - g2, st + g2, g2


def _prompt_pieces_naive(rewards, scores):
    """Brute-force twin of :func:`_prompt_pieces` (loops over distinct index tuples; small M)."""
    import itertools

    P, M = rewards.shape
    out_g, out_g2, out_st, out_zzq = [], [], [], []
    for p in range(P):
        z, w = rewards[p], scores[p]
        h = {(i, j): 0.5 * (w[i] - w[j]) * (z[i] - z[j]) for i in range(M) for j in range(M) if i != j}
        out_g.append(np.mean([h[k] for k in h], axis=0))
        out_g2.append(np.mean([h[(i, j)] @ h[(k, l)] for i, j, k, l in itertools.permutations(range(M), 4)]))
        out_st.append(np.mean([0.5 * (z[i] - z[j]) ** 2 * (w[k] @ w[k])
                               for i, j, k in itertools.permutations(range(M), 3)]))
        # E[(Z-V)^2 q] = E[Z^2 q] - 2 V E[Z q] + V^2 E[q]: order-3 kernel z_i^2 q_i - 2 z_i q_i z_j + z_j z_k q_i
        out_zzq.append(np.mean([(z[i] ** 2 - 2 * z[i] * z[j] + z[j] * z[k]) * (w[i] @ w[i])
                                for i, j, k in itertools.permutations(range(M), 3)]))
    return np.array(out_g), np.array(out_g2), np.array(out_st), np.array(out_zzq)


def _constants_from_pieces(g, g2, st, zzq, probs):
    """(A1, A2, A3) from per-prompt pieces; ``probs`` None = prompts i.i.d. from f (equal weights)."""
    P = g.shape[0]
    a3 = st + g2
    a2 = zzq - g2
    if probs is None:
        if P < 2:
            raise ValueError("need at least two prompts to estimate the between-prompt variance A1")
        # E||g(X)||^2 - ||E g(X)||^2 with distinct-prompt cross products (independent, unbiased)
        sg = g.sum(0)
        cross = (sg @ sg - np.einsum("pd,pd->", g, g)) / (P * (P - 1))
        A1 = g2.mean() - cross
        return np.array([A1, a2.mean(), a3.mean()])
    f = probs
    fg = f @ g                                           # (d,)
    cross = fg @ fg - np.einsum("p,pd,pd->", f * f, g, g)  # sum_{x != y} f_x f_y g_x.g_y
    A1 = f @ g2 - (cross + (f * f) @ g2)
    return np.array([A1, f @ a2, f @ a3])


def _constants_plugin(rewards, scores, probs):
    """The spec's plug-in estimates (section 4 reference formulas), biased O(1/M); for comparison."""
    z, w = rewards, scores
    M = z.shape[-1]
    v = z.mean(-1)
    s2 = z.var(-1, ddof=1)
    q = np.einsum("pmd,pmd->pm", w, w)
    g = np.einsum("pm,pmd->pd", z - v[:, None], w) / (M - 1)
    gg = np.einsum("pd,pd->p", g, g)
    trs = ((z - v[:, None]) ** 2 * q).mean(-1) - gg
    f = np.full(len(v), 1.0 / len(v)) if probs is None else probs
    gbar = f @ g
    A1 = f @ np.einsum("pd,pd->p", g - gbar, g - gbar)
    if probs is None:
        A1 *= len(v) / (len(v) - 1)
    return np.array([A1, f @ trs, f @ (s2 * q.mean(-1) + gg)])


@dataclass(frozen=True, kw_only=True)
class ScalingConstants(_ConstantsMixin):
    """Constants of the exact scaling law measured from per-prompt samples.

    Attributes
    ----------
    params : (A1, A2, A3) clipped at 0 (``unconstrained``: the unbiased estimates).
    covariance : (3, 3) delete-a-group jackknife covariance.
    df : degrees of freedom of the jackknife (t quantiles).
    plugin : the spec's plug-in estimates (biased O(1/M)), for comparison.
    num_prompts, samples_per_prompt : P and M.
    design : "fixed prompt set" (``prompt_probs`` given: population = these prompts, jackknife
        over blocks of samples) or "sampled prompts" (jackknife over groups of prompts).
    """

    form: str = "exact"
    names: tuple = ("A1", "A2", "A3")
    params: np.ndarray
    unconstrained: np.ndarray
    covariance: np.ndarray
    df: float | None
    level: float
    plugin: np.ndarray
    num_prompts: int
    samples_per_prompt: int
    design: str
    n_groups: int

    @property
    def c(self) -> np.ndarray:
        """(c1, c2, c3) := (A1, A2, A3), the spec's ambiguity-1 convention."""
        return self.params

    def summary(self) -> str:
        ci = self.confidence_interval()
        pct = f"{100 * self.level:g}%"
        lines = [f"scaling-law constants from {self.num_prompts} prompts x {self.samples_per_prompt} "
                 f"samples ({self.design}; unbiased U-statistics, jackknife over {self.n_groups} groups)",
                 f"  {'name':<4} {'estimate':>11} {'std.err':>10}  {pct} CI{'':14} plug-in (biased)"]
        for i, n in enumerate(self.names):
            lines.append(f"  {n:<4} {self.unconstrained[i]:>11.5g} {self.standard_error[i]:>10.3g}  "
                         f"[{ci[n].low:.4g}, {ci[n].high:.4g}]".ljust(58) + f"{self.plugin[i]:.5g}")
        lines.append("  A1: prompt-sampling variance; A2: oracle variance; A3: U-statistic residual"
                     " (c_i := A_i)")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        ci = self.confidence_interval()
        return dict(form=self.form, method="unbiased U-statistics + delete-a-group jackknife",
                    design=self.design, n_groups=self.n_groups,
                    constants={n: _f(self.params[i]) for i, n in enumerate(self.names)},
                    unconstrained={n: _f(self.unconstrained[i]) for i, n in enumerate(self.names)},
                    standard_error={n: _f(self.standard_error[i]) for i, n in enumerate(self.names)},
                    confidence_interval={n: _ci(ci[n]) for n in self.names},
                    plugin={n: _f(self.plugin[i]) for i, n in enumerate(self.names)},
                    covariance=[[_f(v) for v in row] for row in self.covariance],
                    num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt,
                    level=self.level)


def estimate_constants(rewards, scores, *, prompt_probs=None, level: float = 0.95,
                       n_groups: int = 20) -> ScalingConstants:
    """Estimate ``A1, A2, A3`` (Prop. 3, exact form) from many samples per prompt.

    Parameters
    ----------
    rewards : array_like, shape (P, M)
        ``M >= 4`` rewards per prompt (``M`` much larger than the group sizes of interest).
    scores : array_like, shape (P, M, d)
        Score vectors ``W = grad log pi(Y | X)`` (or a fixed random projection of them).
    prompt_probs : array_like, shape (P,), optional
        Probabilities ``f(x)`` when the ``P`` prompts *are* the whole prompt set (e.g. a toy
        bandit): constants are then population values over this set and the uncertainty is the
        within-prompt sampling only.  ``None``: prompts are an i.i.d. sample from ``f`` (equal
        weights) and the uncertainty includes prompt sampling.
    level : float
        Default confidence level.
    n_groups : int
        Number of jackknife groups (blocks of samples, or of prompts when ``prompt_probs`` is None).

    Returns
    -------
    ScalingConstants

    Notes
    -----
    Every per-prompt piece is an unbiased U-statistic, so the constants are unbiased (the
    spec's plug-ins carry ``O(1/M)`` bias; they are reported in ``plugin``):

    * ``g(x)``: order 2, kernel ``h = (W_i - W_j)(Z_i - Z_j)/2`` (arXiv 2603.01162, eq. (6));
    * ``||g(x)||^2``: order 4, kernel ``<h(1,2), h(3,4)>``, computed in ``O(M d)``;
    * ``sigma^2 tr I``: order 3, kernel ``(Z_i - Z_j)^2 ||W_k||^2 / 2``;
    * ``E[(Z-V)^2 ||W||^2]``: order 3;
    * ``A1 = E||g(X)||^2 - ||E g(X)||^2`` with cross products over distinct prompts only.

    Then ``A2 = E[E[(Z-V)^2||W||^2|X] - ||g(X)||^2]`` and ``A3 = E[sigma^2 tr I + ||g||^2]``.
    Intervals: delete-a-group jackknife with Student-t quantiles (``n_groups - 1`` dof).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.binomial(1, 0.5, size=(8, 200)).astype(float)
    >>> w = rng.standard_normal((8, 200, 3)) + z[..., None]
    >>> est = estimate_constants(z, w)
    >>> est.params.shape
    (3,)
    """
    z = np.asarray(rewards, float)
    w = np.asarray(scores, float)
    if z.ndim != 2 or w.ndim != 3 or w.shape[:2] != z.shape:
        raise ValueError(f"need rewards (P, M) and scores (P, M, d), got {z.shape} and {w.shape}")
    P, M = z.shape
    if M < 4:
        raise ValueError(f"need at least 4 samples per prompt, got {M}")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(w))):
        raise ValueError("rewards and scores must be finite")
    probs = None
    if prompt_probs is not None:
        probs = np.asarray(prompt_probs, float)
        if probs.shape != (P,) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
            raise ValueError("prompt_probs must be (P,) non-negative and sum to 1")
    est = _constants_from_pieces(*_prompt_pieces(z, w), probs)
    if probs is not None:
        K = int(min(n_groups, M // 4))
        blocks = np.array_split(np.arange(M), K)
        reps = []
        for blk in blocks:
            keep = np.setdiff1d(np.arange(M), blk)
            reps.append(_constants_from_pieces(*_prompt_pieces(z[:, keep], w[:, keep]), probs))
        design = "fixed prompt set"
    else:
        K = int(min(n_groups, P))
        if K < 3:
            raise ValueError("need at least 3 prompts for a jackknife over prompts")
        pieces = _prompt_pieces(z, w)
        blocks = np.array_split(np.arange(P), K)
        reps = []
        for blk in blocks:
            keep = np.setdiff1d(np.arange(P), blk)
            reps.append(_constants_from_pieces(*(x[keep] for x in pieces), None))
        design = "sampled prompts"
    reps = np.array(reps)                                # (K, 3)
    dev = reps - reps.mean(0)
    cov = (K - 1) / K * dev.T @ dev
    return ScalingConstants(params=np.maximum(est, 0.0), unconstrained=est, covariance=cov,
                            df=float(K - 1), level=level, plugin=_constants_plugin(z, w, probs),
                            num_prompts=P, samples_per_prompt=M, design=design, n_groups=K)


# --------------------------------------------------------------------------------------------
# performance-vs-G tables (e.g. the paper's Table 2)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PerformanceFit:
    """Result of :func:`fit_performance_table`.

    The model is ``score = alpha_N + beta1 u + beta2 u^2`` with ``u = log2 G`` and one intercept
    per budget ``N`` (the curvature, hence ``G*``, is shared: Theorem 7 says ``G*`` does not
    depend on ``N``).  ``G* = 2^(-beta1 / (2 beta2))`` when ``beta2 < 0`` (for higher-is-better).

    Attributes
    ----------
    g_star : point estimate of the best group size (``nan`` without an interior maximum).
    g_star_interval : Fieller interval (on ``log2 G``, mapped back), may be unbounded.
    bounded : the Fieller interval is bounded.
    curvature, curvature_pvalue : ``beta2`` and the one-sided p-value of "has an interior optimum".
    budget_pvalue : F-test p-value of budget-specific curves vs the shared one (None: one budget).
    best_observed : {budget: G with the best mean score}.
    bootstrap_best : {G: share of residual-bootstrap refits whose best grid G is this G}.
    mse_shape : the second candidate shape ``score = a_N - b (G + rho/(G-1))`` (the fixed-budget
        MSE law of Prop. 3), profile-likelihood interval of ``G* = 1 + sqrt(rho)``, residual SS.
    preferred_shape : "log-quadratic" or "mse", whichever has the smaller residual sum of squares
        (both have the same number of parameters).
    distinguishable : whether the preferred shape singles out an optimum (bounded interval inside
        the observed G range; for the log-quadratic also a significant curvature).
    """

    g_star: float
    g_star_interval: ConfidenceInterval
    bounded: bool
    curvature: float
    curvature_pvalue: float
    budget_pvalue: float | None
    best_observed: dict
    bootstrap_best: dict
    distinguishable: bool
    params: np.ndarray
    covariance: np.ndarray
    residual_sd: float
    dof: int
    level: float
    num_generations: tuple
    budgets: tuple
    n_obs: int
    higher_is_better: bool
    mse_shape: dict
    preferred_shape: str

    @property
    def recommended(self) -> tuple[float, ConfidenceInterval]:
        """``(G*, interval)`` of the preferred shape."""
        if self.preferred_shape == "mse":
            return self.mse_shape["g_star"], self.mse_shape["g_star_interval"]
        return self.g_star, self.g_star_interval

    def confidence_interval(self, level: float | None = None) -> ConfidenceInterval:
        """Fieller interval of ``G*`` at ``level`` (default: the fit's level)."""
        level = self.level if level is None else level
        ci, _ = _perf_interval(self.params, self.covariance, level, self.dof)
        return ci

    def summary(self) -> str:
        pct = f"{100 * self.level:g}%"
        hi = "inf" if math.isinf(self.g_star_interval.high) else f"{self.g_star_interval.high:.3g}"
        lines = ["performance vs group size: score = alpha_N + b1 log2 G + b2 (log2 G)^2 "
                 f"({self.n_obs} observations, {len(self.budgets)} budget(s), residual sd "
                 f"{self.residual_sd:.3g})",
                 f"  best observed G per budget: " + ", ".join(f"N={k}: {v}" for k, v in self.best_observed.items()),
                 (f"  fitted G* = {self.g_star:.3g}, {pct} Fieller CI [{self.g_star_interval.low:.3g}, {hi}]"
                  if self.bounded else f"  fitted G*: not identified ({pct} Fieller set unbounded; " + (
                      f"vertex of the fitted curve at G = {self.g_star:.3g})"
                      if min(self.num_generations) <= self.g_star <= max(self.num_generations)
                      else "the fitted curve has no maximum inside the observed G range)")),
                 f"  curvature b2 = {self.curvature:.3g} (one-sided p = {self.curvature_pvalue:.3g} for an "
                 "interior optimum)"]
        if self.budget_pvalue is not None:
            lines.append(f"  G* differs between budgets? F-test p = {self.budget_pvalue:.3g}")
        ms = self.mse_shape
        hi2 = "inf" if math.isinf(ms["g_star_interval"][1]) else f"{ms['g_star_interval'][1]:.3g}"
        est = (f"G* = 1 + sqrt(rho) = {ms['g_star']:.3g}, {pct} profile CI [{ms['g_star_interval'][0]:.3g}, {hi2}]"
               if ms["bounded"] else "G* not identified (no decrease of score with the MSE shape, or unbounded "
                                     "profile interval)")
        lines.append(f"  second candidate shape, score = a_N - b (G + rho/(G-1)) (the fixed-budget MSE law): "
                     f"{est}; residual SS {ms['rss']:.3g} vs {self.residual_sd ** 2 * self.dof:.3g} (log-quadratic)")
        lines.append("  residual bootstrap, share of refitted curves peaking at each G: " + ", ".join(
            f"G={k}: {v:.2f}" for k, v in self.bootstrap_best.items()))
        g_rec, ci_rec = self.recommended
        hi3 = "inf" if math.isinf(ci_rec[1]) else f"{ci_rec[1]:.3g}"
        if self.distinguishable and self.mse_shape.get("shapes_agree", True):
            verdict = (f"the data locate an interior optimum near G = {g_rec:.3g} ({pct} CI [{ci_rec[0]:.3g}, {hi3}], "
                       f"{self.preferred_shape} shape; both candidate shapes agree)")
        elif self.distinguishable:
            verdict = (f"the better-fitting {self.preferred_shape} shape locates G* = {g_rec:.3g} ({pct} CI "
                       f"[{ci_rec[0]:.3g}, {hi3}]), but the other shape puts it elsewhere: the interval is "
                       "conditional on the shape")
        else:
            verdict = "the data cannot distinguish the candidate group sizes (differences are within noise)"
        lines.append("  verdict: " + verdict)
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return dict(g_star=_f(self.g_star), g_star_interval=_ci(self.g_star_interval),
                    bounded=self.bounded, curvature=_f(self.curvature),
                    curvature_pvalue=_f(self.curvature_pvalue), budget_pvalue=_f(self.budget_pvalue),
                    best_observed={str(k): int(v) for k, v in self.best_observed.items()},
                    bootstrap_best={str(k): float(v) for k, v in self.bootstrap_best.items()},
                    distinguishable=self.distinguishable, residual_sd=_f(self.residual_sd),
                    dof=self.dof, level=self.level, n_obs=self.n_obs,
                    budgets=[int(b) for b in self.budgets],
                    num_generations=[int(g) for g in self.num_generations],
                    mse_shape=dict(g_star=_f(self.mse_shape["g_star"]),
                                   g_star_interval=_ci(self.mse_shape["g_star_interval"]),
                                   bounded=self.mse_shape["bounded"], rss=_f(self.mse_shape["rss"]),
                                   shapes_agree=self.mse_shape.get("shapes_agree", True)),
                    preferred_shape=self.preferred_shape,
                    recommended_g_star=_f(self.recommended[0]), recommended_interval=_ci(self.recommended[1]))


def _perf_interval(params, cov, level, dof):
    # vertex u* = -b1 / (2 b2): Fieller for rho = b1 / b2, then u* = -rho / 2 (decreasing map)
    b1, b2 = params[-2], params[-1]
    rci, bounded = fieller_ratio_interval(b1, b2, cov[-2, -2], cov[-1, -1], cov[-2, -1], level=level,
                                          df=dof, nonnegative=False)
    if not bounded:
        return ConfidenceInterval(0.0, math.inf), False
    lo, hi = 2.0 ** (-rci.high / 2), 2.0 ** (-rci.low / 2)
    return ConfidenceInterval(lo, hi), True


def _perf_design(budget, g, budgets):
    u = np.log2(g)
    cols = [(budget == b).astype(float) for b in budgets] + [u, u * u]
    return np.stack(cols, axis=-1)


def _fit_mse_shape(nb, g, ys, budgets, level):
    """Profile fit of ``score = a_N - b (G + rho/(G-1))`` over ``rho`` (a log grid, then refined).

    For fixed ``rho`` the model is linear (OLS); the profile-F set
    ``{rho : (RSS(rho) - RSS_min) / (RSS_min / dof) <= F_{1, dof}(level)}`` gives the interval of
    ``G* = 1 + sqrt(rho)``, unbounded when it reaches the top of the grid.
    """
    cols = [(nb == b).astype(float) for b in budgets]

    def rss(rho):
        X = np.stack(cols + [-(g + rho / (g - 1.0))], axis=-1)
        beta, *_ = np.linalg.lstsq(X, ys, rcond=None)
        r = ys - X @ beta
        return float(r @ r), float(beta[-1])

    grid = np.concatenate([[0.0], np.geomspace(1e-3, 1e8, 600)])
    vals = np.array([rss(r)[0] for r in grid])
    k = int(np.argmin(vals))
    lo_r, hi_r = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    if hi_r > lo_r:
        opt = optimize.minimize_scalar(lambda r: rss(r)[0], bounds=(lo_r, hi_r), method="bounded")
        r_hat, rss_min = (float(opt.x), float(opt.fun)) if opt.fun <= vals[k] else (grid[k], vals[k])
    else:
        r_hat, rss_min = grid[k], vals[k]
    dof = len(ys) - len(budgets) - 2
    b_hat = rss(r_hat)[1]
    if dof < 1 or rss_min <= 0:
        inside = np.ones_like(grid, bool)
    else:
        inside = (vals - rss_min) / (rss_min / dof) <= stats.f.ppf(level, 1, dof)
    crit = stats.f.ppf(level, 1, dof) if dof >= 1 else math.inf
    prof = lambda r: (rss(r)[0] - rss_min) / (rss_min / dof) - crit
    r_lo, r_hi = r_hat, math.inf
    if dof >= 1 and rss_min > 0:
        below = grid[(grid < r_hat) & ~inside]
        r_lo = float(optimize.brentq(prof, below.max(), r_hat)) if below.size else 0.0
        above = grid[(grid > r_hat) & ~inside]
        r_hi = float(optimize.brentq(prof, r_hat, above.min())) if above.size and not inside[-1] else math.inf
    bounded = bool(math.isfinite(r_hi) and b_hat > 0)
    return dict(g_star=1 + math.sqrt(r_hat), rho=r_hat, slope=b_hat,
                g_star_interval=ConfidenceInterval(1 + math.sqrt(min(r_lo, r_hat)),
                                                   1 + math.sqrt(r_hi) if bounded else math.inf),
                bounded=bounded, rss=rss_min)


def fit_performance_table(budget, num_generations, score, run=None, *, level: float = 0.95,
                          n_boot: int = 2000, rng=None, higher_is_better: bool = True) -> PerformanceFit:
    """Locate the best group size in an observed performance-vs-G table at fixed budgets.

    Parameters
    ----------
    budget : array_like, shape (n,)
        Rollouts per iteration ``N = B G`` of each observation.
    num_generations : array_like, shape (n,)
        ``G`` of each observation (at least three distinct values).
    score : array_like, shape (n,)
        Final performance (e.g. test accuracy); one row per run.
    run : array_like, shape (n,), optional
        Run identifier (only used to count runs; every row is an observation).
    level : float
        Confidence level.
    n_boot : int
        Residual-bootstrap refits for the "share of being best" table.
    rng : numpy.random.Generator or int, optional
    higher_is_better : bool
        Scores such as accuracy (True) or losses/gaps (False; the sign is flipped internally).

    Returns
    -------
    PerformanceFit

    Notes
    -----
    OLS of ``score`` on budget indicators, ``log2 G`` and ``(log2 G)^2``; the vertex
    ``u* = -b1/(2 b2)`` gets a Fieller interval with Student-t quantiles.  The interval is
    unbounded when the curvature is not significantly non-zero: the table then cannot locate an
    optimum.  A second check refits with budget-specific curves (F-test) to ask whether ``G*``
    moves with the budget (Theorem 7 says it should not).  Runs of one configuration are treated
    as independent observations.

    Examples
    --------
    >>> G = np.array([4, 8, 16, 32, 64, 128] * 3); N = np.repeat([1024, 2048, 4096], 6)
    >>> acc = [0.7677, 0.7491, 0.7753, 0.7627, 0.7817, 0.7743, 0.7703, 0.7679, 0.7697,
    ...        0.7793, 0.7819, 0.7665, 0.7691, 0.7713, 0.7701, 0.7673, 0.7703, 0.7757]
    >>> fit_performance_table(N, G, acc, rng=0).distinguishable
    False
    """
    import statsmodels.api as sm

    nb = np.asarray(budget, float).ravel()
    g = np.asarray(num_generations, float).ravel()
    y = np.asarray(score, float).ravel()
    if not (nb.shape == g.shape == y.shape):
        raise ValueError("budget, num_generations and score must have the same length")
    if not (np.all(np.isfinite(nb)) and np.all(np.isfinite(g)) and np.all(np.isfinite(y))):
        raise ValueError("budget, num_generations and score must be finite")
    if np.any(nb <= 0):
        raise ValueError("budget must be positive")
    if np.any(g < 2):
        raise ValueError("num_generations must be >= 2")
    if len(np.unique(g)) < 3:
        raise ValueError("need at least three distinct num_generations")
    rng = np.random.default_rng(rng)
    sign = 1.0 if higher_is_better else -1.0
    ys = sign * y
    budgets = tuple(np.unique(nb).tolist())
    X = _perf_design(nb, g, budgets)
    n, p = X.shape
    if n - p < 1:
        raise ValueError(f"need more observations ({n}) than parameters ({p})")
    res = sm.OLS(ys, X).fit()
    params, cov = np.asarray(res.params), np.asarray(res.cov_params())
    dof = int(res.df_resid)
    b1, b2 = params[-2], params[-1]
    tval = b2 / math.sqrt(cov[-1, -1]) if cov[-1, -1] > 0 else -math.inf * np.sign(b2)
    curv_p = float(stats.t.cdf(tval, dof))               # H1: b2 < 0 (a maximum)
    ci, bounded = _perf_interval(params, cov, level, dof)
    g_star = 2.0 ** (-b1 / (2 * b2)) if b2 < 0 else math.nan
    # budget-specific curves: F-test
    budget_p = None
    if len(budgets) > 1:
        u = np.log2(g)
        cols = [(nb == b).astype(float) for b in budgets]
        Xf = np.stack(cols + [c * u for c in cols] + [c * u * u for c in cols], axis=-1)
        if n - Xf.shape[1] >= 1:
            full = sm.OLS(ys, Xf).fit()
            df1 = Xf.shape[1] - p
            F = ((res.ssr - full.ssr) / df1) / (full.ssr / full.df_resid)
            budget_p = float(stats.f.sf(F, df1, full.df_resid))
    grid = np.unique(g)
    best_obs = {}
    for b in budgets:
        m = [ys[(nb == b) & (g == gg)].mean() if np.any((nb == b) & (g == gg)) else -np.inf for gg in grid]
        best_obs[int(b)] = int(grid[int(np.argmax(m))])
    # residual bootstrap of the best grid G under the fitted shared curve
    fitted, resid = X @ params, ys - X @ params
    resid = resid * math.sqrt(n / dof)                   # inflate for the fitted parameters
    Xg = np.stack([np.log2(grid), np.log2(grid) ** 2], axis=-1)
    counts = np.zeros(len(grid))
    XtX_inv_Xt = np.linalg.pinv(X)
    for _ in range(int(n_boot)):
        yb = fitted + rng.choice(resid, size=n, replace=True)
        pb = XtX_inv_Xt @ yb
        counts[int(np.argmax(Xg @ pb[-2:]))] += 1
    share = {int(gg): float(c / max(n_boot, 1)) for gg, c in zip(grid, counts)}
    alpha = 1 - level
    distinguishable = bool(bounded and curv_p < alpha / 2 and ci.low >= grid.min() and ci.high <= grid.max())
    mse_shape = _fit_mse_shape(nb, g, ys, budgets, level)
    # the two candidate shapes must agree for the optimum to count as located
    ms_ci = mse_shape["g_star_interval"]
    shapes_agree = bool(not (bounded and mse_shape["bounded"]) or (ms_ci[0] <= ci.high and ci.low <= ms_ci[1]))
    mse_shape["shapes_agree"] = shapes_agree
    preferred = "mse" if mse_shape["rss"] < res.ssr else "log-quadratic"
    if preferred == "mse":
        distinguishable = bool(mse_shape["bounded"] and ms_ci[0] >= grid.min() and ms_ci[1] <= grid.max())
    return PerformanceFit(g_star=float(g_star), g_star_interval=ci, bounded=bool(bounded),
                          curvature=float(sign * b2), curvature_pvalue=curv_p, budget_pvalue=budget_p,
                          best_observed=best_obs, bootstrap_best=share, distinguishable=distinguishable,
                          params=params, covariance=cov, residual_sd=float(math.sqrt(res.scale)),
                          dof=dof, level=level, num_generations=tuple(int(x) for x in grid),
                          budgets=tuple(int(b) for b in budgets), n_obs=n,
                          higher_is_better=higher_is_better, mse_shape=mse_shape,
                          preferred_shape=preferred)
