"""One per-prompt sampler for every language-model task: the built-in arithmetic task and yours.

A pilot (:func:`ustat_grpo.measurement.pilot.run_pilot`) asks a sampler for one prompt at a time:
``sampler(p, seq) -> PromptDraw``, prompt ``p`` of the pilot drawing every random number from its
own stream ``seq``.  :class:`TaskSampler` is the one language-model implementation:

1. prompt ``p`` is row ``order[p]`` of the dataset, ``order`` a seeded random permutation (the
   first ``P`` rows of it are a uniform random sample of prompts, for every ``P``, so adaptive
   pilots stay random samples); a generated task whose rows are already a random sample (the
   built-in arithmetic questions) keeps its order;
2. the prompt is encoded as TRL 1.16 encodes it (:func:`ustat_grpo.measurement.task.encode_prompt`), ``M``
   completions are drawn with the trainer's sampling settings (:class:`~ustat_grpo.measurement.task.SamplingConfig`),
   rewarded by the reward functions as the trainer calls them (:mod:`ustat_grpo.measurement.rewards`), and
   scored as the trainer differentiates them (``grad log softmax(z/T)`` summed over completion
   tokens, :func:`ustat_grpo.policies.score.per_sample_scores`), then sketched;
3. the draw carries per-completion diagnostics (lengths, truncation, per-function rewards) that
   the estimator card is built from, so the card can be rebuilt from a pilot file alone.

:func:`arithmetic_task` turns the built-in arithmetic questions into such a dataset with the
``arithmetic`` reward; :func:`task_sampler` builds a sampler for any model, dataset and rewards;
:func:`prompt_samples` draws ``P x M`` samples in memory (simulations and tests).  The toy bandit's
sampler is :class:`ustat_grpo.measurement.pilot.BanditSampler`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np

from ..policies import arithmetic
from ..core._random import default_rng, keyed_seed_sequence
from . import rewards as rw
from . import task as tk
from ..core._random import seed_sequence
from .pilot import PromptDraw

__all__ = ["TaskSampler", "task_sampler", "arithmetic_task", "prompt_samples", "resolve_params",
           "library_versions", "prompt_order"]

_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "datasets", "pyarrow", "math-verify", "trl",
              "verl", "openrlhf", "vllm")
#: Spawn key of the prompt-order stream: disjoint from the per-prompt streams ``spawn(P)[p]``.
_ORDER_KEY = 2 ** 32 - 1


def library_versions() -> dict:
    """Installed versions of the libraries whose behaviour the measurement copies or uses."""
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def prompt_order(num_rows: int, seed: int, *, shuffle: bool = True) -> np.ndarray:
    """Row of the dataset behind each pilot prompt: a permutation seeded by ``seed`` (identity when
    ``shuffle`` is false).

    >>> prompt_order(5, 0, shuffle=False).tolist(), sorted(prompt_order(5, 0).tolist())
    ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    """
    if not shuffle:
        return np.arange(num_rows)
    return default_rng(keyed_seed_sequence(seed, _ORDER_KEY)).permutation(num_rows)


def resolve_params(model, params) -> list[str]:
    """Parameter names for ``params``: ``"trainable"`` (``requires_grad``), ``"all"`` / ``None``,
    ``"regex:PATTERN"``, a name substring, or a list of names.  Raises ``ValueError`` naming
    ``params`` when nothing matches."""
    from ..policies.score import parameter_names

    named = list(model.named_parameters())
    if params in (None, "all"):
        return [n for n, _ in named]
    if params == "trainable":
        chosen = [n for n, p in named if p.requires_grad]
    elif isinstance(params, str) and params.startswith("regex:"):
        pat = re.compile(params[len("regex:"):])
        chosen = [n for n, _ in named if pat.search(n)]
    else:
        try:
            return parameter_names(model, params)
        except ValueError as exc:
            raise ValueError(f"params={params!r}: {exc}") from None
    if not chosen:
        raise ValueError(f"params={params!r}: no parameter matches")
    return chosen


@dataclass(frozen=True, kw_only=True)
class TaskSampler:
    """``sampler(p, seq) -> PromptDraw`` of a transformer policy on a dataset with reward functions.

    Build it with :func:`task_sampler`.  Attributes are the pieces of the measurement: the policy
    (model, tokenizer), the dataset, the wrapped reward functions and weights, the sampling
    settings, the parameters whose scores are taken and their sketch, the samples per prompt, the
    prompt order, and ``info`` (static facts for the card: parameter selection, LoRA, trainer
    settings, the task's name).
    """

    policy: object
    data: tk.TaskData
    reward_funcs: tuple
    reward_weights: tuple | None
    sampling: tk.SamplingConfig
    params: tuple
    num_parameters: int
    sketch: object | None
    samples_per_prompt: int
    order: np.ndarray
    on_reward_error: str = "raise"
    chunk_size: int = 32
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.order)

    def row(self, p: int) -> dict:
        return self.data.rows[int(self.order[p])]

    def encode(self, p: int) -> list[int]:
        """Token ids of prompt ``p`` (TRL's encoding: ``tokenizer(text)`` or the chat template)."""
        return tk.encode_prompt(self.policy.tokenizer, self.row(p)["prompt"],
                                chat_template_kwargs=self.sampling.chat_template_kwargs)

    def check_prompts(self, num_prompts: int) -> None:
        """Raise ``ValueError`` naming the first of prompts ``0..num_prompts-1`` whose tokens plus
        ``max_completion_length`` exceed the model's context (before any sampling;
        :func:`ustat_grpo.policies.lm.check_prompt_length`)."""
        from ..policies.lm import check_prompt_length, context_length

        if num_prompts > len(self):
            raise ValueError(f"num_prompts={num_prompts} but the dataset {self.data.source} has {len(self)} rows")
        if context_length(self.policy.model) is None:
            return
        for p in range(num_prompts):
            check_prompt_length(self.policy.model, self.encode(p), self.sampling.max_completion_length,
                                index=f"{self.data.source} row {int(self.order[p])} (pilot prompt {p})")

    def __call__(self, p: int, seq) -> PromptDraw:
        from ..policies.lm import sample_completions
        from ..policies.score import per_sample_scores

        tok, M, cfg = self.policy.tokenizer, self.samples_per_prompt, self.sampling
        row = self.row(p)
        prompt_ids = self.encode(p)
        comp = sample_completions(self.policy, prompt_ids, M, rng=seq, temperature=cfg.temperature,
                                  top_k=cfg.top_k, top_p=cfg.top_p, min_p=cfg.min_p,
                                  repetition_penalty=cfg.repetition_penalty, warn=False)
        texts = list(comp.texts)
        special = tok.batch_decode(comp.completion_ids, skip_special_tokens=False)
        completions = ([[{"role": "assistant", "content": t}] for t in texts]
                       if self.data.prompt_format == "conversational" else texts)
        ptext = tk.prompt_text(tok, row["prompt"], chat_template_kwargs=cfg.chat_template_kwargs)
        cols = {k: v for k, v in row.items() if k != "prompt"}
        table = rw.compute_rewards(self.reward_funcs, prompts=[row["prompt"]] * M, completions=completions,
                                   completion_ids=comp.completion_ids, columns=[cols] * M, texts=texts,
                                   prompt_texts=[ptext] * M, texts_special=special, weights=self.reward_weights,
                                   on_error=self.on_reward_error)
        s = per_sample_scores(self.policy.model, comp.sequences, comp.completion_mask, params=list(self.params),
                              chunk_size=self.chunk_size, projection=self.sketch, temperature=cfg.temperature)
        s = s.detach().cpu()
        scores = (s.float() if s.dtype.itemsize < 4 else s).numpy()       # (M, k), the dtype it was computed in
        lengths = comp.completion_mask.sum(1).numpy().astype(np.int64)
        sample = ("sample",)
        extras = {"reward_parts": (("sample", "reward_function"), table.per_function),
                  "reward_errors": (("reward_function",), np.asarray(table.errors, np.int64)),
                  "length": (sample, lengths),
                  "prompt_length": ((), np.int64(len(prompt_ids))),     # prefilled once per group (cost model)
                  "truncated": (sample, comp.truncated.numpy().astype(np.int8)),
                  "empty": (sample, np.array([t == "" for t in texts], np.int8)),
                  "truncated_mass": (sample, comp.truncated_mass.numpy().astype(float)),
                  "log_ratio": (sample, comp.log_ratio.numpy().astype(float))}
        return PromptDraw(rewards=table.total, scores=scores, extras=extras)

    def describe(self) -> dict:
        """What the samples measure, JSON-safe: stored with a pilot (a resumed pilot must match it),
        and the static half of the estimator card.  Computed once per sampler (it hashes the
        dataset and reads library versions)."""
        return copy.deepcopy(self._description)

    @functools.cached_property
    def _description(self) -> dict:
        pol, tok = self.policy, self.policy.tokenizer
        cfg = pol.model.config.to_json_string(use_diff=False)
        funcs = self.reward_funcs
        return {
            "model": pol.name, "model_config_sha256": hashlib.sha256(cfg.encode()).hexdigest(),
            "dataset": self.data.to_dict(), "dataset_sha256": self.data_sha256(),
            "prompt_order": "as generated (a random sample)" if self.info.get("ordered") else "seeded permutation",
            "rewards": {"names": [f.name for f in funcs], "styles": [f.style for f in funcs],
                        "weights": list(self.reward_weights) if self.reward_weights else [1.0] * len(funcs),
                        "on_error": self.on_reward_error},
            "sampling": self.sampling.to_dict(), "samples_per_prompt": int(self.samples_per_prompt),
            "chat_template_sha256": tk.chat_template_hash(tok),
            "params": {"selection": self.info.get("params_selection", "list"), "count": len(self.params),
                       "num_parameters": int(self.num_parameters),
                       "sketch": None if self.sketch is None else {"dim": self.sketch.k, "kind": self.sketch.kind,
                                                                   "seed": self.sketch.seed},
                       "peft": self.info.get("peft")},
            "trainer": self.info.get("trainer"), "task": self.info.get("task", "dataset"),
            "versions": library_versions(),
        }

    def data_sha256(self) -> str:
        text = json.dumps(self.data.rows, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def arithmetic_task(policy, num_questions: int, *, first_question: int = 0, dataset_seed: int = 0) -> tk.TaskData:
    """The built-in arithmetic questions as a dataset: questions ``first_question ..
    first_question + num_questions - 1`` of :func:`ustat_grpo.policies.arithmetic.question_set` (the paper's
    500, then further seeded sets), column ``answer`` for the ``arithmetic`` reward, prompts in the
    policy's format (a chat message list when the policy uses its chat template)."""
    if first_question < 0 or num_questions < 0:
        raise ValueError(f"first_question and num_prompts must be >= 0, got {first_question}, {num_questions}")
    problems = arithmetic.question_set(first_question + num_questions, seed=dataset_seed)[first_question:]
    rows = []
    for q in problems:
        text = (policy.prompt(q) if not policy.use_chat_template else
                dataclasses.replace(policy, use_chat_template=False).prompt(q))
        prompt = [{"role": "user", "content": text}] if policy.use_chat_template else text
        rows.append({"prompt": prompt, "answer": q.answer})
    name = f"arithmetic questions {first_question}..{first_question + num_questions - 1} ({policy.template})"
    return tk.validate_rows(rows, source=name)


def _sketch(d: int, projection_dim, num_prompts: int, samples_per_prompt: int, seed, kind: str):
    from ..policies.score import Sketch

    if projection_dim == "auto":
        projection_dim = None if num_prompts * samples_per_prompt * d <= 2 ** 26 else 512
    if projection_dim is None or d <= int(projection_dim):
        return None
    ss = seed_sequence(seed)
    sketch_seed = int(seed) if isinstance(seed, (int, np.integer)) else int(ss.generate_state(1)[0])
    return Sketch(d, int(projection_dim), kind=kind, seed=sketch_seed)


def task_sampler(policy, data: tk.TaskData, reward_funcs, *, samples_per_prompt: int, num_prompts: int,
                 sampling: tk.SamplingConfig | None = None, reward_weights=None, params="trainable",
                 projection_dim: int | str | None = 256, projection_kind: str = "gaussian", seed=0,
                 on_reward_error: str = "raise", shuffle: bool = True, chunk_size: int = 32,
                 info: dict | None = None) -> TaskSampler:
    """The :class:`TaskSampler` of ``policy`` (a :class:`ustat_grpo.policies.lm.LanguageModelPolicy`) on ``data``.

    Parameters
    ----------
    reward_funcs : callable, spec string or a list of them (:mod:`ustat_grpo.measurement.rewards`)
    samples_per_prompt, num_prompts : M completions for each of the pilot's P prompts (P is the
        number of prompts the sketch is sized for with ``projection_dim="auto"``).
    sampling : :class:`~ustat_grpo.measurement.task.SamplingConfig` (default: TRL's, with the policy's
        ``max_new_tokens``).
    params : parameters whose scores are taken (:func:`resolve_params`).
    projection_dim : sketch dimension; ``None`` keeps every parameter; ``"auto"``: ``None`` when
        ``P * M * d <= 2**26``, else 512.  The sketch is seeded by ``seed``.
    shuffle : prompts are a seeded random permutation of the rows (:func:`prompt_order`); ``False``
        keeps the dataset's order (a dataset that is already a random sample).
    """
    funcs = tuple(rw.RewardFunction.wrap(f) for f in (reward_funcs if isinstance(reward_funcs, (list, tuple))
                                                        else [reward_funcs]))
    if not funcs:
        raise ValueError("reward_funcs: at least one reward function is needed")
    if reward_weights is not None and len(reward_weights) != len(funcs):
        raise ValueError(f"reward_weights: {len(reward_weights)} weights for {len(funcs)} reward functions")
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1 (a pilot needs >= 4), got {samples_per_prompt}")
    sampling = sampling or tk.SamplingConfig(max_completion_length=policy.max_new_tokens)
    names = resolve_params(policy.model, params)
    d = sum(policy.model.get_parameter(n).numel() for n in names)
    info = dict(info or {}, params_selection=params if isinstance(params, (str, type(None))) else "list",
                ordered=not shuffle)
    return TaskSampler(policy=dataclasses.replace(policy, max_new_tokens=sampling.max_completion_length),
                       data=data, reward_funcs=funcs,
                       reward_weights=None if reward_weights is None else tuple(float(w) for w in reward_weights),
                       sampling=sampling, params=tuple(names), num_parameters=int(d),
                       sketch=_sketch(d, projection_dim, num_prompts, samples_per_prompt, seed, projection_kind),
                       samples_per_prompt=int(samples_per_prompt),
                       order=prompt_order(len(data), seed if isinstance(seed, (int, np.integer)) else 0, shuffle=shuffle),
                       on_reward_error=on_reward_error, chunk_size=chunk_size, info=info)


def arithmetic_sampler(model=None, *, num_prompts: int = 32, samples_per_prompt: int = 64, rng=0,
                       device: str = "auto", projection_dim: int | str | None = "auto",
                       projection_kind: str = "gaussian", params: str | list | None = None,
                       variant: str = "strong", dataset_seed: int = 0, chunk_size: int = 32,
                       template: str | None = None, first_question: int = 0,
                       device_map: str | dict | None = None, sampling: tk.SamplingConfig | None = None) -> TaskSampler:
    """The :class:`TaskSampler` of a transformer (built-in when ``model`` is None, a
    :class:`~ustat_grpo.policies.lm.LanguageModelPolicy` or a local directory) on the built-in arithmetic task
    (:func:`arithmetic_task`) with the ``arithmetic`` reward; questions in their generated order."""
    from ..policies.lm import LanguageModelPolicy, load_policy

    policy = model if isinstance(model, LanguageModelPolicy) else load_policy(model, variant=variant, device=device,
                                                                 template=template, device_map=device_map)
    data = arithmetic_task(policy, num_prompts, first_question=first_question, dataset_seed=dataset_seed)
    sampling = sampling or tk.SamplingConfig(max_completion_length=policy.max_new_tokens)
    return task_sampler(policy, data, "arithmetic", samples_per_prompt=samples_per_prompt, num_prompts=num_prompts,
                        sampling=sampling, params="all" if params is None else params,
                        projection_dim=projection_dim, projection_kind=projection_kind, seed=rng, shuffle=False,
                        chunk_size=chunk_size, info={"task": "arithmetic"})


def prompt_samples(model=None, *, num_prompts: int = 32, samples_per_prompt: int = 64, rng=0,
                   progress: bool = False, return_problems: bool = False, **kwargs):
    """Per-prompt samples ``rewards (P, M)``, ``scores (P, M, k)`` (float64) of a transformer policy
    on the arithmetic task, in memory: question ``p`` sampled from ``SeedSequence(rng).spawn(P)[p]``,
    the stream a pilot gives it (:func:`ustat_grpo.measurement.pilot.run_pilot`).  ``kwargs`` go to
    :func:`arithmetic_sampler`; ``return_problems`` also returns the dataset rows.

    With a Gaussian or Rademacher sketch every quadratic quantity of the scores (``|W|^2``,
    ``|g|^2``, hence A1..A3) is unbiased over the draw of the sketch.
    """
    from tqdm import tqdm

    sampler = arithmetic_sampler(model, num_prompts=num_prompts, samples_per_prompt=samples_per_prompt, rng=rng,
                                 **kwargs)
    streams = seed_sequence(rng).spawn(num_prompts)
    draws = [sampler(p, streams[p]) for p in tqdm(range(num_prompts), desc=f"{sampler.policy.name}: sample + score",
                                                 unit="question", disable=not progress, file=sys.stderr)]
    out = (np.stack([d.rewards for d in draws]).astype(float),
           np.stack([d.scores for d in draws]).astype(float))  # (P, M), (P, M, k)
    return (*out, sampler.data.rows) if return_problems else out

