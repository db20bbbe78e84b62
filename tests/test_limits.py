"""Tests for ``ustat_grpo.theory.limits`` (Theorem 8 weights): closed forms, Lyapunov residual, exact
covariances against Monte Carlo with a negative control."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, linalg

from ustat_grpo.policies import bandits
from ustat_grpo.theory import estimators
from ustat_grpo.theory.limits import (LimitLaw, identifiable_subspace, limit_law, limit_weights, lyapunov_sigma,
                               noise_covariance, per_prompt_covariance)
from ustat_grpo.core.testing import assert_mc_close


def _random_spd(rng, r, scale=1.0):
    A = rng.standard_normal((r, r))
    return scale * (A @ A.T / r + 0.3 * np.eye(r))


def test_eigenbasis_closed_form():
    """spec §2.10 [D]: (P^T Sigma P)_jl = beta^2 Omega~_jl / (beta (kappa_j + kappa_l) - 1)."""
    rng = np.random.default_rng(0)
    K, Om = _random_spd(rng, 4), _random_spd(rng, 4)
    beta = 1.0 / np.linalg.eigvalsh(K).min()  # beta * lambda_min = 1 > 1/2
    S = lyapunov_sigma(K, Om, beta=beta)
    kap, P = np.linalg.eigh(K)
    Ot = P.T @ Om @ P
    want = beta**2 * Ot / (beta * (kap[:, None] + kap[None, :]) - 1)
    np.testing.assert_allclose(P.T @ S @ P, want, rtol=1e-11, atol=1e-13)


def test_commuting_case_weights():
    """Omega commuting with K: w_k = beta^2 kappa_k omega_k / (2 (2 beta kappa_k - 1))."""
    kap, om, beta = np.array([3.0, 1.5, 0.8]), np.array([0.2, 1.0, 0.5]), 2.0
    R = linalg.qr(np.random.default_rng(1).standard_normal((5, 5)))[0]
    Q = R[:, :3]  # rank-3 Hessian in d = 5, rotated
    H = -Q @ np.diag(kap) @ Q.T
    Gam = Q @ np.diag(om) @ Q.T + R[:, 3:] @ np.diag([7.0, 9.0]) @ R[:, 3:].T  # noise in null space is ignored
    ll = limit_weights(H, Gam, beta=beta)
    want = np.sort(beta**2 * kap * om / (2 * (2 * beta * kap - 1)))[::-1]
    np.testing.assert_allclose(ll.weights, want, rtol=1e-12)
    assert ll.rank == 3 and ll.lyapunov_residual < 1e-13
    np.testing.assert_allclose(ll.mean(), 0.5 * np.trace(ll.K @ ll.Sigma), rtol=1e-12)


def test_integral_form_of_sigma():
    """Sigma = beta^2 int_0^inf exp(-A u) Omega exp(-A u) du, A = beta K - I/2 (a naive twin)."""
    rng = np.random.default_rng(2)
    K, Om, beta = _random_spd(rng, 3), _random_spd(rng, 3), 0.0
    beta = 0.8 / np.linalg.eigvalsh(K).min()
    A = beta * K - 0.5 * np.eye(3)
    val, err = integrate.quad_vec(lambda u: linalg.expm(-A * u) @ Om @ linalg.expm(-A * u), 0, np.inf,
                                  epsabs=1e-13, epsrel=1e-11)
    np.testing.assert_allclose(lyapunov_sigma(K, Om, beta=beta), beta**2 * val, rtol=1e-8)


def test_lyapunov_residual_and_paper_display():
    rng = np.random.default_rng(3)
    K, Om = _random_spd(rng, 3), _random_spd(rng, 3)
    beta = 2.0 / np.linalg.eigvalsh(K).min()
    S = lyapunov_sigma(K, Om, beta=beta)
    A = beta * K - 0.5 * np.eye(3)
    np.testing.assert_allclose(A @ S + S @ A, beta**2 * Om, rtol=1e-11, atol=1e-12)
    H = -K
    good = limit_weights(H, Om, beta=beta)
    bad = limit_weights(H, Om, beta=beta, paper_display=True)
    np.testing.assert_allclose(bad.weights * beta**2, good.weights, rtol=1e-11)
    assert bad.paper_display and not good.paper_display


def test_refuses_small_beta():
    K = np.diag([1.0, 0.2])
    with pytest.raises(ValueError, match=r"beta \* lambda_min\(K\) > 1/2"):
        lyapunov_sigma(K, np.eye(2), beta=2.5)  # 2.5 * 0.2 = 0.5: boundary excluded
    lyapunov_sigma(K, np.eye(2), beta=2.6)


def test_identifiable_subspace():
    pol = bandits.GaussianPolicyBandit()
    th, _ = pol.optimum()
    H = pol.hessian(th)
    Q, K = identifiable_subspace(H)
    assert Q.shape == (3, 2)
    np.testing.assert_allclose(Q.T @ Q, np.eye(2), atol=1e-14)
    lam = np.linalg.eigvalsh(-H)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(K)), np.sort(lam[np.abs(lam) > 1e-9]), rtol=1e-12)
    with pytest.raises(ValueError):
        identifiable_subspace(np.zeros((2, 2)))


def test_prompt_baseline_reduces_to_oracle_and_vanilla():
    pol = bandits.GaussianPolicyBandit(action_std=0.5, reward_width=1.0)
    mom = pol.moments(pol.optimum()[0] + np.array([0.2, 0.0, -0.1]))
    G = 5
    np.testing.assert_allclose(per_prompt_covariance(mom, "prompt_baseline", num_generations=G, baseline=mom.value),
                               per_prompt_covariance(mom, "oracle", num_generations=G), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(per_prompt_covariance(mom, "prompt_baseline", num_generations=G, baseline=0.0),
                               per_prompt_covariance(mom, "vanilla", num_generations=G), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="unknown estimator"):                 # one name per estimator
        per_prompt_covariance(mom, "rloo", num_generations=G)
    with pytest.raises(ValueError):
        per_prompt_covariance(mom, "leave_one_out", num_generations=1)
    with pytest.raises(ValueError, match="baseline"):
        per_prompt_covariance(mom, "prompt_baseline", num_generations=2)


def _grpo_wrong(mom, G):
    """Negative control: GRPO residual with 1/G^2 instead of 1/(G(G-1))."""
    g = mom.grad
    return (mom.sigma_oracle / G + (mom.sigma2[:, None, None] * mom.fisher + np.einsum("pd,pe->pde", g, g)) / G**2)


def test_noise_covariance_matches_monte_carlo():
    """Exact Gamma vs the covariance of simulated minibatch estimates (z bound on 6 entries each)."""
    pol = bandits.GaussianPolicyBandit(action_std=0.5, reward_width=1.0)
    th = pol.optimum()[0] + np.array([0.15, -0.1, 0.05])  # off the optimum: g(x) != 0
    mom = pol.moments(th)
    B, G, N = 2, 2, 100_000
    rng = np.random.default_rng(9)
    s = pol.sample(B, G, rng=rng, theta=np.tile(th, (N, 1)))
    gbar = mom.prompt_probs @ mom.grad
    C = 0.5 * np.ones(3)
    fns = {
        "vanilla": lambda: estimators.vanilla(s.rewards, s.scores),
        "leave_one_out": lambda: estimators.leave_one_out(s.rewards, s.scores),
        "oracle": lambda: estimators.oracle(s.rewards, s.scores, values=mom.value[s.prompt_ids]),
        "prompt_baseline": lambda: estimators.prompt_baseline(s.rewards, s.scores, baseline=C[s.prompt_ids]),
    }
    iu = np.triu_indices(3)
    for name, fn in fns.items():
        e = fn().mean(axis=1) - gbar  # (N, d): minibatch error
        prods = np.einsum("nd,ne->nde", e, e)[:, iu[0], iu[1]]  # (N, 6)
        exact = noise_covariance(mom, name, num_prompts=B, num_generations=G,
                                 baseline=C if name == "prompt_baseline" else None)[iu]
        assert_mc_close(prods.mean(0), prods.std(0, ddof=1) / np.sqrt(N), exact, m=24, err_msg=name)
        if name == "leave_one_out":
            wrong = noise_covariance(mom, "oracle", num_prompts=B, num_generations=G)
            f = mom.prompt_probs
            wrong = wrong + np.einsum("p,pde->de", f, _grpo_wrong(mom, G) - mom.sigma_oracle / G) / B
            with pytest.raises(AssertionError):
                assert_mc_close(prods.mean(0), prods.std(0, ddof=1) / np.sqrt(N), wrong[iu], m=24)


def test_limit_law_invariant_along_maximiser_set():
    """A7 / Cor 9's assumption: the weights do not depend on which maximiser is used."""
    pol = bandits.GaussianPolicyBandit(action_std=0.5, reward_width=1.0)
    th, _ = pol.optimum()
    null = linalg.null_space(pol.u)[:, 0]
    a = limit_law(pol, "leave_one_out", num_prompts=2, num_generations=4, beta=5.0)
    b = limit_law(pol, "leave_one_out", num_prompts=2, num_generations=4, beta=5.0, theta=th + 0.7 * null)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-10)
    assert isinstance(a, LimitLaw) and "Theorem 8" in a.summary()
    assert a.to_dict()["config"]["estimator"] == "leave_one_out"
    law = a.law()
    assert law.mean() == pytest.approx(a.mean(), rel=1e-12)


def test_chi2_limit_script_records_provenance(tmp_path):
    """simulations/chi2_limit.py: tiny run; the NetCDF holds the predicted weights and provenance."""
    import json

    import xarray as xr

    from simulations import chi2_limit as mod

    rc = mod.main(["--replicates", "40", "--num-steps", "60", "--estimators", "leave_one_out", "--no-plot",
                   "--ks-nodes", "17", "--out", str(tmp_path), "--seed", "123"])
    assert rc == 0
    ds = xr.load_dataset(tmp_path / "chi2_limit.nc")
    pol = bandits.GaussianPolicyBandit(action_std=0.5, reward_width=1.0)
    ll = limit_law(pol, "leave_one_out", num_prompts=2, num_generations=4, beta=float(ds.attrs["beta"]))
    np.testing.assert_allclose(ds.weights.sel(estimator="leave_one_out").values, ll.weights, rtol=1e-12)
    assert ds.attrs["seed"] == "123" and json.loads(ds.attrs["config"])["num_steps"] == 60
    assert ds.attrs["command"].startswith("python -m simulations.chi2_limit")
    assert ds.n_gap.shape == (1, 40) and np.all(ds.n_gap.values >= 0)
    assert mod.main(["--replicates", "1"]) == 2
