"""Generic U-statistic engine: statistic, Hoeffding components, variance and intervals.

A U-statistic of order ``m`` with symmetric kernel ``h`` over i.i.d. data ``X_1..X_n`` is

    U_n = C(n, m)^{-1} sum_{i_1 < ... < i_m} h(X_{i_1}, ..., X_{i_m})        (Hoeffding 1948)

and, with ``zeta_c = Var(h_c(X_1..X_c))`` where ``h_c`` integrates out ``m - c`` arguments,

    Var(U_n) = C(n, m)^{-1} sum_{c=1}^{m} C(m, c) C(n - m, m - c) zeta_c.

Kernels (the :class:`~ustat_grpo.stats.kernels.Kernel` protocol, the GRPO kernel of arXiv 2603.01162,
Lemma 1, eq. (6), and classical ones) live in :mod:`ustat_grpo.stats.kernels`; the tuple enumeration and
kernel sums in ``ustat_grpo.stats._kernel_sums``.

Evaluation paths (``method=``):

``"naive"``
    :mod:`itertools` twin, one kernel call per tuple. The test oracle.
``"vectorized"``
    All ``C(n, m)`` tuples, evaluated in memory-bounded batches of ``batch_size`` tuples.
``"closed_form"``
    A kernel-specific O(n) / O(n log n) formula (variance, Gini, GRPO kernels).
``"incomplete"``
    ``num_tuples`` tuples drawn uniformly with replacement (Blom 1976), for large ``n``.
``"auto"``
    closed form when the kernel has one, else vectorized up to ``max_tuples`` tuples, else incomplete.

The default variance estimate is the jackknife (Arvesen 1969), computed exactly from the per-index
kernel sums ``R_i`` (no refitting); it is consistent for non-degenerate kernels and never
negative. ``variance="unbiased"`` gives instead the unbiased estimator of Var(U_n), obtained by
plugging the unbiased estimates of every ``zeta_c`` (see :func:`hoeffding`) into the formula
above; it can be negative in small samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from . import _kernel_sums
from ..core._random import default_rng
from ..core._serialize import jsonable as _json
from ..core.interval import ConfidenceInterval, jackknife_covariance
from .kernels import Kernel

__all__ = ["UStatResult", "HoeffdingResult", "ConfidenceInterval", "ustatistic", "hoeffding", "ustat_variance"]


_METHODS = ("auto", "naive", "vectorized", "closed_form", "incomplete")
_VARIANCES = ("jackknife", "unbiased", "none")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class UStatResult:
    """Result of :func:`ustatistic`.

    Attributes
    ----------
    statistic : float or ndarray (p,)
        U_n (or the incomplete U-statistic).
    variance : float or ndarray (p,)
        Estimated variance of the statistic, per component.
    covariance : ndarray (p, p) or None
        Estimated covariance matrix for vector kernels.
    standard_error : float or ndarray (p,)
        ``sqrt(variance)`` (NaN where an unbiased estimate came out negative).
    n, order, method, variance_method, num_tuples : provenance.
    """

    statistic: float | np.ndarray
    variance: float | np.ndarray
    covariance: np.ndarray | None
    standard_error: float | np.ndarray
    n: int
    order: int
    method: str
    variance_method: str
    num_tuples: int
    kernel: str

    def confidence_interval(self, level: float = 0.95) -> ConfidenceInterval:
        """Normal-theory interval ``statistic +- z_{(1+level)/2} * standard_error`` (per component)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        z = stats.norm.ppf(0.5 + level / 2)
        return ConfidenceInterval(self.statistic - z * self.standard_error,
                                  self.statistic + z * self.standard_error)

    def summary(self) -> str:
        ci = self.confidence_interval()
        lines = [
            f"U-statistic ({self.kernel}, order {self.order}, n = {self.n})",
            f"  method: {self.method} ({self.num_tuples} tuples); variance: {self.variance_method}",
        ]
        stat = np.atleast_1d(self.statistic)
        se = np.atleast_1d(self.standard_error)
        lo, hi = np.atleast_1d(ci.low), np.atleast_1d(ci.high)
        shown = min(stat.size, 8)
        for k in range(shown):
            label = "statistic" if stat.size == 1 else f"[{k}]"
            lines.append(f"  {label:>9} = {stat[k]: .6g}   se {se[k]:.3g}   95% CI [{lo[k]: .6g}, {hi[k]: .6g}]")
        if stat.size > shown:
            lines.append(f"  ... ({stat.size - shown} more components)")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        ci = self.confidence_interval()
        return _json({
            "statistic": _json(self.statistic), "variance": _json(self.variance),
            "standard_error": _json(self.standard_error),
            "confidence_interval_95": [_json(ci.low), _json(ci.high)],
            "n": self.n, "order": self.order, "method": self.method,
            "variance_method": self.variance_method, "num_tuples": self.num_tuples, "kernel": self.kernel,
        })


@dataclass(frozen=True, kw_only=True)
class HoeffdingResult:
    """Sample Hoeffding decomposition (see :func:`hoeffding`).

    Attributes
    ----------
    statistic : U_n.
    projections : ndarray (n,) or (n, p)
        Centred first-order projections ``h1_hat(X_i) - U_n`` with
        ``h1_hat(X_i) = R_i / C(n-1, m-1)``.
    zetas : ndarray (m,)
        Unbiased estimates of ``zeta_1..zeta_m`` (traces for vector kernels).
    variance : float
        ``ustat_variance(zetas, n)``: unbiased estimate of (the trace of) Var(U_n).
    first_order_share : float
        Share of Var(U_n) carried by the first-order (Hajek) term, ``m^2 zeta_1 / n / Var``.
    """

    statistic: float | np.ndarray
    projections: np.ndarray
    zetas: np.ndarray
    variance: float
    first_order_share: float
    n: int
    order: int

    def summary(self) -> str:
        z = ", ".join(f"zeta_{c + 1} = {v:.6g}" for c, v in enumerate(self.zetas))
        return (f"Hoeffding decomposition (order {self.order}, n = {self.n})\n  {z}\n"
                f"  Var(U_n) = {self.variance:.6g}; first-order share = {self.first_order_share:.4f}")

    __str__ = summary

    def to_dict(self) -> dict:
        return _json({"statistic": _json(self.statistic), "zetas": self.zetas.tolist(),
                "variance": self.variance, "first_order_share": self.first_order_share,
                "n": self.n, "order": self.order})


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _as_kernel(kernel, order) -> Kernel:
    if isinstance(kernel, Kernel):
        if order is not None and order != kernel.order:
            raise ValueError(f"order={order} contradicts the kernel's order {kernel.order}")
        return kernel
    if not callable(kernel):
        raise ValueError(f"kernel must be callable or a Kernel, got {type(kernel).__name__}")
    order = 2 if order is None else order
    return Kernel(kernel, int(order), getattr(kernel, "__name__", "kernel"))


def _ustat_iv(data, kernel, order, method, variance):
    kernel = _as_kernel(kernel, order)
    if not isinstance(kernel.order, int) or kernel.order < 1:
        raise ValueError(f"order must be a positive integer, got {kernel.order!r}")
    data = np.asarray(data)
    if data.ndim == 0:
        raise ValueError("data must have shape (n, ...), got a scalar")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"data must be real numbers, got dtype {data.dtype}")
    data = data.astype(float, copy=False)
    if not np.all(np.isfinite(data)):
        bad = np.argwhere(~np.isfinite(data.reshape(data.shape[0], -1)))[0][0]
        raise ValueError(f"data contains non-finite values (first at row {bad})")
    n = data.shape[0]
    if n < kernel.order:
        raise ValueError(f"need n >= order, got n = {n} < order = {kernel.order}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if variance not in _VARIANCES:
        raise ValueError(f"variance must be one of {_VARIANCES}, got {variance!r}")
    if method == "closed_form" and not kernel.has_closed_form:
        raise ValueError(f"kernel {kernel.name!r} has no closed-form path")
    return data, kernel


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def ustatistic(data, kernel, order: int | None = None, *, method: str = "auto", variance: str = "jackknife",
               rng=None, batch_size: int = 1 << 16, max_tuples: int = 20_000_000,
               num_tuples: int | None = None) -> UStatResult:
    """U-statistic with a variance estimate and confidence interval.

    Parameters
    ----------
    data : array_like, shape (n, ...)
        i.i.d. observations along axis 0.
    kernel : Kernel or callable
        Symmetric kernel; ``kernel(*xs)`` takes ``order`` arrays of shape ``(k, ...)`` and returns
        ``(k,)`` or ``(k, p)``.
    order : int, optional
        Kernel order ``m`` (default: the Kernel's own, or 2 for a plain callable).
    method : {"auto", "naive", "vectorized", "closed_form", "incomplete"}
    variance : {"jackknife", "unbiased", "none"}
        Variance estimator (complete U-statistics). The jackknife is
        ``(n-1)/n sum_i (U_{-i} - mean U_{-i})^2`` with ``U_{-i} = (S - R_i) / C(n-1, m)`` exact;
        "unbiased" is ``ustat_variance(zeta_hat, n)`` with the unbiased ``zeta_hat`` of
        :func:`hoeffding` (scalar kernels: the variance; vector kernels: per component).
        "none": the statistic alone (variance and standard error NaN), defined for any ``n >= m``.
    rng : numpy Generator or seed, optional
        Used only by ``method="incomplete"``.
    batch_size : int
        Tuples per kernel call (bounds memory).
    max_tuples : int
        ``"auto"`` switches to the incomplete statistic above this many tuples.
    num_tuples : int, optional
        Tuples drawn by the incomplete statistic (default ``min(C(n, m), 10**6)``, at least ``50 n``).

    Returns
    -------
    UStatResult

    Notes
    -----
    Incomplete U-statistic (Blom 1976): ``M`` tuples drawn uniformly with replacement; exactly
    ``Var(U_inc) = (1 - 1/M) Var(U_n) + zeta_m / M``. It is estimated as ``s^2 / M`` (``s^2`` the
    sample variance of the drawn kernel values, conditionally unbiased for the within-design
    term) plus ``(1 - 1/M) m^2 zeta_1_hat / n``, with ``zeta_1`` estimated from the per-index
    means of the drawn tuples, corrected for their within-index noise. The O(1/n^2) terms of
    Var(U_n) are neglected.

    Examples
    --------
    >>> import numpy as np
    >>> from ustat_grpo.stats.kernels import variance_kernel
    >>> from ustat_grpo.stats.ustat import ustatistic
    >>> x = np.random.default_rng(0).normal(size=50)
    >>> res = ustatistic(x, variance_kernel)
    >>> bool(np.isclose(res.statistic, x.var(ddof=1)))
    True
    """
    data, kernel = _ustat_iv(data, kernel, order, method, variance)
    n, m = data.shape[0], kernel.order
    total = math.comb(n, m)
    if method == "auto":
        method = ("closed_form" if kernel.has_closed_form else
                  "vectorized" if total <= max_tuples else "incomplete")
    if method == "incomplete":
        return _incomplete(data, kernel, rng, num_tuples, batch_size)
    if method == "closed_form":
        S = np.asarray(kernel.statistic(data), float) * total
        R = np.asarray(kernel.row_sums(data), float)
    elif method == "vectorized":
        S, R = _kernel_sums.sums_vectorized(data, kernel, batch_size)
    else:
        S, R = _kernel_sums.sums_naive(data, kernel)
    U = S / total
    if variance == "jackknife":
        var, cov = _jackknife(S, R, n, m)
    elif variance == "none":                          # the statistic alone (any n >= m)
        var, cov = (math.nan if U.ndim == 0 else np.full(U.shape, math.nan)), None
    else:
        zetas = _zetas_componentwise(data, kernel, batch_size, U)
        var = np.asarray([ustat_variance(z, n) for z in np.atleast_2d(zetas.T)])
        var, cov = (float(var[0]) if U.ndim == 0 else var), None
    se = np.sqrt(np.where(np.asarray(var) >= 0, var, np.nan))
    return UStatResult(statistic=U[()] if U.ndim == 0 else U, variance=var, covariance=cov,
                       standard_error=float(se) if np.ndim(se) == 0 else se, n=n, order=m,
                       method=method, variance_method=variance, num_tuples=total, kernel=kernel.name)


def _jackknife(S, R, n, m):
    """``(variance, covariance or None)``: ``(n-1)/n sum_i (U_{-i} - mean)^2``, ``U_{-i} = (S - R_i) / C(n-1, m)``."""
    if n < m + 1:
        raise ValueError(f"the jackknife needs n >= order + 1, got n = {n}")
    loo = (S - R) / math.comb(n - 1, m)  # (n,) or (n, p)
    cov = jackknife_covariance(loo)
    if loo.ndim == 1:
        return cov, None
    return np.diag(cov).copy(), cov


def _incomplete(data, kernel, rng, num_tuples, batch_size):
    """Incomplete U-statistic and its design-based variance (see :func:`ustatistic`, Notes)."""
    n, m = data.shape[0], kernel.order
    total = math.comb(n, m)
    M = int(num_tuples) if num_tuples is not None else int(max(50 * n, min(total, 10**6)))
    if M < 2:
        raise ValueError(f"num_tuples must be at least 2, got {M}")
    S, sumsq, R1, R2, cnt, shape = _incomplete_sums(data, kernel, default_rng(rng), M, batch_size)
    U = S / M
    s2 = (sumsq - M * U**2) / (M - 1)
    var = s2 / M + (1 - 1 / M) * m**2 * _design_zeta1(R1, R2, cnt) / n
    U = U.reshape(shape)
    var = var.reshape(shape)
    se = np.sqrt(var)
    return UStatResult(statistic=U[()] if U.ndim == 0 else U, variance=var[()] if var.ndim == 0 else var,
                       covariance=None, standard_error=se[()] if se.ndim == 0 else se, n=n, order=m,
                       method="incomplete", variance_method="incomplete-design", num_tuples=M,
                       kernel=kernel.name)


def _incomplete_sums(data, kernel, rng, M, batch_size):
    """``M`` uniform tuples: sums of ``h`` and ``h^2``, per-index sums ``R1, R2 (n, p)``, counts ``(n,)``."""
    n, m = data.shape[0], kernel.order
    S = None
    R1 = R2 = cnt = None
    sumsq = 0.0
    done = 0
    while done < M:
        k = min(batch_size, M - done)
        # m distinct indices per tuple: argpartition of uniforms = a uniform random m-subset
        idx = np.argpartition(rng.random((k, n)), m - 1, axis=1)[:, :m] if n > m else np.tile(np.arange(n), (k, 1))
        vals = _kernel_sums.evaluate(kernel, data, idx)
        flat = vals.reshape(k, -1)
        if S is None:
            S = np.zeros(flat.shape[1])
            sumsq = np.zeros(flat.shape[1])
            R1 = np.zeros((n, flat.shape[1]))
            R2 = np.zeros((n, flat.shape[1]))
            cnt = np.zeros(n)
            shape = vals.shape[1:]
        S += flat.sum(0)
        sumsq += (flat**2).sum(0)
        for a in range(m):
            cnt += np.bincount(idx[:, a], minlength=n)
            for p in range(flat.shape[1]):
                R1[:, p] += np.bincount(idx[:, a], weights=flat[:, p], minlength=n)
                R2[:, p] += np.bincount(idx[:, a], weights=flat[:, p] ** 2, minlength=n)
        done += k
    return S, sumsq, R1, R2, cnt, shape


def _design_zeta1(R1, R2, cnt):
    """``zeta_1`` from the per-index means of the drawn tuples, less their own sampling noise."""
    ok = cnt >= 2
    mean_i = R1[ok] / cnt[ok, None]
    within = (R2[ok] - cnt[ok, None] * mean_i**2) / (cnt[ok, None] - 1)
    w = cnt[ok] / cnt[ok].sum()
    # weighted spread of the per-index means = zeta_1 + (their own sampling noise); remove the noise
    centre = (w[:, None] * mean_i).sum(0)
    between = (w[:, None] * (mean_i - centre) ** 2).sum(0) / (1 - (w**2).sum())
    noise = (w[:, None] * within / cnt[ok, None]).sum(0)
    return np.maximum(between - noise, 0.0)


def ustat_variance(zetas, n: int) -> float:
    """Exact variance of U_n from Hoeffding's components (Hoeffding 1948, Thm 5.2).

    ``Var(U_n) = C(n, m)^{-1} sum_{c=1}^{m} C(m, c) C(n - m, m - c) zeta_c`` with ``m = len(zetas)``.

    Parameters
    ----------
    zetas : array_like, shape (m,)
        ``zeta_1 .. zeta_m`` (``zeta_c = Var h_c``; traces for vector kernels).
    n : int
        Sample size, ``n >= m``.

    Examples
    --------
    Sample variance of N(0, 1) data: zeta_1 = 1/2, zeta_2 = 2, Var(s^2) = 2 / (n - 1).

    >>> round(ustat_variance([0.5, 2.0], 11), 12)
    0.2
    """
    z = np.asarray(zetas, float)
    if z.ndim != 1 or z.size < 1:
        raise ValueError(f"zetas must be a 1-d array of length m >= 1, got shape {z.shape}")
    m = z.size
    if int(n) != n or n < m:
        raise ValueError(f"need an integer n >= m = {m}, got n = {n}")
    n = int(n)
    coef = np.array([math.comb(m, c) * math.comb(n - m, m - c) for c in range(1, m + 1)], float)
    return float(coef @ z / math.comb(n, m))


def _zetas_componentwise(data, kernel, batch_size, U):
    """zeta_hat per output component: shape (m,) for scalar kernels, (m, p) for vector ones."""
    if np.ndim(U) == 0:
        return _kernel_sums.zetas(data, kernel, batch_size, U)
    out = []
    for p in range(U.shape[0]):
        comp = Kernel(lambda *xs, _p=p: np.asarray(kernel(*xs))[:, _p], kernel.order, kernel.name)
        out.append(_kernel_sums.zetas(data, comp, batch_size, U[p]))
    return np.stack(out, axis=1)


def hoeffding(data, kernel, order: int | None = None, *, batch_size: int = 1 << 16) -> HoeffdingResult:
    """Sample Hoeffding decomposition: projections, variance components and first-order share.

    Parameters
    ----------
    data : array_like, shape (n, ...)
    kernel : Kernel or callable
    order : int, optional

    Returns
    -------
    HoeffdingResult

    Notes
    -----
    ``zeta_c`` is estimated without bias by ``mean_c - mean_0``, where ``mean_j`` is the average of
    ``<h(S), h(S')>`` over ordered pairs of index tuples sharing exactly ``j`` indices (itself a
    U-statistic of order ``2m - j``), computed from subset sums by inclusion-exclusion in one pass
    over the tuples; ``n >= 2m`` is required. For vector kernels the components are traces,
    ``tr Var h_c``, as in arXiv 2603.01162, Sec. 2 (MSE = tr Var). The first-order share is
    ``(m^2 zeta_1 / n) / Var(U_n)``; for the GRPO kernel the first-order term is the oracle
    estimator (Sec. 4.1), so the share measures how close GRPO is to the oracle.
    """
    data, kernel = _ustat_iv(data, kernel, order, "vectorized", "jackknife")
    n, m = data.shape[0], kernel.order
    if kernel.has_closed_form:
        U = np.asarray(kernel.statistic(data), float)
        R = np.asarray(kernel.row_sums(data), float)
    else:
        S, R = _kernel_sums.sums_vectorized(data, kernel, batch_size)
        U = S / math.comb(n, m)
    zetas = _kernel_sums.zetas(data, kernel, batch_size, U)
    var = ustat_variance(zetas, n)
    proj = R / math.comb(n - 1, m - 1) - U
    share = (m**2 * zetas[0] / n) / var if var > 0 else float("nan")
    return HoeffdingResult(statistic=U[()] if U.ndim == 0 else U, projections=proj, zetas=zetas,
                           variance=var, first_order_share=float(share), n=n, order=m)
