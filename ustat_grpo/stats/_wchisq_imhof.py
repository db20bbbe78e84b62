"""Imhof's (1961) integral for the weighted chi-squared law (QUADPACK), absolute accuracy ~1e-15.

Used by :mod:`ustat_grpo.stats.wchisq` only where the contour inversion of
:mod:`ustat_grpo.stats._wchisq_inversion` has no Gaussian damping: weights of both signs and ``x`` within
a small fraction of the law's scale of 0.  ``[0, U]`` is integrated by adaptive Gauss-Kronrod
(QAGS) and the oscillatory tail ``[U, inf)`` by QUADPACK's Fourier-integral routine (QAWF) after
writing ``sin(phi(u) - x u / 2) = sin(phi) cos(x u / 2) - cos(phi) sin(x u / 2)``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import integrate

__all__ = ["imhof_integral"]


def _imhof_parts(lam, h, nc):
    """Return ``phi(u)`` (slow phase) and ``log rho(u)`` as closures (pure Python for short ``lam``,
    where numpy's per-call overhead dominates the QUADPACK callbacks)."""
    if lam.size <= 32:
        terms = list(zip(lam.tolist(), h.tolist(), nc.tolist()))
        atan, log1p = math.atan, math.log1p

        def phi(u):
            tot = 0.0
            for l_, h_, d_ in terms:
                lu = l_ * u
                tot += h_ * atan(lu) + d_ * lu / (1.0 + lu * lu)
            return 0.5 * tot

        def logrho(u):
            tot = 0.0
            for l_, h_, d_ in terms:
                lu2 = (l_ * u) ** 2
                tot += 0.25 * h_ * log1p(lu2) + 0.5 * d_ * lu2 / (1.0 + lu2)
            return tot

        return phi, logrho

    def phi(u):
        lu = np.multiply.outer(u, lam)  # (..., K)
        return 0.5 * (h * np.arctan(lu) + nc * lu / (1.0 + lu * lu)).sum(-1)

    def logrho(u):
        lu2 = np.multiply.outer(u, lam) ** 2
        return (0.25 * h * np.log1p(lu2) + 0.5 * nc * lu2 / (1.0 + lu2)).sum(-1)

    return phi, logrho


def _quad(f, a, b, **kw):
    """``scipy.integrate.quad`` returning ``(value, abserr, ok)`` without emitting warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        out = integrate.quad(f, a, b, full_output=1, **kw)
    val, err = out[0], out[1]
    ok = len(out) == 3  # a 4th element (message) is present only when ier > 0
    return float(val), float(err), ok


def _quad_geometric(f, a, U, **kw):
    """``int_0^U f`` as a sum over ``[0, a], [a, 4a], [4a, 16a], ...``: the integrand lives near 0
    on scale ``a`` while ``U`` may be many orders larger (QAGS on one huge interval can miss it)."""
    edges = [0.0]
    e = min(a, U)
    while e < U:
        edges.append(e)
        e *= 4.0
    edges.append(U)
    tot, err, ok = 0.0, 0.0, True
    for lo, hi in zip(edges[:-1], edges[1:]):
        v, e_, o = _quad(f, lo, hi, **kw)
        tot, err, ok = tot + v, err + e_, ok and o
    return tot, err, ok


def _split_point(lam, omega):
    """Start of the Fourier tail: a few oscillation periods and past the phase's fastest scale."""
    lmax = float(np.max(np.abs(lam)))
    u = 8.0 / lmax
    if omega != 0.0:
        u = max(u, 4.0 * math.pi / abs(omega))
    return u


def _imhof_integral(x, lam, h, nc, *, kind):
    """``int_0^inf`` of the Imhof integrand for ``kind="sf"`` (sin theta / (u rho)) or ``"pdf"``
    (cos theta / rho).  Returns ``(value, abserr, ok)``."""
    phi, logrho = _imhof_parts(lam, h, nc)
    omega = 0.5 * x
    U = _split_point(lam, omega)
    eps = dict(epsabs=1e-14, epsrel=1e-12)
    if kind == "sf":
        def head(u):
            return math.sin(phi(u) - omega * u) / (u * math.exp(logrho(u)))

        def a_(u):  # multiplies cos(omega u)
            return math.sin(phi(u)) / (u * math.exp(logrho(u)))

        def b_(u):  # multiplies -sin(omega u)
            return -math.cos(phi(u)) / (u * math.exp(logrho(u)))
    else:
        def head(u):
            return math.cos(phi(u) - omega * u) / math.exp(logrho(u))

        def a_(u):
            return math.cos(phi(u)) / math.exp(logrho(u))

        def b_(u):
            return math.sin(phi(u)) / math.exp(logrho(u))

    v0, e0, ok0 = _quad_geometric(head, 8.0 / float(np.max(np.abs(lam))), U, limit=2000, **eps)
    if omega == 0.0:
        v1, e1, ok1 = _quad(a_, U, np.inf, limit=5000, **eps)
        return v0 + v1, e0 + e1, ok0 and ok1
    w = abs(omega)
    sgn = 1.0 if omega > 0 else -1.0  # sin(omega u) = sgn * sin(|omega| u)
    # QAWF (weight='cos'/'sin' on an infinite interval); epsrel is ignored there
    v1, e1, ok1 = _quad(a_, U, np.inf, weight="cos", wvar=w, limlst=200, limit=5000, epsabs=1e-14)
    v2, e2, ok2 = _quad(b_, U, np.inf, weight="sin", wvar=w, limlst=200, limit=5000, epsabs=1e-14)
    return v0 + v1 + sgn * v2, e0 + e1 + e2, ok0 and ok1 and ok2


imhof_integral = _imhof_integral
