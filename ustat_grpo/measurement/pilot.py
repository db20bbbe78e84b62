"""Pilot measurements at scale: sharded over processes and GPUs, resumable, merged exactly.

A pilot samples ``M`` completions for each of ``P`` prompts and keeps, per prompt, the sufficient
statistics of the scaling-law constants (:class:`~ustat_grpo.scaling.constants.PromptStatistics`).  It is
embarrassingly parallel over prompts:

* prompt ``p`` draws from its own stream ``SeedSequence(seed).spawn(P)[p]``, so its statistics do
  not depend on which process computes it nor on how many there are (1 rank = K ranks, bit for bit);
* under ``torchrun`` / ``accelerate launch`` (``torch.distributed`` initialised, or ``RANK`` and
  ``WORLD_SIZE`` set) rank ``r`` of ``K`` takes the prompts ``p = r, r + K, ...`` and writes its own
  shard file; after a barrier rank 0 merges the shards into the pilot file;
* every ``batch_size`` prompts the shard is rewritten atomically (:func:`ustat_grpo.core.provenance.write_netcdf`),
  so an interrupted pilot resumes where it stopped, and its final file is byte-identical to that of
  an uninterrupted run.

``python -m ustat_grpo.fit_scaling pilot.nc`` reports from a pilot file (or several shard files)
without touching a model.

How many samples per prompt a pilot should draw is measured from a pilot's own samples by
:func:`ustat_grpo.measurement.samples_per_prompt.choose_samples_per_prompt`; adaptive pilots of a language model
default to :data:`ADAPTIVE_SAMPLES_PER_PROMPT` (:func:`width_rule` says why).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core._random import default_rng, seed_sequence
from ..scaling.constants import PromptStatistics, merge_statistics, prompt_statistics
from ..core.provenance import provenance_attrs, write_netcdf

__all__ = ["run_pilot", "load_pilot", "check_pilot_file", "shard_path", "distributed_rank", "BanditSampler",
           "PromptDraw", "width_rule", "scorable",
           "ADAPTIVE_SAMPLES_PER_PROMPT", "ADAPTIVE_MAX_PROMPTS", "ADAPTIVE_MIN_PROMPTS", "FIXED_LM_PILOT",
           "lm_pilot_size"]

#: Samples per prompt of an adaptive language-model pilot (``fit_scaling --target-width`` without
#: ``--samples-per-prompt``): near the built-in model's measured ``M*`` and, unlike 16, with
#: intervals that cover at their nominal level there (:func:`width_rule`).
ADAPTIVE_SAMPLES_PER_PROMPT = 8
#: Default cap on the prompts of an adaptive language-model pilot: 1024 x 8 = 8,192 rollouts, 1% of
#: one training run of the paper's Table 2 (800 steps x 1,024 rollouts).
ADAPTIVE_MAX_PROMPTS = 1024
#: Prompts an adaptive language-model pilot draws before its stop rule is first asked (4,096 rollouts
#: at M = 8, 0.5% of a Table-2 run): with 128, pilots of the built-in weak model stopped after too few
#: prompts and undercovered; with 512 they cover (:func:`width_rule`).
ADAPTIVE_MIN_PROMPTS = 512
#: ``(prompts, samples per prompt)`` of a fixed language-model pilot: the paper's 500 x 64.
FIXED_LM_PILOT = (500, 64)


def lm_pilot_size(num_prompts: int | None = None, samples_per_prompt: int | None = None, *,
                  adaptive: bool) -> tuple[int, int]:
    """``(P, M)`` of a language-model pilot: the given values, else :data:`FIXED_LM_PILOT` or, for
    an adaptive pilot, ``(ADAPTIVE_MAX_PROMPTS, ADAPTIVE_SAMPLES_PER_PROMPT)`` (``P`` is then its cap).

    >>> lm_pilot_size(adaptive=False), lm_pilot_size(adaptive=True), lm_pilot_size(64, adaptive=True)
    ((500, 64), (1024, 8), (64, 8))
    """
    P, M = (ADAPTIVE_MAX_PROMPTS, ADAPTIVE_SAMPLES_PER_PROMPT) if adaptive else FIXED_LM_PILOT
    return (P if num_prompts is None else num_prompts), (M if samples_per_prompt is None else samples_per_prompt)

#: NetCDF attribute that marks a pilot file (and holds its total number of prompts)
PILOT_ATTR = "ustat_grpo_pilot_num_prompts"


@dataclass(frozen=True, kw_only=True)
class PromptDraw:
    """What a sampler returns for one prompt: ``M`` rewards, their scores, and diagnostics.

    Attributes
    ----------
    rewards : ndarray (M,)
        Total reward per completion (NaN where it could not be scored).
    scores : ndarray (M, k)
        Score vectors (sketched), in the dtype they were computed in.
    extras : dict
        ``name -> (dims, array)`` per-prompt diagnostics without the prompt axis (e.g.
        ``("sample",)`` arrays of completion lengths); stored in the pilot file.
    """

    rewards: np.ndarray
    scores: np.ndarray
    extras: dict = field(default_factory=dict)


def scorable(stats: PromptStatistics) -> np.ndarray:
    """Mask ``(P,)`` of the prompts whose every completion has a finite reward (the ones the
    constants use; a prompt with an unscorable completion is left out)."""
    if stats.rewards is None:
        return np.isfinite(stats.g_norm2)
    return np.isfinite(stats.rewards).all(1)


@dataclass(frozen=True)
class BanditSampler:
    """``sample_prompt`` of a toy policy: prompt ``p`` is a context drawn from ``f`` with its ``M`` rollouts.

    Examples
    --------
    >>> from ustat_grpo.policies.bandits import default_bandit
    >>> stats = run_pilot(BanditSampler(default_bandit(), 32), num_prompts=8, seed=1)
    >>> len(stats), stats.g.shape
    (8, (8, 4))
    """

    policy: object
    samples_per_prompt: int

    def __call__(self, p: int, seq) -> PromptDraw:
        s = self.policy.sample(1, self.samples_per_prompt, rng=default_rng(seq))
        return PromptDraw(rewards=s.rewards[0], scores=s.scores[0])

    def describe(self) -> dict:
        """What the samples measure (stored with a pilot; a resumed pilot must match it)."""
        return {"task": "bandit", "policy": type(self.policy).__name__,
                "samples_per_prompt": int(self.samples_per_prompt)}


def width_rule(target: float, *, budget: int = 256, min_prompts: int = 128, level: float = 0.95,
               interval: str = "fieller") -> Callable:
    """Stop rule of an adaptive pilot: the ``level`` interval of ``G*_exact = 1 + sqrt(A3/A1)`` at
    ``budget`` is bounded and its relative width ``(high - low) / G*`` is at most ``target``
    (after at least ``min_prompts`` prompts).

    Stopping on the data can make the final interval cover less than ``level``: a pilot that stops
    as soon as its jackknife interval happens to be narrow keeps the unlucky ones.  The coverage of
    the true ``G*`` by the final 95% interval is measured by ``python -m simulations.adaptive_pilot``
    (results: the documentation's evidence page, "Adaptive pilots: do the intervals cover?").  On
    the toy bandit and on the built-in models, coverage is decided by how many prompts a pilot
    draws, not by how well it measures each: the built-in models' pools are heavy-tailed (a few
    prompts carry most of ``A1``), and a pilot with many samples per prompt and few prompts often
    draws too few of them, underestimating ``A1`` and its jackknife spread together (the
    skewness-corrected ``interval="fieller_skew"`` does not fix this).  The same rollouts spread
    over more prompts do; so do the defaults of ``fit_scaling --target-width`` (``M = 8``, at least
    :data:`ADAPTIVE_MIN_PROMPTS` and at most :data:`ADAPTIVE_MAX_PROMPTS` prompts), at a cost of
    about 0.5-1% of one training run of the paper's Table 2.  On the bandit, whose measured ``M*``
    is large, ``M = 8`` undercovers, and stopping after 24 prompts instead of 128 does too.

    So: draw enough prompts before the rule is asked (128 on the bandit, 512 on the language
    models), and choose ``M`` by measurement (:func:`ustat_grpo.measurement.samples_per_prompt.choose_samples_per_prompt`),
    erring towards more prompts.
    ``interval`` is passed to :meth:`~ustat_grpo.scaling.optimum.ConstantsEstimate.optimal_group_size`
    (``"fieller_skew"``: the skewness-corrected interval judges the width).

    Examples
    --------
    >>> from ustat_grpo.policies.bandits import default_bandit
    >>> st = run_pilot(BanditSampler(default_bandit(), 16), num_prompts=400, seed=2, batch_size=8,
    ...                stop=width_rule(1.0))
    >>> 128 <= len(st) < 400
    True
    """
    from ..scaling.constants import constants_from_statistics

    def stop(stats) -> bool:
        stats = stats.select(scorable(stats))
        if len(stats) < max(min_prompts, 3):
            return False
        res = constants_from_statistics(stats, level=level).optimal_group_size(budget=budget, interval=interval)
        lo, hi = res.g_star_exact_interval
        return bool(res.bounded and np.isfinite(hi) and (hi - lo) / res.g_star_exact <= target)

    return stop


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``torch.distributed`` if initialised, else the
    ``RANK`` / ``WORLD_SIZE`` variables that ``torchrun`` and ``accelerate launch`` set, else ``(0, 1)``."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # torch is a dependency; a build without distributed support is single-process
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_path(path, rank: int, world_size: int) -> str:
    """The shard file of ``rank`` next to ``path`` (``path`` itself for a single process)."""
    path = os.fspath(path)
    if world_size == 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.rank{rank}-of-{world_size}{ext or '.nc'}"


def _read(path) -> tuple[PromptStatistics | None, dict]:
    import xarray as xr

    if not os.path.exists(path):
        return None, {}
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except Exception as exc:  # h5py/h5netcdf raise OSError, ValueError or their own types on a bad file
        raise ValueError(f"{path}: not a readable pilot file (truncated or not NetCDF: "
                         f"{type(exc).__name__}: {exc})") from None
    if PILOT_ATTR not in ds.attrs:
        raise ValueError(f"{path}: not a pilot file (no {PILOT_ATTR!r} attribute)")
    stats = PromptStatistics.from_dataset(ds) if ds.sizes.get("prompt", 0) else None
    return stats, dict(ds.attrs)


def _write(stats: PromptStatistics, path, attrs: dict) -> None:
    ds = stats.to_dataset()
    ds.attrs.update(attrs)
    write_netcdf(ds, path)


def load_pilot(paths: str | Sequence[str]) -> tuple[PromptStatistics, dict]:
    """Merge one pilot file or several shard files -> ``(statistics, attributes of the first)``.

    Raises ``ValueError`` when the files come from different pilots (their configurations differ).
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    parts, attrs = [], None
    for p in paths:
        stats, a = _read(p)
        if not a:
            raise ValueError(f"{p}: no such file")
        if attrs is not None and a.get("config") != attrs.get("config"):
            raise ValueError(f"{p}: a shard of a different pilot ({config_difference(a.get('config'), attrs.get('config'))}"
                             f" than {paths[0]})")
        attrs = attrs or a
        parts.append(stats)
    return merge_statistics(*parts), attrs


def config_difference(found, wanted) -> str:
    """Which settings differ between two pilot configurations (JSON strings or dicts), in words,
    nested settings by their dotted path.

    >>> config_difference({"sampling": {"temperature": 0.7, "top_p": 1.0}, "seed": "0"},
    ...                   {"sampling": {"temperature": 0.9, "top_p": 1.0}, "seed": "0"})
    'sampling.temperature 0.7 (file) vs 0.9 (now)'
    """
    load = lambda c: json.loads(c) if isinstance(c, str) else dict(c or {})

    def flat(d, head=""):
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{head}{k}.") if isinstance(v, dict) and v else {f"{head}{k}": v}
        return out

    a, b = flat(load(found)), flat(load(wanted))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k} {a.get(k, '(unset)')!r} (file) vs {b.get(k, '(unset)')!r} (now)" for k in keys) or "none"


def _pilot_config(config, num_prompts, seed) -> dict:
    return dict(config or {}, num_prompts=int(num_prompts), seed=str(seed))


def check_pilot_file(path, *, config: dict | None, num_prompts: int, seed: int = 0,
                     world_size: int = 1) -> int:
    """Check that the pilot file (or this process's shards) at ``path`` can be resumed by a pilot
    of ``config``; return the prompts already done (0 when there is no file yet).

    Raises ``ValueError`` naming the file and every setting that differs, or a file that cannot be
    read (truncated, not NetCDF, not a pilot).
    """
    wanted = json.dumps(_pilot_config(config, num_prompts, seed), sort_keys=True, default=str)
    done = 0
    for rank in range(world_size):
        target = shard_path(path, rank, world_size)
        stats, old = _read(target)
        if old and old.get("config") != wanted:
            raise ValueError(f"{target}: a pilot with another configuration "
                             f"({config_difference(old.get('config'), wanted)}); remove it or use another path")
        done += 0 if stats is None else len(stats)
    return done


def _attrs(seed, config, num_prompts, created, command=None, cli=None):
    attrs = provenance_attrs(seed=seed, config=config, command=command or "ustat_grpo.measurement.pilot.run_pilot")
    if cli is not None:                                  # the resolved options of the command that ran it
        attrs["cli"] = json.dumps(cli, sort_keys=True, default=str)
    if created is not None:
        attrs["created"] = created
    attrs[PILOT_ATTR] = int(num_prompts)
    return attrs


def run_pilot(sample_prompt: Callable, *, num_prompts: int, path=None, seed: int = 0, batch_size: int = 16,
              config: dict | None = None, created: str | None = None, rank: int | None = None,
              world_size: int | None = None, progress: bool = False,
              stop: Callable | None = None, command: str | None = None,
              cli: dict | None = None) -> PromptStatistics | None:
    """Run (or resume) a pilot and return the statistics of all prompts (``None`` on ranks > 0).

    Parameters
    ----------
    sample_prompt : callable
        ``sample_prompt(p, rng) -> PromptDraw`` (or a ``(rewards (M,), scores (M, k))`` pair) for
        prompt ``p``, drawing all of its randomness from ``rng`` (a ``numpy.random.SeedSequence``).
        The statistics keep the scores and the draw's extras, so that every analysis runs from the
        pilot file alone.
    num_prompts : int
        ``P``: prompts ``0..P-1``.
    path : path-like, optional
        The pilot file; with ``world_size > 1`` each rank writes :func:`shard_path` and rank 0 merges
        them into ``path``.  An existing file (or shard) is resumed: its prompts are not redone.
        ``None``: keep everything in memory (single process only).
    seed : int
        Root of the per-prompt streams.
    batch_size : int
        Prompts between two atomic rewrites of the shard (the work lost to an interruption).
    config : dict, optional
        What the pilot measured (model, dataset, sampler settings, sketch, parameters); stored in the
        file, and a resumed file must carry the same.
    created : str, optional
        Creation time to record (default: now, or the resumed file's).  Fix it to make two runs'
        files byte-identical.
    rank, world_size : int, optional
        Default: :func:`distributed_rank`.
    stop : callable, optional
        ``stop(statistics) -> bool``, asked after every batch (single process only): an adaptive
        pilot ends as soon as it says the constants are known well enough (:func:`width_rule`).
    command, cli : optional
        The command line and the resolved options of the tool that runs the pilot, recorded in the
        file's attributes ``command`` and ``cli`` (not part of the configuration a resume checks).
    """
    rank, world_size = distributed_rank() if rank is None else (int(rank), int(world_size))
    if stop is not None and world_size > 1:
        raise ValueError("an adaptive pilot (stop=) runs in one process")
    if path is None and world_size > 1:
        raise ValueError("a distributed pilot needs a path for its shard files")
    config = _pilot_config(config, num_prompts, seed)
    target = None if path is None else shard_path(path, rank, world_size)
    done, old = _read(target) if target is not None else (None, {})
    attrs = _attrs(seed, config, num_prompts, old.get("created", created), command, cli)
    if old and old.get("config") != attrs["config"]:
        raise ValueError(f"{target}: a pilot with another configuration "
                         f"({config_difference(old.get('config'), attrs['config'])}); remove it or use another path")
    finished = set() if done is None else set(done.prompt.tolist())
    todo = [p for p in range(rank, num_prompts, world_size) if p not in finished]
    streams = seed_sequence(seed).spawn(num_prompts)
    bar = _progress(len(todo), progress, rank)
    for start in range(0, len(todo), batch_size):
        if stop is not None and done is not None and stop(done):
            break
        parts = []
        for p in todo[start:start + batch_size]:
            parts.append(_statistics(sample_prompt(p, streams[p]), p))
            bar.update(1)
        done = merge_statistics(done, *parts)
        if target is not None:
            _write(done, target, attrs)
    bar.close()
    if world_size == 1:
        return done
    return _gather(path, world_size, rank, attrs)


def _statistics(draw, p: int) -> PromptStatistics:
    """One prompt's :class:`PromptStatistics` (scores and extras kept) from a sampler's return:
    a :class:`PromptDraw` or a ``(rewards, scores)`` pair."""
    if not isinstance(draw, PromptDraw):
        draw = PromptDraw(rewards=draw[0], scores=draw[1])
    scores = np.asarray(draw.scores)
    extras = {k: (("prompt", *dims), np.asarray(a)[None]) for k, (dims, a) in draw.extras.items()}
    return prompt_statistics(np.asarray(draw.rewards, float)[None], scores[None], prompt_ids=[p],
                             keep_scores=True, extras=extras)


def _gather(path, world_size, rank, attrs):
    """Barrier, then rank 0 merges the shards into ``path``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if rank != 0:
        return None
    stats, _ = load_pilot([shard_path(path, r, world_size) for r in range(world_size)])
    _write(stats, path, attrs)
    return stats


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, progress, rank):
    if not progress or rank != 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="pilot", unit="prompt")
