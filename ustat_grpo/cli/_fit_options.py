"""Options of ``python -m ustat_grpo.fit_scaling``, one field each, with the modes that use them.

A field's ``modes`` metadata names the modes it belongs to; an option given on the command line
that the chosen mode does not use is an error (exit 2) naming the mode (:func:`check_modes`).
The modes:

* ``file``: read a measurements FILE (an MSE grid, a performance table or a pilot file);
* ``bandit``: measure the built-in toy bandit (``--source bandit``);
* ``builtin``: measure a transformer on the built-in arithmetic task (the default);
* ``dataset``: measure a transformer on your dataset with your reward functions (``--dataset``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

__all__ = ["Options", "MODES", "EXAMPLES", "mode_of", "check_modes", "check_values", "group_sizes", "build_sampler",
           "stratifier", "seconds_per_token", "strata_labels"]

MODES = {"file": "reading a measurements FILE", "bandit": "the built-in toy bandit (--source bandit)",
         "builtin": "the built-in arithmetic task (no --dataset)", "dataset": "your dataset (--dataset)"}
ALL, SOURCES, LM = tuple(MODES), ("bandit", "builtin", "dataset"), ("builtin", "dataset")


def _f(default, help, modes=ALL, **kw):
    return field(default=default, metadata=dict(help=help, modes=modes, **kw))


@dataclass(frozen=True, kw_only=True)
class Options:
    """Options of ``python -m ustat_grpo.fit_scaling`` (one help line each)."""

    measurements: str | None = _f(None, "CSV or NetCDF measurements file, or a pilot file (formats below); omit "
                                         "to measure", ("file",), metavar="FILE")
    source: str | None = _f(None, "what to measure without FILE: 'lm' (a transformer: the built-in arithmetic task, "
                                  "or your --dataset; the default), 'bandit' (built-in toy with exact constants); "
                                  "'task' = lm with --dataset", SOURCES, choices=("bandit", "lm", "task"))
    budget: int | None = _f(None, "rollouts per training step N = B*G (default: 256 when measuring; for an MSE grid "
                                  "its largest B*G)")
    form: str = _f("exact", "scaling-law form driving the integer optimum: 'exact' A3/(BG(G-1)) or 'paper' c3/(BG^2)",
                   choices=("exact", "paper"))
    format: str = _f("text", "report format on stdout", choices=("text", "json", "markdown"))
    output: str | None = _f(None, "write the report to this file instead of stdout", metavar="PATH")
    report: str | None = _f(None, "also write a Markdown report with a figure into this directory", metavar="DIR")
    seed: int = _f(0, "seed of every random draw (pilot prompts and completions, sketch, bootstrap)")
    divisors_only: bool = _f(False, "only recommend G that divide the budget (integer number of prompts B)")
    level: float = _f(0.95, "confidence level of all intervals")
    estimator: str = _f("leave_one_out", "estimator to select from a NetCDF grid with an 'estimator' dimension",
                        ("file",))
    replicates: int = _f(4000, "Monte Carlo replicates per grid cell of the bandit check (0 = skip the grid)",
                         ("bandit",))
    num_prompts: int | None = _f(None, "prompts of the pilot, a seeded random sample of the dataset (built-in task: "
                                       "500, or at most 1024 with --target-width; your dataset: up to 1024; bandit: "
                                       "128)", SOURCES)
    samples_per_prompt: int | None = _f(None, "completions per prompt of the pilot, M >= 4 (built-in task: 64, or 8 "
                                              "with --target-width; your dataset: 8; bandit: 256)", SOURCES)
    pilot: str | None = _f(None, "keep the pilot's per-prompt statistics in this NetCDF file, written per batch and "
                                 "resumed if it exists; under torchrun each rank writes a shard and rank 0 merges and "
                                 "reports (read it back later with: fit_scaling PILOT.nc)", SOURCES, metavar="PATH")
    target_width: float | None = _f(None, "adaptive pilot: add prompts (up to --num-prompts) until the 95%% interval "
                                          "of G* at the budget has relative width (high - low) / G* at most this "
                                          "(after --min-prompts)", SOURCES)
    min_prompts: int | None = _f(None, "with --target-width: prompts drawn before the stop rule is first asked "
                                       "(default 512; fewer undercovered on heavy-tailed prompts)", SOURCES)
    model: str | None = _f(None, "a local Hugging Face causal-LM directory (default: the built-in model)", LM,
                           metavar="PATH")
    variant: str = _f("strong", "built-in model variant (without --model)", LM, choices=("weak", "strong", "fewshot"))
    device: str = _f("auto", "torch device (auto: cuda if present)", LM)
    device_map: str | None = _f(None, "with --model: spread a model too large for one GPU over the GPUs of this "
                                      "process with accelerate: auto, balanced, sequential, ... or a JSON object "
                                      "{module: device}; replaces --device; one process (not under torchrun)", LM,
                                metavar="MAP")
    projection_dim: int = _f(256, "random projection dimension of per-sample scores", LM)
    template: str | None = _f(None, "built-in task: prompt format (default: few_shot for --model, the variant's "
                                    "compact format for the built-in model)", ("builtin",),
                              choices=("zero_shot", "few_shot", "compact_zero_shot", "compact_few_shot"))
    first_question: int = _f(0, "built-in task: measure questions FIRST .. FIRST + num_prompts - 1 (a split of the "
                                "task)", ("builtin",))
    dataset: str | None = _f(None, "your task: a .jsonl/.json/.csv/.parquet file or a datasets save_to_disk "
                                   "directory with a 'prompt' column (string or chat messages); other columns go to "
                                   "the reward functions", ("dataset",), metavar="FILE")
    split: str | None = _f(None, "split of a DatasetDict directory", ("dataset",))
    prompt_column: str = _f("prompt", "the prompt column", ("dataset",))
    reward: tuple | None = _f(None, "reward function (repeatable): arithmetic, exact_match[:COLUMN], "
                                    "math_verify[:COLUMN], module:function, pkg.module.function or "
                                    "path/to/file.py[:function] (TRL, verl compute_score or OpenRLHF reward_func, "
                                    "detected from the signature); built-in task default: arithmetic", LM,
                              type=str, action="append", metavar="SPEC")
    reward_weights: tuple | None = _f(None, "one weight per --reward (TRL reward_weights; default all 1)", LM,
                                      type=float, nargs="+")
    on_reward_error: str = _f("raise", "a raising reward: 'raise' (TRL), 'none' (record None, count failures) or "
                                       "'zero'", LM, choices=("raise", "none", "zero"))
    temperature: float = _f(1.0, "sampling and scoring temperature (GRPOConfig.temperature)", LM)
    top_p: float = _f(1.0, "nucleus sampling (1 = off)", LM)
    top_k: int = _f(0, "top-k sampling (0 = off)", LM)
    min_p: float | None = _f(None, "min-p sampling (None = off)", LM)
    repetition_penalty: float = _f(1.0, "repetition penalty (1 = off)", LM)
    max_completion_length: int | None = _f(None, "max new tokens per completion (default: 512 for your dataset, the "
                                                 "model's own for the built-in task)", LM)
    chat_template_kwargs: str | None = _f(None, "JSON dict for apply_chat_template, e.g. "
                                                "'{\"enable_thinking\": false}'", ("dataset",), metavar="JSON")
    scale_rewards: str | None = _f(None, "your trainer's GRPOConfig.scale_rewards (group, batch, none): which "
                                         "advantage it computes, shown on the card", LM)
    loss_type: str | None = _f(None, "your trainer's GRPOConfig.loss_type (grpo, dapo, dr_grpo, bnpo, ...)", LM)
    num_generations: str | None = _f(None, "comma-separated group sizes for the per-estimator MSE(G) (default "
                                           "powers of 2 <= M/2)", SOURCES[1:] + ("file",))
    params: str = _f("trainable", "parameters the optimiser sees: trainable, all, regex:PATTERN or a name substring",
                     LM)
    peft_config: str | None = _f(None, "JSON file of peft.LoraConfig keyword arguments (scores over adapter "
                                       "parameters)", LM, metavar="FILE")
    lora_r: int | None = _f(None, "add a LoRA adapter of this rank", LM)
    lora_alpha: int = _f(32, "with --lora-r: LoRA alpha (TRL ModelConfig default)", LM)
    lora_dropout: float = _f(0.05, "with --lora-r: LoRA dropout (inactive in eval)", LM)
    lora_target_modules: tuple | None = _f(None, "with --lora-r: module names (default: peft's per-architecture "
                                                 "default)", LM, type=str, nargs="+")
    allocate: str | None = _f(None, "also allocate the rollouts across strata of prompts known before sampling: "
                                    "pass_rate[:K] (K pass-rate bins from held-out samples of each pilot prompt; a "
                                    "pilot file or the bandit too) or a dataset column (built-in task: category); "
                                    "report section and JSON key 'allocation' (docs/allocation.md)",
                              metavar="STRATIFIER")
    allocate_multiple: int = _f(1, "with --allocate: every group size a multiple of this (a trainer's divisibility)")
    seconds_per_token: str | None = _f(None, "PREFILL,DECODE seconds per token of your serving stack: the "
                                             "compute-budget G* in seconds instead of tokens", LM + ("file",),
                                       metavar="P,D")
    threads: int | None = _f(None, "torch CPU threads of this process (default: torch's; one per process when "
                                   "several share the cores)")
    debug: bool = _f(False, "show the full traceback of a failure instead of a one-line error")


def mode_of(opts: Options) -> str:
    """The mode the options select (module notes)."""
    if opts.measurements:
        return "file"
    if opts.source == "bandit":
        return "bandit"
    return "dataset" if (opts.dataset or opts.source == "task") else "builtin"


def check_modes(opts: Options, given: set) -> str:
    """The mode; ``ValueError`` naming the first given option that the mode does not use."""
    from dataclasses import fields

    mode = mode_of(opts)
    if opts.measurements and opts.source:
        raise ValueError("give a measurements FILE or --source, not both")
    for f in fields(Options):
        if f.name in given and mode not in f.metadata["modes"]:
            flag = "FILE" if f.name == "measurements" else "--" + f.name.replace("_", "-")
            where = ", ".join(MODES[m] for m in f.metadata["modes"])
            raise ValueError(f"{flag} is not an option of {MODES[mode]}; it applies to: {where}")
    if "variant" in given and opts.model is not None:
        raise ValueError("--variant chooses a built-in model; it is not an option of --model PATH")
    if opts.device_map is not None and opts.model is None:
        raise ValueError("--device-map needs --model PATH: the built-in models fit on one device")
    if opts.device_map is not None and opts.device != "auto":
        raise ValueError(f"give --device or --device-map, not both (--device {opts.device})")
    if opts.device_map is not None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("--device-map spreads one model over the GPUs of one process; under torchrun each rank "
                         "already takes its own GPU: use one or the other")
    if "min_prompts" in given and opts.target_width is None:
        raise ValueError("--min-prompts is an option of --target-width (an adaptive pilot)")
    if "allocate_multiple" in given and opts.allocate is None:
        raise ValueError("--allocate-multiple is an option of --allocate STRATIFIER")
    if "lora_r" not in given and {"lora_alpha", "lora_dropout", "lora_target_modules"} & given:
        raise ValueError("--lora-alpha, --lora-dropout and --lora-target-modules are options of --lora-r")
    if opts.lora_r is not None and opts.peft_config is not None:
        raise ValueError("give --lora-r or --peft-config, not both")
    if mode == "dataset" and not opts.dataset:
        raise ValueError("--source task needs --dataset FILE")
    if mode == "dataset" and not opts.reward:
        raise ValueError("--dataset needs at least one --reward SPEC")
    if opts.reward_weights is not None and len(opts.reward_weights) != len(opts.reward or ("arithmetic",)):
        raise ValueError(f"--reward-weights: {len(opts.reward_weights)} weights for "
                         f"{len(opts.reward or ('arithmetic',))} rewards")
    return mode


def check_values(opts: Options) -> None:
    """Range checks of single options (``ValueError`` naming the option)."""
    if opts.budget is not None and opts.budget < 2:
        raise ValueError(f"--budget must be at least 2 (one prompt with two generations), got {opts.budget}")
    if not 0 < opts.level < 1:
        raise ValueError(f"--level must be in (0, 1), got {opts.level}")
    if opts.num_prompts is not None and opts.num_prompts < 3:
        raise ValueError(f"--num-prompts must be >= 3, got {opts.num_prompts}")
    if opts.samples_per_prompt is not None and opts.samples_per_prompt < 4:
        raise ValueError(f"--samples-per-prompt must be >= 4, got {opts.samples_per_prompt}")
    if opts.min_prompts is not None and opts.min_prompts < 3:
        raise ValueError(f"--min-prompts must be >= 3, got {opts.min_prompts}")
    if opts.target_width is not None and not opts.target_width > 0:
        raise ValueError(f"--target-width must be > 0, got {opts.target_width}")
    if opts.first_question < 0:
        raise ValueError(f"--first-question must be >= 0, got {opts.first_question}")
    if opts.model is not None and not os.path.isdir(opts.model):
        raise ValueError(f"--model {opts.model}: not a directory (a local Hugging Face model directory is "
                         "expected; nothing is downloaded)")
    if opts.replicates < 0:
        raise ValueError(f"--replicates must be >= 0, got {opts.replicates}")
    if opts.allocate_multiple < 1:
        raise ValueError(f"--allocate-multiple must be >= 1, got {opts.allocate_multiple}")
    if opts.allocate is not None:
        stratifier(opts)
    seconds_per_token(opts)
    device_map(opts)


def stratifier(opts: Options):
    """``--allocate``: ``("pass_rate", "pass_rate:K")`` or ``("column", NAME)`` (``ValueError`` otherwise)."""
    text = (opts.allocate or "").strip()
    if not text:
        raise ValueError("--allocate needs a STRATIFIER: pass_rate, pass_rate:K or a dataset column")
    if text.split(":")[0] == "pass_rate":
        k = text.partition(":")[2]
        if text != "pass_rate" and not (k.isdigit() and int(k) >= 1):
            raise ValueError(f"--allocate {text}: expected pass_rate or pass_rate:K with K >= 1 bins")
        return "pass_rate", text
    return "column", text


def seconds_per_token(opts: Options):
    """``--seconds-per-token P,D`` as two positive floats, or ``None``."""
    if opts.seconds_per_token is None:
        return None
    try:
        pre, dec = (float(x) for x in opts.seconds_per_token.split(","))
    except ValueError:
        raise ValueError(f"--seconds-per-token {opts.seconds_per_token!r}: expected PREFILL,DECODE like "
                         "2e-5,1e-3") from None
    if not (pre > 0 and dec > 0):
        raise ValueError("--seconds-per-token: both values must be > 0")
    return pre, dec


def strata_labels(sampler, mode: str, column: str, num_prompts: int, first_question: int = 0) -> list:
    """The value of ``column`` for pilot prompts ``0..num_prompts-1`` (``ValueError`` naming the columns
    there are).  The built-in task's rows are prompts and answers; its questions also carry ``category``."""
    rows = [dict(sampler.row(p)) for p in range(num_prompts)]
    if mode == "builtin":
        from ..policies.arithmetic import question_set

        qs = question_set(first_question + len(sampler))[first_question:]
        for p, r in enumerate(rows):
            r.update({k: v for k, v in qs[int(sampler.order[p])].to_dict().items() if k not in r})
    names = sorted({k for r in rows for k in r if k != "prompt"})
    if column == "prompt" or any(column not in r for r in rows):
        raise ValueError(f"--allocate {column}: no such column in every row (columns: {', '.join(names)}; or use "
                         "pass_rate)")
    return [str(r[column]) for r in rows]


def device_map(opts: Options):
    """``--device-map`` as ``from_pretrained`` takes it: a name, or a JSON object as a dict."""
    text = None if opts.device_map is None else opts.device_map.strip()
    if not text or not text.startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--device-map: not a JSON object ({exc.msg} at column {exc.colno})") from None
    return value


def group_sizes(text: str | None) -> list[int] | None:
    """``--num-generations 2,4,8`` as a list (``ValueError`` for anything else)."""
    if text is None:
        return None
    try:
        gs = [int(g) for g in text.split(",")]
    except ValueError:
        raise ValueError(f"--num-generations {text!r}: expected integers like 2,4,8") from None
    if min(gs) < 2:
        raise ValueError("--num-generations: group sizes must be >= 2 (TRL requires num_generations >= 2)")
    return gs


def _json_file(path, what):
    try:
        with open(path) as fh:
            return json.load(fh)
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _peft(opts: Options):
    if opts.peft_config is not None:
        return _json_file(opts.peft_config, "--peft-config")
    if opts.lora_r is None:
        return None
    cfg = dict(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout)
    return cfg | ({"target_modules": list(opts.lora_target_modules)} if opts.lora_target_modules else {})


def build_sampler(opts: Options, mode: str):
    """The pilot's sampler and size ``(sampler, P)``: user-input problems raise ValueError & co."""
    from ..measurement import task as tk
    from ..measurement.measure import _peft_info, task_pilot_size, task_policy
    from ..measurement.pilot import lm_pilot_size
    from ..measurement.sampler import arithmetic_task, task_sampler

    adaptive = opts.target_width is not None
    pol = task_policy(opts.model, variant=opts.variant, device=opts.device, device_map=device_map(opts),
                      peft_config=_peft(opts), max_completion_length=opts.max_completion_length,
                      template=opts.template)
    kwargs = json.loads(opts.chat_template_kwargs) if opts.chat_template_kwargs else None
    sampling = tk.SamplingConfig(temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k, min_p=opts.min_p,
                                 repetition_penalty=opts.repetition_penalty, chat_template_kwargs=kwargs or {},
                                 max_completion_length=opts.max_completion_length or
                                 (pol.max_new_tokens if mode == "builtin" else 512))
    if mode == "builtin":
        P, M = lm_pilot_size(opts.num_prompts, opts.samples_per_prompt, adaptive=adaptive)
        data = arithmetic_task(pol, P, first_question=opts.first_question)
    else:
        data = tk.load_task(opts.dataset, prompt_column=opts.prompt_column, split=opts.split)
        P, M = task_pilot_size(opts.num_prompts, opts.samples_per_prompt, num_rows=len(data), adaptive=adaptive)
    trainer = {"scale_rewards": opts.scale_rewards, "loss_type": opts.loss_type}
    sampler = task_sampler(pol, data, list(opts.reward or ("arithmetic",)), samples_per_prompt=M, num_prompts=P,
                           sampling=sampling, reward_weights=opts.reward_weights,
                           params="all" if mode == "builtin" and opts.params == "trainable" else opts.params,
                           projection_dim=opts.projection_dim, seed=opts.seed, on_reward_error=opts.on_reward_error,
                           shuffle=mode != "builtin", info={"peft": _peft_info(_peft(opts)), "task": "arithmetic" if mode == "builtin" else "dataset",
                                                            "trainer": _trainer(trainer)})
    sampler.check_prompts(P)
    return sampler, P


def _trainer(fields: dict):
    from ..measurement.measure import _trainer_info

    given = {k: v for k, v in fields.items() if v is not None}
    return _trainer_info(given) if given else None


EXAMPLES = """\
examples:
  python -m ustat_grpo.fit_scaling                          # built-in transformer policy, ~1 min on CPU
  python -m ustat_grpo.fit_scaling --source bandit          # toy bandit with exact constants
  python -m ustat_grpo.fit_scaling --model ~/ckpt/qwen --device cuda   # your local HF model
  python -m ustat_grpo.fit_scaling --model ~/ckpt --dataset train.jsonl --reward rewards.py:correct \\
      --temperature 0.7 --lora-r 16 --pilot p.nc --target-width 0.5   # your task, adaptive, resumable
  torchrun --nproc-per-node 8 -m ustat_grpo.fit_scaling --model ~/ckpt --dataset train.jsonl \\
      --reward rewards.py:correct --pilot p.nc                       # the same pilot over 8 GPUs
  python -m ustat_grpo.fit_scaling p.nc                     # the report of a pilot file, no model needed
  python -m ustat_grpo.fit_scaling grid.csv --budget 1024   # fit your MSE grid
  python -m ustat_grpo.fit_scaling table2.csv               # performance-vs-G table (Table 2 style)
  python -m ustat_grpo.fit_scaling --format json --report out/   # stable-key JSON + Markdown/PNG report
  python -m ustat_grpo.fit_scaling --source bandit --allocate pass_rate   # rollouts allocated by pass rate

MSE grid CSV (num_prompts,num_generations,mse[,mse_se]; other columns ignored):
  num_prompts,num_generations,mse,mse_se
  128,2,0.0141,0.0003
  64,4,0.0092,0.0002
  32,8,0.0081,0.0002
  16,16,0.0088,0.0002

performance table CSV (budget,num_generations,score[,run]; one row per run, at least 4 rows):
  budget,num_generations,score,run
  1024,4,0.7677,0
  1024,8,0.7491,0
  1024,16,0.7753,0
  1024,32,0.7402,0

NetCDF: output of ustat_grpo.experiments.montecarlo.run_grid (variables mse[, mse_se] over dims
num_generations, num_prompts[, estimator]; --estimator selects one), or a pilot file (--pilot).

JSON keys (stable): c1 c2 c3 A1 A2 A3 (+ _interval), g_star_paper g_star_exact g_star_integer
(+ _interval), budget, form, input_hash, version, command, options, recommendation (num_generations
null with a reason where none can be certified), mse_table, warnings; for a language model also
card (estimator card), estimators (MSE(G) per estimator) and samples_per_prompt; always allocation
(--allocate) and compute_budget (G* at a token budget), null with allocation_reason /
compute_budget_reason where not asked or not possible.
exit codes: 0 ok; 1 analysis failed; 2 bad usage or bad input.
"""
