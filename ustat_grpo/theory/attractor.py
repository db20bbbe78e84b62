"""Fixed points and 2-cycles of the success-amplification map, solved directly (Paper 2).

The reference-anchored recurrences of :mod:`ustat_grpo.theory.amplification` have fixed points where
``logit p = logit p_ref + Omega_eps(p) / (scale beta)`` and 2-cycles where ``h(h(p)) = p``
(arXiv 2503.06639v4; spec 3.3-3.4, checks M4-M6).  Both are bracketed on a grid in logit space
and polished with ``brentq``; the multiplier of each attractor is computed in logit space, where
it stays accurate as ``p`` rounds to 1.

Examples
--------
>>> [round(fp.p, 6) for fp in fixed_points(0.5, 5.0)]
[0.600696, 0.999217]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from ..core._serialize import jsonable
from .amplification import _MEAN_ONLY, _check_args, _logit, _omega_logit

__all__ = ["FixedPoint", "fixed_points", "TwoCycle", "two_cycles"]


def _logit_multiplier(L, beta, eps, variant, alpha):
    """``dL_n / dL_{n-1}``; equals ``dp_n / dp_{n-1}`` at a fixed point (conjugation invariance)."""
    L = np.asarray(L, float)
    q = special.expit(L) * special.expit(-L)  # p (1 - p) from the logit, exact near 0 and 1
    dOmega_dL = 0.0 if variant in _MEAN_ONLY else 0.5 * np.tanh(L / 2.0) * q * (q + eps) ** -1.5
    carry = {"ref": 0.0, "dr_grpo": 0.0, "mirror": 1.0, "mirror_dr_grpo": 1.0,
             "both": None if alpha is None else 1.0 - alpha}[variant]
    return carry + dOmega_dL / beta


@dataclass(frozen=True, kw_only=True)
class FixedPoint:
    """A root ``p*`` of the fixed-point equation with its multiplier ``h'(p*)``.

    ``derivative`` is computed as ``dL_n / dL_{n-1}`` in logit space, which equals ``h'(p*)`` at a
    fixed point and stays accurate where ``p*`` rounds to 1 in floating point.
    """

    p: float
    logit: float
    derivative: float

    @property
    def stable(self) -> bool:
        return abs(self.derivative) < 1.0

    def summary(self) -> str:
        return f"p* = {self.p:.10g} (h'(p*) = {self.derivative:+.4g}, {'stable' if self.stable else 'unstable'})"

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(p=self.p, logit=self.logit, derivative=self.derivative, stable=self.stable))


def _fixed_point_residual(L, L_ref, beta, eps, scale):
    """``F(L) = L_ref + Omega_eps(sigmoid L) / (scale beta) - L`` (scale = alpha for 'both')."""
    return L_ref + _omega_logit(L, eps) / (scale * beta) - L


def _roots_on_grid(fun, lo, hi, num):
    grid = np.linspace(lo, hi, num)
    vals = fun(grid)
    roots = []
    for i in np.flatnonzero(vals == 0):
        roots.append(float(grid[i]))
    s = np.sign(vals)
    for i in np.flatnonzero(s[:-1] * s[1:] < 0):
        roots.append(float(optimize.brentq(fun, grid[i], grid[i + 1], xtol=1e-14, rtol=1e-15)))
    return sorted(roots)


def _logit_bracket(L_ref, beta, eps, scale, logit_max):
    # Omega_eps >= (1/4 + eps)^-1/2 > 0 and <= eps^-1/2, so every root satisfies
    # L_ref + Omega_min/(scale beta) <= L* <= L_ref + Omega_max/(scale beta): amplification.
    lo = L_ref + (0.25 + eps) ** -0.5 / (scale * beta)
    hi = L_ref + (eps ** -0.5 / (scale * beta) if eps > 0 else np.inf)
    return lo - 1e-9, min(hi + 1e-9, logit_max)


def fixed_points(p_ref, beta, eps=0.0, variant="ref", *, alpha=None, grid_size=40001,
                 logit_max=60.0):
    """All fixed points in (0, 1) of the reference-anchored recurrences, solved directly.

    For ``"ref"`` the equation is ``logit p = logit p_ref + Omega_eps(p) / beta``; for
    ``"both"`` (with ``Delta_R = 0``, i.e. started at ``pi_ref``) it is
    ``logit p = logit p_ref + Omega_eps(p) / (alpha beta)`` (spec 3.3, check M5).  Roots are
    bracketed on a uniform grid of ``grid_size`` points in logit space over the interval that
    must contain all of them, then polished with ``brentq``.  Tangential (double) roots narrower
    than the grid spacing can be missed.  ``"dr_grpo"`` has the single fixed point
    ``sigmoid(logit p_ref + 1/beta)``; the mirror variants have none in (0, 1).

    Returns
    -------
    list of FixedPoint, increasing in ``p``.
    """
    _check_args(p_ref, beta, eps, variant, alpha)
    if not 0 < p_ref < 1:
        return []
    L_ref = float(_logit(p_ref))
    if variant in ("mirror", "mirror_dr_grpo"):
        return []
    if variant == "dr_grpo":
        L = L_ref + 1.0 / beta
        return [FixedPoint(p=float(special.expit(L)), logit=L, derivative=0.0)]
    scale = 1.0 if variant == "ref" else alpha
    lo, hi = _logit_bracket(L_ref, beta, eps, scale, logit_max)
    if not lo < hi:
        return []
    fun = lambda L: _fixed_point_residual(L, L_ref, beta, eps, scale)  # noqa: E731
    out = []
    for L in _roots_on_grid(fun, lo, hi, grid_size):
        p = float(special.expit(L))
        out.append(FixedPoint(p=p, logit=L, derivative=float(
            _logit_multiplier(L, beta, eps, variant, alpha))))
    return out


@dataclass(frozen=True, kw_only=True)
class TwoCycle:
    """A 2-cycle ``{p_low, p_high}`` of the reference-KL map with multiplier ``h'(p_low) h'(p_high)``."""

    p_low: float
    p_high: float
    multiplier: float

    @property
    def stable(self) -> bool:
        return abs(self.multiplier) < 1.0

    def summary(self) -> str:
        return (f"2-cycle {{{self.p_low:.6g}, {self.p_high:.6g}}} (multiplier {self.multiplier:+.4g}, "
                f"{'stable' if self.stable else 'unstable'})")

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(p_low=self.p_low, p_high=self.p_high, multiplier=self.multiplier, stable=self.stable))


def two_cycles(p_ref, beta, eps=0.0, *, grid_size=40001, logit_max=60.0):
    """All 2-cycles of ``h_{eps,p_ref}`` (roots of ``h(h(p)) = p`` that are not fixed points).

    Solved in logit space with ``T(L) = logit p_ref + Omega_eps(sigmoid L) / beta`` on the same
    bracket as :func:`fixed_points` (every iterate after the first lies in it).
    """
    _check_args(p_ref, beta, eps, "ref", None)
    if not 0 < p_ref < 1:
        return []
    L_ref = float(_logit(p_ref))
    lo, hi = _logit_bracket(L_ref, beta, eps, 1.0, logit_max)
    if not lo < hi:
        return []
    T = lambda L: L_ref + _omega_logit(L, eps) / beta  # noqa: E731
    roots = _roots_on_grid(lambda L: T(T(L)) - L, lo, hi, grid_size)
    fps = [fp.logit for fp in fixed_points(p_ref, beta, eps, "ref", grid_size=grid_size, logit_max=logit_max)]
    cycles = []
    for L in roots:
        if any(abs(L - f) < 1e-7 * (1 + abs(f)) for f in fps):
            continue
        L2 = float(T(L))
        if L2 < L:  # report each cycle once, from its lower point
            continue
        p1, p2 = float(special.expit(L)), float(special.expit(L2))
        mult = float(_logit_multiplier(L, beta, eps, "ref", None) * _logit_multiplier(L2, beta, eps, "ref", None))
        cycles.append(TwoCycle(p_low=p1, p_high=p2, multiplier=mult))
    return cycles
