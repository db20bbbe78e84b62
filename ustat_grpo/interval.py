"""The one confidence-interval type of the package, and its JSON form.

Every interval that a result of :mod:`ustat_grpo` reports is a :class:`ConfidenceInterval`
``(low, high)`` (scipy's words); ``high`` may be ``inf`` when a set is unbounded (a Fieller set
whose denominator is not significantly non-zero).  JSON has no infinity, so the stable JSON
outputs write non-finite numbers as the strings ``"inf"``, ``"-inf"`` and ``"nan"``
(:func:`json_float`, by the package's one converter :func:`ustat_grpo._serialize.jsonable`), and
read them back with :func:`float_from_json`.
"""
from __future__ import annotations

from typing import NamedTuple

from ._serialize import jsonable

__all__ = ["ConfidenceInterval", "json_float", "json_interval", "float_from_json"]


class ConfidenceInterval(NamedTuple):
    """A ``(low, high)`` interval; ``high`` may be ``inf`` (unbounded)."""

    low: float
    high: float


def json_float(x):
    """``x`` as a JSON-safe float: non-finite values become ``"inf"``, ``"-inf"``, ``"nan"``.

    Examples
    --------
    >>> json_float(2), json_float(float("inf")), json_float(None)
    (2.0, 'inf', None)
    """
    return None if x is None else jsonable(float(x))


def json_interval(ci):
    """An interval as ``[low, high]`` with :func:`json_float` entries (``None`` stays ``None``)."""
    return None if ci is None else [json_float(ci[0]), json_float(ci[1])]


def float_from_json(x):
    """Inverse of :func:`json_float`.

    Examples
    --------
    >>> float_from_json("inf"), float_from_json(0.5)
    (inf, 0.5)
    """
    return float(x) if isinstance(x, str) else x
