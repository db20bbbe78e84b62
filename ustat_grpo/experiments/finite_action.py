"""Finite-action fast path of the Monte Carlo engine: groups as histograms over (arm, reward).

A policy with finitely many prompts, arms and reward values (``bandits.ContextualSoftmaxBandit``
and ``SoftmaxBandit``: public ``features``, ``policy_probs``, ``reward_values``,
``reward_probs``) is described at fixed ``theta`` by a :class:`FiniteActionModel`.  One block of
replicates is then sampled as (prompt, arm, reward) indices by exact inverse-CDF table lookups,
scores come from a ``(P, K, d)`` table, and every estimator that is affine in the rewards within
a group (weights ``w_g = a z_g + c``) is computed from per-arm counts and reward sums.

Streams.  :func:`errors_finite` consumes a block's generator in the order of
``ContextualSoftmaxBandit.sample`` -- a uniform per prompt slot ``(R, B)``, per arm pull
``(R, B, G)`` and, for random rewards, per reward ``(R, B, G)`` -- so for those bandits it
reproduces the generic path of :mod:`ustat_grpo.experiments.montecarlo` to rounding.  Each affine form is
checked against the estimator functions before a run (:func:`mismatched_affine`).

One prompt, at most two reward values, only affine estimators (the fused path): the block's
stream is read as raw 64-bit words, which are exactly its uniforms (:class:`_OnePromptSampler`),
and :class:`BlockErrors` takes several blocks per call -- each block from its own stream and its
own histogram -> sums matmul, every later step per replicate -- so the errors are those of one
:func:`errors_finite` per block, bit for bit (tests check both against their twins).

Numba kernel.  With the optional extra ``fast`` (numba), :mod:`ustat_grpo.experiments._numba_kernel`
counts the fused sampler's histograms (drawing the block's uniforms itself, in the same stream
order, through the bit generator's ``ctypes`` interface, with integer thresholds that decide
exactly what the float comparisons decide) and computes the ``B = 1`` affine errors'
``g_hat - g`` (the same elementwise IEEE operations in the same order; the squared norms stay
numpy's einsum, the sums numpy's BLAS matmul).  It gives the numpy path's bits and leaves each
generator in the same state, so results do not depend on whether numba is installed
(``tests/test_mc_kernel.py``).  Without numba the numpy path runs, announced once per process (a
:class:`~ustat_grpo.experiments._numba_kernel.NumpyPathWarning`); ``USTAT_GRPO_NO_NUMBA=1`` chooses it
silently.  :attr:`_OnePromptSampler.kernel` says which ran.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import _numba_kernel
from ..core._random import default_rng

__all__ = ["FiniteActionModel"]


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
        self.cdf = cdf                                                          # (X, K-1)

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
        from ..theory.presets import PRESETS
        a = 1.0 / (std() + PRESETS["grpo"].eps)
        return a, -a * zbar
    return None


def mismatched_affine(names, estimators, fam, G):
    """Names whose affine form is unknown or differs from ``estimators[name]`` at group size G.

    Probed on a small fixed sample with random scores; an estimator that rejects this ``G``
    (``ValueError``, e.g. leave_one_out at G = 1) is not disqualified: it will fail in its cell anyway.
    """
    rng = default_rng(12345)                # a fixed probe, not part of any cell stream
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


def workspace(shape):
    """Scratch arrays for :func:`errors_finite`: u, f (float64), j, ids, cat (int32), mask."""
    return (np.empty(shape), np.empty(shape), np.empty(shape, np.int32), np.empty(shape, np.int32),
            np.empty(shape, np.int32), np.empty(shape, bool))


def _thresholds(c):
    """``ceil(c * 2**53)`` as uint64, clipped to ``[0, 2**53]`` (NaN: ``2**53``): for a word
    ``w`` with uniform ``u = (w >> 11) 2**-53``, ``u >= c`` iff ``(w >> 11) >= threshold``."""
    t = np.ceil(np.asarray(c, dtype=np.float64) * 2.0 ** 53)            # exact scaling
    t = np.where(np.isnan(t), 2.0 ** 53, np.clip(t, 0.0, 2.0 ** 53))
    return np.ascontiguousarray(t.astype(np.uint64))


class _OnePromptSampler:
    """Fused block sampler for one prompt (``P = 1``) and at most two reward values (``M <= 2``).

    Reads the block's stream in the order of :func:`_draw_histograms` (prompt slots, arms,
    rewards) as raw 64-bit words: ``Generator.random`` maps a word ``w`` to ``(w >> 11) * 2**-53``,
    so ``floor(u * 2**k) = w >> (64 - k)`` and the words carry exactly the uniforms of the unfused
    sampler.  Per pull, the top ``log2(NBINS)`` bits of the arm word index a table that gives the
    arm (or "undecided" if a CDF point lies in that bin), and with the top ``RBITS`` bits of the
    reward word a second table gives the histogram cell ``a * M + m`` (or "undecided" if
    ``P(m = 0 | a)`` lies in that bin); one ``bincount`` over ``(group, cell)`` gives the histogram
    ``(R*B, K*M + 1)`` whose last column counts undecided pulls (a fraction of about
    ``(K - 1) / NBINS + 1 / 2**RBITS``).  Only those are classified exactly, by :meth:`resolve`
    from their words with ``np.searchsorted`` (the naive twin), so no comparison pass runs over
    the block.  The prompt slots are skipped with ``advance`` (``P = 1``: they decide nothing).
    """

    NBINS = 2 ** 16       # arm bins: (K-1)/NBINS of the pulls land in an undecided bin
    RBITS = 12            # reward bins 2**RBITS: 1/2**RBITS of the pulls undecided; table (K+1) 2**RBITS

    def __init__(self, fam, arm, fail):
        K = fam.score_table.shape[1]
        self.K, self.M = K, fam.reward_values.shape[-1]
        self.KM = K * self.M
        self.cdf = arm.cdf[0]                                           # (K-1,)
        self.fail = fail                                                # (K,) or None (M = 1)
        bits = int(self.NBINS).bit_length() - 1
        if self.NBINS != 2 ** bits or not 0 < bits <= 53 or not 0 < self.RBITS <= 53:
            raise ValueError("NBINS must be a power of two 2**k, 0 < k <= 53, and 0 < RBITS <= 53")
        self.arm_shift, self.reward_shift = 64 - bits, 64 - self.RBITS
        self._ws = {}
        self._nb = self._nb_setup()

    @functools.cached_property
    def _tables(self):
        """``(arm_lut, cell_lut)`` of the numpy path, built on its first use (the numba kernel
        needs neither)."""
        K, fail = self.K, self.fail
        # bin j is [j, j + 1) / NBINS; with x = cdf * NBINS (exact, non-decreasing): the arm at its
        # left edge is #{x <= j} = #{ceil(x) <= j}, just below its right edge #{x < j + 1} =
        # #{floor(x) <= j}; each is a run of arm k from the k-th to the (k+1)-th change point
        x = self.cdf * self.NBINS
        lo, hi = (np.repeat(np.arange(K), np.diff(np.concatenate(
            [[0], np.minimum(f(x), self.NBINS), [self.NBINS]]).astype(np.intp))) for f in (np.ceil, np.floor))
        arm_of_bin = np.where(hi == lo, lo, K)                          # K: undecided
        if fail is None:                                                # M = 1: the arm is the cell
            arm_lut = arm_of_bin.astype(np.intp)                        # (NBINS,), K = KM undecided
            cell_lut = None
        else:                                                           # row a of the second table
            nr = 2 ** self.RBITS
            arm_lut = (arm_of_bin * nr).astype(np.intp)                 # (NBINS,)
            left = np.arange(nr) / nr                                   # reward bins [left, left + 1/nr)
            m0 = left[None, :] + 1.0 / nr <= fail[:, None]              # (K, nr) all u < P(0): m = 0
            m1 = left[None, :] >= fail[:, None]                         # all u >= P(0): m = 1
            a2 = 2 * np.arange(K)[:, None]
            cells = np.where(m0, a2, np.where(m1, a2 + 1, self.KM))     # (K, nr)
            cell_lut = np.concatenate([cells, np.full((1, nr), self.KM)]).astype(np.intp).ravel()
        return arm_lut, cell_lut

    @property
    def arm_lut(self):
        """Arm table of the numpy path (class notes): ``(NBINS,)``, the arm (times ``2**RBITS``
        when M = 2) or ``K`` (times ``2**RBITS``) when undecided."""
        return self._tables[0]

    @property
    def cell_lut(self):
        """Cell table of the numpy path for M = 2 (``None`` when M = 1)."""
        return self._tables[1]

    #: Table bits of the numba kernel's arm lookup: 2**12 int32 entries stay in L1.
    NB_LUT_BITS = 12

    def _nb_setup(self):
        """Arguments of the numba kernel (:mod:`ustat_grpo.experiments._numba_kernel`), or ``None`` to run
        numpy (announced once when numba is missing).

        The kernel compares ``k = u 2**53`` (an integer: ``u = (w >> 11) 2**-53``) with integer
        thresholds: ``u >= c`` iff ``k >= ceil(c 2**53)`` for any double ``c`` (the scaling is
        exact), so ``athr`` (the CDF points, then a sentinel) and ``rthr`` (``P(m = 0 | a)``)
        decide exactly what ``searchsorted`` and ``u >= fail`` decide.  Its scan ``while
        athr[a] <= k`` is ``searchsorted(side="right")`` only on a sorted CDF, so an unsorted or
        non-finite one (not a distribution) stays on numpy.
        """
        from . import _numba_kernel

        cdf = np.asarray(self.cdf, dtype=np.float64)
        if not (np.isfinite(cdf).all() and (np.diff(cdf) >= 0).all()):
            return None
        kern = _numba_kernel.load()
        if kern is None:
            _numba_kernel.announce_numpy_path()
            return None
        nb = 2 ** self.NB_LUT_BITS
        lut = np.searchsorted(cdf, np.arange(nb) / nb, side="right").astype(np.int32)  # left edges
        athr = np.append(_thresholds(cdf).astype(np.int64), np.iinfo(np.int64).max)   # sentinel
        rthr = (np.empty(0, np.int64) if self.fail is None
                else _thresholds(self.fail).astype(np.int64))
        cells = np.uint8 if self.K <= 256 else np.int32                # the arms, as small as they fit
        return {"hist_for": kern.hist_for, "athr": athr, "lut": lut,
                "shift": 53 - self.NB_LUT_BITS, "rthr": rthr, "cells": np.empty(0, cells)}

    @property
    def kernel(self) -> str:
        """``"numba"`` when the numba kernel counts the histograms, else ``"numpy"``."""
        return "numpy" if self._nb is None else "numba"

    def _nb_block(self, gen, R, B, G, out):
        """One block's histogram ``(R*B, K*M)`` into ``out`` (float64) by the numba kernel: the
        counts of :meth:`__call__`, bit for bit, from the same uniforms of the same stream (drawn
        by the kernel through the generator's ``ctypes`` interface, under its lock: the prompt
        slots, then the arms, then the rewards), and the generator left in the same state."""
        c = self._nb
        n = R * B
        if c["cells"].size < n * G:
            c["cells"] = np.empty(n * G, c["cells"].dtype)
        if out.shape != (n, self.KM) or out.dtype != np.float64:
            raise ValueError("out must be a float64 array of shape (R*B, K*M)")
        bg = gen.bit_generator
        hist = c["hist_for"](bg)
        with bg.lock:
            hist(bg.ctypes.state_address, n, G, c["athr"], c["lut"], c["shift"], c["rthr"], c["cells"], out)
        return out

    def _workspace(self, n, G):
        key = (n, G)
        if key not in self._ws:
            self._ws.clear()
            off = np.repeat(np.arange(n, dtype=np.intp) * (self.KM + 1), G)   # (n*G,) group offsets
            self._ws[key] = (np.empty(n * G, np.intp), np.empty(n * G, np.intp), off)
        return self._ws[key]

    def block(self, gen, R, B, G):
        """One block: ``hist (R*B, K*M + 1)`` (int64; last column: undecided pulls) and the
        undecided pulls' ``groups (k,)`` and ``words (1 or 2, k)``."""
        n = R * B
        nm = 1 if self.fail is None else 2
        a, b, off = self._workspace(n, G)
        bg = gen.bit_generator
        bg.advance(n)                                                   # prompt slots (stream order)
        w = bg.random_raw(nm * n * G)                                   # (nm*n*G,) arms, then rewards
        np.right_shift(w[:n * G], self.arm_shift, out=a.view(np.uint64))       # arm bin
        np.take(self.arm_lut, a, out=b, mode="clip")                   # clip: unbuffered; in range
        if self.cell_lut is not None:
            np.right_shift(w[n * G:], self.reward_shift, out=a.view(np.uint64))  # reward bin
            np.add(b, a, out=b)
            np.take(self.cell_lut, b, out=a, mode="clip")              # cell a*M + m, or KM
            b = a
        np.add(b, off, out=b)                                           # (n*G,) + group offsets
        hist = np.bincount(b, minlength=n * (self.KM + 1)).reshape(n, self.KM + 1)
        redo = np.flatnonzero(hist[:, self.KM])                         # groups with undecided pulls
        gi, pj = np.nonzero(b.reshape(n, G)[redo] == (redo * (self.KM + 1) + self.KM)[:, None])
        groups = redo[gi]
        return hist, groups, w.reshape(nm, n, G)[:, groups, pj]

    def resolve(self, hist, groups, words):
        """Count the undecided pulls ``(groups (k,), words (1 or 2, k))`` in ``hist`` (in place).

        Each pull's cell comes from its uniforms by ``np.searchsorted`` on the CDF and one
        comparison, as in :func:`_draw_histograms` (the naive twin).
        """
        if not groups.size:
            return hist
        u = (words >> np.uint64(11)).astype(float)                      # (1 or 2, k), exact
        u *= 2.0 ** -53                                                 # = Generator.random
        c = np.searchsorted(self.cdf, u[0], side="right")               # (k,) arms
        if self.fail is not None:
            c = c * self.M + (u[1] >= self.fail[c])
        np.add.at(hist, (groups, c), 1)
        return hist

    def __call__(self, gen, R, B, G):
        """Histogram ``(R*B, K*M)`` of one block's groups (int64 counts; float64 from the numba
        kernel, the same values)."""
        if self._nb is not None:
            return self._nb_block(gen, R, B, G, np.empty((R * B, self.KM)))
        return self.resolve(*self.block(gen, R, B, G))[:, :-1]

    def histograms(self, gens, sizes, B, G, *, out=None):
        """Histograms ``(sum(sizes)*B, K*M)`` (float) of consecutive blocks, one per generator.

        The same counts as one :meth:`__call__` per block; the undecided pulls of all blocks are
        resolved together, which saves their per-call overhead.
        """
        out = np.empty((sum(sizes) * B, self.KM)) if out is None else out
        if self._nb is not None:
            row = 0
            for gen, R in zip(gens, sizes):
                self._nb_block(gen, R, B, G, out[row:row + R * B])
                row += R * B
            return out
        groups, words = [], []
        row = 0
        for gen, R in zip(gens, sizes):
            h, g, w = self.block(gen, R, B, G)
            np.copyto(out[row:row + R * B], h[:, :-1])
            groups.append(g + row)
            words.append(w)
            row += R * B
        return self.resolve(out, np.concatenate(groups), np.concatenate(words, axis=1))


def fast_path_kernel() -> str:
    """``"numba"`` or ``"numpy"``: which kernel this process's fast path runs
    (:mod:`ustat_grpo.experiments._numba_kernel`)."""
    return "numpy" if _numba_kernel.load() is None else "numba"


def samplers_for(fam):
    P, K, _ = fam.score_table.shape
    M = fam.reward_values.shape[-1]
    prompt = _CategoricalSampler(fam.prompt_probs) if P > 1 else None
    arm = _CategoricalSampler(fam.action_probs)
    fail = reward = None
    if M == 2:                      # reward index 1 iff u >= P(index 0), as inverse CDF
        fail = fam.reward_probs[..., 0].reshape(P * K).copy()
    elif M > 2:
        reward = _RewardSampler(fam.reward_probs.reshape(P * K, M))
    maps = one = None
    if P == 1 and M <= 2:
        one = _OnePromptSampler(fam, arm, fail)
    if P == 1:                      # (K*M, 2d + 1): histogram cell -> [z W, W, z]
        onehot = np.repeat(np.eye(K), M, axis=0)                        # (KM, K)
        z = fam.reward_values[0].reshape(K * M, 1)
        maps = np.concatenate([(onehot * z) @ fam.score_table[0], onehot @ fam.score_table[0], z], axis=1)
    return prompt, arm, fail, reward, one, maps


class _RewardSampler:
    """Inverse-CDF reward index per (x, a) row for ``M > 2`` reward values (plain comparisons)."""

    def __init__(self, probs):
        self.cdf = np.cumsum(probs, axis=-1)[:, :-1]                    # (P*K, M-1)

    def __call__(self, u, rows):
        c = self.cdf[rows]                                              # (..., M-1)
        return (u[..., None] >= c).sum(-1)


# ---------------------------------------------------------------------------- one block

@dataclass
class _Groups:
    """One block of ``R x B`` groups of size ``G``, reduced to histograms over (arm, reward value).

    ``x (R, B)`` prompt ids (``None`` when ``P = 1``); ``ids (R, B, G)`` flat ``x * K + a`` of
    each pull; ``cat (R, B, G)`` its histogram cell ``slot * K * M + a * M + m``; ``hist
    (R, B, K * M)`` the counts; ``vals`` the reward value of each histogram cell (``(1, 1, KM)``
    or ``(R, B, KM)``); ``zbar (R, B)`` the group mean reward.  ``P = 1``: ``ZW, NW (R, B, d)``
    are ``sum_g z_g W_g`` and ``sum_g W_g``; ``P > 1``: ``n, zs (R, B, K)`` are pulls and reward
    sums per arm.
    """

    x: np.ndarray | None
    ids: np.ndarray
    cat: np.ndarray
    hist: np.ndarray
    vals: np.ndarray
    zbar: np.ndarray
    ZW: np.ndarray | None = None
    NW: np.ndarray | None = None
    n: np.ndarray | None = None
    zs: np.ndarray | None = None

    def std(self, G):
        """Bessel group standard deviation ``(R, B)``, two-pass over the histogram."""
        dev = self.vals - self.zbar[..., None]
        return np.sqrt((self.hist * dev * dev).sum(-1) / (G - 1))


def _draw_histograms(fam, gen, R, B, G, samplers, ws):
    """Draw one block (module notes: stream order) -> ``x, ids, cat, hist (R*B, K*M)``."""
    P, K, _ = fam.score_table.shape
    M = fam.reward_values.shape[-1]
    prompt_sampler, arm_sampler, fail_probs, reward_sampler, _, _ = samplers
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
    return x, ids, cat, hist


def _groups(fam, gen, R, B, G, samplers, ws, *, fused=False) -> _Groups:
    """Draw one block and reduce each group to the sums that affine estimators need.

    ``fused`` (``P = 1``, ``M <= 2``, only affine estimators): the same histogram from
    :class:`_OnePromptSampler`, without the per-pull ``ids`` and ``cat``.
    """
    P, K, d = fam.score_table.shape
    M = fam.reward_values.shape[-1]
    KM = K * M
    if fused:
        x = ids = cat = None
        hist = samplers[-2](gen, R, B, G).astype(float)                # (R*B, KM)
    else:
        x, ids, cat, hist = _draw_histograms(fam, gen, R, B, G, samplers, ws)
    if P == 1:
        # one matmul gives, per group, sum_g z_g W_g, sum_g W_g and sum_g z_g
        Y = hist @ samplers[-1]                                         # (R*B, 2d + 1)
        return _Groups(x=x, ids=ids, cat=cat, hist=hist.reshape(R, B, KM),
                       vals=fam.reward_values[0].reshape(1, 1, KM), zbar=Y[:, 2 * d].reshape(R, B) / G,
                       ZW=Y[:, :d].reshape(R, B, d), NW=Y[:, d:2 * d].reshape(R, B, d))
    hist3 = hist.reshape(R, B, K, M)
    vals = fam.reward_values[x]                                         # (R, B, K, M)
    n = hist3.sum(-1)                                                   # (R, B, K) pulls per arm
    zs = (hist3 * vals).sum(-1)                                         # (R, B, K) reward sums
    return _Groups(x=x, ids=ids, cat=cat, hist=hist.reshape(R, B, KM), vals=vals.reshape(R, B, KM),
                   zbar=zs.sum(-1) / G, n=n, zs=zs)


def _fused_groups(fam, hist, maps, sizes, B, G, *, Y=None) -> _Groups:
    """:func:`_groups` of consecutive fused blocks from their histograms ``hist (sum(sizes)*B, KM)``.

    The histogram -> sums matmul runs block by block: the same BLAS call on the same shapes as
    one block at a time (BLAS results can depend on the number of rows), so the same bits.
    """
    d = fam.score_table.shape[-1]
    KM = hist.shape[-1]
    R = sum(sizes)
    Y = np.empty((hist.shape[0], maps.shape[1])) if Y is None else Y    # (R*B, 2d + 1)
    lo = 0
    for r in sizes:
        np.matmul(hist[lo:lo + r * B], maps, out=Y[lo:lo + r * B])
        lo += r * B
    return _Groups(x=None, ids=None, cat=None, hist=hist.reshape(R, B, KM),
                   vals=fam.reward_values[0].reshape(1, 1, KM), zbar=Y[:, 2 * d].reshape(R, B) / G,
                   ZW=Y[:, :d].reshape(R, B, d), NW=Y[:, d:2 * d].reshape(R, B, d))


class _Scratch:
    """Reusable flat buffers by name: fresh multi-MB temporaries cost page faults on every call."""

    def __init__(self):
        self._bufs = {}
        self._tiles = {}

    def __call__(self, name, shape, dtype=float):
        size = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(size, dtype)
        return buf[:size].reshape(shape)

    def tile(self, v, n):
        """``np.tile(v, n)``, kept between calls."""
        t = self._tiles.get(n)
        if t is None or not np.array_equal(t[:v.size], v):
            self._tiles.clear()
            t = self._tiles[n] = np.tile(v, n)
        return t


def _times(w, X, out):
    """``w[:, None] * X`` into ``out (R, d)``: one scalar product when ``w (R,)`` is constant.

    Elementwise either way (``x * w == w * x``); a non-constant ``w`` is repeated to the layout of
    ``X`` first, since a broadcast over a short last axis runs numpy's inner loop once per row.
    """
    w0 = w[0]
    if not (w == w0).all():
        return np.multiply(np.repeat(w, X.shape[-1]).reshape(X.shape), X, out=out)
    if w0 == 1:                                       # 1 * x == x
        np.copyto(out, X)
        return out
    return np.multiply(X, w0, out=out)


def _affine_errors_one_prompt(task, grp, fast, values, scratch=None):
    """Squared errors ``(E', R)`` of the affine estimators ``fast`` at once (``P = 1``).

    ``scratch``: an optional :class:`_Scratch` for the ``(R, d)`` temporaries.
    """
    scratch = _Scratch() if scratch is None else scratch
    G, B = task.G, task.B
    coefs = [_affine_coefficients(task.estimators[i], grp.zbar, lambda: grp.std(G), values, G)
             for i in fast]
    if B == 1 and (kern := _numba_kernel.load()) is not None:
        return _affine_errors_one_prompt_nb(kern.affine_diff, task, grp, coefs, scratch)
    if B == 1:
        # The einsums of B > 1 sum over one b: the same products, in fewer and contiguous passes.
        # A coefficient that is constant over replicates is a scalar, and c = 0 adds nothing
        # (x + 0 == x but for the sign of a zero, which the squares drop); with a = 1 as well the
        # copy of ZW and the scaling below are one pass (1 * x / G == x / G).
        R, d = grp.ZW.shape[0], grp.ZW.shape[-1]
        ZW = scratch("ZW", (R, d))
        np.copyto(ZW, grp.ZW[:, 0])
        NW = None
        est = scratch("est", (len(fast), R, d))                        # (E', R, d)
        tmp = scratch("tmp", (R, d))
        pow2 = G & (G - 1) == 0                       # x / 2**k == x * 2**-k exactly

        def scale(x, out):
            return np.multiply(x, 1.0 / G, out=out) if pow2 else np.divide(x, G, out=out)

        for e, (a, c) in enumerate(coefs):
            a, c = a[:, 0], c[:, 0]
            if not (c != 0).any() and (a == 1).all():
                scale(ZW, est[e])
                continue
            _times(a, ZW, est[e])
            if (c != 0).any():
                if NW is None:
                    NW = scratch("NW", (R, d))
                    np.copyto(NW, grp.NW[:, 0])
                est[e] += _times(c, NW, tmp)
            scale(est[e], est[e])
        flat = est.reshape(len(fast), -1)                               # (E', R * d)
        flat -= scratch.tile(task.gradient, R)
        return np.einsum("erd,erd->er", est, est)
    ca = np.stack([c[0] for c in coefs])                                # (E', R, B)
    cc = np.stack([c[1] for c in coefs])
    est = np.einsum("erb,rbd->erd", ca, grp.ZW) + np.einsum("erb,rbd->erd", cc, grp.NW)   # (E', R, d)
    diff = est / (B * G) - task.gradient
    return np.einsum("erd,erd->er", diff, diff)


def _affine_errors_one_prompt_nb(affine_diff, task, grp, coefs, scratch):
    """:func:`_affine_errors_one_prompt` at ``B = 1`` with ``g_hat - g`` from the numba kernel:
    the same elementwise IEEE operations in the same order (:mod:`ustat_grpo.experiments._numba_kernel`), so
    the same bits; the squared norms are numpy's einsum, as there."""
    G = task.G
    R, d = grp.ZW.shape[0], grp.ZW.shape[-1]
    E = len(coefs)
    a, c = scratch("nb_a", (E, R)), scratch("nb_c", (E, R))
    use_c = np.empty(E, np.bool_)
    for e, (ae, ce) in enumerate(coefs):
        a[e], c[e] = ae[:, 0], ce[:, 0]
        use_c[e] = bool((c[e] != 0).any())          # as the numpy path: c = 0 adds nothing
    est = scratch("est", (E, R, d))
    grad = np.ascontiguousarray(task.gradient, dtype=np.float64)
    affine_diff(grp.ZW[:, 0], grp.NW[:, 0], a, c, use_c, float(G), bool(G & (G - 1) == 0), grad, est)
    return np.einsum("erd,erd->er", est, est)


def _affine_diff_contextual(task, grp, name, values, R):
    """``g_hat - g (R, d)`` of one affine estimator from per-arm counts and sums (``P > 1``)."""
    P, K, d = task.fam.score_table.shape
    ca, cc = _affine_coefficients(name, grp.zbar, lambda: grp.std(task.G), values, task.G)   # (R, B)
    coef = ca[..., None] * grp.zs + cc[..., None] * grp.n               # (R, B, K) = sum_{g: a_g=k} w_g
    pk = ((np.arange(R)[:, None] * P + grp.x)[..., None] * K + np.arange(K)).ravel()
    per = np.bincount(pk, weights=coef.ravel(), minlength=R * P * K).reshape(R, P * K)
    return per @ task.fam.score_table.reshape(P * K, d) / (task.B * task.G) - task.gradient


def _table_diff(task, grp, name, values, R):
    """``g_hat - g (R, d)`` of any estimator, on the drawn rewards and table scores (semi-generic)."""
    fam, B = task.fam, task.B
    P, K, d = fam.score_table.shape
    M = fam.reward_values.shape[-1]
    KM = K * M
    m = (grp.cat - (np.arange(R * B, dtype=np.int32) * np.int32(KM)).reshape(R, B, 1)) % M
    z = fam.reward_values.reshape(P * K, M)[grp.ids, m]                 # (R, B, G)
    table = fam.score_table.reshape(P * K, d)
    est = np.asarray(task.functions()[name](z, table[grp.ids], values=values))   # (R, B, d)
    return est.mean(axis=-2) - task.gradient


def errors_finite(task, gen, R, samplers, ws):
    """Squared errors ``(E, R)`` of one block for a finite-action model (module notes).

    ``task`` is a ``montecarlo._Task`` with ``fam`` set; ``samplers`` come from
    :func:`samplers_for`, ``ws`` from :func:`workspace` (scratch of shape ``(R, B, G)`` reused
    across blocks).  :class:`BlockErrors` runs several fused blocks per call; this one-block
    function is its twin.
    """
    fused = samplers[-2] is not None and all(name in task.affine for name in task.estimators)
    return _errors(task, _groups(task.fam, gen, R, task.B, task.G, samplers, ws, fused=fused), R)


def _errors(task, grp, R, scratch=None):
    """Squared errors ``(E, R)`` of the estimators of ``task`` on the reduced groups ``grp``."""
    P = task.fam.score_table.shape[0]
    values = task.values[np.zeros((R, task.B), dtype=np.intp) if grp.x is None else grp.x]   # (R, B)
    out = np.empty((len(task.estimators), R))
    fast = [i for i, name in enumerate(task.estimators) if name in task.affine] if P == 1 else []
    if fast:                                   # all affine estimators at once: sum_b sum_g w_bg W_bg
        out[fast] = _affine_errors_one_prompt(task, grp, fast, values, scratch)
    for i, name in enumerate(task.estimators):
        if i in fast:
            continue
        if name in task.affine:                                         # P > 1
            diff = _affine_diff_contextual(task, grp, name, values, R)
        else:
            diff = _table_diff(task, grp, name, values, R)
        out[i] = np.einsum("rd,rd->r", diff, diff)
    return out


class BlockErrors:
    """Squared errors of consecutive blocks of one grid cell: ``errors(gens, sizes) -> (E, sum(sizes))``.

    One generator per block, in block order.  On the fused path (``P = 1``, ``M <= 2``, only
    affine estimators) several blocks go through one call: each block is still drawn from its own
    stream into its own histogram, and every step after the histograms is per replicate (the
    matmul per block, :func:`_fused_groups`), so the errors equal one :func:`errors_finite` per
    block bit for bit, with numpy's per-call overhead paid once per call rather than per block.
    Elsewhere one block per call.
    """

    #: Generations per call on the fused path: 4 blocks of the default size, the fastest of
    #: 2**16..2**20 in interleaved timings of bench_mc.py's problem (larger calls page-fault on
    #: their multi-MB scratch); amortises numpy's per-call overhead over ~4k-row arrays.
    BATCH_GENERATIONS = 2 ** 18

    def __init__(self, task):
        self.task = task
        self.samplers = samplers_for(task.fam)
        self.fused = self.samplers[-2] is not None and all(n in task.affine for n in task.estimators)
        self._ws = None
        self._scratch = _Scratch()

    def blocks_per_call(self, block_size):
        """How many blocks of ``block_size`` replicates one call should take."""
        if not self.fused:
            return 1
        return max(1, self.BATCH_GENERATIONS // (block_size * self.task.B * self.task.G))

    def __call__(self, gens, sizes):
        task = self.task
        if self.fused:
            n, s = sum(sizes) * task.B, self._scratch
            hist = self.samplers[-2].histograms(gens, sizes, task.B, task.G,
                                                out=s("hist", (n, self.samplers[-1].shape[0])))
            grp = _fused_groups(task.fam, hist, self.samplers[-1], sizes, task.B, task.G,
                                Y=s("Y", (n, self.samplers[-1].shape[1])))
            return _errors(task, grp, sum(sizes), s)
        out = []
        for gen, r in zip(gens, sizes):
            if self._ws is None or self._ws[0].shape[0] != r:
                self._ws = workspace((r, task.B, task.G))
            out.append(errors_finite(task, gen, r, self.samplers, self._ws))
        return out[0] if len(out) == 1 else np.concatenate(out, axis=1)
