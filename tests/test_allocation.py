import itertools

import numpy as np
import pytest

from ustat_grpo import allocation as al
from ustat_grpo.bandits import ContextualSoftmaxBandit, default_bandit
from ustat_grpo.constants import prompt_statistics
from ustat_grpo.mse import exact_mse
from ustat_grpo.testing import assert_mc_close


def _pieces(rng, P):
    return rng.gamma(0.7, 2.0, P), rng.gamma(0.7, 5.0, P)


def _obj(a2, a3, s):
    s = np.asarray(s, float)
    return float(np.sum(a2 / s + a3 / (s * (s - 1))))


# ------------------------------------------------------------------ per-prompt pieces

def test_per_prompt_error_is_prop3_on_a_bandit():
    # a2/G + a3/(G(G-1)) of the exact pieces is exact_mse's per-prompt leave-one-out MSE
    m = default_bandit().moments()
    a2, a3 = al.moment_error_pieces(m)
    for G in (2, 3, 7, 16):
        np.testing.assert_allclose(a2 / G + a3 / (G * (G - 1)), exact_mse(m, "leave_one_out", G).total,
                                   rtol=1e-12)


def test_prompt_error_pieces_unbiased_monte_carlo():
    pol = default_bandit()
    m = pol.moments()
    ex2, ex3 = al.moment_error_pieces(m)
    rng = np.random.default_rng(7)
    R, M = 400, 8
    P = m.num_contexts
    s = pol.sample(R * P, M, rng=rng)                       # prompts drawn from f: regroup by id
    a2s, a3s = al.prompt_error_pieces(prompt_statistics(s.rewards, s.scores, prompt_ids=range(R * P)))
    pid = s.prompt_ids
    est, se, exact = [], [], []
    for x in range(P):
        for v, e in ((a2s[pid == x], ex2[x]), (a3s[pid == x], ex3[x])):
            est.append(v.mean()); se.append(v.std(ddof=1) / np.sqrt(v.size)); exact.append(e)
    assert_mc_close(est, se, exact)


def test_prompt_error_pieces_type():
    with pytest.raises(TypeError, match="stats"):
        al.prompt_error_pieces({"g": 1})


# ------------------------------------------------------------------ greedy optimum vs brute force

@pytest.mark.parametrize("seed", range(6))
def test_optimal_allocation_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    P = int(rng.integers(2, 5))
    a2, a3 = _pieces(rng, P)
    if seed == 0:
        a3[:] = 0.0
    if seed == 1:
        a2[0] = 0.0
    for budget, mult, mx in ((2 * P + 7, 1, None), (4 * P + 8, 2, None), (3 * P + 5, 1, 6), (6 * P, 3, 9)):
        if budget % mult:
            budget += mult - budget % mult
        try:
            fast = al.optimal_allocation(a2, a3, budget, multiple=mult, max_size=mx)
        except ValueError:
            with pytest.raises(ValueError):
                al._optimal_allocation_naive(a2, a3, budget, multiple=mult, max_size=mx)
            continue
        naive = al._optimal_allocation_naive(a2, a3, budget, multiple=mult, max_size=mx)
        assert fast.sum() == budget and np.all(fast >= 2) and np.all(fast % mult == 0)
        if mx is not None:
            assert np.all(fast <= mx)
        assert _obj(a2, a3, fast) == pytest.approx(_obj(a2, a3, naive), rel=1e-13)


def test_optimal_allocation_brute_force_min_size_and_ties():
    # equal pieces: every optimal allocation is as equal as possible; min_size raises the floor
    s = al.optimal_allocation([1.0] * 3, [2.0] * 3, 14, min_size=4)
    assert sorted(s.tolist()) == [4, 5, 5]
    assert s.tolist() == [5, 5, 4]                         # ties go to the lowest index
    naive = al._optimal_allocation_naive([1.0] * 3, [2.0] * 3, 14, min_size=4)
    assert sorted(naive.tolist()) == [4, 5, 5]


def test_optimal_allocation_neyman_limit():
    # a3 = 0: G_i proportional to sqrt(a2_i) when that is an integer allocation
    a2 = np.array([1.0, 4.0, 9.0, 16.0])
    assert al.optimal_allocation(a2, np.zeros(4), 50).tolist() == [5, 10, 15, 20]


def test_optimal_allocation_negative_control_not_uniform_for_heterogeneous():
    a2, a3 = np.array([0.01, 10.0]), np.array([0.01, 10.0])
    s = al.optimal_allocation(a2, a3, 20)
    assert s[1] > s[0]
    assert _obj(a2, a3, s) < _obj(a2, a3, [10, 10])


@pytest.mark.parametrize("kw, match", [
    ({"budget": 5}, "below num_prompts x min_size"),
    ({"budget": 13, "multiple": 2}, "not a multiple"),
    ({"budget": 40, "max_size": 6}, "exceeds num_prompts x max_size"),
    ({"budget": 12, "min_size": 1}, "min_size must be >= 2"),
    ({"budget": 12, "min_size": 5, "max_size": 4}, "no group size"),
    ({"budget": 12.0}, "budget must be an integer"),
])
def test_optimal_allocation_infeasible(kw, match):
    budget = kw.pop("budget")
    with pytest.raises((ValueError, TypeError), match=match):
        al.optimal_allocation([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], budget, **kw)


def test_optimal_allocation_bad_pieces():
    with pytest.raises(ValueError, match="non-negative"):
        al.optimal_allocation([1.0, -0.1], [1.0, 1.0], 8)
    with pytest.raises(ValueError, match="same length"):
        al.optimal_allocation([1.0, 1.0], [1.0], 8)
    with pytest.raises(ValueError, match="finite"):
        al.optimal_allocation([1.0, np.nan], [1.0, 1.0], 8)


# ------------------------------------------------------------------ the other rules

@pytest.mark.parametrize("seed", range(5))
def test_knapsack_rl_equals_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    P = int(rng.integers(2, 5))
    p = rng.uniform(0, 1, P)
    if seed == 0:
        p[0] = 0.0
    for budget, mult, mx in ((3 * P + 4, 1, None), (4 * P, 2, 8), (2 * P + 3, 1, 5)):
        fast = al.knapsack_rl_allocation(p, budget, multiple=mult, max_size=mx)
        naive = al._knapsack_rl_allocation_naive(p, budget, multiple=mult, max_size=mx)
        assert fast.sum() == budget and np.all(fast >= 2) and np.all(fast % mult == 0)
        v = lambda s: float(np.sum(p * (1 - p) ** 2 * (1 - p ** s - (1 - p) ** s)))
        assert v(fast) == pytest.approx(v(naive), rel=1e-13, abs=1e-15)


def test_knapsack_rl_value_formula():
    # probability that k Bernoulli(p) rewards are not all equal, by enumeration, times p(1-p)^2
    p, k = 0.3, 4
    mixed = sum(p ** sum(o) * (1 - p) ** (k - sum(o)) for o in itertools.product((0, 1), repeat=k)
                if 0 < sum(o) < k)
    assert al.knapsack_rl_value(p, k) == pytest.approx(p * (1 - p) ** 2 * mixed, rel=1e-14)


def test_pass_rate_allocation_neyman_and_brute_force():
    # p(1-p) = 1/4, 4/25 * ... choose p so sqrt(p(1-p)) are in ratio 5:4:3 -> sizes 10:8:6
    p = np.array([0.5, 0.2, 0.1])                          # sqrt(pq) = 0.5, 0.4, 0.3
    assert al.pass_rate_allocation(p, 24).tolist() == [10, 8, 6]
    rng = np.random.default_rng(3)
    for _ in range(4):
        q = rng.uniform(0, 1, 3)
        s = al.pass_rate_allocation(q, 17, max_size=9)
        b = al._optimal_allocation_naive(q * (1 - q), np.zeros(3), 17, max_size=9)
        assert _obj(q * (1 - q), 0, s) == pytest.approx(_obj(q * (1 - q), 0, b), rel=1e-13)
    assert al.pass_rate_allocation([0.0, 1.0, 0.5], 12).tolist() == [2, 2, 8]


def test_pass_rate_bad_input():
    with pytest.raises(ValueError, match="p must lie"):
        al.pass_rate_allocation([0.5, 1.2], 8)
    with pytest.raises(ValueError, match="p must lie"):
        al.knapsack_rl_allocation([-0.1, 0.5], 8)


def test_uniform_allocation():
    assert al.uniform_allocation(4, 32).tolist() == [8] * 4
    assert al.uniform_allocation(3, 10).tolist() == [4, 3, 3]
    with pytest.raises(ValueError, match="below 2"):
        al.uniform_allocation(4, 7)
    with pytest.raises(TypeError, match="num_prompts"):
        al.uniform_allocation(4.0, 8)


# ------------------------------------------------------------------ batch MSE with unequal G

def test_batch_mse_reduces_to_scaling_law():
    A1, A2, A3, B, G = 0.3, 2.0, 5.0, 6, 4
    assert al.batch_mse(A1, A2, A3, [G] * B) == pytest.approx(A1 / B + A2 / (B * G) + A3 / (B * G * (G - 1)),
                                                            rel=1e-15)
    with pytest.raises(ValueError, match=">= 2"):
        al.batch_mse(0.0, 1.0, 1.0, [1, 3])
    with pytest.raises(ValueError, match="integers"):
        al.batch_mse(0.0, 1.0, 1.0, [2.5, 3])


def test_batch_mse_unequal_sizes_monte_carlo():
    # batch of fixed prompts (strata known) with unequal G: E||mean_i ghat_i - mean_i g_i||^2 (A1 = 0 here
    # because the prompts are fixed, not sampled) and the sampled-prompt form with A1 by exact moments
    pol = default_bandit()
    m = pol.moments()
    a2, a3 = al.moment_error_pieces(m)
    sizes = np.array([2, 3, 5, 9, 2, 4, 6, 3])
    P = sizes.size
    rng = np.random.default_rng(11)
    R = 4000
    err = np.zeros((R, m.dim))
    for x in range(P):
        feats = pol.features[x:x + 1]
        sub = ContextualSoftmaxBandit(feats, reward_values=pol.reward_values[x:x + 1],
                                      reward_probs=pol.reward_probs[x:x + 1], theta=pol.theta)
        s = sub.sample(R, int(sizes[x]), rng=rng)        # (R, G) rewards, (R, G, d) scores
        z, w = s.rewards, s.scores
        G = sizes[x]
        loo = z - (z.sum(-1, keepdims=True) - z) / (G - 1)
        ghat = np.einsum("rg,rgd->rd", loo, w) / G
        err += (ghat - m.grad[x]) / P
    sq = (err ** 2).sum(-1)
    assert_mc_close(sq.mean(), sq.std(ddof=1) / np.sqrt(R), al.batch_mse(0.0, a2, a3, sizes))
