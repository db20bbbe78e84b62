"""What every policy of the package shares: the sampling protocol and its optional capabilities.

Three families of policies live in the package: the toy bandits of :mod:`ustat_grpo.policies.bandits`
(exact moments in closed form), the token-sequence policies of :mod:`ustat_grpo.experiments.algorithm2`
(exact moments by enumeration) and the transformer policies of :mod:`ustat_grpo.policies.lm` (sampling
only).  Code that works with any of them (Algorithm 1 in :mod:`ustat_grpo.experiments.algorithm1`, the Monte
Carlo drivers) is written against the protocols here and asks for a capability with
``isinstance``, never by probing attribute names:

:class:`Policy`
    ``dim``, ``theta`` (a copy of the parameters, shape ``(d,)``), ``with_theta(theta)`` (the
    same policy at new parameters) and ``sample(num_prompts, num_generations, *, rng)`` returning
    a :class:`Sample` of rewards ``(B, G)`` and scores ``W = grad_theta log pi(Y | X)``
    ``(B, G, d)``.
:class:`ReplicatedSampling`
    ``sample_replicates(thetas, num_prompts, num_generations, *, rng)``: ``R`` parameter vectors
    ``(R, d)`` at once, every output gaining a leading axis ``R`` (the toy bandits).
:class:`ExactMoments`
    ``prompt_probs`` ``f (P,)``, ``values(theta)`` ``V(x)`` (``(d,) -> (P,)``, ``(R, d) -> (R, P)``),
    ``objective(theta)`` ``J``, ``gradient(theta)`` ``grad J``.
:class:`KnownOptimum`
    ``optimum() -> (theta_star, J_star)``.

Randomness enters as ``rng=``, anything :func:`numpy.random.default_rng` accepts (see
:mod:`ustat_grpo.core._random`).

Examples
--------
>>> import numpy as np
>>> from ustat_grpo.policies.bandits import SoftmaxBandit
>>> b = SoftmaxBandit(success_probs=[0.2, 0.8])
>>> isinstance(b, Policy), isinstance(b, ExactMoments), isinstance(b, KnownOptimum)
(True, True, True)
>>> b.sample(3, 4, rng=0).rewards.shape
(3, 4)
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import numpy as np

from ..core._serialize import jsonable as _jsonable

__all__ = ["Sample", "Policy", "ReplicatedSampling", "ExactMoments", "KnownOptimum"]


@dataclass(frozen=True, kw_only=True)
class Sample:
    """Rollouts from a policy.

    Attributes
    ----------
    rewards : ndarray, shape (..., B, G)
    scores : ndarray, shape (..., B, G, d)
        ``W = grad_theta log pi(Y | X)``.
    prompt_ids : ndarray of int, shape (..., B)
        Index into the policy's prompt set.
    """

    rewards: np.ndarray
    scores: np.ndarray
    prompt_ids: np.ndarray

    def summary(self) -> str:
        return (f"Sample: rewards {self.rewards.shape}, scores {self.scores.shape}, "
                f"prompt_ids {self.prompt_ids.shape}; mean reward {float(np.mean(self.rewards)):.4f}")

    __str__ = summary

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@runtime_checkable
class Policy(Protocol):
    """A parameterised policy that samples rewards and scores (see the module docstring)."""

    @property
    def dim(self) -> int: ...

    @property
    def theta(self) -> np.ndarray: ...

    def with_theta(self, theta) -> Policy: ...

    def sample(self, num_prompts: int, num_generations: int, *, rng=None) -> Sample: ...


@runtime_checkable
class ReplicatedSampling(Protocol):
    """Samples ``R`` independent blocks at ``R`` parameter vectors in one call."""

    def sample_replicates(self, thetas, num_prompts: int, num_generations: int, *, rng=None) -> Sample: ...


@runtime_checkable
class ExactMoments(Protocol):
    """Exact per-prompt values, objective and gradient."""

    @property
    def prompt_probs(self) -> np.ndarray: ...

    def values(self, theta=None) -> np.ndarray: ...

    def objective(self, theta=None) -> float: ...

    def gradient(self, theta=None) -> np.ndarray: ...


@runtime_checkable
class KnownOptimum(Protocol):
    """Knows its supremum ``J*`` and a (near-)maximiser."""

    def optimum(self) -> tuple[np.ndarray, float]: ...
