import numpy as np
import pytest

from ustat_grpo.theory import estimators as est
from ustat_grpo.policies.bandits import ContextualSoftmaxBandit, GaussianPolicyBandit, SoftmaxBandit
from ustat_grpo.theory.mse import (CONSTANT_NAMES, constants, enumerate_mse, exact_mse, greensmith_baseline, group_outcomes,
                            MSEDecomposition, paper_constants)
from ustat_grpo.core.testing import assert_mc_close, bonferroni_z

ALL = ("leave_one_out", "vanilla", "oracle", "group_mean", "greensmith")


def _policies():
    rng = np.random.default_rng(301)
    yield SoftmaxBandit([0.1, 0.5, 0.9], theta=[0.3, -0.2, 0.1])
    yield SoftmaxBandit(rewards=[0.0, 1.5, 2.0], theta=[1.0, 0.0, -1.0])
    yield SoftmaxBandit(reward_values=[[0.0, 2.0], [0.5, 1.5], [0.2, 0.2]],
                        reward_probs=[[0.3, 0.7], [0.5, 0.5], [0.5, 0.5]], theta=[0.2, -0.4, 0.9])
    yield ContextualSoftmaxBandit(rng.normal(size=(3, 2, 2)), success_probs=rng.random((3, 2)),
                                  prompt_probs=[0.2, 0.3, 0.5], theta=[0.4, -0.7])


@pytest.mark.parametrize("pol", list(_policies()))
def test_exact_mse_equals_enumeration(pol):
    m = pol.moments()
    for G in (2, 3, 4):
        for name in ALL:
            e = enumerate_mse(pol, name, G)
            x = exact_mse(m, name, G, covariance=True)
            np.testing.assert_allclose(x.total, e.mse, rtol=1e-10, atol=1e-14, err_msg=f"{name} G={G}")
            np.testing.assert_allclose(x.covariance, e.covariance, rtol=1e-9, atol=1e-14, err_msg=name)
        C = np.linspace(0.1, 0.9, m.num_contexts)
        e = enumerate_mse(pol, "prompt_baseline", G, baseline=C)
        x = exact_mse(m, "prompt_baseline", G, baseline=C, covariance=True)
        np.testing.assert_allclose(x.total, e.mse, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(x.covariance, e.covariance, rtol=1e-9, atol=1e-14)


def test_enumeration_detects_wrong_residual():
    # negative control: the paper's 1/G^2 order written as the exact residual disagrees with enumeration
    pol = next(_policies())
    m = pol.moments()
    x = exact_mse(m, "leave_one_out", 3)
    wrong = x.oracle_term + x.residual * (3 - 1) / 3                  # (s2 trI + ||g||^2)/G^2
    assert not np.allclose(wrong, enumerate_mse(pol, "leave_one_out", 3).mse, rtol=1e-3)


def test_unbiasedness_and_group_mean_bias_by_enumeration():
    pol = next(_policies())
    m = pol.moments()
    for G in (2, 5):
        for name in ("leave_one_out", "vanilla", "oracle", "greensmith"):
            np.testing.assert_allclose(enumerate_mse(pol, name, G).mean, m.grad, atol=1e-14)
        np.testing.assert_allclose(enumerate_mse(pol, "group_mean", G).mean, (G - 1) / G * m.grad, atol=1e-14)


def test_theorem2_closed_forms():
    m = SoftmaxBandit([0.2, 0.6, 0.7, 0.95], theta=[0.5, -0.5, 0.2, 0.1]).moments()
    trI, trS, g2 = np.trace(m.fisher[0]), np.trace(m.sigma_oracle[0]), m.grad[0] @ m.grad[0]
    for G in (2, 7, 64):
        np.testing.assert_allclose(exact_mse(m, "leave_one_out", G).total, trS / G + (m.sigma2 * trI + g2) / (G * (G - 1)),
                                   rtol=1e-13)
        np.testing.assert_allclose(exact_mse(m, "vanilla", G).total,
                                   (np.trace(m.second_moment_zw[0]) - g2) / G, rtol=1e-12)
        c = (G - 1) / G
        np.testing.assert_allclose(exact_mse(m, "group_mean", G).total,
                                   c * c * exact_mse(m, "leave_one_out", G).total + g2 / G ** 2, rtol=1e-13)


def _pair_enumeration_minibatch_mse(pol, name, G):
    """Brute force over B = 2 prompts: every (prompt, group) pair, estimator = mean over the two."""
    m = pol.moments()
    outs = group_outcomes(pol, G)
    f = pol.prompt_probs
    gbar = f @ m.grad
    probs, ests = [], []
    for x, (prob, r, s) in enumerate(outs):
        probs.append(f[x] * prob)
        ests.append(est.ESTIMATORS[name](r, s, values=np.full(len(prob), m.value[x])))
    probs, ests = np.concatenate(probs), np.concatenate(ests)            # (n,), (n, d)
    mean2 = 0.5 * (ests[:, None, :] + ests[None, :, :])                  # (n, n, d)
    err = ((mean2 - gbar) ** 2).sum(-1)
    return float(probs @ err @ probs)


@pytest.mark.parametrize("name", ["leave_one_out", "vanilla", "oracle", "group_mean"])
def test_prop3_minibatch_by_pair_enumeration(name):
    rng = np.random.default_rng(302)
    pol = ContextualSoftmaxBandit(rng.normal(size=(3, 2, 2)), success_probs=rng.random((3, 2)),
                                  prompt_probs=[0.2, 0.3, 0.5], theta=[0.4, -0.7])
    for G in (2, 3):
        brute = _pair_enumeration_minibatch_mse(pol, name, G)
        np.testing.assert_allclose(exact_mse(pol.moments(), name, G, 2).total, brute, rtol=1e-10)


def test_constants_reproduce_prop3():
    rng = np.random.default_rng(303)
    pol = ContextualSoftmaxBandit(rng.normal(size=(5, 4, 3)), success_probs=rng.random((5, 4)),
                                  theta=rng.normal(size=3))
    m = pol.moments()
    A1, A2, A3 = constants(m)
    assert A1 > 0 and A2 > 0 and A3 > 0
    for B, G in ((1, 2), (4, 4), (2, 16), (8, 3)):
        d = exact_mse(m, "leave_one_out", G, B, covariance=True)
        np.testing.assert_allclose(d.total, A1 / B + A2 / (B * G) + A3 / (B * G * (G - 1)), rtol=1e-13)
        np.testing.assert_allclose(np.trace(d.covariance), d.total, rtol=1e-12)
        o = exact_mse(m, "oracle", G, B)
        np.testing.assert_allclose(o.total, A1 / B + A2 / (B * G), rtol=1e-13)
        gm = exact_mse(m, "group_mean", G, B, covariance=True)
        np.testing.assert_allclose(np.trace(gm.covariance) + gm.bias_squared, gm.total, rtol=1e-12)


def test_greensmith_minimises_over_constant_baselines():
    pol = SoftmaxBandit([0.05, 0.3, 0.95], theta=[1.5, 0.0, -1.0])
    m = pol.moments()
    Cstar = greensmith_baseline(m)
    grid = np.linspace(-1, 2, 3001)
    vals = [exact_mse(m, "prompt_baseline", 4, baseline=[c]).total[0] for c in grid]
    best = exact_mse(m, "greensmith", 4).total[0]
    assert best <= min(vals) + 1e-15
    assert abs(grid[int(np.argmin(vals))] - Cstar[0]) <= 1e-3
    assert best < exact_mse(m, "oracle", 4).total[0]                   # Cov(Z, ||W||^2) != 0 here
    sym = SoftmaxBandit([0.1, 0.4, 0.8]).moments()                      # uniform pi: ||W||^2 constant
    np.testing.assert_allclose(greensmith_baseline(sym), sym.value, atol=1e-15)


def test_gaussian_mse_monte_carlo_with_negative_control():
    """Per-prompt MSE of leave_one_out/vanilla/oracle on the Gaussian policy (no enumeration possible):
    seeded Monte Carlo within a Bonferroni z bound; the 1/G^2 residual must be rejected."""
    rng = np.random.default_rng(304)
    pol = GaussianPolicyBandit(theta=[0.3, -0.1, 0.4])
    m = pol.moments()
    est_z, neg_z = [], []
    for G in (2, 4):
        smp = pol.sample(12000, G, rng=rng)
        x = smp.prompt_ids
        for name in ("leave_one_out", "vanilla", "oracle"):
            ghat = est.ESTIMATORS[name](smp.rewards, smp.scores, values=m.value[x])
            err = ((ghat - m.grad[x]) ** 2).sum(-1)
            exact = exact_mse(m, name, G)
            for p in range(pol.num_contexts):
                e = err[x == p]
                se = e.std(ddof=1) / np.sqrt(e.size)
                est_z.append((e.mean() - exact.total[p]) / se)
                if name == "leave_one_out":
                    wrong = exact.oracle_term[p] + exact.residual[p] * (G - 1) / G
                    neg_z.append((e.mean() - wrong) / se)
    est_z = np.array(est_z)
    assert_mc_close(est_z, 1.0, 0.0)
    assert np.max(np.abs(neg_z)) > bonferroni_z(1e-6, est_z.size)


def test_results_and_errors():
    m = SoftmaxBandit([0.2, 0.9]).moments()
    d = exact_mse(m, "leave_one_out", 4, 2)
    assert isinstance(d, MSEDecomposition) and str(d) == d.summary() and "total" in d.summary()
    assert set(d.to_dict()) >= {"prompt_term", "oracle_term", "residual", "total"}
    assert "prompt" in str(exact_mse(m, "vanilla", 4))
    with pytest.raises(ValueError, match="ratio of U-statistics"):
        exact_mse(m, "std_normalized", 4)
    with pytest.raises(ValueError, match="num_generations >= 2"):
        exact_mse(m, "leave_one_out", 1)
    with pytest.raises(ValueError, match="baseline="):
        exact_mse(m, "prompt_baseline", 4)
    with pytest.raises(ValueError, match="outcomes exceed"):
        enumerate_mse(SoftmaxBandit([0.5] * 6), "leave_one_out", 9)


def test_paper_constants_mapping():
    # one place maps (A1, A2, A3) to the paper's (c1, c2, c3): c_i := A_i (spec ambiguity 1)
    m = ContextualSoftmaxBandit(np.random.default_rng(305).normal(size=(3, 2, 2)), success_probs=[[0.2, 0.7]] * 3,
                                theta=[0.1, 0.2]).moments()
    A = np.array(constants(m))
    c = paper_constants(A)
    np.testing.assert_array_equal(c, A)
    assert c is not A and paper_constants(np.ones((2, 3))).shape == (2, 3)
    assert CONSTANT_NAMES == {"exact": ("A1", "A2", "A3"), "paper": ("c1", "c2", "c3")}
    # Prop. 3 with these constants equals exact_mse for B prompts (the mapping's source)
    G, B = 4, 3
    np.testing.assert_allclose(exact_mse(m, "leave_one_out", G, B).total,
                               A[0] / B + A[1] / (B * G) + A[2] / (B * G * (G - 1)), rtol=1e-12)
