"""GRPO-family policy-gradient estimators on one group of ``G`` generations per prompt.

Every estimator is a pure function ``f(rewards (..., G), scores (..., G, d), **kw) -> (..., d)``:
the per-prompt estimate ``(1/G) sum_g W_g (Z_g - C_g)`` of arXiv 2603.01162, eq. (5), for a
baseline ``C_g``.  Leading axes broadcast; a minibatch estimate is the mean over the prompt axis.

| name | baseline / advantage | paper | frameworks |
|---|---|---|---|
| ``vanilla`` | ``C = 0`` | Table 1 | REINFORCE |
| ``grpo`` = ``rloo`` | leave-one-out mean ``C_g = mean_{k != g} Z_k`` (eq. 4) | Lemma 1 | TRL ``RLOOTrainer``, verl/OpenRLHF ``rloo`` |
| ``group_mean`` = ``dr_grpo`` | full group mean, ``A_g = Z_g - Zbar`` | footnote 2 | TRL ``scale_rewards="none"``, verl ``norm_adv_by_std_in_grpo=False``, OpenRLHF ``dr_grpo`` |
| ``std_normalized`` | ``A_g = (Z_g - Zbar) / (s + eps)`` | eq. (15)-(16) with ``center="loo"`` | TRL ``scale_rewards="group"``, verl ``grpo``, OpenRLHF ``group_norm`` |
| ``oracle`` | ``C = V(x)`` | Table 1 | - |
| ``prompt_baseline`` | any ``C = C(x)`` | Cor. 5 | - |

:func:`advantages` returns the per-completion advantages on flat ``[B*G]`` batches in TRL order
(contiguous groups) or verl order (any order plus an ``index`` of prompt ids), matching the
framework code bit for bit up to floating-point rounding.

Each fast function has a loop twin ``_naive_<name>`` used as its test oracle.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "vanilla", "grpo", "rloo", "group_mean", "dr_grpo", "std_normalized", "oracle",
    "prompt_baseline", "advantages", "EPS_PRESETS", "ESTIMATORS",
]

#: std stabiliser ``eps`` added to the (Bessel) group std by each framework (grpo_frameworks.md §1).
EPS_PRESETS = {"trl": 1e-4, "verl": 1e-6, "openrlhf": 1e-9, "paper": 0.0}


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


def grpo(rewards, scores):
    """GRPO leave-one-out estimate ``(1/G) sum_g W_g (Z_g - Zbar_{-g})``.

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
    ``k != g`` (spec §2.1).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> r, s = rng.random(4), rng.normal(size=(4, 2))
    >>> bool(np.allclose(grpo(r, s), 4 / 3 * group_mean(r, s)))
    True
    """
    r, s = _iv(rewards, scores, min_group=2)
    G = r.shape[-1]
    centred = r - r.mean(axis=-1, keepdims=True)                      # (..., G)
    return np.einsum("...g,...gd->...d", centred, s) / (G - 1)


def rloo(rewards, scores):
    """RLOO estimate: the framework name of :func:`grpo` (identical numbers).

    TRL ``RLOOTrainer`` and verl/OpenRLHF ``rloo`` use ``A_g = Z_g - Zbar_{-g}`` (no std scaling by
    default), whose on-policy gradient is exactly the GRPO U-statistic of arXiv 2603.01162, Lemma 1.
    Shapes as in :func:`grpo`.
    """
    return grpo(rewards, scores)


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
    arXiv 2603.01162, footnote 2: equals ``(G-1)/G`` times :func:`grpo` exactly, so it is biased
    by ``-g(x)/G`` (spec §2.1).  Defined for ``G = 1`` (it is then 0).
    """
    r, s = _iv(rewards, scores)
    return _weighted(r - r.mean(axis=-1, keepdims=True), s)


def dr_grpo(rewards, scores):
    """Dr. GRPO estimate: mean-centred advantage ``A_g = Z_g - Zbar`` without std scaling.

    Identical numbers to :func:`group_mean`.  It is the on-policy gradient of TRL
    ``scale_rewards="none"``, verl ``norm_adv_by_std_in_grpo=False`` and OpenRLHF ``dr_grpo``
    with outcome rewards and sequence-level scores ``W_g = sum_t grad log pi(Y_{g,t}|...)``.
    TRL ``loss_type="dr_grpo"`` divides the token sum by the constant ``B * max_completion_length``
    instead of ``B * G``; with sequence-level scores that is a constant rescaling by
    ``G / max_completion_length`` (a learning-rate change), not a different estimator.
    Shapes as in :func:`group_mean`.
    """
    return group_mean(rewards, scores)


def _group_std(r, ddof):
    G = r.shape[-1]
    if G - ddof <= 0:
        raise ValueError(f"std with ddof={ddof} needs G > {ddof}, got G={G}")
    dev = r - r.mean(axis=-1, keepdims=True)
    return np.sqrt((dev * dev).sum(axis=-1, keepdims=True) / (G - ddof))


def _resolve_eps(eps, preset):
    if eps is not None and preset is not None:
        raise ValueError("give eps= or preset=, not both")
    if preset is not None:
        if preset not in EPS_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(EPS_PRESETS)}")
        return EPS_PRESETS[preset]
    eps = EPS_PRESETS["trl"] if eps is None else float(eps)
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


def std_normalized(rewards, scores, *, eps=None, preset=None, ddof=1, zero_std="zero", center="mean"):
    """Std-normalised ("shipped GRPO") estimate ``(1/G) sum_g W_g A_g``, ``A_g = (Z_g - Zbar)/(s + eps)``.

    Parameters
    ----------
    rewards : array_like, shape (..., G)
    scores : array_like, shape (..., G, d)
    eps : float, optional
        Added to the std (not to the variance).  Default: TRL's 1e-4.
    preset : {"trl", "verl", "openrlhf", "paper"}, optional
        ``eps`` = 1e-4, 1e-6, 1e-9, 0 respectively.  Mutually exclusive with ``eps``.
    ddof : int
        1 = Bessel std (TRL ``nanstd``, verl/OpenRLHF ``torch.std``); 0 = population std (async TRL).
    zero_std : {"zero", "raise", "nan"}
        Policy for zero-variance groups (all rewards equal): advantage 0 (what every framework gets,
        as 0/(0+eps)); raise ``ValueError``; or NaN.
    center : {"mean", "loo"}
        Numerator ``Z_g - Zbar`` (frameworks) or ``Z_g - Zbar_{-g}`` (arXiv 2603.01162, eq. 15,
        with ``preset="paper"``).

    Returns
    -------
    ndarray, shape (..., d)

    Notes
    -----
    Paper 1, Appendix A, eqs. (15)-(16): the numerator uses the LOO mean and the standard error uses
    the full mean with ``G - 1``; ``center="loo", preset="paper"`` reproduces that exactly (spec §5.6).
    The estimator is a ratio of two U-statistics and is biased (spec grpo_frameworks.md §1).
    """
    r, s = _iv(rewards, scores)
    adv = _std_advantage(r, eps=_resolve_eps(eps, preset), ddof=ddof, zero_std=zero_std, center=center)
    return _weighted(adv, s)


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

_KINDS = ("grpo", "dr_grpo", "rloo", "vanilla")
_SCALES = ("group", "batch", "none")
_DEFAULT_SCALE = {"grpo": "group", "dr_grpo": "none", "rloo": "none", "vanilla": "none"}
_SINGLETON = ("raise", "raw", "zero")


def advantages(rewards, kind="grpo", *, num_generations=None, index=None, scale_rewards=None,
               eps=None, preset=None, ddof=1, singleton="raise"):
    """Per-completion advantages as computed by TRL, verl and OpenRLHF.

    Parameters
    ----------
    rewards : array_like, shape (N,)
        One outcome reward per completion, ``N = B * G``.  (A verl ``token_level_rewards`` array
        ``(N, T)`` must be summed over ``T`` first.)
    kind : {"grpo", "dr_grpo", "rloo", "vanilla"}
        Centring: group mean (``grpo``, ``dr_grpo``), leave-one-out mean (``rloo``), none (``vanilla``).
    num_generations : int, optional
        TRL order: completions of prompt ``b`` are rows ``b*G .. b*G+G-1``.
    index : array_like, shape (N,), optional
        verl order: a prompt id (``uid``) per row; rows may be in any order.  Exactly one of
        ``num_generations`` and ``index`` must be given.
    scale_rewards : {"group", "batch", "none"}, optional
        TRL ``scale_rewards``.  ``"group"``: divide by the group std + eps (TRL default, verl
        ``norm_adv_by_std_in_grpo=True``, OpenRLHF ``group_norm``).  ``"batch"``: for ``grpo``,
        divide the group-centred rewards by the std of *all* rewards + eps (TRL, LitePPO); for
        ``rloo``, TRL ``RLOOConfig.normalize_advantages=True``: ``(A - mean A)/(std A + eps)``
        over the batch.  ``"none"``: no scaling.  Default: ``"group"`` for ``grpo``, else ``"none"``
        (``dr_grpo`` allows only ``"none"``).
    eps, preset : see :func:`std_normalized` (default TRL's 1e-4).
    ddof : int
        Std degrees of freedom (1 = Bessel, as all three frameworks).
    singleton : {"raise", "raw", "zero"}
        Groups of one completion: raise (TRL training, OpenRLHF assert); ``"raw"`` = verl ``grpo``
        and ``rloo`` (mean := 0, std := 1, so ``A = r/(1+eps)`` with scaling and ``A = r`` without);
        ``"zero"`` = TRL eval and verl ``rloo_vectorized`` (``A = 0``).

    Returns
    -------
    ndarray, shape (N,)
        Advantages in the input row order.

    Notes
    -----
    Zero-variance groups get advantage 0 (``0/(0+eps)``), as in every framework; with ``eps=0``
    they are also set to 0 (spec §5.5).  TRL's ``"batch"`` std is the Bessel std of the whole
    gathered reward vector.  The G=8, 3-correct/5-wrong example of grpo_frameworks.md §3 gives
    +1.2074/-0.7244 (TRL), +1.2076/-0.7246 (verl), +0.625/-0.375 (``dr_grpo``), +0.7143/-0.4286
    (``rloo``).

    Examples
    --------
    >>> r = [1, 1, 1, 0, 0, 0, 0, 0]
    >>> advantages(r, num_generations=8)[[0, 7]].round(4)
    array([ 1.2074, -0.7244])
    """
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"rewards must be a flat vector [B*G], got shape {r.shape}")
    if np.isnan(r).any():
        raise ValueError("rewards contain NaN; drop or impute unscorable completions first")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    scale = _DEFAULT_SCALE[kind] if scale_rewards is None else scale_rewards
    if scale not in _SCALES:
        raise ValueError(f"scale_rewards must be one of {_SCALES}, got {scale!r}")
    if kind == "dr_grpo" and scale != "none":
        raise ValueError("kind='dr_grpo' is mean-centring without std scaling; use scale_rewards='none'")
    if kind in ("rloo", "vanilla") and scale == "group":
        raise ValueError(f"kind={kind!r} has no group std scaling in any framework; use 'none' or 'batch'")
    if singleton not in _SINGLETON:
        raise ValueError(f"singleton must be one of {_SINGLETON}, got {singleton!r}")
    eps = _resolve_eps(eps, preset)
    if (num_generations is None) == (index is None):
        raise ValueError("give exactly one of num_generations= (TRL order) or index= (verl order)")

    N = r.size
    if num_generations is not None:
        G = int(num_generations)
        if G < 1 or N % G:
            raise ValueError(f"len(rewards)={N} is not a positive multiple of num_generations={G}")
        inverse = np.arange(N) // G
    else:
        idx = np.asarray(index)
        if idx.shape != (N,):
            raise ValueError(f"index must have shape ({N},), got {idx.shape}")
        _, inverse = np.unique(idx, return_inverse=True)
        inverse = inverse.reshape(-1)
    if N == 0:
        return r.copy()
    n_groups = int(inverse.max()) + 1
    count = np.bincount(inverse, minlength=n_groups).astype(float)    # (n_groups,)
    single = (count == 1)[inverse]                                    # (N,)
    if single.any() and singleton == "raise" and kind != "vanilla":
        raise ValueError(f"{int(single.sum())} group(s) have a single completion; group baselines need G >= 2 "
                         "(pass singleton='raw' for verl or 'zero' for TRL-eval behaviour)")
    mean = (np.bincount(inverse, weights=r, minlength=n_groups) / count)[inverse]
    gmin = np.full(n_groups, np.inf)
    gmax = np.full(n_groups, -np.inf)
    np.minimum.at(gmin, inverse, r)
    np.maximum.at(gmax, inverse, r)
    tied = (gmin == gmax)[inverse]                                    # zero-variance groups, exactly
    dev = np.where(tied, 0.0, r - mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "vanilla":
            adv = r.copy()
        elif kind == "rloo":
            adv = dev * count[inverse] / (count[inverse] - 1)
        else:
            adv = dev
        if kind != "vanilla":
            adv = np.where(single, r if singleton == "raw" else 0.0, adv)
        if scale == "group":                                          # kind == "grpo"
            var = np.bincount(inverse, weights=dev * dev, minlength=n_groups) / (count - ddof)
            std = np.where(single, 1.0, np.sqrt(var)[inverse])        # verl: singleton std := 1
            adv = np.where(tied & ~single, 0.0, adv / (std + eps))
        elif scale == "batch":
            if N - ddof <= 0:
                raise ValueError(f"batch std needs more than {ddof} reward(s)")
            if kind == "rloo":
                adv = (adv - adv.mean()) / (adv.std(ddof=ddof) + eps)
            else:
                adv = adv / (r.std(ddof=ddof) + eps)
    return adv


# --------------------------------------------------------------------------- registry

def _std_trl(rewards, scores, *, values=None):
    return std_normalized(rewards, scores, preset="trl")


ESTIMATORS: dict[str, Callable] = {
    "vanilla": lambda rewards, scores, *, values=None: vanilla(rewards, scores),
    "grpo": lambda rewards, scores, *, values=None: grpo(rewards, scores),
    "rloo": lambda rewards, scores, *, values=None: rloo(rewards, scores),
    "group_mean": lambda rewards, scores, *, values=None: group_mean(rewards, scores),
    "dr_grpo": lambda rewards, scores, *, values=None: dr_grpo(rewards, scores),
    "std_normalized": _std_trl,
    "oracle": lambda rewards, scores, *, values=None: oracle(rewards, scores, values=_need(values)),
}
"""Uniform callables ``f(rewards (..., G), scores (..., G, d), *, values=None) -> (..., d)`` for the
Monte Carlo engine; ``values`` (= V(x), shape ``(...)``) is needed only by ``"oracle"``;
``"std_normalized"`` uses the TRL preset (eps = 1e-4, Bessel std, zero-variance groups -> 0)."""


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


def _naive_grpo(rewards, scores):
    """Eq. (4)-(5) literally: explicit leave-one-out mean per completion."""
    def one(r, s, _):
        G = len(r)
        acc = np.zeros(s.shape[-1])
        for g in range(G):
            loo = sum(r[k] for k in range(G) if k != g) / (G - 1)
            acc += s[g] * (r[g] - loo)
        return acc / G
    return _naive_loop(one, rewards, scores)


def _naive_grpo_ustat(rewards, scores):
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


def _naive_advantages(rewards, kind="grpo", *, num_generations=None, index=None, scale_rewards=None,
                      eps=1e-4, ddof=1):
    """verl-style dict loop (``compute_grpo_outcome_advantage``); singletons as verl ('raw')."""
    r = [float(x) for x in rewards]
    N = len(r)
    ids = [i // num_generations for i in range(N)] if index is None else list(index)
    scale = _DEFAULT_SCALE[kind] if scale_rewards is None else scale_rewards
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
        if kind == "vanilla":
            a = r[i]
        elif kind == "rloo":
            a = r[i] if n == 1 else r[i] - (sum(vals) - r[i]) / (n - 1)
        else:
            a = r[i] - mean[u]
            if scale == "group":
                a = 0.0 if (std[u] == 0 and eps == 0) else a / (std[u] + eps)
        out.append(a)
    if scale == "batch":
        if kind == "rloo":
            m = sum(out) / N
            sd = (sum((a - m) ** 2 for a in out) / (N - ddof)) ** 0.5
            out = [(a - m) / (sd + eps) for a in out]
        else:
            m = sum(r) / N
            sd = (sum((x - m) ** 2 for x in r) / (N - ddof)) ** 0.5
            out = [a / (sd + eps) for a in out]
    return np.array(out)
