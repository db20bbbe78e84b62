"""Private helpers shared by the package's command-line tools.

* :func:`parser_from_dataclass`, :func:`options_from_args`, :func:`given_options` (re-exported from
  the public :mod:`ustat_grpo.cli.options`) build ``argparse`` parsers from options dataclasses.
* :class:`InputError` is raised for bad input; CLIs turn it into one stderr line and exit 2.
* :func:`sha256_file`, :func:`sha256_json` (re-exported from :mod:`ustat_grpo.core.provenance`) give the
  input hashes recorded in outputs.
"""
from __future__ import annotations

from .options import given_options, options_from_args, parser_from_dataclass
from ..core.provenance import sha256_file, sha256_json

__all__ = ["InputError", "AnalysisError", "parser_from_dataclass", "options_from_args", "given_options",
           "sha256_file", "sha256_json"]


class InputError(ValueError):
    """Bad usage or bad input (exit code 2). The message is one line naming file, row, column."""


class AnalysisError(RuntimeError):
    """The analysis itself failed (exit code 1). The message says why."""
