import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ustat_grpo import estimators as est

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
    np.testing.assert_allclose(est.grpo(r, s), est._naive_grpo(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.grpo(r, s), est._naive_grpo_ustat(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.rloo(r, s), est._naive_grpo(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.group_mean(r, s), est._naive_group_mean(r, s), rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(est.dr_grpo(r, s), est._naive_group_mean(r, s), rtol=RTOL, atol=1e-14)
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
    # negative control for the twin comparison: group_mean is not grpo for any G
    rng = np.random.default_rng(102)
    r, s = _data(rng, G=4)
    assert not np.allclose(est.group_mean(r, s), est._naive_grpo(r, s))


def test_grpo_equals_ustat_engine():
    from ustat_grpo import kernels, ustat

    rng = np.random.default_rng(103)
    for G in (3, 7, 12):
        r, s = _data(rng, lead=(), G=G, d=3)
        np.testing.assert_allclose(est.grpo(r, s), est._naive_grpo_ustat(r, s), rtol=RTOL)
        for method in ("naive", "vectorized"):                # kernel evaluated pair by pair, not the closed form
            res = ustat.ustatistic(kernels.grpo_data(r, s), kernels.grpo_kernel, method=method)
            np.testing.assert_allclose(res.statistic, est.grpo(r, s), rtol=1e-12, atol=1e-15)
        # control: the engine does not agree with the (biased) full-mean baseline
        assert not np.allclose(res.statistic, est.group_mean(r, s))


# ---------------------------------------------------------------- algebraic identities

def test_group_mean_is_scaled_grpo():
    rng = np.random.default_rng(104)
    for G in (2, 5, 16):
        r, s = _data(rng, G=G)
        np.testing.assert_allclose(est.group_mean(r, s), (G - 1) / G * est.grpo(r, s), rtol=RTOL)


def test_broadcasting_of_leading_axes():
    rng = np.random.default_rng(105)
    r = rng.random((4, 1, 6))
    s = rng.normal(size=(1, 3, 6, 2))
    out = est.grpo(r, s)
    assert out.shape == (4, 3, 2)
    np.testing.assert_allclose(out[2, 1], est.grpo(r[2, 0], s[0, 1]), rtol=RTOL)


@given(st.integers(2, 9), st.floats(-5, 5), st.integers(0, 10_000))
def test_shift_and_permutation_invariance(G, shift, seed):
    rng = np.random.default_rng(seed)
    r, s = _data(rng, lead=(2,), G=G, d=3)
    base = est.grpo(r, s)
    np.testing.assert_allclose(est.grpo(r + shift, s), base, rtol=1e-9, atol=1e-9)
    perm = rng.permutation(G)
    np.testing.assert_allclose(est.grpo(r[:, perm], s[:, perm]), base, rtol=1e-9, atol=1e-12)
    # vanilla is NOT shift invariant (control): the score sum is not zero on a sample
    if not np.allclose(s.sum(axis=-2), 0) and abs(shift) > 1e-3:
        assert not np.allclose(est.vanilla(r + shift, s), est.vanilla(r, s))


def test_std_normalized_zero_variance_policies():
    s = np.ones((2, 4, 1))
    r = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    out = est.std_normalized(r, s, preset="paper", zero_std="zero")
    assert out[0, 0] == 0.0 and np.isfinite(out[1, 0])
    assert np.isnan(est.std_normalized(r, s, preset="trl", zero_std="nan")[0, 0])
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

def test_advantages_worked_example_g8():
    r = np.array([1, 1, 1, 0, 0, 0, 0, 0], float)
    a = est.advantages(r, num_generations=8)                          # TRL scale_rewards="group"
    np.testing.assert_allclose(a[[0, 7]], [1.2074, -0.7244], atol=5e-5)
    a = est.advantages(r, num_generations=8, preset="verl")
    np.testing.assert_allclose(a[[0, 7]], [1.2076, -0.7246], atol=5e-5)
    a = est.advantages(r, num_generations=8, eps=1e-8, ddof=0)        # async TRL: population std
    np.testing.assert_allclose(a[[0, 7]], [1.2910, -0.7746], atol=5e-5)
    a = est.advantages(r, "dr_grpo", num_generations=8)
    np.testing.assert_allclose(a[[0, 7]], [0.625, -0.375], rtol=RTOL)
    a = est.advantages(r, "grpo", num_generations=8, scale_rewards="none")
    np.testing.assert_allclose(a[[0, 7]], [0.625, -0.375], rtol=RTOL)
    a = est.advantages(r, "rloo", num_generations=8)
    np.testing.assert_allclose(a[[0, 7]], [5 / 7, -3 / 7], rtol=RTOL)
    # exact hand computation of the TRL number
    s = np.sqrt(8 / 7 * 0.375 * 0.625)
    np.testing.assert_allclose(est.advantages(r, num_generations=8)[0], 0.625 / (s + 1e-4), rtol=RTOL)


def test_advantages_verl_order_equals_trl_order():
    rng = np.random.default_rng(106)
    B, G = 5, 4
    r = rng.integers(0, 2, B * G).astype(float)
    r[:G] = 1.0                                                       # one zero-variance group
    trl = est.advantages(r, num_generations=G, preset="verl")
    uid = np.repeat(np.array([f"u{b}" for b in range(B)]), G)
    perm = rng.permutation(B * G)
    verl = est.advantages(r[perm], index=uid[perm], preset="verl")
    np.testing.assert_allclose(verl, trl[perm], rtol=RTOL)
    assert np.all(trl[:G] == 0.0)


@pytest.mark.parametrize("kind,scale", [("grpo", "group"), ("grpo", "batch"), ("grpo", "none"),
                                        ("dr_grpo", "none"), ("rloo", "none"), ("rloo", "batch"),
                                        ("vanilla", "none")])
def test_advantages_match_naive_dict_loop(kind, scale):
    rng = np.random.default_rng(107)
    r = rng.random(24).round(1)
    idx = rng.integers(0, 5, 24)
    for eps in (1e-4, 1e-6):
        fast = est.advantages(r, kind, index=idx, scale_rewards=scale, eps=eps, singleton="raw")
        slow = est._naive_advantages(r, kind, index=idx, scale_rewards=scale, eps=eps)
        np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-10)


def test_advantages_trl_batch_scaling_by_hand():
    r = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    a = est.advantages(r, num_generations=3, scale_rewards="batch")
    grouped = np.repeat(r.reshape(2, 3).mean(1), 3)
    np.testing.assert_allclose(a, (r - grouped) / (r.std(ddof=1) + 1e-4), rtol=RTOL)


def test_advantages_estimator_consistency():
    # advantages -> estimator: (1/G) sum A_g W_g reproduces the gradient estimators
    rng = np.random.default_rng(108)
    B, G, d = 3, 6, 2
    r, s = _data(rng, lead=(B,), G=G, d=d, binary=True)
    for kind, fn in (("rloo", est.rloo), ("dr_grpo", est.dr_grpo)):
        a = est.advantages(r.reshape(-1), kind, num_generations=G).reshape(B, G)
        np.testing.assert_allclose(np.einsum("bg,bgd->bd", a, s) / G, fn(r, s), rtol=RTOL, atol=1e-15)
    a = est.advantages(r.reshape(-1), num_generations=G, preset="openrlhf").reshape(B, G)
    np.testing.assert_allclose(np.einsum("bg,bgd->bd", a, s) / G, est.std_normalized(r, s, preset="openrlhf"),
                               rtol=1e-10, atol=1e-15)


def test_advantages_singletons():
    r = np.array([0.7, 1.0, 0.0])
    idx = np.array([9, 3, 3])
    with pytest.raises(ValueError, match="single completion"):
        est.advantages(r, index=idx)
    a = est.advantages(r, index=idx, preset="verl", singleton="raw")
    np.testing.assert_allclose(a[0], 0.7 / (1 + 1e-6), rtol=RTOL)
    assert est.advantages(r, "rloo", index=idx, singleton="raw")[0] == 0.7
    assert est.advantages(r, "rloo", index=idx, singleton="zero")[0] == 0.0


# ---------------------------------------------------------------- input validation

def test_errors():
    rng = np.random.default_rng(109)
    r, s = _data(rng, lead=(2,), G=4, d=3)
    with pytest.raises(ValueError, match="group sizes differ"):
        est.grpo(r, s[:, :3])
    with pytest.raises(ValueError, match="G >= 2"):
        est.grpo(r[:, :1], s[:, :1])
    bad = r.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.vanilla(bad, s)
    with pytest.raises(ValueError, match="do not broadcast"):
        est.grpo(rng.random((3, 4)), s)
    with pytest.raises(ValueError, match="values"):
        est.ESTIMATORS["oracle"](r, s)
    with pytest.raises(ValueError, match="exactly one"):
        est.advantages(r.reshape(-1))
    with pytest.raises(ValueError, match="multiple"):
        est.advantages(np.ones(7), num_generations=2)
    with pytest.raises(ValueError, match="eps= or preset="):
        est.std_normalized(r, s, eps=1e-3, preset="trl")
    with pytest.raises(ValueError, match="dr_grpo"):
        est.advantages(np.ones(4), "dr_grpo", num_generations=2, scale_rewards="group")


def test_registry_uniform_signature():
    rng = np.random.default_rng(110)
    r, s = _data(rng, lead=(3,), G=4, d=2)
    v = rng.random(3)
    for name, fn in est.ESTIMATORS.items():
        out = fn(r, s, values=v)
        assert out.shape == (3, 2), name
    np.testing.assert_allclose(est.ESTIMATORS["oracle"](r, s, values=v), est.oracle(r, s, values=v))


@given(st.integers(1, 6), st.integers(2, 6), st.sampled_from(["grpo", "dr_grpo", "rloo"]),
       st.sampled_from([1e-4, 1e-6, 1e-9]), st.integers(0, 10_000))
def test_property_advantages_fast_equals_naive(B, G, kind, eps, seed):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 3, B * G) / 2.0                                  # ties and zero-variance groups occur
    uid = rng.permutation(np.repeat(np.arange(B), G))
    fast = est.advantages(r, kind, index=uid, eps=eps)
    np.testing.assert_allclose(fast, est._naive_advantages(r, kind, index=uid, eps=eps), rtol=1e-10, atol=1e-12)
    # group-sum identity: centred advantages sum to zero within every group
    np.testing.assert_allclose(np.bincount(uid, weights=fast), 0.0, atol=1e-9)


@given(st.integers(2, 8), st.integers(1, 4), st.integers(0, 10_000))
def test_property_estimators_fast_equal_naive(G, d, seed):
    rng = np.random.default_rng(seed)
    r, s = _data(rng, lead=(3,), G=G, d=d, binary=bool(seed % 2))
    np.testing.assert_allclose(est.grpo(r, s), est._naive_grpo_ustat(r, s), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.std_normalized(r, s, preset="verl"),
                               est._naive_std_normalized(r, s, eps=1e-6), rtol=1e-10, atol=1e-12)
