"""Tests of the generic U-statistic engine against independent references."""
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from ustat_grpo.core.testing import binomial_coverage_pvalue
from ustat_grpo.stats.kernels import (
    Kernel, gini_kernel, grpo_data, grpo_kernel, kendall_kernel, mann_whitney_kernel, variance_kernel,
    wilcoxon_kernel,
)
from ustat_grpo.stats.ustat import hoeffding, ustat_variance, ustatistic


def _brute_u(data, f, m):
    vals = [f(*(data[[i]] for i in t))[0] for t in itertools.combinations(range(len(data)), m)]
    return np.mean(vals, axis=0)


def test_sample_variance_is_u_statistic():
    x = np.random.default_rng(1).normal(size=40)
    for method in ("naive", "vectorized", "closed_form"):
        assert ustatistic(x, variance_kernel, method=method).statistic == pytest.approx(x.var(ddof=1), rel=1e-12)


def test_ustat_variance_normal_sample_variance():
    # Var(s^2) = 2 sigma^4 / (n - 1) for N(0, sigma^2); zeta_1 = sigma^4/2, zeta_2 = 2 sigma^4
    for n in (4, 7, 30, 1000):
        for s2 in (1.0, 2.5):
            assert ustat_variance([s2**2 / 2, 2 * s2**2], n) == pytest.approx(2 * s2**2 / (n - 1), rel=1e-12)


def test_ustat_variance_exact_rational():
    # combinatorial formula in exact arithmetic (dcor pattern), order 3
    z = [Fraction(1, 3), Fraction(2, 7), Fraction(5, 2)]
    n, m = 9, 3
    exact = sum(Fraction(math.comb(m, c) * math.comb(n - m, m - c)) * z[c - 1] for c in range(1, 4)) / math.comb(n, m)
    assert ustat_variance([float(v) for v in z], n) == pytest.approx(float(exact), rel=1e-14)


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(2)
    a = rng.normal(size=60)
    b = a + rng.normal(size=60)
    res = ustatistic(np.column_stack([a, b]), kendall_kernel)
    assert res.statistic == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)


def test_wilcoxon_and_mann_whitney_against_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 1, size=25)
    # Walsh averages x_i + x_j > 0 (i < j) plus the n positive singletons give the signed-rank W+
    u = ustatistic(x, wilcoxon_kernel).statistic
    w_plus = u * math.comb(25, 2) + np.sum(x > 0)
    ranks = stats.rankdata(np.abs(x))
    assert w_plus == pytest.approx(ranks[x > 0].sum(), abs=1e-9)  # signed-rank W+ from ranks
    ab = rng.normal(size=(30, 2)) + [0, 0.5]
    pairs = np.mean([0.5 * (float(ab[i, 0] < ab[j, 1]) + float(ab[j, 0] < ab[i, 1]))
                     for i, j in itertools.combinations(range(30), 2)])
    assert ustatistic(ab, mann_whitney_kernel).statistic == pytest.approx(pairs, abs=1e-12)


@pytest.mark.parametrize("kernel", [variance_kernel, gini_kernel, kendall_kernel, wilcoxon_kernel, mann_whitney_kernel])
def test_vectorized_equals_naive(kernel):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(15, 2)) if kernel in (kendall_kernel, mann_whitney_kernel) else rng.normal(size=15)
    a = ustatistic(x, kernel, method="naive")
    b = ustatistic(x, kernel, method="vectorized", batch_size=17)
    assert b.statistic == pytest.approx(a.statistic, abs=1e-12)
    assert b.variance == pytest.approx(a.variance, abs=1e-12)
    if kernel.has_closed_form:
        c = ustatistic(x, kernel, method="closed_form")
        assert c.statistic == pytest.approx(a.statistic, abs=1e-12)
        assert c.variance == pytest.approx(a.variance, abs=1e-12)


def test_grpo_kernel_closed_form_equals_naive_and_loo():
    rng = np.random.default_rng(5)
    r = rng.integers(0, 2, size=9).astype(float)
    s = rng.normal(size=(9, 4))
    data = grpo_data(r, s)
    a = ustatistic(data, grpo_kernel, method="naive")
    c = ustatistic(data, grpo_kernel)
    assert c.method == "closed_form"
    np.testing.assert_allclose(c.statistic, a.statistic, atol=1e-12)
    np.testing.assert_allclose(c.covariance, a.covariance, atol=1e-12)
    loo = np.mean([s[g] * (r[g] - np.delete(r, g).mean()) for g in range(9)], axis=0)
    np.testing.assert_allclose(c.statistic, loo, atol=1e-12)


def test_order3_vector_kernel_naive_twin():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 2))
    k = Kernel(lambda a, b, c: np.stack([a[:, 0] * b[:, 0] * c[:, 0], (a[:, 1] + b[:, 1] + c[:, 1]) ** 2], 1), 3, "o3")
    a = ustatistic(x, k, method="naive")
    b = ustatistic(x, k, method="vectorized", batch_size=11)
    np.testing.assert_allclose(b.statistic, a.statistic, atol=1e-12)
    np.testing.assert_allclose(b.covariance, a.covariance, atol=1e-12)
    np.testing.assert_allclose(a.statistic, _brute_u(x, k.func, 3), atol=1e-12)


def test_jackknife_equals_refit_leave_one_out():
    rng = np.random.default_rng(7)
    x = rng.exponential(size=12)
    loo = np.array([np.delete(x, i).var(ddof=1) for i in range(12)])
    jack = 11 / 12 * np.sum((loo - loo.mean()) ** 2)
    assert ustatistic(x, variance_kernel).variance == pytest.approx(jack, rel=1e-12)


def test_hoeffding_zetas_unbiased_by_exact_enumeration():
    # data from a 3-point distribution: average the estimator over ALL n-samples exactly
    support = np.array([-1.0, 0.5, 2.0])
    probs = np.array([0.2, 0.5, 0.3])
    n = 4
    est = np.zeros(2)
    for idx in itertools.product(range(3), repeat=n):
        w = np.prod(probs[list(idx)])
        est += w * hoeffding(support[list(idx)], gini_kernel).zetas
    # exact zetas of the Gini kernel
    h = np.abs(support[:, None] - support[None, :])
    theta = probs @ h @ probs
    h1 = h @ probs
    z1 = probs @ (h1 - theta) ** 2
    z2 = probs @ (h - theta) ** 2 @ probs
    np.testing.assert_allclose(est, [z1, z2], rtol=1e-12)


def test_unbiased_variance_matches_exact_by_enumeration():
    support = np.array([0.0, 1.0, 3.0])
    probs = np.array([0.3, 0.3, 0.4])
    n = 5
    mean_est = 0.0
    mom1 = mom2 = 0.0
    for idx in itertools.product(range(3), repeat=n):
        w = np.prod(probs[list(idx)])
        res = ustatistic(support[list(idx)], variance_kernel, variance="unbiased")
        mean_est += w * res.variance
        mom1 += w * res.statistic
        mom2 += w * res.statistic**2
    assert mean_est == pytest.approx(mom2 - mom1**2, rel=1e-12)


def test_first_order_share_of_grpo_kernel():
    rng = np.random.default_rng(8)
    r = (rng.random(400) < 0.4).astype(float)
    s = rng.normal(size=(400, 3))
    res = hoeffding(grpo_data(r, s), grpo_kernel)
    assert 0.9 < res.first_order_share <= 1.0 + 1e-9
    assert res.projections.shape == (400, 3)


@given(arrays(np.float64, st.integers(5, 12), elements=st.floats(-10, 10)), st.randoms(use_true_random=False))
def test_permutation_invariance(x, rnd):
    perm = list(range(len(x)))
    rnd.shuffle(perm)
    for k in (variance_kernel, gini_kernel, wilcoxon_kernel):
        a = ustatistic(x, k, method="vectorized")
        b = ustatistic(x[perm], k, method="vectorized")
        assert b.statistic == pytest.approx(a.statistic, abs=1e-9)
        assert b.variance == pytest.approx(a.variance, abs=1e-9)


def test_jackknife_interval_coverage():
    # 95% jackknife-normal intervals for the Gini mean difference of N(0,1) data (true 2/sqrt(pi)).
    # (For skewed data the normal interval under-covers at small n: Exp(1), n = 60 gives ~0.92.)
    rng = np.random.default_rng(9)
    trials, hits, true = 800, 0, 2 / np.sqrt(np.pi)
    for _ in range(trials):
        ci = ustatistic(rng.normal(size=100), gini_kernel).confidence_interval(0.95)
        hits += ci.low <= true <= ci.high
    assert binomial_coverage_pvalue(hits, trials, 0.95) > 1e-3, hits / trials
    # negative control: a 50%-too-narrow interval must fail the same test
    rng = np.random.default_rng(9)
    hits = 0
    for _ in range(trials):
        res = ustatistic(rng.normal(size=100), gini_kernel)
        hits += abs(res.statistic - true) <= 0.5 * 1.96 * res.standard_error
    assert binomial_coverage_pvalue(hits, trials, 0.95) < 1e-3


def test_incomplete_unbiased_and_variance_calibrated():
    rng = np.random.default_rng(10)
    reps = 300
    stats_, ses = [], []
    for _ in range(reps):
        x = rng.normal(size=300)
        r = ustatistic(x, variance_kernel, method="incomplete", rng=rng, num_tuples=3000)
        stats_.append(r.statistic)
        ses.append(r.standard_error)
    stats_ = np.array(stats_)
    exact_var = (1 - 1 / 3000) * 2 / 299 + (2.0 - 2 / 299) / 3000  # (1-1/M) Var U_n + (zeta_2 - Var U_n)/M
    assert abs(stats_.mean() - 1.0) < 5 * np.sqrt(exact_var / reps)
    assert np.mean(np.array(ses) ** 2) == pytest.approx(exact_var, rel=0.15)


@pytest.mark.parametrize("bad, msg", [
    (dict(data=np.ones(1)), "n >= order"),
    (dict(data=np.array([1.0, np.nan, 2.0])), "non-finite"),
    (dict(data=np.ones(5), kernel=Kernel(lambda a, b: np.ones((len(a), 2, 2)), 2, "bad")), "shape"),
    (dict(data=np.ones(5), method="magic"), "method"),
    (dict(data=np.array(["a", "b", "c"])), "real numbers"),
])
def test_bad_input(bad, msg):
    kw = dict(kernel=variance_kernel) | bad
    with pytest.raises(ValueError, match=msg):
        ustatistic(kw.pop("data"), kw.pop("kernel"), **kw)


def test_result_api():
    res = ustatistic(np.random.default_rng(11).normal(size=20), variance_kernel)
    d = res.to_dict()
    assert set(d) >= {"statistic", "standard_error", "confidence_interval_95", "method"}
    assert "U-statistic" in str(res)
    lo, hi = res.confidence_interval(0.9)
    assert lo < res.statistic < hi


def test_variance_none_gives_the_statistic_alone_at_n_equal_order():
    from ustat_grpo.stats.kernels import variance_kernel
    x = np.array([0.3, -1.2, 2.0])
    res = ustatistic(x[:2], variance_kernel, method="naive", variance="none")       # n = m = 2
    assert res.statistic == pytest.approx(np.var(x[:2], ddof=1)) and np.isnan(res.standard_error)
    with pytest.raises(ValueError, match="jackknife needs"):
        ustatistic(x[:2], variance_kernel, method="naive")
