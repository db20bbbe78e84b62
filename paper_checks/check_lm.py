"""Figure 4 / Corollary 4 of arXiv 2603.01162 on the built-in transformer policy (~15 s on CPU).

Runs ``simulations/fig4_lm.py``'s estimator (Gram trick, unbiased per-replicate squared errors,
reference = the pool members outside the group) on the built-in ``strong`` policy, 24 questions,
a pool of 192 completions each.  The oracle property holds when the GRPO - oracle gap, relative to
the oracle MSE, is below 5% at G = 64 while it is clearly visible (> 10%) at G = 4 (the
U-statistic residual ``(sigma^2 tr I + |g|^2) / (G (G - 1))``).  Negative control: the same 5%
criterion applied to vanilla vs oracle must fail (vanilla is not oracle-like).

The paper's other Figure-4 finding, "vanilla is always largest", is *reported* in ``details``
but not asserted: on these policies wrong answers carry larger score norms,
``Cov(Z, |W|^2) < -V tr I / 2``, and Theorem 2 then puts vanilla *below* the oracle.
"""
from __future__ import annotations

import numpy as np

from paper_checks import Outcome, register


@register("Fig4-lm", "Oracle property on a transformer policy: GRPO MSE -> oracle MSE as G grows "
                     "(Figure 4, Corollary 4)", seed=20260304)
def check_fig4_lm(rng):
    from simulations.fig4_lm import Config, simulate

    cfg = Config(num_generations="4,64", num_prompts=24, pool=192, num_replicates=100,
                 seed=int(rng.integers(2 ** 31)), panels="strong", device="cpu")
    ds = simulate(cfg, command="paper_checks Fig4-lm").sel(panel="strong")
    mse = {e: ds.mse.sel(estimator=e).values for e in ("vanilla", "grpo", "oracle")}
    rel_grpo = (mse["grpo"] - mse["oracle"]) / mse["oracle"]  # (2,) at G = 4, 64
    rel_van = (mse["vanilla"] - mse["oracle"]) / mse["oracle"]
    holds = bool(abs(rel_grpo[1]) < 0.05 and rel_grpo[0] > 0.10)
    control_rejected = bool(abs(rel_van[1]) >= 0.05)
    return Outcome(
        expected="|GRPO-oracle|/oracle < 5% at G=64, > 10% at G=4; vanilla-oracle >= 5% (control)",
        observed=(f"GRPO-oracle {100 * rel_grpo[0]:.1f}% (G=4), {100 * rel_grpo[1]:.1f}% (G=64); "
                  f"vanilla-oracle {100 * rel_van[1]:.1f}% (G=64)"),
        passed=holds and control_rejected,
        details={"mse": {k: v.tolist() for k, v in mse.items()}, "G": [4, 64],
                 "negative_control_rejected": control_rejected,
                 "vanilla_largest": bool(np.all(mse["vanilla"] > mse["grpo"])),
                 "plugin_G_times_vanilla_minus_oracle":
                     float(ds.vanilla_minus_oracle_times_G_plugin)})
