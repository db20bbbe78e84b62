"""A task for tests/test_scheduler.py: record the worker's pid, then sleep (importable by workers)."""
import os
import time


def sleepy(directory):
    open(os.path.join(directory, f"worker-{os.getpid()}"), "w").close()
    time.sleep(120)
    open(os.path.join(directory, f"done-{os.getpid()}"), "w").close()   # not reached if killed
    return 0
