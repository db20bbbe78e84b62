"""Helpers for judging Monte Carlo results against exact values (public, like ``numpy.testing``).

Every stochastic claim in this package is judged by a z-score against a Bonferroni-corrected
threshold: with ``m`` simultaneous comparisons at family-wise level ``alpha`` the two-sided
threshold is ``z = Phi^{-1}(1 - alpha / (2 m))`` (5.33 for m = 8, alpha = 1e-6).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["bonferroni_z", "mc_z", "assert_mc_close", "binomial_coverage_pvalue"]


def bonferroni_z(alpha: float = 1e-6, m: int = 1) -> float:
    """Two-sided normal threshold for ``m`` comparisons at family-wise level ``alpha``."""
    if not (0 < alpha < 1) or m < 1:
        raise ValueError(f"need 0 < alpha < 1 and m >= 1, got alpha={alpha}, m={m}")
    return float(stats.norm.isf(alpha / (2 * m)))


def mc_z(estimate, standard_error, exact) -> np.ndarray:
    """z-scores ``(estimate - exact) / standard_error`` (broadcast)."""
    estimate, standard_error, exact = np.broadcast_arrays(
        np.asarray(estimate, float), np.asarray(standard_error, float), np.asarray(exact, float))
    if np.any(standard_error <= 0):
        raise ValueError("standard errors must be positive")
    return (estimate - exact) / standard_error


def assert_mc_close(estimate, standard_error, exact, *, alpha: float = 1e-6, m: int | None = None,
                    err_msg: str = "") -> np.ndarray:
    """Assert that Monte Carlo estimates agree with exact values within a Bonferroni z bound.

    ``m`` defaults to the number of comparisons (the broadcast size). Returns the z-scores.
    """
    z = mc_z(estimate, standard_error, exact)
    m = z.size if m is None else m
    bound = bonferroni_z(alpha, m)
    worst = float(np.max(np.abs(z))) if z.size else 0.0
    if not worst <= bound:
        raise AssertionError(
            f"Monte Carlo disagrees with exact value: max |z| = {worst:.2f} > {bound:.2f} "
            f"(alpha={alpha}, m={m}). {err_msg}\n z = {np.array2string(z, precision=2)}")
    return z


def binomial_coverage_pvalue(hits: int, trials: int, level: float) -> float:
    """Two-sided exact binomial p-value for observing ``hits`` covers in ``trials`` at nominal ``level``."""
    return float(stats.binomtest(int(hits), int(trials), level).pvalue)
