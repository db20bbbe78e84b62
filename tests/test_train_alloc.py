"""simulations/train_alloc.py (rollout allocation in training, issue #23) and the Alloc-training check."""
from __future__ import annotations

import json
import os
import shlex
import sys

import numpy as np
import pytest
import xarray as xr

from paper_checks.check_training_alloc import same
from simulations import train_alloc as T
from ustat_grpo.policies import arithmetic

import _gen_evidence


def test_category_pieces_are_per_category_means():
    cats = np.array(["a", "b", "a", "b", "b"])
    z = np.array([[1, 0], [0, 0], [1, 1], [1, 0], [0, 0]], float)
    out = T.category_pieces(cats, z, [1.0, 2.0, 3.0, 4.0, 6.0], [0.5, 1.0, 1.5, 2.0, 3.0], cats=("a", "b"))
    assert out["num_prompts"] == [2, 3]
    np.testing.assert_allclose(out["pass_rate"], [0.75, 1 / 6])
    np.testing.assert_allclose(out["a2"], [2.0, 4.0])
    np.testing.assert_allclose(out["a3"], [1.0, 2.0])
    with pytest.raises(ValueError, match="category 'c'"):
        T.category_pieces(cats, z, np.ones(5), np.ones(5), cats=("a", "b", "c"))


def test_predicted_mse_of_the_uniform_rule_is_the_scaling_law_and_ustat_is_never_worse():
    """Uniform: A1/B + mean_c(a2_c)/(BG) + mean_c(a3_c)/(BG(G-1)) up to the Monte Carlo over compositions
    (z-bound); the U-statistic rule minimises the same objective, so its prediction is <= uniform's."""
    pilot = dict(categories=list(arithmetic.CATEGORIES), A=[2.0, 0.0, 0.0], a2=[1.0, 4.0, 9.0, 16.0, 25.0],
                 a3=[10.0, 0.0, 5.0, 0.0, 20.0], pass_rate=[0.1, 0.3, 0.5, 0.7, 0.9])
    B, N, G = 8, 32, 4
    draws = 4000
    u = T.predicted_mse(pilot, "uniform", N, B, draws=draws, seed=1)
    exact = 2.0 / B + np.mean(pilot["a2"]) / (B * G) + np.mean(pilot["a3"]) / (B * G * (G - 1))
    # per-draw term: (1/B^2) sum_i (a2_i/G + a3_i/(G(G-1))), i.i.d. categories: its sd is sd_c / (B^{1/2} B)
    per_q = np.asarray(pilot["a2"]) / G + np.asarray(pilot["a3"]) / (G * (G - 1))
    se = per_q.std() / np.sqrt(B) / B / np.sqrt(draws)
    assert abs(u["mse"] - exact) < 4 * se
    assert u["mean_size"] == [G] * 5
    s = T.predicted_mse(pilot, "ustat", N, B, draws=draws, seed=1)
    assert s["mse"] <= u["mse"] and s["mean_size"][4] > s["mean_size"][1]    # more rollouts where a2, a3 are large


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_alloc")
    assert T.main(["--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_quick_grid_writes_netcdf_summary_and_figure(quick):
    for name in ("train_alloc.nc", "summary.json", "train_alloc.png"):
        assert (quick / name).stat().st_size > 0
    with xr.open_dataset(quick / "train_alloc.nc") as ds:
        assert dict(ds.sizes)["rule"] == 4 and ds.sizes["seed"] == 3 and ds.sizes["step"] == 4
        np.testing.assert_array_equal(ds.group_sizes.sum("question"), 16)     # the budget, every step and rule
        np.testing.assert_array_equal(ds.group_sizes.sel(rule="uniform"), ds.recommended.values[0])
        np.testing.assert_allclose(ds.auc, T.auc(ds.p_canonical.values, ds.eval_step.values))
        assert ds.attrs["seed"] == str(T.Config().seed)
        assert ds.attrs["command"] == shlex.join([sys.executable, *sys.argv])   # the command that ran (here pytest's)
    summary = json.loads((quick / "summary.json").read_text())
    grid, pilots, predicted, cfg, _ = T.load(quick / "train_alloc.nc")
    again = T.analyse(grid, pilots, predicted, cfg["level"])
    assert same(json.loads(json.dumps(again, default=float)), summary["analysis"])
    details = "\n".join(_gen_evidence.load().allocation_details(summary))     # the evidence page's tables
    assert details.count("| weak (G\\* = ") == 4 and details.count("| weak | ") == 1
    cached = T.run_grid(T.Config(**{**cfg, "out": str(quick)}), pilots, progress=False)   # every cell cached
    for k in ("p_canonical", "reward", "group_sizes"):
        np.testing.assert_array_equal(cached[k], grid[k])


@pytest.mark.slow
def test_alloc_training_check_reads_a_stored_result(quick, monkeypatch):
    from paper_checks import load_all, run_check

    monkeypatch.setenv("USTAT_GRPO_TRAIN_ALLOC", str(quick / "train_alloc.nc"))
    out = run_check(load_all()["Alloc-training"])
    assert out.passed and out.details["reproduced"] and "U-statistic allocation" in out.observed


def test_same_is_exact_equality_with_nan_equal_to_nan():
    assert same({"a": [1.0, float("nan")], "b": {"c": "x"}}, {"a": [1.0, float("nan")], "b": {"c": "x"}})
    assert not same({"a": [1.0, 2.0]}, {"a": [1.0, 2.0 + 1e-15]})
    assert not same({"a": 1.0}, {"a": 1.0, "b": 2.0}) and not same([1.0], [1.0, 1.0])


def test_bad_rules_are_a_usage_error():
    with pytest.raises(SystemExit) as e:
        T.main(["--rules", "uniform,magic"])
    assert e.value.code == 2


def test_stored_result_reproduces_under_the_alloc_training_check(monkeypatch):
    """The committed grid (docs/results/train_alloc.nc) re-analysed by today's code."""
    from paper_checks import load_all, run_check
    from paper_checks.check_training_alloc import STORED

    monkeypatch.delenv("USTAT_GRPO_TRAIN_ALLOC", raising=False)
    assert os.path.exists(STORED), "docs/results/train_alloc.nc is missing"
    out = run_check(load_all()["Alloc-training"])
    assert out.passed, out.observed
    d = out.details
    assert d["num_seeds"] >= 10 and d["budget"] == 64 and d["conclusion"] == d["stored_conclusion"]
    assert set(d["analysis"]) == {"weak", "strong"}
    for r in d["analysis"].values():
        assert r["rules"] == ["uniform", "ustat", "knapsack", "pass_rate"]
        assert r["ustat_beats_uniform"] == (r["per_rule"]["ustat"]["difference_to_uniform"]["auc"]["ci"][0] > 0)
    with open(os.path.join(os.path.dirname(STORED), "train_alloc_summary.json")) as f:
        assert json.load(f)["conclusion"] == d["conclusion"]
