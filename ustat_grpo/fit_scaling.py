"""``python -m ustat_grpo.fit_scaling``: recommend a GRPO group size for a rollout budget.

Fits the scaling law of the GRPO gradient's MSE (arXiv 2603.01162, Prop. 3 / Theorem 7),

    MSE(B, G) = A1/B + A2/(B G) + A3/(B G (G-1))       (exact form; paper form: c3/(B G^2)),

and turns it into a recommendation: at ``budget`` N = B*G rollouts per step, use
G* = 1 + sqrt(A3/A1) (paper: sqrt(c3/c1)), rounded to the best integer, with a confidence
interval.  With no arguments it measures the constants on the built-in transformer policy
(``--source lm``: a 113k-parameter GPT-2 trained by the project on the arithmetic task, all 500
questions x 64 sampled completions, per-sample scores by vmap(grad)) in about a minute on CPU.
``--source bandit`` runs the toy contextual bandit instead (constants from samples, a Monte Carlo
MSE grid as a check and the exact answer for comparison).

Input formats: :mod:`ustat_grpo.measurements` (and ``--help``).  Pipeline: parse -> load
(:mod:`~ustat_grpo.measurements`) or measure (:mod:`~ustat_grpo.measure`) -> recommend
(:func:`~ustat_grpo.recommend.recommend`) -> render (:mod:`~ustat_grpo.report`).

Exit codes: 0 success; 1 the analysis failed (reason on stderr); 2 bad usage or bad input
(one line naming the file, row and column).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from . import report as rp
from ._cli import AnalysisError, InputError, options_from_args, parser_from_dataclass, sha256_file, sha256_json
from .constants import constants_from_statistics
from .grid_fit import fit_mse_grid
from .measure import measure_bandit, measure_lm
from .measurements import load_measurements
from .performance import fit_performance_table
from .pilot import lm_pilot_size
from .recommend import Recommendation, recommend

__all__ = ["Options", "main", "run"]


#: default (prompts, rollouts per prompt) of the bandit source; the lm source's are
#: pilot.lm_pilot_size's (500 x 64, ~50 s on 2 CPU cores; adaptive: up to 1024 x 8)
BANDIT_DEFAULTS = (128, 256)


@dataclass(frozen=True, kw_only=True)
class Options:
    """Options of ``python -m ustat_grpo.fit_scaling`` (one help line each)."""

    measurements: str | None = field(default=None, metadata=dict(
        help="CSV or NetCDF measurements file (formats below); omit to use --source",
        metavar="FILE"))
    source: str | None = field(default=None, metadata=dict(
        help="measure instead of reading a file: 'lm' (a transformer policy on the arithmetic task, "
             "the default without FILE) or 'bandit' (built-in toy with exact constants)",
        choices=("bandit", "lm", "task")))
    budget: int | None = field(default=None, metadata=dict(
        help="rollouts per training step N = B*G (default: 256 for sources; for an MSE grid its "
             "largest B*G)"))
    form: str = field(default="exact", metadata=dict(
        help="scaling-law form driving the integer optimum: 'exact' A3/(BG(G-1)) or 'paper' c3/(BG^2)",
        choices=("exact", "paper")))
    format: str = field(default="text", metadata=dict(help="report format on stdout",
                                                       choices=("text", "json", "markdown")))
    output: str | None = field(default=None, metadata=dict(
        help="write the report to this file instead of stdout", metavar="PATH"))
    report: str | None = field(default=None, metadata=dict(
        help="also write a Markdown report with a figure into this directory", metavar="DIR"))
    seed: int = field(default=0, metadata=dict(help="seed of every random draw (sources, bootstrap)"))
    divisors_only: bool = field(default=False, metadata=dict(
        help="only recommend G that divide the budget (integer number of prompts B)"))
    level: float = field(default=0.95, metadata=dict(help="confidence level of all intervals"))
    estimator: str = field(default="leave_one_out", metadata=dict(
        help="estimator to select from a NetCDF grid with an 'estimator' dimension"))
    replicates: int = field(default=4000, metadata=dict(
        help="bandit source: Monte Carlo replicates per grid cell (0 = skip the grid check)"))
    num_prompts: int | None = field(default=None, metadata=dict(
        help="sources: prompts drawn to measure the constants (lm: 500, or at most 1024 with --target-width; "
             "bandit: 128)"))
    samples_per_prompt: int | None = field(default=None, metadata=dict(
        help="sources: rollouts per prompt used to measure the constants, M >= 4 (lm: 64, or 8 with "
             "--target-width; bandit: 256)"))
    model: str | None = field(default=None, metadata=dict(
        help="lm source: a local Hugging Face causal-LM directory (default: the built-in model)",
        metavar="PATH"))
    variant: str = field(default="strong", metadata=dict(
        help="lm source: built-in model variant", choices=("weak", "strong", "fewshot")))
    device: str = field(default="auto", metadata=dict(help="lm source: torch device (auto: cuda if present)"))
    device_map: str | None = field(default=None, metadata=dict(
        help="lm source with --model: spread a model too large for one GPU over the GPUs of this process "
             "with accelerate: auto, balanced, sequential, ... or a JSON object {module: device}; replaces "
             "--device; one process (not under torchrun); offload to cpu/disk is refused", metavar="MAP"))
    projection_dim: int = field(default=256, metadata=dict(
        help="lm source: random projection dimension of per-sample scores"))
    dataset: str | None = field(default=None, metadata=dict(
        help="your task: a .jsonl/.json/.csv/.parquet file or a datasets save_to_disk directory with a "
             "'prompt' column (string or chat messages); other columns go to the reward functions",
        metavar="FILE"))
    split: str | None = field(default=None, metadata=dict(help="--dataset: split of a DatasetDict directory"))
    prompt_column: str = field(default="prompt", metadata=dict(help="--dataset: the prompt column"))
    reward: tuple | None = field(default=None, metadata=dict(
        help="reward function (repeatable): arithmetic, exact_match[:COLUMN], math_verify[:COLUMN], "
             "module:function, pkg.module.function or path/to/file.py[:function] (TRL, verl compute_score "
             "or OpenRLHF reward_func, detected from the signature)", type=str, action="append",
        metavar="SPEC"))
    reward_weights: tuple | None = field(default=None, metadata=dict(
        help="one weight per --reward (TRL reward_weights; default all 1)", type=float, nargs="+"))
    on_reward_error: str = field(default="raise", metadata=dict(
        help="a raising reward: 'raise' (TRL), 'none' (record None, count failures) or 'zero'",
        choices=("raise", "none", "zero")))
    temperature: float = field(default=1.0, metadata=dict(help="--dataset: sampling and scoring temperature"))
    top_p: float = field(default=1.0, metadata=dict(help="--dataset: nucleus sampling (1 = off)"))
    top_k: int = field(default=0, metadata=dict(help="--dataset: top-k sampling (0 = off)"))
    min_p: float | None = field(default=None, metadata=dict(help="--dataset: min-p sampling (None = off)"))
    repetition_penalty: float = field(default=1.0, metadata=dict(help="--dataset: repetition penalty (1 = off)"))
    max_completion_length: int = field(default=512, metadata=dict(help="--dataset: max new tokens per completion"))
    chat_template_kwargs: str | None = field(default=None, metadata=dict(
        help="--dataset: JSON dict for apply_chat_template, e.g. '{\"enable_thinking\": false}'", metavar="JSON"))
    num_generations: str | None = field(default=None, metadata=dict(
        help="--dataset: comma-separated group sizes for the per-estimator MSE(G) (default powers of 2 <= M/2)"))
    params: str = field(default="trainable", metadata=dict(
        help="--dataset: parameters the optimiser sees: trainable, all, regex:PATTERN or a name substring"))
    peft_config: str | None = field(default=None, metadata=dict(
        help="--dataset: JSON file of peft.LoraConfig keyword arguments (scores over adapter parameters)",
        metavar="FILE"))
    lora_r: int | None = field(default=None, metadata=dict(help="--dataset: add a LoRA adapter of this rank"))
    lora_alpha: int = field(default=32, metadata=dict(help="--lora-r: LoRA alpha (TRL ModelConfig default)"))
    lora_dropout: float = field(default=0.05, metadata=dict(help="--lora-r: LoRA dropout (inactive in eval)"))
    lora_target_modules: tuple | None = field(default=None, metadata=dict(
        help="--lora-r: module names (default: peft's per-architecture default)", type=str, nargs="+"))
    debug: bool = field(default=False, metadata=dict(
        help="show the full traceback of a failure instead of a one-line error"))
    pilot: str | None = field(default=None, metadata=dict(
        help="lm source: keep the per-prompt statistics in this NetCDF file, written per batch and "
             "resumed if it exists; under torchrun each rank writes a shard and rank 0 merges and "
             "reports (read it back later with: fit_scaling PILOT.nc)", metavar="PATH"))
    template: str | None = field(default=None, metadata=dict(
        help="lm source: prompt format (default: few_shot for --model, the variant's compact format for "
             "the built-in model; compact_* for a saved built-in checkpoint)",
        choices=("zero_shot", "few_shot", "compact_zero_shot", "compact_few_shot")))
    first_question: int = field(default=0, metadata=dict(
        help="lm source: measure questions FIRST .. FIRST + num_prompts - 1 (a split of the task: the "
             "paper's 500, then further seeded sets of 500, arithmetic.question_set)"))
    threads: int | None = field(default=None, metadata=dict(
        help="torch CPU threads of this process (default: torch's; one per process when several share "
             "the cores)"))
    target_width: float | None = field(default=None, metadata=dict(
        help="lm source: adaptive pilot, add prompts (up to --num-prompts, default 1024, x 8 samples) until "
             "the 95%% interval of G* at the budget has relative width (high - low) / G* at most this (after "
             "--min-prompts)"))
    min_prompts: int | None = field(default=None, metadata=dict(
        help="lm source with --target-width: prompts drawn before the stop rule is first asked (default 512; "
             "fewer undercovered on heavy-tailed prompts, see README 'Do adaptive intervals cover?')"))


def _check(opts: Options) -> Options:
    """Usage errors (exit 2) and the source defaults."""
    if opts.budget is not None and opts.budget <= 0:
        raise InputError(f"--budget must be a positive integer, got {opts.budget}")
    if opts.budget is not None and opts.budget < 2:
        raise InputError(f"--budget must be at least 2 (one prompt with two generations), got {opts.budget}")
    if not 0 < opts.level < 1:
        raise InputError(f"--level must be in (0, 1), got {opts.level}")
    if opts.measurements and opts.source:
        raise InputError("give a measurements FILE or --source, not both")
    if (opts.pilot or opts.target_width) and (opts.measurements or opts.dataset or opts.source not in (None, "lm")):
        raise InputError("--pilot and --target-width are options of the lm source (a pilot file is read as FILE)")
    if opts.min_prompts is not None and not opts.target_width:
        raise InputError("--min-prompts is an option of --target-width (an adaptive pilot)")
    if opts.min_prompts is not None and opts.min_prompts < 3:
        raise InputError(f"--min-prompts must be >= 3, got {opts.min_prompts}")
    if opts.device_map is not None and (opts.measurements or opts.dataset or opts.source not in (None, "lm")):
        raise InputError("--device-map is an option of the lm source with --model PATH")
    if opts.measurements:
        return opts
    if opts.dataset or opts.source == "task":
        return _check_task(opts)
    if opts.reward:
        raise InputError("--reward needs --dataset (the task it scores)")
    source = opts.source or "lm"
    if source == "lm":
        P, M = lm_pilot_size(opts.num_prompts or None, opts.samples_per_prompt or None,
                             adaptive=bool(opts.target_width))
    else:
        P, M = opts.num_prompts or BANDIT_DEFAULTS[0], opts.samples_per_prompt or BANDIT_DEFAULTS[1]
    opts = dataclasses.replace(opts, source=source, num_prompts=P, samples_per_prompt=M)
    if opts.num_prompts < 3 or opts.samples_per_prompt < 4:
        raise InputError("--num-prompts must be >= 3 and --samples-per-prompt >= 4")
    if source != "lm" and opts.model is not None:
        raise InputError("--model is only used with --source lm")
    if source == "lm" and opts.model is not None and not os.path.isdir(opts.model):
        raise InputError(f"--model {opts.model}: not a directory (a local Hugging Face model "
                         "directory is expected; nothing is downloaded)")
    if opts.device_map is not None:
        _device_map(opts)
    if source == "lm" and opts.first_question < 0:
        raise InputError(f"--first-question must be >= 0, got {opts.first_question}")
    return opts


def _device_map(opts: Options) -> str | dict | None:
    """``--device-map`` as ``from_pretrained`` takes it (a name or a dict); usage errors are exit 2."""
    if opts.device_map is None:
        return None
    if opts.source != "lm" or opts.model is None:
        raise InputError("--device-map needs --model PATH (lm source): the built-in models fit on one device")
    if opts.device != "auto":
        raise InputError(f"give --device or --device-map, not both (--device {opts.device})")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise InputError("--device-map spreads one model over the GPUs of one process; under torchrun each "
                         "rank already takes its own GPU: use one or the other")
    text = opts.device_map.strip()
    if not text.startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--device-map: not a JSON object ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise InputError("--device-map: a JSON object {module: device} is expected")
    return value


def _check_task(opts: Options) -> Options:
    if not opts.dataset:
        raise InputError("--source task needs --dataset FILE")
    if not opts.reward:
        raise InputError("--dataset needs at least one --reward SPEC")
    if opts.model is not None and not os.path.isdir(opts.model):
        raise InputError(f"--model {opts.model}: not a directory (a local Hugging Face model directory is expected)")
    if opts.reward_weights is not None and len(opts.reward_weights) != len(opts.reward):
        raise InputError(f"--reward-weights: {len(opts.reward_weights)} weights for {len(opts.reward)} rewards")
    if opts.num_prompts is not None and opts.num_prompts < 3:
        raise InputError("--num-prompts must be >= 3")
    if opts.lora_r is not None and opts.peft_config is not None:
        raise InputError("give --lora-r or --peft-config, not both")
    return dataclasses.replace(opts, source="task", samples_per_prompt=opts.samples_per_prompt or 16)


def _json_option(text, name):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}: not valid JSON ({exc.msg})") from None


def _task_peft(opts: Options):
    if opts.peft_config is not None:
        try:
            with open(opts.peft_config) as fh:
                return _json_option(fh.read(), f"--peft-config {opts.peft_config}")
        except OSError as exc:
            raise InputError(f"--peft-config {opts.peft_config}: {exc.strerror}") from None
    if opts.lora_r is None:
        return None
    cfg = dict(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout)
    if opts.lora_target_modules:
        cfg["target_modules"] = list(opts.lora_target_modules)
    return cfg


def _from_task(opts: Options, log) -> tuple[Recommendation, str]:
    from .measure import measure_task
    from .recommend import compare_estimators
    from .rewards import RewardError

    budget = int(opts.budget or 256)
    try:
        grid = None if opts.num_generations is None else [int(g) for g in opts.num_generations.split(",")]
    except ValueError:
        raise InputError(f"--num-generations {opts.num_generations!r}: expected integers like 2,4,8") from None
    if grid is not None and min(grid) < 2:
        raise InputError("--num-generations: group sizes must be >= 2 (TRL requires num_generations >= 2)")
    args = dict(temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k, min_p=opts.min_p,
                repetition_penalty=opts.repetition_penalty, max_completion_length=opts.max_completion_length,
                chat_template_kwargs=_json_option(opts.chat_template_kwargs, "--chat-template-kwargs"))
    log(f"measuring your task {opts.dataset} ...")
    try:
        m = measure_task(opts.model, list(opts.reward), train_dataset=opts.dataset, args=args,
                         peft_config=_task_peft(opts), reward_weights=opts.reward_weights, params=opts.params,
                         num_prompts=opts.num_prompts, samples_per_prompt=opts.samples_per_prompt,
                         num_generations=grid, budget=budget, seed=opts.seed, device=opts.device,
                         projection_dim=opts.projection_dim, level=opts.level,
                         on_reward_error=opts.on_reward_error, prompt_column=opts.prompt_column,
                         split=opts.split, progress=True, log=log)
    except InputError:
        raise
    except RewardError as exc:
        if opts.debug:
            raise
        raise AnalysisError(str(exc)) from None
    except Exception as exc:  # the LM stack failing is an analysis failure (--debug: traceback)
        if opts.debug:
            raise
        raise AnalysisError(f"measure_task failed: {type(exc).__name__}: {exc}") from None
    warns = []
    chk = m.card["drift"]["score_mean"]
    if m.card["case"] == "exact" and not chk["passed"]:
        warns.append(f"mean-score self-check failed (z = {chk['z']:.1f}): sampler and scored policy differ")
    if m.card["case"] != "exact":
        warns.append(f"sampler is {m.card['case']} (not pi_T): the constants describe a biased estimator; see the card")
    rec = recommend(m.constants, budget=budget, form=opts.form, divisors_only=opts.divisors_only,
                    constants_source=m.description, warnings=warns)
    est = compare_estimators(rec, m.pool) if m.pool is not None else None
    if est is not None and not est["agree"]:
        rec = dataclasses.replace(rec, warnings=rec.warnings + (est["note"],))
    return dataclasses.replace(rec, card=m.card, estimators=est), m.source


def _from_file(opts: Options, log) -> Recommendation:
    kind, a = load_measurements(opts.measurements, estimator=opts.estimator)
    if kind == "pilot":
        st = a["statistics"]
        try:
            est = constants_from_statistics(st, level=opts.level)
        except ValueError as exc:
            raise InputError(f"{opts.measurements}: {exc}") from None
        return recommend(est, budget=int(opts.budget or 256), form=opts.form, divisors_only=opts.divisors_only,
                         constants_source=f"pilot file: {len(st)} prompts x {est.samples_per_prompt} samples, "
                                          f"unbiased U-statistics + jackknife; {st.g.shape[1]} score dims")
    if kind == "performance":
        fit = fit_performance_table(a["budget"], a["num_generations"], a["score"], a.get("run"),
                                    level=opts.level, rng=opts.seed)
        return recommend(fit, observed=a)
    budgets = np.unique(a["num_prompts"] * a["num_generations"])
    budget = int(opts.budget or budgets.max())
    if opts.budget is None and len(budgets) > 1:
        log(f"budget not given: the grid has several B*G; using the largest, N = {budget} (pass --budget for yours)")
    fit_ = lambda form: fit_mse_grid(a["num_prompts"], a["num_generations"], a["mse"], a.get("mse_se"),
                                     form=form, level=opts.level)
    try:
        fit, paper = fit_("exact"), (fit_("paper") if opts.form == "paper" else None)
    except ValueError as exc:
        raise InputError(f"{opts.measurements}: {exc}") from None
    return recommend(fit, budget=budget, form=opts.form, divisors_only=opts.divisors_only, paper_fit=paper,
                     grid_fit=fit, observed=a, constants_source="fit of the MSE grid, " + fit.method)


def _from_source(opts: Options, log) -> tuple[Recommendation, str]:
    if opts.source == "task":
        return _from_task(opts, log)
    budget = int(opts.budget or 256)
    if opts.source == "lm":
        log(f"sampling {'up to ' if opts.target_width else ''}{opts.num_prompts} prompts x "
            f"{opts.samples_per_prompt} rollouts from the LM ...")
        try:
            m = measure_lm(opts.model, num_prompts=opts.num_prompts, samples_per_prompt=opts.samples_per_prompt,
                           seed=opts.seed, device=opts.device, projection_dim=opts.projection_dim,
                           variant=opts.variant, level=opts.level, progress=True, pilot=opts.pilot,
                           target_width=opts.target_width, budget=budget, template=opts.template,
                           first_question=opts.first_question, device_map=_device_map(opts),
                           min_prompts=opts.min_prompts)
        except Exception as exc:  # the LM stack failing is an analysis failure (--debug: traceback)
            if opts.debug:
                raise
            raise AnalysisError(f"lm.prompt_samples failed: {type(exc).__name__}: {exc}") from None
        if m is None:                                    # a torchrun rank > 0: rank 0 reports
            return None, None
    else:
        m = measure_bandit(num_prompts=opts.num_prompts, samples_per_prompt=opts.samples_per_prompt,
                           seed=opts.seed, budget=budget, replicates=opts.replicates, level=opts.level, log=log)
    grid_fit, warns = None, []
    if m.grid is not None and len(m.grid["num_generations"]) >= 3:
        grid_fit = fit_mse_grid(m.grid["num_prompts"], m.grid["num_generations"], m.grid["mse"],
                                m.grid["mse_se"], level=opts.level)
    elif m.grid is not None:
        warns.append(f"budget {budget} has fewer than 3 divisors >= 2: grid check skipped")
    rec = recommend(m.constants, budget=budget, form=opts.form, divisors_only=opts.divisors_only,
                    grid_fit=grid_fit, exact=m.exact, observed=m.grid if grid_fit is not None else None,
                    constants_source=m.description, warnings=warns)
    return dataclasses.replace(rec, samples_choice=m.samples_choice), m.source


def run(opts: Options, *, log=lambda s: None) -> Recommendation | None:
    """Parse-checked options -> a :class:`~ustat_grpo.recommend.Recommendation` with provenance
    (``None`` on torchrun ranks other than 0, which only contribute their shard of a pilot).

    Raises :class:`InputError` (exit 2) or :class:`AnalysisError` (exit 1).
    """
    opts = _check(opts)
    if opts.measurements:
        rec, src, input_hash = _from_file(opts, log), f"file {opts.measurements}", sha256_file(opts.measurements)
    else:
        rec, src = _from_source(opts, log)
        if rec is None:
            return None
        cfg = {k: v for k, v in dataclasses.asdict(opts).items()
               if k not in ("output", "report", "format", "debug", "pilot")}
        input_hash = sha256_json(cfg)
    prov = dict(tool="ustat_grpo.fit_scaling", version=__version__, source=src, input_hash=input_hash,
                seed=opts.seed, command="python -m ustat_grpo.fit_scaling")
    return dataclasses.replace(rec, provenance=prov)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  python -m ustat_grpo.fit_scaling                          # built-in transformer policy, ~1 min on CPU
  python -m ustat_grpo.fit_scaling --source bandit          # toy bandit with exact constants
  python -m ustat_grpo.fit_scaling --model ~/ckpt/qwen --device cuda   # your local HF model
  python -m ustat_grpo.fit_scaling grid.csv --budget 1024   # fit your MSE grid
  python -m ustat_grpo.fit_scaling table2.csv               # performance-vs-G table (Table 2 style)
  python -m ustat_grpo.fit_scaling --format json --report out/   # stable-key JSON + Markdown/PNG report
  python -m ustat_grpo.fit_scaling --model ~/ckpt --dataset train.jsonl --reward rewards.py:correct \
      --temperature 0.7 --lora-r 16 --num-generations 2,4,8,16   # your task, as your GRPO trainer has it

MSE grid CSV (num_prompts,num_generations,mse[,mse_se]; other columns ignored):
  num_prompts,num_generations,mse,mse_se
  128,2,0.0141,0.0003
  64,4,0.0092,0.0002
  32,8,0.0081,0.0002
  16,16,0.0088,0.0002

performance table CSV (budget,num_generations,score[,run]; one row per run):
  budget,num_generations,score,run
  1024,4,0.7677,0
  1024,8,0.7491,0
  1024,16,0.7753,0

NetCDF: output of ustat_grpo.montecarlo.run_grid (variables mse[, mse_se] over dims
num_generations, num_prompts[, estimator]; --estimator selects one).

JSON keys (stable): c1 c2 c3 A1 A2 A3 (+ _interval), g_star_paper g_star_exact g_star_integer
(+ _interval), budget, form, input_hash, version, recommendation, mse_table, warnings;
with --dataset also card (estimator card) and estimators (MSE(G) per estimator, best G each).
exit codes: 0 ok; 1 analysis failed; 2 bad usage or bad input.
"""


def _parser():
    doc = __doc__.split("\n\nInput formats")[0]
    return parser_from_dataclass(Options, prog="python -m ustat_grpo.fit_scaling", description=doc,
                                 epilog=EXAMPLES, positional=("measurements",))


def _init_distributed(opts: Options) -> None:
    """Under torchrun / accelerate launch (WORLD_SIZE > 1): one process group (NCCL on GPUs, else gloo)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return
    if opts.pilot is None:
        raise SystemExit("error: several processes (torchrun) need --pilot PATH for their shards")
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        gpu = torch.cuda.is_available() and opts.device in ("auto", "cuda")
        dist.init_process_group("nccl" if gpu else "gloo")


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    opts = options_from_args(Options, ns)
    log = lambda s: print(s, file=sys.stderr)
    t0 = time.perf_counter()
    if opts.threads:
        import torch

        torch.set_num_threads(int(opts.threads))
    _init_distributed(opts)
    try:
        rec = run(opts, log=log)
    except InputError as exc:
        if opts.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AnalysisError as exc:
        if opts.debug:
            raise
        print(f"analysis failed: {exc}", file=sys.stderr)
        return 1
    if rec is None:                                      # torchrun rank > 0: its shard is written
        return 0
    rec = dataclasses.replace(rec, provenance=rec.provenance | {"runtime_s": round(time.perf_counter() - t0, 2)})
    if opts.format == "json":
        text = json.dumps(rec.to_dict(), indent=2, sort_keys=True) + "\n"
    elif opts.format == "markdown":
        text = rp.render_markdown(rec)
    else:
        text = rp.render_text(rec)
    if opts.report:
        try:
            md = rp.write_report(rec, opts.report)
        except OSError as exc:
            print(f"error: {opts.report}: cannot write report ({exc.strerror})", file=sys.stderr)
            return 2
        log(f"report written to {md}")
    if opts.output:
        try:
            with open(opts.output, "w") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"error: {opts.output}: cannot write ({exc.strerror})", file=sys.stderr)
            return 2
        log(f"wrote {opts.output}")
    else:
        sys.stdout.write(text)
    for w in rec.warnings:
        log(f"warning: {w}")
    log(f"done in {rec.provenance['runtime_s']} s")
    return 0


def _console() -> None:
    """Console-script entry point ``ustat-fit-scaling`` (same as ``python -m ustat_grpo.fit_scaling``)."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
