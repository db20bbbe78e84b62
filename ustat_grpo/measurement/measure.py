"""Measure the scaling-law constants: one pilot loop and one analysis for every source.

Every measurement is a pilot (:func:`ustat_grpo.measurement.pilot.run_pilot`: in memory or to a file, sharded
under ``torchrun``, resumed after a kill, adaptive) over a per-prompt sampler, followed by one
analysis (:func:`analyse`) that needs nothing but the pilot's statistics and configuration, so
``fit_scaling pilot.nc`` gives the same result as the run that wrote the file:

* :func:`measure`: any sampler (:class:`~ustat_grpo.measurement.sampler.TaskSampler` for a transformer on a
  dataset with reward functions; :class:`~ustat_grpo.measurement.pilot.BanditSampler` for the toy);
* :func:`measure_task`: a user's GRPO task, taking what TRL's ``GRPOTrainer`` takes;
* :func:`measure_lm`: a transformer on the built-in arithmetic task (the built-in dataset and reward
  through the same sampler);
* :func:`measure_bandit`: the built-in toy bandit, whose exact constants are known, plus
  :func:`bandit_mse_grid`, a Monte Carlo MSE grid at the budget as an independent check;
* :func:`from_pilot`: the analysis of a pilot file (or its shards) alone.

The analysis: constants with jackknife intervals over the scorable prompts, the per-estimator
scale-free criterion R(G) (:func:`ustat_grpo.scaling.pool.compare_estimators`), the samples per prompt a next pilot should draw
(:func:`ustat_grpo.measurement.samples_per_prompt.choose_samples_per_prompt`) and, for language models, the estimator
card (:func:`ustat_grpo.measurement.card.build_card`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..core._random import default_rng, seed_sequence
from ..policies.bandits import default_bandit
from .card import EstimatorCard, build_card
from ..scaling.constants import PromptStatistics, ScalingConstants, constants_from_statistics
from ..theory.estimators import leave_one_out
from ..theory.mse import constants as exact_constants
from ..scaling.optimum import group_size_divisors
from .samples_per_prompt import SamplesPerPromptResult
from ..scaling.pool import EstimatorComparison, compare_estimators
from .pilot import (ADAPTIVE_MIN_PROMPTS, BanditSampler, load_pilot, lm_pilot_size, run_pilot, scorable,
                    width_rule)

__all__ = ["Measurement", "MSEGrid", "measure", "analyse", "from_pilot", "measure_lm", "measure_task",
           "measure_bandit", "bandit_mse_grid", "task_pilot_size"]


@dataclass(frozen=True, kw_only=True)
class MSEGrid:
    """A Monte Carlo MSE grid at one budget: one cell per ``(B, G)`` with ``B G = N``."""

    num_prompts: np.ndarray
    num_generations: np.ndarray
    mse: np.ndarray
    mse_se: np.ndarray


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """Constants measured by a pilot, with what is needed to check and describe them.

    Attributes
    ----------
    constants : ScalingConstants or None
        ``None`` when the rewards never vary (no prompt's rewards differ): there is no gradient
        signal to measure, and :attr:`reason` says so.
    statistics : the pilot's per-prompt statistics (every prompt, scorable or not).
    source : one line naming the policy and the task.
    description : how the constants were measured.
    exact : exact ``(A1, A2, A3)`` when the policy has closed-form moments, else ``None``.
    grid : a Monte Carlo MSE grid (toy bandit), or ``None``.
    card : the :class:`~ustat_grpo.measurement.card.EstimatorCard` of a language-model pilot, or ``None``.
    comparison : :class:`~ustat_grpo.scaling.pool.EstimatorComparison`: the scale-free criterion ``R(G)``
        (and the raw MSE) of several estimators resampled from the pilot, with the G each
        recommends, or ``None``.
    samples_choice : :class:`~ustat_grpo.measurement.samples_per_prompt.SamplesPerPromptResult`, the samples per prompt
        a next pilot should draw, or ``None`` (pilot too small, or ``A1``/``A3`` not positive).
    reason : why no constants could be measured, else ``None``.
    seed : the pilot's seed (its prompts, completions and sketch; the analysis's resampling).
    """

    constants: ScalingConstants | None
    statistics: PromptStatistics
    source: str
    description: str
    exact: np.ndarray | None = None
    grid: MSEGrid | None = None
    card: EstimatorCard | None = None
    comparison: EstimatorComparison | None = None
    samples_choice: SamplesPerPromptResult | None = None
    reason: str | None = None
    seed: int | None = None


#: Smallest pilot whose samples per prompt :func:`analyse` measures for the next pilot
#: (:func:`ustat_grpo.measurement.samples_per_prompt.choose_samples_per_prompt` needs 5 subsample sizes and 16 groups).
MIN_CHOICE_PROMPTS, MIN_CHOICE_SAMPLES = 32, 8


def _samples_choice(rewards, scores, seed):
    """``choose_samples_per_prompt`` of a pilot's samples (seeded by ``seed``), or ``None`` for a
    pilot smaller than ``MIN_CHOICE_PROMPTS x MIN_CHOICE_SAMPLES``, or when ``A1`` or ``A3`` is not
    positive (``G*`` and its log are undefined; the report says why elsewhere)."""
    from .samples_per_prompt import choose_samples_per_prompt

    P, M = rewards.shape
    if P < MIN_CHOICE_PROMPTS or M < MIN_CHOICE_SAMPLES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return choose_samples_per_prompt(rewards, scores, rng=seed)
    except (ValueError, FloatingPointError):
        return None


#: Estimators every comparison covers; a trainer's own (``--scale-rewards``, ``GRPOConfig``) is added.
COMPARED = ("leave_one_out", "std_normalized", "group_mean")


def _comparison(rewards, scores, *, budget, num_generations, seed, level, extra=None):
    M = rewards.shape[1]
    gs = num_generations or [2 ** k for k in range(1, 20) if 2 ** k <= M // 2]
    gs = sorted(g for g in {int(g) for g in gs} if 2 <= g <= min(M, budget))
    if not gs or rewards.shape[0] < 4:
        return None
    names = COMPARED + ((extra,) if extra and extra not in COMPARED else ())
    return compare_estimators(rewards, scores, budget=budget, num_generations=gs, estimators=names, rng=seed,
                              level=level)


def analyse(stats: PromptStatistics, config: dict, *, budget: int = 256, level: float = 0.95, seed: int = 0,
            num_generations=None, source: str | None = None, description: str | None = None,
            exact=None, grid: MSEGrid | None = None) -> Measurement:
    """Everything a recommendation needs, from a pilot's statistics and configuration alone.

    Prompts with an unscorable completion (a NaN reward) are left out of the constants and the
    per-estimator comparison.  ``seed`` seeds the pool resampling and the samples-per-prompt
    subsampling (a pilot's own seed, so a pilot file reproduces its live run).
    """
    keep = scorable(stats)
    if keep.sum() < 3:
        raise ValueError(f"only {int(keep.sum())} of {len(stats)} prompts have every completion scorable (need 3); "
                         "check the reward functions")
    ok = stats.select(keep)
    card = build_card(config, stats, keep) if "sampling" in config and stats.scores is not None else None
    M, k = int(ok.num_samples[0]), int(ok.g.shape[1])
    source = source or _source(config)
    description = description or _description(config, ok, M, k)
    varies = bool((ok.rewards.max(1) > ok.rewards.min(1)).any()) if ok.rewards is not None else True
    if not varies:
        value = float(ok.rewards[0, 0])
        return Measurement(constants=None, statistics=stats, source=source, description=description, card=card,
                           exact=exact, grid=grid, seed=seed,
                           reason=f"the rewards never vary: every completion of all {len(ok)} prompts scored "
                                  f"{value:g}, so every group has zero variance (advantages all 0) and no group "
                                  "size gives a gradient; check the reward functions against a few completions")
    constants = constants_from_statistics(ok, level=level)
    comparison = choice = None
    if ok.scores is not None and ok.rewards is not None:
        z, w = ok.rewards, ok.scores.astype(float)
        comparison = _comparison(z, w, budget=budget, num_generations=num_generations, seed=seed, level=level,
                                 extra=None if card is None else card.criterion_estimator)
        choice = _samples_choice(z, w, seed)
    return Measurement(constants=constants, statistics=stats, source=source, description=description, card=card,
                       comparison=comparison, samples_choice=choice, exact=exact, grid=grid, seed=seed)


def _source(config: dict) -> str:
    if config.get("task") == "bandit":
        return "bandit (built-in toy: contextual softmax bandit, 8 prompts, 6 arms, d = 4)"
    return f"lm ({config.get('model')} on {config.get('dataset', {}).get('source', '?')})"


def _description(config, ok, M, k) -> str:
    if "sampling" not in config:
        return f"{len(ok)} sampled prompts x {M} rollouts, unbiased U-statistics + jackknife"
    s, p = config["sampling"], config["params"]
    sketch = f", sketched to {k} dims (unbiased)" if p.get("sketch") else ""
    return (f"{len(ok)} prompts x {M} completions at T = {s['temperature']:g}, rewards "
            f"{', '.join(config['rewards']['names'])}; unbiased U-statistics + jackknife over "
            f"{p['num_parameters']} {'trainable ' if p['selection'] == 'trainable' else ''}parameters{sketch}")


def measure(sampler, *, num_prompts: int, seed: int = 0, pilot=None, target_width: float | None = None,
            min_prompts: int | None = None, budget: int = 256, level: float = 0.95, num_generations=None,
            progress: bool = False, batch_size: int = 16, command: str | None = None,
            cli: dict | None = None) -> Measurement | None:
    """Run (or resume) a pilot of ``sampler`` and analyse it (:func:`analyse`).

    Parameters
    ----------
    sampler : callable with ``describe()``
        ``sampler(p, seq) -> PromptDraw`` (:class:`~ustat_grpo.measurement.sampler.TaskSampler`,
        :class:`~ustat_grpo.measurement.pilot.BanditSampler`).
    num_prompts : int
        Prompts of the pilot (the cap of an adaptive one).
    pilot : path, optional
        The pilot file (written per batch, resumed if it exists; sharded under ``torchrun``: rank 0
        merges and analyses, other ranks return ``None``).
    target_width : float, optional
        Adaptive pilot: stop when the interval of ``G*`` at ``budget`` has this relative width
        (:func:`ustat_grpo.measurement.pilot.width_rule`), asked first after ``min_prompts`` prompts (default
        :data:`~ustat_grpo.measurement.pilot.ADAPTIVE_MIN_PROMPTS`).
    command, cli : the command line and resolved options to record in the pilot file.
    """
    stop = None if target_width is None else width_rule(
        target_width, budget=budget, level=level,
        min_prompts=ADAPTIVE_MIN_PROMPTS if min_prompts is None else min_prompts)
    config = sampler.describe()
    stats = run_pilot(sampler, num_prompts=num_prompts, path=pilot, seed=seed, config=config, progress=progress,
                      stop=stop, batch_size=batch_size, command=command, cli=cli)
    if stats is None:
        return None
    desc = None
    if target_width is not None:
        M = int(stats.num_samples[0])
        desc = (_description(config, stats.select(scorable(stats)), M, int(stats.g.shape[1]))
                + f" (adaptive pilot, target width {target_width}: {len(stats) * M} rollouts and backward passes)")
    return analyse(stats, config, budget=budget, level=level, seed=seed, num_generations=num_generations,
                   description=desc)


def from_pilot(paths, *, budget: int = 256, level: float = 0.95, num_generations=None) -> Measurement:
    """The analysis of a pilot file (or several shard files) alone: the same :class:`Measurement`
    as the run that wrote it (same seed, same configuration)."""
    stats, attrs = load_pilot(paths)
    if stats is None:
        raise ValueError(f"{paths}: the pilot file holds no prompts yet")
    config = json.loads(attrs.get("config", "{}"))
    return analyse(stats, config, budget=budget, level=level, seed=int(config.get("seed", attrs.get("seed", 0))),
                   num_generations=num_generations)


def task_pilot_size(num_prompts: int | None, samples_per_prompt: int | None, *, num_rows: int,
                    adaptive: bool) -> tuple[int, int]:
    """``(P, M)`` of a pilot on a user's dataset: the given values, else the measured defaults of
    :func:`ustat_grpo.measurement.pilot.lm_pilot_size` for an adaptive pilot (up to 1024 prompts x 8) for
    both kinds, capped at the dataset's rows (a fixed pilot on a user's task draws as many prompts
    as an adaptive one may: the coverage study found the number of prompts decisive).

    >>> task_pilot_size(None, None, num_rows=300, adaptive=False), task_pilot_size(64, 16, num_rows=300, adaptive=True)
    ((300, 8), (64, 16))
    """
    P, M = lm_pilot_size(num_prompts, samples_per_prompt, adaptive=True)
    return (min(P, num_rows) if num_prompts is None else P), M


@contextlib.contextmanager
def _left_alone(model):
    """Put a caller's ``torch`` model in eval mode for the measurement and restore every module's
    train/eval flag afterwards."""
    modes = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
    try:
        if modes:
            model.eval()
        yield model
    finally:
        for m, training in modes:
            m.train(training)


def apply_peft(model, peft_config):
    """``peft.get_peft_model`` on a deep copy of ``model`` (a dict is read as ``LoraConfig``
    keyword arguments): the caller's model is never modified."""
    try:
        import peft
    except ImportError:
        raise ImportError("a LoRA / PEFT adapter (peft_config) needs 'peft' (pip install 'ustat_grpo[task]')") from None
    if isinstance(peft_config, dict):
        cfg = dict(peft_config)
        cfg.setdefault("task_type", "CAUSAL_LM")
        try:
            peft_config = peft.LoraConfig(**cfg)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"peft_config {cfg}: {exc}") from None
    with warnings.catch_warnings():  # peft 0.21 reads a property that transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(copy.deepcopy(model), peft_config).eval()


def _peft_info(peft_config):
    if peft_config is None:
        return None
    cfg = peft_config if isinstance(peft_config, dict) else {
        k: (sorted(v) if isinstance(v, set) else v) for k, v in dataclasses.asdict(peft_config).items()
        if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "peft_type")}
    return {k: (str(v) if not isinstance(v, (int, float, str, list, type(None))) else v) for k, v in cfg.items()}


def task_policy(model=None, *, processing_class=None, peft_config=None, device: str = "auto",
                max_completion_length: int | None = None, variant: str = "strong", device_map=None,
                template: str | None = None):
    """The :class:`~ustat_grpo.policies.lm.LanguageModelPolicy` measured for a user's model: a path (or ``None``, the
    built-in model), a ``transformers`` model object with its tokenizer, or a LanguageModelPolicy; with
    ``peft_config`` a LoRA adapter is added to a copy."""
    import dataclasses

    from ..policies import lm

    if isinstance(model, lm.LanguageModelPolicy):
        pol = model
    elif model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        pol = lm.load_policy(model, variant=variant, device=device, max_new_tokens=max_completion_length,
                             device_map=device_map, template=template)
    else:  # a transformers model object, as GRPOTrainer takes it
        if processing_class is None:
            raise ValueError("processing_class: a model object needs its tokenizer")
        dev = next(model.parameters()).device
        pol = lm.LanguageModelPolicy(model=model, tokenizer=processing_class, template="zero_shot", name=type(model).__name__,
                        device=dev)
    tok = processing_class if processing_class is not None else pol.tokenizer
    net = pol.model if peft_config is None else apply_peft(pol.model, peft_config)
    return dataclasses.replace(pol, model=net, tokenizer=tok,
                               max_new_tokens=max_completion_length or pol.max_new_tokens)


def measure_task(model=None, reward_funcs=(), *, train_dataset, args=None, processing_class=None,
                 peft_config=None, reward_weights=None, params: str | list | None = "trainable",
                 num_prompts: int | None = None, samples_per_prompt: int | None = None, num_generations=None,
                 budget: int = 256, seed: int = 0, device: str = "auto", projection_dim: int | None = 256,
                 level: float = 0.95, on_reward_error: str = "raise", prompt_column: str = "prompt",
                 split: str | None = None, pilot=None, target_width: float | None = None,
                 min_prompts: int | None = None, progress: bool = False, log=lambda s: None) -> Measurement | None:
    """Constants of a user's GRPO task, taking what a TRL ``GRPOTrainer`` takes (TRL not imported).

    Parameters
    ----------
    model : path, ``transformers`` causal LM, :class:`~ustat_grpo.policies.lm.LanguageModelPolicy` or None (built-in)
        A model object is left as it was: its train/eval mode is restored, and a LoRA adapter
        (``peft_config``) goes on a copy.
    reward_funcs : callable, spec string, or a list of them (:mod:`ustat_grpo.measurement.rewards`)
    train_dataset : path, ``datasets.Dataset`` or list of dicts (:mod:`ustat_grpo.measurement.task`)
    args : ``GRPOConfig``, dict or None
        Read by field name: the sampling settings (``temperature``, ``top_p``, ``top_k``, ``min_p``,
        ``repetition_penalty``, ``max_completion_length``, ``chat_template_kwargs``),
        ``reward_weights``, and the settings that decide the trainer's estimator (``scale_rewards``,
        ``loss_type``, ``num_iterations``, ``epsilon``, ``beta``, ``bf16``), shown on the card
        (TRL 1.16 defaults for missing fields).
    processing_class : tokenizer (default: the model directory's)
    peft_config : ``peft.LoraConfig`` or dict of its keyword arguments; scores are then taken over
        the trainable adapter parameters only, as TRL trains them.
    params : ``"trainable"`` (``requires_grad``), ``"all"``, ``"regex:PATTERN"``, a substring, or names.
    num_prompts, samples_per_prompt : P prompts, a seeded random sample of the rows, x M completions
        (default :func:`task_pilot_size`: up to 1024 x 8).
    num_generations : group sizes for the per-estimator MSE(G) (default powers of two <= M/2).
    budget : rollouts per step N for the per-estimator MSE(G) and the adaptive stop rule.
    on_reward_error : ``"raise"`` (TRL), ``"none"`` or ``"zero"``.
    pilot, target_width, min_prompts : a pilot file and an adaptive pilot (:func:`measure`).

    Returns
    -------
    Measurement (``None`` on ``torchrun`` ranks other than 0)
    """
    from . import task as tk
    from .sampler import task_sampler

    data = tk.load_task(train_dataset, prompt_column=prompt_column, split=split)
    P, M = task_pilot_size(num_prompts, samples_per_prompt, num_rows=len(data), adaptive=target_width is not None)
    if P < 3:
        raise ValueError(f"num_prompts must be >= 3, got {P}")
    sampling = tk.SamplingConfig.from_args(args)
    if reward_weights is None:
        reward_weights = args.get("reward_weights") if isinstance(args, dict) else getattr(args, "reward_weights", None)
    trainer = _trainer_info(args)
    from ..policies.lm import LanguageModelPolicy

    caller = None if isinstance(model, (str, bytes, type(None))) or hasattr(model, "__fspath__") else model
    inner = caller.model if isinstance(caller, LanguageModelPolicy) else caller     # the torch module the caller holds
    with (_left_alone(inner) if inner is not None else contextlib.nullcontext()):
        pol = task_policy(model, processing_class=processing_class, peft_config=peft_config, device=device,
                          max_completion_length=sampling.max_completion_length)
        pol.model.eval()
        sampler = task_sampler(pol, data, reward_funcs, samples_per_prompt=M, num_prompts=P, sampling=sampling,
                               reward_weights=reward_weights, params=params, projection_dim=projection_dim,
                               seed=seed, on_reward_error=on_reward_error,
                               info={"peft": _peft_info(peft_config), "trainer": trainer})
        sampler.check_prompts(P)
        log(f"pilot: {P} prompts x {M} completions of {data.source}")
        return measure(sampler, num_prompts=P, seed=seed, pilot=pilot, target_width=target_width,
                       min_prompts=min_prompts, budget=budget, level=level, num_generations=num_generations,
                       progress=progress)


def _trainer_info(args):
    """The trainer settings that decide the estimator (:class:`ustat_grpo.measurement.task.TrainerSettings`,
    TRL 1.16 defaults for missing fields) as the card stores them, or ``None`` without ``args``."""
    if args is None:
        return None
    from . import task as tk

    settings = tk.TrainerSettings.from_args(args)
    return dict(settings.to_dict(), summary=settings.summary())


def measure_lm(model=None, *, num_prompts: int | None = None, samples_per_prompt: int | None = None, seed: int = 0,
               device: str = "auto", projection_dim: int | None = 256, variant: str = "strong",
               level: float = 0.95, progress: bool = False, pilot=None, target_width: float | None = None,
               budget: int = 256, template: str | None = None, first_question: int = 0,
               device_map: str | dict | None = None, min_prompts: int | None = None, sampling=None,
               num_generations=None, command: str | None = None, cli: dict | None = None) -> Measurement | None:
    """Constants of a transformer policy on the built-in arithmetic task (built-in model or a local
    HF directory), through the same sampler and pilot as a user's task (:func:`measure`).

    ``num_prompts x samples_per_prompt`` defaults to 500 x 64, or with ``target_width`` to
    :data:`~ustat_grpo.measurement.pilot.ADAPTIVE_MAX_PROMPTS` x :data:`~ustat_grpo.measurement.pilot.ADAPTIVE_SAMPLES_PER_PROMPT`
    (1024 x 8), whose intervals were measured to cover (:func:`~ustat_grpo.measurement.pilot.width_rule`).
    ``template`` and ``first_question`` choose the prompt format and the questions
    (:func:`ustat_grpo.measurement.sampler.arithmetic_task`); ``device_map`` spreads a model directory too large
    for one GPU over several (:func:`ustat_grpo.policies.lm.load_policy`); ``sampling`` (a
    :class:`~ustat_grpo.measurement.task.SamplingConfig`) replaces the default temperature-1 sampler.
    """
    from .sampler import arithmetic_sampler

    P, M = lm_pilot_size(num_prompts, samples_per_prompt, adaptive=target_width is not None)
    sampler = arithmetic_sampler(model, num_prompts=P, samples_per_prompt=M, rng=seed, device=device,
                                 projection_dim=projection_dim, variant=variant, template=template,
                                 first_question=first_question, device_map=device_map, sampling=sampling)
    sampler.check_prompts(P)
    return measure(sampler, num_prompts=P, seed=seed, pilot=pilot, target_width=target_width,
                   min_prompts=min_prompts, budget=budget, level=level, progress=progress,
                   num_generations=num_generations, command=command, cli=cli)


def bandit_mse_grid(policy, budget: int, replicates: int, *, rng=None, max_group_size: int = 256,
                    log=lambda s: None) -> MSEGrid:
    """Monte Carlo MSE of the leave-one-out GRPO minibatch gradient at ``N = budget``.

    One cell per divisor ``G`` of the budget (``2 <= G <= max_group_size``, ``B = N/G``), each with
    its own random stream spawned from ``rng`` (cells do not depend on each other's order, as in
    :mod:`ustat_grpo.experiments.montecarlo`).
    """
    seq = seed_sequence(rng)
    theta, grad = policy.theta, policy.gradient()
    gs = group_size_divisors(budget, max_group_size=max_group_size)
    rows = []
    for G, cell_seq in zip(gs, seq.spawn(len(gs))):
        cell_rng, B = default_rng(cell_seq), budget // G
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
    return MSEGrid(num_prompts=b.astype(float), num_generations=g.astype(float), mse=y, mse_se=se)


def measure_bandit(*, num_prompts: int = 128, samples_per_prompt: int = 256, seed: int = 0,
                   budget: int = 256, replicates: int = 4000, level: float = 0.95, pilot=None,
                   target_width: float | None = None, min_prompts: int | None = None,
                   log=lambda s: None) -> Measurement:
    """Constants of the built-in toy bandit from a pilot (:class:`~ustat_grpo.measurement.pilot.BanditSampler`:
    each prompt a context drawn from ``f`` with its own stream), its exact constants and an MSE grid.

    ``seed`` seeds the pilot; the grid's stream is ``SeedSequence(seed).spawn(2)[1]``
    (``replicates = 0`` skips it).
    """
    policy = default_bandit()
    log(f"measuring constants from {num_prompts} prompts x {samples_per_prompt} rollouts ...")
    m = measure(BanditSampler(policy, samples_per_prompt), num_prompts=num_prompts, seed=seed, pilot=pilot,
                target_width=target_width, min_prompts=min_prompts, budget=budget, level=level)
    grid = None
    if replicates > 0:
        log(f"Monte Carlo MSE grid at N = {budget} ({replicates} replicates per cell) ...")
        grid = bandit_mse_grid(policy, budget, replicates, rng=seed_sequence(seed).spawn(2)[1], log=log)
    return dataclasses.replace(m, exact=np.asarray(exact_constants(policy.moments()), float)[:3], grid=grid)
