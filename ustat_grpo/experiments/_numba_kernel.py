"""Optional numba kernels of the finite-action fast path (install the extra ``fast``: numba).

Nothing is compiled by this package: numba (a maintained JIT compiler, imported lazily) compiles
the two loops below in memory on their first call in a process (~1-2 s; ``cache`` is off, so
nothing is written to or loaded from disk).  They take numpy arrays only: the uniforms are drawn
by numpy itself (``Generator.random(out=...)``, from the block's own generator, in the stream
order of :mod:`ustat_grpo.experiments.finite_action`), so the draws and the generator's final state are
numpy's by construction.

* :func:`hist_uniforms` -- the fused one-prompt block sampler of
  :class:`ustat_grpo.experiments.finite_action._OnePromptSampler`: one pass per pull gives its histogram cell
  from its uniforms with integer thresholds that decide exactly what the float comparisons
  decide, a second pass counts the cells (``(n, K*M)``).
* :func:`affine_diff` -- the ``B = 1`` affine errors' ``g_hat - g``, the same elementwise IEEE
  operations in the same order as numpy's path (no fast-math: numba's default).

Without numba :func:`load` returns ``None`` and :mod:`ustat_grpo.experiments.finite_action` runs its numpy
twin (the same bits, ~1.3-1.4x slower end to end in ``simulations/bench_mc.py``), announced
once per process by a :class:`NumpyPathWarning`.  ``USTAT_GRPO_NO_NUMBA=1`` chooses the numpy path without a warning.
"""
from __future__ import annotations

import os
import warnings
from typing import NamedTuple

__all__ = ["Kernels", "NumpyPathWarning", "announce_numpy_path", "disabled", "load"]


class NumpyPathWarning(UserWarning):
    """The finite-action fast path runs on numpy because numba is not installed (same results,
    slower; ``pip install "ustat_grpo[fast]"``)."""


class Kernels(NamedTuple):
    """The jitted functions (module notes)."""

    hist_uniforms: object
    affine_diff: object


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
                  "same numbers, about 1.3-1.4x slower); pip install 'ustat_grpo[fast]' for the "
                  "numba kernel", NumpyPathWarning, stacklevel=3)


def _build(numba):
    import numpy as np

    njit = numba.njit(nogil=True)            # no fastmath, no cache: IEEE operations, no files
    two53 = 9007199254740992.0               # 2**53

    @njit
    def _arm(k, athr, lut, shift):
        a = lut[k >> shift]                  # arm at the left edge of k's table bin
        while athr[a] <= k:                  # athr[K-1]: a sentinel above every k
            a += 1
        return a

    @njit
    def hist_uniforms(u, n, G, athr, lut, shift, rthr, cells, hist):
        """Histogram ``hist (n, K*M)`` (float64 counts) of one block from its uniforms ``u``
        (stream order: the n*G arm uniforms, group by group, then, when ``rthr`` is not empty
        (M = 2), the n*G reward ones).  ``cells``: int32 scratch of n*G.

        ``u = k 2**-53`` with an integer ``k`` (``Generator.random``), so ``k = u 2**53``
        exactly, and for a double ``c``, ``u >= c`` iff ``k >= ceil(c 2**53)``
        (``finite_action._thresholds``): the arm is ``#{a : athr[a] <= k}`` (a table over the
        top bits of ``k`` gives the count at the bin's left edge, a scan the rest) and the cell
        ``2 a + (k2 >= rthr[a])``.  Cells first, counts second: counting in the same loop makes
        each pull wait for the previous store to the same cell.
        """
        nG = n * G
        if rthr.size:                                        # M = 2
            for i in range(nG):
                a = _arm(np.int64(u[i] * two53), athr, lut, shift)
                cells[i] = 2 * a + np.int64(np.int64(u[nG + i] * two53) >= rthr[a])
        else:
            for i in range(nG):
                cells[i] = _arm(np.int64(u[i] * two53), athr, lut, shift)
        hist[:, :] = 0.0
        for g in range(n):
            for j in range(G):
                hist[g, cells[g * G + j]] += 1.0

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

    return Kernels(hist_uniforms, affine_diff)
