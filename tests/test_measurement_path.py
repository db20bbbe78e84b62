"""One measurement path for every task (issue 20): a user's dataset and rewards get pilot files,
torchrun shards, resume after a kill, adaptive stopping and the full report from the file alone;
user-input problems are one line and exit 2; the caller's objects are left alone."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import _tiny_task as tt
from ustat_grpo.cli import fit_scaling
from ustat_grpo.measurement.pilot import load_pilot

REPO = pathlib.Path(__file__).resolve().parent.parent
REWARDS = '''
import os, time
def correct(prompts, completions, completion_ids, answer, **kwargs):
    time.sleep(float(os.environ.get("REWARD_SLEEP", "0")))
    return [1.0 if a in c else 0.1 * (len(ids) % 3) for c, ids, a in zip(completions, completion_ids, answer)]

def constant(completions, **kwargs):
    return [1.0] * len(completions)
'''


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("own_task")
    tt.model_dir(d / "model")
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        a, b = (int(x) for x in rng.integers(1, 9, size=2))
        rows.append({"prompt": f"What is {a} + {b}?", "answer": str(a + b)})
    (d / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "rewards.py").write_text(REWARDS)
    return d


def _argv(task, *extra):
    return ["--model", str(task / "model"), "--dataset", str(task / "data.jsonl"), "--reward",
            f"{task / 'rewards.py'}:correct", "--temperature", "0.7", "--max-completion-length", "4",
            "--num-prompts", "32", "--projection-dim", "16", "--device", "cpu", "--format", "json", *extra]


def _run(argv, *, torchrun=False, env=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"] if torchrun
            else [sys.executable])
    out = subprocess.run([*head, "-m", "ustat_grpo.fit_scaling", *argv], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    d = json.loads(out.stdout)
    for k in ("runtime_s", "command", "options", "input_hash", "source"):   # differ with the pilot's path
        d.pop(k)
    return d


def _same_data(a, b):
    sa, _ = load_pilot(str(a))
    sb, _ = load_pilot(str(b))
    for k in ("prompt", "g", "rewards", "scores", "zzq"):
        np.testing.assert_array_equal(getattr(sa, k), getattr(sb, k))
    assert sorted(sa.extras) == sorted(sb.extras)
    for k in sa.extras:
        np.testing.assert_array_equal(sa.extras[k][1], sb.extras[k][1])


@pytest.mark.slow
def test_own_task_torchrun_resume_and_pilot_file_report(task, tmp_path):
    pytest.importorskip("torch.distributed.run")
    one = tmp_path / "one.nc"
    ref = _run(_argv(task, "--pilot", str(one)))
    # two processes under torchrun: the same data bit for bit, the same report
    two = tmp_path / "two.nc"
    assert _run(_argv(task, "--pilot", str(two)), torchrun=True) == ref
    _same_data(one, two)
    # SIGKILL after the first batch, then the same command again: the same data and report
    killed = tmp_path / "killed.nc"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", REWARD_SLEEP="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "ustat_grpo.fit_scaling", *_argv(task, "--pilot", str(killed))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not killed.exists() and proc.poll() is None:                  # first batch written, or exit
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial, _ = load_pilot(str(killed))
    assert 16 <= len(partial) < 32
    assert _run(_argv(task, "--pilot", str(killed))) == ref
    _same_data(one, killed)
    # the report of the pilot file alone (no model): the same recommendation, comparison, card, advice
    from_file = _run([str(one), "--format", "json"])
    assert from_file == ref
    assert ref["card"]["task"] == "dataset" and ref["estimators"]["estimators"][0] == "leave_one_out"
    # the file records the command line and every option's value
    import xarray as xr
    attrs = xr.open_dataset(one, engine="h5netcdf").attrs
    assert "--dataset" in attrs["command"] and json.loads(attrs["cli"])["temperature"] == 0.7


def test_own_task_adaptive_pilot(task, capsys):
    rc = fit_scaling.main(_argv(task, "--target-width", "1000", "--min-prompts", "16"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    # stops at a batch boundary once past --min-prompts and the interval is bounded, or at the cap
    n = d["card"]["num_prompts"]
    assert n in (16, 32) and d["card"]["samples_per_prompt"] == 8
    assert f"adaptive pilot, target width 1000.0: {8 * n} rollouts" in d["constants_source"]
    assert d["options"]["target_width"] == 1000.0 and "--target-width 1000" in d["command"]


def test_input_problems_are_one_line_exit_2(task, tmp_path, capsys):
    def fails(argv, *needles):
        rc = fit_scaling.main(argv)
        out, err = capsys.readouterr()
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
        for n in needles:
            assert n in lines[0], lines[0]

    # a truncated pilot file: the file is named
    good = tmp_path / "good.nc"
    fit_scaling.main(_argv(task, "--num-prompts", "16", "--pilot", str(good)))
    capsys.readouterr()
    bad = tmp_path / "truncated.nc"
    bad.write_bytes(good.read_bytes()[:2000])
    fails([str(bad)], str(bad), "truncated")
    fails(_argv(task, "--num-prompts", "16", "--pilot", str(bad)), str(bad), "truncated")
    # a pilot of another configuration: which settings differ
    fails(_argv(task, "--num-prompts", "16", "--pilot", str(good), "--temperature", "0.9"),
          "another configuration", "sampling.temperature 0.7 (file) vs 0.9 (now)")
    # a prompt longer than the model's context (256 positions): prompt index and lengths
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "What is 2 + 3? " * 3, "answer": "5"}) + "\n"
                    + json.dumps({"prompt": "What is 2 + 3? " * 200, "answer": "5"}) + "\n"
                    + json.dumps({"prompt": "What is 4 + 4?", "answer": "8"}) + "\n")
    argv = _argv(task, "--num-prompts", "3")
    argv[argv.index(str(task / "data.jsonl"))] = str(long)
    fails(argv, "row 1", "tokens + max_new_tokens=4", "context of 256 tokens")
    # a directory that holds no causal LM, and an empty one
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = _argv(task, "--num-prompts", "3")
    argv[argv.index(str(task / "model"))] = str(empty)
    fails(argv, str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    fails(argv, str(empty))


def test_trainer_settings_decide_the_headline(task, capsys):
    """--scale-rewards (GRPOConfig.scale_rewards) names the trainer's estimator; the headline speaks for
    it with the scale-free criterion's G, and the card shows the settings."""
    rc = fit_scaling.main(_argv(task, "--scale-rewards", "none", "--loss-type", "dr_grpo"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    rec, card = d["recommendation"], d["card"]
    assert card["trainer"]["scale_rewards"] == "none" and card["estimator"] == "group_mean"
    assert rec["estimator"] == "group_mean" and rec["criterion"] == "scale_free"
    pick = d["estimators"]["recommended"]["group_mean"]
    assert rec["num_generations"] == pick["num_generations"] and rec["interval"] == list(pick["interval"])
    rc = fit_scaling.main(_argv(task))                    # no trainer settings: the paper's leave-one-out
    d = json.loads(capsys.readouterr().out)
    assert d["recommendation"]["estimator"] == "leave_one_out" and d["recommendation"]["criterion"] == "mse"


def test_rewards_that_never_vary_give_a_verdict_not_a_recommendation(task, tmp_path, capsys):
    argv = _argv(task, "--num-prompts", "8", "--report", str(tmp_path / "rep"))
    argv[argv.index(f"{task / 'rewards.py'}:correct")] = f"{task / 'rewards.py'}:constant"
    rc = fit_scaling.main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    rec = d["recommendation"]
    assert rec["num_generations"] is None and "never vary" in rec["reason"] and d["A1"] is None
    assert any("never vary" in w for w in d["warnings"])
    zv = d["card"]["reward"]["zero_variance"]
    assert [z["share"] for z in zv] == [1.0, 1.0, 1.0] and d["card"]["reward"]["varies"] is False
    assert d["card"]["reward"]["mean_total"] == 1.0
    argv[argv.index("json")] = "text"
    assert fit_scaling.main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("NO RECOMMENDATION") and "<- recommended" not in text and "never vary" in text
    assert "RuntimeWarning" not in capsys.readouterr().err


def test_no_interior_optimum_recommends_nothing_anywhere(capsys, tmp_path):
    """A1 = 0 (no prompt-to-prompt variance): text, PNG and JSON say no G is recommended."""
    from ustat_grpo.scaling import optimum
    G = np.array([2, 4, 8, 16, 32, 64, 128])
    mse = optimum.mse_design(256 // G, G) @ np.array([0.0, 0.4, 0.4])
    path = tmp_path / "grid.csv"
    path.write_text("num_prompts,num_generations,mse,mse_se\n" + "\n".join(
        f"{256 // g},{g},{float(m)!r},{0.01 * float(m)!r}" for g, m in zip(G, mse)) + "\n")
    rc = fit_scaling.main([str(path), "--format", "json", "--report", str(tmp_path / "rep")])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["recommendation"]["num_generations"] is None and d["recommendation"]["interior"] is False
    assert "no interior optimum" in d["recommendation"]["reason"]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "NO RECOMMENDATION" in text and "<- recommended" not in text


def test_measure_task_leaves_the_callers_model_alone(task):
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ustat_grpo.measurement.measure import measure_task

    tok = AutoTokenizer.from_pretrained(task / "model")
    net = AutoModelForCausalLM.from_pretrained(task / "model", attn_implementation="eager")
    net.train()
    net.model.layers[0].mlp.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = {k: p.requires_grad for k, p in net.named_parameters()}
    modes = [m.training for m in net.modules()]
    m = measure_task(net, f"{task / 'rewards.py'}:correct", train_dataset=str(task / "data.jsonl"), processing_class=tok,
                     peft_config={"r": 2, "target_modules": ["q_proj"]}, num_prompts=6, samples_per_prompt=4,
                     args={"max_completion_length": 3}, projection_dim=8)
    assert m.card.peft["r"] == 2 and m.card.params_count == 2
    assert not hasattr(net, "peft_config") and sorted(net.state_dict()) == sorted(before)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert {k: p.requires_grad for k, p in net.named_parameters()} == flags
    assert [x.training for x in net.modules()] == modes
    # without an adapter the caller's own model is measured in eval mode, then put back as it was
    m = measure_task(net, f"{task / 'rewards.py'}:correct", train_dataset=str(task / "data.jsonl"), processing_class=tok,
                     num_prompts=6, samples_per_prompt=4, args={"max_completion_length": 3}, projection_dim=8)
    assert net.training and [x.training for x in net.modules()] == modes
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_card_carries_mean_reward_and_zero_variance_share(task, capsys):
    rc = fit_scaling.main(_argv(task, "--num-prompts", "8", "--format", "text"))
    out = capsys.readouterr().out
    assert rc == 0 and "total mean" in out and "zero-variance groups (no gradient): G=2:" in out


def test_library_never_imports_the_cli_and_has_no_cycle():
    """The layer rule (tests/test_layers.py) puts the CLI on top: no library module imports it."""
    from ustat_grpo import _layers

    graph = _layers.import_graph()
    cli = {m for m in graph if m.startswith("ustat_grpo.cli.")}
    offenders = sorted(m for m, deps in graph.items()
                       if m not in cli and _layers.layer_of(m) != "api" and set(deps) & cli)
    assert not offenders, f"library modules importing the CLI: {offenders}"
    assert not _layers.cycles(graph)
    assert len((REPO / "ustat_grpo" / "cli" / "fit_scaling.py").read_text().splitlines()) <= 250


def test_recommendation_fields_are_typed():
    import dataclasses
    import typing

    from ustat_grpo.recommendation.recommend import Recommendation
    hints = typing.get_type_hints(Recommendation)
    loose = [f.name for f in dataclasses.fields(Recommendation)
             if hints[f.name] in (dict, object) or typing.get_origin(hints[f.name]) is dict
             or dict in typing.get_args(hints[f.name]) or object in typing.get_args(hints[f.name])]
    assert not loose, loose


def test_help_examples_run_as_pasted(tmp_path, capsys):
    """The MSE-grid and performance-table examples printed by --help are valid inputs."""
    from ustat_grpo.cli._fit_options import EXAMPLES
    for head in ("num_prompts,num_generations,mse,mse_se", "budget,num_generations,score,run"):
        block = EXAMPLES.split(head)[1].split("\n\n")[0]
        path = tmp_path / "example.csv"
        path.write_text(head + block + "\n")
        rc = fit_scaling.main([str(path)])
        out, err = capsys.readouterr()
        assert rc == 0 and "Traceback" not in err, err
