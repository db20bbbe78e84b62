"""Convergence claims of arXiv 2603.01162: Lemma 6 (C6), Theorem 8 (C7), Corollary 9 (C8) and
Corollary 10 (spec §2.8, §2.10).

C6 is exact (second-moment recursion of SGD on a rank-deficient quadratic, validated by a seeded
simulation); C7 simulates Algorithm 1 (``ustat_grpo.experiments.algorithm1.run_algorithm1``) on the
over-parameterised Gaussian-policy bandit and compares the law of ``n * gap`` with the predicted
weighted chi-squared (``ustat_grpo.theory.limits``); C8 and Cor10 are exact computations of the weights.
Monte Carlo judgements use Bonferroni z bounds; every check carries a negative control that must
fail.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from paper_checks import Outcome, register
from ustat_grpo.policies.bandits import GaussianPolicyBandit
from ustat_grpo.theory.limits import identifiable_subspace, limit_law, limit_weights, noise_covariance
from ustat_grpo.experiments.algorithm1 import run_algorithm1
from ustat_grpo.core.testing import bonferroni_z

# ------------------------------------------------------------------------------------------ C6
# J(theta) = -1/2 theta^T K theta with K of rank 2 in d = 3 (PL with mu = smallest positive
# eigenvalue, L = largest); g_hat = -K theta + xi, xi ~ N(0, Gamma): M = sup MSE = tr Gamma.
_C6_KAPPA = np.array([2.0, 0.5, 0.0])
_C6_ROT = np.linalg.qr(np.random.default_rng(606).standard_normal((3, 3)))[0]
_C6_K = _C6_ROT @ np.diag(_C6_KAPPA) @ _C6_ROT.T
_C6_GAMMA = np.array([[0.30, 0.05, 0.00], [0.05, 0.20, 0.04], [0.00, 0.04, 0.25]])
_C6_THETA0 = np.array([1.0, -0.5, 0.8])


def _c6_exact_gap(eta):
    """Exact E Delta_n for n = 0..len(eta): S_{n+1} = (I - eta K) S_n (I - eta K) + eta^2 Gamma."""
    S = np.outer(_C6_THETA0, _C6_THETA0)
    out = np.empty(len(eta) + 1)
    out[0] = 0.5 * np.trace(_C6_K @ S)
    # eigenbasis of K: the update is elementwise there
    kap, P = _C6_KAPPA, _C6_ROT
    St, Gt = P.T @ S @ P, P.T @ _C6_GAMMA @ P
    for i, e in enumerate(eta):
        a = 1.0 - e * kap
        St = np.outer(a, a) * St + e * e * Gt
        out[i + 1] = 0.5 * float(kap @ np.diag(St))
    return out


def _c6_simulate(eta, record, rng, R=20_000):
    """Seeded simulation of the same SGD: returns mean and se of Delta at ``record`` steps."""
    chol = np.linalg.cholesky(_C6_GAMMA)
    th = np.tile(_C6_THETA0, (R, 1))
    means, ses = [], []
    rec = set(record)
    for i, e in enumerate(eta):
        th = th + e * (-th @ _C6_K + rng.standard_normal((R, 3)) @ chol.T)
        if i + 1 in rec:
            gap = 0.5 * np.einsum("rd,de,re->r", th, _C6_K, th)
            means.append(gap.mean())
            ses.append(gap.std(ddof=1) / math.sqrt(R))
    return np.array(means), np.array(ses)


@register("C6", "Lemma 6: (a) constant step beta < 1/(2L): E Delta_n <= rho^n E Delta_0 + L beta^2 M / "
                "(4 mu beta - 2 L mu beta^2); (b) step beta/n, beta > 1/(2 mu): E Delta_n <= "
                "max((1+eps) L beta^2 M / ((4 mu beta - 2) n), c/n) on a rank-deficient PL quadratic",
          seed=6)
def check_c6(rng):
    L, mu = float(_C6_KAPPA.max()), float(_C6_KAPPA[_C6_KAPPA > 0].min())
    M = float(np.trace(_C6_GAMMA))
    d0 = 0.5 * _C6_THETA0 @ _C6_K @ _C6_THETA0
    N = 3000
    n = np.arange(N + 1)
    details = {}
    ok = True
    # (a) constant steps, including 0.9/L beyond the paper's 1/(2L) (spec §2.8: the algebra needs 2/L)
    worst_ratio, neg_violated = 0.0, True
    for beta in (0.05, 0.2, 0.9 / L):
        ex = _c6_exact_gap(np.full(N, beta))
        rho = 1 - 2 * mu * beta + L * mu * beta**2
        stat = L * beta**2 * M / (4 * mu * beta - 2 * L * mu * beta**2)
        bound = rho**n * d0 + stat
        worst_ratio = max(worst_ratio, float(np.max(ex / bound)))
        ok &= bool(np.all(ex <= bound * (1 + 1e-12)))
        # negative control: the same bound with a 10x smaller noise term must be violated
        neg_violated &= bool(np.any(ex > rho**n * d0 + stat / 10))
        details[f"a_beta_{beta:.3g}"] = dict(final_gap=float(ex[-1]), stationary_bound=stat)
    details["a_max_gap_over_bound"] = worst_ratio
    # (b) harmonic steps beta / n with beta mu = 1 > 1/2
    beta, eps = 1.0 / mu, 0.1                               # beta mu = 1 > 1/2
    eta = beta / np.arange(1, N * 40 + 1)
    ex = _c6_exact_gap(eta)
    nb = np.arange(ex.size)
    a_sup = float(ex.max())
    n0 = math.ceil(mu * L * beta**2 * (1 + eps) / (eps * (2 * mu * beta - 1))) + 1
    rate = (1 + eps) * L * beta**2 * M / (4 * mu * beta - 2)
    bound_b = np.maximum(rate / np.maximum(nb, 1), a_sup * n0 / np.maximum(nb, 1))
    ok_b = bool(np.all(ex[1:] <= bound_b[1:]))
    lim = limit_weights(-_C6_K, _C6_GAMMA, beta=beta).mean()  # Theorem 8's sum of weights
    n_gap = float(nb[-1] * ex[-1])
    ok_lim = abs(n_gap - lim) / lim < 0.01
    # validate the exact recursion by simulation (z bound, 2 schedules x 3 steps)
    rec = [10, 100, 1000]
    z_all = []
    for sched in (np.full(1000, 0.2), eta[:1000]):
        m_, s_ = _c6_simulate(sched, rec, rng)
        z_all.extend(((m_ - _c6_exact_gap(sched)[rec]) / s_).tolist())
    zb = bonferroni_z(1e-6, len(z_all))
    ok_sim = bool(np.max(np.abs(z_all)) <= zb)
    passed = bool(ok and neg_violated and ok_b and ok_lim and ok_sim)
    details.update(b_beta=beta, b_n=int(nb[-1]), b_n_gap=n_gap, theorem8_limit=lim, paper_rate_constant=rate,
                   b_bound_holds=ok_b, negative_control_violated=neg_violated, sim_z=z_all, z_bound=zb)
    return Outcome(
        expected="(a) gap <= bound at every n <= 3000 for beta in {0.05, 0.2, 0.9/L}; 10x-smaller noise "
                 "term violated; (b) bound holds; n E Delta -> sum w (Thm 8) within 1%",
        observed=f"(a) max gap/bound {worst_ratio:.3f}, neg. control violated={neg_violated}; (b) bound "
                 f"holds={ok_b}; n E Delta = {n_gap:.4f} at n = {nb[-1]} vs limit {lim:.4f} (paper rate "
                 f"constant {rate:.3f}); recursion vs simulation max |z| {np.max(np.abs(z_all)):.2f}",
        passed=passed, details=details)


# ------------------------------------------------------------------------------------------ C7

C7_BANDIT = dict(action_std=0.5, reward_width=1.0)   # V* = 0.894; eig(K) = 0.2385, 2.147 (rank 2, d = 3)
C7_B, C7_G, C7_T0 = 2, 4, 20.0
C7_OFFSET = np.array([0.3, -0.2, 0.1])              # theta_0 - theta*: starts off the maximiser set
C7_QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.99)


def c7_setup():
    """The C7 policy, beta = 1.5 / lambda_min(K) (beta lambda_min = 1.5 > 1/2: the initial offset then
    fades like n^-3 in n E d^2) and the limit laws."""
    pol = GaussianPolicyBandit(**C7_BANDIT)
    th, _ = pol.optimum()
    _, K = identifiable_subspace(pol.hessian(th))
    beta = 1.5 / float(np.linalg.eigvalsh(K).min())
    laws = {e: limit_law(pol, e, num_prompts=C7_B, num_generations=C7_G, beta=beta)
            for e in ("vanilla", "leave_one_out", "oracle")}
    return pol, th, beta, laws


def c7_simulate(pol, th, beta, estimator, *, replicates, num_steps, rng):
    """Algorithm 1 with step beta/(t + t0); returns the run (gap and theta at n/4, n/2, n)."""
    return run_algorithm1(pol, estimator, num_prompts=C7_B, num_generations=C7_G, num_steps=num_steps,
                          step_size="harmonic", beta=beta, t0=C7_T0, replicates=replicates, rng=rng,
                          theta0=th + C7_OFFSET, record=[num_steps // 4, num_steps // 2, num_steps],
                          record_thetas=True)


def _c7(rng, *, replicates, num_steps, ks_nodes):
    pol, th, beta, laws = c7_setup()
    n = num_steps
    rows, z_all, ks_p, neg_z, cons = {}, [], {}, {}, {}
    for est, ll in laws.items():
        res = c7_simulate(pol, th, beta, est, replicates=replicates, num_steps=n, rng=rng)
        x = n * res.gap[:, -1]                                            # n * Delta(pi_theta_n), (R,)
        law = ll.law()
        R = x.size
        z_mean = (x.mean() - ll.mean()) / (x.std(ddof=1) / math.sqrt(R))
        q_pred = np.asarray(law.ppf(np.array(C7_QUANTILES)), float)
        q_obs = np.quantile(x, C7_QUANTILES)
        q_se = np.sqrt(np.array(C7_QUANTILES) * (1 - np.array(C7_QUANTILES)) / R) / law.pdf(q_pred)
        z_q = (q_obs - q_pred) / q_se
        # consistency: distance to the maximiser set, d = ||Q^T (theta - theta*)||; n E d^2 -> tr Sigma
        v = (res.theta_path - th) @ ll.Q                                  # (R, 3 records, r)
        d2 = (v**2).sum(-1)                                               # (R, 3)
        z_d = (n * d2[:, -1].mean() - np.trace(ll.Sigma)) / (n * d2[:, -1].std(ddof=1) / math.sqrt(R))
        z_all.extend([z_mean, *z_q, z_d])
        ks_p[est] = float(stats.kstest(x, law.interpolated_cdf(num_nodes=ks_nodes)).pvalue)
        bad = limit_law(pol, est, num_prompts=C7_B, num_generations=C7_G, beta=beta, paper_display=True)
        neg_z[est] = float((x.mean() - bad.mean()) / (x.std(ddof=1) / math.sqrt(R)))
        cons[est] = [float(np.sqrt(d2[:, j].mean())) for j in range(3)]
        rows[est] = dict(mean_n_gap=float(x.mean()), se=float(x.std(ddof=1) / math.sqrt(R)),
                         predicted_mean=ll.mean(), weights=ll.weights.tolist(), z_mean=float(z_mean),
                         quantiles_observed=q_obs.tolist(), quantiles_predicted=q_pred.tolist(),
                         z_quantiles=z_q.tolist(), z_n_dist2=float(z_d), ks_pvalue=ks_p[est],
                         rms_dist_to_maximisers=cons[est], paper_display_mean=bad.mean(),
                         negative_control_z=neg_z[est])
    alpha = 1e-4
    zb = bonferroni_z(alpha, len(z_all))
    ok_z = bool(np.max(np.abs(z_all)) <= zb)
    ok_ks = all(p > alpha / len(ks_p) for p in ks_p.values())
    ok_neg = all(abs(z) > zb for z in neg_z.values())
    ok_cons = all(c[0] > c[1] > c[2] and c[2] < 0.05 for c in cons.values())
    obs = "; ".join(f"{e}: {r['mean_n_gap']:.4f}+-{r['se']:.4f} vs {r['predicted_mean']:.4f} "
                    f"(median {r['quantiles_observed'][1]:.4f} vs {r['quantiles_predicted'][1]:.4f}, KS p "
                    f"{r['ks_pvalue']:.2g})" for e, r in rows.items())
    obs += (f"; max|z| {np.max(np.abs(z_all)):.2f} <= {zb:.2f}; no-beta^2 control |z| >= "
            f"{min(abs(z) for z in neg_z.values()):.0f}; rms d(theta_n, Theta*) "
            + ", ".join(f"{cons[e][-1]:.3g}" for e in cons))
    return Outcome(
        expected=f"n Delta_n ~ sum w_k chi2_1 (beta = {beta:.4g}, B = {C7_B}, G = {C7_G}, n = {n}, R = "
                 f"{replicates}): mean, 5 quantiles, n E d^2 within Bonferroni z (alpha {alpha}), KS p > "
                 f"{alpha / 3:.1g}; weights without beta^2 rejected; d(theta_n, Theta*) -> 0",
        observed=obs, passed=bool(ok_z and ok_ks and ok_neg and ok_cons),
        details=dict(beta=beta, t0=C7_T0, num_steps=n, replicates=replicates, z_bound=zb, rows=rows,
                     ok_z=ok_z, ok_ks=ok_ks, negative_control_rejected=ok_neg, consistency=ok_cons))


@register("C7", "Theorem 8: n * gap -> sum_k w_k chi2_1 with w = eig(K Sigma/2), (beta K - I/2) Sigma + "
                "Sigma (beta K - I/2) = beta^2 Omega; d(theta_n, Theta*) -> 0 (vanilla, GRPO, oracle; "
                "2000 replicates x 2000 steps)", seed=7)
def check_c7(rng):
    return _c7(rng, replicates=2000, num_steps=2000, ks_nodes=65)


@register("C7-full", "Theorem 8 as C7 with 4000 replicates x 8000 steps", seed=77, slow=True)
def check_c7_full(rng):
    return _c7(rng, replicates=4000, num_steps=8000, ks_nodes=129)


# ------------------------------------------------------------------------------------------ C8

@register("C8", "Corollary 9: w_GRPO - w_oracle = O(G^-2): G^2 max_k |w_GRPO,k - w_oracle,k| settles to a "
                "positive constant (G = 2..256)", seed=8)
def check_c8(rng):
    pol = GaussianPolicyBandit(**C7_BANDIT)
    th, _ = pol.optimum()
    beta, B = 5.0, C7_B
    Gs = 2 ** np.arange(1, 9)
    mom = pol.moments(th)
    diff = []
    ident = 0.0
    for G in Gs:
        a = limit_law(pol, "leave_one_out", num_prompts=B, num_generations=int(G), beta=beta)
        b = limit_law(pol, "oracle", num_prompts=B, num_generations=int(G), beta=beta)
        diff.append(float(np.max(np.abs(a.weights - b.weights))))
        # the exact structure behind it: Omega_GRPO - Omega_oracle = Q^T E[sigma^2 I + g g^T] Q / (B G (G-1))
        f = mom.prompt_probs
        extra = np.einsum("p,pde->de", f, mom.sigma2[:, None, None] * mom.fisher
                          + np.einsum("pd,pe->pde", mom.grad, mom.grad)) / (B * G * (G - 1))
        ident = max(ident, float(np.max(np.abs(a.Omega - b.Omega - a.Q.T @ extra @ a.Q))))
    diff = np.array(diff)
    g2 = Gs**2 * diff
    settled = abs(g2[-1] - g2[-2]) / g2[-1] < 0.01
    lim = 2 * g2[-1] - g2[-2]                          # Richardson: the error in G^2 diff is O(1/G)
    bounded = bool(np.all((g2 > 0.5 * lim) & (g2 < 3 * lim)))
    g1, g3 = Gs * diff, Gs**3 * diff                   # negative controls: O(1/G) / O(1/G^3) do not settle
    neg = bool(g1[-1] < g1[0] / 50 and g3[-1] > 50 * g3[0])
    return Outcome(
        expected="G^2 max|dw| settles (last change < 1%) to a positive constant; G max|dw| and G^3 max|dw| do "
                 "not (negative controls); Omega_GRPO - Omega_oracle exact to 1e-12 "
                 "(spec, its own bandit: 1.05, 0.70, ..., 0.53)",
        observed="G^2 max|dw| = " + ", ".join(f"{v:.4f}" for v in g2) + f" for G = 2..256 (limit ~{lim:.4f}); "
                 f"G max|dw| {g1[0]:.3g} -> {g1[-1]:.3g}; Omega identity error {ident:.1e}",
        passed=bool(settled and bounded and neg and ident < 1e-12),
        details=dict(G=Gs.tolist(), max_abs_diff=diff.tolist(), G2_diff=g2.tolist(), extrapolated_limit=lim,
                     beta=beta, num_prompts=B, negative_control_not_settling=neg, omega_identity_error=ident))


# ------------------------------------------------------------------------------------------ Cor10

@register("Cor10", "Corollary 10: if Q^T W W^T Q is conditionally uncorrelated with Z, every prompt-only "
                   "baseline has weights >= the oracle's (hence >= GRPO's up to O(G^-2))", seed=10)
def check_cor10(rng):
    pol = GaussianPolicyBandit(**C7_BANDIT)
    th, _ = pol.optimum()
    mom = pol.moments(th)
    H = pol.hessian(th)
    Q, K = identifiable_subspace(H)
    B, G, beta = C7_B, C7_G, 5.0
    f = mom.prompt_probs
    gam_or = noise_covariance(mom, "oracle", num_prompts=B, num_generations=G)
    w_or = limit_weights(H, gam_or, beta=beta).weights
    # (i) under the assumption the prompt-only Gamma is Gamma_oracle + E[(V - C)^2 I(x)] / (B G) on Q
    #     (the cross term 2 (V - C) Q^T Cov(Z, W W^T) Q vanishes); test 200 random baselines C(x)
    min_gap = np.inf
    for _ in range(200):
        C = mom.value + rng.normal(scale=0.5, size=mom.value.shape)
        extra = np.einsum("p,p,pde->de", f, (mom.value - C) ** 2, mom.fisher) / (B * G)
        w_c = limit_weights(H, gam_or + extra, beta=beta).weights
        min_gap = min(min_gap, float(np.min(w_c - w_or)))
    holds = min_gap >= -1e-14
    # (ii) for this policy family H = E_X Cov(Z, W W^T | X), so on the identifiable subspace the
    #      assumption would force K = 0: it fails here, and then the claim can fail (negative control):
    #      Greensmith's baseline C* = V + tr Cov(Z, W W^T) / tr I beats the oracle.
    czz = np.einsum("p,pde->de", f, mom.cov_z_ww)
    hess_identity = float(np.max(np.abs(czz - H)))
    c_star = mom.value + np.trace(mom.cov_z_ww, axis1=1, axis2=2) / np.trace(mom.fisher, axis1=1, axis2=2)
    w_star = limit_law(pol, "prompt_baseline", num_prompts=B, num_generations=G, beta=beta, baseline=c_star).weights
    w_grpo = limit_law(pol, "leave_one_out", num_prompts=B, num_generations=G, beta=beta).weights
    violated = bool(np.any(w_star < w_or - 1e-12))
    return Outcome(
        expected="under the assumption: w_k(C) >= w_k(oracle) for all k and 200 random C(x); without it "
                 "(Gaussian bandit, where the assumption would force K = 0) the inequality can fail",
        observed=f"min_k,C (w(C) - w_oracle) = {min_gap:.3g}; H = E Cov(Z, WW^T) to {hess_identity:.1e}; "
                 f"Greensmith C*: w = {np.round(w_star, 5).tolist()} vs oracle {np.round(w_or, 5).tolist()} "
                 f"(GRPO {np.round(w_grpo, 5).tolist()}): violated = {violated}",
        passed=bool(holds and violated and hess_identity < 1e-12),
        details=dict(min_gap=min_gap, hessian_identity_error=hess_identity, w_oracle=w_or.tolist(),
                     w_greensmith=w_star.tolist(), w_grpo=w_grpo.tolist(), negative_control_violated=violated,
                     rank=int(K.shape[0]), Q=Q.tolist()))
