"""Tests for ``ustat_grpo.experiments.algorithm1`` (Algorithm 1) against a private Gaussian-policy toy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ustat_grpo.experiments.algorithm1 import Algorithm1Result, run_algorithm1, step_sizes
from ustat_grpo.core.testing import assert_mc_close


@dataclass(frozen=True)
class _Sample:
    rewards: np.ndarray
    scores: np.ndarray
    prompt_ids: np.ndarray


@dataclass(frozen=True)
class _Moments:
    value: np.ndarray


class _ToyGaussianPolicy:
    """Y | x ~ N(a_x . theta, s^2), reward Z = exp(-(Y - c_x)^2 / (2 tau^2)); scalar objective only."""

    def __init__(self, A, probs, c, s=0.7, tau=0.8, theta=None):
        self.A = np.asarray(A, float)
        self.prompt_probs = np.asarray(probs, float)
        self.c = np.asarray(c, float)
        self.s, self.tau = float(s), float(tau)
        self.dim = self.A.shape[1]
        self.num_contexts = self.A.shape[0]
        self.theta = np.zeros(self.dim) if theta is None else np.asarray(theta, float)

    def sample(self, num_prompts, num_generations, *, rng, theta=None):
        th = np.atleast_2d(self.theta if theta is None else theta)  # (R, d)
        R = th.shape[0]
        ids = rng.choice(self.num_contexts, size=(R, num_prompts), p=self.prompt_probs)  # (R, B)
        a = self.A[ids]  # (R, B, d)
        m = np.einsum("rbd,rd->rb", a, th)  # (R, B)
        eps = rng.standard_normal((R, num_prompts, num_generations))  # (R, B, G)
        y = m[..., None] + self.s * eps
        z = np.exp(-(y - self.c[ids][..., None]) ** 2 / (2 * self.tau**2))
        w = (eps / self.s)[..., None] * a[:, :, None, :]  # (R, B, G, d)
        return _Sample(rewards=z, scores=w, prompt_ids=ids)

    def sample_replicates(self, thetas, num_prompts, num_generations, *, rng):
        return self.sample(num_prompts, num_generations, rng=rng, theta=thetas)

    def with_theta(self, theta):
        return _ToyGaussianPolicy(self.A, self.prompt_probs, self.c, self.s, self.tau, theta)

    def values(self, theta=None):
        th = self.theta if theta is None else np.asarray(theta, float)
        m = th @ self.A.T  # (..., P)
        t2 = self.tau**2 + self.s**2
        return self.tau / np.sqrt(t2) * np.exp(-(m - self.c) ** 2 / (2 * t2))

    def _v(self, theta):
        m = self.A @ theta
        t2 = self.tau**2 + self.s**2
        return self.tau / np.sqrt(t2) * np.exp(-(m - self.c) ** 2 / (2 * t2)), m, t2

    def moments(self, theta=None):
        return _Moments(value=self._v(self.theta if theta is None else theta)[0])

    def objective(self, theta=None):
        th = self.theta if theta is None else np.asarray(theta, float)
        if th.ndim != 1:
            raise ValueError("scalar objective only")
        return float(self.prompt_probs @ self._v(th)[0])

    def gradient(self, theta=None):
        v, m, t2 = self._v(self.theta if theta is None else theta)
        return (self.prompt_probs * v * (-(m - self.c) / t2)) @ self.A

    def optimum(self):
        th, *_ = np.linalg.lstsq(self.A, self.c, rcond=None)
        return th, self.tau / np.sqrt(self.tau**2 + self.s**2)


def _vanilla(rewards, scores):
    return (rewards[..., None] * scores).mean(axis=-2)


def _oracle(rewards, scores, *, values):
    return ((rewards - values[..., None])[..., None] * scores).mean(axis=-2)


_oracle.needs_values = True


def _toy():
    A = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 2.0]])  # rank 2: over-parameterised
    return _ToyGaussianPolicy(A, [0.5, 0.3, 0.2], A @ np.array([0.3, -0.2, 0.1]))


class _ConstantPolicy:
    """Degenerate policy: every reward 1 and every score the all-ones vector."""

    dim, num_contexts = 2, 1
    theta = np.zeros(2)
    prompt_probs = np.ones(1)

    def with_theta(self, theta):
        return self

    def sample(self, num_prompts, num_generations, *, rng, theta=None):
        R = np.atleast_2d(theta).shape[0]
        return _Sample(rewards=np.ones((R, num_prompts, num_generations)),
                       scores=np.ones((R, num_prompts, num_generations, 2)),
                       prompt_ids=np.zeros((R, num_prompts), int))

    def sample_replicates(self, thetas, num_prompts, num_generations, *, rng):
        return self.sample(num_prompts, num_generations, rng=rng, theta=thetas)

    def values(self, theta=None):
        return np.sum(theta, axis=-1, keepdims=True)  # (..., P=1)

    def objective(self, theta=None):
        return float(np.sum(theta))

    def gradient(self, theta=None):
        return np.ones(2)

    def optimum(self):
        return np.zeros(2), 0.0


def test_step_sizes_closed_form():
    np.testing.assert_allclose(step_sizes(4, step_size="harmonic", beta=3.0, t0=2.0), 3.0 / np.arange(3, 7))
    np.testing.assert_array_equal(step_sizes(3, step_size="constant", beta=0.1), [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="step_size"):
        step_sizes(3, step_size="cosine", beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        step_sizes(3, beta=-1.0)


@pytest.mark.parametrize("schedule", ["constant", "harmonic"])
def test_deterministic_path_equals_sum_of_steps(schedule):
    rng = np.random.default_rng(1)
    res = run_algorithm1(_ConstantPolicy(), _vanilla, num_prompts=3, num_generations=2, num_steps=7,
                         step_size=schedule, beta=0.5, t0=1.5, replicates=4, rng=rng,
                         record=[0, 3, 7], record_thetas=True)
    cum = np.concatenate([[0.0], np.cumsum(step_sizes(7, step_size=schedule, beta=0.5, t0=1.5))])
    np.testing.assert_allclose(res.theta_path[0, :, 0], cum[[0, 3, 7]], rtol=1e-14)
    np.testing.assert_allclose(res.thetas, cum[-1] * np.ones((4, 2)), rtol=1e-14)
    np.testing.assert_allclose(res.gap[:, -1], -2 * cum[-1], rtol=1e-14)  # J* = 0, J = sum(theta)


def test_one_step_matches_manual_update_under_same_seed():
    pol = _toy()
    theta0 = np.array([0.5, 0.1, -0.4])
    res = run_algorithm1(pol, _vanilla, num_prompts=2, num_generations=4, num_steps=1, step_size="constant",
                         beta=0.3, replicates=5, rng=np.random.default_rng(7), theta0=theta0)
    s = pol.sample(2, 4, rng=np.random.default_rng(7), theta=np.tile(theta0, (5, 1)))
    manual = theta0 + 0.3 * _vanilla(s.rewards, s.scores).mean(axis=1)
    np.testing.assert_allclose(res.thetas, manual, rtol=1e-13, atol=1e-15)


def test_oracle_receives_values_at_current_theta():
    pol = _toy()
    theta0 = np.array([0.5, 0.1, -0.4])
    res = run_algorithm1(pol, _oracle, num_prompts=3, num_generations=2, num_steps=1, step_size="constant",
                         beta=0.3, replicates=3, rng=np.random.default_rng(8), theta0=theta0)
    s = pol.sample(3, 2, rng=np.random.default_rng(8), theta=np.tile(theta0, (3, 1)))
    vals = pol.moments(theta0).value[s.prompt_ids]  # (R, B)
    manual = theta0 + 0.3 * _oracle(s.rewards, s.scores, values=vals).mean(axis=1)
    np.testing.assert_allclose(res.thetas, manual, rtol=1e-13, atol=1e-15)
    assert res.config["estimator"] == "_oracle"


def test_mean_one_step_is_exact_gradient_step():
    """E[theta_1] = theta_0 + eta * g(theta_0) (unbiased estimators), judged by a z bound."""
    pol = _toy()
    theta0 = np.array([0.5, 0.1, -0.4])
    R = 20000
    for k, est in enumerate((_vanilla, _oracle)):
        res = run_algorithm1(pol, est, num_prompts=2, num_generations=3, num_steps=1, step_size="constant",
                             beta=1.0, replicates=R, rng=np.random.default_rng(100 + k), theta0=theta0)
        step = res.thetas - theta0  # (R, d)
        assert_mc_close(step.mean(0), step.std(0, ddof=1) / np.sqrt(R), pol.gradient(theta0), m=6)
        # negative control: a gradient of the wrong sign must be rejected
        with pytest.raises(AssertionError):
            assert_mc_close(step.mean(0), step.std(0, ddof=1) / np.sqrt(R), -pol.gradient(theta0), m=6)


def test_harmonic_run_converges_and_records_gap():
    pol = _toy()
    res = run_algorithm1(pol, _oracle, num_prompts=2, num_generations=4, num_steps=400, step_size="harmonic",
                         beta=20.0, t0=20.0, replicates=200, rng=np.random.default_rng(3),
                         theta0=np.array([1.0, -1.0, 0.5]), record=[0, 50, 400])
    assert isinstance(res, Algorithm1Result)
    assert res.gap.shape == (200, 3) and np.all(res.gap >= -1e-12)
    assert res.gap[:, 2].mean() < 0.1 * res.gap[:, 0].mean()
    np.testing.assert_allclose(res.gap[:, -1],
                               [res.j_star - pol.objective(t) for t in res.thetas], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(res.scaled_gap()[:, 1], 50 * res.gap[:, 1])
    assert "Algorithm 1" in res.summary() and "step*mean gap" in str(res)
    d = res.to_dict()
    assert d["config"]["num_steps"] == 400 and len(d["record_steps"]) == 3


def test_input_validation():
    pol = _toy()
    kw = dict(num_prompts=2, num_generations=2, num_steps=3, beta=0.1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="record"):
        run_algorithm1(pol, _vanilla, record=[5], **kw)
    with pytest.raises(ValueError, match="theta0"):
        run_algorithm1(pol, _vanilla, theta0=np.zeros(4), **kw)
    with pytest.raises(ValueError, match="num_generations"):
        run_algorithm1(pol, _vanilla, **{**kw, "num_generations": 0})
    with pytest.raises(TypeError):
        run_algorithm1(pol, 3, **kw)


def test_vectorised_values_match_bandit_moments():
    """The loop-free V(x; theta_r) helpers equal the bandits' exact moments row by row."""
    from ustat_grpo.policies import bandits
    from ustat_grpo.experiments.algorithm1 import _objective_batch, _values_batch

    rng = np.random.default_rng(4)
    pols = [bandits.GaussianPolicyBandit(action_std=0.8, reward_width=0.6),
            bandits.ContextualSoftmaxBandit(rng.standard_normal((3, 4, 2)), success_probs=rng.uniform(size=(3, 4)))]
    for pol in pols:
        thetas = rng.standard_normal((5, pol.dim))
        want = np.stack([pol.moments(t).value for t in thetas])
        np.testing.assert_allclose(_values_batch(pol, thetas), want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(_objective_batch(pol, thetas), [pol.objective(t) for t in thetas],
                                   rtol=1e-12)


def test_registry_estimators_by_name_and_by_callable():
    """``"oracle"`` and ``ESTIMATORS["oracle"]`` both receive V(x); same seed -> same path."""
    from ustat_grpo.policies import bandits
    from ustat_grpo.theory import estimators

    pol = bandits.GaussianPolicyBandit(action_std=0.5, reward_width=1.0)
    kw = dict(num_prompts=2, num_generations=3, num_steps=5, step_size="harmonic", beta=2.0, t0=5.0,
              replicates=4, theta0=np.array([0.2, 0.1, -0.3]))
    a = run_algorithm1(pol, "oracle", rng=np.random.default_rng(2), **kw)
    b = run_algorithm1(pol, estimators.ESTIMATORS["oracle"], rng=np.random.default_rng(2), **kw)
    np.testing.assert_array_equal(a.thetas, b.thetas)
    assert b.config["estimator"] == "oracle"
    with pytest.raises(ValueError, match="unknown estimator"):
        run_algorithm1(pol, "nope", rng=np.random.default_rng(2), **kw)


def test_toys_satisfy_the_protocols():
    from ustat_grpo.policies.policy import ExactMoments, KnownOptimum, Policy, ReplicatedSampling

    for pol in (_toy(), _ConstantPolicy()):
        assert all(isinstance(pol, p) for p in (Policy, ReplicatedSampling, ExactMoments, KnownOptimum))


def test_policy_without_replicated_sampling_runs_replicate_by_replicate():
    """A protocol ``Policy`` without ``sample_replicates`` is stepped through ``with_theta(theta_r)
    .sample``, replicate after replicate from one generator; the manual loop reproduces it."""
    from ustat_grpo.policies.policy import Policy, ReplicatedSampling

    class _Single(_ToyGaussianPolicy):
        sample_replicates = None  # runtime protocols treat a None member as absent

        def with_theta(self, theta):
            return _Single(self.A, self.prompt_probs, self.c, self.s, self.tau, theta)

        def sample(self, num_prompts, num_generations, *, rng, theta=None):
            s = super().sample(num_prompts, num_generations, rng=rng, theta=theta)
            return _Sample(rewards=s.rewards[0], scores=s.scores[0], prompt_ids=s.prompt_ids[0])

    base = _toy()
    pol = _Single(base.A, base.prompt_probs, base.c, base.s, base.tau)
    assert isinstance(pol, Policy) and not isinstance(pol, ReplicatedSampling)
    theta0 = np.array([[0.5, 0.1, -0.4], [0.0, 0.2, 0.3]])
    res = run_algorithm1(pol, _oracle, num_prompts=2, num_generations=3, num_steps=1, step_size="constant",
                         beta=0.3, replicates=2, rng=11, theta0=theta0)
    rng = np.random.default_rng(11)
    for r in range(2):
        s = pol.with_theta(theta0[r]).sample(2, 3, rng=rng)
        vals = pol.values(theta0[r])[s.prompt_ids]
        manual = theta0[r] + 0.3 * _oracle(s.rewards, s.scores, values=vals).mean(axis=0)
        np.testing.assert_allclose(res.thetas[r], manual, rtol=1e-13, atol=1e-15)


def test_rejects_objects_outside_the_protocol():
    class _NoMoments:
        dim, theta = 1, np.zeros(1)

        def with_theta(self, theta):
            return self

        def sample(self, num_prompts, num_generations, *, rng):
            raise AssertionError("never sampled")

    with pytest.raises(TypeError, match="ExactMoments"):
        run_algorithm1(_NoMoments(), _vanilla, num_prompts=1, num_generations=2, num_steps=1, beta=0.1, rng=0)


def test_bandit_and_sequence_policy_through_the_protocol():
    """The same one-token problem as a ContextualSoftmaxBandit (ReplicatedSampling) and as a
    SequencePolicy (stepped replicate by replicate): both runs start at the same gap and improve."""
    from ustat_grpo.policies import bandits
    from ustat_grpo.experiments import algorithm2 as practical

    rng = np.random.default_rng(12)
    b = bandits.ContextualSoftmaxBandit(rng.standard_normal((2, 3, 2)), success_probs=rng.uniform(size=(2, 3)))
    seq = practical.SequencePolicy.from_bandit(b)

    class _SeqWithOptimum(practical.SequencePolicy):
        def optimum(self):
            return b.optimum()

    pol = _SeqWithOptimum(seq.features, seq.success_probs, prompt_probs=seq.prompt_probs, theta=seq.theta)
    kw = dict(num_prompts=4, num_generations=4, num_steps=30, step_size="constant", beta=0.5, replicates=3,
              record=[0, 30])
    rb = run_algorithm1(b, "leave_one_out", rng=1, **kw)
    rs = run_algorithm1(pol, "leave_one_out", rng=1, **kw)
    np.testing.assert_allclose(rb.gap[:, 0], rs.gap[:, 0], rtol=1e-12)
    assert rb.gap[:, 1].mean() < rb.gap[:, 0].mean() and rs.gap[:, 1].mean() < rs.gap[:, 0].mean()
