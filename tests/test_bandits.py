import numpy as np
import pytest
from scipy import integrate

from ustat_grpo.policies.bandits import ContextualSoftmaxBandit, GaussianPolicyBandit, PromptMoments, Sample, SoftmaxBandit
from ustat_grpo.core.testing import assert_mc_close, bonferroni_z


def _contextual(seed=201, P=4, K=3, d=2):
    rng = np.random.default_rng(seed)
    return ContextualSoftmaxBandit(rng.normal(size=(P, K, d)), success_probs=rng.random((P, K)),
                                   prompt_probs=rng.dirichlet(np.ones(P)), theta=rng.normal(size=d))


def _general_softmax():
    vals = np.array([[0.0, 2.0], [0.5, 1.5], [1.0, 1.0], [0.0, 0.3]])
    probs = np.array([[0.3, 0.7], [0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    return SoftmaxBandit(reward_values=vals, reward_probs=probs, theta=[0.2, -0.4, 0.9, 0.0])


def _brute_moments(policy, theta, h=1e-6):
    """Independent twin: enumerate (prompt, arm, reward) with scores from finite differences of log pi."""
    P, K, d = policy.features.shape

    def logpi(t, x):
        z = policy.features[x] @ t
        return z - np.log(np.exp(z).sum())

    out = {k: [] for k in ("value", "grad", "sigma2", "fisher", "sigma_oracle", "second_moment_zw", "cov_z_w2")}
    for x in range(P):
        pi = np.exp(logpi(theta, x))
        W = np.zeros((K, d))
        for j in range(d):
            e = np.zeros(d)
            e[j] = h
            W[:, j] = (logpi(theta + e, x) - logpi(theta - e, x)) / (2 * h)
        V = sum(pi[a] * p * z for a in range(K) for z, p in zip(policy.reward_values[x, a], policy.reward_probs[x, a]))
        EZ2 = sum(pi[a] * p * z * z for a in range(K) for z, p in zip(policy.reward_values[x, a], policy.reward_probs[x, a]))
        g = np.zeros(d)
        I = np.zeros((d, d))
        S = np.zeros((d, d))
        Z2 = np.zeros((d, d))
        czw = 0.0
        for a in range(K):
            I += pi[a] * np.outer(W[a], W[a])
            for z, p in zip(policy.reward_values[x, a], policy.reward_probs[x, a]):
                w = pi[a] * p
                g += w * z * W[a]
                S += w * (z - V) ** 2 * np.outer(W[a], W[a])
                Z2 += w * z * z * np.outer(W[a], W[a])
                czw += w * (z - V) * (W[a] @ W[a])
        for k, v in zip(out, (V, g, EZ2 - V * V, I, S - np.outer(g, g), Z2, czw)):
            out[k].append(v)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("make", [lambda: SoftmaxBandit([0.1, 0.5, 0.9], theta=[0.3, -0.2, 0.1]),
                                  lambda: SoftmaxBandit(rewards=[0.0, 1.5, 2.0], theta=[1.0, 0.0, -1.0]),
                                  _general_softmax, _contextual])
def test_softmax_moments_equal_enumeration(make):
    pol = make()
    m = pol.moments()
    ref = _brute_moments(pol, pol.theta)
    for k, v in ref.items():
        np.testing.assert_allclose(getattr(m, k), v, rtol=1e-8, atol=1e-9, err_msg=k)
    np.testing.assert_allclose(np.trace(m.cov_z_ww, axis1=1, axis2=2), m.cov_z_w2, rtol=1e-12, atol=1e-15)


def _fd_grad(fn, t, h=1e-5):
    out = []
    for j in range(t.size):
        e = np.zeros(t.size)
        e[j] = h
        out.append((fn(t + e) - fn(t - e)) / (2 * h))
    return np.array(out)


@pytest.mark.parametrize("make", [_contextual, _general_softmax,
                                  lambda: GaussianPolicyBandit(theta=[0.3, -0.1, 0.4]),
                                  lambda: GaussianPolicyBandit(action_std=0.7, reward_width=0.3,
                                                               prompt_probs=[0.2, 0.5, 0.3], theta=[1.0, 0.2, -0.5])])
def test_gradient_and_hessian_vs_finite_differences(make):
    pol = make()
    t = pol.theta
    np.testing.assert_allclose(pol.gradient(), _fd_grad(pol.objective, t), rtol=1e-6, atol=1e-9)
    H = pol.hessian()
    np.testing.assert_allclose(H, _fd_grad(pol.gradient, t).T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H, H.T, atol=1e-14)


def test_gaussian_hessian_two_routes_agree():
    pol = GaussianPolicyBandit(theta=[0.4, 0.1, -0.6], action_std=0.8)
    from ustat_grpo.policies.bandits import _Policy
    np.testing.assert_allclose(pol.hessian(), _Policy.hessian(pol, pol.theta), rtol=1e-12, atol=1e-15)


def test_gaussian_moments_vs_quadrature():
    pol = GaussianPolicyBandit(action_std=0.8, reward_width=0.4, theta=[0.2, 0.5, -0.1])
    m = pol.moments()
    s, tau = pol.action_std, pol.reward_width
    for x in range(pol.num_contexts):
        mx, ax, u = pol.u[x] @ pol.theta, pol.targets[x], pol.u[x]

        def E(fun):
            dens = lambda a: np.exp(-(a - mx) ** 2 / (2 * s * s)) / np.sqrt(2 * np.pi * s * s)
            return integrate.quad(lambda a: fun(a) * dens(a), mx - 12 * s, mx + 12 * s, epsabs=1e-13, epsrel=1e-12)[0]

        Z = lambda a: np.exp(-(a - ax) ** 2 / (2 * tau * tau))
        w = lambda a: (a - mx) / s ** 2                                   # W = w(a) u
        V = E(Z)
        np.testing.assert_allclose(m.value[x], V, rtol=1e-9)
        np.testing.assert_allclose(m.grad[x], E(lambda a: Z(a) * w(a)) * u, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m.sigma2[x], E(lambda a: Z(a) ** 2) - V * V, rtol=1e-9)
        np.testing.assert_allclose(m.fisher[x], E(lambda a: w(a) ** 2) * np.outer(u, u), rtol=1e-9)
        g = m.grad[x]
        np.testing.assert_allclose(m.sigma_oracle[x], E(lambda a: (Z(a) - V) ** 2 * w(a) ** 2) * np.outer(u, u)
                                   - np.outer(g, g), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(m.second_moment_zw[x], E(lambda a: Z(a) ** 2 * w(a) ** 2) * np.outer(u, u),
                                   rtol=1e-9)
        np.testing.assert_allclose(m.cov_z_w2[x], E(lambda a: (Z(a) - V) * w(a) ** 2) * (u @ u), rtol=1e-8, atol=1e-12)


def test_gaussian_maximiser_manifold_and_rank():
    pol = GaussianPolicyBandit()
    t_star, J_star = pol.optimum()
    assert pol.rank == 2
    np.testing.assert_allclose(pol.objective(t_star), J_star, rtol=1e-14)
    np.testing.assert_allclose(pol.gradient(t_star), 0, atol=1e-15)
    ev = np.linalg.eigvalsh(pol.hessian(t_star))
    assert np.sum(ev < -1e-8) == 2 and abs(ev[-1]) < 1e-12
    null = np.linalg.svd(pol.u)[2][-1]                                  # u @ null = 0
    np.testing.assert_allclose(pol.objective(t_star + 3.7 * null), J_star, rtol=1e-14)
    assert pol.objective(t_star + 0.1 * np.array([1.0, 0, 0])) < J_star
    with pytest.raises(ValueError, match="not reachable"):
        GaussianPolicyBandit(targets=[0.0, 0.0, 1.0])


def test_softmax_optimum():
    b = SoftmaxBandit([0.1, 0.7, 0.4])
    t, J = b.optimum()
    assert J == 0.7 and b.objective(t) > J - 1e-12
    # numerical optimum of the contextual class on the same one-prompt bandit reaches the exact supremum
    c = ContextualSoftmaxBandit(np.eye(3)[None], success_probs=[[0.1, 0.7, 0.4]])
    t, J = c.optimum()
    assert J == c.objective(t) and abs(J - 0.7) < 1e-9
    c = _contextual()
    t, J = c.optimum()
    rng = np.random.default_rng(207)
    others = [c.objective(th) for th in rng.normal(scale=10.0, size=(500, c.dim))]
    assert J == c.objective(t) and J >= max(others) - 1e-12


def test_sample_moments_monte_carlo():
    """E[W|x] = 0, E[Z|x] = V(x), E[WZ|x] = g(x): per-prompt sample means within a Bonferroni z bound;
    the negative control (uncentred score phi[x, a]) must fail."""
    rng = np.random.default_rng(202)
    for pol in (_contextual(), GaussianPolicyBandit(theta=[0.3, -0.1, 0.4])):
        m = pol.moments()
        smp = pol.sample(4000, 8, rng=rng)
        P, d = pol.num_contexts, pol.dim
        z = []
        for x in range(P):
            sel = smp.prompt_ids == x
            Z = smp.rewards[sel].reshape(-1)
            W = smp.scores[sel].reshape(-1, d)
            # groups are i.i.d. given x; use group means for standard errors
            for stat, exact in ((W, np.zeros(d)), (W * Z[:, None], m.grad[x]), (Z[:, None], m.value[x:x + 1])):
                per_group = stat.reshape(-1, 8, stat.shape[-1]).mean(1)
                sd = per_group.std(0, ddof=1)
                const = sd == 0                                        # e.g. a zero coordinate of u_x
                np.testing.assert_array_equal(per_group.mean(0)[const], exact[const])
                z.append((per_group.mean(0) - exact)[~const] / (sd[~const] / np.sqrt(len(per_group))))
        assert_mc_close(np.concatenate(z), 1.0, 0.0)                     # z-scores vs 0, unit se
        if isinstance(pol, ContextualSoftmaxBandit):
            # negative control: an uncentred score would not have mean zero
            x = 0
            sel = smp.prompt_ids == x
            wrong = smp.scores[sel].reshape(-1, d) + (pol.policy_probs()[x] @ pol.features[x])
            zz = wrong.mean(0) / (wrong.std(0, ddof=1) / np.sqrt(len(wrong)))
            assert np.max(np.abs(zz)) > bonferroni_z(1e-6, len(z))


def test_sample_prompt_frequencies():
    rng = np.random.default_rng(203)
    pol = _contextual()
    n = 40000
    ids = pol.sample(n, 1, rng=rng).prompt_ids
    cnt = np.bincount(ids, minlength=pol.num_contexts)
    f = pol.prompt_probs
    assert_mc_close(cnt / n, np.sqrt(f * (1 - f) / n), f)


def test_sample_replicate_axis_uses_each_theta():
    rng = np.random.default_rng(204)
    b = SoftmaxBandit(rewards=[0.25, 0.5, 1.0])
    thetas = np.array([[60.0, 0, 0], [0, 0, 60.0], [0, 60.0, 0]])       # deterministic arms 0, 2, 1
    smp = b.sample(5, 3, rng=rng, theta=thetas)
    assert smp.rewards.shape == (3, 5, 3) and smp.scores.shape == (3, 5, 3, 3) and smp.prompt_ids.shape == (3, 5)
    np.testing.assert_array_equal(smp.rewards[:, 0, 0], [0.25, 1.0, 0.5])
    np.testing.assert_allclose(smp.scores, 0.0, atol=1e-20)            # pi is a point mass: W = 0
    c = _contextual(P=3, d=2)
    th = np.stack([c.theta, -c.theta])
    smp = c.sample(2000, 4, rng=rng, theta=th)
    for r in range(2):                                                 # per-replicate mean reward matches J(theta_r)
        est = smp.rewards[r].mean(1)
        se = est.std(ddof=1) / np.sqrt(est.size)
        assert_mc_close(est.mean(), se, c.objective(th[r]), m=2)


def test_with_theta_and_results():
    b = _contextual()
    b2 = b.with_theta(np.ones(2))
    np.testing.assert_array_equal(b2.theta, np.ones(2))
    assert not np.array_equal(b.theta, b2.theta)
    m = b.moments()
    assert isinstance(m, PromptMoments) and str(m) == m.summary() and "prompts" in m.summary()
    assert set(m.to_dict()) >= {"value", "grad", "sigma_oracle"}
    smp = b.sample(2, 2, rng=np.random.default_rng(205))
    assert isinstance(smp, Sample) and "rewards" in smp.to_dict() and str(smp).startswith("Sample")


def test_errors():
    rng = np.random.default_rng(206)
    with pytest.raises(ValueError, match="exactly one"):
        ContextualSoftmaxBandit(np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SoftmaxBandit([0.5, 1.5])
    with pytest.raises(ValueError, match="theta must have shape"):
        SoftmaxBandit([0.5, 0.5]).moments(np.zeros(3))
    with pytest.raises(ValueError, match="prompt_probs"):
        ContextualSoftmaxBandit(np.zeros((2, 2, 1)), success_probs=np.ones((2, 2)) / 2, prompt_probs=[0.3, 0.3])
    with pytest.raises(TypeError, match="SeedSequence"):
        SoftmaxBandit([0.5, 0.5]).sample(1, 2, rng="0")
    with pytest.raises(ValueError, match="num_prompts"):
        SoftmaxBandit([0.5, 0.5]).sample(0, 2, rng=rng)


def test_values_vectorised_over_replicates():
    rng = np.random.default_rng(208)
    for pol in (_contextual(), _general_softmax(), GaussianPolicyBandit(prompt_probs=[0.2, 0.5, 0.3])):
        thetas = rng.normal(size=(5, pol.dim))
        V = pol.values(thetas)
        assert V.shape == (5, pol.num_contexts)
        for r in range(5):
            np.testing.assert_allclose(V[r], pol.moments(thetas[r]).value, rtol=1e-13)
            np.testing.assert_allclose(V[r] @ pol.prompt_probs, pol.objective(thetas[r]), rtol=1e-13)
        np.testing.assert_allclose(pol.values(), pol.moments().value, rtol=1e-13)


def test_rng_convention_int_seed_sequence_generator_agree():
    """``rng=`` goes through numpy.random.default_rng: an int, its SeedSequence and its Generator
    give the same draws; a Generator passed in keeps advancing."""
    pol = _contextual()
    a = pol.sample(3, 4, rng=5)
    b = pol.sample(3, 4, rng=np.random.SeedSequence(5))
    gen = np.random.default_rng(5)
    c = pol.sample(3, 4, rng=gen)
    for x in (b, c):
        np.testing.assert_array_equal(a.rewards, x.rewards)
        np.testing.assert_array_equal(a.scores, x.scores)
    assert not np.array_equal(pol.sample(3, 4, rng=gen).scores, c.scores)


@pytest.mark.parametrize("make", [lambda: SoftmaxBandit([0.2, 0.7]), _contextual,
                                  lambda: GaussianPolicyBandit()])
def test_bandits_satisfy_every_policy_protocol(make):
    from ustat_grpo.policies.policy import ExactMoments, KnownOptimum, Policy, ReplicatedSampling

    pol = make()
    for proto in (Policy, ReplicatedSampling, ExactMoments, KnownOptimum):
        assert isinstance(pol, proto), proto.__name__
    thetas = np.stack([pol.theta, pol.theta + 0.1])
    rep = pol.sample_replicates(thetas, 2, 3, rng=np.random.default_rng(9))
    one = pol.sample(2, 3, rng=np.random.default_rng(9), theta=thetas)
    np.testing.assert_array_equal(rep.scores, one.scores)
    assert rep.rewards.shape == (2, 2, 3) and rep.scores.shape == (2, 2, 3, pol.dim)
    with pytest.raises(ValueError, match="thetas"):
        pol.sample_replicates(pol.theta, 2, 3, rng=0)
