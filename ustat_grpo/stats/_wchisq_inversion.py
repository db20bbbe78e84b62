"""Exact tail probabilities of ``Q = sum_k w_k chi2_{h_k}(d_k)`` by a saddlepoint-tilted parabolic contour.

With ``M(z) = E exp(zQ) = exp K(z)`` and a crossing point ``s0`` of the real axis,

    P(Q > x)  =  (1 / 2 pi i) int_C M(z) exp(-z x) dz / z      (s0 > 0),
    P(Q <= x) = -(1 / 2 pi i) int_C M(z) exp(-z x) dz / z      (s0 < 0),
    pdf(x)    =  (1 / 2 pi i) int_C M(z) exp(-z x) dz          (any s0),

for ``x > 0`` and any contour ``C`` that crosses the real axis once, at ``s0``, going upwards and
that may bend to the right (``Re z -> +inf``): all singularities of ``M`` on the right (the branch
points ``1 / (2 w_k)``) and the pole of ``1/z`` when ``s0 < 0`` stay on its right, those on the left
on its left.  We take the parabola ``z(v) = s0 + i l v + (l v)^2 / (4 delta)`` whose focus is the
nearest singularity on the right (at distance ``delta``): there ``exp(-z x)`` decays like a
Gaussian in ``v``, so there is no oscillatory tail.  ``s0`` is the saddlepoint (``K'(s0) = x``;
moved to about one standard deviation of the tilt away from the pole at 0 near the mean) and ``l``
the law's scale there, ``1 / sqrt(K''(s0))``: the integrand is a bump of width ~1 in ``v``, set by
the saddlepoint and not by the smallest weight.  The factor ``exp(K(s0) - s0 x)``, the size of the
tail, is taken out, so the smaller tail has *relative* accuracy to the underflow limit.

The integral is a trapezoid sum in ``v`` (exponentially convergent for this analytic integrand); the
step comes from the distance of the nearest singularity to the real ``v`` axis and is checked by
comparing the sums with steps ``h`` and ``2h`` (halving ``h`` while they disagree).  If the sum does not
converge within ``max_nodes`` nodes the result carries ``converged=False`` and an error estimate,
and a :class:`ContourIntegrationWarning` is emitted; no other method is substituted.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize

__all__ = ["Inversion", "ContourIntegrationWarning", "invert", "RTOL"]

RTOL = 1e-10           # relative accuracy promised for the smaller tail; worse -> warning
_STEP_EXPONENT = 44.0  # step h = 2 pi d / 44: error ~ exp(-44) for h, ~ exp(-22) ~ 3e-10 for 2h
_ACCEPT = 1e-7         # |T_h - T_2h| / |T_h| below this: T_h's error ~ (1e-7)^2, accepted
_MAX_HALVINGS = 5


class ContourIntegrationWarning(RuntimeWarning):
    """The contour integral did not reach the promised accuracy; see ``Inversion.abserr``."""


@dataclass(frozen=True)
class Inversion:
    """Result of one contour inversion at ``x``.

    ``abserr`` is an estimate of the absolute error of ``cdf`` and ``sf`` (the smaller of the two is
    computed, the other is ``1 -`` it); ``converged`` is False when its relative size for the smaller
    tail exceeds :data:`RTOL`.  ``nodes`` counts integrand evaluations; ``logpdf`` is finite where
    ``pdf`` underflows.
    """
    x: float
    cdf: float
    sf: float
    logcdf: float
    logsf: float
    pdf: float
    abserr: float
    converged: bool
    nodes: int
    logpdf: float = math.nan


# ----------------------------------------------------------------------------------------------
# cumulant generating function in terms of a_k = 1 - 2 s w_k (passed in, computed without
# cancellation near a branch point)
# ----------------------------------------------------------------------------------------------
def _k1(a, w, h, nc):
    r = w / a  # no overflow for |a| up to 1e308
    return float(np.sum(r * (h + nc / a)))


def _k2(a, w, h, nc):
    r = w / a
    return float(np.sum(r * r * (2.0 * h + 4.0 * nc / a)))


def _scale(s, a, w, h, nc):
    """``1 / sqrt(K''(s))``, written as ``|s| / sqrt(s^2 K''(s))`` so that it neither under- nor
    overflows far in the lower tail (``s -> -inf``)."""
    if s == 0.0:
        return 1.0 / math.sqrt(_k2(a, w, h, nc))
    r = s * w / a
    return abs(s) / math.sqrt(float(np.sum(r * r * (2.0 * h + 4.0 * nc / a))))


def _saddle_upper(x, w, h, nc):
    """``(s, a)`` with ``K'(s) = x > mean``, ``s = (1 - b) / (2 w_max)``, solved for ``log b``."""
    wp = float(w.max())

    def a_of(lb):
        return ((wp - w) + math.exp(lb) * w) / wp

    def g(lb):  # decreasing in lb; g(0) = mean - x < 0
        return _k1(a_of(lb), w, h, nc) - x

    lo = -1.0
    while g(lo) < 0.0 and lo > -700.0:
        lo *= 2.0
    lb = optimize.brentq(g, max(lo, -700.0), 0.0, xtol=1e-12, rtol=1e-12) if g(lo) > 0 else lo
    return (1.0 - math.exp(lb)) / (2.0 * wp), a_of(lb)


def _saddle_lower(x, w, h, nc):
    """``(s, a)`` with ``K'(s) = x < mean``, ``s < 0``."""
    if np.any(w < 0):  # s = -(1 - b) / (2 |w_min|), solved for log b
        wn = -float(w.min())

        def a_of(lb):
            return ((wn + w) - math.exp(lb) * w) / wn

        def s_of(lb):
            return -(1.0 - math.exp(lb)) / (2.0 * wn)
        lo_lim = -700.0
    else:  # s = -exp(u)
        def a_of(u):
            return 1.0 + 2.0 * math.exp(u) * w

        def s_of(u):
            return -math.exp(u)
        lo_lim = 700.0

    def g(u):  # sign of K'(s(u)) - x
        return _k1(a_of(u), w, h, nc) - x

    if lo_lim < 0:  # g increasing in log b, g(0) = mean - x >= 0
        lo = -1.0
        while g(lo) > 0.0 and lo > lo_lim:
            lo *= 2.0
        if g(0.0) <= 0.0:  # x at the mean up to rounding
            return 0.0, np.ones_like(w)
        u = optimize.brentq(g, max(lo, lo_lim), 0.0, xtol=1e-12, rtol=1e-12) if g(lo) < 0 else lo
    else:  # g decreasing in u
        lo, hi = -1.0, 1.0
        while g(lo) < 0.0 and lo > -lo_lim:
            lo = max(2.0 * lo, -lo_lim)
        while g(hi) > 0.0 and hi < lo_lim:
            hi = min(2.0 * hi, lo_lim)
        if g(lo) <= 0.0:  # x at the mean up to rounding
            return 0.0, np.ones_like(w)
        u = optimize.brentq(g, lo, hi, xtol=1e-12, rtol=1e-12) if g(hi) < 0 else hi
    return s_of(u), a_of(u)


@dataclass(frozen=True)
class _Contour:
    side: int        # +1: the integral is P(Q > x); -1: it is -P(Q <= x)
    s0: float        # crossing point
    a0: np.ndarray   # 1 - 2 s0 w
    delta: float     # distance to the nearest singularity on the right (the parabola's focus)
    delta_l: float   # distance to the nearest singularity on the left
    scale: float     # 1 / sqrt(K''(s0))
    f0: float        # K(s0) - s0 x
    f0_err: float    # rounding-error estimate of f0


def _contour(x, w, h, nc):
    """Crossing point, focus and scale for ``x > 0`` inside the support."""
    mean = float(np.sum(w * (h + nc)))
    side = 1 if x > mean else -1
    if side > 0:
        s, a = _saddle_upper(x, w, h, nc)
        r = 0.5 / float(w.max())
        smin = min(_scale(s, a, w, h, nc), 0.5 * r)
        if s < smin:  # near the mean: keep the pole at 0 about one tilt-width away
            s, a = smin, 1.0 - 2.0 * smin * w
        delta = float(a[int(np.argmax(w))]) * r
        delta_l = s
    else:
        s, a = _saddle_lower(x, w, h, nc)
        l_ = 0.5 / float(w.min()) if np.any(w < 0) else -math.inf
        smin = min(_scale(s, a, w, h, nc), 0.5 * abs(l_))
        if -s < smin:
            s, a = -smin, 1.0 - 2.0 * (-smin) * w
        delta = -s
        delta_l = float(a[int(np.argmin(w))]) * abs(l_) if np.isfinite(l_) else math.inf
    logs = -0.5 * h * np.log(a)
    lin = nc * w * s / a
    f0 = float(np.sum(logs + lin)) - s * x
    f0_err = 4e-16 * float(np.sum(np.abs(logs)) + np.sum(np.abs(lin)) + abs(s * x))
    return _Contour(side, s, a, delta, delta_l, _scale(s, a, w, h, nc), f0, f0_err)


class _Exponent:
    """``log M(z) - log M(s0) = sum_k [-h_k/2 log(1 - u c_k) + e_k u / (1 - u c_k)]`` with
    ``z - s0 = l u`` (``l`` the scale), ``c_k = 2 w_k l / a0_k``, ``e_k = d_k w_k l / a0_k^2``.  Terms
    with ``|u c_k| <= 0.2`` (many small weights) are summed as a power series in ``u`` from power
    sums of the ``c_k`` (remainder below ``(sum h / 2) 0.2^25 / 20``)."""
    RHO, ORDER = 0.2, 24

    def __init__(self, c: _Contour, w, h, nc):
        cv = 2.0 * w / c.a0 * c.scale  # in units of the scale: zeta = scale * u
        order = np.argsort(-np.abs(cv), kind="stable")
        self.c, self.h, self.e = cv[order], h[order], (nc * (w / c.a0) * (c.scale / c.a0))[order]
        self.abs_c = np.abs(self.c)
        self.use_series = w.size > 64
        self._poly = {}

    def _series(self, m):
        """Polynomial coefficients (highest power first) of the terms ``k >= m``."""
        if m not in self._poly:
            c, hh, e = self.c[m:], self.h[m:], self.e[m:]
            powers = np.cumprod(np.broadcast_to(c, (self.ORDER, c.size)), axis=0)  # c^1 .. c^J
            coef = np.zeros(self.ORDER + 1)
            coef[1:] = (powers @ (0.5 * hh)) / np.arange(1, self.ORDER + 1)
            if np.any(e):
                coef[1] += e.sum()
                coef[2:] += powers[:-1] @ e
            self._poly[m] = coef[::-1]
        return self._poly[m]

    def __call__(self, zeta):
        m = self.c.size
        if self.use_series:  # number of terms summed exactly
            m = int(np.count_nonzero(self.abs_c * np.abs(zeta).max() > self.RHO))
        q = 1.0 - np.multiply.outer(zeta, self.c[:m])  # a(z) / a0
        out = (-0.5 * self.h[:m] * np.log(q)).sum(-1)
        if np.any(self.e[:m]):
            out = out + (self.e[:m] * zeta[:, None] / q).sum(-1)
        if m < self.c.size:
            out = out + np.polyval(self._series(m), zeta)
        return out


def _terms(v, c: _Contour, x, expo_fn: _Exponent):
    """Integrand ``exp(f(z) - f(s0)) dz/dv / l`` and ``exp(f(z) - f(s0)) dz/dv / z`` at nodes ``v``,
    with ``z = s0 + l u``, ``u = i v + kappa v^2``, ``kappa = l / (4 delta)`` (scale-free: no overflow
    for tilts near 1e300)."""
    kappa = c.scale / (4.0 * c.delta)
    u = 1j * v + kappa * v * v
    dens = np.exp(expo_fn(u) - u * (c.scale * x)) * (1j + 2.0 * kappa * v)
    return dens, dens / (c.s0 / c.scale + u)


def _trapezoid(c: _Contour, step, x, expo_fn: _Exponent, max_nodes):
    """Trapezoid sums (tail, density) of ``Im`` over ``v >= 0`` with step ``step`` and ``2 step``.

    Returns ``(tail_h, tail_2h, dens_h, dens_2h, abs_tail_sum, nodes, truncation_rel_err)``."""
    block = int(max(8, min(math.ceil(14.0 / step) + 1, 400_000 // max(expo_fn.c.size, 1))))  # v up to ~14
    block = max(1, min(block, max_nodes - 1))
    s_t = [0.5 * c.scale / c.s0, 0.0]  # [all nodes, even nodes] of Im(tail term); v = 0 term halved
    s_d = [0.5, 0.0]
    s_abs, j0 = abs(s_t[0]), 1
    while True:
        j = np.arange(j0, j0 + block)
        dens, tail = _terms(j * step, c, x, expo_fn)
        ti, di = tail.imag, dens.imag
        even = (j % 2) == 0
        s_t[0] += ti.sum()
        s_t[1] += ti[even].sum()
        s_d[0] += di.sum()
        s_d[1] += di[even].sum()
        s_abs += np.abs(ti).sum()
        j0 += block
        end = slice(-max(1, block // 4), None)  # the last quarter of the block: past the bump
        last = np.abs(tail[end]).max()
        small = last <= 1e-18 * abs(s_t[0]) and np.abs(dens[end]).max() <= 1e-18 * max(abs(s_d[0]), 1e-300)
        if small or j0 >= max_nodes:
            break
    t_h, t_2h = step * s_t[0], 2 * step * (s_t[1] + 0.5 * c.scale / c.s0)
    d_h, d_2h = step * s_d[0], 2 * step * (s_d[1] + 0.5)
    trunc = 0.0 if small else 10.0 * last / max(abs(s_t[0]), 1e-300)
    return t_h, t_2h, d_h, d_2h, step * s_abs, j0, trunc


def invert(x, w, h, nc, *, max_nodes=20_000, warn=True) -> Inversion | None:
    """``cdf``, ``sf``, their logs and ``pdf`` at a scalar ``x`` strictly inside the support; None
    for weights of both signs with ``|x|`` so small that ``exp(-z x)`` does not damp the contour
    (there only ``|M(z)|``'s algebraic decay would: use Imhof's integral, absolute accuracy)."""
    if x == 0.0:
        return None
    if x < 0:  # reflect: Q' = -Q, P(Q > x) = P(Q' < -x)
        r = invert(-x, -w, h, nc, max_nodes=max_nodes, warn=warn)
        return None if r is None else Inversion(x, r.sf, r.cdf, r.logsf, r.logcdf, r.pdf, r.abserr, r.converged,
                                                r.nodes, r.logpdf)
    c = _contour(x, w, h, nc)
    if np.any(w < 0) and c.scale * x * c.scale / (4.0 * c.delta) * 14.0**2 < 1.0:
        return None  # both signs, x near 0: exp(-z x) < exp(-40) only for v > 90 (see docstring)
    expo_fn = _Exponent(c, w, h, nc)
    d_r = 2.0 * c.delta
    d_l = 2.0 * c.delta * (math.sqrt(1.0 + c.delta_l / c.delta) - 1.0) if np.isfinite(c.delta_l) else d_r
    step = min(0.5, 2.0 * math.pi * min(d_r, d_l) / c.scale / _STEP_EXPONENT)
    nodes = 0
    for _ in range(_MAX_HALVINGS + 1):
        t_h, t_2h, d_h, d_2h, t_abs, n, trunc = _trapezoid(c, step, x, expo_fn, max_nodes - nodes)
        nodes += n
        disc = abs(t_h - t_2h) / abs(t_h) if t_h != 0 else math.inf
        if (disc <= _ACCEPT and abs(d_h - d_2h) <= _ACCEPT * abs(d_h)) or nodes >= max_nodes:
            break
        step *= 0.5
    val = c.side * t_h / math.pi
    rel = float(disc**2 * 100.0 + 1e-15 * t_abs / max(abs(t_h), 1e-300) + c.f0_err)
    if trunc > 0.0:  # node budget spent before the terms became negligible
        rel = max(rel, disc, trunc)
    if not val > 0:
        val, rel = 0.0, math.inf
    log_tail = c.f0 + math.log(val) if val > 0 else -math.inf
    tail = math.exp(log_tail)
    logpdf = c.f0 + math.log(c.scale) + math.log(d_h / math.pi) if d_h > 0 else -math.inf
    pdf = math.exp(logpdf)
    abserr = rel * tail if np.isfinite(rel) else math.inf
    ok = bool(rel <= RTOL)
    if not ok and warn:
        warnings.warn(f"weighted chi-squared contour integral at x={x:.17g} did not converge to relative "
                      f"accuracy {RTOL:g} ({nodes} nodes): tail {tail:.6e}, estimated relative error "
                      f"{rel:.1e} (absolute {abserr:.1e})", ContourIntegrationWarning, stacklevel=4)
    other = -math.expm1(log_tail) if log_tail > -math.inf else 1.0
    log_other = math.log1p(-tail) if tail < 1 else -math.inf
    if c.side > 0:
        return Inversion(x, other, tail, log_other, log_tail, pdf, abserr, ok, nodes, logpdf)
    return Inversion(x, tail, other, log_tail, log_other, pdf, abserr, ok, nodes, logpdf)


def solve_tail(evaluate, p, upper, mean, sd, *, positive):
    """``x`` with ``P(Q > x) = p`` (``upper``) or ``P(Q <= x) = p``, by Newton's method on the log of
    that tail (its derivative is ``-+ pdf / tail``, from the same inversion), safeguarded by a
    bracket.  The lower tail of a positive law is solved in ``y = log x``.  ``evaluate(x)`` returns
    an :class:`Inversion`."""
    logp = math.log(p)
    in_log = positive and not upper
    sign = -1.0 if upper else 1.0  # G(y) = sign * (log tail - log p) is increasing in y
    to_x = math.exp if in_log else float
    y = math.log(mean) if in_log else mean + sign * -sd * math.sqrt(max(-2.0 * logp, 1.0))
    step = 1.0 if in_log else sd
    lo, hi = -math.inf, math.inf
    for _ in range(200):
        x = to_x(y)
        r = evaluate(x)
        lt = r.logsf if upper else r.logcdf
        big_g = sign * (lt - logp)
        logpdf = r.logpdf if not math.isnan(r.logpdf) else math.log(r.pdf) if r.pdf > 0 else -math.inf
        slope = math.exp(min(logpdf - lt, 700.0)) * (x if in_log else 1.0) if lt > -math.inf else 0.0
        if big_g == 0.0:
            return x
        if big_g < 0:
            lo = max(lo, y)
        else:
            hi = min(hi, y)
        y_new = y - big_g / slope if slope > 0 else math.nan
        if not lo < y_new < hi:
            if np.isfinite(lo) and np.isfinite(hi):
                y_new = 0.5 * (lo + hi)
            else:
                y_new = y + (step if big_g < 0 else -step)
                step *= 2.0
        if abs(y_new - y) <= 2e-15 * max(abs(y), 1e-300 if not in_log else 1.0) or (hi - lo) <= 4e-16 * abs(y):
            return to_x(y_new)
        y = y_new
    return to_x(y)
