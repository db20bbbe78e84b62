"""Optional numba kernels of the finite-action fast path (install the extra ``fast``: numba).

Nothing is compiled by this package: numba (a maintained JIT compiler, imported lazily) compiles
the two loops below in memory on their first call in a process (about a second; ``cache`` is
off, so nothing is written to or loaded from disk), and they draw through numba's documented
support for ``numpy.random.Generator``: ``gen.random()`` in a jitted function calls the
generator's own bit generator (its ``next_double``, what ``Generator.random`` calls) on its own
state, so the words, their order and the generator's final state are numpy's.

* :func:`hist_block` -- the fused one-prompt block sampler of
  :class:`ustat_grpo.finite_action._OnePromptSampler`: one pass per pull counts the histogram
  ``(n, K*M)`` with integer thresholds that decide exactly what its float comparisons decide.
* :func:`affine_diff` -- the ``B = 1`` affine errors' ``g_hat - g``, the same elementwise IEEE
  operations in the same order as numpy's path (no fast-math: numba's default).

Without numba :func:`load` returns ``None`` and :mod:`ustat_grpo.finite_action` runs its numpy
twin (the same bits, ~1.5-2x slower end to end), announced once per process by a
:class:`NumpyPathWarning`.  ``USTAT_GRPO_NO_NUMBA=1`` chooses the numpy path without a warning.
"""
from __future__ import annotations

import os
import warnings
from typing import NamedTuple

__all__ = ["NumpyPathWarning", "load", "announce_numpy_path"]


class NumpyPathWarning(UserWarning):
    """The finite-action fast path runs on numpy because numba is not installed (same results,
    slower; ``pip install "ustat_grpo[fast]"``)."""


class Kernels(NamedTuple):
    """The jitted functions (module notes)."""

    hist_block: object
    affine_diff: object
    hist_words: object


_kernels: dict = {}
_announced = False


def disabled() -> bool:
    """Whether ``USTAT_GRPO_NO_NUMBA`` asks for the numpy path."""
    return os.environ.get("USTAT_GRPO_NO_NUMBA", "") not in ("", "0")


def load():
    """:class:`Kernels` jitted by numba, or ``None`` without numba (or with
    ``USTAT_GRPO_NO_NUMBA=1``).  Built once per process; each compiles on its first call."""
    if disabled():
        return None
    if "k" not in _kernels:
        try:
            import numba
        except ImportError:
            _kernels["k"] = None
        else:
            _kernels["k"] = _build(numba)
    return _kernels["k"]


def announce_numpy_path() -> None:
    """Warn once per process that the numpy path runs because numba is missing (not when
    ``USTAT_GRPO_NO_NUMBA`` asked for it)."""
    global _announced
    if _announced or disabled():
        return
    _announced = True
    warnings.warn("numba is not installed: the Monte Carlo fast path runs its numpy twin (the "
                  "same numbers, about 1.5-2x slower); pip install 'ustat_grpo[fast]' for the "
                  "numba kernel", NumpyPathWarning, stacklevel=3)


def _build(numba):
    import numpy as np

    njit = numba.njit(nogil=True)            # no fastmath, no cache: IEEE operations, no files
    two53 = 9007199254740992.0               # 2**53

    @njit
    def _word(gen):
        # Generator.random's uniform is u = k * 2**-53 with k = next_uint64 >> 11, so k = u * 2**53
        # exactly; for a double c, u >= c iff k >= ceil(c * 2**53) (finite_action._thresholds).
        return np.int64(gen.random() * two53)

    @njit
    def _arm(k, athr, lut, shift):
        a = lut[k >> shift]                  # arm at the left edge of k's table bin
        while athr[a] <= k:                  # athr[K-1]: a sentinel above every k
            a += 1
        return a

    @njit
    def _cell(a, k, rthr):
        return 2 * a + (1 if k >= rthr[a] else 0)   # M = 2: reward index 1 iff u >= P(m = 0 | a)

    @njit
    def hist_block(gen, n, G, athr, lut, shift, rthr, arms, hist):
        """Histogram ``hist (n, K*M)`` of one block (stream order: n prompt-slot uniforms,
        unused; then the n*G arm uniforms; then, when ``rthr`` is not empty (M = 2), the n*G
        reward uniforms).  ``arms``: int32 scratch of n*G."""
        M = 2 if rthr.size else 1
        hist[:, :] = 0.0
        for _ in range(n):                   # prompt slots (P = 1: they decide nothing)
            gen.random()
        if M == 1:
            for g in range(n):
                for _ in range(G):
                    hist[g, _arm(_word(gen), athr, lut, shift)] += 1.0
            return
        for i in range(n * G):               # all arm uniforms of the block ...
            arms[i] = _arm(_word(gen), athr, lut, shift)
        i = 0
        for g in range(n):                   # ... then its reward uniforms
            for _ in range(G):
                a = arms[i]
                i += 1
                hist[g, _cell(a, _word(gen), rthr)] += 1.0

    @njit
    def hist_words(ks, n, G, athr, lut, shift, rthr, hist):
        """:func:`hist_block` on given integers ``ks = u 2**53`` (stream order) in place of a
        generator's draws: its cell functions on chosen values, for tests."""
        M = 2 if rthr.size else 1
        hist[:, :] = 0.0
        for g in range(n):
            for j in range(G):
                i = g * G + j
                a = _arm(ks[n + i], athr, lut, shift)
                hist[g, a if M == 1 else _cell(a, ks[n + n * G + i], rthr)] += 1.0

    @njit
    def affine_diff(ZW, NW, a, c, use_c, G, pow2, grad, out):
        """``out[e, r, k] = (a[e,r] ZW[r,k] (+ c[e,r] NW[r,k] if use_c[e])) * (1/G) (pow2) or
        / G, minus grad[k]``: the operations of finite_action._affine_errors_one_prompt."""
        inv = 1.0 / G
        E, R = a.shape
        d = grad.size
        for e in range(E):
            for r in range(R):
                ar = a[e, r]
                cr = c[e, r]
                for k in range(d):
                    t = ar * ZW[r, k]
                    if use_c[e]:
                        t = t + cr * NW[r, k]
                    if pow2:
                        t = t * inv
                    else:
                        t = t / G
                    out[e, r, k] = t - grad[k]

    return Kernels(hist_block, affine_diff, hist_words)
