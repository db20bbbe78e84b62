"""G* measured inside TRL's ``GRPOTrainer``, from the trainer's own rollouts (extra ``[trl]``).

::

    from ustat_grpo.integrations.trl import GroupSizeMonitor
    trainer = GRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...)
    GroupSizeMonitor(every=50, num_prompts=8).attach(trainer)
    trainer.train()        # logs ustat/A1..A3, ustat/g_star[_low|_high], ustat/recommended_G, ...

How it hooks in (TRL 1.16's public API only; no private method is overridden):

* **Reward-function wrapping.**  ``attach`` replaces each entry of ``trainer.reward_funcs`` by a
  wrapper with the same signature.  TRL calls every reward function once per generation batch with
  all prompts, completions, ``completion_ids``, ``trainer_state`` and ``log_metric``, so the wrapper
  sees every rollout of the step at no extra generation cost.  When all functions have returned
  and a window is due (``global_step`` reached a multiple of ``every``), the monitor forms the
  rewards as TRL does (weighted ``nansum``; NaN where every function returned ``None``), gathers
  the batch across processes, cuts it into TRL's groups (consecutive blocks of ``num_generations``
  of the gathered batch, the blocks TRL's advantages use), picks ``num_prompts`` groups at random,
  scores their completions on the current policy (the one that generated them) at the trainer's
  temperature (:func:`ustat_grpo.policies.score.per_sample_scores`, sketched), and forms the pilot's
  mergeable :class:`~ustat_grpo.scaling.constants.PromptStatistics`.  The metrics go out through
  ``log_metric``, so they appear in ``trainer.state.log_history`` at that step.
* **A forward hook** (``torch.nn.Module.register_forward_hook``) on the policy captures, once per
  window, the per-token log-probabilities of the trainer's own loss forward (TRL 1.16 calls
  ``model(input_ids, attention_mask, labels=..., fused_lm_head=True)`` and differentiates
  ``outputs.log_probs``) and compares a few rows with the policy's own (prompt and completion
  without padding, positions 0..T-1: the path the scores use).  A gap beyond float tolerance warns
  (:class:`LogprobMismatchWarning`), naming the likely cause: TRL 1.16 passes no ``position_ids``,
  so a model with learned absolute positions (GPT-2) reads left-padded prompts at shifted
  positions.

Window statistics, an offline pilot's statistics and other windows combine with
:func:`ustat_grpo.scaling.constants.merge_statistics` when they share the sketch (same ``projection_dim``
and ``seed``, the same parameters): prompt ids of the monitor start at ``prompt_id_offset`` so
they never collide with a pilot's ``0..P-1``.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..core._random import default_rng

__all__ = ["GroupSizeMonitor", "MonitorWindow", "LogprobCheck", "GroupSizeWarning", "LogprobMismatchWarning",
           "METRIC_KEYS"]

#: The keys logged every window (``ustat/<key>``).
METRIC_KEYS = ("A1", "A2", "A3", "g_star", "g_star_low", "g_star_high", "recommended_G", "zero_variance_share")
_COMMAND = "ustat_grpo.integrations.trl.GroupSizeMonitor"


class GroupSizeWarning(UserWarning):
    """The trainer's ``num_generations`` lies outside the measured G* interval."""


class LogprobMismatchWarning(UserWarning):
    """The log-probabilities the trainer differentiates differ from the policy's own."""


@dataclass(frozen=True, kw_only=True)
class MonitorWindow:
    """One window: the step, the statistics of its scored groups, and what was logged.

    Attributes
    ----------
    step : ``trainer.state.global_step`` when the rollouts were scored (0: before any update).
    statistics : :class:`~ustat_grpo.scaling.constants.PromptStatistics` of this window's scored groups
        (scores kept; extra ``window_step`` per prompt).
    constants : :class:`~ustat_grpo.scaling.constants.ScalingConstants` of the pooled windows, or ``None``
        when they could not be estimated (fewer than 3 scorable prompts whose rewards vary; then
        only ``ustat/zero_variance_share`` is logged).
    group_size : :class:`~ustat_grpo.scaling.optimum.GroupSizeResult` or ``None``.
    metrics : the logged values, ``{"ustat/A1": ...}``.
    path : the pilot file written for this window, or ``None``.
    seconds : wall time of the window on the main process (choice, scoring, estimate, file).
    """

    step: int
    statistics: object
    constants: object | None
    group_size: object | None
    metrics: dict
    path: str | None = None
    seconds: float = math.nan

    def summary(self) -> str:
        return f"step {self.step}: " + ", ".join(f"{k[6:]}={v:.4g}" for k, v in self.metrics.items())

    __str__ = summary


@dataclass(frozen=True, kw_only=True)
class LogprobCheck:
    """The trainer's differentiated log-probabilities against the policy's own on a few completions.

    ``gap_per_token``: mean |difference| per completion token (nats); ``gap_per_completion``: mean
    over rows of |difference of the summed log-probability|; ``tolerance``: per-token threshold used;
    ``left_padded``: some checked row had left padding; ``position_ids_passed``: the trainer's
    forward received ``position_ids``; ``fired``: the warning was raised for this check.
    """

    step: int
    rows: int
    tokens: int
    gap_per_token: float
    gap_per_completion: float
    max_gap: float
    tolerance: float
    left_padded: bool
    position_ids_passed: bool
    fired: bool
    cause: str = ""


@dataclass
class GroupSizeMonitor:
    """Measure G* from a ``GRPOTrainer``'s own rollouts every ``every`` steps.

    Parameters
    ----------
    every : int
        Steps between windows (a window is taken at the first generation with ``global_step``
        at or past a multiple of ``every``; the first at step 0).
    num_prompts : int
        Groups (prompts, each with all its ``num_generations`` completions) scored per window
        (at most the step's groups).  Scoring costs about ``num_prompts * num_generations``
        per-sample gradients, in ``ceil(num_prompts * num_generations / chunk_size)`` batched
        passes.  With the defaults (50, 8) a window costs about as much as a training step of the
        built-in model (64 completions per step, CPU), a few percent of step time at ``every=50``
        (``python -m simulations.bench_monitor``); on a real model, where generation dominates a
        step, less.  A window of 8 groups gives a noisy G*; ``pool_windows`` or the pilot files
        (``pilot_dir``, merged with :func:`ustat_grpo.measurement.pilot.load_pilot`) pool windows.
    budget : int, optional
        Rollouts per step ``N = B G`` for ``ustat/recommended_G`` (the integer G* among divisors
        of ``N``).  Default: the trainer's ``generation_batch_size``.
    projection_dim : int or None
        Sketch dimension of the scores (:class:`~ustat_grpo.policies.score.Sketch`, seeded by ``seed``);
        ``None`` keeps every parameter.  Use an offline pilot's ``projection_dim`` and ``seed`` to
        merge with it.
    pilot_dir : path, optional
        Write one pilot file per window, ``window-step{step:07d}.nc``
        (:func:`ustat_grpo.measurement.pilot.load_pilot` reads and merges them).
    seed : int
        Seeds the sketch and the choice of groups (``default_rng([seed, step])``).
    params : parameters whose scores are taken (:func:`ustat_grpo.measurement.sampler.resolve_params`).
    pool_windows : int
        The logged constants pool the statistics of this many most recent windows (1: this
        window alone; more: narrower intervals, slower to follow drift).
    level : confidence level of the G* interval.
    logprob_check : int
        Rows of the trainer's loss forward compared with the policy's own log-probabilities once
        per window (0 disables the check).
    logprob_tol : float, optional
        Per-token tolerance (nats, mean absolute gap) of that check.  Default ``1e-3`` in float32,
        ``5e-2`` when the trainer's forward ran under reduced-precision autocast.
    prompt_id_offset : int
        First prompt id of the monitor's statistics (offline pilots use ``0..P-1``).
    chunk_size : sequences per per-sample-gradient pass (bounds memory at ``chunk_size`` gradients).
    """

    every: int = 50
    num_prompts: int = 8
    budget: int | None = None
    projection_dim: int | None = 256
    pilot_dir: str | os.PathLike | None = None
    seed: int = 0
    params: str | list | None = "trainable"
    pool_windows: int = 1
    level: float = 0.95
    logprob_check: int = 4
    logprob_tol: float | None = None
    prompt_id_offset: int = 10 ** 9
    chunk_size: int = 32
    windows: list = field(default_factory=list, init=False, repr=False)
    logprob_checks: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if int(self.every) < 1 or int(self.num_prompts) < 1 or int(self.pool_windows) < 1:
            raise ValueError(f"every, num_prompts and pool_windows must be >= 1, got {self.every}, "
                             f"{self.num_prompts}, {self.pool_windows}")
        if self.projection_dim is not None and int(self.projection_dim) < 1:
            raise ValueError(f"projection_dim must be >= 1 or None, got {self.projection_dim}")
        self._trainer = None

    # ------------------------------------------------------------------ attaching
    def attach(self, trainer) -> "GroupSizeMonitor":
        """Hook into ``trainer`` (a TRL ``GRPOTrainer``): wrap its reward functions and add a
        forward hook on its policy.  Returns ``self``."""
        import torch

        from ..measurement.sampler import resolve_params
        from ..policies.score import Sketch

        if self._trainer is not None:
            raise ValueError("this monitor is already attached to a trainer")
        for name in ("reward_funcs", "reward_weights", "num_generations", "accelerator", "state"):
            if not hasattr(trainer, name):
                raise TypeError(f"trainer: expected a TRL GRPOTrainer (no attribute {name!r})")
        funcs = list(trainer.reward_funcs)
        if any(isinstance(f, torch.nn.Module) for f in funcs):
            raise ValueError("trainer.reward_funcs: reward models (torch.nn.Module) are called by TRL directly "
                             "and cannot be observed; the monitor needs callable reward functions")
        self._trainer = trainer
        self._model = trainer.accelerator.unwrap_model(trainer.model)
        self._names = resolve_params(self._model, self.params)
        d = sum(self._model.get_parameter(n).numel() for n in self._names)
        k = self.projection_dim
        self._sketch = None if k is None or d <= int(k) else Sketch(d, int(k), seed=int(self.seed))
        self._num_parameters = int(d)
        self._G = int(trainer.num_generations)
        self._budget = int(self.budget if self.budget is not None else trainer.args.generation_batch_size)
        self._next_due, self._pending, self._arm_check = 0, {}, False
        self._warned = self._warned_logprob = False                               # each warning once per run
        self._next_prompt_id = int(self.prompt_id_offset)
        if self._G < 4:
            warnings.warn(f"num_generations={self._G}: the per-prompt statistics need >= 4 completions per "
                          f"prompt; the monitor stays idle", GroupSizeWarning, stacklevel=2)
        trainer.reward_funcs = [self._wrap(f, i, len(funcs)) for i, f in enumerate(funcs)]
        self._hook = self._model.register_forward_hook(self._forward_hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        """Restore the trainer's reward functions and remove the forward hook."""
        if self._trainer is None:
            return
        self._trainer.reward_funcs = [getattr(f, "__wrapped__", f) for f in self._trainer.reward_funcs]
        self._hook.remove()
        self._trainer = None

    def _wrap(self, func, index: int, count: int):
        monitor = self

        if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None)):
            async def wrapper(*args, **kwargs):
                out = await func(*args, **kwargs)
                monitor._collect(index, count, out, kwargs)
                return out
        else:
            def wrapper(*args, **kwargs):
                out = func(*args, **kwargs)
                monitor._collect(index, count, out, kwargs)
                return out
        wrapper.__wrapped__ = func
        wrapper.__name__ = getattr(func, "__name__", type(func).__name__)
        return wrapper

    # ------------------------------------------------------------------ one generation batch
    def _collect(self, index: int, count: int, out, kwargs) -> None:
        key = id(kwargs.get("completion_ids"))
        got = self._pending.setdefault(key, {})
        got[index] = [math.nan if r is None else float(r) for r in out]
        if len(got) < count:
            return
        del self._pending[key]
        state = kwargs.get("trainer_state")
        step = int(state.global_step) if state is not None else 0
        if step < self._next_due or self._G < 4:
            return
        self._next_due = (step // int(self.every) + 1) * int(self.every)
        per_func = np.array([got[i] for i in range(count)], float).T              # (n, F)
        w = self._trainer.reward_weights.detach().cpu().numpy().astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)                       # all-NaN rows
            rewards = np.where(np.isnan(per_func).all(1), np.nan, np.nansum(per_func * w, 1))
        batch = list(zip(kwargs["prompts"], [list(c) for c in kwargs["completion_ids"]], rewards.tolist()))
        acc = self._trainer.accelerator
        if acc.num_processes > 1:
            from accelerate.utils import gather_object

            batch = gather_object(batch)
        if acc.is_main_process:
            self._window(step, batch, kwargs.get("log_metric"))
        self._arm_check = self.logprob_check > 0

    def _window(self, step: int, batch: list, log_metric) -> None:
        from ..measurement.card import zero_variance_share

        t0 = time.perf_counter()
        G = self._G
        if len(batch) % G:
            raise ValueError(f"generation batch of {len(batch)} completions is not a multiple of "
                             f"num_generations={G}")
        z_all = np.array([r for _, _, r in batch], float).reshape(-1, G)           # (groups, G)
        finite = np.isfinite(z_all).all(1)
        zero_share = zero_variance_share(z_all[finite], G) if finite.any() else math.nan
        rng = default_rng([int(self.seed), int(step)])
        n = z_all.shape[0]
        chosen = np.sort(rng.choice(n, size=min(int(self.num_prompts), n), replace=False))
        stats = self._statistics(step, [batch[g * G:(g + 1) * G] for g in chosen], chosen)
        pooled, consts, gs = self._estimate(stats)
        metrics = {"ustat/zero_variance_share": zero_share}
        if gs is not None:
            ci = gs.g_star_exact_interval
            metrics = {"ustat/A1": float(consts.params[0]), "ustat/A2": float(consts.params[1]),
                       "ustat/A3": float(consts.params[2]), "ustat/g_star": float(gs.g_star_exact),
                       "ustat/g_star_low": float(ci.low), "ustat/g_star_high": float(ci.high),
                       "ustat/recommended_G": float(gs.g_star_integer), **metrics}
            if not self._warned and not ci.low <= G <= ci.high:
                self._warned = True
                warnings.warn(f"step {step}: num_generations={G} lies outside the measured G* interval "
                              f"[{ci.low:.3g}, {ci.high:.3g}] (G* = {gs.g_star_exact:.3g}, from {len(pooled)} "
                              f"prompts; recommended G = {gs.g_star_integer} at {self._budget} rollouts per step)",
                              GroupSizeWarning, stacklevel=2)
        if log_metric is not None:
            for key, value in metrics.items():
                log_metric(key, value)
        path = self._write(step, stats) if self.pilot_dir is not None else None
        self.windows.append(MonitorWindow(step=step, statistics=stats, constants=consts, group_size=gs,
                                          metrics=metrics, path=path, seconds=time.perf_counter() - t0))

    def _statistics(self, step: int, groups: list, chosen):
        """Rewards (P, G) and sketched scores (P, G, k) of the chosen groups -> PromptStatistics."""
        from ..scaling.constants import prompt_statistics

        rewards = np.array([[r for _, _, r in grp] for grp in groups], float)          # (P, G)
        scores = self.score_groups([(grp[0][0], [c for _, c, _ in grp]) for grp in groups])        # (P, G, k)
        P = len(groups)
        ids = np.arange(self._next_prompt_id, self._next_prompt_id + P, dtype=np.int64)
        self._next_prompt_id += P
        extras = {"window_step": (("prompt",), np.full(P, int(step), np.int64)),
                  "group_index": (("prompt",), np.asarray(chosen, np.int64))}     # block of the gathered batch
        return prompt_statistics(rewards, scores, prompt_ids=ids, keep_scores=True, extras=extras)

    def score_group(self, prompt, completion_ids: list) -> np.ndarray:
        """Sketched scores ``(G, k)`` of one prompt's completions (:meth:`score_groups` of one group)."""
        return self.score_groups([(prompt, completion_ids)])[0]

    def window_batch(self, groups: list):
        """The scoring batch of a window: ``(sequences, completion_mask)``, both ``(P * G, T)``.

        ``groups``: ``[(prompt, [completion ids] * G)]``.  Row ``p * G + i`` is completion ``i`` of
        group ``p``: the prompt's tokens as TRL 1.16 encodes them
        (:func:`ustat_grpo.measurement.task.encode_prompt`), the completion, right padding with the pad token
        to the window's longest sequence (positions from 0, as the policy reads an unpadded
        sequence).  One tensor for the whole window, so :func:`~ustat_grpo.policies.score.per_sample_scores`
        runs ``ceil(P G / chunk_size)`` batched passes instead of one per group.
        """
        import torch

        from ..measurement.task import encode_prompt

        tr = self._trainer
        tok = tr.processing_class
        tok = getattr(tok, "tokenizer", tok)
        kw = getattr(tr, "chat_template_kwargs", None) or None
        prompts = [encode_prompt(tok, prompt, chat_template_kwargs=kw) for prompt, _ in groups]
        rows = [(ids, list(c)) for ids, (_, comps) in zip(prompts, groups) for c in comps]
        T = max(len(ids) + len(c) for ids, c in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        seq = torch.full((len(rows), T), pad, dtype=torch.long)                  # (P G, T)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, (ids, c) in enumerate(rows):
            seq[i, :len(ids) + len(c)] = torch.tensor(ids + c, dtype=torch.long)
            mask[i, len(ids):len(ids) + len(c)] = 1
        return seq, mask

    def score_groups(self, groups: list) -> np.ndarray:
        """Sketched scores ``(P, G, k)`` of the groups' completions on the current policy, at the
        trainer's temperature, from one :meth:`window_batch` (``chunk_size`` sequences per pass)."""
        import torch

        from ..policies.score import per_sample_scores

        seq, mask = self.window_batch(groups)
        model = self._model
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                s = per_sample_scores(model, seq, mask, params=self._names, chunk_size=self.chunk_size,
                                      projection=self._sketch, temperature=float(self._trainer.temperature))
        finally:
            model.train(was_training)
        s = s.detach().cpu()
        s = (s.float() if s.dtype.itemsize < 4 else s).numpy()
        return s.reshape(len(groups), -1, s.shape[-1])

    def _estimate(self, stats):
        from ..scaling.constants import constants_from_statistics, merge_statistics
        from ..measurement.pilot import scorable

        recent = [w.statistics for w in self.windows[-(int(self.pool_windows) - 1):]] if self.pool_windows > 1 else []
        pooled = merge_statistics(*recent, stats)
        pooled = pooled.select(scorable(pooled))
        if int((np.asarray(pooled.reward_var) > 0).sum()) < 3:   # all-equal groups carry no gradient: A1..A3
            return pooled, None, None                               # would all be 0 and G* meaningless
        consts = constants_from_statistics(pooled, level=self.level)
        gs = consts.optimal_group_size(budget=self._budget, divisors_only=True)
        return pooled, consts, gs

    def config(self) -> dict:
        """What the window statistics measure (the pilot files' ``config``; equal across windows)."""
        tr = self._trainer
        return {"source": _COMMAND, "model": getattr(self._model.config, "_name_or_path", ""),
                "model_type": getattr(self._model.config, "model_type", ""),
                "num_generations": self._G, "temperature": float(tr.temperature), "budget": self._budget,
                "projection_dim": None if self._sketch is None else self._sketch.k, "seed": int(self.seed),
                "num_parameters": self._num_parameters, "params": self.params if isinstance(self.params, str) else
                "list", "num_prompts_per_window": int(self.num_prompts)}

    def _write(self, step: int, stats) -> str:
        from ..measurement.pilot import _attrs, _write

        os.makedirs(self.pilot_dir, exist_ok=True)
        path = os.path.join(os.fspath(self.pilot_dir), f"window-step{step:07d}.nc")
        cfg = json.loads(json.dumps(dict(self.config(), num_prompts=len(stats), seed=str(self.seed)),
                                    default=str))
        _write(stats, path, _attrs(self.seed, cfg, len(stats), None, command=_COMMAND))
        return path

    # ------------------------------------------------------------------ log-probability check
    def _forward_hook(self, module, args, kwargs, output):
        if not self._arm_check or not kwargs.get("fused_lm_head") or getattr(output, "log_probs", None) is None:
            return None
        self._arm_check = False
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or kwargs.get("attention_mask") is None:
            return None
        self.logprob_checks.append(self._check(ids, kwargs["attention_mask"], output.log_probs,
                                               output.label_mask, "position_ids" in kwargs
                                               and kwargs["position_ids"] is not None))
        return None

    def _check(self, ids, attention_mask, log_probs, label_mask, position_ids_passed: bool) -> LogprobCheck:
        import torch

        from ..policies.score import token_logprobs

        dev_type = ids.device.type
        reduced = torch.is_autocast_enabled(dev_type) and torch.get_autocast_dtype(dev_type) != torch.float32
        tol = self.logprob_tol if self.logprob_tol is not None else (5e-2 if reduced else 1e-3)
        rows = min(int(self.logprob_check), ids.shape[0])
        step = int(self._trainer.state.global_step)
        gaps, sums, left = [], [], False
        was_training = self._model.training
        self._model.eval()
        try:
            with torch.no_grad(), torch.autocast(dev_type, enabled=False):
                for b in range(rows):
                    real = attention_mask[b].bool()                                   # (T,)
                    left |= bool(real.any() and not real[0])
                    cm = torch.zeros_like(real)
                    cm[1:] = label_mask[b].bool()                                     # completion tokens
                    seq, cmask = ids[b][real][None], cm[real][None].long()            # (1, T')
                    own = token_logprobs(self._model, seq, cmask, temperature=float(self._trainer.temperature))
                    own = own[0][cmask[0, 1:].bool()].double()
                    theirs = log_probs[b].detach()[label_mask[b].bool()].double().to(own.device)
                    gaps.append((theirs - own).abs())
                    sums.append(float((theirs.sum() - own.sum()).abs()))
        finally:
            self._model.train(was_training)
        allg = torch.cat(gaps) if gaps else torch.zeros(0, dtype=torch.float64)
        per_tok = float(allg.mean()) if allg.numel() else 0.0
        fired = per_tok > tol
        cause = ""
        if fired:
            first, self._warned_logprob = not self._warned_logprob, True
            if left and not position_ids_passed:
                cause = ("position ids under left padding: the trainer's forward passes no position_ids, so a model "
                         f"with learned absolute positions (model_type {self._model.config.model_type!r}) reads "
                         "left-padded prompts at shifted positions")
            else:
                cause = ("unknown: check dropout in train mode (GRPOConfig.disable_dropout), the attention "
                         "implementation, and reduced precision")
            if first:
                warnings.warn(f"step {step}: the log-probabilities the trainer differentiates differ from the policy's "
                              f"own by {per_tok:.3g} nats per token ({float(np.mean(sums)):.3g} per completion, "
                              f"tolerance {tol:g}) on {rows} completions. Likely cause: {cause}. The gradient "
                              f"the trainer follows is not the policy's (the measured G* describes the policy).",
                              LogprobMismatchWarning, stacklevel=2)
        return LogprobCheck(step=step, rows=rows, tokens=int(allg.numel()), gap_per_token=per_tok,
                            gap_per_completion=float(np.mean(sums)) if sums else 0.0,
                            max_gap=float(allg.max()) if allg.numel() else 0.0, tolerance=float(tol),
                            left_padded=left, position_ids_passed=position_ids_passed, fired=fired, cause=cause)

    # ------------------------------------------------------------------ drift
    def plot(self, path=None, *, title: str | None = None):
        """Drift across windows; returns the figure (saved to ``path`` when given).

        Top: G* (exact form) at each window's step with its interval (an interval unbounded above is
        drawn to the top of the axis), the integer recommended G, and the trainer's
        ``num_generations`` as a dashed line.  Bottom: the share of zero-variance groups.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [w for w in self.windows if w.group_size is not None]
        fig, (ax, az) = plt.subplots(2, 1, figsize=(6.4, 4.8), sharex=True, height_ratios=(3, 1))
        steps = [w.step for w in rows]
        g = [w.metrics["ustat/g_star"] for w in rows]
        lo = [w.metrics["ustat/g_star_low"] for w in rows]
        finite = [v for v in g + lo + [w.metrics["ustat/g_star_high"] for w in rows] if np.isfinite(v)]
        top = max([2.0 * max(finite, default=1.0), 2.0 * getattr(self, "_G", 1), 64.0])
        hi = [min(w.metrics["ustat/g_star_high"], top) for w in rows]
        ax.fill_between(steps, lo, hi, alpha=0.25, step=None, label=f"{self.level:.0%} interval")
        ax.plot(steps, g, "o-", ms=4, label="G* (exact form)")
        ax.plot(steps, [w.metrics["ustat/recommended_G"] for w in rows], "s", ms=3, mfc="none",
                label="recommended G (divisor of budget)")
        if self._trainer is not None or self.windows:
            ax.axhline(getattr(self, "_G", np.nan), color="k", ls="--", lw=1, label="num_generations")
        ax.set_yscale("log", base=2)
        ax.set_ylim(1, top)
        ax.set_ylabel("G*")
        ax.legend(fontsize=7, loc="lower left", ncol=2, framealpha=0.9)
        if title:
            ax.set_title(title, fontsize=9)
        az.plot([w.step for w in self.windows], [w.metrics["ustat/zero_variance_share"] for w in self.windows],
                ".-", color="C2", ms=4)
        az.set_ylim(0, 1)
        az.set_ylabel("zero-var.\nshare", fontsize=8)
        az.set_xlabel("training step")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig
