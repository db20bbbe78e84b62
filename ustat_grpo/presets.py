"""The one table of framework settings: which estimator each trainer's option means, and its arithmetic.

``grpo``, ``dr_grpo`` and ``rloo`` are the framework words as TRL means them; ``trl_*``,
``verl_*`` and ``openrlhf_*`` name each framework's setting (grpo_frameworks.md §1-§3); ``paper``
is arXiv 2603.01162, eqs. (15)-(16).  :func:`ustat_grpo.estimators.std_normalized` and
:func:`ustat_grpo.advantages.advantages` read their ``eps``, ``ddof``, centring and float32 std
algorithm from here, and so do the Monte Carlo fast path and Algorithm 2.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Preset", "PRESETS", "RENAMED", "get_preset"]


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


_TRL_GRPO = Preset(estimator="std_normalized", eps=1e-4, scale_rewards="group", std_algorithm="two_pass_float32",
                   source='TRL GRPOTrainer, scale_rewards="group" (default)')
_TRL_DR = Preset(estimator="group_mean", eps=1e-4, source='TRL GRPOTrainer, scale_rewards="none"')
_TRL_RLOO = Preset(estimator="leave_one_out", eps=1e-4, source="TRL RLOOTrainer (normalize_advantages=False)")

#: The one table of framework settings (grpo_frameworks.md §1-§3).  ``grpo``, ``dr_grpo`` and
#: ``rloo`` are the framework words as TRL means them; ``paper`` is arXiv 2603.01162, eqs. (15)-(16).
PRESETS: dict[str, Preset] = {
    "grpo": _TRL_GRPO,
    "dr_grpo": _TRL_DR,
    "rloo": _TRL_RLOO,
    "trl_grpo": _TRL_GRPO,
    "trl_grpo_batch": Preset(estimator="group_mean", eps=1e-4, scale_rewards="batch",
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

#: Estimator names before the one-name-per-concept rename -> canonical names.  Monte Carlo
#: grids written by earlier versions carry the old labels on their ``estimator`` axis.
RENAMED = {"grpo": "leave_one_out", "rloo": "leave_one_out", "dr_grpo": "group_mean"}


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
