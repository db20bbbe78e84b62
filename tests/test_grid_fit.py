"""Tests of ustat_grpo.scaling.grid_fit: the MSE-grid fit, its intervals and their coverage."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from ustat_grpo.scaling import grid_fit, optimum
from ustat_grpo.core.testing import binomial_coverage_pvalue




@pytest.mark.parametrize("form", ["exact", "paper"])
@pytest.mark.parametrize("method", ["wls", "gamma"])
def test_fit_recovers_noiseless_constants(form, method):
    A = np.array([0.7, 2.5, 9.0])
    G = np.array([2, 3, 4, 8, 16, 32, 64, 2, 8])
    B = np.array([64, 64, 32, 16, 8, 4, 2, 16, 4])
    y = optimum.mse_design(B, G, form=form) @ A
    fit = grid_fit.fit_mse_grid(B, G, y, 0.02 * y, form=form, method=method)
    np.testing.assert_allclose(fit.params, A, rtol=1e-8)
    np.testing.assert_allclose(fit.unconstrained, A, rtol=1e-8)
    assert fit.chi2 == pytest.approx(0, abs=1e-12)
    assert not any(fit.active)
    mean, lo, hi = fit.predict([2, 4, 8], budget=1024)
    np.testing.assert_allclose(mean, optimum.mse_design(1024 / np.array([2, 4, 8]), [2, 4, 8], form=form) @ A)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    json.dumps(fit.to_dict())
    assert fit.names[0] in str(fit)


def test_fit_without_se_uses_estimated_dispersion_and_t():
    rng = np.random.default_rng(3)
    A = np.array([1.0, 2.0, 8.0])
    G = np.array([2, 3, 4, 8, 16, 32, 64])
    y = optimum.mse_design(1, G) @ A * rng.gamma(100, 1 / 100, len(G))
    fit = grid_fit.fit_mse_grid(np.ones_like(G), G, y)
    assert fit.method == "gamma-estimated-scale" and fit.df == len(G) - 3 and fit.pvalue is None


def test_nonnegative_point_reports_active_constraint():
    # truth A1 = 0: the unconstrained estimate is negative in about half the seeds
    G = np.array([2, 4, 8, 16, 32])
    mu = optimum.mse_design(1, G) @ np.array([0.0, 1.0, 3.0])
    rng = np.random.default_rng(0)
    seen_active = False
    for _ in range(20):
        y = mu * rng.chisquare(400, len(G)) / 400
        fit = grid_fit.fit_mse_grid(np.ones_like(G), G, y, mu * math.sqrt(2 / 400))
        assert np.all(fit.params >= 0)
        if fit.unconstrained[0] < 0:
            seen_active = True
            assert fit.active[0] and fit.params[0] == 0
            assert not fit.optimal_group_size().interior
    assert seen_active


def test_fit_rejects_bad_input():
    G, B, y = [2, 4, 8], [4, 2, 1], [1.0, 0.5, 0.3]
    for kw in (dict(num_generations=[2, 4, 4]), dict(num_generations=[1, 4, 8]),
               dict(mse=[1.0, -0.5, 0.3]), dict(mse=[1.0, np.nan, 0.3])):
        args = dict(num_prompts=B, num_generations=G, mse=y) | kw
        with pytest.raises(ValueError):
            grid_fit.fit_mse_grid(**args)


def _simulate_grid(rng, A, G, R, form="exact"):
    mu = optimum.mse_design(1, G, form=form) @ A
    d = mu[:, None] * rng.chisquare(1, (len(G), R))               # R squared errors per cell
    return d.mean(1), d.std(1, ddof=1) / math.sqrt(R)


def _coverage(method, nsim, seed, fit_form="exact"):
    A = np.array([1.0, 2.0, 8.0])                                 # G*_exact = 1 + sqrt(8)
    G = np.array([2, 3, 4, 8, 16, 32, 64])
    rng = np.random.default_rng(seed)
    hits = np.zeros(3, int)
    for _ in range(nsim):
        y, se = _simulate_grid(rng, A, G, 200)
        fit = grid_fit.fit_mse_grid(np.ones_like(G), G, y, se, method=method, form=fit_form)
        ci = fit.confidence_interval()
        hits[0] += ci[fit.names[0]].low <= A[0] <= ci[fit.names[0]].high
        hits[1] += ci[fit.names[2]].low <= A[2] <= ci[fit.names[2]].high
        gs = fit.optimal_group_size()
        hits[2] += gs.g_star_exact_interval.low <= 1 + math.sqrt(8) <= gs.g_star_exact_interval.high
    return hits


def test_fit_coverage_default_method():
    # Gamma-variance IRLS with known relative errors: 95% intervals cover at the nominal rate.
    # Exact binomial test at alpha = 1e-3 per quantity (3 quantities, 300 fits).
    n = 300
    hits = _coverage("auto", n, seed=2024)
    for h in hits:
        assert binomial_coverage_pvalue(h, n, 0.95) > 1e-3, hits / n
    # negative control: fitting the paper form 1/(BG^2) to exact-form data misplaces G*
    bad = _coverage("auto", 100, seed=7, fit_form="paper")
    assert binomial_coverage_pvalue(bad[2], 100, 0.95) < 1e-3, bad / 100


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wls", "gamma"])
def test_fit_coverage_large(method):
    n = 2000
    hits = _coverage(method, n, seed=99)
    # stated tolerance: measured 0.934-0.946 (wls) and 0.941-0.943 (gamma) at seed 99; the
    # empirical-variance weights of wls under-cover slightly (stats_anchors C.3: 0.92-0.93)
    lo = 0.92 if method == "wls" else 0.93
    for h in hits:
        assert lo * n <= h <= 0.97 * n, (method, hits / n)


# --------------------------------------------------------------------------------------------
# estimate_constants
# --------------------------------------------------------------------------------------------


def test_fit_coverage_without_se_estimated_dispersion():
    # no mse_se column: Gamma variance with a dispersion estimated from 4 residual dof, t quantiles
    A = np.array([1.0, 2.0, 8.0])
    G = np.array([2, 3, 4, 8, 16, 32, 64])
    mu = optimum.mse_design(1, G) @ A
    rng = np.random.default_rng(3)
    n, hits = 300, np.zeros(3, int)
    for _ in range(n):
        y = mu * rng.chisquare(200, len(G)) / 200
        fit = grid_fit.fit_mse_grid(np.ones_like(G), G, y)
        ci = fit.confidence_interval()
        gi = fit.optimal_group_size().g_star_exact_interval
        hits += [ci["A1"].low <= 1 <= ci["A1"].high, ci["A3"].low <= 8 <= ci["A3"].high,
                 gi.low <= 1 + math.sqrt(8) <= gi.high]
    for h in hits:
        assert binomial_coverage_pvalue(h, n, 0.95) > 1e-3, hits / n
    # the intervals use Student-t quantiles with n - 3 = 4 dof (normal ones would be 1.96)
    fit = grid_fit.fit_mse_grid(np.ones_like(G), G, mu * rng.chisquare(200, len(G)) / 200)
    assert fit.df == 4 and fit._q(0.95) == pytest.approx(stats.t.isf(0.025, 4))
