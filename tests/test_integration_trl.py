"""GroupSizeMonitor inside a real TRL GRPOTrainer (CPU, the exported built-in weak model).

Two short runs share a module fixture (about 30 s together):

* ``mixed``: prompts of different token lengths (TRL left-pads them), 2 steps, a window every step.
  A recording reward function keeps each call's prompts, completion ids, rewards and a copy of the
  policy's weights, so the window statistics can be recomputed offline from nothing the monitor
  computed.
* ``equal``: prompts of one token length (no left padding), 1 step: the log-probability check
  must stay silent.
"""
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("trl")

from ustat_grpo.policies import lm  # noqa: E402
from ustat_grpo.scaling.constants import (constants_from_statistics, merge_statistics,  # noqa: E402
                                  prompt_statistics)
from ustat_grpo.integrations.trl import (METRIC_KEYS, GroupSizeMonitor, GroupSizeWarning,  # noqa: E402
                                         LogprobMismatchWarning)
from ustat_grpo.measurement.pilot import load_pilot, run_pilot  # noqa: E402
from ustat_grpo.measurement.rewards import arithmetic_reward  # noqa: E402
from ustat_grpo.measurement.sampler import arithmetic_sampler, arithmetic_task  # noqa: E402

SEED, K, G = 3, 64, 8


class Recorder:
    """A TRL reward function (the arithmetic verifier) that records what it saw."""

    __name__ = "arithmetic"

    def __init__(self):
        self.calls, self.model = [], None

    def __call__(self, prompts, completions, completion_ids, trainer_state, answer, **kwargs):
        out = arithmetic_reward(completions, answer)
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.calls.append(dict(step=trainer_state.global_step, prompts=list(prompts), rewards=list(out),
                               completion_ids=[list(c) for c in completion_ids], state=state))
        return out


def _train(path, rows, *, steps, batch, tmp, pilot_dir=None):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)         # transformers 5: gradient_checkpointing renamed
        args = GRPOConfig(output_dir=str(tmp / "out"), per_device_train_batch_size=batch, num_generations=G,
                          max_completion_length=8, max_steps=steps, report_to="none", use_cpu=True, bf16=False,
                          logging_steps=1, save_strategy="no", seed=0, learning_rate=1e-3, disable_tqdm=True)
    rec = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)         # transformers 5: gradient_checkpointing renamed
        trainer = GRPOTrainer(model=path, reward_funcs=rec, args=args, train_dataset=Dataset.from_list(rows))
    rec.model = trainer.model
    monitor = GroupSizeMonitor(every=1, num_prompts=batch // G, projection_dim=K, seed=SEED, pool_windows=2,
                               pilot_dir=pilot_dir).attach(trainer)    # 2: step 1 alone has too few varying groups
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    return trainer, monitor, rec, [w for w in caught if issubclass(w.category, (GroupSizeWarning,
                                                                                LogprobMismatchWarning))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trl")
    path = lm.export_builtin("weak", tmp / "weak")
    policy = lm.load_policy(None, variant="weak", device="cpu")
    rows = list(arithmetic_task(policy, 128).rows)
    tok = policy.tokenizer
    lengths = np.array([len(tok(text=r["prompt"])["input_ids"]) for r in rows])
    assert len(set(lengths[:8])) > 1                          # the mixed run's first batch is left-padded
    common = np.bincount(lengths).argmax()
    equal = [r for r, n in zip(rows, lengths) if n == common]
    assert len(equal) >= 16
    mixed = _train(path, rows[:64], steps=2, batch=64, tmp=tmp / "mixed", pilot_dir=tmp / "windows")
    silent = _train(path, equal[:16], steps=1, batch=16, tmp=tmp / "equal")
    return dict(path=path, mixed=mixed, equal=silent, tok=tok)


def test_metrics_in_log_history(runs):
    trainer, monitor, _, _ = runs["mixed"]
    logged = [r for r in trainer.state.log_history if "ustat/g_star" in r]
    assert len(logged) == 2 and [w.step for w in monitor.windows] == [0, 1]
    for row, window in zip(logged, monitor.windows):
        assert {f"ustat/{k}" for k in METRIC_KEYS} <= set(row)
        assert row["ustat/g_star"] == pytest.approx(window.metrics["ustat/g_star"])
        assert row["ustat/g_star_low"] <= row["ustat/g_star"] <= row["ustat/g_star_high"]
        assert 0 <= row["ustat/zero_variance_share"] <= 1
        assert row["ustat/recommended_G"] in {d for d in range(1, 65) if 64 % d == 0}


def _offline_model(path, state):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)   # as GRPOTrainer loads it
    model.load_state_dict(state)
    return model.eval()


def _offline_scores(model, tok, prompts, completions, chunk_size):
    """Scores of a window's groups recomputed from the recorded weights, batched as the monitor batches
    them: one (P*G, T) tensor, TRL's prompt tokens, right padding to the window's longest sequence
    (pad id 0), ``chunk_size`` sequences per pass; returned as (P, G, k)."""
    import torch

    from ustat_grpo.policies.score import Sketch, per_sample_scores

    rows = [(list(tok(text=p)["input_ids"]), c) for p, group in zip(prompts, completions) for c in group]
    T = max(len(ids) + len(c) for ids, c in rows)
    seq = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros_like(seq)
    for i, (ids, c) in enumerate(rows):
        seq[i, :len(ids) + len(c)] = torch.tensor(ids + c)
        mask[i, len(ids):len(ids) + len(c)] = 1
    d = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():     # torch.func: no batching rule for CPU flash attention (the vmap check)
        warnings.simplefilter("ignore", UserWarning)
        s = per_sample_scores(model, seq, mask, params=None, chunk_size=chunk_size,
                              projection=Sketch(d, K, seed=SEED)).detach().numpy()
    return s.reshape(len(prompts), -1, s.shape[-1])


def test_window_statistics_equal_offline_computation(runs):
    """Every window equals prompt_statistics of the same completions, re-scored offline on the weights
    recorded when the rewards were computed (so scoring after the update would fail)."""
    trainer, monitor, rec, _ = runs["mixed"]
    for window in monitor.windows:
        call = next(c for c in rec.calls if c["step"] == window.step)
        stats = window.statistics
        groups = stats.extras["group_index"][1]
        rewards = np.array([call["rewards"][g * G:(g + 1) * G] for g in groups], float)
        model = _offline_model(runs["path"], call["state"])
        scores = _offline_scores(model, runs["tok"], [call["prompts"][g * G] for g in groups],
                                 [call["completion_ids"][g * G:(g + 1) * G] for g in groups], monitor.chunk_size)
        offline = prompt_statistics(rewards, scores, prompt_ids=stats.prompt, keep_scores=True)
        for name in ("g", "g_norm2", "sigma2_trI", "zzq", "zzq_plugin", "reward_var", "mean_score_norm2",
                     "rewards", "scores"):
            np.testing.assert_array_equal(getattr(stats, name), getattr(offline, name), err_msg=name)
        assert all(call["prompts"][g * G] == call["prompts"][g * G + G - 1] for g in groups)   # TRL's groups


def test_window_files_merge_with_each_other(runs):
    _, monitor, _, _ = runs["mixed"]
    stats, attrs = load_pilot([w.path for w in monitor.windows])
    whole = merge_statistics(*(w.statistics for w in monitor.windows))
    np.testing.assert_array_equal(stats.g, whole.g)
    assert len(set(stats.prompt.tolist())) == len(stats) == 16


def test_step0_interval_overlaps_offline_pilot(runs):
    """The step-0 window (8 groups of 8) against an offline pilot (32 prompts x 8) of the same policy in
    the same sketch.  Honest but generous: 8 prompts give a wide window interval (often unbounded
    above), so overlap is a weak check; the two also merge into one estimate."""
    _, monitor, _, _ = runs["mixed"]
    sampler = arithmetic_sampler(None, variant="weak", device="cpu", num_prompts=32, samples_per_prompt=G,
                                 projection_dim=K, rng=SEED)
    pilot = run_pilot(sampler, num_prompts=32, seed=SEED)
    off = constants_from_statistics(pilot).optimal_group_size(budget=64, divisors_only=True)
    w = monitor.windows[0]
    lo, hi = w.metrics["ustat/g_star_low"], w.metrics["ustat/g_star_high"]
    olo, ohi = off.g_star_exact_interval
    assert lo <= ohi and olo <= hi, ((lo, hi), (olo, ohi))
    both = merge_statistics(pilot, w.statistics)               # same sketch, disjoint prompt ids
    assert len(both) == 40 and np.isfinite(constants_from_statistics(both).unconstrained).all()


def test_logprob_check_fires_under_left_padding(runs):
    _, monitor, _, caught = runs["mixed"]
    check = monitor.logprob_checks[0]
    assert check.left_padded and not check.position_ids_passed and check.fired
    assert check.gap_per_token > 100 * check.tolerance
    msgs = [str(w.message) for w in caught if w.category is LogprobMismatchWarning]
    assert len(msgs) == 1 and "position ids under left padding" in msgs[0]


def test_logprob_check_silent_with_right_positions(runs):
    _, monitor, _, caught = runs["equal"]
    assert monitor.logprob_checks, "the check did not run"
    check = monitor.logprob_checks[0]
    assert not check.left_padded and not check.fired and check.tokens > 0
    assert check.gap_per_token < 1e-4
    assert not [w for w in caught if w.category is LogprobMismatchWarning]


def test_package_imports_without_trl():
    code = "import sys; sys.modules['trl'] = None; import ustat_grpo, ustat_grpo.integrations.trl as m; print(m.GroupSizeMonitor)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_monitor_rejects_reward_models_and_bad_settings():
    import torch

    with pytest.raises(ValueError, match="every"):
        GroupSizeMonitor(every=0)

    class Fake:
        reward_funcs, reward_weights, num_generations, accelerator, state = [torch.nn.Linear(1, 1)], None, 8, None, None

    with pytest.raises(ValueError, match="reward models"):
        GroupSizeMonitor().attach(Fake())


def test_plot_draws_each_window(runs, tmp_path):
    """monitor.plot: one G* point per window with an estimate, at its step; the trainer's G as a line;
    the file is written."""
    _, monitor, _, _ = runs["mixed"]
    out = tmp_path / "drift.png"
    fig = monitor.plot(out)
    assert out.stat().st_size > 0
    ax = fig.axes[0]
    rows = [w for w in monitor.windows if w.group_size is not None]
    line = next(l for l in ax.get_lines() if l.get_label().startswith("G*"))
    np.testing.assert_array_equal(line.get_xdata(), [w.step for w in rows])
    np.testing.assert_array_equal(line.get_ydata(), [w.metrics["ustat/g_star"] for w in rows])
    trainer_g = next(l for l in ax.get_lines() if l.get_label() == "num_generations")
    assert set(np.asarray(trainer_g.get_ydata(), float)) == {G}
