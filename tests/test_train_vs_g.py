"""simulations/train_vs_g.py in its quick setting, and the Gstar-training paper check on its output."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

from simulations import train_vs_g as T


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_vs_g")
    assert T.main(["--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_quick_grid_writes_netcdf_summary_and_figure(quick):
    for name in ("train_vs_g.nc", "summary.json", "train_vs_g.png"):
        assert (quick / name).stat().st_size > 0
    with xr.open_dataset(quick / "train_vs_g.nc") as ds:
        assert dict(ds.sizes) == {"setting": 1, "num_generations": 3, "seed": 3, "step": 6, "eval_step": 3}
        assert list(ds.advantage.values) == ["rloo"] and list(ds.learning_rate.values) == [1e-3]
        assert np.all(np.isfinite(ds.p_canonical)) and np.all((ds.p_canonical > 0) & (ds.p_canonical < 1))
        assert np.all(np.isfinite(ds.auc)) and ds.attrs["seed"] == str(T.Config().seed)
        np.testing.assert_allclose(ds.auc, T.auc(ds.p_canonical.values, ds.eval_step.values))
    summary = json.loads((quick / "summary.json").read_text())
    c = summary["constants"]
    A = np.asarray(c["A"])
    g = np.asarray(c["groups"], float)
    np.testing.assert_allclose(c["predicted_mse"], (A[0] * g + A[1] + A[2] / (g - 1)) / summary["config"]["budget"])
    assert [r["step"] for r in summary["drift"]["rows"]] == [0, 6]


@pytest.mark.slow
def test_reanalysis_from_the_netcdf_and_cached_cells_give_the_same_numbers(quick, capsys):
    summary = json.loads((quick / "summary.json").read_text())
    grid, consts, cfg, _ = T.load(quick / "train_vs_g.nc")
    again = T.analyse(grid, consts["recommended"], consts["predicted_mse"], cfg["level"], consts.get("criteria"))
    assert json.loads(json.dumps(again, default=float)) == summary["analysis"]
    cached = T.run_grid(T.Config(**{**cfg, "out": str(quick)}), progress=False)   # every cell from out/cells
    for k in ("p_canonical", "reward", "grad_norm"):
        np.testing.assert_array_equal(cached[k], grid[k])
    assert len(os.listdir(quick / "cells")) == 9
    assert T.main(["--reanalyse", str(quick / "train_vs_g.nc"), "--no-plot"]) == 0
    assert "not significantly worse" in capsys.readouterr().out


@pytest.mark.slow
def test_gstar_training_check_reads_a_stored_result(quick, monkeypatch):
    from paper_checks import load_all, run_check

    monkeypatch.setenv("USTAT_GRPO_TRAIN_VS_G", str(quick / "train_vs_g.nc"))
    out = run_check(load_all()["Gstar-training"])
    a = out.details["analysis"]
    assert out.passed == all(r["passed"] for r in a.values() if r["advantage"] == "rloo")
    for r in a.values():
        assert r["passed"] == (r["recommended_in_best_set"] and all(r["power_guard"].values()))
    assert "best G" in out.observed


def test_bad_group_grid_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        T.main(["--groups", "2,3", "--budget", "16"])
    assert e.value.code == 2


def test_stored_result_passes_the_gstar_training_check(monkeypatch):
    """The committed grid (docs/results/train_vs_g.nc) re-analysed by today's code: the check passes."""
    from paper_checks import load_all, run_check
    from paper_checks.check_training import STORED

    monkeypatch.delenv("USTAT_GRPO_TRAIN_VS_G", raising=False)
    assert os.path.exists(STORED), "docs/results/train_vs_g.nc is missing"
    out = run_check(load_all()["Gstar-training"])
    assert out.passed, out.observed
    assert out.details["num_seeds"] == 10 and out.details["constants"]["recommended"] == 4


@pytest.fixture(scope="module")
def quick_std(tmp_path_factory):
    """TRL's default trainer (std-normalised advantage, loss_type='dapo') on the quick grid."""
    out = tmp_path_factory.mktemp("train_vs_g_std")
    args = ["--groups", "2,4,8", "--budget", "16", "--steps", "6", "--seeds", "3", "--settings", "grpo:1e-3:dapo",
            "--eval-every", "3", "--num-eval", "32", "--constants-prompts", "24", "--constants-samples", "8",
            "--drift", "", "--workers", "1", "--no-plot", "--out", str(out)]
    assert T.main(args) == 0
    return out


@pytest.mark.slow
def test_std_grid_records_loss_type_and_the_scale_free_criterion(quick_std):
    with xr.open_dataset(quick_std / "train_vs_g.nc") as ds:
        assert list(ds.loss_type.values) == ["dapo"] and list(ds.setting.values) == ["grpo/lr=0.001/dapo"]
    summary = json.loads((quick_std / "summary.json").read_text())
    r = summary["analysis"]["grpo/lr=0.001/dapo"]
    assert r["criterion_estimator"] == "std_normalized" and len(r["criterion"]) == 3
    crit = summary["constants"]["criteria"]
    assert crit["estimators"] == ["leave_one_out", "std_normalized", "group_mean"]
    np.testing.assert_allclose(crit["criterion"][2], crit["criterion"][0], rtol=1e-9)   # Dr.GRPO = leave-one-out
    grid, consts, cfg, _ = T.load(quick_std / "train_vs_g.nc")
    assert grid["settings"] == [("grpo", 1e-3, "dapo")]
    again = T.analyse(grid, consts["recommended"], consts["predicted_mse"], cfg["level"], consts["criteria"])
    assert json.loads(json.dumps(again, default=float)) == summary["analysis"]


@pytest.mark.slow
def test_gstar_training_std_check_reads_a_stored_result(quick_std, monkeypatch):
    from paper_checks import load_all, run_check

    monkeypatch.setenv("USTAT_GRPO_TRAIN_VS_G_STD", str(quick_std / "train_vs_g.nc"))
    out = run_check(load_all()["Gstar-training-std"])
    r = out.details["analysis"]["grpo/lr=0.001/dapo"]
    assert out.passed == (r["criterion_recommended_in_best_set"] and r["power_guard"]["effect_significant"])
    assert "criterion picks G" in out.observed


def test_stored_std_result_passes_the_gstar_training_std_check(monkeypatch):
    """The committed std-normalised / dapo grid (docs/results/train_vs_g_std.nc) re-analysed by today's code."""
    from paper_checks import load_all, run_check
    from paper_checks.check_training import STORED_STD

    monkeypatch.delenv("USTAT_GRPO_TRAIN_VS_G_STD", raising=False)
    assert os.path.exists(STORED_STD), "docs/results/train_vs_g_std.nc is missing"
    out = run_check(load_all()["Gstar-training-std"])
    assert out.passed, out.observed
    r = out.details["analysis"]["grpo/lr=0.0003/dapo"]
    assert out.details["num_seeds"] == 10 and r["loss_type"] == "dapo"
    assert r["criterion_recommended"] in r["comparison"]["best_set"]
