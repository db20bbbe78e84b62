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
reproduces the generic path of :mod:`ustat_grpo.montecarlo` to rounding.  Each affine form is
checked against the estimator functions before a run (:func:`mismatched_affine`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        from .presets import PRESETS
        a = 1.0 / (std() + PRESETS["grpo"].eps)
        return a, -a * zbar
    return None


def mismatched_affine(names, estimators, fam, G):
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


def workspace(shape):
    """Scratch arrays for :func:`errors_finite`: u, f (float64), j, ids, cat (int32), mask."""
    return (np.empty(shape), np.empty(shape), np.empty(shape, np.int32), np.empty(shape, np.int32),
            np.empty(shape, np.int32), np.empty(shape, bool))


class _OnePromptSampler:
    """Fused block sampler for one prompt (``P = 1``) and at most two reward values (``M <= 2``).

    Draws the block's uniforms in the stream order of :func:`_draw_histograms` (prompt slots,
    arms, rewards) and returns the same histogram ``(R*B, K*M)`` in fewer passes: the arm table
    gives the histogram cell ``a * M`` directly, and a bin that contains a CDF point (so one table
    lookup cannot decide, ``_CategoricalSampler.steps``) maps to an extra per-group cell
    ``K * M``.  Groups that hit it (a fraction of about ``G * (K - 1) / NBINS``) are redone
    exactly by ``np.searchsorted`` (the sampler's naive twin), so no comparison pass runs over the
    block.
    """

    NBINS = 2 ** 16       # (K-1)/NBINS of the pulls land in an undecided bin; the table stays in L2

    def __init__(self, fam, arm, fail):
        K = fam.score_table.shape[1]
        self.M = fam.reward_values.shape[-1]
        self.KM = K * self.M
        self.cdf = arm.cdf[0]                                           # (K-1,)
        edges = np.arange(self.NBINS) / self.NBINS                      # exact binary fractions
        lo = np.searchsorted(self.cdf, edges, side="right")             # category at the left edge
        hi = np.searchsorted(self.cdf, edges + 1.0 / self.NBINS, side="left")   # just below the right
        self.lut = np.where(hi == lo, lo * self.M, self.KM).astype(np.int32)    # (NBINS,)
        self.fail = fail                                                # (K,) or None (M = 1)
        if fail is not None:                                            # indexed by cell a * M
            self.fail_cells = np.full(self.KM + 1, np.inf)
            self.fail_cells[:self.KM:self.M] = fail
        self._ws = {}

    def _workspace(self, R, B, G):
        key = (R, B, G)
        if key not in self._ws:
            self._ws.clear()
            n = R * B
            idx = np.int32 if n * (self.KM + 1) < 2 ** 31 else np.intp
            off = np.repeat(np.arange(n, dtype=idx) * idx(self.KM + 1), G).reshape(n, G)
            # contiguous same-type offsets: a broadcast or mixed-type add costs 3-5x more
            self._ws[key] = (np.empty((1 if self.fail is None else 2, n, G)),   # uniforms
                             np.empty((n, G)), np.empty((n, G), np.int32),      # f, j
                             np.empty((n, G), np.int32), np.empty((n, G), idx),   # cell, cell + offset
                             np.empty((n, G), bool), off)                       # mask, (n, G) offsets
        return self._ws[key]

    def __call__(self, gen, R, B, G):
        """Histogram ``(R*B, K*M)`` (int64) of one block's groups."""
        u, f, j, cell, flat, mask, off = self._workspace(R, B, G)
        n, KM1 = R * B, self.KM + 1
        gen.random((R, B))                                              # prompt slots (stream order)
        gen.random(out=u)                                               # arms, then rewards
        np.multiply(u[0], self.NBINS, out=f)
        np.copyto(j, f, casting="unsafe")                               # floor: u >= 0
        np.take(self.lut, j, out=cell, mode="clip")                     # a * M, or KM if undecided
        if self.fail is not None:
            np.take(self.fail_cells, cell, out=f, mode="clip")
            np.greater_equal(u[1], f, out=mask)                         # reward index 1 iff u >= P(0)
            cell += mask
        np.add(cell, off, out=flat)                                     # (n, G) group offsets
        hist = np.bincount(flat.ravel(), minlength=n * KM1).reshape(n, KM1)
        redo = np.flatnonzero(hist[:, -1])
        if redo.size:                                                   # exact, group by group
            ur = u[:, redo]                                             # (1 or 2, r, G)
            c = np.searchsorted(self.cdf, ur[0], side="right")          # (r, G) arms
            if self.fail is not None:
                c = c * self.M + (ur[1] >= self.fail[c])
            c += off[:redo.size]
            hist[redo] = np.bincount(c.ravel(), minlength=redo.size * KM1).reshape(-1, KM1)
        return hist[:, :-1]


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


def _times(w, X, out):
    """``w[:, None] * X`` into ``out (R, d)``: one scalar product when ``w (R,)`` is constant."""
    w0 = w[0]
    if not (w == w0).all():
        return np.multiply(w[:, None], X, out=out)
    if w0 == 1:                                       # 1 * x == x
        np.copyto(out, X)
        return out
    return np.multiply(X, w0, out=out)


def _affine_errors_one_prompt(task, grp, fast, values):
    """Squared errors ``(E', R)`` of the affine estimators ``fast`` at once (``P = 1``)."""
    G, B = task.G, task.B
    coefs = [_affine_coefficients(task.estimators[i], grp.zbar, lambda: grp.std(G), values, G)
             for i in fast]
    if B == 1:
        # The einsums of B > 1 sum over one b: the same products, in fewer and contiguous passes.
        # A coefficient that is constant over replicates is a scalar, and c = 0 adds nothing
        # (x + 0 == x but for the sign of a zero, which the squares drop).
        ZW = np.ascontiguousarray(grp.ZW[:, 0])                         # (R, d)
        NW = np.ascontiguousarray(grp.NW[:, 0])
        est = np.empty((len(fast),) + ZW.shape)                         # (E', R, d)
        tmp = np.empty(ZW.shape)
        for e, (a, c) in enumerate(coefs):
            _times(a[:, 0], ZW, est[e])
            if (c != 0).any():
                est[e] += _times(c[:, 0], NW, tmp)
        BG = G
        if BG & (BG - 1) == 0:                        # x / 2**k == x * 2**-k exactly
            est *= 1.0 / BG
        else:
            est /= BG
        flat = est.reshape(len(fast), -1)                               # (E', R * d)
        flat -= np.tile(task.gradient, ZW.shape[0])
        return np.einsum("erd,erd->er", est, est)
    ca = np.stack([c[0] for c in coefs])                                # (E', R, B)
    cc = np.stack([c[1] for c in coefs])
    est = np.einsum("erb,rbd->erd", ca, grp.ZW) + np.einsum("erb,rbd->erd", cc, grp.NW)   # (E', R, d)
    diff = est / (B * G) - task.gradient
    return np.einsum("erd,erd->er", diff, diff)


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
    across blocks).
    """
    P = task.fam.score_table.shape[0]
    fused = samplers[-2] is not None and all(name in task.affine for name in task.estimators)
    grp = _groups(task.fam, gen, R, task.B, task.G, samplers, ws, fused=fused)
    values = task.values[np.zeros((R, task.B), dtype=np.intp) if grp.x is None else grp.x]   # (R, B)
    out = np.empty((len(task.estimators), R))
    fast = [i for i, name in enumerate(task.estimators) if name in task.affine] if P == 1 else []
    if fast:                                   # all affine estimators at once: sum_b sum_g w_bg W_bg
        out[fast] = _affine_errors_one_prompt(task, grp, fast, values)
    for i, name in enumerate(task.estimators):
        if i in fast:
            continue
        if name in task.affine:                                         # P > 1
            diff = _affine_diff_contextual(task, grp, name, values, R)
        else:
            diff = _table_diff(task, grp, name, values, R)
        out[i] = np.einsum("rd,rd->r", diff, diff)
    return out
