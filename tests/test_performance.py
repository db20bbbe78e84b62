"""Tests of ustat_grpo.performance: fits of performance-vs-G tables (the paper's Table 2)."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from ustat_grpo import performance




TABLE2 = np.array([
    [0.7677, 0.7491, 0.7753, 0.7627, 0.7817, 0.7743],
    [0.7703, 0.7679, 0.7697, 0.7793, 0.7819, 0.7665],
    [0.7691, 0.7713, 0.7701, 0.7673, 0.7703, 0.7757]])



def test_table2_cannot_distinguish():
    G = np.tile([4, 8, 16, 32, 64, 128], 3)
    N = np.repeat([1024, 2048, 4096], 6)
    fit = performance.fit_performance_table(N, G, TABLE2.ravel(), rng=0, n_boot=500)
    assert fit.best_observed == {1024: 64, 2048: 64, 4096: 128}
    assert not fit.distinguishable and not fit.bounded
    assert fit.budget_pvalue > 0.05            # no evidence that G* moves with the budget
    assert "cannot distinguish" in fit.summary()
    json.dumps(fit.to_dict())


def test_performance_fit_recovers_known_optimum():
    rng = np.random.default_rng(1)
    G = np.tile(np.repeat([2, 4, 8, 16, 32, 64], 5), 2)
    N = np.repeat([256, 1024], 30)
    u = np.log2(G)
    y = 0.8 - 0.01 * (u - 3.0) ** 2 + 0.002 * rng.standard_normal(len(G))   # G* = 8
    fit = performance.fit_performance_table(N, G, y, rng=1, n_boot=300)
    assert fit.distinguishable and fit.bounded and fit.preferred_shape == "log-quadratic"
    assert fit.g_star_interval.low <= 8 <= fit.g_star_interval.high
    assert abs(math.log2(fit.g_star) - 3) < 0.2
    assert fit.recommended == (fit.g_star, fit.g_star_interval)
    # data from the fixed-budget MSE law (G* = 1 + sqrt(36) = 7): the MSE shape is preferred and
    # its profile interval covers 7, while the (misspecified) log-quadratic one does not
    y2 = 0.8 - 0.001 * (G + 36 / (G - 1)) + 0.002 * rng.standard_normal(len(G))
    fit3 = performance.fit_performance_table(N, G, y2, rng=1, n_boot=10)
    assert fit3.preferred_shape == "mse" and fit3.distinguishable
    lo, hi = fit3.recommended[1]
    assert lo <= 7 <= hi and not fit3.g_star_interval.low <= 7 <= fit3.g_star_interval.high
    assert not fit3.mse_shape["shapes_agree"] and "conditional on the shape" in fit3.summary()
    # losses: the same data with the sign flipped and higher_is_better=False
    fit2 = performance.fit_performance_table(N, G, -y, rng=1, n_boot=10, higher_is_better=False)
    assert fit2.g_star == pytest.approx(fit.g_star, rel=1e-10)


def test_clear_effect_at_the_grid_edge_is_reported_not_called_noise():
    # training-like table (issue 15): score falls with G from the smallest tested G on, 4 seeds;
    # the fitted optimum lies below G = 2 so no interior optimum is located, yet G clearly matters
    rng = np.random.default_rng(3)
    G = np.repeat([2, 4, 8, 16, 32], 4)
    mean = 0.165 - 0.009 * np.log2(G) - 0.001 * np.log2(G) ** 2
    y = mean + 0.004 * rng.standard_normal(G.size)
    fit = performance.fit_performance_table(np.full(G.size, 64), G, y, rng=0, n_boot=200)
    assert not fit.distinguishable
    # independent check of the ANOVA: scipy's one-way F test (a single budget block)
    p_ref = stats.f_oneway(*[y[G == g] for g in np.unique(G)]).pvalue
    assert fit.effect_pvalue == pytest.approx(p_ref, rel=1e-9) and fit.effect_detected
    assert fit.best_adjusted == 2 and "G matters" in fit.summary()
    from ustat_grpo.recommend import recommend
    rec = recommend(fit)
    assert rec.num_generations == 2 and not rec.interior
    # negative control: the same design with no effect of G
    null = 0.15 + 0.004 * rng.standard_normal(G.size)
    fit0 = performance.fit_performance_table(np.full(G.size, 64), G, null, rng=0, n_boot=200)
    assert not fit0.effect_detected and recommend(fit0).num_generations is None


def test_table2_has_no_significant_effect_of_g():
    G = np.tile([4, 8, 16, 32, 64, 128], 3)
    N = np.repeat([1024, 2048, 4096], 6)
    fit = performance.fit_performance_table(N, G, TABLE2.ravel(), rng=0, n_boot=100)
    assert fit.effect_pvalue > 0.05 and not fit.effect_detected
