"""``python -m paper_checks [--all] [--only ID ...] [--format text|markdown|json]``."""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import load_all, run_check


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m paper_checks", description=__doc__)
    p.add_argument("--all", action="store_true", help="also run the slow checks")
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these check ids")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    args = p.parse_args(argv)

    checks = load_all()
    if args.only:
        unknown = sorted(set(args.only) - set(checks))
        if unknown:
            print(f"unknown check id(s): {', '.join(unknown)}; known: {', '.join(checks)}", file=sys.stderr)
            return 2
        checks = {k: v for k, v in checks.items() if k in args.only}
    elif not args.all:
        checks = {k: v for k, v in checks.items() if not v.slow}

    rows = []
    for cid, chk in checks.items():
        t0 = time.perf_counter()
        try:
            out = run_check(chk)
            rows.append(dict(id=cid, paper=chk.paper, claim=chk.claim, expected=out.expected,
                             observed=out.observed, passed=bool(out.passed),
                             seconds=round(time.perf_counter() - t0, 2), details=out.details))
        except Exception as exc:  # a crashing check is a failing check, reported, not hidden
            rows.append(dict(id=cid, paper=chk.paper, claim=chk.claim, expected="-",
                             observed=f"error: {type(exc).__name__}: {exc}", passed=False,
                             seconds=round(time.perf_counter() - t0, 2), details={}))
        print(f"[{cid}] {'pass' if rows[-1]['passed'] else 'FAIL'} ({rows[-1]['seconds']} s)", file=sys.stderr)

    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        md = args.format == "markdown"
        head = ["id", "claim", "expected", "observed", "result"]
        body = [[r["id"], r["claim"], r["expected"], r["observed"], "pass" if r["passed"] else "FAIL"] for r in rows]
        if md:
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for b in body:
                print("| " + " | ".join(s.replace("|", "\\|") for s in b) + " |")
        else:
            widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
            widths = [min(w, 60) for w in widths]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths)
            print(fmt.format(*head))
            print(fmt.format(*["-" * w for w in widths]))
            for b in body:
                print(fmt.format(*[s if len(s) <= 60 else s[:57] + "..." for s in b]))
            if args.only:                         # the checks asked for by name: their full text
                for r in rows:
                    print(f"\n{r['id']}: {r['claim']}\n  expected: {r['expected']}\n  observed: {r['observed']}")
        n_pass = sum(r["passed"] for r in rows)
        print(f"\n{n_pass} passed, {len(rows) - n_pass} failed")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
