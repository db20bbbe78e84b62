"""Seeded, resumable Monte Carlo grids of gradient-estimator errors -> ``xarray.Dataset``.

:func:`run_grid` measures ``MSE = E||g_hat - g||^2`` of GRPO-family minibatch gradient estimates
on a grid ``estimator x num_generations (G) x num_prompts (B)`` for any policy that follows the
protocol of ``docs/architecture.md`` (``policy.sample``, ``policy.moments``, ``policy.gradient``).
:func:`merge` pools two runs through their sufficient statistics.

Design (STYLE.md, "Monte Carlo outputs"):

* **Streams.** A grid cell is one ``(G, B)`` pair; all estimators of a cell share its draws
  (common random numbers).  The cell's stream is the node ``SeedSequence(seed, spawn_key=(G, B))``
  and its replicates come in fixed blocks, block ``i`` drawn from ``cell.spawn(n_blocks)[i]``.
  The mapping cell -> stream depends on the cell's coordinates only, so the numbers do not depend
  on the order of the grid, on which cells run where, on the scheduler, or on interruptions.
* **Statistics.** Each block is reduced to ``(count, mean, M2)`` of the per-replicate squared
  errors, and blocks are pooled in block order with Chan et al.'s update, so a cell's bytes are
  fixed by ``(seed, G, B, num_replicates, block_size)``.  The same update merges datasets.
* **Checkpoints.** With ``checkpoint_dir`` each finished cell is written atomically to its own
  ``.npz`` file; a rerun loads finished cells and computes only the rest, and gives the same bytes
  as an uninterrupted run.
* **Schedulers.** ``"serial"``, ``"processes"`` (default, ``concurrent.futures`` process pool on
  local cores) or a Dask distributed scheduler (``"tcp://host:port"`` or a ``distributed.Client``);
  see ``ustat_grpo.experiments._scheduler``.
* **Fast path.** Finite-action softmax bandits are sampled as (prompt, arm, reward) indices and
  estimators that are affine in the rewards within a group are computed from per-arm counts and
  reward sums (``sampler="finite"``, :mod:`ustat_grpo.experiments.finite_action`).  Each such affine form is
  checked against ``estimators.ESTIMATORS`` at the start of a run, and the sampler's exact moments
  against ``policy.moments()``.  ``sampler="generic"`` uses ``policy.sample`` and the estimators as
  given.  The fast path consumes each block's stream in the order of
  ``ContextualSoftmaxBandit.sample``, so for those bandits it reproduces the generic path to
  rounding (a test checks this); ``python -m simulations.bench_mc`` times it against the cost of
  merely drawing its uniforms, with the optional numba kernel (extra ``fast``; same bits) and with
  numpy alone (announced once by a warning), and the generic path.  ``config`` records which ran
  (``fast_path_kernel``; not part of the checkpoint fingerprint: same numbers).
* **Output.** The dataset carries the attributes of :func:`ustat_grpo.core.provenance.provenance_attrs`;
  write it with :func:`ustat_grpo.core.provenance.write_netcdf`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import _scheduler, finite_action
from ..core._random import default_rng, keyed_seed_sequence
from ..core.provenance import provenance_attrs

__all__ = ["run_grid", "merge", "summary", "cell_seed_sequence", "block_size_for"]

#: Generations (replicates x B x G) per vectorised block when ``block_size`` is not given
#: (the fastest of 2**14..2**18 in simulations/bench_mc.py): amortises numpy call overhead and
#: keeps the (R, B, G) scratch arrays cache-sized; generic scores (R, B, G, d) stay ~5 MB at d = 10.
BLOCK_GENERATIONS = 2 ** 16

#: Per-cell statistics stored in checkpoints and datasets.
_STATS = ("count", "mse", "m2")


# ---------------------------------------------------------------------------- streams

def cell_seed_sequence(seed: int, num_generations: int, num_prompts: int) -> np.random.SeedSequence:
    """The random stream of grid cell ``(G, B)``: ``SeedSequence(seed, spawn_key=(G, B))``.

    Its ``spawn(n_blocks)`` children feed the replicate blocks of the cell, in order.
    """
    return keyed_seed_sequence(seed, num_generations, num_prompts)


def block_size_for(num_generations: int, num_prompts: int, block_size: int | None = None) -> int:
    """Replicates per block: ``block_size`` or ``max(1, BLOCK_GENERATIONS // (B * G))``."""
    if block_size is not None:
        return int(block_size)
    return max(1, BLOCK_GENERATIONS // (int(num_generations) * int(num_prompts)))


# ---------------------------------------------------------------------------- Welford / Chan

def _chan(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Pool ``(count, mean, M2)`` of two disjoint samples (Chan, Golub & LeVeque 1979)."""
    n_a = np.asarray(n_a, dtype=np.int64)
    n_b = np.asarray(n_b, dtype=np.int64)
    n = n_a + n_b
    if (n_a > 0).all() and (n_b > 0).all():       # every block after the first: the same operations
        delta = mean_b - mean_a
        return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * (n_b / n))
    safe = np.where(n > 0, n, 1).astype(float)
    delta = np.where(n_b > 0, mean_b, 0.0) - np.where(n_a > 0, mean_a, 0.0)
    mean = np.where(n_a > 0, mean_a, 0.0) + delta * (n_b / safe)
    m2 = (np.where(n_a > 0, m2_a, 0.0) + np.where(n_b > 0, m2_b, 0.0)
          + delta * delta * (n_a * (n_b / safe)))
    mean = np.where(n > 0, mean, np.nan)
    m2 = np.where(n > 0, m2, np.nan)
    return n, mean, m2


def _block_stats(err):
    """``(count, mean, M2)`` along the last axis of ``err (E, R)`` (two-pass)."""
    mean = err.mean(axis=-1)
    dev = err - mean[..., None]
    return np.full(err.shape[:-1], err.shape[-1], dtype=np.int64), mean, (dev * dev).sum(axis=-1)


# ---------------------------------------------------------------------------- one cell

@dataclass(frozen=True, kw_only=True)
class _Task:
    policy: object
    estimators: tuple           # names
    funcs: object               # None (use ESTIMATORS) or a picklable mapping name -> callable
    G: int
    B: int
    num_replicates: int
    block_size: int
    seed: int
    gradient: np.ndarray        # (d,)
    values: np.ndarray          # (P,)
    fam: finite_action.FiniteActionModel | None
    affine: frozenset

    def functions(self):
        """The mapping name -> estimator function of this task."""
        if self.funcs is not None:
            return self.funcs
        from ..theory.estimators import ESTIMATORS
        return ESTIMATORS


def _errors_generic(task, gen, R):
    """Squared errors ``(E, R)`` from ``policy.sample`` and the estimator functions."""
    funcs = task.functions()
    theta = np.broadcast_to(task.policy.theta, (R, task.gradient.size))
    s = task.policy.sample(task.B, task.G, rng=gen, theta=theta)   # rewards (R,B,G), scores (R,B,G,d)
    values = task.values[s.prompt_ids]                             # (R, B)
    out = np.empty((len(task.estimators), R))
    for i, name in enumerate(task.estimators):
        est = np.asarray(funcs[name](s.rewards, s.scores, values=values))   # (R, B, d)
        diff = est.mean(axis=-2) - task.gradient                            # (R, d)
        out[i] = np.einsum("rd,rd->r", diff, diff)
    return out


def _run_cell(task: _Task) -> dict:
    """All blocks of one cell, pooled in block order: ``{count, mse, m2}`` each of shape (E,)."""
    R, bs = task.num_replicates, task.block_size
    n_blocks = -(-R // bs)
    children = cell_seed_sequence(task.seed, task.G, task.B).spawn(n_blocks)
    errors = finite_action.BlockErrors(task) if task.fam is not None else None
    per = errors.blocks_per_call(bs) if errors is not None else 1
    E = len(task.estimators)
    acc = (np.zeros(E, np.int64), np.full(E, np.nan), np.full(E, np.nan))
    for first in range(0, n_blocks, per):
        gens = [default_rng(c) for c in children[first:first + per]]   # = Generator(PCG64(c))
        sizes = [min(bs, R - i * bs) for i in range(first, first + len(gens))]
        err = errors(gens, sizes) if errors is not None else _errors_generic(task, gens[0], sizes[0])
        acc = _pool_blocks(acc, err, sizes)
    return dict(zip(_STATS, acc))


def _pool_blocks(acc, err, sizes):
    """Pool the blocks of ``err (E, sum(sizes))`` into ``acc``, one :func:`_chan` per block, in order.

    The statistics of equal-size blocks are computed in one call (a reduction along the last
    axis, row by row: the same bits as block by block), and after the first block the update is
    :func:`_chan`'s operations on scalar counts, without its checks.
    """
    E = err.shape[0]
    if len(set(sizes)) == 1:
        _, means, m2s = _block_stats(err.reshape(E, len(sizes), sizes[0]))   # (E, blocks)
    else:
        stats = [_block_stats(b) for b in np.split(err, np.cumsum(sizes)[:-1], axis=1)]
        means, m2s = np.stack([s[1] for s in stats], axis=1), np.stack([s[2] for s in stats], axis=1)
    for j, n_b in enumerate(sizes):
        n_a = int(acc[0][0])
        if n_a == 0:
            acc = _chan(*acc, np.full(E, n_b, np.int64), means[:, j], m2s[:, j])
            continue
        n = n_a + n_b                                 # as _chan: int / int -> float64, int * float
        delta = means[:, j] - acc[1]
        acc = (np.full(E, n, np.int64), acc[1] + delta * (n_b / n),
               acc[2] + m2s[:, j] + delta * delta * (n_a * (n_b / n)))
    return acc


# ---------------------------------------------------------------------------- fingerprints

def _policy_fingerprint(policy) -> str:
    try:
        return hashlib.sha256(pickle.dumps(policy, protocol=4)).hexdigest()[:16]
    except Exception:                                  # unpicklable policy: fall back on its repr
        return hashlib.sha256(repr(policy).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- input validation

def _int_tuple(x, name, minimum):
    vals = (x,) if np.isscalar(x) else tuple(x)
    if len(vals) == 0:
        raise ValueError(f"{name} must not be empty")
    out = []
    for v in vals:
        if isinstance(v, (bool, np.bool_)) or not float(v).is_integer() or int(v) < minimum:
            raise ValueError(f"{name} must be integers >= {minimum}, got {v!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates: {out}")
    return tuple(out)


def _run_grid_iv(policy, estimators, num_generations, num_prompts, num_replicates, seed, block_size,
                 sampler):
    for attr in ("sample", "moments", "gradient", "theta"):
        if not hasattr(policy, attr):
            raise ValueError(f"policy lacks {attr!r}; it must follow the policy protocol of "
                             "docs/architecture.md (sample, moments, gradient, theta)")
    if isinstance(estimators, str):
        estimators = (estimators,)
    if isinstance(estimators, Mapping):
        names, funcs = tuple(estimators), dict(estimators)
        for k, f in funcs.items():
            if not callable(f):
                raise ValueError(f"estimator {k!r} is not callable")
    else:
        from ..theory.estimators import ESTIMATORS

        names, funcs = tuple(estimators), None
        unknown = [n for n in names if n not in ESTIMATORS]
        if unknown:
            raise ValueError(f"unknown estimator(s) {unknown}; choose from {sorted(ESTIMATORS)}")
    if not names:
        raise ValueError("estimators must not be empty")
    if len(set(names)) != len(names):
        raise ValueError(f"estimators has duplicates: {names}")
    Gs = _int_tuple(num_generations, "num_generations", 1)
    Bs = _int_tuple(num_prompts, "num_prompts", 1)
    R = _int_tuple(num_replicates, "num_replicates", 2)
    if len(R) != 1:
        raise ValueError("num_replicates must be one integer")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if block_size is not None:
        _int_tuple(block_size, "block_size", 1)
    if sampler not in ("auto", "generic", "finite"):
        raise ValueError(f"sampler must be 'auto', 'generic' or 'finite', got {sampler!r}")
    return names, funcs, Gs, Bs, R[0], int(seed)


# ---------------------------------------------------------------------------- checkpoints

def _cell_path(directory, G, B):
    return os.path.join(directory, f"cell-G{G}-B{B}.npz")


def _save_cell(directory, G, B, stats, fingerprint):
    path = _cell_path(directory, G, B)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, fingerprint=np.array(fingerprint), **stats)
    os.replace(tmp, path)                              # atomic: a cell is either whole or absent


def _load_cell(directory, G, B, fingerprint):
    path = _cell_path(directory, G, B)
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["fingerprint"]) != fingerprint:
            raise ValueError(f"checkpoint {path} was written by a different configuration "
                             "(seed, policy, estimators, replicates or block size); use a new "
                             "checkpoint_dir")
        return {k: f[k].copy() for k in _STATS}


# ---------------------------------------------------------------------------- public API

def run_grid(policy, *, num_generations, num_prompts=1, estimators=("vanilla", "leave_one_out", "oracle"),
             num_replicates=1000, seed, block_size=None, sampler="auto", exact="auto",
             scheduler=None, max_workers=None, checkpoint_dir=None, progress=True, command=None,
             extra_config=None):
    """Monte Carlo MSE of minibatch gradient estimators on a ``G x B`` grid.

    Parameters
    ----------
    policy : policy object
        Follows ``docs/architecture.md``: ``sample(B, G, *, rng, theta)`` with ``theta (R, d)``,
        ``moments()`` (``.value``), ``gradient()``, ``theta``.  Must be picklable for the process
        and Dask schedulers.
    num_generations : int or sequence of int
        Group sizes G.
    num_prompts : int or sequence of int
        Minibatch sizes B.
    estimators : sequence of str or mapping str -> callable
        Names in ``estimators.ESTIMATORS``, or ``{name: f(rewards, scores, *, values=None)}``
        (module-level functions, so that they pickle).
    num_replicates : int
        Replicates per cell (>= 2).
    seed : int
        Root seed (non-negative).  Recorded as a string.  An integer rather than ``rng=``: each
        cell's stream is derived from it and the cell's coordinates (module notes), which a
        ``Generator`` could not provide, and the output must record it.
    block_size : int, optional
        Replicates per vectorised block (default :func:`block_size_for`).  Part of the stream
        definition: changing it changes the draws.
    sampler : {"auto", "generic", "finite"}
        ``"finite"`` uses the finite-action fast path (module notes); ``"auto"`` uses it when the
        policy exposes a :class:`~ustat_grpo.experiments.finite_action.FiniteActionModel`.
    exact : "auto", callable or None
        ``"auto"``: ``mse.exact_mse(policy.moments(), name, G, B).total`` where it exists, else NaN;
        a callable ``exact(policy, name, G, B) -> float``; ``None``: all NaN.
    scheduler : None, "serial", "processes", Dask address or ``distributed.Client``
        Where cells run (default: a local process pool).  Results do not depend on it.
    max_workers : int, optional
        Process-pool size (default: all cores).
    checkpoint_dir : path, optional
        Directory of per-cell files; finished cells found there are not recomputed.
    progress : bool
        tqdm progress bar on stderr.
    command : str, optional
        Command line to record (default: ``sys.argv``).
    extra_config : dict, optional
        JSON-safe settings of the caller (recorded in the ``config`` attribute).

    Returns
    -------
    xarray.Dataset
        Dims ``(estimator, num_generations, num_prompts)``; variables ``mse`` (mean of
        ``||g_hat - g||^2``), ``mse_se`` (its standard error), ``count``, ``m2`` (sum of squared
        deviations; with ``count`` and ``mse`` the mergeable sufficient statistics) and ``exact``.

    Notes
    -----
    ``g_hat = (1/B) sum_b g_hat(x_b)`` over ``B`` prompts drawn i.i.d. from ``f``, with
    per-prompt estimates from eq. (5) of arXiv 2603.01162, and ``g = sum_x f(x) g(x)`` (eq. 8)
    from ``policy.gradient()``.  Exact values: Prop. 3 (eq. 9) in its exact form
    ``A1/B + A2/(BG) + A3/(BG(G-1))`` for GRPO (``mse.exact_mse``).

    Examples
    --------
    >>> from ustat_grpo.policies.bandits import SoftmaxBandit
    >>> pol = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])
    >>> ds = run_grid(pol, num_generations=[4, 8], num_replicates=200, seed=1,
    ...               scheduler="serial", progress=False)
    >>> ds.mse.dims
    ('estimator', 'num_generations', 'num_prompts')
    """
    names, funcs, Gs, Bs, R, seed = _run_grid_iv(policy, estimators, num_generations, num_prompts,
                                                 num_replicates, seed, block_size, sampler)
    scheduler = _scheduler.scheduler_iv(scheduler)
    if not (exact is None or callable(exact) or (isinstance(exact, str) and exact == "auto")):
        raise ValueError("exact must be 'auto', a callable or None")
    gradient = np.asarray(policy.gradient(), dtype=float)
    values = np.asarray(policy.moments().value, dtype=float)
    fam, affine = _fast_path(policy, sampler, names, funcs, Gs, gradient, values)
    config = _config(policy, names, funcs, Gs, Bs, R, seed, block_size, fam, affine, extra_config)
    tasks = {(G, B): _Task(policy=policy, estimators=names, funcs=funcs, G=G, B=B, num_replicates=R,
                           block_size=block_size_for(G, B, block_size), seed=seed, gradient=gradient,
                           values=values, fam=fam, affine=affine) for G in Gs for B in Bs}
    done = _run_cells(tasks, scheduler, max_workers, checkpoint_dir, _fingerprint(config), progress)
    return _to_dataset(policy, names, Gs, Bs, done, exact, seed, config, command)


def _fast_path(policy, sampler, names, funcs, Gs, gradient, values):
    """``(FiniteActionModel or None, affine names)``: whether and for which estimators to use it."""
    fam = None
    if sampler != "generic":
        fam = finite_action.FiniteActionModel.from_policy(policy)
        if fam is None and sampler == "finite":
            raise ValueError("sampler='finite' needs a finite-action policy (a softmax bandit)")
        if fam is not None and not (np.allclose(fam.value(), values, rtol=1e-10, atol=1e-12)
                                    and np.allclose(fam.gradient(), gradient, rtol=1e-10, atol=1e-12)):
            raise ValueError("the policy's finite-action model disagrees with policy.moments(); "
                             "use sampler='generic'")
    if fam is None:
        return None, frozenset()
    if funcs is None:
        from ..theory.estimators import ESTIMATORS
        funcs = ESTIMATORS
    affine = frozenset(names)                        # affine forms must match at every G of the grid
    for G in Gs:
        affine -= finite_action.mismatched_affine(names, funcs, fam, G)
    return fam, affine


def _config(policy, names, funcs, Gs, Bs, R, seed, block_size, fam, affine, extra_config) -> dict:
    """The ``config`` attribute of a run: everything that defines its numbers."""
    config = {
        "estimators": list(names),
        "estimator_source": "custom" if funcs is not None else "ustat_grpo.theory.estimators.ESTIMATORS",
        "num_generations": list(Gs), "num_prompts": list(Bs), "num_replicates": R,
        "seed": str(seed), "block_size": block_size if block_size is not None
        else f"max(1, {BLOCK_GENERATIONS} // (B * G))",
        "sampler": "finite" if fam is not None else "generic", "affine_fast_path": sorted(affine),
        # which kernel this process runs on the fast path (the same numbers either way)
        "fast_path_kernel": None if fam is None else finite_action.fast_path_kernel(),
        "policy": repr(policy), "policy_fingerprint": _policy_fingerprint(policy),
    }
    if extra_config:
        config["extra"] = extra_config
    return config


def _fingerprint(config) -> str:
    """Checkpoint key: the config without the grid (a cell is defined by its own coordinates)."""
    return hashlib.sha256(json.dumps(
        {k: v for k, v in config.items()
         if k not in ("num_generations", "num_prompts", "extra", "fast_path_kernel")},
        sort_keys=True).encode()).hexdigest()[:24]


def _run_cells(tasks, scheduler, max_workers, checkpoint_dir, fingerprint, progress) -> dict:
    """``{(G, B): stats}`` for every task: loaded from checkpoints or computed (and saved)."""
    done: dict = {}
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        for G, B in tasks:
            st = _load_cell(checkpoint_dir, G, B, fingerprint)
            if st is not None:
                done[(G, B)] = st
    todo = [c for c in tasks if c not in done]

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), initial=len(done), desc="Monte Carlo cells", unit="cell",
               file=sys.stderr, disable=not progress)
    try:
        for i, st in _scheduler.executor_map(_run_cell, [tasks[c] for c in todo], scheduler, max_workers):
            done[todo[i]] = st
            if checkpoint_dir is not None:
                _save_cell(checkpoint_dir, *todo[i], st, fingerprint)
            bar.update(1)
    finally:
        bar.close()
    return done


def _exact_values(policy, names, Gs, Bs, exact):
    out = np.full((len(names), len(Gs), len(Bs)), np.nan)
    if exact is None:
        return out, "none"
    if exact == "auto":
        from ..theory.mse import SUPPORTED, exact_mse

        m = policy.moments()
        for i, n in enumerate(names):
            if n not in SUPPORTED or n in ("prompt_baseline",):
                continue
            for j, G in enumerate(Gs):
                for k, B in enumerate(Bs):
                    try:
                        out[i, j, k] = float(exact_mse(m, n, G, B).total)
                    except ValueError:               # e.g. leave_one_out at G = 1: undefined
                        pass
        return out, "ustat_grpo.theory.mse.exact_mse"
    if not callable(exact):
        raise ValueError("exact must be 'auto', a callable or None")
    for i, n in enumerate(names):
        for j, G in enumerate(Gs):
            for k, B in enumerate(Bs):
                out[i, j, k] = float(exact(policy, n, G, B))
    return out, getattr(exact, "__qualname__", "callable")


def _to_dataset(policy, names, Gs, Bs, done, exact, seed, config, command):
    import xarray as xr

    E, nG, nB = len(names), len(Gs), len(Bs)
    count = np.zeros((E, nG, nB), np.int64)
    mse = np.full((E, nG, nB), np.nan)
    m2 = np.full((E, nG, nB), np.nan)
    for j, G in enumerate(Gs):
        for k, B in enumerate(Bs):
            st = done[(G, B)]
            count[:, j, k], mse[:, j, k], m2[:, j, k] = st["count"], st["mse"], st["m2"]
    ex, source = _exact_values(policy, names, Gs, Bs, exact)
    dims = ("estimator", "num_generations", "num_prompts")
    ds = xr.Dataset(
        {"count": (dims, count, {"long_name": "replicates"}),
         "mse": (dims, mse, {"long_name": "Monte Carlo mean of ||g_hat - g||^2"}),
         "m2": (dims, m2, {"long_name": "sum of squared deviations of ||g_hat - g||^2 (Welford M2)"}),
         "exact": (dims, ex, {"long_name": "exact MSE (NaN: no closed form)", "source": source}),
         "mse_se": (dims, _se(count, m2), {"long_name": "standard error of mse"})},
        coords={"estimator": np.array(names, dtype=object),
                "num_generations": np.array(Gs, dtype=np.int64),
                "num_prompts": np.array(Bs, dtype=np.int64)},
    )
    ds.attrs.update(title="Monte Carlo MSE of GRPO-family gradient estimators (ustat_grpo.experiments.montecarlo)",
                    **provenance_attrs(seed=seed, config=config, command=command))
    ds.attrs["policy_fingerprint"] = config["policy_fingerprint"]
    return ds


def _se(count, m2):
    """Standard error of ``mse`` from ``count`` and ``m2`` (NaN where ``count < 2``)."""
    var = m2 / np.where(count > 1, count - 1, 1)
    return np.where(count > 1, np.sqrt(var / np.where(count > 0, count, 1)), np.nan)


def _with_se(ds):
    ds["mse_se"] = (ds["mse"].dims, _se(ds["count"].values, ds["m2"].values),
                    {"long_name": "standard error of mse"})
    return ds


def merge(ds1, ds2):
    """Pool two :func:`run_grid` datasets cell by cell through ``(count, mse, m2)``.

    The result covers the union of the grids.  The runs must be independent (different seeds)
    and of the same policy; ``exact`` must agree where both have it.

    Parameters
    ----------
    ds1, ds2 : xarray.Dataset

    Returns
    -------
    xarray.Dataset
        Same layout; ``attrs["seed"]`` lists both seeds (comma-separated), ``attrs["config"]`` is a
        JSON list of both configs.
    """
    import xarray as xr

    for ds in (ds1, ds2):
        missing = [v for v in ("count", "mse", "m2", "exact") if v not in ds]
        if missing:
            raise ValueError(f"not a run_grid dataset: missing {missing}")
    f1, f2 = ds1.attrs.get("policy_fingerprint"), ds2.attrs.get("policy_fingerprint")
    if f1 != f2:
        raise ValueError(f"datasets come from different policies ({f1} vs {f2})")
    s1 = set(str(ds1.attrs.get("seed", "")).split(","))
    s2 = set(str(ds2.attrs.get("seed", "")).split(","))
    a, b = xr.align(ds1[["count", "mse", "m2", "exact"]], ds2[["count", "mse", "m2", "exact"]],
                    join="outer")
    c1 = a["count"].fillna(0).astype(np.int64).values
    c2 = b["count"].fillna(0).astype(np.int64).values
    if s1 & s2 and np.any((c1 > 0) & (c2 > 0)):
        raise ValueError(f"both datasets used seed(s) {sorted(s1 & s2)} on the same cells: their "
                         "draws are identical, not independent")
    e1, e2 = a["exact"].values, b["exact"].values
    both = np.isfinite(e1) & np.isfinite(e2)
    if not np.allclose(e1[both], e2[both], rtol=1e-12, atol=0):
        raise ValueError("exact values disagree between the datasets")
    n, mean, m2 = _chan(c1, a["mse"].values, a["m2"].values, c2, b["mse"].values, b["m2"].values)
    out = a.copy()
    out["count"] = (a["count"].dims, n, ds1["count"].attrs)
    out["mse"] = (a["mse"].dims, mean, ds1["mse"].attrs)
    out["m2"] = (a["m2"].dims, m2, ds1["m2"].attrs)
    out["exact"] = (a["exact"].dims, np.where(np.isfinite(e1), e1, e2), ds1["exact"].attrs)
    out = _with_se(out)
    out.attrs = dict(ds1.attrs)
    out.attrs["seed"] = ",".join(sorted(s1 | s2, key=lambda s: (len(s), s)))
    out.attrs["config"] = json.dumps([_configs(ds1), _configs(ds2)])
    out.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return out


def _configs(ds):
    c = json.loads(ds.attrs.get("config", "null"))
    return c


def summary(ds) -> str:
    """A text table of ``mse +- se`` (and ``exact``, z) for each cell of a :func:`run_grid` dataset."""
    lines = [f"{'estimator':>14s} {'G':>5s} {'B':>5s} {'mse':>12s} {'se':>10s} {'exact':>12s} {'z':>7s}"]
    for e in ds.estimator.values:
        for G in ds.num_generations.values:
            for B in ds.num_prompts.values:
                c = ds.sel(estimator=e, num_generations=G, num_prompts=B)
                m, se, ex = float(c.mse), float(c.mse_se), float(c.exact)
                z = (m - ex) / se if np.isfinite(ex) and se > 0 else np.nan
                lines.append(f"{str(e):>14s} {int(G):5d} {int(B):5d} {m:12.6g} {se:10.3g} "
                             f"{ex:12.6g} {z:7.2f}")
    return "\n".join(lines)
