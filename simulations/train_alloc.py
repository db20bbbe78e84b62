"""Does allocating rollouts across prompts train better than a uniform G*?  (issue #23)

At a fixed rollout budget ``N`` per step and the same ``B = N / G*`` fresh questions per step, four
rules split the ``N`` rollouts over the step's questions by the question's *category* (one of the
five arithmetic categories: a difficulty column known before sampling):

* ``uniform``: every question gets ``G*``, the recommendation of ``fit_scaling`` at ``N`` among
  the divisors of ``N`` (the comparator; bit-identical to the fixed-G trainer);
* ``ustat``: the U-statistic allocation, :func:`ustat_grpo.scaling.allocation.optimal_allocation` of the
  per-category pieces ``a2, a3`` of the leave-one-out estimator's conditional error
  ``a2/G + a3/(G(G-1))`` (:func:`~ustat_grpo.scaling.allocation.prompt_error_pieces`, averaged over the
  category's pilot questions);
* ``knapsack``: Knapsack-RL's rule (:func:`~ustat_grpo.scaling.allocation.knapsack_rl_allocation`) with
  the category's pilot pass rate standing in for a fresh question's "earlier visits";
* ``pass_rate``: the ``p(1-p)`` rule (:func:`~ustat_grpo.scaling.allocation.pass_rate_allocation`).

Per built-in policy (weak and strong):

1. A pilot on the initial checkpoint (``sampler.prompt_samples``: ``pilot_prompts`` questions of
   the paper's set with their categories, ``pilot_samples`` completions each, scores sketched to
   256 dimensions) gives the constants ``A1..A3``, ``G*`` at ``N``, the per-category pass rates
   and ``(a2, a3)``, and the predicted MSE of every rule: ``allocation.batch_mse`` averaged over
   ``mse_draws`` random category compositions of a step's ``B`` questions.
2. GRPO (:func:`ustat_grpo.experiments.lm_train.train_grpo`, leave-one-out advantage, Adam) trains the initial
   checkpoint with each rule and seed; the same seed gives every rule the same questions (common
   random numbers).  Outcomes: area under the ``p_canonical``-vs-rollouts curve (AUC), the final
   ``p_canonical`` and the mean ``frac_reward_zero_std``.
3. Per policy: :func:`ustat_grpo.scaling.performance.compare_group_sizes` over the rules (paired by seed,
   Bonferroni subset selection of the rules not significantly worse than the best), the paired
   difference of each rule to ``uniform`` with its t interval, and the predicted gain
   ``1 - MSE_rule / MSE_uniform`` against the observed one, the AUC difference relative to the
   learning of uniform (``(AUC_rule - AUC_uniform) / (AUC_uniform - p0)``, ``p0`` the initial
   ``p_canonical``): how much more the policy learned over the run.

Outputs in ``--out``: ``train_alloc.nc`` (per-step and per-evaluation arrays, AUC, the pilot's
per-category statistics, analysis, provenance), ``summary.json`` and ``train_alloc.png``.  Usage::

    python -m simulations.train_alloc --out results/train_alloc   # the default grid (80 runs of 60 steps), ~1 h on 2 busy cores
    python -m simulations.train_alloc --quick                               # seconds: keeps the script working
    python -m simulations.train_alloc --reanalyse docs/results/train_alloc.nc --out docs/figures
    python -m paper_checks --only Alloc-training                            # the check on the stored result
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ustat_grpo.policies import arithmetic
from ustat_grpo.experiments import lm_train
from ustat_grpo.experiments.lm_train import auc_curve as auc
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.scaling.performance import compare_group_sizes
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf

RULES = ("uniform", "ustat", "knapsack", "pass_rate")
METRICS = ("auc", "final_p_canonical", "mean_frac_reward_zero_std")


@dataclass(frozen=True)
class Config:
    variants: str = field(default="weak,strong", metadata={"help": "comma-separated built-in policy variants"})
    rules: str = field(default=",".join(RULES), metadata={"help": "comma-separated allocation rules (the first is the comparator)"})
    budget: int = field(default=64, metadata={"help": "rollouts per step N"})
    steps: int = field(default=60, metadata={"help": "training steps per run (60: what 2 shared cores allowed for the stored grid; train_vs_g runs 300)"})
    seeds: int = field(default=10, metadata={"help": "seeds per cell (runs paired by seed)"})
    advantage: str = field(default="rloo", metadata={"help": "advantage (rloo = leave-one-out GRPO, the estimator whose error the allocation models)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate"})
    eval_every: int = field(default=10, metadata={"help": "evaluate every this many steps"})
    num_eval: int = field(default=256, metadata={"help": "evaluation questions (make_dataset(num_eval, seed=1))"})
    pilot_prompts: int = field(default=250, metadata={"help": "pilot questions (the first P of the paper's set, 50 per category)"})
    pilot_samples: int = field(default=16, metadata={"help": "completions per pilot question"})
    min_size: int = field(default=2, metadata={"help": "smallest group size of every rule"})
    max_size: int = field(default=0, metadata={"help": "largest group size (0: the budget)"})
    mse_draws: int = field(default=2000, metadata={"help": "category compositions averaged for the predicted MSE"})
    seed: int = field(default=20261129, metadata={"help": "root seed"})
    workers: int = field(default=2, metadata={"help": "processes (0: all cores)"})
    threads: int = field(default=1, metadata={"help": "torch threads per process"})
    scheduler: str = field(default="processes", metadata={"help": "processes, serial or a Dask address"})
    level: float = field(default=0.95, metadata={"help": "confidence level"})
    out: str = field(default="results/train_alloc", metadata={"help": "output directory"})
    quick: bool = field(default=False, metadata={"help": "tiny grid (seconds), to keep the script working"})
    reanalyse: str = field(default="", metadata={"help": "re-analyse and re-plot a stored train_alloc.nc (no training)", "metavar": "NC"})
    no_plot: bool = field(default=False, metadata={"help": "skip the PNG"})


QUICK = dict(variants="weak", budget=16, steps=4, seeds=3, learning_rate=1e-3, eval_every=2, num_eval=16,
             pilot_prompts=20, pilot_samples=8, mse_draws=200, workers=1)


def _strs(s):
    return [x.strip() for x in str(s).split(",") if x.strip()]


# ------------------------------------------------------------------------------------------ pilot

def category_pieces(categories, rewards, a2, a3, cats=arithmetic.CATEGORIES) -> dict:
    """Per-category pass rate and mean ``a2, a3`` of the pilot questions (in the order of ``cats``)."""
    categories = np.asarray(categories)
    rewards, a2, a3 = np.asarray(rewards, float), np.asarray(a2, float), np.asarray(a3, float)
    out = dict(categories=list(cats), num_prompts=[], pass_rate=[], a2=[], a3=[])
    for c in cats:
        m = categories == c
        if not m.any():
            raise ValueError(f"the pilot has no question of category {c!r}")
        out["num_prompts"].append(int(m.sum()))
        out["pass_rate"].append(float(rewards[m].mean()))
        out["a2"].append(float(a2[m].mean()))
        out["a3"].append(float(a3[m].mean()))
    return out


def predicted_mse(pilot: dict, rule: str, budget: int, num_prompts: int, *, draws: int, seed: int,
                  min_size: int = 2, max_size=None) -> dict:
    """``E[batch_mse]`` of a rule over the category composition of a step's ``num_prompts`` questions
    (categories uniform, as ``lm_train.fresh_problems`` draws them), by ``draws`` draws seeded by
    ``seed`` alone, so every rule is scored on the same compositions:
    ``{"mse": ..., "mean_size": [mean group size of a question of each category]}``."""
    from ustat_grpo.scaling.allocation import batch_mse

    al = _allocation(pilot, rule, min_size, max_size)
    cats = np.asarray(pilot["categories"])
    a2, a3 = np.maximum(pilot["a2"], 0.0), np.maximum(pilot["a3"], 0.0)
    rng = np.random.default_rng(seed)              # the same compositions for every rule (common random numbers)
    tot, size_sum, count = 0.0, np.zeros(len(cats)), np.zeros(len(cats))
    for _ in range(draws):
        idx = rng.integers(len(cats), size=num_prompts)
        sizes = (np.full(num_prompts, budget // num_prompts) if al is None else al.sizes(cats[idx], budget))
        tot += batch_mse(pilot["A"][0], a2[idx], a3[idx], sizes)
        np.add.at(size_sum, idx, sizes)
        np.add.at(count, idx, 1)
    return dict(mse=tot / draws, mean_size=(size_sum / np.maximum(count, 1)).tolist())


def _allocation(pilot: dict, rule: str, min_size=2, max_size=None):
    """The :class:`lm_train.CategoryAllocation` of a rule (``None`` for uniform: the fixed-G trainer)."""
    if rule == "uniform":
        return None
    return lm_train.CategoryAllocation(rule=rule, categories=tuple(pilot["categories"]),
                                       a2=tuple(np.maximum(pilot["a2"], 0.0)), a3=tuple(np.maximum(pilot["a3"], 0.0)),
                                       pass_rate=tuple(pilot["pass_rate"]), min_size=min_size, max_size=max_size)


def run_pilot(cfg: Config, variant: str) -> dict:
    """Constants, G* at the budget and the per-category pieces of ``variant`` (cached in ``out/``)."""
    from ustat_grpo.measurement import sampler
    from ustat_grpo.core.provenance import sha256_json
    from ustat_grpo.scaling.allocation import prompt_error_pieces
    from ustat_grpo.scaling.constants import constants_from_statistics, prompt_statistics
    from ustat_grpo.recommendation.recommend import recommend

    key = dict(variant=variant, prompts=cfg.pilot_prompts, samples=cfg.pilot_samples, seed=cfg.seed,
               budget=cfg.budget, level=cfg.level)
    path = os.path.join(cfg.out, f"pilot-{sha256_json(key)[:16]}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    t0 = time.perf_counter()
    z, w = sampler.prompt_samples(None, variant=variant, num_prompts=cfg.pilot_prompts,
                                  samples_per_prompt=cfg.pilot_samples, rng=cfg.seed, device="cpu",
                                  projection_dim=256)
    stats = prompt_statistics(z, w)
    consts = constants_from_statistics(stats, level=cfg.level)
    rec = recommend(consts, budget=cfg.budget, divisors_only=True, level=cfg.level)
    a2, a3 = prompt_error_pieces(stats)
    # prompt p of the pilot is question p of the paper's set (arithmetic_task, shuffle=False)
    cats = [q.category for q in arithmetic.question_set(cfg.pilot_prompts, seed=0)]
    out = dict(variant=variant, A=np.asarray(consts.params, float).tolist(),
               recommended=int(rec.optimum.g_star_integer), g_star=float(rec.optimum_exact.g_star_exact),
               seconds=time.perf_counter() - t0, **category_pieces(np.asarray(cats)[stats.prompt], stats.rewards, a2, a3))
    os.makedirs(cfg.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, default=float)
    return out


# ------------------------------------------------------------------------------------------ grid

def _tasks(cfg: Config, pilots: dict):
    tasks = []
    max_size = cfg.max_size or None
    for s in range(cfg.seeds):                     # seed-major: an interrupted grid has whole seeds of every cell
        for v in _strs(cfg.variants):
            pil = pilots[v]
            for r in _strs(cfg.rules):
                tc = lm_train.TrainConfig(num_steps=cfg.steps, budget=cfg.budget, num_generations=pil["recommended"],
                                          advantage=cfg.advantage, learning_rate=cfg.learning_rate,
                                          eval_every=cfg.eval_every, num_eval=cfg.num_eval,
                                          allocation=_allocation(pil, r, cfg.min_size, max_size))
                tasks.append(dict(variant=v, config=asdict(tc), seed=cfg.seed, seed_key=(s,), threads=cfg.threads,
                                  key=(v, r, s)))
    return tasks


def run_grid(cfg: Config, pilots: dict, progress=True) -> dict:
    """Every training cell (cached one JSON file each in ``out/cells/``: resumable); the arrays."""
    variants, rules = _strs(cfg.variants), _strs(cfg.rules)
    tasks = _tasks(cfg, pilots)
    cache = os.path.join(cfg.out, "cells")
    shape = (len(variants), len(rules), cfg.seeds)
    n_eval = len(lm_train.TrainConfig(num_steps=cfg.steps, budget=cfg.budget, num_generations=2,
                                      eval_every=cfg.eval_every).eval_steps)
    b_max = max(cfg.budget // pilots[v]["recommended"] for v in variants)
    arr = {k: np.full(shape + (cfg.steps,), np.nan) for k in ("reward", "frac_reward_zero_std", "grad_norm")}
    arr["p_canonical"] = np.full(shape + (n_eval,), np.nan)
    arr["group_sizes"] = np.zeros(shape + (cfg.steps, b_max), np.int64)   # 0 = no such question (B < b_max)
    arr["seconds"] = np.full(shape, np.nan)
    eval_steps = None

    def store(task, out):
        nonlocal eval_steps
        v, r, s = task["key"]
        idx = (variants.index(v), rules.index(r), s)
        for k in ("reward", "frac_reward_zero_std", "grad_norm", "p_canonical"):
            arr[k][idx] = out[k]
        gs = np.asarray(out["group_sizes"], np.int64)
        if np.any(gs.sum(1) != cfg.budget):
            raise RuntimeError(f"cell {task['key']}: rollouts per step {gs.sum(1)} differ from the budget")
        arr["group_sizes"][idx][:, : gs.shape[1]] = gs
        arr["seconds"][idx] = out["seconds"]
        eval_steps = np.asarray(out["eval_steps"])

    for task, out in lm_train.run_cells(tasks, cache, scheduler=cfg.scheduler, workers=cfg.workers,
                                        progress=progress, desc="train_alloc cells"):
        store(task, out)
    return dict(variants=variants, rules=rules, eval_steps=eval_steps, **arr)


# ------------------------------------------------------------------------------------------ analysis

def metrics(grid: dict) -> dict:
    """Per (variant, rule, seed): AUC, final p_canonical, mean frac_reward_zero_std."""
    return dict(auc=auc(grid["p_canonical"], grid["eval_steps"]), final_p_canonical=grid["p_canonical"][..., -1],
                mean_frac_reward_zero_std=grid["frac_reward_zero_std"].mean(-1))


def paired(d, level):
    """Mean, standard error, t interval and two-sided p-value of paired differences ``d``."""
    from scipy import stats

    n = d.size
    m, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    p = float(2 * stats.t.sf(abs(m) / se, n - 1)) if se > 0 else (0.0 if m else 1.0)
    return dict(mean=m, se=se, ci=[m - q * se, m + q * se], pvalue=p)


def analyse(grid: dict, pilots: dict, predicted: dict, level: float = 0.95) -> dict:
    """Per variant: the paired comparison of the rules (AUC), differences to the comparator (the
    first rule) for every metric, and the predicted MSE gain against the observed AUC gain."""
    rules = list(grid["rules"])
    met = metrics(grid)
    p0 = grid["p_canonical"][..., 0]                       # the initial checkpoint's (variant, rule, seed)
    out = {}
    for i, v in enumerate(grid["variants"]):
        a = met["auc"][i]                                                  # (rule, seed)
        cmp = compare_group_sizes(np.arange(len(rules)), a, level=level)
        d = cmp.to_dict()
        base = rules[0]
        learned = float((a[0] - p0[i, 0]).mean())         # uniform's learning; the gain is undefined if <= 0
        per_rule = {}
        for j, r in enumerate(rules):
            row = {m: dict(mean=float(met[m][i, j].mean()),
                           se=float(met[m][i, j].std(ddof=1) / math.sqrt(a.shape[1]))) for m in METRICS}
            if j:
                row["difference_to_" + base] = {m: paired(met[m][i, j] - met[m][i, 0], level) for m in METRICS}
            gain = 1.0 - predicted[v][r]["mse"] / predicted[v][base]["mse"]
            sz = grid["group_sizes"][i, j]                                 # (step, question), 0 = none
            row.update(predicted_mse=predicted[v][r]["mse"], predicted_gain=gain,
                       mean_size_by_category=predicted[v][r]["mean_size"],
                       # mean training reward (over the step's rollouts: weighted by the rule's sizes)
                       reward_first_last_10=[float(grid["reward"][i, j, :, :10].mean()),
                                             float(grid["reward"][i, j, :, -10:].mean())],
                       observed_auc_gain=float((a[j] - a[0]).mean()),
                       observed_relative_auc_change=float((a[j] - a[0]).mean() / a[0].mean()),
                       observed_learning_gain=(float((a[j] - a[0]).mean() / learned) if learned > 0 else math.nan),
                       mean_smallest_largest_group=[
                           float(np.mean(np.where(sz > 0, sz, np.iinfo(np.int64).max).min(-1))),
                           float(np.mean(sz.max(-1)))],
                       not_worse=j in cmp.best_set)
            per_rule[r] = row
        beat = per_rule.get("ustat", {}).get("difference_to_" + base, {}).get("auc")
        out[v] = dict(rules=rules, comparison=dict(d, groups=rules, best=rules[d["best"]],
                                                   best_set=[rules[k] for k in d["best_set"]],
                                                   pvalue_worse={rules[int(k)]: p for k, p in d["pvalue_worse"].items()},
                                                   seeds_needed={rules[int(k)]: n for k, n in d["seeds_needed"].items()}),
                      per_rule=per_rule, recommended=int(pilots[v]["recommended"]),
                      num_prompts=int(grid["budget"] // pilots[v]["recommended"]),
                      ustat_beats_uniform=None if beat is None else bool(beat["ci"][0] > 0),
                      ustat_worse_than_uniform=None if beat is None else bool(beat["ci"][1] < 0))
    return out


def _why(r: dict) -> str:
    """Why the U-statistic allocation did not beat uniform, from the numbers (empty when it did)."""
    if r["ustat_beats_uniform"]:
        return ""
    u, base = r["per_rule"]["ustat"], r["per_rule"][r["rules"][0]]
    if not math.isfinite(u["observed_learning_gain"]):
        rw = base["reward_first_last_10"]
        return (f", likely because uniform training made this policy worse, not better (its AUC {base['auc']['mean']:.4f} is "
                f"below the initial p_canonical; training reward {rw[0]:.3f} -> {rw[1]:.3f} over the first and last "
                "10 steps): where the run does not improve the metric, a lower-MSE gradient has no improvement to speed up")
    if u["predicted_gain"] < 0.05:
        return (f", likely because the predicted MSE reduction is small ({100 * u['predicted_gain']:.1f}%): the categories "
                "are nearly homogeneous in a2, a3")
    d = u["difference_to_" + r["rules"][0]]["auc"]
    return (f", likely because a predicted MSE reduction of {100 * u['predicted_gain']:.1f}% moved the AUC by less than "
            f"the seed noise of the paired difference (se {d['se']:.4f})")


def conclusion(analysis: dict) -> str:
    """One plain sentence per policy: did the U-statistic allocation beat uniform G*?"""
    out = []
    for v, r in analysis.items():
        u = r["per_rule"].get("ustat")
        if u is None:
            continue
        d = u["difference_to_" + r["rules"][0]]["auc"]
        verdict = ("beat uniform G*" if r["ustat_beats_uniform"] else
                   "was worse than uniform G*" if r["ustat_worse_than_uniform"] else "did not beat uniform G*")
        out.append(f"{v}: the U-statistic allocation {verdict} (AUC difference {d['mean']:+.4f}, "
                   f"{100 * r['comparison']['level']:.0f}% CI [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}], "
                   f"paired p = {d['pvalue']:.2g}; predicted MSE reduction {100 * u['predicted_gain']:.1f}%, "
                   f"observed AUC change {100 * u['observed_relative_auc_change']:+.2f}%; rules not significantly "
                   f"worse than the best: {', '.join(r['comparison']['best_set'])})" + _why(r))
    return "; ".join(out)


# ------------------------------------------------------------------------------------------ files

def to_dataset(cfg: Config, grid: dict, pilots: dict, predicted: dict, analysis: dict):
    import xarray as xr

    dims = ("variant", "rule", "seed")
    met = metrics(grid)
    cats = list(arithmetic.CATEGORIES)
    ds = xr.Dataset(
        {k: (dims + ("step",), grid[k]) for k in ("reward", "frac_reward_zero_std", "grad_norm")}
        | {"p_canonical": (dims + ("eval_step",), grid["p_canonical"]),
           "group_sizes": (dims + ("step", "question"), grid["group_sizes"]),
           "seconds": (dims, grid["seconds"]),
           **{k: (dims, met[k]) for k in METRICS},
           "predicted_mse": (("variant", "rule"), [[predicted[v][r]["mse"] for r in grid["rules"]] for v in grid["variants"]]),
           **{f"pilot_{k}": (("variant", "category"), [pilots[v][k] for v in grid["variants"]])
              for k in ("pass_rate", "a2", "a3", "num_prompts")},
           "pilot_A": (("variant", "constant"), [pilots[v]["A"] for v in grid["variants"]]),
           "recommended": (("variant",), [pilots[v]["recommended"] for v in grid["variants"]])},
        coords=dict(variant=grid["variants"], rule=grid["rules"], seed=np.arange(grid["p_canonical"].shape[2]),
                    step=np.arange(1, grid["reward"].shape[-1] + 1), eval_step=grid["eval_steps"],
                    category=cats, constant=["A1", "A2", "A3"]))
    ds["p_canonical"].attrs["long_name"] = "exact probability of the canonical correct completion (evaluation set)"
    ds["auc"].attrs["long_name"] = "area under p_canonical vs rollouts / rollouts"
    ds["group_sizes"].attrs["long_name"] = "group size of each question of each step (0: no such question)"
    ds.attrs["pilots"] = json.dumps(pilots, sort_keys=True)
    ds.attrs["predicted"] = json.dumps(predicted, sort_keys=True)
    ds.attrs["analysis"] = json.dumps(analysis, sort_keys=True, default=float)
    ds.attrs["conclusion"] = conclusion(analysis)
    return ds


def load(path):
    """``(grid, pilots, predicted, config, ds)`` back from a ``train_alloc.nc``."""
    import xarray as xr

    with xr.open_dataset(path) as ds:
        ds = ds.load()
    stored = json.loads(ds.attrs["config"])
    grid = dict(variants=[str(v) for v in ds.variant.values], rules=[str(r) for r in ds.rule.values],
                eval_steps=ds.eval_step.values, budget=int(stored["budget"]),
                **{k: ds[k].values for k in ("reward", "frac_reward_zero_std", "grad_norm", "p_canonical",
                                             "group_sizes")})
    return grid, json.loads(ds.attrs["pilots"]), json.loads(ds.attrs["predicted"]), stored, ds


def summarise(cfg_dict: dict, pilots, predicted, analysis) -> dict:
    return dict(config=cfg_dict, pilots=pilots, predicted=predicted, analysis=analysis,
                conclusion=conclusion(analysis))


def plot(ds, summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [str(v) for v in ds.variant.values]
    rules = [str(r) for r in ds.rule.values]
    budget = int(summary["config"]["budget"])
    fig, axes = plt.subplots(len(variants), 3, figsize=(16, 4.4 * len(variants)), squeeze=False)
    for i, v in enumerate(variants):
        an = summary["analysis"][v]
        ax = axes[i, 0]
        x = ds.eval_step.values * budget
        for r in rules:
            p = ds.p_canonical.sel(variant=v, rule=r)
            ax.plot(x, p.mean("seed"), label=r, lw=2.2 if r == rules[0] else 1.3)
        ax.set(xlabel="rollouts", ylabel="p(correct answer), evaluation set",
               title=f"{v}: learning curves (mean of {ds.sizes['seed']} seeds), B = {an['num_prompts']}")
        ax.legend(fontsize=8)
        ax = axes[i, 1]
        base = ds.auc.sel(variant=v, rule=rules[0])
        for j, r in enumerate(rules[1:], 1):
            d = (ds.auc.sel(variant=v, rule=r) - base).values
            ax.plot(np.full(d.size, j) + np.linspace(-0.15, 0.15, d.size), d, ".", color="0.6")
            ci = an["per_rule"][r]["difference_to_" + rules[0]]["auc"]["ci"]
            ax.errorbar(j, d.mean(), yerr=[[d.mean() - ci[0]], [ci[1] - d.mean()]], fmt="o", capsize=4,
                        color="C3" if r not in an["comparison"]["best_set"] else "C0")
        ax.axhline(0, color="k", lw=1)
        ax.set_xticks(range(1, len(rules)), rules[1:])
        ax.set(ylabel=f"AUC(rule) - AUC({rules[0]}) per seed", title=f"{v}: paired differences "
               f"({100 * an['comparison']['level']:.0f}% CI; red = worse than the best)")
        ax = axes[i, 2]
        pg = [100 * an["per_rule"][r]["predicted_gain"] for r in rules]
        oa = [100 * an["per_rule"][r]["observed_relative_auc_change"] for r in rules]
        og = [100 * an["per_rule"][r]["observed_learning_gain"] for r in rules]
        xs = np.arange(len(rules))
        ax.bar(xs - 0.27, pg, 0.27, label="predicted MSE reduction (%)")
        ax.bar(xs, oa, 0.27, label="observed AUC change (% of uniform's AUC)")
        if np.all(np.isfinite(og)):
            ax.bar(xs + 0.27, og, 0.27, label="observed change of AUC - p0 (% of uniform's)")
        else:
            ax.text(0.02, 0.02, "uniform's AUC is below p0 (no net learning): AUC - p0 change undefined",
                    transform=ax.transAxes, fontsize=8)
        ax.axhline(0, color="k", lw=1)
        ax.set_xticks(xs, rules)
        ax.set(title=f"{v}: predicted vs observed gain over {rules[0]} G* = {an['recommended']}")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(summary: dict) -> str:
    lines = []
    for v, an in summary["analysis"].items():
        pil = summary["pilots"][v]
        lines.append(f"[{v}] G* = {an['recommended']} (exact {pil['g_star']:.2f}), B = {an['num_prompts']}; "
                     f"A = {', '.join(f'{a:.4g}' for a in pil['A'])}")
        lines.append("    per category: " + "; ".join(
            f"{c}: p={p:.3f} a2={a2:.4g} a3={a3:.4g} sizes {'/'.join(f'{x:.1f}' for x in sz)}"
            for c, p, a2, a3, *sz in
            zip(pil["categories"], pil["pass_rate"], pil["a2"], pil["a3"],
                *[an["per_rule"][r]["mean_size_by_category"] for r in an["rules"]])))
        lines.append(f"    (sizes: mean group size of a question of the category under {'/'.join(an['rules'])})")
        for r, row in an["per_rule"].items():
            s = (f"    {r:10s} AUC {row['auc']['mean']:.4f}+-{row['auc']['se']:.4f}  final {row['final_p_canonical']['mean']:.4f}"
                 f"  zero-std {row['mean_frac_reward_zero_std']['mean']:.3f}  predicted MSE gain {100 * row['predicted_gain']:+.1f}%")
            dk = "difference_to_" + an["rules"][0]
            if dk in row:
                d = row[dk]["auc"]
                s += f"  dAUC {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] p={d['pvalue']:.2g}"
            lines.append(s + ("  (not worse)" if row["not_worse"] else "  (worse than the best)"))
        c = an["comparison"]
        lines.append(f"    best {c['best']}; not significantly worse (paired, Bonferroni): {c['best_set']}; "
                     f"ANOVA p(rule) = {c['effect_pvalue']:.3g}")
    lines.append("Conclusion: " + summary["conclusion"])
    return "\n".join(lines)


def reanalyse(cfg: Config) -> int:
    grid, pilots, predicted, stored, ds = load(cfg.reanalyse)
    summary = summarise(stored, pilots, predicted, analyse(grid, pilots, predicted, stored["level"]))
    if not cfg.no_plot:
        os.makedirs(cfg.out, exist_ok=True)
        plot(ds, summary, os.path.join(cfg.out, "train_alloc.png"))
    print(report(summary))
    return 0


def main(argv=None) -> int:
    p = parser_from_dataclass(Config, prog="python -m simulations.train_alloc", description=__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    cfg = Config(**{k: getattr(args, k) for k in Config.__dataclass_fields__})
    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    if cfg.reanalyse:
        return reanalyse(cfg)
    rules = _strs(cfg.rules)
    if len(rules) < 2 or any(r not in RULES for r in rules) or len(set(rules)) != len(rules):
        p.error(f"--rules must be two or more distinct rules of {RULES}, got {cfg.rules!r}")
    if cfg.seeds < 2:
        p.error("--seeds must be >= 2 (paired comparisons)")
    import torch

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    pilots = {v: run_pilot(cfg, v) for v in _strs(cfg.variants)}
    for v, pil in pilots.items():
        if cfg.budget % pil["recommended"]:
            raise RuntimeError(f"{v}: recommended G {pil['recommended']} does not divide the budget {cfg.budget}")
    print(f"pilots ready after {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    predicted = {v: {r: predicted_mse(pil, r, cfg.budget, cfg.budget // pil["recommended"], draws=cfg.mse_draws,
                                      seed=cfg.seed, min_size=cfg.min_size, max_size=cfg.max_size or None)
                     for r in rules} for v, pil in pilots.items()}
    grid = dict(run_grid(cfg, pilots), budget=cfg.budget)
    analysis = analyse(grid, pilots, predicted, cfg.level)
    summary = dict(summarise(asdict(cfg), pilots, predicted, analysis), seconds=time.perf_counter() - t0,
                   cell_seconds=float(np.nansum(grid["seconds"])))
    ds = to_dataset(cfg, grid, pilots, predicted, analysis)
    os.makedirs(cfg.out, exist_ok=True)
    write_netcdf(ds, os.path.join(cfg.out, "train_alloc.nc"),
                 provenance=provenance_attrs(seed=cfg.seed, config=asdict(cfg)))
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True, default=float)
    if not cfg.no_plot:
        plot(ds, summary, os.path.join(cfg.out, "train_alloc.png"))
    print(report(summary))
    print(f"wall time {summary['seconds']:.0f} s; training cells {summary['cell_seconds']:.0f} s; outputs in {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
