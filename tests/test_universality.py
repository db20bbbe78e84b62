"""The committed simulation simulations/universality.py (Theorem 7 / Figure 5) on a tiny grid."""
import json

import pytest


def test_universality_script_tiny_grid(tmp_path, capsys):
    # the committed simulation script: provenance, dims and the Table-2 analogue on a tiny grid
    xr = pytest.importorskip("xarray")
    from simulations import universality as mod
    out = tmp_path / "u"
    rc = mod.main(["--budgets", "24", "--group-sizes", "2,4,8,12", "--iterations", "20,40", "--replicates", "4",
                   "--seed", "5", "--out", str(out)])
    assert rc == 0
    ds = xr.load_dataset(out / "universality.nc")
    assert ds["gap"].dims == ("budget", "iteration", "num_generations", "replicate")
    assert ds["gap"].shape == (1, 2, 4, 4) and bool((ds["gap"] >= 0).all())
    assert ds.attrs["seed"] == "5" and json.loads(ds.attrs["config"])["replicates"] == 4
    assert float(ds.attrs["g_star_predicted"]) == pytest.approx(5.12, abs=0.01)
    assert (out / "universality.png").stat().st_size > 10_000
    assert "Table-2 analogue" in capsys.readouterr().out
    assert mod.main(["--group-sizes", "2,5", "--out", str(out)]) == 2
