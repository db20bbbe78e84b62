"""Tests of the fit_scaling CLI: end-to-end runs, stable JSON, input errors (exit 2), exit 1."""
import json
import math
import sys
import types

import numpy as np
import pytest

from ustat_grpo.cli import fit_scaling as fs
from ustat_grpo.scaling import optimum  # noqa: E402

STABLE_KEYS = {"c1", "c2", "c3", "A1", "A2", "A3", "g_star_paper", "g_star_exact", "g_star_integer",
               "g_star_paper_interval", "g_star_exact_interval", "g_star_integer_interval",
               "A1_interval", "A2_interval", "A3_interval", "c1_interval", "c2_interval", "c3_interval",
               "budget", "form", "input_hash", "version", "recommendation", "warnings"}


def _run(capsys, argv):
    rc = fs.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _grid_csv(tmp_path, A=(0.01, 0.4, 0.4), budget=256, noise=0.02, seed=0, se=True, extra_col=True):
    rng = np.random.default_rng(seed)
    G = np.array([2, 4, 8, 16, 32, 64, 128])
    B = budget // G
    mu = optimum.mse_design(B, G) @ np.array(A)
    y = mu * (1 + noise * rng.standard_normal(len(G)))
    path = tmp_path / "grid.csv"
    head = "num_prompts,num_generations,mse" + (",mse_se" if se else "") + (",note" if extra_col else "")
    lines = [head] + [f"{b},{g},{float(m)!r}" + (f",{float(noise * u)!r}" if se else "") + (",x" if extra_col else "")
                      for b, g, m, u in zip(B, G, y, mu)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_default_run_recovers_toy_optimum(capsys):
    rc, out, err = _run(capsys, ["--source", "bandit", "--format", "json", "--replicates", "400"])
    assert rc == 0, err
    d = json.loads(out)
    assert STABLE_KEYS <= set(d)
    ex = d["exact"]
    lo, hi = d["g_star_exact_interval"]
    assert lo <= ex["g_star_exact"] <= hi
    assert abs(d["g_star_integer"] - ex["g_star_integer"]) <= 1
    assert d["c1"] == d["A1"] and d["budget"] == 256
    assert isinstance(ex["covered_by_grid_fit"], bool) and set(ex["covered"]) == {"A1", "A2", "A3", "g_star_exact"}
    assert "grid cell" in err and "done in" in err          # progress on stderr, not stdout


@pytest.mark.slow
def test_text_report_explains_recommendation(capsys):
    rc, out, err = _run(capsys, ["--source", "bandit", "--replicates", "0", "--budget", "512"])
    assert rc == 0, err
    assert out.startswith("RECOMMENDATION: use G =")
    assert "Why:" in out and "Predicted MSE per G at N = 512" in out and "<- recommended" in out


def test_grid_csv_recovers_constants_and_json_is_stable(tmp_path, capsys):
    path = _grid_csv(tmp_path, noise=1e-9)
    rc, out, err = _run(capsys, [str(path), "--format", "json"])
    assert rc == 0, err
    d = json.loads(out)
    assert STABLE_KEYS <= set(d)
    np.testing.assert_allclose([d["A1"], d["A2"], d["A3"]], [0.01, 0.4, 0.4], rtol=1e-6)
    assert d["g_star_exact"] == pytest.approx(1 + math.sqrt(40), rel=1e-6)
    assert d["g_star_integer"] == 7 and d["budget"] == 256
    import hashlib
    assert d["input_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_divisors_only_and_paper_form(tmp_path, capsys):
    path = _grid_csv(tmp_path, noise=1e-9)
    rc, out, _ = _run(capsys, [str(path), "--format", "json", "--divisors-only"])
    d = json.loads(out)
    assert rc == 0 and 256 % d["g_star_integer"] == 0 and d["g_star_integer"] == 8
    rc, out, _ = _run(capsys, [str(path), "--format", "json", "--form", "paper"])
    d = json.loads(out)
    assert rc == 0 and d["form"] == "paper" and d["c1"] != d["A1"]   # paper form fitted separately


TABLE2 = {1024: [0.7677, 0.7491, 0.7753, 0.7627, 0.7817, 0.7743],
          2048: [0.7703, 0.7679, 0.7697, 0.7793, 0.7819, 0.7665],
          4096: [0.7691, 0.7713, 0.7701, 0.7673, 0.7703, 0.7757]}


def test_performance_table_2(tmp_path, capsys):
    path = tmp_path / "table2.csv"
    rows = ["budget,num_generations,score,run"] + [
        f"{n},{g},{a},0" for n, accs in TABLE2.items() for g, a in zip([4, 8, 16, 32, 64, 128], accs)]
    path.write_text("\n".join(rows) + "\n")
    rc, out, err = _run(capsys, [str(path), "--format", "json", "--report", str(tmp_path / "rep")])
    assert rc == 0, err
    d = json.loads(out)
    assert d["kind"] == "performance" and STABLE_KEYS <= set(d)
    assert d["recommendation"]["distinguishable"] is False and d["g_star_integer"] is None
    assert d["performance"]["best_observed"] == {"1024": 64, "2048": 64, "4096": 128}
    assert (tmp_path / "rep" / "score_vs_group_size.png").exists()
    rc, out, _ = _run(capsys, [str(path)])
    assert rc == 0 and "cannot distinguish" in out


def test_markdown_report_and_output_file(tmp_path, capsys):
    path = _grid_csv(tmp_path)
    out_file = tmp_path / "rec.md"
    rc, out, err = _run(capsys, [str(path), "--format", "markdown", "--output", str(out_file),
                                 "--report", str(tmp_path / "rep")])
    assert rc == 0, err
    assert out == "" and out_file.read_text().startswith("# Group-size recommendation")
    assert (tmp_path / "rep" / "mse_vs_group_size.png").stat().st_size > 10_000
    assert "mse_vs_group_size.png" in (tmp_path / "rep" / "report.md").read_text()


def test_netcdf_input(tmp_path, capsys):
    xr = pytest.importorskip("xarray")
    G = np.array([2, 4, 8, 16])
    B = np.array([4, 16])
    A = np.array([0.02, 0.5, 0.6])
    mse = np.stack([optimum.mse_design(b, G) @ A for b in B])            # (B, G)
    for label, pick in (("leave_one_out", []), ("my_rloo", ["--estimator", "my_rloo"])):   # default, or named
        ds = xr.Dataset({"mse": (("estimator", "num_prompts", "num_generations"), np.stack([mse, 2 * mse])),
                         "mse_se": (("estimator", "num_prompts", "num_generations"), np.stack([mse, mse]) * 0.01)},
                        coords={"estimator": [label, "vanilla"], "num_prompts": B, "num_generations": G})
        path = tmp_path / f"grid_{label}.nc"
        ds.to_netcdf(path, engine="h5netcdf")
        rc, out, err = _run(capsys, [str(path), "--format", "json", "--budget", "64", *pick])
        assert rc == 0, err
        np.testing.assert_allclose(json.loads(out)["A1"], 0.02, rtol=1e-6)
    rc, _, err = _run(capsys, [str(path)])                 # no label is guessed: "leave_one_out" is absent
    assert rc == 2 and "estimator 'leave_one_out' not in the file (has: my_rloo, vanilla)" in err
    rc, _, err = _run(capsys, [str(path), "--estimator", "oracle"])
    assert rc == 2 and "estimator 'oracle' not in the file" in err


BAD_CSVS = {
    "missing_column": ("num_prompts,num_generations,loss\n4,2,0.1\n", "missing column(s) 'mse'"),
    "non_numeric": ("num_prompts,num_generations,mse\n4,2,0.1\n2,4,abc\n1,8,0.1\n",
                    "row 2 (line 3), column 'mse': 'abc' is not a number"),
    "nan_mse": ("num_prompts,num_generations,mse\n4,2,0.1\n2,4,nan\n1,8,0.1\n",
                "row 2 (line 3), column 'mse': value is NaN"),
    "negative_mse": ("num_prompts,num_generations,mse\n4,2,0.1\n2,4,-0.2\n1,8,0.1\n",
                     "row 2 (line 3), column 'mse': must be positive"),
    "two_distinct_g": ("num_prompts,num_generations,mse\n4,2,0.1\n2,4,0.2\n1,4,0.1\n",
                       "column 'num_generations' has 2 distinct value(s)"),
    "g_below_2": ("num_prompts,num_generations,mse\n4,1,0.1\n2,4,0.2\n1,8,0.1\n",
                  "row 1 (line 2), column 'num_generations': must be >= 2"),
    "empty_cell": ("num_prompts,num_generations,mse\n4,2,0.1\n2,,0.2\n1,8,0.1\n",
                   "row 2 (line 3), column 'num_generations': empty cell"),
    "budget_column": ("budget,num_generations,score\n1024,4,0.7\n0,8,0.7\n1024,16,0.7\n",
                      "row 2 (line 3), column 'budget': must be positive"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_input_one_line_exit_2(tmp_path, capsys, case):
    text, msg = BAD_CSVS[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    rc, out, err = _run(capsys, [str(path)])
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and msg in lines[0], lines[0]


@pytest.mark.parametrize("argv, msg", [
    (["--budget", "0"], "--budget must be at least 2"),
    (["--budget", "-5"], "--budget must be at least 2"),
    (["/nonexistent/grid.csv"], "/nonexistent/grid.csv: no such file"),
    (["--form", "weird"], "invalid choice"),
    (["--model", "/nonexistent/model"], "/nonexistent/model: not a directory"),
    (["--source", "bandit", "--model", "/tmp"], "--model is not an option of the built-in toy bandit"),
    (["--first-question", "-1"], "--first-question must be >= 0"),
    (["--source", "bandit", "--temperature", "0.5"], "--temperature is not an option of the built-in toy bandit"),
    # an option the chosen mode does not use is an error naming the mode, never silently ignored
    (["grid.csv", "--temperature", "0.7"], "--temperature is not an option of reading a measurements FILE"),
    (["--dataset", "d.jsonl", "--reward", "arithmetic", "--template", "few_shot"],
     "--template is not an option of your dataset"),
    (["--dataset", "d.jsonl", "--reward", "arithmetic", "--first-question", "3"],
     "--first-question is not an option of your dataset"),
    (["--chat-template-kwargs", "{}"], "--chat-template-kwargs is not an option of the built-in arithmetic task"),
    (["--model", "/tmp", "--variant", "weak"], "--variant chooses a built-in model"),
    (["--lora-alpha", "8"], "options of --lora-r"),
    (["--num-generations", "0,1"], "group sizes must be >= 2"),
    (["--temperature", "-1", "--num-prompts", "3", "--samples-per-prompt", "4"], "temperature must be > 0"),
    (["--min-prompts", "64"], "--min-prompts is an option of --target-width"),
    (["--target-width", "0.5", "--min-prompts", "2"], "--min-prompts must be >= 3"),
    (["--variant", "huge"], "invalid choice"),
])
def test_bad_usage_exit_2(capsys, argv, msg):
    rc, out, err = _run(capsys, argv)
    assert rc == 2 and msg in err and "Traceback" not in err


def test_help_documents_formats(capsys):
    rc, out, _ = _run(capsys, ["--help"])
    assert rc == 0
    for s in ("num_prompts,num_generations,mse", "budget,num_generations,score", "NetCDF", "--budget",
              "--divisors-only", "--report", "exit codes"):
        assert s in out


def test_lm_source_missing_module_exit_1(capsys, monkeypatch):
    import ustat_grpo.policies
    if "lm" in vars(ustat_grpo.policies):                       # an earlier test imported it
        monkeypatch.delattr(ustat_grpo.policies, "lm")
    monkeypatch.setitem(sys.modules, "ustat_grpo.policies.lm", None)     # import raises ImportError
    rc, out, err = _run(capsys, ["--source", "lm"])
    assert rc == 1 and "ustat_grpo.policies.lm" in err and "Traceback" not in err


class _BanditTask:
    """A stand-in sampler for the CLI's plumbing (the real one is tested end to end below)."""

    def __init__(self, samples_per_prompt):
        from ustat_grpo.policies.bandits import default_bandit
        from ustat_grpo.measurement.pilot import BanditSampler

        self.inner = BanditSampler(default_bandit(), samples_per_prompt)
        self.samples_per_prompt = samples_per_prompt
        self.data = types.SimpleNamespace(source="toy")

    def __call__(self, p, seq):
        return self.inner(p, seq)

    def describe(self):
        return self.inner.describe()


def test_lm_source_plumbing_and_samples_advice(capsys, monkeypatch):
    """Seed and sizes reach the pilot; the samples-per-prompt advice is measured on the pilot's own
    samples (checked against an independent call on the same per-prompt streams)."""
    from ustat_grpo.policies.bandits import default_bandit
    from ustat_grpo.theory.mse import constants
    from ustat_grpo.measurement.samples_per_prompt import choose_samples_per_prompt
    calls = {}

    def build(opts, mode):
        calls.update(num_prompts=opts.num_prompts, seed=opts.seed, model=opts.model, mode=mode)
        return _BanditTask(opts.samples_per_prompt or 64), opts.num_prompts

    monkeypatch.setattr(fs, "build_sampler", build)
    rc, out, err = _run(capsys, ["--source", "lm", "--num-prompts", "64", "--samples-per-prompt", "64",
                                 "--format", "json", "--seed", "3"])
    assert rc == 0, err
    d = json.loads(out)
    assert calls == {"num_prompts": 64, "seed": 3, "model": None, "mode": "builtin"}
    A = np.asarray(constants(default_bandit().moments()))[:3]
    assert d["g_star_exact_interval"][0] <= 1 + (A[2] / A[0]) ** 0.5 <= float(d["g_star_exact_interval"][1])
    streams = np.random.SeedSequence(3).spawn(64)
    draws = [_BanditTask(64)(p, streams[p]) for p in range(64)]
    ref = choose_samples_per_prompt(np.stack([x.rewards for x in draws]), np.stack([x.scores for x in draws]), rng=3)
    assert d["samples_per_prompt"]["optimum"] == ref.optimum and d["samples_per_prompt"]["ratio"] == ref.ratio
    assert d["command"].endswith("--num-prompts 64 --samples-per-prompt 64 --format json --seed 3")
    assert d["options"]["seed"] == 3 and d["options"]["mode"] == "builtin"
    rc, out, err = _run(capsys, ["--source", "lm", "--num-prompts", "64", "--samples-per-prompt", "64", "--seed", "3"])
    assert rc == 0 and f"next pilot: samples per prompt: measured optimum M* = {ref.optimum}" in out
    rc, out, err = _run(capsys, ["--source", "lm", "--num-prompts", "16", "--format", "json"])
    assert rc == 0 and "samples_per_prompt" not in json.loads(out)       # too small a pilot to measure M*


@pytest.mark.parametrize("kw, m", [({}, 64), ({"target_width": 0.5}, 8),
                                   ({"target_width": 0.5, "samples_per_prompt": 16}, 16)])
def test_adaptive_lm_pilot_defaults_to_eight_samples_per_prompt(monkeypatch, kw, m):
    """``--target-width`` without ``--samples-per-prompt`` spreads the pilot over more prompts (M = 8,
    whose intervals covered on the built-in model where M = 16 did not); a given M is kept."""
    from ustat_grpo.measurement import sampler
    from ustat_grpo.measurement.measure import measure_lm
    from ustat_grpo.measurement.pilot import ADAPTIVE_SAMPLES_PER_PROMPT, lm_pilot_size

    assert ADAPTIVE_SAMPLES_PER_PROMPT == 8
    P, M = lm_pilot_size(None, kw.get("samples_per_prompt"), adaptive="target_width" in kw)
    assert M == m and P == (1024 if kw else 500)
    seen = []

    class Sampler(_BanditTask):
        def check_prompts(self, num_prompts):
            pass

    def arithmetic_sampler(model=None, *, samples_per_prompt, **_):
        seen.append(samples_per_prompt)
        return Sampler(samples_per_prompt)

    monkeypatch.setattr(sampler, "arithmetic_sampler", arithmetic_sampler)
    res = measure_lm(num_prompts=24, **kw)              # a cap below the rule's 512 prompts
    assert seen == [m] and f"x {m} rollouts" in res.description
    if kw:     # a target met as soon as the interval is bounded (M = 16 here): the rule waits for 512
        res = measure_lm(num_prompts=600, target_width=1e3, samples_per_prompt=16)
        assert res.constants.num_prompts == 512
        res = measure_lm(num_prompts=600, target_width=1e3, samples_per_prompt=16, min_prompts=200)
        assert 208 <= res.constants.num_prompts < 512    # asked from the first batch (16) past 200 on


def test_device_map_reaches_the_lm_loader(capsys, monkeypatch, tmp_path):
    """``--model DIR --device-map MAP`` hands the map (a name, or a JSON object as a dict) to the loader."""
    from ustat_grpo.measurement import measure
    seen = []

    def task_policy(model=None, *, device_map=None, **_):
        seen.append(device_map)
        raise ValueError("stop here")

    monkeypatch.setattr(measure, "task_policy", task_policy)
    for arg in ("auto", '{"": 0}'):
        rc, _, err = _run(capsys, ["--model", str(tmp_path), "--device-map", arg, "--num-prompts", "16"])
        assert rc == 2 and "stop here" in err, err
    assert seen == ["auto", {"": 0}]


def test_no_argument_default_is_the_builtin_lm(capsys):
    """The real path: built-in transformer, sampled completions, vmap(grad) scores, projected."""
    argv = ["--num-prompts", "6", "--samples-per-prompt", "8", "--variant", "weak", "--format", "json",
            "--seed", "5", "--projection-dim", "32"]
    rc, out, err = _run(capsys, argv)
    assert rc == 0, err
    d = json.loads(out)
    assert "builtin:weak" in d["source"] and "6 prompts x 8 completions" in d["constants_source"]
    assert np.isfinite([d["A1"], d["A2"], d["A3"]]).all() and d["A2"] > 0
    assert "pilot: 6 prompts x 8 completions" in err                  # progress on stderr
    assert d["card"]["task"] == "arithmetic" and d["card"]["reward"]["names"] == ["arithmetic_reward"]
    rc2, out2, _ = _run(capsys, argv)                                  # same seed, same numbers
    d2 = json.loads(out2)
    assert rc2 == 0 and {k: v for k, v in d.items() if k != "runtime_s"} == \
        {k: v for k, v in d2.items() if k != "runtime_s"}


def test_bandit_pilot_of_another_configuration_is_exit_2(capsys, tmp_path):
    path = str(tmp_path / "b.nc")
    base = ["--source", "bandit", "--replicates", "0", "--num-prompts", "8", "--pilot", path]
    assert _run(capsys, base + ["--samples-per-prompt", "16"])[0] == 0
    rc, out, err = _run(capsys, base + ["--samples-per-prompt", "8"])
    assert rc == 2 and "another configuration (samples_per_prompt 16 (file) vs 8 (now))" in err and "Traceback" not in err
