"""Paper checks: one registered check per claim of the two papers.

Each check is a function ``fn(rng) -> Outcome`` registered with :func:`register` under the
claim id of ``../shared/spec/paper_spec.md`` (C1..C11, M1..M6, or a theorem name).  A check
*passes* only when the claim holds **and** its negative control (a deliberately wrong formula,
where the check is statistical) fails; both verdicts are recorded in the outcome.

``python -m paper_checks`` runs every non-slow check and prints the table
(claim, expected, observed, pass/fail); ``python -m paper_checks --all`` adds the slow ones.
``pytest`` runs the same functions through ``tests/test_paper_checks.py``.

Check modules live beside this file, are named ``check_<topic>.py`` and are discovered
automatically; adding one needs no edit here.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Outcome", "Check", "register", "REGISTRY", "load_all", "run_check"]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a check found.

    expected, observed : short human-readable strings for the table.
    passed : the claim held (and, for Monte Carlo checks, the negative control failed).
    details : JSON-safe extras (z-scores, sample sizes, negative-control verdict).
    """

    expected: str
    observed: str
    passed: bool
    details: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Check:
    id: str
    claim: str
    paper: str
    seed: int
    slow: bool
    fn: Callable[[np.random.Generator], Outcome]


REGISTRY: dict[str, Check] = {}


def register(id: str, claim: str, *, paper: str = "2603.01162", seed: int = 0, slow: bool = False):
    """Decorator registering ``fn(rng) -> Outcome`` as the check of claim ``id``."""

    def deco(fn):
        if id in REGISTRY and REGISTRY[id].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"duplicate paper-check id {id!r}")
        REGISTRY[id] = Check(id=id, claim=claim, paper=paper, seed=seed, slow=slow, fn=fn)
        return fn

    return deco


def load_all() -> dict[str, Check]:
    """Import every ``paper_checks/check_*.py`` module and return the registry."""
    pkg = importlib.import_module(__name__)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("check_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(sorted(REGISTRY.items(), key=lambda kv: _sort_key(kv[0])))


def _sort_key(cid: str):
    head = cid.rstrip("0123456789")
    tail = cid[len(head):]
    return (head, int(tail) if tail else -1, cid)


def run_check(check: Check) -> Outcome:
    """Run one check with its own seeded generator."""
    out = check.fn(np.random.default_rng(check.seed))
    if not isinstance(out, Outcome):
        raise TypeError(f"check {check.id} returned {type(out).__name__}, not Outcome")
    return out
