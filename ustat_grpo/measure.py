"""Measure the scaling-law constants on a policy: the built-in toy bandit or a transformer.

These are the "measure" step of ``python -m ustat_grpo.fit_scaling`` (parse -> load or measure
-> recommend -> render), usable from Python as well:

* :func:`measure_lm`: ``M`` sampled completions for each of ``P`` prompts of a transformer policy
  (:func:`ustat_grpo.lm.prompt_samples`), then :func:`~ustat_grpo.constants.estimate_constants`.
* :func:`measure_bandit`: the same on the built-in contextual bandit
  (:func:`~ustat_grpo.bandits.default_bandit`), whose exact constants are known, plus
  :func:`bandit_mse_grid`, a Monte Carlo MSE grid at the budget as an independent check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._random import seed_sequence
from .bandits import default_bandit
from .constants import ScalingConstants, constants_from_statistics, estimate_constants
from .estimators import leave_one_out
from .mse import constants as exact_constants

__all__ = ["Measurement", "measure_lm", "measure_bandit", "bandit_mse_grid", "measure_task"]


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """Constants measured on a policy, with what is needed to check and describe them.

    Attributes
    ----------
    constants : ScalingConstants
    source : one line naming the policy and the task.
    description : how the constants were measured (shown with the constants table).
    exact : exact ``(A1, A2, A3)`` when the policy has closed-form moments, else ``None``.
    grid : a Monte Carlo MSE grid ``{num_prompts, num_generations, mse, mse_se}``, or ``None``.
    card : the estimator card of a user's task (:func:`measure_task`), or ``None``.
    pool : :class:`~ustat_grpo.pool.PoolMSE` of several estimators (:func:`measure_task`), or ``None``.
    samples_choice : :class:`~ustat_grpo.pilot_design.SamplesPerPromptResult`, the samples per prompt
        a next pilot should draw, measured on this one (:func:`measure_lm` without a pilot file), or
        ``None``.
    """

    constants: ScalingConstants
    source: str
    description: str
    exact: np.ndarray | None = None
    grid: dict | None = None
    card: dict | None = None
    pool: object | None = None
    samples_choice: object | None = None


def measure_lm(model=None, *, num_prompts: int | None = None, samples_per_prompt: int | None = None, seed: int = 0,
               device: str = "auto", projection_dim: int | None = 256, variant: str = "strong",
               level: float = 0.95, progress: bool = False, pilot=None, target_width: float | None = None,
               budget: int = 256, template: str | None = None, first_question: int = 0,
               device_map: str | dict | None = None, min_prompts: int | None = None) -> Measurement | None:
    """Constants of a transformer policy on the arithmetic task (built-in model or a local HF dir).

    With ``pilot`` (a NetCDF path) the per-prompt statistics go through
    :func:`ustat_grpo.pilot.run_pilot`: written per batch, resumed if the file exists, sharded over
    ``torchrun`` ranks (rank 0 merges and gets the result; other ranks get ``None``).  The constants
    are the same numbers either way.  ``target_width`` makes the pilot adaptive
    (:func:`ustat_grpo.pilot.width_rule` at ``budget``; ``num_prompts`` is then the cap).
    ``num_prompts x samples_per_prompt`` defaults to 500 x 64, or with ``target_width`` to
    :data:`~ustat_grpo.pilot.ADAPTIVE_MAX_PROMPTS` x :data:`~ustat_grpo.pilot.ADAPTIVE_SAMPLES_PER_PROMPT`
    (1024 x 8), whose intervals were measured to cover (``width_rule``); the stop rule is first asked
    after ``min_prompts`` prompts (default :data:`~ustat_grpo.pilot.ADAPTIVE_MIN_PROMPTS`, 512).
    ``device_map`` (``"auto"`` or a dict, needs ``accelerate``) spreads a model directory too large
    for one GPU over several (:func:`ustat_grpo.lm.load_policy`).
    """
    from . import lm
    from .pilot import ADAPTIVE_MIN_PROMPTS, lm_pilot_size

    num_prompts, samples_per_prompt = lm_pilot_size(num_prompts, samples_per_prompt,
                                                    adaptive=target_width is not None)
    kw = dict(num_prompts=num_prompts, samples_per_prompt=samples_per_prompt, rng=seed, device=device,
              projection_dim=projection_dim, variant=variant, template=template, first_question=first_question,
              device_map=device_map)
    choice = None
    if pilot is None and target_width is None:
        rewards, scores = lm.prompt_samples(model, progress=progress, **kw)
        rewards, scores = np.asarray(rewards, float), np.asarray(scores, float)
        est = estimate_constants(rewards, scores, level=level)
        k = np.shape(scores)[-1]
        choice = _samples_choice(rewards, scores, seed)
    else:
        from .pilot import run_pilot, width_rule

        sampler = lm.arithmetic_sampler(model, **kw)
        stop = None if target_width is None else width_rule(
            target_width, budget=budget, level=level,
            min_prompts=ADAPTIVE_MIN_PROMPTS if min_prompts is None else min_prompts)
        stats = run_pilot(sampler, num_prompts=num_prompts, path=pilot, seed=seed, config=sampler.describe(),
                          progress=progress, stop=stop)
        if stats is None:
            return None
        est, k = constants_from_statistics(stats, level=level), stats.g.shape[1]
        num_prompts = len(stats)
    who = model if model is not None else f"built-in {variant} model"
    spent = "" if target_width is None else (f" (adaptive pilot, target width {target_width}: "
                                             f"{num_prompts * samples_per_prompt} rollouts and backward passes)")
    return Measurement(constants=est, source=f"lm ({who}, arithmetic task; ustat_grpo.lm.prompt_samples)",
                       description=f"{num_prompts} LM prompts x {samples_per_prompt} samples{spent}, unbiased "
                                   f"U-statistics + jackknife; scores sketched to {k} dims (unbiased)",
                       samples_choice=choice)


#: Smallest pilot whose samples per prompt :func:`measure_lm` measures for the next pilot
#: (:func:`ustat_grpo.pilot_design.choose_samples_per_prompt` needs 5 subsample sizes and 16 groups).
MIN_CHOICE_PROMPTS, MIN_CHOICE_SAMPLES = 32, 8


def _samples_choice(rewards, scores, seed):
    """``choose_samples_per_prompt`` of a fixed pilot's samples (seeded by ``seed``), or ``None`` for a
    pilot smaller than ``MIN_CHOICE_PROMPTS x MIN_CHOICE_SAMPLES``, or when the pilot's ``A1`` or
    ``A3`` is not positive (``G*`` and its log are undefined; the report says why elsewhere)."""
    from .pilot_design import choose_samples_per_prompt

    P, M = rewards.shape
    if P < MIN_CHOICE_PROMPTS or M < MIN_CHOICE_SAMPLES:
        return None
    try:
        return choose_samples_per_prompt(rewards, scores, rng=seed)
    except (ValueError, FloatingPointError):
        return None


def measure_task(model=None, reward_funcs=(), *, train_dataset, args=None, processing_class=None,
                 peft_config=None, reward_weights=None, params: str | list | None = "trainable",
                 num_prompts: int | None = None, samples_per_prompt: int = 16, num_generations=None,
                 budget: int = 256, seed: int = 0, device: str = "auto", projection_dim: int | None = 256,
                 level: float = 0.95, on_reward_error: str = "raise", prompt_column: str = "prompt",
                 split: str | None = None, progress: bool = False, log=lambda s: None) -> Measurement:
    """Constants of a user's GRPO task, taking what a TRL ``GRPOTrainer`` takes (TRL not imported).

    Parameters
    ----------
    model : path, ``transformers`` causal LM, :class:`~ustat_grpo.lm.Policy` or None (built-in)
    reward_funcs : callable, spec string, or a list of them (:mod:`ustat_grpo.rewards`)
    train_dataset : path, ``datasets.Dataset`` or list of dicts (:mod:`ustat_grpo.task`)
    args : ``GRPOConfig``, dict or None
        Read by field name: ``temperature``, ``top_p``, ``top_k``, ``min_p``,
        ``repetition_penalty``, ``max_completion_length``, ``chat_template_kwargs``,
        ``reward_weights`` (TRL 1.16 defaults for missing fields).
    processing_class : tokenizer (default: the model directory's)
    peft_config : ``peft.LoraConfig`` or dict of its keyword arguments; scores are then taken over
        the trainable adapter parameters only, as TRL trains them.
    params : ``"trainable"`` (``requires_grad``), ``"all"``, ``"regex:PATTERN"``, a substring, or names.
    num_prompts, samples_per_prompt : P prompts (first P rows; default ``min(rows, 64)``) x M completions.
    num_generations : group sizes for the per-estimator MSE(G) (default powers of two <= M/2).
    budget : rollouts per step N for the per-estimator MSE(G).
    on_reward_error : ``"raise"`` (TRL), ``"none"`` or ``"zero"``.

    Returns
    -------
    Measurement
        Leave-one-out constants (prompts with an unscorable completion left out), the estimator
        ``card`` and ``pool`` (MSE(G) of leave-one-out, std-normalised and Dr.GRPO advantages).
    """
    from . import task_run

    return task_run.measure(model, reward_funcs, train_dataset=train_dataset, args=args,
                            processing_class=processing_class, peft_config=peft_config,
                            reward_weights=reward_weights, params=params, num_prompts=num_prompts,
                            samples_per_prompt=samples_per_prompt, num_generations=num_generations,
                            budget=budget, seed=seed, device=device, projection_dim=projection_dim,
                            level=level, on_reward_error=on_reward_error, prompt_column=prompt_column,
                            split=split, progress=progress, log=log)


def bandit_mse_grid(policy, budget: int, replicates: int, *, rng=None, max_group_size: int = 256,
                    log=lambda s: None) -> dict:
    """Monte Carlo MSE of the leave-one-out GRPO minibatch gradient at ``N = budget``.

    One cell per divisor ``G`` of the budget (``2 <= G <= max_group_size``, ``B = N/G``), each with
    its own random stream spawned from ``rng`` (cells do not depend on each other's order, as in
    :mod:`ustat_grpo.montecarlo`).

    Returns
    -------
    dict of ndarrays ``num_prompts``, ``num_generations``, ``mse``, ``mse_se`` (one entry per cell).
    """
    seq = seed_sequence(rng)
    theta, grad = policy.theta, policy.gradient()
    gs = [g for g in range(2, budget + 1) if budget % g == 0 and g <= max_group_size]
    rows = []
    for G, cell_seq in zip(gs, seq.spawn(len(gs))):
        cell_rng, B = np.random.default_rng(cell_seq), budget // G
        chunk = max(1, int(2_000_000 // (B * G * policy.dim)))   # bound memory per draw
        errs, done = [], 0
        while done < replicates:
            r = min(chunk, replicates - done)
            s = policy.sample(B, G, rng=cell_rng, theta=np.broadcast_to(theta, (r, policy.dim)))
            est = leave_one_out(s.rewards, s.scores).mean(-2)       # (r, d)
            errs.append(((est - grad) ** 2).sum(-1))
            done += r
        e = np.concatenate(errs)
        se = e.std(ddof=1) / math.sqrt(replicates)
        rows.append((B, G, e.mean(), se))
        log(f"  grid cell B={B:4d} G={G:4d}: MSE {e.mean():.4g} +- {se:.2g}")
    b, g, y, se = map(np.array, zip(*rows))
    return {"num_prompts": b.astype(float), "num_generations": g.astype(float), "mse": y, "mse_se": se}


def measure_bandit(*, num_prompts: int = 128, samples_per_prompt: int = 256, seed: int = 0,
                   budget: int = 256, replicates: int = 4000, level: float = 0.95,
                   log=lambda s: None) -> Measurement:
    """Constants of the built-in toy bandit from samples, its exact constants and an MSE grid.

    ``seed`` spawns two streams: the constants' samples and the grid (``replicates = 0`` skips it).
    """
    policy = default_bandit()
    sample_seq, grid_seq = np.random.SeedSequence(seed).spawn(2)
    log(f"measuring constants from {num_prompts} prompts x {samples_per_prompt} rollouts ...")
    s = policy.sample(num_prompts, samples_per_prompt, rng=np.random.default_rng(sample_seq))
    est = estimate_constants(s.rewards, s.scores, level=level)
    grid = None
    if replicates > 0:
        log(f"Monte Carlo MSE grid at N = {budget} ({replicates} replicates per cell) ...")
        grid = bandit_mse_grid(policy, budget, replicates, rng=grid_seq, log=log)
    return Measurement(constants=est, exact=np.asarray(exact_constants(policy.moments()), float)[:3],
                       grid=grid, source="bandit (built-in toy: contextual softmax bandit, 8 prompts, "
                                         "6 arms, d = 4)",
                       description=f"{num_prompts} sampled prompts x {samples_per_prompt} rollouts, "
                                   "unbiased U-statistics + jackknife")
