"""``python -m ustat_grpo.fit_scaling``: recommend a GRPO group size for a rollout budget.

Fits the scaling law of the GRPO gradient's MSE (arXiv 2603.01162, Prop. 3 / Theorem 7),

    MSE(B, G) = A1/B + A2/(B G) + A3/(B G (G-1))       (exact form; paper form: c3/(B G^2)),

and turns it into a recommendation: at ``budget`` N = B*G rollouts per step, use
G* = 1 + sqrt(A3/A1) (paper: sqrt(c3/c1)), rounded to the best integer, with a confidence
interval.  With no arguments it measures the constants on the built-in transformer policy (a
113k-parameter GPT-2 trained by the project on the arithmetic task, 500 questions x 64 sampled
completions, per-sample scores by vmap(grad)) in about a minute on CPU; ``--dataset`` and
``--reward`` measure your own task the same way (pilot files, torchrun shards, resume, adaptive
stopping); ``--source bandit`` runs the toy contextual bandit.

This module parses, calls and renders: modes and options in :mod:`ustat_grpo.cli._fit_options`,
measurement in :mod:`ustat_grpo.measurement.measure`, the recommendation in :func:`ustat_grpo.recommendation.recommend.recommend`,
text and figures in :mod:`ustat_grpo.recommendation.report`.

Exit codes: 0 success; 1 the analysis failed (reason on stderr); 2 bad usage or bad input
(one line naming the option, file, row, setting or prompt).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time

from ..core._version import __version__
from ..recommendation import report as rp
from ._args import AnalysisError, InputError, given_options, options_from_args, parser_from_dataclass, sha256_file
from ._args import sha256_json
from ._fit_options import EXAMPLES, Options, build_sampler, check_modes, check_values, group_sizes
from ._fit_options import seconds_per_token, strata_labels, stratifier
from ..recommendation.recommend import Provenance, recommend

__all__ = ["Options", "main", "run"]

def _parser(suppress_defaults: bool = False):
    doc = __doc__.split("\n\nThis module")[0]
    return parser_from_dataclass(Options, prog="python -m ustat_grpo.fit_scaling", description=doc,
                                 epilog=EXAMPLES, positional=("measurements",), suppress_defaults=suppress_defaults)


def _measure(opts: Options, mode: str, gs, command: str, resolved: dict, labels: dict):
    """Inputs (exit 2 on a problem with them), then the pilot and its analysis (exit 1 on failure).
    ``labels`` receives ``"column"``: the ``--allocate`` column's value of every pilot prompt."""
    from ..measurement.measure import measure
    from ..measurement.pilot import check_pilot_file, distributed_rank

    budget = int(opts.budget or 256)
    if mode == "bandit":
        return _bandit(opts, budget)
    try:
        sampler, P = build_sampler(opts, mode)
        if opts.pilot is not None:
            check_pilot_file(opts.pilot, config=sampler.describe(), num_prompts=P, seed=opts.seed,
                             world_size=distributed_rank()[1])
        if opts.allocate is not None and stratifier(opts)[0] == "column":
            labels["column"] = strata_labels(sampler, mode, stratifier(opts)[1], P, opts.first_question)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        if opts.debug:
            raise
        raise InputError(str(exc).strip("'\"").splitlines()[0][:600]) from None
    except ImportError as exc:
        raise AnalysisError(f"{type(exc).__name__}: {exc}") from None
    print(f"pilot: {'up to ' if opts.target_width else ''}{P} prompts x {sampler.samples_per_prompt} completions of "
          f"{sampler.data.source}", file=sys.stderr)
    try:
        return measure(sampler, num_prompts=P, seed=opts.seed, pilot=opts.pilot, target_width=opts.target_width,
                       min_prompts=opts.min_prompts, budget=budget, level=opts.level, num_generations=gs,
                       progress=True, command=command, cli=resolved)
    except Exception as exc:  # the LM stack or a reward failing is an analysis failure (--debug: traceback)
        if opts.debug:
            raise
        raise AnalysisError(f"{type(exc).__name__}: {exc}") from None


def _bandit(opts: Options, budget: int):
    from ..policies.bandits import default_bandit
    from ..measurement.measure import measure_bandit
    from ..measurement.pilot import BanditSampler, check_pilot_file

    P, M = opts.num_prompts or 128, opts.samples_per_prompt or 256
    if opts.pilot is not None:
        try:
            check_pilot_file(opts.pilot, config=BanditSampler(default_bandit(), M).describe(), num_prompts=P,
                             seed=opts.seed)
        except (ValueError, OSError) as exc:
            raise InputError(str(exc)) from None
    try:
        return measure_bandit(num_prompts=P, samples_per_prompt=M, seed=opts.seed, budget=budget,
                              replicates=opts.replicates, level=opts.level, pilot=opts.pilot,
                              target_width=opts.target_width, min_prompts=opts.min_prompts,
                              log=lambda s: print(s, file=sys.stderr))
    except Exception as exc:
        if opts.debug:
            raise
        raise AnalysisError(f"{type(exc).__name__}: {exc}") from None


def _from_file(opts: Options, gs):
    from ..scaling.grid_fit import fit_mse_grid
    from ..measurement.measure import from_pilot
    from ..recommendation.tables import load_measurements
    from ..scaling.performance import fit_performance_table

    try:
        kind, a = load_measurements(opts.measurements, estimator=opts.estimator)
        if opts.allocate is not None and kind != "pilot":
            raise ValueError(f"--allocate needs a pilot's per-prompt statistics; this file is a {kind} table")
        if kind == "pilot":
            return from_pilot(opts.measurements, budget=int(opts.budget or 256), level=opts.level,
                              num_generations=gs), {}
        if kind == "performance":
            return fit_performance_table(a["budget"], a["num_generations"], a["score"], a.get("run"),
                                         level=opts.level, rng=opts.seed), dict(observed=a)
        budget = int(opts.budget or (a["num_prompts"] * a["num_generations"]).max())
        fit = lambda form: fit_mse_grid(a["num_prompts"], a["num_generations"], a["mse"], a.get("mse_se"), form=form,
                                        level=opts.level)
        exact = fit("exact")
        return exact, dict(budget=budget, paper_fit=fit("paper") if opts.form == "paper" else None, grid_fit=exact,
                           observed=a, constants_source="fit of the MSE grid, " + exact.method)
    except (ValueError, TypeError, OSError) as exc:
        if opts.debug:
            raise
        msg = str(exc)
        raise InputError(msg if msg.startswith(opts.measurements) else f"{opts.measurements}: {msg}") from None


def run(opts: Options, *, given: set = frozenset(), argv=None):
    """Options -> a :class:`~ustat_grpo.recommendation.recommend.Recommendation` (``None`` on torchrun ranks other
    than 0, which only contribute their shard of a pilot).  ``given`` names the options given on the
    command line.  Raises :class:`InputError` (exit 2) or :class:`AnalysisError` (exit 1)."""
    try:
        mode = check_modes(opts, set(given))
        check_values(opts)
        gs = group_sizes(opts.num_generations)
        if opts.allocate is not None and stratifier(opts)[0] == "column" and mode in ("file", "bandit"):
            raise ValueError(f"--allocate {opts.allocate}: {'a pilot file keeps' if mode == 'file' else 'the toy bandit has'} "
                             "no dataset columns; use --allocate pass_rate (or measure with --allocate COLUMN)")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    resolved = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("debug",)} | {"mode": mode}
    command = shlex.join(["python", "-m", "ustat_grpo.fit_scaling", *(sys.argv[1:] if argv is None else argv)])
    budget = int(opts.budget or 256)
    labels = {}
    if mode == "file":
        estimate, kw = _from_file(opts, gs)
        src, digest = f"file {opts.measurements}", sha256_file(opts.measurements)
    else:
        estimate, kw = _measure(opts, mode, gs, command, resolved, labels), {}
        if estimate is None:                             # a torchrun rank > 0: rank 0 reports
            return None
        src, digest = estimate.source, sha256_json(resolved)
    seed = getattr(estimate, "seed", None)              # a pilot file's own seed, else the option's
    prov = Provenance(tool="ustat_grpo.fit_scaling", version=__version__, source=src, input_hash=digest,
                      seed=opts.seed if seed is None else seed, command=command, options=resolved)
    kw.setdefault("budget", budget)
    if opts.allocate is not None:
        kw.update(allocate_multiple=opts.allocate_multiple,
                  allocate=stratifier(opts)[1] if "column" not in labels else
                  [labels["column"][int(p)] for p in estimate.statistics.prompt])
    if opts.seconds_per_token is not None:
        kw["seconds_per_token"] = seconds_per_token(opts)
    try:
        return recommend(estimate, form=opts.form, divisors_only=opts.divisors_only, provenance=prov, **kw)
    except ValueError as exc:
        raise AnalysisError(str(exc)) from None


def _init_distributed(opts: Options) -> None:
    """Under torchrun / accelerate launch (WORLD_SIZE > 1): one process group (NCCL on GPUs, else gloo)."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return
    if opts.pilot is None:
        raise InputError("several processes (torchrun) need --pilot PATH for their shards")
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        gpu = torch.cuda.is_available() and opts.device in ("auto", "cuda")
        dist.init_process_group("nccl" if gpu else "gloo")


def _write(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    with open(path, "w") as fh:
        fh.write(text)


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        ns = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    opts, log, t0 = options_from_args(Options, ns), (lambda s: print(s, file=sys.stderr)), time.perf_counter()
    try:
        if opts.threads:
            import torch

            torch.set_num_threads(int(opts.threads))
        _init_distributed(opts)
        rec = run(opts, given=given_options(_parser, argv), argv=argv)
    except (InputError, AnalysisError) as exc:
        if opts.debug:
            raise
        print(f"{'error' if isinstance(exc, InputError) else 'analysis failed'}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    if rec is None:                                      # torchrun rank > 0: its shard is written
        return 0
    rec = dataclasses.replace(rec, provenance=dataclasses.replace(rec.provenance,
                                                                  runtime_s=round(time.perf_counter() - t0, 2)))
    render = {"json": lambda r: json.dumps(r.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n",
              "markdown": rp.render_markdown, "text": rp.render_text}[opts.format]
    try:
        if opts.report:
            log(f"report written to {rp.write_report(rec, opts.report)}")
        _write(render(rec), opts.output)
    except OSError as exc:
        print(f"error: {exc.filename}: cannot write ({exc.strerror})", file=sys.stderr)
        return 2
    for w in rec.warnings:
        log(f"warning: {w}")
    log(f"done in {rec.provenance.runtime_s} s")
    return 0


def _console() -> None:
    """Console-script entry point ``ustat-fit-scaling`` (same as ``python -m ustat_grpo.fit_scaling``)."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
