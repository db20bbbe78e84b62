"""Toy policies with exact per-prompt moments: the ground truth for every Monte Carlo check.

Three policies satisfy every protocol of :mod:`ustat_grpo.policies.policy` (``Policy``,
``ReplicatedSampling``, ``ExactMoments``, ``KnownOptimum``):

* :class:`SoftmaxBandit` -- one prompt, ``K`` arms, logits ``theta`` (``d = K``);
* :class:`ContextualSoftmaxBandit` -- ``P`` prompts with probabilities ``f``, shared ``theta (d,)``,
  features ``phi (P, K, d)``, logits ``phi[x] @ theta``; the between-prompt term ``A1`` is non-zero;
* :class:`GaussianPolicyBandit` -- Gaussian actions ``a ~ N(u_x . theta, s^2)`` with
  ``u_x = features[x] @ mixing`` of rank ``r < d`` (a redundant over-parameterisation), and bounded
  reward ``Z = exp(-(a - a*_x)^2 / (2 tau^2))``: the maximiser set is an affine manifold of
  dimension ``d - r`` and the Hessian of ``J`` there has rank ``r`` (spec check C7).

Finite bandits take per-(prompt, arm) reward distributions with finite support (Bernoulli success
probabilities for binary verifiable rewards, deterministic values, or general ``reward_values`` /
``reward_probs``).  All moments are exact: sums over arms, or closed-form Gaussian integrals.

Score ``W = grad_theta log pi(Y|x)``: softmax ``W_a = phi[x, a] - sum_b pi_b phi[x, b]``;
Gaussian ``W = (a - m_x) / s^2 * u_x``.  In both families the Hessian of ``V(x)`` is
``E[(Z - V) W W^T | x]`` because ``grad W = -I(x)`` does not depend on the action.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import numpy as np

from ..core._random import default_rng
from ..core._serialize import jsonable as _jsonable
from .policy import Sample

__all__ = ["Sample", "PromptMoments", "SoftmaxBandit", "ContextualSoftmaxBandit", "GaussianPolicyBandit",
           "default_bandit"]


@dataclass(frozen=True, kw_only=True)
class PromptMoments:
    """Exact per-prompt moments at one ``theta``, one row per prompt (all conditional on ``X = x``).

    Attributes
    ----------
    prompt_probs : (P,)   f(x)
    value : (P,)          V(x) = E[Z|x]
    grad : (P, d)         g(x) = E[WZ|x]
    sigma2 : (P,)         Var(Z|x)
    fisher : (P, d, d)    I(x) = E[W W^T|x]
    sigma_oracle : (P, d, d)      Cov((Z - V) W | x)
    second_moment_zw : (P, d, d)  E[Z^2 W W^T | x]
    cov_z_w2 : (P,)       Cov(Z, ||W||^2 | x)
    cov_z_ww : (P, d, d) or None
        E[(Z - V) W W^T | x] (trace = ``cov_z_w2``).  Optional extension of the contract: it gives
        the covariance of prompt-baseline estimators and, for the toy policies here, the Hessian of V.

    Notes
    -----
    Notation of arXiv 2603.01162, Section 2 / spec §1.
    """

    prompt_probs: np.ndarray
    value: np.ndarray
    grad: np.ndarray
    sigma2: np.ndarray
    fisher: np.ndarray
    sigma_oracle: np.ndarray
    second_moment_zw: np.ndarray
    cov_z_w2: np.ndarray
    cov_z_ww: np.ndarray | None = None

    @property
    def num_contexts(self) -> int:
        return int(self.value.shape[0])

    @property
    def dim(self) -> int:
        return int(self.grad.shape[-1])

    def summary(self) -> str:
        lines = [f"PromptMoments: P={self.num_contexts} prompts, d={self.dim}",
                 f"{'x':>3} {'f(x)':>8} {'V(x)':>8} {'sigma2':>8} {'||g||^2':>10} {'tr I':>10} {'tr Sig_or':>10}"]
        for x in range(self.num_contexts):
            lines.append(f"{x:>3} {self.prompt_probs[x]:8.4f} {self.value[x]:8.4f} {self.sigma2[x]:8.4f} "
                         f"{self.grad[x] @ self.grad[x]:10.4g} {np.trace(self.fisher[x]):10.4g} "
                         f"{np.trace(self.sigma_oracle[x]):10.4g}")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


# ---------------------------------------------------------------------------- shared machinery

class _Policy:
    """Common parameter handling; subclasses define ``_moments(theta)``, ``_values`` and ``_sample``.

    :meth:`sample` draws at ``theta (d,)`` or at a batch ``(R, d)``; :meth:`sample_replicates` is
    the batch form of the :class:`ustat_grpo.policies.policy.ReplicatedSampling` protocol.
    """

    _theta: np.ndarray
    prompt_probs: np.ndarray

    @property
    def theta(self) -> np.ndarray:
        return self._theta.copy()

    @property
    def num_contexts(self) -> int:
        return int(self.prompt_probs.shape[0])

    def with_theta(self, theta):
        """Same policy at new parameters ``theta (d,)``."""
        new = copy.copy(self)
        new._theta = self._check_theta(theta, allow_batch=False)
        return new

    def _check_theta(self, theta, *, allow_batch):
        if theta is None:
            return self._theta
        t = np.asarray(theta, dtype=float)
        ok = t.shape == (self.dim,) or (allow_batch and t.ndim == 2 and t.shape[1] == self.dim)
        if not ok:
            want = f"({self.dim},)" + (f" or (R, {self.dim})" if allow_batch else "")
            raise ValueError(f"theta must have shape {want}, got {t.shape}")
        if not np.isfinite(t).all():
            raise ValueError("theta must be finite")
        return t

    def moments(self, theta=None) -> PromptMoments:
        """Exact per-prompt moments at ``theta (d,)`` (default: ``self.theta``)."""
        return self._moments(self._check_theta(theta, allow_batch=False))

    def values(self, theta=None) -> np.ndarray:
        """Exact ``V(x; theta)`` for every prompt: ``theta (d,) -> (P,)``, ``theta (R, d) -> (R, P)``.

        Vectorised over replicates (used by Algorithm 1 to track ``J`` along many runs).
        """
        t = self._check_theta(theta, allow_batch=True)
        return self._values(np.atleast_2d(t)).reshape(t.shape[:-1] + (self.num_contexts,))

    def objective(self, theta=None) -> float:
        """``J(theta) = E_X V(X)``."""
        m = self.moments(theta)
        return float(m.prompt_probs @ m.value)

    def gradient(self, theta=None) -> np.ndarray:
        """``grad J = E_X g(X)``, shape (d,)."""
        m = self.moments(theta)
        return m.prompt_probs @ m.grad

    def hessian(self, theta=None) -> np.ndarray:
        """Hessian of ``J``, shape (d, d): ``E_X E[(Z - V) W W^T | X]`` for these policies."""
        m = self.moments(theta)
        return np.einsum("p,pde->de", m.prompt_probs, m.cov_z_ww)

    def sample(self, num_prompts, num_generations, *, rng=None, theta=None) -> Sample:
        """Draw ``num_prompts`` prompts from ``f`` and ``num_generations`` rollouts per prompt.

        Parameters
        ----------
        num_prompts, num_generations : int
            B and G.
        rng : None, int, SeedSequence or numpy.random.Generator
            Passed to :func:`numpy.random.default_rng` (a Generator is used as is).
        theta : array_like, shape (d,) or (R, d), optional
            With shape ``(R, d)`` the ``R`` replicates are drawn at once and every output gains a
            leading axis ``R``.

        Returns
        -------
        Sample
            ``rewards (..., B, G)``, ``scores (..., B, G, d)``, ``prompt_ids (..., B)``.
        """
        rng = default_rng(rng)
        B, G = int(num_prompts), int(num_generations)
        if B < 1 or G < 1:
            raise ValueError(f"need num_prompts >= 1 and num_generations >= 1, got {B}, {G}")
        t = self._check_theta(theta, allow_batch=True)
        lead = t.shape[:-1]
        pid = rng.choice(self.num_contexts, size=lead + (B,), p=self.prompt_probs)
        return self._sample(t, pid, G, rng)

    def sample_replicates(self, thetas, num_prompts, num_generations, *, rng=None) -> Sample:
        """:meth:`sample` at ``R`` parameter vectors ``thetas (R, d)``: outputs ``(R, B, G, ...)``."""
        thetas = np.asarray(thetas, dtype=float)
        if thetas.ndim != 2:
            raise ValueError(f"thetas must have shape (R, {self.dim}), got {thetas.shape}")
        return self.sample(num_prompts, num_generations, rng=rng, theta=thetas)

    def _prompt_probs_iv(self, prompt_probs, P):
        f = np.full(P, 1.0 / P) if prompt_probs is None else np.asarray(prompt_probs, dtype=float)
        if f.shape != (P,) or (f < 0).any() or not np.isclose(f.sum(), 1.0, rtol=0, atol=1e-12):
            raise ValueError(f"prompt_probs must be a probability vector of shape ({P},)")
        return f / f.sum()


# ---------------------------------------------------------------------------- finite softmax bandits

def _reward_table(P, K, success_probs, rewards, reward_values, reward_probs):
    """Normalise the reward specification to support/probabilities of shape (P, K, M)."""
    given = [x is not None for x in (success_probs, rewards, reward_values)]
    if sum(given) != 1:
        raise ValueError("give exactly one of success_probs=, rewards= (deterministic) or reward_values=/reward_probs=")
    if success_probs is not None:
        p = np.asarray(success_probs, dtype=float).reshape(P, K)
        if ((p < 0) | (p > 1)).any() or np.isnan(p).any():
            raise ValueError("success_probs must lie in [0, 1]")
        vals = np.broadcast_to(np.array([0.0, 1.0]), (P, K, 2)).copy()
        probs = np.stack([1.0 - p, p], axis=-1)
    elif rewards is not None:
        vals = np.asarray(rewards, dtype=float).reshape(P, K, 1)
        probs = np.ones((P, K, 1))
    else:
        if reward_probs is None:
            raise ValueError("reward_values= needs reward_probs= of the same shape")
        vals = np.asarray(reward_values, dtype=float)
        probs = np.asarray(reward_probs, dtype=float)
        if vals.ndim == 2:
            vals, probs = vals[None], probs[None]
        if vals.shape != probs.shape or vals.shape[:2] != (P, K):
            raise ValueError(f"reward_values/reward_probs must have shape ({P}, {K}, M), got {vals.shape}, {probs.shape}")
        if (probs < 0).any() or not np.allclose(probs.sum(-1), 1.0, rtol=0, atol=1e-12):
            raise ValueError("reward_probs must be probability vectors along the last axis")
    if not np.isfinite(vals).all():
        raise ValueError("reward values must be finite (bounded rewards, Assumption 1)")
    return vals, probs


class ContextualSoftmaxBandit(_Policy):
    """``P`` prompts, ``K`` arms, linear-softmax policy ``pi(a|x) = softmax(phi[x] @ theta)_a``.

    Parameters
    ----------
    features : array_like, shape (P, K, d)
        ``phi``; the logits at prompt ``x`` are ``phi[x] @ theta``.
    success_probs : array_like, shape (P, K), optional
        Bernoulli rewards (binary verifier) with these success probabilities.
    rewards : array_like, shape (P, K), optional
        Deterministic rewards.
    reward_values, reward_probs : array_like, shape (P, K, M), optional
        General finite reward distributions.
    prompt_probs : array_like, shape (P,), optional
        ``f``; uniform by default.
    theta : array_like, shape (d,), optional
        Zeros by default.

    Attributes
    ----------
    features : ndarray (P, K, d); prompt_probs : ndarray (P,); dim : int; num_arms : int
    reward_values, reward_probs : ndarray (P, K, M)
        The reward law of each (prompt, arm), normalised to a finite support.
    arm_means : ndarray (P, K)
        ``E[Z | x, a]``.

    Notes
    -----
    Moments are exact sums over arms (arXiv 2603.01162 notation, spec §1):
    ``V = sum pi m1``, ``g = sum pi m1 W``, ``I = sum pi W W^T``,
    ``Sigma_oracle = sum pi E[(Z - V)^2|a] W W^T - g g^T``, where ``m1, m2`` are the first two
    reward moments of each arm.
    """

    def __init__(self, features, *, success_probs=None, rewards=None, reward_values=None, reward_probs=None,
                 prompt_probs=None, theta=None):
        phi = np.asarray(features, dtype=float)
        if phi.ndim != 3:
            raise ValueError(f"features must have shape (P, K, d), got {phi.shape}")
        P, K, d = phi.shape
        if K < 2:
            raise ValueError("need at least two arms")
        self.features = phi
        self.dim = d
        self.num_arms = K
        self.prompt_probs = self._prompt_probs_iv(prompt_probs, P)
        self.reward_values, self.reward_probs = _reward_table(P, K, success_probs, rewards, reward_values,
                                                              reward_probs)
        self._m1 = (self.reward_values * self.reward_probs).sum(-1)            # (P, K)
        self._m2 = (self.reward_values ** 2 * self.reward_probs).sum(-1)       # (P, K)
        self._cdf = np.cumsum(self.reward_probs, axis=-1)                      # (P, K, M)
        self._theta = np.zeros(d) if theta is None else self._check_theta(theta, allow_batch=False)

    @property
    def arm_means(self) -> np.ndarray:
        """``E[Z | x, a]``, shape (P, K)."""
        return self._m1.copy()

    def policy_probs(self, theta=None) -> np.ndarray:
        """``pi(a|x)``, shape (P, K)."""
        t = self._check_theta(theta, allow_batch=False)
        return _softmax(self.features @ t)

    def _values(self, thetas):
        pi = _softmax(np.einsum("pkd,rd->rpk", self.features, thetas))           # (R, P, K)
        return (pi * self._m1).sum(-1)                                        # (R, P)

    def _moments(self, t):
        pi = _softmax(self.features @ t)                                      # (P, K)
        W = self.features - np.einsum("pk,pkd->pd", pi, self.features)[:, None, :]   # (P, K, d)
        m1, m2 = self._m1, self._m2
        V = (pi * m1).sum(-1)
        g = np.einsum("pk,pkd->pd", pi * m1, W)
        WW = np.einsum("pkd,pke->pkde", W, W)                                 # (P, K, d, d)
        fisher = np.einsum("pk,pkde->pde", pi, WW)
        szw = np.einsum("pk,pkde->pde", pi * m2, WW)
        czz = m2 - 2 * V[:, None] * m1 + V[:, None] ** 2                       # E[(Z-V)^2 | a]
        sig_or = np.einsum("pk,pkde->pde", pi * czz, WW) - np.einsum("pd,pe->pde", g, g)
        czww = np.einsum("pk,pkde->pde", pi * (m1 - V[:, None]), WW)
        return PromptMoments(prompt_probs=self.prompt_probs.copy(), value=V, grad=g,
                             sigma2=(pi * m2).sum(-1) - V ** 2, fisher=fisher, sigma_oracle=sig_or,
                             second_moment_zw=szw, cov_z_w2=np.trace(czww, axis1=1, axis2=2), cov_z_ww=czww)

    def _sample(self, t, pid, G, rng):
        # t (..., d), pid (..., B)
        logits_all = np.einsum("pkd,...d->...pk", self.features, t)             # (..., P, K)
        lead = pid.shape[:-1]
        logits = np.take_along_axis(logits_all, pid[..., None], axis=-2) if lead else logits_all[pid]
        pi = _softmax(logits)                                                 # (..., B, K)
        cdf = np.cumsum(pi, axis=-1)
        u = rng.random(pid.shape + (G,))                                      # (..., B, G)
        arms = np.minimum((u[..., None] > cdf[..., None, :]).sum(-1), self.num_arms - 1)   # (..., B, G)
        phi_x = self.features[pid]                                            # (..., B, K, d)
        phibar = np.einsum("...k,...kd->...d", pi, phi_x)                     # (..., B, d)
        pid_g = np.broadcast_to(pid[..., None], arms.shape)
        scores = self.features[pid_g, arms] - phibar[..., None, :]            # (..., B, G, d)
        u2 = rng.random(arms.shape)
        cdf_r = self._cdf[pid_g, arms]                                        # (..., B, G, M)
        k = np.minimum((u2[..., None] >= cdf_r).sum(-1), cdf_r.shape[-1] - 1)
        rewards = self.reward_values[pid_g, arms, k]
        return Sample(rewards=rewards, scores=scores, prompt_ids=pid)

    def optimum(self, *, num_starts=8, rng=0):
        """A numerical near-maximiser ``(theta_star, J_star)`` found by L-BFGS from several starts.

        Softmax policies usually attain the supremum only as ``||theta|| -> inf``; the returned
        ``J_star`` is the best value found (within ~1e-10 of the supremum when the best arms can be
        made dominant by one direction).  ``theta_star`` is capped at norm 60.  ``rng`` draws the
        random starts (anything :func:`numpy.random.default_rng` accepts).
        """
        from scipy import optimize

        rng = default_rng(rng)
        best = (self._theta.copy(), self.objective(self._theta))
        for i in range(num_starts):
            x0 = np.zeros(self.dim) if i == 0 else rng.normal(scale=3.0, size=self.dim)
            res = optimize.minimize(lambda th: (-self.objective(th), -self.gradient(th)), x0, jac=True,
                                    method="L-BFGS-B", bounds=[(-60 / np.sqrt(self.dim), 60 / np.sqrt(self.dim))] * self.dim,
                                    options=dict(maxiter=2000, ftol=1e-15, gtol=1e-12))
            if -res.fun > best[1]:
                best = (res.x, -res.fun)
        return best[0], float(best[1])

    def __repr__(self):
        P, K, d = self.features.shape
        return f"ContextualSoftmaxBandit(P={P}, K={K}, d={d})"


class SoftmaxBandit(ContextualSoftmaxBandit):
    """One prompt, ``K`` arms, ``pi = softmax(theta)`` with ``theta (K,)``.

    Parameters
    ----------
    success_probs : array_like, shape (K,), optional
        Bernoulli rewards.
    rewards : array_like, shape (K,), optional
        Deterministic rewards, e.g. values in ``[0, R]``.
    reward_values, reward_probs : array_like, shape (K, M), optional
        General finite reward distributions.
    theta : array_like, shape (K,), optional

    Examples
    --------
    >>> import numpy as np
    >>> b = SoftmaxBandit(success_probs=[0.1, 0.5, 0.9], theta=[0.0, 0.0, 0.0])
    >>> round(b.objective(), 6)
    0.5
    >>> b.sample(2, 4, rng=np.random.default_rng(0)).scores.shape
    (2, 4, 3)
    """

    def __init__(self, success_probs=None, *, rewards=None, reward_values=None, reward_probs=None, theta=None):
        spec = next(np.asarray(x) for x in (success_probs, rewards, reward_values) if x is not None) \
            if any(x is not None for x in (success_probs, rewards, reward_values)) else None
        if spec is None:
            raise ValueError("give success_probs=, rewards= or reward_values=/reward_probs=")
        K = spec.shape[0]
        super().__init__(np.eye(K)[None], success_probs=success_probs, rewards=rewards,
                         reward_values=None if reward_values is None else np.asarray(reward_values, float)[None],
                         reward_probs=None if reward_probs is None else np.asarray(reward_probs, float)[None],
                         prompt_probs=[1.0], theta=theta)

    def optimum(self, *, gap=40.0):
        """``(theta_star, J_star)``: ``J_star = max_a E[Z|a]`` (the supremum, exact).

        The supremum is attained only in the limit; ``theta_star`` puts logit ``gap`` on the best
        arm(s) so that ``J(theta_star) >= J_star - K exp(-gap)``.
        """
        m = self._m1[0]
        best = np.isclose(m, m.max(), rtol=0, atol=1e-15)
        theta = np.where(best, gap, 0.0)
        return theta - theta.mean(), float(m.max())

    def __repr__(self):
        return f"SoftmaxBandit(K={self.num_arms})"


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------- Gaussian policy

def _gauss_moments(c, delta, s2):
    """``E[exp(-(e + delta)^2 / (2c)) e^k]`` for ``e ~ N(0, s2)``, ``k = 0, 1, 2`` (closed form)."""
    M0 = np.sqrt(c / (c + s2)) * np.exp(-delta ** 2 / (2 * (c + s2)))
    mu = -delta * s2 / (s2 + c)
    var = s2 * c / (s2 + c)
    return M0, M0 * mu, M0 * (var + mu ** 2)


class GaussianPolicyBandit(_Policy):
    """Gaussian policy with a redundant (rank-deficient) mean parameterisation.

    Action ``a ~ N(m_x, s^2)``, ``m_x = u_x . theta`` with ``u = features @ mixing`` ``(P, d)``;
    reward ``Z = exp(-(a - a*_x)^2 / (2 tau^2))`` in ``(0, 1]``.

    Parameters
    ----------
    features : array_like, shape (P, k), optional
        Prompt features ``phi(x)``; default ``I_3``.
    mixing : array_like, shape (k, d), optional
        ``A``; default ``[[1, 0, 1], [0, 1, 1], [1, 1, 2]]`` (rank 2, d = 3).
    targets : array_like, shape (P,), optional
        ``a*_x``; must be reachable (``u @ theta = targets`` solvable).  Default ``u @ (0.5, -0.3, 0.2)``.
    action_std : float
        ``s``.
    reward_width : float
        ``tau``.
    prompt_probs : array_like, shape (P,), optional
    theta : array_like, shape (d,), optional
        Default zeros.

    Attributes
    ----------
    u : ndarray (P, d)
        ``features @ mixing``; the action mean is ``u @ theta``.
    targets : ndarray (P,); action_std : float; reward_width : float; prompt_probs : ndarray (P,)
    rank : int
        ``rank(u)``, the rank of the Hessian on the maximiser manifold.

    Notes
    -----
    With ``e = a - m_x ~ N(0, s^2)`` and ``delta = m_x - a*_x``, every moment is the Gaussian
    integral ``E[exp(-(e + delta)^2/(2c)) e^k]`` (``c = tau^2`` for ``Z``, ``tau^2/2`` for ``Z^2``),
    e.g. ``V = sqrt(tau^2/(tau^2+s^2)) exp(-delta^2/(2(tau^2+s^2)))``.  The maximiser set
    ``{theta : u @ theta = a*}`` is an affine subspace of dimension ``d - rank(u)``, and the Hessian
    there, ``-sum_x f_x V_x / (tau^2 + s^2) u_x u_x^T``, has rank ``rank(u)`` (spec §2.10, check C7:
    3 prompts, d = 3, rank 2).
    """

    def __init__(self, features=None, mixing=None, targets=None, *, action_std=1.0, reward_width=0.5,
                 prompt_probs=None, theta=None):
        phi = np.eye(3) if features is None else np.asarray(features, dtype=float)
        A = (np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 2.0]]) if mixing is None
             else np.asarray(mixing, dtype=float))
        if phi.ndim != 2 or A.ndim != 2 or phi.shape[1] != A.shape[0]:
            raise ValueError(f"need features (P, k) and mixing (k, d), got {phi.shape} and {A.shape}")
        if not (action_std > 0 and reward_width > 0):
            raise ValueError("action_std and reward_width must be positive")
        self.features, self.mixing = phi, A
        self.u = phi @ A                                                      # (P, d)
        P, d = self.u.shape
        self.dim = d
        self.prompt_probs = self._prompt_probs_iv(prompt_probs, P)
        self.action_std, self.reward_width = float(action_std), float(reward_width)
        a_star = self.u @ np.array([0.5, -0.3, 0.2]) if targets is None and d == 3 else targets
        if a_star is None:
            raise ValueError("targets= is required when d != 3")
        self.targets = np.asarray(a_star, dtype=float).reshape(P)
        sol, *_ = np.linalg.lstsq(self.u, self.targets, rcond=None)
        if not np.allclose(self.u @ sol, self.targets, rtol=0, atol=1e-10):
            raise ValueError("targets are not reachable: u @ theta = targets has no solution")
        self._theta_star = sol
        self.rank = int(np.linalg.matrix_rank(self.u))
        self._theta = np.zeros(d) if theta is None else self._check_theta(theta, allow_batch=False)

    def _values(self, thetas):
        s2, tau2 = self.action_std ** 2, self.reward_width ** 2
        delta = thetas @ self.u.T - self.targets                              # (R, P)
        return np.sqrt(tau2 / (tau2 + s2)) * np.exp(-delta ** 2 / (2 * (tau2 + s2)))

    def _moments(self, t):
        s2, tau2 = self.action_std ** 2, self.reward_width ** 2
        u = self.u
        delta = u @ t - self.targets                                          # (P,)
        V, EZe, EZe2 = _gauss_moments(tau2, delta, s2)
        EZ2, _, EZ2e2 = _gauss_moments(tau2 / 2, delta, s2)
        uu = np.einsum("pd,pe->pde", u, u)
        g = (EZe / s2)[:, None] * u
        cz = (EZe2 - V * s2) / s2 ** 2
        czz = (EZ2e2 - 2 * V * EZe2 + V ** 2 * s2) / s2 ** 2
        return PromptMoments(prompt_probs=self.prompt_probs.copy(), value=V, grad=g, sigma2=EZ2 - V ** 2,
                             fisher=uu / s2, sigma_oracle=czz[:, None, None] * uu - np.einsum("pd,pe->pde", g, g),
                             second_moment_zw=(EZ2e2 / s2 ** 2)[:, None, None] * uu,
                             cov_z_w2=cz * (u * u).sum(-1), cov_z_ww=cz[:, None, None] * uu)

    def hessian(self, theta=None):
        """Hessian of ``J`` by the closed form ``sum_x f_x V''(m_x) u_x u_x^T`` (independent of the
        ``E[(Z - V) W W^T]`` route of the base class; tests compare both)."""
        t = self._check_theta(theta, allow_batch=False)
        c2 = self.reward_width ** 2 + self.action_std ** 2
        delta = self.u @ t - self.targets
        F = np.sqrt(self.reward_width ** 2 / c2) * np.exp(-delta ** 2 / (2 * c2))
        F2 = (delta ** 2 / c2 ** 2 - 1 / c2) * F
        return np.einsum("p,p,pd,pe->de", self.prompt_probs, F2, self.u, self.u)

    def optimum(self):
        """``(theta_star, J_star)``: the minimum-norm point of the maximiser manifold, and
        ``J_star = sqrt(tau^2/(tau^2 + s^2))`` (exact)."""
        tau2 = self.reward_width ** 2
        return self._theta_star.copy(), float(np.sqrt(tau2 / (tau2 + self.action_std ** 2)))

    def _sample(self, t, pid, G, rng):
        s = self.action_std
        m_all = np.einsum("pd,...d->...p", self.u, t)                          # (..., P)
        m = np.take_along_axis(m_all, pid, axis=-1) if pid.ndim > 1 else m_all[pid]   # (..., B)
        e = rng.normal(scale=s, size=pid.shape + (G,))                         # (..., B, G)
        a = m[..., None] + e
        rewards = np.exp(-(a - self.targets[pid][..., None]) ** 2 / (2 * self.reward_width ** 2))
        scores = (e / s ** 2)[..., None] * self.u[pid][..., None, :]           # (..., B, G, d)
        return Sample(rewards=rewards, scores=scores, prompt_ids=pid)

    def __repr__(self):
        return (f"GaussianPolicyBandit(P={self.num_contexts}, d={self.dim}, rank={self.rank}, "
                f"s={self.action_std}, tau={self.reward_width})")


def default_bandit() -> ContextualSoftmaxBandit:
    """The built-in toy: a contextual softmax bandit (8 prompts, 6 arms, d = 4) with exact moments.

    Prompts share half of their features and success probabilities, so the prompt-to-prompt
    variance ``A1`` is small relative to the residual ``A3`` and ``G*_exact`` is about 9.4.
    The draw is fixed (seed 0): the toy is part of the tool.

    Examples
    --------
    >>> default_bandit().dim
    4
    """
    rng = default_rng(0)
    P, K, d, shared = 8, 6, 4, 0.5
    base = rng.standard_normal((K, d))
    phi = shared * base + (1 - shared) * rng.standard_normal((P, K, d))     # (P, K, d)
    pb = rng.uniform(0.1, 0.9, K)
    p = np.clip(shared * pb + (1 - shared) * rng.uniform(0.05, 0.95, (P, K)), 0.02, 0.98)
    return ContextualSoftmaxBandit(phi, success_probs=p)
