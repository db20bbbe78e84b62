"""Success amplification under GRPO: closed-form optimal policies and probability-of-success maps.

Implements Paper 2 (Mroueh, arXiv 2503.06639v4; spec section 3) for a binary verifiable reward.
With ``p`` the probability of success (PoS) of the previous policy and the stabilised whitened
advantage ``A = (r - p) / sqrt(p (1 - p) + eps)``, the non-parametric GRPO step without clipping,

    pi_n = argmax_pi  E_pi[A] - beta * KL(pi || anchor),

is an exponential tilt of the anchor on the success indicator, so the PoS obeys a scalar
recurrence in logit space (``L = logit p``):

============================  =================================================================
variant                       recurrence
============================  =================================================================
``"ref"`` (GRPO, KL to ref)   ``L_n = L_ref + Omega_eps(p_{n-1}) / beta``   (``p_n = h(p_{n-1})``)
``"mirror"`` (KL to prev)     ``L_n = L_{n-1} + Omega_eps(p_{n-1}) / beta``
``"both"`` (alpha mix)        ``L_n = alpha L_ref + (1-alpha) L_{n-1} + Delta_R + Omega/beta``
``"dr_grpo"`` (mean only)     ``L_n = L_ref + 1 / beta``  (constant after one step)
``"mirror_dr_grpo"``          ``L_n = L_{n-1} + 1 / beta``
============================  =================================================================

with ``Omega_eps(p) = (p (1 - p) + eps) ** -0.5``.  Corrected forms used here (spec 3.2-3.3,
ambiguity 12): the general optimal-policy theorem carries ``1/beta`` (the paper drops it); the
Renyi correction uses the *success* conditional ``1{r=1}`` for ``p_{n-1,S}`` (the paper writes
``1{r=0}``); the contrastive identity uses unconditional indicator expectations, and
``f_eps(x, y) = min(x y, clip(x, 1-eps, 1+eps) y)`` (the paper's remark swaps x and y).

Convergence is local only (spec ambiguity 11): :func:`iterate_pos` reports whether the
iteration converged, entered a cycle (stable 2-cycles exist) or ran to ``p = 1``; it never
assumes convergence.  :func:`ustat_grpo.theory.attractor.fixed_points` and
:func:`ustat_grpo.theory.attractor.two_cycles` solve the equations directly;
:mod:`ustat_grpo.theory.nonparametric` holds the exact non-parametric step on a finite output set
(optimal policy, Renyi correction) and the contrastive form of the clipped objective.

References
----------
Y. Mroueh, "Reinforcement Learning with Verifiable Rewards: GRPO's Effective Loss, Dynamics,
and Success Amplification", arXiv 2503.06639v4.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from ..core._serialize import jsonable

__all__ = [
    "VARIANTS", "omega_plus", "omega_minus", "omega", "whitened_advantage", "effective_beta", "pos_map",
    "h_prime", "pos_map_derivative", "iterate_pos", "PoSTrajectory", "classify_grid", "STATUS_CODES",
]

VARIANTS = ("ref", "mirror", "both", "dr_grpo", "mirror_dr_grpo")
_MEAN_ONLY = ("dr_grpo", "mirror_dr_grpo")


# ----------------------------------------------------------------------------- weights

def omega_plus(p, eps=0.0):
    """Weight of a success, ``omega^+_eps(p) = (1 - p) / sqrt(p (1 - p) + eps)`` (spec 3.1)."""
    p = np.asarray(p, float)
    return (1.0 - p) / np.sqrt(p * (1.0 - p) + eps)


def omega_minus(p, eps=0.0):
    """Weight of a failure, ``omega^-_eps(p) = p / sqrt(p (1 - p) + eps)`` (spec 3.1)."""
    p = np.asarray(p, float)
    return p / np.sqrt(p * (1.0 - p) + eps)


def omega(p, eps=0.0):
    """``Omega_eps(p) = omega^+ + omega^- = (p (1 - p) + eps) ** -1/2`` (spec 3.1)."""
    p = np.asarray(p, float)
    return 1.0 / np.sqrt(p * (1.0 - p) + eps)


def whitened_advantage(reward, p, eps=0.0, *, normalization="mean_std"):
    """Advantage of a binary reward at PoS ``p``.

    ``normalization="mean_std"``: ``(r - p) / sqrt(p (1 - p) + eps)`` (GRPO, spec 3.1);
    ``"mean"``: ``r - p`` (Dr. GRPO, ``omega^+ = 1 - p``, ``omega^- = p``).
    """
    r = np.asarray(reward, float)
    p = np.asarray(p, float)
    if normalization == "mean_std":
        return (r - p) / np.sqrt(p * (1.0 - p) + eps)
    if normalization == "mean":
        return r - p
    raise ValueError(f"normalization must be 'mean_std' or 'mean', got {normalization!r}")


def effective_beta(beta, p, eps=0.0):
    """Mean+variance normalisation equals mean-only with ``beta_eff = beta sqrt(p(1-p)+eps)`` (spec 3.3)."""
    p = np.asarray(p, float)
    return beta * np.sqrt(p * (1.0 - p) + eps)


# ----------------------------------------------------------------------------- scalar maps

def _logit(p):
    with np.errstate(divide="ignore"):
        return special.logit(np.asarray(p, float))


def _omega_logit(L, eps):
    """``Omega_eps(sigmoid L)`` computed from the logit (exact near p = 0 or 1)."""
    L = np.asarray(L, float)
    if eps == 0:
        with np.errstate(over="ignore"):
            return 2.0 * np.cosh(L / 2.0)  # (p (1 - p))^-1/2 = e^{L/2} + e^{-L/2}
    return 1.0 / np.sqrt(special.expit(L) * special.expit(-L) + eps)


def _check_args(p_ref, beta, eps, variant, alpha):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if np.any(np.asarray(beta) <= 0):
        raise ValueError("beta must be positive")
    if np.any(np.asarray(eps) < 0):
        raise ValueError("eps must be non-negative")
    if np.any((np.asarray(p_ref) < 0) | (np.asarray(p_ref) > 1)):
        raise ValueError("p_ref must lie in [0, 1]")
    if variant == "both" and (alpha is None or not 0 < alpha <= 1):
        raise ValueError("variant 'both' needs 0 < alpha <= 1")


def _logit_map(L_prev, L_ref, beta, eps, variant, alpha, delta_r):
    """One step of the recurrence in logit space (vectorised)."""
    if variant in _MEAN_ONLY:
        step = 1.0 / beta
    else:
        step = _omega_logit(L_prev, eps) / beta
    if variant in ("ref", "dr_grpo"):
        return L_ref + step
    if variant in ("mirror", "mirror_dr_grpo"):
        return L_prev + step
    # both KLs: geometric-mean anchor pi_ref^alpha pi_{n-1}^(1-alpha)
    return alpha * L_ref + (1.0 - alpha) * L_prev + delta_r + step


def pos_map(p_prev, p_ref, beta, eps=0.0, variant="ref", *, alpha=None, delta_r=0.0):
    """Probability of success after one non-parametric GRPO step.

    Parameters
    ----------
    p_prev : array_like
        PoS ``p_{n-1}`` of the previous policy (the one that sampled the group).
    p_ref : array_like
        PoS of the reference policy, in [0, 1].
    beta : float
        KL weight, > 0.
    eps : float
        Smoothing of the whitened reward (the paper's varepsilon), >= 0.
    variant : {"ref", "mirror", "both", "dr_grpo", "mirror_dr_grpo"}
        See the module table.
    alpha : float, optional
        Weight of ``KL(pi || pi_ref)`` in the ``"both"`` variant, in (0, 1].
    delta_r : float
        Renyi correction ``Delta_R`` of the ``"both"`` variant (:func:`renyi_correction`); it is
        0 whenever ``pi_{n-1}`` is an exponential tilt of ``pi_ref`` on ``1{r=1}``, in
        particular along any trajectory started at ``pi_0 = pi_ref``.

    Returns
    -------
    ndarray
        ``p_n``.  For ``"ref"`` this is ``h_{eps,p_ref}(p_{n-1}) =
        sigmoid(logit p_ref + Omega_eps(p_{n-1}) / beta)`` (arXiv 2503.06639v4, Thm. on the
        PoS recurrence; spec 3.3).

    Notes
    -----
    ``p_ref = 0`` is absorbing (GRPO creates no successes) and ``p_ref = 1`` stays at 1.

    Examples
    --------
    >>> round(float(pos_map(0.5, 0.5, 5.0, 0.0, "mirror")), 4)
    0.5987
    """
    _check_args(p_ref, beta, eps, variant, alpha)
    L = _logit_map(_logit(p_prev), _logit(p_ref), beta, eps, variant, alpha, delta_r)
    return special.expit(L)


def h_prime(p, p_ref, beta, eps=0.0):
    """Derivative of the reference-KL map ``h_{eps,p_ref}`` (spec 3.4).

    ``h'(p) = -h (1 - h) (1 - 2p) / (2 beta [p (1 - p) + eps]^{3/2})``: ``h`` decreases on
    ``(0, 1/2)``, increases on ``(1/2, 1)`` and is smallest at ``p = 1/2``.
    """
    p = np.asarray(p, float)
    h = pos_map(p, p_ref, beta, eps, "ref")
    return -h * (1.0 - h) * (1.0 - 2.0 * p) / (2.0 * beta * (p * (1.0 - p) + eps) ** 1.5)


def pos_map_derivative(p, p_ref, beta, eps=0.0, variant="ref", *, alpha=None):
    """``d p_n / d p_{n-1}`` for any variant (``delta_r = 0``), via the logit chain rule."""
    _check_args(p_ref, beta, eps, variant, alpha)
    p = np.asarray(p, float)
    pn = pos_map(p, p_ref, beta, eps, variant, alpha=alpha)
    dOmega = 0.0 if variant in _MEAN_ONLY else -0.5 * (1.0 - 2.0 * p) * (p * (1.0 - p) + eps) ** -1.5
    dlogit = 1.0 / (p * (1.0 - p))  # d L_{n-1} / d p_{n-1}
    carry = {"ref": 0.0, "dr_grpo": 0.0, "mirror": 1.0, "mirror_dr_grpo": 1.0,
             "both": None if alpha is None else 1.0 - alpha}[variant]
    return pn * (1.0 - pn) * (carry * dlogit + dOmega / beta)


# ----------------------------------------------------------------------------- iteration

@dataclass(frozen=True, kw_only=True)
class PoSTrajectory:
    """Result of :func:`iterate_pos`.

    Attributes
    ----------
    p : ndarray (n + 1,)
        ``p_0 .. p_n`` (``p_0`` the start).
    logit : ndarray (n + 1,)
        The same in logit space (finite even where ``p`` rounds to 1).
    status : str
        ``"converged"`` (period 1), ``"cycle"`` (period >= 2), ``"to_one"`` (logit passed
        ``logit_cap``: the PoS tends to 1, e.g. the mirror variants) or ``"not_converged"``.
    period : int
        Period of the attractor found (1 for a fixed point, 0 when none was found).
    limit : tuple of float
        The points of the attractor (one fixed point, or the cycle sorted increasingly).
    """

    p: np.ndarray
    logit: np.ndarray
    status: str
    period: int
    limit: tuple
    params: dict = field(default_factory=dict)

    @property
    def num_iter(self) -> int:
        return len(self.p) - 1

    def summary(self) -> str:
        lim = ", ".join(f"{x:.6g}" for x in self.limit) or "-"
        return (f"PoS iteration ({self.params.get('variant')}): {self.status}, period {self.period}, "
                f"limit {{{lim}}} after {self.num_iter} steps; p_0 = {self.p[0]:.6g}, "
                f"p_n = {self.p[-1]:.6g}")

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(p=[float(x) for x in self.p], logit=[float(x) for x in self.logit],
                    status=self.status, period=int(self.period),
                    limit=[float(x) for x in self.limit], params=dict(self.params)))


def iterate_pos(p_ref, beta, eps=0.0, variant="ref", *, p0=None, alpha=None, max_iter=1000,
                tol=1e-12, max_period=8, logit_cap=36.0):
    """Iterate the PoS recurrence from ``p0`` (default ``p_ref``, i.e. ``pi_0 = pi_ref``).

    The iteration runs in logit space.  After every step it looks for the smallest period
    ``k <= max_period`` with ``|L_n - L_{n-k}| <= tol (1 + |L_n|)`` over the last ``2k`` steps;
    ``k = 1`` is reported as ``"converged"``, ``k >= 2`` as ``"cycle"``; a cycle whose points
    differ by less than ``1e-6 (1 + |L|)`` in logit space (near a period-doubling point, where
    ``h'(p*)`` is close to -1) is reported as converged to a fixed point.  A logit above
    ``logit_cap`` (``p > 1 - 2e-16`` for the default) is reported as ``"to_one"``.  Anything else
    after ``max_iter`` steps is ``"not_converged"``.  Convergence is never assumed
    (spec section 3.4, ambiguity 11).

    Returns
    -------
    PoSTrajectory

    Examples
    --------
    >>> tr = iterate_pos(1e-4, 7.24, 1e-5)
    >>> tr.status, tr.period, [round(x, 5) for x in tr.limit]
    ('cycle', 2, [0.00015, 0.85526])
    """
    _check_args(p_ref, beta, eps, variant, alpha)
    p0 = p_ref if p0 is None else p0
    L_ref = float(_logit(p_ref))
    L = [float(_logit(p0))]
    status, period, limit = "not_converged", 0, ()
    for _ in range(max_iter):
        L.append(float(_logit_map(L[-1], L_ref, beta, eps, variant, alpha, 0.0)))
        if not np.isfinite(L[-1]):
            # p_ref in {0, 1} (or p0 on the boundary): the boundary is absorbing
            status, period, limit = "converged", 1, (float(special.expit(L[-1])),)
            break
        if L[-1] > logit_cap:
            status, period, limit = "to_one", 0, (1.0,)
            break
        found = False
        for k in range(1, max_period + 1):
            if len(L) < 2 * k + 1:
                break
            a, b = np.asarray(L[-k:]), np.asarray(L[-2 * k:-k])
            if np.all(np.abs(a - b) <= tol * (1 + np.abs(a))):
                # a slowly alternating approach can match at stride k before its true period:
                # reduce to the smallest divisor k' of k with a invariant under a k'-shift
                k = min(j for j in range(1, k + 1) if k % j == 0 and np.all(
                    np.abs(a - np.roll(a, j)) <= _SPREAD_TOL * (1 + np.abs(a).max())))
                pts = np.sort(special.expit(a[:k]))
                status, period, limit = ("converged" if k == 1 else "cycle"), k, tuple(float(x) for x in pts)
                found = True
                break
        if found:
            break
    Ls = np.asarray(L)
    return PoSTrajectory(p=special.expit(Ls), logit=Ls, status=status, period=period, limit=limit,
                         params=dict(p_ref=float(p_ref), beta=float(beta), eps=float(eps),
                                     variant=variant, alpha=None if alpha is None else float(alpha),
                                     p0=float(p0), max_iter=int(max_iter), tol=float(tol)))


_SPREAD_TOL = 1e-6  # attractor points closer than this (relative, logit space) count as one point

STATUS_CODES = {"converged": 1, "cycle": 2, "to_one": 3, "not_converged": 0}


def classify_grid(p_ref, beta, eps=0.0, variant="ref", *, alpha=None, num_iter=2000, tol=1e-10,
                  max_period=8, logit_cap=36.0):
    """Vectorised :func:`iterate_pos` over broadcast arrays of ``(p_ref, beta, eps)``.

    Iterates ``num_iter`` steps from ``p_0 = p_ref`` in logit space, then classifies each cell by
    the smallest period ``k <= max_period`` with ``|L_n - L_{n-k}| <= tol (1 + |L_n|)`` for the
    last ``k`` steps.

    Returns
    -------
    status : ndarray of int
        Codes of :data:`STATUS_CODES` (1 converged, 2 cycle, 3 to_one, 0 not converged).
    period : ndarray of int
    p_low, p_high : ndarray
        Smallest and largest point of the attractor (equal for a fixed point; NaN if none).
    """
    _check_args(p_ref, beta, eps, variant, alpha)
    p_ref, beta, eps = np.broadcast_arrays(*(np.asarray(x, float) for x in (p_ref, beta, eps)))
    L_ref = _logit(p_ref)
    L = L_ref.copy()
    hist = []
    escaped = np.zeros(L.shape, bool)
    keep = 2 * max_period + 1
    for _ in range(num_iter):
        step = (1.0 / beta if variant in _MEAN_ONLY
                else 1.0 / np.sqrt(special.expit(L) * special.expit(-L) + eps) / beta)
        if variant in ("ref", "dr_grpo"):
            L = L_ref + step
        elif variant in ("mirror", "mirror_dr_grpo"):
            L = L + step
        else:
            L = alpha * L_ref + (1 - alpha) * L + step
        escaped |= L > logit_cap
        L = np.where(escaped, logit_cap + 1, L)
        hist.append(L)
        if len(hist) > keep:
            hist.pop(0)
    H = np.stack(hist)                                                       # (keep, ...)
    status = np.zeros(L.shape, int)
    period = np.zeros(L.shape, int)
    for k in range(max_period, 0, -1):   # smallest period wins: overwrite from large to small
        ok = np.all(np.abs(H[-k:] - H[-2 * k:-k]) <= tol * (1 + np.abs(H[-k:])), axis=0)
        period = np.where(ok, k, period)
    status = np.where(period == 1, 1, np.where(period > 1, 2, 0))
    # a period-k match whose points coincide is a fixed point approached slowly
    lo = _window_min(H, np.maximum(period, 1))
    hi = _window_max(H, np.maximum(period, 1))
    spread_small = (hi - lo) <= _SPREAD_TOL * (1 + np.maximum(np.abs(hi), np.abs(lo)))
    period = np.where((period > 1) & spread_small, 1, period)
    status = np.where(period == 1, 1, status)
    status = np.where(escaped, 3, status)
    period = np.where(escaped, 0, period)
    pl = np.where(status == 0, np.nan, special.expit(np.where(period > 0, _window_min(H, period), lo)))
    ph = np.where(status == 0, np.nan, special.expit(np.where(period > 0, _window_max(H, period), hi)))
    pl = np.where(escaped, 1.0, pl)
    ph = np.where(escaped, 1.0, ph)
    return status, period, pl, ph


def _window_min(H, period):
    out = np.full(H.shape[1:], np.inf)
    for k in range(1, H.shape[0] + 1):
        out = np.where(period == k, H[-k:].min(0), out)
    return out


def _window_max(H, period):
    out = np.full(H.shape[1:], -np.inf)
    for k in range(1, H.shape[0] + 1):
        out = np.where(period == k, H[-k:].max(0), out)
    return out
