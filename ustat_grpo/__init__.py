"""ustat_grpo: GRPO's policy gradient as a U-statistic.

Variance theory, scaling-law fits and group-size choice for GRPO-family gradient estimators
(arXiv 2603.01162 and 2503.06639). Submodules are imported on first use so that
``import ustat_grpo`` stays light (torch and transformers load only with ``ustat_grpo.lm``).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "ustat", "kernels", "presets", "estimators", "advantages", "bandits", "policy", "mse", "montecarlo", "finite_action",
    "provenance", "interval", "optimum", "grid_fit", "constants", "performance", "recommend", "measure",
    "measurements", "optimize", "wchisq", "limits", "arithmetic", "lm", "score", "amplification",
    "attractor", "nonparametric", "practical", "report", "testing", "task", "rewards", "pool", "sampler", "card",
    "pilot", "pilot_design", "scale_free", "allocation", "cost",
)

__all__ = ["__version__", "ustatistic", "hoeffding", "ustat_variance", "UStatResult", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("ustatistic", "hoeffding", "ustat_variance", "UStatResult"):
        return getattr(importlib.import_module(f"{__name__}.ustat"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
