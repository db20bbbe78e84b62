"""Practical GRPO (Algorithm 2 of arXiv 2603.01162, Appendix A) on toy sequence policies.

Algorithm 2 (spec section 2.11): at each iteration ``theta_old <- theta``; sample ``B`` prompts
and ``G`` outputs per prompt from ``pi_theta_old``; normalise the rewards per group; split the
``B`` prompts into ``m`` minibatches and take one ascent step per minibatch with

    g_hat(x; theta) = 1/G sum_g sum_t grad log pi_theta,t [ mu_t A_g + KL-bracket_t ]      (14)

where ``mu_t = pi_theta,t / pi_theta_old,t`` is the *token-level* importance ratio and
``A_g = (Z_g - Zbar_{-g}) / se`` (eqs. 15-16: leave-one-out numerator, Bessel standard error of
the full mean).  Eq. (14) is lost in the paper's text; the spec reconstructs it [R] and notes
that its KL part conflicts with Lemma 11 / eq. (18) (spec ambiguity 3).  The KL bracket is
therefore a flag:

``kl_grad="paper14"`` (default, reproduces the paper's prose)
    ``kappa (1 - pi_theta,t / pi_ref,t)``;
``kl_grad="k3_autograd"``
    ``-kappa (1 - pi_ref,t / pi_theta,t)``: minus the autograd gradient of the per-token K3
    estimator ``r - log r - 1``, ``r = pi_ref,t / pi_theta,t`` (eq. 13; DeepSeekMath / TRL
    practice).  For one-token outputs its expectation is ``-grad KL(pi_ref || pi_theta)``;
``kl_grad="exact"``
    ``-kappa grad KL(pi_theta || pi_ref)`` by enumeration (toy policies only; a reference).

Both sample-based forms agree with ``-grad KL(pi_theta || pi_ref)`` only to first order in
``log(pi_theta / pi_ref)`` (check C11).  The KL term carries no importance weight, as in the
paper.  PPO clipping is off by default (the paper has none; ``clip_eps=0.2`` gives the
DeepSeekMath surrogate ``min(mu A, clip(mu, 1 +- eps) A)``).  Zero-variance groups (``se = 0``)
get advantage 0 (spec ambiguity 5); their fraction is logged as ``frac_reward_zero_std`` (TRL's
name).

Policies: :class:`SequencePolicy`, a linear-softmax policy over ``T`` tokens from a vocabulary
of ``V`` with optional first-order (Markov) dependence on the previous token and a Bernoulli
reward on the whole sequence.  ``T = 1`` is a (contextual) softmax bandit
(:meth:`SequencePolicy.from_bandit`); for ``T >= 2`` token-level and sequence-level ratios
differ, which is what Theorem 12's bias terms are about.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from ..core._serialize import jsonable
from ..core._random import default_rng
from ..theory.presets import PRESETS
from ..policies.policy import Sample

__all__ = [
    "SequencePolicy", "SequenceSample", "ADVANTAGE_PRESETS", "normalized_advantages", "algorithm2_gradient",
    "exact_kl", "exact_kl_grad", "reverse_kl_grad", "expected_kl_bracket_grad", "k3",
    "Algorithm2Config", "Algorithm2Result", "run_algorithm2", "arcsin_objective", "shrink_factor",
]

#: Advantage choices of :func:`normalized_advantages`: the per-group presets of
#: :data:`ustat_grpo.theory.presets.PRESETS` (not TRL's batch scaling) and arXiv 2503.06639's ``"paper2"``.
ADVANTAGE_PRESETS = ("paper2",) + tuple(k for k, p in PRESETS.items() if p.scale_rewards != "batch")
KL_GRADS = ("paper14", "k3_autograd", "exact")


# ============================================================================ policy

@dataclass(frozen=True, kw_only=True)
class SequenceSample(Sample):
    """A :class:`ustat_grpo.policies.policy.Sample` that also keeps the sampled token sequences.

    Attributes
    ----------
    rewards : (B, G) in {0, 1};  scores : (B, G, d) ``W = sum_t W_t``;  prompt_ids : (B,) int
    sequences : (B, G, T) int
    """

    sequences: np.ndarray


class SequencePolicy:
    """Linear-softmax policy over token sequences with a Bernoulli sequence reward.

    Satisfies the ``Policy`` and ``ExactMoments`` protocols of :mod:`ustat_grpo.policies.policy`
    (moments by enumeration of all ``V**T`` sequences).

    ``pi_theta(y_t | x, y_{t-1}) = softmax_v(features[x, t, c] @ theta)`` with context row
    ``c = 0`` for independent tokens or at ``t = 0``, and ``c = y_{t-1}`` when ``markov=True``.

    Parameters
    ----------
    features : array_like, shape (P, T, C, V, d)
        ``C = 1`` (independent tokens) or ``C = V`` (Markov).
    success_probs : array_like, shape (P, V**T)
        ``P(Z = 1 | x, y)`` for every sequence ``y`` (row-major token index, ``y_0`` slowest).
    prompt_probs : array_like, shape (P,), optional
        ``f``; uniform by default.
    theta : array_like, shape (d,), optional
        Zeros by default.
    """

    def __init__(self, features, success_probs, *, prompt_probs=None, theta=None):
        phi = np.asarray(features, float)
        if phi.ndim != 5:
            raise ValueError(f"features must have shape (P, T, C, V, d), got {phi.shape}")
        P, T, C, V, d = phi.shape
        if C not in (1, V):
            raise ValueError(f"C must be 1 (independent) or V={V} (Markov), got {C}")
        self.features, self.num_contexts, self.num_tokens, self.vocab_size, self.dim = phi, P, T, V, d
        self.markov = C == V and T > 1
        self.success_probs = np.asarray(success_probs, float).reshape(P, V ** T)
        if np.any((self.success_probs < 0) | (self.success_probs > 1)):
            raise ValueError("success_probs must lie in [0, 1]")
        self.prompt_probs = np.full(P, 1.0 / P) if prompt_probs is None else np.asarray(prompt_probs, float)
        if self.prompt_probs.shape != (P,) or not np.isclose(self.prompt_probs.sum(), 1.0):
            raise ValueError("prompt_probs must be a probability vector of length P")
        self._theta = self._check_theta(np.zeros(d) if theta is None else theta)
        # every sequence, (S, T), and its context rows (S, T)
        self.sequences = np.stack(np.unravel_index(np.arange(V ** T), (V,) * T), axis=-1)
        self._ctx = self._contexts(self.sequences)

    # --------------------------------------------------------------- constructors
    @classmethod
    def tabular(cls, num_contexts, num_tokens, vocab_size, success_probs, *, markov=False,
                prompt_probs=None, theta=None):
        """One free logit per (prompt, position, context row, token): identity features."""
        P, T, V = num_contexts, num_tokens, vocab_size
        C = V if markov else 1
        d = P * T * C * V
        phi = np.eye(d).reshape(P, T, C, V, d)
        return cls(phi, success_probs, prompt_probs=prompt_probs, theta=theta)

    @classmethod
    def from_bandit(cls, bandit):
        """A one-token policy equal to a ``bandits.ContextualSoftmaxBandit`` with Bernoulli rewards."""
        vals = np.asarray(bandit.reward_values)
        if not np.all(np.isin(vals, (0.0, 1.0))):
            raise ValueError("from_bandit needs binary (Bernoulli) rewards")
        phi = np.asarray(bandit.features, float)[:, None, None]  # (P, 1, 1, K, d)
        return cls(phi, bandit.arm_means, prompt_probs=bandit.prompt_probs, theta=bandit.theta)

    @property
    def theta(self) -> np.ndarray:
        """Current parameters, shape (d,) (a copy)."""
        return self._theta.copy()

    def with_theta(self, theta):
        """Same policy at new parameters ``theta (d,)``."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._theta = self._check_theta(theta)
        return new

    def _check_theta(self, theta):
        t = np.asarray(theta, float)
        if t.size != self.dim:
            raise ValueError(f"theta must have shape ({self.dim},), got {t.shape}")
        return t.reshape(self.dim)

    def __repr__(self):
        return (f"SequencePolicy(P={self.num_contexts}, T={self.num_tokens}, V={self.vocab_size}, "
                f"d={self.dim}, markov={self.markov})")

    # --------------------------------------------------------------- token level
    def _contexts(self, seqs):
        seqs = np.asarray(seqs)
        ctx = np.zeros_like(seqs)
        if self.markov:
            ctx[..., 1:] = seqs[..., :-1]
        return ctx

    def _resolve_theta(self, theta):
        return self._theta if theta is None else np.asarray(theta, float)

    def token_log_softmax(self, theta=None):
        """``log pi(v | x, t, c)``, shape (P, T, C, V)."""
        return special.log_softmax(self.features @ self._resolve_theta(theta), axis=-1)

    def token_logprobs(self, prompt_ids, seqs, theta=None):
        """``log pi_theta(y_t | x, y_{t-1})`` of given sequences, shape ``seqs.shape`` = (..., T)."""
        lsm = self.token_log_softmax(theta)
        seqs = np.asarray(seqs)
        pid = np.broadcast_to(np.asarray(prompt_ids)[..., None], seqs.shape)
        t = np.broadcast_to(np.arange(self.num_tokens), seqs.shape)
        return lsm[pid, t, self._contexts(seqs), seqs]

    def token_scores(self, prompt_ids, seqs, theta=None):
        """``W_t = grad_theta log pi_theta(y_t | x, y_{t-1})``, shape (..., T, d)."""
        th = self._resolve_theta(theta)
        pi = special.softmax(self.features @ th, axis=-1)                       # (P, T, C, V)
        mean_phi = np.einsum("ptcv,ptcvd->ptcd", pi, self.features)            # (P, T, C, d)
        seqs = np.asarray(seqs)
        pid = np.broadcast_to(np.asarray(prompt_ids)[..., None], seqs.shape)
        t = np.broadcast_to(np.arange(self.num_tokens), seqs.shape)
        c = self._contexts(seqs)
        return self.features[pid, t, c, seqs] - mean_phi[pid, t, c]

    # --------------------------------------------------------------- exact (enumeration)
    def sequence_logprobs(self, theta=None):
        """``log pi_theta(y | x)`` for every sequence, shape (P, S)."""
        P = self.num_contexts
        pid = np.arange(P)[:, None]
        seqs = np.broadcast_to(self.sequences, (P,) + self.sequences.shape)    # (P, S, T)
        return self.token_logprobs(pid, seqs, theta).sum(-1)

    def sequence_probs(self, theta=None):
        return np.exp(self.sequence_logprobs(theta))

    def sequence_scores(self, theta=None):
        """``W = sum_t W_t`` for every sequence, shape (P, S, d)."""
        P = self.num_contexts
        seqs = np.broadcast_to(self.sequences, (P,) + self.sequences.shape)
        return self.token_scores(np.arange(P)[:, None], seqs, theta).sum(-2)

    def values(self, theta=None):
        """``V(x) = P(Z = 1 | x)``: ``theta (d,) -> (P,)``, ``theta (R, d) -> (R, P)`` (row by row)."""
        if theta is not None and np.ndim(theta) == 2:
            return np.stack([self.values(t) for t in np.asarray(theta, float)])
        return (self.sequence_probs(theta) * self.success_probs).sum(-1)

    def objective(self, theta=None):
        """``J(theta) = E_X V(X)``."""
        return float(self.prompt_probs @ self.values(theta))

    def value_grads(self, theta=None):
        """``grad V(x) = E[W Z | x]``, shape (P, d)."""
        return np.einsum("ps,ps,psd->pd", self.sequence_probs(theta), self.success_probs,
                         self.sequence_scores(theta))

    def gradient(self, theta=None):
        """``grad J``, shape (d,)."""
        return self.prompt_probs @ self.value_grads(theta)

    # --------------------------------------------------------------- sampling
    def sample(self, num_prompts, num_generations, *, rng=None, theta=None) -> SequenceSample:
        """Draw ``B`` prompts and ``G`` sequences each, with their scores (the ``Policy`` protocol).

        Same draws as :meth:`sample_sequences` under the same ``rng``; the scores are
        ``W = sum_t grad_theta log pi_theta(y_t | x, y_{t-1})`` at ``theta`` (default ``self.theta``).

        Returns
        -------
        SequenceSample
            ``rewards (B, G)``, ``scores (B, G, d)``, ``prompt_ids (B,)``, ``sequences (B, G, T)``.
        """
        pid, seqs, rewards = self.sample_sequences(num_prompts, num_generations, rng=rng, theta=theta)
        scores = self.token_scores(pid[:, None], seqs, theta).sum(-2)            # (B, G, d)
        return SequenceSample(rewards=rewards, scores=scores, prompt_ids=pid, sequences=seqs)

    def sample_sequences(self, num_prompts, num_generations, *, rng=None, theta=None):
        """Draw ``B`` prompts and ``G`` sequences each.

        ``rng`` is anything :func:`numpy.random.default_rng` accepts (a Generator is used as is).

        Returns
        -------
        prompt_ids : (B,) int
        seqs : (B, G, T) int
        rewards : (B, G) float in {0, 1}
        """
        rng = default_rng(rng)
        B, G, T = num_prompts, num_generations, self.num_tokens
        lsm = self.token_log_softmax(theta)
        cdf = np.cumsum(np.exp(lsm), axis=-1)                                   # (P, T, C, V)
        pid = rng.choice(self.num_contexts, size=B, p=self.prompt_probs)
        seqs = np.zeros((B, G, T), dtype=np.int64)
        prev = np.zeros((B, G), dtype=np.int64)
        pid_bg = np.broadcast_to(pid[:, None], (B, G))
        u = rng.random((B, G, T))
        for t in range(T):
            c = prev if self.markov else np.zeros_like(prev)
            row = cdf[pid_bg, t, c]                                             # (B, G, V)
            tok = np.minimum((u[..., t, None] > row).sum(-1), self.vocab_size - 1)
            seqs[..., t] = tok
            prev = tok
        flat = np.ravel_multi_index(np.moveaxis(seqs, -1, 0), (self.vocab_size,) * T)  # (B, G)
        rewards = (rng.random((B, G)) < self.success_probs[pid_bg, flat]).astype(float)
        return pid, seqs, rewards


# ============================================================================ KL

def k3(logp, logp_ref):
    """K3 estimator ``r - log r - 1`` with ``r = pi_ref / pi`` (eq. 13), elementwise; non-negative."""
    d = np.asarray(logp_ref, float) - np.asarray(logp, float)
    return np.expm1(d) - d


def exact_kl(policy, theta, theta_ref):
    """``E_X KL(pi_theta(.|X) || pi_ref(.|X))`` over whole sequences, by enumeration."""
    lp, lr = policy.sequence_logprobs(theta), policy.sequence_logprobs(theta_ref)
    return float(policy.prompt_probs @ (np.exp(lp) * (lp - lr)).sum(-1))


def exact_kl_grad(policy, theta, theta_ref, *, per_prompt=False):
    """``grad_theta KL(pi_theta || pi_ref)`` = ``E_theta[W log(pi_theta / pi_ref)]`` (per prompt (P, d) or mixed (d,))."""
    lp, lr = policy.sequence_logprobs(theta), policy.sequence_logprobs(theta_ref)
    g = np.einsum("ps,ps,psd->pd", np.exp(lp), lp - lr, policy.sequence_scores(theta))
    return g if per_prompt else policy.prompt_probs @ g


def reverse_kl_grad(policy, theta, theta_ref, *, per_prompt=False):
    """``grad_theta KL(pi_ref || pi_theta)`` = ``-E_ref[W]`` (per prompt (P, d) or mixed (d,))."""
    pr = policy.sequence_probs(theta_ref)
    g = -np.einsum("ps,psd->pd", pr, policy.sequence_scores(theta))
    return g if per_prompt else policy.prompt_probs @ g


def expected_kl_bracket_grad(policy, theta, theta_ref, kl_grad, *, theta_old=None, per_prompt=False):
    """Exact expectation over ``Y ~ pi_theta_old`` of ``sum_t W_t * bracket_t`` (kappa = 1).

    ``bracket = (1 - pi_theta,t / pi_ref,t)`` for ``"paper14"`` and ``-(1 - pi_ref,t / pi_theta,t)``
    for ``"k3_autograd"``; ``theta_old`` defaults to ``theta`` (on-policy).  Compare with
    ``-exact_kl_grad`` (the true descent direction of ``KL(pi_theta || pi_ref)``).
    """
    theta_old = theta if theta_old is None else theta_old
    P = policy.num_contexts
    pid = np.arange(P)[:, None]
    seqs = np.broadcast_to(policy.sequences, (P,) + policy.sequences.shape)     # (P, S, T)
    lt = policy.token_logprobs(pid, seqs, theta)
    lr = policy.token_logprobs(pid, seqs, theta_ref)
    br = _kl_bracket(lt, lr, kl_grad)
    W = policy.token_scores(pid, seqs, theta)                                   # (P, S, T, d)
    g = np.einsum("ps,pst,pstd->pd", policy.sequence_probs(theta_old), br, W)
    return g if per_prompt else policy.prompt_probs @ g


def _kl_bracket(logp, logp_ref, kl_grad):
    if kl_grad == "paper14":
        return -np.expm1(logp - logp_ref)          # 1 - pi_theta / pi_ref
    if kl_grad == "k3_autograd":
        return np.expm1(logp_ref - logp)           # -(1 - pi_ref / pi_theta)
    raise ValueError(f"kl_grad must be one of {KL_GRADS}, got {kl_grad!r}")


# ============================================================================ advantages

def normalized_advantages(rewards, *, preset="paper", eps=None, smoothing=0.0, tie_tol=1e-12):
    """Group-normalised advantages and the zero-variance mask.

    Parameters
    ----------
    rewards : ndarray (..., G)
    preset : str
        One of :data:`ADVANTAGE_PRESETS`: a key of :data:`ustat_grpo.theory.presets.PRESETS` (the one
        table of framework settings) or ``"paper2"``.  ``"paper"``: ``(Z_g - Zbar_{-g}) / (se +
        eps)``, ``se`` the Bessel (G-1) std of the full-mean residuals (arXiv 2603.01162 eqs.
        15-16).  ``"grpo"``, ``"verl_grpo"``, ``"openrlhf_group_norm"``, ...:
        ``(Z - Zbar) / (s + eps)``.  ``"dr_grpo"``: ``Z - Zbar``.  ``"rloo"``: ``Z - Zbar_{-g}``.
        ``"paper2"``: ``(Z - p_hat) / sqrt(p_hat (1 - p_hat) + smoothing)`` with population
        variance (arXiv 2503.06639).
    eps : float, optional
        Added to the std; default the preset's (``paper`` 0, TRL 1e-4, verl 1e-6, OpenRLHF 1e-9).
    tie_tol : float
        A group is zero-variance when ``max - min <= tie_tol (1 + |max|)``; its advantages are set
        to exactly 0 (spec ambiguity 5), avoiding float-noise blow-ups (verl PR #6348;
        :func:`ustat_grpo.theory.advantages.rounding_noise_groups`).

    Returns
    -------
    advantages : ndarray (..., G)
    zero_std : ndarray (...,) of bool

    Notes
    -----
    ``Z_g - Zbar_{-g} = G/(G-1) (Z_g - Zbar)`` (spec ambiguity 6), so ``"paper"`` is
    ``G/(G-1)`` times ``"grpo"`` at ``eps = 0``.

    Examples
    --------
    >>> A, zero = normalized_advantages(np.array([[1., 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]]))
    >>> np.round(A[0, [0, 3]], 4).tolist(), zero.tolist()
    ([1.3801, -0.8281], [False, True])
    """
    Z = np.asarray(rewards, float)
    G = Z.shape[-1]
    if G < 2:
        raise ValueError("need num_generations >= 2")
    if preset not in ADVANTAGE_PRESETS:
        raise ValueError(f"preset must be one of {ADVANTAGE_PRESETS}, got {preset!r}")
    zmax, zmin = Z.max(-1), Z.min(-1)
    zero = (zmax - zmin) <= tie_tol * (1 + np.abs(zmax))
    mean = Z.mean(-1, keepdims=True)
    dev = Z - mean
    if preset == "paper2":
        num, den = dev, np.sqrt(mean * (1 - mean) + smoothing)
    else:
        p = PRESETS[preset]
        loo = p.estimator == "leave_one_out" or p.center == "loo"
        num = G / (G - 1) * dev if loo else dev                     # Z_g - Zbar_{-g} or Z_g - Zbar
        if p.estimator == "std_normalized":
            se = np.sqrt((dev ** 2).sum(-1, keepdims=True) / (G - p.ddof))
            den = se + (p.eps if eps is None else eps)
        else:
            den = np.ones_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        A = num / den
    A = np.where(zero[..., None], 0.0, A)
    return A, zero


# ============================================================================ eq. (14)

def algorithm2_gradient(policy, theta, theta_old, prompt_ids, seqs, advantages, *, kappa=0.0,
                        theta_ref=None, kl_grad="paper14", clip_eps=None, ratio_level="token"):
    """Per-prompt Algorithm 2 gradient estimates ``g_hat(X^(b); theta)`` (eq. 14, [R]), shape (B, d).

    Parameters
    ----------
    policy : SequencePolicy
    theta, theta_old : ndarray (d,)
        Current parameters and the sampling parameters.
    prompt_ids : (B,) int;  seqs : (B, G, T) int;  advantages : (B, G)
    kappa : float
        KL weight; ``theta_ref`` the reference parameters (needed when ``kappa > 0``).
    kl_grad : {"paper14", "k3_autograd", "exact"}
        See the module docstring.
    clip_eps : float or None
        DeepSeekMath/PPO clipping of the ratio term (off by default, as in the paper).
    ratio_level : {"token", "sequence"}
        ``mu_t`` (the paper) or the sequential ratio ``prod_t mu_t`` applied to every token
        (the IS-correct target of Theorem 12).

    Notes
    -----
    ``g_hat = 1/G sum_g sum_t W_t^(g) [ rho_t A_g 1{not clipped} + kappa * bracket_t ]``.
    Gradient *ascent* direction: the KL brackets already carry the minus sign of the penalty.
    """
    pid = np.asarray(prompt_ids)[:, None]                                       # (B, 1)
    seqs = np.asarray(seqs)                                                     # (B, G, T)
    A = np.asarray(advantages, float)[..., None]                                # (B, G, 1)
    lt = policy.token_logprobs(pid, seqs, theta)                                # (B, G, T)
    lo = policy.token_logprobs(pid, seqs, theta_old)
    logmu = lt - lo
    if ratio_level == "token":
        rho = np.exp(logmu)
    elif ratio_level == "sequence":
        rho = np.broadcast_to(np.exp(logmu.sum(-1, keepdims=True)), logmu.shape)
    else:
        raise ValueError("ratio_level must be 'token' or 'sequence'")
    coef = rho * A
    if clip_eps is not None:
        clipped = ((A > 0) & (rho > 1 + clip_eps)) | ((A < 0) & (rho < 1 - clip_eps))
        coef = np.where(clipped, 0.0, coef)
    if kappa and kl_grad != "exact":
        coef = coef + kappa * _kl_bracket(lt, policy.token_logprobs(pid, seqs, theta_ref), kl_grad)
    W = policy.token_scores(pid, seqs, theta)                                   # (B, G, T, d)
    g = np.einsum("bgt,bgtd->bd", coef, W) / seqs.shape[1]
    if kappa and kl_grad == "exact":
        g = g - kappa * exact_kl_grad(policy, theta, theta_ref, per_prompt=True)[np.asarray(prompt_ids)]
    return g


# ============================================================================ arcsin objective (Prop. 13)

def arcsin_objective(policy, theta=None, *, kappa=0.0, theta_ref=None):
    """``calJ(theta) = E[2 arcsin sqrt(V(X))] - kappa KL(pi_theta || pi_ref)`` (eq. 19)."""
    val = float(policy.prompt_probs @ (2 * np.arcsin(np.sqrt(policy.values(theta)))))
    if kappa:
        val -= kappa * exact_kl(policy, policy.theta if theta is None else theta, theta_ref)
    return val


def shrink_factor(num_generations, value, *, center="loo"):
    """Exact ``c(G, V)`` with ``E[g_hat_norm(x)] = c(G, V) grad(2 arcsin sqrt V)`` for binary rewards.

    For the ``"paper"`` advantage (eqs. 15-16, ``center="loo"``), conditioning on the number ``k`` of successes gives
    ``E[g_hat] = (g / std) E[se] / std`` with ``se = sqrt(k (G - k) / (G (G - 1)))`` (0 for
    ``k in {0, G}``), so ``c = E[se] / sqrt(V (1 - V))``; computed exactly by summing the binomial
    law of ``k``.  ``center="mean"`` (the full-mean numerator of ``"grpo"`` at ``eps = 0``) is
    ``(G - 1)/G`` times that.
    [D] (spec 2.11, check C9).
    """
    from scipy import stats

    G = int(num_generations)
    k = np.arange(G + 1)
    se = np.sqrt(k * (G - k) / (G * (G - 1)))
    c = float(stats.binom.pmf(k, G, value) @ se) / np.sqrt(value * (1 - value))
    if center == "mean":
        c *= (G - 1) / G
    elif center != "loo":
        raise ValueError(f"center must be 'loo' or 'mean', got {center!r}")
    return c


# ============================================================================ Algorithm 2 runner

@dataclass(frozen=True, kw_only=True)
class Algorithm2Config:
    """Settings of :func:`run_algorithm2` (arXiv 2603.01162 Algorithm 2; spec 2.11)."""

    num_iterations: int = 100            # n: outer iterations (theta_old refreshes)
    num_prompts: int = 8                 # B: prompts sampled per iteration
    num_generations: int = 8             # G: outputs per prompt
    num_minibatches: int = 1             # m: equal minibatches of the B prompts, one step each
    num_epochs: int = 1                  # passes over the minibatches per iteration (1 = the paper; TRL num_iterations)
    learning_rate: float = 0.1           # eta_1
    lr_decay: float = 0.0                # eta_i = learning_rate / (1 + i / lr_t0) ** lr_decay
    lr_t0: float = 10.0                  # time scale of the decay
    kappa: float = 0.0                   # KL weight (kappa > 0 in the paper)
    kl_grad: str = "paper14"             # paper14 | k3_autograd | exact (spec ambiguity 3)
    preset: str = "paper"                # advantage: paper | grpo | dr_grpo | rloo | paper2 | ... (ADVANTAGE_PRESETS)
    eps: float | None = None             # added to the std; None: the preset's (paper 0, TRL 1e-4, verl 1e-6)
    smoothing: float = 0.0               # paper2's varepsilon under the square root
    clip_eps: float | None = None        # PPO clip (None: off, as in the paper)
    ratio_level: str = "token"           # token (the paper) | sequence

    def __post_init__(self):
        if self.num_prompts % self.num_minibatches:
            raise ValueError("num_prompts must be divisible by num_minibatches")
        if self.kl_grad not in KL_GRADS:
            raise ValueError(f"kl_grad must be one of {KL_GRADS}")
        if self.preset not in ADVANTAGE_PRESETS:
            raise ValueError(f"preset must be one of {ADVANTAGE_PRESETS}")

    def lr(self, i):
        return self.learning_rate / (1.0 + i / self.lr_t0) ** self.lr_decay


@dataclass(frozen=True, kw_only=True)
class Algorithm2Result:
    """Trajectory of :func:`run_algorithm2`.

    ``theta`` (n + 1, d); ``objective`` (n + 1,) ``J``; ``arcsin`` (n + 1,) ``E 2 arcsin sqrt V``;
    ``values`` (n + 1, P) ``V(x)``; ``kl`` (n + 1,) ``KL(pi_theta || pi_ref)``;
    ``frac_reward_zero_std`` (n,) fraction of zero-variance groups per iteration.
    """

    theta: np.ndarray
    objective: np.ndarray
    arcsin: np.ndarray
    values: np.ndarray
    kl: np.ndarray
    frac_reward_zero_std: np.ndarray
    config: Algorithm2Config
    seed: str = ""

    def summary(self) -> str:
        n = len(self.frac_reward_zero_std)
        return (f"Algorithm 2 ({self.config.preset}, kl_grad={self.config.kl_grad}, kappa={self.config.kappa}, "
                f"m={self.config.num_minibatches}): {n} iterations; J {self.objective[0]:.4f} -> "
                f"{self.objective[-1]:.4f}; arcsin objective {self.arcsin[0]:.4f} -> {self.arcsin[-1]:.4f}; "
                f"KL {self.kl[-1]:.4g}; mean frac_reward_zero_std {self.frac_reward_zero_std.mean():.3f}")

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(theta=self.theta.tolist(), objective=self.objective.tolist(), arcsin=self.arcsin.tolist(),
                    values=self.values.tolist(), kl=self.kl.tolist(),
                    frac_reward_zero_std=self.frac_reward_zero_std.tolist(),
                    config=json.loads(json.dumps(asdict(self.config))), seed=self.seed))


def run_algorithm2(policy, config=None, *, rng=None, theta0=None, theta_ref=None, track=True):
    """Run Algorithm 2 (spec 2.11) on a :class:`SequencePolicy`.

    Parameters
    ----------
    policy : SequencePolicy or bandits.ContextualSoftmaxBandit
        A bandit with Bernoulli rewards is converted with :meth:`SequencePolicy.from_bandit`
        (same parameters ``theta``; outputs are one token long).
    config : Algorithm2Config
    rng : None, int, SeedSequence or numpy.random.Generator
        Passed to :func:`numpy.random.default_rng` (a Generator is used as is).
    theta0 : ndarray (d,), optional
        Start (default ``policy.theta``); ``theta_ref`` defaults to ``theta0``.
    track : bool
        Record exact ``J``, arcsin objective and KL after every iteration (enumeration).

    Returns
    -------
    Algorithm2Result

    Examples
    --------
    >>> pol = SequencePolicy.tabular(1, 2, 3, np.linspace(0.1, 0.9, 9)[None], markov=True)
    >>> cfg = Algorithm2Config(num_iterations=20, num_prompts=4, num_generations=8, num_minibatches=2,
    ...                        learning_rate=0.5, kappa=0.05)
    >>> res = run_algorithm2(pol, cfg, rng=np.random.default_rng(0))
    >>> bool(res.objective[-1] > res.objective[0])
    True
    """
    cfg = Algorithm2Config() if config is None else config
    rng = default_rng(rng)
    if not isinstance(policy, SequencePolicy):
        policy = SequencePolicy.from_bandit(policy)
    theta = np.array(policy.theta if theta0 is None else theta0, float)
    theta_ref = theta.copy() if theta_ref is None else np.asarray(theta_ref, float)
    B, G, m = cfg.num_prompts, cfg.num_generations, cfg.num_minibatches
    thetas, fz = [theta.copy()], []
    for i in range(cfg.num_iterations):
        theta_old = theta.copy()
        pid, seqs, Z = policy.sample_sequences(B, G, rng=rng, theta=theta_old)
        A, zero = normalized_advantages(Z, preset=cfg.preset, eps=cfg.eps, smoothing=cfg.smoothing)
        fz.append(float(zero.mean()))
        eta = cfg.lr(i)
        for _ in range(cfg.num_epochs):
            for mb in np.split(np.arange(B), m):
                g = algorithm2_gradient(policy, theta, theta_old, pid[mb], seqs[mb], A[mb], kappa=cfg.kappa,
                                        theta_ref=theta_ref, kl_grad=cfg.kl_grad, clip_eps=cfg.clip_eps,
                                        ratio_level=cfg.ratio_level).mean(0)
                theta = theta + eta * g
        thetas.append(theta.copy())
    th = np.asarray(thetas)
    if track:
        vals = np.array([policy.values(t) for t in th])
        obj = vals @ policy.prompt_probs
        arc = (2 * np.arcsin(np.sqrt(vals))) @ policy.prompt_probs
        kl = np.array([exact_kl(policy, t, theta_ref) for t in th])
    else:
        vals = np.full((len(th), policy.num_contexts), np.nan)
        obj = arc = kl = np.full(len(th), np.nan)
    return Algorithm2Result(theta=th, objective=obj, arcsin=arc, values=vals, kl=kl,
                            frac_reward_zero_std=np.asarray(fz), config=cfg)
