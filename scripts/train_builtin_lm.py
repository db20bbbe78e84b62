"""Train the built-in arithmetic policies shipped in ``ustat_grpo/data/builtin_lm``.

A 2-layer GPT-2 (transformers ``GPT2LMHeadModel``, ~0.1M parameters, tied embeddings) with the
character-level tokenizer of ``ustat_grpo.policies.lm.build_tokenizer`` is trained by teacher forcing on
freshly drawn arithmetic problems (the five categories of ``ustat_grpo.policies.arithmetic``), with the
loss on the completion ``" <answer><eos>"`` only.  Prompts are the compact zero-shot and few-shot
formats (``ustat_grpo.policies.lm.format_compact``), mixed with probability ``few_shot_prob``.  Two
checkpoints are written: ``model-weak`` after ``weak_steps`` steps and ``model-strong`` after
``steps``; both are deliberately under-trained so that success probabilities vary within a group.

Deterministic: one CPU thread, ``torch.use_deterministic_algorithms``, seeded data; the same
seed gives the same bytes.  Command::

    python scripts/train_builtin_lm.py            # ~3 CPU minutes, rewrites ustat_grpo/data/builtin_lm
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ustat_grpo import __version__  # noqa: E402
from ustat_grpo.policies import arithmetic, lm  # noqa: E402


@dataclass(frozen=True)
class Config:
    seed: int = 1234  # seed of the data stream and of the initialisation
    steps: int = 2400  # optimiser steps of the strong checkpoint
    weak_steps: int = 700  # optimiser steps of the weak checkpoint
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak AdamW learning rate (linear warm-up, cosine decay to 10%)
    warmup: int = 100  # warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay
    n_layer: int = 2  # transformer blocks
    n_embd: int = 64  # width
    n_head: int = 4  # attention heads
    n_positions: int = 128  # context length (the compact few-shot prompt is ~100 characters)
    few_shot_prob: float = 0.5  # probability of the compact few-shot prompt in training
    eval_questions: int = 100  # questions of make_dataset(500, seed=0) used for the accuracy log
    eval_samples: int = 16  # sampled completions per question for the accuracy log
    out: str = str(REPO / "ustat_grpo" / "data" / "builtin_lm")  # output directory


def parse(argv) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(Config):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return Config(**vars(p.parse_args(argv)))


def make_batch(tok, rng: np.random.Generator, cfg: Config):
    """A training batch: ids (B, T) right-padded, loss mask (B, T) on completion tokens."""
    seqs, masks = [], []
    for _ in range(cfg.batch_size):
        prob = arithmetic.make_problem(arithmetic.CATEGORIES[rng.integers(5)], rng)
        template = "compact_few_shot" if rng.random() < cfg.few_shot_prob else "compact_zero_shot"
        prompt = [tok.bos_token_id] + tok(lm.format_compact(prob, template),
                                          add_special_tokens=False)["input_ids"]
        comp = tok(f" {prob.answer}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(prompt + comp)
        masks.append([0] * len(prompt) + [1] * len(comp))
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), tok.pad_token_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(seqs), T)  # (B, T)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.float32)
    return ids, mask


def evaluate(model, tok, cfg: Config, template: str) -> dict:
    """Sampled accuracy (temperature 1) and the spread of per-question success rates."""
    policy = lm.LanguageModelPolicy(model=model.eval(), tokenizer=tok, template=template, name="train",
                       max_new_tokens=8)
    probs = arithmetic.make_dataset(500, seed=0)[:cfg.eval_questions]
    seeds = np.random.SeedSequence(cfg.seed + 1).spawn(len(probs))
    v = np.array([lm.sample_prompt(policy, p, cfg.eval_samples, rng=s)[1].mean()
                  for p, s in zip(probs, seeds)])
    model.train()
    return {"accuracy": float(v.mean()), "frac_v_in_0.1_0.9": float(((v > 0.1) & (v < 0.9)).mean()),
            "frac_v_0": float((v == 0).mean()), "frac_v_1": float((v == 1).mean())}


def save_checkpoint(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
             if k != "lm_head.weight" and not k.endswith(".attn.bias")}
    save_file(dict(sorted(state.items())), str(path))


def main(argv=None) -> int:
    cfg = parse(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = lm.build_tokenizer()
    mcfg = GPT2Config(vocab_size=len(tok), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    mcfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(mcfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    log, t0 = {}, time.time()
    for step in range(1, cfg.steps + 1):
        ids, mask = make_batch(tok, rng, cfg)  # (B, T), (B, T)
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                reduction="none")  # (B, T-1)
        loss = (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", file=sys.stderr)
        if step in (cfg.weak_steps, cfg.steps):
            name = "weak" if step == cfg.weak_steps else "strong"
            save_checkpoint(model, out / f"model-{name}.safetensors")
            log[name] = {"step": step, "loss": float(loss.item()),
                         "zero_shot": evaluate(model, tok, cfg, "compact_zero_shot"),
                         "few_shot": evaluate(model, tok, cfg, "compact_few_shot")}
            print(name, json.dumps(log[name]), file=sys.stderr)
    mcfg.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    # BOS post-processor and chat template included; class name and template readable by 4.x and 5.x
    lm.save_builtin_tokenizer(tok, out)
    recipe = {"command": "python scripts/train_builtin_lm.py " + " ".join(argv or sys.argv[1:]),
              "config": dataclasses.asdict(cfg) | {"out": "ustat_grpo/data/builtin_lm"},
              "seed": str(cfg.seed), "version": __version__, "torch": torch.__version__,
              "num_parameters": sum(p.numel() for p in model.parameters()),
              "checkpoints": log, "train_seconds": round(time.time() - t0, 1)}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in
                   ("SHA256SUMS", "recipe.json"))
    sums = [f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}" for n in files]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(json.dumps(log, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
