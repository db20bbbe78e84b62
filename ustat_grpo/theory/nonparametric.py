"""The exact non-parametric GRPO step on a finite output set, and the contrastive loss (Paper 2).

With a binary verifiable reward the maximiser of ``E_pi[A] - beta KL(pi || anchor)`` is an
exponential tilt of the anchor on the success indicator (:func:`optimal_policy`);
:func:`nonparametric_step` applies it with the anchor of each variant of
:mod:`ustat_grpo.theory.amplification`, and :func:`renyi_correction` is the extra term of the two-KL
recurrence.  :func:`grpo_clip_objective`, :func:`contrastive_objective` and
:func:`balanced_contrastive_objective` are the three equal forms of the clipped objective
(check M1).  arXiv 2503.06639v4; spec 3.1-3.3 (corrected forms, ambiguity 12).

Examples
--------
>>> import numpy as np
>>> pi = optimal_policy([0.5, 0.5], [True, False], 0.5, 1.0)
>>> [round(float(x), 4) for x in pi]
[0.8808, 0.1192]
"""
from __future__ import annotations

import numpy as np

from .amplification import _MEAN_ONLY, _check_args, omega_minus, omega_plus, whitened_advantage

__all__ = [
    "optimal_policy", "regularized_objective", "nonparametric_step", "renyi_divergence", "renyi_correction",
    "grpo_clip_objective", "contrastive_objective", "balanced_contrastive_objective",
]


def _as_policy(pi):
    pi = np.asarray(pi, float)
    if pi.ndim != 1 or np.any(pi < 0) or not np.isclose(pi.sum(), 1.0, rtol=0, atol=1e-12):
        raise ValueError("a policy is a 1-d probability vector")
    return pi


def optimal_policy(anchor, success, p_adv, beta, eps=0.0, *, normalization="mean_std"):
    """Closed-form ``argmax_pi E_pi[A] - beta KL(pi || anchor)`` on a finite output set.

    Parameters
    ----------
    anchor : ndarray (K,)
        Anchor policy ``pi_o`` (a probability vector; for two KLs the normalised geometric mean).
    success : ndarray (K,) of bool
        ``r(o) = 1`` outputs.
    p_adv : float
        PoS ``p_nu`` at which the advantage weights are evaluated (``p_{n-1}``).
    beta, eps, normalization :
        See :func:`whitened_advantage`.

    Returns
    -------
    ndarray (K,)
        ``anchor * exp(A / beta) / Z`` with ``Z = p_o e^{omega^+/beta} + (1 - p_o) e^{-omega^-/beta}``
        (spec 3.3; the paper's general theorem omits the ``1/beta``, corrected here).
    """
    anchor = _as_policy(anchor)
    A = whitened_advantage(np.asarray(success, float), p_adv, eps, normalization=normalization)
    logw = np.log(anchor, where=anchor > 0, out=np.full_like(anchor, -np.inf)) + A / beta
    w = np.exp(logw - logw[np.isfinite(logw)].max())
    return w / w.sum()


def regularized_objective(pi, success, p_adv, beta, eps=0.0, *, pi_ref, pi_prev=None, alpha=1.0,
                          normalization="mean_std"):
    """``E_pi A - beta [alpha KL(pi||pi_ref) + (1 - alpha) KL(pi||pi_prev)]`` (spec 3.2, no clip)."""
    pi = np.asarray(pi, float)
    A = whitened_advantage(np.asarray(success, float), p_adv, eps, normalization=normalization)

    def kl(q):
        m = pi > 0
        return float(np.sum(pi[m] * (np.log(pi[m]) - np.log(np.asarray(q, float)[m]))))

    pen = alpha * kl(pi_ref) + ((1.0 - alpha) * kl(pi_prev) if alpha < 1 else 0.0)
    return float(pi @ A) - beta * pen


def _geometric_anchor(pi_ref, pi_prev, alpha):
    logq = alpha * np.log(pi_ref) + (1.0 - alpha) * np.log(pi_prev)
    q = np.exp(logq - logq.max())
    return q / q.sum()


def nonparametric_step(pi_prev, pi_ref, success, beta, eps=0.0, variant="ref", *, alpha=None):
    """One exact non-parametric GRPO step ``pi_{n-1} -> pi_n`` on a finite output set (spec 3.2-3.3).

    The advantage uses ``p_{n-1} = P_{pi_{n-1}}(r = 1)``; the anchor is ``pi_ref`` ("ref",
    "dr_grpo"), ``pi_{n-1}`` (mirror variants) or the normalised ``pi_ref^alpha pi_{n-1}^(1-alpha)``
    ("both").
    """
    _check_args(0.5, beta, eps, variant, alpha)
    pi_prev, pi_ref = _as_policy(pi_prev), _as_policy(pi_ref)
    success = np.asarray(success, bool)
    p_prev = float(pi_prev[success].sum())
    norm = "mean" if variant in _MEAN_ONLY else "mean_std"
    if variant in ("ref", "dr_grpo"):
        anchor = pi_ref
    elif variant in ("mirror", "mirror_dr_grpo"):
        anchor = pi_prev
    else:
        anchor = _geometric_anchor(pi_ref, pi_prev, alpha)
    return optimal_policy(anchor, success, p_prev, beta, eps, normalization=norm)


def renyi_divergence(P, Q, alpha):
    """``D_alpha(P || Q) = log(sum P^alpha Q^(1-alpha)) / (alpha - 1)`` (alpha != 1)."""
    P, Q = np.asarray(P, float), np.asarray(Q, float)
    if alpha == 1:
        raise ValueError("alpha = 1 is the KL limit; not needed here")
    return float(np.log(np.sum(P ** alpha * Q ** (1.0 - alpha))) / (alpha - 1.0))


def renyi_correction(pi_ref, pi_prev, success, alpha):
    """Renyi correction of the two-KL recurrence (spec 3.3, corrected indicator).

    ``Delta_R = (1 - alpha) [D_alpha(p_ref,F || p_{n-1},F) - D_alpha(p_ref,S || p_{n-1},S)]``
    where ``p_.,S`` / ``p_.,F`` are the policies conditioned on success / failure.  The paper
    defines ``p_{n-1,S}`` with ``1{r=0}``; the success indicator ``1{r=1}`` is the correct one.
    ``Delta_R = 0`` when ``pi_prev`` is an exponential tilt of ``pi_ref`` on ``1{r=1}``.
    """
    pi_ref, pi_prev = _as_policy(pi_ref), _as_policy(pi_prev)
    s = np.asarray(success, bool)
    if alpha == 1:
        return 0.0
    cond = lambda pi, m: pi[m] / pi[m].sum()  # noqa: E731
    dF = renyi_divergence(cond(pi_ref, ~s), cond(pi_prev, ~s), alpha)
    dS = renyi_divergence(cond(pi_ref, s), cond(pi_prev, s), alpha)
    return (1.0 - alpha) * (dF - dS)


# ----------------------------------------------------------------------------- contrastive loss (M1)

def grpo_clip_objective(pi, pi_old, success, eps_clip, eps=0.0):
    """``E_{o ~ pi_old} f_eps(pi/pi_old, A)`` with ``f_eps(x, y) = min(x y, clip(x, 1-eps, 1+eps) y)``.

    Computed directly from the definition (spec 3.1), one prompt, no KL.
    """
    pi, pi_old = np.asarray(pi, float), np.asarray(pi_old, float)
    s = np.asarray(success, bool)
    p = float(pi_old[s].sum())
    A = whitened_advantage(s.astype(float), p, eps)
    x = pi / pi_old
    f = np.minimum(x * A, np.clip(x, 1 - eps_clip, 1 + eps_clip) * A)
    return float(pi_old @ f)


def contrastive_objective(pi, pi_old, success, eps_clip, eps=0.0):
    """Weighted contrastive form (spec 3.2, check M1; unconditional indicator expectations).

    ``omega^+(p) E_old[min(x, 1+eps) 1{r=1}] - omega^-(p) E_old[max(x, 1-eps) 1{r=0}]``.
    """
    pi, pi_old = np.asarray(pi, float), np.asarray(pi_old, float)
    s = np.asarray(success, bool)
    p = float(pi_old[s].sum())
    x = pi / pi_old
    pos = float(np.sum(pi_old[s] * np.minimum(x[s], 1 + eps_clip)))
    neg = float(np.sum(pi_old[~s] * np.maximum(x[~s], 1 - eps_clip)))
    return float(omega_plus(p, eps)) * pos - float(omega_minus(p, eps)) * neg


def balanced_contrastive_objective(pi, pi_old, success, eps_clip, eps=0.0):
    """Balanced form ``w(p) (E_{pi_old^+}[min(x, 1+eps)] - E_{pi_old^-}[max(x, 1-eps)])`` (spec 3.2, [D]).

    ``w(p) = p (1 - p) / sqrt(p (1 - p) + eps)``; ``pi_old^+/-`` are the success/failure conditionals.
    """
    pi, pi_old = np.asarray(pi, float), np.asarray(pi_old, float)
    s = np.asarray(success, bool)
    p = float(pi_old[s].sum())
    x = pi / pi_old
    w = p * (1 - p) / np.sqrt(p * (1 - p) + eps)
    pos = float(np.sum(pi_old[s] * np.minimum(x[s], 1 + eps_clip)) / p)
    neg = float(np.sum(pi_old[~s] * np.maximum(x[~s], 1 - eps_clip)) / (1 - p))
    return float(w * (pos - neg))
