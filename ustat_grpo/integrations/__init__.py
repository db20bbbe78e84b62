"""Hooks into training frameworks: the measurement taken from a trainer's own rollouts.

:mod:`ustat_grpo.integrations.trl` (extra ``[trl]``): :class:`~ustat_grpo.integrations.trl.GroupSizeMonitor`
for TRL's ``GRPOTrainer``.  Each framework is imported only by its own module, so this package
imports without any of them.
"""

__all__: list[str] = []
