"""G* across one TRL GRPOTrainer run (drift): the figure docs/figures/monitor_drift.png.

Exact command (the committed figure and docs/results/monitor_drift.json come from it)::

    python -m simulations.monitor_drift --steps 300 --every 10 --pool-windows 5 --seed 0

The built-in weak model (exported as an HF directory) trained by TRL 1.16's ``GRPOTrainer`` on CPU on
the arithmetic task (64 completions per step, ``num_generations`` 8, the arithmetic verifier as
reward), with :class:`ustat_grpo.integrations.trl.GroupSizeMonitor` attached (a window every
``every`` steps, ``num_prompts`` groups each, sketch 256).  Seeded: the trainer's ``seed`` and the
monitor's ``seed`` are ``--seed``.  Writes the figure (``monitor.plot``) and a JSON file with the
settings and every window's metrics.  About 45 s alone on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Config:
    steps: int = 300
    every: int = 10
    num_prompts: int = 8
    pool_windows: int = 5
    projection_dim: int = 256
    batch: int = 64
    num_generations: int = 8
    max_completion_length: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    figure: str = "docs/figures/monitor_drift.png"
    json: str = "docs/results/monitor_drift.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f, v in asdict(Config()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    cfg = Config(**vars(p.parse_args(argv)))
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ustat_grpo.policies import lm
    from ustat_grpo.integrations.trl import GroupSizeMonitor
    from ustat_grpo.measurement.rewards import arithmetic_reward
    from ustat_grpo.measurement.sampler import arithmetic_task

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = lm.export_builtin("weak", f"{tmp}/weak")
        rows = arithmetic_task(lm.load_policy(None, variant="weak", device="cpu"),
                               cfg.steps * cfg.batch // cfg.num_generations).rows
        args = GRPOConfig(output_dir=f"{tmp}/out", per_device_train_batch_size=cfg.batch,
                          num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                          max_steps=cfg.steps, learning_rate=cfg.learning_rate, report_to="none", use_cpu=True,
                          bf16=False, logging_steps=1, save_strategy="no", seed=cfg.seed, disable_tqdm=True)
        trainer = GRPOTrainer(model=path, reward_funcs=arithmetic_reward, args=args,
                              train_dataset=Dataset.from_list(rows))
        monitor = GroupSizeMonitor(every=cfg.every, num_prompts=cfg.num_prompts, pool_windows=cfg.pool_windows,
                                   projection_dim=cfg.projection_dim, seed=cfg.seed).attach(trainer)
        trainer.train()
    wall = time.perf_counter() - t0
    title = (f"TRL GRPOTrainer, built-in weak model, N={cfg.batch}, G={cfg.num_generations}, lr={cfg.learning_rate:g}\n"
             f"window every {cfg.every} steps, {cfg.num_prompts} groups, pooled over {cfg.pool_windows} windows")
    monitor.plot(cfg.figure, title=title)
    reward = {int(r["step"]): r["reward"] for r in trainer.state.log_history if "reward" in r}
    out = {"command": "python -m simulations.monitor_drift " + " ".join(sys.argv[1:] if argv is None
                                                                                     else argv),
           "config": asdict(cfg), "torch": torch.__version__, "wall_s": round(wall, 1),
           "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught
                               if w.category.__name__ in ("GroupSizeWarning", "LogprobMismatchWarning")}),
           "reward_mean_by_step": reward,
           "windows": [{"step": w.step, "seconds": round(w.seconds, 4), **w.metrics} for w in monitor.windows]}
    with open(cfg.json, "w") as f:
        json.dump(out, f, indent=1, default=float)
    for w in monitor.windows:
        print(w.summary())
    print(f"wrote {cfg.figure} and {cfg.json} ({wall:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
