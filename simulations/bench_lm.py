"""Benchmark per-sample scores and the sampling loop against their floors.

For G completions of one arithmetic question (sampled from the policy), times

* ``per_sample``: ``ustat_grpo.policies.lm.per_sample_scores`` (``method="auto"``: the hook path where it
  applies, else vmap(grad); all parameters, one chunk of G, flattened to (G, d));
* ``per_sample`` unflattened: the same, returned as one (G, *shape) tensor per parameter
  (``flatten=False``);
* ``batched`` (the score floor): one forward + backward of ``sum_i log pi(y_i | x)`` over the
  same padded batch, the cost of an ordinary policy-gradient step;
* ``sampling``: ``lm.sample_completions`` for G completions of the question;
* ``sampling floor``: the model calls that loop makes and nothing else -- one prefill of the G
  prompts and one cached forward of the batch per generated token (the tokens it drew);

and prints both ratios (score target <= 1.5 flattened, issue 14), tokens per second, peak memory
(CUDA: ``torch.cuda.max_memory_allocated``; CPU: growth of the process's peak RSS, a coarse
high-water mark) and the model FLOP utilisation of the score computation: ``6 * d * tokens``
FLOPs (forward + backward of a dense model, Kaplan et al. 2020) per second over ``--peak-tflops``
(0 = not reported; ``scripts/gpu_check.sh`` passes the GPU's dense peak).  Timings are medians of
interleaved repeats.  Writes ``bench_lm.nc``.  Usage::

    python -m simulations.bench_lm                        # built-in strong model, CPU, ~1 min
    python -m simulations.bench_lm --model PATH --device cuda --num-generations 8,16,32,64
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np


import torch

from ustat_grpo.policies import arithmetic, lm
from ustat_grpo.cli.options import parser_from_dataclass
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf


@dataclass(frozen=True)
class Config:
    num_generations: str = field(default="8,16,32,64", metadata={"help": "comma-separated G"})
    repeats: int = field(default=9, metadata={"help": "timed repetitions (median reported)"})
    model: str = field(default="", metadata={"help": "local HF model directory (default: built-in strong)"})
    template: str = field(default="", metadata={"help": "prompt template (default: the policy's)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "parameter dtype"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    peak_tflops: float = field(default=0.0, metadata={"help": "device peak TFLOP/s at --dtype for the MFU column (0: none)"})
    out: str = field(default="results/bench_lm", metadata={"help": "output directory"})


def _parser() -> argparse.ArgumentParser:
    return parser_from_dataclass(Config, prog="python -m simulations.bench_lm", description=__doc__.split("\n\n")[0])


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, dev) -> float:
    _sync(dev)
    t = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t


def _interleaved_times(fa, fb, repeats, dev):
    """Median times of ``fa`` and ``fb`` and the median of their per-repeat ratio.

    The two are timed alternately so that load from other processes hits both alike.
    """
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(_timed(fa, dev))
        tb.append(_timed(fb, dev))
    ta, tb = np.array(ta), np.array(tb)
    return float(np.median(ta)), float(np.median(tb)), float(np.median(ta / tb))


def _sampling_floor(policy, prompt_ids, comp):
    """The model calls of ``lm.sample_completions`` that drew ``comp``: a callable.

    One prefill of the G prompts and one cached forward of the (G, 1) batch per generated token
    that the loop went on from (it stops without a forward once every row has ended).
    """
    model, dev = policy.model, policy.device
    key = lm.cache_keyword(type(model))
    G, Tp = comp.sequences.shape[0], len(prompt_ids)
    toks = comp.sequences[:, Tp:].to(dev)                               # (G, Tc)
    ended = torch.isin(toks, torch.tensor(policy.eos_token_ids, device=dev)).any(1).all()
    steps = toks.shape[1] - 1 if bool(ended) else toks.shape[1]
    prompt = torch.tensor(prompt_ids, device=dev).repeat(G, 1)          # (G, Tp)
    attn = torch.ones(G, Tp + steps, dtype=torch.long, device=dev)      # (G, Tp + steps)

    @torch.no_grad()
    def floor():
        past = getattr(model(input_ids=prompt, attention_mask=attn[:, :Tp], use_cache=True), key)
        for t in range(steps):
            past = getattr(model(input_ids=toks[:, t:t + 1], attention_mask=attn[:, :Tp + t + 1],
                                 use_cache=True, **{key: past}), key)

    return floor


def _peak(fn, dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main(argv=None) -> int:
    import xarray as xr

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = Config(**vars(_parser().parse_args(args)))
    except SystemExit as exc:
        return int(exc.code or 0)
    torch.set_num_threads(cfg.threads)
    policy = lm.load_policy(cfg.model or None, variant="strong", device=cfg.device,
                            dtype=cfg.dtype, template=cfg.template or None)
    dev = policy.device
    model = policy.model
    prob = arithmetic.make_dataset(500, seed=0)[0]
    Gs = [int(g) for g in cfg.num_generations.split(",")]
    rows = []
    for G in Gs:
        comp, _ = lm.sample_prompt(policy, prob, G, rng=np.random.SeedSequence([cfg.seed, G]))
        ids, mask = comp.sequences.to(dev), comp.completion_mask.to(dev)  # (G, T)

        def per_sample():
            return lm.per_sample_scores(model, ids, mask, chunk_size=G)

        def batched():
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
            lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
            (lp * mask[:, 1:]).sum().backward()

        def per_sample_dict():
            return lm.per_sample_scores(model, ids, mask, chunk_size=G, flatten=False)

        prompt_ids = policy.encode(prob)

        def sampling():
            return lm.sample_completions(policy, prompt_ids, G, rng=np.random.SeedSequence([cfg.seed, G]))

        t_ps, t_b, ratio = _interleaved_times(per_sample, batched, cfg.repeats, dev)
        t_pd, _, ratio_dict = _interleaved_times(per_sample_dict, batched, cfg.repeats, dev)
        t_s, t_sf, ratio_s = _interleaved_times(sampling, _sampling_floor(policy, prompt_ids, comp),
                                                cfg.repeats, dev)
        mem_b, mem_ps = _peak(batched, dev), _peak(per_sample, dev)
        tokens = int(ids.numel())
        gen_tokens = int(comp.completion_mask.sum())
        out_mib = G * policy.num_parameters * torch.finfo(next(model.parameters()).dtype).bits / 8 / 2 ** 20
        mfu = 6 * policy.num_parameters * tokens / t_ps / (cfg.peak_tflops * 1e12) if cfg.peak_tflops else np.nan
        rows.append((t_ps, t_b, ratio, tokens / t_ps, mem_ps, mem_b, tokens, out_mib, t_pd, ratio_dict,
                     t_s, t_sf, ratio_s, gen_tokens / t_s, mfu))
        print(f"G={G:<3} T={ids.shape[1]:<4} scores {1e3 * t_ps:7.1f} ms vs batched fwd+bwd {1e3 * t_b:7.1f} ms: "
              f"ratio {ratio:5.2f} (unflattened {ratio_dict:4.2f}); sampling {1e3 * t_s:7.1f} ms vs floor "
              f"{1e3 * t_sf:7.1f} ms: ratio {ratio_s:5.2f}; {tokens / t_ps:8.0f} score tok/s, "
              f"{gen_tokens / t_s:7.0f} sampled tok/s" + (f", MFU {100 * mfu:.2f}%" if cfg.peak_tflops else "")
              + f"; peak +{mem_ps:.0f} MiB (batched +{mem_b:.0f} MiB; score matrix {out_mib:.1f} MiB)")
    a = np.array(rows)
    ds = xr.Dataset(
        {"per_sample_seconds": ("num_generations", a[:, 0]), "batched_seconds": ("num_generations", a[:, 1]),
         "ratio": ("num_generations", a[:, 2]), "tokens_per_second": ("num_generations", a[:, 3]),
         "peak_mib_per_sample": ("num_generations", a[:, 4]), "peak_mib_batched": ("num_generations", a[:, 5]),
         "tokens": ("num_generations", a[:, 6].astype(np.int64)),
         "score_matrix_mib": ("num_generations", a[:, 7]),
         "per_sample_unflattened_seconds": ("num_generations", a[:, 8]),
         "ratio_unflattened": ("num_generations", a[:, 9]),
         "sampling_seconds": ("num_generations", a[:, 10]),
         "sampling_floor_seconds": ("num_generations", a[:, 11]),
         "sampling_ratio": ("num_generations", a[:, 12]),
         "sampled_tokens_per_second": ("num_generations", a[:, 13]),
         "score_mfu": ("num_generations", a[:, 14])},
        coords={"num_generations": Gs})
    ds.attrs.update(provenance_attrs(seed=cfg.seed, config=dataclasses.asdict(cfg),
                                     command=shlex.join(["python", "-m", "simulations.bench_lm", *args])))
    ds.attrs["device"] = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    ds.attrs["num_parameters"] = int(policy.num_parameters)
    ds.attrs["policy"] = json.dumps({"name": policy.name, "template": policy.template})
    write_netcdf(ds, os.path.join(cfg.out, "bench_lm.nc"))
    print(f"device {ds.attrs['device']}, {cfg.dtype}, d = {policy.num_parameters}; max score ratio "
          f"{a[:, 2].max():.2f} (target <= 1.5), max sampling ratio {a[:, 12].max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
