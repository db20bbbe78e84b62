"""The scale-free criterion for the estimators people train with (std-normalised, Dr.GRPO).

``R(G) = min_c E||c g_hat - grad J||^2 / ||grad J||^2 = 1 - cos^2 / (1 + rho)`` (docs/scale_free_criterion.md),
checked by exact enumeration of every group on finite bandits (:mod:`ustat_grpo.theory.scale_free`):

1. leave-one-out: ``R = MSE / (||grad J||^2 + MSE)`` with the exact MSE law (Theorem 2 / Prop. 3),
   so R ranks G as the law does; Dr.GRPO has exactly leave-one-out's R at every G;
2. std-normalised (eps = 0): ``E[f|x] = g/sigma + beta/G + O(G^-2)`` and
   ``G Cov(f|x) -> Cov(psi)`` (the large-G expansion): the remainders halve when G doubles;
3. negative control, on a bandit built for it: raw MSE of the std-normalised (TRL) estimator picks
   G = 2, which the exact criterion rejects (R(2) > 1.1 min R); with rewards times 10 raw MSE
   moves its pick, R does not move;
4. the pool estimate (:func:`ustat_grpo.scaling.pool.compare_estimators`) on one seeded pilot drawn
   from that bandit recommends the exact R's G and excludes raw MSE's pick from its not-worse set.
"""
from __future__ import annotations

import numpy as np

from paper_checks import Outcome, register

GS = [2, 4, 8, 16, 32]
BUDGET = 64


def built_bandit(scale=1.0):
    """Four prompts, two arms, binary rewards (times ``scale``); success rates 2%-90%."""
    from ustat_grpo.policies.bandits import ContextualSoftmaxBandit

    rng = np.random.default_rng(3)
    phi = rng.normal(size=(4, 2, 3))
    sp = np.array([[0.05, 0.3], [0.6, 0.9], [0.2, 0.5], [0.02, 0.1]])
    return ContextualSoftmaxBandit(phi, reward_values=np.stack([np.zeros((4, 2)), np.full((4, 2), scale)], -1),
                                   reward_probs=np.stack([1 - sp, sp], -1))


def _expansion_ratios():
    from ustat_grpo.theory import scale_free as sf
    from ustat_grpo.policies.bandits import SoftmaxBandit

    b = SoftmaxBandit([0.3, 0.8], theta=[0.2, -0.4])
    e = sf.std_normalized_expansion(b)
    em, ec = [], []
    for G in (16, 32, 64):
        mean, m2 = sf.exact_group_moments(b, "std_normalized_noeps", G)
        em.append(float(np.abs(G * (mean[0] - e["limit"][0]) - e["beta"][0]).max()))
        ec.append(float(abs(G * (m2[0] - mean[0] @ mean[0]) - np.trace(e["cov_psi"][0]))))
    return [em[1] / em[0], em[2] / em[1]], [ec[1] / ec[0], ec[2] / ec[1]]


@register("Gstar-std-normalized", "a scale-free criterion min_c E||c g_hat - grad J||^2/||grad J||^2 ranks G for "
                                  "std-normalised and Dr.GRPO advantages; it equals the exact MSE law's ranking for "
                                  "leave-one-out, Dr.GRPO gets leave-one-out's G, and raw MSE misleads",
          paper="2603.01162 (extension)", seed=20261130)
def check_gstar_std_normalized(rng):
    from ustat_grpo.theory import scale_free as sf
    from ustat_grpo.theory.mse import exact_mse
    from ustat_grpo.scaling.pool import compare_estimators

    b = built_bandit()
    ex = {e: sf.exact_criterion(b, e, GS, budget=BUDGET) for e in ("leave_one_out", "group_mean", "std_normalized")}
    mse_law = np.array([exact_mse(b.moments(), "leave_one_out", G, BUDGET // G).total for G in GS]).ravel()
    g2 = float(b.gradient() @ b.gradient())
    loo_err = float(np.max(np.abs(ex["leave_one_out"]["criterion"] / (mse_law / (g2 + mse_law)) - 1)))
    dr_err = float(np.max(np.abs(ex["group_mean"]["criterion"] / ex["leave_one_out"]["criterion"] - 1)))
    same_rank = list(np.argsort(ex["leave_one_out"]["criterion"])) == list(np.argsort(mse_law))
    mean_ratios, cov_ratios = _expansion_ratios()
    expansion_ok = all(0.35 < q < 0.65 for q in mean_ratios + cov_ratios)

    std = ex["std_normalized"]
    raw_g, best_g = GS[int(np.argmin(std["mse"]))], GS[int(np.argmin(std["criterion"]))]
    rejects = bool(std["criterion"][GS.index(raw_g)] > 1.1 * std["criterion"].min())
    ten = sf.exact_criterion(built_bandit(10.0), "std_normalized_noeps", GS, budget=BUDGET)
    one = sf.exact_criterion(b, "std_normalized_noeps", GS, budget=BUDGET)
    scale_err = float(np.max(np.abs(ten["criterion"] / one["criterion"] - 1)))
    raw_moves = GS[int(np.argmin(ten["mse"]))] != GS[int(np.argmin(one["mse"]))]
    control = raw_g != best_g and rejects and raw_moves

    s = b.sample(600, 32, rng=rng)
    cmp = compare_estimators(s.rewards, s.scores, budget=BUDGET, num_generations=GS,
                             estimators=["leave_one_out", "std_normalized", "group_mean"], rng=rng)
    rec = cmp.recommended["std_normalized"]
    pool_ok = rec["num_generations"] == best_g and raw_g not in rec["not_worse"]
    passed = (loo_err < 1e-10 and dr_err < 1e-12 and same_rank and expansion_ok and scale_err < 1e-10
              and control and pool_ok)
    return Outcome(
        expected=("LOO: R = MSE/(|g|^2+MSE) (rel. err < 1e-10), same ranking; Dr.GRPO R = LOO R (< 1e-12); "
                  "std expansion remainders halve per doubling of G; control: raw MSE's G rejected by exact R "
                  "(> 10% worse), raw pick moves with reward scale, R does not; pool recommends exact R's G"),
        observed=(f"LOO err {loo_err:.1e}, rank {'same' if same_rank else 'DIFFERENT'}; Dr.GRPO err {dr_err:.1e}; "
                  f"remainder ratios mean {np.round(mean_ratios, 3).tolist()}, cov {np.round(cov_ratios, 3).tolist()}; "
                  f"std: raw MSE picks G={raw_g}, exact R picks G={best_g} "
                  f"(R {std['criterion'][GS.index(raw_g)]:.4f} vs "
                  f"{std['criterion'].min():.4f}); x10 rewards: R err {scale_err:.1e}, raw pick "
                  f"{GS[int(np.argmin(one['mse']))]} -> {GS[int(np.argmin(ten['mse']))]}; pool (600 x 32): "
                  f"G={rec['num_generations']} [{rec['interval'][0]}, {rec['interval'][1]}], raw-MSE pick "
                  f"{rec['raw_mse_num_generations']}"),
        passed=bool(passed),
        details={"exact_criterion": {k: v["criterion"].tolist() for k, v in ex.items()},
                 "exact_raw_mse_std": std["mse"].tolist(), "cosine_std": std["cosine"].tolist(),
                 "mse_law_loo": mse_law.tolist(), "pool": cmp.to_dict(), "negative_control_failed": bool(control)})
