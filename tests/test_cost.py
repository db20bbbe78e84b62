import itertools
import math

import numpy as np
import pytest

from ustat_grpo.scaling import cost as cm
from ustat_grpo.scaling.constants import constants_from_statistics, prompt_statistics
from ustat_grpo.scaling.optimum import optimal_group_size


def _cost(cp, cc=100.0, **kw):
    return cm.CostModel(prompt_tokens=cp, completion_tokens=cc, **kw)


@pytest.mark.parametrize("A", [(1.0, 2.0, 16.0), (0.01, 0.4, 0.4), (0.3, 5.0, 0.7), (2.0, 0.0, 50.0)])
def test_reduces_to_rollout_budget_g_star_when_prefill_is_free(A):
    r = cm.optimal_group_size_tokens(A, _cost(0.0))
    assert r.g_star == pytest.approx(1 + math.sqrt(A[2] / A[0]), rel=1e-10)
    assert r.g_star_integer == optimal_group_size(A, budget=1 << 16).g_star_integer
    assert r.g_star_rollouts == pytest.approx(r.g_star, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_integer_optimum_equals_brute_force_and_mse(seed):
    rng = np.random.default_rng(seed)
    A = rng.gamma(1.0, 1.0, 3) * np.array([0.05, 1.0, 3.0])
    for cp in (0.0, 30.0, 300.0, 3000.0):
        c = _cost(cp)
        T = 40_000.0
        r = cm.optimal_group_size_tokens(A, c, token_budget=T)
        gmax = int((T - cp) / 100.0)
        assert r.g_star_integer == cm._integer_naive(A, c.ratio, gmax)
        # the objective is the batch MSE at B = T / (c_p + G c_c), computed from the scaling law directly
        Gs = np.arange(2, gmax + 1)
        B = T / (cp + Gs * 100.0)
        mse = A[0] / B + A[1] / (B * Gs) + A[2] / (B * Gs * (Gs - 1))
        assert Gs[np.argmin(mse)] == r.g_star_integer
        # the continuous optimum is a stationary point of the objective
        if 2 < r.g_star < gmax:
            f = lambda g, ratio=c.ratio: cm.token_objective(g, A, ratio)
            h = 1e-4 * r.g_star
            assert f(r.g_star) <= min(f(r.g_star - h), f(r.g_star + h))


def test_monotone_in_prefill_share():
    A = (0.02, 0.5, 0.6)
    gs = [cm.optimal_group_size_tokens(A, _cost(cp)).g_star for cp in (0.0, 10.0, 100.0, 1000.0, 1e4)]
    assert all(b > a for a, b in itertools.pairwise(gs))
    assert gs[0] == pytest.approx(1 + math.sqrt(30), rel=1e-10)


def test_seconds_cost_model():
    c = _cost(200.0, 50.0, prefill_seconds_per_token=1e-4, decode_seconds_per_token=2e-3)
    assert c.unit == "seconds" and c.prompt_cost == pytest.approx(0.02) and c.completion_cost == pytest.approx(0.1)
    assert c.step_cost(4, 8) == pytest.approx(4 * 0.02 + 32 * 0.1)
    with pytest.raises(ValueError, match="both"):
        _cost(200.0, 50.0, prefill_seconds_per_token=1e-4)
    with pytest.raises(ValueError, match="completion_tokens"):
        _cost(10.0, 0.0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        _cost(-1.0)


def test_cost_model_from_pilot_extras():
    rng = np.random.default_rng(0)
    z = rng.binomial(1, 0.5, (6, 8)).astype(float)
    w = rng.normal(size=(6, 8, 3))
    ex = {"length": (("sample",), rng.integers(5, 50, (6, 8))), "prompt_length": ((), np.arange(10, 16))}
    st = prompt_statistics(z, w, extras={"length": (("prompt", "sample"), ex["length"][1]),
                                         "prompt_length": (("prompt",), ex["prompt_length"][1])})
    c = cm.cost_model(st)
    assert c.prompt_tokens == pytest.approx(12.5) and c.completion_tokens == pytest.approx(ex["length"][1].mean())
    with pytest.raises(ValueError, match="prompt_length"):
        cm.cost_model(prompt_statistics(z, w))


def test_interval_covers_and_is_unbounded_without_a1():
    rng = np.random.default_rng(1)
    z = rng.binomial(1, rng.uniform(0.1, 0.9, (200, 1)), (200, 16)).astype(float)
    w = rng.normal(size=(200, 16, 3)) + z[..., None] * rng.normal(size=(200, 1, 3))
    est = constants_from_statistics(prompt_statistics(z, w))
    r = cm.optimal_group_size_tokens(est, _cost(50.0))
    lo, hi = r.g_star_interval
    assert r.bounded and lo < r.g_star < hi
    # at c_p = 0 the delta method has a closed form: G* = 1 + sqrt(A3/A1)
    r0 = cm.optimal_group_size_tokens(est, _cost(0.0))
    a1, _, a3 = est.params
    grad = np.array([-math.sqrt(a3 / a1) / (2 * a1), 0.0, 1 / (2 * math.sqrt(a1 * a3))])
    from scipy import stats
    q = stats.t.isf(0.025, est.df)
    se = math.sqrt(grad @ est.covariance @ grad)
    np.testing.assert_allclose(r0.g_star_interval, [r0.g_star - q * se, r0.g_star + q * se], rtol=1e-5)
    # negative control: A1 = 0 -> no interior optimum
    r0 = cm.optimal_group_size_tokens([0.0, 1.0, 1.0], _cost(50.0), token_budget=1e5)
    assert math.isinf(r0.g_star) and r0.g_star_integer == int((1e5 - 50) / 100)


def test_bad_inputs():
    with pytest.raises(TypeError, match="cost"):
        cm.optimal_group_size_tokens([1, 1, 1], {"prompt_tokens": 1})
    with pytest.raises(ValueError, match="token_budget"):
        cm.optimal_group_size_tokens([1, 1, 1], _cost(10.0), token_budget=100.0)
