"""Paper 1 Appendix A checks (arXiv 2603.01162): Lemma 11, Theorem 12, Proposition 13 (C9), C10, C11.

Toy policies: :class:`ustat_grpo.experiments.algorithm2.SequencePolicy` (a two-token Markov policy over a
3-letter vocabulary for the importance-ratio claims; one-token contextual bandits otherwise).
Exact quantities come from enumerating every output; Monte Carlo ones carry negative controls.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

from paper_checks import Outcome, register
from ustat_grpo.experiments import algorithm2 as pr
from ustat_grpo.core.testing import bonferroni_z


def _markov_policy(seed, T=2, V=3, scale=0.5):
    rng = np.random.default_rng(seed)
    return pr.SequencePolicy.tabular(1, T, V, rng.uniform(0.1, 0.9, size=(1, V ** T)), markov=True,
                                     theta=rng.normal(size=T * V * V) * scale), rng


@register("Lemma11", "normalised estimator -> U-statistic with kernel (mu W_i - mu W_j)(Z_i - Z_j)/(2 std_x) as G grows",
          seed=111)
def check_lemma11(rng):
    pol, prng = _markov_policy(1)
    th_old = pol.theta
    th = th_old + prng.normal(size=pol.dim) * 0.3         # mid-iteration: token ratios mu_t != 1
    Vx = pol.values(th_old)[0]
    std = np.sqrt(Vx * (1 - Vx))
    rows = []
    for G, R in [(8, 2500), (32, 625), (128, 200), (512, 100)]:
        pid, seqs, Z = pol.sample_sequences(R, G, rng=rng, theta=th_old)
        A, _ = pr.normalized_advantages(Z)
        g = pr.algorithm2_gradient(pol, th, th_old, pid, seqs, A)
        loo = G / (G - 1) * (Z - Z.mean(-1, keepdims=True))              # Z_g - Zbar_{-g}
        u = pr.algorithm2_gradient(pol, th, th_old, pid, seqs, loo / std)  # = the U-statistic (LOO identity)
        u_wrong = pr.algorithm2_gradient(pol, th, th_old, pid, seqs, loo)  # kernel without 1/std_x
        norm = float(((u ** 2).sum(-1)).mean())
        rows.append(dict(G=G, replicates=R, rel_sq_distance=float(((g - u) ** 2).sum(-1).mean()) / norm,
                         control_rel_sq_distance=float(((g - u_wrong) ** 2).sum(-1).mean()) / norm))
    # KL part (spec ambiguity 3): Lemma 11's kernel adds kappa/G sum_g sum_t (mu_t - 1) W_t, eq. (14)
    # (paper14) adds kappa/G sum_g sum_t (1 - pi_theta,t / pi_ref,t) W_t; they do not approach each other.
    kappa, th_ref = 0.5, th_old + prng.normal(size=pol.dim) * 0.5
    pid, seqs, Z = pol.sample_sequences(100, 512, rng=rng, theta=th_old)
    A, _ = pr.normalized_advantages(Z)
    g14 = pr.algorithm2_gradient(pol, th, th_old, pid, seqs, A, kappa=kappa, theta_ref=th_ref)
    loo = 512 / 511 * (Z - Z.mean(-1, keepdims=True))
    W = pol.token_scores(pid[:, None], seqs, th)                                  # (R, G, T, d)
    mu = np.exp(pol.token_logprobs(pid[:, None], seqs, th) - pol.token_logprobs(pid[:, None], seqs, th_old))
    u11 = (pr.algorithm2_gradient(pol, th, th_old, pid, seqs, loo / std)
           + kappa * np.einsum("rgt,rgtd->rd", mu - 1, W) / 512)
    kl_conflict = float(((g14 - u11) ** 2).sum(-1).mean() / (u11 ** 2).sum(-1).mean())
    d = np.array([r["rel_sq_distance"] for r in rows])
    dc = np.array([r["control_rel_sq_distance"] for r in rows])
    slope = float(np.polyfit(np.log([r["G"] for r in rows]), np.log(d), 1)[0])
    passed = bool(np.all(np.diff(d) < 0) and d[-1] < 1e-3 and dc[-1] > 0.1)
    return Outcome(expected="E||g_hat - U||^2 / E||U||^2 -> 0; control kernel (no 1/std) does not",
                   observed="rel. sq. distance " + ", ".join(f"G={r['G']}: {r['rel_sq_distance']:.2e}" for r in rows)
                            + f" (log-log slope {slope:.2f}); control at G=512: {dc[-1]:.3f}; with kappa=0.5 eq.(14) vs "
                            f"Lemma 11's KL kernel stays {kl_conflict:.3f} apart (ambiguity 3)",
                   passed=passed, details=dict(rows=rows, slope=slope, kl_conflict_rel_sq_distance_G512=kl_conflict, V_x=float(Vx),
                                               slope_note="E(std/se - 1)^2 ~ (kurtosis - 1)/(4G); a Bernoulli reward with V "
                                                          "near 1/2 has kurtosis near 1, hence the faster ~1/G^2 decay",
                                               note="kappa = 0: the KL part of Lemma 11's kernel conflicts with eq. (14) "
                                                    "(spec ambiguity 3)"))


def _is_kl_bias(pol, th, th_old, th_ref, kappa):
    """Exact conditional bias of eq. (14) at theta vs its IS-corrected target (oracle std-normalised advantage).

    IS part: E_old[sum_t mu_t W_t A] - E_old[mu sum_t W_t A]; KL part: kappa (E_old - E_theta)[sum_t W_t bracket_t].
    """
    S, pid = pol.sequences[None], np.zeros((1, 1), int)
    s = pol.success_probs[0]
    Vx = pol.values(th_old)[0]
    A = (s - Vx) / np.sqrt(Vx * (1 - Vx))
    lt, lo = pol.token_logprobs(pid, S, th)[0], pol.token_logprobs(pid, S, th_old)[0]   # (S, T)
    W = pol.token_scores(pid, S, th)[0]                                                  # (S, T, d)
    po, pt = np.exp(lo.sum(-1)), np.exp(lt.sum(-1))
    mu_t = np.exp(lt - lo)
    b = np.einsum("s,st,std->d", po * A, mu_t, W) - np.einsum("s,s,std->d", po * A, mu_t.prod(-1), W)
    if kappa:
        br = -np.expm1(lt - pol.token_logprobs(pid, S, th_ref)[0])
        b = b + kappa * (np.einsum("s,st,std->d", po, br, W) - np.einsum("s,st,std->d", pt, br, W))
    return b


@register("Thm12", "MSE bound (17): squared bias grows with eta and m (token-level IS, KL without IS); variance ~ tr(Sigma_1)/G",
          seed=112)
def check_thm12(rng):
    pol, prng = _markov_policy(2)
    th_old = pol.theta
    th_ref = th_old + prng.normal(size=pol.dim) * 0.5
    etas, ms, kappa, G, R = (0.05, 0.1, 0.2, 0.4), (1, 2, 4, 8), 0.5, 16, 60
    bias2 = np.zeros((len(etas), len(ms)))
    for i, eta in enumerate(etas):
        for j, m in enumerate(ms):
            vals = []
            for _ in range(R):
                pid, seqs, Z = pol.sample_sequences(m, G, rng=rng, theta=th_old)
                A, _ = pr.normalized_advantages(Z)
                th = th_old.copy()
                for k in range(m - 1):      # theta at which the m-th minibatch gradient is taken
                    th = th + eta * pr.algorithm2_gradient(pol, th, th_old, pid[k:k + 1], seqs[k:k + 1], A[k:k + 1],
                                                           kappa=kappa, theta_ref=th_ref)[0]
                vals.append(float((_is_kl_bias(pol, th, th_old, th_ref, kappa) ** 2).sum()))
            bias2[i, j] = np.mean(vals)
    grows = bool(np.all(np.diff(bias2[:, 1:], axis=0) > 0) and np.all(np.diff(bias2, axis=1) > 0))
    ratio = bias2[:, 1:] / (np.asarray(etas)[:, None] * (np.asarray(ms[1:]) - 1)[None]) ** 2
    ratio_spread = float(ratio.max() / ratio.min())
    # control: one-token outputs (a bandit) have no token-vs-sequence IS bias at any theta
    bandit = pr.SequencePolicy.tabular(1, 1, 5, prng.uniform(0.1, 0.9, size=(1, 5)), theta=prng.normal(size=5))
    ctrl = float(np.abs(_is_kl_bias(bandit, bandit.theta + 0.7, bandit.theta, bandit.theta, 0.0)).max())
    # variance term: G tr Cov(g_hat) at theta = theta_old -> tr Sigma_1 (eq. 18, kappa = 0)
    s = pol.success_probs[0]
    Vx = pol.values(th_old)[0]
    po, Wq = pol.sequence_probs(th_old)[0], pol.sequence_scores(th_old)[0]
    g = np.einsum("s,s,sd->d", po, s, Wq)
    e2 = s * (1 - s) + (s - Vx) ** 2                                   # E[(Z - V)^2 | y]
    tr_s1 = float((po * e2 * (Wq ** 2).sum(-1)).sum() - g @ g) / (Vx * (1 - Vx))
    tr_dr = tr_s1 * Vx * (1 - Vx)                                      # control: Sigma without 1/std_x (Dr. GRPO)
    var_rows = []
    zb = bonferroni_z(1e-6, 2)
    for Gv, Rv in [(16, 1500), (256, 1000)]:
        pid, seqs, Z = pol.sample_sequences(Rv, Gv, rng=rng, theta=th_old)
        A, _ = pr.normalized_advantages(Z)
        gh = pr.algorithm2_gradient(pol, th_old, th_old, pid, seqs, A)
        dev = Gv * ((gh - gh.mean(0)) ** 2).sum(-1)
        est, se = float(dev.mean() * Rv / (Rv - 1)), float(dev.std() / np.sqrt(Rv))
        slack = 2.0 * tr_s1 / Gv                                       # the O(1/G) remainder of G * MSE
        var_rows.append(dict(G=Gv, G_trcov=est, se=se, tr_sigma1=tr_s1, ok=abs(est - tr_s1) <= zb * se + slack,
                             control_ok=abs(est - tr_dr) <= zb * se + slack))
    var_ok = all(r["ok"] for r in var_rows) and not any(r["control_ok"] for r in var_rows)
    # O(m^2 eta^2) is an upper bound: bias^2 / ((m-1) eta)^2 must stay bounded, not grow with m eta
    bounded = ratio_spread < 10 and ratio[-1, -1] <= 1.5 * ratio[0, 0]
    passed = grows and bounded and ctrl < 1e-12 and bias2[:, 0].max() == 0 and var_ok
    return Outcome(expected="bias^2 = O(m^2 eta^2) increasing in eta and m; G tr Cov -> tr Sigma_1",
                   observed=f"bias^2 (eta=0.05..0.4 x m=1,2,4,8): {np.array2string(bias2, precision=2, separator=',', max_line_width=10**4).replace(chr(10), '')}; "
                            f"bias^2/((m-1) eta)^2 within x{ratio_spread:.2f}; one-token control {ctrl:.0e}; "
                            + "; ".join(f"G={r['G']}: G trCov {r['G_trcov']:.3f}+-{r['se']:.3f} vs tr Sigma_1 {tr_s1:.3f}"
                                        for r in var_rows) + f" (control Dr.GRPO Sigma {tr_dr:.3f})",
                   passed=bool(passed), details=dict(bias2=bias2.tolist(), etas=list(etas), ms=list(ms), kappa=kappa,
                                                     ratio_spread=ratio_spread, one_token_control=ctrl,
                                                     variance=var_rows))


def _arcsin_bandit():
    """Two prompts, shared theta in R: E[V] and E[2 arcsin sqrt V] have different maximisers."""
    phi = np.array([[[2.0], [0.0]], [[-1.0], [0.0]]])[:, None, None]    # (P=2, T=1, C=1, K=2, d=1)
    return pr.SequencePolicy(phi, [[0.7, 0.05], [0.3, 0.02]], prompt_probs=[0.3, 0.7])


@register("C9", "Prop 13: E[std-normalised gradient] parallel to grad 2 arcsin sqrt V (shrink c(G,V)); training -> arcsin maximiser",
          seed=113)
def check_c9(rng):
    # (a) exact parallelism and shrink factor, one prompt, all K^G outcomes (K = 4, G = 6)
    import itertools

    K, G = 4, 6
    succ = np.array([1.0, 0, 1, 0])
    pol = pr.SequencePolicy.tabular(1, 1, K, succ[None], theta=rng.normal(size=K))
    pi, W = pol.sequence_probs()[0], pol.sequence_scores()[0]
    Vx = float(pi @ succ)
    mean = np.zeros(K)
    for ys in itertools.product(range(K), repeat=G):
        ys = np.array(ys)
        A, _ = pr.normalized_advantages(succ[ys])
        mean += np.prod(pi[ys]) * (A @ W[ys]) / G
    target = pol.value_grads()[0] / np.sqrt(Vx * (1 - Vx))
    cos = float(mean @ target / np.linalg.norm(mean) / np.linalg.norm(target))
    c_enum = float(np.linalg.norm(mean) / np.linalg.norm(target))
    c_formula = pr.shrink_factor(G, Vx)
    # finite-difference check of grad 2 arcsin sqrt V = grad V / std
    e = 1e-6
    fd = np.array([(pr.arcsin_objective(pol, pol.theta + e * v) - pr.arcsin_objective(pol, pol.theta - e * v)) / (2 * e)
                   for v in np.eye(K)])
    fd_err = float(np.abs(fd - target).max())
    table = {G_: dict(paper=pr.shrink_factor(G_, 0.5), full_mean=pr.shrink_factor(G_, 0.5, center="mean"))
             for G_ in (8, 64, 512)}
    # (b) training: normalised GRPO -> arcsin maximiser, RLOO (no std) -> E[V] maximiser
    cb = _arcsin_bandit()
    bnd = dict(bounds=(-5, 5), method="bounded", options=dict(xatol=1e-10))
    t_ev = float(optimize.minimize_scalar(lambda t: -cb.objective(np.array([t])), **bnd).x)
    t_as = float(optimize.minimize_scalar(lambda t: -pr.arcsin_objective(cb, np.array([t])), **bnd).x)

    def finite_g_drift(t, G_):   # expected normalised update direction at finite G: sum_x f c(G,V_x) grad arcsin
        V = cb.values(np.array([t]))
        c = np.array([pr.shrink_factor(G_, v) for v in V])
        return float(cb.prompt_probs @ (c * cb.value_grads(np.array([t]))[:, 0] / np.sqrt(V * (1 - V))))

    t_g = float(optimize.brentq(lambda t: finite_g_drift(t, 64), 0.0, 3.0, xtol=1e-12))
    runs = {}
    for adv in ("paper", "rloo"):
        fins = []
        for r in range(4):
            cfg = pr.Algorithm2Config(num_iterations=1000, num_prompts=16, num_generations=64, learning_rate=1.0,
                                      lr_decay=0.7, lr_t0=50, preset=adv)
            res = pr.run_algorithm2(cb, cfg, rng=np.random.default_rng([113, r]), theta0=np.zeros(1), track=False)
            fins.append(float(res.theta[-200:, 0].mean()))
        runs[adv] = fins
    to_as = all(abs(f - t_as) < abs(f - t_ev) for f in runs["paper"])
    ctrl_to_ev = all(abs(f - t_ev) < abs(f - t_as) for f in runs["rloo"])
    passed = (cos > 1 - 1e-12 and abs(c_enum - c_formula) < 1e-10 and fd_err < 1e-8 and to_as and ctrl_to_ev)
    return Outcome(expected="cosine 1, c(G,V) exact; spec c = 0.866/0.985/0.998 at G = 8/64/512; training -> arcsin argmax",
                   observed=f"cosine {cos:.15f}, c enum {c_enum:.10f} = formula {c_formula:.10f} (G=6, V={Vx:.3f}); "
                            f"c at V=0.5, G=8/64/512: paper LOO {table[8]['paper']:.3f}/{table[64]['paper']:.3f}/"
                            f"{table[512]['paper']:.4f}, full-mean {table[8]['full_mean']:.3f}/{table[64]['full_mean']:.3f}/"
                            f"{table[512]['full_mean']:.3f}; argmax E[V] {t_ev:.3f}, argmax arcsin {t_as:.3f} "
                            f"(finite-G=64 stationary {t_g:.3f}); normalised runs {np.round(runs['paper'], 3).tolist()}, "
                            f"RLOO runs {np.round(runs['rloo'], 3).tolist()}",
                   passed=bool(passed),
                   details=dict(cosine=cos, shrink_enum=c_enum, shrink_formula=c_formula, fd_error=fd_err,
                                shrink_table_v05=table, theta_EV=t_ev, theta_arcsin=t_as, theta_finite_G64=t_g,
                                runs=runs, note="spec's 0.866/0.985/0.998 match the full-mean numerator convention "
                                                "(c x (G-1)/G); the paper's LOO numerator gives values closer to 1"))


@register("C10", "K3 non-negative and unbiased for KL(pi||pi_ref); E[autograd K3 gradient] = grad KL(pi_ref||pi)", seed=114)
def check_c10(rng):
    pol, prng = _markov_policy(4, T=3)
    ref = pol.theta + prng.normal(size=pol.dim) * 0.6
    seqs = pol.sequences[None]
    pid = np.zeros((1, 1), int)
    k = pr.k3(pol.token_logprobs(pid, seqs)[0], pol.token_logprobs(pid, seqs, ref)[0])      # (S, T)
    ps = pol.sequence_probs()[0]
    kl = pr.exact_kl(pol, pol.theta, ref)
    exact_err = abs(float(ps @ k.sum(-1)) - kl)
    # Monte Carlo: sample mean of per-token K3 (summed) vs exact KL; control: K2 = (log r)^2 / 2
    _, s, _ = pol.sample_sequences(1, 20000, rng=rng)
    lr_tok = pol.token_logprobs(np.zeros((1, 1), int), s)[0]
    lref_tok = pol.token_logprobs(np.zeros((1, 1), int), s, ref)[0]
    k3s = pr.k3(lr_tok, lref_tok).sum(-1)
    k2s = 0.5 * ((lref_tok - lr_tok).sum(-1)) ** 2
    zb = bonferroni_z(1e-6, 1)
    z = (k3s.mean() - kl) / (k3s.std() / np.sqrt(k3s.size))
    zc = (k2s.mean() - kl) / (k2s.std() / np.sqrt(k2s.size))
    # gradient: one-token policy, exact expectation of the autograd K3 gradient
    b = pr.SequencePolicy.tabular(2, 1, 6, prng.uniform(size=(2, 6)), theta=prng.normal(size=12))
    bref = prng.normal(size=12)
    eg = -pr.expected_kl_bracket_grad(b, b.theta, bref, "k3_autograd")         # E grad K3 (bracket carries -)
    rev = pr.reverse_kl_grad(b, b.theta, bref)
    fwd = pr.exact_kl_grad(b, b.theta, bref)
    grad_err = float(np.abs(eg - rev).max())
    gap_fwd = float(np.linalg.norm(eg - fwd) / np.linalg.norm(fwd))
    # multi-token: per-token K3 autograd is not the sequence-level reverse-KL gradient (prefix law differs)
    eg3 = -pr.expected_kl_bracket_grad(pol, pol.theta, ref, "k3_autograd")
    gap3 = float(np.linalg.norm(eg3 - pr.reverse_kl_grad(pol, pol.theta, ref)) / np.linalg.norm(eg3))
    passed = (k.min() >= 0 and exact_err < 1e-12 and abs(z) <= zb and abs(zc) > zb and grad_err < 1e-12 and gap_fwd > 1e-2)
    return Outcome(expected="E K3 = KL exactly, K3 >= 0; E grad K3 = grad KL(pi_ref||pi) (1e-16), differs from grad KL(pi||pi_ref)",
                   observed=f"enumeration error {exact_err:.1e}, min K3 {k.min():.2e}; MC z = {z:+.2f} "
                            f"(control K2 z = {zc:+.1f}); grad error {grad_err:.1e}; rel. gap to grad KL(pi||ref) "
                            f"{gap_fwd:.2f}; 3-token per-token K3 vs sequence reverse KL: rel. gap {gap3:.2f}",
                   passed=bool(passed), details=dict(exact_error=exact_err, z=float(z), control_z=float(zc),
                                                     grad_error=grad_err, gap_to_forward=gap_fwd,
                                                     multi_token_gap=gap3, kl=kl))


@register("C11", "KL-gradient variants (paper14, k3_autograd) agree with -grad KL(pi||pi_ref) only to first order",
          seed=115)
def check_c11(rng):
    b = pr.SequencePolicy.tabular(1, 1, 6, rng.uniform(size=(1, 6)), theta=rng.normal(size=6))
    direction = rng.normal(size=6)
    rows = []
    for shift in (0.05, 0.2, 1.0, 2.0):
        ref = b.theta + shift * direction
        true = -pr.exact_kl_grad(b, b.theta, ref)
        row = dict(shift=shift)
        for name in ("paper14", "k3_autograd"):
            e = pr.expected_kl_bracket_grad(b, b.theta, ref, name)
            row[name] = dict(rel_error=float(np.linalg.norm(e - true) / np.linalg.norm(true)),
                             cosine=float(e @ true / np.linalg.norm(e) / np.linalg.norm(true)))
        rows.append(row)
    small, large = rows[0], rows[-1]
    first_order = all(small[n]["rel_error"] < 0.1 and small[n]["cosine"] > 0.99 for n in ("paper14", "k3_autograd"))
    errs = {n: [r[n]["rel_error"] for r in rows] for n in ("paper14", "k3_autograd")}
    # error ratio / shift ~ constant for small shifts (first order), and large at large shifts
    degrade = all(large[n]["rel_error"] > 5 * small[n]["rel_error"] for n in ("paper14", "k3_autograd"))
    passed = first_order and degrade
    return Outcome(expected="cosine >= 0.99 / rel. error ~0.02 for small shifts; 0.4-1.3 (cosine ~0.91) for large",
                   observed="; ".join(f"shift {r['shift']}: paper14 err {r['paper14']['rel_error']:.3f} cos "
                                      f"{r['paper14']['cosine']:.3f}, k3 err {r['k3_autograd']['rel_error']:.3f} cos "
                                      f"{r['k3_autograd']['cosine']:.3f}" for r in rows),
                   passed=bool(passed), details=dict(rows=rows, errors=errs))
