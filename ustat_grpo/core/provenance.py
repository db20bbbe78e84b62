"""How an output was made: provenance attributes and the one NetCDF writer of the package.

Every NetCDF file that the package or its simulation scripts write goes through
:func:`write_netcdf`, which refuses a dataset without the attributes of :func:`provenance_attrs`
(STYLE.md, "Monte Carlo outputs": seed as a string, package version, git describe, command line,
config JSON, creation time) and replaces the target atomically, so an interrupted write never
leaves a truncated file behind.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping

__all__ = ["provenance_attrs", "git_describe", "write_netcdf", "REQUIRED_ATTRS", "sha256_file", "sha256_json"]

#: Global attributes that :func:`write_netcdf` requires.
REQUIRED_ATTRS = ("seed", "package_version", "git_describe", "command", "config", "created")


@functools.lru_cache(maxsize=None)
def git_describe() -> str:
    """``git describe --always --dirty --tags`` of the package's checkout, or ``"unknown"``.

    Run once per process and remembered: a process runs the code it imported, so an edit of the
    checkout after that does not change what produced its results (and every ``run_grid`` call
    of a grid would otherwise start a ``git`` subprocess)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance_attrs(*, seed, config: dict, command: str | None = None) -> dict:
    """NetCDF global attributes: seed (string), version, git describe, command, config JSON, time.

    ``seed`` is stored as a string (NetCDF3 rejects int64 >= 2**31); ``command`` defaults to
    ``sys.argv``.  ``created`` is the only attribute that changes between identical runs.
    """
    from ._version import __version__

    return {
        "seed": str(seed),
        "package_version": __version__,
        "git_describe": git_describe(),
        "command": command if command is not None else shlex.join([sys.executable, *sys.argv]),
        "config": json.dumps(config, sort_keys=True, default=str),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "Conventions": "CF-1.8",
    }


def write_netcdf(ds, path, *, provenance: Mapping | None = None) -> str:
    """Write ``ds`` as NetCDF4 (h5netcdf engine) atomically, with provenance attributes.

    Parameters
    ----------
    ds : xarray.Dataset
        Not modified.
    path : str or path-like
        Target file; its directory is created if missing.  A temporary file in the same
        directory is written first and moved over ``path`` with ``os.replace``.
    provenance : mapping, optional
        Attributes from :func:`provenance_attrs` to add; without it ``ds.attrs`` must already
        hold them.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If an attribute of :data:`REQUIRED_ATTRS` is missing.
    """
    if provenance is not None:
        ds = ds.copy()
        ds.attrs.update(provenance)
    missing = [k for k in REQUIRED_ATTRS if k not in ds.attrs]
    if missing:
        raise ValueError(f"dataset lacks provenance attributes {missing}; pass provenance="
                         "provenance_attrs(seed=..., config=..., command=...)")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)                 # atomic: the file is either whole or absent
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def sha256_file(path) -> str:
    """SHA-256 hex digest of the file at ``path`` (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj) -> str:
    """SHA-256 hex digest of ``obj`` as JSON with sorted keys (``default=str`` for non-JSON values)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
