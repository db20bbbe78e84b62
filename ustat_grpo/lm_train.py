"""GRPO training of a transformer policy on the arithmetic task: Algorithm 2 on a language model.

One iteration (arXiv 2603.01162, Algorithm 2; spec 2.11), at a fixed rollout budget ``N = B * G``:
``theta_old <- theta``; draw ``B`` *fresh* questions from the task generator (an unlimited
training distribution, so progress is learning, not memorising); sample ``G`` completions of each
from ``pi_theta_old`` (temperature ``T``, no truncation); reward them with the binary verifier;
turn the rewards into advantages per group (:func:`ustat_grpo.practical.normalized_advantages`:
``"rloo"`` is the paper's leave-one-out GRPO, the U-statistic; ``"grpo"`` TRL's std-normalised
default; ``"paper"`` eqs. 15-16; ...); then ``num_iterations`` passes over ``num_minibatches``
minibatches of the prompts, one optimiser step each, on the surrogate

    L(theta) = 1/(B G) sum_{b,g} sum_t [ min(rho_t A_bg, clip(rho_t, 1 -+ eps) A_bg) - beta k3_t ]

with the token-level ratio ``rho_t = pi_theta(y_t | .) / pi_theta_old(y_t | .)`` and the K3 estimator
``k3_t = r - log r - 1``, ``r = pi_ref / pi_theta`` (TRL / DeepSeekMath; the ``k3_autograd``
reading of the paper's eq. 14, see :mod:`ustat_grpo.practical`).  Tokens are summed, not averaged
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
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import arithmetic
from ._random import seed_sequence, torch_generator
from .practical import ADVANTAGE_PRESETS, normalized_advantages
from .score import token_logprobs

__all__ = ["TrainConfig", "TrainResult", "train_grpo", "canonical_probability", "sampled_accuracy",
           "fresh_problems", "save_checkpoint"]

OPTIMIZERS = ("adam", "sgd")
#: Loss aggregations: ``"sequence_sum"`` = tokens summed per completion, divided by the number of
#: completions (the paper's score; the estimator ``1/(BG) sum A W``); ``"dapo"`` = TRL's default
#: ``loss_type="dapo"`` (verl ``token-mean``): tokens summed over the optimiser step's completions and
#: divided by the step's total number of completion tokens (grpo_frameworks.md §2.2, §4.5).
LOSS_TYPES = ("sequence_sum", "dapo")


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

    def __post_init__(self):
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

    Per step ``(num_steps,)``: ``reward`` (mean training reward), ``frac_reward_zero_std`` (fraction
    of groups with equal rewards: TRL's name), ``grad_norm`` (of the first optimiser step of the
    step: the GRPO gradient estimate).  Per evaluation ``(len(eval_steps),)``: ``p_canonical`` and
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

    @property
    def rollouts(self) -> np.ndarray:
        """Rollouts spent at each evaluation: ``eval_steps * N``."""
        return self.eval_steps * self.config.budget

    def auc(self, metric: str = "p_canonical") -> float:
        """Area under the metric-vs-rollouts curve divided by the rollouts spent (trapezoid): the
        average metric over training, the summary that rewards learning *fast*."""
        y = getattr(self, metric)
        x = self.rollouts
        return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / x[-1])

    def summary(self) -> str:
        c = self.config
        return (f"GRPO ({c.advantage}, {c.loss_type} loss, G={c.num_generations}, B={c.num_prompts}, "
                f"{c.optimizer} lr={c.learning_rate:g}): "
                f"{c.num_steps} steps, {c.num_steps * c.budget} rollouts; p_canonical {self.p_canonical[0]:.4f} -> "
                f"{self.p_canonical[-1]:.4f} (AUC {self.auc():.4f}); mean frac_reward_zero_std "
                f"{self.frac_reward_zero_std.mean():.3f}; {self.seconds:.1f} s")

    __str__ = summary

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "seed": self.seed, "reward": self.reward.tolist(),
                "frac_reward_zero_std": self.frac_reward_zero_std.tolist(), "grad_norm": self.grad_norm.tolist(),
                "eval_steps": self.eval_steps.tolist(), "p_canonical": self.p_canonical.tolist(),
                "accuracy": self.accuracy.tolist(), "auc": self.auc(), "checkpoints": dict(self.checkpoints)}


# ---------------------------------------------------------------------------------------- questions

def _stream(ss: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """The child of ``ss`` with spawn key ``ss.spawn_key + key`` (no spawn counter involved)."""
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, *key))


def fresh_problems(num: int, rng) -> list[arithmetic.Problem]:
    """``num`` questions from the task generator: a uniform category, then a problem of it."""
    gen = np.random.default_rng(rng)
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
    """Completions of every question, right-padded into one batch: (sequences, mask, rewards (B, G)).

    Questions whose prompts have the same number of tokens are sampled in one batch (no padding
    inside the sampler); the batch of prompt length ``L`` draws from the stream ``(L,)`` of ``ss_step``.
    Rows come back in question order, ``G`` per question.
    """
    from .lm import sample_completions

    encoded = [policy.encode(p) for p in problems]
    by_len: dict[int, list[int]] = {}
    for b, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(b)
    seqs, masks, texts = [None] * len(problems), [None] * len(problems), [None] * len(problems)
    for length, members in sorted(by_len.items()):
        comp = sample_completions(policy, [encoded[b] for b in members], G, temperature=temperature,
                                  rng=torch_generator(_stream(ss_step, length), policy.device))
        for j, b in enumerate(members):
            rows = slice(j * G, (j + 1) * G)
            seqs[b], masks[b], texts[b] = comp.sequences[rows], comp.completion_mask[rows], comp.texts[rows]
    rewards = [[arithmetic.verify(t, p.answer) for t in texts[b]] for b, p in enumerate(problems)]
    return _pad(seqs, policy.tokenizer.pad_token_id), _pad(masks, 0), np.asarray(rewards, float)


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
    """Train a copy of ``policy`` (a :class:`ustat_grpo.lm.Policy`) with GRPO / Algorithm 2.

    Parameters
    ----------
    policy : ustat_grpo.lm.Policy
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
    p_can, acc, ckpts = [], [], {}

    def evaluate(step):
        if step in eval_at:
            p_can.append(canonical_probability(pol, eval_set).mean())
            acc.append(sampled_accuracy(pol, eval_set, cfg.eval_samples, _stream(ss, 2, step)).mean()
                       if cfg.eval_samples else np.nan)
        if step in ckpt_at:
            ckpts[step] = save_checkpoint(pol, Path(checkpoint_dir) / f"step{step:05d}")

    evaluate(0)
    for s in tqdm(range(n), desc=f"GRPO G={G}", unit="step", disable=not progress, file=sys.stderr):
        problems = fresh_problems(B, _stream(ss, 0, s))
        seqs, mask, Z = _rollouts(pol, problems, G, _stream(ss, 1, s), cfg.temperature)
        A, zstd = normalized_advantages(Z, preset=cfg.advantage)
        reward[s], zero[s] = Z.mean(), zstd.mean()
        adv = torch.as_tensor(A.reshape(-1), dtype=torch.float32)
        with torch.no_grad():
            old = token_logprobs(model, seqs, mask, temperature=cfg.temperature)
            lref = token_logprobs(ref, seqs, mask, temperature=cfg.temperature) if ref is not None else None
        first = True
        for _ in range(cfg.num_iterations):
            for mb in np.split(np.arange(B), cfg.num_minibatches):
                rows = torch.as_tensor((mb[:, None] * G + np.arange(G)).reshape(-1))
                lp = token_logprobs(model, seqs[rows], mask[rows], temperature=cfg.temperature)
                m = mask[rows, 1:].to(lp.dtype)
                ratio = torch.exp(lp - old[rows])
                a = adv[rows, None]
                surr = torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
                if ref is not None:
                    r = torch.exp(lref[rows] - lp)
                    surr = surr - cfg.beta * (r - torch.log(r) - 1)
                # (rows, T-1) token terms -> scalar: per completion (paper) or per token of the step (dapo)
                denom = m.sum().clamp(min=1.0) if cfg.loss_type == "dapo" else len(rows)
                loss = -(surr * m).sum() / denom
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
                       seconds=time.perf_counter() - t0, checkpoints=ckpts)


# ---------------------------------------------------------------------------------------- grid cells

_POLICIES: dict = {}


def run_cell(task: dict) -> dict:
    """One training run of a grid, for a process pool (module-level, picklable in and out).

    ``task``: ``model`` (None: built-in), ``variant``, ``template``, ``config`` (TrainConfig fields),
    ``seed`` (entropy) and ``seed_key`` (spawn key tuple), ``threads`` (torch threads in this worker).
    The policy is loaded once per worker process.
    """
    from .lm import load_policy

    torch.set_num_threads(int(task.get("threads", 1)))
    key = (task.get("model"), task.get("variant", "weak"), task.get("template"))
    if key not in _POLICIES:
        _POLICIES[key] = load_policy(key[0], variant=key[1], template=key[2], device=task.get("device", "cpu"))
    ss = np.random.SeedSequence(int(task["seed"]), spawn_key=tuple(task.get("seed_key", ())))
    res = train_grpo(_POLICIES[key], TrainConfig(**task["config"]), rng=ss,
                     checkpoint_steps=task.get("checkpoint_steps", ()), checkpoint_dir=task.get("checkpoint_dir"))
    out = res.to_dict()
    out["seconds"] = res.seconds
    return out
