"""MSE(G) of any group estimator, resampled from a pool of ``M`` samples per prompt; score self-check.

Given ``M`` i.i.d. completions per prompt (rewards ``(P, M)``, scores ``(P, M, d)``), the
per-prompt estimate ``f(group)`` of a GRPO-family estimator on ``G <= M`` samples drawn without
replacement is a symmetric function of the group, so its moments ``E||f||^2`` and ``E f`` are
U-statistics of order ``G`` on the pool: :func:`ustat_grpo.stats.ustat.ustatistic` computes them
unbiasedly (all ``C(M, G)`` groups when few, else the incomplete statistic).  With ``B = N/G``
prompts drawn independently, the minibatch estimate ``(1/B) sum_b f_b`` has

    MSE(G) = (E_x E||f||^2 - ||mu_G||^2) / B + ||mu_G - grad J||^2,    mu_G = E_x E f,

where ``grad J = E_x g(x)`` is the policy gradient, estimated per prompt by the leave-one-out
statistic on the whole pool (unbiased when the score has mean zero, i.e. sampler = policy).
Squared norms of means use products over *different* prompts only, so every term is unbiased;
standard errors are a delete-one-prompt jackknife (which includes the resampling noise).

For the leave-one-out estimator ``mu_G = grad J`` and MSE(G) must equal the exact law
``A1/B + A2/(BG) + A3/(BG(G-1))`` of :mod:`ustat_grpo.scaling.constants` (tested); std-normalised and
Dr.GRPO (group-mean) advantages have no closed form and are measured directly.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..theory import estimators as est
from .constants import pool_arrays
from ..core.interval import jackknife_covariance
from ..core._random import default_rng, seed_sequence
from ..core._serialize import jsonable
from ..stats.kernels import Kernel
from ..theory.scale_free import ESTIMATOR_FUNCTIONS
from ..stats.ustat import ustatistic

__all__ = ["POOL_ESTIMATORS", "PoolMSE", "pool_mse", "CRITERION_ESTIMATORS", "EstimatorComparison",
           "compare_estimators", "ScoreMeanCheck", "score_mean_check"]


#: estimator name -> (function on (K, G) rewards and (K, G, d) scores, target and bias in words)
POOL_ESTIMATORS = {
    "leave_one_out": (est.leave_one_out, "unbiased for grad E_{pi_T}[R] (RLOO / the paper's GRPO)"),
    "std_normalized": (ESTIMATOR_FUNCTIONS["std_normalized"], "TRL/verl default (r - mean)/(std + eps): targets E_x[Cov(R, S | x) / sd(R | x)]"
                                 " roughly, a prompt-reweighted gradient; biased for grad E[R], bias depends on G"),
    "group_mean": (est.group_mean, "Dr.GRPO (r - mean), no std: mean (1 - 1/G) grad E[R], bias -grad E[R]/G"),
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
        return jsonable(dict(estimators=list(self.estimators), num_generations=[int(g) for g in self.num_generations],
                    budget=int(self.budget), mse=tl(self.mse), mse_se=tl(self.mse_se),
                    bias_sq=tl(self.bias_sq), bias_sq_se=tl(self.bias_sq_se), variance=tl(self.variance),
                    num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt,
                    best=self.best(), targets={k: POOL_ESTIMATORS[k][1] for k in self.estimators
                                               if k in POOL_ESTIMATORS}))


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
    if not np.all(np.isfinite(loo)):               # a delete-one value undefined (a zero norm): no SE
        return math.nan
    return math.sqrt(jackknife_covariance(loo))


def pool_mse(rewards, scores, *, budget: int, num_generations=None, estimators=("leave_one_out",
             "std_normalized", "group_mean"), num_groups: int = 256, rng=None,
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
    gs = _group_sizes(num_generations, M)
    names = tuple(e if isinstance(e, str) else getattr(e, "__name__", "estimator") for e in estimators)
    fns = [POOL_ESTIMATORS[e][0] if isinstance(e, str) else e for e in estimators]
    E = len(fns)
    out = {k: np.zeros((E, len(gs))) for k in ("mse", "mse_se", "bias_sq", "bias_sq_se", "variance")}
    target, per_g = _pool_stats(r, s, gs, fns, num_groups, rng, with_replacement)
    for j, G in enumerate(gs):
        B = budget / G
        for e in range(E):
            m2, fbar = per_g[j][e]  # (P,), (P, d)
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


def _group_sizes(num_generations, M):
    gs = np.array(sorted(set(int(g) for g in num_generations)) if num_generations is not None
                  else [2 ** k for k in range(1, 20) if 2 ** k <= M // 2], int)
    if len(gs) == 0 or gs.min() < 2 or gs.max() > M:
        raise ValueError(f"group sizes must lie in [2, M = {M}], got {gs.tolist()}")
    return gs


def _pool_stats(r, s, gs, fns, num_groups, rng, with_replacement=False, chunk_elements: int = 2 ** 24):
    """Per-prompt U-statistics of every estimator at every G (one seeded stream per G).

    Returns ``target`` (P, d), the leave-one-out statistic on the whole pool (unbiased for g(x)),
    and ``per_g[j][e] = (m2 (P,), fbar (P, d))``: unbiased per-prompt ``E||f||^2`` and ``E f`` of
    estimator ``e`` on groups of ``gs[j]`` drawn without replacement from the prompt's ``M`` samples
    (all ``C(M, G)`` groups when there are at most ``num_groups``, else ``num_groups`` random ones).

    Every GRPO-family estimator is linear in the scores, ``f = sum_g a_g(r) W_g``: its weights are
    ``f(r, I_G)``, so a prompt's ``K`` groups form a weight matrix ``A (K, M)`` and
    ``fbar = mean_k(A) W``, ``m2 = mean_k A_k (W W^T) A_k^T`` with the Gram matrix ``W W^T`` of the
    prompt's samples: the cost no longer grows with ``G d``.  An estimator that is not linear in
    the scores (checked on the first chunk) is evaluated directly (:func:`_pool_stats_naive`).
    """
    P, M = r.shape
    d = s.shape[-1]
    target = est.leave_one_out(r, s)  # (P, d) per-prompt g(x), unbiased
    seeds = seed_sequence(rng).spawn(len(gs))
    gram = s @ s.transpose(0, 2, 1)  # (P, M, M)
    per_g = []
    for G, seq in zip(gs, seeds):
        G = int(G)
        prng = default_rng(seq)
        complete = not with_replacement and math.comb(M, G) <= num_groups
        combos = np.array(list(itertools.combinations(range(M), G))) if complete else None  # (C, G)
        K = len(combos) if complete else num_groups
        step = max(1, chunk_elements // (K * max(M, G * G)))        # bounds A and f(r, I_G)
        m2 = np.zeros((len(fns), P))
        fbar = np.zeros((len(fns), P, d))
        for lo in range(0, P, step):
            c = min(step, P - lo)
            if complete:
                idx = np.broadcast_to(combos, (c, K, G))
            elif with_replacement:
                idx = prng.integers(0, M, size=(c, K, G))
            else:                                              # K random G-subsets per prompt
                idx = np.argsort(prng.random((c, K, M)), axis=-1)[..., :G]
            rg = np.take_along_axis(r[lo:lo + c, None, :], idx.reshape(c, K * G)[:, None, :], 2).reshape(c, K, G)
            eye = np.broadcast_to(np.eye(G), (c, K, G, G))
            for e, f in enumerate(fns):
                try:
                    w = np.asarray(f(rg, eye), float)          # (c, K, G): weights of each group member
                except (ValueError, TypeError):                # not an estimator linear in the scores
                    return _pool_stats_naive(r, s, gs, fns, num_groups, rng, with_replacement)
                if w.shape != (c, K, G):
                    return _pool_stats_naive(r, s, gs, fns, num_groups, rng, with_replacement)
                A = np.zeros((c, K, M))
                if with_replacement:                           # repeated members add up
                    np.add.at(A, (np.arange(c)[:, None, None], np.arange(K)[None, :, None], idx), w)
                else:
                    np.put_along_axis(A, idx, w, axis=2)
                if lo == 0 and not _is_linear(f, rg, idx, s[lo:lo + c], A):
                    return _pool_stats_naive(r, s, gs, fns, num_groups, rng, with_replacement)
                fbar[e, lo:lo + c] = (A.mean(1)[:, None, :] @ s[lo:lo + c])[:, 0]       # (c, d)
                m2[e, lo:lo + c] = ((A @ gram[lo:lo + c]) * A).sum((1, 2)) / K        # (c,)
        per_g.append([(m2[e], fbar[e]) for e in range(len(fns))])
    return target, per_g


def _is_linear(f, rg, idx, s, A, probe: int = 4) -> bool:
    """Does ``f(r, W)`` equal ``A W`` on a few groups of the first prompt (linear in the scores)?"""
    k = min(probe, rg.shape[1])
    W = s[0][idx[0, :k]]                                     # (k, G, d)
    direct = np.asarray(f(rg[0, :k], W), float)              # (k, d)
    return bool(np.allclose(direct, A[0, :k] @ s[0], rtol=1e-9, atol=1e-12 * (1 + np.abs(direct).max())))


def _pool_stats_naive(r, s, gs, fns, num_groups, rng, with_replacement=False):
    """The direct twin of :func:`_pool_stats`: each prompt's groups evaluated one U-statistic at a
    time through :func:`ustat_grpo.stats.ustat.ustatistic` (any estimator; the test oracle)."""
    P, M = r.shape
    E, d = len(fns), s.shape[-1]
    target = est.leave_one_out(r, s)
    seeds = seed_sequence(rng).spawn(len(gs))
    data = np.concatenate([r[..., None], s], -1)  # (P, M, 1 + d)
    per_g = []
    for G, seq in zip(gs, seeds):
        kern = _kernel(fns, int(G))
        prng = default_rng(seq)
        stats = np.stack([_prompt_stat(data[p], kern, num_groups, prng, with_replacement)
                          for p in range(P)])  # (P, E (1 + d))
        per_g.append([(stats[:, e * (1 + d)], stats[:, e * (1 + d) + 1:(e + 1) * (1 + d)]) for e in range(E)])
    return target, per_g


def _prompt_stat(data, kern, num_groups, rng, with_replacement):
    M, G = data.shape[0], kern.order
    if with_replacement:
        idx = rng.integers(0, M, size=(num_groups, G))
        return kern(*[data[idx[:, t]] for t in range(G)]).mean(0)
    if math.comb(M, G) <= num_groups:
        return ustatistic(data, kern, method="vectorized", variance="none").statistic
    return ustatistic(data, kern, method="incomplete", num_tuples=num_groups, rng=rng).statistic


# ------------------------------------------------------------------------------ scale-free criterion

#: Estimators of :func:`compare_estimators`: name -> (per-prompt function, what it is).  The
#: ``*_batch`` variant divides by one std of the whole batch's rewards (TRL ``scale_rewards="batch"``),
#: a random scale shared by all groups; its criterion is that of the per-prompt estimator (first
#: order in 1/N: the batch std concentrates, and a constant scale leaves the criterion unchanged).
CRITERION_ESTIMATORS = {
    "leave_one_out": (ESTIMATOR_FUNCTIONS["leave_one_out"], "RLOO / the paper's GRPO (unbiased)"),
    "group_mean": (ESTIMATOR_FUNCTIONS["group_mean"], "Dr.GRPO r - mean = (G-1)/G leave-one-out; TRL scale_rewards='none'"),
    "std_normalized": (ESTIMATOR_FUNCTIONS["std_normalized"], "TRL default (r - mean)/(std + 1e-4)"),
    "std_normalized_verl": (ESTIMATOR_FUNCTIONS["std_normalized_verl"], "verl grpo (r - mean)/(std + 1e-6)"),
    "std_normalized_openrlhf": (ESTIMATOR_FUNCTIONS["std_normalized_openrlhf"],
                                "OpenRLHF group_norm (r - mean)/(std + 1e-9)"),
    "group_mean_batch": (ESTIMATOR_FUNCTIONS["group_mean"], "TRL scale_rewards='batch' (LitePPO): r - mean over the"
                                                            " batch std; criterion of group_mean to first order in 1/N"),
}


@dataclass(frozen=True, kw_only=True)
class EstimatorComparison:
    """Scale-free comparison of gradient estimators across group sizes at one budget.

    The criterion (``docs/scale_free_criterion.md``) is the relative error after the best
    rescaling, ``R(G) = min_c E||c g_hat - grad J||^2 / ||grad J||^2 = 1 - cos^2 / (1 + rho)``,
    with ``g_hat`` the minibatch estimate at ``B = budget / G`` prompts.

    Attributes
    ----------
    estimators : tuple of str
    num_generations : ndarray (K,) int
    budget : int
    criterion, criterion_se : ndarray (E, K)   R(G) and its delete-one-prompt jackknife SE
    criterion_low, criterion_high : ndarray (E, K)   ``level`` confidence interval of R(G)
    noise_to_signal : ndarray (E, K)   ``rho = tr Cov(g_hat) / ||E g_hat||^2``
    cosine : ndarray (E, K)            ``cos`` of the angle between ``E g_hat`` and ``grad J``
    raw_mse : ndarray (E, K)           the old criterion, ``E||g_hat - grad J||^2`` (scale-dependent)
    recommended : dict                 per estimator: ``num_generations`` (argmin R), ``interval``
        ``(low, high)`` = range of the G not significantly worse than it (paired jackknife,
        one-sided, Bonferroni over the other G, at ``level``), ``not_worse`` (that set) and
        ``raw_mse_num_generations`` (argmin of the raw MSE, for contrast)
    agree : bool                       the estimators' not-worse sets share a G
    note : str                         one line saying so
    level : float
    num_prompts, samples_per_prompt : int
    """

    estimators: tuple
    num_generations: np.ndarray
    budget: int
    criterion: np.ndarray
    criterion_se: np.ndarray
    criterion_low: np.ndarray
    criterion_high: np.ndarray
    noise_to_signal: np.ndarray
    cosine: np.ndarray
    raw_mse: np.ndarray
    recommended: dict
    agree: bool
    note: str
    level: float
    num_prompts: int
    samples_per_prompt: int

    def summary(self) -> str:
        lines = [f"scale-free criterion R(G) = min_c E||c g_hat - grad J||^2/||grad J||^2 at N = {self.budget} "
                 f"({self.num_prompts} prompts x {self.samples_per_prompt} samples; {100 * self.level:g}% CI):"]
        for e, name in enumerate(self.estimators):
            rec = self.recommended[name]
            cells = ", ".join(f"G={g}: {c:.4g} [{lo:.3g}, {hi:.3g}]" for g, c, lo, hi in zip(
                self.num_generations, self.criterion[e], self.criterion_low[e], self.criterion_high[e]))
            lines.append(f"  {name}: G = {rec['num_generations']} [{rec['interval'][0]}, {rec['interval'][1]}] "
                         f"(raw MSE would pick {rec['raw_mse_num_generations']}); {cells}")
        lines.append(f"  {self.note}")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(
            estimators=list(self.estimators), num_generations=self.num_generations, budget=self.budget,
            criterion=self.criterion, criterion_se=self.criterion_se, criterion_low=self.criterion_low,
            criterion_high=self.criterion_high, noise_to_signal=self.noise_to_signal, cosine=self.cosine,
            raw_mse=self.raw_mse, recommended=self.recommended, agree=self.agree, note=self.note,
            level=self.level, num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt,
            criterion_name="min_c E||c g_hat - grad J||^2 / ||grad J||^2",
            descriptions={k: CRITERION_ESTIMATORS[k][1] for k in self.estimators if k in CRITERION_ESTIMATORS}))


def _criterion_terms(m2, fbar, target, B):
    """R, rho, cos, raw MSE from per-prompt rows, and R's delete-one-prompt values (P,)."""
    P = len(m2)
    mm, mm_l = _cross(fbar)
    mg, mg_l = _cross(fbar, target)
    gg, gg_l = _cross(target)
    bb, bb_l = _cross(fbar - target)
    m2_l = (m2.sum() - m2) / (P - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        R = 1.0 - mg * mg / (gg * ((m2.mean() - mm) / B + mm))
        R_l = 1.0 - mg_l * mg_l / (gg_l * ((m2_l - mm_l) / B + mm_l))
        rho = (m2.mean() - mm) / B / mm
        cos = mg / np.sqrt(mm * gg) if mm > 0 and gg > 0 else np.nan
    return float(R), R_l, float(rho), float(cos), float((m2.mean() - mm) / B + bb)


def _not_worse(R, R_l, level):
    """Indices of the G whose R is not significantly above the smallest (paired jackknife, Bonferroni)."""
    from scipy.stats import norm

    K = R.shape[0]
    best = int(np.nanargmin(R))
    R = np.where(np.isnan(R), np.inf, R)
    z = norm.ppf(1 - (1 - level) / max(K - 1, 1))
    keep = []
    for k in range(K):
        if k != best and not np.isfinite(R[k]):              # undefined on this pilot: not a candidate
            continue
        with np.errstate(invalid="ignore"):                     # an undefined delete-one value: no SE
            se = math.sqrt(jackknife_covariance(R_l[k] - R_l[best]))
        if k == best or not np.isfinite(se) or R[k] - R[best] <= z * se:
            keep.append(k)
    return best, keep


def compare_estimators(rewards, scores, *, budget: int, num_generations=None,
                       estimators=("leave_one_out", "std_normalized", "group_mean"), rng=None, level: float = 0.95,
                       num_groups: int = 256) -> EstimatorComparison:
    """Compare GRPO-family estimators by the scale-free criterion and recommend G for each.

    Parameters
    ----------
    rewards : array_like (P, M)
        ``M`` i.i.d. completions' rewards for each of ``P`` pilot prompts (sampler = policy).
    scores : array_like (P, M, k)
        Their scores ``grad log pi`` (exact or sketched: any linear projection keeps the
        criterion's inner products unbiased).
    budget : int
        Rollouts per step ``N = B G``; the minibatch has ``B = N / G`` prompts.
    num_generations : sequence of int, optional
        Candidate G, each in ``[2, M]`` (default powers of two ``<= M // 2``).
    estimators : sequence of str or callable
        Keys of :data:`CRITERION_ESTIMATORS` (``leave_one_out``, ``group_mean`` (Dr.GRPO), ``std_normalized``
        (TRL), ``std_normalized_verl``, ``std_normalized_openrlhf``, ``group_mean_batch``) or
        callables ``f(rewards (K, G), scores (K, G, k)) -> (K, k)``.
    rng : seed of the incomplete U-statistics (groups drawn per prompt when ``C(M, G) > num_groups``).
    level : float
        Confidence level of the criterion's intervals and of the not-worse sets.
    num_groups : int
        Groups per prompt and G for the incomplete U-statistic.

    Returns
    -------
    EstimatorComparison
        ``criterion[e, k]`` with interval, ``recommended[name]`` (``num_generations``,
        ``interval``, ``not_worse``), ``agree`` and ``note`` ("estimators disagree: ..." only when
        their not-worse sets under the criterion share no G).

    Notes
    -----
    ``E||f||^2`` and ``E f`` per prompt are U-statistics of order G on the pool (as in
    :func:`pool_mse`); ``||E g_hat||^2``, ``<E g_hat, grad J>`` and ``||grad J||^2`` are products
    over different prompts (unbiased), ``grad J`` per prompt the leave-one-out statistic of all
    ``M`` samples.  ``R`` is a smooth ratio of these unbiased terms (consistent, bias O(1/P));
    its standard error is the delete-one-prompt jackknife.  Exact values on finite bandits:
    :func:`ustat_grpo.theory.scale_free.exact_criterion`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.beta(0.5, 2, 200)
    >>> r = (rng.random((200, 16)) < p[:, None]).astype(float)
    >>> s = rng.normal(size=(200, 16, 4)) + r[..., None] * (p[:, None, None] - 0.5)
    >>> c = compare_estimators(r, s, budget=64, num_generations=[2, 4, 8], rng=1)
    >>> bool(np.allclose(c.criterion[0], c.criterion[2]))        # Dr.GRPO = leave-one-out
    True
    """
    r, s = pool_arrays(rewards, scores, min_samples=2, finite=False)
    P, M = r.shape
    if P < 4:
        raise ValueError("at least 4 prompts are needed (cross-prompt products and a jackknife)")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    gs = _group_sizes(num_generations, M)
    names = tuple(e if isinstance(e, str) else getattr(e, "__name__", "estimator") for e in estimators)
    for e in estimators:
        if isinstance(e, str) and e not in CRITERION_ESTIMATORS:
            raise ValueError(f"unknown estimator {e!r}; choose from {sorted(CRITERION_ESTIMATORS)} or pass a callable")
    fns = [CRITERION_ESTIMATORS[e][0] if isinstance(e, str) else e for e in estimators]
    E, K = len(fns), len(gs)
    target, per_g = _pool_stats(r, s, gs, fns, num_groups, rng)
    out = {k: np.full((E, K), np.nan) for k in ("criterion", "criterion_se", "noise_to_signal", "cosine", "raw_mse")}
    loo = np.zeros((E, K, P))
    for j, G in enumerate(gs):
        for e in range(E):
            m2, fbar = per_g[j][e]
            R, R_l, rho, cos, mse = _criterion_terms(m2, fbar, target, budget / G)
            out["criterion"][e, j], out["noise_to_signal"][e, j], out["cosine"][e, j] = R, rho, cos
            out["raw_mse"][e, j], loo[e, j] = mse, R_l
            out["criterion_se"][e, j] = _jack_se(R_l)
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    recommended, sets = {}, []
    for e, name in enumerate(names):
        if np.all(np.isnan(out["criterion"][e])):                # no signal (e.g. every reward equal)
            sets.append(set())
            recommended[name] = dict(num_generations=None, interval=(None, None), not_worse=[],
                                     raw_mse_num_generations=None)
            continue
        best, keep = _not_worse(out["criterion"][e], loo[e], level)
        kept = [int(gs[k]) for k in keep]
        sets.append(set(kept))
        recommended[name] = dict(num_generations=int(gs[best]), interval=(min(kept), max(kept)), not_worse=kept,
                                 raw_mse_num_generations=int(gs[int(np.nanargmin(out["raw_mse"][e]))]))
    common = sorted(set.intersection(*sets))
    agree = bool(common)
    picks = ", ".join(f"{n} G={recommended[n]['num_generations']} [{recommended[n]['interval'][0]}, "
                      f"{recommended[n]['interval'][1]}]" for n in names)
    if not agree:
        note = f"estimators disagree under the scale-free criterion: {picks}"
    elif len({recommended[n]["num_generations"] for n in names}) == 1:
        note = f"estimators agree: G = {recommended[names[0]]['num_generations']} ({picks})"
    else:
        note = f"estimators agree within the intervals (common G: {common}): {picks}"
    return EstimatorComparison(estimators=names, num_generations=gs, budget=int(budget),
                               criterion_low=out["criterion"] - z * out["criterion_se"],
                               criterion_high=out["criterion"] + z * out["criterion_se"], recommended=recommended,
                               agree=agree, note=note, level=float(level), num_prompts=P, samples_per_prompt=M,
                               **out)


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
        return jsonable(dict(statistic=float(self.statistic), standard_error=float(self.standard_error), z=float(self.z),
                    relative_drift=float(self.relative_drift), passed=bool(self.passed),
                    threshold=float(self.threshold), n=int(self.n)))


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
