"""The group-statistics half of a verl integration, on verl's data layout (verl is not imported).

verl (0.9) keeps a step's rollouts in a ``DataProto``: ``batch["token_level_scores"]`` ``(n, T)``
(the reward at the last response token), ``batch["response_mask"]`` ``(n, T)`` and
``non_tensor_batch["uid"]`` ``(n,)``, the id of the prompt a rollout belongs to.  Unlike TRL, a
group is *not* a consecutive block: verl's ``balance_batch`` reorders rollouts across data-parallel
ranks, so groups must be formed by ``uid`` (as verl's own GRPO advantage does).  This module does
that and turns the groups into the pilot's mergeable :class:`~ustat_grpo.scaling.constants.PromptStatistics`,
so a verl run's windows combine with offline pilot files exactly as TRL windows do
(:mod:`ustat_grpo.integrations.trl`).

What is not built: the hook that calls this inside verl (a registered reward manager, whose
``__call__(data)`` sees the whole batch, or a registered advantage estimator) and the scoring of
the chosen groups on verl's actor; ``docs/architecture.md`` ("verl") gives the design.  verl 0.9.1
pins ``transformers >= 5.5.3, < 5.11``, which this project's CI does not install beside the package.
"""
from __future__ import annotations

import numpy as np

__all__ = ["sequence_rewards", "group_by_uid", "uid_statistics"]


def sequence_rewards(token_level_scores, response_mask) -> np.ndarray:
    """Sequence-level rewards ``(n,)``: verl's token-level scores summed over response tokens
    (verl puts the whole reward on the last response token; the sum is what its GRPO advantage uses).

    >>> sequence_rewards([[0, 0, 1.0, 0], [0, 0.5, 0, 0]], [[1, 1, 1, 0], [1, 1, 0, 0]]).tolist()
    [1.0, 0.5]
    """
    s, m = np.asarray(token_level_scores, float), np.asarray(response_mask, float)
    if s.shape != m.shape or s.ndim != 2:
        raise ValueError(f"token_level_scores and response_mask must both be (n, T), got {s.shape} and {m.shape}")
    return (s * m).sum(1)


def group_by_uid(uids) -> tuple[np.ndarray, np.ndarray]:
    """``(group_uids (n_groups,), index (n_groups, G))``: rollout rows of each prompt, groups in
    order of first appearance, rows in batch order within a group.

    Raises ``ValueError`` when the groups differ in size (verl's ``rollout.n`` is one G for all).

    >>> u, idx = group_by_uid(["b", "a", "b", "a"])
    >>> u.tolist(), idx.tolist()
    (['b', 'a'], [[0, 2], [1, 3]])
    """
    uids = np.asarray(uids, dtype=object)
    if uids.ndim != 1 or not len(uids):
        raise ValueError(f"uids must be a non-empty 1-d array, got shape {uids.shape}")
    first, rows = {}, []
    for i, u in enumerate(uids.tolist()):
        if u not in first:
            first[u] = len(rows)
            rows.append([])
        rows[first[u]].append(i)
    sizes = {len(r) for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"groups of different sizes {sorted(sizes)}: every uid must have rollout.n rows")
    return np.array(list(first), dtype=object), np.array(rows, dtype=np.int64)


def uid_statistics(uids, rewards, scores, *, prompt_ids=None, keep_scores: bool = True):
    """:class:`~ustat_grpo.scaling.constants.PromptStatistics` of a verl batch: rewards ``(n,)`` and
    (sketched) scores ``(n, k)`` of its rollouts, grouped by ``uid`` (:func:`group_by_uid`).

    ``prompt_ids`` (one per group, in first-appearance order) default to ``0..n_groups-1``; give
    ids disjoint from other windows' and pilots' to merge them.
    """
    from ..scaling.constants import prompt_statistics

    _, idx = group_by_uid(uids)
    z, w = np.asarray(rewards, float), np.asarray(scores)
    if z.shape != (len(np.asarray(uids, dtype=object)),) or w.ndim != 2 or w.shape[0] != z.shape[0]:
        raise ValueError(f"need rewards (n,) and scores (n, k) for n uids, got {z.shape} and {w.shape}")
    return prompt_statistics(z[idx], w[idx], prompt_ids=prompt_ids, keep_scores=keep_scores)
