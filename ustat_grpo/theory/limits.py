"""Theorem 8 of arXiv 2603.01162: the weighted chi-squared limit of ``n * gap`` under Algorithm 1.

With step ``eta_i = beta / i``, fixed ``B, G`` and the assumptions A6-A9,
``n * Delta(pi_theta_n) -> sum_k w_k chi2_1`` in distribution.  This module computes the weights:

1. ``H = hessian(J)`` at a maximiser; ``Q`` (d x r, ``Q^T Q = I_r``) spans the eigenvectors of
   ``H`` with non-zero eigenvalues (the identifiable subspace, A7) and ``K = -Q^T H Q`` (r x r, > 0).
2. ``Gamma = Cov(g_hat(theta*))`` of the minibatch estimator (exact, from the policy's moments):
   ``Gamma = (1/B) [Cov_X g(X) + E_X Cov(g_hat(X))]`` with the per-prompt covariances of spec §2.10
   (see :func:`noise_covariance`); ``Omega = Q^T Gamma Q``.
3. ``Sigma`` solves the continuous Lyapunov equation
   ``(beta K - I/2) Sigma + Sigma (beta K - I/2) = beta^2 Omega``; it exists iff
   ``beta * lambda_min(K) > 1/2``.
4. ``w_k = eig_k(K Sigma / 2)`` (non-increasing), and the limit law is
   :class:`ustat_grpo.stats.wchisq.WeightedChiSquared` with these weights and one degree of freedom each.

**Correction to the paper.** The paper's displayed ``Sigma`` omits the factor ``beta^2`` on
``Omega`` although its martingale increment ``Delta M = beta Q^T (g_hat - g)`` carries ``beta``
(spec §2.10 and §5 item 2).  The corrected equation is used by default; ``paper_display=True``
reproduces the uncorrected formula, which the paper check C7 rejects by simulation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from ..core._serialize import jsonable
from ..stats.wchisq import WeightedChiSquared

__all__ = ["LimitLaw", "noise_covariance", "per_prompt_covariance", "identifiable_subspace",
           "lyapunov_sigma", "limit_weights", "limit_law"]

def per_prompt_covariance(moments, estimator: str, *, num_generations: int, baseline=None) -> np.ndarray:
    """Exact ``Cov(g_hat(x))`` of a per-prompt estimator from ``G`` generations, shape (P, d, d).

    Parameters
    ----------
    moments : bandits.PromptMoments
        Exact per-prompt moments at the parameters of interest.
    estimator : {"oracle", "leave_one_out", "vanilla", "prompt_baseline"}
    num_generations : int
        ``G`` (``>= 2`` for leave_one_out).
    baseline : array_like, shape (P,), optional
        ``C(x)`` for ``"prompt_baseline"``.

    Notes
    -----
    Spec §2.5/§2.10 (arXiv 2603.01162, Theorem 2 and its matrix form):

    - oracle: ``Sigma_oracle / G`` with ``Sigma_oracle = Cov((Z - V) W | x)``;
    - leave_one_out (the paper's GRPO): ``Sigma_oracle / G + (sigma^2 I + g g^T) / (G (G - 1))``;
    - vanilla: ``(E[Z^2 W W^T] - g g^T) / G``;
    - prompt-only ``C(x)``: ``(E[(Z - C)^2 W W^T] - g g^T) / G`` with
      ``E[(Z - C)^2 W W^T] = E[Z^2 W W^T] - 2 C (Cov(Z, W W^T) + V I) + C^2 I``.
    """
    est = estimator
    G = int(num_generations)
    if G < 1 or (est == "leave_one_out" and G < 2):
        raise ValueError(f"num_generations must be >= {2 if est == 'leave_one_out' else 1}, got {num_generations}")
    g = np.asarray(moments.grad, float)  # (P, d)
    ggT = np.einsum("pd,pe->pde", g, g)
    if est == "oracle":
        return np.asarray(moments.sigma_oracle, float) / G
    if est == "leave_one_out":
        s2 = np.asarray(moments.sigma2, float)[:, None, None]
        return (np.asarray(moments.sigma_oracle, float) / G
                + (s2 * np.asarray(moments.fisher, float) + ggT) / (G * (G - 1)))
    if est == "vanilla":
        return (np.asarray(moments.second_moment_zw, float) - ggT) / G
    if est == "prompt_baseline":
        if baseline is None:
            raise ValueError("prompt_baseline needs baseline= (C(x) per prompt, shape (P,))")
        czz = getattr(moments, "cov_z_ww", None)
        if czz is None:
            raise ValueError("prompt_baseline needs moments.cov_z_ww = Cov(Z, W W^T | x)")
        C = np.broadcast_to(np.asarray(baseline, float), np.shape(moments.value))[:, None, None]
        V = np.asarray(moments.value, float)[:, None, None]
        fisher = np.asarray(moments.fisher, float)
        ezww = np.asarray(czz, float) + V * fisher  # E[Z W W^T | x]
        second = np.asarray(moments.second_moment_zw, float) - 2 * C * ezww + C**2 * fisher
        return (second - ggT) / G
    raise ValueError(f"unknown estimator {estimator!r}; use oracle, leave_one_out, vanilla or prompt_baseline")


def noise_covariance(moments, estimator: str, *, num_prompts: int, num_generations: int,
                     baseline=None) -> np.ndarray:
    """``Gamma = Cov(g_hat)`` of the minibatch estimator (mean over ``B`` i.i.d. prompts), (d, d).

    ``Gamma = (1/B) [Cov_X g(X) + E_X Cov(g_hat(X) | X)]`` (spec §2.10): the law of total covariance
    for per-prompt estimators that are conditionally unbiased for ``g(x)``.
    """
    B = int(num_prompts)
    if B < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    f = np.asarray(moments.prompt_probs, float)
    g = np.asarray(moments.grad, float)
    gbar = f @ g
    cov_x = np.einsum("p,pd,pe->de", f, g - gbar, g - gbar)
    within = np.einsum("p,pde->de", f, per_prompt_covariance(moments, estimator, num_generations=num_generations,
                                                              baseline=baseline))
    gam = (cov_x + within) / B
    return 0.5 * (gam + gam.T)


def identifiable_subspace(hessian, *, rtol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, K)``: orthonormal basis ``Q`` (d, r) of the non-null eigenspace of ``H`` and
    ``K = -Q^T H Q`` (r, r).  Eigenvalues with ``|lambda| <= rtol * max |lambda|`` count as zero."""
    H = np.asarray(hessian, float)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"hessian must be square, got shape {H.shape}")
    H = 0.5 * (H + H.T)
    lam, vec = np.linalg.eigh(H)
    keep = np.abs(lam) > rtol * np.max(np.abs(lam))
    if not keep.any():
        raise ValueError("the Hessian is zero: no identifiable subspace")
    Q = vec[:, keep]
    K = -Q.T @ H @ Q
    return Q, 0.5 * (K + K.T)


def lyapunov_sigma(K, Omega, *, beta: float, paper_display: bool = False) -> np.ndarray:
    """Solve ``(beta K - I/2) Sigma + Sigma (beta K - I/2) = beta^2 Omega`` for ``Sigma`` (r, r).

    ``paper_display=True`` drops the ``beta^2`` (the paper's uncorrected display).  Raises
    ``ValueError`` unless ``beta * lambda_min(K) > 1/2`` (A5(b); otherwise the stochastic
    approximation has no ``1/sqrt(n)`` limit and ``Sigma`` would not be positive definite).
    """
    K = np.asarray(K, float)
    lam_min = float(np.linalg.eigvalsh(0.5 * (K + K.T)).min())
    if not beta * lam_min > 0.5:
        raise ValueError(
            f"Theorem 8 needs beta * lambda_min(K) > 1/2 (step beta/i with beta > 1/(2 mu)); got "
            f"beta = {beta:g}, lambda_min(K) = {lam_min:.6g}, product {beta * lam_min:.6g}. "
            f"Use beta > {0.5 / lam_min:.6g}." if lam_min > 0 else
            f"Theorem 8 needs K = -Q^T H Q positive definite; lambda_min(K) = {lam_min:.6g}")
    A = beta * K - 0.5 * np.eye(K.shape[0])
    rhs = (1.0 if paper_display else beta**2) * np.asarray(Omega, float)
    S = linalg.solve_continuous_lyapunov(A, rhs)
    return 0.5 * (S + S.T)


@dataclass(frozen=True, kw_only=True)
class LimitLaw:
    """Theorem 8 limit of ``n * Delta(pi_theta_n)``.

    Attributes
    ----------
    weights : ndarray, shape (r,)
        ``w_k = eig_k(K Sigma / 2)``, non-increasing.
    K, Omega, Sigma : ndarray, shape (r, r)
        ``-Q^T H Q``, ``Q^T Gamma Q`` and the Lyapunov solution (the asymptotic covariance of
        ``sqrt(n) Q^T (theta_n - theta*)``).
    Q : ndarray, shape (d, r)
    beta : float
    lyapunov_residual : float
        ``||A Sigma + Sigma A - beta^2 Omega||_F / ||beta^2 Omega||_F``.
    paper_display : bool
        True when computed without the ``beta^2`` correction.
    config : dict
    """

    weights: np.ndarray
    K: np.ndarray
    Omega: np.ndarray
    Sigma: np.ndarray
    Q: np.ndarray
    beta: float
    lyapunov_residual: float
    paper_display: bool = False
    config: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.weights.size)

    def law(self, method: str = "imhof") -> WeightedChiSquared:
        """The limit law ``sum_k w_k chi2_1`` as a :class:`WeightedChiSquared`."""
        return WeightedChiSquared(self.weights, method=method)

    def mean(self) -> float:
        """``sum_k w_k = tr(K Sigma) / 2``, the limit of ``n E Delta``."""
        return float(self.weights.sum())

    def summary(self) -> str:
        c = self.config
        head = (f"Theorem 8 limit law ({c.get('estimator', '?')}, B={c.get('num_prompts', '?')}, "
                f"G={c.get('num_generations', '?')}, beta={self.beta:g}"
                f"{', paper display without beta^2' if self.paper_display else ''})")
        return "\n".join([
            head,
            f"  rank r = {self.rank}, eig(K) = {np.array2string(np.linalg.eigvalsh(self.K), precision=6)}",
            f"  weights w = {np.array2string(self.weights, precision=6)}, sum = {self.mean():.6g}",
            f"  Lyapunov residual {self.lyapunov_residual:.2e}",
        ])

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(json.loads(json.dumps(dict(
            weights=self.weights.tolist(), K=self.K.tolist(), Omega=self.Omega.tolist(),
            Sigma=self.Sigma.tolist(), Q=self.Q.tolist(), beta=self.beta,
            lyapunov_residual=self.lyapunov_residual, paper_display=self.paper_display, config=self.config))))


def limit_weights(hessian, gamma, *, beta: float, paper_display: bool = False, rtol: float = 1e-9,
                  config: dict | None = None) -> LimitLaw:
    """Weights of the Theorem 8 limit from the Hessian at a maximiser and the noise covariance.

    Parameters
    ----------
    hessian : array_like, shape (d, d)
        ``H(theta*)`` (negative semi-definite).
    gamma : array_like, shape (d, d)
        ``Gamma = Cov(g_hat(theta*))`` of the minibatch estimator (:func:`noise_covariance`).
    beta : float
        Step-size constant of ``eta_i = beta / i``; needs ``beta * lambda_min(K) > 1/2``.
    paper_display : bool
        Use the paper's display without ``beta^2`` (wrong; for negative controls).
    rtol : float
        Relative threshold below which Hessian eigenvalues count as zero.

    Returns
    -------
    LimitLaw

    Notes
    -----
    arXiv 2603.01162, Theorem 8, with the ``beta^2`` correction of spec §2.10:
    ``(beta K - I/2) Sigma + Sigma (beta K - I/2) = beta^2 Omega`` and ``w = eig(K Sigma / 2)``.
    The eigenvalues are computed from the symmetric ``K^{1/2} Sigma K^{1/2} / 2``.

    Examples
    --------
    >>> import numpy as np
    >>> H = -np.diag([2.0, 1.0, 0.0])          # rank 2: the third direction is flat
    >>> ll = limit_weights(H, np.eye(3), beta=1.0)
    >>> np.round(ll.weights, 12)               # beta^2 k w / (2 (2 beta k - 1)) = 1/3, 1/2
    array([0.5       , 0.33333333])
    """
    Q, K = identifiable_subspace(hessian, rtol=rtol)
    Gam = np.asarray(gamma, float)
    if Gam.shape != (Q.shape[0], Q.shape[0]):
        raise ValueError(f"gamma must have shape {(Q.shape[0],) * 2}, got {Gam.shape}")
    Omega = Q.T @ (0.5 * (Gam + Gam.T)) @ Q
    S = lyapunov_sigma(K, Omega, beta=beta, paper_display=paper_display)
    A = beta * K - 0.5 * np.eye(K.shape[0])
    rhs = (1.0 if paper_display else beta**2) * Omega
    resid = float(np.linalg.norm(A @ S + S @ A - rhs) / max(np.linalg.norm(rhs), np.finfo(float).tiny))
    kval, kvec = np.linalg.eigh(K)
    Kh = (kvec * np.sqrt(kval)) @ kvec.T  # K^{1/2}
    w = np.linalg.eigvalsh(0.5 * Kh @ S @ Kh)[::-1]
    return LimitLaw(weights=np.maximum(w, 0.0), K=K, Omega=Omega, Sigma=S, Q=Q, beta=float(beta),
                    lyapunov_residual=resid, paper_display=paper_display, config=dict(config or {}))


def limit_law(policy, estimator: str, *, num_prompts: int, num_generations: int, beta: float,
              theta=None, baseline=None, paper_display: bool = False) -> LimitLaw:
    """:func:`limit_weights` for a ``bandits.py`` policy at a maximiser.

    Parameters
    ----------
    policy : bandit policy with ``optimum()``, ``hessian(theta)``, ``moments(theta)``
    estimator : {"oracle", "leave_one_out", "vanilla", "prompt_baseline"}
    num_prompts, num_generations : int
        ``B`` and ``G``.
    beta : float
        Step-size constant (``eta_i = beta / i``).
    theta : array_like, shape (d,), optional
        The maximiser to use (default ``policy.optimum()[0]``).
    baseline : array_like, shape (P,), optional
        ``C(x)`` for ``"prompt_baseline"``.
    paper_display : bool
        Drop the ``beta^2`` correction (negative control).
    """
    th = np.asarray(policy.optimum()[0] if theta is None else theta, float)
    mom = policy.moments(th)
    gam = noise_covariance(mom, estimator, num_prompts=num_prompts, num_generations=num_generations,
                           baseline=baseline)
    cfg = dict(estimator=estimator, num_prompts=int(num_prompts), num_generations=int(num_generations),
               beta=float(beta), theta=th.tolist(), policy=repr(policy))
    return limit_weights(policy.hessian(th), gam, beta=beta, paper_display=paper_display, config=cfg)
