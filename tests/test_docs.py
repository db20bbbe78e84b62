"""The documentation: its Python examples run, the evidence page renders from the stored results,
measured numbers stay out of the hand-written pages, docstrings and warnings, and the README stays
a front page.  (The site itself is built by ``mkdocs build --strict`` in ``.ci/run``.)"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import _gen_evidence

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SKIP = "<!-- docs-test: skip -->"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
#: an estimate with its interval, "0.948 [0.927, 0.965]", "+0.0043 [+0.0012, +0.0073]", "7.5% [2.0%, 11.6%]":
#: the form every measured result with an interval takes
MEASURED = re.compile(r"[-+]?\d+\.\d+%? \(?\[[-+]?\d+(?:\.\d+)?%?, [-+]?\d+(?:\.\d+)?%?\]")


#: pages whose code blocks are design sketches, not examples (they name objects that do not exist yet)
SKETCHES = {"architecture.md", "architecture_conventions.md"}


def _pages():
    return sorted(p for p in DOCS.rglob("*.md") if "results" not in p.parts)


def _example_pages():
    return [p for p in _pages() if p.relative_to(DOCS).as_posix() not in SKETCHES]


def python_blocks(text: str):
    """``(line, code)`` of every fenced ``python`` block not preceded by the skip marker."""
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        if before != SKIP:
            out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def test_python_blocks_parser():
    text = f"a\n```python\nx = 1\n```\n{SKIP}\n```python\nraise SystemExit\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n")]


BLOCKS = [(p, line, code) for p in _example_pages() for line, code in python_blocks(p.read_text())]


@pytest.mark.parametrize("page,line,code", BLOCKS,
                         ids=[f"{p.relative_to(DOCS)}:{line}" for p, line, _ in BLOCKS])
def test_docs_example_runs(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "__docs__"})


def test_examples_exist():
    pages = {p.relative_to(DOCS).as_posix() for p, _, _ in BLOCKS}
    assert {"guide/quickstart.md", "guide/pilots.md", "guide/trainer.md"} <= pages


def _evidence():
    return _gen_evidence.load()


def test_clopper_pearson_matches_scipy():
    from scipy.stats import binomtest
    cp = _evidence().clopper_pearson
    for k, n in ((569, 600), (0, 20), (20, 20), (7, 13)):
        ci = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert cp(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_evidence_page_renders_from_stored_results():
    import numpy as np
    import xarray as xr
    mod = _evidence()
    page = mod.render()
    for anchor in ("adaptive-pilot-coverage", "training-validation", "std-normalised-training",
                   "monitor-drift", "unstored"):
        assert f"{{#{anchor}}}" in page
    # the pooled coverage rows are the stored per-pilot hits, counted independently here
    for variant in ("strong", "weak"):
        hits = [xr.open_dataset(DOCS / "results" / f"adaptive_pilot_lm_{variant}_seed{s}.nc").covers.values
                for s in (0, 1000)]
        k, n = int(sum(h.sum() for h in hits)), sum(h.size for h in hits)
        assert n == 600
        lo, hi = mod.clopper_pearson(k, n)
        assert f"**{variant}, both seeds** | pooled | **{k / n:.3f} [{lo:.3f}, {hi:.3f}] ({k}/{n})**" in page
    # the AUC cells: mean over seeds of the stored per-run AUC
    ds = xr.open_dataset(DOCS / "results" / "train_vs_g.nc")
    auc = ds.auc.sel(setting="rloo/lr=0.0003", num_generations=4).values
    assert f"{np.mean(auc):.4f} ± {1.96 * np.std(auc, ddof=1) / np.sqrt(auc.size):.4f}" in page


def test_measured_intervals_live_only_on_the_evidence_page():
    """No page, README line, docstring or string of the package, the simulations or the paper checks
    quotes a measured estimate with its interval; the README's allocation table is the evidence
    page's own (checked below), so it is left out."""
    readme = (ROOT / "README.md").read_text().replace("\n".join(_evidence().allocation_table()), "")
    texts = {"README.md": readme}
    for f in [*_pages(), *(ROOT / "ustat_grpo").rglob("*.py"), *(ROOT / "simulations").rglob("*.py"),
              *(ROOT / "paper_checks").rglob("*.py")]:
        texts[str(f.relative_to(ROOT))] = f.read_text()
    found = [f"{name}: {m.group(0)}" for name, text in texts.items() for m in MEASURED.finditer(text)]
    assert not found, found
    page = _evidence().render()
    for example in ("0.948 [0.927, 0.965]", "+0.0043 [+0.0012, +0.0073]", "7.5% [2.0%, 11.6%]"):
        assert MEASURED.fullmatch(example)                     # the pattern matches each form
    assert MEASURED.search(page)                               # and the page's numbers


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    # the two commands of the quick start, the same in the README and in the guide
    guide = (DOCS / "guide" / "quickstart.md").read_text()
    for cmd in ('pip install -c constraints.txt -e . && python -m ustat_grpo.fit_scaling',
                'pip install -c constraints.txt -e ".[test,task,trl]" && python -m pytest'):
        assert cmd in readme and cmd in guide


def test_readme_allocation_table_is_the_evidence_pages():
    """The README's allocation table is a copy of the generated one (the stored result is the one source)."""
    table = _evidence().allocation_table()
    readme = (ROOT / "README.md").read_text()
    assert "\n".join(table) in readme
    assert "\n".join(table) in _evidence().render()
    assert len(table) == 2 + 6                                   # header + 3 rules x 2 policies


def test_griffe_roles_extension():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_roles", DOCS / "griffe_roles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = ":func:`~ustat_grpo.measurement.pilot.width_rule` and :class:`ustat_grpo.measurement.pilot.BanditSampler`, :data:`X`"
    assert mod.strip_roles(text) == "`width_rule` and `ustat_grpo.measurement.pilot.BanditSampler`, `X`"
    assert mod.strip_roles("no roles, ``code`` stays") == "no roles, ``code`` stays"


def test_griffe_doctest_fences():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_roles", DOCS / "griffe_roles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = "Text.\n\n    >>> f(1)\n    2\n\nMore\n\nExamples\n--------\n>>> g()\n3\n\nNotes\n-----\n>>> h()"
    assert mod.fence_doctests(text) == ("Text.\n\n    ```pycon\n    >>> f(1)\n    2\n    ```\n\nMore\n\n"
                                        "Examples\n--------\n>>> g()\n3\n\nNotes\n-----\n>>> h()")
    # after a blank line in a later section the block is fenced again
    assert mod.fence_doctests("Notes\n-----\nx\n\n>>> h()") == "Notes\n-----\nx\n\n```pycon\n>>> h()\n```"
