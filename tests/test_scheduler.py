"""The process pool of ``ustat_grpo.experiments._scheduler``: results, and workers that end with their parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ustat_grpo.experiments._scheduler import executor_map


def _square(x):
    return x * x


def test_process_pool_returns_every_result():
    out = dict(executor_map(_square, list(range(7)), "processes", 2))
    assert out == {i: i * i for i in range(7)}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    """SIGKILL the parent mid-task: its forkserver workers must not keep computing orphaned cells."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from ustat_grpo.experiments._scheduler import executor_map
        import tests._sleepy as s
        if __name__ == "__main__":
            for _ in executor_map(s.sleepy, [{str(tmp_path)!r}] * 4, "processes", 2):
                pass
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=os.getcwd())
    try:
        while len(list(tmp_path.glob("worker-*"))) < 2 and proc.poll() is None:   # started, or exit
            time.sleep(0.2)
        pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
        assert len(pids) >= 2, "workers did not start"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    # events, not a clock: each worker must be gone before its task would have finished (a task
    # that completes writes done-<pid>, tests/_sleepy.py)
    while any(alive(p) for p in pids) and not list(tmp_path.glob("done-*")):
        time.sleep(0.2)
    assert not any(alive(p) for p in pids) and not list(tmp_path.glob("done-*"))
