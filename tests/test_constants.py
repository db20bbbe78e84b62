"""Tests of ustat_grpo.scaling.constants: the U-statistic pieces (closed form = engine), unbiasedness, jackknife."""
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ustat_grpo.scaling import constants
from ustat_grpo.core.testing import assert_mc_close, binomial_coverage_pvalue


# --------------------------------------------------------------------------------------------
# an independent toy contextual bandit with exact constants (computed by enumeration here)
# --------------------------------------------------------------------------------------------


class ToyBandit:
    """P contexts, K arms, softmax over features phi(x, a) in R^d, Bernoulli rewards p(x, a)."""

    def __init__(self, rng, P=4, K=5, d=3, scale=1.0):
        self.phi = rng.standard_normal((P, K, d))                 # (P, K, d)
        self.theta = scale * rng.standard_normal(d)
        self.p = rng.uniform(0.05, 0.95, size=(P, K))             # (P, K)
        self.f = rng.dirichlet(np.full(P, 5.0))                   # (P,)
        logits = self.phi @ self.theta
        self.pi = np.exp(logits - logits.max(-1, keepdims=True))
        self.pi /= self.pi.sum(-1, keepdims=True)                 # (P, K)
        self.W = self.phi - np.einsum("pk,pkd->pd", self.pi, self.phi)[:, None, :]  # (P, K, d)

    def exact(self):
        pi, p, W, f = self.pi, self.p, self.W, self.f
        V = (pi * p).sum(-1)
        g = np.einsum("pk,pk,pkd->pd", pi, p, W)
        q = (W * W).sum(-1)
        trI = (pi * q).sum(-1)
        s2 = V * (1 - V)
        ezzq = (pi * q * (p * (1 - V[:, None]) ** 2 + (1 - p) * V[:, None] ** 2)).sum(-1)
        gg = (g * g).sum(-1)
        gbar = f @ g
        A1 = f @ gg - gbar @ gbar
        return np.array([A1, f @ (ezzq - gg), f @ (s2 * trI + gg)])

    def sample(self, rng, M, prompts=None):
        P, K = self.pi.shape
        prompts = np.arange(P) if prompts is None else prompts
        u = rng.random((len(prompts), M))
        arms = (u[..., None] > np.cumsum(self.pi[prompts], -1)[:, None, :]).sum(-1)  # (P, M)
        arms = np.minimum(arms, K - 1)
        pz = np.take_along_axis(self.p[prompts], arms, -1)
        z = (rng.random(pz.shape) < pz).astype(float)
        w = self.W[prompts[:, None], arms]                        # (P, M, d)
        return z, w


# --------------------------------------------------------------------------------------------
# design, integer optimum, Fieller
# --------------------------------------------------------------------------------------------


def test_pieces_fast_equals_naive():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(3, 7))
    w = rng.normal(size=(3, 7, 2)) + z[..., None]
    for fast, naive in zip(constants.prompt_pieces(z, w), constants.prompt_pieces_engine(z, w)):
        np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-13)


def test_order4_ustat_exact_mean_by_enumeration():
    # a bandit with 2 equally likely outcomes per prompt: E of the order-4 U-statistic over all
    # 2^M outcome sequences (M = 5) equals ||g||^2 exactly, and sigma^2 tr I likewise.
    zs = np.array([0.0, 1.0])
    ws = np.array([[1.0, 0.5], [-1.0, -0.5]])                     # E W = 0
    M = 5
    g2s, sts = [], []
    for idx in itertools.product([0, 1], repeat=M):
        idx = np.array(idx)
        _, g2, st, _ = constants.prompt_pieces(zs[idx][None], ws[idx][None])
        g2s.append(g2[0]); sts.append(st[0])
    g = 0.5 * (ws * zs[:, None]).sum(0)
    trI = 0.5 * (ws ** 2).sum()
    assert np.mean(g2s) == pytest.approx(g @ g, rel=1e-12)
    assert np.mean(sts) == pytest.approx(0.25 * trI, rel=1e-12)


def test_constants_unbiased_vs_exact_bandit():
    rng = np.random.default_rng(20261122)
    bandit = ToyBandit(rng)
    exact = bandit.exact()
    reps, plug = [], []
    for _ in range(400):
        z, w = bandit.sample(rng, M=8)
        est = constants.estimate_constants(z, w, prompt_probs=bandit.f, n_groups=2)
        reps.append(est.unconstrained)
        plug.append(est.plugin)
    reps, plug = np.array(reps), np.array(plug)
    se = reps.std(0, ddof=1) / math.sqrt(len(reps))
    assert_mc_close(reps.mean(0), se, exact, alpha=1e-4, err_msg="unbiased constants")
    # negative control: the spec's plug-ins are visibly biased at M = 8 (A1 picks up within noise)
    sep = plug.std(0, ddof=1) / math.sqrt(len(plug))
    z = (plug.mean(0) - exact) / sep
    assert np.max(np.abs(z)) > 6, z


def test_jackknife_interval_coverage_fixed_prompts():
    rng = np.random.default_rng(77)
    bandit = ToyBandit(rng, P=3, K=4, d=2)
    exact = bandit.exact()
    n, hits = 200, np.zeros(3, int)
    for _ in range(n):
        z, w = bandit.sample(rng, M=200)
        est = constants.estimate_constants(z, w, prompt_probs=bandit.f, n_groups=10)
        ci = est.confidence_interval()
        hits += [ci[k].low <= exact[i] <= ci[k].high for i, k in enumerate(est.names)]
    for h in hits:
        assert binomial_coverage_pvalue(h, n, 0.95) > 1e-3, hits / n


def test_constants_sampled_prompts_and_result_api():
    rng = np.random.default_rng(12)
    bandit = ToyBandit(rng, P=6)
    prompts = rng.choice(6, size=60, p=bandit.f)
    z, w = bandit.sample(rng, M=50, prompts=prompts)
    est = constants.estimate_constants(z, w)
    assert est.design == "sampled prompts" and est.n_groups == 20
    d = est.to_dict()
    json.dumps(d)
    assert set(d["constants"]) == {"A1", "A2", "A3"}
    assert np.all(est.c == est.params)
    gs = est.optimal_group_size(budget=512)
    assert gs.g_star_exact == pytest.approx(1 + math.sqrt(est.params[2] / est.params[0]))
    assert "A1" in str(est)
    with pytest.raises(ValueError):
        constants.estimate_constants(z[:, :3], w[:, :3])


# --------------------------------------------------------------------------------------------
# performance tables
# --------------------------------------------------------------------------------------------

TABLE2 = np.array([
    [0.7677, 0.7491, 0.7753, 0.7627, 0.7817, 0.7743],
    [0.7703, 0.7679, 0.7697, 0.7793, 0.7819, 0.7665],
    [0.7691, 0.7713, 0.7701, 0.7673, 0.7703, 0.7757]])


def test_constants_unbiased_vs_package_exact_theory():
    # independent check against ustat_grpo.theory.mse.constants on the package's contextual bandit,
    # prompts sampled from f (the realistic design: A1 includes prompt sampling)
    from ustat_grpo.policies.bandits import default_bandit
    from ustat_grpo.theory.mse import constants as exact_constants

    policy = default_bandit()
    exact = np.array(exact_constants(policy.moments()))
    rng = np.random.default_rng(31)
    reps = []
    for _ in range(300):
        s = policy.sample(24, 12, rng=rng)
        reps.append(constants.estimate_constants(s.rewards, s.scores, n_groups=3).unconstrained)
    reps = np.array(reps)
    assert_mc_close(reps.mean(0), reps.std(0, ddof=1) / math.sqrt(len(reps)), exact, alpha=1e-4)
    # and the ToyBandit of this file agrees with mse.constants through the package class
    from ustat_grpo.policies.bandits import ContextualSoftmaxBandit

    toy = ToyBandit(np.random.default_rng(9))
    pkg = ContextualSoftmaxBandit(toy.phi, success_probs=toy.p, prompt_probs=toy.f, theta=toy.theta)
    np.testing.assert_allclose(exact_constants(pkg.moments()), toy.exact(), rtol=1e-10)


def test_jackknife_coverage_sampled_prompts_and_gstar():
    # the CLI's default design: prompts drawn from f, jackknife over 20 prompt groups, t quantiles
    from ustat_grpo.policies.bandits import default_bandit
    from ustat_grpo.theory.mse import constants as exact_constants

    policy = default_bandit()
    A = np.array(exact_constants(policy.moments()))
    g_true = 1 + math.sqrt(A[2] / A[0])
    rng = np.random.default_rng(2718)
    n, hits = 200, np.zeros(4, int)
    for _ in range(n):
        s = policy.sample(60, 64, rng=rng)
        est = constants.estimate_constants(s.rewards, s.scores)
        ci = est.confidence_interval()
        gi = est.optimal_group_size(budget=256).g_star_exact_interval
        hits += [ci[k].low <= A[i] <= ci[k].high for i, k in enumerate(est.names)] + [gi.low <= g_true <= gi.high]
    for h in hits:
        assert binomial_coverage_pvalue(h, n, 0.95) > 1e-3, hits / n


@given(st.integers(4, 7), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_pieces_fast_equals_naive_property(M, P, d, seed):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, size=(P, M)).astype(float)          # ties included
    w = rng.normal(size=(P, M, d))
    for fast, naive in zip(constants.prompt_pieces(z, w), constants.prompt_pieces_engine(z, w)):
        np.testing.assert_allclose(fast, naive, rtol=1e-10, atol=1e-12)


def test_prompt_constants_unbiased_by_exact_enumeration():
    """E over all M-tuples of prompt_constants equals the exact A2(x), A3(x) (Theorem 2 pieces)."""
    import itertools

    theta, succ = np.array([0.3, -0.4, 0.1]), np.array([0.8, 0.3, 0.5])
    pi = np.exp(theta) / np.exp(theta).sum()
    outcomes, probs = [], []                              # one draw: (arm, reward)
    for a in range(3):
        for r, pr in ((1.0, succ[a]), (0.0, 1 - succ[a])):
            outcomes.append((r, np.eye(3)[a] - pi))       # softmax score W = e_a - pi
            probs.append(pi[a] * pr)
    probs = np.array(probs)
    z1 = np.array([o[0] for o in outcomes])
    w1 = np.array([o[1] for o in outcomes])
    V = probs @ z1
    g = probs @ ((z1 - V)[:, None] * w1)
    q = (w1 * w1).sum(-1)
    a2_exact = probs @ ((z1 - V) ** 2 * q) - g @ g
    a3_exact = (probs @ (z1 - V) ** 2) * (probs @ q) + g @ g
    M = 4
    idx = np.array(list(itertools.product(range(len(outcomes)), repeat=M)))   # (6^M, M)
    weight = probs[idx].prod(-1)
    a2, a3, g2 = constants.prompt_constants(z1[idx], w1[idx])
    assert abs(weight @ a2 - a2_exact) < 1e-12 and abs(weight @ a3 - a3_exact) < 1e-12
    assert abs(weight @ g2 - g @ g) < 1e-12
    # negative control: the plug-in sample versions are biased at M = 4
    zb = z1[idx].mean(-1, keepdims=True)
    gp = (((z1[idx] - zb)[..., None] * w1[idx]).mean(1))
    a3_plug = z1[idx].var(-1) * q[idx].mean(-1) + (gp * gp).sum(-1)
    assert abs(weight @ a3_plug - a3_exact) > 1e-3


def test_prompt_constants_bad_shapes():
    with pytest.raises(ValueError, match="at least 4 samples per prompt"):
        constants.prompt_constants(np.zeros((2, 3)), np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="need rewards"):
        constants.prompt_constants(np.zeros((2, 5)), np.zeros((2, 4, 1)))


def test_prompt_pseudo_values_equal_delete_one_recomputation():
    """Naive twin: psi_p = P A(all) - (P-1) A(without p) with A recomputed from the pieces."""
    from ustat_grpo.scaling.constants import _constants_from_pieces, prompt_pieces, prompt_pseudo_values

    rng = np.random.default_rng(4)
    z = rng.binomial(1, 0.5, size=(9, 12)).astype(float)
    w = rng.standard_normal((9, 12, 3)) + z[..., None] * rng.standard_normal((9, 1, 3))
    pieces = prompt_pieces(z, w)
    P = z.shape[0]
    full = _constants_from_pieces(*pieces, None)
    naive = np.array([P * full - (P - 1) * _constants_from_pieces(*(x[np.arange(P) != p] for x in pieces), None)
                      for p in range(P)])
    np.testing.assert_allclose(prompt_pseudo_values(*pieces), naive, rtol=1e-12, atol=1e-12)


def test_sampled_prompts_carry_pseudo_values_concentration_and_skew_interval():
    from ustat_grpo.scaling.constants import estimate_constants, prompt_pieces, top_share

    rng = np.random.default_rng(5)
    z = rng.binomial(1, 0.5, size=(100, 16)).astype(float)
    w = rng.standard_normal((100, 16, 3)) + z[..., None] * rng.lognormal(0, 1.5, (100, 1, 3))
    est = estimate_constants(z, w)
    g2 = prompt_pieces(z, w)[1]
    assert est.pseudo_values.shape == (100, 3)
    pos = np.clip(g2, 0, None)                            # unbiased pieces can be negative: positive mass
    assert est.concentration == top_share(g2) == pytest.approx(np.sort(pos)[-2:].sum() / pos.sum())
    assert top_share(-np.abs(g2)) != top_share(-np.abs(g2))   # no positive mass: NaN, not a share
    assert "top 2% of prompts carry" in est.summary() and est.to_dict()["concentration"] == est.concentration
    res = est.optimal_group_size(budget=256, interval="fieller_skew")
    assert res.interval == "fieller_skew" and res.g_star_exact == est.optimal_group_size(budget=256).g_star_exact
    fixed = estimate_constants(z, w, prompt_probs=np.full(100, 0.01))
    assert fixed.pseudo_values is None and fixed.concentration is None
    with pytest.raises(ValueError, match="pseudo_values"):
        fixed.optimal_group_size(interval="fieller_skew")
