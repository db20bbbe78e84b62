"""A compute-cost model of a GRPO step, and the group size that minimises the gradient error per token.

At ``N = B G`` rollouts per step the scaling law (arXiv 2603.01162, Prop. 3, exact form) gives
``MSE = (A1 G + A2 + A3/(G-1)) / N``, minimised at ``G* = 1 + sqrt(A3/A1)`` whatever ``N``.  Rollouts
are not the only cost: a group's prompt is prefilled once and shared by its ``G`` completions
(vLLM / SGLang prefix caching, TRL's and verl's grouped generation), so a step of ``B`` prompts
costs ``B c_p + B G c_c`` with ``c_p`` the cost of a prompt (its tokens, or seconds of prefill)
and ``c_c`` the cost of a completion.  At a fixed cost ``T`` per step, ``B = T / (c_p + G c_c)``
and

    MSE = (c_p + G c_c) (A1 + A2/G + A3/(G(G-1))) / T,

whose minimiser :func:`optimal_group_size_tokens` grows with ``c_p / c_c`` (the shared prefill is
spread over more completions) and equals the rollout-budget ``G*`` when ``c_p = 0``.  ``T`` only
caps ``G`` (``B >= 1``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ..core._serialize import jsonable
from ..core.interval import ConfidenceInterval

__all__ = ["CostModel", "TokenBudgetResult", "cost_model", "optimal_group_size_tokens", "token_objective"]


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """Cost of one prompt's prefill ``c_p`` and of one completion ``c_c`` (module notes).

    Attributes
    ----------
    prompt_tokens, completion_tokens : float
        Mean tokens of a prompt and of a completion (measured on a pilot: :func:`cost_model`).
    prefill_seconds_per_token, decode_seconds_per_token : float or None
        Optional measured throughput; with both, costs are in seconds, else in tokens.
    source : str
        Where the numbers come from.
    """

    prompt_tokens: float
    completion_tokens: float
    prefill_seconds_per_token: float | None = None
    decode_seconds_per_token: float | None = None
    source: str = ""

    def __post_init__(self):
        for name in ("prompt_tokens", "completion_tokens"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not self.completion_tokens > 0:
            raise ValueError("completion_tokens must be > 0 (a completion has a cost)")
        timed = (self.prefill_seconds_per_token is None, self.decode_seconds_per_token is None)
        if timed[0] != timed[1]:
            raise ValueError("give both prefill_seconds_per_token and decode_seconds_per_token, or neither")
        if not timed[0]:
            for name in ("prefill_seconds_per_token", "decode_seconds_per_token"):
                v = getattr(self, name)
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"{name} must be > 0, got {v!r}")

    @property
    def unit(self) -> str:
        return "tokens" if self.prefill_seconds_per_token is None else "seconds"

    @property
    def prompt_cost(self) -> float:
        """``c_p``: one prefill of a prompt (shared by its group)."""
        s = 1.0 if self.prefill_seconds_per_token is None else self.prefill_seconds_per_token
        return float(self.prompt_tokens * s)

    @property
    def completion_cost(self) -> float:
        """``c_c``: one completion."""
        s = 1.0 if self.decode_seconds_per_token is None else self.decode_seconds_per_token
        return float(self.completion_tokens * s)

    @property
    def ratio(self) -> float:
        """``c_p / c_c``."""
        return self.prompt_cost / self.completion_cost

    def step_cost(self, num_prompts, num_generations):
        """``B c_p + B G c_c`` (tokens, or seconds): a step of ``B`` groups of ``G``."""
        B, G = np.asarray(num_prompts, float), np.asarray(num_generations, float)
        return B * self.prompt_cost + B * G * self.completion_cost

    def to_dict(self) -> dict:
        return jsonable({"prompt_tokens": float(self.prompt_tokens), "completion_tokens": float(self.completion_tokens),
                             "prefill_seconds_per_token": self.prefill_seconds_per_token,
                             "decode_seconds_per_token": self.decode_seconds_per_token, "unit": self.unit,
                             "prompt_cost": self.prompt_cost, "completion_cost": self.completion_cost,
                             "ratio": self.ratio, "source": self.source})


def cost_model(stats, *, prefill_seconds_per_token=None, decode_seconds_per_token=None) -> CostModel:
    """The :class:`CostModel` of a pilot: mean prompt and completion lengths from its extras.

    Parameters
    ----------
    stats : PromptStatistics or Measurement
        A language-model pilot: extras ``length`` (tokens of each completion, ``(P, M)``) and
        ``prompt_length`` (tokens of each prompt, ``(P,)``), as :class:`~ustat_grpo.measurement.sampler.TaskSampler`
        records them.
    prefill_seconds_per_token, decode_seconds_per_token : float, optional
        Measured throughput of your serving stack (costs in seconds instead of tokens).

    Raises
    ------
    ValueError
        When the pilot has no lengths (a toy bandit; a pilot written before prompt lengths were kept).
    """
    st = getattr(stats, "statistics", stats)
    ex = getattr(st, "extras", None)
    if ex is None:
        raise TypeError(f"stats must be a PromptStatistics or a Measurement, got {type(stats).__name__}")
    missing = [k for k in ("length", "prompt_length") if k not in ex]
    if missing:
        raise ValueError(f"the pilot records no {' or '.join(missing)} (token counts per prompt and completion); "
                         "a language-model pilot of this version keeps both")
    return CostModel(prompt_tokens=float(np.mean(ex["prompt_length"][1])),
                     completion_tokens=float(np.mean(ex["length"][1])),
                     prefill_seconds_per_token=prefill_seconds_per_token,
                     decode_seconds_per_token=decode_seconds_per_token,
                     source=f"mean lengths of {len(st)} pilot prompts")


def token_objective(G, constants, ratio):
    """``(r + G)(A1 + A2/G + A3/(G(G-1)))`` with ``r = c_p / c_c``: the per-cost MSE up to ``c_c / T``."""
    G = np.asarray(G, float)
    a1, a2, a3 = (float(x) for x in constants)
    return (ratio + G) * (a1 + a2 / G + a3 / (G * (G - 1)))


def _continuous(constants, ratio, g_max):
    """Real ``G`` in ``(1, g_max]`` minimising :func:`token_objective` (``inf`` when it keeps falling)."""
    a1, a2, a3 = (max(float(x), 0.0) for x in constants)
    if a3 == 0 and ratio * a2 == 0:
        return 2.0 if a1 > 0 else math.inf                   # objective non-decreasing in G: smallest G
    if a1 == 0:
        return math.inf                                      # derivative < 0 everywhere
    # derivative of (r + G) m(G) = m + (r + G) m'; negative near G = 1, -> a1 > 0 as G -> inf
    m = lambda g: a1 + a2 / g + a3 / (g * (g - 1))
    dm = lambda g: -a2 / g**2 - a3 * (2 * g - 1) / (g**2 * (g - 1) ** 2)
    phi = lambda g: m(g) + (ratio + g) * dm(g)
    lo, hi = 1.0 + 1e-12, 2.0
    while phi(hi) < 0:
        hi *= 2
        if hi > g_max:
            return math.inf
    if phi(lo) >= 0:
        return lo
    return float(optimize.brentq(phi, lo, hi, xtol=1e-12, rtol=1e-14))


def _integer(constants, ratio, g_max):
    """Integer ``G`` in ``[2, g_max]`` minimising :func:`token_objective` (ties to the smaller)."""
    gc = _continuous(constants, ratio, g_max)
    if not math.isfinite(gc):
        return int(g_max)
    base = max(2, min(math.floor(gc), int(g_max)))
    cand = np.unique(np.clip([base - 1, base, base + 1, base + 2], 2, g_max))
    obj = token_objective(cand, constants, ratio)
    return int(cand[int(np.argmin(obj))])


def _integer_naive(constants, ratio, g_max):
    """:func:`_integer` by evaluating every ``G`` in ``2..g_max`` (test oracle)."""
    cand = np.arange(2, int(g_max) + 1)
    return int(cand[int(np.argmin(token_objective(cand, constants, ratio)))])


@dataclass(frozen=True, kw_only=True)
class TokenBudgetResult:
    """``G*`` at a fixed cost per step (tokens or seconds) next to ``G*`` at a fixed number of rollouts.

    Attributes
    ----------
    cost : CostModel
    token_budget : float
        Cost per step ``T`` (in ``cost.unit``).
    g_star : float
        Continuous minimiser of ``(c_p + G c_c)(A1 + A2/G + A3/(G(G-1)))``.
    g_star_integer : int
        Integer minimiser in ``2 .. G_max`` (``G_max``: one prompt per step, ``(T - c_p)/c_c``).
    g_star_interval : ConfidenceInterval
        Delta-method interval of ``g_star`` from the constants' covariance (Student-t); ``high = inf``
        when ``A1`` is not significantly > 0 (no interior optimum, as for the rollout ``G*``).
    num_prompts : float
        ``B = T / (c_p + G c_c)`` at ``g_star_integer``.
    g_star_rollouts : float
        ``1 + sqrt(A3/A1)``: the rollout-budget optimum (``c_p = 0``).
    bounded : bool
    level : float
    """

    cost: CostModel
    token_budget: float
    g_star: float
    g_star_integer: int
    g_star_interval: ConfidenceInterval
    num_prompts: float
    g_star_rollouts: float
    bounded: bool
    level: float

    def summary(self) -> str:
        lo, hi = self.g_star_interval
        hi_s = "inf" if math.isinf(hi) else f"{hi:.3g}"
        c = self.cost
        line = (f"at a fixed cost of T = {self.token_budget:.4g} {c.unit} per step (prompt {c.prompt_tokens:.3g} "
                f"tokens prefilled once per group, completion {c.completion_tokens:.3g} tokens; c_p/c_c = "
                f"{c.ratio:.3g}): G*_tokens = {self.g_star:.4g} [{lo:.3g}, {hi_s}], integer "
                f"{self.g_star_integer} (B = {self.num_prompts:.3g}); rollout-budget G* = {self.g_star_rollouts:.4g}")
        if not self.bounded:
            line += " (A1 not significantly > 0: no interior optimum certified)"
        return line

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable({"cost": self.cost.to_dict(), "token_budget": self.token_budget, "g_star": self.g_star,
                             "g_star_integer": self.g_star_integer, "g_star_interval": list(self.g_star_interval),
                             "num_prompts": self.num_prompts, "g_star_rollouts": self.g_star_rollouts,
                             "bounded": self.bounded, "level": self.level,
                             "objective": "(c_p + G c_c)(A1 + A2/G + A3/(G(G-1))), c_p shared by the group"})


def optimal_group_size_tokens(constants, cost: CostModel, *, token_budget: float | None = None,
                              level: float | None = None, max_group_size: int = 1 << 16) -> TokenBudgetResult:
    """``G`` minimising the gradient MSE at a fixed cost per step, prefill shared within a group.

    Parameters
    ----------
    constants : ConstantsEstimate or array_like (3,)
        ``(A1, A2, A3)`` (exact form) with covariance (a :class:`~ustat_grpo.scaling.constants.ScalingConstants`),
        or exact values (the interval is then a point).
    cost : CostModel
    token_budget : float, optional
        Cost per step ``T``; it caps ``G`` at ``(T - c_p)/c_c`` (one prompt).  Default: no cap
        (``max_group_size``), reported as ``inf``.
    level : float, optional
        Confidence level (default: the estimate's, else 0.95).
    max_group_size : int
        Cap on ``G`` when ``token_budget`` is None.

    Returns
    -------
    TokenBudgetResult

    Notes
    -----
    ``B = T/(c_p + G c_c)`` prompts of ``G`` completions cost ``T``; the MSE of Prop. 3
    (arXiv 2603.01162) is then ``(c_p + G c_c)(A1 + A2/G + A3/(G(G-1)))/T``.  With ``r = c_p/c_c``
    the minimiser solves ``m(G) + (r + G) m'(G) = 0``, ``m(G) = A1 + A2/G + A3/(G(G-1))``; at
    ``r = 0`` it is ``1 + sqrt(A3/A1)``, and it increases with ``r``.  Unlike the rollout-budget
    ``G*`` it depends on ``A2`` too.  The interval is the delta method on the implicit function
    (numerical gradient in ``(A1, A2, A3)``, the constants' covariance, Student-t with their
    degrees of freedom).

    Examples
    --------
    >>> r = optimal_group_size_tokens([1.0, 2.0, 16.0], CostModel(prompt_tokens=0.0, completion_tokens=100.0))
    >>> round(r.g_star, 10), r.g_star_integer
    (5.0, 5)
    """
    if not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel, got {type(cost).__name__}")
    cov = getattr(constants, "covariance", None)
    df = getattr(constants, "df", None)
    est_level = getattr(constants, "level", None)
    if cov is not None:
        point = np.asarray(constants.params, float)
        raw = np.asarray(constants.unconstrained, float)
        if getattr(constants, "form", "exact") != "exact":
            raise ValueError("constants must be exact-form (A1, A2, A3)")
    else:
        point = raw = np.asarray(constants, float).reshape(3)
    if not np.all(np.isfinite(point)):
        raise ValueError("constants must be finite")
    level = float(level if level is not None else (est_level or 0.95))
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    r = cost.ratio
    if token_budget is None:
        g_max, T = int(max_group_size), math.inf
    else:
        T = float(token_budget)
        if not (math.isfinite(T) and T >= cost.prompt_cost + 2 * cost.completion_cost):
            raise ValueError(f"token_budget must allow one prompt with two completions "
                             f"(>= {cost.prompt_cost + 2 * cost.completion_cost:.4g}), got {token_budget}")
        g_max = math.floor((T - cost.prompt_cost) / cost.completion_cost)
    gc = _continuous(point, r, g_max)
    gi = _integer(point, r, g_max)
    g_roll = 1 + math.sqrt(point[2] / point[0]) if point[0] > 0 else math.inf
    if cov is None:
        ci, bounded = ConfidenceInterval(gc, gc), math.isfinite(gc)
    else:
        V = np.asarray(cov, float).reshape(3, 3)
        q = stats.norm.isf((1 - level) / 2) if df is None else stats.t.isf((1 - level) / 2, df)
        bounded = bool(raw[0] - q * math.sqrt(max(V[0, 0], 0.0)) > 0) and math.isfinite(gc)
        if not bounded:
            ci = ConfidenceInterval(1.0, math.inf)
        else:
            grad = np.zeros(3)
            base = np.maximum(raw, 0.0)
            for k in range(3):
                h = 1e-6 * max(abs(base[k]), 1e-12) + 1e-12 * np.abs(base).max()
                up, dn = base.copy(), base.copy()
                up[k] += h
                dn[k] = max(dn[k] - h, 0.0)
                grad[k] = (_continuous(up, r, g_max) - _continuous(dn, r, g_max)) / (up[k] - dn[k])
            se = math.sqrt(max(float(grad @ V @ grad), 0.0))
            ci = ConfidenceInterval(max(1.0, gc - q * se), gc + q * se)
    B = T / (cost.prompt_cost + gi * cost.completion_cost) if math.isfinite(T) else math.inf
    return TokenBudgetResult(cost=cost, token_budget=T, g_star=float(gc), g_star_integer=int(gi),
                             g_star_interval=ci, num_prompts=float(B), g_star_rollouts=float(g_roll),
                             bounded=bool(bounded), level=level)
