import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ustat_grpo.theory import advantages as adv
from ustat_grpo.theory import estimators as est
from ustat_grpo.theory import presets

RTOL = 1e-12


def _data(rng, lead=(3, 2), G=5, d=4, binary=False):
    r = rng.integers(0, 2, size=lead + (G,)).astype(float) if binary else rng.random(lead + (G,))
    s = rng.normal(size=lead + (G, d))
    return r, s


# ---------------------------------------------------------------- fast == naive twins


def _f32_steps(value, G, eps, std):
    """Hand-rolled float32 arithmetic of one constant group: left-to-right sum, mean, numerator.

    ``std`` is the framework's std given the float32 deviation ``d`` (a Python function of d).
    """
    x = np.float32(value)
    total = np.float32(0.0)
    for _ in range(G):
        total = np.float32(total + x)
    mean = np.float32(total / np.float32(G))
    d = np.float32(x - mean)
    return float(d), float(np.float32(d / np.float32(np.float32(std(float(d))) + np.float32(eps))))



def test_advantages_worked_example_g8():
    r = np.array([1, 1, 1, 0, 0, 0, 0, 0], float)
    a = adv.advantages(r, num_generations=8)                          # TRL scale_rewards="group"
    np.testing.assert_allclose(a[[0, 7]], [1.2074, -0.7244], atol=5e-5)
    a = adv.advantages(r, num_generations=8, preset="verl_grpo")
    np.testing.assert_allclose(a[[0, 7]], [1.2076, -0.7246], atol=5e-5)
    a = adv.advantages(r, num_generations=8, preset="trl_async_grpo")  # async TRL: population std
    np.testing.assert_allclose(a[[0, 7]], [1.2910, -0.7746], atol=5e-5)
    a = adv.advantages(r, num_generations=8, estimator="std_normalized", eps=1e-8, ddof=0)
    np.testing.assert_allclose(a[[0, 7]], [1.2910, -0.7746], atol=5e-5)
    a = adv.advantages(r, preset="dr_grpo", num_generations=8)
    np.testing.assert_allclose(a[[0, 7]], [0.625, -0.375], rtol=RTOL)
    a = adv.advantages(r, estimator="group_mean", num_generations=8)
    np.testing.assert_allclose(a[[0, 7]], [0.625, -0.375], rtol=RTOL)
    a = adv.advantages(r, preset="rloo", num_generations=8)
    np.testing.assert_allclose(a[[0, 7]], [5 / 7, -3 / 7], rtol=RTOL)
    # exact hand computation of the TRL number
    s = np.sqrt(8 / 7 * 0.375 * 0.625)
    np.testing.assert_allclose(adv.advantages(r, num_generations=8)[0], 0.625 / (s + 1e-4), rtol=RTOL)


def test_advantages_verl_order_equals_trl_order():
    rng = np.random.default_rng(106)
    B, G = 5, 4
    r = rng.integers(0, 2, B * G).astype(float)
    r[:G] = 1.0                                                       # one zero-variance group
    trl = adv.advantages(r, num_generations=G, preset="verl_grpo")
    uid = np.repeat(np.array([f"u{b}" for b in range(B)]), G)
    perm = rng.permutation(B * G)
    verl = adv.advantages(r[perm], index=uid[perm], preset="verl_grpo")
    np.testing.assert_allclose(verl, trl[perm], rtol=RTOL)
    assert np.all(trl[:G] == 0.0)


@pytest.mark.parametrize("name,scale", [("std_normalized", "group"), ("group_mean", "batch"),
                                        ("group_mean", "none"), ("leave_one_out", "none"),
                                        ("leave_one_out", "batch"), ("vanilla", "none"), ("vanilla", "batch")])
def test_advantages_match_naive_dict_loop(name, scale):
    rng = np.random.default_rng(107)
    r = rng.random(24).round(1)
    idx = rng.integers(0, 5, 24)
    for eps in (1e-4, 1e-6):
        fast = adv.advantages(r, estimator=name, index=idx, scale_rewards=scale, eps=eps, singleton="raw")
        slow = adv._naive_advantages(r, name, index=idx, scale_rewards=scale, eps=eps)
        np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-10)


def test_advantages_trl_batch_scaling_by_hand():
    r = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    a = adv.advantages(r, num_generations=3, preset="trl_grpo_batch")
    grouped = np.repeat(r.reshape(2, 3).mean(1), 3)
    np.testing.assert_allclose(a, (r - grouped) / (r.std(ddof=1) + 1e-4), rtol=RTOL)


def test_advantages_estimator_consistency():
    # advantages -> estimator: (1/G) sum A_g W_g reproduces the gradient estimators
    rng = np.random.default_rng(108)
    B, G, d = 3, 6, 2
    r, s = _data(rng, lead=(B,), G=G, d=d, binary=True)
    for preset, fn in (("rloo", est.leave_one_out), ("dr_grpo", est.group_mean)):
        a = adv.advantages(r.reshape(-1), preset=preset, num_generations=G).reshape(B, G)
        np.testing.assert_allclose(np.einsum("bg,bgd->bd", a, s) / G, fn(r, s), rtol=RTOL, atol=1e-15)
    a = adv.advantages(r.reshape(-1), num_generations=G, preset="openrlhf_group_norm").reshape(B, G)
    np.testing.assert_allclose(np.einsum("bg,bgd->bd", a, s) / G,
                               est.std_normalized(r, s, preset="openrlhf_group_norm"),
                               rtol=1e-10, atol=1e-15)


def test_advantages_singletons():
    r = np.array([0.7, 1.0, 0.0])
    idx = np.array([9, 3, 3])
    with pytest.raises(ValueError, match="single completion"):
        adv.advantages(r, index=idx)
    a = adv.advantages(r, index=idx, preset="verl_grpo", singleton="raw")
    np.testing.assert_allclose(a[0], 0.7 / (1 + 1e-6), rtol=RTOL)
    assert adv.advantages(r, preset="verl_rloo", index=idx, singleton="raw")[0] == 0.7
    assert adv.advantages(r, preset="verl_rloo", index=idx, singleton="zero")[0] == 0.0


# ---------------------------------------------------------------- input validation


def test_errors():
    rng = np.random.default_rng(109)
    r, s = _data(rng, lead=(2,), G=4, d=3)
    with pytest.raises(ValueError, match="group sizes differ"):
        est.leave_one_out(r, s[:, :3])
    with pytest.raises(ValueError, match="G >= 2"):
        est.leave_one_out(r[:, :1], s[:, :1])
    bad = r.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.vanilla(bad, s)
    with pytest.raises(ValueError, match="do not broadcast"):
        est.leave_one_out(rng.random((3, 4)), s)
    with pytest.raises(ValueError, match="values"):
        est.ESTIMATORS["oracle"](r, s)
    with pytest.raises(ValueError, match="exactly one"):
        adv.advantages(r.reshape(-1))
    with pytest.raises(ValueError, match="multiple"):
        adv.advantages(np.ones(7), num_generations=2)
    with pytest.raises(ValueError, match="eps= or preset="):
        est.std_normalized(r, s, eps=1e-3, preset="trl_grpo")
    with pytest.raises(ValueError, match="is the leave_one_out estimator"):
        est.std_normalized(r, s, preset="rloo")
    with pytest.raises(ValueError, match="unknown preset"):
        adv.advantages(np.ones(4), preset="trl", num_generations=2)
    with pytest.raises(ValueError, match="not both"):
        adv.advantages(np.ones(4), preset="grpo", estimator="group_mean", num_generations=2)
    with pytest.raises(ValueError, match="preset 'verl_grpo' .* has no scale_rewards='batch'"):
        adv.advantages(np.ones(4), preset="verl_grpo", num_generations=2, scale_rewards="batch")
    with pytest.raises(ValueError, match="estimator='std_normalized' divides by the group std"):
        adv.advantages(np.ones(4), estimator="std_normalized", num_generations=2, scale_rewards="none")
    with pytest.raises(ValueError, match="leave-one-out mean"):
        adv.advantages(np.ones(4), preset="paper", num_generations=2)
    with pytest.raises(ValueError, match="framework preset"):
        adv.advantages(np.ones(4), preset="rloo", num_generations=2, precision="float32")
    with pytest.raises(ValueError, match="precision"):
        adv.advantages(np.ones(4), num_generations=2, precision="float16")


@given(st.integers(1, 6), st.integers(2, 6), st.sampled_from(["std_normalized", "group_mean", "leave_one_out"]),
       st.sampled_from([1e-4, 1e-6, 1e-9]), st.integers(0, 10_000))
def test_property_advantages_fast_equals_naive(B, G, name, eps, seed):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 3, B * G) / 2.0                                  # ties and zero-variance groups occur
    uid = rng.permutation(np.repeat(np.arange(B), G))
    fast = adv.advantages(r, estimator=name, index=uid, eps=eps)
    np.testing.assert_allclose(fast, adv._naive_advantages(r, name, index=uid, eps=eps), rtol=1e-10, atol=1e-12)
    # group-sum identity: centred advantages sum to zero within every group
    np.testing.assert_allclose(np.bincount(uid, weights=fast), 0.0, atol=1e-9)


def test_float32_constant_groups_reproduce_framework_noise():
    # groups of six equal rewards not exact in binary: the float32 mean misses by one ulp
    r = np.array([0.3] * 6 + [0.9] * 6)
    ulp3, ulp9 = 2.0 ** -25, 2.0 ** -24                                 # spacing of float32 at 0.3 and 0.9
    # OpenRLHF group_norm: Welford std is exactly 0, so A = d / 1e-9
    a = adv.advantages(r, preset="openrlhf_group_norm", num_generations=6, precision="float32")
    assert a.dtype == np.float32
    d3, ref3 = _f32_steps(0.3, 6, 1e-9, lambda d: 0.0)
    d9, ref9 = _f32_steps(0.9, 6, 1e-9, lambda d: 0.0)
    assert (d3, d9) == (ulp3, -ulp9)
    np.testing.assert_array_equal(a, [ref3] * 6 + [ref9] * 6)
    np.testing.assert_allclose(a[[0, 6]], [ulp3 / 1e-9, -ulp9 / 1e-9], rtol=1e-6)   # +29.8, -59.6
    # verl grpo: two-pass std in float64 around the float32 mean = |d| sqrt(G/(G-1))
    a = adv.advantages(r, preset="verl_grpo", num_generations=6, precision="float32")
    bessel = lambda d: abs(d) * np.sqrt(6 / 5)                          # noqa: E731
    np.testing.assert_array_equal(a[[0, 6]], [_f32_steps(0.3, 6, 1e-6, bessel)[1], _f32_steps(0.9, 6, 1e-6, bessel)[1]])
    np.testing.assert_allclose(a[[0, 6]], [ulp3 / (1e-6 + ulp3 * np.sqrt(1.2)), -ulp9 / (1e-6 + ulp9 * np.sqrt(1.2))],
                               rtol=1e-5)                               # +0.029, -0.056
    # TRL nanstd: the same std, in float32; eps 1e-4
    a = adv.advantages(r, preset="grpo", num_generations=6, precision="float32")
    np.testing.assert_allclose(a[[0, 6]], [ulp3 / (1e-4 + ulp3 * np.sqrt(1.2)), -ulp9 / (1e-4 + ulp9 * np.sqrt(1.2))],
                               rtol=1e-5)                               # +3e-4, -6e-4
    # the exact path gives 0, and so does float32 for rewards exact in binary
    for preset in ("grpo", "verl_grpo", "openrlhf_group_norm"):
        assert np.all(adv.advantages(r, preset=preset, num_generations=6) == 0.0)
        assert np.all(adv.advantages([0.5] * 6 + [1.0] * 6, preset=preset, num_generations=6,
                                     precision="float32") == 0.0)


def test_float32_informative_groups_close_to_exact_and_index_order():
    rng = np.random.default_rng(111)
    B, G = 6, 8
    r = rng.integers(0, 5, B * G) / 4.0
    r[:G] = 0.3                                                         # one constant group
    uid = np.repeat(np.arange(B), G)
    perm = rng.permutation(B * G)
    for preset in ("grpo", "verl_grpo", "openrlhf_group_norm"):
        exact = adv.advantages(r, preset=preset, num_generations=G)
        f32 = adv.advantages(r, preset=preset, num_generations=G, precision="float32")
        np.testing.assert_allclose(f32[G:], exact[G:], rtol=1e-5, atol=1e-6)
        # verl order: rows of a group in the same relative order give the same bits
        order = np.argsort(uid[perm], kind="stable")
        np.testing.assert_array_equal(
            adv.advantages(r[perm], preset=preset, index=uid[perm], precision="float32")[order],
            adv.advantages(r[perm][order], preset=preset, num_generations=G, precision="float32"))


def test_float32_matches_torch_framework_code():
    torch = pytest.importorskip("torch")
    r = np.array([0.3] * 6 + [0.9] * 6 + [1, 0, 1, 1, 0, 0.5] + [0.1] * 6, dtype=np.float32)
    t = torch.tensor(r)
    g = t.view(-1, 6)
    openrlhf = ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + 1e-9)).reshape(-1)
    verl = torch.cat([(row - torch.mean(row)) / (torch.std(row) + 1e-6) for row in g])

    def nanstd(x):                                                      # trl/trainer/utils.py
        var = torch.nanmean((x - torch.nanmean(x, keepdim=True)) ** 2)
        count = torch.sum(~torch.isnan(x))
        return torch.sqrt(var * (count / (count - 1)))

    trl = (t - g.mean(dim=1).repeat_interleave(6)) / (torch.stack([nanstd(row) for row in g]).repeat_interleave(6) + 1e-4)
    for preset, ref in (("openrlhf_group_norm", openrlhf), ("verl_grpo", verl), ("grpo", trl)):
        np.testing.assert_allclose(adv.advantages(r, preset=preset, num_generations=6, precision="float32"),
                                   ref.numpy(), rtol=2e-6, atol=0, err_msg=preset)


def test_rounding_noise_groups():
    r = np.array([0.3] * 6 + [1, 0, 1, 0, 1, 0] + [0.9] * 6 + [1.0] * 6)
    res = adv.rounding_noise_groups(r, preset="openrlhf_group_norm", num_generations=6)
    assert res.constant.tolist() == [True, False, True, True]
    assert res.flagged.tolist() == [0, 2]
    np.testing.assert_allclose(res.max_noise, 2.0 ** -24 / 1e-9, rtol=1e-6)
    assert "2 group(s) above" in str(res) and res.to_dict()["flagged"] == [0, 2]
    # TRL's larger eps keeps the noise below the default threshold: nothing flagged
    trl = adv.rounding_noise_groups(r, num_generations=6)
    assert trl.preset == "grpo" and trl.flagged.size == 0 and 5e-4 < trl.max_noise < 7e-4
    # verl order: labels are the prompt ids
    uid = np.repeat(np.array(["d", "c", "b", "a"]), 6)
    res = adv.rounding_noise_groups(r, preset="verl_grpo", index=uid)
    assert res.flagged.tolist() == ["b", "d"]
    json_safe = res.to_dict()
    assert json_safe["groups"] == ["a", "b", "c", "d"]


def test_presets_point_to_canonical_estimators():
    for name, p in presets.PRESETS.items():
        assert p.estimator in est.ESTIMATORS, name
        assert (p.estimator == "std_normalized") == (p.scale_rewards == "group"), name
    assert not hasattr(presets, "RENAMED")               # "grpo" names the TRL preset only, no legacy label
    trl = [p for p in presets.PRESETS.values() if p.source.startswith("TRL")]
    assert len(trl) >= 4 and all(p.eps == presets.TRL_EPS == 1e-4 for p in trl)
    # the framework word "grpo" is the std-normalised estimator as TRL ships it
    assert presets.PRESETS["grpo"].estimator == "std_normalized" and presets.PRESETS["rloo"].estimator == "leave_one_out"


# ---------------------------------------------------------------- framework option names


_R6 = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1], float)          # B=2, G=6
_DEV6 = np.array([.5, -.5, -.5, .5, .5, -.5] + [-1 / 6] * 5 + [5 / 6])  # r - group mean, by hand
_S6 = np.repeat([np.sqrt(6 * 0.25 / 5), np.sqrt(1 / 6)], 6)            # Bessel group std, by hand
_SB6 = np.sqrt(24 / 99)                                                 # Bessel std of all 12 rewards


@pytest.mark.parametrize("scale, expected", [
    ("none", _DEV6), (False, _DEV6),                                  # Dr. GRPO: no std scaling
    ("group", _DEV6 / (_S6 + 1e-4)), (True, _DEV6 / (_S6 + 1e-4)),    # GRPO (TRL default)
    ("batch", _DEV6 / (_SB6 + 1e-4)),                                 # LitePPO
])
def test_trl_scale_rewards_means_what_it_means_in_trl(scale, expected):
    # issue 20: scale_rewards="none" raised "scale_rewards='group' is the std_normalized estimator"
    a = adv.advantages(_R6, num_generations=6, scale_rewards=scale)
    np.testing.assert_allclose(a, expected, rtol=1e-12)
    np.testing.assert_allclose(adv.advantages(_R6, preset="grpo", num_generations=6, scale_rewards=scale),
                               expected, rtol=1e-12)
    # a preset of TRL's GRPOTrainer is a GRPOConfig: scale_rewards overrides its scaling
    np.testing.assert_allclose(adv.advantages(_R6, preset="dr_grpo", num_generations=6, scale_rewards=scale),
                               expected, rtol=1e-12)
    trl = presets.framework_preset("trl", scale_rewards=scale)
    np.testing.assert_allclose(adv.advantages(_R6, preset=trl, num_generations=6), expected, rtol=1e-12)


def test_estimator_with_scale_rewards_is_trl_centring_plus_scaling():
    np.testing.assert_allclose(adv.advantages(_R6, estimator="group_mean", num_generations=6, scale_rewards="group"),
                               _DEV6 / (_S6 + 1e-4), rtol=1e-12)
    np.testing.assert_allclose(adv.advantages(_R6, estimator="group_mean", num_generations=6, scale_rewards=False),
                               _DEV6, rtol=1e-12)
    loo = _DEV6 * 6 / 5                                               # RLOO: G/(G-1) (r - mean)
    np.testing.assert_allclose(adv.advantages(_R6, preset="rloo", num_generations=6), loo, rtol=1e-12)
    # RLOOConfig.normalize_advantages=True: batch re-standardisation of the LOO advantages
    np.testing.assert_allclose(adv.advantages(_R6, preset="rloo", num_generations=6, scale_rewards="batch"),
                               (loo - loo.mean()) / (loo.std(ddof=1) + 1e-4), rtol=1e-12)
    for est_name in ("leave_one_out", "vanilla"):
        with pytest.raises(ValueError, match=f"estimator='{est_name}' takes scale_rewards 'none' or 'batch'"):
            adv.advantages(_R6, estimator=est_name, num_generations=6, scale_rewards="group")
    with pytest.raises(ValueError, match="scale_rewards must be 'group', 'batch', 'none', True or False"):
        adv.advantages(_R6, num_generations=6, scale_rewards="std")


def test_verl_and_openrlhf_option_names():
    fp = presets.framework_preset
    cases = [
        (fp("verl"), _DEV6 / (_S6 + 1e-6)),
        (fp("verl", adv_estimator="grpo", norm_adv_by_std_in_grpo=True), _DEV6 / (_S6 + 1e-6)),
        (fp("verl", adv_estimator="grpo", norm_adv_by_std_in_grpo=False), _DEV6),
        # verl's ray_trainer passes norm_adv_by_std_in_grpo to the grpo branch only
        (fp("verl", adv_estimator="grpo_vectorized", norm_adv_by_std_in_grpo=False), _DEV6 / (_S6 + 1e-6)),
        (fp("verl", adv_estimator="rloo"), _DEV6 * 6 / 5),
        (fp("verl", adv_estimator="rloo_vectorized"), _DEV6 * 6 / 5),
        (fp("openrlhf"), _DEV6 / (_S6 + 1e-9)),
        (fp("openrlhf", advantage_estimator="group_norm"), _DEV6 / (_S6 + 1e-9)),
        (fp("openrlhf", advantage_estimator="dr_grpo"), _DEV6),
        (fp("openrlhf", advantage_estimator="rloo"), _DEV6 * 6 / 5),
        (fp("trl", trainer="RLOOTrainer"), _DEV6 * 6 / 5),
    ]
    for preset, expected in cases:
        np.testing.assert_allclose(adv.advantages(_R6, preset=preset, num_generations=6), expected,
                                   rtol=1e-12, err_msg=preset)
    # the verl switch read through TRL's word on a verl preset
    np.testing.assert_allclose(adv.advantages(_R6, preset="verl_grpo", num_generations=6, scale_rewards=False),
                               _DEV6, rtol=1e-12)
    with pytest.raises(ValueError, match="adv_estimator='gae'"):
        fp("verl", adv_estimator="gae")
    with pytest.raises(ValueError, match="advantage_estimator='reinforce'"):
        fp("openrlhf", advantage_estimator="reinforce")
    with pytest.raises(ValueError, match="unknown option"):
        fp("trl", norm_adv_by_std_in_grpo=False)
    with pytest.raises(ValueError, match="has no scale_rewards='group'"):
        presets.with_scale_rewards("verl_rloo", "group")
