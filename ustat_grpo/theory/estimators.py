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

:data:`ustat_grpo.theory.presets.PRESETS` is the one table of framework settings (estimator, ``eps``,
``ddof``, reward scaling, float32 std algorithm); :func:`ustat_grpo.theory.advantages.advantages` returns
the per-completion advantages of a preset as the frameworks compute them.

Each fast function has a loop twin ``_naive_<name>`` used as its test oracle (by name: :data:`NAIVE`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .presets import PRESETS, get_preset

__all__ = [
    "vanilla", "leave_one_out", "group_mean", "std_normalized", "oracle", "prompt_baseline", "ESTIMATORS",
    "NAIVE",
]


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
        p = get_preset(preset)
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
        ``C(x)`` per prompt, e.g. Greensmith's ``C*(x)`` (:func:`ustat_grpo.theory.mse.greensmith_baseline`).

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


# --------------------------------------------------------------------------- registry

def _std_with_eps(eps):
    """``std_normalized`` at a fixed ``eps`` (Bessel std, mean centre, zero-variance groups -> 0) as
    ``f(rewards, scores, *, values=None)``: the one such function (``ESTIMATORS["std_normalized"]`` at
    :data:`~ustat_grpo.theory.presets.TRL_EPS`, and the framework variants of
    :data:`ustat_grpo.theory.scale_free.ESTIMATOR_FUNCTIONS`)."""
    eps = _check_eps(eps)

    def f(rewards, scores, *, values=None):
        return std_normalized(rewards, scores, eps=eps, ddof=1, zero_std="zero")
    f.__name__ = f"std_normalized_eps{eps:g}"
    return f


ESTIMATORS: dict[str, Callable] = {
    "vanilla": lambda rewards, scores, *, values=None: vanilla(rewards, scores),
    "leave_one_out": lambda rewards, scores, *, values=None: leave_one_out(rewards, scores),
    "group_mean": lambda rewards, scores, *, values=None: group_mean(rewards, scores),
    "std_normalized": _std_with_eps(PRESETS["grpo"].eps),
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


#: The naive twins by name (explicit Python loops over groups and completions; test oracles for the
#: vectorised estimators, public for scripts such as ``paper_checks``): ``leave_one_out`` is eq. (4)-(5)
#: with an explicit leave-one-out mean, ``leave_one_out_pairs`` eq. (6) as a double loop over pairs;
#: ``std_normalized`` takes ``eps=`` (and ``ddof=``, ``center=``), ``prompt_baseline`` a ``baseline``.
NAIVE: dict[str, Callable] = {
    "vanilla": _naive_vanilla,
    "leave_one_out": _naive_leave_one_out,
    "leave_one_out_pairs": _naive_leave_one_out_ustat,
    "group_mean": _naive_group_mean,
    "std_normalized": _naive_std_normalized,
    "prompt_baseline": _naive_prompt_baseline,
}
