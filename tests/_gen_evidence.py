"""docs/gen_evidence.py loaded as a module (it lives outside the package): the tests of the
evidence page and of the scripts whose results it renders use the same loader."""
from __future__ import annotations

import importlib.util
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "docs" / "gen_evidence.py"


def load():
    spec = importlib.util.spec_from_file_location("gen_evidence", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
