"""Exact mean-squared errors of GRPO-family gradient estimators (arXiv 2603.01162, Thm 2, Prop 3).

Given the exact per-prompt moments of a policy (:class:`ustat_grpo.policies.bandits.PromptMoments`), the MSE
of every estimator of :mod:`ustat_grpo.theory.estimators` with a closed form is an exact identity
(spec §2.5-2.6, all [D] with numerical checks C3/C4):

* oracle:  ``G * MSE(x) = tr Sigma_oracle(x)``;
* leave_one_out (the paper's GRPO; RLOO):  ``MSE(x) = tr Sigma_oracle/G + (sigma2 tr I + ||g||^2) / (G(G-1))``;
* vanilla:  ``MSE(x) = (E[Z^2 ||W||^2] - ||g||^2)/G``;
* prompt baseline ``C(x)``:  ``G * MSE(x) = tr Sigma_oracle + (V-C)^2 tr I + 2 (V-C) Cov(Z, ||W||^2)``;
* group_mean (Dr. GRPO):  ``((G-1)/G)^2 MSE_loo(x) + ||g||^2/G^2`` (biased);
* minibatch of ``B`` i.i.d. prompts: ``A1/B + E_X MSE(X)/B`` for the unbiased ones, so for GRPO
  ``A1/B + A2/(BG) + A3/(BG(G-1))`` (Prop 3, exact form); :func:`paper_constants` maps
  ``(A1, A2, A3)`` to the paper's ``(c1, c2, c3)``.

:func:`enumerate_mse` computes the same quantities by brute-force enumeration of the ``G``-fold
product of a finite bandit: the independent oracle used by the tests and paper checks.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np

from . import estimators as _est
from ..core._serialize import jsonable as _jsonable

__all__ = ["MSEDecomposition", "EnumeratedMSE", "exact_mse", "constants", "paper_constants",
           "CONSTANT_NAMES", "C_CONVENTION", "greensmith_baseline", "enumerate_mse", "group_outcomes",
           "SUPPORTED"]

#: Estimators with an exact MSE here (``std_normalized`` is a ratio of U-statistics: no closed form).
SUPPORTED = ("oracle", "leave_one_out", "vanilla", "prompt_baseline", "greensmith", "group_mean")

#: Names of the three minibatch-MSE constants: ``"exact"`` for ``A1/B + A2/(BG) + A3/(BG(G-1))``
#: (Prop. 3 as derived here), ``"paper"`` for Theorem 7's ``c1/B + c2/(BG) + c3/(BG^2)``.
CONSTANT_NAMES = {"exact": ("A1", "A2", "A3"), "paper": ("c1", "c2", "c3")}

#: The convention of :func:`paper_constants`, in words (for reports and JSON outputs).
C_CONVENTION = "c_i := A_i (spec ambiguity 1); c3 = 2*A3 would multiply G*_paper by sqrt(2)"


@dataclass(frozen=True, kw_only=True)
class MSEDecomposition:
    """Exact MSE ``E||g_hat - g||^2`` split into the terms of arXiv 2603.01162, Prop. 3.

    Attributes
    ----------
    estimator : str
    num_generations : int
        G.
    num_prompts : int or None
        B; ``None`` for the per-prompt MSE, in which case every term is an array ``(P,)`` (one entry
        per prompt) and ``prompt_term`` is zero.
    prompt_term : float or ndarray
        Prompt-sampling variance ``k^2 A1 / B`` (``k = (G-1)/G`` for group_mean, else 1).
    oracle_term : float or ndarray
        ``k^2 tr Sigma_oracle / (B G)``.
    residual : float or ndarray
        The rest of the variance: ``k^2 (sigma2 tr I + ||g||^2)/(BG(G-1))`` for leave_one_out,
        ``((V-C)^2 tr I + 2(V-C) Cov(Z, ||W||^2))/(BG)`` for a prompt baseline, 0 for the oracle.
    bias_squared : float or ndarray
        ``||E g_hat - g||^2``: ``||g||^2/G^2`` for group_mean, else 0.
    total : float or ndarray
        Sum of the four terms.
    covariance : ndarray or None
        ``Cov(g_hat)``, shape ``(d, d)`` (minibatch) or ``(P, d, d)`` (per prompt), when requested;
        ``total = trace(covariance) + bias_squared``.
    """

    estimator: str
    num_generations: int
    num_prompts: int | None
    prompt_term: float | np.ndarray
    oracle_term: float | np.ndarray
    residual: float | np.ndarray
    bias_squared: float | np.ndarray
    total: float | np.ndarray
    covariance: np.ndarray | None = None

    def summary(self) -> str:
        head = (f"Exact MSE of {self.estimator!r}, G={self.num_generations}, "
                + ("per prompt" if self.num_prompts is None else f"B={self.num_prompts}"))
        names = ("prompt_term", "oracle_term", "residual", "bias_squared", "total")
        if self.num_prompts is not None:
            return "\n".join([head] + [f"  {n:<13} {float(getattr(self, n)):.6g}" for n in names])
        rows = [head, "  x " + " ".join(f"{n:>13}" for n in names)]
        for x in range(np.size(self.total)):
            rows.append(f"{x:>3} " + " ".join(f"{float(getattr(self, n)[x]):13.6g}" for n in names))
        return "\n".join(rows)

    __str__ = summary

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _tr(a):
    return np.trace(a, axis1=-2, axis2=-1)


def greensmith_baseline(moments) -> np.ndarray:
    """Greensmith's MSE-optimal prompt-only baseline ``C*(x) = E[Z ||W||^2|x] / E[||W||^2|x]``.

    Parameters
    ----------
    moments : PromptMoments

    Returns
    -------
    ndarray, shape (P,)
        ``V + Cov(Z, ||W||^2 | x) / tr I(x)`` (``V`` where ``tr I = 0``).

    Notes
    -----
    Spec §2.7, caveat to arXiv 2603.01162, Corollary 5: minimising the quadratic
    ``(V-C)^2 tr I + 2(V-C) Cov(Z, ||W||^2)`` over ``C``.  Without Assumption 2 this baseline beats
    the oracle ``C = V``; Corollary 5's "GRPO is optimal among prompt-only baselines" needs
    Assumption 2 (``Cov(Z, ||W||^2 | x) = 0``).
    """
    trI = _tr(moments.fisher)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(trI > 0, moments.cov_z_w2 / trI, 0.0)
    return moments.value + shift


def constants(moments) -> tuple[float, float, float]:
    """Exact constants ``(A1, A2, A3)`` of the minibatch MSE of GRPO (spec §2.6).

    ``MSE(B, G) = A1/B + A2/(BG) + A3/(BG(G-1))`` with ``A1 = E||g(X) - g||^2``,
    ``A2 = E tr Sigma_oracle(X)``, ``A3 = E[sigma2(X) tr I(X) + ||g(X)||^2]``.

    Parameters
    ----------
    moments : PromptMoments

    Returns
    -------
    tuple of float
        ``(A1, A2, A3)``.

    Notes
    -----
    arXiv 2603.01162, Prop. 3 (eq. 9) bounds the third term by ``O(E||W||^2/(BG^2))``; the exact
    coefficient is ``A3/(G-1)`` (spec §2.6, §5.1).  :func:`paper_constants` gives the paper's
    ``(c1, c2, c3)``.
    """
    f = moments.prompt_probs
    g = moments.grad
    gbar = f @ g
    A1 = float(f @ ((g - gbar) ** 2).sum(-1))
    A2 = float(f @ _tr(moments.sigma_oracle))
    A3 = float(f @ (moments.sigma2 * _tr(moments.fisher) + (g * g).sum(-1)))
    return A1, A2, A3


def paper_constants(exact_constants) -> np.ndarray:
    """The paper's ``(c1, c2, c3)`` from the exact ``(A1, A2, A3)``: the one place of the mapping.

    Parameters
    ----------
    exact_constants : array_like, shape (..., 3)
        ``(A1, A2, A3)`` of :func:`constants` or of ``scaling.estimate_constants``.

    Returns
    -------
    ndarray, shape (..., 3)
        ``(c1, c2, c3) = (A1, A2, A3)``.

    Notes
    -----
    Theorem 7 (arXiv 2603.01162, eq. (11)) writes the minibatch MSE as ``c1/B + c2/(BG) +
    c3/(BG^2)`` with constants bounded uniformly in theta, and ``G* = sqrt(c3/c1)`` (eq. (12)).
    The exact form is ``A1/B + A2/(BG) + A3/(BG(G-1))`` (Prop. 3, spec §2.6).  At a fixed theta
    the paper's constants are identified with the exact ones, ``c_i := A_i`` (spec ambiguity 1);
    ``A3/(G-1) <= 2 A3/G`` for ``G >= 2``, so ``c3 = 2 A3`` is the other defensible choice and
    would multiply ``G*_paper`` by ``sqrt 2`` (:data:`C_CONVENTION`).

    Examples
    --------
    >>> paper_constants([1.0, 2.0, 16.0]).tolist()
    [1.0, 2.0, 16.0]
    """
    return np.array(exact_constants, dtype=float)


def _check_supported(estimator):
    if estimator not in SUPPORTED:
        hint = " (std_normalized is a ratio of U-statistics with no exact MSE)" if estimator == "std_normalized" else ""
        raise ValueError(f"no exact MSE for estimator {estimator!r}{hint}; choose from {SUPPORTED}")
    return estimator


def exact_mse(moments, estimator="leave_one_out", num_generations=None, num_prompts=None, *, baseline=None,
              covariance=False) -> MSEDecomposition:
    """Exact MSE of a gradient estimator, per prompt or for a minibatch of ``B`` i.i.d. prompts.

    Parameters
    ----------
    moments : PromptMoments
        Exact per-prompt moments (e.g. ``policy.moments()``).
    estimator : str
        One of :data:`SUPPORTED`; ``"greensmith"`` is ``prompt_baseline`` with ``C*(x)``.
    num_generations : int
        G (``>= 2`` for leave_one_out).
    num_prompts : int, optional
        B.  ``None``: per-prompt MSE arrays of shape ``(P,)``.
    baseline : array_like, shape (P,), optional
        ``C(x)`` for ``"prompt_baseline"``.
    covariance : bool
        Also return ``Cov(g_hat)`` (needs ``moments.cov_z_ww`` for ``prompt_baseline``/``greensmith``).

    Returns
    -------
    MSEDecomposition

    Notes
    -----
    arXiv 2603.01162, Theorem 2 (eq. 7) states ``tr Sigma_oracle/G + O(E||W||^2/G^2)``; the exact
    residual is ``(sigma2 tr I + ||g||^2)/(G(G-1))`` (spec §2.5, §5.10: the paper's ``1/G^2`` is only
    the order).  Prop. 3 (eq. 9) likewise becomes ``A1/B + A2/(BG) + A3/(BG(G-1))``.  Both rest on
    the orthogonality of the Hoeffding terms; for unbiased estimators the minibatch MSE is
    ``(A1 + E_X MSE(X))/B`` (law of total variance), and for group_mean the bias ``-g/G`` adds
    ``||g||^2/G^2`` and scales the variance by ``((G-1)/G)^2``.

    Examples
    --------
    >>> from ustat_grpo.policies.bandits import SoftmaxBandit
    >>> m = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5]).moments()
    >>> d = exact_mse(m, "leave_one_out", 8)
    >>> bool(abs(d.total[0] - (d.oracle_term[0] + d.residual[0])) < 1e-15)
    True
    """
    name = _check_supported(estimator)
    if num_generations is None:
        raise ValueError("num_generations (G) is required")
    G = int(num_generations)
    if G < 1 or (name == "leave_one_out" and G < 2):
        raise ValueError(f"{estimator} needs num_generations >= {2 if name == 'leave_one_out' else 1}, got {G}")
    if num_prompts is not None and int(num_prompts) < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")

    V, s2, g = moments.value, moments.sigma2, moments.grad
    trI, trS, g2 = _tr(moments.fisher), _tr(moments.sigma_oracle), (g * g).sum(-1)
    P, d = g.shape
    k = 1.0
    bias = np.zeros(P)
    if name == "oracle":
        resid = np.zeros(P)
    elif name in ("leave_one_out", "group_mean"):
        resid = (s2 * trI + g2) / (G * (G - 1)) if G > 1 else np.zeros(P)
        if name == "group_mean":
            k = (G - 1) / G
            bias = g2 / G ** 2
    else:
        if name == "vanilla":
            C = np.zeros(P)
        elif name == "greensmith":
            C = greensmith_baseline(moments)
        else:
            if baseline is None:
                raise ValueError("estimator 'prompt_baseline' needs baseline= (C(x), shape (P,))")
            C = np.broadcast_to(np.asarray(baseline, dtype=float), (P,))
        D = V - C
        resid = (D * D * trI + 2 * D * moments.cov_z_w2) / G
    orc = trS / G

    cov = None
    if covariance:
        cov = _covariance(moments, name, G, baseline)
        cov = k * k * cov

    if num_prompts is None:
        return MSEDecomposition(estimator=estimator, num_generations=G, num_prompts=None,
                                prompt_term=np.zeros(P), oracle_term=k * k * orc, residual=k * k * resid,
                                bias_squared=bias, total=k * k * (orc + resid) + bias, covariance=cov)
    B = int(num_prompts)
    f = moments.prompt_probs
    A1 = constants(moments)[0]
    gbar = f @ g
    prompt = k * k * A1 / B
    orc_b = k * k * float(f @ orc) / B
    res_b = k * k * float(f @ resid) / B
    bias_b = float(gbar @ gbar) / G ** 2 if name == "group_mean" else 0.0
    if cov is not None:
        dg = g - gbar
        cov = (k * k * np.einsum("p,pd,pe->de", f, dg, dg) + np.einsum("p,pde->de", f, cov)) / B
    return MSEDecomposition(estimator=estimator, num_generations=G, num_prompts=B, prompt_term=prompt,
                            oracle_term=orc_b, residual=res_b, bias_squared=bias_b,
                            total=prompt + orc_b + res_b + bias_b, covariance=cov)


def _covariance(m, name, G, baseline):
    """Per-prompt ``Cov(g_hat | x)`` (P, d, d) of the unscaled estimator (leave_one_out for group_mean)."""
    gg = np.einsum("pd,pe->pde", m.grad, m.grad)
    if name == "oracle":
        return m.sigma_oracle / G
    if name in ("leave_one_out", "group_mean"):
        if G < 2:
            return np.zeros_like(gg)
        return m.sigma_oracle / G + (m.sigma2[:, None, None] * m.fisher + gg) / (G * (G - 1))
    if name == "vanilla":
        return (m.second_moment_zw - gg) / G
    if m.cov_z_ww is None:
        raise ValueError("the covariance of a prompt-baseline estimator needs moments.cov_z_ww")
    C = greensmith_baseline(m) if name == "greensmith" else np.broadcast_to(np.asarray(baseline, float), m.value.shape)
    D = (m.value - C)[:, None, None]
    return (m.sigma_oracle + D * D * m.fisher + D * (m.cov_z_ww + np.swapaxes(m.cov_z_ww, -1, -2))) / G


# ---------------------------------------------------------------------------- brute-force oracle

@dataclass(frozen=True, kw_only=True)
class EnumeratedMSE:
    """Exact distribution summaries of a per-prompt estimator, by enumeration of the G-fold product.

    Attributes
    ----------
    estimator : str
    num_generations : int
    mean : ndarray, shape (P, d)      E[g_hat | x]
    mse : ndarray, shape (P,)         E||g_hat - g(x)||^2
    covariance : ndarray, shape (P, d, d)   Cov(g_hat | x)
    num_outcomes : int                outcomes per prompt (``(K M)^G``)
    """

    estimator: str
    num_generations: int
    mean: np.ndarray
    mse: np.ndarray
    covariance: np.ndarray
    num_outcomes: int

    def summary(self) -> str:
        return (f"Enumerated MSE of {self.estimator!r}, G={self.num_generations} "
                f"({self.num_outcomes} outcomes per prompt): " + ", ".join(f"{v:.6g}" for v in self.mse))

    __str__ = summary

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def group_outcomes(policy, num_generations, *, theta=None, max_outcomes=200_000):
    """All ``G``-tuples of (arm, reward) outcomes of each prompt of a finite softmax bandit.

    Returns a list over prompts of ``(prob (N,), rewards (N, G), scores (N, G, d))`` with
    ``N = (K M)^G``; used by :func:`enumerate_mse` and the paper checks.
    """
    G = int(num_generations)
    pi = policy.policy_probs(theta)                                           # (P, K)
    P, K, d = policy.features.shape
    M = policy.reward_values.shape[-1]
    n1 = K * M
    if n1 ** G > max_outcomes:
        raise ValueError(f"(K*M)^G = {n1}^{G} outcomes exceed max_outcomes={max_outcomes}")
    combos = np.array(list(itertools.product(range(n1), repeat=G))).reshape(-1, G)   # (N, G)
    arms, ks = combos // M, combos % M
    out = []
    for x in range(P):
        W = policy.features[x] - pi[x] @ policy.features[x]                   # (K, d)
        p1 = pi[x][:, None] * policy.reward_probs[x]                          # (K, M)
        prob = np.prod(p1[arms, ks], axis=-1)                                 # (N,)
        out.append((prob, policy.reward_values[x][arms, ks], W[arms]))
    return out


def enumerate_mse(policy, estimator="leave_one_out", num_generations=None, *, theta=None, baseline=None,
                  max_outcomes=200_000) -> EnumeratedMSE:
    """Exact per-prompt MSE of an estimator by enumerating every group of ``G`` outcomes.

    Parameters
    ----------
    policy : SoftmaxBandit or ContextualSoftmaxBandit
        A finite bandit (finite arms and finite reward supports).
    estimator : str
        A name of :data:`ustat_grpo.theory.estimators.ESTIMATORS`, ``"prompt_baseline"`` or ``"greensmith"``.
    num_generations : int
    theta : array_like, shape (d,), optional
    baseline : array_like, shape (P,), optional
        For ``"prompt_baseline"``.
    max_outcomes : int
        Refuse enumerations larger than this (``(K M)^G`` groups per prompt).

    Returns
    -------
    EnumeratedMSE

    Notes
    -----
    Uses the estimator functions themselves on every possible group, weighted by its exact
    probability, so it shares no algebra with :func:`exact_mse` (spec §4, check C3).
    """
    if num_generations is None:
        raise ValueError("num_generations (G) is required")
    G = int(num_generations)
    mom = policy.moments(theta)
    outs = group_outcomes(policy, G, theta=theta, max_outcomes=max_outcomes)
    P, d = mom.grad.shape
    C = None
    if estimator == "greensmith":
        C = greensmith_baseline(mom)
    elif estimator == "prompt_baseline":
        if baseline is None:
            raise ValueError("estimator 'prompt_baseline' needs baseline=")
        C = np.broadcast_to(np.asarray(baseline, float), (P,))
    elif estimator not in _est.ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}")
    mean = np.zeros((P, d))
    mse = np.zeros(P)
    cov = np.zeros((P, d, d))
    for x, (prob, r, s) in enumerate(outs):
        if C is not None:
            est = _est.prompt_baseline(r, s, baseline=C[x])
        else:
            est = _est.ESTIMATORS[estimator](r, s, values=np.full(len(prob), mom.value[x]))   # (N, d)
        mean[x] = prob @ est
        err = est - mom.grad[x]
        mse[x] = prob @ (err * err).sum(-1)
        dev = est - mean[x]
        cov[x] = np.einsum("n,nd,ne->de", prob, dev, dev)
    return EnumeratedMSE(estimator=estimator, num_generations=G, mean=mean, mse=mse, covariance=cov,
                         num_outcomes=len(outs[0][0]))
