"""A user's GRPO task as their trainer sees it: dataset rows, prompt format, prompt token ids.

The rules copy TRL 1.16's ``GRPOTrainer`` (``../shared/spec/own_task.md`` §1.1-1.2, §6.5):

* the dataset has a ``prompt`` column holding either a string (*standard*) or a list of
  ``{"role", "content"}`` messages (*conversational*, detected as TRL detects it: a list whose
  first element is a dict with a ``"role"`` key); one format for the whole dataset;
* every other column is forwarded to reward functions unchanged (nested verl columns such as
  ``reward_model`` / ``extra_info`` included); a ``completion`` column is dropped, as TRL drops it,
  and columns named like a reward-function keyword (:data:`RESERVED_COLUMNS`) are rejected;
* standard prompts are tokenised with the tokenizer's default ``add_special_tokens=True`` (a BOS
  for Llama-style tokenizers); conversational prompts go through
  ``apply_chat_template(..., add_generation_prompt=True, tokenize=True, **chat_template_kwargs)``.

Files: ``.jsonl`` / ``.json``, ``.csv``, ``.parquet`` and a ``datasets`` ``save_to_disk``
directory (a ``DatasetDict`` needs ``split``).  Arrow readers (``pyarrow``; ``datasets`` for
directories, the ``task`` extra) are used when installed, so nested list/struct columns come back
as plain Python lists and dicts (never numpy arrays) and struct keys missing in some rows are
filled with ``None``, as ``datasets.load_dataset`` does; JSON lines and CSV fall back to the
standard library without them.  Bad data raises ``ValueError`` (a missing file
``FileNotFoundError``, a missing optional reader ``ImportError``) with one line naming the file,
row and column, or the parameter at fault; the command line maps these to exit code 2.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field

from ..core._serialize import jsonable

__all__ = ["RESERVED_COLUMNS", "TaskData", "load_task", "load_rows", "validate_rows",
           "is_conversational", "encode_prompt", "chat_template_hash", "SamplingConfig", "TrainerSettings",
           "LOSS_TYPES", "adds_bos"]

#: keywords TRL passes to reward functions itself; a dataset column of that name would collide
RESERVED_COLUMNS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra",
                    "log_metric", "environments")


def is_conversational(prompt) -> bool:
    """TRL's rule (``trl/data_utils.py``): a list whose first element is a dict with ``"role"``."""
    return isinstance(prompt, list) and len(prompt) > 0 and isinstance(prompt[0], dict) and "role" in prompt[0]


@dataclass(frozen=True, kw_only=True)
class TaskData:
    """Validated rows of a user's dataset.

    Attributes
    ----------
    rows : tuple of dict
        One dict per row, the prompt column renamed to ``"prompt"`` and ``"completion"`` dropped.
    prompt_format : ``"standard"`` or ``"conversational"``.
    columns : the columns forwarded to reward functions (all but ``"prompt"``).
    source : where the rows came from (a path, or ``"<in-memory>"``).
    """

    rows: tuple
    prompt_format: str
    columns: tuple
    source: str = "<in-memory>"

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self) -> str:
        return (f"{len(self.rows)} rows from {self.source}; {self.prompt_format} prompts; "
                f"reward columns: {', '.join(self.columns) or '-'}")

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(source=self.source, num_rows=len(self.rows), prompt_format=self.prompt_format,
                    columns=list(self.columns)))


# ------------------------------------------------------------------------------------ loading

def _arrow_rows(table) -> list[dict]:
    return table.to_pylist()


def _read_json(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {i}: not valid JSON ({exc.msg})") from None
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise ValueError(f"{path}: row {bad[0]}: expected a JSON object")
    try:  # Arrow type unification as datasets.load_dataset("json") does (missing struct keys -> None)
        import pyarrow as pa
    except ImportError:
        return rows
    try:
        return _arrow_rows(pa.Table.from_pylist(rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{path}: columns of mixed types ({exc})") from None


def _read_csv(path: str) -> list[dict]:
    try:
        import pyarrow.csv as pcsv
    except ImportError:
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    return _arrow_rows(pcsv.read_csv(path))


def _read_directory(path: str, split: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{path}: reading a save_to_disk directory needs the 'datasets' package "
                         "(pip install 'ustat_grpo[task]')") from None
    try:
        ds = datasets.load_from_disk(path)
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: not a datasets save_to_disk directory ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            raise ValueError(f"split=None: {path} is a DatasetDict with splits {sorted(ds)}; "
                             "choose one with split= (or PATH@SPLIT)")
        if split not in ds:
            raise ValueError(f"split={split!r}: {path} has no such split (have {sorted(ds)})")
        ds = ds[split]
    return ds.to_list()


def load_rows(path: str | os.PathLike, *, split: str | None = None) -> list[dict]:
    """Rows of a ``.jsonl``/``.json``/``.csv``/``.parquet`` file or a ``save_to_disk`` directory.

    ``path@split`` selects a split of a ``DatasetDict`` directory (OpenRLHF's syntax).
    """
    path = os.fspath(path)
    if "@" in path and not os.path.exists(path):
        path, split = path.rsplit("@", 1)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return _read_directory(path, split)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json"):
        return _read_json(path)
    if ext == ".csv":
        return _read_csv(path)
    if ext == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install 'ustat_grpo[task]')") from None
        return _arrow_rows(pq.read_table(path))
    raise ValueError(f"{path}: unknown dataset format {ext!r} (expected .jsonl, .json, .csv, .parquet "
                     "or a save_to_disk directory)")


def _check_messages(prompt, where: str) -> None:
    for j, msg in enumerate(prompt):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f"{where}: message {j} is not a {{'role', 'content'}} dict")
        content = msg["content"]
        if isinstance(content, list):  # multimodal parts: only text is supported
            kinds = {p.get("type") if isinstance(p, dict) else type(p).__name__ for p in content}
            if kinds - {"text"}:
                raise ValueError(f"{where}: message {j} has non-text parts {sorted(map(str, kinds - {'text'}))}; "
                                 "only text prompts are supported")
        elif not isinstance(content, str):
            raise ValueError(f"{where}: message {j} content is {type(content).__name__}, expected str")


def validate_rows(rows, *, prompt_column: str = "prompt", source: str = "<in-memory>") -> TaskData:
    """Check rows as TRL would use them and return a :class:`TaskData`.

    Raises ``ValueError`` (one line naming the source, row and column) for: no rows, a missing
    prompt column, a prompt
    that is neither a string nor a list of messages, mixed formats, non-text message parts, and
    reserved column names.
    """
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError(f"{source}: the dataset has no rows")
    fmt = None
    for i, row in enumerate(rows):
        if prompt_column not in row:
            raise ValueError(f"{source}: row {i}: no prompt column {prompt_column!r} "
                             f"(columns: {', '.join(map(str, row))})")
        p = row.pop(prompt_column)
        row.pop("completion", None)
        where = f"{source}: row {i}, column {prompt_column!r}"
        if isinstance(p, str):
            kind = "standard"
        elif is_conversational(p):
            kind = "conversational"
            _check_messages(p, where)
        else:
            raise ValueError(f"{where}: a prompt must be a string or a list of chat messages, "
                             f"got {type(p).__name__}")
        if fmt is None:
            fmt = kind
        elif kind != fmt:
            raise ValueError(f"{where}: mixed prompt formats ({fmt} rows before, {kind} here); "
                             "TRL reads the format from each batch's first row, so use one format")
        row["prompt"] = p
    columns = [c for c in rows[0] if c != "prompt"]
    bad = sorted(set(c for r in rows for c in r) & set(RESERVED_COLUMNS))
    if bad:
        raise ValueError(f"{source}: column {bad[0]!r} collides with a reward-function keyword "
                         f"({', '.join(RESERVED_COLUMNS)}); rename it")
    return TaskData(rows=tuple(rows), prompt_format=fmt, columns=tuple(columns), source=source)


def load_task(dataset, *, prompt_column: str = "prompt", split: str | None = None,
              max_prompts: int | None = None) -> TaskData:
    """A path (see :func:`load_rows`), a ``datasets.Dataset``, a list of dicts or a TaskData."""
    if isinstance(dataset, TaskData):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        rows, source = load_rows(dataset, split=split), os.fspath(dataset)
    elif hasattr(dataset, "to_list"):  # datasets.Dataset, without importing datasets
        rows, source = dataset.to_list(), f"<{type(dataset).__name__}>"
    else:
        rows, source = list(dataset), "<in-memory>"
    task = validate_rows(rows, prompt_column=prompt_column, source=source)
    if max_prompts is not None:
        task = TaskData(rows=task.rows[:max_prompts], prompt_format=task.prompt_format,
                        columns=task.columns, source=task.source)
    return task


# ------------------------------------------------------------------------------- tokenisation

def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts its BOS token in front of plain text (``tokenizer(text)``).

    Read from the tokenizer itself (its post-processor or ``add_bos_token`` setting, through a
    one-character probe): Llama-, Gemma- and the built-in model's tokenizers do; GPT-2-style
    tokenizers (a BOS token that ``tokenizer(text)`` never adds) and Qwen-style ones (no BOS token)
    do not.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    try:
        probe = list(tokenizer(text="1")["input_ids"])
    except Exception:  # a tokenizer that cannot encode the probe: make no claim
        return False
    return bool(probe) and probe[0] == bos


def _check_bos(tokenizer, ids, conversational: bool) -> None:
    """Warn when ``ids`` miss the BOS, or repeat it, for a tokenizer that adds one to plain text."""
    if not adds_bos(tokenizer):
        return
    bos = tokenizer.bos_token_id
    if not ids or ids[0] != bos:
        warnings.warn("the prompt's token ids do not start with BOS "
                      f"({tokenizer.convert_ids_to_tokens(bos)!r}), which this tokenizer adds to plain text and "
                      "its model was presumably trained with; "
                      + ("the chat template does not render {{ bos_token }}" if conversational else
                         "the ids were made without special tokens"), stacklevel=3)
    elif len(ids) > 1 and ids[1] == bos:
        warnings.warn("the prompt's token ids start with BOS twice: the prompt text already begins with "
                      f"{tokenizer.convert_ids_to_tokens(bos)!r} and the tokenizer adds another (TRL 1.16 does "
                      "the same); drop it from the prompt text", stacklevel=3)


def encode_prompt(tokenizer, prompt, *, chat_template_kwargs: dict | None = None) -> list[int]:
    """Prompt token ids as TRL 1.16's ``GRPOTrainer`` builds them.

    Standard: ``tokenizer(text)["input_ids"]`` (default ``add_special_tokens=True``).
    Conversational: ``apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
    return_dict=True, **chat_template_kwargs)["input_ids"]``.

    Warns (``UserWarning``) when the tokenizer adds a BOS to plain text (:func:`adds_bos`) but
    the ids do not start with it (a chat template without ``{{ bos_token }}``), or start with it
    twice (prompt text that already holds it).  Tokenizers that never add a BOS to plain text
    (GPT-2, Qwen) are not checked: nothing says their models expect one.
    """
    if isinstance(prompt, str):
        ids = list(tokenizer(text=prompt)["input_ids"])
        _check_bos(tokenizer, ids, False)
        return ids
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt: a conversational prompt (a list of messages) needs a tokenizer with a "
                         "chat template, and this tokenizer has none")
    out = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        **(chat_template_kwargs or {}))
    ids = out["input_ids"]
    ids = list(ids[0] if ids and isinstance(ids[0], list) else ids)
    _check_bos(tokenizer, ids, True)
    return ids


def prompt_text(tokenizer, prompt, *, chat_template_kwargs: dict | None = None) -> str:
    """The prompt as text (chat template applied for conversational prompts)."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False,
                                         **(chat_template_kwargs or {}))


def chat_template_hash(tokenizer) -> str | None:
    """SHA-256 (first 16 hex digits) of the tokenizer's chat template, ``None`` without one."""
    tpl = getattr(tokenizer, "chat_template", None)
    if not tpl:
        return None
    text = tpl if isinstance(tpl, str) else json.dumps(tpl, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- sampling config

#: TRL 1.16 ``GRPOConfig`` defaults of the fields read here
TRL_DEFAULTS = dict(temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
                    max_completion_length=512, num_generations=8, chat_template_kwargs=None,
                    reward_weights=None, scale_rewards="group", loss_type="dapo", num_iterations=1,
                    epsilon=0.2, epsilon_high=None, beta=0.0, bf16=None, fp16=False)


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Sampling settings with TRL ``GRPOConfig`` names and defaults.

    ``top_k=0`` / ``None``, ``top_p=1``, ``min_p=None`` / ``0`` and ``repetition_penalty=1`` are
    "off".  The model checkpoint's own ``generation_config`` is never read: the sampler of
    :func:`ustat_grpo.policies.lm.sample_completions` takes only these values.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    max_completion_length: int = 512
    chat_template_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {self.max_completion_length}")

    @property
    def truncates(self) -> bool:
        return bool(self.top_k) or self.top_p < 1 or bool(self.min_p)

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0

    @property
    def case(self) -> str:
        """``"exact"`` (sampler = pi_T), ``"truncated"`` or ``"penalised"`` (own_task.md §5)."""
        if self.penalised:
            return "penalised"
        return "truncated" if self.truncates else "exact"

    @classmethod
    def from_args(cls, args=None, **overrides) -> SamplingConfig:
        """From a ``GRPOConfig``, a dict or ``None`` (read by field name; TRL defaults)."""
        get = (lambda k: args.get(k, TRL_DEFAULTS[k])) if isinstance(args, dict) else \
              (lambda k: getattr(args, k, TRL_DEFAULTS[k]))
        vals = {k: get(k) for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                    "max_completion_length", "chat_template_kwargs")}
        vals.update({k: v for k, v in overrides.items() if v is not None})
        vals["chat_template_kwargs"] = dict(vals["chat_template_kwargs"] or {})
        if vals["top_k"] is None:
            vals["top_k"] = 0
        return cls(**vals)

    def to_dict(self) -> dict:
        return jsonable(dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                    repetition_penalty=self.repetition_penalty,
                    max_completion_length=self.max_completion_length,
                    chat_template_kwargs=dict(self.chat_template_kwargs), case=self.case,
                    order="repetition_penalty -> temperature -> top_k -> top_p -> min_p (transformers)",
                    model_generation_config="ignored"))


# --------------------------------------------------------------------------- trainer settings

#: TRL 1.16 ``loss_type`` -> how a completion's summed token score enters the loss
#: (grpo_frameworks.md §2.2): ``"sequence_mean"`` divides each completion by its own length;
#: ``"batch_tokens"`` divides the batch sum by the number of completion tokens in the batch (one
#: divisor for every completion); ``"constant"`` by ``B * max_completion_length``.
LOSS_TYPES = {"grpo": "sequence_mean", "sapo": "sequence_mean", "bnpo": "batch_tokens", "dapo": "batch_tokens",
              "cispo": "batch_tokens", "vespo": "batch_tokens", "dr_grpo": "constant", "luspo": "other"}


def _get(args, key, default):
    value = args.get(key, default) if isinstance(args, dict) else getattr(args, key, default)
    return default if value is None and default is not None else value


@dataclass(frozen=True, kw_only=True)
class TrainerSettings:
    """The ``GRPOConfig`` fields (TRL 1.16 names and defaults) that change what a trainer estimates.

    Attributes
    ----------
    num_generations : int
        ``G``, completions per prompt (default 8).
    scale_rewards : {"group", "batch", "none"}
        Advantage scaling (default ``"group"``; the legacy ``True``/``False`` are read as TRL
        reads them, ``"group"``/``"none"``).  It decides the estimator: see :meth:`estimator`.
    loss_type : str
        Token aggregation (default ``"dapo"``), one of :data:`LOSS_TYPES`.
    num_iterations : int
        ``mu``, optimisation steps per generation batch (default 1).
    epsilon, epsilon_high : float
        PPO clip range (default 0.2; ``epsilon_high`` defaults to ``epsilon``).
    beta : float
        KL coefficient (default 0.0: no reference model).
    bf16 : bool
        bfloat16 autocast (TRL default: ``True`` unless ``fp16``).

    Notes
    -----
    The variance constants of :mod:`ustat_grpo` are those of the policy-gradient estimate *at the
    sampling policy*, ``(1/G) sum_g A_g W_g`` with ``W_g`` the summed token score of completion
    ``g``.  Of the fields above:

    * ``scale_rewards`` picks the estimator (:meth:`estimator`): ``"group"`` is
      ``std_normalized``, ``"none"`` is ``group_mean`` (Dr. GRPO), ``"batch"`` is ``group_mean``
      divided by one batch-wide std (a common scale of every prompt, nearly constant for large
      batches: the same estimator up to that scale).
    * ``loss_type`` changes the score that multiplies the advantage: ``"dr_grpo"`` divides by a
      constant and ``"dapo"``/``"bnpo"``/``"cispo"``/``"vespo"`` by the number of completion tokens
      in the batch (one divisor per batch, so the estimator's shape is unchanged);
      ``"grpo"``/``"sapo"`` divide each completion's score by its own length, a different
      estimator from the summed score that is measured (:attr:`length_normalized`).
    * ``num_iterations > 1`` reuses one generation batch for ``mu`` steps: the first step's
      gradient is the measured estimator (every importance ratio is 1); later steps are taken at
      parameters that moved, with ratios and clipping, and are not what the constants describe.
    * ``epsilon`` (clipping) is inactive at ratio 1, so it does not change the first step's
      gradient; it shapes only the later inner steps (``num_iterations > 1``) and off-policy
      samples (vLLM, async).
    * ``beta > 0`` adds ``beta * grad KL(pi || pi_ref)``, estimated from the same completions; its
      k3 estimate has zero gradient where the policy equals the reference (the first step) and
      otherwise adds variance that the constants do not include.
    * ``bf16`` autocast rounds the forward and backward passes (about 3 significant digits); the
      constants are measured in float32/float64 and leave that rounding noise out.

    So these settings change the *update*, not the gradient at the sampling policy, except
    ``scale_rewards`` (the estimator) and a length-normalising ``loss_type`` (the score).

    Examples
    --------
    >>> TrainerSettings.from_args({"scale_rewards": False, "loss_type": "dr_grpo"}).estimator()
    'group_mean'
    >>> TrainerSettings.from_args(None).preset
    'grpo'
    """

    num_generations: int = 8
    scale_rewards: str = "group"
    loss_type: str = "dapo"
    num_iterations: int = 1
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    bf16: bool = True

    def __post_init__(self):
        from ..theory.presets import trl_scale_rewards

        object.__setattr__(self, "scale_rewards", trl_scale_rewards(self.scale_rewards))
        if self.epsilon_high is None:
            object.__setattr__(self, "epsilon_high", float(self.epsilon))
        if int(self.num_generations) != self.num_generations or self.num_generations < 2:
            raise ValueError(f"num_generations must be an integer >= 2 (TRL requires it), got {self.num_generations}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {sorted(LOSS_TYPES)} (TRL 1.16), got {self.loss_type!r}")
        if int(self.num_iterations) != self.num_iterations or self.num_iterations < 1:
            raise ValueError(f"num_iterations must be an integer >= 1, got {self.num_iterations}")
        if not self.epsilon >= 0 or not self.epsilon_high >= 0:
            raise ValueError(f"epsilon and epsilon_high must be >= 0, got {self.epsilon}, {self.epsilon_high}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")

    @classmethod
    def from_args(cls, args=None, **overrides) -> TrainerSettings:
        """From a ``GRPOConfig`` (or any object with its attribute names), a dict or ``None``.

        Missing fields take TRL 1.16's defaults; ``bf16=None`` is TRL's ``not fp16``.
        Keyword ``overrides`` that are not ``None`` win.
        """
        keys = ("num_generations", "scale_rewards", "loss_type", "num_iterations", "epsilon", "epsilon_high",
                "beta")
        vals = {k: _get(args, k, TRL_DEFAULTS[k]) for k in keys}
        bf16 = _get(args, "bf16", None)
        vals["bf16"] = (not bool(_get(args, "fp16", False))) if bf16 is None else bool(bf16)
        vals.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**vals)

    @property
    def preset(self) -> str:
        """The key of :data:`ustat_grpo.theory.presets.PRESETS` of the trainer's advantage."""
        from ..theory.presets import framework_preset

        return framework_preset("trl", scale_rewards=self.scale_rewards)

    @property
    def batch_scaled(self) -> bool:
        """The advantages are divided by one batch-wide reward std (``scale_rewards="batch"``)."""
        return self.scale_rewards == "batch"

    @property
    def length_normalized(self) -> bool:
        """Each completion's score is divided by its own length (``loss_type`` grpo / sapo)."""
        return LOSS_TYPES[self.loss_type] == "sequence_mean"

    def estimator(self) -> str:
        """The estimator of :data:`ustat_grpo.theory.estimators.ESTIMATORS` that the trainer's advantage is.

        ``"std_normalized"`` (``scale_rewards="group"``) or ``"group_mean"`` (``"none"``, and
        ``"batch"``, where every advantage is further divided by one batch-wide std:
        :attr:`batch_scaled`).
        """
        from ..theory.presets import PRESETS

        return PRESETS[self.preset].estimator

    def notes(self) -> tuple:
        """One line per setting that makes the trainer's update differ from the measured estimator."""
        out = []
        if self.batch_scaled:
            out.append("scale_rewards='batch': group_mean advantages divided by one batch-wide reward std "
                       "(a common scale; the estimator's shape is group_mean's)")
        if self.length_normalized:
            out.append(f"loss_type={self.loss_type!r}: each completion's score is divided by its length; the "
                       "constants are measured with the summed score (no length normalisation)")
        elif LOSS_TYPES[self.loss_type] == "other":
            out.append(f"loss_type={self.loss_type!r}: token aggregation not modelled by ustat_grpo")
        if self.num_iterations > 1:
            out.append(f"num_iterations={self.num_iterations}: only the first of the {self.num_iterations} steps "
                       "per generation batch is taken at the sampling policy (ratio 1); the constants describe "
                       "that step, and epsilon clipping acts on the later ones")
        if self.beta > 0:
            out.append(f"beta={self.beta:g}: the KL term's gradient is zero at the reference policy and adds "
                       "variance elsewhere that the constants leave out")
        if self.bf16:
            out.append("bf16: autocast rounding of the trainer's log-probs is not in the measured constants "
                       "(float32/float64 scores)")
        return tuple(out)

    def summary(self) -> str:
        head = (f"TRL GRPOTrainer: scale_rewards={self.scale_rewards!r} -> {self.estimator()} "
                f"(preset {self.preset!r}); loss_type={self.loss_type!r}; num_generations={self.num_generations}, "
                f"num_iterations={self.num_iterations}, epsilon={self.epsilon:g}/{self.epsilon_high:g}, "
                f"beta={self.beta:g}, bf16={self.bf16}")
        return "; ".join((head, *self.notes()))

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(num_generations=int(self.num_generations), scale_rewards=self.scale_rewards,
                    loss_type=self.loss_type, num_iterations=int(self.num_iterations), epsilon=float(self.epsilon),
                    epsilon_high=float(self.epsilon_high), beta=float(self.beta), bf16=bool(self.bf16),
                    estimator=self.estimator(), preset=self.preset, batch_scaled=self.batch_scaled,
                    length_normalized=self.length_normalized, notes=list(self.notes())))
