"""GRPO-family policy-gradient estimators on one group of ``G`` generations per prompt.

Every estimator is a pure function ``f(rewards (..., G), scores (..., G, d), **kw) -> (..., d)``:
the per-prompt estimate ``(1/G) sum_g W_g (Z_g - C_g)`` of arXiv 2603.01162, eq. (5), for a
baseline ``C_g``.  Leading axes broadcast; a minibatch estimate is the mean over the prompt axis.
Each name says what the estimator computes; the framework names are presets (below).

| estimator | baseline / advantage | paper | framework settings (presets) |
|---|---|---|---|
| ``vanilla`` | ``C = 0`` | Table 1 | REINFORCE |
| ``leave_one_out`` | leave-one-out mean ``C_g = mean_{k != g} Z_k``: the U-statistic (eq. 4) | "GRPO", Lemma 1 | ``rloo``: TRL ``RLOOTrainer``, verl/OpenRLHF ``rloo`` |
| ``group_mean`` | full group mean, ``A_g = Z_g - Zbar`` | footnote 2 | ``dr_grpo``: TRL ``scale_rewards="none"``, verl ``norm_adv_by_std_in_grpo=False``, OpenRLHF ``dr_grpo`` |
| ``std_normalized`` | ``A_g = (Z_g - Zbar) / (s + eps)`` | eqs. (15)-(16) with ``center="loo"`` | ``grpo``: TRL ``scale_rewards="group"``, verl ``grpo``, OpenRLHF ``group_norm`` |
| ``oracle`` | ``C = V(x)`` | Table 1 | - |
| ``prompt_baseline`` | any ``C = C(x)`` | Cor. 5 | - |

:data:`PRESETS` is the one table of framework settings (estimator, ``eps``, ``ddof``, reward
scaling, float32 std algorithm); :func:`advantages` returns the per-completion advantages of a
preset on flat ``[B*G]`` batches in TRL order (contiguous groups) or verl order (any order plus an
``index`` of prompt ids), matching the framework code up to floating-point rounding, or, with
``precision="float32"``, reproducing that rounding.  :func:`rounding_noise_groups` flags groups of
equal rewards that a framework turns into non-zero advantages.

Each fast function has a loop twin ``_naive_<name>`` used as its test oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

__all__ = [
    "vanilla", "leave_one_out", "group_mean", "std_normalized", "oracle", "prompt_baseline",
    "advantages", "rounding_noise_groups", "Preset", "PRESETS", "ESTIMATORS", "RENAMED",
    "RoundingNoise",
]


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


def _preset(name) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


# --------------------------------------------------------------------------- validation

def _iv(rewards, scores, *, min_group: int = 1):
    """Validate and broadcast ``rewards (..., G)`` and ``scores (..., G, d)``."""
    r = np.asarray(rewards, dtype=float)
    s = np.asarray(scores, dtype=float)
    if r.ndim < 1:
        raise ValueError("rewards must have at least one axis (the group axis), got a scalar")
    if s.ndim < 2:
        raise ValueError(f"scores must have shape (..., G, d), got shape {s.shape}")
    if r.shape[-1] != s.shape[-2]:
        raise ValueError(
            f"group sizes differ: rewards {r.shape} has G={r.shape[-1]} on its last axis, "
            f"scores {s.shape} has G={s.shape[-2]} on its second-to-last axis")
    if r.shape[-1] < min_group:
        raise ValueError(f"this estimator needs num_generations G >= {min_group}, got G={r.shape[-1]}")
    if np.isnan(r).any():
        raise ValueError("rewards contain NaN; drop or impute unscorable completions first")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    try:
        lead = np.broadcast_shapes(r.shape[:-1], s.shape[:-2])
    except ValueError as exc:
        raise ValueError(f"leading axes of rewards {r.shape} and scores {s.shape} do not broadcast") from exc
    G, d = r.shape[-1], s.shape[-1]
    return np.broadcast_to(r, lead + (G,)), np.broadcast_to(s, lead + (G, d))


def _lead_scalar(x, lead_shape, name):
    x = np.asarray(x, dtype=float)
    try:
        x = np.broadcast_to(x, lead_shape)
    except ValueError as exc:
        raise ValueError(f"{name} of shape {x.shape} does not broadcast to the prompt axes {lead_shape}") from exc
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN")
    return x


def _weighted(adv, s):
    """``(1/G) sum_g adv_g s_g``: (..., G), (..., G, d) -> (..., d)."""
    return np.einsum("...g,...gd->...d", adv, s) / adv.shape[-1]


# --------------------------------------------------------------------------- estimators

def vanilla(rewards, scores):
    """Vanilla REINFORCE estimate ``(1/G) sum_g Z_g W_g`` (baseline ``C = 0``).

    Parameters
    ----------
    rewards : array_like, shape (..., G)
    scores : array_like, shape (..., G, d)
        ``W_g = grad_theta log pi(Y_g | x)``.

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    arXiv 2603.01162, eq. (5) with ``C = 0`` (Table 1).  Unbiased for ``g(x) = E[WZ|x]``.
    """
    r, s = _iv(rewards, scores)
    return _weighted(r, s)


def leave_one_out(rewards, scores):
    """Leave-one-out estimate ``(1/G) sum_g W_g (Z_g - Zbar_{-g})``: the order-2 U-statistic.

    The paper calls it GRPO; the frameworks call it RLOO (preset ``"rloo"``).

    Parameters
    ----------
    rewards : array_like, shape (..., G), G >= 2
    scores : array_like, shape (..., G, d)

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    arXiv 2603.01162, eqs. (4)-(5).  Since ``Z_g - Zbar_{-g} = G/(G-1) (Z_g - Zbar)``, the O(G)
    closed form is ``(1/(G-1)) sum_g (Z_g - Zbar) W_g``.  By Lemma 1 (eq. 6) this equals the order-2
    U-statistic with kernel ``h(D_i, D_j) = 1/2 (W_i - W_j)(Z_i - Z_j)``, hence it is unbiased for
    ``g(x)``.  The paper's display of eq. (4) sums ``Z^{(b,g)}``; the sum is over ``Z^{(b,k)}``,
    ``k != g`` (spec §2.1).  TRL ``RLOOTrainer`` and verl/OpenRLHF ``rloo`` use exactly this
    advantage (no std scaling by default).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> r, s = rng.random(4), rng.normal(size=(4, 2))
    >>> bool(np.allclose(leave_one_out(r, s), 4 / 3 * group_mean(r, s)))
    True
    """
    r, s = _iv(rewards, scores, min_group=2)
    G = r.shape[-1]
    centred = r - r.mean(axis=-1, keepdims=True)                      # (..., G)
    return np.einsum("...g,...gd->...d", centred, s) / (G - 1)


def group_mean(rewards, scores):
    """Full-group-mean baseline ``(1/G) sum_g W_g (Z_g - Zbar)``.

    Parameters
    ----------
    rewards : array_like, shape (..., G)
    scores : array_like, shape (..., G, d)

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    arXiv 2603.01162, footnote 2: equals ``(G-1)/G`` times :func:`leave_one_out` exactly, so it is
    biased by ``-g(x)/G`` (spec §2.1).  Defined for ``G = 1`` (it is then 0).  It is the on-policy
    gradient of Dr. GRPO (preset ``"dr_grpo"``: TRL ``scale_rewards="none"``, verl
    ``norm_adv_by_std_in_grpo=False``, OpenRLHF ``dr_grpo``) with outcome rewards and
    sequence-level scores ``W_g = sum_t grad log pi(Y_{g,t}|...)``.  TRL ``loss_type="dr_grpo"``
    divides the token sum by the constant ``B * max_completion_length`` instead of ``B * G``; with
    sequence-level scores that is a constant rescaling by ``G / max_completion_length`` (a
    learning-rate change), not a different estimator.
    """
    r, s = _iv(rewards, scores)
    return _weighted(r - r.mean(axis=-1, keepdims=True), s)


def _group_std(r, ddof):
    G = r.shape[-1]
    if G - ddof <= 0:
        raise ValueError(f"std with ddof={ddof} needs G > {ddof}, got G={G}")
    dev = r - r.mean(axis=-1, keepdims=True)
    return np.sqrt((dev * dev).sum(axis=-1, keepdims=True) / (G - ddof))


def _check_eps(eps):
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return eps


_ZERO_STD = ("zero", "raise", "nan")


def _std_advantage(r, *, eps, ddof, zero_std, center):
    """Group z-score advantages ``(..., G) -> (..., G)``."""
    if zero_std not in _ZERO_STD:
        raise ValueError(f"zero_std must be one of {_ZERO_STD}, got {zero_std!r}")
    if center not in ("mean", "loo"):
        raise ValueError(f"center must be 'mean' or 'loo', got {center!r}")
    G = r.shape[-1]
    if center == "loo" and G < 2:
        raise ValueError("center='loo' needs G >= 2")
    zero = (r == r[..., :1]).all(axis=-1, keepdims=True)              # (..., 1) all rewards equal
    dev = np.where(zero, 0.0, r - r.mean(axis=-1, keepdims=True))
    std = _group_std(np.where(zero, 0.0, r), ddof)                    # (..., 1)
    num = dev * G / (G - 1) if center == "loo" else dev
    if zero_std == "raise" and zero.any():
        raise ValueError(f"{int(zero.sum())} group(s) have zero reward variance; "
                         "use zero_std='zero' to give them advantage 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        adv = num / (std + eps)
    if zero_std == "zero":
        adv = np.where(zero, 0.0, adv)
    else:  # "nan" (or "raise" with no zero group): a zero group is NaN regardless of eps
        adv = np.where(zero, np.nan, adv)
    return adv


def std_normalized(rewards, scores, *, eps=None, preset=None, ddof=None, zero_std="zero", center=None):
    """Std-normalised ("shipped GRPO") estimate ``(1/G) sum_g W_g A_g``, ``A_g = (Z_g - Zbar)/(s + eps)``.

    Parameters
    ----------
    rewards : array_like, shape (..., G)
    scores : array_like, shape (..., G, d)
    eps : float, optional
        Added to the std (not to the variance).  Default: TRL's 1e-4 (``PRESETS["grpo"]``).
    preset : str, optional
        A key of :data:`PRESETS` whose estimator is ``std_normalized`` (``"grpo"``/``"trl_grpo"``,
        ``"verl_grpo"``, ``"openrlhf_group_norm"``, ``"trl_async_grpo"``, ``"paper"``); it sets
        ``eps``, ``ddof`` and ``center``.  Mutually exclusive with ``eps``.
    ddof : int, optional
        1 = Bessel std (TRL ``nanstd``, verl/OpenRLHF ``torch.std``; the default); 0 = population
        std (async TRL).
    zero_std : {"zero", "raise", "nan"}
        Policy for zero-variance groups (all rewards equal): advantage 0 (the exact value of
        ``0/(0+eps)``; frameworks computing in float32 may get rounding noise instead, see
        :func:`rounding_noise_groups`); raise ``ValueError``; or NaN.
    center : {"mean", "loo"}, optional
        Numerator ``Z_g - Zbar`` (frameworks; the default) or ``Z_g - Zbar_{-g}``
        (arXiv 2603.01162, eq. 15, preset ``"paper"``).

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    Paper 1, Appendix A, eqs. (15)-(16): the numerator uses the LOO mean and the standard error uses
    the full mean with ``G - 1``; ``preset="paper"`` (``center="loo"``, ``eps=0``) reproduces that
    exactly (spec §5.6).  The estimator is a ratio of two U-statistics and is biased
    (grpo_frameworks.md §1).
    """
    r, s = _iv(rewards, scores)
    eps, ddof, center = _std_settings(eps, preset, ddof, center)
    adv = _std_advantage(r, eps=eps, ddof=ddof, zero_std=zero_std, center=center)
    return _weighted(adv, s)


def _std_settings(eps, preset, ddof, center):
    """``(eps, ddof, center)`` of ``std_normalized`` from a preset or explicit values."""
    if preset is None:
        p = PRESETS["grpo"]
    else:
        if eps is not None:
            raise ValueError("give eps= or preset=, not both")
        p = _preset(preset)
        if p.estimator != "std_normalized":
            raise ValueError(f"preset {preset!r} is the {p.estimator} estimator, not std_normalized")
    return (p.eps if eps is None else _check_eps(eps), p.ddof if ddof is None else int(ddof),
            p.center if center is None else center)


def oracle(rewards, scores, *, values):
    """Oracle-baseline estimate ``(1/G) sum_g W_g (Z_g - V(x))``.

    Parameters
    ----------
    rewards : array_like, shape (..., G)
    scores : array_like, shape (..., G, d)
    values : array_like, shape (...)
        The exact prompt values ``V(x) = E[Z|x]`` (broadcast over the leading axes).

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    arXiv 2603.01162, Table 1; its covariance is ``Sigma_oracle(x)/G`` (Theorem 2).
    """
    r, s = _iv(rewards, scores)
    v = _lead_scalar(values, r.shape[:-1], "values")
    return _weighted(r - v[..., None], s)


def prompt_baseline(rewards, scores, *, baseline):
    """Estimate with a prompt-only baseline ``(1/G) sum_g W_g (Z_g - C(x))``.

    Parameters
    ----------
    rewards : array_like, shape (..., G)
    scores : array_like, shape (..., G, d)
    baseline : array_like, shape (...)
        ``C(x)`` per prompt, e.g. Greensmith's ``C*(x)`` (:func:`ustat_grpo.mse.greensmith_baseline`).

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    arXiv 2603.01162, eq. (5) and Corollary 5.  Unbiased for every ``C(x)`` since ``E[W|x] = 0``.
    """
    r, s = _iv(rewards, scores)
    c = _lead_scalar(baseline, r.shape[:-1], "baseline")
    return _weighted(r - c[..., None], s)


# --------------------------------------------------------------------------- advantages

_ADV_ESTIMATORS = ("std_normalized", "group_mean", "leave_one_out", "vanilla")
_SCALES = ("group", "batch", "none")
_SINGLETON = ("raise", "raw", "zero")
_PRECISIONS = ("exact", "float32")


def _advantage_settings(preset, estimator, eps, ddof, scale_rewards):
    """Resolve ``(estimator, eps, ddof, scale, preset)``: a preset, or an estimator with TRL's eps."""
    if preset is not None and (estimator is not None or eps is not None):
        raise ValueError("give preset= or estimator=/eps=, not both: a preset fixes the estimator and eps")
    if preset is None and estimator is None:
        preset = "grpo"
    if preset is not None:
        p = _preset(preset)
        estimator, eps = p.estimator, p.eps
        ddof = p.ddof if ddof is None else ddof
        scale = p.scale_rewards if scale_rewards is None else scale_rewards
        if p.center != "mean":
            raise ValueError(f"preset {preset!r} centres on the leave-one-out mean; use std_normalized(..., "
                             f"preset={preset!r}) or practical.normalized_advantages")
    else:
        if estimator not in _ADV_ESTIMATORS:
            raise ValueError(f"estimator must be one of {_ADV_ESTIMATORS}, got {estimator!r}")
        eps = PRESETS["grpo"].eps if eps is None else _check_eps(eps)
        ddof = 1 if ddof is None else ddof
        scale = ("group" if estimator == "std_normalized" else "none") if scale_rewards is None else scale_rewards
    if scale not in _SCALES:
        raise ValueError(f"scale_rewards must be one of {_SCALES}, got {scale!r}")
    if (estimator == "std_normalized") != (scale == "group"):
        raise ValueError(f"scale_rewards='group' is the std_normalized estimator; estimator={estimator!r} "
                         f"takes scale_rewards 'none' or 'batch'")
    return estimator, eps, int(ddof), scale, preset


def _group_index(n, num_generations, index):
    """``(inverse (N,), count (n_groups,))``: the group of every row (TRL or verl order)."""
    if (num_generations is None) == (index is None):
        raise ValueError("give exactly one of num_generations= (TRL order) or index= (verl order)")
    if num_generations is not None:
        G = int(num_generations)
        if G < 1 or n % G:
            raise ValueError(f"len(rewards)={n} is not a positive multiple of num_generations={G}")
        inverse = np.arange(n) // G
    else:
        idx = np.asarray(index)
        if idx.shape != (n,):
            raise ValueError(f"index must have shape ({n},), got {idx.shape}")
        inverse = np.unique(idx, return_inverse=True)[1].reshape(-1)
    n_groups = int(inverse.max()) + 1 if n else 0
    return inverse, np.bincount(inverse, minlength=n_groups).astype(float)


def _flat_rewards(rewards):
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"rewards must be a flat vector [B*G], got shape {r.shape}")
    if np.isnan(r).any():
        raise ValueError("rewards contain NaN; drop or impute unscorable completions first")
    return r


def advantages(rewards, *, preset=None, estimator=None, num_generations=None, index=None, scale_rewards=None,
               eps=None, ddof=None, singleton="raise", precision="exact"):
    """Per-completion advantages as computed by TRL, verl and OpenRLHF.

    Parameters
    ----------
    rewards : array_like, shape (N,)
        One outcome reward per completion, ``N = B * G``.  (A verl ``token_level_rewards`` array
        ``(N, T)`` must be summed over ``T`` first.)
    preset : str, optional
        A framework setting, a key of :data:`PRESETS`: ``"grpo"`` (GRPO as TRL ships it, the
        default), ``"dr_grpo"``, ``"rloo"``, ``"trl_grpo_batch"``, ``"verl_grpo"``,
        ``"openrlhf_group_norm"``, ...  It fixes the estimator, ``eps``, ``ddof`` and the scaling.
    estimator : {"std_normalized", "group_mean", "leave_one_out", "vanilla"}, optional
        Instead of a preset: the centring (group mean, leave-one-out mean, none) and, for
        ``std_normalized``, the division by the group std + ``eps``.
    num_generations : int, optional
        TRL order: completions of prompt ``b`` are rows ``b*G .. b*G+G-1``.
    index : array_like, shape (N,), optional
        verl order: a prompt id (``uid``) per row; rows may be in any order.  Exactly one of
        ``num_generations`` and ``index`` must be given.
    scale_rewards : {"group", "batch", "none"}, optional
        TRL's ``scale_rewards``.  ``"group"`` is the ``std_normalized`` estimator (and only it).
        ``"batch"``: ``group_mean`` divided by the std of *all* rewards + eps (TRL, LitePPO);
        ``leave_one_out`` re-standardised over the batch, ``(A - mean A)/(std A + eps)`` (TRL
        ``RLOOConfig.normalize_advantages=True``).  Default: the preset's, else ``"group"`` for
        ``std_normalized`` and ``"none"`` otherwise.
    eps : float, optional
        With ``estimator=``: added to the std (default TRL's 1e-4).
    ddof : int, optional
        Std degrees of freedom (default: the preset's; 1 = Bessel, as all three frameworks).
    singleton : {"raise", "raw", "zero"}
        Groups of one completion: raise (TRL training, OpenRLHF assert); ``"raw"`` = verl ``grpo``
        and ``rloo`` (mean := 0, std := 1, so ``A = r/(1+eps)`` with scaling and ``A = r`` without);
        ``"zero"`` = TRL eval and verl ``rloo_vectorized`` (``A = 0``).
    precision : {"exact", "float32"}
        ``"exact"``: float64, and groups of equal rewards get advantage exactly 0.  ``"float32"``:
        the framework's own float32 arithmetic for a ``std_normalized`` framework preset (TRL
        ``grpo``, ``verl_grpo``, ``openrlhf_group_norm``), to see what the trainer computes.

    Returns
    -------
    ndarray, shape (N,)
        Advantages in the input row order (float32 with ``precision="float32"``).

    Notes
    -----
    A group of equal rewards has no learning signal and its exact advantage is 0: the numerator
    ``r - mean`` is 0.  The frameworks compute in float32, where the mean of ``G`` equal rewards
    that are not exact in binary (0.3, 0.9, ...) misses the reward by an ulp, so the numerator is
    ``+-3e-8`` rather than 0, and the std is 0 or a few ulps.  Divided by ``std + eps`` that
    rounding noise becomes +29.8 (0.3) / -59.6 (0.9) in OpenRLHF ``group_norm`` (eps 1e-9),
    +0.029 / -0.056 in verl ``grpo`` (eps 1e-6) and +3e-4 / -6e-4 in TRL (eps 1e-4), for groups of
    six (whether the float32 mean rounds away from the reward depends on the value and on ``G``).
    Rewards that are exact in binary (0, 1, 0.5) give 0 in every framework.
    ``precision="float32"`` reproduces this: sums run left to right in float32 (torch on the CPU
    for short rows; longer rows and GPU reductions may round differently by an ulp, which changes
    the sign and size of the noise but not its order of magnitude); the std follows the preset's
    ``std_algorithm``.  :func:`rounding_noise_groups` flags the groups concerned.

    TRL's ``"batch"`` std is the Bessel std of the whole gathered reward vector.  The G=8,
    3-correct/5-wrong example of grpo_frameworks.md §3 gives +1.2074/-0.7244 (TRL),
    +1.2076/-0.7246 (verl), +0.625/-0.375 (``dr_grpo``), +0.7143/-0.4286 (``rloo``).

    Examples
    --------
    >>> r = [1, 1, 1, 0, 0, 0, 0, 0]
    >>> advantages(r, num_generations=8)[[0, 7]].round(4)
    array([ 1.2074, -0.7244])
    >>> advantages(r, preset="rloo", num_generations=8)[[0, 7]].round(4)
    array([ 0.7143, -0.4286])
    >>> advantages([0.3] * 6, preset="openrlhf_group_norm", num_generations=6, precision="float32")[0]
    np.float32(29.802322)
    """
    r = _flat_rewards(rewards)
    estimator, eps, ddof, scale, preset = _advantage_settings(preset, estimator, eps, ddof, scale_rewards)
    if singleton not in _SINGLETON:
        raise ValueError(f"singleton must be one of {_SINGLETON}, got {singleton!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    inverse, count = _group_index(r.size, num_generations, index)
    N = r.size
    if N == 0:
        return r.astype(np.float32) if precision == "float32" else r.copy()
    n_groups = count.size
    single = (count == 1)[inverse]                                    # (N,)
    if single.any() and singleton == "raise" and estimator != "vanilla":
        raise ValueError(f"{int(single.sum())} group(s) have a single completion; group baselines need G >= 2 "
                         "(pass singleton='raw' for verl or 'zero' for TRL-eval behaviour)")
    if precision == "float32":
        algorithm = None if preset is None else PRESETS[preset].std_algorithm
        if estimator != "std_normalized" or algorithm is None:
            raise ValueError("precision='float32' reproduces a framework's std-normalised advantages; pass a "
                             "std_normalized framework preset such as 'grpo', 'verl_grpo' or 'openrlhf_group_norm'")
        if single.any():
            raise ValueError("precision='float32' needs every group to have at least two completions")
        return _float32_advantages(r, inverse, eps=eps, ddof=ddof, algorithm=algorithm)
    mean = (np.bincount(inverse, weights=r, minlength=n_groups) / count)[inverse]
    gmin = np.full(n_groups, np.inf)
    gmax = np.full(n_groups, -np.inf)
    np.minimum.at(gmin, inverse, r)
    np.maximum.at(gmax, inverse, r)
    tied = (gmin == gmax)[inverse]                                    # zero-variance groups, exactly
    dev = np.where(tied, 0.0, r - mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        if estimator == "vanilla":
            adv = r.copy()
        elif estimator == "leave_one_out":
            adv = dev * count[inverse] / (count[inverse] - 1)
        else:
            adv = dev
        if estimator != "vanilla":
            adv = np.where(single, r if singleton == "raw" else 0.0, adv)
        if scale == "group":                                          # estimator == "std_normalized"
            var = np.bincount(inverse, weights=dev * dev, minlength=n_groups) / (count - ddof)
            std = np.where(single, 1.0, np.sqrt(var)[inverse])        # verl: singleton std := 1
            adv = np.where(tied & ~single, 0.0, adv / (std + eps))
        elif scale == "batch":
            if N - ddof <= 0:
                raise ValueError(f"batch std needs more than {ddof} reward(s)")
            if estimator == "leave_one_out":
                adv = (adv - adv.mean()) / (adv.std(ddof=ddof) + eps)
            else:
                adv = adv / (r.std(ddof=ddof) + eps)
    return adv


def _float32_advantages(r, inverse, *, eps, ddof, algorithm):
    """``(r - mean) / (std + eps)`` in the framework's float32 arithmetic, group by group (N,) -> (N,)."""
    r32 = r.astype(np.float32)
    out = np.empty(r.size, np.float32)
    order = np.argsort(inverse, kind="stable")                        # rows of each group, in input order
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    f32 = np.float32
    for rows in np.split(order, bounds):
        x = r32[rows]
        n = x.size
        mean = np.add.accumulate(x)[-1] / f32(n)                      # torch mean: float32 sum / n
        dev = x - mean                                                # float32
        if algorithm == "two_pass_float32":                           # TRL nanstd
            var = np.add.accumulate(dev * dev)[-1] / f32(n) * (f32(n) / f32(n - ddof))
            std = np.sqrt(var)
        elif algorithm == "two_pass_float64":                         # torch.std of a 1-D tensor
            d64 = x.astype(np.float64) - float(mean)
            std = f32(math.sqrt(float(np.add.accumulate(d64 * d64)[-1]) / (n - ddof)))
        else:                                                         # "welford": torch.std(dim=-1)
            m, m2 = 0.0, 0.0
            for k, v in enumerate(x.astype(np.float64), start=1):
                delta = v - m
                m += delta / k
                m2 += delta * (v - m)
            std = f32(math.sqrt(m2 / (n - ddof)))
        out[rows] = dev / (std + f32(eps))
    return out


@dataclass(frozen=True, kw_only=True)
class RoundingNoise:
    """Groups of equal rewards that a framework turns into non-zero advantages in float32.

    Attributes
    ----------
    preset : str
        The framework setting (a key of :data:`PRESETS`).
    groups : ndarray, shape (n_groups,)
        Group labels: ``0 .. B-1`` (TRL order) or the sorted distinct ``index`` values (verl order).
    constant : ndarray of bool, shape (n_groups,)
        All rewards of the group are equal as the trainer sees them (in float32): the exact
        advantage is 0.
    max_abs_advantage : ndarray, shape (n_groups,)
        Largest ``|A|`` of the group in the framework's float32 arithmetic.
    threshold : float
        A constant group is flagged when its ``max_abs_advantage`` exceeds this.
    """

    preset: str
    groups: np.ndarray
    constant: np.ndarray
    max_abs_advantage: np.ndarray
    threshold: float

    @property
    def flagged(self) -> np.ndarray:
        """Labels of the constant groups whose float32 advantages exceed ``threshold``."""
        return self.groups[self.constant & (self.max_abs_advantage > self.threshold)]

    @property
    def max_noise(self) -> float:
        """Largest ``|A|`` over the constant groups (0.0 when there are none)."""
        noise = self.max_abs_advantage[self.constant]
        return float(noise.max()) if noise.size else 0.0

    def summary(self) -> str:
        n_const = int(self.constant.sum())
        head = (f"{self.preset} in float32: {n_const} of {self.groups.size} group(s) have equal rewards "
                f"(exact advantage 0); their largest |advantage| is {self.max_noise:.3g}")
        if self.flagged.size:
            return head + (f"; {self.flagged.size} group(s) above {self.threshold:g}: "
                           f"{self.flagged.tolist()}")
        return head + f"; none above {self.threshold:g}"

    __str__ = summary

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(flagged=self.flagged, max_noise=self.max_noise)
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in d.items()}


def rounding_noise_groups(rewards, *, preset="grpo", num_generations=None, index=None, threshold=1e-2):
    """Flag groups of equal rewards that a framework turns into large advantages (rounding noise).

    Parameters
    ----------
    rewards : array_like, shape (N,)
        One reward per completion, as in :func:`advantages`.
    preset : str
        A ``std_normalized`` framework preset: ``"grpo"`` (TRL), ``"verl_grpo"`` or
        ``"openrlhf_group_norm"``.
    num_generations, index :
        The grouping, as in :func:`advantages` (TRL or verl order).
    threshold : float
        ``|A|`` above which a constant group's advantages count as large; a real 1-of-2 split
        has ``|A| ~ 0.7``.

    Returns
    -------
    RoundingNoise

    Notes
    -----
    The exact advantage of a group of equal rewards is 0; in float32 the group mean misses the
    reward by up to an ulp (``~3e-8`` near 0.3) and the division by ``std + eps`` amplifies that
    by up to ``1/eps``: 1e4 (TRL), 1e6 (verl), 1e9 (OpenRLHF).  See :func:`advantages`, Notes.
    Frameworks only detect ``std == 0`` (TRL ``frac_reward_zero_std`` uses ``isclose``), which
    does not zero the advantage.

    Examples
    --------
    >>> r = [0.3] * 6 + [1, 0, 1, 0, 1, 0] + [0.9] * 6 + [1.0] * 6
    >>> res = rounding_noise_groups(r, preset="openrlhf_group_norm", num_generations=6)
    >>> res.constant.tolist(), res.flagged.tolist()
    ([True, False, True, True], [0, 2])
    >>> res.max_abs_advantage.round(2).tolist()
    [29.8, 0.91, 59.6, 0.0]
    """
    r = _flat_rewards(rewards)
    adv = advantages(r, preset=preset, num_generations=num_generations, index=index, precision="float32")
    inverse, count = _group_index(r.size, num_generations, index)
    n_groups = count.size
    r32 = r.astype(np.float32)
    gmin = np.full(n_groups, np.inf, np.float32)
    gmax = np.full(n_groups, -np.inf, np.float32)
    np.minimum.at(gmin, inverse, r32)
    np.maximum.at(gmax, inverse, r32)
    peak = np.zeros(n_groups)
    np.maximum.at(peak, inverse, np.abs(adv).astype(float))
    groups = np.arange(n_groups) if index is None else np.unique(np.asarray(index))
    return RoundingNoise(preset=preset, groups=groups, constant=gmin == gmax, max_abs_advantage=peak,
                         threshold=float(threshold))


# --------------------------------------------------------------------------- registry

def _std_trl(rewards, scores, *, values=None):
    return std_normalized(rewards, scores, preset="grpo")


ESTIMATORS: dict[str, Callable] = {
    "vanilla": lambda rewards, scores, *, values=None: vanilla(rewards, scores),
    "leave_one_out": lambda rewards, scores, *, values=None: leave_one_out(rewards, scores),
    "group_mean": lambda rewards, scores, *, values=None: group_mean(rewards, scores),
    "std_normalized": _std_trl,
    "oracle": lambda rewards, scores, *, values=None: oracle(rewards, scores, values=_need(values)),
}
"""Uniform callables ``f(rewards (..., G), scores (..., G, d), *, values=None) -> (..., d)``, one per
canonical estimator name, for the Monte Carlo engine; ``values`` (= V(x), shape ``(...)``) is
needed only by ``"oracle"``; ``"std_normalized"`` uses ``PRESETS["grpo"]`` (TRL: eps = 1e-4,
Bessel std, zero-variance groups -> 0)."""


def _need(values):
    if values is None:
        raise ValueError("the oracle estimator needs values= (V(x) per prompt)")
    return values


# --------------------------------------------------------------------------- naive twins (test oracles)

def _naive_loop(fn, rewards, scores):
    r, s = _iv(rewards, scores)
    lead = r.shape[:-1]
    out = np.zeros(lead + (s.shape[-1],))
    for ix in np.ndindex(*lead):
        out[ix] = fn(r[ix], s[ix], ix)
    return out


def _naive_vanilla(rewards, scores):
    def one(r, s, _):
        acc = np.zeros(s.shape[-1])
        for g in range(len(r)):
            acc += r[g] * s[g]
        return acc / len(r)
    return _naive_loop(one, rewards, scores)


def _naive_leave_one_out(rewards, scores):
    """Eq. (4)-(5) literally: explicit leave-one-out mean per completion."""
    def one(r, s, _):
        G = len(r)
        acc = np.zeros(s.shape[-1])
        for g in range(G):
            loo = sum(r[k] for k in range(G) if k != g) / (G - 1)
            acc += s[g] * (r[g] - loo)
        return acc / G
    return _naive_loop(one, rewards, scores)


def _naive_leave_one_out_ustat(rewards, scores):
    """Eq. (6) literally: average of the kernel 1/2 (W_i - W_j)(Z_i - Z_j) over pairs i < j."""
    def one(r, s, _):
        G = len(r)
        acc, n = np.zeros(s.shape[-1]), 0
        for i in range(G):
            for j in range(i + 1, G):
                acc += 0.5 * (s[i] - s[j]) * (r[i] - r[j])
                n += 1
        return acc / n
    return _naive_loop(one, rewards, scores)


def _naive_group_mean(rewards, scores):
    def one(r, s, _):
        G = len(r)
        m = sum(r) / G
        return sum(s[g] * (r[g] - m) for g in range(G)) / G
    return _naive_loop(one, rewards, scores)


def _naive_std_normalized(rewards, scores, *, eps, ddof=1, center="mean"):
    def one(r, s, _):
        G = len(r)
        m = sum(r) / G
        sd = (sum((x - m) ** 2 for x in r) / (G - ddof)) ** 0.5
        acc = np.zeros(s.shape[-1])
        for g in range(G):
            c = m if center == "mean" else sum(r[k] for k in range(G) if k != g) / (G - 1)
            a = 0.0 if sd == 0 else (r[g] - c) / (sd + eps)
            acc += a * s[g]
        return acc / G
    return _naive_loop(one, rewards, scores)


def _naive_prompt_baseline(rewards, scores, baseline):
    r, _ = _iv(rewards, scores)
    c = np.broadcast_to(np.asarray(baseline, float), r.shape[:-1])

    def one(r1, s1, ix):
        return sum(s1[g] * (r1[g] - c[ix]) for g in range(len(r1))) / len(r1)
    return _naive_loop(one, rewards, scores)


def _naive_advantages(rewards, estimator="std_normalized", *, num_generations=None, index=None,
                      scale_rewards=None, eps=1e-4, ddof=1):
    """verl-style dict loop (``compute_grpo_outcome_advantage``); singletons as verl ('raw')."""
    r = [float(x) for x in rewards]
    N = len(r)
    ids = [i // num_generations for i in range(N)] if index is None else list(index)
    if scale_rewards is None:
        scale_rewards = "group" if estimator == "std_normalized" else "none"
    groups: dict = {}
    for i, u in enumerate(ids):
        groups.setdefault(u, []).append(r[i])
    mean, std = {}, {}
    for u, vals in groups.items():
        n = len(vals)
        if n == 1:
            mean[u], std[u] = 0.0, 1.0
        else:
            m = sum(vals) / n
            mean[u] = m
            std[u] = (sum((v - m) ** 2 for v in vals) / (n - ddof)) ** 0.5
    out = []
    for i in range(N):
        u, vals = ids[i], groups[ids[i]]
        n = len(vals)
        if estimator == "vanilla":
            a = r[i]
        elif estimator == "leave_one_out":
            a = r[i] if n == 1 else r[i] - (sum(vals) - r[i]) / (n - 1)
        else:
            a = r[i] - mean[u]
            if scale_rewards == "group":
                a = 0.0 if (std[u] == 0 and eps == 0) else a / (std[u] + eps)
        out.append(a)
    if scale_rewards == "batch":
        if estimator == "leave_one_out":
            m = sum(out) / N
            sd = (sum((a - m) ** 2 for a in out) / (N - ddof)) ** 0.5
            out = [(a - m) / (sd + eps) for a in out]
        else:
            m = sum(r) / N
            sd = (sum((x - m) ** 2 for x in r) / (N - ddof)) ** 0.5
            out = [a / (sd + eps) for a in out]
    return np.array(out)
