"""Tests of ustat_grpo.scaling.performance: fits of performance-vs-G tables (the paper's Table 2)."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from ustat_grpo.scaling import performance




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
    from ustat_grpo.recommendation.recommend import recommend
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


# ---------------------------------------------------------------------------- compare_group_sizes

def test_compare_group_sizes_pvalues_match_scipy_paired_t():
    from scipy import stats as st

    from ustat_grpo.scaling.performance import compare_group_sizes

    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 9)) + np.array([0.0, 3.0, 1.0, -1.0])[:, None]
    cmp = compare_group_sizes([2, 4, 8, 16], y)
    for i, g in enumerate(cmp.groups):
        ref = min(st.ttest_rel(y[j], y[i], alternative="greater").pvalue for j in range(4) if j != i)
        assert cmp.pvalue_worse[g] == pytest.approx(ref, rel=1e-10)
    assert cmp.best == 4 and 4 in cmp.best_set
    worse = {g for g in cmp.groups if cmp.pvalue_worse[g] <= 0.05 / 3}
    assert set(cmp.best_set) == set(cmp.groups) - worse
    # lower-is-better on negated scores: the same decision
    neg = compare_group_sizes([2, 4, 8, 16], -y, higher_is_better=False)
    assert neg.best_set == cmp.best_set and neg.best == cmp.best


def test_compare_group_sizes_covers_the_best_and_detects_clear_losers():
    """Seeded Monte Carlo: the set holds the true best in >= 95% of replicates (binomial bound),
    a clearly worse G is excluded nearly always, and a wrong rule (no Bonferroni, best sample
    mean as the reference) loses coverage when the top two are tied."""
    from scipy import stats as st

    from ustat_grpo.scaling.performance import compare_group_sizes

    rng = np.random.default_rng(1)
    means = np.array([0.0, 0.0, -0.1, -3.0])          # G=2 and G=4 tied for best, G=16 far worse
    R, n = 400, 6
    cover = excluded = naive_cover = 0
    for _ in range(R):
        y = means[:, None] + rng.normal(size=(1, n)) + rng.normal(size=(4, n))   # seed effect + noise
        cmp = compare_group_sizes([2, 4, 8, 16], y)
        cover += 2 in cmp.best_set and 4 in cmp.best_set
        excluded += 16 not in cmp.best_set
        b = int(np.argmax(y.mean(1)))
        naive = [i for i in range(4) if i == b or st.ttest_rel(y[b], y[i], alternative="greater").pvalue > 0.3]
        naive_cover += 0 in naive and 1 in naive
    lo = st.binom.ppf(1e-4, R, 0.90) / R                # both tied bests kept: each >= 95%, jointly >= 90%
    assert cover / R >= lo
    assert excluded / R >= 0.95
    assert naive_cover / R < lo                         # the negative control fails the same bound


def test_compare_group_sizes_rejects_bad_input():
    from ustat_grpo.scaling.performance import compare_group_sizes

    with pytest.raises(ValueError):
        compare_group_sizes([2, 4], np.ones((3, 5)))
    with pytest.raises(ValueError):
        compare_group_sizes([2, 4], np.ones((2, 1)))
    with pytest.raises(ValueError):
        compare_group_sizes([2, 4], np.array([[1.0, np.nan], [1.0, 2.0]]))


def test_three_row_table_is_a_clear_error_and_four_rows_fit():
    # issue 20: --help's 3-row example ended in "need more observations (3) than parameters (3)"
    N, G, acc = [1024] * 3, [4, 8, 16], [0.7677, 0.7491, 0.7753]
    with pytest.raises(ValueError, match=r"1 budget\(s\) needs at least 4 rows, got 3: the curve has 3 "
                                         r"parameters .* estimate the run-to-run noise") as exc:
        performance.fit_performance_table(N, G, acc, rng=0)
    assert "\n" not in str(exc.value)
    fit = performance.fit_performance_table(N + [1024], G + [32], acc + [0.7627], rng=0)
    assert fit.dof == 1 and fit.n_obs == 4 and np.isfinite(fit.residual_sd)
    with pytest.raises(ValueError, match=r"2 budget\(s\) needs at least 5 rows, got 4"):
        performance.fit_performance_table([1024, 1024, 2048, 2048], [4, 8, 16, 32], [0.1, 0.2, 0.3, 0.2], rng=0)
