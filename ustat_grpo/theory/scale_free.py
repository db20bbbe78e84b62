"""A scale-free error criterion for GRPO-family gradient estimators, exact on finite bandits.

Raw MSE against ``grad J`` mixes two things a trainer does not care about with the one it does:
the *scale* of the estimator (Dr.GRPO's group mean is exactly ``(G-1)/G`` times leave-one-out;
the std-normalised estimator is measured in reward-std units) and its *noise and direction*.
SGD's learning rate absorbs a constant scale and Adam is invariant to it, so we compare
estimators after the best rescaling:

    R(G) = min_c E||c g_hat - grad J||^2 / ||grad J||^2  =  1 - cos^2(theta_G) / (1 + rho_G),

with ``g_hat = (1/B) sum_b f_b`` the minibatch estimate at ``B = N/G`` prompts, ``mu_G = E g_hat``,
``cos(theta_G) = <mu_G, grad J> / (||mu_G|| ||grad J||)`` (direction) and the noise-to-signal ratio
``rho_G = tr Cov(g_hat) / ||mu_G||^2 = G V_G / (N ||mu_G||^2)``, ``V_G = E||f||^2 - ||mu_G||^2`` the
per-group variance.  The minimiser is ``c* = <mu_G, grad J> / E||g_hat||^2``.  Properties (each a
test): ``R`` is unchanged when the estimator or the rewards are multiplied by a positive constant;
Dr.GRPO has exactly leave-one-out's ``R`` for every G; for leave-one-out (``cos = 1``)
``R = MSE / (||grad J||^2 + MSE)``, an increasing function of the exact MSE law, so it ranks G as
that law does and has the same optimum ``G* = 1 + sqrt(A3/A1)``.

This module evaluates ``R`` exactly on the finite bandits of :mod:`ustat_grpo.policies.bandits` by
enumerating every multiset of ``G`` outcomes (arm, reward value) of each prompt, for any
estimator ``f(rewards (K, G), scores (K, G, d))``, and gives the large-G expansion of the
std-normalised estimator (``docs/scale_free_criterion.md``).  The pool estimate from samples is
:func:`ustat_grpo.scaling.pool.compare_estimators`.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from . import estimators as est
from .presets import PRESETS

__all__ = ["ESTIMATOR_FUNCTIONS", "exact_group_moments", "exact_criterion", "criterion_from_moments",
           "std_normalized_expansion"]


#: Per-prompt estimators by name: the estimator names of :data:`ustat_grpo.theory.estimators.ESTIMATORS`
#: (``group_mean`` is Dr.GRPO's advantage), ``std_normalized`` at each framework's eps (TRL 1e-4,
#: verl 1e-6, OpenRLHF 1e-9, none).
ESTIMATOR_FUNCTIONS = {
    "leave_one_out": est.leave_one_out,
    "group_mean": est.group_mean,
    "std_normalized": est._std_with_eps(PRESETS["grpo"].eps),
    "std_normalized_verl": est._std_with_eps(PRESETS["verl_grpo"].eps),
    "std_normalized_openrlhf": est._std_with_eps(PRESETS["openrlhf_group_norm"].eps),
    "std_normalized_noeps": est._std_with_eps(0.0),
}


def _atoms(policy, x, theta=None):
    """Outcomes of prompt ``x``: probabilities (n,), rewards (n,), scores (n, d); zero-probability atoms dropped."""
    pi = policy.policy_probs(theta)[x]                                        # (K,)
    phi = policy.features[x]                                                  # (K, d)
    W = phi - pi @ phi                                                        # (K, d)
    q = pi[:, None] * policy.reward_probs[x]                                  # (K, M)
    keep = q > 0
    arms = np.nonzero(keep)[0]
    return q[keep], policy.reward_values[x][keep], W[arms]


def _multisets(n, G):
    """Every multiset of ``G`` draws from ``n`` atoms: sorted index rows (C, G) and multinomial log-weights (C,)."""
    rows = np.array(list(itertools.combinations_with_replacement(range(n), G)), dtype=np.int64)   # (C, G)
    counts = np.stack([(rows == a).sum(1) for a in range(n)], 1)             # (C, n)
    logc = math.lgamma(G + 1) - np.sum([[math.lgamma(c + 1) for c in row] for row in counts], 1)
    return rows, counts, np.asarray(logc)


def exact_group_moments(policy, estimator, num_generations: int, *, theta=None, batch: int = 20000):
    """Exact ``E[f | x]`` (P, d) and ``E[||f||^2 | x]`` (P,) of a group estimator at ``G`` draws per prompt.

    Parameters
    ----------
    policy : ContextualSoftmaxBandit or SoftmaxBandit
        A finite bandit (finitely many arms and reward values per prompt).
    estimator : str or callable
        A key of :data:`ESTIMATOR_FUNCTIONS` or ``f(rewards (K, G), scores (K, G, d)) -> (K, d)``.
    num_generations : int
        G.
    batch : int
        Multisets evaluated per call of ``f`` (bounds memory).

    Notes
    -----
    The estimators are symmetric in the group, so ``E[f | x] = sum over multisets m of
    P(m) f(m)`` with the multinomial ``P(m) = G!/prod c_a! prod p_a^{c_a}``: ``C(G + n - 1, G)``
    evaluations for ``n`` outcomes, exact up to rounding.
    """
    f = ESTIMATOR_FUNCTIONS[estimator] if isinstance(estimator, str) else estimator
    G = int(num_generations)
    P, d = policy.num_contexts, policy.dim
    mean, m2 = np.zeros((P, d)), np.zeros(P)
    for x in range(P):
        p, z, w = _atoms(policy, x, theta)
        rows, counts, logc = _multisets(len(p), G)
        with np.errstate(divide="ignore"):
            logw = logc + counts @ np.log(p)                                  # (C,)
        wt = np.exp(logw)
        for lo in range(0, len(rows), batch):
            idx = rows[lo:lo + batch]                                         # (c, G)
            v = f(z[idx], w[idx])                                             # (c, d)
            mean[x] += wt[lo:lo + batch] @ v
            m2[x] += wt[lo:lo + batch] @ (v * v).sum(1)
    return mean, m2


def criterion_from_moments(mean_x, m2_x, prompt_probs, grad, *, num_generations, budget):
    """``R``, ``rho``, ``cos`` and raw MSE from per-prompt moments (module notes); arrays broadcast over G.

    Parameters
    ----------
    mean_x : (P, d)  E[f | x];   m2_x : (P,)  E[||f||^2 | x];   prompt_probs : (P,);   grad : (d,)  grad J
    num_generations, budget : G and N (``B = N / G`` prompts)

    Returns
    -------
    dict with ``criterion`` (R), ``noise_to_signal`` (rho), ``cosine``, ``mse`` (raw, against grad J),
    ``variance`` (per group, V_G) and ``mean`` (mu_G, (d,)).
    """
    f = np.asarray(prompt_probs, float)
    mu = f @ mean_x                                                           # (d,)
    V = f @ m2_x - mu @ mu
    B = budget / num_generations
    gg, mm, mg = grad @ grad, mu @ mu, mu @ grad
    e2 = V / B + mm                                                           # E||g_hat||^2
    return dict(criterion=1.0 - mg * mg / (gg * e2), noise_to_signal=V / B / mm,
                cosine=mg / math.sqrt(mm * gg), mse=V / B + (mu - grad) @ (mu - grad), variance=V, mean=mu)


def exact_criterion(policy, estimator, num_generations, *, budget: int, theta=None) -> dict:
    """Exact scale-free criterion of ``estimator`` for each G at budget N on a finite bandit.

    Returns
    -------
    dict of arrays over ``num_generations``: ``criterion`` (R), ``noise_to_signal``, ``cosine``,
    ``mse`` (raw, against ``grad J``), ``variance``; and ``num_generations``.

    Examples
    --------
    >>> import numpy as np
    >>> from ustat_grpo.policies.bandits import SoftmaxBandit
    >>> b = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])
    >>> loo = exact_criterion(b, "leave_one_out", [2, 4], budget=16)["criterion"]
    >>> dr = exact_criterion(b, "group_mean", [2, 4], budget=16)["criterion"]
    >>> bool(np.allclose(loo, dr, rtol=1e-12))
    True
    """
    gs = [int(g) for g in np.atleast_1d(num_generations)]
    grad = policy.gradient(theta)
    rows = []
    for G in gs:
        mean_x, m2_x = exact_group_moments(policy, estimator, G, theta=theta)
        rows.append(criterion_from_moments(mean_x, m2_x, policy.prompt_probs, grad, num_generations=G, budget=budget))
    out = {k: np.array([r[k] for r in rows]) for k in ("criterion", "noise_to_signal", "cosine", "mse", "variance")}
    out["num_generations"] = np.array(gs)
    return out


def std_normalized_expansion(policy, *, theta=None) -> dict:
    """Large-G expansion of the std-normalised estimator (eps = 0), per prompt.

    ``E[f | x] = g(x)/sigma(x) + beta(x)/G + O(G^-2)`` (plus terms of order ``P(all G rewards
    equal)``, exponentially small in G when ``0 < sigma(x)``), and
    ``Cov(f | x) = Cov(psi(D) | x)/G + O(G^-2)`` with the influence function
    ``psi(D) = [(Z - V) W - g]/sigma - g [(Z - V)^2 - sigma^2]/(2 sigma^3)``, where

        beta(x) = -g/sigma - (E[(Z - V)^3 W] - g sigma^2)/(2 sigma^3) + 3 g (E(Z - V)^4 - sigma^4)/(8 sigma^5).

    For binary rewards with success rate p: ``beta = -(g/sigma)(1 + (1 - 2p)^2 / (8 p (1 - p)))``.

    Returns
    -------
    dict: ``limit`` (P, d) ``g/sigma``; ``beta`` (P, d); ``cov_psi`` (P, d, d); ``sigma`` (P,).
    Prompts with ``sigma = 0`` get zeros (their estimate is exactly 0 for every G).
    """
    P, d = policy.num_contexts, policy.dim
    out = dict(limit=np.zeros((P, d)), beta=np.zeros((P, d)), cov_psi=np.zeros((P, d, d)), sigma=np.zeros(P))
    for x in range(P):
        p, z, w = _atoms(policy, x, theta)
        V = p @ z
        c = z - V                                                             # (n,)
        s2 = p @ c ** 2
        if s2 <= 0:
            continue
        s = math.sqrt(s2)
        g = (p * c) @ w                                                       # E[(Z - V) W] = E[Z W] (E W = 0)
        m3w = (p * c ** 3) @ w
        k4 = p @ c ** 4
        beta = -g / s - (m3w - g * s2) / (2 * s ** 3) + 3 * g * (k4 - s2 * s2) / (8 * s ** 5)
        psi = (c[:, None] * w - g) / s - np.outer(c ** 2 - s2, g) / (2 * s ** 3)   # (n, d)
        out["limit"][x], out["beta"][x], out["sigma"][x] = g / s, beta, s
        out["cov_psi"][x] = np.einsum("n,nd,ne->de", p, psi, psi)
    return out
