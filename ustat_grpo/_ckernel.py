"""Loader of the optional C kernel ``_mc_kernel.c`` (the fused one-prompt block sampler).

:func:`load` compiles ``_mc_kernel.c`` on first use with the system C compiler (``$CC``, else
``cc``; flags :data:`CFLAGS`: no fast-math, no contraction, so the kernel's few floating-point
operations are the IEEE ones numpy does) into a per-user cache directory (``$USTAT_GRPO_CACHE``,
else ``$XDG_CACHE_HOME/ustat_grpo``, else ``~/.cache/ustat_grpo``) and loads it with ``ctypes``
(no Python headers needed).  The file name is keyed by a hash of the source, the compiler, the
flags and the platform; it is written under a temporary name and moved into place with
``os.replace``, so processes that compile at the same time are safe (the last one wins, with an
identical file).  ``USTAT_GRPO_NO_CKERNEL=1`` disables it.

Without a compiler, or when compiling or loading fails, :func:`load` returns ``None`` (logged once
at debug level) and :mod:`ustat_grpo.finite_action` runs its numpy twin, which gives the same
histograms bit for bit: results never depend on whether a compiler exists.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile

import numpy as np

__all__ = ["bitgen_address", "load", "pcg64_words", "set_pcg64_state"]

log = logging.getLogger(__name__)

#: Compiler flags: IEEE arithmetic (no -ffast-math, no fused multiply-add contraction).
CFLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mc_kernel.c")
_cache: dict = {}
_MASK = (1 << 64) - 1


def _cache_dir() -> str:
    d = os.environ.get("USTAT_GRPO_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "ustat_grpo")
    return d


def _compile(cc: str, path: str) -> None:
    """Compile the kernel into ``path``: a temporary file in its directory, then ``os.replace``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=os.path.dirname(path))
    os.close(fd)
    try:
        out = subprocess.run([*shlex.split(cc), *CFLAGS, "-o", tmp, _SOURCE],
                             check=False, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise OSError(f"{cc} failed ({out.returncode}): {out.stderr.strip()[:500]}")
        os.replace(tmp, path)                 # atomic: a reader sees no file or a whole one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _setup(lib):
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    for f in (lib.ustat_hist_block, lib.ustat_hist_block_pcg64):
        f.argtypes = [vp, i64, i64, vp, i64, vp, ctypes.c_int, vp, vp, vp]
        f.restype = ctypes.c_int
    lib.ustat_pcg64_raw.argtypes = [vp, i64, vp]
    lib.ustat_pcg64_raw.restype = ctypes.c_int
    lib.ustat_pcg64_jump.argtypes = [vp, ctypes.c_uint64]
    lib.ustat_pcg64_jump.restype = ctypes.c_int
    lib.ustat_affine_diff.argtypes = [i64, i64, i64, vp, i64, vp, i64, vp, vp, vp,
                                      ctypes.c_double, ctypes.c_int, vp, vp]
    lib.ustat_affine_diff.restype = ctypes.c_int
    lib.pcg64_inline = _pcg64_agrees(lib)
    return lib


def pcg64_words(bit_generator):
    """``[state >> 64, state % 2**64, inc >> 64, inc % 2**64]`` (uint64) of a numpy ``PCG64``."""
    st = bit_generator.state["state"]
    s, inc = st["state"], st["inc"]
    return np.array([s >> 64, s & _MASK, inc >> 64, inc & _MASK], dtype=np.uint64)


def set_pcg64_state(bit_generator, words):
    """Set the 128-bit LCG state of a numpy ``PCG64`` from ``pcg64_words`` (increment and
    buffered 32-bit half kept)."""
    st = bit_generator.state
    st["state"]["state"] = (int(words[0]) << 64) | int(words[1])
    bit_generator.state = st


def _pcg64_agrees(lib) -> bool:
    """Whether the kernel's inline PCG64 gives numpy's ``random_raw`` words and final state."""
    try:
        for seed in (0, 12345, 2 ** 63 + 5):
            bg = np.random.PCG64(np.random.SeedSequence(seed))
            words = pcg64_words(bg)
            out = np.empty(1000, np.uint64)
            if lib.ustat_pcg64_raw(words.ctypes.data, out.size, out.ctypes.data) != 0:
                return False
            if not np.array_equal(out, bg.random_raw(out.size)):
                return False
            if not np.array_equal(words, pcg64_words(bg)):
                return False
        return True
    except Exception as e:  # noqa: BLE001  (any failure: do not use the inline PCG64)
        log.debug("inline PCG64 check failed (%s)", e)
        return False


def load():
    """The compiled kernel (a ``ctypes.CDLL``) or ``None`` (module notes).  Cached per process
    and per setting of ``CC``, the cache directory and ``USTAT_GRPO_NO_CKERNEL``."""
    env = os.environ
    if env.get("USTAT_GRPO_NO_CKERNEL", "") not in ("", "0"):
        return None
    raw = (env.get("CC"), env.get("USTAT_GRPO_CACHE"), env.get("XDG_CACHE_HOME"), env.get("HOME"))
    if raw in _cache:                         # per call of the engine: a few dict lookups
        return _cache[raw]
    cc = raw[0] or "cc"
    lib = None
    try:
        with open(_SOURCE, "rb") as f:
            src = f.read()
        tag = hashlib.sha256(b"\0".join([src, cc.encode(), " ".join(CFLAGS).encode(),
                                         sys.platform.encode(), platform.machine().encode()]))
        tag = tag.hexdigest()[:16]
        path = os.path.join(_cache_dir(), f"_mc_kernel-{tag}.so")
        if not os.path.exists(path):
            _compile(cc, path)
        lib = _setup(ctypes.CDLL(path))
    except Exception as e:  # noqa: BLE001  (no compiler, no cache dir, bad binary: numpy twin)
        log.debug("ustat_grpo C kernel unavailable (%s); using the numpy path", e)
        lib = None
    _cache[raw] = lib
    return lib


_get_pointer = None


def bitgen_address(bit_generator) -> int:
    """Address of the ``bitgen_t`` of a numpy ``BitGenerator`` (from its ``capsule``)."""
    global _get_pointer
    if _get_pointer is None:                  # a private prototype: pythonapi's is shared
        proto = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)
        _get_pointer = proto(("PyCapsule_GetPointer", ctypes.pythonapi))
    return _get_pointer(bit_generator.capsule, b"BitGenerator")
