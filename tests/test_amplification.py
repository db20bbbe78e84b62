"""Tests of ustat_grpo.theory.amplification against independent computations (Paper 2, spec section 3)."""
import numpy as np
import pytest
from scipy import optimize, special

from ustat_grpo.theory import amplification as amp
from ustat_grpo.theory import attractor, nonparametric


def _bandit(rng, K=7, n_success=3):
    pi_ref = rng.dirichlet(np.ones(K))
    success = np.zeros(K, bool)
    success[rng.choice(K, n_success, replace=False)] = True
    return pi_ref, success


def _numerical_argmax(objective, K):
    """Maximise ``objective(pi)`` over the simplex by BFGS on unconstrained logits (independent of the tilt)."""
    f = lambda z: -objective(special.softmax(z))  # noqa: E731
    res = optimize.minimize(f, np.zeros(K), method="BFGS", options=dict(gtol=1e-11, maxiter=5000))
    return special.softmax(res.x)


# ------------------------------------------------------------------ scalar maps

def test_h_matches_paper_display():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.001, 0.999, 50)
    p_ref, beta, eps = 0.2, 0.7, 0.01
    paper = 1.0 / (1.0 + (1 - p_ref) / p_ref * np.exp(-1 / beta * (p * (1 - p) + eps) ** -0.5))
    np.testing.assert_allclose(amp.pos_map(p, p_ref, beta, eps), paper, rtol=1e-13)


@pytest.mark.parametrize("p_ref,beta,eps", [(0.1, 0.5, 0.0), (0.3, 2.0, 1e-3), (1e-4, 7.24, 1e-5)])
def test_h_prime_finite_differences(p_ref, beta, eps):
    p = np.linspace(0.02, 0.98, 41)
    step = 1e-6
    fd = (amp.pos_map(p + step, p_ref, beta, eps) - amp.pos_map(p - step, p_ref, beta, eps)) / (2 * step)
    scale = np.abs(fd).max()
    np.testing.assert_allclose(amp.h_prime(p, p_ref, beta, eps), fd, rtol=1e-6, atol=1e-8 * scale)
    np.testing.assert_allclose(amp.pos_map_derivative(p, p_ref, beta, eps), fd, rtol=1e-6, atol=1e-8 * scale)
    # negative control: exponent 1/2 instead of 3/2 in the denominator does not match
    h = amp.pos_map(p, p_ref, beta, eps)
    wrong = -h * (1 - h) * (1 - 2 * p) / (2 * beta * (p * (1 - p) + eps) ** 0.5)
    assert not np.allclose(wrong, fd, rtol=1e-3, atol=1e-8 * scale)
    # shape: decreasing below 1/2, increasing above
    assert np.all(amp.h_prime(p[p < 0.5], p_ref, beta, eps) < 0)
    assert np.all(amp.h_prime(p[p > 0.5], p_ref, beta, eps) > 0)


@pytest.mark.parametrize("variant,alpha", [("mirror", None), ("both", 0.3), ("dr_grpo", None),
                                           ("mirror_dr_grpo", None)])
def test_derivative_other_variants(variant, alpha):
    p = np.linspace(0.05, 0.95, 19)
    step = 1e-6
    fd = (amp.pos_map(p + step, 0.2, 1.3, 0.02, variant, alpha=alpha)
          - amp.pos_map(p - step, 0.2, 1.3, 0.02, variant, alpha=alpha)) / (2 * step)
    np.testing.assert_allclose(amp.pos_map_derivative(p, 0.2, 1.3, 0.02, variant, alpha=alpha), fd,
                               rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ exact non-parametric update

@pytest.mark.parametrize("variant,alpha", [("ref", None), ("mirror", None), ("both", 0.4),
                                           ("dr_grpo", None), ("mirror_dr_grpo", None)])
def test_recurrence_matches_nonparametric_iteration(variant, alpha):
    rng = np.random.default_rng(7)
    pi_ref, success = _bandit(rng)
    beta, eps = 1.5, 0.01
    pi = pi_ref.copy()
    p_rec = float(pi_ref[success].sum())
    for _ in range(8):
        pi = nonparametric.nonparametric_step(pi, pi_ref, success, beta, eps, variant, alpha=alpha)
        p_rec = float(amp.pos_map(p_rec, pi_ref[success].sum(), beta, eps, variant, alpha=alpha))
        np.testing.assert_allclose(pi[success].sum(), p_rec, rtol=1e-12)


@pytest.mark.parametrize("variant,alpha", [("ref", None), ("mirror", None), ("both", 0.4), ("dr_grpo", None)])
def test_closed_form_is_the_argmax(variant, alpha):
    """Optimality certificate: KKT stationarity on the simplex + a numerical optimiser reaches it."""
    rng = np.random.default_rng(11)
    pi_ref, success = _bandit(rng, K=6, n_success=2)
    pi_prev = rng.dirichlet(np.ones(6))  # an arbitrary previous policy, not a tilt of pi_ref
    beta, eps = 0.8, 0.05
    p_prev = float(pi_prev[success].sum())
    norm = "mean" if variant == "dr_grpo" else "mean_std"
    a = {"ref": 1.0, "dr_grpo": 1.0, "mirror": 0.0, "both": alpha}[variant]
    star = nonparametric.nonparametric_step(pi_prev, pi_ref, success, beta, eps, variant, alpha=alpha)
    obj = lambda pi: nonparametric.regularized_objective(  # noqa: E731
        pi, success, p_prev, beta, eps, pi_ref=pi_ref, pi_prev=pi_prev, alpha=a, normalization=norm)
    A = amp.whitened_advantage(success.astype(float), p_prev, eps, normalization=norm)
    grad = A - beta * (a * (np.log(star / pi_ref) + 1) + (1 - a) * (np.log(star / pi_prev) + 1))
    assert np.ptp(grad) < 1e-12  # d/d pi constant on the simplex: stationary, hence (concave) optimal
    num = _numerical_argmax(obj, 6)
    np.testing.assert_allclose(num, star, atol=1e-6)
    assert obj(star) >= obj(num) - 1e-12
    for q in rng.dirichlet(np.ones(6), size=200):
        assert obj(star) >= obj(q)
    # negative control: dropping the 1/beta of the paper's general theorem is not optimal
    wrong = pi_ref * np.exp(A)
    wrong /= wrong.sum()
    if variant == "ref":
        assert obj(wrong) < obj(star) - 1e-6


def test_renyi_correction_general_previous_policy():
    rng = np.random.default_rng(3)
    pi_ref, success = _bandit(rng, K=8, n_success=3)
    beta, eps, alpha = 1.1, 0.02, 0.35
    for _ in range(5):
        pi_prev = rng.dirichlet(np.ones(8))
        pi_n = nonparametric.nonparametric_step(pi_prev, pi_ref, success, beta, eps, "both", alpha=alpha)
        dR = nonparametric.renyi_correction(pi_ref, pi_prev, success, alpha)
        assert abs(dR) > 1e-3
        p_prev, p_ref = pi_prev[success].sum(), pi_ref[success].sum()
        pred = amp.pos_map(p_prev, p_ref, beta, eps, "both", alpha=alpha, delta_r=dR)
        np.testing.assert_allclose(pi_n[success].sum(), pred, rtol=1e-12)
        # negative controls: without Delta_R, or with the paper's 1{r=0} indicator, it fails
        assert not np.isclose(pi_n[success].sum(),
                              amp.pos_map(p_prev, p_ref, beta, eps, "both", alpha=alpha), rtol=1e-4)
        cond = lambda pi, m: pi[m] / pi[m].sum()  # noqa: E731
        paper = (1 - alpha) * (nonparametric.renyi_divergence(cond(pi_ref, ~success), cond(pi_prev, ~success), alpha)
                               - nonparametric.renyi_divergence(cond(pi_ref, ~success), cond(pi_prev, ~success), alpha))
        assert not np.isclose(pi_n[success].sum(), amp.pos_map(
            p_prev, p_ref, beta, eps, "both", alpha=alpha, delta_r=paper), rtol=1e-4)


def test_renyi_correction_vanishes_on_tilts():
    rng = np.random.default_rng(4)
    pi_ref, success = _bandit(rng)
    tilt = pi_ref * np.exp(1.7 * success)
    tilt /= tilt.sum()
    assert abs(nonparametric.renyi_correction(pi_ref, tilt, success, 0.3)) < 1e-14


def test_effective_beta_equivalence():
    rng = np.random.default_rng(5)
    pi_ref, success = _bandit(rng)
    p, beta, eps = 0.37, 0.9, 0.03
    a = nonparametric.optimal_policy(pi_ref, success, p, beta, eps)
    b = nonparametric.optimal_policy(pi_ref, success, p, float(amp.effective_beta(beta, p, eps)), normalization="mean")
    np.testing.assert_allclose(a, b, rtol=1e-12)


# ------------------------------------------------------------------ dynamics

def test_amplification_every_fixed_point_and_iterate_exceeds_p_ref():
    n_fp = 0
    for p_ref in (1e-4, 0.01, 0.2, 0.6):
        for beta in (0.3, 1.0, 7.24, 30.0):
            for eps in (0.0, 1e-5, 1e-2):
                for fp in attractor.fixed_points(p_ref, beta, eps):
                    n_fp += 1
                    assert fp.p > p_ref
                    np.testing.assert_allclose(amp.pos_map(fp.p, p_ref, beta, eps), fp.p, rtol=1e-9)
                tr = amp.iterate_pos(p_ref, beta, eps, max_iter=300)
                assert np.all(tr.p[1:] > p_ref)
    assert n_fp > 20


def test_fixed_points_complete_against_dense_scan():
    """Independent scan of h(p) - p on a p-grid finds the same number of roots (well-separated cases)."""
    for p_ref, beta, eps in [(0.2, 1.0, 0.01), (1e-4, 7.24, 1e-5), (0.05, 3.0, 1e-3), (0.3, 0.5, 0.0)]:
        fps = attractor.fixed_points(p_ref, beta, eps)
        L = np.linspace(-15, 40, 2_000_001)
        g = amp.pos_map(special.expit(L), p_ref, beta, eps)
        resid = special.logit(np.clip(g, 1e-300, 1 - 1e-16)) - L
        # count sign changes away from the float ceiling p ~ 1 - 1e-16
        ok = L < 36
        n_scan = int(np.sum(np.sign(resid[ok][:-1]) * np.sign(resid[ok][1:]) < 0))
        assert len([f for f in fps if f.logit < 36]) == n_scan


def test_spec_two_cycle_example():
    tr = amp.iterate_pos(1e-4, 7.24, 1e-5)
    assert tr.status == "cycle" and tr.period == 2
    np.testing.assert_allclose(tr.limit, [0.000148069, 0.855262], rtol=1e-5)
    cyc = attractor.two_cycles(1e-4, 7.24, 1e-5)
    assert len(cyc) == 1 and cyc[0].stable
    np.testing.assert_allclose([cyc[0].p_low, cyc[0].p_high], tr.limit, rtol=1e-9)
    h = lambda p: amp.pos_map(p, 1e-4, 7.24, 1e-5)  # noqa: E731
    np.testing.assert_allclose(h(h(cyc[0].p_low)), cyc[0].p_low, rtol=1e-9)
    # all interior fixed points of this case are unstable, so no start near p_ref converges
    assert not any(fp.stable for fp in attractor.fixed_points(1e-4, 7.24, 1e-5) if fp.p < 0.9999)


def test_convergent_case_reports_converged_to_stable_root():
    tr = amp.iterate_pos(0.2, 1.0, 0.01)
    assert tr.status == "converged"
    fps = attractor.fixed_points(0.2, 1.0, 0.01)
    stable = [f for f in fps if f.stable]
    assert any(abs(f.p - tr.limit[0]) < 1e-10 for f in stable)


def test_nonconvergence_is_reported():
    tr = amp.iterate_pos(1e-4, 7.24, 1e-5, max_iter=20)
    assert tr.status == "not_converged" and tr.period == 0


def test_mirror_monotone_to_one_spec_m4():
    tr = amp.iterate_pos(0.5, 5.0, 0.0, "mirror")
    assert tr.status == "to_one"
    assert np.all(np.diff(tr.logit) > 0)
    np.testing.assert_allclose(tr.p[1], 0.5986877, rtol=1e-6)
    n = int(np.argmax(tr.p >= 0.995))
    assert n == 8 and 0.995 <= tr.p[n] < 0.996
    assert attractor.fixed_points(0.3, 5.0, 0.0, "mirror") == []
    assert amp.pos_map(0.0, 0.3, 5.0, 0.1, "mirror") == 0.0  # 0 absorbing


def test_dr_grpo_constant_after_one_step():
    tr = amp.iterate_pos(0.3, 2.0, 0.1, "dr_grpo")
    np.testing.assert_allclose(tr.logit[1:], special.logit(0.3) + 0.5, rtol=1e-14)
    assert tr.status == "converged" and tr.num_iter == 2
    tm = amp.iterate_pos(0.3, 2.0, 0.1, "mirror_dr_grpo", logit_cap=5.0)
    np.testing.assert_allclose(tm.logit, special.logit(0.3) + np.arange(len(tm.logit)) / 2.0, rtol=1e-13)


def test_both_kl_fixed_point_equation():
    fps = attractor.fixed_points(0.2, 2.0, 0.05, "both", alpha=0.5)
    tr = amp.iterate_pos(0.2, 2.0, 0.05, "both", alpha=0.5)
    assert tr.status == "converged"
    L = special.logit(tr.limit[0])
    np.testing.assert_allclose(L, special.logit(0.2) + amp.omega(tr.limit[0], 0.05) / (0.5 * 2.0), rtol=1e-10)
    assert any(abs(f.p - tr.limit[0]) < 1e-10 for f in fps)


def test_boundaries():
    assert amp.pos_map(0.4, 0.0, 1.0, 0.1) == 0.0
    assert amp.pos_map(0.4, 1.0, 1.0, 0.1) == 1.0
    one_minus_h1 = 1 - amp.pos_map(1.0, 0.3, 2.0, 1e-2)
    np.testing.assert_allclose(one_minus_h1, special.expit(-special.logit(0.3) - 1 / (2.0 * 0.1)), rtol=1e-10)


# ------------------------------------------------------------------ contrastive loss (M1)

def test_weighted_contrastive_identity_m1():
    rng = np.random.default_rng(21)
    for _ in range(20):
        pi_old, success = _bandit(rng, K=9, n_success=4)
        pi = rng.dirichlet(np.ones(9))
        ec, eps = rng.uniform(0.05, 0.4), rng.uniform(0, 0.1)
        direct = nonparametric.grpo_clip_objective(pi, pi_old, success, ec, eps)
        np.testing.assert_allclose(nonparametric.contrastive_objective(pi, pi_old, success, ec, eps), direct, rtol=1e-12)
        np.testing.assert_allclose(nonparametric.balanced_contrastive_objective(pi, pi_old, success, ec, eps), direct,
                                   rtol=1e-12)
        # negative control: the paper's swapped remark f(x, y) = x min(y, 1 + eps) is different
        A = amp.whitened_advantage(success.astype(float), pi_old[success].sum(), eps)
        swapped = float(pi_old @ ((pi / pi_old) * np.minimum(A, 1 + ec)))
        assert not np.isclose(swapped, direct, rtol=1e-6)


def test_no_clip_gradient_is_arcsin_gradient():
    """Link to Paper 1: at pi = pi_old, eps = 0, grad of the no-clip objective = 2 grad arcsin sqrt p."""
    rng = np.random.default_rng(8)
    K = 5
    z0 = rng.normal(size=K)
    success = np.array([1, 0, 1, 0, 0], bool)
    p0 = special.softmax(z0)[success].sum()
    obj = lambda z: float(amp.whitened_advantage(success.astype(float), p0) @ special.softmax(z))  # noqa: E731
    arcs = lambda z: 2 * np.arcsin(np.sqrt(special.softmax(z)[success].sum()))  # noqa: E731
    e = np.eye(K) * 1e-6
    g1 = np.array([(obj(z0 + d) - obj(z0 - d)) / 2e-6 for d in e])
    g2 = np.array([(arcs(z0 + d) - arcs(z0 - d)) / 2e-6 for d in e])
    np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-9)
    assert not np.allclose(g1, g2 / 2, rtol=1e-3)  # negative control: arcsin without the factor 2


def test_input_validation():
    with pytest.raises(ValueError):
        amp.pos_map(0.5, 0.2, -1.0)
    with pytest.raises(ValueError):
        amp.pos_map(0.5, 0.2, 1.0, variant="nope")
    with pytest.raises(ValueError):
        amp.pos_map(0.5, 0.2, 1.0, variant="both")
    with pytest.raises(ValueError):
        nonparametric.optimal_policy([0.5, 0.6], [True, False], 0.5, 1.0)


def test_result_objects():
    tr = amp.iterate_pos(1e-4, 7.24, 1e-5)
    assert "cycle" in tr.summary() and str(tr) == tr.summary()
    import json
    json.dumps(tr.to_dict())
    fp = attractor.fixed_points(0.2, 1.0, 0.01)[0]
    json.dumps(fp.to_dict())
    assert "p*" in str(fp)
    json.dumps(attractor.two_cycles(1e-4, 7.24, 1e-5)[0].to_dict())


def test_multipliers_equal_h_prime():
    for fp in attractor.fixed_points(0.05, 3.0, 1e-3):
        if fp.p < 1 - 1e-9:
            np.testing.assert_allclose(fp.derivative, amp.h_prime(fp.p, 0.05, 3.0, 1e-3), rtol=1e-7)
    c = attractor.two_cycles(1e-4, 7.24, 1e-5)[0]
    np.testing.assert_allclose(c.multiplier, amp.h_prime(c.p_low, 1e-4, 7.24, 1e-5)
                               * amp.h_prime(c.p_high, 1e-4, 7.24, 1e-5), rtol=1e-7)


def test_classify_grid_agrees_with_iterate_pos():
    P, B, E = np.meshgrid(np.logspace(-4, -0.3, 9), np.logspace(-1, 1.5, 9), [0.0, 1e-5, 1e-2], indexing="ij")
    st, per, pl, ph = amp.classify_grid(P, B, E, num_iter=2000)
    assert (st == 2).any() and (st == 1).any() and (st == 3).any()
    for idx in np.ndindex(st.shape):
        tr = amp.iterate_pos(P[idx], B[idx], E[idx], max_iter=2000, tol=1e-10)
        assert amp.STATUS_CODES[tr.status] == st[idx]
        if tr.status in ("converged", "cycle"):
            assert tr.period == per[idx]
            np.testing.assert_allclose([tr.limit[0], tr.limit[-1]], [pl[idx], ph[idx]], rtol=1e-6)


def test_simulation_script_tiny_grid(tmp_path):
    import json

    import xarray as xr

    from simulations import amplification as mod

    rc = mod.main(["--num-p-ref", "4", "--num-beta", "5", "--eps", "1e-5,0.01", "--num-iter", "800",
                   "--fixed-point-grid", "2001", "--out", str(tmp_path), "--no-plot"])
    assert rc == 0
    with xr.open_dataset(tmp_path / "amplification.nc", engine="h5netcdf") as ds:
        assert ds.attrs["seed"] == "0" and "python -m simulations.amplification" in ds.attrs["command"]
        assert json.loads(ds.attrs["config"])["num_beta"] == 5
        assert ds["status"].shape == (4, 5, 2)
        for i, j, k in [(0, 2, 0), (3, 4, 1), (1, 0, 1)]:
            c = ds.isel(p_ref=i, beta=j, eps=k)
            tr = amp.iterate_pos(float(c.p_ref), float(c.beta), float(c.eps), max_iter=800, tol=1e-10)
            assert amp.STATUS_CODES[tr.status] == int(c.status)
            assert len(attractor.fixed_points(float(c.p_ref), float(c.beta), float(c.eps), grid_size=2001)) == int(
                c.num_fixed_points)
