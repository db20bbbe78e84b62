"""MSE(G) of any group estimator, resampled from a pool of ``M`` samples per prompt; score self-check.

Given ``M`` i.i.d. completions per prompt (rewards ``(P, M)``, scores ``(P, M, d)``), the
per-prompt estimate ``f(group)`` of a GRPO-family estimator on ``G <= M`` samples drawn without
replacement is a symmetric function of the group, so its moments ``E||f||^2`` and ``E f`` are
U-statistics of order ``G`` on the pool: :func:`ustat_grpo.ustat.ustatistic` computes them
unbiasedly (all ``C(M, G)`` groups when few, else the incomplete statistic).  With ``B = N/G``
prompts drawn independently, the minibatch estimate ``(1/B) sum_b f_b`` has

    MSE(G) = (E_x E||f||^2 - ||mu_G||^2) / B + ||mu_G - grad J||^2,    mu_G = E_x E f,

where ``grad J = E_x g(x)`` is the policy gradient, estimated per prompt by the leave-one-out
statistic on the whole pool (unbiased when the score has mean zero, i.e. sampler = policy).
Squared norms of means use products over *different* prompts only, so every term is unbiased;
standard errors are a delete-one-prompt jackknife (which includes the resampling noise).

For the leave-one-out estimator ``mu_G = grad J`` and MSE(G) must equal the exact law
``A1/B + A2/(BG) + A3/(BG(G-1))`` of :mod:`ustat_grpo.constants` (tested); std-normalised and
Dr.GRPO (group-mean) advantages have no closed form and are measured directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import estimators as est
from .constants import pool_arrays
from .kernels import Kernel
from .ustat import ustatistic

__all__ = ["POOL_ESTIMATORS", "PoolMSE", "pool_mse", "ScoreMeanCheck", "score_mean_check"]


def _std_trl(r, s):
    """TRL GRPOTrainer default: ``(r - mean) / (std_unbiased + 1e-4)``, zero-std groups -> 0."""
    return est.std_normalized(r, s, eps=1e-4, ddof=1, zero_std="zero")


#: estimator name -> (function on (K, G) rewards and (K, G, d) scores, target and bias in words)
POOL_ESTIMATORS = {
    "leave_one_out": (est.leave_one_out, "unbiased for grad E_{pi_T}[R] (RLOO / the paper's GRPO)"),
    "std_normalized": (_std_trl, "TRL/verl default (r - mean)/(std + eps): targets E_x[Cov(R, S | x) / sd(R | x)]"
                                 " roughly, a prompt-reweighted gradient; biased for grad E[R], bias depends on G"),
    "dr_grpo": (est.group_mean, "Dr.GRPO (r - mean), no std: mean (1 - 1/G) grad E[R], bias -grad E[R]/G"),
}


def _kernel(fns, order):
    def func(*xs):
        x = np.stack(xs, 1)  # (k, G, 1 + d)
        r, s = x[..., 0], x[..., 1:]
        out = []
        for f in fns:
            v = f(r, s)  # (k, d)
            out += [(v * v).sum(-1, keepdims=True), v]
        return np.concatenate(out, -1)  # (k, E (1 + d))

    return Kernel(func=func, order=order, name="pool-mse")


@dataclass(frozen=True, kw_only=True)
class PoolMSE:
    """MSE of each estimator per group size at a budget, from the pool.

    Attributes
    ----------
    estimators : tuple of names
    num_generations : ndarray (K,) int
    budget : int
    mse, mse_se : ndarray (E, K)   MSE(G) at ``B = budget / G`` and its jackknife standard error
    bias_sq, bias_sq_se : ndarray (E, K)   ``||mu_G - grad J||^2`` (unbiased; may be < 0 by noise)
    variance : ndarray (E, K)       per-group variance ``E||f||^2 - ||mu_G||^2`` (times 1/B in MSE)
    num_prompts : int               prompts in the pool
    samples_per_prompt : int        M
    """

    estimators: tuple
    num_generations: np.ndarray
    budget: int
    mse: np.ndarray
    mse_se: np.ndarray
    bias_sq: np.ndarray
    bias_sq_se: np.ndarray
    variance: np.ndarray
    num_prompts: int
    samples_per_prompt: int

    def best(self) -> dict:
        """Per estimator: the G of smallest MSE on the grid, with MSE and SE there."""
        out = {}
        for e, name in enumerate(self.estimators):
            k = int(np.argmin(self.mse[e]))
            out[name] = dict(num_generations=int(self.num_generations[k]), mse=float(self.mse[e, k]),
                             mse_se=float(self.mse_se[e, k]))
        return out

    def summary(self) -> str:
        lines = [f"pool-resampled MSE at N = {self.budget} ({self.num_prompts} prompts x "
                 f"{self.samples_per_prompt} samples):"]
        for e, name in enumerate(self.estimators):
            cells = ", ".join(f"G={g}: {m:.4g}+-{s:.2g}" for g, m, s in
                              zip(self.num_generations, self.mse[e], self.mse_se[e]))
            lines.append(f"  {name}: {cells}")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        tl = lambda a: [[float(x) for x in row] for row in a]
        return dict(estimators=list(self.estimators), num_generations=[int(g) for g in self.num_generations],
                    budget=int(self.budget), mse=tl(self.mse), mse_se=tl(self.mse_se),
                    bias_sq=tl(self.bias_sq), bias_sq_se=tl(self.bias_sq_se), variance=tl(self.variance),
                    num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt,
                    best=self.best(), targets={k: POOL_ESTIMATORS[k][1] for k in self.estimators
                                               if k in POOL_ESTIMATORS})


def _cross(a, b=None):
    """Unbiased ``<E a, E b>`` from per-prompt rows ``a, b`` (P, d) via different-prompt products,
    and its delete-one-prompt values (P,)."""
    b = a if b is None else b
    P = a.shape[0]
    sa, sb = a.sum(0), b.sum(0)
    diag = (a * b).sum(1)  # (P,)
    full = (sa @ sb - diag.sum()) / (P * (P - 1))
    loo = ((sa @ sb) - a @ sb - b @ sa + diag - (diag.sum() - diag)) / ((P - 1) * (P - 2))
    return full, loo


def _jack_se(loo):
    P = len(loo)
    return float(np.sqrt((P - 1) / P * ((loo - loo.mean()) ** 2).sum()))


def pool_mse(rewards, scores, *, budget: int, num_generations=None, estimators=("leave_one_out",
             "std_normalized", "dr_grpo"), num_groups: int = 256, rng=None,
             with_replacement: bool = False) -> PoolMSE:
    """MSE(G) of each estimator at ``budget`` from per-prompt pools (see the module docstring).

    Parameters
    ----------
    rewards : array_like (P, M)
    scores : array_like (P, M, d)
    budget : int                    rollouts per step ``N = B G``
    num_generations : sequence of int, optional
        Group sizes (default powers of two ``<= M // 2``); each must satisfy ``2 <= G <= M``.
    estimators : names in :data:`POOL_ESTIMATORS` or callables ``f(rewards (K, G), scores (K, G, d))``
    num_groups : int
        Groups drawn per prompt and G (the incomplete U-statistic); all ``C(M, G)`` when fewer.
    rng : seed of the incomplete draws.
    with_replacement : bool
        Draw group members *with* replacement: a deliberately wrong resampler (biased), for
        negative controls only.
    """
    r, s = pool_arrays(rewards, scores, min_samples=2, finite=False)
    P, M = r.shape
    if P < 3:
        raise ValueError("at least 3 prompts are needed (cross-prompt products and a jackknife)")
    gs = np.array(sorted(set(num_generations)) if num_generations is not None
                  else [2 ** k for k in range(1, 20) if 2 ** k <= M // 2], int)
    if len(gs) == 0 or gs.min() < 2 or gs.max() > M:
        raise ValueError(f"group sizes must lie in [2, M = {M}], got {gs.tolist()}")
    names = tuple(e if isinstance(e, str) else getattr(e, "__name__", "estimator") for e in estimators)
    fns = [POOL_ESTIMATORS[e][0] if isinstance(e, str) else e for e in estimators]
    E, d = len(fns), s.shape[-1]
    target = est.leave_one_out(r, s)  # (P, d) per-prompt g(x), unbiased
    seeds = np.random.SeedSequence(rng).spawn(len(gs))
    out = {k: np.zeros((E, len(gs))) for k in ("mse", "mse_se", "bias_sq", "bias_sq_se", "variance")}
    data = np.concatenate([r[..., None], s], -1)  # (P, M, 1 + d)
    for j, (G, seq) in enumerate(zip(gs, seeds)):
        kern = _kernel(fns, int(G))
        prng = np.random.default_rng(seq)
        stats = np.stack([_prompt_stat(data[p], kern, num_groups, prng, with_replacement)
                          for p in range(P)])  # (P, E (1 + d))
        B = budget / G
        for e in range(E):
            blk = stats[:, e * (1 + d):(e + 1) * (1 + d)]
            m2, fbar = blk[:, 0], blk[:, 1:]  # (P,), (P, d)
            mu2, mu2_loo = _cross(fbar)
            bias, bias_loo = _cross(fbar - target)
            m2_loo = (m2.sum() - m2) / (P - 1)
            var, var_loo = m2.mean() - mu2, m2_loo - mu2_loo
            mse_loo = var_loo / B + bias_loo
            out["mse"][e, j] = var / B + bias
            out["mse_se"][e, j] = _jack_se(mse_loo)
            out["bias_sq"][e, j], out["bias_sq_se"][e, j] = bias, _jack_se(bias_loo)
            out["variance"][e, j] = var
    return PoolMSE(estimators=names, num_generations=gs, budget=int(budget), num_prompts=P,
                   samples_per_prompt=M, **out)


def _prompt_stat(data, kern, num_groups, rng, with_replacement):
    M, G = data.shape[0], kern.order
    if with_replacement:
        idx = rng.integers(0, M, size=(num_groups, G))
        return kern(*[data[idx[:, t]] for t in range(G)]).mean(0)
    if math.comb(M, G) <= num_groups:
        return ustatistic(data, kern, method="vectorized", variance="none").statistic
    return ustatistic(data, kern, method="incomplete", num_tuples=num_groups, rng=rng).statistic


# ------------------------------------------------------------------------------ score self-check

@dataclass(frozen=True, kw_only=True)
class ScoreMeanCheck:
    """Is the mean score zero?  (It is when completions are sampled from the differentiated policy.)

    Attributes
    ----------
    statistic : float
        ``U = sum_{i != j} <S_i, S_j> / (n (n-1))``: unbiased for the mean squared drift
        ``||E S||^2`` (0 under sampler = policy).
    standard_error : float      of ``U`` under the null (``sqrt(2 sum_{i!=j} <S_i,S_j>^2) / (n(n-1))``)
    z : float                   ``U / standard_error`` (one-sided; large = drift)
    relative_drift : float      ``U / mean ||S||^2``
    passed : bool               ``z <= threshold``
    threshold : float
    n : int
    """

    statistic: float
    standard_error: float
    z: float
    relative_drift: float
    passed: bool
    threshold: float
    n: int

    def summary(self) -> str:
        verdict = "consistent with zero" if self.passed else "NOT zero: sampler and differentiated policy differ"
        return (f"mean-score self-check: ||E S||^2 = {self.statistic:.3g} +- {self.standard_error:.2g} "
                f"(z = {self.z:.2f}, {100 * self.relative_drift:.2f}% of E||S||^2, n = {self.n}): {verdict}")

    __str__ = summary

    def to_dict(self) -> dict:
        return dict(statistic=float(self.statistic), standard_error=float(self.standard_error), z=float(self.z),
                    relative_drift=float(self.relative_drift), passed=bool(self.passed),
                    threshold=float(self.threshold), n=int(self.n))


def score_mean_check(scores, *, threshold: float = 4.0) -> ScoreMeanCheck:
    """Test ``E[S] = 0`` on independent scores ``(..., d)`` (any prompts; each mean zero under H0).

    Under H0 ``U`` has mean 0 and variance ``2 sum_{i != j} tr(Sigma_i Sigma_j) / (n(n-1))^2``,
    estimated unbiasedly by ``sum_{i != j} <S_i, S_j>^2``; with ``d x d`` products the cost is
    ``O(n d^2)``.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.random.default_rng(0).normal(size=(2000, 3))
    >>> score_mean_check(s).passed, score_mean_check(s + 0.5).passed
    (True, False)
    """
    S = np.asarray(scores, float).reshape(-1, np.shape(scores)[-1])
    n = S.shape[0]
    sq = (S * S).sum(1)  # (n,)
    tot = S.sum(0)
    U = (tot @ tot - sq.sum()) / (n * (n - 1))
    C = S.T @ S  # (d, d)
    off = max((C * C).sum() - (sq ** 2).sum(), 0.0)
    se = math.sqrt(2 * off) / (n * (n - 1))
    z = U / se if se > 0 else (math.inf if U > 0 else 0.0)
    return ScoreMeanCheck(statistic=float(U), standard_error=float(se), z=float(z),
                          relative_drift=float(U / sq.mean()) if sq.mean() > 0 else 0.0,
                          passed=bool(z <= threshold), threshold=threshold, n=n)
