"""Kernels of U-statistics: the :class:`Kernel` protocol and the built-in kernels.

A kernel ``h(x_1, ..., x_m)`` is symmetric in its ``m`` arguments and vectorised over tuples:
``func(*xs)`` takes ``m`` arrays of shape ``(k, ...)`` (row ``t`` of each forms one tuple) and
returns ``(k,)`` or ``(k, p)``.  Kernels with an O(n) or O(n log n) closed form for the statistic
and for the per-index sums ``R_i`` carry them, and :func:`ustat_grpo.stats.ustat.ustatistic` uses them
(``method="closed_form"``); its ``"naive"`` path is their test oracle.

The GRPO policy gradient is the order-2 U-statistic with kernel
``h = 1/2 (s_i - s_j)(r_i - r_j)`` (arXiv 2603.01162, Lemma 1, eq. (6)); see :data:`grpo_kernel`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Kernel", "variance_kernel", "gini_kernel", "kendall_kernel", "wilcoxon_kernel",
           "mann_whitney_kernel", "grpo_kernel", "grpo_data", "grpo_row_sums"]


@dataclass(frozen=True)
class Kernel:
    """A symmetric kernel ``h(x_1, ..., x_m)`` with optional closed-form fast paths.

    Parameters
    ----------
    func : callable
        ``func(*xs)`` takes ``order`` arrays of shape ``(k, ...)`` (row ``t`` of each forms one
        tuple) and returns shape ``(k,)`` (scalar kernel) or ``(k, p)`` (vector kernel).
    order : int
        Number of arguments ``m``.
    name : str
    statistic : callable, optional
        ``statistic(data) -> U_n`` in closed form (shape ``()`` or ``(p,)``).
    row_sums : callable, optional
        ``row_sums(data) -> R`` of shape ``(n,)`` or ``(n, p)``, with ``R_i`` the sum of ``h`` over
        all tuples that contain index ``i``. Enables the closed-form jackknife.
    """

    func: Callable
    order: int
    name: str = "kernel"
    statistic: Callable | None = field(default=None, repr=False)
    row_sums: Callable | None = field(default=None, repr=False)

    def __call__(self, *xs):
        return self.func(*xs)

    @property
    def has_closed_form(self) -> bool:
        return self.statistic is not None and self.row_sums is not None


def _var_func(x1, x2):
    return 0.5 * (x1 - x2) ** 2


def _var_stat(x):
    return np.var(x, ddof=1)


def _var_rows(x):
    # R_i = sum_j (x_i - x_j)^2 / 2 = (n x_i^2 - 2 x_i S1 + S2) / 2
    n = x.shape[0]
    return 0.5 * (n * x**2 - 2.0 * x * x.sum(0) + (x**2).sum(0))


variance_kernel = Kernel(_var_func, 2, "variance", _var_stat, _var_rows)
"""``h = (x_1 - x_2)^2 / 2``: U_n is the sample variance with ``ddof=1``."""


def _gini_func(x1, x2):
    return np.abs(x1 - x2)


def _gini_rows(x):
    # R_i = sum_j |x_i - x_j|, from ranks: x_i (2 r_i - n) + (S_total - 2 S_below_i) with ties exact
    order = np.argsort(x, kind="stable")
    xs = x[order]
    n = x.shape[0]
    csum = np.concatenate(([0.0], np.cumsum(xs)))
    k = np.arange(n)
    rows_sorted = xs * k - csum[:-1] + (csum[-1] - csum[1:]) - xs * (n - 1 - k)
    out = np.empty(n)
    out[order] = rows_sorted
    return out


def _gini_stat(x):
    n = x.shape[0]
    xs = np.sort(x)
    return 2.0 * np.dot(2 * np.arange(n) - n + 1, xs) / (n * (n - 1))


gini_kernel = Kernel(_gini_func, 2, "gini_mean_difference", _gini_stat, _gini_rows)
"""``h = |x_1 - x_2|``: Gini mean difference, O(n log n) closed form."""


def _kendall_func(x1, x2):
    return np.sign(x1[:, 0] - x2[:, 0]) * np.sign(x1[:, 1] - x2[:, 1])


kendall_kernel = Kernel(_kendall_func, 2, "kendall_tau")
"""``h = sign(a_1 - a_2) sign(b_1 - b_2)`` on data ``(n, 2)``: Kendall's tau-a."""


def _wilcoxon_func(x1, x2):
    return (x1 + x2 > 0).astype(float)


wilcoxon_kernel = Kernel(_wilcoxon_func, 2, "wilcoxon_walsh")
"""``h = 1{x_1 + x_2 > 0}``: the Walsh-average part of the Wilcoxon signed-rank statistic."""


def _mw_func(x1, x2):
    return 0.5 * ((x1[:, 0] < x2[:, 1]).astype(float) + (x2[:, 0] < x1[:, 1]).astype(float))


mann_whitney_kernel = Kernel(_mw_func, 2, "mann_whitney_paired")
"""``h = 1/2 (1{a_1 < b_2} + 1{a_2 < b_1})`` on paired data ``(n, 2)``: estimates P(A < B')
for independent A, B' (a Mann-Whitney functional computed from paired samples)."""


def grpo_data(rewards, scores) -> np.ndarray:
    """Pack ``rewards (n,)`` and ``scores (n, d)`` into the ``(n, 1 + d)`` layout of :data:`grpo_kernel`."""
    rewards = np.asarray(rewards, float)
    scores = np.asarray(scores, float)
    if rewards.ndim != 1 or scores.ndim != 2 or scores.shape[0] != rewards.shape[0]:
        raise ValueError(f"need rewards (n,) and scores (n, d); got {rewards.shape} and {scores.shape}")
    return np.concatenate([rewards[:, None], scores], axis=1)


def _grpo_func(x1, x2):
    # x: (k, 1 + d) with column 0 the reward and columns 1: the score vector
    return 0.5 * (x1[:, 1:] - x2[:, 1:]) * (x1[:, :1] - x2[:, :1])  # (k, d)


def _grpo_stat(x):
    # U = (1/(n-1)) sum_i (r_i - rbar) s_i: the leave-one-out estimator itself (Lemma 1)
    r, s = x[:, 0], x[:, 1:]
    return (r - r.mean()) @ s / (r.shape[0] - 1)


def grpo_row_sums(rewards, scores) -> np.ndarray:
    """Row sums ``R_i = sum_{j != i} h(i, j)`` of :data:`grpo_kernel`, vectorised over leading axes.

    ``R_i = 1/2 [n r_i s_i - r_i S - s_i Rsum + sum_j r_j s_j]`` in ``O(n d)``; they give the
    closed-form jackknife of the engine and the order-4 piece ``||g(x)||^2`` of
    :mod:`ustat_grpo.scaling.constants`.

    Parameters
    ----------
    rewards : array_like, shape (..., n) ; scores : array_like, shape (..., n, d)

    Returns
    -------
    ndarray, shape (..., n, d)
    """
    r, s = np.asarray(rewards, float), np.asarray(scores, float)
    n = r.shape[-1]
    rs = np.einsum("...n,...nd->...d", r, s)                          # (..., d)
    return 0.5 * (s * (n * r - r.sum(-1, keepdims=True))[..., None]
                  - r[..., None] * s.sum(-2, keepdims=True) + rs[..., None, :])


def _grpo_rows(x):
    return grpo_row_sums(x[:, 0], x[:, 1:])


grpo_kernel = Kernel(_grpo_func, 2, "grpo", _grpo_stat, _grpo_rows)
"""GRPO kernel ``h((r_i, s_i), (r_j, s_j)) = 1/2 (s_i - s_j)(r_i - r_j)`` (arXiv 2603.01162, eq. (6)).

Data layout ``(n, 1 + d)``: column 0 the reward, columns ``1:`` the score vector (see
:func:`grpo_data`). Closed form O(n d): ``U = (1/(n-1)) sum_i (r_i - rbar) s_i``."""
