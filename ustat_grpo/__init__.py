"""ustat_grpo: GRPO's policy gradient as a U-statistic.

Variance theory, scaling-law fits and group-size choice for GRPO-family gradient estimators
(arXiv 2603.01162 and 2503.06639). Submodules are imported on first use so that
``import ustat_grpo`` stays light (torch and transformers load only with ``ustat_grpo.policies.lm``).
"""
from __future__ import annotations

import importlib

from .core._version import __version__

#: the layer subpackages, lowest first (docs/architecture.md; the rule: tests/test_layers.py)
LAYERS = ('core', 'stats', 'theory', 'scaling', 'policies', 'experiments', 'measurement', 'recommendation', 'integrations', 'cli')
#: public module name -> its place under this package
_MODULES = {
    'interval': 'core.interval',
    'provenance': 'core.provenance',
    'testing': 'core.testing',
    'kernels': 'stats.kernels',
    'ustat': 'stats.ustat',
    'wchisq': 'stats.wchisq',
    'presets': 'theory.presets',
    'estimators': 'theory.estimators',
    'advantages': 'theory.advantages',
    'mse': 'theory.mse',
    'scale_free': 'theory.scale_free',
    'limits': 'theory.limits',
    'amplification': 'theory.amplification',
    'attractor': 'theory.attractor',
    'nonparametric': 'theory.nonparametric',
    'optimum': 'scaling.optimum',
    'grid_fit': 'scaling.grid_fit',
    'performance': 'scaling.performance',
    'constants': 'scaling.constants',
    'pool': 'scaling.pool',
    'allocation': 'scaling.allocation',
    'cost': 'scaling.cost',
    'policy': 'policies.policy',
    'bandits': 'policies.bandits',
    'arithmetic': 'policies.arithmetic',
    'score': 'policies.score',
    'lm': 'policies.lm',
    'montecarlo': 'experiments.montecarlo',
    'finite_action': 'experiments.finite_action',
    'scheduling': 'experiments.scheduling',
    'algorithm1': 'experiments.algorithm1',
    'algorithm2': 'experiments.algorithm2',
    'lm_train': 'experiments.lm_train',
    'task': 'measurement.task',
    'rewards': 'measurement.rewards',
    'sampler': 'measurement.sampler',
    'pilot': 'measurement.pilot',
    'samples_per_prompt': 'measurement.samples_per_prompt',
    'card': 'measurement.card',
    'measure': 'measurement.measure',
    'recommend': 'recommendation.recommend',
    'report': 'recommendation.report',
    'tables': 'recommendation.tables',
}
_USTAT_NAMES = ('ustatistic', 'hoeffding', 'ustat_variance', 'UStatResult')

__all__ = ["__version__", "ustatistic", "hoeffding", "ustat_variance", "UStatResult", "core", "stats",
           "theory", "scaling", "policies", "experiments", "measurement", "recommendation", "integrations",
           "cli", "interval", "provenance", "testing", "kernels", "ustat", "wchisq", "presets", "estimators",
           "advantages", "mse", "scale_free", "limits", "amplification", "attractor", "nonparametric",
           "optimum", "grid_fit", "performance", "constants", "pool", "allocation", "cost", "policy",
           "bandits", "arithmetic", "score", "lm", "montecarlo", "finite_action", "scheduling", "algorithm1",
           "algorithm2", "lm_train", "task", "rewards", "sampler", "pilot", "samples_per_prompt", "card",
           "measure", "recommend", "report", "tables"]


def __getattr__(name):
    if name in LAYERS:
        return importlib.import_module(f"{__name__}.{name}")
    path = _MODULES.get(name)
    if path is not None:
        return importlib.import_module(f"{__name__}.{path}")
    if name in _USTAT_NAMES:
        return getattr(importlib.import_module(f"{__name__}.stats.ustat"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
