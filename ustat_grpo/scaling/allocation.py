"""Rollouts allocated across prompts: the batch gradient error as a function of each group size.

With the prompt (or its stratum) known before sampling, the batch estimator
``(1/B) sum_i g_hat_{G_i}(x_i)`` of the leave-one-out (GRPO/RLOO) gradient with group sizes
``G_i`` is unbiased and, by Prop. 3 of arXiv 2603.01162 applied prompt by prompt,

    MSE = A1/B + (1/B^2) sum_i [a2_i/G_i + a3_i/(G_i(G_i - 1))],

with ``a2(x) = tr Sigma_oracle(x)`` and ``a3(x) = sigma^2(x) tr I(x) + ||g(x)||^2`` the per-prompt
pieces (:func:`prompt_error_pieces`) and ``A1`` the between-prompt variance.  The sum is separable
and each term is convex and decreasing in ``G_i`` (for ``a2_i, a3_i >= 0``), so the allocation that
minimises it under ``sum_i G_i = N`` is found exactly by greedy marginal allocation
(:func:`optimal_allocation`).  The rules of other allocators are here for comparison:
Knapsack-RL's value knapsack (:func:`knapsack_rl_allocation`) and a pass-rate variance rule
(:func:`pass_rate_allocation`).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import numpy as np

from ..core._serialize import jsonable
from ..core.interval import ConfidenceInterval
from .optimum import fieller_ratio_interval

__all__ = [
    "PASS_RATE_BINS",
    "AllocationResult",
    "allocate",
    "batch_mse",
    "knapsack_rl_allocation",
    "knapsack_rl_value",
    "moment_error_pieces",
    "optimal_allocation",
    "pass_rate_allocation",
    "pass_rate_strata",
    "prompt_error_pieces",
    "uniform_allocation",
]


# ------------------------------------------------------------------ validation

def _int_option(name, value, *, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _size_range(budget, num_prompts, min_size, multiple, max_size):
    """Validated ``(budget, lo, hi, multiple)``: sizes are the multiples of ``multiple`` in ``[lo, hi]``."""
    budget = _int_option("budget", budget, low=0)
    multiple = _int_option("multiple", multiple, low=1)
    min_size = _int_option("min_size", min_size, low=1)
    lo = -(-min_size // multiple) * multiple                 # smallest allowed size
    if max_size is None:
        hi = budget
    else:
        max_size = _int_option("max_size", max_size, low=1)
        hi = (max_size // multiple) * multiple
    if num_prompts < 1:
        raise ValueError("need at least one prompt")
    if hi < lo:
        raise ValueError(f"no group size is a multiple of {multiple} in [min_size={min_size}, "
                         f"max_size={max_size}]")
    if budget % multiple:
        raise ValueError(f"budget {budget} is not a multiple of multiple={multiple}")
    if num_prompts * lo > budget:
        raise ValueError(f"budget {budget} is below num_prompts x min_size = {num_prompts} x {lo}")
    if max_size is not None and num_prompts * hi < budget:
        raise ValueError(f"budget {budget} exceeds num_prompts x max_size = {num_prompts} x {hi}")
    return budget, lo, hi, multiple


def _pieces_iv(a2, a3):
    a2, a3 = np.asarray(a2, float), np.asarray(a3, float)
    if a2.shape != a3.shape or a2.ndim != 1 or a2.size == 0:
        raise ValueError(f"a2 and a3 must be 1-d arrays of the same length, got {a2.shape} and {a3.shape}")
    if not (np.all(np.isfinite(a2)) and np.all(np.isfinite(a3))):
        raise ValueError("a2 and a3 must be finite")
    if np.any(a2 < 0) or np.any(a3 < 0):
        raise ValueError("a2 and a3 must be non-negative (clip unbiased estimates at 0 first, or pool "
                         "prompts into strata): the greedy optimum needs convex terms")
    return a2, a3


def _pass_rate_iv(p):
    p = np.asarray(p, float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p must be a non-empty 1-d array of pass rates, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("p must lie in [0, 1]")
    return p


def _sizes_iv(sizes):
    s = np.asarray(sizes)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sizes must be a non-empty 1-d array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        if not np.all(np.isfinite(s)) or np.any(s != np.round(s)):
            raise ValueError("sizes must be integers")
        s = s.astype(np.int64)
    if np.any(s < 2):
        raise ValueError("every group size must be >= 2 (the leave-one-out estimator needs two samples)")
    return s.astype(np.int64)


# ------------------------------------------------------------------ per-prompt pieces and the batch MSE

def prompt_error_pieces(stats) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt ``(a2, a3)`` of the conditional error of the leave-one-out gradient.

    ``E[||g_hat_G(x) - g(x)||^2 | x] = a2(x)/G + a3(x)/(G(G-1))`` (arXiv 2603.01162, Prop. 3
    prompt by prompt; :func:`ustat_grpo.theory.mse.exact_mse`) with ``a2(x) = E[(Z-V)^2 ||W||^2 | x] -
    ||g(x)||^2`` and ``a3(x) = sigma^2(x) tr I(x) + ||g(x)||^2``.

    Parameters
    ----------
    stats : PromptStatistics
        Per-prompt U-statistics (a pilot's, :func:`ustat_grpo.scaling.constants.prompt_statistics`).

    Returns
    -------
    a2, a3 : ndarray, shape (P,)
        Unbiased per-prompt estimates (may be negative for a prompt with few samples; their means
        are ``A2`` and ``A3`` of :func:`ustat_grpo.scaling.constants.constants_from_statistics`).
    """
    from .constants import PromptStatistics

    if not isinstance(stats, PromptStatistics):
        raise TypeError(f"stats must be a PromptStatistics, got {type(stats).__name__}")
    return (np.asarray(stats.zzq - stats.g_norm2, float),
            np.asarray(stats.sigma2_trI + stats.g_norm2, float))


def moment_error_pieces(moments) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-prompt ``(a2, a3)`` from a policy's exact moments (a bandit's ``moments()``).

    ``a2(x) = tr Sigma_oracle(x)`` and ``a3(x) = sigma^2(x) tr I(x) + ||g(x)||^2`` (the
    population values that :func:`prompt_error_pieces` estimates without bias).
    """
    tr = lambda a: np.trace(a, axis1=-2, axis2=-1)
    g2 = np.einsum("pd,pd->p", moments.grad, moments.grad)
    return np.asarray(tr(moments.sigma_oracle), float), np.asarray(moments.sigma2 * tr(moments.fisher) + g2, float)


def _term(a2, a3, G):
    """``a2/G + a3/(G(G-1))`` elementwise (``G >= 2``)."""
    G = np.asarray(G, float)
    return a2 / G + a3 / (G * (G - 1.0))


def batch_mse(a1, a2, a3, sizes) -> float:
    """MSE of the batch leave-one-out gradient with group size ``sizes[i]`` for prompt ``i``.

    ``A1/B + (1/B^2) sum_i (a2_i/G_i + a3_i/(G_i(G_i-1)))`` with ``B = len(sizes)``: prompts (or
    their strata) known before sampling, each group's estimator unbiased for its prompt's gradient
    and the groups independent (arXiv 2603.01162, Prop. 3 with unequal ``G``).  With equal sizes
    and ``a2, a3`` the constants ``A2, A3`` it is the scaling law ``A1/B + A2/(BG) + A3/(BG(G-1))``.

    Parameters
    ----------
    a1 : float
        Between-prompt variance ``A1``.
    a2, a3 : array_like, shape (B,) or scalars
        Per-prompt (per-stratum) pieces of the prompts in the batch.
    sizes : array_like of int, shape (B,)
        Group sizes, each ``>= 2``.

    Returns
    -------
    float
    """
    s = _sizes_iv(sizes)
    a1 = float(a1)
    a2 = np.broadcast_to(np.asarray(a2, float), s.shape)
    a3 = np.broadcast_to(np.asarray(a3, float), s.shape)
    if not (np.isfinite(a1) and np.all(np.isfinite(a2)) and np.all(np.isfinite(a3))):
        raise ValueError("a1, a2 and a3 must be finite")
    B = s.size
    return float(a1 / B + _term(a2, a3, s).sum() / B**2)


# ------------------------------------------------------------------ the error-minimising allocation

def optimal_allocation(a2, a3, budget, *, min_size: int = 2, multiple: int = 1, max_size=None) -> np.ndarray:
    """Group sizes minimising ``sum_i a2_i/G_i + a3_i/(G_i(G_i-1))`` with ``sum_i G_i == budget``.

    Parameters
    ----------
    a2, a3 : array_like, shape (P,)
        Non-negative per-prompt (per-stratum) pieces (:func:`prompt_error_pieces`, clipped or
        pooled by stratum).
    budget : int
        Rollouts ``N`` to spend, exactly.
    min_size : int
        Smallest group size (``>= 2``: the leave-one-out estimator needs two samples).
    multiple : int
        Every size a multiple of this (e.g. a trainer's divisibility constraint); ``budget`` must be
        one too.
    max_size : int, optional
        Largest group size.

    Returns
    -------
    ndarray of int64, shape (P,)

    Raises
    ------
    ValueError
        When no allocation satisfies the constraints (budget below ``P x min_size``, above
        ``P x max_size``, or not a multiple of ``multiple``).

    Notes
    -----
    Each term ``f_i(G) = a2_i/G + a3_i/(G(G-1))`` is convex and decreasing on ``G >= 2`` when
    ``a2_i, a3_i >= 0``, so its decrements ``f_i(G) - f_i(G + m)`` on the lattice of multiples of
    ``m`` are non-increasing.  Starting every prompt at the smallest allowed size and giving the
    next ``m`` rollouts to the prompt with the largest decrement is then exact for separable convex
    resource allocation (Gross 1956; Ibaraki & Katoh, *Resource Allocation Problems*, 1988,
    Thm 4.1.1): any allocation can be reached from the greedy one by moves that each do not lower
    the objective.  Ties go to the lowest index.  Cost ``O(P + (N/m) log P)``.

    Examples
    --------
    >>> optimal_allocation([1.0, 4.0], [0.0, 0.0], 12).tolist()
    [4, 8]
    """
    a2, a3 = _pieces_iv(a2, a3)
    if _int_option("min_size", min_size, low=1) < 2:
        raise ValueError(f"min_size must be >= 2 for the leave-one-out estimator, got {min_size}")
    P = a2.size
    budget, lo, hi, m = _size_range(budget, P, min_size, multiple, max_size)
    sizes = np.full(P, lo, np.int64)
    gain = lambda i: float(_term(a2[i], a3[i], sizes[i]) - _term(a2[i], a3[i], sizes[i] + m))
    heap = [(-gain(i), i) for i in range(P) if lo + m <= hi]
    heapq.heapify(heap)
    for _ in range((budget - P * lo) // m):
        _, i = heapq.heappop(heap)
        sizes[i] += m
        if sizes[i] + m <= hi:
            heapq.heappush(heap, (-gain(i), i))
    return sizes


def _allowed_sizes(budget, P, min_size, multiple, max_size):
    budget, lo, hi, m = _size_range(budget, P, min_size, multiple, max_size)
    return budget, list(range(lo, min(hi, budget - (P - 1) * lo) + 1, m))


def _brute_force(objective, P, budget, min_size, multiple, max_size, *, maximise):
    """Best allocation over every composition of ``budget`` (test oracle; small ``P`` and budget)."""
    budget, allowed = _allowed_sizes(budget, P, min_size, multiple, max_size)
    best, best_val = None, None
    for combo in itertools.product(allowed, repeat=P):
        if sum(combo) != budget:
            continue
        val = objective(np.array(combo))
        if best is None or (val > best_val if maximise else val < best_val):
            best, best_val = np.array(combo, np.int64), val
    return best


def _optimal_allocation_naive(a2, a3, budget, *, min_size: int = 2, multiple: int = 1, max_size=None):
    """:func:`optimal_allocation` by enumerating every feasible allocation (test oracle)."""
    a2, a3 = _pieces_iv(a2, a3)
    if min_size < 2:
        raise ValueError("min_size must be >= 2")
    return _brute_force(lambda s: float(_term(a2, a3, s).sum()), a2.size, budget, min_size, multiple,
                        max_size, maximise=False)


# ------------------------------------------------------------------ other allocators' rules

def knapsack_rl_value(p, k):
    """Knapsack-RL's value of ``k`` rollouts on a prompt of pass rate ``p`` (arXiv 2509.25849).

    ``p (1-p)^2 (1 - p^k - (1-p)^k)``: the information gain ``p(1-p)^2`` times the probability that
    a group of ``k`` binary rewards is not all equal (a non-zero GRPO gradient).
    """
    p = np.asarray(p, float)
    k = np.asarray(k, float)
    return p * (1 - p) ** 2 * (1 - p**k - (1 - p) ** k)


def knapsack_rl_allocation(p, budget, *, min_size: int = 2, max_size=None, multiple: int = 1) -> np.ndarray:
    """Knapsack-RL's allocation: maximise ``sum_i value(p_i, G_i)`` with ``sum_i G_i == budget``.

    Parameters
    ----------
    p : array_like, shape (P,)
        Pass rates in ``[0, 1]`` known before sampling (Knapsack-RL: from the prompt's earlier visits).
    budget : int
        Rollouts to spend, exactly.
    min_size, max_size, multiple : int
        Allowed sizes: multiples of ``multiple`` in ``[min_size, max_size]`` (Knapsack-RL: 2..n).

    Returns
    -------
    ndarray of int64, shape (P,)

    Notes
    -----
    ``value(p, k) = p(1-p)^2 (1 - p^k - (1-p)^k)`` (:func:`knapsack_rl_value`; arXiv 2509.25849).
    The optimum is found, as in the paper, by dynamic programming over prompts and spent budget,
    ``O(P N K / m)`` with ``K`` allowed sizes; exact for any value table.  Ties go to the smaller
    size of the later prompt.  Unlike the paper, the budget is spent
    exactly (the comparison with the other rules is at equal rollouts).
    """
    p = _pass_rate_iv(p)
    P = p.size
    budget, allowed = _allowed_sizes(budget, P, min_size, multiple, max_size)
    m = _int_option("multiple", multiple, low=1)
    U = budget // m                                          # budget in units of m
    units = np.array(allowed, np.int64) // m
    val = knapsack_rl_value(p[:, None], np.array(allowed, float)[None, :])   # (P, K)
    neg = -np.inf
    best = np.full(U + 1, neg)
    best[0] = 0.0
    choice = np.zeros((P, U + 1), np.int64)
    for i in range(P):
        new = np.full(U + 1, neg)
        for j, u in enumerate(units):                        # later j wins only if strictly better
            cand = np.full(U + 1, neg)
            cand[u:] = best[: U + 1 - u] + val[i, j]
            better = cand > new
            new[better] = cand[better]
            choice[i, better] = j
        best = new
    if not np.isfinite(best[U]):
        raise ValueError(f"no allocation of sizes {allowed} spends budget {budget} exactly")
    sizes = np.zeros(P, np.int64)
    u = U
    for i in range(P - 1, -1, -1):
        j = choice[i, u]
        sizes[i] = allowed[j]
        u -= units[j]
    return sizes


def _knapsack_rl_allocation_naive(p, budget, *, min_size=2, max_size=None, multiple=1):
    """:func:`knapsack_rl_allocation` by enumeration (test oracle)."""
    p = _pass_rate_iv(p)
    return _brute_force(lambda s: float(knapsack_rl_value(p, s).sum()), p.size, budget, min_size,
                        multiple, max_size, maximise=True)


def pass_rate_allocation(p, budget, *, min_size: int = 2, max_size=None, multiple: int = 1) -> np.ndarray:
    """A pass-rate variance rule (VIP-style): sizes minimising ``sum_i p_i(1-p_i)/G_i``.

    Parameters
    ----------
    p : array_like, shape (P,)
        Pass rates in ``[0, 1]`` known before sampling.
    budget : int
        Rollouts to spend, exactly.
    min_size, max_size, multiple : int
        Allowed sizes: multiples of ``multiple`` in ``[min_size, max_size]``.

    Returns
    -------
    ndarray of int64, shape (P,)

    Notes
    -----
    When the error of a prompt's estimate is its Bernoulli variance over the group,
    ``p(1-p)/G``, the continuous minimiser of the sum under ``sum G_i = N`` is Neyman's allocation
    ``G_i proportional to sqrt(p_i(1-p_i))``; VIP (arXiv 2602.01601) allocates rollouts by a convex
    programme of this kind on predicted ``p``.  The integer allocation returned is the exact
    minimiser of the same objective over feasible integer sizes (greedy marginal allocation,
    :func:`optimal_allocation` with ``a2 = p(1-p)``, ``a3 = 0``), which rounds Neyman's sizes to an
    allocation that spends the budget exactly and honours ``min_size``, ``max_size``, ``multiple``.
    Prompts with ``p in {0, 1}`` get ``min_size``.
    """
    p = _pass_rate_iv(p)
    v = p * (1 - p)
    return optimal_allocation(v, np.zeros_like(v), budget, min_size=min_size, multiple=multiple,
                              max_size=max_size)


def uniform_allocation(num_prompts, budget) -> np.ndarray:
    """Equal group sizes ``budget // num_prompts`` (the first ``budget % num_prompts`` prompts get one more).

    The comparator of every rule: with ``budget = num_prompts x G`` it is a uniform ``G``.
    Raises ``ValueError`` when a size would be below 2.
    """
    P = _int_option("num_prompts", num_prompts, low=1)
    budget = _int_option("budget", budget, low=0)
    if budget < 2 * P:
        raise ValueError(f"budget {budget} gives a group size below 2 for {P} prompts")
    sizes = np.full(P, budget // P, np.int64)
    sizes[: budget % P] += 1
    return sizes


# ------------------------------------------------------------------ strata and the allocation report

#: default number of equal-width pass-rate bins of ``strata="pass_rate"``
PASS_RATE_BINS = 5


def _finite_prompts(stats):
    """The prompts whose pieces are finite (a prompt with an unscorable completion has NaN pieces)."""
    ok = (np.isfinite(stats.g_norm2) & np.isfinite(stats.sigma2_trI) & np.isfinite(stats.zzq)
          & np.all(np.isfinite(stats.g), axis=-1))
    return ok


def pass_rate_strata(stats, *, bins: int = PASS_RATE_BINS, holdout: int | None = None):
    """Pass-rate strata by sample splitting: labels from held-out samples, pieces from the rest.

    The first ``holdout`` samples of each prompt (default ``M // 2``) give its pass rate ``p_hat``
    (mean reward), binned into ``bins`` equal-width bins of ``[0, 1]``; the pieces of the
    allocation are recomputed from the other ``M - holdout >= 4`` samples.  The samples of a
    prompt are i.i.d., so the label is independent of the samples that estimate the pieces given
    the prompt: it plays the part of a pass rate known before sampling (Knapsack-RL's estimate from
    earlier visits) and the allocation is not selected on the noise of the pieces it uses.

    Parameters
    ----------
    stats : PromptStatistics
        With ``rewards`` and ``scores`` kept (a pilot's statistics keep both).
    bins : int
        Equal-width bins of ``[0, 1]``.
    holdout : int, optional
        Samples per prompt used for the label.

    Returns
    -------
    labels : ndarray of str, shape (P',)
        ``"p in [0.2, 0.4)"`` style labels of the prompts with finite pieces.
    pieces : PromptStatistics
        Statistics of the same prompts from the remaining samples.
    """
    from .constants import PromptStatistics, prompt_statistics

    if not isinstance(stats, PromptStatistics):
        raise TypeError(f"stats must be a PromptStatistics, got {type(stats).__name__}")
    if stats.rewards is None or stats.scores is None:
        raise ValueError("pass-rate strata need the pilot's rewards and scores (PromptStatistics.rewards and "
                         ".scores); statistics without them cannot be split")
    bins = _int_option("bins", bins, low=1)
    z, w = np.asarray(stats.rewards, float), np.asarray(stats.scores, float)
    M = z.shape[1]
    h = M // 2 if holdout is None else _int_option("holdout", holdout, low=1)
    if M - h < 4:
        raise ValueError(f"pass-rate strata split each prompt's {M} samples into {h} for the label and {M - h} "
                         "for the pieces, which need >= 4: a pilot with >= 8 samples per prompt is needed")
    finite = np.all(np.isfinite(z), axis=1)
    zf = z[finite]
    if np.any(zf < 0) or np.any(zf > 1):
        raise ValueError("pass-rate strata need rewards in [0, 1] (a pass rate); stratify by a column instead")
    p = zf[:, :h].mean(1)
    k = np.minimum((p * bins).astype(int), bins - 1)
    edges = np.linspace(0, 1, bins + 1)
    labels = np.array([f"p in [{edges[i]:.2g}, {edges[i + 1]:.2g}" + ("]" if i == bins - 1 else ")")
                       for i in k])
    pieces = prompt_statistics(zf[:, h:], w[finite][:, h:], prompt_ids=stats.prompt[finite])
    return labels, pieces


def _representative_counts(shares, B):
    """Prompts of each stratum in a batch of ``B`` with these shares (largest remainder)."""
    raw = np.asarray(shares) * B
    n = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - n), kind="stable")
    n[order[: B - int(n.sum())]] += 1
    return n


def _stratum_index(labels):
    names, idx = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return names, idx


def _allocate_batch(a2_s, a3_s, counts, budget, min_size, multiple):
    """Per-prompt sizes of a batch with ``counts[s]`` prompts of stratum ``s`` (stratum means clipped at 0)."""
    who = np.repeat(np.arange(len(counts)), counts)                    # (B,) stratum of each batch prompt
    sizes = optimal_allocation(np.maximum(a2_s, 0.0)[who], np.maximum(a3_s, 0.0)[who], budget,
                               min_size=min_size, multiple=multiple)
    return who, sizes


def _per_prompt_error(a2, a3, idx, who, sizes, counts, P, B):
    """Per-prompt contributions to the within-prompt part of the batch MSE: their mean over prompts is
    ``(1/B^2) sum_{j in batch} f_{s(j)}(G_j)`` with ``f_s`` the stratum mean of ``a2/G + a3/(G(G-1))``."""
    S = len(counts)
    n_s = np.bincount(idx, minlength=S)                                # pilot prompts per stratum
    inv_g = np.zeros(S)
    inv_gg = np.zeros(S)
    np.add.at(inv_g, who, 1.0 / sizes)
    np.add.at(inv_gg, who, 1.0 / (sizes * (sizes - 1.0)))
    w = P / (np.maximum(n_s, 1) * B**2)
    return w[idx] * (a2 * inv_g[idx] + a3 * inv_gg[idx])


@dataclass(frozen=True, kw_only=True)
class AllocationResult:
    """Rollouts allocated across strata of prompts, against a uniform group size at the same budget.

    Attributes
    ----------
    strata : tuple of str
        Stratum labels (known before sampling: a dataset column, or held-out pass-rate bins).
    shares : ndarray (S,)
        Share of the pilot's prompts in each stratum (the prompt distribution's stratum mix).
    num_pilot_prompts : ndarray (S,) int
        Pilot prompts per stratum.
    a2, a3 : ndarray (S,)
        Stratum means of the per-prompt pieces (unbiased; clipped at 0 for the allocation only).
    budget, num_prompts : int
        Rollouts per step ``N`` and prompts per batch ``B``.
    uniform_size : int
        The comparator ``G = N / B`` (``N / B`` rounded, the first ``N mod B`` prompts one more).
    counts : ndarray (S,) int
        Prompts of each stratum in a representative batch (the pilot's mix, largest remainder).
    sizes : ndarray (B,) int
        The allocation on that batch (prompts in stratum order).
    stratum_sizes : tuple
        ``(min, max)`` group size of each stratum in the batch (``None`` where the stratum has no
        prompt in it).
    mse_uniform, mse_allocated : float
        Predicted batch MSE (:func:`batch_mse` on the representative batch, with ``A1``).
    gain_in_sample : float
        ``1 - mse_allocated / mse_uniform`` of the allocation chosen and evaluated on all prompts
        (optimistic: never negative by construction).
    gain : float
        Cross-fitted gain: the allocation chosen on one half of the prompts (split within each
        stratum), evaluated on the other half, both ways; it can be negative.
    gain_interval : ConfidenceInterval
        Fieller interval of the cross-fitted gain (a ratio of prompt means; Student-t, ``P - 1`` dof).
    recommended : bool
        The interval lies above 0.
    reason : str
        Why the allocation is, or is not, suggested.
    rules : dict
        Predicted batch MSE (same law, same batch, same pieces) of the allocations of other rules:
        ``uniform``, ``optimal`` (this one), ``knapsack_rl`` and ``pass_rate`` (from the strata's mean
        reward as pass rate; absent when rewards are not in [0, 1]).  In-sample, for comparison.
    min_size, multiple, level : the constraints and the confidence level.
    """

    strata: tuple
    shares: np.ndarray
    num_pilot_prompts: np.ndarray
    a2: np.ndarray
    a3: np.ndarray
    a1: float
    budget: int
    num_prompts: int
    uniform_size: int
    counts: np.ndarray
    sizes: np.ndarray
    stratum_sizes: tuple
    mse_uniform: float
    mse_allocated: float
    gain_in_sample: float
    gain: float
    gain_interval: ConfidenceInterval
    recommended: bool
    reason: str
    stratifier: str = ""
    rules: dict = field(default_factory=dict)
    min_size: int = 2
    multiple: int = 1
    level: float = 0.95

    def summary(self) -> str:
        pct = f"{100 * self.level:g}%"
        lo, hi = self.gain_interval
        lines = [f"allocation of N = {self.budget} rollouts over B = {self.num_prompts} prompts by stratum"
                 + (f" ({self.stratifier})" if self.stratifier else ""),
                 f"  {'stratum':<22} {'share':>6} {'a2':>10} {'a3':>10} {'in batch':>8} {'G':>7}"]
        for s, name in enumerate(self.strata):
            ss = self.stratum_sizes[s]
            g = "-" if ss is None else (f"{ss[0]}" if ss[0] == ss[1] else f"{ss[0]}-{ss[1]}")
            lines.append(f"  {name[:22]:<22} {self.shares[s]:>6.1%} {self.a2[s]:>10.4g} {self.a3[s]:>10.4g} "
                         f"{int(self.counts[s]):>8} {g:>7}")
        lines += [(f"  predicted batch MSE: uniform G = {self.uniform_size}: {self.mse_uniform:.4g}; allocated: "
                  f"{self.mse_allocated:.4g} (in-sample gain {self.gain_in_sample:.1%})"),
                  f"  cross-fitted gain {self.gain:.1%}, {pct} CI [{lo:.1%}, {hi:.1%}]",
                  "  other rules on this batch (predicted MSE): " + ", ".join(
                      f"{k} {v:.4g}" for k, v in self.rules.items()),
                  f"  {self.reason}"]
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable({
            "stratifier": self.stratifier, "strata": list(self.strata), "shares": self.shares,
            "num_pilot_prompts": self.num_pilot_prompts, "a1": self.a1, "a2": self.a2, "a3": self.a3, "budget": self.budget,
            "num_prompts": self.num_prompts, "uniform_size": self.uniform_size, "counts": self.counts,
            "sizes": self.sizes, "stratum_sizes": [None if s is None else list(s) for s in self.stratum_sizes],
            "mse_uniform": self.mse_uniform, "mse_allocated": self.mse_allocated,
            "gain_in_sample": self.gain_in_sample, "gain": self.gain, "gain_interval": list(self.gain_interval),
            "recommended": self.recommended, "reason": self.reason, "rules": dict(self.rules),
            "min_size": self.min_size,
            "multiple": self.multiple, "level": self.level,
            "method": "greedy marginal allocation on stratum means; gain cross-fitted over two halves of the "
                   "prompts (split within strata), Fieller interval of a ratio of prompt means"})


def _stats_of(measurement_or_stats):
    from .constants import PromptStatistics

    if isinstance(measurement_or_stats, PromptStatistics):
        return measurement_or_stats
    stats = getattr(measurement_or_stats, "statistics", None)
    if isinstance(stats, PromptStatistics):
        return stats
    raise TypeError("measurement_or_stats must be a PromptStatistics or a Measurement, got "
                    f"{type(measurement_or_stats).__name__}")


def _parse_pass_rate(spec):
    if spec == "pass_rate":
        return PASS_RATE_BINS
    head, _, k = spec.partition(":")
    if head != "pass_rate" or not k.isdigit() or int(k) < 1:
        raise ValueError(f"strata {spec!r}: expected labels, 'pass_rate' or 'pass_rate:K' (K bins)")
    return int(k)


def allocate(measurement_or_stats, strata, *, budget: int, num_prompts: int | None = None, min_size: int = 2,
             multiple: int = 1, level: float = 0.95) -> AllocationResult:
    """Group sizes by stratum minimising the batch gradient error at ``budget`` rollouts per step.

    Parameters
    ----------
    measurement_or_stats : Measurement or PromptStatistics
        A pilot (per-prompt U-statistics).
    strata : array_like (P,) of labels, or ``"pass_rate"`` / ``"pass_rate:K"``
        The stratum of each pilot prompt, known before sampling (a difficulty or category column),
        or pass-rate bins by sample splitting (:func:`pass_rate_strata`).
    budget : int
        Rollouts per step ``N``.
    num_prompts : int, optional
        Prompts per batch ``B``; default ``N / G*``, ``G*`` the divisor of ``N`` with the smallest
        fitted MSE (point estimate of the uniform recommendation).
    min_size, multiple : int
        Constraints on every group size (:func:`optimal_allocation`).
    level : float
        Confidence level of the gain interval.

    Returns
    -------
    AllocationResult

    Notes
    -----
    With strata known before sampling, the batch estimator ``(1/B) sum_i g_hat_{G_i}(x_i)`` is
    unbiased with MSE ``A1/B + (1/B^2) sum_i f_{s(i)}(G_i)``, ``f_s(G) = a2_s/G + a3_s/(G(G-1))``
    and ``a2_s, a3_s`` the stratum means of the per-prompt pieces (:func:`batch_mse`).  The
    allocation is :func:`optimal_allocation` on a representative batch with the pilot's stratum mix.

    The in-sample gain is never negative (uniform is feasible), so it cannot show that an
    allocation does not help.  The reported gain is cross-fitted: the prompts of every stratum are
    split alternately into two halves; the allocation chosen on one half is evaluated with the
    unbiased pieces of the other.  Its numerator and denominator are means over prompts of
    per-prompt contributions (``A1`` by its jackknife pseudo-values), and the interval is
    Fieller's for their ratio (:func:`ustat_grpo.scaling.optimum.fieller_ratio_interval`, ``P - 1`` dof).
    The allocation is suggested only when the interval lies above 0; with homogeneous strata the
    chosen sizes fit noise and the cross-fitted gain is about 0 or negative.
    """
    from .constants import constants_from_statistics, prompt_pseudo_values

    stats = _stats_of(measurement_or_stats)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if isinstance(strata, str):
        stratifier = strata
        labels, stats = pass_rate_strata(stats, bins=_parse_pass_rate(strata))
    else:
        stratifier = "labels"
        labels = np.asarray(strata)
        if labels.shape != (len(stats),):
            raise ValueError(f"strata must give one label per prompt ({len(stats)}), got shape {labels.shape}")
        ok = _finite_prompts(stats)
        labels, stats = labels[ok], stats.select(ok)
    names, idx = _stratum_index(labels)
    P, S = len(stats), len(names)
    n_s = np.bincount(idx, minlength=S)
    if P < 4 or np.any(n_s < 2):
        small = [str(names[s]) for s in np.flatnonzero(n_s < 2)]
        raise ValueError(f"every stratum needs >= 2 pilot prompts (cross-fitting splits each in two); "
                         f"too few in: {', '.join(small) or 'all'} ({P} prompts)")
    budget = _int_option("budget", budget, low=2)
    consts = constants_from_statistics(stats, level=level)
    if num_prompts is None:
        g_star = consts.optimal_group_size(budget=budget, divisors_only=True).g_star_integer
        num_prompts = budget // int(g_star)
    B = _int_option("num_prompts", num_prompts, low=1)
    uni = uniform_allocation(B, budget)
    a2, a3 = prompt_error_pieces(stats)
    mean_s = lambda v, rows: np.bincount(idx[rows], weights=v[rows], minlength=S) / np.maximum(
        np.bincount(idx[rows], minlength=S), 1)
    everyone = np.arange(P)
    a2_s, a3_s = mean_s(a2, everyone), mean_s(a3, everyone)
    shares = n_s / P
    counts = _representative_counts(shares, B)
    who, sizes = _allocate_batch(a2_s, a3_s, counts, budget, min_size, multiple)
    a1 = float(consts.unconstrained[0])
    mse_u = float(a1 / B + _per_prompt_error(a2, a3, idx, who, uni, counts, P, B).mean())
    mse_a = float(a1 / B + _per_prompt_error(a2, a3, idx, who, sizes, counts, P, B).mean())
    # cross-fitting: halves alternate within each stratum
    half = np.zeros(P, bool)
    for s in range(S):
        rows = np.flatnonzero(idx == s)
        half[rows[1::2]] = True
    d = np.zeros(P)
    for fold in (False, True):
        train = np.flatnonzero(half == fold)
        _, sz = _allocate_batch(mean_s(a2, train), mean_s(a3, train), counts, budget, min_size, multiple)
        test = half != fold
        diff = (_per_prompt_error(a2, a3, idx, who, uni, counts, P, B)
                - _per_prompt_error(a2, a3, idx, who, sz, counts, P, B))
        d[test] = diff[test]
    psi_a1 = prompt_pseudo_values(stats.g, stats.g_norm2, stats.sigma2_trI, stats.zzq)[:, 0]
    u = psi_a1 / B + _per_prompt_error(a2, a3, idx, who, uni, counts, P, B)      # mean = mse_u
    C = np.cov(np.stack([d, u]), ddof=1) / P
    gci, _ = fieller_ratio_interval(d.mean(), u.mean(), C[0, 0], C[1, 1], C[0, 1], level=level, df=P - 1,
                                    nonnegative=False)
    gain = float(d.mean() / u.mean())
    g_u = int(np.round(budget / B))
    recommended = bool(gci.low > 0)
    pct = f"{100 * level:g}%"
    if recommended:
        reason = (f"suggested: the {pct} interval of the cross-fitted gain lies above 0 "
                  f"(batch gradient MSE {gain:.1%} below uniform G = {g_u})")
    else:
        reason = (f"no gain; keep uniform G = {g_u}: the {pct} interval of the cross-fitted gain "
                  f"[{gci.low:.1%}, {gci.high:.1%}] includes 0: this pilot cannot show that allocating by these "
                  "strata beats a uniform G")
    ssz = tuple((int(sizes[who == s].min()), int(sizes[who == s].max())) if counts[s] else None for s in range(S))
    rules = {"uniform": mse_u, "optimal": mse_a}
    z = stats.rewards
    if z is not None and np.all(np.isfinite(z)) and z.min() >= 0 and z.max() <= 1:
        p_s = mean_s(z.mean(1), everyone)
        for name, rule in (("knapsack_rl", knapsack_rl_allocation), ("pass_rate", pass_rate_allocation)):
            sz = rule(p_s[who], budget, min_size=min_size, multiple=multiple)
            rules[name] = float(a1 / B + _per_prompt_error(a2, a3, idx, who, sz, counts, P, B).mean())
    return AllocationResult(strata=tuple(str(x) for x in names), shares=shares, num_pilot_prompts=n_s,
                            a2=a2_s, a3=a3_s, a1=a1, budget=budget, num_prompts=B, uniform_size=g_u,
                            counts=counts, sizes=sizes, stratum_sizes=ssz, mse_uniform=mse_u,
                            mse_allocated=mse_a, gain_in_sample=float(1 - mse_a / mse_u), gain=gain,
                            gain_interval=ConfidenceInterval(float(gci.low), float(gci.high)),
                            recommended=recommended, reason=reason, stratifier=stratifier, rules=rules,
                            min_size=int(min_size), multiple=int(multiple), level=float(level))
