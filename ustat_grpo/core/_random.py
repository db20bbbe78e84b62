"""The package's one RNG convention, and the only place that builds numpy generators and seed sequences.

``rng=`` vs ``seed=`` (docs/conventions.md):

* A library function that draws random numbers takes a keyword ``rng=None``: anything
  :func:`numpy.random.default_rng` accepts -- ``None`` (fresh OS entropy), an int, a
  :class:`numpy.random.SeedSequence` or a :class:`numpy.random.Generator` (used as is, so a
  caller's stream keeps advancing).  It converts it once, on entry, with :func:`default_rng` (one
  stream) or :func:`seed_sequence` (independent child streams, ``.spawn``).
* A function takes ``seed: int`` instead only when the seed is *recorded in its output* (a NetCDF
  or JSON attribute, a resumable file, a CLI option, a simulation's ``Config``), so that the file
  says how to rebuild it; its streams are derived from that int by :func:`keyed_seed_sequence`
  (``SeedSequence(seed, spawn_key=key)``), one per cell / prompt / row, so results do not depend on
  the order or the machine that computes them.
* Nothing uses numpy's global state; tests build ``np.random.default_rng(<literal>)``.

Torch generators are derived from the same argument by :func:`torch_generator`, so that numpy and
torch code take the same ``rng=``.  Every helper returns exactly what the numpy call it names
returns (same bits).
"""
from __future__ import annotations

import numpy as np

__all__ = ["default_rng", "seed_sequence", "keyed_seed_sequence", "child_seed_sequence", "torch_seed",
           "torch_generator"]


def default_rng(rng=None) -> np.random.Generator:
    """``numpy.random.default_rng(rng)``: a Generator is returned unchanged."""
    return np.random.default_rng(rng)


def seed_sequence(rng=None) -> np.random.SeedSequence:
    """A SeedSequence from ``rng``: ``None``/int/SeedSequence as ``default_rng`` reads them; a
    Generator gives a child seeded by one draw from it (advancing it)."""
    if isinstance(rng, np.random.SeedSequence):
        return rng
    if isinstance(rng, np.random.Generator):
        return np.random.SeedSequence(int(rng.integers(0, 2 ** 63)))
    if isinstance(rng, np.random.BitGenerator):
        return seed_sequence(np.random.Generator(rng))
    return np.random.SeedSequence(rng)


def keyed_seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """``SeedSequence(int(seed), spawn_key=key)``: the stream ``key`` of a recorded integer ``seed``
    (the same as ``SeedSequence(seed).spawn(...)``'s children when ``key`` is their index)."""
    return np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key))


def child_seed_sequence(ss: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """The child of ``ss`` with spawn key ``ss.spawn_key + key``:
    ``SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, *key))`` (no spawn counter involved, so
    the same key always gives the same stream)."""
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, *(int(k) for k in key)))


def torch_seed(rng=None) -> int:
    """A non-negative 63-bit torch seed from ``rng``.

    The first 64-bit word of the SeedSequence, shifted right by one bit as a Python int
    (``manual_seed`` takes values below 2**63; shifting the numpy uint64 by a Python int fails
    on numpy 1.26).
    """
    return int(seed_sequence(rng).generate_state(1, np.uint64)[0]) >> 1


def torch_generator(rng=None, device="cpu"):
    """A ``torch.Generator`` on ``device`` seeded from ``rng``; a torch Generator passes through."""
    import torch

    if isinstance(rng, torch.Generator):
        return rng
    return torch.Generator(device=device).manual_seed(torch_seed(rng))
