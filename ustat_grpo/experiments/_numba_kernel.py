"""Optional numba kernels of the finite-action fast path (install the extra ``fast``: numba).

Nothing is compiled by this package: numba (a maintained JIT compiler, imported lazily) compiles
the loops below in memory on their first call in a process (~1-2 s; ``cache`` is off, so nothing
is written to or loaded from disk).

* :func:`hist_kernel` -- the fused one-prompt block sampler of
  :class:`ustat_grpo.experiments.finite_action._OnePromptSampler`.  It draws the block's uniforms
  itself, one at a time, through numpy's documented C interface of the block's bit generator
  (``BitGenerator.ctypes``: ``next_uint64`` / ``next_double`` on ``state_address``; numpy's own
  numba example, ``numpy/random/_examples/numba``), in the stream order of
  :mod:`ustat_grpo.experiments.finite_action` (prompt slots, arms, rewards), and gives each pull
  its histogram cell with integer thresholds that decide exactly what the float comparisons
  decide.  No uniform is stored: the pass over a block buffer is gone.  The draws are numpy's:
  for the bit generators in :data:`WORD_GENERATORS` ``Generator.random`` is
  ``(next_uint64 >> 11) * 2**-53``, so the kernel reads ``k = next_uint64 >> 11`` (``= u 2**53``);
  for any other it calls ``next_double`` and takes ``k = u 2**53`` (exact).  Either way the
  generator ends in numpy's state (tests/test_mc_kernel.py).  One kernel is compiled per bit
  generator type (:func:`hist_for`); the engine uses PCG64 only.
* :func:`affine_diff` -- the ``B = 1`` affine errors' ``g_hat - g``, the same elementwise IEEE
  operations in the same order as numpy's path (no fast-math: numba's default).

Without numba :func:`load` returns ``None`` and :mod:`ustat_grpo.experiments.finite_action` runs its numpy
twin (the same bits, slower: ``python -m simulations.bench_mc`` prints both), announced
once per process by a :class:`NumpyPathWarning`.  ``USTAT_GRPO_NO_NUMBA=1`` chooses the numpy path without a warning.
"""
from __future__ import annotations

import os
import warnings
from typing import NamedTuple

__all__ = ["Kernels", "NumpyPathWarning", "WORD_GENERATORS", "announce_numpy_path", "disabled", "load"]


class NumpyPathWarning(UserWarning):
    """The finite-action fast path runs on numpy because numba is not installed (same results,
    slower; ``pip install "ustat_grpo[fast]"``)."""


#: Names of numpy's bit generators whose ``Generator.random`` is ``(next_uint64 >> 11) * 2**-53``
#: (numpy's ``next_double`` of each; checked by tests/test_mc_kernel.py).  MT19937 builds its
#: doubles from two 32-bit words: the kernel calls its ``next_double``.
WORD_GENERATORS = ("PCG64", "PCG64DXSM", "SFC64", "Philox")


class Kernels(NamedTuple):
    """The jitted functions (module notes)."""

    hist_kernel: object     # draw_k -> jitted block histogram (any ``k = u 2**53`` source)
    hist_for: object        # bit generator -> the kernel that draws from it (one per type)
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
                  "same numbers, slower: see the evidence page's Monte Carlo speed); pip install "
                  "'ustat_grpo[fast]' for the numba kernel", NumpyPathWarning, stacklevel=3)


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

    def hist_kernel(draw_k):
        """A jitted ``hist(state, n, G, athr, lut, shift, rthr, cells, out)`` whose uniforms are
        ``k 2**-53`` with ``k = draw_k(state)`` (an integer below 2**53)."""

        @njit
        def hist(state, n, G, athr, lut, shift, rthr, cells, out):
            """Histogram ``out (n, K*M)`` (float64 counts) of one block of ``n`` groups of ``G``
            pulls, drawing in stream order: ``n`` prompt slots (``P = 1``: they decide nothing),
            the ``n*G`` arms, then, when ``rthr`` is not empty (M = 2), the ``n*G`` rewards.
            ``cells``: integer scratch of ``n*G`` (the arms; ``uint8`` when ``K <= 256`` keeps it
            in cache).

            For a double ``c``, ``u >= c`` iff ``k >= ceil(c 2**53)``
            (``finite_action._thresholds``): the arm is ``#{a : athr[a] <= k}`` (a table over the
            top bits of ``k`` gives the count at the bin's left edge, a scan the rest) and the
            cell ``2 a + (k2 >= rthr[a])``.
            """
            for _ in range(n):
                draw_k(state)
            nG = n * G
            for i in range(nG):
                cells[i] = _arm(draw_k(state), athr, lut, shift)
            out[:, :] = 0.0
            if rthr.size:                                       # M = 2
                for g in range(n):
                    for j in range(G):
                        a = np.int64(cells[g * G + j])
                        out[g, 2 * a + np.int64(draw_k(state) >= rthr[a])] += 1.0
            else:
                for g in range(n):
                    for j in range(G):
                        out[g, cells[g * G + j]] += 1.0

        return hist

    by_type = {}

    def hist_for(bit_generator):
        """The kernel drawing from ``bit_generator`` (pass ``bit_generator.ctypes.state_address``
        as ``state``), compiled once per bit generator type."""
        t = type(bit_generator)
        if t not in by_type:
            c = bit_generator.ctypes
            if t.__module__.startswith("numpy.") and t.__name__ in WORD_GENERATORS:
                next_uint64 = c.next_uint64

                @njit
                def draw_k(state):
                    return np.int64(next_uint64(state) >> np.uint64(11))
            else:
                next_double = c.next_double

                @njit
                def draw_k(state):
                    return np.int64(next_double(state) * two53)
            by_type[t] = hist_kernel(draw_k)
        return by_type[t]

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

    return Kernels(hist_kernel, hist_for, affine_diff)
