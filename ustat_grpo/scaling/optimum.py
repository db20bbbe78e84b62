"""The optimal group size at a fixed rollout budget, and inference on the scaling-law constants.

The minibatch MSE of the GRPO gradient (arXiv 2603.01162, Proposition 3, eq. (9)) is, exactly,

.. math::

    \\mathrm{MSE}(B, G) = \\frac{A_1}{B} + \\frac{A_2}{BG} + \\frac{A_3}{BG(G-1)},

with :math:`A_1 = \\mathbb E\\|g(X) - g\\|^2` (prompt-sampling variance),
:math:`A_2 = \\mathbb E\\,\\mathrm{tr}\\,\\Sigma_{\\rm oracle}(X)` (oracle variance) and
:math:`A_3 = \\mathbb E[\\sigma^2(X)\\,\\mathrm{tr} I(X) + \\|g(X)\\|^2]` (U-statistic residual).
Theorem 7 (eq. (11)) writes the same shape as :math:`c_1/B + c_2/(BG) + c_3/(BG^2)`.  At a fixed
number of rollouts per iteration ``budget`` :math:`N = BG` (and equally at a fixed total budget
:math:`nBG`) the MSE is :math:`(A_1 G + A_2 + A_3/(G-1))/N`, minimised at
:math:`G^*_{\\rm exact} = 1 + \\sqrt{A_3/A_1}`; the paper's form gives
:math:`G^*_{\\rm paper} = \\sqrt{c_3/c_1}` (eq. (12)).

The constants: ``A1..A3`` are the exact constants of Prop. 3, ``c1..c3`` the paper's.  The one
mapping between them is :func:`ustat_grpo.theory.mse.paper_constants`: following the spec's ambiguity 1,
:math:`c_i := A_i`.  The paper defines :math:`c_3` only up to a constant; :math:`c_3 = 2A_3` (a
bound valid for every :math:`G \\ge 2`) would multiply :math:`G^*_{\\rm paper}` by :math:`\\sqrt 2`.

Public names
------------
mse_design, integer_optimum, fieller_ratio_interval, optimal_group_size, GroupSizeResult
    The optimum of a fitted curve and its Fieller interval.
ConstantsEstimate
    Base of every estimate of the three constants (:class:`~ustat_grpo.scaling.grid_fit.ScalingFit`,
    :class:`~ustat_grpo.scaling.constants.ScalingConstants`): intervals, prediction, ``G*``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..core._serialize import jsonable
from ..core.interval import ConfidenceInterval, json_float, json_interval


__all__ = [
    "FORMS", "INTERVALS", "mse_design", "integer_optimum", "group_size_divisors",
    "fieller_ratio_interval", "skew_corrected_t", "skew_fieller_ratio_interval",
    "GroupSizeResult", "optimal_group_size", "ConstantsEstimate",
]

FORMS = ("exact", "paper")
#: intervals of ``rho = A3/A1``: Fieller's (t pivot), or Fieller's with a skewness-corrected pivot
INTERVALS = ("fieller", "fieller_skew")
#: grid of directions on which the skewness-corrected Fieller set is located before refinement
_SKEW_GRID = 4097


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


def group_size_divisors(budget: int, *, max_group_size: int | None = None) -> list[int]:
    """The group sizes ``G`` with an integer number of prompts ``B = budget / G``: the divisors
    ``2 <= G <= min(budget, max_group_size)`` of ``budget``, increasing (``O(sqrt(budget))``).

    Examples
    --------
    >>> group_size_divisors(64)
    [2, 4, 8, 16, 32, 64]
    >>> group_size_divisors(12, max_group_size=6)
    [2, 3, 4, 6]
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    budget = int(budget)
    small, large = [], []
    d = 1
    while d * d <= budget:
        if budget % d == 0:
            small.append(d)
            if d * d != budget:
                large.append(budget // d)
        d += 1
    hi = budget if max_group_size is None else min(budget, int(max_group_size))
    return [g for g in small + large[::-1] if 2 <= g <= hi]


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
        cand = np.array(group_size_divisors(hi), float)
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


def skew_corrected_t(t, skewness, *, transform: str = "hall"):
    """Skewness-corrected t statistic of a mean (Johnson 1978; Hall 1992).

    Parameters
    ----------
    t : array_like
        ``(mean - mu0) / standard_error``.
    skewness : array_like, broadcastable with ``t``
        Skewness of the *estimator*, ``kappa = gamma / sqrt(n)`` with ``gamma = mu3 / s^3`` the
        skewness of the ``n`` observations (the corrections depend on ``gamma`` and ``n`` only
        through ``kappa``).
    transform : {"hall", "johnson"}
        ``johnson``: ``t + kappa/6 + kappa t^2/3`` -- Johnson's (1978) modified t
        ``[m + mu3/(6 s^2 n) + mu3 m^2/(3 s^4)] / (s/sqrt(n))`` written in ``t`` and ``kappa``;
        not monotone in ``t``.  ``hall``: ``t + kappa t^2/3 + kappa^2 t^3/27 + kappa/6`` (Hall 1992,
        ``a = 1/3, b = 1/6``), which adds the cubic term that makes it monotone:
        ``((1 + kappa t/3)^3 - 1)/kappa + kappa/6``.

    Returns
    -------
    ndarray : compare with the same t (or normal) quantile as ``t``.

    References
    ----------
    N. J. Johnson (1978), Modified t tests and confidence intervals for asymmetrical populations,
    JASA 73, 536-544.  P. Hall (1992), On the removal of skewness by transformation, JRSS B 54,
    221-228.
    """
    t, k = np.asarray(t, float), np.asarray(skewness, float)
    if transform == "johnson":
        return t + k / 6.0 + k * t * t / 3.0
    if transform == "hall":
        return t + k * t * t / 3.0 + k * k * t ** 3 / 27.0 + k / 6.0
    raise ValueError(f"transform must be 'hall' or 'johnson', got {transform!r}")


def _pseudo_moments(pseudo_values):
    """``(n, S, M)``: ``S[j] = sum u^(2-j) v^j`` and ``M[j] = sum u^(3-j) v^j`` of the centred
    pseudo-values ``(u, v)`` of ``(num, den)``, shape (n, 2)."""
    dev = pseudo_values - pseudo_values.mean(0)          # (n, 2)
    u, v = dev[:, 0], dev[:, 1]
    return (dev.shape[0], np.array([u @ u, u @ v, v @ v]),
            np.array([(u ** (3 - j) * v ** j).sum() for j in range(4)]))


def _direction_t(theta, num, den, var_num, var_den, cov, moments):
    """t statistic and estimator skewness of ``cos(theta) num - sin(theta) den`` (one per theta).

    ``rho = tan(theta)``: the statistic of ``num - rho den`` up to the positive factor
    ``cos(theta)``, so both are continuous through ``rho = inf`` (``theta = pi/2``).
    ``moments``: :func:`_pseudo_moments` of the per-observation pseudo-values; the variance and
    third central moment of ``psi = a u - b v`` are their binomial expansions (``O(1)`` per theta).
    """
    n, S, M = moments
    a, b = np.cos(theta), np.sin(theta)                 # (T,)
    est = a * num - b * den
    var = a * a * var_num - 2 * a * b * cov + b * b * var_den
    s2 = (a * a * S[0] - 2 * a * b * S[1] + b * b * S[2]) / (n - 1)
    mu3 = (a ** 3 * M[0] - 3 * a * a * b * M[1] + 3 * a * b * b * M[2] - b ** 3 * M[3]) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = est / np.sqrt(var)
        kappa = np.where(s2 > 0, mu3 / s2 ** 1.5, 0.0) / math.sqrt(n)
    return t, kappa


def skew_fieller_ratio_interval(num: float, den: float, var_num: float, var_den: float, cov: float,
                                pseudo_values, *, level: float = 0.95, df: float | None = None,
                                nonnegative: bool = True,
                                transform: str = "hall") -> tuple[ConfidenceInterval, bool]:
    """Fieller set for ``rho = num_true / den_true`` with a skewness-corrected pivot.

    Fieller's set is ``{rho : |T(rho)| <= q}``, ``T(rho) = (num - rho den) / se(num - rho den)``
    (:func:`fieller_ratio_interval`).  Here ``T`` is replaced by :func:`skew_corrected_t` of
    ``T(rho)`` with the skewness ``kappa(rho)`` of the estimator ``num - rho den``, estimated from
    per-observation pseudo-values ``psi_i(rho) = psi_num_i - rho psi_den_i``:
    ``kappa = mu3 / s^3 / sqrt(n)`` (``mu3`` the third central moment, ``s^2`` the variance with
    ``n - 1``).  The standard error is still that of ``var_num, var_den, cov`` (e.g. a
    delete-a-group jackknife), so with symmetric pseudo-values the set is Fieller's exactly (the
    closed form is returned).

    The set is located on a grid of directions ``theta = arctan(rho)`` in ``[0, pi/2]`` (all of
    ``(-pi/2, pi/2]`` without ``nonnegative``), its end points refined by root finding; the
    interval returned is the hull of the accepted directions.  If ``rho = inf`` is accepted (the
    denominator is not significantly non-zero) the set is unbounded: ``(low, inf)``,
    ``bounded=False``, as in :func:`fieller_ratio_interval`.

    Parameters
    ----------
    num, den, var_num, var_den, cov : float
        Estimates and their covariance, as in :func:`fieller_ratio_interval`.
    pseudo_values : array_like, shape (n, 2)
        Per-observation pseudo-values of ``(num, den)`` (e.g. delete-one-prompt jackknife
        pseudo-values); only their third and second central moments are used.
    level, df, nonnegative
        As in :func:`fieller_ratio_interval`.
    transform : {"hall", "johnson"}
        Skewness correction (:func:`skew_corrected_t`).

    Returns
    -------
    interval : ConfidenceInterval
    bounded : bool
    """
    from scipy.optimize import brentq

    psi = np.asarray(pseudo_values, float)
    if psi.ndim != 2 or psi.shape[1] != 2 or psi.shape[0] < 3:
        raise ValueError(f"pseudo_values must be (n >= 3, 2), got {psi.shape}")
    mom = _pseudo_moments(psi)
    scale = (np.abs(psi - psi.mean(0)) ** 3).sum(0).max()
    if not np.any(np.abs(mom[2]) > 1e-13 * scale):      # symmetric: Fieller's closed form
        return fieller_ratio_interval(num, den, var_num, var_den, cov, level=level, df=df,
                                      nonnegative=nonnegative)
    q = stats.norm.isf((1 - level) / 2) if df is None else stats.t.isf((1 - level) / 2, df)
    stat = lambda th: np.abs(skew_corrected_t(*_direction_t(np.atleast_1d(th), num, den, var_num,
                                                            var_den, cov, mom), transform=transform)) - q
    th0 = 0.0 if nonnegative else -math.pi / 2
    grid = np.linspace(th0, math.pi / 2, _SKEW_GRID)
    rho_hat = num / den if den != 0 else math.inf
    th_hat = math.atan(rho_hat)
    if th0 < th_hat < math.pi / 2:
        grid = np.unique(np.append(grid, th_hat))
    f = stat(grid)                                       # (T,) accepted where <= 0
    ok = np.flatnonzero(np.nan_to_num(f, nan=1.0) <= 0)
    floor = 0.0 if nonnegative else -math.inf
    if ok.size == 0:                                     # a point: the (clipped) estimate
        r = max(rho_hat, floor) if math.isfinite(rho_hat) else math.inf
        return ConfidenceInterval(r, r), math.isfinite(r)
    edge = lambda i, j: brentq(lambda th: float(stat(th)[0]), grid[i], grid[j], xtol=1e-15, rtol=1e-15)
    i, j = ok[0], ok[-1]
    lo = floor if i == 0 else math.tan(edge(i - 1, i))
    if j == grid.size - 1:
        return ConfidenceInterval(max(lo, floor), math.inf), False
    hi = math.tan(edge(j, j + 1))
    return ConfidenceInterval(max(lo, floor), max(hi, floor)), True


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
    interval : "fieller" or "fieller_skew" (:data:`INTERVALS`): how ``ratio_interval`` was made.
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
    interval: str = "fieller"

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
        lines = [f"optimal group size ({self.form} form, budget={self.budget or 'any'})"
                 + ("" if self.interval == "fieller" else f"; {self.interval} intervals")]
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
        return jsonable(dict(form=self.form, ratio=json_float(self.ratio), ratio_interval=json_interval(self.ratio_interval),
                    bounded=self.bounded, interior=self.interior,
                    g_star_paper=json_float(self.g_star_paper), g_star_exact=json_float(self.g_star_exact),
                    g_star_integer=int(self.g_star_integer),
                    g_star_paper_interval=json_interval(self.g_star_paper_interval),
                    g_star_exact_interval=json_interval(self.g_star_exact_interval),
                    g_star_integer_interval=json_interval(self.g_star_integer_interval),
                    budget=self.budget, divisors_only=self.divisors_only, level=self.level,
                    interval=self.interval))


def optimal_group_size(constants, covariance=None, *, form: str = "exact", budget: int | None = None,
                       divisors_only: bool = False, level: float = 0.95,
                       df: float | None = None, interval: str = "fieller",
                       pseudo_values=None) -> GroupSizeResult:
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
    interval : {"fieller", "fieller_skew"}
        ``fieller``: :func:`fieller_ratio_interval`; ``fieller_skew``:
        :func:`skew_fieller_ratio_interval` (Hall's skewness-corrected pivot), which needs
        ``pseudo_values``.
    pseudo_values : array_like, shape (n, 3), optional
        Per-observation pseudo-values of ``constants`` (``fieller_skew`` only).

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
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if interval == "fieller_skew" and covariance is not None and pseudo_values is None:
        raise ValueError("interval='fieller_skew' needs per-observation pseudo_values")
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
        if interval == "fieller":
            rci, bounded = fieller_ratio_interval(c[2], c[0], V[2, 2], V[0, 0], V[0, 2], level=level, df=df)
        else:
            psi = np.asarray(pseudo_values, float)[:, [2, 0]]        # (n, 2): (A3, A1) pieces
            rci, bounded = skew_fieller_ratio_interval(c[2], c[0], V[2, 2], V[0, 0], V[0, 2], psi,
                                                       level=level, df=df)
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
        g_star_integer_interval=img(iint), budget=budget, divisors_only=divisors_only, level=level,
        interval=interval)



@dataclass(frozen=True, kw_only=True)
class ConstantsEstimate:
    """An estimate of the three constants with its covariance: the base of every such result.

    Attributes
    ----------
    form : "exact" (A1, A2, A3) or "paper" (c1, c2, c3).
    names : names of the three constants (``CONSTANT_NAMES[form]``).
    params : non-negative point estimate, shape (3,).
    unconstrained : the estimate without the sign constraint (the sampling law behind
        ``covariance``), shape (3,).
    covariance : covariance of ``unconstrained``, shape (3, 3).
    df : degrees of freedom of Student-t quantiles (``None``: normal quantiles).
    level : default confidence level.
    pseudo_values : per-observation (e.g. delete-one-prompt jackknife) pseudo-values of the three
        constants, shape (n, 3), or ``None``; needed by ``interval="fieller_skew"``.
    """

    form: str
    names: tuple
    params: np.ndarray
    unconstrained: np.ndarray
    covariance: np.ndarray
    df: float | None
    level: float
    pseudo_values: np.ndarray | None = None

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
                           level: float | None = None, form: str | None = None,
                           interval: str = "fieller") -> GroupSizeResult:
        """:func:`optimal_group_size` at the point estimate with this estimate's covariance.

        ``form`` (default: the estimate's own) chooses the shape that defines the integer
        optimum; with exact-form constants and ``form="paper"`` the paper's ``c_i := A_i``.
        ``interval="fieller_skew"`` corrects the Fieller pivot for the skewness of
        ``A3 - rho A1`` estimated from :attr:`pseudo_values` (:func:`skew_fieller_ratio_interval`).
        """
        level = self.level if level is None else level
        form = self.form if form is None else form
        # Fieller uses the unconstrained estimate (the sampling law behind the covariance); the
        # point G* uses the non-negative estimate.
        res = optimal_group_size(self.unconstrained, self.covariance, form=form, budget=budget,
                                 divisors_only=divisors_only, level=level, df=self.df,
                                 interval=interval, pseudo_values=self.pseudo_values)
        pt = optimal_group_size(self.params, None, form=form, budget=budget,
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
