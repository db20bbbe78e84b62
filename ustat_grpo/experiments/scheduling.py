"""Where independent cells run: serially, on a local process pool, or on a Dask cluster (public API).

:func:`executor_map` runs ``fn`` over tasks and yields ``(index, result)`` as they finish;
:func:`scheduler_iv` checks a ``scheduler=`` value (``"serial"``, ``"processes"``, a Dask address
or a ``distributed.Client``).  Results never depend on the scheduler: each cell carries its own
random stream.  The implementation lives in ``ustat_grpo.experiments._scheduler`` (used by
:mod:`ustat_grpo.experiments.montecarlo`); scripts such as ``simulations/train_vs_g.py`` import it from here.
"""
from __future__ import annotations

from ._scheduler import executor_map, scheduler_iv

__all__ = ["executor_map", "scheduler_iv"]
