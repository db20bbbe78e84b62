"""Read and validate a user's measurements file: an MSE grid or a performance table.

Formats (one row per grid cell or run; other columns are ignored):

* MSE grid CSV: ``num_prompts,num_generations,mse[,mse_se]``;
* performance table CSV: ``budget,num_generations,score[,run]`` (like the paper's Table 2);
* NetCDF: the output of :func:`ustat_grpo.experiments.montecarlo.run_grid` (variables ``mse`` [and
  ``mse_se``] over dims ``num_generations``, ``num_prompts`` and optionally ``estimator``).

Bad input raises ``ValueError`` (a missing file ``FileNotFoundError``) with one line naming the
file, row and column; the command line maps these to exit code 2.
"""
from __future__ import annotations

import csv
import math
import os

import numpy as np

__all__ = ["GRID_COLUMNS", "PERF_COLUMNS", "load_measurements"]

GRID_COLUMNS = ("num_prompts", "num_generations", "mse")
PERF_COLUMNS = ("budget", "num_generations", "score")


def _parse_number(path, row, line, col, text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: row {row} (line {line}), column '{col}': {text!r} is not a number") from None
    if math.isnan(v):
        raise ValueError(f"{path}: row {row} (line {line}), column '{col}': value is NaN")
    if math.isinf(v):
        raise ValueError(f"{path}: row {row} (line {line}), column '{col}': value is infinite")
    return v


def _load_csv(path):
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValueError(f"{path}: file is empty") from None
            body = [r for r in reader]
    except OSError as exc:
        raise type(exc)(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text CSV file") from None
    cols = set(header)
    if set(GRID_COLUMNS) <= cols:
        kind, need, opt = "mse", GRID_COLUMNS, ("mse_se",)
    elif set(PERF_COLUMNS) <= cols:
        kind, need, opt = "performance", PERF_COLUMNS, ("run",)
    else:
        miss_g = [c for c in GRID_COLUMNS if c not in cols]
        miss_p = [c for c in PERF_COLUMNS if c not in cols]
        miss = miss_g if len(miss_g) <= len(miss_p) else miss_p
        raise ValueError(f"{path}: missing column(s) {', '.join(repr(m) for m in miss)} (found: "
                         f"{', '.join(header) or 'none'}); expected num_prompts,num_generations,mse[,mse_se] "
                         "or budget,num_generations,score[,run]")
    idx = {c: header.index(c) for c in need + opt if c in cols}
    data = {c: [] for c in idx}
    rows = []
    for i, r in enumerate(body, start=1):
        line = i + 1
        if not any(x.strip() for x in r):
            continue  # blank line
        rows.append((i, line))
        for c, j in idx.items():
            if j >= len(r) or r[j].strip() == "":
                raise ValueError(f"{path}: row {i} (line {line}), column '{c}': empty cell")
            if c == "run":
                data[c].append(r[j].strip())
            else:
                data[c].append(_parse_number(path, i, line, c, r[j].strip()))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    arrays = {c: (np.array(v, dtype=object) if c == "run" else np.array(v, float)) for c, v in data.items()}
    _validate(path, kind, arrays, rows)
    return kind, arrays


def _validate(path, kind, a, rows):
    def bad(mask, col, what):
        k = int(np.flatnonzero(mask)[0])
        i, line = rows[k]
        loc = f"row {i} (line {line})" if line is not None else f"cell {i}"
        raise ValueError(f"{path}: {loc}, column '{col}': {what} (got {a[col][k]:g})")

    g = a["num_generations"]
    if np.any(g < 2):
        bad(g < 2, "num_generations", "must be >= 2 (GRPO needs at least two generations per prompt)")
    if np.any(g != np.round(g)):
        bad(g != np.round(g), "num_generations", "must be an integer")
    if kind == "mse":
        if np.any(a["num_prompts"] < 1):
            bad(a["num_prompts"] < 1, "num_prompts", "must be >= 1")
        if np.any(a["mse"] <= 0):
            bad(a["mse"] <= 0, "mse", "must be positive")
        if "mse_se" in a and np.any(a["mse_se"] <= 0):
            bad(a["mse_se"] <= 0, "mse_se", "must be positive")
    else:
        if np.any(a["budget"] <= 0):
            bad(a["budget"] <= 0, "budget", "must be positive")
    distinct = sorted(set(g.astype(int).tolist()))
    if len(distinct) < 3:
        raise ValueError(f"{path}: column 'num_generations' has {len(distinct)} distinct value(s) "
                         f"{distinct}; need at least 3 to fit the scaling law")


def _load_netcdf(path, estimator):
    import xarray as xr

    from ..measurement.pilot import PILOT_ATTR, load_pilot

    try:
        ds = xr.load_dataset(path)
    except Exception as exc:  # any reader failure is bad input, reported in one line
        raise ValueError(f"{path}: cannot read as NetCDF ({type(exc).__name__}: {exc})") from None
    if PILOT_ATTR in ds.attrs:                     # per-prompt statistics of a pilot (ustat_grpo.measurement.pilot)
        stats, attrs = load_pilot(path)
        return "pilot", {"statistics": stats, "attrs": attrs}
    if "mse" not in ds:
        raise ValueError(f"{path}: missing variable 'mse' (found: {', '.join(map(str, ds.data_vars))})")
    for d in ("num_generations", "num_prompts"):
        if d not in ds["mse"].dims:
            raise ValueError(f"{path}: variable 'mse' lacks dimension '{d}' (dims: {ds['mse'].dims})")
    if "estimator" in ds["mse"].dims:
        names = [str(x) for x in ds["estimator"].values]
        if estimator not in names:
            raise ValueError(f"{path}: estimator {estimator!r} not in the file (has: {', '.join(names)})")
        ds = ds.sel(estimator=estimator)
    mse = ds["mse"].transpose("num_prompts", "num_generations", ...)
    if mse.ndim != 2:
        raise ValueError(f"{path}: variable 'mse' has extra dimensions {mse.dims}; select one slice first")
    se = ds["mse_se"].transpose("num_prompts", "num_generations") if "mse_se" in ds else None
    B, G = np.meshgrid(ds["num_prompts"].values.astype(float), ds["num_generations"].values.astype(float),
                       indexing="ij")
    y = mse.values.astype(float)
    keep = ~np.isnan(y)
    a = {"num_prompts": B[keep], "num_generations": G[keep], "mse": y[keep]}
    if se is not None:
        a["mse_se"] = se.values.astype(float)[keep]
        if np.any(np.isnan(a["mse_se"])):
            raise ValueError(f"{path}: variable 'mse_se' is NaN where 'mse' is not")
    cells = [(f"num_prompts={int(b)}, num_generations={int(g)}", None)
             for b, g in zip(a["num_prompts"], a["num_generations"])]
    _validate(path, "mse", a, cells)
    return "mse", a


def load_measurements(path: str, *, estimator: str = "leave_one_out"):
    """Read and validate a measurements file.

    Returns
    -------
    kind : "mse", "performance" or "pilot"
    arrays : dict of 1-D ndarrays, one entry per column (``run`` as objects); for a pilot file
        ``{"statistics": PromptStatistics, "attrs": dict}``

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Missing column, non-numeric or out-of-range cell, fewer than three distinct ``G``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if path.endswith((".nc", ".nc4", ".netcdf")) or magic.startswith((b"CDF", b"\x89HDF")):
        return _load_netcdf(path, estimator)
    return _load_csv(path)
