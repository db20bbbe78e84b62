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


def test_reanalysis_from_the_netcdf_and_cached_cells_give_the_same_numbers(quick, capsys):
    summary = json.loads((quick / "summary.json").read_text())
    grid, consts, cfg, _ = T.load(quick / "train_vs_g.nc")
    again = T.analyse(grid, consts["recommended"], consts["predicted_mse"], cfg["level"])
    assert json.loads(json.dumps(again, default=float)) == summary["analysis"]
    cached = T.run_grid(T.Config(**{**cfg, "out": str(quick)}), progress=False)   # every cell from out/cells
    for k in ("p_canonical", "reward", "grad_norm"):
        np.testing.assert_array_equal(cached[k], grid[k])
    assert len(os.listdir(quick / "cells")) == 9
    assert T.main(["--reanalyse", str(quick / "train_vs_g.nc"), "--no-plot"]) == 0
    assert "not significantly worse" in capsys.readouterr().out


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
