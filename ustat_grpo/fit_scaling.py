"""``python -m ustat_grpo.fit_scaling``: recommend a GRPO group size for a rollout budget.

The command's entry module (RELAYOUT-ENTRY); the code is :mod:`ustat_grpo.cli.fit_scaling`.
"""
import sys

from .cli.fit_scaling import _console, main, run  # noqa: F401  (_console: setup.cfg's console script)

__all__ = ["main", "run"]

if __name__ == "__main__":
    sys.exit(main())
