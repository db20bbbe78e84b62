"""Where Monte Carlo cells run: serially, on a local process pool, or on a Dask cluster.

The results never depend on the scheduler: each cell carries its own random stream
(:func:`ustat_grpo.experiments.montecarlo.cell_seed_sequence`), so only the order in which cells finish
changes.
"""
from __future__ import annotations

import os

__all__ = ["executor_map", "scheduler_iv"]


def executor_map(fn, tasks, scheduler, max_workers):
    """Yield ``(index, fn(task))`` as tasks finish; ``fn`` must be a module-level function."""
    if scheduler == "serial" or (scheduler == "processes" and len(tasks) <= 1):   # same numbers
        for i, t in enumerate(tasks):
            yield i, fn(t)
        return
    if scheduler == "processes":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        workers = max_workers or os.cpu_count() or 1
        workers = max(1, min(workers, len(tasks)))
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                                 initargs=(os.getpid(),))
        try:
            futs = {ex.submit(fn, t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futs):
                yield futs[fut], fut.result()
        except BaseException:                          # Ctrl-C: finished cells are already saved
            ex.shutdown(wait=False, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        return
    # Dask distributed: an address or a Client
    from distributed import Client, as_completed as das_completed

    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futs = [client.submit(fn, t, pure=False) for t in tasks]
        index = {f.key: i for i, f in enumerate(futs)}
        for fut in das_completed(futs):
            yield index[fut.key], fut.result()
    finally:
        if own:
            client.close()


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """Worker initializer: a daemon thread ends this worker once ``parent`` has died.

    A parent killed by a signal (SIGTERM, SIGKILL, preemption) runs no cleanup, and a forkserver
    worker outlives it and keeps computing queued cells nobody will read.
    """
    import threading
    import time

    def alive() -> bool:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:          # the pid exists (reused by another user's process)
            return True
        try:                             # a dead parent not yet reaped is a zombie
            with open(f"/proc/{parent}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True

    def watch():
        while alive():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def scheduler_iv(scheduler):
    """``None`` -> ``"processes"``; check a name, a Dask address or a ``distributed.Client``."""
    if scheduler is None:
        return "processes"
    if isinstance(scheduler, str):
        if scheduler in ("serial", "processes") or "://" in scheduler:
            return scheduler
        raise ValueError(f"scheduler must be 'serial', 'processes', a Dask address such as "
                         f"'tcp://host:8786', or a distributed.Client; got {scheduler!r}")
    if type(scheduler).__name__ == "Client":
        return scheduler
    raise ValueError(f"unsupported scheduler {scheduler!r}")
