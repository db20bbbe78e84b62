"""Independent references for the weighted chi-squared law (tests and simulations/bench_wchisq.py).

``mp_tail``: a 30-digit contour inversion in mpmath on a *hyperbola* ``z(t) = c + (d/2)(cosh t - 1)
+ i d sinh t`` through the exact saddlepoint (found by bisection in mpmath), integrated by mpmath's
adaptive tanh-sinh rule with its error estimate: no code, contour, quadrature or precision in common
with ``ustat_grpo.stats._wchisq_inversion`` (a parabola, a double-precision trapezoid sum).

``conv_sf``: for three weights, direct convolution of the chi-squared laws in double precision:
``P(Q > x) = E[sf_1((x - w_2 X_2 - w_3 X_3) / w_1)]`` with scipy's (non-central) chi-squared ``sf``
and nested adaptive quadrature over the two smaller terms (a positive integrand, no cancellation).
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
from scipy import stats

DPS = 30


def _cgf_parts(w, h, nc):
    return [(mp.mpf(a), mp.mpf(b), mp.mpf(c)) for a, b, c in zip(w, h, nc)]


def _one_minus(z, terms, e=None):
    """``1 - 2 z w_k``; with ``e = r - z`` (``r = 1 / (2 max w)``) written without cancellation."""
    if e is None:
        return [1 - 2 * z * a for a, _, _ in terms]
    amax = max(t[0] for t in terms)
    return [(1 - a / amax) + 2 * e * a for a, _, _ in terms]


def _k(z, terms, e=None):
    return mp.fsum(-b / 2 * mp.log(q) + c * a * z / q for (a, b, c), q in zip(terms, _one_minus(z, terms, e)))


def _k1(s, terms, e=None):
    return mp.fsum(b * a / q + c * a / q**2 for (a, b, c), q in zip(terms, _one_minus(s, terms, e)))


def _k2(s, terms, e=None):
    return mp.fsum(2 * b * a**2 / q**2 + 4 * c * a**2 / q**3 for (a, b, c), q in zip(terms, _one_minus(s, terms, e)))


def _bisect(g, lo, hi, n=140):
    """Root of an increasing ``g`` on ``(lo, hi)``."""
    for _ in range(n):
        mid = (lo + hi) / 2
        if g(mid) > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def mp_tail(x, w, h=1, nc=0, dps=DPS):
    """``(side, tail)``: ``("sf", P(Q > x))`` above the mean, else ``("cdf", P(Q <= x))``; positive
    weights, ``x > 0``.  Returned as an ``mpmath.mpf`` (relative accuracy ~1e-30)."""
    w = np.atleast_1d(np.asarray(w, float))
    h = np.broadcast_to(np.asarray(h, float), w.shape)
    nc = np.broadcast_to(np.asarray(nc, float), w.shape)
    with mp.workdps(dps):
        terms = _cgf_parts(w, h, nc)
        x = mp.mpf(x)
        mean = mp.fsum(a * (b + c) for a, b, c in terms)
        r = 1 / (2 * max(t[0] for t in terms))
        if x > mean:  # saddlepoint in (0, r): bisection on the log of r - s
            u = _bisect(lambda u: x - _k1(r - mp.exp(u), terms, mp.exp(u)), mp.log(r) - 400, mp.log(r))
            c, d = r - mp.exp(u), mp.exp(u)
            if c < min(r / 3, 1 / mp.sqrt(_k2(0, terms)) / 2):
                c = min(r / 3, 1 / mp.sqrt(_k2(0, terms)) / 2)
                d = r - c
            ee = d
        else:  # saddlepoint in (-inf, 0): bisection on log(-s)
            u = _bisect(lambda u: x - _k1(-mp.exp(u), terms), mp.mpf(-400), mp.mpf(400))
            c = -mp.exp(u)
            c = min(c, -1 / mp.sqrt(_k2(0, terms)) / 2)
            d, ee = -c, None
        scale = 1 / mp.sqrt(_k2(c, terms, ee))
        base = _k(c, terms, ee) - c * x

        def f(t):
            zeta = d / 2 * (mp.cosh(t) - 1) + 1j * d * mp.sinh(t)
            z = c + zeta
            dz = d / 2 * mp.sinh(t) + 1j * d * mp.cosh(t)
            k = _k(z, terms, None if ee is None else ee - zeta)
            return mp.im(mp.exp(k - z * x - base) * dz / z)

        tmax = mp.acosh(1 + 2 * (dps * 3 + 60) / (x * d)) + 1  # exp(-x Re z) below 1e-(dps + 26)
        pts = [mp.mpf(0)]
        step = scale / d
        while pts[-1] + step < tmax:
            pts.append(pts[-1] + step)
            step *= 2
        pts.append(tmax)
        val = mp.quad(f, pts) / mp.pi
        tail = mp.exp(base) * val
        return ("sf", tail) if x > mean else ("cdf", -tail)


def mp_sf_cdf(x, w, h=1, nc=0):
    """``(sf, cdf)`` as floats from :func:`mp_tail` (the other one as ``1 -`` the tail in mpmath)."""
    side, t = mp_tail(x, w, h, nc)
    with mp.workdps(DPS):
        return (float(t), float(1 - t)) if side == "sf" else (float(1 - t), float(t))


def _law(df, d):
    return stats.chi2(df) if d == 0 else stats.ncx2(df, d)


def _gl_half_line(lw, n):
    """Nodes and weights for ``E g(Y)``, ``Y ~ lw``, as ``int_0^U g(u^2) 2 u pdf(u^2) du`` (the
    substitution ``y = u^2`` removes a chi2_1-like singularity), Gauss-Legendre with ``n`` nodes."""
    hi = math.sqrt(lw.isf(1e-40))
    t, wt = np.polynomial.legendre.leggauss(n)
    u = 0.5 * hi * (t + 1.0)
    return u * u, 0.5 * hi * wt * 2.0 * u * lw.pdf(u * u)


def conv_sf(x, w, h=1, nc=0, n=160):
    """``P(Q > x)`` for three weights ``w_1 >= w_2 >= w_3 > 0`` by convolution in double precision:
    ``E[sf_1((x - w_2 X_2 - w_3 X_3) / w_1)]`` on a tensor Gauss-Legendre grid.  Returns
    ``(value, |value(n) - value(n / 2)| / value)``, the second a convergence check."""
    w1, w2, w3 = w
    h1, h2, h3 = np.broadcast_to(h, (3,))
    d1, d2, d3 = np.broadcast_to(nc, (3,))
    out = []
    for m in (n // 2, n):
        y2, a2 = _gl_half_line(_law(h2, d2), m)
        y3, a3 = _gl_half_line(_law(h3, d3), m)
        arg = (x - w2 * y2[:, None] - w3 * y3[None, :]) / w1
        out.append(float(a2 @ _law(h1, d1).sf(arg) @ a3))
    return out[1], abs(out[1] - out[0]) / out[1]
