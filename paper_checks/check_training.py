"""Does the recommended G train best?  The practical claim behind Theorem 7, tested by training.

Reads the stored result of ``simulations/train_vs_g.py`` (``docs/results/train_vs_g.nc``, rebuilt
by the command in its ``command`` attribute), or runs the default grid (about an hour on 2 cores)
when that file is missing.  GRPO trains the built-in weak policy at a fixed budget N for every G of
the grid, several seeds, both advantages and a small learning-rate sweep; the outcome of a run is
the area under its held-out learning curve (exact probability of the correct answer vs rollouts).

Asserted, for every setting of the leave-one-out advantage (the estimator whose MSE the scaling
law describes): the recommendation of ``fit_scaling`` at N (among the divisors of N) lies in the
set of G not significantly worse than the best (paired by seed, Bonferroni subset selection,
:func:`ustat_grpo.scaling.performance.compare_group_sizes`), *and* the power guard holds: the effect of G
is significant (two-way ANOVA, seeds as blocks) and every G whose predicted MSE is at least twice
the minimum is declared worse than the best.  Without the guard, too few seeds would put every G
in the set and the check would pass vacuously.  The std-normalised advantage (TRL's default) and the
rank agreement between predicted MSE and training outcome are reported, not asserted.
"""
from __future__ import annotations

import os

from paper_checks import Outcome, register

STORED = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "results", "train_vs_g.nc")


@register("Gstar-training", "the G minimising the gradient MSE at a fixed rollout budget trains best "
                            "(recommended G in the set of G not significantly worse than the best by "
                            "area under the learning curve, with a power guard)", slow=True, seed=20261129)
def check_gstar_training(rng):
    from simulations import train_vs_g as T

    path = os.environ.get("USTAT_GRPO_TRAIN_VS_G", STORED)
    if not os.path.exists(path):                          # freshly computed: the default grid
        out = os.path.join("results", "train_vs_g")
        T.main(["--out", out, "--no-plot"])
        path = os.path.join(out, "train_vs_g.nc")
    grid, consts, stored, _ = T.load(path)
    analysis = T.analyse(grid, consts["recommended"], consts["predicted_mse"], stored["level"])
    loo = {k: r for k, r in analysis.items() if r["advantage"] == "rloo"}
    if not loo:
        raise ValueError(f"{path} has no leave-one-out ('rloo') setting to check")
    passed = all(r["passed"] for r in loo.values())

    def line(key, r):
        c = r["comparison"]
        return (f"{key}: best G {c['best']}, set {c['best_set']}, ANOVA p {c['effect_pvalue']:.2g}, "
                f"Spearman {r['spearman_mse_auc']:.2f}, guard {'ok' if all(r['power_guard'].values()) else 'FAILED'}")

    return Outcome(
        expected=(f"recommended G = {consts['recommended']} (G* = {consts['g_star']:.2f} "
                  f"[{consts['g_star_interval'][0]:.2f}, {consts['g_star_interval'][1]:.2f}]) in the set of G not "
                  f"worse than the best (level {stored['level']}); G effect significant; G with predicted MSE >= 2x "
                  f"min {next(iter(loo.values()))['far_groups']} worse"),
        observed="; ".join(line(k, r) for k, r in analysis.items()),
        passed=passed,
        details={"source": os.path.abspath(path), "analysis": analysis, "constants": consts,
                 "num_seeds": int(stored["seeds"]), "budget": int(stored["budget"])})


STORED_STD = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "results",
                          "train_vs_g_std.nc")


@register("Gstar-training-std", "for TRL's default trainer (std-normalised advantage, loss_type='dapo', Adam) the G "
                                "recommended by the scale-free criterion trains as well as the best G (in the set "
                                "of G not significantly worse by area under the learning curve, G effect significant)",
          paper="2603.01162 (extension)", slow=True, seed=20261129)
def check_gstar_training_std(rng):
    """Reads ``docs/results/train_vs_g_std.nc`` (``python -m simulations.train_vs_g --settings grpo:3e-4:dapo``; its
    ``command`` attribute), or ``$USTAT_GRPO_TRAIN_VS_G_STD``, and re-analyses it.  Asserted for each
    std-normalised setting: the criterion's G (``pool.compare_estimators`` on the initial checkpoint) is in
    the not-worse set and the effect of G is significant (ANOVA, seeds as blocks), so the pass is not
    vacuous.  Spearman of the criterion and of the raw pool MSE against AUC are reported."""
    from simulations import train_vs_g as T

    path = os.environ.get("USTAT_GRPO_TRAIN_VS_G_STD", STORED_STD)
    grid, consts, stored, _ = T.load(path)
    if "criteria" not in consts:
        raise ValueError(f"{path} carries no scale-free criterion (rerun python -m simulations.train_vs_g without --no-criteria)")
    analysis = T.analyse(grid, consts["recommended"], consts["predicted_mse"], stored["level"], consts["criteria"])
    std = {k: r for k, r in analysis.items() if r["advantage"] == "grpo"}
    if not std:
        raise ValueError(f"{path} has no std-normalised ('grpo') setting to check")
    for r in std.values():
        r["passed_std"] = bool(r["criterion_recommended_in_best_set"] and r["power_guard"]["effect_significant"])

    def line(key, r):
        c = r["comparison"]
        return (f"{key}: best G {c['best']}, set {c['best_set']}, ANOVA p {c['effect_pvalue']:.2g}; "
                f"criterion picks G = "
                f"{r['criterion_recommended']} {r['criterion_interval']} (raw pool MSE: {r['raw_mse_recommended']}); "
                f"Spearman criterion {r['spearman_criterion_auc']:.2f}, raw MSE {r['spearman_raw_mse_auc']:.2f}")

    return Outcome(
        expected=(f"the scale-free criterion's G in the set of G not worse than the best (level {stored['level']}), "
                  "G effect significant"),
        observed="; ".join(line(k, r) for k, r in std.items()),
        passed=all(r["passed_std"] for r in std.values()),
        details={"source": os.path.abspath(path), "analysis": analysis, "num_seeds": int(stored["seeds"]),
                 "budget": int(stored["budget"]), "steps": int(stored["steps"])})
