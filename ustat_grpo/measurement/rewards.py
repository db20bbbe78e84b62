"""Reward functions as GRPO trainers call them: TRL callables, verl ``compute_score``, OpenRLHF
``reward_func``; several of them with weights and TRL's ``None`` semantics.

Conventions (``../shared/spec/own_task.md`` §1.3-1.4, §2.2, §3, §6.4):

* **TRL** (default): ``f(prompts=..., completions=..., completion_ids=..., trainer_state=...,
  log_extra=..., log_metric=..., **columns)`` once per batch, every dataset column repeated per
  completion; ``completions`` are strings for standard prompts and
  ``[{"role": "assistant", "content": text}]`` for conversational ones.  Coroutine functions,
  ``functools.partial`` of them and objects with an ``async __call__`` are awaited.
* **verl** (a ``solution_str`` parameter): per completion ``f(data_source=..., solution_str=text,
  ground_truth=row["reward_model"]["ground_truth"], extra_info={...})``; a dict result gives
  ``["score"]``.
* **OpenRLHF** (parameters ``queries, prompts, labels``): per completion
  ``f([prompt_text + completion_text_with_special_tokens], [prompt_text], [label])``; a dict result
  gives ``["rewards"]``.

Results: ``None`` -> NaN; real numbers (bool, int, float, numpy and torch scalars) -> float, as
TRL's ``torch.tensor(..., float32)`` cast takes them; anything else (a string ``"1.0"``) ->
``TypeError`` naming the function, the value and the completion; ``inf`` or a wrong length ->
:class:`RewardError`.  Bad specs and arguments raise ``ValueError``/``TypeError`` (a missing file
``FileNotFoundError``, an import failure ``ImportError``) naming the parameter, never a CLI flag.
The total is the weighted ``nansum`` over functions, NaN where every function returned ``None``
(an *unscorable* completion, left out of group statistics with advantage 0, as in TRL).
"""
from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import inspect
import math
import os
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from ..core._serialize import jsonable

__all__ = ["RewardFunction", "RewardError", "RewardTable", "load_reward", "reward_style", "is_async",
           "compute_rewards", "BUILTIN_REWARDS"]


class RewardError(RuntimeError):
    """A reward function raised (with ``on_error="raise"``) or returned something unusable."""


# --------------------------------------------------------------------------- built-in rewards

def _text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[0], dict):
        return str(completion[0].get("content", ""))
    raise TypeError(f"completion of type {type(completion).__name__}: expected str or a message list")


def arithmetic_reward(completions, answer, **kwargs):
    """The package's arithmetic verifier (:func:`ustat_grpo.policies.arithmetic.verify`) on column ``answer``."""
    from ..policies.arithmetic import verify

    return [verify(_text(c), int(a)) for c, a in zip(completions, answer)]


def exact_match_reward(column: str = "answer"):
    """1.0 when the stripped completion text equals the stripped value of ``column``, else 0.0."""

    def exact_match(completions, **kwargs):
        if column not in kwargs:
            raise KeyError(f"exact_match needs a dataset column {column!r}")
        return [float(_text(c).strip() == str(v).strip()) for c, v in zip(completions, kwargs[column])]

    exact_match.__name__ = f"exact_match[{column}]"
    return exact_match


def math_verify_reward(column: str = "solution"):
    """TRL's ``accuracy_reward`` recipe on ``math-verify`` (gold unparseable -> ``None``).

    The answer is extracted with ``LatexExtractionConfig(normalization_config=
    NormalizationConfig(units=True), boxed_match_priority=0, try_extract_without_anchor=False)``,
    first match; unlike TRL it also takes plain-string completions.  Timeouts (``signal.alarm``)
    are used on the main thread only, as in TRL.
    """
    try:
        from latex2sympy2_extended import NormalizationConfig
        from math_verify import LatexExtractionConfig, parse, verify
    except ImportError:
        raise ImportError("the math_verify reward needs 'math-verify' (pip install 'ustat_grpo[task]')") from None

    def math_answer(completions, **kwargs):
        if column not in kwargs:
            raise KeyError(f"math_verify needs a dataset column {column!r}")
        main = threading.current_thread() is threading.main_thread()
        timeout = dict(parsing_timeout=10 if main else None)
        cfg = [LatexExtractionConfig(normalization_config=NormalizationConfig(units=True),
                                     boxed_match_priority=0, try_extract_without_anchor=False)]
        out = []
        for c, sol in zip(completions, kwargs[column]):
            gold = parse(str(sol), **timeout)
            if not gold:
                out.append(None)
                continue
            ans = parse(_text(c), extraction_config=cfg, extraction_mode="first_match", **timeout)
            out.append(float(verify(gold, ans, timeout_seconds=5 if main else None)))
        return out

    math_answer.__name__ = f"math_verify[{column}]"
    return math_answer


#: name -> factory(argument or None) of the built-in rewards (``--reward NAME[:COLUMN]``)
BUILTIN_REWARDS = {
    "arithmetic": lambda arg: arithmetic_reward,
    "exact_match": lambda arg: exact_match_reward(arg or "answer"),
    "math_verify": lambda arg: math_verify_reward(arg or "solution"),
}


# ------------------------------------------------------------------------------------ loading

def is_async(func) -> bool:
    """TRL's rule: a coroutine function, a ``partial`` of one, or an ``async __call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(type(func), "__call__", None)
    return not inspect.isfunction(func) and call is not None and inspect.iscoroutinefunction(call)


def reward_style(func) -> str:
    """``"verl"`` (has ``solution_str``), ``"openrlhf"`` (starts ``queries, prompts, labels``) or ``"trl"``."""
    try:
        params = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return "trl"
    if "solution_str" in params:
        return "verl"
    if params[:3] == ["queries", "prompts", "labels"]:
        return "openrlhf"
    return "trl"


def _name(func) -> str:
    base = func.func if isinstance(func, functools.partial) else func
    return getattr(base, "__name__", None) or type(base).__name__


@dataclass(frozen=True, kw_only=True)
class RewardFunction:
    """A reward callable, its display name, calling convention and extra keyword arguments."""

    func: object
    name: str
    style: str = "trl"
    kwargs: dict = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return is_async(self.func)

    @classmethod
    def wrap(cls, func, *, style: str = "auto", kwargs: dict | None = None) -> RewardFunction:
        if isinstance(func, RewardFunction):
            return func
        if isinstance(func, str):
            return load_reward(func, style=style, kwargs=kwargs)
        if not callable(func):
            raise TypeError(f"a reward must be callable or a spec string, got {type(func).__name__}")
        return cls(func=func, name=_name(func), style=reward_style(func) if style == "auto" else style,
                   kwargs=dict(kwargs or {}))


def _import_file(path: str, attr: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such file")
    name = "_ustat_reward_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # the user's file failing to import is bad input
        raise ImportError(f"{path!r}: importing it raised {type(exc).__name__}: {exc}") from None
    if not hasattr(mod, attr):
        raise ValueError(f"{path!r}: no function {attr!r} in the file")
    return getattr(mod, attr)


def load_reward(spec: str, *, style: str = "auto", kwargs: dict | None = None) -> RewardFunction:
    """Resolve a reward spec.

    ``NAME[:ARG]`` for a built-in (:data:`BUILTIN_REWARDS`), ``path/to/file.py[:function]`` (the
    function defaults to ``compute_score`` for verl files, then ``reward_func``, OpenRLHF's name),
    ``module:function`` or TRL's dotted ``pkg.module.function`` (the working directory is put on
    ``sys.path`` first, as ``trl grpo`` does).
    """
    spec = str(spec)
    head, _, arg = spec.partition(":")
    if head in BUILTIN_REWARDS:
        func = BUILTIN_REWARDS[head](arg or None)
        return RewardFunction.wrap(func, style=style, kwargs=kwargs)
    if spec.endswith(".py") or ".py:" in spec:
        path, _, attr = spec.rpartition(".py")
        path, attr = path + ".py", attr.lstrip(":")
        if not attr:
            for candidate in ("compute_score", "reward_func"):
                try:
                    func = _import_file(path, candidate)
                    break
                except ValueError:                  # no such function: try the next name
                    continue
            else:
                raise ValueError(f"{spec!r}: no compute_score or reward_func in the file; "
                                 "name one as FILE.py:function")
        else:
            func = _import_file(path, attr)
        return RewardFunction.wrap(func, style=style, kwargs=kwargs)
    module, attr = (head, arg) if arg else spec.rpartition(".")[::2]
    if not module or not attr:
        raise ValueError(f"{spec!r}: expected a built-in name ({', '.join(BUILTIN_REWARDS)}), "
                         "module:function, pkg.module.function or file.py:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"{spec!r}: cannot import ({type(exc).__name__}: {exc})") from None
    return RewardFunction.wrap(func, style=style, kwargs=kwargs)


# ------------------------------------------------------------------------------------ calling

class _StubState:
    """The parts of ``transformers.TrainerState`` that reward functions read."""

    global_step, max_steps, epoch = 0, 1, 0.0


def _run(func, kwargs):
    if is_async(func):
        return asyncio.run(_await(func, kwargs))
    return func(**kwargs)


async def _await(func, kwargs):
    return await func(**kwargs)


def _to_float(value, name: str, i: int) -> float:
    """One reward as TRL 1.16 reads it: ``None`` -> NaN; a real number -> float; anything else fails.

    TRL casts a function's list with ``torch.tensor([... None -> nan ...], dtype=float32)``, which
    takes ``bool``/``int``/``float`` and objects with ``__float__`` or ``__index__`` (numpy
    scalars, 0-d arrays, ``Fraction``, ``Decimal``) and one-element torch tensors, and fails on a
    string (``"1.0"``), a complex number or a one-element 1-d numpy array.
    """
    if value is None:
        return math.nan
    raw = value
    if type(value).__module__.startswith("torch") and hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    elif isinstance(value, np.ndarray) and value.ndim == 0 or isinstance(value, np.generic):
        value = value.item()
    kind = type(value)
    if isinstance(value, (str, bytes, complex, np.ndarray)) or hasattr(value, "numel") \
            or not (hasattr(kind, "__float__") or hasattr(kind, "__index__")):
        raise TypeError(f"reward function {name!r} returned {raw!r} ({type(raw).__name__}) for completion {i}; "
                        "a reward must be a real number or None (TRL casts rewards with torch.tensor(..., float32))")
    x = float(value)
    if math.isinf(x):
        raise RewardError(f"reward {name}: completion {i}: reward is {x}")
    return x


def _verl_value(value):
    return value["score"] if isinstance(value, dict) else value


def _openrlhf_value(value):
    value = value["rewards"] if isinstance(value, dict) else value
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value[0] if isinstance(value, (list, tuple)) else value


def _call_rows(rf: RewardFunction, batch: dict, rows: range) -> list:
    """One call per completion (verl / OpenRLHF conventions)."""
    out = []
    for i in rows:
        row = batch["columns"][i]
        if rf.style == "verl":
            gt = row.get("reward_model")
            kw = dict(data_source=row.get("data_source"), solution_str=batch["texts"][i],
                      ground_truth=gt.get("ground_truth") if isinstance(gt, dict) else row.get("ground_truth"),
                      extra_info={**(row.get("extra_info") or {}), "num_turns": 2, "rollout_reward_scores": {}},
                      **rf.kwargs)
            out.append(_verl_value(_run(rf.func, kw)))
        else:
            label = row.get(batch.get("label_column") or "label", "")
            q = batch["prompt_texts"][i] + batch["texts_special"][i]
            res = rf.func([q], [batch["prompt_texts"][i]], [label], **rf.kwargs)
            if inspect.isawaitable(res):
                res = asyncio.run(_as_coro(res))
            out.append(_openrlhf_value(res))
    return out


async def _as_coro(aw):
    return await aw


def _call_trl(rf: RewardFunction, batch: dict, rows) -> list:
    rows = list(rows)
    cols = {k: [batch["columns"][i].get(k) for i in rows] for k in batch["column_names"]}
    kw = dict(prompts=[batch["prompts"][i] for i in rows], completions=[batch["completions"][i] for i in rows],
              completion_ids=[batch["completion_ids"][i] for i in rows], trainer_state=_StubState(),
              log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **cols, **rf.kwargs)
    out = _run(rf.func, kw)
    if out is None or not hasattr(out, "__len__") or len(out) != len(rows):
        got = "None" if out is None else (len(out) if hasattr(out, "__len__") else type(out).__name__)
        raise ValueError(f"The number of rewards returned by the reward function {rf.name} ({got}) does not "
                         f"match the number of samples ({len(rows)}).")
    return list(out)


def _call(rf: RewardFunction, batch: dict, rows) -> list:
    return _call_trl(rf, batch, rows) if rf.style == "trl" else _call_rows(rf, batch, rows)


@dataclass(frozen=True, kw_only=True)
class RewardTable:
    """Rewards of ``N`` completions under ``F`` functions.

    Attributes
    ----------
    per_function : ndarray (N, F)
        NaN where a function returned ``None`` (or failed with ``on_error="none"``).
    total : ndarray (N,)
        ``nansum_f w_f r_f``; NaN where every function is NaN (unscorable).
    names, weights, styles : per function.
    errors : ndarray (F,) int   completions on which each function raised.
    on_error : the policy used.
    """

    per_function: np.ndarray
    total: np.ndarray
    names: tuple
    weights: tuple
    styles: tuple
    errors: np.ndarray
    on_error: str = "raise"

    @property
    def none_rate(self) -> np.ndarray:
        """(F,) fraction of completions with no reward (``None`` or an error) per function."""
        return np.isnan(self.per_function).mean(0)

    @property
    def unscorable_rate(self) -> float:
        return float(np.isnan(self.total).mean())

    def summary(self) -> str:
        parts = [f"{n} (w={w:g}, {s}, None {100 * r:.1f}%, errors {int(e)})"
                 for n, w, s, r, e in zip(self.names, self.weights, self.styles, self.none_rate, self.errors)]
        return f"rewards: {'; '.join(parts)}; unscorable {100 * self.unscorable_rate:.1f}%"

    __str__ = summary

    def to_dict(self) -> dict:
        mean = [float(np.nanmean(c)) if np.isfinite(c).any() else None for c in self.per_function.T]
        return jsonable(dict(names=list(self.names), weights=list(self.weights), styles=list(self.styles),
                    none_rate=self.none_rate.tolist(), error_count=[int(e) for e in self.errors],
                    mean=mean, unscorable_rate=self.unscorable_rate, on_error=self.on_error,
                    num_completions=int(len(self.total))))


def compute_rewards(reward_funcs, *, prompts, completions, completion_ids, columns, texts=None,
                    prompt_texts=None, texts_special=None, weights=None, on_error: str = "raise",
                    label_column: str | None = None) -> RewardTable:
    """Call every reward function on ``N`` completions and aggregate as TRL does.

    Parameters
    ----------
    reward_funcs : sequence of RewardFunction, callables or spec strings
    prompts : list (N,)          raw prompt values (str or message lists), one per completion
    completions : list (N,)      TRL-shaped completions (str or ``[{"role": "assistant", ...}]``)
    completion_ids : list (N,)   token ids, EOS included when produced
    columns : list of dict (N,)  the other dataset columns of each completion's row
    texts, prompt_texts, texts_special : list of str (N,), optional
        Completion text, prompt text (template applied) and completion text with special tokens
        (verl / OpenRLHF conventions); default derived from ``completions`` / ``prompts``.
    weights : sequence of float, optional   (default all 1; TRL ``reward_weights``)
    on_error : {"raise", "none", "zero"}
        ``"raise"`` (TRL): a raising function is a :class:`RewardError`; ``"none"``: the failing
        completions get ``None`` and are counted (batch functions are retried one completion at a
        time to find them); ``"zero"``: as ``"none"`` but 0.0.
    """
    funcs = []
    for k, f in enumerate(reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]):
        try:
            funcs.append(RewardFunction.wrap(f))
        except (FileNotFoundError, ImportError, ValueError, TypeError) as exc:
            raise type(exc)(f"reward_funcs[{k}] {exc}") from None
    if not funcs:
        raise ValueError("reward_funcs: at least one reward function is needed")
    w = (1.0,) * len(funcs) if weights is None else tuple(float(x) for x in weights)
    if len(w) != len(funcs):
        raise ValueError(f"weights: {len(w)} reward weights for {len(funcs)} reward functions; "
                         "the numbers must match (TRL reward_weights)")
    if on_error not in ("raise", "none", "zero"):
        raise ValueError(f"on_error must be 'raise', 'none' or 'zero', got {on_error!r}")
    n = len(completions)
    texts = [_text(c) for c in completions] if texts is None else list(texts)
    batch = dict(prompts=list(prompts), completions=list(completions), completion_ids=list(completion_ids),
                 columns=list(columns), column_names=sorted({k for c in columns for k in c}), texts=texts,
                 prompt_texts=list(prompt_texts) if prompt_texts is not None
                 else [p if isinstance(p, str) else "" for p in prompts],
                 texts_special=list(texts_special) if texts_special is not None else texts,
                 label_column=label_column)
    table = np.full((n, len(funcs)), np.nan)
    errors = np.zeros(len(funcs), int)
    fill = math.nan if on_error == "none" else 0.0
    for f, rf in enumerate(funcs):
        try:
            vals = _call(rf, batch, range(n))
        except RewardError:
            raise
        except Exception as exc:
            if on_error == "raise" or isinstance(exc, ValueError) and "number of rewards" in str(exc):
                raise RewardError(f"reward {rf.name} raised {type(exc).__name__}: {exc} "
                                  "(pass on_error='none' / --on-reward-error none to record it as None)") from exc
            vals = []
            for i in range(n):  # find the failing completions
                try:
                    vals.append(_call(rf, batch, [i])[0])
                except Exception:
                    vals.append(fill)
                    errors[f] += 1
        table[:, f] = [_to_float(v, rf.name, i) for i, v in enumerate(vals)]
    total = np.nansum(table * np.asarray(w), axis=1)
    total[np.isnan(table).all(1)] = np.nan
    return RewardTable(per_function=table, total=total, names=tuple(rf.name for rf in funcs), weights=w,
                       styles=tuple(rf.style for rf in funcs), errors=errors, on_error=on_error)
