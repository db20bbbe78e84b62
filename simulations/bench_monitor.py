"""Step time of TRL's GRPOTrainer with and without GroupSizeMonitor (built-in weak model, CPU).

Exact command (numbers in the README come from it)::

    python -m simulations.bench_monitor --steps 101 --every 50

Trains twice from the same exported weights and seed: once plain, once with the monitor
(``every``, ``num_prompts``, ``projection_dim`` as given), and prints the median and total step time
of each (TRL's own ``step_time`` metric, the wall time of ``training_step``, which contains the reward
call and so the monitor's scoring) and the overhead ratio.  Step 0 (warm-up) is left out of both.
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
    steps: int = 101                  # optimizer steps per run (the first is dropped as warm-up)
    every: int = 50                   # monitor window every this many steps (the monitor's default)
    num_prompts: int = 8              # groups scored per window (the monitor's default)
    projection_dim: int = 256         # sketch dimension
    batch: int = 64                   # completions per step (per_device_train_batch_size)
    num_generations: int = 8          # G
    max_completion_length: int = 8
    seed: int = 0


def _run(path, rows, cfg: Config, monitor: bool):
    import numpy as np
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ustat_grpo.integrations.trl import GroupSizeMonitor
    from ustat_grpo.measurement.rewards import arithmetic_reward

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=cfg.batch, num_generations=cfg.num_generations,
                          max_completion_length=cfg.max_completion_length, max_steps=cfg.steps, report_to="none",
                          use_cpu=True, bf16=False, logging_steps=1, save_strategy="no", seed=cfg.seed,
                          disable_tqdm=True)
        trainer = GRPOTrainer(model=path, reward_funcs=arithmetic_reward, args=args,
                              train_dataset=Dataset.from_list(rows))
        mon = None
        if monitor:
            mon = GroupSizeMonitor(every=cfg.every, num_prompts=cfg.num_prompts, projection_dim=cfg.projection_dim,
                                   seed=cfg.seed).attach(trainer)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    times = np.array([r["step_time"] for r in trainer.state.log_history if "step_time" in r])[1:]
    return times, wall, mon


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f, v in asdict(Config()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    cfg = Config(**vars(p.parse_args(argv)))
    import numpy as np
    import torch

    from ustat_grpo.policies import lm
    from ustat_grpo.measurement.sampler import arithmetic_task

    with tempfile.TemporaryDirectory() as tmp:
        path = lm.export_builtin("weak", f"{tmp}/weak")
        rows = arithmetic_task(lm.load_policy(None, variant="weak", device="cpu"), 256).rows
        base, wall0, _ = _run(path, rows, cfg, monitor=False)
        mon_t, wall1, mon = _run(path, rows, cfg, monitor=True)
    windows = [w.step for w in mon.windows]
    out = {"config": asdict(cfg), "torch_threads": torch.get_num_threads(),
           "plain": {"median_step_s": float(np.median(base)), "total_step_s": float(base.sum()), "wall_s": wall0},
           "monitor": {"median_step_s": float(np.median(mon_t)), "total_step_s": float(mon_t.sum()), "wall_s": wall1,
                       "windows": windows, "window_s": [round(w.seconds, 4) for w in mon.windows]},
           "overhead_ratio_total": float(mon_t.sum() / base.sum()),
           "overhead_ratio_wall": float(wall1 / wall0)}
    print(json.dumps(out, indent=1))
    print(f"overhead (total step time, steps 1..{cfg.steps - 1}, windows at {windows}): "
          f"{out['overhead_ratio_total']:.3f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
