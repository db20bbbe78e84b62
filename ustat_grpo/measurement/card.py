"""The estimator card: what a language-model measurement measured, built from a pilot alone.

A card answers "whose gradient noise are these constants?": the sampler (TRL's sampling settings)
against the policy that is differentiated, the rewards (weights, ``None`` rates, failures, mean,
zero-variance groups), the completions (truncation, length), the parameters (selection, LoRA,
sketch), the trainer's estimator, versions.  :func:`build_card` derives it from the pilot's
configuration (:meth:`ustat_grpo.measurement.sampler.TaskSampler.describe`, stored in the pilot file) and its
per-prompt statistics and diagnostics (:class:`~ustat_grpo.scaling.constants.PromptStatistics`), so the
card of a live run and of ``fit_scaling pilot.nc`` are the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core._serialize import jsonable
from ..scaling.pool import ScoreMeanCheck, score_mean_check

__all__ = ["EstimatorCard", "RewardSummary", "build_card", "zero_variance_share"]


def zero_variance_share(rewards, num_generations: int) -> float:
    """Share of groups of ``G`` completions whose rewards are all equal (their advantages are all
    zero: no gradient), estimated without bias from ``M >= G`` samples per prompt.

    For a prompt whose ``M`` rewards take value ``v`` ``n_v`` times, the share of its ``G``-subsets
    that are constant is ``sum_v C(n_v, G) / C(M, G)`` (a U-statistic of order ``G``); the result is
    the mean over prompts (rows with a NaN reward are skipped).

    >>> z = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], float)
    >>> zero_variance_share(z, 2), zero_variance_share(z, 4)
    (0.75, 0.5)
    """
    z = np.asarray(rewards, float)
    G = int(num_generations)
    if z.ndim != 2 or not 2 <= G <= z.shape[1]:
        raise ValueError(f"need rewards (P, M) with 2 <= num_generations <= M, got {z.shape} and {G}")
    z = z[np.isfinite(z).all(1)]
    if not len(z):
        return math.nan
    total = math.comb(z.shape[1], G)
    shares = [sum(math.comb(int(n), G) for n in np.unique(row, return_counts=True)[1]) / total for row in z]
    return float(np.mean(shares))


@dataclass(frozen=True, kw_only=True)
class RewardSummary:
    """The rewards of a pilot, per function and in total.

    ``none_rate``: share of completions a function gave no reward (``None`` or a failure);
    ``mean``: per function, over scored completions; ``mean_total``: the weighted total's mean;
    ``zero_variance``: ``((G, share), ...)``, the share of groups of ``G`` completions with one
    reward value (no gradient), at ``G = 2, 4, 8, ...`` up to the pilot's ``M``; ``varies``: whether
    any prompt's rewards differ at all.
    """

    names: tuple
    weights: tuple
    styles: tuple
    none_rate: tuple
    error_count: tuple
    mean: tuple
    mean_total: float
    unscorable_rate: float
    on_error: str
    zero_variance: tuple
    varies: bool

    def to_dict(self) -> dict:
        return jsonable(dict(names=self.names, weights=self.weights, styles=self.styles, none_rate=self.none_rate,
                             error_count=self.error_count, mean=self.mean, mean_total=self.mean_total,
                             unscorable_rate=self.unscorable_rate, on_error=self.on_error,
                             zero_variance=[dict(num_generations=g, share=s) for g, s in self.zero_variance],
                             varies=self.varies))


@dataclass(frozen=True, kw_only=True)
class EstimatorCard:
    """What a language-model measurement measured (module notes); built by :func:`build_card`.

    ``case`` is ``"exact"`` (the sampler is ``pi_T``, the policy whose score is taken),
    ``"truncated"`` or ``"penalised"`` (top-k / top-p / min-p / repetition penalty: completions come
    from a processed sampler ``q``); ``unbiased_for`` says which gradient the constants describe.
    ``trainer`` holds the trainer's settings that decide its estimator (``GRPOConfig`` fields), or
    ``None`` when none were given.
    """

    model: str
    task: str
    dataset_source: str
    num_rows: int
    prompt_format: str
    prompt_order: str
    sampling: dict
    case: str
    unbiased_for: str
    score_policy: str
    score_mean: ScoreMeanCheck
    mean_truncated_mass: float
    mean_log_ratio: float
    chat_template_sha256: str | None
    reward: RewardSummary
    truncated_fraction: float
    empty_fraction: float
    mean_completion_length: float
    params_selection: str
    params_count: int
    num_parameters: int
    sketch_dim: int | None
    peft: dict | None
    trainer: dict | None
    num_prompts: int
    samples_per_prompt: int
    prompts_left_out: int
    versions: dict = field(default_factory=dict)

    @property
    def selfcheck_verdict(self) -> str:
        if self.case != "exact":
            return "drift expected (sampler != pi_T); measured as ||E S||^2"
        return ("pass" if self.score_mean.passed else
                "FAIL: sampler/scorer mismatch (temperature, generation config or chat template)")

    @property
    def estimator(self) -> str:
        """The estimator the trainer's advantage computes (``leave_one_out`` when no trainer
        settings were given: the paper's GRPO gradient)."""
        return (self.trainer or {}).get("estimator", "leave_one_out")

    @property
    def criterion_estimator(self) -> str:
        """:attr:`estimator` by its name in :data:`ustat_grpo.scaling.pool.CRITERION_ESTIMATORS` (group-mean
        advantages are ``group_mean``, ``group_mean_batch`` with TRL's ``scale_rewards="batch"``)."""
        name = self.estimator
        if name == "group_mean":
            return "group_mean_batch" if (self.trainer or {}).get("batch_scaled") else "group_mean"
        return name

    def warnings(self) -> tuple:
        """What a reader of the recommendation must know about this measurement."""
        out = []
        if self.case == "exact" and not self.score_mean.passed:
            out.append(f"mean-score self-check failed (z = {self.score_mean.z:.1f}): sampler and scored policy differ")
        if self.case != "exact":
            out.append(f"sampler is {self.case} (not pi_T): the constants describe a biased estimator; see the card")
        if self.prompts_left_out:
            out.append(f"{self.prompts_left_out} of {self.num_prompts} prompts have an unscorable completion "
                       "(every reward None) and were left out")
        return tuple(out)

    def summary(self) -> str:
        return "\n".join(card_lines(self))

    __str__ = summary

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out.update(score_mean=dict(self.score_mean.to_dict(), verdict=self.selfcheck_verdict),
                   reward=self.reward.to_dict(), estimator=self.estimator)
        return jsonable(out)


def card_lines(c: EstimatorCard) -> list[str]:
    """The card as text lines (the report's "Estimator card" section)."""
    s, rw, chk = c.sampling, c.reward, c.score_mean
    num = lambda x, f=".3g": "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, f)
    rewards = "; ".join(f"{n} (w={w:g}, {st}, mean {num(m)}, None {100 * nr:.1f}%, errors {e})" for n, w, st, m, nr, e in
                        zip(rw.names, rw.weights, rw.styles, rw.mean, rw.none_rate, rw.error_count))
    zv = ", ".join(f"G={g}: {100 * v:.1f}%" for g, v in rw.zero_variance)
    lines = [
        f"  model: {c.model}; task: {c.task} ({c.dataset_source}, {c.num_rows} rows, {c.prompt_format} prompts, "
        f"{c.prompt_order})",
        f"  sampler: T = {s['temperature']:g}, top_p = {s['top_p']:g}, top_k = {s['top_k']}, min_p = {s['min_p']}, "
        f"repetition_penalty = {s['repetition_penalty']:g}, max_completion_length = {s['max_completion_length']}; "
        f"chat template sha256 {(c.chat_template_sha256 or '-')[:16]}, kwargs {s.get('chat_template_kwargs') or '{}'}",
        f"  score: {c.score_policy}",
        f"  case: {c.case}; unbiased for: {c.unbiased_for}",
        f"  drift: mean truncated mass {num(c.mean_truncated_mass)}, mean log(pi_T/q) {num(c.mean_log_ratio)}; "
        f"||E S||^2 = {num(chk.statistic)} +- {num(chk.standard_error, '.2g')} (z = {num(chk.z, '.2f')}): "
        f"self-check {c.selfcheck_verdict}",
        f"  rewards: {rewards}; total mean {num(rw.mean_total)}; unscorable {100 * rw.unscorable_rate:.1f}%; "
        f"on error: {rw.on_error}",
        f"  zero-variance groups (no gradient): {zv or '-'}"
        + ("" if rw.varies else "  <- the rewards never vary"),
        f"  completions: truncated {100 * c.truncated_fraction:.1f}%, empty {100 * c.empty_fraction:.1f}%, "
        f"mean length {num(c.mean_completion_length)} tokens",
        f"  parameters: {c.params_selection} ({c.params_count} tensors, {c.num_parameters} scalars"
        + (f", sketched to {c.sketch_dim}" if c.sketch_dim else "") + ")" + (f"; LoRA {c.peft}" if c.peft else ""),
        f"  estimator: {c.estimator}" + (f" (trainer settings: {c.trainer['summary']})"
                                         if c.trainer and c.trainer.get("summary") else
                                         " (no trainer settings given: the paper's leave-one-out GRPO)"),
        f"  pilot: {c.num_prompts} prompts x {c.samples_per_prompt} samples, {c.prompts_left_out} left out as unscorable",
        "  versions: " + ", ".join(f"{k} {v}" for k, v in c.versions.items()),
    ]
    return lines


def _unbiased_for(case: str, temperature: float) -> str:
    if case == "exact":
        return f"grad E_{{pi_T}}[R]: the sampler is pi_T = softmax(z/T) (T = {temperature:g}), the policy differentiated"
    return ("neither grad E_{pi_T}[R] nor grad E_q[R]: completions come from the processed sampler q but the score "
            "is grad log pi_T (no importance weighting, as TRL's HF path, verl and OpenRLHF by default); the "
            "constants describe the trainer's biased update noise")


def _rewards(config: dict, stats, keep) -> RewardSummary:
    rc, ex = config["rewards"], stats.extras
    parts = ex["reward_parts"][1] if "reward_parts" in ex else stats.rewards[..., None]   # (P, M, F)
    flat = parts.reshape(-1, parts.shape[-1])
    total = stats.rewards
    mean = tuple(float(np.nanmean(c)) if np.isfinite(c).any() else math.nan for c in flat.T)
    errors = ex["reward_errors"][1].sum(0) if "reward_errors" in ex else np.zeros(flat.shape[1], int)
    z = total[keep]
    M = z.shape[1]
    zv = tuple((g, zero_variance_share(z, g)) for g in [2 ** k for k in range(1, 12) if 2 ** k <= M]) if len(z) else ()
    varies = bool(len(z) and (z.max(1) > z.min(1)).any())
    return RewardSummary(names=tuple(rc["names"]), weights=tuple(rc["weights"]), styles=tuple(rc["styles"]),
                         none_rate=tuple(float(x) for x in np.isnan(flat).mean(0)),
                         error_count=tuple(int(e) for e in errors), mean=mean,
                         mean_total=float(np.nanmean(total)) if np.isfinite(total).any() else math.nan,
                         unscorable_rate=float(np.isnan(total).mean()), on_error=rc.get("on_error", "raise"),
                         zero_variance=zv, varies=varies)


def build_card(config: dict, stats, keep) -> EstimatorCard:
    """The card of a pilot: ``config`` is the sampler's description (``TaskSampler.describe()``, as
    stored in the pilot file), ``stats`` its :class:`~ustat_grpo.scaling.constants.PromptStatistics` (with
    scores, which the mean-score self-check needs, and extras), ``keep`` the mask of prompts the
    constants use."""
    ex = stats.extras
    mean_of = lambda k: float(np.mean(ex[k][1])) if k in ex else math.nan
    s = config["sampling"]
    case = s.get("case", "exact")
    params, data = config["params"], config["dataset"]
    check = score_mean_check(stats.scores)
    return EstimatorCard(
        model=config["model"], task=config.get("task", "dataset"), dataset_source=data["source"],
        num_rows=int(data["num_rows"]), prompt_format=data["prompt_format"], prompt_order=config["prompt_order"],
        sampling=dict(s),
        case=case, unbiased_for=_unbiased_for(case, s["temperature"]),
        score_policy=f"grad log_softmax(z / T) over the full vocabulary, T = {s['temperature']:g}, summed over "
                     "completion tokens (TRL / verl / OpenRLHF training log-probabilities)",
        score_mean=check, mean_truncated_mass=mean_of("truncated_mass"), mean_log_ratio=mean_of("log_ratio"),
        chat_template_sha256=config.get("chat_template_sha256"), reward=_rewards(config, stats, keep),
        truncated_fraction=mean_of("truncated"), empty_fraction=mean_of("empty"),
        mean_completion_length=mean_of("length"), params_selection=str(params["selection"]),
        params_count=int(params["count"]), num_parameters=int(params["num_parameters"]),
        sketch_dim=None if params["sketch"] is None else int(params["sketch"]["dim"]), peft=params.get("peft"),
        trainer=config.get("trainer"), num_prompts=len(stats), samples_per_prompt=int(stats.num_samples[0]),
        prompts_left_out=int((~np.asarray(keep)).sum()), versions=dict(config.get("versions") or {}))
