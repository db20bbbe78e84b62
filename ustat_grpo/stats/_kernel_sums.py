"""Kernel sums of the U-statistic engine: tuple enumeration, ``S`` and ``R_i``, overlap moments.

``S = sum_{i_1 < ... < i_m} h(X_{i_1}, ..., X_{i_m})`` and ``R_i`` (the sum over the tuples that
contain ``i``) by enumerating all tuples in memory-bounded batches (:func:`sums_vectorized`) or one
tuple at a time (:func:`sums_naive`, the test oracle); the means of ``<h(S), h(S')>`` over tuple
pairs sharing ``j`` indices give the unbiased variance components (:func:`zetas`).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["tuple_batches", "evaluate", "sums_vectorized", "sums_naive", "zetas"]


def _check_values(vals, k, name):
    vals = np.asarray(vals, dtype=float)
    if vals.ndim not in (1, 2) or vals.shape[0] != k:
        raise ValueError(f"kernel {name!r} must return shape (k,) or (k, p) for k = {k} tuples; "
                         f"got shape {vals.shape}")
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"kernel {name!r} returned non-finite values")
    return vals


def tuple_batches(n: int, m: int, batch_size: int):
    """Yield index arrays ``(k, m)`` covering all ``i_1 < ... < i_m`` in lexicographic order."""
    if m == 1:
        for a in range(0, n, batch_size):
            yield np.arange(a, min(n, a + batch_size))[:, None]
        return
    if m == 2:
        # row blocks of the strict upper triangle
        i = 0
        while i < n - 1:
            rows = []
            count = 0
            while i < n - 1 and (count == 0 or count + (n - 1 - i) <= batch_size):
                rows.append(i)
                count += n - 1 - i
                i += 1
            ii = np.repeat(np.asarray(rows), [n - 1 - r for r in rows])
            jj = np.concatenate([np.arange(r + 1, n) for r in rows])
            yield np.stack([ii, jj], axis=1)
        return
    combos = itertools.combinations(range(n), m)
    while True:
        flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, batch_size)), dtype=np.intp)
        if flat.size == 0:
            return
        yield flat.reshape(-1, m)


def evaluate(kernel, data, idx):
    return _check_values(kernel(*(data[idx[:, a]] for a in range(idx.shape[1]))), idx.shape[0], kernel.name)


def _accumulate_rows(R, idx, vals):
    n = R.shape[0]
    for a in range(idx.shape[1]):
        if vals.ndim == 1:
            R += np.bincount(idx[:, a], weights=vals, minlength=n)
        else:
            for p in range(vals.shape[1]):
                R[:, p] += np.bincount(idx[:, a], weights=vals[:, p], minlength=n)


def sums_vectorized(data, kernel, batch_size):
    """Total kernel sum S and per-index sums R by enumerating all tuples in batches."""
    n, m = data.shape[0], kernel.order
    S = None
    R = None
    for idx in tuple_batches(n, m, batch_size):
        vals = evaluate(kernel, data, idx)
        if S is None:
            S = np.zeros(vals.shape[1:])
            R = np.zeros((n, *vals.shape[1:]))
        S += vals.sum(0)
        _accumulate_rows(R, idx, vals)
    return S, R


def sums_naive(data, kernel):
    n, m = data.shape[0], kernel.order
    S = None
    R = None
    for tup in itertools.combinations(range(n), m):
        v = _check_values(kernel(*(data[[t]] for t in tup)), 1, kernel.name)[0]
        if S is None:
            S = np.zeros(np.shape(v))
            R = np.zeros((n, *np.shape(v)))
        S = S + v
        for t in tup:
            R[t] = R[t] + v
    return S, R


def _overlap_moments(data, kernel, batch_size, center):
    """Mean of <h(S), h(S')> over ordered tuple pairs with |S & S'| = j, for j = 0..m.

    Uses N_c = sum_{|A| = c} ||T_A||^2, T_A = sum_{S >= A} h(S), and
    N_c = sum_j C(j, c) M_j (M_j = sum over pairs overlapping in exactly j indices).
    """
    n, m = data.shape[0], kernel.order
    if n < 2 * m:
        raise ValueError(f"unbiased variance components need n >= 2 * order = {2 * m}, got n = {n}")
    for c in range(1, m):
        if n**c > 200_000_000:
            raise ValueError(f"order {m} with n = {n} is too large for exact variance components")
    T = [None] + [None] * (m - 1)
    N = np.zeros(m + 1)
    total_sum = None
    for idx in tuple_batches(n, m, batch_size):
        vals = evaluate(kernel, data, idx) - center
        flat = vals.reshape(idx.shape[0], -1)
        if total_sum is None:
            total_sum = np.zeros(flat.shape[1])
            for c in range(1, m):
                T[c] = np.zeros((n**c, flat.shape[1]))
        total_sum += flat.sum(0)
        N[m] += float((flat**2).sum())
        for c in range(1, m):
            for sub in itertools.combinations(range(m), c):
                key = np.ravel_multi_index(tuple(idx[:, a] for a in sub), (n,) * c)
                for p in range(flat.shape[1]):
                    T[c][:, p] += np.bincount(key, weights=flat[:, p], minlength=n**c)
    N[0] = float(total_sum @ total_sum)
    for c in range(1, m):
        N[c] = float((T[c] ** 2).sum())
    M = np.zeros(m + 1)
    for j in range(m, -1, -1):
        M[j] = N[j] - sum(math.comb(i, j) * M[i] for i in range(j + 1, m + 1))
    counts = np.array([math.comb(n, m) * math.comb(m, j) * math.comb(n - m, m - j) for j in range(m + 1)], float)
    return M / counts


def zetas(data, kernel, batch_size, center):
    mean = _overlap_moments(data, kernel, batch_size, center)
    return mean[1:] - mean[0]
