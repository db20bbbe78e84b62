import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ustat_grpo.theory import estimators as est


RTOL = 1e-12


def _data(rng, lead=(3, 2), G=5, d=4, binary=False):
    r = rng.integers(0, 2, size=lead + (G,)).astype(float) if binary else rng.random(lead + (G,))
    s = rng.normal(size=lead + (G, d))
    return r, s


# ---------------------------------------------------------------- fast == naive twins


@pytest.mark.parametrize("G", [2, 3, 8])
def test_fast_equals_naive(G):
    rng = np.random.default_rng(101)
    r, s = _data(rng, G=G)
    np.testing.assert_allclose(est.vanilla(r, s), est._naive_vanilla(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.leave_one_out(r, s), est._naive_leave_one_out(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.leave_one_out(r, s), est._naive_leave_one_out_ustat(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.group_mean(r, s), est._naive_group_mean(r, s), rtol=RTOL, atol=1e-14)
    c = rng.random(r.shape[:-1])
    np.testing.assert_allclose(est.prompt_baseline(r, s, baseline=c), est._naive_prompt_baseline(r, s, c),
                               rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.oracle(r, s, values=c), est._naive_prompt_baseline(r, s, c),
                               rtol=RTOL, atol=1e-14)
    for eps in (1e-4, 1e-6, 1e-9):
        for center in ("mean", "loo"):
            np.testing.assert_allclose(est.std_normalized(r, s, eps=eps, center=center),
                                       est._naive_std_normalized(r, s, eps=eps, center=center),
                                       rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.std_normalized(r, s, eps=1e-6, ddof=0),
                               est._naive_std_normalized(r, s, eps=1e-6, ddof=0), rtol=RTOL, atol=1e-14)


def test_naive_twin_detects_wrong_formula():
    # negative control for the twin comparison: group_mean is not leave_one_out for any G
    rng = np.random.default_rng(102)
    r, s = _data(rng, G=4)
    assert not np.allclose(est.group_mean(r, s), est._naive_leave_one_out(r, s))


def test_leave_one_out_equals_ustat_engine():
    from ustat_grpo.stats import kernels, ustat

    rng = np.random.default_rng(103)
    for G in (3, 7, 12):
        r, s = _data(rng, lead=(), G=G, d=3)
        np.testing.assert_allclose(est.leave_one_out(r, s), est._naive_leave_one_out_ustat(r, s), rtol=RTOL)
        for method in ("naive", "vectorized"):                # kernel evaluated pair by pair, not the closed form
            res = ustat.ustatistic(kernels.grpo_data(r, s), kernels.grpo_kernel, method=method)
            np.testing.assert_allclose(res.statistic, est.leave_one_out(r, s), rtol=1e-12, atol=1e-15)
        # control: the engine does not agree with the (biased) full-mean baseline
        assert not np.allclose(res.statistic, est.group_mean(r, s))


# ---------------------------------------------------------------- algebraic identities


def test_group_mean_is_scaled_leave_one_out():
    rng = np.random.default_rng(104)
    for G in (2, 5, 16):
        r, s = _data(rng, G=G)
        np.testing.assert_allclose(est.group_mean(r, s), (G - 1) / G * est.leave_one_out(r, s), rtol=RTOL)


def test_broadcasting_of_leading_axes():
    rng = np.random.default_rng(105)
    r = rng.random((4, 1, 6))
    s = rng.normal(size=(1, 3, 6, 2))
    out = est.leave_one_out(r, s)
    assert out.shape == (4, 3, 2)
    np.testing.assert_allclose(out[2, 1], est.leave_one_out(r[2, 0], s[0, 1]), rtol=RTOL)


@given(st.integers(2, 9), st.floats(-5, 5), st.integers(0, 10_000))
def test_shift_and_permutation_invariance(G, shift, seed):
    rng = np.random.default_rng(seed)
    r, s = _data(rng, lead=(2,), G=G, d=3)
    base = est.leave_one_out(r, s)
    np.testing.assert_allclose(est.leave_one_out(r + shift, s), base, rtol=1e-9, atol=1e-9)
    perm = rng.permutation(G)
    np.testing.assert_allclose(est.leave_one_out(r[:, perm], s[:, perm]), base, rtol=1e-9, atol=1e-12)
    # vanilla is NOT shift invariant (control): the score sum is not zero on a sample
    if not np.allclose(s.sum(axis=-2), 0) and abs(shift) > 1e-3:
        assert not np.allclose(est.vanilla(r + shift, s), est.vanilla(r, s))


def test_std_normalized_zero_variance_policies():
    s = np.ones((2, 4, 1))
    r = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    out = est.std_normalized(r, s, preset="paper", zero_std="zero")
    assert out[0, 0] == 0.0 and np.isfinite(out[1, 0])
    assert np.isnan(est.std_normalized(r, s, preset="trl_grpo", zero_std="nan")[0, 0])
    with pytest.raises(ValueError, match="zero reward variance"):
        est.std_normalized(r, s, zero_std="raise")
    # non-dyadic ties must also count as zero variance
    r2 = np.full((1, 3), 0.1)
    assert est.std_normalized(r2, np.ones((1, 3, 1)), preset="paper")[0, 0] == 0.0


def test_std_normalized_paper_eq15():
    # eq. (15)-(16): LOO numerator, Bessel se with the full mean, no eps
    r = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    s = np.eye(5)
    G = 5
    se = np.std(r, ddof=1)
    loo = (r.sum() - r) / (G - 1)
    expect = (r - loo) / se / G
    np.testing.assert_allclose(est.std_normalized(r, s, preset="paper", center="loo"), expect, rtol=RTOL)


# ---------------------------------------------------------------- advantages vs frameworks


def test_registry_uniform_signature():
    rng = np.random.default_rng(110)
    r, s = _data(rng, lead=(3,), G=4, d=2)
    v = rng.random(3)
    for name, fn in est.ESTIMATORS.items():
        out = fn(r, s, values=v)
        assert out.shape == (3, 2), name
    np.testing.assert_allclose(est.ESTIMATORS["oracle"](r, s, values=v), est.oracle(r, s, values=v))


@given(st.integers(2, 8), st.integers(1, 4), st.integers(0, 10_000))
def test_property_estimators_fast_equal_naive(G, d, seed):
    rng = np.random.default_rng(seed)
    r, s = _data(rng, lead=(3,), G=G, d=d, binary=bool(seed % 2))
    np.testing.assert_allclose(est.leave_one_out(r, s), est._naive_leave_one_out_ustat(r, s), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.std_normalized(r, s, preset="verl_grpo"),
                               est._naive_std_normalized(r, s, eps=1e-6), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- constant groups in float32


