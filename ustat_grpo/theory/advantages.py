"""Per-completion advantages exactly as TRL, verl and OpenRLHF compute them.

:func:`advantages` returns the advantages of a framework preset (:data:`ustat_grpo.theory.presets.PRESETS`)
on flat ``[B*G]`` batches in TRL order (contiguous groups) or verl order (any order plus an
``index`` of prompt ids), matching the framework code up to floating-point rounding, or, with
``precision="float32"``, reproducing that rounding.  :func:`rounding_noise_groups` flags groups of
equal rewards that a framework turns into non-zero advantages (rounding noise divided by eps).
``_naive_advantages`` is the verl-style dict-loop twin used as the test oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..core._serialize import jsonable
from .estimators import _check_eps
from .presets import PRESETS, get_preset, trl_scale_rewards, with_scale_rewards

__all__ = ["advantages", "rounding_noise_groups", "RoundingNoise"]


_ADV_ESTIMATORS = ("std_normalized", "group_mean", "leave_one_out", "vanilla")
_SINGLETON = ("raise", "raw", "zero")
_PRECISIONS = ("exact", "float32")


def _advantage_settings(preset, estimator, eps, ddof, scale_rewards):
    """Resolve ``(estimator, eps, ddof, scale, preset)``: a preset, or an estimator with TRL's eps.

    ``scale_rewards`` is TRL's ``GRPOConfig`` field (legacy bools included): with a preset (the
    default is TRL's ``"grpo"``) it selects the same framework's preset with that scaling
    (:func:`ustat_grpo.theory.presets.with_scale_rewards`); with ``estimator=`` it must agree with it.
    """
    if preset is not None and (estimator is not None or eps is not None):
        raise ValueError("give preset= or estimator=/eps=, not both: a preset fixes the estimator and eps")
    if preset is None and estimator is None:
        preset = "grpo"
    scale = None if scale_rewards is None else trl_scale_rewards(scale_rewards)
    if preset is not None:
        get_preset(preset)
        if scale is not None and scale != PRESETS[preset].scale_rewards:
            preset = with_scale_rewards(preset, scale)
        p = PRESETS[preset]
        estimator, eps = p.estimator, p.eps
        ddof = p.ddof if ddof is None else ddof
        scale = p.scale_rewards if scale is None else scale
        if p.center != "mean":
            raise ValueError(f"preset {preset!r} centres on the leave-one-out mean; use std_normalized(..., "
                             f"preset={preset!r}) or practical.normalized_advantages")
    else:
        if estimator not in _ADV_ESTIMATORS:
            raise ValueError(f"estimator must be one of {_ADV_ESTIMATORS}, got {estimator!r}")
        eps = PRESETS["grpo"].eps if eps is None else _check_eps(eps)
        ddof = 1 if ddof is None else ddof
        if scale is None:
            scale = "group" if estimator == "std_normalized" else "none"
        elif estimator == "group_mean" and scale == "group":   # TRL: group-mean centring, group std
            estimator = "std_normalized"
        elif estimator == "std_normalized" and scale != "group":
            raise ValueError(f"estimator='std_normalized' divides by the group std, which is scale_rewards='group'; "
                             f"for scale_rewards={scale_rewards!r} use estimator='group_mean' (or leave "
                             "estimator unset: TRL's GRPOTrainer with that scale_rewards)")
        elif scale == "group" and estimator != "std_normalized":
            raise ValueError(f"scale_rewards='group' divides group-mean-centred rewards by the group std; "
                             f"estimator={estimator!r} takes scale_rewards 'none' or 'batch'")
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
    scale_rewards : {"group", "batch", "none"} or bool, optional
        TRL 1.16's ``GRPOConfig.scale_rewards``, meaning what it means there (``True`` is
        ``"group"``, ``False`` is ``"none"``): the group-mean-centred rewards are divided by the
        group std + eps (``"group"``, GRPO), by the std of *all* rewards + eps (``"batch"``,
        LitePPO) or not at all (``"none"``, Dr. GRPO).  With a preset (default TRL's ``"grpo"``)
        it picks the same framework's preset with that scaling, so
        ``advantages(r, num_generations=G, scale_rewards="none")`` is ``preset="dr_grpo"``
        (:func:`ustat_grpo.theory.presets.with_scale_rewards`; verl / OpenRLHF presets read it as
        ``norm_adv_by_std_in_grpo`` / ``group_norm`` vs ``dr_grpo`` and have no ``"batch"``).
        With ``estimator="group_mean"``, ``"group"`` gives ``std_normalized``; ``std_normalized``
        takes only ``"group"``.  For ``leave_one_out`` (TRL ``RLOOTrainer``), ``"batch"`` is
        ``RLOOConfig.normalize_advantages=True``: ``(A - mean A)/(std A + eps)`` over the batch.
        Default: the preset's, else ``"group"`` for ``std_normalized`` and ``"none"`` otherwise.
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
    >>> round(float(advantages([0.3] * 6, preset="openrlhf_group_norm", num_generations=6,
    ...                        precision="float32")[0]), 4)
    29.8023
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
        return jsonable({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in d.items()})


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
