"""Tests of ustat_grpo.experiments.algorithm2 (Algorithm 2) against torch autograd, enumeration and Monte Carlo."""
import itertools

import numpy as np
import pytest
import torch

from ustat_grpo.experiments import algorithm2 as pr
from ustat_grpo.core.testing import assert_mc_close


def _policy(seed=0, P=2, T=3, V=3, markov=True, scale=0.7):
    rng = np.random.default_rng(seed)
    C = V if markov else 1
    d = P * T * C * V
    return pr.SequencePolicy.tabular(P, T, V, rng.uniform(0.05, 0.95, size=(P, V ** T)), markov=markov,
                                     theta=rng.normal(size=d) * scale)


# ------------------------------------------------------------------ policy basics

def test_token_scores_finite_differences():
    pol = _policy()
    rng = np.random.default_rng(1)
    pid, seqs, _ = pol.sample_sequences(3, 4, rng=rng)
    W = pol.token_scores(pid[:, None], seqs)                               # (3, 4, T, d)
    e = 1e-6
    for k in rng.choice(pol.dim, 6, replace=False):
        dt = np.zeros(pol.dim)
        dt[k] = e
        fd = (pol.token_logprobs(pid[:, None], seqs, pol.theta + dt)
              - pol.token_logprobs(pid[:, None], seqs, pol.theta - dt)) / (2 * e)
        np.testing.assert_allclose(W[..., k], fd, atol=1e-8)


def test_exact_gradient_finite_differences():
    pol = _policy(seed=2, markov=False)
    e = 1e-6
    fd = np.array([(pol.objective(pol.theta + e * v) - pol.objective(pol.theta - e * v)) / (2 * e)
                   for v in np.eye(pol.dim)])
    np.testing.assert_allclose(pol.gradient(), fd, atol=1e-9)
    np.testing.assert_allclose(pol.sequence_probs().sum(-1), 1.0, rtol=1e-13)


def test_sampling_frequencies_match_enumeration():
    pol = _policy(seed=3)
    rng = np.random.default_rng(4)
    n = 40_000
    pid, seqs, Z = pol.sample_sequences(n, 1, rng=rng)
    flat = np.ravel_multi_index(np.moveaxis(seqs[:, 0], -1, 0), (3,) * 3)
    S = 27
    probs = pol.sequence_probs()
    cnt = np.array([np.bincount(flat[pid == p], minlength=S) for p in range(2)])     # (P, S)
    npp = cnt.sum(1, keepdims=True)
    emp = cnt / npp
    se = np.sqrt(probs * (1 - probs) / npp)
    assert_mc_close(emp, se, probs, err_msg="sequence frequencies")
    # rewards: success rate per prompt
    vals = pol.values()
    rate = np.array([Z[pid == p, 0].mean() for p in range(2)])
    assert_mc_close(rate, np.sqrt(vals * (1 - vals) / npp[:, 0]), vals)
    # negative control: an independent-token policy with the same marginals is rejected
    marg = np.stack([[probs[p].reshape(3, 3, 3).sum(axis=tuple(a for a in range(3) if a != t))
                      for t in range(3)] for p in range(2)])                       # (P, T, V)
    indep = np.einsum("pa,pb,pc->pabc", marg[:, 0], marg[:, 1], marg[:, 2]).reshape(2, S)
    with pytest.raises(AssertionError):
        assert_mc_close(emp, np.sqrt(indep * (1 - indep) / npp), indep)


def test_from_bandit_matches_bandit():
    from ustat_grpo.policies.bandits import ContextualSoftmaxBandit

    rng = np.random.default_rng(5)
    b = ContextualSoftmaxBandit(rng.normal(size=(3, 4, 2)), success_probs=rng.uniform(size=(3, 4)),
                                theta=rng.normal(size=2))
    pol = pr.SequencePolicy.from_bandit(b)
    np.testing.assert_allclose(pol.objective(), b.objective(), rtol=1e-12)
    np.testing.assert_allclose(pol.gradient(), b.gradient(), rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------ advantages

def test_advantages_framework_worked_example():
    Z = np.array([1, 1, 1, 0, 0, 0, 0, 0], float)
    trl, _ = pr.normalized_advantages(Z, preset="grpo")
    verl, _ = pr.normalized_advantages(Z, preset="verl_grpo")
    np.testing.assert_allclose(trl[[0, 3]], [1.2074, -0.7244], atol=5e-5)
    np.testing.assert_allclose(verl[[0, 3]], [1.2076, -0.7246], atol=5e-5)
    np.testing.assert_allclose(pr.normalized_advantages(Z, preset="dr_grpo")[0][[0, 3]], [0.625, -0.375])
    np.testing.assert_allclose(pr.normalized_advantages(Z, preset="rloo")[0][[0, 3]], [5 / 7, -3 / 7])
    paper, _ = pr.normalized_advantages(Z, preset="paper")
    grpo0, _ = pr.normalized_advantages(Z, preset="grpo", eps=0.0)
    np.testing.assert_allclose(paper, 8 / 7 * grpo0, rtol=1e-13)
    # eq. (15)-(16) literally
    loo = np.array([(Z.sum() - z) / 7 for z in Z])
    se = np.sqrt(((Z - Z.mean()) ** 2).sum() / 7)
    np.testing.assert_allclose(paper, (Z - loo) / se, rtol=1e-13)
    p2, _ = pr.normalized_advantages(Z, preset="paper2", smoothing=0.01)
    np.testing.assert_allclose(p2, (Z - 3 / 8) / np.sqrt(3 / 8 * 5 / 8 + 0.01), rtol=1e-13)


def test_zero_variance_groups():
    Z = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [0.3, 0.3 + 1e-15, 0.3, 0.3], [0, 1, 0, 0]], float)
    for preset in pr.ADVANTAGE_PRESETS:
        A, zero = pr.normalized_advantages(Z, preset=preset)
        np.testing.assert_array_equal(zero, [True, True, True, False])
        assert np.all(A[:3] == 0) and np.all(np.isfinite(A))


# ------------------------------------------------------------------ eq. (14) vs torch autograd (naive twin)

def _torch_gradient(pol, theta, theta_old, theta_ref, pid, seqs, A, kappa, kl_grad, clip_eps, ratio_level):
    """Autograd of the per-prompt surrogate whose gradient is eq. (14) (independent of token_scores)."""
    phi = torch.tensor(pol.features)
    th = torch.tensor(theta, requires_grad=True)

    def tok_logp(t_):
        lsm = torch.log_softmax(phi @ t_, dim=-1)                          # (P, T, C, V)
        out = torch.zeros(seqs.shape, dtype=torch.float64)
        for b, g, t in itertools.product(*map(range, seqs.shape)):
            c = seqs[b, g, t - 1] if (pol.markov and t > 0) else 0
            out[b, g, t] = lsm[pid[b], t, c, seqs[b, g, t]]
        return out

    lt = tok_logp(th)
    lo = tok_logp(torch.tensor(theta_old)).detach()
    lr = tok_logp(torch.tensor(theta_ref)).detach()
    At = torch.tensor(A)[..., None]
    if ratio_level == "token":
        rho = torch.exp(lt - lo)
    else:
        # one sequence-level ratio per output: its gradient is rho A sum_t W_t
        rho = torch.exp((lt - lo).sum(-1, keepdim=True))
    surr = torch.minimum(rho * At, torch.clamp(rho, 1 - clip_eps, 1 + clip_eps) * At) if clip_eps else rho * At
    surr = surr.expand_as(lt) if ratio_level == "token" else torch.cat(
        [surr, torch.zeros(lt.shape[:-1] + (lt.shape[-1] - 1,), dtype=torch.float64)], -1)
    if kl_grad == "paper14":       # d/dtheta [log pi - pi/pi_ref] = grad log pi (1 - pi/pi_ref)
        surr = surr + kappa * (lt - torch.exp(lt - lr))
    else:                          # minus K3
        r = torch.exp(lr - lt)
        surr = surr - kappa * (r - torch.log(r) - 1)
    G = seqs.shape[1]
    rows = []
    for b in range(seqs.shape[0]):
        (gb,) = torch.autograd.grad(surr[b].sum() / G, th, retain_graph=True)
        rows.append(gb.numpy())
    return np.array(rows)


@pytest.mark.parametrize("kl_grad,clip_eps,ratio_level", [("paper14", None, "token"), ("k3_autograd", None, "token"),
                                                          ("paper14", 0.1, "token"), ("k3_autograd", None, "sequence")])
def test_eq14_matches_autograd(kl_grad, clip_eps, ratio_level):
    pol = _policy(seed=6, P=2, T=2, V=3)
    rng = np.random.default_rng(7)
    theta_old = pol.theta
    theta = theta_old + rng.normal(size=pol.dim) * 0.3
    theta_ref = theta_old + rng.normal(size=pol.dim) * 0.3
    pid, seqs, Z = pol.sample_sequences(3, 5, rng=rng, theta=theta_old)
    A, _ = pr.normalized_advantages(Z + rng.normal(size=Z.shape) * 0.1)
    got = pr.algorithm2_gradient(pol, theta, theta_old, pid, seqs, A, kappa=0.3, theta_ref=theta_ref,
                                 kl_grad=kl_grad, clip_eps=clip_eps, ratio_level=ratio_level)
    want = _torch_gradient(pol, theta, theta_old, theta_ref, pid, seqs, A, 0.3, kl_grad, clip_eps, ratio_level)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if clip_eps:  # with this shift some ratios leave the clip range, so clipping matters
        unclipped = pr.algorithm2_gradient(pol, theta, theta_old, pid, seqs, A, kappa=0.3, theta_ref=theta_ref,
                                           kl_grad=kl_grad, ratio_level=ratio_level)
        assert not np.allclose(unclipped, want, atol=1e-6)


def test_on_policy_paper_estimator_is_loo_ustatistic():
    """At theta = theta_old, kappa = 0: eq. (14) = U-statistic with kernel (W_i - W_j)(Z_i - Z_j)/(2 se)."""
    pol = _policy(seed=8, T=2)
    rng = np.random.default_rng(9)
    pid, seqs, Z = pol.sample_sequences(4, 6, rng=rng)
    A, _ = pr.normalized_advantages(Z)
    g = pr.algorithm2_gradient(pol, pol.theta, pol.theta, pid, seqs, A)
    W = pol.token_scores(pid[:, None], seqs).sum(-2)                       # (B, G, d)
    for b in range(4):
        se = Z[b].std(ddof=1)
        if se == 0:
            assert np.allclose(g[b], 0)
            continue
        u = np.mean([0.5 * (W[b, i] - W[b, j]) * (Z[b, i] - Z[b, j]) / se
                     for i in range(6) for j in range(6) if i != j], axis=0)
        np.testing.assert_allclose(g[b], u, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ KL (C10, C11)

def test_k3_unbiased_and_nonnegative_by_enumeration():
    pol = _policy(seed=10)
    ref = pol.theta + np.random.default_rng(11).normal(size=pol.dim) * 0.5
    P = pol.num_contexts
    seqs = np.broadcast_to(pol.sequences, (P,) + pol.sequences.shape)
    k = pr.k3(pol.token_logprobs(np.arange(P)[:, None], seqs), pol.token_logprobs(np.arange(P)[:, None], seqs, ref))
    assert np.all(k >= 0)
    ek3 = float(pol.prompt_probs @ (pol.sequence_probs() * k.sum(-1)).sum(-1))
    np.testing.assert_allclose(ek3, pr.exact_kl(pol, pol.theta, ref), rtol=1e-12)
    # negative control: K1 squared-free variant 'log r' has a different mean sign, k2 = (log r)^2/2 biased
    lr = pol.sequence_logprobs(ref) - pol.sequence_logprobs()
    ek2 = float(pol.prompt_probs @ (pol.sequence_probs() * 0.5 * lr ** 2).sum(-1))
    assert not np.isclose(ek2, ek3, rtol=1e-3)


def test_k3_autograd_expectation_is_reverse_kl_gradient_one_token():
    rng = np.random.default_rng(12)
    pol = pr.SequencePolicy.tabular(3, 1, 5, rng.uniform(size=(3, 5)), theta=rng.normal(size=15))
    ref = rng.normal(size=15)
    e = pr.expected_kl_bracket_grad(pol, pol.theta, ref, "k3_autograd")
    np.testing.assert_allclose(e, -pr.reverse_kl_grad(pol, pol.theta, ref), rtol=1e-12, atol=1e-15)
    assert not np.allclose(e, -pr.exact_kl_grad(pol, pol.theta, ref), atol=1e-3)
    # for several tokens the prefix law differs: no longer exactly the reverse-KL gradient
    pol3 = _policy(seed=13)
    ref3 = pol3.theta + rng.normal(size=pol3.dim)
    e3 = pr.expected_kl_bracket_grad(pol3, pol3.theta, ref3, "k3_autograd")
    assert not np.allclose(e3, -pr.reverse_kl_grad(pol3, pol3.theta, ref3), atol=1e-3)


def test_exact_kl_grad_finite_differences():
    pol = _policy(seed=14, T=2)
    ref = pol.theta + np.random.default_rng(15).normal(size=pol.dim) * 0.4
    e = 1e-6
    for f, g in [(lambda t: pr.exact_kl(pol, t, ref), pr.exact_kl_grad(pol, pol.theta, ref)),
                 (lambda t: pr.exact_kl(pol, ref, t), pr.reverse_kl_grad(pol, pol.theta, ref))]:
        fd = np.array([(f(pol.theta + e * v) - f(pol.theta - e * v)) / (2 * e) for v in np.eye(pol.dim)])
        np.testing.assert_allclose(g, fd, atol=1e-8)


# ------------------------------------------------------------------ Prop. 13 shrink factor (C9)

def test_shrink_factor_against_brute_enumeration():
    """E[g_hat] over all K^G outcomes of one prompt equals c(G, V) grad 2 arcsin sqrt V."""
    rng = np.random.default_rng(16)
    K, G = 4, 6
    succ = np.array([1.0, 0, 1, 0])  # deterministic binary reward per arm
    pol = pr.SequencePolicy.tabular(1, 1, K, succ[None], theta=rng.normal(size=K))
    pi = pol.sequence_probs()[0]
    W = pol.sequence_scores()[0]                                           # (K, d)
    Vx = float(pi @ succ)
    mean = np.zeros(K)
    for ys in itertools.product(range(K), repeat=G):
        ys = np.array(ys)
        A, _ = pr.normalized_advantages(succ[ys])
        mean += np.prod(pi[ys]) * (A @ W[ys]) / G
    target = pol.value_grads()[0] / np.sqrt(Vx * (1 - Vx))                 # grad 2 arcsin sqrt V
    cos = mean @ target / np.linalg.norm(mean) / np.linalg.norm(target)
    assert cos > 1 - 1e-12
    np.testing.assert_allclose(mean, pr.shrink_factor(G, Vx) * target, rtol=1e-10, atol=1e-14)
    assert not np.allclose(mean, target, rtol=1e-3)


def test_shrink_factor_limits():
    cs = [pr.shrink_factor(G, 0.3) for G in (8, 64, 512, 4096)]
    assert all(a < b for a, b in zip(cs, cs[1:])) and cs[-1] > 0.999


# ------------------------------------------------------------------ runner

def test_run_algorithm2_reproducible_and_first_step():
    pol = _policy(seed=17, T=2)
    cfg = pr.Algorithm2Config(num_iterations=3, num_prompts=4, num_generations=6, num_minibatches=2,
                              learning_rate=0.3, kappa=0.1)
    r1 = pr.run_algorithm2(pol, cfg, rng=np.random.default_rng(18))
    r2 = pr.run_algorithm2(pol, cfg, rng=np.random.default_rng(18))
    np.testing.assert_array_equal(r1.theta, r2.theta)
    # first iteration by hand: two minibatch steps, ratio != 1 at the second
    rng = np.random.default_rng(18)
    pid, seqs, Z = pol.sample_sequences(4, 6, rng=rng)
    A, zero = pr.normalized_advantages(Z)
    th = pol.theta.copy()
    for mb in (slice(0, 2), slice(2, 4)):
        th = th + 0.3 * pr.algorithm2_gradient(pol, th, pol.theta, pid[mb], seqs[mb], A[mb], kappa=0.1,
                                               theta_ref=pol.theta).mean(0)
    np.testing.assert_allclose(r1.theta[1], th, rtol=1e-13)
    np.testing.assert_allclose(r1.frac_reward_zero_std[0], zero.mean())
    assert "Algorithm 2" in r1.summary()
    import json
    json.dumps(r1.to_dict())


def test_config_validation():
    with pytest.raises(ValueError):
        pr.Algorithm2Config(num_prompts=5, num_minibatches=2)
    with pytest.raises(ValueError):
        pr.Algorithm2Config(kl_grad="k2")


def test_grpo_run_tracks_amplification_recurrence():
    """Paper 2: GRPO with the whitened reward, large G and KL to pi_ref follows p_n = h(p_{n-1})."""
    from ustat_grpo.theory import amplification as amp

    succ = np.array([1, 0, 0, 1, 0, 0.0])
    pol = pr.SequencePolicy.tabular(1, 1, 6, succ[None], theta=np.array([0, 1.0, 0.5, -1.5, 0.3, 0.8]))
    p_ref, beta, eps = float(pol.values()[0]), 1.0, 0.01
    cfg = pr.Algorithm2Config(num_iterations=4, num_prompts=1, num_generations=4096, num_epochs=200,
                              learning_rate=1.0, kappa=beta, kl_grad="exact", preset="paper2", smoothing=eps)
    run = pr.run_algorithm2(pol, cfg, rng=np.random.default_rng(30))
    rec = amp.iterate_pos(p_ref, beta, eps, max_iter=4).p
    assert np.abs(run.values[:, 0] - rec).max() < 0.03
    dr = amp.iterate_pos(p_ref, beta, eps, "dr_grpo", max_iter=4).p
    assert np.abs(run.values[1:3, 0] - dr[1:3]).max() > 0.1      # negative control


# ------------------------------------------------------------------ property tests vs a naive twin

from hypothesis import given, strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


def _naive_advantages(z, preset, eps=0.0, smoothing=0.0):
    """Loop-by-loop transcription of eqs. (15)-(16) and the framework formulas (one group)."""
    G = len(z)
    if max(z) - min(z) <= 1e-12 * (1 + abs(max(z))):
        return [0.0] * G
    mean = sum(z) / G
    out = []
    for g in range(G):
        loo = (sum(z) - z[g]) / (G - 1)
        se = (sum((x - mean) ** 2 for x in z) / (G - 1)) ** 0.5
        if preset == "paper":
            out.append((z[g] - loo) / (se + eps))
        elif preset == "grpo":
            out.append((z[g] - mean) / (se + eps))
        elif preset == "dr_grpo":
            out.append(z[g] - mean)
        elif preset == "rloo":
            out.append(z[g] - loo)
        else:
            out.append((z[g] - mean) / (mean * (1 - mean) + smoothing) ** 0.5)
    return out


@given(arrays(float, st.integers(2, 9), elements=st.floats(-3, 3)),
       st.sampled_from(["paper", "grpo", "dr_grpo", "rloo", "paper2"]), st.sampled_from([0.0, 1e-4, 1e-6, 1e-9]))
def test_advantages_equal_naive_twin(z, preset, eps):
    if preset == "paper2":
        z = (z > 0).astype(float)
    A, _ = pr.normalized_advantages(z, preset=preset, eps=eps, smoothing=0.01)
    np.testing.assert_allclose(A, _naive_advantages(list(z), preset, eps, 0.01), rtol=1e-10, atol=1e-10)


@given(arrays(float, 6, elements=st.floats(-3, 3)), st.permutations(range(6)), st.floats(-5, 5))
def test_advantages_permutation_equivariant_and_shift_invariant(z, perm, shift):
    for preset in ("paper", "grpo", "dr_grpo", "rloo"):
        A, _ = pr.normalized_advantages(z, preset=preset)
        Ap, _ = pr.normalized_advantages(z[list(perm)], preset=preset)
        np.testing.assert_allclose(Ap, A[list(perm)], atol=1e-12)
        As, zs = pr.normalized_advantages(z + shift, preset=preset)
        if not zs:
            np.testing.assert_allclose(As, A, rtol=1e-7, atol=1e-7)


def test_run_algorithm2_accepts_bandit():
    from ustat_grpo.policies.bandits import SoftmaxBandit

    b = SoftmaxBandit(success_probs=[0.1, 0.5, 0.9], theta=[0.0, 0.0, 0.0])
    cfg = pr.Algorithm2Config(num_iterations=5, num_prompts=2, num_generations=4, learning_rate=0.5)
    r1 = pr.run_algorithm2(b, cfg, rng=np.random.default_rng(40))
    r2 = pr.run_algorithm2(pr.SequencePolicy.from_bandit(b), cfg, rng=np.random.default_rng(40))
    np.testing.assert_array_equal(r1.theta, r2.theta)
    np.testing.assert_allclose(r1.objective[-1], b.objective(r1.theta[-1]), rtol=1e-12)


def test_sequence_policy_satisfies_the_protocol():
    """``sample`` draws exactly what ``sample_sequences`` draws under the same seed and adds the
    sequence scores ``W = sum_t W_t``; ``values`` is vectorised over rows of theta."""
    from ustat_grpo.policies.policy import ExactMoments, KnownOptimum, Policy

    pol = _policy()
    assert isinstance(pol, Policy) and isinstance(pol, ExactMoments) and not isinstance(pol, KnownOptimum)
    s = pol.sample(3, 4, rng=21)
    pid, seqs, Z = pol.sample_sequences(3, 4, rng=np.random.default_rng(21))
    np.testing.assert_array_equal(s.prompt_ids, pid)
    np.testing.assert_array_equal(s.sequences, seqs)
    np.testing.assert_array_equal(s.rewards, Z)
    np.testing.assert_allclose(s.scores, pol.token_scores(pid[:, None], seqs).sum(-2), rtol=1e-15)
    thetas = np.stack([pol.theta, -pol.theta])
    np.testing.assert_allclose(pol.values(thetas), [pol.values(t) for t in thetas], rtol=1e-15)
    moved = pol.with_theta(np.zeros(pol.dim))
    assert np.all(moved.theta == 0) and not np.all(pol.theta == 0)
    with pytest.raises(ValueError, match="theta must have shape"):
        pol.with_theta(np.zeros(pol.dim + 1))
