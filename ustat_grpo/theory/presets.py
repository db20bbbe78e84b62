"""The one table of framework settings: which estimator each trainer's option means, and its arithmetic.

``grpo``, ``dr_grpo`` and ``rloo`` are the framework words as TRL means them; ``trl_*``,
``verl_*`` and ``openrlhf_*`` name each framework's setting (grpo_frameworks.md §1-§3); ``paper``
is arXiv 2603.01162, eqs. (15)-(16).  :func:`ustat_grpo.theory.estimators.std_normalized` and
:func:`ustat_grpo.theory.advantages.advantages` read their ``eps``, ``ddof``, centring and float32 std
algorithm from here, and so do the Monte Carlo fast path and Algorithm 2.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Preset", "PRESETS", "TRL_EPS", "get_preset", "trl_scale_rewards", "with_scale_rewards",
           "framework_preset"]


@dataclass(frozen=True, kw_only=True)
class Preset:
    """One framework setting: which estimator, and the arithmetic around it.

    Attributes
    ----------
    estimator : str
        Canonical estimator name (a key of :data:`ESTIMATORS`).
    eps : float
        Added to the std (not to the variance) by ``std_normalized``, and to the batch std by
        ``scale_rewards="batch"``.
    ddof : int
        Std degrees of freedom: 1 = Bessel (TRL ``nanstd``, verl/OpenRLHF ``torch.std``).
    scale_rewards : {"group", "batch", "none"}
        TRL's word: divide by the group std (``std_normalized``), by the batch std, or not at all.
    center : {"mean", "loo"}
        Numerator ``Z_g - Zbar`` (frameworks) or ``Z_g - Zbar_{-g}`` (arXiv 2603.01162, eq. 15).
    std_algorithm : {"two_pass_float32", "two_pass_float64", "welford"} or None
        How the framework's float32 std is computed (used by ``precision="float32"``): TRL
        ``nanstd`` (mean of squared deviations, all in float32); verl ``torch.std`` of a 1-D
        tensor (deviations from the float32 mean, summed in float64); OpenRLHF
        ``torch.std(dim=-1)`` (Welford in float64, exactly 0 for equal rewards).  None: not a
        framework.
    source : str
        Where the setting lives (grpo_frameworks.md §2, §3).
    """

    estimator: str
    eps: float
    ddof: int = 1
    scale_rewards: str = "none"
    center: str = "mean"
    std_algorithm: str | None = None
    source: str = ""


#: TRL's ``epsilon`` added to the group std (``GRPOTrainer``: ``(r - mean) / (std + 1e-4)``); every TRL
#: preset, and the default ``eps`` of :func:`ustat_grpo.theory.estimators.std_normalized`, take it from here.
TRL_EPS = 1e-4

_TRL_GRPO = Preset(estimator="std_normalized", eps=TRL_EPS, scale_rewards="group", std_algorithm="two_pass_float32",
                   source='TRL GRPOTrainer, scale_rewards="group" (default)')
_TRL_DR = Preset(estimator="group_mean", eps=TRL_EPS, source='TRL GRPOTrainer, scale_rewards="none"')
_TRL_RLOO = Preset(estimator="leave_one_out", eps=TRL_EPS, source="TRL RLOOTrainer (normalize_advantages=False)")

#: The one table of framework settings (grpo_frameworks.md §1-§3).  ``grpo``, ``dr_grpo`` and
#: ``rloo`` are the framework words as TRL means them; ``paper`` is arXiv 2603.01162, eqs. (15)-(16).
PRESETS: dict[str, Preset] = {
    "grpo": _TRL_GRPO,
    "dr_grpo": _TRL_DR,
    "rloo": _TRL_RLOO,
    "trl_grpo": _TRL_GRPO,
    "trl_grpo_batch": Preset(estimator="group_mean", eps=TRL_EPS, scale_rewards="batch",
                             source='TRL GRPOTrainer, scale_rewards="batch" (LitePPO)'),
    "trl_async_grpo": Preset(estimator="std_normalized", eps=1e-8, ddof=0, scale_rewards="group",
                             source="trl/experimental/async_grpo (numpy std, ddof=0)"),
    "trl_dr_grpo": _TRL_DR,
    "trl_rloo": _TRL_RLOO,
    "verl_grpo": Preset(estimator="std_normalized", eps=1e-6, scale_rewards="group",
                        std_algorithm="two_pass_float64", source="verl adv_estimator=grpo"),
    "verl_dr_grpo": Preset(estimator="group_mean", eps=1e-6,
                           source="verl adv_estimator=grpo, norm_adv_by_std_in_grpo=False"),
    "verl_rloo": Preset(estimator="leave_one_out", eps=1e-6, source="verl adv_estimator=rloo"),
    "openrlhf_group_norm": Preset(estimator="std_normalized", eps=1e-9, scale_rewards="group",
                                  std_algorithm="welford", source="OpenRLHF --algo.advantage.estimator group_norm"),
    "openrlhf_dr_grpo": Preset(estimator="group_mean", eps=1e-9, source="OpenRLHF --algo.advantage.estimator dr_grpo"),
    "openrlhf_rloo": Preset(estimator="leave_one_out", eps=1e-9, source="OpenRLHF --algo.advantage.estimator rloo"),
    "paper": Preset(estimator="std_normalized", eps=0.0, scale_rewards="group", center="loo",
                    source="arXiv 2603.01162, Appendix A, eqs. (15)-(16)"),
}

def get_preset(name) -> Preset:
    """The preset called ``name`` (a clear error naming the choices otherwise).

    Examples
    --------
    >>> get_preset("verl_grpo").eps
    1e-06
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


#: The presets that differ only in TRL's ``scale_rewards`` (or its analogue in verl / OpenRLHF):
#: preset -> {scale_rewards: preset}.  A scale missing from a family is not an option of that
#: framework.  TRL ``GRPOTrainer``: ``scale_rewards`` in {"group", "batch", "none"}; verl
#: ``adv_estimator=grpo``: ``norm_adv_by_std_in_grpo`` True/False; OpenRLHF: ``group_norm`` /
#: ``dr_grpo``; TRL ``RLOOTrainer``: no std scaling (``"batch"`` is ``RLOOConfig.normalize_advantages``).
_FAMILIES = (
    {"group": "grpo", "batch": "trl_grpo_batch", "none": "dr_grpo"},
    {"none": "rloo", "batch": "rloo"},
    {"group": "verl_grpo", "none": "verl_dr_grpo"},
    {"none": "verl_rloo"},
    {"group": "openrlhf_group_norm", "none": "openrlhf_dr_grpo"},
    {"none": "openrlhf_rloo"},
    {"group": "trl_async_grpo"},
)
_ALIASES = {"trl_grpo": "grpo", "trl_dr_grpo": "dr_grpo", "trl_rloo": "rloo"}


def trl_scale_rewards(value) -> str:
    """TRL 1.16's ``scale_rewards``: ``"group"``, ``"batch"``, ``"none"``, or the legacy bools.

    ``True`` means ``"group"`` and ``False`` means ``"none"`` (``GRPOConfig.__post_init__``,
    grpo_frameworks.md §1.4).

    Examples
    --------
    >>> trl_scale_rewards(False), trl_scale_rewards("batch")
    ('none', 'batch')
    """
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        return "group" if bool(value) else "none"
    if value not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch', 'none', True or False (TRL), got {value!r}")
    return value


def with_scale_rewards(preset: str, scale_rewards) -> str:
    """The preset of the same framework and trainer with TRL's ``scale_rewards`` set to ``scale_rewards``.

    ``scale_rewards`` means what it means in TRL's ``GRPOConfig``: ``"group"`` divides the
    mean-centred rewards by the group std, ``"batch"`` by the std of the whole batch, ``"none"``
    not at all (Dr. GRPO).  For the verl and OpenRLHF presets it is read as the analogous switch
    (verl ``norm_adv_by_std_in_grpo``, OpenRLHF ``group_norm`` vs ``dr_grpo``); a scale the
    framework does not offer is an error naming the presets that exist.

    Examples
    --------
    >>> with_scale_rewards("grpo", "none"), with_scale_rewards("verl_grpo", False)
    ('dr_grpo', 'verl_dr_grpo')
    """
    scale = trl_scale_rewards(scale_rewards)
    get_preset(preset)
    name = _ALIASES.get(preset, preset)
    family = next((f for f in _FAMILIES if name in f.values()), None)
    if family is None:
        raise ValueError(f"preset {preset!r} ({PRESETS[preset].source}) has no scale_rewards variants; "
                         "leave scale_rewards unset")
    if scale not in family:
        have = ", ".join(f"scale_rewards={k!r} is preset {v!r}" for k, v in family.items())
        raise ValueError(f"preset {preset!r} ({PRESETS[preset].source}) has no scale_rewards={scale!r} "
                         f"in its framework ({have})")
    return family[scale]


_VERL = {"grpo": "verl_grpo", "grpo_vectorized": "verl_grpo", "rloo": "verl_rloo", "rloo_vectorized": "verl_rloo"}
_OPENRLHF = {"group_norm": "openrlhf_group_norm", "dr_grpo": "openrlhf_dr_grpo", "rloo": "openrlhf_rloo"}


def framework_preset(framework: str, **options) -> str:
    """The preset that a framework's own option names select, read as that framework reads them.

    Parameters
    ----------
    framework : {"trl", "verl", "openrlhf"}
    **options
        ``trl``: ``scale_rewards`` (default ``"group"``; bools as in TRL) and ``trainer``
        (``"GRPOTrainer"``, default, or ``"RLOOTrainer"``).
        ``verl``: ``adv_estimator`` (``algorithm.adv_estimator``, default ``"grpo"``; ``grpo``,
        ``grpo_vectorized``, ``rloo``, ``rloo_vectorized``) and ``norm_adv_by_std_in_grpo``
        (default True).  As in verl's ``ray_trainer.compute_advantage``, the flag reaches only the
        ``grpo`` estimator: ``grpo_vectorized`` always divides by the std (grpo_frameworks.md §2).
        ``openrlhf``: ``advantage_estimator`` (``--algo.advantage.estimator``: ``group_norm``,
        ``dr_grpo``, ``rloo``).

    Returns
    -------
    str
        A key of :data:`PRESETS`.

    Examples
    --------
    >>> framework_preset("trl", scale_rewards=False)
    'dr_grpo'
    >>> framework_preset("verl", adv_estimator="grpo", norm_adv_by_std_in_grpo=False)
    'verl_dr_grpo'
    >>> framework_preset("verl", adv_estimator="grpo_vectorized", norm_adv_by_std_in_grpo=False)
    'verl_grpo'
    >>> framework_preset("openrlhf", advantage_estimator="dr_grpo")
    'openrlhf_dr_grpo'
    """
    def take(known):
        bad = sorted(set(options) - set(known))
        if bad:
            raise ValueError(f"{framework}: unknown option(s) {bad}; this mapping reads {sorted(known)}")
        return [options.get(k, d) for k, d in known.items()]

    if framework == "trl":
        scale, trainer = take({"scale_rewards": "group", "trainer": "GRPOTrainer"})
        if trainer == "RLOOTrainer":
            return "rloo"
        if trainer != "GRPOTrainer":
            raise ValueError(f"trainer must be 'GRPOTrainer' or 'RLOOTrainer', got {trainer!r}")
        return with_scale_rewards("grpo", scale)
    if framework == "verl":
        est, norm = take({"adv_estimator": "grpo", "norm_adv_by_std_in_grpo": True})
        if est not in _VERL:
            raise ValueError(f"adv_estimator={est!r}: ustat_grpo has presets for verl's {sorted(_VERL)} "
                             "(outcome-reward group baselines); not for this estimator")
        if est == "grpo" and not norm:
            return "verl_dr_grpo"
        return _VERL[est]
    if framework == "openrlhf":
        (est,) = take({"advantage_estimator": "group_norm"})
        if est not in _OPENRLHF:
            raise ValueError(f"advantage_estimator={est!r}: ustat_grpo has presets for OpenRLHF's "
                             f"{sorted(_OPENRLHF)}; not for this estimator")
        return _OPENRLHF[est]
    raise ValueError(f"framework must be 'trl', 'verl' or 'openrlhf', got {framework!r}")
