"""Accuracy and speed of the ``WeightedChiSquared`` methods against closed-form references.

For each reference law and each method (imhof, saddlepoint, liu, hbe, satterthwaite) it reports

* ``max_abs_cdf``: max |cdf - exact| over the 1%..99% quantile range (bulk accuracy);
* ``max_rel_sf``: max |sf / exact - 1| at upper-tail probabilities 1e-3 .. 1e-12 (tail accuracy);
* ``evals_per_s``: cdf evaluations per second (single core, one point per call).

Reference laws (exact values from closed forms or scipy):

* ``chi2_3``: weights (1, 1, 1) = chi2_3 (``scipy.stats.chi2``);
* ``hypoexp``: weights (6, 3, 1) with 2 df each, the hypoexponential closed form;
* ``cvm``: scipy's Cramer-von Mises limit law, weights 1/(k^2 pi^2), k <= 20000, plus the
  remainder's mean (bulk only: scipy's series has no accurate far tail);
* ``laplace``: weights (1, -1) with 2 df (a Laplace law; only imhof and saddlepoint apply).

A second table (``--spread``, on by default) covers the laws of issue 14, whose weights span many
orders of magnitude: (1e3, 1, 1e-3) with df 1; the same with df (2, 1, 4) and non-centralities
(1, 0, 3); twelve weights log-spaced from 1e-8 to 1e3.  For tail probabilities ``p`` in
1e-3 .. 1e-15 on both sides it reports the max relative error of ``sf``/``cdf`` (the smaller tail)
against an independent 30-digit mpmath inversion (``tests/_wchisq_reference.py``), the max relative
error of ``isf``/``ppf`` (``|ref_tail(isf(p)) / p - 1|``), ``max |sf + cdf - 1|``, and milliseconds
per call (one point per call, median over the grid, and the max).

The tables go to stdout (Markdown, or JSON with ``--format json``: ``{"methods": [...],
"spread": [...]}``); ``--out`` also writes a NetCDF of the first with provenance.  Usage:
``python -m simulations.bench_wchisq``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from scipy import stats
from scipy.stats._hypotests import _cdf_cvm_inf

from ustat_grpo.cli.options import options_from_args, parser_from_dataclass
from ustat_grpo.core.provenance import provenance_attrs, write_netcdf
from ustat_grpo.stats.wchisq import METHODS, WeightedChiSquared


@dataclass(frozen=True)
class Config:
    num_bulk: int = field(default=15, metadata={"help": "bulk evaluation points per law (quantiles 1%..99%)"})
    laws: str = field(default="chi2_3,hypoexp,cvm,laplace", metadata={"help": "comma-separated reference laws"})
    methods: str = field(default=",".join(METHODS), metadata={"help": "comma-separated methods"})
    spread: int = field(default=1, metadata={"help": "1: also the spread-weight laws of issue 14 vs mpmath"})
    format: str = field(default="markdown", metadata={"help": "stdout format: markdown or json"})
    out: str = field(default="", metadata={"help": "optional output directory for bench_wchisq.nc"})


def _hypo_sf(x, lam):
    r = 1.0 / (2.0 * np.asarray(lam, float))
    return sum(np.prod([r[j] / (r[j] - r[k]) for j in range(r.size) if j != k]) * np.exp(-r[k] * x)
               for k in range(r.size))


def _laws():
    """name -> (weights, df, exact cdf, exact sf, bulk range, tail points)."""
    K = 20000
    lam = 1.0 / (np.arange(1, K + 1) ** 2 * np.pi**2)
    rem = 1.0 / 6.0 - lam.sum()
    tail_p = np.array([1e-3, 1e-6, 1e-9, 1e-12])
    out = {
        "chi2_3": ((1.0, 1.0, 1.0), (1, 1, 1), lambda x: stats.chi2.cdf(x, 3), lambda x: stats.chi2.sf(x, 3),
                   stats.chi2.ppf([0.01, 0.99], 3), stats.chi2.isf(tail_p, 3)),
        "hypoexp": ((6.0, 3.0, 1.0), (2, 2, 2), lambda x: 1 - _hypo_sf(x, (6, 3, 1)), lambda x: _hypo_sf(x, (6, 3, 1)),
                    (1.5, 60.0), np.array([88.5, 171.4, 254.2, 337.1])),
        "cvm": (lam, 1, lambda x: _cdf_cvm_inf(x + rem), None, (0.03 - rem, 0.74 - rem), None),
        "laplace": ((1.0, -1.0), (2, 2), lambda x: np.where(x < 0, 0.5 * np.exp(x / 2), 1 - 0.5 * np.exp(-x / 2)),
                    lambda x: np.where(x < 0, 1 - 0.5 * np.exp(x / 2), 0.5 * np.exp(-x / 2)),
                    (-7.8, 7.8), -2 * np.log(2 * tail_p)),
    }
    return out


def run(cfg: Config) -> list[dict]:
    rows = []
    laws = _laws()
    for name in [s.strip() for s in cfg.laws.split(",") if s.strip()]:
        w, df, cdf, sf, (lo, hi), tail_x = laws[name]
        xb = np.linspace(lo, hi, cfg.num_bulk)
        for m in [s.strip() for s in cfg.methods.split(",") if s.strip()]:
            try:
                law = WeightedChiSquared(w, df=df, method=m)
            except ValueError:
                rows.append(dict(law=name, method=m, max_abs_cdf=None, max_rel_sf=None, evals_per_s=None,
                                 note="not applicable (negative weights)"))
                continue
            t = time.perf_counter()
            got = np.array([law.cdf(float(x)) for x in xb])
            dt = time.perf_counter() - t
            abs_err = float(np.max(np.abs(got - cdf(xb))))
            rel = None
            if sf is not None:
                rel = float(np.max(np.abs(np.asarray(law.sf(tail_x)) / sf(tail_x) - 1)))
            rows.append(dict(law=name, method=m, max_abs_cdf=abs_err, max_rel_sf=rel,
                             evals_per_s=float(xb.size / dt), note=""))
            print(f"[{name}/{m}] {abs_err:.2e} {rel} {xb.size / dt:.0f}/s", file=sys.stderr)
    return rows


SPREAD_LAWS = {
    "w(1e3,1,1e-3) df1": ((1e3, 1.0, 1e-3), 1, 0),
    "w(1e3,1,1e-3) df(2,1,4) nc(1,0,3)": ((1e3, 1.0, 1e-3), (2, 1, 4), (1, 0, 3)),
    "w logspace(-8,3,12) df1": (tuple(np.logspace(-8, 3, 12)), 1, 0),
}
SPREAD_P = (1e-3, 1e-6, 1e-9, 1e-12, 1e-15)


def _timed(fn, x):
    t = time.perf_counter()
    v = float(fn(x))
    return v, 1e3 * (time.perf_counter() - t)


def run_spread() -> list[dict]:
    """Issue-14 laws: accuracy against the mpmath reference and time per call, per law and side."""
    from tests._wchisq_reference import mp_sf_cdf  # the tests' independent oracle (run from the repo root)

    rows = []
    for name, (w, df, nc) in SPREAD_LAWS.items():
        law = WeightedChiSquared(w, df=df, nc=nc)
        for side in ("sf", "cdf"):
            inv, fwd = (law.isf, law.sf) if side == "sf" else (law.ppf, law.cdf)
            other = law.cdf if side == "sf" else law.sf
            err, err_inv, closure, ms, ms_inv = [], [], [], [], []
            for p in SPREAD_P:
                x, t_inv = _timed(inv, p)
                got, t = _timed(fwd, x)
                ref = mp_sf_cdf(x, w, df, nc)[0 if side == "sf" else 1]
                err.append(abs(got / ref - 1))
                err_inv.append(abs(ref / p - 1))
                closure.append(abs(got + float(other(x)) - 1))
                ms.append(t)
                ms_inv.append(t_inv)
            rows.append(dict(law=name, tail=side, max_rel_err=max(err), max_rel_err_inverse=max(err_inv),
                             max_closure=max(closure), ms_median=float(np.median(ms)), ms_max=max(ms),
                             ms_inverse_median=float(np.median(ms_inv)), ms_inverse_max=max(ms_inv)))
            print(f"[spread {name}/{side}] {max(err):.1e} {max(err_inv):.1e} {max(ms):.1f} ms "
                  f"{max(ms_inv):.1f} ms", file=sys.stderr)
    return rows


def _print_spread(rows):
    print()
    print("Spread weights (issue 14), tail p = " + ", ".join(f"{p:g}" for p in SPREAD_P)
          + "; reference: 30-digit mpmath inversion")
    print()
    print("| law | tail | max rel err (sf or cdf) | max rel err (isf or ppf) | max abs(sf + cdf - 1) | "
          "ms/call median (max) | inverse ms/call median (max) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['law']} | {r['tail']} | {r['max_rel_err']:.1e} | {r['max_rel_err_inverse']:.1e} | "
              f"{r['max_closure']:.1e} | {r['ms_median']:.2f} ({r['ms_max']:.2f}) | "
              f"{r['ms_inverse_median']:.1f} ({r['ms_inverse_max']:.1f}) |")


def _fmt(v, f=".1e"):
    return "-" if v is None else format(v, f)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    p = parser_from_dataclass(Config, prog="python -m simulations.bench_wchisq", description=__doc__.split("\n\n")[0])
    cfg = options_from_args(Config, p.parse_args(args))
    if cfg.format not in ("markdown", "json"):
        print("bench_wchisq.py: --format must be markdown or json", file=sys.stderr)
        return 2
    rows = run(cfg)
    spread = run_spread() if cfg.spread else []
    if cfg.format == "json":
        print(json.dumps(dict(methods=rows, spread=spread), indent=2, sort_keys=True))
    else:
        print("| law | method | max abs cdf error (bulk) | max rel sf error (tail 1e-3..1e-12) | cdf evals/s |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['law']} | {r['method']} | {_fmt(r['max_abs_cdf'])} | {_fmt(r['max_rel_sf'])} | "
                  f"{_fmt(r['evals_per_s'], '.0f')} |" + (f" {r['note']}" if r["note"] else ""))
        if spread:
            _print_spread(spread)
    if cfg.out:
        import xarray as xr

        laws = sorted({r["law"] for r in rows}, key=[r["law"] for r in rows].index)
        meths = sorted({r["method"] for r in rows}, key=[r["method"] for r in rows].index)
        arr = {k: np.full((len(laws), len(meths)), np.nan) for k in ("max_abs_cdf", "max_rel_sf", "evals_per_s")}
        for r in rows:
            for k in arr:
                if r[k] is not None:
                    arr[k][laws.index(r["law"]), meths.index(r["method"])] = r[k]
        ds = xr.Dataset({k: (("law", "method"), v) for k, v in arr.items()}, coords=dict(law=laws, method=meths))
        prov = provenance_attrs(seed="none (deterministic)", config=dataclasses.asdict(cfg),
                                command=" ".join(["python", "-m", "simulations.bench_wchisq", *args]))
        path = write_netcdf(ds, os.path.join(cfg.out, "bench_wchisq.nc"), provenance=prov)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
