"""The measurement loop of a user's task: sample as configured, score as trained, reward as their
trainer does, then constants, per-estimator MSE(G), the self-check and the estimator card.

Public entry point: :func:`ustat_grpo.measure.measure_task` (this module is its body).
"""
from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from importlib import metadata

import numpy as np

from . import rewards as rw
from . import task as tk
from ._cli import InputError
from ._random import seed_sequence

__all__ = ["measure", "resolve_params", "apply_peft", "library_versions"]

_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "datasets", "pyarrow", "math-verify", "trl",
              "verl", "openrlhf", "vllm")


def library_versions() -> dict:
    """Installed versions of the libraries whose behaviour the measurement copies or uses."""
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def resolve_params(model, params) -> list[str]:
    """Names for ``params``: "trainable" (requires_grad), "all", "regex:PATTERN", substring, names."""
    from .score import parameter_names

    named = list(model.named_parameters())
    if params in (None, "all"):
        return [n for n, _ in named]
    if params == "trainable":
        chosen = [n for n, p in named if p.requires_grad]
    elif isinstance(params, str) and params.startswith("regex:"):
        pat = re.compile(params[len("regex:"):])
        chosen = [n for n, _ in named if pat.search(n)]
    else:
        try:
            return parameter_names(model, params)
        except ValueError as exc:
            raise InputError(f"--params {params!r}: {exc}") from None
    if not chosen:
        raise InputError(f"--params {params!r}: no parameter matches")
    return chosen


def apply_peft(model, peft_config):
    """``peft.get_peft_model(model, peft_config)`` (a dict is read as ``LoraConfig`` kwargs)."""
    try:
        import peft
    except ImportError:
        raise InputError("a LoRA / PEFT adapter needs 'peft' (pip install 'ustat_grpo[task]')") from None
    if isinstance(peft_config, dict):
        cfg = dict(peft_config)
        cfg.setdefault("task_type", "CAUSAL_LM")
        try:
            peft_config = peft.LoraConfig(**cfg)
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad LoRA config {cfg}: {exc}") from None
    with warnings.catch_warnings():  # peft 0.21 reads a property that transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, peft_config).eval()


def _policy(model, processing_class, sampling, device, peft_config):
    from . import lm

    if isinstance(model, lm.Policy):
        pol = model
    elif model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        pol = lm.load_policy(model, device=device, max_new_tokens=sampling.max_completion_length)
    else:  # a transformers model object, as GRPOTrainer takes it
        if processing_class is None:
            raise InputError("a model object needs processing_class (its tokenizer)")
        dev = next(model.parameters()).device
        pol = lm.Policy(model=model.eval(), tokenizer=processing_class, template="zero_shot",
                        name=type(model).__name__, device=dev)
    tok = processing_class if processing_class is not None else pol.tokenizer
    net = pol.model if peft_config is None else apply_peft(pol.model, peft_config)
    return dataclasses.replace(pol, model=net, tokenizer=tok, max_new_tokens=sampling.max_completion_length)


def _completion_values(tok, comp, fmt):
    texts = list(comp.texts)
    special = tok.batch_decode(comp.completion_ids, skip_special_tokens=False)
    completions = [[{"role": "assistant", "content": t}] for t in texts] if fmt == "conversational" else texts
    return texts, special, completions


def _reward_setup(reward_funcs, reward_weights, args):
    """Reward functions wrapped once, and their weights (``args.reward_weights`` when not given)."""
    if reward_weights is None:
        reward_weights = (args.get("reward_weights") if isinstance(args, dict)
                          else getattr(args, "reward_weights", None))
    funcs = [rw.RewardFunction.wrap(f) for f in (reward_funcs if isinstance(reward_funcs, (list, tuple))
                                                 else [reward_funcs])]
    if not funcs:
        raise InputError("at least one reward function is needed (--reward)")
    return funcs, reward_weights


def _sample_rows(pol, rows, streams, M, *, data, funcs, sampling, names, sketch, reward_weights, on_reward_error,
                 progress):
    """Sample, reward and score ``M`` completions of every row -> ``rewards (P, M)``, ``scores (P, M, k)``,
    the per-prompt reward tables and the sampler diagnostics."""
    from tqdm import tqdm

    from . import lm
    from .score import per_sample_scores

    tok = pol.tokenizer
    all_r, all_s, tables, diag = [], [], [], dict(trunc=[], mass=[], logr=[], length=[], empty=[])
    for row, stream in tqdm(list(zip(rows, streams)), desc=f"{pol.name}: sample + score", unit="prompt",
                            disable=not progress, file=sys.stderr):
        ids = tk.encode_prompt(tok, row["prompt"], chat_template_kwargs=sampling.chat_template_kwargs)
        comp = lm.sample_completions(pol, ids, M, rng=stream, temperature=sampling.temperature,
                                     top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p,
                                     repetition_penalty=sampling.repetition_penalty, warn=False)
        texts, special, completions = _completion_values(tok, comp, data.prompt_format)
        ptext = tk.prompt_text(tok, row["prompt"], chat_template_kwargs=sampling.chat_template_kwargs)
        cols = {k: v for k, v in row.items() if k != "prompt"}
        table = rw.compute_rewards(funcs, prompts=[row["prompt"]] * M, completions=completions,
                                   completion_ids=comp.completion_ids, columns=[cols] * M, texts=texts,
                                   prompt_texts=[ptext] * M, texts_special=special, weights=reward_weights,
                                   on_error=on_reward_error)
        s = per_sample_scores(pol.model, comp.sequences, comp.completion_mask, params=names,
                              projection=sketch, temperature=sampling.temperature)
        all_r.append(table.total)
        all_s.append(s.double().cpu().numpy())
        tables.append(table)
        diag["trunc"].append(comp.truncated.numpy())
        diag["mass"].append(comp.truncated_mass.numpy())
        diag["logr"].append(comp.log_ratio.numpy())
        lengths = comp.completion_mask.sum(1).numpy()
        diag["length"].append(lengths)
        diag["empty"].append(np.array([t == "" for t in texts]))
    return np.stack(all_r), np.stack(all_s), tables, diag  # (P, M), (P, M, k)


def measure(model, reward_funcs, *, train_dataset, args, processing_class, peft_config, reward_weights,
            params, num_prompts, samples_per_prompt, num_generations, budget, seed, device,
            projection_dim, level, on_reward_error, prompt_column, split, progress, log):
    from .constants import estimate_constants
    from .measure import Measurement
    from .pool import pool_mse, score_mean_check
    from .score import Sketch

    data = tk.load_task(train_dataset, prompt_column=prompt_column, split=split)
    P = min(len(data), 64) if num_prompts is None else int(num_prompts)
    if P > len(data):
        raise InputError(f"num_prompts = {P} but the dataset has {len(data)} rows")
    if P < 3 or samples_per_prompt < 4:
        raise InputError("need at least 3 prompts and 4 samples per prompt")
    rows = data.rows[:P]
    sampling = tk.SamplingConfig.from_args(args)
    funcs, reward_weights = _reward_setup(reward_funcs, reward_weights, args)
    pol = _policy(model, processing_class, sampling, device, peft_config)
    tok = pol.tokenizer
    names = resolve_params(pol.model, params)
    d = sum(pol.model.get_parameter(n).numel() for n in names)
    sketch = None if projection_dim is None or d <= projection_dim else Sketch(d, int(projection_dim), seed=seed)
    ss = seed_sequence(seed)
    streams = ss.spawn(P)
    M = int(samples_per_prompt)
    r, s, tables, diag = _sample_rows(pol, rows, streams, M, data=data, funcs=funcs, sampling=sampling, names=names,
                                      sketch=sketch, reward_weights=reward_weights,
                                      on_reward_error=on_reward_error, progress=progress)
    ok = ~np.isnan(r).any(1)
    if ok.sum() < 3:
        raise InputError(f"only {int(ok.sum())} prompts have every completion scorable (need 3); "
                         "check the reward functions")
    if not ok.all():
        log(f"{int((~ok).sum())} of {P} prompts have an unscorable completion (all rewards None); left out")
    r_ok, s_ok = r[ok], s[ok]
    constants = estimate_constants(r_ok, s_ok, level=level)
    gs = num_generations or [2 ** k for k in range(1, 20) if 2 ** k <= M // 2]
    gs = sorted(g for g in set(int(g) for g in gs) if 2 <= g <= min(M, budget))
    pool = pool_mse(r_ok, s_ok, budget=budget, num_generations=gs, rng=seed) if gs else None
    check = score_mean_check(s)
    reward_all = rw.RewardTable(per_function=np.concatenate([t.per_function for t in tables]),
                                total=r.reshape(-1), names=tables[0].names, weights=tables[0].weights,
                                styles=tables[0].styles, errors=sum(t.errors for t in tables),
                                on_error=on_reward_error)
    card = _card(sampling=sampling, data=data, tok=tok, pol=pol, names=names, d=d, sketch=sketch,
                 reward=reward_all, check=check, diag={k: np.concatenate(v) for k, v in diag.items()},
                 peft_config=peft_config, params=params, P=P, M=M, dropped=int((~ok).sum()), seed=seed)
    desc = (f"{int(ok.sum())} prompts of {data.source} x {M} completions at T = {sampling.temperature:g}, "
            f"rewards {', '.join(reward_all.names)}; unbiased U-statistics + jackknife over {d} "
            f"{'trainable ' if params == 'trainable' else ''}parameters"
            + (f" sketched to {sketch.k} dims" if sketch else ""))
    return Measurement(constants=constants, source=f"task ({pol.name} on {data.source})", description=desc,
                       card=card, pool=pool)


def _card(*, sampling, data, tok, pol, names, d, sketch, reward, check, diag, peft_config, params, P, M,
          dropped, seed) -> dict:
    case = sampling.case
    if case == "exact":
        unbiased = "grad E_{pi_T}[R]: the sampler is pi_T = softmax(z/T), the policy that is differentiated"
    else:
        unbiased = ("neither grad E_{pi_T}[R] nor grad E_q[R]: completions come from the processed sampler q "
                    "but the score is grad log pi_T (no importance weighting, as TRL's HF path, verl and "
                    "OpenRLHF by default); the constants describe the trainer's biased update noise")
    selfcheck = check.to_dict()
    selfcheck["verdict"] = ("pass" if check.passed else "FAIL: sampler/scorer mismatch (temperature, "
                            "generation config or chat template)") if case == "exact" else \
        "drift expected (sampler != pi_T); measured as ||E S||^2"
    peft_info = None
    if peft_config is not None:
        cfg = peft_config if isinstance(peft_config, dict) else {
            k: (sorted(v) if isinstance(v, set) else v) for k, v in dataclasses.asdict(peft_config).items()
            if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "peft_type")}
        peft_info = {k: (str(v) if not isinstance(v, (int, float, str, list, type(None))) else v) for k, v in cfg.items()}
    return dict(
        sampler=dict(sampling.to_dict(), backend="ustat_grpo.lm.sample_completions (HF processor order)"),
        score_policy=f"grad log_softmax(z / T) over the full vocabulary, T = {sampling.temperature:g}, summed "
                     "over completion tokens (TRL / verl / OpenRLHF training log-probabilities)",
        is_weighting="none",
        case=case,
        unbiased_for=unbiased,
        drift=dict(mean_truncated_mass=float(diag["mass"].mean()),
                   mean_log_ratio=float(diag["logr"].mean()), score_mean=selfcheck),
        zero_mean_selfcheck=bool(check.passed),
        prompt_format=data.prompt_format,
        chat_template_hash=tk.chat_template_hash(tok),
        chat_template_kwargs=dict(sampling.chat_template_kwargs),
        add_special_tokens=("tokenizer default (True), as TRL 1.16" if data.prompt_format == "standard"
                            else "chat template (add_generation_prompt=True)"),
        reward=reward.to_dict(),
        truncated_fraction=float(diag["trunc"].mean()),
        empty_fraction=float(diag["empty"].mean()),
        mean_completion_length=float(diag["length"].mean()),
        mask_truncated_completions=False,
        params=dict(selection=params if isinstance(params, (str, type(None))) else "list", count=len(names),
                    num_parameters=int(d), sketch_dim=None if sketch is None else sketch.k, peft=peft_info),
        dataset=data.to_dict(), model=pol.name, num_prompts=P, samples_per_prompt=M,
        prompts_left_out=dropped, seed=seed, versions=library_versions(),
    )
