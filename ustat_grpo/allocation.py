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

import numpy as np

__all__ = [
    "batch_mse",
    "knapsack_rl_allocation",
    "knapsack_rl_value",
    "moment_error_pieces",
    "optimal_allocation",
    "pass_rate_allocation",
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
    prompt by prompt; :func:`ustat_grpo.mse.exact_mse`) with ``a2(x) = E[(Z-V)^2 ||W||^2 | x] -
    ||g(x)||^2`` and ``a3(x) = sigma^2(x) tr I(x) + ||g(x)||^2``.

    Parameters
    ----------
    stats : PromptStatistics
        Per-prompt U-statistics (a pilot's, :func:`ustat_grpo.constants.prompt_statistics`).

    Returns
    -------
    a2, a3 : ndarray, shape (P,)
        Unbiased per-prompt estimates (may be negative for a prompt with few samples; their means
        are ``A2`` and ``A3`` of :func:`ustat_grpo.constants.constants_from_statistics`).
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
