"""Tests for ``ustat_grpo.stats.wchisq`` against closed forms, published tables, scipy and simulation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.stats._hypotests import _cdf_cvm_inf

from ustat_grpo.stats.wchisq import METHODS, WeightedChiSquared


def _hypoexp_sf(x, lam):
    """P(sum lam_k chi2_2 > x) for distinct lam_k > 0: sum_k prod_{j!=k} r_j / (r_j - r_k) e^{-r_k x}."""
    r = 1.0 / (2.0 * np.asarray(lam, float))
    out = 0.0
    for k in range(r.size):
        out += np.prod([r[j] / (r[j] - r[k]) for j in range(r.size) if j != k]) * np.exp(-r[k] * x)
    return out


# ---- exact method against closed forms -------------------------------------------------------

@pytest.mark.parametrize("df", [1.0, 2.0, 3.0, 0.7])
def test_equal_weights_is_scaled_chi2(df):
    law = WeightedChiSquared([2.5, 2.5], df=[df, df])  # = 2.5 chi2_{2 df}
    x = np.array([1e-3, 0.3, 2.0, 7.0, 25.0, 80.0])
    np.testing.assert_allclose(law.cdf(x), stats.chi2.cdf(x / 2.5, 2 * df), rtol=0, atol=1e-12)
    np.testing.assert_allclose(law.sf(x), stats.chi2.sf(x / 2.5, 2 * df), rtol=0, atol=1e-12)
    np.testing.assert_allclose(law.pdf(x[1:]), stats.chi2.pdf(x[1:] / 2.5, 2 * df) / 2.5, rtol=0, atol=1e-11)


def test_tails_have_relative_accuracy():
    """Far tails: sf computed directly (never 1 - cdf); relative error ~1e-12 down to 1e-100."""
    law = WeightedChiSquared([1.0, 1.0, 1.0])  # chi2_3
    up = np.array([60.0, 150.0, 480.0])
    np.testing.assert_allclose(law.sf(up), stats.chi2.sf(up, 3), rtol=1e-10)
    assert law.sf(480.0) < 1e-100
    lo = np.array([1e-6, 1e-4])
    np.testing.assert_allclose(law.cdf(lo), stats.chi2.cdf(lo, 3), rtol=1e-10)


def test_hypoexponential_closed_form():
    lam = np.array([6.0, 3.0, 1.0])
    law = WeightedChiSquared(lam, df=2)
    x = np.array([0.5, 2.0, 10.0, 50.0, 100.0])
    np.testing.assert_allclose(law.sf(x), [_hypoexp_sf(v, lam) for v in x], rtol=0, atol=1e-13)
    np.testing.assert_allclose(law.cdf(x), [1 - _hypoexp_sf(v, lam) for v in x], rtol=0, atol=1e-13)
    far = np.array([200.0, 400.0])
    np.testing.assert_allclose(law.sf(far), [_hypoexp_sf(v, lam) for v in far], rtol=1e-11)
    # Davies (1980) Table 3, second row, is only +-1e-4 accurate: exact 0.006452882 vs published 0.0064348
    assert abs(law.cdf(2.0) - 0.006452882) < 1e-9


def test_noncentral_single_term_is_ncx2():
    law = WeightedChiSquared([1.5], df=[3], nc=[2.0])
    x = np.array([0.2, 3.0, 10.0, 40.0])
    np.testing.assert_allclose(law.cdf(x), stats.ncx2.cdf(x / 1.5, 3, 2.0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(law.sf(200.0), stats.ncx2.sf(200 / 1.5, 3, 2.0), rtol=1e-9)


def test_negative_weights_laplace_closed_form():
    """chi2_2 - chi2_2 is Laplace(0, 2): P(Q > x) = exp(-x/2) / 2 for x >= 0."""
    law = WeightedChiSquared([1.0, -1.0], df=[2, 2])
    x = np.array([-6.0, -0.5, 0.0, 1.0, 9.0])
    sf = np.where(x >= 0, 0.5 * np.exp(-np.abs(x) / 2), 1 - 0.5 * np.exp(-np.abs(x) / 2))
    np.testing.assert_allclose(law.sf(x), sf, rtol=0, atol=1e-13)
    np.testing.assert_allclose(law.sf(70.0), 0.5 * np.exp(-35.0), rtol=1e-10)
    np.testing.assert_allclose(law.cdf(-70.0), 0.5 * np.exp(-35.0), rtol=1e-10)
    np.testing.assert_allclose(law.pdf(np.array([-3.0, 2.0])), 0.25 * np.exp(-np.array([1.5, 1.0])), atol=1e-12)


# ---- published values --------------------------------------------------------------------------

# Davies (1980), Table 3 (the AS 155 test cases; Imhof 1961's Q-forms scaled by 10): weights, df, nc,
# x and P(Q <= x) as AS 155 prints them (accuracy 1e-4 by design; values from limix/chi2comb's tests).
_DAVIES = [
    ((6, 3, 1), (1, 1, 1), (0, 0, 0), [(1, 0.0542129), (7, 0.4935552), (20, 0.8760272)]),
    ((6, 3, 1), (2, 2, 2), (0, 0, 0), [(2, 0.0064348), (20, 0.6002082), (60, 0.9838968)]),
    ((6, 3, 1), (6, 4, 2), (0, 0, 0), [(10, 0.0026972), (50, 0.5647530), (120, 0.9912288)]),
    ((7, 3), (6, 2), (6, 2), [(20, 0.0061246), (100, 0.5913392), (200, 0.9779138)]),
    ((7, 3), (1, 1), (6, 2), [(10, 0.0451261), (60, 0.5924314), (150, 0.9776484)]),
    ((7, 3, 7, 3), (6, 2, 1, 1), (6, 2, 6, 2), [(70, 0.0436795), (160, 0.5847655), (260, 0.9537744)]),
    ((7, 3, -7, -3), (6, 2, 1, 1), (6, 2, 6, 2), [(-40, 0.0782080), (40, 0.5221076), (140, 0.9603703)]),
]


@pytest.mark.parametrize("case", _DAVIES, ids=[f"davies{i}" for i in range(len(_DAVIES))])
def test_davies_1980_table3(case):
    w, df, nc, pts = case
    law = WeightedChiSquared(w, df=df, nc=nc)
    x, p = np.array(pts).T
    np.testing.assert_allclose(law.cdf(x), p, rtol=0, atol=1e-4)


def test_davies_table_negative_control():
    """Permuting the non-centralities must break agreement with the table (the check can fail)."""
    law = WeightedChiSquared((7, 3), df=(6, 2), nc=(2, 6))
    assert abs(law.cdf(100.0) - 0.5913392) > 1e-3


def test_cramer_von_mises_limit_law():
    """scipy's Cramer-von Mises limit: sum chi2_1 / (k^2 pi^2); truncate at K and shift x by the
    remainder's mean (1/6 - sum_{k<=K} 1/(k^2 pi^2), a <= 1/(pi^2 K) truncation)."""
    K = 20000
    lam = 1.0 / (np.arange(1, K + 1) ** 2 * np.pi**2)
    law = WeightedChiSquared(lam)
    rem = 1.0 / 6.0 - lam.sum()
    x = np.array([0.03, 0.1, 0.2, 0.46136, 1.0])
    np.testing.assert_allclose(law.cdf(x - rem), _cdf_cvm_inf(x), rtol=0, atol=1e-9)
    # the 5% critical value of the Cramer-von Mises test is 0.46136
    assert abs(law.sf(0.46136 - rem) - 0.05) < 5e-5


def test_anchor_moment_method_pitfalls():
    """stats_anchors A.2: lambda_k = 1/k^2 (k <= 50) at x = 0.5 and 6; lambda = (6,3,1) at x = 1."""
    lam = 1.0 / np.arange(1, 51) ** 2
    exact = WeightedChiSquared(lam)
    assert abs(exact.cdf(0.5) - 0.1401) < 5e-5 and abs(exact.cdf(6.0) - 0.97885) < 5e-6
    # the anchor's moment-method values are 4-5 decimals from momentchi2: +-1e-4 (rounding + its
    # implementation); the point is the size of their error against the exact 0.1401
    assert abs(exact.with_method("hbe").cdf(0.5) - 0.0814) < 1e-4
    assert abs(exact.with_method("satterthwaite").cdf(0.5) - 0.2222) < 1e-4
    assert abs(exact.with_method("hbe").cdf(6.0) - 0.97843) < 5e-6
    assert WeightedChiSquared([6, 3, 1], method="hbe").cdf(1.0) == 0.0  # lower endpoint above 1


# ---- approximations: documented accuracy -------------------------------------------------------

def test_fast_methods_documented_accuracy():
    w, df = (6, 3, 1), (1, 1, 1)
    exact = WeightedChiSquared(w, df=df)
    x = np.array([20.0, 40.0, 80.0, 160.0])
    ex = exact.sf(x)
    sp = WeightedChiSquared(w, df=df, method="saddlepoint").sf(x)
    # relative, upper tail: a dominant chi2_1 term limits it to Stirling's error for Gamma(1/2), ~8 %
    assert np.max(np.abs(sp / ex - 1)) < 0.08
    sp2 = WeightedChiSquared(w, df=(2, 2, 2), method="saddlepoint").sf(x)
    assert np.max(np.abs(sp2 / WeightedChiSquared(w, df=(2, 2, 2)).sf(x) - 1)) < 3e-2
    liu = WeightedChiSquared(w, df=df, method="liu").sf(x)
    assert np.max(np.abs(liu - ex)) < 1e-2
    hbe = WeightedChiSquared(w, df=df, method="hbe").sf(x)
    assert np.max(np.abs(hbe - ex)) < 5e-3
    # near the mean the saddlepoint is only a few 1e-2 accurate
    assert abs(WeightedChiSquared(w, df=df, method="saddlepoint").cdf(10.0) - exact.cdf(10.0)) < 3e-2


def test_positive_only_methods_refuse_negative_weights():
    for m in ("liu", "hbe", "satterthwaite"):
        with pytest.raises(ValueError, match="positive"):
            WeightedChiSquared([1.0, -1.0], method=m)
    assert set(METHODS) == {"imhof", "saddlepoint", "liu", "hbe", "satterthwaite"}


# ---- inverse, density, moments, sampling ---------------------------------------------------------

def test_ppf_inverts_cdf_and_sf():
    law = WeightedChiSquared([0.6, 0.3, 0.1])
    q = np.array([1e-9, 0.01, 0.5, 0.99])
    x = law.ppf(q)
    np.testing.assert_allclose(law.cdf(x[:3]), q[:3], rtol=1e-9)
    np.testing.assert_allclose(law.sf(x[3]), 0.01, rtol=1e-9)
    assert law.sf(law.isf(1e-12)) == pytest.approx(1e-12, rel=1e-6)
    assert law.ppf(0.0) == 0.0 and np.isinf(law.ppf(1.0)) and np.isnan(law.ppf(1.5))


def test_pdf_is_derivative_of_cdf():
    law = WeightedChiSquared([7, 3], df=[1, 1], nc=[6, 2])
    h = 1e-3
    for x in (10.0, 60.0):
        num = (law.cdf(x + h) - law.cdf(x - h)) / (2 * h)
        assert abs(law.pdf(x) - num) < 1e-8


def test_moments_and_shapes():
    law = WeightedChiSquared([2.0, 0.5, 0.0], df=[1, 3, 1], nc=[1.0, 0.0, 4.0])  # zero weight dropped
    assert law.mean() == pytest.approx(2 * 2 + 0.5 * 3)
    assert law.var() == pytest.approx(2 * (4 * 3 + 0.25 * 3))
    assert law.cumulant(2) == pytest.approx(law.var())
    assert law.weights.tolist() == [2.0, 0.5]
    assert np.shape(law.cdf(np.ones((2, 3)))) == (2, 3) and np.ndim(law.cdf(1.0)) == 0
    assert "WeightedChiSquared" in law.summary() and law.to_dict()["mean"] == pytest.approx(5.5)


def test_rvs_moments_z_bound():
    law = WeightedChiSquared([2.0, 0.5], df=[1, 3], nc=[1.0, 0.0])
    x = law.rvs(200_000, rng=np.random.default_rng(11))
    z = (x.mean() - law.mean()) / (x.std(ddof=1) / np.sqrt(x.size))
    assert abs(z) < 5.0


def test_rvs_kolmogorov_smirnov_with_negative_control():
    law = WeightedChiSquared([0.6, 0.3, 0.1])
    fast = law.interpolated_cdf()
    xs = np.linspace(0.01, 8.0, 13)
    np.testing.assert_allclose(fast(xs), law.cdf(xs), rtol=0, atol=1e-5)  # interpolation error
    x = law.rvs(20_000, rng=np.random.default_rng(5))
    assert stats.kstest(x, fast).pvalue > 1e-4
    wrong = WeightedChiSquared([0.6, 0.3, 0.1 * 1.5]).interpolated_cdf()  # negative control
    assert stats.kstest(x, wrong).pvalue < 1e-6


def test_input_validation():
    with pytest.raises(ValueError, match="non-zero"):
        WeightedChiSquared([0.0])
    with pytest.raises(ValueError, match="df"):
        WeightedChiSquared([1.0], df=[0])
    with pytest.raises(ValueError, match="nc"):
        WeightedChiSquared([1.0], nc=[-1])
    with pytest.raises(ValueError, match="method"):
        WeightedChiSquared([1.0], method="davies")
    with pytest.raises(TypeError):
        WeightedChiSquared([1.0]).rvs(3, rng=1)


# ---- spread weights, far tails: against independent references (issue 14) -----------------------
# The laws on which the old QUADPACK path silently fell back to Lugannani-Rice (2-8 % off, 5-120 s).
# References (tests/_wchisq_reference.py): a 30-digit mpmath inversion on a hyperbola with
# tanh-sinh quadrature, and for three weights a direct convolution of the chi-squared laws.

_SPREAD = {
    "w3_df1": dict(weights=(1e3, 1.0, 1e-3), df=1, nc=0),
    "w3_df_nc": dict(weights=(1e3, 1.0, 1e-3), df=(2, 1, 4), nc=(1, 0, 3)),
    "w12_log": dict(weights=tuple(np.logspace(-8, 3, 12)), df=1, nc=0),
}


def _spread(name):
    kw = _SPREAD[name]
    return WeightedChiSquared(kw["weights"], df=kw["df"], nc=kw["nc"]), kw


@pytest.mark.parametrize("name", list(_SPREAD))
def test_spread_laws_upper_tail_against_mpmath(name):
    from _wchisq_reference import mp_sf_cdf

    law, kw = _spread(name)
    for p in (1e-6, 1e-15):
        x = float(law.isf(p))
        ref_sf, ref_cdf = mp_sf_cdf(x, kw["weights"], kw["df"], kw["nc"])
        r = law.evaluate(x)
        assert r.converged and abs(r.sf / ref_sf - 1) < 1e-10, (p, r.sf, ref_sf)
        assert abs(law.sf(x) / ref_sf - 1) < 1e-10 and abs(law.cdf(x) - ref_cdf) < 1e-15
        assert abs(ref_sf / p - 1) < 1e-10  # isf works on the upper tail
        assert abs(law.sf(x) + law.cdf(x) - 1) <= 2e-16
        assert r.abserr < 1e-10 * r.sf


@pytest.mark.parametrize("name", list(_SPREAD))
def test_spread_laws_lower_tail_against_mpmath(name):
    from _wchisq_reference import mp_sf_cdf

    law, kw = _spread(name)
    x = float(law.ppf(1e-12))
    ref_sf, ref_cdf = mp_sf_cdf(x, kw["weights"], kw["df"], kw["nc"])
    assert abs(law.cdf(x) / ref_cdf - 1) < 1e-10 and abs(ref_cdf / 1e-12 - 1) < 1e-10
    assert abs(law.sf(x) - ref_sf) < 1e-15


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_SPREAD))
def test_spread_laws_full_grid_against_mpmath(name):
    from _wchisq_reference import mp_sf_cdf

    law, kw = _spread(name)
    for p in (1e-3, 1e-6, 1e-9, 1e-12, 1e-15):
        for x, tail in ((float(law.isf(p)), "sf"), (float(law.ppf(p)), "cdf")):
            ref_sf, ref_cdf = mp_sf_cdf(x, kw["weights"], kw["df"], kw["nc"])
            got, ref = (law.sf(x), ref_sf) if tail == "sf" else (law.cdf(x), ref_cdf)
            assert abs(got / ref - 1) < 1e-10 and abs(ref / p - 1) < 1e-10, (p, tail, got, ref)


@pytest.mark.parametrize("name", ["w3_df1", "w3_df_nc"])
def test_three_weight_laws_against_convolution(name):
    from _wchisq_reference import conv_sf, mp_sf_cdf

    law, kw = _spread(name)
    for p in (1e-6, 1e-9, 1e-12, 1e-15):
        x = float(law.isf(p))
        ref, conv = conv_sf(x, kw["weights"], kw["df"], kw["nc"])
        assert conv < 1e-12  # the convolution grid has converged
        assert abs(law.sf(x) / ref - 1) < 1e-10, (p, law.sf(x), ref)
        assert abs(ref / p - 1) < 1e-10  # isf(p) solves sf = p
    # the two references agree with each other (the mpmath one is also used alone above)
    x = float(law.isf(1e-12))
    assert abs(mp_sf_cdf(x, kw["weights"], kw["df"], kw["nc"])[0] / conv_sf(x, kw["weights"], kw["df"], kw["nc"])[0]
               - 1) < 1e-12


def test_random_positive_laws_against_convolution():
    """Random three-weight laws: weights spanning up to 1e6, df and non-centralities."""
    from _wchisq_reference import conv_sf

    rng = np.random.default_rng(14)
    for _ in range(4):
        w = np.sort(10 ** rng.uniform(-3, 3, 3))[::-1]
        df = np.r_[rng.uniform(0.5, 5), rng.integers(1, 5, 2)]
        nc = rng.uniform(0, 4, 3) * (rng.uniform(size=3) < 0.6)
        law = WeightedChiSquared(w, df=df, nc=nc)
        for p in (1e-3, 1e-10, 1e-15):
            x = float(law.isf(p))
            ref = conv_sf(x, w, df, nc)[0]
            assert abs(law.sf(x) / ref - 1) < 1e-10, (w, df, nc, p, law.sf(x), ref)


def test_spread_law_negative_controls():
    """The references discriminate at the tests' tolerance: Lugannani-Rice (the old silent fallback)
    is percent-level off, and moving the middle weight by 1 % moves the 1e-12 tail by >> 1e-10."""
    from _wchisq_reference import conv_sf

    law, kw = _spread("w3_df1")
    x = float(law.isf(1e-12))
    ref = conv_sf(x, kw["weights"])[0]
    assert abs(law.with_method("saddlepoint").sf(x) / ref - 1) > 1e-2
    moved = conv_sf(x, (1e3, 1.01, 1e-3))[0]
    assert abs(law.sf(x) / moved - 1) > 1e-6


def test_nonconvergence_is_reported_not_replaced():
    """With too few nodes the result says so (warning, converged=False, an honest error estimate);
    no other method is substituted."""
    from _wchisq_reference import conv_sf

    from ustat_grpo.stats.wchisq import ContourIntegrationWarning

    law, kw = _spread("w3_df1")
    x = float(law.isf(1e-12))
    ref = conv_sf(x, kw["weights"])[0]
    for budget in (8, 32):
        with pytest.warns(ContourIntegrationWarning, match="did not converge"):
            r = law.evaluate(x, max_nodes=budget)
        assert not r.converged and r.nodes <= budget
        assert abs(r.sf - ref) <= r.abserr  # the reported error covers the actual one
        assert r.sf != law.with_method("saddlepoint").sf(x)
    assert law.evaluate(x).converged


def test_logsf_logcdf_beyond_underflow():
    import mpmath as mp

    law = WeightedChiSquared([1.0, 1.0, 1.0])  # chi2_3: P(chi2_3 > x) = Gamma(3/2, x/2) / Gamma(3/2)
    ref_sf = float(mp.log(mp.gammainc(1.5, 1500, mp.inf, regularized=True)))
    ref_cdf = float(mp.log(mp.gammainc(1.5, 0, mp.mpf("0.5e-250"), regularized=True)))
    np.testing.assert_allclose(law.logsf(3000.0), ref_sf, rtol=1e-12)  # scipy's logsf is -inf here
    np.testing.assert_allclose(law.logcdf(1e-250), ref_cdf, rtol=1e-12)
    assert law.sf(3000.0) == 0.0 and np.isfinite(law.logsf(3000.0))


def test_isf_and_ppf_work_on_the_tail_asked():
    law = WeightedChiSquared([1.0, 1.0, 1.0])
    p = np.array([1e-300, 1e-100, 1e-20, 1e-3, 0.3, 0.7, 1 - 1e-9])
    np.testing.assert_allclose(law.isf(p), stats.chi2.isf(p, 3), rtol=1e-12)
    np.testing.assert_allclose(law.ppf(p), stats.chi2.ppf(p, 3), rtol=1e-12)
    assert law.isf(0.0) == np.inf and law.isf(1.0) == 0.0


def test_mixed_signs_contour_agrees_with_imhof_near_zero():
    """Weights of both signs: the contour (|x| not tiny) and Imhof's integral (x near 0, where the
    contour has no damping) agree, and sf(0) matches a 30-digit convolution."""
    import math

    from ustat_grpo.stats._wchisq_imhof import imhof_integral

    law = WeightedChiSquared([3.0, -1.0, 0.5], df=[1, 2, 1], nc=[1, 0, 2])
    f = law._f
    for x in (-3.0, -0.3, 0.3, 3.0):
        r = law.evaluate(x)
        assert r.nodes > 0  # the contour
        imhof = 0.5 + imhof_integral(x, f.weights, f.df, f.nc, kind="sf")[0] / math.pi
        assert abs(r.sf - imhof) < 1e-13
    assert law.evaluate(1e-6).nodes == 0  # Imhof
    # P(chi2_{1/2} > 0.3 chi2_{1/2}) by mpmath: E Gamma(1/4, 0.15 Y) / Gamma(1/4), Y = t^4
    assert abs(WeightedChiSquared([1.0, -0.3], df=[0.5, 0.5]).sf(0.0) - 0.611528826666575561834565) < 1e-14
