"""GRPO training of a transformer policy on the arithmetic task: Algorithm 2 on a language model.

One iteration (arXiv 2603.01162, Algorithm 2; spec 2.11), at a fixed rollout budget ``N = B * G``:
``theta_old <- theta``; draw ``B`` *fresh* questions from the task generator (an unlimited
training distribution, so progress is learning, not memorising); sample ``G`` completions of each
from ``pi_theta_old`` (temperature ``T``, no truncation); reward them with the binary verifier;
turn the rewards into advantages per group (:func:`ustat_grpo.experiments.algorithm2.normalized_advantages`:
``"rloo"`` is the paper's leave-one-out GRPO, the U-statistic; ``"grpo"`` TRL's std-normalised
default; ``"paper"`` eqs. 15-16; ...); then ``num_iterations`` passes over ``num_minibatches``
minibatches of the prompts, one optimiser step each, on the surrogate

    L(theta) = 1/(B G) sum_{b,g} sum_t [ min(rho_t A_bg, clip(rho_t, 1 -+ eps) A_bg) - beta k3_t ]

with the token-level ratio ``rho_t = pi_theta(y_t | .) / pi_theta_old(y_t | .)`` and the K3 estimator
``k3_t = r - log r - 1``, ``r = pi_ref / pi_theta`` (TRL / DeepSeekMath; the ``k3_autograd``
reading of the paper's eq. 14, see :mod:`ustat_grpo.experiments.algorithm2`).  Tokens are summed, not averaged
(the paper's score ``W = sum_t grad log pi``; no length normalisation), so in the first pass,
where ``rho = 1``, ``grad L`` is exactly the estimator ``1/(B G) sum A_bg W_bg`` whose MSE the
scaling law describes.  ``loss_type="dapo"`` (TRL's default aggregation) divides the same token sum
by the optimiser step's total number of completion tokens ``T_step`` instead of by ``B G``: the
gradient becomes ``(1/T_step) sum A_bg W_bg``, the same direction rescaled by the random factor
``B G / T_step`` (a ratio estimator, grpo_frameworks.md §4.5).  With ``num_iterations = 1`` and
``beta = 0`` (the defaults) this is plain
on-policy GRPO.

Evaluation on a fixed set of questions (default ``arithmetic.make_dataset(256, seed=1)``) by a
low-noise metric: ``p_canonical``, the exact probability under the policy of the canonical correct
completion ``" <answer><eos>"`` (one teacher-forced forward; a lower bound on the success
probability, which also counts e.g. ``" 040"``), and optionally the sampled accuracy.

Randomness: one SeedSequence per run; step ``s`` draws its questions from the stream with spawn
key ``(0, s)`` and the completions of its questions whose prompts are ``L`` tokens long (sampled
as one batch) from ``(1, s, L)``, so runs with different ``G`` at the same seed see the same
questions in the same order (the first ``B`` of each step's stream): common random numbers, which
the paired comparison across ``G`` uses.

Unequal group sizes (rollout allocation, issue #23): with ``TrainConfig.allocation`` (a
:class:`CategoryAllocation`) the step's ``B = N / num_generations`` questions are drawn as above, and
each gets its own group size ``G_i`` from its ``category`` (a difficulty column known before
sampling) by one of the rules of :mod:`ustat_grpo.scaling.allocation`, with ``sum_i G_i = N`` exactly, so
every rule spends the same rollouts on the same questions.  ``num_generations`` then only fixes
``B``.  The completions of the questions whose prompts are ``L`` tokens long and whose group size
is ``G_i`` are sampled as one batch from the stream ``(1, s, L, G_i)``; a step whose groups all have
one size samples exactly as without an allocation (stream ``(1, s, L)``), so the ``"uniform"``
rule reproduces the fixed-``G`` run bit for bit.  Advantages are computed within each group (its
own ``G_i``).  ``loss_type="sequence_sum"`` weights completion ``j`` of question ``i`` by
``1 / (B G_i)`` (``B`` the minibatch's questions): the first-pass gradient is the unbiased average
``(1/B) sum_i (1/G_i) sum_j A_ij W_ij`` of the per-question estimators, which reduces to
``1/(B G) sum A W`` for equal sizes.  ``loss_type="dapo"`` keeps TRL's semantics with unequal
groups: the token sum over the minibatch's completions divided by their total number of tokens,
so a question weighs in proportion to its ``G_i`` (times its completions' lengths), not ``1/B``.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..policies import arithmetic
from ..core._random import child_seed_sequence, default_rng, keyed_seed_sequence, seed_sequence, torch_generator
from ..core._serialize import jsonable
from .algorithm2 import ADVANTAGE_PRESETS, normalized_advantages
from ..policies.score import token_logprobs

__all__ = ["TrainConfig", "TrainResult", "CategoryAllocation", "ALLOCATION_RULES", "train_grpo",
           "canonical_probability", "sampled_accuracy", "fresh_problems", "save_checkpoint", "auc_curve",
           "run_cell", "run_cells", "cell_path"]

OPTIMIZERS = ("adam", "sgd")
#: Loss aggregations: ``"sequence_sum"`` = tokens summed per completion, divided by the number of
#: completions (the paper's score; the estimator ``1/(BG) sum A W``); ``"dapo"`` = TRL's default
#: ``loss_type="dapo"`` (verl ``token-mean``): tokens summed over the optimiser step's completions and
#: divided by the step's total number of completion tokens (grpo_frameworks.md §2.2, §4.5).
LOSS_TYPES = ("sequence_sum", "dapo")
#: Rules of :class:`CategoryAllocation`: ``"uniform"`` (``allocation.uniform_allocation``),
#: ``"ustat"`` (``allocation.optimal_allocation`` from per-category ``a2, a3``: the U-statistic
#: allocation), ``"knapsack"`` (``allocation.knapsack_rl_allocation``, Knapsack-RL's value from the
#: per-category pass rate) and ``"pass_rate"`` (``allocation.pass_rate_allocation``, the ``p(1-p)`` rule).
ALLOCATION_RULES = ("uniform", "ustat", "knapsack", "pass_rate")


def _float_table(name, values, k):
    if values is None:
        return None
    out = tuple(float(v) for v in values)
    if len(out) != k or not all(np.isfinite(out)):
        raise ValueError(f"{name} must hold one finite number per category ({k}), got {values!r}")
    return out


@dataclass(frozen=True, kw_only=True)
class CategoryAllocation:
    """Group sizes of a step's questions from per-category statistics known before sampling.

    Attributes
    ----------
    rule : str
        One of :data:`ALLOCATION_RULES`.
    categories : tuple of str
        The strata (default :data:`ustat_grpo.policies.arithmetic.CATEGORIES`); every question's
        ``category`` must be one of them.
    a2, a3 : tuple of float, one per category
        The pieces of a question's conditional error ``a2/G + a3/(G(G-1))``
        (``allocation.prompt_error_pieces``, averaged over the category's pilot questions); needed by
        ``"ustat"``.
    pass_rate : tuple of float in [0, 1], one per category
        Needed by ``"knapsack"`` and ``"pass_rate"``.
    min_size, max_size : int
        Bounds of a group size (``min_size >= 2``: the leave-one-out baseline needs two completions).
    """

    rule: str
    categories: tuple = arithmetic.CATEGORIES
    a2: tuple | None = None
    a3: tuple | None = None
    pass_rate: tuple | None = None
    min_size: int = 2
    max_size: int | None = None

    def __post_init__(self):
        if self.rule not in ALLOCATION_RULES:
            raise ValueError(f"rule must be one of {ALLOCATION_RULES}, got {self.rule!r}")
        cats = tuple(str(c) for c in self.categories)
        if not cats or len(set(cats)) != len(cats):
            raise ValueError(f"categories must be distinct and non-empty, got {self.categories!r}")
        k = len(cats)
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731
        set_("categories", cats)
        for name in ("a2", "a3", "pass_rate"):
            set_(name, _float_table(name, getattr(self, name), k))
        if self.rule == "ustat" and (self.a2 is None or self.a3 is None):
            raise ValueError("rule 'ustat' needs a2 and a3 (one per category)")
        for name in ("a2", "a3"):
            if getattr(self, name) is not None and min(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0 (clip a pilot's negative estimates), got {getattr(self, name)}")
        if self.rule in ("knapsack", "pass_rate"):
            if self.pass_rate is None:
                raise ValueError(f"rule {self.rule!r} needs pass_rate (one per category)")
            if not all(0.0 <= p <= 1.0 for p in self.pass_rate):
                raise ValueError(f"pass_rate must lie in [0, 1], got {self.pass_rate}")
        if int(self.min_size) != self.min_size or self.min_size < 2:
            raise ValueError(f"min_size must be an integer >= 2, got {self.min_size!r}")
        if self.max_size is not None and (int(self.max_size) != self.max_size or self.max_size < self.min_size):
            raise ValueError(f"max_size must be an integer >= min_size ({self.min_size}), got {self.max_size!r}")

    def sizes(self, categories, budget: int) -> np.ndarray:
        """Group size of each question (given by its category), summing to ``budget`` exactly."""
        from ..scaling import allocation as al

        try:
            idx = np.asarray([self.categories.index(str(c)) for c in categories], int)
        except ValueError:
            raise ValueError(f"categories: every question's category must be one of {self.categories}, "
                             f"got {sorted(set(map(str, categories)) - set(self.categories))}") from None
        B = len(idx)
        if B * self.min_size > budget or (self.max_size is not None and B * self.max_size < budget):
            raise ValueError(f"budget {budget} cannot be split over {B} questions with sizes in "
                             f"[{self.min_size}, {self.max_size}]")
        opts = dict(min_size=int(self.min_size), max_size=self.max_size)
        if self.rule == "uniform":
            out = al.uniform_allocation(B, budget)
        elif self.rule == "ustat":
            out = al.optimal_allocation(np.asarray(self.a2)[idx], np.asarray(self.a3)[idx], budget, **opts)
        elif self.rule == "knapsack":
            out = al.knapsack_rl_allocation(np.asarray(self.pass_rate)[idx], budget, **opts)
        else:
            out = al.pass_rate_allocation(np.asarray(self.pass_rate)[idx], budget, **opts)
        out = np.asarray(out, np.int64)
        if out.shape != (B,) or int(out.sum()) != budget or out.min() < 2:
            raise RuntimeError(f"allocation rule {self.rule!r} returned sizes {out.tolist()} (sum {out.sum()}) "
                               f"for {B} questions at budget {budget}")
        return out


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of :func:`train_grpo` (TRL's names in brackets where they exist)."""

    num_steps: int = 300                 # outer iterations (theta_old refreshes)
    budget: int = 64                     # N rollouts per step [generation_batch_size]
    num_generations: int = 4             # G [num_generations]; must divide the budget
    advantage: str = "rloo"              # a key of practical.ADVANTAGE_PRESETS ("rloo", "grpo", "paper", ...)
    optimizer: str = "adam"              # adam | sgd
    loss_type: str = "sequence_sum"      # sequence_sum | dapo [loss_type]: see LOSS_TYPES
    learning_rate: float = 3e-4
    num_iterations: int = 1              # passes over the batch per step [num_iterations]
    num_minibatches: int = 1             # optimiser steps per pass (prompts split evenly)
    clip_eps: float = 0.2                # PPO clip of the ratio [epsilon]; binds only when num_iterations > 1
    beta: float = 0.0                    # K3 KL weight to the initial policy [beta]
    temperature: float = 1.0             # sampling and log-prob temperature [temperature]
    max_grad_norm: float | None = None   # None: no clipping (the estimator the theory is about)
    eval_every: int = 10                 # evaluate p_canonical every this many steps (and at 0 and the end)
    num_eval: int = 256                  # evaluation questions: arithmetic.make_dataset(num_eval, seed=eval_seed)
    eval_seed: int = 1
    eval_samples: int = 0                # sampled completions per evaluation question (0: no sampled accuracy)
    allocation: CategoryAllocation | None = None  # per-question group sizes (module docstring); None: G each

    def __post_init__(self):
        if isinstance(self.allocation, dict):            # from asdict / JSON (run_cell, cached cells)
            object.__setattr__(self, "allocation", CategoryAllocation(**self.allocation))
        if self.allocation is not None and not isinstance(self.allocation, CategoryAllocation):
            raise TypeError(f"allocation must be a CategoryAllocation, a dict of its fields or None, "
                            f"got {type(self.allocation).__name__}")
        if self.num_generations < 2 or self.budget % self.num_generations:
            raise ValueError(f"num_generations must be >= 2 and divide the budget {self.budget}, "
                             f"got {self.num_generations}")
        if self.advantage not in ADVANTAGE_PRESETS:
            raise ValueError(f"advantage must be one of {ADVANTAGE_PRESETS}, got {self.advantage!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.num_prompts % self.num_minibatches:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must divide B = {self.num_prompts}")
        if self.num_steps < 1 or self.eval_every < 1 or self.num_iterations < 1:
            raise ValueError("num_steps, eval_every and num_iterations must be >= 1")
        if not (self.learning_rate > 0 and self.temperature > 0):
            raise ValueError("learning_rate and temperature must be > 0")

    @property
    def num_prompts(self) -> int:
        """B = N / G."""
        return self.budget // self.num_generations

    @property
    def eval_steps(self) -> np.ndarray:
        """Steps after which the policy is evaluated (0 = before training)."""
        return np.unique(np.r_[np.arange(0, self.num_steps, self.eval_every), self.num_steps])


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """Trajectory of :func:`train_grpo`.

    Per step ``(num_steps,)``: ``reward`` (mean training reward over the step's rollouts),
    ``frac_reward_zero_std`` (fraction of groups with equal rewards: TRL's name), ``grad_norm`` (of
    the first optimiser step of the step: the GRPO gradient estimate); ``group_sizes``
    ``(num_steps, B)``: each question's group size (:attr:`rollouts_per_step` their sums, always the
    budget).  Per evaluation ``(len(eval_steps),)``: ``p_canonical`` and
    ``accuracy`` (NaN without ``eval_samples``).
    """

    config: TrainConfig
    seed: str
    reward: np.ndarray
    frac_reward_zero_std: np.ndarray
    grad_norm: np.ndarray
    eval_steps: np.ndarray
    p_canonical: np.ndarray
    accuracy: np.ndarray
    seconds: float = 0.0
    checkpoints: dict = field(default_factory=dict)
    group_sizes: np.ndarray

    @property
    def rollouts_per_step(self) -> np.ndarray:
        """Rollouts spent at each step (``group_sizes`` summed over the questions)."""
        return self.group_sizes.sum(1)

    @property
    def rollouts(self) -> np.ndarray:
        """Rollouts spent at each evaluation: ``eval_steps * N``."""
        return self.eval_steps * self.config.budget

    def auc(self, metric: str = "p_canonical") -> float:
        """Area under the metric-vs-rollouts curve divided by the rollouts spent (trapezoid): the
        average metric over training, the summary that rewards learning *fast*."""
        return float(auc_curve(getattr(self, metric), self.rollouts))

    def summary(self) -> str:
        c = self.config
        sizes = (f"G={c.num_generations}" if c.allocation is None else
                 f"{c.allocation.rule} allocation, G {self.group_sizes.min()}..{self.group_sizes.max()}")
        return (f"GRPO ({c.advantage}, {c.loss_type} loss, {sizes}, B={c.num_prompts}, "
                f"{c.optimizer} lr={c.learning_rate:g}): "
                f"{c.num_steps} steps, {c.num_steps * c.budget} rollouts; p_canonical {self.p_canonical[0]:.4f} -> "
                f"{self.p_canonical[-1]:.4f} (AUC {self.auc():.4f}); mean frac_reward_zero_std "
                f"{self.frac_reward_zero_std.mean():.3f}; {self.seconds:.1f} s")

    __str__ = summary

    def to_dict(self) -> dict:
        """JSON-safe (:func:`~ustat_grpo.core._serialize.jsonable`: a NaN, e.g. ``accuracy`` when not
        measured, is the string ``"nan"``; ``np.asarray(values, float)`` and assignment into a
        float array read it back)."""
        return jsonable({"config": asdict(self.config), "seed": self.seed, "reward": self.reward,
                         "frac_reward_zero_std": self.frac_reward_zero_std, "grad_norm": self.grad_norm,
                         "eval_steps": self.eval_steps, "p_canonical": self.p_canonical,
                         "accuracy": self.accuracy, "auc": self.auc(), "checkpoints": dict(self.checkpoints),
                         "group_sizes": self.group_sizes, "rollouts_per_step": self.rollouts_per_step})


# ---------------------------------------------------------------------------------------- questions

def fresh_problems(num: int, rng) -> list[arithmetic.Problem]:
    """``num`` questions from the task generator: a uniform category, then a problem of it."""
    gen = default_rng(rng)
    cats = arithmetic.CATEGORIES
    return [arithmetic.make_problem(cats[int(gen.integers(len(cats)))], gen) for _ in range(num)]


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(r.shape[-1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=value) for r in rows])


# ---------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def canonical_probability(policy, problems) -> np.ndarray:
    """Exact ``pi(" <answer><eos>" | prompt)`` per question (one batched teacher-forced forward)."""
    tok = policy.tokenizer
    eos = tok.eos_token_id
    seqs, masks = [], []
    for p in problems:
        prompt = policy.encode(p)
        comp = tok(f" {p.answer}", add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(torch.tensor([prompt + comp]))
        masks.append(torch.tensor([[0.0] * len(prompt) + [1.0] * len(comp)]))
    lp = token_logprobs(policy.model, _pad(seqs, eos), _pad(masks, 0), temperature=1.0).sum(-1)
    return lp.double().exp().cpu().numpy()


def sampled_accuracy(policy, problems, num_samples: int, rng) -> np.ndarray:
    """Fraction of ``num_samples`` sampled completions (temperature 1) the verifier accepts, per question."""
    return _rollouts(policy, problems, num_samples, seed_sequence(rng), 1.0)[2].mean(1)


# ---------------------------------------------------------------------------------------- training

def _rollouts(policy, problems, G, ss_step, temperature):
    """Completions of every question, right-padded into one batch: (sequences, mask, rewards).

    ``G`` is one group size (rewards come back as an array ``(B, G)``) or one size per question
    (rewards: a list of ``B`` arrays ``(G_i,)``).  Questions whose prompts have the same number of
    tokens (and, for per-question sizes, the same size) are sampled in one batch (no padding inside
    the sampler); with one size the batch of prompt length ``L`` draws from the stream ``(L,)`` of
    ``ss_step``, with per-question sizes from ``(L, G_i)``.  Rows come back in question order,
    ``G_i`` per question.
    """
    from ..policies.lm import sample_completions

    ragged = not np.isscalar(G)
    sizes = [int(g) for g in G] if ragged else [int(G)] * len(problems)
    if len(sizes) != len(problems):
        raise ValueError(f"G: {len(sizes)} group sizes for {len(problems)} questions")
    encoded = [policy.encode(p) for p in problems]
    batches: dict[tuple, list[int]] = {}
    for b, ids in enumerate(encoded):
        batches.setdefault((len(ids), sizes[b]) if ragged else (len(ids),), []).append(b)
    seqs, masks, texts = [None] * len(problems), [None] * len(problems), [None] * len(problems)
    for key, members in sorted(batches.items()):
        g = sizes[members[0]]
        comp = sample_completions(policy, [encoded[b] for b in members], g, temperature=temperature,
                                  rng=torch_generator(child_seed_sequence(ss_step, *key), policy.device))
        for j, b in enumerate(members):
            rows = slice(j * g, (j + 1) * g)
            seqs[b], masks[b], texts[b] = comp.sequences[rows], comp.completion_mask[rows], comp.texts[rows]
    rewards = [np.asarray([arithmetic.verify(t, p.answer) for t in texts[b]], float) for b, p in enumerate(problems)]
    return (_pad(seqs, policy.tokenizer.pad_token_id), _pad(masks, 0),
            rewards if ragged else np.asarray(rewards, float))


def _optimizer(params, cfg: TrainConfig):
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate)
    return torch.optim.SGD(params, lr=cfg.learning_rate)


def save_checkpoint(policy, path) -> str:
    """Save the policy's model and tokenizer as a local Hugging Face directory.

    ``fit_scaling --model DIR --template compact_zero_shot`` measures a saved built-in checkpoint
    with the built-in models' prompt format and completion budget.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(path)
    policy.tokenizer.save_pretrained(path)
    return str(path)


def train_grpo(policy, config: TrainConfig | None = None, *, rng=0, checkpoint_steps=(), checkpoint_dir=None,
               progress: bool = False) -> TrainResult:
    """Train a copy of ``policy`` (a :class:`ustat_grpo.policies.lm.LanguageModelPolicy`) with GRPO / Algorithm 2.

    Parameters
    ----------
    policy : ustat_grpo.policies.lm.LanguageModelPolicy
        Not modified: a deep copy of its model is trained, kept in eval mode (dropout off, as TRL's
        ``disable_dropout``; the built-in models have none).
    config : TrainConfig
    rng : int or SeedSequence
        The run's seed (see the module docstring for the streams).
    checkpoint_steps : iterable of int
        After these steps (0 = the initial policy) the policy is saved under
        ``checkpoint_dir/step{s:05d}`` by :func:`save_checkpoint`.
    progress : bool
        A tqdm bar over steps on stderr.

    Returns
    -------
    TrainResult
    """
    import sys

    from tqdm import tqdm

    cfg = TrainConfig() if config is None else config
    ss = seed_sequence(rng)
    t0 = time.perf_counter()
    pol = copy.copy(policy)
    pol.model = copy.deepcopy(policy.model)
    model = pol.model
    ref = copy.deepcopy(policy.model).eval() if cfg.beta else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(params, cfg)
    eval_set = arithmetic.make_dataset(cfg.num_eval, seed=cfg.eval_seed)
    eval_at = set(cfg.eval_steps.tolist())
    ckpt_at = {int(s) for s in checkpoint_steps}
    if ckpt_at and checkpoint_dir is None:
        raise ValueError("checkpoint_steps needs checkpoint_dir")
    B, G, n = cfg.num_prompts, cfg.num_generations, cfg.num_steps
    reward, zero, gnorm = np.zeros(n), np.zeros(n), np.zeros(n)
    sizes_log = np.full((n, B), G, np.int64)
    p_can, acc, ckpts = [], [], {}

    def evaluate(step):
        if step in eval_at:
            p_can.append(canonical_probability(pol, eval_set).mean())
            acc.append(sampled_accuracy(pol, eval_set, cfg.eval_samples, child_seed_sequence(ss, 2, step)).mean()
                       if cfg.eval_samples else np.nan)
        if step in ckpt_at:
            ckpts[step] = save_checkpoint(pol, Path(checkpoint_dir) / f"step{step:05d}")

    evaluate(0)
    desc = f"GRPO G={G}" if cfg.allocation is None else f"GRPO {cfg.allocation.rule} B={B}"
    for s in tqdm(range(n), desc=desc, unit="step", disable=not progress, file=sys.stderr):
        problems = fresh_problems(B, child_seed_sequence(ss, 0, s))
        sizes = (np.full(B, G, np.int64) if cfg.allocation is None
                 else cfg.allocation.sizes([p.category for p in problems], cfg.budget))
        sizes_log[s] = sizes
        equal = bool(np.all(sizes == sizes[0]))
        first_row = np.r_[0, np.cumsum(sizes)]
        if equal:                                        # one size: the fixed-G code path, bit for bit
            g0 = int(sizes[0])
            seqs, mask, Z = _rollouts(pol, problems, g0, child_seed_sequence(ss, 1, s), cfg.temperature)
            A, zstd = normalized_advantages(Z, preset=cfg.advantage)
            reward[s], zero[s] = Z.mean(), zstd.mean()
            adv = torch.as_tensor(A.reshape(-1), dtype=torch.float32)
        else:                                            # per-question sizes: advantages group by group
            seqs, mask, Zs = _rollouts(pol, problems, sizes, child_seed_sequence(ss, 1, s), cfg.temperature)
            parts = [normalized_advantages(z[None], preset=cfg.advantage) for z in Zs]
            reward[s] = np.concatenate(Zs).mean()
            zero[s] = np.mean([bool(zs[0]) for _, zs in parts])
            adv = torch.as_tensor(np.concatenate([a[0] for a, _ in parts]), dtype=torch.float32)
        # sequence_sum with unequal groups: completion j of question i weighs 1 / (B_minibatch G_i)
        inv_size = torch.as_tensor(np.repeat(1.0 / sizes, sizes), dtype=torch.float32)
        with torch.no_grad():
            old = token_logprobs(model, seqs, mask, temperature=cfg.temperature)
            lref = token_logprobs(ref, seqs, mask, temperature=cfg.temperature) if ref is not None else None
        first = True
        for _ in range(cfg.num_iterations):
            for mb in np.split(np.arange(B), cfg.num_minibatches):
                rows = torch.as_tensor(np.concatenate([np.arange(first_row[i], first_row[i + 1]) for i in mb]))
                lp = token_logprobs(model, seqs[rows], mask[rows], temperature=cfg.temperature)
                m = mask[rows, 1:].to(lp.dtype)
                ratio = torch.exp(lp - old[rows])
                a = adv[rows, None]
                surr = torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
                if ref is not None:
                    r = torch.exp(lref[rows] - lp)
                    surr = surr - cfg.beta * (r - torch.log(r) - 1)
                # (rows, T-1) token terms -> scalar: per completion (paper) or per token of the step (dapo)
                if cfg.loss_type == "dapo":
                    loss = -(surr * m).sum() / m.sum().clamp(min=1.0)
                elif equal:
                    loss = -(surr * m).sum() / len(rows)
                else:
                    loss = -((surr * m).sum(-1) * inv_size[rows]).sum() / len(mb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
                if first:
                    gnorm[s], first = float(norm), False
                opt.step()
        evaluate(s + 1)
    seed = str(ss.entropy) + (f" spawn_key={tuple(ss.spawn_key)}" if ss.spawn_key else "")
    return TrainResult(config=cfg, seed=seed, reward=reward, frac_reward_zero_std=zero, grad_norm=gnorm,
                       eval_steps=cfg.eval_steps, p_canonical=np.asarray(p_can), accuracy=np.asarray(acc),
                       seconds=time.perf_counter() - t0, checkpoints=ckpts, group_sizes=sizes_log)


def auc_curve(p, rollouts):
    """Trapezoid area under ``p`` vs ``rollouts`` over the last axis, divided by the rollouts
    spent (``rollouts[-1]``): the average of the metric over training (:meth:`TrainResult.auc`)."""
    x = np.asarray(rollouts, float)
    return ((p[..., 1:] + p[..., :-1]) * np.diff(x)).sum(-1) / 2 / x[-1]


# ---------------------------------------------------------------------------------------- grid cells

_POLICIES: dict = {}


def run_cell(task: dict) -> dict:
    """One training run of a grid, for a process pool (module-level, picklable in and out).

    ``task``: ``model`` (None: built-in), ``variant``, ``template``, ``config`` (TrainConfig fields),
    ``seed`` (entropy) and ``seed_key`` (spawn key tuple), ``threads`` (torch threads in this worker).
    The policy is loaded once per worker process.
    """
    from ..policies.lm import load_policy

    torch.set_num_threads(int(task.get("threads", 1)))
    key = (task.get("model"), task.get("variant", "weak"), task.get("template"))
    if key not in _POLICIES:
        _POLICIES[key] = load_policy(key[0], variant=key[1], template=key[2], device=task.get("device", "cpu"))
    ss = keyed_seed_sequence(task["seed"], *task.get("seed_key", ()))
    res = train_grpo(_POLICIES[key], TrainConfig(**task["config"]), rng=ss,
                     checkpoint_steps=task.get("checkpoint_steps", ()), checkpoint_dir=task.get("checkpoint_dir"))
    out = res.to_dict()
    out["seconds"] = float(res.seconds)
    return out


def cell_path(cache_dir, task: dict) -> str:
    """Cache file of a grid cell: named by a hash of everything that determines its result."""
    from ..core.provenance import sha256_json

    what = {k: task[k] for k in ("variant", "config", "seed", "seed_key")}
    return os.path.join(cache_dir, sha256_json(what)[:20] + ".json")


def run_cells(tasks, cache_dir, *, scheduler="processes", workers=None, progress=True, desc="cells"):
    """Yield ``(task, out)`` for every grid cell, resumable: cached cells are read from
    ``cache_dir`` (first), the others run by :func:`run_cell` on ``scheduler`` with ``workers``
    (default: the CPU count) and each is written atomically as it finishes (a killed grid resumes
    where it stopped).  ``out`` is :func:`run_cell`'s result; a tqdm bar on stderr counts cells."""
    import json

    from tqdm import tqdm

    from ._scheduler import executor_map, scheduler_iv

    os.makedirs(cache_dir, exist_ok=True)
    todo = []
    for t in tasks:
        path = cell_path(cache_dir, t)
        if os.path.exists(path):
            with open(path) as f:
                yield t, json.load(f)
        else:
            todo.append(t)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=desc, unit="run",
               disable=not progress, file=sys.stderr)
    for i, out in executor_map(run_cell, todo, scheduler_iv(scheduler), workers or os.cpu_count() or 1):
        path = cell_path(cache_dir, todo[i])
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(path + ".tmp", path)
        bar.update()
        yield todo[i], out
    bar.close()
