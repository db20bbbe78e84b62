"""Tests for ustat_grpo.core.provenance (the one NetCDF writer) and ustat_grpo.core._serialize (the one JSON converter)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from ustat_grpo import __version__
from ustat_grpo.core._serialize import jsonable
from ustat_grpo.core.provenance import REQUIRED_ATTRS, provenance_attrs, write_netcdf


def _dataset():
    rng = np.random.default_rng(1)
    return xr.Dataset({"x": (("i",), rng.normal(size=5))}, coords={"i": np.arange(5)})


def test_write_netcdf_adds_provenance_atomically(tmp_path):
    ds = _dataset()
    prov = provenance_attrs(seed=2 ** 40, config={"a": (1, 2)}, command="pytest")
    path = write_netcdf(ds, tmp_path / "sub" / "x.nc", provenance=prov)
    assert not ds.attrs                                             # the input is not modified
    back = xr.load_dataset(path, engine="h5netcdf")
    np.testing.assert_array_equal(back.x.values, ds.x.values)
    assert back.attrs["seed"] == str(2 ** 40) and back.attrs["package_version"] == __version__
    assert json.loads(back.attrs["config"]) == {"a": [1, 2]} and back.attrs["command"] == "pytest"
    assert set(REQUIRED_ATTRS) <= set(back.attrs)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.nc"]   # no temporary file left


def test_write_netcdf_refuses_a_dataset_without_provenance(tmp_path):
    with pytest.raises(ValueError, match="provenance"):
        write_netcdf(_dataset(), tmp_path / "x.nc")
    assert not list(tmp_path.iterdir())


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_netcdf(_dataset(), tmp_path / "x.nc", provenance=provenance_attrs(seed=1, config={}))
    before = (tmp_path / "x.nc").read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        write_netcdf(_dataset(), path, provenance=provenance_attrs(seed=2, config={}))
    assert (tmp_path / "x.nc").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.nc"]


def test_jsonable_rules():
    x = {"arr": np.array([[1.0, -np.inf], [np.nan, 2.0]]), "t": (np.float32(0.5), np.int64(3)),
         "inf": math.inf, "s": "inf", "none": None, "flag": np.bool_(True), "nested": {"k": [np.float64(1.5)]}}
    out = jsonable(x)
    assert out == {"arr": [[1.0, "-inf"], ["nan", 2.0]], "t": [0.5, 3], "inf": "inf", "s": "inf",
                   "none": None, "flag": True, "nested": {"k": [1.5]}}
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert type(out["t"][1]) is int and type(out["flag"]) is bool
