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
  local cores) or a Dask distributed scheduler (``"tcp://host:port"`` or a ``distributed.Client``).
* **Fast path.** Finite-action softmax bandits (``bandits.ContextualSoftmaxBandit`` and
  ``SoftmaxBandit``: public ``features``, ``policy_probs``, ``reward_values``, ``reward_probs``)
  are sampled as (prompt, arm, reward) indices; scores are looked up in a ``(P, K, d)`` table and
  estimators that are affine in the rewards within a group are computed from per-arm counts and
  reward sums (``sampler="finite"``).  Each such affine form is checked against
  ``estimators.ESTIMATORS`` at the start of a run, and the sampler's exact moments against
  ``policy.moments()``.  ``sampler="generic"`` uses ``policy.sample`` and the estimators as given.
  The fast path consumes each block's stream in the order of ``ContextualSoftmaxBandit.sample``
  (a uniform per prompt slot, per arm pull, per reward; inverse CDF), so for those bandits it
  reproduces the generic path to rounding (a test checks this); ``simulations/bench_mc.py``
  times it at ~3x the cost of merely drawing its uniforms, the generic path at ~40x.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["run_grid", "merge", "summary", "write_netcdf", "cell_seed_sequence", "provenance_attrs",
           "FiniteActionModel", "block_size_for"]

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
    return np.random.SeedSequence(int(seed), spawn_key=(int(num_generations), int(num_prompts)))


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


# ---------------------------------------------------------------------------- finite-action fast path

@dataclass(frozen=True, kw_only=True)
class FiniteActionModel:
    """A policy with finitely many prompts, arms and reward values, at fixed ``theta``.

    Attributes
    ----------
    prompt_probs : ndarray, shape (P,)
        ``f(x)``.
    action_probs : ndarray, shape (P, K)
        ``pi(a | x)``.
    score_table : ndarray, shape (P, K, d)
        ``W(x, a) = grad_theta log pi(a | x)``.
    reward_values, reward_probs : ndarray, shape (P, K, M)
        The reward law given ``(x, a)``.
    """

    prompt_probs: np.ndarray
    action_probs: np.ndarray
    score_table: np.ndarray
    reward_values: np.ndarray
    reward_probs: np.ndarray

    @classmethod
    def from_policy(cls, policy) -> "FiniteActionModel | None":
        """Build from a softmax bandit's public attributes; ``None`` if the policy has none."""
        if hasattr(policy, "finite_action_model"):
            return policy.finite_action_model()
        need = ("features", "policy_probs", "reward_values", "reward_probs", "prompt_probs")
        if not all(hasattr(policy, a) for a in need):
            return None
        phi = np.asarray(policy.features, dtype=float)                          # (P, K, d)
        pi = np.asarray(policy.policy_probs(), dtype=float)                      # (P, K)
        table = phi - np.einsum("pk,pkd->pd", pi, phi)[:, None, :]              # (P, K, d)
        return cls(prompt_probs=np.asarray(policy.prompt_probs, float), action_probs=pi,
                   score_table=table, reward_values=np.asarray(policy.reward_values, float),
                   reward_probs=np.asarray(policy.reward_probs, float))

    def value(self) -> np.ndarray:
        """``V(x)``, shape (P,)."""
        return (self.action_probs * (self.reward_values * self.reward_probs).sum(-1)).sum(-1)

    def gradient(self) -> np.ndarray:
        """``g = sum_x f(x) sum_a pi(a|x) E[Z|x,a] W(x,a)``, shape (d,)."""
        m1 = (self.reward_values * self.reward_probs).sum(-1)
        return np.einsum("p,pk,pkd->d", self.prompt_probs, self.action_probs * m1, self.score_table)


class _CategoricalSampler:
    """Exact inverse-CDF sampling of ``(..., n)`` categories from uniforms by table lookup.

    Row ``x`` has CDF ``cdf[x] (K,)``; the category of ``u`` is ``#{k < K-1 : cdf[x, k] <= u}``
    (``np.searchsorted(cdf[x, :-1], u, side="right")``, the naive twin).  A table over
    ``NBINS`` equal bins of [0, 1) gives the category at each bin's left edge; a bin containing
    ``c`` CDF points needs ``c`` comparison steps, and ``steps`` is the largest ``c``.
    """

    NBINS = 4096

    def __init__(self, probs):
        p = np.atleast_2d(np.asarray(probs, dtype=float))                      # (X, K)
        X, K = p.shape
        cdf = np.cumsum(p, axis=-1)[:, :-1]                                     # (X, K-1)
        edges = np.arange(self.NBINS) / self.NBINS                              # exact binary fractions
        lut = np.stack([np.searchsorted(c, edges, side="right") for c in cdf])  # (X, NBINS)
        # category just below each bin's right edge: #{cdf < (j + 1) / NBINS}
        right = np.stack([np.searchsorted(c, edges + 1.0 / self.NBINS, side="left") for c in cdf])
        self.steps = int((right - lut).max()) if lut.size else 0
        if X * max(K, self.NBINS) >= 2 ** 31:
            raise ValueError("too many categories for 32-bit indices")
        # int32 throughout: numpy casts float64 -> int64 and gathers with int64 indices slowly
        self.lut = (lut + (np.arange(X) * K)[:, None]).astype(np.int32).ravel()  # flat (x, k) ids
        self.next_cdf = np.concatenate([cdf, np.full((X, 1), np.inf)], axis=1).ravel()
        self.K = K

    def __call__(self, u, row=None, *, out=None, work=None):
        """Flat ids ``x * K + k`` (int32) for uniforms ``u`` in rows ``row`` (default 0).

        ``row`` has the shape of ``u`` or of its leading axes (then broadcast along the rest).
        ``out`` (int32) and ``work = (float64, int32, bool)`` arrays of the shape of ``u`` are
        optional scratch space: fresh multi-MB temporaries cost page faults on every block.
        """
        if work is None:
            work = (np.empty(u.shape), np.empty(u.shape, np.int32), np.empty(u.shape, bool))
        f, j, mask = work
        ids = np.empty(u.shape, np.int32) if out is None else out
        np.multiply(u, self.NBINS, out=f)
        np.copyto(j, f, casting="unsafe")                                       # floor: u >= 0
        if row is not None:
            row = np.asarray(row, dtype=np.int32)
            j += row.reshape(row.shape + (1,) * (u.ndim - row.ndim)) * np.int32(self.NBINS)
        np.take(self.lut, j, out=ids, mode="clip")       # clip: unbuffered; j is in range
        for _ in range(self.steps):
            np.take(self.next_cdf, ids, out=f, mode="clip")
            np.greater_equal(u, f, out=mask)
            ids += mask
        return ids


def _affine_coefficients(name, zbar, std, values, G):
    """Per-group ``(a, c)`` with weights ``w_g = a z_g + c``, or ``None`` if not affine-known.

    The estimate is ``(1/G) sum_g w_g W_g``.  ``zbar (...)`` is the group mean, ``std()`` returns
    the Bessel group standard deviation (called only when needed), ``values (...)`` is ``V(x)``.
    """
    if name == "vanilla":
        return np.ones(zbar.shape), np.zeros(zbar.shape)
    if name == "leave_one_out":
        k = G / (G - 1)
        return np.full(zbar.shape, k), -k * zbar
    if name == "group_mean":
        return np.ones(zbar.shape), -zbar
    if name == "oracle":
        return np.ones(zbar.shape), -np.asarray(values, dtype=float)
    if name == "std_normalized":                      # PRESETS["grpo"] (TRL): Bessel std, eps = 1e-4
        from .estimators import PRESETS
        a = 1.0 / (std() + PRESETS["grpo"].eps)
        return a, -a * zbar
    return None


def _mismatched_affine(names, estimators, fam, G):
    """Names whose affine form is unknown or differs from ``estimators[name]`` at group size G.

    Probed on a small fixed sample with random scores; an estimator that rejects this ``G``
    (``ValueError``, e.g. leave_one_out at G = 1) is not disqualified: it will fail in its cell anyway.
    """
    rng = np.random.default_rng(12345)                # a fixed probe, not part of any cell stream
    x = rng.choice(fam.prompt_probs.size, size=(3, 2), p=fam.prompt_probs)
    z = rng.normal(size=(3, 2, G)).round(1)           # (3, 2, G)
    z[0, 0] = 1.0                                     # a zero-variance group
    scores = rng.normal(size=(3, 2, G, fam.score_table.shape[-1]))
    values = fam.value()[x]
    bad = set()
    for name in names:
        try:
            theirs = np.asarray(estimators[name](z, scores, values=values), dtype=float)
        except ValueError:
            continue
        with np.errstate(all="ignore"):
            ab = _affine_coefficients(name, z.mean(-1), lambda: z.std(-1, ddof=1), values, G)
        if ab is None:
            bad.add(name)
            continue
        w = ab[0][..., None] * z + ab[1][..., None]
        mine = np.einsum("...g,...gd->...d", w, scores) / G
        if theirs.shape != mine.shape or not np.allclose(mine, theirs, rtol=1e-10, atol=1e-12):
            bad.add(name)
    return bad


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
    fam: FiniteActionModel | None
    affine: frozenset


def _funcs(task):
    if task.funcs is not None:
        return task.funcs
    from .estimators import ESTIMATORS
    return ESTIMATORS


def _errors_generic(task, gen, R):
    """Squared errors ``(E, R)`` from ``policy.sample`` and the estimator functions."""
    funcs = _funcs(task)
    theta = np.broadcast_to(task.policy.theta, (R, task.gradient.size))
    s = task.policy.sample(task.B, task.G, rng=gen, theta=theta)   # rewards (R,B,G), scores (R,B,G,d)
    values = task.values[s.prompt_ids]                             # (R, B)
    out = np.empty((len(task.estimators), R))
    for i, name in enumerate(task.estimators):
        est = np.asarray(funcs[name](s.rewards, s.scores, values=values))   # (R, B, d)
        diff = est.mean(axis=-2) - task.gradient                            # (R, d)
        out[i] = np.einsum("rd,rd->r", diff, diff)
    return out


def _errors_finite(task, gen, R, samplers, ws):
    """Squared errors ``(E, R)`` for a finite-action model (see module notes).

    Draws, in this order, a uniform per prompt slot ``(R, B)``, per arm pull ``(R, B, G)`` and,
    for random rewards, per reward ``(R, B, G)``, each mapped by inverse CDF -- the order and
    semantics of ``bandits.ContextualSoftmaxBandit.sample``.  A group is then reduced to its
    histogram over (arm, reward value) with one ``bincount``; affine estimators need only that.
    ``ws`` holds scratch arrays of shape ``(R, B, G)`` reused across blocks.
    """
    fam, B, G = task.fam, task.B, task.G
    P, K, d = fam.score_table.shape
    M = fam.reward_values.shape[-1]
    prompt_sampler, arm_sampler, fail_probs, reward_sampler, maps = samplers
    u, f, j, ids, cat, mask = ws
    u_x = gen.random((R, B))                                            # (R, B), even when P = 1
    x = prompt_sampler(u_x).astype(np.int32) if P > 1 else None         # (R, B) prompt ids
    gen.random(out=u)                                                   # (R, B, G) arm uniforms
    arm_sampler(u, row=x, out=ids, work=(f, j, mask))                   # flat x*K + a
    if P == 1:
        np.multiply(ids, M, out=cat)                                    # (R, B, G) arm * M
    else:
        np.subtract(ids, (x * K)[..., None], out=cat)
        cat *= M
    if M == 2:                                                          # Bernoulli-type: 1 compare
        gen.random(out=u)                                               # reward uniforms
        np.take(fail_probs, ids, out=f, mode="clip")
        np.greater_equal(u, f, out=mask)
        cat += mask
    elif M > 2:
        cat += reward_sampler(gen.random((R, B, G)), ids)
    KM = K * M
    cat += (np.arange(R * B, dtype=np.int32) * np.int32(KM)).reshape(R, B, 1)   # slot offset
    hist = np.bincount(cat.ravel(), minlength=R * B * KM).reshape(R * B, KM).astype(float)
    xs = np.zeros((R, B), dtype=np.intp) if x is None else x
    if P == 1:
        # one matmul gives, per group, sum_g z_g W_g, sum_g W_g and sum_g z_g
        Y = hist @ maps                                                 # (R*B, 2d + 1)
        ZW, NW = Y[:, :d].reshape(R, B, d), Y[:, d:2 * d].reshape(R, B, d)
        zbar = Y[:, 2 * d].reshape(R, B) / G                            # (R, B)
        vals = fam.reward_values[0].reshape(1, 1, KM)
    else:
        hist3 = hist.reshape(R, B, K, M)
        vals = fam.reward_values[xs]                                    # (R, B, K, M)
        n = hist3.sum(-1)                                               # (R, B, K) pulls per arm
        zs = (hist3 * vals).sum(-1)                                     # (R, B, K) reward sums
        zbar = zs.sum(-1) / G
        vals = vals.reshape(R, B, KM)
    hist = hist.reshape(R, B, KM)

    def std():                                                          # two-pass over the histogram
        dev = vals - zbar[..., None]
        return np.sqrt((hist * dev * dev).sum(-1) / (G - 1))

    values = task.values[xs]                                            # (R, B)
    table = fam.score_table.reshape(P * K, d)
    out = np.empty((len(task.estimators), R))
    fast = [i for i, name in enumerate(task.estimators) if name in task.affine] if P == 1 else []
    if fast:                                   # all affine estimators at once: sum_b sum_g w_bg W_bg
        coefs = [_affine_coefficients(task.estimators[i], zbar, std, values, G) for i in fast]
        ca = np.stack([c[0] for c in coefs])                            # (E', R, B)
        cc = np.stack([c[1] for c in coefs])
        est = np.einsum("erb,rbd->erd", ca, ZW) + np.einsum("erb,rbd->erd", cc, NW)   # (E', R, d)
        diff = est / (B * G) - task.gradient
        out[fast] = np.einsum("erd,erd->er", diff, diff)
    for i, name in enumerate(task.estimators):
        if i in fast:
            continue
        if name in task.affine:                                         # P > 1
            ca, cc = _affine_coefficients(name, zbar, std, values, G)   # (R, B) each
            coef = ca[..., None] * zs + cc[..., None] * n               # (R, B, K) = sum_{g: a_g=k} w_g
            pk = ((np.arange(R)[:, None] * P + x)[..., None] * K + np.arange(K)).ravel()
            per = np.bincount(pk, weights=coef.ravel(), minlength=R * P * K).reshape(R, P * K)
            diff = per @ table / (B * G) - task.gradient                # (R, d)
        else:                                                           # semi-generic: table scores
            funcs = _funcs(task)
            m = (cat - (np.arange(R * B, dtype=np.int32) * np.int32(KM)).reshape(R, B, 1)) % M
            z = fam.reward_values.reshape(P * K, M)[ids, m]             # (R, B, G)
            est = np.asarray(funcs[name](z, table[ids], values=values))  # (R, B, d)
            diff = est.mean(axis=-2) - task.gradient
        out[i] = np.einsum("rd,rd->r", diff, diff)
    return out


def _workspace(shape):
    """Scratch arrays for :func:`_errors_finite`: u, f (float64), j, ids, cat (int32), mask."""
    return (np.empty(shape), np.empty(shape), np.empty(shape, np.int32), np.empty(shape, np.int32),
            np.empty(shape, np.int32), np.empty(shape, bool))


def _samplers(fam):
    P, K, _ = fam.score_table.shape
    M = fam.reward_values.shape[-1]
    prompt = _CategoricalSampler(fam.prompt_probs) if P > 1 else None
    arm = _CategoricalSampler(fam.action_probs)
    fail = reward = None
    if M == 2:                      # reward index 1 iff u >= P(index 0), as inverse CDF
        fail = fam.reward_probs[..., 0].reshape(P * K).copy()
    elif M > 2:
        reward = _RewardSampler(fam.reward_probs.reshape(P * K, M))
    maps = None
    if P == 1:                      # (K*M, 2d + 1): histogram cell -> [z W, W, z]
        onehot = np.repeat(np.eye(K), M, axis=0)                        # (KM, K)
        z = fam.reward_values[0].reshape(K * M, 1)
        maps = np.concatenate([(onehot * z) @ fam.score_table[0], onehot @ fam.score_table[0], z], axis=1)
    return prompt, arm, fail, reward, maps


class _RewardSampler:
    """Inverse-CDF reward index per (x, a) row for ``M > 2`` reward values (plain comparisons)."""

    def __init__(self, probs):
        self.cdf = np.cumsum(probs, axis=-1)[:, :-1]                    # (P*K, M-1)

    def __call__(self, u, rows):
        c = self.cdf[rows]                                              # (..., M-1)
        return (u[..., None] >= c).sum(-1)


def _run_cell(task: _Task) -> dict:
    """All blocks of one cell, pooled in block order: ``{count, mse, m2}`` each of shape (E,)."""
    R, bs = task.num_replicates, task.block_size
    n_blocks = -(-R // bs)
    children = cell_seed_sequence(task.seed, task.G, task.B).spawn(n_blocks)
    samplers = _samplers(task.fam) if task.fam is not None else None
    ws = None
    E = len(task.estimators)
    acc = (np.zeros(E, np.int64), np.full(E, np.nan), np.full(E, np.nan))
    for i, child in enumerate(children):
        gen = np.random.Generator(np.random.PCG64(child))
        r = min(bs, R - i * bs)
        if task.fam is not None and (ws is None or ws[0].shape[0] != r):
            ws = _workspace((r, task.B, task.G))
        err = (_errors_finite(task, gen, r, samplers, ws) if task.fam is not None
               else _errors_generic(task, gen, r))
        acc = _chan(*acc, *_block_stats(err))
    return dict(zip(_STATS, acc))


# ---------------------------------------------------------------------------- provenance

def _git_describe() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance_attrs(*, seed, config: dict, command: str | None = None) -> dict:
    """NetCDF global attributes: seed (string), version, git describe, command, config JSON, time.

    ``created`` is the only attribute that changes between identical runs.
    """
    from . import __version__

    return {
        "seed": str(seed),
        "package_version": __version__,
        "git_describe": _git_describe(),
        "command": command if command is not None else shlex.join([sys.executable, *sys.argv]),
        "config": json.dumps(config, sort_keys=True, default=str),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "Conventions": "CF-1.8",
    }


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
        from .estimators import ESTIMATORS

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


# ---------------------------------------------------------------------------- schedulers

def _executor_map(tasks, scheduler, max_workers):
    """Yield ``(index, result)`` as cells finish."""
    if scheduler == "serial" or (scheduler == "processes" and len(tasks) <= 1):   # same numbers
        for i, t in enumerate(tasks):
            yield i, _run_cell(t)
        return
    if scheduler == "processes":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        workers = max_workers or os.cpu_count() or 1
        workers = max(1, min(workers, len(tasks)))
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        try:
            futs = {ex.submit(_run_cell, t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futs):
                yield futs[fut], fut.result()
        except BaseException:                          # Ctrl-C: finished cells are already saved
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        return
    # Dask distributed: an address or a Client
    from distributed import Client, as_completed as das_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futs = [client.submit(_run_cell, t, pure=False) for t in tasks]
        index = {f.key: i for i, f in enumerate(futs)}
        for fut in das_completed(futs):
            yield index[fut.key], fut.result()
    finally:
        if own:
            client.close()


def _scheduler_iv(scheduler):
    if scheduler is None:
        return "processes"
    if isinstance(scheduler, str):
        if scheduler in ("serial", "processes") or "://" in scheduler:
            return scheduler
        raise ValueError(f"scheduler must be 'serial', 'processes', a Dask address such as "
                         f"'tcp://host:8786', or a distributed.Client; got {scheduler!r}")
    if type(scheduler).__name__ == "Client":
        return scheduler
    raise ValueError(f"unsupported scheduler {scheduler!r}")


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
        Root seed (non-negative).  Recorded as a string.
    block_size : int, optional
        Replicates per vectorised block (default :func:`block_size_for`).  Part of the stream
        definition: changing it changes the draws.
    sampler : {"auto", "generic", "finite"}
        ``"finite"`` uses the finite-action fast path (module notes); ``"auto"`` uses it when the
        policy exposes a :class:`FiniteActionModel`.
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
    >>> from ustat_grpo.bandits import SoftmaxBandit
    >>> pol = SoftmaxBandit([0.2, 0.9, 0.5], theta=[0.0, 0.5, -0.5])
    >>> ds = run_grid(pol, num_generations=[4, 8], num_replicates=200, seed=1,
    ...               scheduler="serial", progress=False)
    >>> ds.mse.dims
    ('estimator', 'num_generations', 'num_prompts')
    """
    names, funcs, Gs, Bs, R, seed = _run_grid_iv(policy, estimators, num_generations, num_prompts,
                                                 num_replicates, seed, block_size, sampler)
    scheduler = _scheduler_iv(scheduler)
    if not (exact is None or callable(exact) or (isinstance(exact, str) and exact == "auto")):
        raise ValueError("exact must be 'auto', a callable or None")
    gradient = np.asarray(policy.gradient(), dtype=float)
    values = np.asarray(policy.moments().value, dtype=float)
    fam = None
    if sampler != "generic":
        fam = FiniteActionModel.from_policy(policy)
        if fam is None and sampler == "finite":
            raise ValueError("sampler='finite' needs a finite-action policy (a softmax bandit)")
        if fam is not None and not (np.allclose(fam.value(), values, rtol=1e-10, atol=1e-12)
                                    and np.allclose(fam.gradient(), gradient, rtol=1e-10, atol=1e-12)):
            raise ValueError("the policy's finite-action model disagrees with policy.moments(); "
                             "use sampler='generic'")
    used_sampler = "finite" if fam is not None else "generic"
    est_map = funcs
    if est_map is None:
        from .estimators import ESTIMATORS
        est_map = ESTIMATORS
    affine = frozenset()
    if fam is not None:                              # affine forms must match at every G of the grid
        affine = frozenset(names)
        for G in Gs:
            affine -= _mismatched_affine(names, est_map, fam, G)

    config = {
        "estimators": list(names),
        "estimator_source": "custom" if funcs is not None else "ustat_grpo.estimators.ESTIMATORS",
        "num_generations": list(Gs), "num_prompts": list(Bs), "num_replicates": R,
        "seed": str(seed), "block_size": block_size if block_size is not None
        else f"max(1, {BLOCK_GENERATIONS} // (B * G))",
        "sampler": used_sampler, "affine_fast_path": sorted(affine),
        "policy": repr(policy), "policy_fingerprint": _policy_fingerprint(policy),
    }
    if extra_config:
        config["extra"] = extra_config
    fingerprint = hashlib.sha256(json.dumps(
        {k: v for k, v in config.items() if k not in ("num_generations", "num_prompts", "extra")},
        sort_keys=True).encode()).hexdigest()[:24]

    cells = [(G, B) for G in Gs for B in Bs]
    done: dict = {}
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        for G, B in cells:
            st = _load_cell(checkpoint_dir, G, B, fingerprint)
            if st is not None:
                done[(G, B)] = st
    todo = [c for c in cells if c not in done]
    tasks = [_Task(policy=policy, estimators=names, funcs=funcs, G=G, B=B, num_replicates=R,
                   block_size=block_size_for(G, B, block_size), seed=seed, gradient=gradient,
                   values=values, fam=fam, affine=affine) for G, B in todo]

    from tqdm import tqdm

    bar = tqdm(total=len(cells), initial=len(done), desc="Monte Carlo cells", unit="cell",
               file=sys.stderr, disable=not progress)
    try:
        for i, st in _executor_map(tasks, scheduler, max_workers):
            cell = todo[i]
            done[cell] = st
            if checkpoint_dir is not None:
                _save_cell(checkpoint_dir, *cell, st, fingerprint)
            bar.update(1)
    finally:
        bar.close()

    return _to_dataset(policy, names, Gs, Bs, done, exact, seed, config, command)


def _exact_values(policy, names, Gs, Bs, exact):
    out = np.full((len(names), len(Gs), len(Bs)), np.nan)
    if exact is None:
        return out, "none"
    if exact == "auto":
        try:
            from .mse import SUPPORTED, exact_mse
        except ImportError:
            return out, "none"
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
        return out, "ustat_grpo.mse.exact_mse"
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
         "exact": (dims, ex, {"long_name": "exact MSE (NaN: no closed form)", "source": source})},
        coords={"estimator": np.array(names, dtype=object),
                "num_generations": np.array(Gs, dtype=np.int64),
                "num_prompts": np.array(Bs, dtype=np.int64)},
    )
    ds = _with_se(ds)
    ds.attrs.update(title="Monte Carlo MSE of GRPO-family gradient estimators (ustat_grpo.montecarlo)",
                    **provenance_attrs(seed=seed, config=config, command=command))
    ds.attrs["policy_fingerprint"] = config["policy_fingerprint"]
    return ds


def _with_se(ds):
    count = ds["count"].values
    var = ds["m2"].values / np.where(count > 1, count - 1, 1)
    se = np.where(count > 1, np.sqrt(var / np.where(count > 0, count, 1)), np.nan)
    ds["mse_se"] = (ds["mse"].dims, se, {"long_name": "standard error of mse"})
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


def write_netcdf(ds, path) -> None:
    """Write ``ds`` as NetCDF4 (h5netcdf engine), atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, path)


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
