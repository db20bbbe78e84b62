"""The scaling-law constants ``A1, A2, A3`` from many samples per prompt, as U-statistics.

Each per-prompt piece of the constants is a U-statistic of the ``M`` (reward, score) samples of
one prompt (arXiv 2603.01162, Lemma 1 and Theorem 2), with the kernels of :data:`KERNELS`:

* ``g(x)``: order 2, ``h = (W_i - W_j)(Z_i - Z_j)/2`` (eq. (6));
* ``||g(x)||^2``: order 4, ``<h(1,2), h(3,4)>`` symmetrised over the three pairings;
* ``sigma^2(x) tr I(x)``: order 3, ``(Z_i - Z_j)^2 ||W_k||^2 / 2`` symmetrised;
* ``E[(Z-V)^2 ||W||^2 | x]``: order 3, ``(Z_i - Z_j)(Z_i - Z_k) ||W_i||^2`` symmetrised.

:func:`prompt_pieces` is their closed form, ``O(M d)`` per prompt and vectorised over prompts;
:func:`prompt_pieces_engine` computes the same numbers with the generic engine
(:func:`ustat_grpo.stats.ustat.ustatistic`) and is the test oracle.  :func:`estimate_constants` combines
the pieces into unbiased ``A1..A3`` with jackknife intervals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core._serialize import jsonable
from ..stats import kernels, ustat
from ..theory.estimators import leave_one_out
from ..core.interval import jackknife_covariance, json_float, json_interval
from ..theory.mse import CONSTANT_NAMES, paper_constants
from .optimum import ConstantsEstimate

__all__ = ["KERNELS", "ScalingConstants", "estimate_constants", "prompt_constants", "prompt_pieces",
           "prompt_pieces_engine", "prompt_pseudo_values", "top_share", "PromptStatistics",
           "prompt_statistics", "merge_statistics", "constants_from_statistics"]


def _split(x):
    """Packed rows ``[z, w_1..w_d]`` (``kernels.grpo_data``) -> ``z (k,)``, ``w (k, d)``."""
    return x[:, 0], x[:, 1:]


def _h(x1, x2):
    (z1, w1), (z2, w2) = _split(x1), _split(x2)
    return 0.5 * (w1 - w2) * (z1 - z2)[:, None]          # (k, d)


def _g2_func(x1, x2, x3, x4):
    pair = lambda a, b, c, d: np.einsum("kd,kd->k", _h(a, b), _h(c, d))
    return (pair(x1, x2, x3, x4) + pair(x1, x3, x2, x4) + pair(x1, x4, x2, x3)) / 3.0


def _st_func(x1, x2, x3):
    (z1, w1), (z2, w2), (z3, w3) = _split(x1), _split(x2), _split(x3)
    q = lambda w: np.einsum("kd,kd->k", w, w)
    return (0.5 * (z1 - z2) ** 2 * q(w3) + 0.5 * (z1 - z3) ** 2 * q(w2)
            + 0.5 * (z2 - z3) ** 2 * q(w1)) / 3.0


def _zzq_func(x1, x2, x3):
    (z1, w1), (z2, w2), (z3, w3) = _split(x1), _split(x2), _split(x3)
    q = lambda w: np.einsum("kd,kd->k", w, w)
    return ((z1 - z2) * (z1 - z3) * q(w1) + (z2 - z1) * (z2 - z3) * q(w2)
            + (z3 - z1) * (z3 - z2) * q(w3)) / 3.0


#: the kernels of the per-prompt pieces, on rows packed by :func:`ustat_grpo.stats.kernels.grpo_data`
KERNELS = {
    "g": kernels.Kernel(_h, 2, name="grpo pair h"),
    "g_norm2": kernels.Kernel(_g2_func, 4, name="<h(1,2), h(3,4)>"),
    "sigma2_trI": kernels.Kernel(_st_func, 3, name="(Z_i - Z_j)^2 |W_k|^2 / 2"),
    "zzq": kernels.Kernel(_zzq_func, 3, name="(Z_i - Z_j)(Z_i - Z_k) |W_i|^2"),
}


def prompt_pieces_engine(rewards, scores, *, method: str = "naive"):
    """:func:`prompt_pieces` by the generic U-statistic engine, prompt by prompt (small ``M``).

    The test oracle of the closed form: each piece is ``ustat.ustatistic`` of its kernel in
    :data:`KERNELS` (``method="naive"`` enumerates every index tuple).
    """
    z, w = np.asarray(rewards, float), np.asarray(scores, float)
    out = {k: [] for k in KERNELS}
    for p in range(z.shape[0]):
        data = kernels.grpo_data(z[p], w[p])                  # (M, 1 + d)
        for k, kern in KERNELS.items():
            out[k].append(ustat.ustatistic(data, kern, method=method, variance="none").statistic)
    return tuple(np.array(out[k]) for k in KERNELS)


def prompt_pieces(rewards, scores):
    """Unbiased per-prompt U-statistics of :data:`KERNELS` in closed form, vectorised over prompts.

    Parameters
    ----------
    rewards : (P, M) ; scores : (P, M, d), ``M >= 4``.

    Returns
    -------
    g : (P, d)    U-statistic (6) of g(x) = Cov(W, Z | x)
    g2 : (P,)     order-4 U-statistic of ||g(x)||^2 (kernel <h(1,2), h(3,4)>)
    st : (P,)     order-3 U-statistic of sigma^2(x) tr I(x)
    zzq : (P,)    unbiased E[(Z - V)^2 ||W||^2 | x]
    """
    z = rewards                                          # (P, M)
    w = scores                                           # (P, M, d)
    M = z.shape[-1]
    q = np.einsum("pmd,pmd->pm", w, w)                   # (P, M) ||W_m||^2
    sz, szz = z.sum(-1), (z * z).sum(-1)                 # (P,)
    sw = w.sum(-2)                                       # (P, d)
    szw = np.einsum("pm,pmd->pd", z, w)                  # (P, d)
    sz2w = np.einsum("pm,pmd->pd", z * z, w)             # (P, d)
    zbar = sz / M
    dev2 = (z - zbar[:, None]) ** 2                      # (P, M)
    s2 = dev2.sum(-1) / (M - 1)                          # unbiased sigma^2
    # g: sample covariance of (W, Z) with ddof 1 == U-statistic with kernel h (Lemma 1)
    g = leave_one_out(z, w)                              # (P, d)
    # a_i = sum_j h_ij, H = sum_i a_i
    a = kernels.grpo_row_sums(z, w)                      # (P, M, d)
    H = a.sum(-2)                                        # (P, d) == M(M-1) g
    # S2 = sum_{i != j} ||h_ij||^2
    t_q = (q * (M * z * z - 2 * z * sz[:, None] + szz[:, None])).sum(-1)
    t_w = 2 * np.einsum("pd,pd->p", sz2w, sw) - 2 * np.einsum("pd,pd->p", szw, szw)
    S2 = 0.25 * (2 * t_q - 2 * t_w)
    D = np.einsum("pd,pd->p", H, H) - 4 * np.einsum("pmd,pmd->p", a, a) + 2 * S2
    g2 = D / (M * (M - 1) * (M - 2) * (M - 3))
    # sigma^2 tr I over distinct triples: sum_k q_k [S - sum_j (z_k - z_j)^2]
    S = M * (M - 1) * s2                                 # sum_{i != j} (z_i - z_j)^2 / 2
    inner = S[:, None] - (M * dev2 + (M - 1) * s2[:, None])
    st = (q * inner).sum(-1) / (M * (M - 1) * (M - 2))
    # pair average of (z_i - z_j)^2 q_i has mean E[(Z-V)^2 q] + sigma^2 tr I
    t1 = (q * (M * dev2 + (M - 1) * s2[:, None])).sum(-1) / (M * (M - 1))
    return g, g2, st, t1 - st


def pool_arrays(rewards, scores, *, min_samples: int = 4, finite: bool = True):
    """Validated ``rewards (P, M)`` and ``scores (P, M, d)`` as float arrays (one clear error otherwise)."""
    z, w = np.asarray(rewards, float), np.asarray(scores, float)
    if z.ndim != 2 or w.ndim != 3 or w.shape[:2] != z.shape:
        raise ValueError(f"need rewards (P, M) and scores (P, M, d), got {z.shape} and {w.shape}")
    if z.shape[1] < min_samples:
        raise ValueError(f"need at least {min_samples} samples per prompt, got {z.shape[1]}")
    if finite and not (np.all(np.isfinite(z)) and np.all(np.isfinite(w))):
        raise ValueError("rewards and scores must be finite")
    return z, w


def prompt_constants(rewards, scores):
    """Unbiased per-prompt constants ``A2(x), A3(x)`` of Theorem 2 (arXiv 2603.01162).

    ``A2(x) = tr Sigma_oracle(x) = E[(Z-V)^2 ||W||^2 | x] - ||g(x)||^2`` and
    ``A3(x) = sigma^2(x) tr I(x) + ||g(x)||^2``, so that the exact per-prompt MSE of the
    leave-one-out GRPO gradient is ``A2(x)/G + A3(x)/(G(G-1))`` and the oracle's is ``A2(x)/G``.

    Parameters
    ----------
    rewards : array_like, shape (P, M) ; scores : array_like, shape (P, M, d), ``M >= 4``.

    Returns
    -------
    a2, a3, g_norm2 : ndarray, shape (P,)
        U-statistics of ``A2(x)``, ``A3(x)`` and ``||g(x)||^2`` (unbiased; may be negative for
        small ``M``).
    """
    z, w = pool_arrays(rewards, scores, finite=False)
    _, g2, st, zzq = prompt_pieces(z, w)
    return zzq - g2, st + g2, g2


def _constants_from_pieces(g, g2, st, zzq, probs):
    """(A1, A2, A3) from per-prompt pieces; ``probs`` None = prompts i.i.d. from f (equal weights)."""
    P = g.shape[0]
    a3 = st + g2
    a2 = zzq - g2
    if probs is None:
        if P < 2:
            raise ValueError("need at least two prompts to estimate the between-prompt variance A1")
        return np.array([_a1_sampled(g, g2), a2.mean(), a3.mean()])
    f = probs
    fg = f @ g                                           # (d,)
    cross = fg @ fg - np.einsum("p,pd,pd->", f * f, g, g)  # sum_{x != y} f_x f_y g_x.g_y
    A1 = f @ g2 - (cross + (f * f) @ g2)
    return np.array([A1, f @ a2, f @ a3])


def _a1_sampled(g, g2) -> float:
    """``A1 = E||g(X)||^2 - ||E g(X)||^2`` with distinct-prompt cross products (independent, unbiased)."""
    P = g.shape[0]
    sg = g.sum(0)
    return float(g2.mean() - (sg @ sg - np.einsum("pd,pd->", g, g)) / (P * (P - 1)))


def _a1_without_each(g, g2) -> np.ndarray:
    """``A1`` (prompts sampled) recomputed without prompt ``p``, for every ``p``: ``(P,)`` in ``O(P d)``."""
    P = g.shape[0]
    gg = np.einsum("pd,pd->p", g, g)                     # (P,)
    rest = g.sum(0)[None] - g                            # (P, d): sum over the other prompts
    cross_wo = (np.einsum("pd,pd->p", rest, rest) - (gg.sum() - gg)) / ((P - 1) * (P - 2))
    return (g2.sum() - g2) / (P - 1) - cross_wo


def prompt_pseudo_values(g, g2, st, zzq) -> np.ndarray:
    """Delete-one-prompt jackknife pseudo-values of ``(A1, A2, A3)`` in closed form, ``O(P d)``.

    ``psi_p = P A(all) - (P - 1) A(without prompt p)`` with ``A`` of :func:`constants_from_statistics`
    (prompts sampled, equal weights).  ``A2`` and ``A3`` are means, so their pseudo-values are the
    per-prompt pieces; ``A1`` has cross products over distinct prompts.  Their mean is the estimate
    for ``A2, A3``; their spread and skewness are those of the per-prompt contributions, which is
    what ``interval="fieller_skew"`` uses.

    Parameters
    ----------
    g : (P, d) ; g2, st, zzq : (P,) per-prompt pieces (:func:`prompt_pieces`), ``P >= 3``.

    Returns
    -------
    psi : (P, 3)
    """
    P = g.shape[0]
    a1_wo = _a1_without_each(g, g2)
    return np.stack([P * _a1_sampled(g, g2) - (P - 1) * a1_wo, zzq - g2, st + g2], axis=-1)


def top_share(values, fraction: float = 0.02) -> float:
    """Share of the positive mass of ``values`` carried by the ``max(1, round(fraction n))`` largest.

    The per-prompt pieces are unbiased estimates and can be negative; negative values count as 0,
    so the share lies in [0, 1] (NaN when no value is positive).
    """
    v = np.sort(np.clip(np.asarray(values, float), 0.0, None))[::-1]
    top = max(1, round(fraction * v.size))
    total = v.sum()
    return float(v[:top].sum() / total) if total > 0 else float("nan")


def _plugin_pieces(rewards, scores):
    """Per-prompt pieces of the plug-in estimates: ``mean((Z-V)^2 |W|^2)``, ``s^2``, ``mean |W|^2``."""
    z, w = rewards, scores
    v = z.mean(-1)
    q = np.einsum("pmd,pmd->pm", w, w)
    return ((z - v[:, None]) ** 2 * q).mean(-1), z.var(-1, ddof=1), q.mean(-1)


def _plugin_from_pieces(g, zzq_plugin, s2, mean_q, probs):
    """The spec's plug-in estimates (section 4 reference formulas), biased O(1/M); for comparison."""
    gg = np.einsum("pd,pd->p", g, g)
    trs = zzq_plugin - gg
    f = np.full(len(gg), 1.0 / len(gg)) if probs is None else probs
    gbar = f @ g
    A1 = f @ np.einsum("pd,pd->p", g - gbar, g - gbar)
    if probs is None:
        A1 *= len(gg) / (len(gg) - 1)
    return np.array([A1, f @ trs, f @ (s2 * mean_q + gg)])


def _constants_plugin(rewards, scores, probs):
    g = leave_one_out(rewards, scores)                   # (P, d): the plug-in g is the U-statistic
    return _plugin_from_pieces(g, *_plugin_pieces(rewards, scores), probs)


@dataclass(frozen=True, kw_only=True)
class ScalingConstants(ConstantsEstimate):
    """Constants of the exact scaling law measured from per-prompt samples.

    Attributes
    ----------
    params : (A1, A2, A3) clipped at 0 (``unconstrained``: the unbiased estimates).
    covariance : (3, 3) delete-a-group jackknife covariance.
    df : degrees of freedom of the jackknife (t quantiles).
    plugin : the spec's plug-in estimates (biased O(1/M)), for comparison.
    num_prompts, samples_per_prompt : P and M.
    design : "fixed prompt set" (``prompt_probs`` given: population = these prompts, jackknife
        over blocks of samples) or "sampled prompts" (jackknife over groups of prompts).
    concentration : share of ``sum_x ||g(x)||^2`` (the U-statistic pieces of ``A1``) carried by
        the top 2% of prompts (:func:`top_share`), ``None`` for a fixed prompt set.  A large share
        (tens of percent) means a heavy-tailed ``A1``: the plain Fieller interval of ``G*`` then
        undercovers on its low side (``interval="fieller_skew"``).
    """

    form: str = "exact"
    names: tuple = CONSTANT_NAMES["exact"]
    plugin: np.ndarray
    num_prompts: int
    samples_per_prompt: int
    design: str
    n_groups: int
    concentration: float | None = None

    @property
    def c(self) -> np.ndarray:
        """The paper's ``(c1, c2, c3)`` (:func:`~ustat_grpo.theory.mse.paper_constants`)."""
        return paper_constants(self.params)

    def summary(self) -> str:
        ci = self.confidence_interval()
        pct = f"{100 * self.level:g}%"
        lines = [f"scaling-law constants from {self.num_prompts} prompts x {self.samples_per_prompt} "
                 f"samples ({self.design}; unbiased U-statistics, jackknife over {self.n_groups} groups)",
                 f"  {'name':<4} {'estimate':>11} {'std.err':>10}  {pct} CI{'':14} plug-in (biased)"]
        for i, n in enumerate(self.names):
            lines.append(f"  {n:<4} {self.unconstrained[i]:>11.5g} {self.standard_error[i]:>10.3g}  "
                         f"[{ci[n].low:.4g}, {ci[n].high:.4g}]".ljust(58) + f"{self.plugin[i]:.5g}")
        lines.append("  A1: prompt-sampling variance; A2: oracle variance; A3: U-statistic residual"
                     " (c_i := A_i)")
        if self.concentration is not None:
            lines.append(f"  concentration: the top 2% of prompts carry {self.concentration:.0%} of "
                         "sum ||g(x)||^2 (A1)")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        ci = self.confidence_interval()
        return jsonable(dict(form=self.form, method="unbiased U-statistics + delete-a-group jackknife",
                    design=self.design, n_groups=self.n_groups,
                    constants={n: json_float(self.params[i]) for i, n in enumerate(self.names)},
                    unconstrained={n: json_float(self.unconstrained[i]) for i, n in enumerate(self.names)},
                    standard_error={n: json_float(self.standard_error[i]) for i, n in enumerate(self.names)},
                    confidence_interval={n: json_interval(ci[n]) for n in self.names},
                    plugin={n: json_float(self.plugin[i]) for i, n in enumerate(self.names)},
                    covariance=[[json_float(v) for v in row] for row in self.covariance],
                    num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt,
                    level=self.level, concentration=json_float(self.concentration)
                    if self.concentration is not None else None))


def estimate_constants(rewards, scores, *, prompt_probs=None, level: float = 0.95,
                       n_groups: int = 20) -> ScalingConstants:
    """Estimate ``A1, A2, A3`` (Prop. 3, exact form) from many samples per prompt.

    Parameters
    ----------
    rewards : array_like, shape (P, M)
        ``M >= 4`` rewards per prompt (``M`` much larger than the group sizes of interest).
    scores : array_like, shape (P, M, d)
        Score vectors ``W = grad log pi(Y | X)`` (or a fixed random projection of them).
    prompt_probs : array_like, shape (P,), optional
        Probabilities ``f(x)`` when the ``P`` prompts *are* the whole prompt set (e.g. a toy
        bandit): constants are then population values over this set and the uncertainty is the
        within-prompt sampling only.  ``None``: prompts are an i.i.d. sample from ``f`` (equal
        weights) and the uncertainty includes prompt sampling.
    level : float
        Default confidence level.
    n_groups : int
        Number of jackknife groups (blocks of samples, or of prompts when ``prompt_probs`` is None).

    Returns
    -------
    ScalingConstants

    Notes
    -----
    Every per-prompt piece is an unbiased U-statistic, so the constants are unbiased (the
    spec's plug-ins carry ``O(1/M)`` bias; they are reported in ``plugin``):

    * ``g(x)``: order 2, kernel ``h = (W_i - W_j)(Z_i - Z_j)/2`` (arXiv 2603.01162, eq. (6));
    * ``||g(x)||^2``: order 4, kernel ``<h(1,2), h(3,4)>``, computed in ``O(M d)``;
    * ``sigma^2 tr I``: order 3, kernel ``(Z_i - Z_j)^2 ||W_k||^2 / 2``;
    * ``E[(Z-V)^2 ||W||^2]``: order 3;
    * ``A1 = E||g(X)||^2 - ||E g(X)||^2`` with cross products over distinct prompts only.

    Then ``A2 = E[E[(Z-V)^2||W||^2|X] - ||g(X)||^2]`` and ``A3 = E[sigma^2 tr I + ||g||^2]``.
    Intervals: delete-a-group jackknife with Student-t quantiles (``n_groups - 1`` dof).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.binomial(1, 0.5, size=(8, 200)).astype(float)
    >>> w = rng.standard_normal((8, 200, 3)) + z[..., None]
    >>> est = estimate_constants(z, w)
    >>> est.params.shape
    (3,)
    """
    z, w = pool_arrays(rewards, scores)
    P, M = z.shape
    probs = None
    if prompt_probs is not None:
        probs = np.asarray(prompt_probs, float)
        if probs.shape != (P,) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
            raise ValueError("prompt_probs must be (P,) non-negative and sum to 1")
    if probs is None:                                    # prompts sampled: mergeable per-prompt statistics
        return constants_from_statistics(prompt_statistics(z, w), level=level, n_groups=n_groups)
    est = _constants_from_pieces(*prompt_pieces(z, w), probs)
    K = int(min(n_groups, M // 4))
    reps = []
    for blk in np.array_split(np.arange(M), K):          # jackknife over blocks of samples
        keep = np.setdiff1d(np.arange(M), blk)
        reps.append(_constants_from_pieces(*prompt_pieces(z[:, keep], w[:, keep]), probs))
    return ScalingConstants(params=np.maximum(est, 0.0), unconstrained=est, covariance=jackknife_covariance(reps),
                            df=float(K - 1), level=level, plugin=_constants_plugin(z, w, probs),
                            num_prompts=P, samples_per_prompt=M, design="fixed prompt set", n_groups=K)


# ------------------------------------------------------------------ mergeable per-prompt statistics

_STAT_FIELDS = ("g", "g_norm2", "sigma2_trI", "zzq", "zzq_plugin", "reward_var", "mean_score_norm2")
_EXTRA = "extra_"                                        # NetCDF name prefix of PromptStatistics.extras


@dataclass(frozen=True, kw_only=True)
class PromptStatistics:
    """Per-prompt sufficient statistics of the constants: the unit of work of a pilot.

    Everything :func:`constants_from_statistics` needs, for prompts sampled i.i.d. from the prompt
    distribution: the per-prompt U-statistics of :data:`KERNELS` and the plug-in pieces.  Shards
    computed anywhere (other processes, GPUs, nodes, or an earlier interrupted run) combine with
    :func:`merge_statistics` into exactly the statistics of the union.

    Attributes
    ----------
    prompt : ndarray (P,) int
        Prompt ids (sorted, distinct).
    num_samples : ndarray (P,) int
        Samples ``M`` of each prompt.
    g : ndarray (P, d)
        Per-prompt gradient estimate (the leave-one-out U-statistic), in the (sketched) score space.
    g_norm2, sigma2_trI, zzq : ndarray (P,)
        U-statistics of ``||g(x)||^2``, ``sigma^2(x) tr I(x)`` and ``E[(Z-V)^2 ||W||^2 | x]``.
    zzq_plugin, reward_var, mean_score_norm2 : ndarray (P,)
        Plug-in pieces (``mean((Z-V)^2|W|^2)``, ``s^2``, ``mean |W|^2``) of the biased reference.
    rewards : ndarray (P, M) or None
        The reward vectors (kept for estimator-specific analyses), when every prompt has the same M.
    scores : ndarray (P, M, d) or None
        The (sketched) score vectors, kept by a pilot so that every analysis that needs the samples
        themselves (per-estimator MSE(G), the samples-per-prompt advice) runs from its file alone;
        stored in the dtype they were computed in (float32 for a transformer's scores).
    extras : dict
        Per-prompt diagnostics of the sampler, ``name -> (dims, ndarray)`` with ``dims[0] ==
        "prompt"`` (xarray's variable form): completion lengths, truncation, per-function rewards.
    """

    prompt: np.ndarray
    num_samples: np.ndarray
    g: np.ndarray
    g_norm2: np.ndarray
    sigma2_trI: np.ndarray
    zzq: np.ndarray
    zzq_plugin: np.ndarray
    reward_var: np.ndarray
    mean_score_norm2: np.ndarray
    rewards: np.ndarray | None = None
    scores: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.prompt.shape[0])

    def select(self, keep) -> "PromptStatistics":
        """The statistics of the prompts where the boolean mask ``keep (P,)`` is true."""
        keep = np.asarray(keep, bool)
        if keep.shape != (len(self),):
            raise ValueError(f"keep must be a boolean mask of shape ({len(self)},), got {keep.shape}")
        pick = lambda a: None if a is None else a[keep]
        return PromptStatistics(prompt=self.prompt[keep], num_samples=self.num_samples[keep],
                                rewards=pick(self.rewards), scores=pick(self.scores),
                                extras={k: (dims, a[keep]) for k, (dims, a) in self.extras.items()},
                                **{k: getattr(self, k)[keep] for k in _STAT_FIELDS})

    def to_dataset(self):
        """``xarray.Dataset`` with dims ``prompt``, ``sketch`` (and ``sample`` for rewards)."""
        import xarray as xr

        dv = {"num_samples": ("prompt", self.num_samples), "g": (("prompt", "sketch"), self.g)}
        dv |= {k: ("prompt", getattr(self, k)) for k in _STAT_FIELDS[1:]}
        if self.rewards is not None:
            dv["rewards"] = (("prompt", "sample"), self.rewards)
        if self.scores is not None:
            dv["scores"] = (("prompt", "sample", "sketch"), self.scores)
        dv |= {_EXTRA + k: v for k, v in self.extras.items()}
        return xr.Dataset(dv, coords={"prompt": self.prompt})

    @classmethod
    def from_dataset(cls, ds) -> "PromptStatistics":
        """Inverse of :meth:`to_dataset`."""
        kw = {k: np.asarray(ds[k].values, float) for k in _STAT_FIELDS}
        return cls(prompt=np.asarray(ds["prompt"].values, np.int64),
                   num_samples=np.asarray(ds["num_samples"].values, np.int64),
                   rewards=np.asarray(ds["rewards"].values, float) if "rewards" in ds else None,
                   scores=np.asarray(ds["scores"].values) if "scores" in ds else None,
                   extras={str(k)[len(_EXTRA):]: (tuple(ds[k].dims), np.asarray(ds[k].values))
                           for k in ds.data_vars if str(k).startswith(_EXTRA)}, **kw)


def prompt_statistics(rewards, scores, *, prompt_ids=None, keep_scores: bool = False,
                      extras: dict | None = None) -> PromptStatistics:
    """:class:`PromptStatistics` of ``P`` prompts with ``M >= 4`` samples each.

    Parameters
    ----------
    rewards : array_like (P, M) ; scores : array_like (P, M, d)
        Rewards may be NaN where a completion could not be scored (a reward function returned
        ``None``); that prompt's statistics are then NaN and analyses leave it out
        (:meth:`PromptStatistics.select`).
    prompt_ids : array_like (P,) of int, optional
        Default ``0..P-1``.
    keep_scores : bool
        Keep ``scores`` themselves (in their own dtype) in the result.
    extras : dict, optional
        Per-prompt diagnostics ``name -> (dims, array (P, ...))`` to carry along.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.binomial(1, 0.5, size=(6, 16)).astype(float); w = rng.normal(size=(6, 16, 3))
    >>> a = prompt_statistics(z[:2], w[:2]); b = prompt_statistics(z[2:], w[2:], prompt_ids=range(2, 6))
    >>> whole = estimate_constants(z, w, n_groups=6).unconstrained
    >>> bool(np.array_equal(constants_from_statistics(merge_statistics(b, a), n_groups=6).unconstrained, whole))
    True
    """
    raw = np.asarray(scores)
    z, w = pool_arrays(rewards, raw, finite=False)
    if not np.all(np.isfinite(w)):
        raise ValueError("scores must be finite")
    P, M = z.shape
    ids = np.arange(P, dtype=np.int64) if prompt_ids is None else np.asarray(list(prompt_ids), np.int64)
    if ids.shape != (P,) or len(np.unique(ids)) != P:
        raise ValueError(f"prompt_ids must be {P} distinct integers")
    g, g2, st, zzq = prompt_pieces(z, w)
    order = np.argsort(ids, kind="stable")
    plug = _plugin_pieces(z, w)
    extras = {k: (tuple(dims), np.asarray(a)[order]) for k, (dims, a) in (extras or {}).items()}
    return PromptStatistics(prompt=ids[order], num_samples=np.full(P, M, np.int64), g=g[order],
                            g_norm2=g2[order], sigma2_trI=st[order], zzq=zzq[order],
                            zzq_plugin=plug[0][order], reward_var=plug[1][order],
                            mean_score_norm2=plug[2][order], rewards=z[order],
                            scores=raw[order] if keep_scores else None, extras=extras)


def merge_statistics(*parts: PromptStatistics) -> PromptStatistics:
    """The statistics of the union of disjoint shards, in prompt-id order (any order of ``parts``)."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        raise ValueError("nothing to merge")
    ids = np.concatenate([p.prompt for p in parts])
    if len(np.unique(ids)) != len(ids):
        raise ValueError("shards overlap: a prompt id occurs in more than one shard")
    if len({p.g.shape[1] for p in parts}) != 1:
        raise ValueError("shards have different score dimensions (sketch)")
    order = np.argsort(ids, kind="stable")
    cat = lambda k: np.concatenate([getattr(p, k) for p in parts])[order]
    same_m = all(p.rewards is not None for p in parts) and len({p.rewards.shape[1] for p in parts}) == 1
    scores = all(p.scores is not None for p in parts) and len({p.scores.shape[1:] for p in parts}) == 1
    names = set.intersection(*(set(p.extras) for p in parts))
    extras = {k: (parts[0].extras[k][0], np.concatenate([p.extras[k][1] for p in parts])[order])
              for k in sorted(names) if len({p.extras[k][1].shape[1:] for p in parts}) == 1}
    return PromptStatistics(prompt=ids[order], num_samples=cat("num_samples"),
                            rewards=cat("rewards") if same_m else None, scores=cat("scores") if scores else None,
                            extras=extras, **{k: cat(k) for k in _STAT_FIELDS})


def constants_from_statistics(stats: PromptStatistics, *, level: float = 0.95,
                              n_groups: int = 20) -> ScalingConstants:
    """Unbiased ``A1..A3`` with a delete-a-group jackknife over prompts, from per-prompt statistics.

    Equal to :func:`estimate_constants` on the same samples (prompts sampled from ``f``).
    """
    P = len(stats)
    K = int(min(n_groups, P))
    if K < 3:
        raise ValueError("need at least 3 prompts for a jackknife over prompts")
    pieces = (stats.g, stats.g_norm2, stats.sigma2_trI, stats.zzq)
    est = _constants_from_pieces(*pieces, None)
    reps = []
    for blk in np.array_split(np.arange(P), K):
        keep = np.setdiff1d(np.arange(P), blk)
        reps.append(_constants_from_pieces(*(x[keep] for x in pieces), None))
    plugin = _plugin_from_pieces(stats.g, stats.zzq_plugin, stats.reward_var, stats.mean_score_norm2, None)
    M = np.unique(stats.num_samples)
    return ScalingConstants(params=np.maximum(est, 0.0), unconstrained=est, covariance=jackknife_covariance(reps),
                            df=float(K - 1), level=level, plugin=plugin, num_prompts=P,
                            samples_per_prompt=int(M[0]) if len(M) == 1 else int(np.median(stats.num_samples)),
                            design="sampled prompts", n_groups=K,
                            pseudo_values=prompt_pseudo_values(*pieces),
                            concentration=top_share(stats.g_norm2))
