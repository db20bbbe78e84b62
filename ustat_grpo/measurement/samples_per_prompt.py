"""How many samples per prompt should a pilot draw?  Measured from the pilot's own samples.

A pilot of ``P`` prompts x ``M`` samples costs ``C = P M`` rollouts (and as many backward passes).
To first order in ``1/P`` the variance of its ``log G*``-hat (``G* = 1 + sqrt(A3/A1)``) is
``v(M)/P``, where ``v(M)`` is the variance over prompts of one prompt's influence on ``log G*``-hat.
That influence is a fixed combination of the prompt's pieces ``g``, ``||g||^2`` and
``sigma^2 tr I`` (:func:`ustat_grpo.scaling.constants.prompt_pieces`), U-statistics of orders 2, 4 and 3 of
its ``M`` samples, hence one U-statistic of order 4, and Hoeffding's decomposition gives exactly

.. math::

    v(M) = a + \\sum_{c=1}^{4} \\frac{b_c}{(M)_c}, \\qquad (M)_c = M (M-1) \\cdots (M-c+1),
    \\qquad a, b_c \\ge 0,

with ``a`` the prompt-to-prompt part and ``b_c = c! C(4, c)^2 delta_c^2`` the within-prompt parts.
At a fixed cost the variance is ``M v(M) / C``: more samples per prompt buy less within-prompt
noise and cost prompts.  :func:`choose_samples_per_prompt` measures ``v`` at several ``M' <= M`` by
subsampling the pilot, fits the five coefficients, and returns the ``M`` that minimises it.
Truncated after ``c = 2`` this is ``(a + b/M + c/M^2)/P``, whose optimum is ``sqrt(c/a)``; on the
toy bandit, where ``A1`` is small and the order-3 and order-4 terms matter, that truncation fitted
to the same measurements underpredicts the variance of repeated pilots with larger ``M``, where
the full form agrees within its standard errors (``python -m simulations.samples_per_prompt``; the
prediction is first order in ``1/P``, so pilots of a few dozen prompts vary more than predicted).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from ..core._serialize import jsonable
from ..core._random import default_rng
from ..scaling.constants import _a1_sampled, _a1_without_each, pool_arrays, prompt_pieces
from ..core.interval import jackknife_covariance

__all__ = ["SamplesPerPromptResult", "choose_samples_per_prompt", "hoeffding_basis", "jackknife_constants"]

#: order of the per-prompt influence on log G*-hat as a U-statistic (the ||g||^2 kernel)
ORDER = 4
MIN_SAMPLES = 4


def hoeffding_basis(samples_per_prompt, *, order: int = ORDER) -> np.ndarray:
    """Columns ``[1, 1/(M)_1, ..., 1/(M)_order]`` of ``v(M)`` (falling factorials ``(M)_c``).

    Examples
    --------
    >>> hoeffding_basis([4, 8])[:, -1] * [24, 1680]
    array([1., 1.])
    """
    m = np.asarray(samples_per_prompt, float)[..., None]
    c = np.arange(order + 1)
    falling = np.cumprod(np.where(c == 0, 1.0, m - c + 1), axis=-1)   # (..., order+1): (M)_0..(M)_order
    return 1.0 / falling


def jackknife_constants(g, g_norm2, a3):
    """Delete-one-prompt replicates of ``(A1-hat, A3-hat)`` in closed form, ``O(P d)``.

    Parameters
    ----------
    g : (P, d) ; g_norm2 : (P,) ; a3 : (P,)
        Per-prompt pieces (``a3 = sigma2_trI + g_norm2``), prompts sampled i.i.d.

    Returns
    -------
    reps : (P, 2)
        Row ``p``: ``(A1, A3)`` of :func:`ustat_grpo.scaling.constants.constants_from_statistics` without
        prompt ``p`` (the naive twin recomputes them with prompt ``p`` removed).
    """
    P = g.shape[0]
    return np.stack([_a1_without_each(g, g_norm2), (a3.sum() - a3) / (P - 1)], axis=-1)


def _log_gstar_gradient(A1, A3):
    """Gradient of ``log(1 + sqrt(A3/A1))`` with respect to ``(A1, A3)``."""
    s = math.sqrt(A3 / A1)
    k = s / (2 * (1 + s))
    return np.array([-k / A1, k / A3])


def _point(g, g_norm2, a3):
    return _a1_sampled(g, g_norm2), a3.mean()


@dataclass(frozen=True, kw_only=True)
class SamplesPerPromptResult:
    """Samples per prompt that minimise the variance of ``log G*``-hat at a fixed pilot cost.

    Attributes
    ----------
    samples_per_prompt : the pilot's ``M``.
    num_prompts : the pilot's ``P``.
    optimum : ``M*``, the integer in ``[4, max_samples]`` minimising ``M v(M)``.
    ratio : variance at the pilot's ``M`` over variance at ``M*``, same cost (``>= 1`` when the
        pilot's ``M <= max_samples``).
    coefficients : ``(a, b1, b2, b3, b4)`` of ``v(M) = a + sum_c b_c/(M)_c``.
    coefficient_covariance : (5, 5) delete-a-group jackknife (over prompts) of the coefficients.
    subsample_sizes, measured : the ``M'`` and ``v``-hat measured at each (mean over repeats).
    g_star : ``1 + sqrt(A3/A1)`` of the pilot.
    max_samples : upper end of the search; ``M*`` above the pilot's ``M`` is extrapolated.
    """

    samples_per_prompt: int
    num_prompts: int
    optimum: int
    ratio: float
    coefficients: np.ndarray
    coefficient_covariance: np.ndarray
    subsample_sizes: np.ndarray
    measured: np.ndarray
    g_star: float
    max_samples: int
    repeats: int
    n_groups: int

    @property
    def extrapolated(self) -> bool:
        """``M*`` lies beyond the ``M`` the pilot measured."""
        return self.optimum > self.samples_per_prompt

    def per_prompt_variance(self, samples_per_prompt) -> np.ndarray:
        """``v(M) = P Var(log G*-hat)`` of the fitted model."""
        return hoeffding_basis(samples_per_prompt) @ self.coefficients

    def variance(self, num_prompts, samples_per_prompt) -> np.ndarray:
        """Predicted ``Var(log G*-hat)`` of a pilot of ``num_prompts x samples_per_prompt`` (first order in 1/P)."""
        return self.per_prompt_variance(samples_per_prompt) / np.asarray(num_prompts, float)

    def standard_error(self, num_prompts, samples_per_prompt) -> np.ndarray:
        """Jackknife standard error of :meth:`variance` (from the pilot's finite number of prompts)."""
        x = hoeffding_basis(samples_per_prompt)
        return np.sqrt(np.einsum("...i,ij,...j->...", x, self.coefficient_covariance, x)) / np.asarray(num_prompts, float)

    def variance_at_cost(self, cost, samples_per_prompt) -> np.ndarray:
        """Predicted ``Var(log G*-hat)`` at ``cost = P M`` rollouts: ``M v(M) / cost``."""
        m = np.asarray(samples_per_prompt, float)
        return m * self.per_prompt_variance(m) / np.asarray(cost, float)

    def line(self) -> str:
        """One line for a report."""
        ext = " (extrapolated beyond the pilot's M)" if self.extrapolated else ""
        return (f"samples per prompt: measured optimum M* = {self.optimum}{ext}, variance at your "
                f"M = {self.samples_per_prompt} is {self.ratio:.2f} times the optimum's at the same cost")

    def summary(self) -> str:
        M, Ms = self.samples_per_prompt, self.optimum
        rows = sorted({m for m in (4, 8, 16, 32, 64, 128, 256, M, Ms) if MIN_SAMPLES <= m <= self.max_samples})
        best = float(self.variance_at_cost(1.0, Ms))
        lines = [f"samples per prompt from a pilot of {self.num_prompts} prompts x {M} samples "
                 f"(G* = {self.g_star:.3g}; v measured at M' = {', '.join(map(str, self.subsample_sizes))}, "
                 f"{self.repeats} subsamples each)",
                 "  v(M) = P Var(log G*) = a + b1/M + b2/(M)_2 + b3/(M)_3 + b4/(M)_4, fitted: "
                 + ", ".join(f"{n}={v:.3g}" for n, v in zip(("a", "b1", "b2", "b3", "b4"), self.coefficients)),
                 f"  {'M':>5} {'v(M) fit':>10} {'measured':>10} {'Var x cost / optimum':>21}"]
        meas = dict(zip(self.subsample_sizes.tolist(), self.measured.tolist()))
        for m in rows:
            mv = f"{meas[m]:.4g}" if m in meas else "-"
            tag = "  <- M*" if m == Ms else ("  <- pilot" if m == M else "")
            lines.append(f"  {m:>5} {float(self.per_prompt_variance(m)):>10.4g} {mv:>10} "
                         f"{float(self.variance_at_cost(1.0, m)) / best:>21.3f}{tag}")
        lines.append("  " + self.line())
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(samples_per_prompt=self.samples_per_prompt, num_prompts=self.num_prompts, optimum=self.optimum,
                    ratio=float(self.ratio), extrapolated=self.extrapolated, g_star=float(self.g_star),
                    coefficients=[float(c) for c in self.coefficients],
                    coefficient_covariance=[[float(v) for v in row] for row in self.coefficient_covariance],
                    subsample_sizes=[int(m) for m in self.subsample_sizes],
                    measured=[float(v) for v in self.measured], max_samples=self.max_samples,
                    repeats=self.repeats, n_groups=self.n_groups))


def _choose_iv(rewards, scores, subsample_sizes, repeats, max_samples, n_groups):
    z, w = pool_arrays(rewards, scores, min_samples=MIN_SAMPLES + 1)
    P, M = z.shape
    if subsample_sizes is None:
        subsample_sizes = np.geomspace(MIN_SAMPLES, M, 8)
    sizes = np.unique(np.round(np.asarray(subsample_sizes, float)).astype(int))
    if sizes.min() < MIN_SAMPLES or sizes.max() > M or len(sizes) < 5:
        raise ValueError(f"need at least 5 distinct subsample sizes in [{MIN_SAMPLES}, {M}], got {sizes.tolist()}")
    max_samples = 4 * M if max_samples is None else int(max_samples)
    if max_samples < MIN_SAMPLES or repeats < 1 or not 3 <= n_groups <= P:
        raise ValueError(f"need max_samples >= {MIN_SAMPLES}, repeats >= 1 and 3 <= n_groups <= P = {P}")
    if P < 8:
        raise ValueError(f"need at least 8 prompts, got {P}")
    return z, w, sizes, int(repeats), max_samples, int(n_groups)


def _fit(sizes, v):
    """NNLS fit of ``v(M') = basis @ coef`` with relative weights (the error of ``v``-hat is relative)."""
    X = hoeffding_basis(sizes)
    coef, _ = nnls(X / v[:, None], np.ones(len(sizes)))
    return coef


def _optimum(coef, max_samples):
    m = np.arange(MIN_SAMPLES, max_samples + 1)
    cost_var = m * (hoeffding_basis(m) @ coef)
    return int(m[int(np.argmin(cost_var))])


def _per_prompt_variance(pieces, keep, grad):
    """``v``-hat: ``P_kept x grad^T Cov_jackknife(A1, A3) grad`` per subsample, from kept prompts."""
    g, g2, a3 = (x[keep] for x in pieces)
    cov = jackknife_covariance(jackknife_constants(g, g2, a3))
    return g.shape[0] * grad @ cov @ grad


def choose_samples_per_prompt(rewards, scores, *, subsample_sizes=None, repeats: int = 4,
                              max_samples: int | None = None, n_groups: int = 16,
                              rng=0) -> SamplesPerPromptResult:
    """The samples per prompt ``M*`` that minimise the variance of ``G*``-hat at a fixed pilot cost.

    Parameters
    ----------
    rewards : array_like, shape (P, M)
    scores : array_like, shape (P, M, d)
        A pilot's samples (sketched scores are fine), prompts sampled i.i.d., ``M >= 5``.
    subsample_sizes : sequence of int, optional
        The ``M'`` at which ``v`` is measured (at least 5 distinct values in ``[4, M]``; default 8
        values geometrically spaced from 4 to ``M``).
    repeats : int
        Random subsets of ``M'`` samples per prompt at each ``M'`` (nested: the ``M'`` of one repeat
        are prefixes of one random order of each prompt's samples).
    max_samples : int, optional
        Largest ``M`` considered (default ``4 M``; beyond ``M`` the fit is extrapolated).
    n_groups : int
        Groups of prompts of the delete-a-group jackknife of the fit (standard errors).
    rng : seed of the subsets (anything :func:`numpy.random.default_rng` takes).

    Returns
    -------
    SamplesPerPromptResult

    Notes
    -----
    The rule, measured rather than assumed:

    1. ``A1, A3`` of the whole pilot and the gradient of ``log G* = log(1 + sqrt(A3/A1))``.
    2. For each ``M'`` and repeat: the per-prompt pieces of a random ``M'``-subset of every prompt's
       samples, the delete-one-prompt jackknife covariance of ``(A1-hat, A3-hat)``
       (:func:`jackknife_constants`), and ``v-hat(M') = P grad^T Cov grad`` (delta method);
       averaged over repeats.
    3. Non-negative least squares, relative weights: ``v(M) = a + sum_{c<=4} b_c / (M)_c``
       (Hoeffding's decomposition of the order-4 per-prompt influence; see the module docstring).
    4. ``M* = argmin_{4 <= M <= max_samples} M v(M)``: at a fixed cost ``C = P M`` the variance is
       ``M v(M) / C``.  ``ratio`` compares the pilot's own ``M`` with ``M*``.

    The prediction is first order in ``1/P`` (delta method): it describes pilots large enough for
    ``A1``-hat to be well away from 0, which are the ones whose ``G*`` interval is bounded.

    Examples
    --------
    >>> from ustat_grpo.policies.bandits import default_bandit
    >>> s = default_bandit().sample(1024, 32, rng=np.random.default_rng(0))
    >>> res = choose_samples_per_prompt(s.rewards, s.scores, rng=0)
    >>> res.optimum > 32, res.ratio > 1.0
    (True, True)
    """
    z, w, sizes, repeats, max_samples, n_groups = _choose_iv(rewards, scores, subsample_sizes, repeats,
                                                             max_samples, n_groups)
    P, M = z.shape
    gen = default_rng(rng)
    full = prompt_pieces(z, w)
    full = (full[0], full[1], full[2] + full[1])           # g (P, d), ||g||^2 (P,), A3(x) (P,)
    subs = []                                              # subs[i][r]: pieces of M' = sizes[i], repeat r
    orders = [np.argsort(gen.random((P, M)), axis=1) for _ in range(repeats)]   # (P, M) each
    for m in sizes:
        row = []
        for order in orders:
            idx = order[:, :m]                                                   # (P, m)
            g, g2, st, _ = prompt_pieces(np.take_along_axis(z, idx, 1), np.take_along_axis(w, idx[..., None], 1))
            row.append((g, g2, st + g2))
        subs.append(row)

    def fit(keep):
        A1, A3 = _point(*(x[keep] for x in full))
        if not (A1 > 0 and A3 > 0):
            raise ValueError(f"the pilot's A1 = {A1:.3g} and A3 = {A3:.3g} must be positive: G* is not "
                             "finite, so its variance cannot be optimised (measure more prompts)")
        grad = _log_gstar_gradient(A1, A3)
        v = np.array([np.mean([_per_prompt_variance(pc, keep, grad) for pc in row]) for row in subs])
        return _fit(sizes, v), v, 1 + math.sqrt(A3 / A1)

    coef, v, g_star = fit(np.ones(P, bool))
    reps = []
    for blk in np.array_split(np.arange(P), n_groups):
        keep = np.ones(P, bool)
        keep[blk] = False
        reps.append(fit(keep)[0])
    reps = np.asarray(reps)                                # (K, 5)
    coef_cov = jackknife_covariance(reps)
    m_star = _optimum(coef, max_samples)
    ratio = float(M * (hoeffding_basis(M) @ coef) / (m_star * (hoeffding_basis(m_star) @ coef)))
    return SamplesPerPromptResult(samples_per_prompt=M, num_prompts=P, optimum=m_star, ratio=ratio,
                                  coefficients=coef, coefficient_covariance=coef_cov, subsample_sizes=sizes,
                                  measured=v, g_star=g_star, max_samples=max_samples, repeats=repeats,
                                  n_groups=n_groups)
