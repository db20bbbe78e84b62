"""The one confidence-interval type of the package, and its JSON form.

Every interval that a result of :mod:`ustat_grpo` reports is a :class:`ConfidenceInterval`
``(low, high)`` (scipy's words); ``high`` may be ``inf`` when a set is unbounded (a Fieller set
whose denominator is not significantly non-zero).  JSON has no infinity, so the stable JSON
outputs write non-finite numbers as the strings ``"inf"``, ``"-inf"`` and ``"nan"``
(:func:`json_float`, by the package's one converter :func:`ustat_grpo.core._serialize.jsonable`), and
read them back with :func:`float_from_json`.  The intervals' spreads come from the one
delete-one (or delete-a-group) jackknife of the package, :func:`jackknife_covariance`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._serialize import jsonable

__all__ = ["ConfidenceInterval", "json_float", "json_interval", "float_from_json", "jackknife_covariance"]


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


def jackknife_covariance(replicates):
    """Delete-one (or delete-a-group) jackknife covariance ``(K-1)/K sum_k (r_k - rbar)(r_k - rbar)^T``.

    Parameters
    ----------
    replicates : array_like, shape (K,) or (K, p)
        The statistic recomputed without observation (or group) ``k``, one row per ``k``; ``K >= 2``.

    Returns
    -------
    float or ndarray, shape (p, p)
        The variance (1-d input) or the covariance matrix.  A NaN replicate gives NaN.

    Examples
    --------
    >>> jackknife_covariance([1.0, 2.0, 3.0])              # (2/3) * ((-1)^2 + 0 + 1^2)
    1.3333333333333333
    """
    r = np.asarray(replicates, dtype=float)
    if r.ndim not in (1, 2) or r.shape[0] < 2:
        raise ValueError(f"replicates must have shape (K,) or (K, p) with K >= 2, got shape {r.shape}")
    K = r.shape[0]
    dev = r - r.mean(0)
    if dev.ndim == 1:
        return (K - 1) / K * float(dev @ dev)
    return (K - 1) / K * dev.T @ dev
