"""Does the recommended G train best?  GRPO training across group sizes at a fixed rollout budget.

The practical claim behind the tool: the G that minimises the gradient's MSE at a fixed budget
``N = B G`` (``G* = 1 + sqrt(A3/A1)``) is the G that makes training progress fastest per rollout.
This script tests it on a built-in transformer policy (weak by default):

1. The constants ``A1..A3`` are measured on the initial checkpoint (``measure_lm``, the path of
   ``python -m ustat_grpo.fit_scaling --variant weak``) and turned into the recommendation at
   budget N among the divisors of N, and into the predicted MSE of every G.
2. For every G of the grid (divisors of N), setting (advantage and learning rate: ``rloo`` = the
   paper's leave-one-out GRPO, ``grpo`` = TRL's std-normalised default; by default both at Adam
   3e-4, and ``rloo`` also at 1e-3, the learning-rate sweep) and seed, GRPO trains the same initial
   checkpoint (:func:`ustat_grpo.experiments.lm_train.train_grpo`: fresh questions every step from the task
   generator, the same questions for every G at a seed) and is evaluated every ``eval_every``
   steps on a fixed question set by ``p_canonical``, the exact probability of the correct answer.
   Cells run in parallel through the Monte Carlo scheduler (process pool or a Dask address).
3. Per setting: the area under the ``p_canonical``-vs-rollouts curve (AUC)
   per G and seed, compared by :func:`ustat_grpo.scaling.performance.compare_group_sizes` (paired by
   seed, Bonferroni subset selection of the G not significantly worse than the best), the
   two-way ANOVA p-value of G, the Spearman correlation between predicted MSE and AUC, and the
   seeds that would be needed to separate each G from the best.
4. With ``--drift STEPS``: one more run at the recommended G saves checkpoints (local HF
   directories) at those steps, and the constants are re-measured on each: how G* moves as the
   policy improves, and the predicted MSE of a G schedule that follows it against the fixed G.

Outputs in ``--out``: ``train_vs_g.nc`` (per-step and per-evaluation arrays, AUC, constants,
provenance), ``summary.json`` and ``train_vs_g.png``.  Usage::

    python -m simulations.train_vs_g                     # the default grid, about an hour on 2 cores
    python -m simulations.train_vs_g --quick             # seconds: keeps the script working (tests)
    python -m paper_checks --only Gstar-training         # the check on the stored result
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np


from ustat_grpo.experiments import lm_train
from ustat_grpo.experiments.lm_train import auc_curve as auc
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.scaling.performance import compare_group_sizes
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf


@dataclass(frozen=True)
class Config:
    groups: str = field(default="2,4,8,16,32", metadata={"help": "comma-separated group sizes G (divisors of the budget)"})
    budget: int = field(default=64, metadata={"help": "rollouts per step N = B G"})
    steps: int = field(default=300, metadata={"help": "training steps per run"})
    seeds: int = field(default=10, metadata={"help": "seeds per cell (runs paired by seed)"})
    settings: str = field(default="rloo:3e-4,grpo:3e-4,rloo:1e-3", metadata={"help": "comma-separated ADVANTAGE:LR[:LOSS_TYPE] settings (rloo = leave-one-out GRPO, grpo = TRL std-normalised; LOSS_TYPE sequence_sum (default) or dapo = TRL's default token-level aggregation); the first is the primary one"})
    optimizer: str = field(default="adam", metadata={"help": "adam or sgd", "choices": ("adam", "sgd")})
    eval_every: int = field(default=10, metadata={"help": "evaluate every this many steps"})
    num_eval: int = field(default=256, metadata={"help": "evaluation questions (make_dataset(num_eval, seed=1))"})
    variant: str = field(default="weak", metadata={"help": "built-in policy variant", "choices": ("weak", "strong", "fewshot")})
    constants_prompts: int = field(default=500, metadata={"help": "questions for the constants (first P of the 500)"})
    constants_samples: int = field(default=64, metadata={"help": "completions per question for the constants"})
    drift: str = field(default="0,100,200,300", metadata={"help": "checkpoint steps at which G* is re-measured ('' = no drift study)"})
    drift_samples: int = field(default=32, metadata={"help": "completions per question when re-measuring the constants"})
    seed: int = field(default=20261129, metadata={"help": "root seed"})
    workers: int = field(default=0, metadata={"help": "processes (0: all cores)"})
    threads: int = field(default=1, metadata={"help": "torch threads per process (the main one and each worker)"})
    scheduler: str = field(default="processes", metadata={"help": "processes, serial or a Dask address"})
    level: float = field(default=0.95, metadata={"help": "confidence level"})
    out: str = field(default="results/train_vs_g", metadata={"help": "output directory"})
    quick: bool = field(default=False, metadata={"help": "tiny grid (seconds), to keep the script working"})
    reanalyse: str = field(default="", metadata={"help": "re-analyse and re-plot a stored train_vs_g.nc (no training)", "metavar": "NC"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})
    no_criteria: bool = field(default=False, metadata={"help": "skip the scale-free criterion of each setting's estimator (pool.compare_estimators on the initial checkpoint) and its Spearman against AUC"})


QUICK = dict(groups="2,4,8", budget=16, steps=6, seeds=3, settings="rloo:1e-3", eval_every=3,
             num_eval=32, constants_prompts=24, constants_samples=8, drift="0,6", drift_samples=8, workers=1)


def _ints(s):
    return [int(x) for x in str(s).split(",") if x.strip()]


def _floats(s):
    return [float(x) for x in str(s).split(",") if x.strip()]


def _strs(s):
    return [x.strip() for x in str(s).split(",") if x.strip()]


def measure_constants(cfg: Config, model=None, *, samples=None, seed_offset=0):
    """Constants and the recommendation at ``cfg.budget`` among its divisors (the fit_scaling path)."""
    from ustat_grpo.measurement.measure import measure_lm
    from ustat_grpo.recommendation.recommend import recommend

    meas = measure_lm(model, num_prompts=cfg.constants_prompts, samples_per_prompt=samples or cfg.constants_samples,
                      seed=cfg.seed + seed_offset, device="cpu", variant=cfg.variant, budget=cfg.budget,
                      level=cfg.level, template="compact_zero_shot" if model is not None else None)
    rec = recommend(meas.constants, budget=cfg.budget, divisors_only=True, level=cfg.level)
    return meas, rec


def initial_constants(cfg: Config, groups) -> dict:
    """Constants, recommendation and predicted MSE at the initial checkpoint (cached in ``out/``)."""
    from ustat_grpo.core.provenance import sha256_json

    key = {k: getattr(cfg, k) for k in ("variant", "constants_prompts", "constants_samples", "seed", "budget", "level")}
    path = os.path.join(cfg.out, f"constants-{sha256_json(key)[:16]}.json")
    if os.path.exists(path):
        with open(path) as f:
            consts = json.load(f)
    else:
        meas, rec = measure_constants(cfg)
        A = np.asarray(meas.constants.params, float)
        opt = rec.optimum_exact
        consts = dict(A=A.tolist(), recommended=int(rec.optimum.g_star_integer), g_star=opt.g_star_exact,
                      g_star_interval=[opt.g_star_exact_interval.low, opt.g_star_exact_interval.high],
                      description=meas.description)
        os.makedirs(cfg.out, exist_ok=True)
        with open(path, "w") as f:
            json.dump(consts, f, default=float)
    return dict(consts, groups=groups, predicted_mse=predicted_mse(consts["A"], groups, cfg.budget).tolist())


#: The pool estimator whose criterion describes each training advantage (lm_train's ``advantage``).
ADVANTAGE_ESTIMATOR = {"rloo": "leave_one_out", "grpo": "std_normalized", "dr_grpo": "group_mean"}


def initial_criteria(cfg: Config, groups) -> dict:
    """Scale-free criterion (and raw pool MSE) per estimator and G on the initial checkpoint (cached).

    One pool of ``constants_prompts x constants_samples`` completions (``sampler.prompt_samples``, seed
    ``cfg.seed``, scores sketched to 256 dimensions) fed to :func:`ustat_grpo.scaling.pool.compare_estimators`.
    """
    from ustat_grpo.measurement import sampler
    from ustat_grpo.core.provenance import sha256_json
    from ustat_grpo.scaling.pool import compare_estimators

    key = {k: getattr(cfg, k) for k in ("variant", "constants_prompts", "constants_samples", "seed", "budget", "level")}
    key["groups"] = list(groups)
    path = os.path.join(cfg.out, f"criteria-{sha256_json(key)[:16]}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    z, w = sampler.prompt_samples(None, variant=cfg.variant, num_prompts=cfg.constants_prompts,
                                  samples_per_prompt=cfg.constants_samples, rng=cfg.seed, device="cpu",
                                  projection_dim=256)
    cmp = compare_estimators(z, w, budget=cfg.budget, num_generations=groups,
                             estimators=tuple(ADVANTAGE_ESTIMATOR.values()), rng=cfg.seed, level=cfg.level)
    out = cmp.to_dict()
    os.makedirs(cfg.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f)
    return out


def _criterion_rows(criteria, adv, cmp, spearmanr):
    """Spearman of the scale-free criterion and of the raw pool MSE against AUC for one setting."""
    name = ADVANTAGE_ESTIMATOR.get(adv)
    if not criteria or name not in criteria["estimators"]:
        return {}
    e = criteria["estimators"].index(name)
    crit = np.asarray(criteria["criterion"][e], float)
    raw = np.asarray(criteria["raw_mse"][e], float)
    rec = criteria["recommended"][name]
    g = rec["num_generations"]
    return dict(criterion_estimator=name, criterion=crit.tolist(), raw_mse=raw.tolist(),
                criterion_recommended=g, criterion_interval=rec["interval"],
                raw_mse_recommended=rec["raw_mse_num_generations"],
                criterion_recommended_in_best_set=g is not None and int(g) in cmp.best_set,
                spearman_criterion_auc=float(spearmanr(-crit, cmp.mean).statistic),
                spearman_raw_mse_auc=float(spearmanr(-raw, cmp.mean).statistic))


def predicted_mse(A, groups, budget):
    """``MSE(G) = (A1 G + A2 + A3 / (G - 1)) / N`` at ``N = B G`` (the scaling law's exact form)."""
    from ustat_grpo.scaling.optimum import mse_design

    g = np.asarray(groups, float)
    return mse_design(budget / g, g) @ np.asarray(A, float)


def _settings(cfg: Config) -> list[tuple[str, float, str]]:
    """``(advantage, learning_rate, loss_type)`` per setting of ``--settings``."""
    out = []
    for item in _strs(cfg.settings):
        adv, lr, *loss = item.split(":")
        out.append((adv.strip(), float(lr), loss[0].strip() if loss else "sequence_sum"))
    return out


def _label(adv, lr, loss="sequence_sum") -> str:
    return f"{adv}/lr={lr:g}" + ("" if loss == "sequence_sum" else f"/{loss}")


def _tasks(cfg: Config, groups, settings):
    """One task per (setting, seed, G), in the order of the settings."""
    tasks = []
    for a, lr, loss in settings:
        for s in range(cfg.seeds):
            for g in groups:
                tc = lm_train.TrainConfig(num_steps=cfg.steps, budget=cfg.budget, num_generations=g, advantage=a,
                                          optimizer=cfg.optimizer, learning_rate=lr, eval_every=cfg.eval_every,
                                          num_eval=cfg.num_eval, loss_type=loss)
                tasks.append(dict(variant=cfg.variant, config=asdict(tc), seed=cfg.seed, seed_key=(s,),
                                  threads=cfg.threads, key=((a, lr, loss), g, s)))
    return tasks


def run_grid(cfg: Config, progress=True):
    """Every training cell; returns the arrays of the NetCDF file.

    Finished cells are kept in ``out/cells/`` (one JSON file each, written atomically, named by a
    hash of the cell's settings and seed), so an interrupted grid resumes where it stopped and a
    grid that shares cells with an earlier one reuses them.  Results do not depend on the order.
    """

    groups, settings = _ints(cfg.groups), _settings(cfg)
    tasks = _tasks(cfg, groups, settings)
    cache = os.path.join(cfg.out, "cells")
    shape = (len(settings), len(groups), cfg.seeds)
    arr = {k: np.full(shape + (cfg.steps,), np.nan) for k in ("reward", "frac_reward_zero_std", "grad_norm")}
    arr["p_canonical"] = np.full(shape + (len(lm_train.TrainConfig(
        num_steps=cfg.steps, budget=cfg.budget, num_generations=groups[0], eval_every=cfg.eval_every).eval_steps),),
        np.nan)
    arr["seconds"] = np.full(shape, np.nan)
    eval_steps = None

    def store(task, out):
        nonlocal eval_steps
        st, g, s = task["key"]
        idx = (settings.index(st), groups.index(g), s)
        for k in ("reward", "frac_reward_zero_std", "grad_norm", "p_canonical"):
            arr[k][idx] = out[k]
        arr["seconds"][idx] = out["seconds"]
        eval_steps = np.asarray(out["eval_steps"])

    for task, out in lm_train.run_cells(tasks, cache, scheduler=cfg.scheduler, workers=cfg.workers,
                                        progress=progress, desc="train_vs_g cells"):
        store(task, out)
    return dict(groups=groups, settings=settings, eval_steps=eval_steps, **arr)


def analyse(grid: dict, rec_g: int, mse_pred, level=0.95, criteria=None) -> dict:
    """Per setting: the paired comparison, ANOVA, rank agreement and the power guard; with
    ``criteria`` (:func:`initial_criteria`), also the scale-free criterion's pick and Spearman."""
    from scipy import stats

    groups = np.asarray(grid["groups"])
    a = auc(grid["p_canonical"], grid["eval_steps"])                    # (setting, G, seed)
    mse_pred = np.asarray(mse_pred, float)
    far = groups[mse_pred >= 2 * mse_pred.min()]
    out = {}
    for i, (adv, lr, loss) in enumerate(grid["settings"]):
        cmp = compare_group_sizes(groups, a[i], level=level)
        rho = stats.spearmanr(-mse_pred, cmp.mean).statistic
        guard_effect = bool(cmp.effect_pvalue < 1 - level)
        guard_far = bool(all(int(g) not in cmp.best_set for g in far))
        out[_label(adv, lr, loss)] = dict(
            advantage=adv, learning_rate=lr, **({} if loss == "sequence_sum" else {"loss_type": loss}),
            comparison=cmp.to_dict(), spearman_mse_auc=float(rho),
            recommended=int(rec_g), recommended_in_best_set=int(rec_g) in cmp.best_set,
            far_groups=[int(g) for g in far], power_guard=dict(effect_significant=guard_effect,
                                                               far_groups_excluded=guard_far),
            passed=bool(int(rec_g) in cmp.best_set and guard_effect and guard_far),
            **_criterion_rows(criteria, adv, cmp, stats.spearmanr))
    return out


def drift_study(cfg: Config, rec_g: int, out_dir: str, progress=True) -> dict:
    """One run at the recommended G saving checkpoints; G* re-measured on each."""
    from ustat_grpo.policies.lm import load_policy

    steps = _ints(cfg.drift)
    advantage, lr, loss = _settings(cfg)[0]
    tc = lm_train.TrainConfig(num_steps=max(steps), budget=cfg.budget, num_generations=rec_g,
                              advantage=advantage, optimizer=cfg.optimizer, learning_rate=lr, eval_every=cfg.eval_every,
                              num_eval=cfg.num_eval, loss_type=loss)
    pol = load_policy(variant=cfg.variant, device="cpu")
    ckdir = os.path.join(out_dir, "checkpoints")
    res = lm_train.train_grpo(pol, tc, rng=np.random.SeedSequence(cfg.seed, spawn_key=(0,)),
                              checkpoint_steps=steps, checkpoint_dir=ckdir, progress=progress)
    rows = []
    for s in steps:
        ck = load_policy(res.checkpoints[s], template="compact_zero_shot", device="cpu")
        meas, rec = measure_constants(cfg, ck, samples=cfg.drift_samples, seed_offset=1)
        opt = rec.optimum_exact
        A = np.asarray(meas.constants.params, float)
        rows.append(dict(step=s, A=A.tolist(), g_star=opt.g_star_exact,
                         g_star_interval=[opt.g_star_exact_interval.low, opt.g_star_exact_interval.high],
                         recommended=int(rec.optimum.g_star_integer),
                         p_canonical=float(res.p_canonical[list(res.eval_steps).index(s)])
                         if s in res.eval_steps else float("nan")))
    # Predicted MSE along the run of the fixed G against the per-checkpoint best divisor.
    groups = _ints(cfg.groups)
    ratio = []
    for r in rows:
        m = predicted_mse(np.asarray(r["A"]), groups, cfg.budget)
        ratio.append(float(m[groups.index(rec_g)] / m.min()) if rec_g in groups else float("nan"))
        r["best_divisor"] = int(groups[int(np.argmin(m))])
    return dict(steps=steps, rows=rows, fixed_g=rec_g, fixed_over_schedule_mse=ratio,
                checkpoints={str(k): v for k, v in res.checkpoints.items()})


def to_dataset(cfg: Config, grid: dict, consts: dict, analysis: dict, drift: dict | None):
    import xarray as xr

    dims = ("setting", "num_generations", "seed")
    coords = dict(setting=[_label(*st) for st in grid["settings"]],
                  advantage=("setting", [st[0] for st in grid["settings"]]),
                  learning_rate=("setting", [st[1] for st in grid["settings"]]),
                  loss_type=("setting", [st[2] for st in grid["settings"]]),
                  num_generations=grid["groups"], seed=np.arange(cfg.seeds), step=np.arange(1, cfg.steps + 1),
                  eval_step=grid["eval_steps"])
    ds = xr.Dataset(
        {k: (dims + ("step",), grid[k]) for k in ("reward", "frac_reward_zero_std", "grad_norm")}
        | {"p_canonical": (dims + ("eval_step",), grid["p_canonical"]),
           "auc": (dims, auc(grid["p_canonical"], grid["eval_steps"])),
           "predicted_mse": (("num_generations",), np.asarray(consts["predicted_mse"]))},
        coords=coords)
    ds["p_canonical"].attrs["long_name"] = "exact probability of the canonical correct completion (evaluation set)"
    ds["auc"].attrs["long_name"] = "area under p_canonical vs rollouts / rollouts"
    ds.attrs["constants"] = json.dumps(consts, sort_keys=True)
    ds.attrs["analysis"] = json.dumps(analysis, sort_keys=True)
    ds.attrs["drift"] = json.dumps(drift, sort_keys=True) if drift else ""
    return ds


def load(path):
    """``(grid, constants, config)`` back from a ``train_vs_g.nc`` (re-analysis needs no training)."""
    import xarray as xr

    with xr.open_dataset(path) as ds:
        ds = ds.load()
    grid = dict(groups=[int(g) for g in ds.num_generations.values],
                settings=[(str(a), float(lr), str(loss)) for a, lr, loss in zip(
                    ds.advantage.values, ds.learning_rate.values,
                    ds.loss_type.values if "loss_type" in ds.coords else ["sequence_sum"] * ds.sizes["setting"])],
                eval_steps=ds.eval_step.values,
                **{k: ds[k].values for k in ("reward", "frac_reward_zero_std", "grad_norm", "p_canonical")})
    consts = json.loads(ds.attrs["constants"])
    crit = consts.get("criteria")
    if crit and "dr_grpo" in crit["estimators"]:     # files written before pool's "dr_grpo" became "group_mean"
        crit["estimators"] = ["group_mean" if e == "dr_grpo" else e for e in crit["estimators"]]
        crit["recommended"] = {("group_mean" if k == "dr_grpo" else k): v for k, v in crit["recommended"].items()}
    return grid, consts, json.loads(ds.attrs["config"]), ds


def plot(ds, summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(x) for x in ds.setting.values]
    groups = ds.num_generations.values
    rec = summary["constants"]["recommended"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    x = ds.eval_step.values * int(summary["config"]["budget"])
    p = ds.p_canonical.sel(setting=labels[0])
    for g in groups:
        m = p.sel(num_generations=g).mean("seed")
        ax.plot(x, m, label=f"G = {g}" + (" (recommended)" if g == rec else ""), lw=2.5 if g == rec else 1.2)
    ax.set(xlabel="rollouts", ylabel="p(correct answer), evaluation set",
           title=f"learning curves ({labels[0]}; mean of {ds.sizes['seed']} seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for i, lab in enumerate(labels):
        au = ds.auc.sel(setting=lab)
        m, se = au.mean("seed"), au.std("seed", ddof=1) / math.sqrt(ds.sizes["seed"])
        off = (i - (len(labels) - 1) / 2) * 0.04
        ax.errorbar(groups * 2 ** off, m, yerr=1.96 * se, marker="o", capsize=3, label=lab)
    ax.axvline(rec, color="k", ls="--", lw=1, label=f"recommended G = {rec}")
    gi = summary["constants"]["g_star_interval"]
    ax.axvspan(max(gi[0], groups[0] / 1.5), min(gi[1], groups[-1] * 1.5), color="k", alpha=0.08,
               label="95% CI of G*")
    ax.set(xscale="log", xlabel="G (log scale)", ylabel="AUC of p(correct) (mean, 95% CI)",
           title=f"area under the curve vs G at N = {summary['config']['budget']}")
    ax.set_xticks(groups, [str(g) for g in groups])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    ax = axes[2]
    mse = ds.predicted_mse.values
    ax.plot(groups, mse / mse.min(), "o-k")
    ax.axvline(rec, color="k", ls="--", lw=1)
    ax.set(xscale="log", xlabel="G (log scale)", ylabel="predicted MSE / its minimum",
           title="prediction from A1..A3 at the initial checkpoint")
    ax.set_xticks(groups, [str(g) for g in groups])
    ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(summary: dict) -> str:
    c = summary["constants"]
    lines = [f"Recommendation at N = {summary['config']['budget']} (divisors): G = {c['recommended']}; "
             f"G* = {c['g_star']:.2f} [{c['g_star_interval'][0]:.2f}, {c['g_star_interval'][1]:.2f}]; "
             f"A = {', '.join(f'{a:.4g}' for a in c['A'])}",
             "predicted MSE x N: " + ", ".join(f"G={g}: {m * summary['config']['budget']:.4g}"
                                                for g, m in zip(c['groups'], c['predicted_mse']))]
    for key, r in summary["analysis"].items():
        cmp = r["comparison"]
        means = ", ".join(f"G={g}: {m:.4f}+-{1.96 * s:.4f}" for g, m, s in zip(cmp["groups"], cmp["mean"], cmp["se"]))
        lines += [f"[{key}] AUC {means}",
                  f"    best G = {cmp['best']}; not significantly worse (level {cmp['level']}, paired, Bonferroni): "
                  f"{cmp['best_set']}; ANOVA p(G) = {cmp['effect_pvalue']:.3g}; Spearman(-MSE, AUC) = "
                  f"{r['spearman_mse_auc']:.2f}",
                  f"    seeds needed to separate from the best (80% power): {cmp['seeds_needed']}",
                  f"    recommended G = {r['recommended']} in the set: {r['recommended_in_best_set']}; power guard "
                  f"{r['power_guard']} (G with predicted MSE >= 2x min: {r['far_groups']}) -> "
                  f"{'PASS' if r['passed'] else 'FAIL'}"]
        if "criterion" in r:
            lines.append(f"    scale-free criterion ({r['criterion_estimator']}): G = {r['criterion_recommended']} "
                         f"{r['criterion_interval']}, in the set: {r['criterion_recommended_in_best_set']}; "
                         f"raw pool MSE picks G = {r['raw_mse_recommended']}; "
                         f"Spearman(-R, AUC) = {r['spearman_criterion_auc']:.2f}, "
                         f"Spearman(-raw MSE, AUC) = {r['spearman_raw_mse_auc']:.2f}")
    d = summary.get("drift")
    if d:
        lines.append(f"Drift of G* along one run at G = {d['fixed_g']}:")
        for r, q in zip(d["rows"], d["fixed_over_schedule_mse"]):
            lines.append(f"    step {r['step']:4d}: p_canonical {r['p_canonical']:.4f}, G* = {r['g_star']:.2f} "
                         f"[{r['g_star_interval'][0]:.2f}, {r['g_star_interval'][1]:.2f}], best divisor "
                         f"{r['best_divisor']}; MSE(fixed G)/MSE(best divisor) = {q:.3f}")
    return "\n".join(lines)


def reanalyse(cfg: Config) -> int:
    """Analysis, report and figure again from a stored NetCDF file."""
    grid, consts, stored, ds = load(cfg.reanalyse)
    analysis = analyse(grid, consts["recommended"], consts["predicted_mse"], stored["level"], consts.get("criteria"))
    drift = json.loads(ds.attrs["drift"]) if ds.attrs.get("drift") else None
    summary = dict(config=stored, constants=consts, analysis=analysis, drift=drift)
    if not cfg.no_plot:
        os.makedirs(cfg.out, exist_ok=True)
        plot(ds, summary, os.path.join(cfg.out, "train_vs_g.png"))
    print(report(summary))
    return 0


def main(argv=None) -> int:
    p = parser_from_dataclass(Config, prog="python -m simulations.train_vs_g", description=__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    cfg = Config(**{k: getattr(args, k) for k in Config.__dataclass_fields__})
    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    if cfg.reanalyse:
        return reanalyse(cfg)
    groups = _ints(cfg.groups)
    if any(cfg.budget % g or g < 2 for g in groups):
        p.error(f"every G in --groups must be >= 2 and divide --budget {cfg.budget}")
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    consts = initial_constants(cfg, groups)
    print(f"constants ready after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    grid = run_grid(cfg)
    if not cfg.no_criteria:
        consts["criteria"] = initial_criteria(cfg, groups)
    analysis = analyse(grid, consts["recommended"], consts["predicted_mse"], cfg.level, consts.get("criteria"))
    drift = drift_study(cfg, consts["recommended"], cfg.out) if cfg.drift else None
    summary = dict(config=asdict(cfg), constants=consts, analysis=analysis, drift=drift,
                   seconds=time.perf_counter() - t0, cell_seconds=float(np.nansum(grid["seconds"])))
    ds = to_dataset(cfg, grid, consts, analysis, drift)
    os.makedirs(cfg.out, exist_ok=True)
    write_netcdf(ds, os.path.join(cfg.out, "train_vs_g.nc"),
                 provenance=provenance_attrs(seed=cfg.seed, config=asdict(cfg)))
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True, default=float)
    if not cfg.no_plot:
        plot(ds, summary, os.path.join(cfg.out, "train_vs_g.png"))
    print(report(summary))
    print(f"wall time {summary['seconds']:.0f} s; training cells {summary['cell_seconds']:.0f} s of CPU; "
          f"outputs in {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
