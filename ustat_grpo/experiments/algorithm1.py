"""Algorithm 1 of arXiv 2603.01162 (stochastic policy-gradient ascent), vectorised over replicates.

``run_algorithm1`` runs ``R`` independent replicates of

    theta_{i+1} = theta_i + eta_{i+1} * g_hat(theta_i),   i = 0, ..., n - 1,

(arXiv 2603.01162, Algorithm 1, step 5) where ``g_hat`` is the mean over ``B`` prompts of a
per-prompt estimator built from ``G`` generations, all replicates at once: the policy samples a
``(R, B, G)`` block of rewards and a ``(R, B, G, d)`` block of scores per step.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core._serialize import jsonable
from ..core._random import default_rng
from ..policies.policy import ExactMoments, KnownOptimum, Policy, ReplicatedSampling

__all__ = ["Algorithm1Result", "run_algorithm1", "step_sizes"]

_SCHEDULES = ("constant", "harmonic")


def step_sizes(num_steps: int, *, step_size: str = "harmonic", beta: float, t0: float = 0.0) -> np.ndarray:
    """Learning rates ``eta_1, ..., eta_n`` of Algorithm 1.

    Parameters
    ----------
    num_steps : int
        ``n``, the number of updates.
    step_size : {"constant", "harmonic"}
        ``"constant"``: ``eta_i = beta`` (Assumption 5(a)); ``"harmonic"``: ``eta_i = beta / (i + t0)``
        (Assumption 5(b) with an offset ``t0 >= 0`` that damps the first steps).
    beta : float
        Step-size constant (the paper's ``beta``; not the KL weight).
    t0 : float
        Offset of the harmonic schedule; ignored for the constant one.

    Returns
    -------
    eta : ndarray, shape (num_steps,)
        ``eta[i]`` is used for the update from ``theta_i`` to ``theta_{i+1}``, i.e. it is ``eta_{i+1}``.

    Examples
    --------
    >>> step_sizes(3, step_size="harmonic", beta=2.0, t0=1.0)
    array([1.        , 0.66666667, 0.5       ])
    """
    num_steps = int(num_steps)
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if step_size not in _SCHEDULES:
        raise ValueError(f"step_size must be one of {_SCHEDULES}, got {step_size!r}")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number, got {beta}")
    if not (np.isfinite(t0) and t0 >= 0):
        raise ValueError(f"t0 must be finite and >= 0, got {t0}")
    if step_size == "constant":
        return np.full(num_steps, float(beta))
    i = np.arange(1, num_steps + 1, dtype=float)
    return float(beta) / (i + float(t0))


@dataclass(frozen=True, kw_only=True)
class Algorithm1Result:
    """Outcome of :func:`run_algorithm1`.

    Attributes
    ----------
    thetas : ndarray, shape (R, d)
        Final parameters ``theta_n`` of every replicate.
    record_steps : ndarray, shape (m,)
        Iterations ``i`` (0 = initial point) at which the gap was recorded.
    gap : ndarray, shape (R, m)
        Suboptimality gap ``J* - J(theta_i)`` (the paper's ``Delta(pi_theta_i)``), per replicate.
    theta_path : ndarray, shape (R, m, d) or None
        Parameters at ``record_steps`` when ``record_thetas=True``.
    j_star : float
        ``J*`` from ``policy.optimum()``.
    eta : ndarray, shape (n,)
        The learning rates used.
    config : dict
        JSON-safe description of the run (estimator, B, G, n, schedule, beta, t0, R).
    """

    thetas: np.ndarray
    record_steps: np.ndarray
    gap: np.ndarray
    theta_path: np.ndarray | None = None
    j_star: float
    eta: np.ndarray
    config: dict = field(default_factory=dict)

    def scaled_gap(self) -> np.ndarray:
        """``i * gap`` at the recorded iterations, shape (R, m); the statistic of Theorem 8."""
        return self.gap * self.record_steps[None, :]

    def summary(self) -> str:
        c = self.config
        lines = [
            f"Algorithm 1: estimator={c.get('estimator')}, B={c.get('num_prompts')}, "
            f"G={c.get('num_generations')}, n={c.get('num_steps')}, R={self.thetas.shape[0]}, "
            f"step={c.get('step_size')} (beta={c.get('beta')}, t0={c.get('t0')})",
            f"{'step':>10}  {'mean gap':>12}  {'se':>10}  {'step*mean gap':>14}",
        ]
        R = self.gap.shape[0]
        for j, s in enumerate(self.record_steps):
            g = self.gap[:, j]
            se = g.std(ddof=1) / np.sqrt(R) if R > 1 else float("nan")
            lines.append(f"{int(s):>10d}  {g.mean():>12.6g}  {se:>10.3g}  {s * g.mean():>14.6g}")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return jsonable({
            "thetas": self.thetas.tolist(),
            "record_steps": self.record_steps.tolist(),
            "gap": self.gap.tolist(),
            "theta_path": None if self.theta_path is None else self.theta_path.tolist(),
            "j_star": float(self.j_star),
            "eta": self.eta.tolist(),
            "config": json.loads(json.dumps(self.config)),
        })


def _resolve_estimator(estimator) -> tuple[Callable, str, bool]:
    """Return ``(fn, name, needs_values)``; strings are looked up in ``estimators.ESTIMATORS``."""
    if isinstance(estimator, str):
        from ..theory import estimators as _est  # lazy: the module is owned elsewhere

        if estimator not in _est.ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; known: {sorted(_est.ESTIMATORS)}")
        return _est.ESTIMATORS[estimator], estimator, estimator == "oracle"
    if not callable(estimator):
        raise TypeError(f"estimator must be a name or a callable, got {type(estimator).__name__}")
    name = getattr(estimator, "__name__", type(estimator).__name__)
    try:  # a callable taken from the registry keeps its registry name
        from ..theory import estimators as _est

        name = next((k for k, v in _est.ESTIMATORS.items() if v is estimator), name)
    except ImportError:
        pass
    needs = bool(getattr(estimator, "needs_values", name == "oracle"))
    return estimator, name, needs


def _values_batch(policy, thetas: np.ndarray) -> np.ndarray:
    """``V(x)`` for every prompt at every row of ``thetas`` (R, d) -> (R, P), by the
    ``ExactMoments`` protocol (``values`` is vectorised over rows)."""
    if not isinstance(policy, ExactMoments):
        raise TypeError(f"{type(policy).__name__} has no exact moments (ustat_grpo.policies.policy.ExactMoments): "
                        "it cannot give V(x) to the oracle estimator or J(theta) to the gap")
    return np.asarray(policy.values(np.atleast_2d(thetas)), float)


def _prompt_values(policy, thetas: np.ndarray, prompt_ids: np.ndarray) -> np.ndarray:
    """``V(x_b)`` at each replicate's parameters for the sampled prompts: ``(R, B)``."""
    return np.take_along_axis(_values_batch(policy, thetas), prompt_ids, axis=-1)


def _objective_batch(policy, thetas: np.ndarray) -> np.ndarray:
    """``J(theta_r) = sum_x f(x) V(x; theta_r)`` for every row of ``thetas`` (R, d) -> (R,)."""
    return _values_batch(policy, thetas) @ np.asarray(policy.prompt_probs, float)


def _sample_replicates(policy, thetas: np.ndarray, num_prompts: int, num_generations: int, rng):
    """Rewards ``(R, B, G)``, scores ``(R, B, G, d)`` and prompt ids ``(R, B)`` at ``thetas (R, d)``.

    One call when the policy is ``ReplicatedSampling``; otherwise one ``with_theta(theta_r).sample``
    per replicate, in order, from the same generator.
    """
    R, d = thetas.shape
    B, G = int(num_prompts), int(num_generations)
    if isinstance(policy, ReplicatedSampling):
        s = policy.sample_replicates(thetas, B, G, rng=rng)
        rewards, scores, ids = s.rewards, s.scores, s.prompt_ids
    else:
        parts = [policy.with_theta(t).sample(B, G, rng=rng) for t in thetas]
        rewards, scores, ids = (np.stack([getattr(p, k) for p in parts])
                                for k in ("rewards", "scores", "prompt_ids"))
    return (np.asarray(rewards, float).reshape(R, B, G), np.asarray(scores, float).reshape(R, B, G, d),
            np.asarray(ids).reshape(R, B))


def _run_iv(policy, num_prompts, num_generations, num_steps, replicates, theta0, record):
    missing = [p.__name__ for p in (Policy, ExactMoments, KnownOptimum) if not isinstance(policy, p)]
    if missing:
        raise TypeError(f"policy {type(policy).__name__} does not satisfy the ustat_grpo.policies.policy "
                        f"protocol(s) {', '.join(missing)}")
    d = int(policy.dim)
    for nm, v, lo in (("num_prompts", num_prompts, 1), ("num_generations", num_generations, 1),
                      ("num_steps", num_steps, 0), ("replicates", replicates, 1)):
        if int(v) != v or v < lo:
            raise ValueError(f"{nm} must be an integer >= {lo}, got {v}")
    theta0 = np.asarray(policy.theta if theta0 is None else theta0, float)
    if theta0.shape == (d,):
        theta0 = np.broadcast_to(theta0, (int(replicates), d))
    if theta0.shape != (int(replicates), d):
        raise ValueError(f"theta0 must have shape ({d},) or ({replicates}, {d}), got {theta0.shape}")
    if record is None:
        record = [int(num_steps)]
    record = np.unique(np.asarray(record, dtype=np.int64))
    if record.size and (record[0] < 0 or record[-1] > num_steps):
        raise ValueError(f"record steps must lie in [0, {num_steps}], got {record.tolist()}")
    return d, np.array(theta0, float), record


def run_algorithm1(policy, estimator, *, num_prompts: int, num_generations: int, num_steps: int,
                   step_size: str = "harmonic", beta: float, t0: float = 0.0, replicates: int = 1,
                   rng=None, theta0=None, record=None,
                   record_thetas: bool = False) -> Algorithm1Result:
    """Run Algorithm 1 (arXiv 2603.01162) for ``replicates`` independent runs at once.

    Parameters
    ----------
    policy : ustat_grpo.policies.policy.Policy
        It must also satisfy ``ExactMoments`` (``values(thetas) -> (R, P)`` and ``prompt_probs``,
        for the gap ``J* - J`` and the oracle's ``V(x)``) and ``KnownOptimum`` (``J*``).  A
        ``ReplicatedSampling`` policy draws the ``R`` replicates in one call, any other one
        replicate after another with ``with_theta(theta_r).sample``.
    estimator : str or callable
        A name in ``ustat_grpo.theory.estimators.ESTIMATORS`` or ``f(rewards (..., G), scores (..., G, d),
        *, values=None) -> (..., d)``. ``values`` (``V(x)`` at the current parameters) is passed
        only when the estimator is ``"oracle"`` or carries ``needs_values = True``.
    num_prompts, num_generations : int
        ``B`` and ``G``.
    num_steps : int
        ``n``, the number of updates.
    step_size : {"constant", "harmonic"}
        Schedule; see :func:`step_sizes`. ``"harmonic"`` uses ``eta_i = beta / (i + t0)``.
    beta, t0 : float
        Step-size constant and harmonic offset.
    replicates : int
        ``R``, independent runs simulated together.
    rng : None, int, SeedSequence or numpy.random.Generator
        Source of all randomness, through :func:`numpy.random.default_rng` (a Generator is used
        as is).
    theta0 : array_like, shape (d,) or (R, d), optional
        Starting point; default ``policy.theta``.
    record : sequence of int, optional
        Iterations ``i`` in ``[0, n]`` at which ``J* - J(theta_i)`` is recorded; default ``[n]``.
    record_thetas : bool
        Also keep ``theta_i`` at the recorded iterations.

    Returns
    -------
    Algorithm1Result

    Notes
    -----
    Update (Algorithm 1, step 5): ``theta_{i+1} = theta_i + eta_{i+1} g_hat(theta_i)`` with
    ``g_hat = (1/B) sum_b g_hat(X_b)``. Replicate ``r`` uses its own prompts and generations; all
    replicates share one generator, so results depend on ``R`` (seed the generator per run).

    Examples
    --------
    >>> import numpy as np
    >>> from ustat_grpo.experiments.algorithm1 import step_sizes
    >>> float(step_sizes(4, step_size="harmonic", beta=1.0).sum())  # 1 + 1/2 + 1/3 + 1/4
    2.083333333333333
    """
    fn, name, needs_values = _resolve_estimator(estimator)
    rng = default_rng(rng)
    eta = step_sizes(num_steps, step_size=step_size, beta=beta, t0=t0)
    d, theta, record = _run_iv(policy, num_prompts, num_generations, num_steps, replicates, theta0, record)
    R = theta.shape[0]
    _, j_star = policy.optimum()
    j_star = float(j_star)

    gap = np.empty((R, record.size))
    path = np.empty((R, record.size, d)) if record_thetas else None
    rec_pos = {int(s): j for j, s in enumerate(record)}

    def _record(i):
        j = rec_pos.get(i)
        if j is not None:
            gap[:, j] = j_star - _objective_batch(policy, theta)
            if path is not None:
                path[:, j] = theta

    _record(0)
    for i in range(int(num_steps)):
        rewards, scores, ids = _sample_replicates(policy, theta, num_prompts, num_generations, rng)
        if needs_values:
            per_prompt = fn(rewards, scores, values=_prompt_values(policy, theta, ids))
        else:
            per_prompt = fn(rewards, scores)
        g_hat = np.asarray(per_prompt, float).reshape(R, num_prompts, d).mean(axis=1)  # (R, d)
        theta = theta + eta[i] * g_hat
        _record(i + 1)

    config = dict(estimator=name, num_prompts=int(num_prompts), num_generations=int(num_generations),
                  num_steps=int(num_steps), step_size=step_size, beta=float(beta), t0=float(t0),
                  replicates=int(R))
    return Algorithm1Result(thetas=theta, record_steps=record, gap=gap, theta_path=path, j_star=j_star,
                            eta=eta, config=config)
