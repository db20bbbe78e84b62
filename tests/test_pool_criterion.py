"""The scale-free criterion: exact enumeration (scale_free.py) and its pool estimate (pool.compare_estimators)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ustat_grpo.theory import estimators as est
from ustat_grpo.theory import scale_free as sf
from ustat_grpo.policies.bandits import SoftmaxBandit
from ustat_grpo.theory.mse import exact_mse
from ustat_grpo.scaling.pool import _cross, _pool_stats, compare_estimators, pool_mse
from paper_checks.check_scale_free import built_bandit
from ustat_grpo.core.testing import bonferroni_z

GS = [2, 4, 8, 16]
N = 64


def _bandit(scale=1.0):
    """Four prompts, two arms, binary rewards (times ``scale``): the paper check's bandit."""
    return built_bandit(scale)


def _pool(policy, P, M, seed):
    s = policy.sample(P, M, rng=np.random.default_rng(seed))
    return s.rewards, s.scores


# ------------------------------------------------------------------------------------ exact

def test_multiset_enumeration_equals_brute_force_over_ordered_groups():
    b = _bandit()
    for name in ("leave_one_out", "std_normalized", "group_mean"):
        for G in (2, 3, 4):
            mean, m2 = sf.exact_group_moments(b, name, G)
            for x in range(b.num_contexts):
                p, z, w = sf._atoms(b, x)
                idx = np.array(list(itertools.product(range(len(p)), repeat=G)))      # (n^G, G) ordered
                wt = np.prod(p[idx], 1)
                v = sf.ESTIMATOR_FUNCTIONS[name](z[idx], w[idx])
                np.testing.assert_allclose(mean[x], wt @ v, rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(m2[x], wt @ (v * v).sum(1), rtol=1e-12, atol=1e-15)


def test_exact_leave_one_out_criterion_is_the_exact_mse_law_transformed():
    b = _bandit()
    c = sf.exact_criterion(b, "leave_one_out", GS, budget=N)
    mse = np.array([exact_mse(b.moments(), "leave_one_out", G, N // G).total for G in GS]).ravel()
    g2 = b.gradient() @ b.gradient()
    np.testing.assert_allclose(c["mse"], mse, rtol=1e-10)
    np.testing.assert_allclose(c["criterion"], mse / (g2 + mse), rtol=1e-10)
    np.testing.assert_allclose(c["cosine"], 1.0, rtol=1e-12)
    assert list(np.argsort(c["criterion"])) == list(np.argsort(mse))                  # same ranking of G


def test_exact_group_mean_criterion_is_leave_one_outs_while_its_raw_mse_is_not():
    b = _bandit()
    loo, dr = (sf.exact_criterion(b, e, GS, budget=N) for e in ("leave_one_out", "group_mean"))
    np.testing.assert_allclose(dr["criterion"], loo["criterion"], rtol=1e-12)
    assert not np.allclose(dr["mse"], loo["mse"], rtol=1e-3)                          # control: raw MSE differs


@pytest.mark.parametrize("name", ["leave_one_out", "group_mean", "std_normalized_noeps"])
def test_exact_criterion_is_invariant_to_the_reward_scale(name):
    one, ten = (sf.exact_criterion(_bandit(k), name, GS, budget=N) for k in (1.0, 10.0))
    np.testing.assert_allclose(ten["criterion"], one["criterion"], rtol=1e-10)
    if name == "std_normalized_noeps":                                                # raw MSE is not
        assert np.argmin(one["mse"]) != np.argmin(ten["mse"])


def test_raw_mse_picks_a_g_that_the_scale_free_criterion_rejects_for_std_normalised():
    c = sf.exact_criterion(_bandit(), "std_normalized", GS + [32], budget=N)
    raw, best = int(np.argmin(c["mse"])), int(np.argmin(c["criterion"]))
    assert (GS + [32])[raw] == 2 and (GS + [32])[best] == 4
    assert c["criterion"][raw] > 1.1 * c["criterion"][best]


def test_std_normalised_expansion_mean_and_covariance():
    b = SoftmaxBandit([0.3, 0.8], theta=[0.2, -0.4])                                   # binary rewards, one prompt
    e = sf.std_normalized_expansion(b)
    p = b.values()[0]
    g, s = b.gradient(), np.sqrt(p * (1 - p))
    np.testing.assert_allclose(e["limit"][0], g / s, rtol=1e-12)
    np.testing.assert_allclose(e["beta"][0], -(g / s) * (1 + (1 - 2 * p) ** 2 / (8 * p * (1 - p))), rtol=1e-10)
    err_mean, err_cov = [], []
    for G in (16, 32, 64):
        mean, m2 = sf.exact_group_moments(b, "std_normalized_noeps", G)
        err_mean.append(np.abs(G * (mean[0] - e["limit"][0]) - e["beta"][0]).max())
        err_cov.append(abs(G * (m2[0] - mean[0] @ mean[0]) - np.trace(e["cov_psi"][0])))
    for errs in (err_mean, err_cov):                                                  # remainder O(1/G)
        assert 0.35 < errs[1] / errs[0] < 0.65 and 0.35 < errs[2] / errs[1] < 0.65, errs


# ------------------------------------------------------------------------------------ pool

@pytest.fixture(scope="module")
def pool():
    return _pool(_bandit(), 300, 16, 7)


def test_pool_leave_one_out_with_all_groups_is_pool_mse_transformed(pool):
    r, s = pool
    small = [2, 3]                                                                    # C(16, G) <= num_groups: complete
    c = compare_estimators(r, s, budget=N, num_generations=small, estimators=["leave_one_out"], num_groups=1000)
    m = pool_mse(r, s, budget=N, num_generations=small, estimators=["leave_one_out"], num_groups=1000)
    g2 = _cross(est.leave_one_out(r, s))[0]
    np.testing.assert_allclose(c.raw_mse[0], m.mse[0], rtol=1e-10)
    np.testing.assert_allclose(c.criterion[0], m.mse[0] / (g2 + m.mse[0]), rtol=1e-10)


def test_pool_criterion_ranks_leave_one_out_as_pool_mse(pool):
    r, s = pool
    c = compare_estimators(r, s, budget=N, num_generations=GS, estimators=["leave_one_out"], rng=1)
    m = pool_mse(r, s, budget=N, num_generations=GS, estimators=["leave_one_out"], rng=1)
    assert list(np.argsort(c.criterion[0])) == list(np.argsort(m.mse[0]))


def test_pool_group_mean_gets_exactly_leave_one_outs_g(pool):
    r, s = pool
    c = compare_estimators(r, s, budget=N, num_generations=GS, estimators=["leave_one_out", "group_mean"], rng=2)
    np.testing.assert_allclose(c.criterion[1], c.criterion[0], rtol=1e-10)
    np.testing.assert_allclose(c.criterion_se[1], c.criterion_se[0], rtol=1e-8)
    assert c.recommended["group_mean"] == {**c.recommended["leave_one_out"],
                                        "raw_mse_num_generations": c.recommended["group_mean"]["raw_mse_num_generations"]}
    assert c.agree and "disagree" not in c.note


def test_pool_criterion_is_invariant_to_scaling_rewards_and_estimator(pool):
    r, s = pool
    noeps = sf.ESTIMATOR_FUNCTIONS["std_normalized_noeps"]
    kw = dict(budget=N, num_generations=GS, rng=3)
    base = compare_estimators(r, s, estimators=["leave_one_out", "group_mean", noeps], **kw)
    tenx = compare_estimators(10 * r, s, estimators=["leave_one_out", "group_mean", noeps], **kw)
    np.testing.assert_allclose(tenx.criterion, base.criterion, rtol=1e-9)
    np.testing.assert_allclose(tenx.criterion_se, base.criterion_se, rtol=1e-7)
    scaled = compare_estimators(r, s, estimators=[lambda a, b: 3.0 * noeps(a, b)], **kw)
    np.testing.assert_allclose(scaled.criterion[0], base.criterion[2], rtol=1e-9)
    assert not np.allclose(tenx.raw_mse, base.raw_mse, rtol=1e-2)                     # control: raw MSE is not


def test_pool_criterion_matches_exact_enumeration_within_z_bound():
    """Monte Carlo: 12 independent pools; per (estimator, G) the mean pool estimate vs the exact R."""
    b = _bandit()
    names = ["leave_one_out", "std_normalized"]
    exact = np.array([sf.exact_criterion(b, e, GS, budget=N)["criterion"] for e in names])   # (E, K)
    est_ = np.array([compare_estimators(*_pool(b, 200, 16, 100 + i), budget=N, num_generations=GS,
                                        estimators=names, rng=i).criterion for i in range(12)])  # (12, E, K)
    z = (est_.mean(0) - exact) / (est_.std(0, ddof=1) / np.sqrt(len(est_)))
    bound = bonferroni_z(1e-3, m=z.size)
    assert np.abs(z).max() < bound, z
    wrong = exact / exact.min(1, keepdims=True) * exact.mean()                        # control: a distorted truth
    assert np.abs((est_.mean(0) - wrong) / (est_.std(0, ddof=1) / np.sqrt(len(est_)))).max() > bound


def test_comparison_result_serialises_and_reports_disagreement(pool):
    r, s = pool
    v = np.array([1.0, -1.0, 0.5])

    def biased(a, b):                                                                  # direction bias ~ 1/G^2
        return est.leave_one_out(a, b) + 5.0 * v / a.shape[-1] ** 2

    c = compare_estimators(r, s, budget=N, num_generations=GS, estimators=["leave_one_out", biased], rng=4)
    assert c.recommended["biased"]["num_generations"] == 16
    assert not c.agree and c.note.startswith("estimators disagree")
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["recommended"]["leave_one_out"]["interval"] == list(c.recommended["leave_one_out"]["interval"])
    assert str(c) == c.summary() and "raw MSE would pick" in c.summary()
    flat = compare_estimators(np.zeros_like(r), s, budget=N, num_generations=GS, estimators=["leave_one_out"])
    assert json.loads(json.dumps(flat.to_dict(), allow_nan=False))["criterion"][0][0] == "nan"
    assert flat.recommended["leave_one_out"]["num_generations"] is None


def test_shared_pool_statistics_are_unbiased_u_statistics(pool):
    r, s = pool
    target, per_g = _pool_stats(r[:5], s[:5], np.array([2]), [est.leave_one_out], 1000, 0)
    m2, fbar = per_g[0][0]
    np.testing.assert_allclose(fbar, target, rtol=1e-10, atol=1e-14)                  # mean of U_2 over pairs = U_M
    pairs = list(itertools.combinations(range(16), 2))
    naive = np.mean([(est.leave_one_out(r[0, list(q)], s[0, list(q)]) ** 2).sum() for q in pairs])
    assert m2[0] == pytest.approx(naive, rel=1e-12)


def test_bad_arguments():
    r, s = np.zeros((10, 8)), np.zeros((10, 8, 2))
    with pytest.raises(ValueError, match="unknown estimator"):
        compare_estimators(r, s, budget=16, estimators=["nope"])
    with pytest.raises(ValueError, match="group sizes"):
        compare_estimators(r, s, budget=16, num_generations=[16])
    with pytest.raises(ValueError, match="level"):
        compare_estimators(r, s, budget=16, level=1.5)
