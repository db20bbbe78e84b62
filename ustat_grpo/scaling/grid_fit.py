"""Fit of a measured MSE grid to the scaling law (arXiv 2603.01162, Prop. 3 / Theorem 7).

Given ``MSE(B, G)`` measured on a grid of prompts ``B`` and group sizes ``G`` (a Monte Carlo grid
from :mod:`ustat_grpo.experiments.montecarlo`, or a user's own measurements), :func:`fit_mse_grid` estimates
the three constants of the exact form ``A1/B + A2/(BG) + A3/(BG(G-1))`` or of the paper's form
``c1/B + c2/(BG) + c3/(BG^2)``, with a non-negative point estimate, a WLS / Gamma-GLM covariance
and a goodness-of-fit test.  The result is a :class:`~ustat_grpo.scaling.optimum.ConstantsEstimate`,
so ``fit.optimal_group_size(budget=...)`` gives ``G*`` with its Fieller interval.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ..core._serialize import jsonable
from ..core.interval import json_float, json_interval
from ..theory.mse import CONSTANT_NAMES
from .optimum import ConstantsEstimate, _check_form, mse_design

__all__ = ["ScalingFit", "fit_mse_grid"]


@dataclass(frozen=True, kw_only=True)
class ScalingFit(ConstantsEstimate):
    """Result of :func:`fit_mse_grid`.

    Attributes
    ----------
    form : "exact" (A1, A2, A3) or "paper" (c1, c2, c3).
    names : names of the three constants.
    params : non-negative point estimate (NNLS on the whitened design), shape (3,).
    unconstrained : weighted least-squares estimate without the sign constraint, shape (3,).
    covariance : covariance of ``unconstrained`` (3, 3) (``statsmodels`` WLS, ``cov_type``
        "fixed scale" when the variances are known).
    active : which constraints ``param >= 0`` are active at the point estimate.
    method : "wls" (weights 1/mse_se^2), "gamma" (Gamma-GLM variance ``phi_i mu_i^2`` from the
        fitted means) or "gamma-estimated-scale" (no ``mse_se``: dispersion from residuals).
    chi2, dof, pvalue : goodness of fit (``pvalue`` is None when the scale was estimated).
    df : degrees of freedom for t quantiles (None: normal quantiles, variances known).
    level : default confidence level.
    num_prompts, num_generations, mse, mse_se : the data (1-D arrays).
    """

    active: tuple
    method: str
    chi2: float
    dof: int
    pvalue: float | None
    num_prompts: np.ndarray
    num_generations: np.ndarray
    mse: np.ndarray
    mse_se: np.ndarray | None

    def summary(self) -> str:
        ci = self.confidence_interval()
        pct = f"{100 * self.level:g}%"
        lines = [f"scaling-law fit, {self.form} form: MSE = {self.names[0]}/B + {self.names[1]}/(BG) + "
                 f"{self.names[2]}/" + ("(BG(G-1))" if self.form == "exact" else "(BG^2)"),
                 f"  method: {self.method}; {len(self.mse)} cells, G in "
                 f"{sorted(set(self.num_generations.astype(int).tolist()))}",
                 f"  {'name':<4} {'estimate':>11} {'std.err':>10}  {pct} CI"]
        for i, n in enumerate(self.names):
            act = "  (at bound 0)" if self.active[i] else ""
            lines.append(f"  {n:<4} {self.params[i]:>11.5g} {self.standard_error[i]:>10.3g}  "
                         f"[{ci[n].low:.4g}, {ci[n].high:.4g}]{act}")
        gof = f"chi2 = {self.chi2:.3g} on {self.dof} dof"
        gof += f", p = {self.pvalue:.3g}" if self.pvalue is not None else " (dispersion estimated)"
        lines.append("  goodness of fit: " + gof)
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        ci = self.confidence_interval()
        return jsonable(dict(form=self.form, method=self.method,
                    constants={n: json_float(self.params[i]) for i, n in enumerate(self.names)},
                    unconstrained={n: json_float(self.unconstrained[i]) for i, n in enumerate(self.names)},
                    standard_error={n: json_float(self.standard_error[i]) for i, n in enumerate(self.names)},
                    confidence_interval={n: json_interval(ci[n]) for n in self.names},
                    covariance=[[json_float(v) for v in row] for row in self.covariance],
                    active_constraints={n: bool(self.active[i]) for i, n in enumerate(self.names)},
                    chi2=json_float(self.chi2), dof=int(self.dof), pvalue=json_float(self.pvalue), level=self.level,
                    num_cells=int(len(self.mse))))


def _fit_mse_grid_iv(num_prompts, num_generations, mse, mse_se, form, method, level):
    _check_form(form)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    b = np.asarray(num_prompts, float).ravel()
    g = np.asarray(num_generations, float).ravel()
    y = np.asarray(mse, float).ravel()
    if not (b.shape == g.shape == y.shape):
        raise ValueError("num_prompts, num_generations and mse must have the same length")
    for name, v in (("num_prompts", b), ("num_generations", g), ("mse", y)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(b < 1):
        raise ValueError("num_prompts must be >= 1")
    if np.any(g < 2):
        raise ValueError("num_generations must be >= 2 (GRPO needs a group)")
    if np.any(y <= 0):
        raise ValueError("mse must be positive")
    if len(np.unique(g)) < 3:
        raise ValueError(f"need at least three distinct num_generations, got {sorted(set(g.tolist()))}")
    se = None
    if mse_se is not None:
        se = np.asarray(mse_se, float).ravel()
        if se.shape != y.shape or not np.all(np.isfinite(se)) or np.any(se <= 0):
            raise ValueError("mse_se must be positive and finite, one per cell")
    if method not in ("auto", "wls", "gamma"):
        raise ValueError(f"method must be 'auto', 'wls' or 'gamma', got {method!r}")
    return b, g, y, se


def fit_mse_grid(num_prompts, num_generations, mse, mse_se=None, *, form: str = "exact",
                 method: str = "auto", level: float = 0.95, max_iter: int = 50) -> ScalingFit:
    """Fit a measured MSE grid to the scaling law.

    Parameters
    ----------
    num_prompts, num_generations, mse : array_like, shape (n,)
        One row per grid cell: ``B``, ``G`` and the measured MSE (e.g. a Monte Carlo mean of
        squared errors).  At least three distinct ``G >= 2``.
    mse_se : array_like, shape (n,), optional
        Standard error of each ``mse``.
    form : {"exact", "paper"}
        ``exact``: ``A1/B + A2/(BG) + A3/(BG(G-1))``; ``paper``: ``c1/B + c2/(BG) + c3/(BG^2)``.
    method : {"auto", "wls", "gamma"}
        ``wls``: weighted least squares with the given ``mse_se`` as known standard errors
        (``statsmodels`` WLS, ``cov_type="fixed scale"``).  ``gamma``: Gamma-GLM variance
        function, ``Var(mse_i) = phi_i mu_i^2`` with ``mu_i`` the *fitted* mean, fitted by IRLS;
        ``phi_i = (mse_se_i / mse_i)^2`` when ``mse_se`` is given (known relative errors), else a
        common ``phi`` estimated from Pearson residuals (then t quantiles with ``n - 3`` dof).
        ``auto`` = ``gamma``: weighting by the observed ``mse_se`` couples each cell's weight to
        its own noise (cells that came out low get large weights); the seeded coverage tests of
        ``tests/test_grid_fit.py`` check both methods against the nominal level
        (``pytest -m slow`` for the large study).
    level : float
        Default confidence level.

    Returns
    -------
    ScalingFit

    Notes
    -----
    The model is linear in the constants, so the point estimate is a non-negative least-squares
    solution (``scipy.optimize.lsq_linear`` on the whitened design); active constraints are
    reported, and intervals come from the unconstrained weighted fit (Wald), which is the right
    sampling law away from the bound.

    Examples
    --------
    >>> G = np.array([2, 4, 8, 16, 32]); B = 1024 // G
    >>> mse = mse_design(B, G) @ np.array([1.0, 2.0, 8.0])
    >>> fit = fit_mse_grid(B, G, mse, 0.01 * mse)
    >>> np.round(fit.params, 6).tolist()
    [1.0, 2.0, 8.0]
    """
    import statsmodels.api as sm

    b, g, y, se = _fit_mse_grid_iv(num_prompts, num_generations, mse, mse_se, form, method, level)
    if method == "auto":
        method = "gamma"
    X = mse_design(b, g, form=form)                     # (n, 3)
    scale = np.abs(X).max(axis=0)                       # column scaling for conditioning
    Xs = X / scale
    n = len(y)

    def wls(var, fixed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sm.WLS(y, Xs, weights=1.0 / var)
            res = model.fit(cov_type="fixed scale") if fixed else model.fit()
        return res

    if method == "wls":
        if se is None:
            raise ValueError("method='wls' needs mse_se")
        var, fixed, label = se ** 2, True, "wls"
        res = wls(var, True)
    else:
        phi = (se / y) ** 2 if se is not None else np.ones(n)
        fixed = se is not None
        label = "gamma" if fixed else "gamma-estimated-scale"
        mu = y.copy()
        for _ in range(max_iter):
            var = phi * mu ** 2
            res = wls(var, fixed)
            mu_new = np.maximum(Xs @ res.params, 1e-3 * y)  # keep the variance function positive
            if np.max(np.abs(mu_new - mu) / mu) < 1e-10:
                mu = mu_new
                break
            mu = mu_new
        var = phi * mu ** 2
        res = wls(var, fixed)
    theta_u = np.asarray(res.params) / scale
    cov = np.asarray(res.cov_params()) / np.outer(scale, scale)
    w = 1.0 / np.sqrt(var)
    ls = optimize.lsq_linear(Xs * w[:, None], y * w, bounds=(0, np.inf), method="bvls")
    theta = np.maximum(ls.x, 0) / scale
    active = tuple(bool(a != 0) for a in ls.active_mask)
    resid = (y - X @ theta_u) / np.sqrt(var)
    dof = n - 3
    if fixed:
        chi2 = float(resid @ resid)
        pval = float(stats.chi2.sf(chi2, dof)) if dof > 0 else None
        df = None
    else:
        chi2 = float(resid @ resid)  # Pearson X2 with phi = 1; the estimated dispersion is chi2/dof
        pval = None
        df = float(dof) if dof > 0 else None
        if dof <= 0:
            raise ValueError("need more than three cells to estimate the dispersion without mse_se")
    return ScalingFit(form=form, names=CONSTANT_NAMES[form], params=theta, unconstrained=theta_u,
                      covariance=cov, active=active, method=label, chi2=chi2, dof=dof, pvalue=pval,
                      df=df, level=level, num_prompts=b, num_generations=g, mse=y, mse_se=se)
