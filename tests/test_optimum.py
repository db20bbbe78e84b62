"""Tests of ustat_grpo.optimum: design, integer optimum, Fieller interval, G*."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from ustat_grpo import optimum




def test_design_matches_formula():
    X = optimum.mse_design([8, 4], [4, 16], form="exact")
    np.testing.assert_allclose(X[0], [1 / 8, 1 / 32, 1 / (32 * 3)], rtol=1e-15)
    Xp = optimum.mse_design([8, 4], [4, 16], form="paper")
    np.testing.assert_allclose(Xp[1], [1 / 4, 1 / 64, 1 / (64 * 16)], rtol=1e-15)
    with pytest.raises(ValueError):
        optimum.mse_design(1, 2, form="nope")


@pytest.mark.parametrize("form", ["exact", "paper"])
def test_integer_optimum_equals_brute_force(form):
    rng = np.random.default_rng(11)
    for rho in np.concatenate([rng.uniform(0, 3000, 60), [0.0, 1.0, 4.0, 16.0]]):
        for budget in (64, 96, 1024):
            allg = np.arange(2, budget + 1)
            obj = allg + rho * (1 / (allg - 1) if form == "exact" else 1 / allg)
            assert optimum.integer_optimum(rho, form=form, budget=budget) == allg[np.argmin(obj)]
            div = np.array([d for d in allg if budget % d == 0])
            objd = div + rho * (1 / (div - 1) if form == "exact" else 1 / div)
            assert optimum.integer_optimum(rho, form=form, budget=budget, divisors_only=True) == div[np.argmin(objd)]


def test_exact_group_size_matches_brute_force_on_true_mse():
    # spec C5 second half: integer argmin of the exact fixed-budget MSE vs 1 + sqrt(A3/A1)
    A = np.array([0.3, 1.7, 4.2])
    budget = 4096
    allg = np.arange(2, budget + 1)
    mse = optimum.mse_design(budget / allg, allg) @ A
    res = optimum.optimal_group_size(A, form="exact", budget=budget)
    assert res.g_star_integer == allg[np.argmin(mse)]
    assert res.g_star_exact == pytest.approx(1 + math.sqrt(A[2] / A[0]), rel=1e-14)
    assert res.g_star_paper == pytest.approx(math.sqrt(A[2] / A[0]), rel=1e-14)
    assert abs(res.g_star_integer - res.g_star_exact) < 1


def test_fieller_matches_set_inversion():
    rng = np.random.default_rng(5)
    for _ in range(40):
        num, den = rng.uniform(0.5, 3), rng.uniform(-0.5, 2)
        L = rng.standard_normal((2, 2)) * 0.4
        V = L @ L.T + 0.01 * np.eye(2)
        ci, bounded = optimum.fieller_ratio_interval(num, den, V[0, 0], V[1, 1], V[0, 1], nonnegative=False)
        z2 = stats.norm.isf(0.025) ** 2
        grid = np.linspace(-200, 200, 400001)
        inside = (num - grid * den) ** 2 <= z2 * (V[0, 0] - 2 * grid * V[0, 1] + grid ** 2 * V[1, 1])
        assert bounded == (den ** 2 > z2 * V[1, 1])
        if bounded:
            assert grid[inside].min() == pytest.approx(ci.low, abs=2e-3)
            assert grid[inside].max() == pytest.approx(ci.high, abs=2e-3)
            assert not inside[(grid < ci.low - 0.01) | (grid > ci.high + 0.01)].any()
        else:
            assert inside[-1] and math.isinf(ci.high)


def test_unbounded_flag_says_no_interior_optimum():
    res = optimum.optimal_group_size([0.01, 1.0, 5.0], np.diag([0.01, 0.1, 0.1]), budget=256)
    assert not res.bounded and not res.interior
    assert math.isinf(res.g_star_exact_interval.high)
    assert "no interior optimum" in res.summary()
    json.dumps(res.to_dict())


# --------------------------------------------------------------------------------------------
# fit_mse_grid
# --------------------------------------------------------------------------------------------


@given(st.floats(0, 5000), st.floats(0, 5000), st.sampled_from(["exact", "paper"]),
       st.sampled_from([None, 64, 360]), st.booleans())
def test_integer_optimum_monotone_in_ratio(r1, r2, form, budget, divisors_only):
    # the property that makes G* intervals the images of rho intervals
    if divisors_only and budget is None:
        return
    lo, hi = sorted((r1, r2))
    kw = dict(form=form, budget=budget, divisors_only=divisors_only)
    assert optimum.integer_optimum(lo, **kw) <= optimum.integer_optimum(hi, **kw)
