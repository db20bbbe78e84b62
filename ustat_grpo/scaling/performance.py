"""Fit of an observed performance-vs-G table at fixed budgets (like the paper's Table 2).

:func:`fit_performance_table` fits two candidate curves that share one optimum across budgets
(Theorem 7: ``G*`` does not depend on ``N``), a quadratic in ``log2 G`` and the fixed-budget MSE
law, and says whether the table locates an optimum at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ..core._random import default_rng
from ..core._serialize import jsonable
from ..core.interval import ConfidenceInterval, json_float, json_interval
from .optimum import fieller_ratio_interval

__all__ = ["PerformanceFit", "fit_performance_table", "GroupSizeComparison", "compare_group_sizes"]


@dataclass(frozen=True, kw_only=True)
class PerformanceFit:
    """Result of :func:`fit_performance_table`.

    The model is ``score = alpha_N + beta1 u + beta2 u^2`` with ``u = log2 G`` and one intercept
    per budget ``N`` (the curvature, hence ``G*``, is shared: Theorem 7 says ``G*`` does not
    depend on ``N``).  ``G* = 2^(-beta1 / (2 beta2))`` when ``beta2 < 0`` (for higher-is-better).

    Attributes
    ----------
    g_star : point estimate of the best group size (``nan`` without an interior maximum).
    g_star_interval : Fieller interval (on ``log2 G``, mapped back), may be unbounded.
    bounded : the Fieller interval is bounded.
    curvature, curvature_pvalue : ``beta2`` and the one-sided p-value of "has an interior optimum".
    budget_pvalue : F-test p-value of budget-specific curves vs the shared one (None: one budget).
    best_observed : {budget: G with the best mean score}.
    bootstrap_best : {G: share of residual-bootstrap refits whose best grid G is this G}.
    mse_shape : the second candidate shape ``score = a_N - b (G + rho/(G-1))`` (the fixed-budget
        MSE law of Prop. 3), profile-likelihood interval of ``G* = 1 + sqrt(rho)``, residual SS.
    preferred_shape : "log-quadratic" or "mse", whichever has the smaller residual sum of squares
        (both have the same number of parameters).
    distinguishable : whether the preferred shape singles out an optimum (bounded interval inside
        the observed G range; for the log-quadratic also a significant curvature).
    """

    g_star: float
    g_star_interval: ConfidenceInterval
    bounded: bool
    curvature: float
    curvature_pvalue: float
    budget_pvalue: float | None
    best_observed: dict
    bootstrap_best: dict
    distinguishable: bool
    params: np.ndarray
    covariance: np.ndarray
    residual_sd: float
    dof: int
    level: float
    num_generations: tuple
    budgets: tuple
    n_obs: int
    higher_is_better: bool
    mse_shape: dict
    preferred_shape: str
    effect_pvalue: float | None = None
    best_adjusted: int | None = None

    @property
    def effect_detected(self) -> bool:
        """The scores differ significantly between group sizes (two-way ANOVA at ``1 - level``)."""
        return self.effect_pvalue is not None and self.effect_pvalue < 1 - self.level

    @property
    def recommended(self) -> tuple[float, ConfidenceInterval]:
        """``(G*, interval)`` of the preferred shape."""
        if self.preferred_shape == "mse":
            return self.mse_shape["g_star"], self.mse_shape["g_star_interval"]
        return self.g_star, self.g_star_interval

    def predict(self, num_generations, *, budget) -> np.ndarray:
        """Fitted score (log-quadratic shape) at ``num_generations`` for one of the fitted budgets."""
        i = self.budgets.index(int(budget))
        u = np.log2(np.asarray(num_generations, float))
        sign = 1.0 if self.higher_is_better else -1.0
        return sign * (self.params[i] + self.params[-2] * u + self.params[-1] * u * u)

    def confidence_interval(self, level: float | None = None) -> ConfidenceInterval:
        """Fieller interval of ``G*`` at ``level`` (default: the fit's level)."""
        level = self.level if level is None else level
        ci, _ = _perf_interval(self.params, self.covariance, level, self.dof)
        return ci

    def summary(self) -> str:
        pct = f"{100 * self.level:g}%"
        hi = "inf" if math.isinf(self.g_star_interval.high) else f"{self.g_star_interval.high:.3g}"
        lines = ["performance vs group size: score = alpha_N + b1 log2 G + b2 (log2 G)^2 "
                 f"({self.n_obs} observations, {len(self.budgets)} budget(s), residual sd "
                 f"{self.residual_sd:.3g})",
                 "  best observed G per budget: " + ", ".join(f"N={k}: {v}" for k, v in self.best_observed.items()),
                 (f"  fitted G* = {self.g_star:.3g}, {pct} Fieller CI [{self.g_star_interval.low:.3g}, {hi}]"
                  if self.bounded else f"  fitted G*: not identified ({pct} Fieller set unbounded; " + (
                      f"vertex of the fitted curve at G = {self.g_star:.3g})"
                      if min(self.num_generations) <= self.g_star <= max(self.num_generations)
                      else "the fitted curve has no maximum inside the observed G range)")),
                 f"  curvature b2 = {self.curvature:.3g} (one-sided p = {self.curvature_pvalue:.3g} for an "
                 "interior optimum)"]
        if self.effect_pvalue is not None:
            lines.append(f"  effect of G: two-way ANOVA (budget blocks + G factor) p = {self.effect_pvalue:.3g}; "
                         f"best budget-adjusted G = {self.best_adjusted}")
        if self.budget_pvalue is not None:
            lines.append(f"  G* differs between budgets? F-test p = {self.budget_pvalue:.3g}")
        ms = self.mse_shape
        hi2 = "inf" if math.isinf(ms["g_star_interval"][1]) else f"{ms['g_star_interval'][1]:.3g}"
        est = (f"G* = 1 + sqrt(rho) = {ms['g_star']:.3g}, {pct} profile CI [{ms['g_star_interval'][0]:.3g}, {hi2}]"
               if ms["bounded"] else "G* not identified (no decrease of score with the MSE shape, or unbounded "
                                     "profile interval)")
        lines.append(f"  second candidate shape, score = a_N - b (G + rho/(G-1)) (the fixed-budget MSE law): "
                     f"{est}; residual SS {ms['rss']:.3g} vs {self.residual_sd ** 2 * self.dof:.3g} (log-quadratic)")
        lines.append("  residual bootstrap, share of refitted curves peaking at each G: " + ", ".join(
            f"G={k}: {v:.2f}" for k, v in self.bootstrap_best.items()))
        g_rec, ci_rec = self.recommended
        hi3 = "inf" if math.isinf(ci_rec[1]) else f"{ci_rec[1]:.3g}"
        if self.distinguishable and self.mse_shape.get("shapes_agree", True):
            verdict = (f"the data locate an interior optimum near G = {g_rec:.3g} ({pct} CI [{ci_rec[0]:.3g}, {hi3}], "
                       f"{self.preferred_shape} shape; both candidate shapes agree)")
        elif self.distinguishable:
            verdict = (f"the better-fitting {self.preferred_shape} shape locates G* = {g_rec:.3g} ({pct} CI "
                       f"[{ci_rec[0]:.3g}, {hi3}]), but the other shape puts it elsewhere: the interval is "
                       "conditional on the shape")
        elif self.effect_detected:
            verdict = (f"G matters (ANOVA over G within budgets, p = {self.effect_pvalue:.2g}), and the best tested "
                       f"G is {self.best_adjusted}, but neither curve locates an optimum inside the tested "
                       f"range {min(self.num_generations)}..{max(self.num_generations)}: the optimum may lie at "
                       "or beyond the edge of the grid")
        else:
            verdict = "the data cannot distinguish the candidate group sizes (differences are within noise)"
        lines.append("  verdict: " + verdict)
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable(dict(g_star=json_float(self.g_star), g_star_interval=json_interval(self.g_star_interval),
                    bounded=self.bounded, curvature=json_float(self.curvature),
                    curvature_pvalue=json_float(self.curvature_pvalue), budget_pvalue=json_float(self.budget_pvalue),
                    best_observed={str(k): int(v) for k, v in self.best_observed.items()},
                    bootstrap_best={str(k): float(v) for k, v in self.bootstrap_best.items()},
                    distinguishable=self.distinguishable, residual_sd=json_float(self.residual_sd),
                    dof=self.dof, level=self.level, n_obs=self.n_obs,
                    budgets=[int(b) for b in self.budgets],
                    num_generations=[int(g) for g in self.num_generations],
                    mse_shape=dict(g_star=json_float(self.mse_shape["g_star"]),
                                   g_star_interval=json_interval(self.mse_shape["g_star_interval"]),
                                   bounded=self.mse_shape["bounded"], rss=json_float(self.mse_shape["rss"]),
                                   shapes_agree=self.mse_shape.get("shapes_agree", True)),
                    preferred_shape=self.preferred_shape, effect_pvalue=json_float(self.effect_pvalue),
                    best_adjusted=self.best_adjusted,
                    recommended_g_star=json_float(self.recommended[0]), recommended_interval=json_interval(self.recommended[1])))


def _perf_interval(params, cov, level, dof):
    # vertex u* = -b1 / (2 b2): Fieller for rho = b1 / b2, then u* = -rho / 2 (decreasing map)
    b1, b2 = params[-2], params[-1]
    rci, bounded = fieller_ratio_interval(b1, b2, cov[-2, -2], cov[-1, -1], cov[-2, -1], level=level,
                                          df=dof, nonnegative=False)
    if not bounded:
        return ConfidenceInterval(0.0, math.inf), False
    lo, hi = 2.0 ** (-rci.high / 2), 2.0 ** (-rci.low / 2)
    return ConfidenceInterval(lo, hi), True


def _perf_design(budget, g, budgets):
    u = np.log2(g)
    cols = [(budget == b).astype(float) for b in budgets] + [u, u * u]
    return np.stack(cols, axis=-1)


def _fit_mse_shape(nb, g, ys, budgets, level):
    """Profile fit of ``score = a_N - b (G + rho/(G-1))`` over ``rho`` (a log grid, then refined).

    For fixed ``rho`` the model is linear (OLS); the profile-F set
    ``{rho : (RSS(rho) - RSS_min) / (RSS_min / dof) <= F_{1, dof}(level)}`` gives the interval of
    ``G* = 1 + sqrt(rho)``, unbounded when it reaches the top of the grid.
    """
    cols = [(nb == b).astype(float) for b in budgets]

    def rss(rho):
        X = np.stack(cols + [-(g + rho / (g - 1.0))], axis=-1)
        beta, *_ = np.linalg.lstsq(X, ys, rcond=None)
        r = ys - X @ beta
        return float(r @ r), float(beta[-1])

    grid = np.concatenate([[0.0], np.geomspace(1e-3, 1e8, 600)])
    vals = np.array([rss(r)[0] for r in grid])
    k = int(np.argmin(vals))
    lo_r, hi_r = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    if hi_r > lo_r:
        opt = optimize.minimize_scalar(lambda r: rss(r)[0], bounds=(lo_r, hi_r), method="bounded")
        r_hat, rss_min = (float(opt.x), float(opt.fun)) if opt.fun <= vals[k] else (grid[k], vals[k])
    else:
        r_hat, rss_min = grid[k], vals[k]
    dof = len(ys) - len(budgets) - 2
    b_hat = rss(r_hat)[1]
    if dof < 1 or rss_min <= 0:
        inside = np.ones_like(grid, bool)
    else:
        inside = (vals - rss_min) / (rss_min / dof) <= stats.f.ppf(level, 1, dof)
    crit = stats.f.ppf(level, 1, dof) if dof >= 1 else math.inf
    prof = lambda r: (rss(r)[0] - rss_min) / (rss_min / dof) - crit
    r_lo, r_hi = r_hat, math.inf
    if dof >= 1 and rss_min > 0:
        below = grid[(grid < r_hat) & ~inside]
        r_lo = float(optimize.brentq(prof, below.max(), r_hat)) if below.size else 0.0
        above = grid[(grid > r_hat) & ~inside]
        r_hi = float(optimize.brentq(prof, r_hat, above.min())) if above.size and not inside[-1] else math.inf
    bounded = bool(math.isfinite(r_hi) and b_hat > 0)
    return dict(g_star=1 + math.sqrt(r_hat), rho=r_hat, slope=b_hat,
                g_star_interval=ConfidenceInterval(1 + math.sqrt(min(r_lo, r_hat)),
                                                   1 + math.sqrt(r_hi) if bounded else math.inf),
                bounded=bounded, rss=rss_min)


def _budget_ftest(nb, g, ys, budgets, ssr_shared, num_params):
    """F-test p-value of budget-specific curves against one shared curve (None: one budget)."""
    import statsmodels.api as sm

    if len(budgets) < 2:
        return None
    u = np.log2(g)
    cols = [(nb == b).astype(float) for b in budgets]
    Xf = np.stack(cols + [c * u for c in cols] + [c * u * u for c in cols], axis=-1)
    if len(ys) - Xf.shape[1] < 1:
        return None
    full = sm.OLS(ys, Xf).fit()
    df1 = Xf.shape[1] - num_params
    F = ((ssr_shared - full.ssr) / df1) / (full.ssr / full.df_resid)
    return float(stats.f.sf(F, df1, full.df_resid))


def _group_size_effect(nb, g, ys, budgets, grid):
    """Two-way additive ANOVA (budget blocks + G factor): F-test p-value of G, and the best G.

    Returns ``(pvalue, best)``: ``best`` is the G with the largest budget-adjusted mean; both
    ``None`` when the table has no residual degrees of freedom.
    """
    cols_b = [(nb == b).astype(float) for b in budgets]
    cols_g = [(g == gg).astype(float) for gg in grid[1:]]          # G = grid[0] is the reference
    Xr, Xf = np.stack(cols_b, -1), np.stack(cols_b + cols_g, -1)
    dof_f = len(ys) - np.linalg.matrix_rank(Xf)
    if dof_f < 1:
        return None, None
    beta_f, *_ = np.linalg.lstsq(Xf, ys, rcond=None)
    beta_r, *_ = np.linalg.lstsq(Xr, ys, rcond=None)
    ssr_f = float(np.sum((ys - Xf @ beta_f) ** 2))
    ssr_r = float(np.sum((ys - Xr @ beta_r) ** 2))
    effects = np.concatenate([[0.0], beta_f[len(budgets):]])
    best = int(grid[int(np.argmax(effects))])
    if ssr_f <= 0:
        return None, best
    df1 = len(cols_g)
    F = ((ssr_r - ssr_f) / df1) / (ssr_f / dof_f)
    return float(stats.f.sf(F, df1, dof_f)), best


def _bootstrap_best(X, ys, params, dof, grid, n_boot, rng) -> dict:
    """Residual bootstrap under the fitted shared curve: share of refits peaking at each grid G."""
    n = len(ys)
    fitted, resid = X @ params, ys - X @ params
    resid = resid * math.sqrt(n / dof)                   # inflate for the fitted parameters
    Xg = np.stack([np.log2(grid), np.log2(grid) ** 2], axis=-1)
    counts = np.zeros(len(grid))
    XtX_inv_Xt = np.linalg.pinv(X)
    for _ in range(int(n_boot)):
        yb = fitted + rng.choice(resid, size=n, replace=True)
        pb = XtX_inv_Xt @ yb
        counts[int(np.argmax(Xg @ pb[-2:]))] += 1
    return {int(gg): float(c / max(n_boot, 1)) for gg, c in zip(grid, counts)}


def fit_performance_table(budget, num_generations, score, run=None, *, level: float = 0.95,
                          n_boot: int = 2000, rng=None, higher_is_better: bool = True) -> PerformanceFit:
    """Locate the best group size in an observed performance-vs-G table at fixed budgets.

    Parameters
    ----------
    budget : array_like, shape (n,)
        Rollouts per iteration ``N = B G`` of each observation.
    num_generations : array_like, shape (n,)
        ``G`` of each observation (at least three distinct values, and at least one row more than
        the ``number of budgets + 2`` parameters of the curve, so that the noise can be estimated:
        four rows for one budget).
    score : array_like, shape (n,)
        Final performance (e.g. test accuracy); one row per run.
    run : array_like, shape (n,), optional
        Run identifier (only used to count runs; every row is an observation).
    level : float
        Confidence level.
    n_boot : int
        Residual-bootstrap refits for the "share of being best" table.
    rng : numpy.random.Generator or int, optional
    higher_is_better : bool
        Scores such as accuracy (True) or losses/gaps (False; the sign is flipped internally).

    Returns
    -------
    PerformanceFit

    Notes
    -----
    OLS of ``score`` on budget indicators, ``log2 G`` and ``(log2 G)^2``; the vertex
    ``u* = -b1/(2 b2)`` gets a Fieller interval with Student-t quantiles.  The interval is
    unbounded when the curvature is not significantly non-zero: the table then cannot locate an
    optimum.  A second check refits with budget-specific curves (F-test) to ask whether ``G*``
    moves with the budget (Theorem 7 says it should not).  Runs of one configuration are treated
    as independent observations.

    Examples
    --------
    >>> G = np.array([4, 8, 16, 32, 64, 128] * 3); N = np.repeat([1024, 2048, 4096], 6)
    >>> acc = [0.7677, 0.7491, 0.7753, 0.7627, 0.7817, 0.7743, 0.7703, 0.7679, 0.7697,
    ...        0.7793, 0.7819, 0.7665, 0.7691, 0.7713, 0.7701, 0.7673, 0.7703, 0.7757]
    >>> fit_performance_table(N, G, acc, rng=0).distinguishable
    False
    """
    import statsmodels.api as sm

    nb = np.asarray(budget, float).ravel()
    g = np.asarray(num_generations, float).ravel()
    y = np.asarray(score, float).ravel()
    if not (nb.shape == g.shape == y.shape):
        raise ValueError("budget, num_generations and score must have the same length")
    if not (np.all(np.isfinite(nb)) and np.all(np.isfinite(g)) and np.all(np.isfinite(y))):
        raise ValueError("budget, num_generations and score must be finite")
    if np.any(nb <= 0):
        raise ValueError("budget must be positive")
    if np.any(g < 2):
        raise ValueError("num_generations must be >= 2")
    if len(np.unique(g)) < 3:
        raise ValueError("need at least three distinct num_generations")
    rng = default_rng(rng)
    sign = 1.0 if higher_is_better else -1.0
    ys = sign * y
    budgets = tuple(np.unique(nb).tolist())
    X = _perf_design(nb, g, budgets)
    n, p = X.shape
    if n - p < 1:
        raise ValueError(f"a performance table with {len(budgets)} budget(s) needs at least {p + 1} rows, got {n}: "
                         f"the curve has {p} parameters ({len(budgets)} budget level(s), log2 G and (log2 G)^2) "
                         "and at least one more row is needed to estimate the run-to-run noise; add a seed "
                         "or another G")
    res = sm.OLS(ys, X).fit()
    params, cov = np.asarray(res.params), np.asarray(res.cov_params())
    dof = int(res.df_resid)
    b1, b2 = params[-2], params[-1]
    tval = b2 / math.sqrt(cov[-1, -1]) if cov[-1, -1] > 0 else -math.inf * np.sign(b2)
    curv_p = float(stats.t.cdf(tval, dof))               # H1: b2 < 0 (a maximum)
    ci, bounded = _perf_interval(params, cov, level, dof)
    g_star = 2.0 ** (-b1 / (2 * b2)) if b2 < 0 else math.nan
    budget_p = _budget_ftest(nb, g, ys, budgets, res.ssr, p)
    grid = np.unique(g)
    best_obs = {}
    for b in budgets:
        m = [ys[(nb == b) & (g == gg)].mean() if np.any((nb == b) & (g == gg)) else -np.inf for gg in grid]
        best_obs[int(b)] = int(grid[int(np.argmax(m))])
    share = _bootstrap_best(X, ys, params, dof, grid, n_boot, rng)
    effect_p, best_adj = _group_size_effect(nb, g, ys, budgets, grid)
    alpha = 1 - level
    distinguishable = bool(bounded and curv_p < alpha / 2 and ci.low >= grid.min() and ci.high <= grid.max())
    mse_shape = _fit_mse_shape(nb, g, ys, budgets, level)
    # the two candidate shapes must agree for the optimum to count as located
    ms_ci = mse_shape["g_star_interval"]
    shapes_agree = bool(not (bounded and mse_shape["bounded"]) or (ms_ci[0] <= ci.high and ci.low <= ms_ci[1]))
    mse_shape["shapes_agree"] = shapes_agree
    preferred = "mse" if mse_shape["rss"] < res.ssr else "log-quadratic"
    if preferred == "mse":
        distinguishable = bool(mse_shape["bounded"] and ms_ci[0] >= grid.min() and ms_ci[1] <= grid.max())
    return PerformanceFit(g_star=float(g_star), g_star_interval=ci, bounded=bool(bounded),
                          curvature=float(sign * b2), curvature_pvalue=curv_p, budget_pvalue=budget_p,
                          best_observed=best_obs, bootstrap_best=share, distinguishable=distinguishable,
                          params=params, covariance=cov, residual_sd=float(math.sqrt(res.scale)),
                          dof=dof, level=level, num_generations=tuple(int(x) for x in grid),
                          budgets=tuple(int(b) for b in budgets), n_obs=n,
                          higher_is_better=higher_is_better, mse_shape=mse_shape,
                          preferred_shape=preferred, effect_pvalue=effect_p, best_adjusted=best_adj)


# ============================================================================ paired comparison of G

@dataclass(frozen=True, kw_only=True)
class GroupSizeComparison:
    """Result of :func:`compare_group_sizes`.

    Attributes
    ----------
    groups : tuple of int
    mean, se : ndarray (k,)
        Mean score per G over seeds and its standard error.
    best : int
        The G with the best mean.
    best_set : tuple of int
        The G not significantly worse than any other (contains the truly best G with probability
        at least ``level``).
    pvalue_worse : dict
        Per G: the smallest one-sided paired p-value of "some other G scores higher", before the
        Bonferroni factor ``k - 1``.
    effect_pvalue : float
        F-test of G in the two-way additive ANOVA with seeds as blocks.
    seeds_needed : dict
        Per G outside ``best``: seeds for 80% power to declare it worse than ``best`` at the
        measured paired effect size (``inf`` when the measured difference has the wrong sign).
    """

    groups: tuple
    mean: np.ndarray
    se: np.ndarray
    best: int
    best_set: tuple
    pvalue_worse: dict
    effect_pvalue: float
    seeds_needed: dict
    num_seeds: int
    level: float

    def to_dict(self) -> dict:
        return jsonable({"groups": list(self.groups), "mean": self.mean.tolist(), "se": self.se.tolist(),
                "best": self.best, "best_set": list(self.best_set),
                "pvalue_worse": {str(g): json_float(p) for g, p in self.pvalue_worse.items()},
                "effect_pvalue": json_float(self.effect_pvalue),
                "seeds_needed": {str(g): json_float(n) for g, n in self.seeds_needed.items()},
                "num_seeds": self.num_seeds, "level": self.level})


def compare_group_sizes(groups, scores, *, level: float = 0.95, higher_is_better: bool = True,
                        power: float = 0.8) -> GroupSizeComparison:
    """Which group sizes are not significantly worse than the best, from runs paired by seed.

    Parameters
    ----------
    groups : array_like of int, shape (k,)
    scores : array_like, shape (k, n)
        ``scores[i, s]``: the outcome (e.g. area under the learning curve) of G = ``groups[i]``
        with seed ``s``; runs with the same seed share their randomness where they can (same
        questions), so differences are taken within a seed.
    level : float
        ``1 - alpha``.

    Notes
    -----
    Subset selection by paired one-sided t-tests with a Bonferroni factor (Gupta's subset
    selection; Hsu 1996, ch. 4, "multiple comparisons with the best"): G_i is declared worse when,
    for some j, the test of ``mu_j <= mu_i`` against ``mu_j > mu_i`` rejects at ``alpha / (k - 1)``.
    For the truly best G every one of its ``k - 1`` null hypotheses is true, so it is excluded
    with probability at most ``alpha``: ``best_set`` covers the best G at level ``1 - alpha``.
    """
    from statsmodels.stats.power import TTestPower

    g = np.asarray(groups, int)
    y = np.asarray(scores, float) * (1.0 if higher_is_better else -1.0)
    if y.ndim != 2 or y.shape[0] != g.size or g.size < 2:
        raise ValueError(f"scores must have shape (k >= 2, n) with k = len(groups); got {y.shape}")
    k, n = y.shape
    if n < 2 or not np.all(np.isfinite(y)):
        raise ValueError("need at least two finite seeds per group size")
    alpha = 1.0 - level
    d = y[None, :, :] - y[:, None, :]                       # d[i, j, s] = y_j - y_i
    md, sd = d.mean(-1), d.std(-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = md / (sd / math.sqrt(n))
    p = stats.t.sf(t, n - 1)                                # H1: mu_j > mu_i
    p = np.where(sd > 0, p, np.where(md > 0, 0.0, 1.0))
    np.fill_diagonal(p, 1.0)
    pmin = p.min(1)
    worse = pmin <= alpha / (k - 1)
    mean = y.mean(1)
    b = int(np.argmax(mean))
    seeds = {}
    for i in range(k):
        if i == b:
            continue
        if not md[i, b] > 0:                                # no measured advantage of the best: never
            seeds[int(g[i])] = math.inf
        elif not sd[i, b] > 0:                              # a constant positive difference: two seeds
            seeds[int(g[i])] = 2.0
        else:
            seeds[int(g[i])] = float(math.ceil(TTestPower().solve_power(
                effect_size=md[i, b] / sd[i, b], alpha=alpha / (k - 1), power=power, alternative="larger")))
    blocks = np.repeat(np.arange(n)[None], k, 0).ravel()
    pv, _ = _group_size_effect(blocks, np.repeat(g, n), y.ravel(), np.arange(n), np.sort(g))
    sign = 1.0 if higher_is_better else -1.0
    return GroupSizeComparison(groups=tuple(int(x) for x in g), mean=sign * mean,
                               se=y.std(1, ddof=1) / math.sqrt(n), best=int(g[b]),
                               best_set=tuple(int(x) for x in g[~worse]),
                               pvalue_worse={int(x): float(v) for x, v in zip(g, pmin)},
                               effect_pvalue=float("nan") if pv is None else pv, seeds_needed=seeds,
                               num_seeds=n, level=level)
