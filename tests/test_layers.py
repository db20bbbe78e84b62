"""The layer rule (issue 24): imports only go down the layers of ``ustat_grpo._layers``, no cycle, and
docs/architecture.md is what the code generates.

Every ``import`` statement of every package module counts, those inside functions too: a lazy
import of a third-party package (torch) is fine, a lazy upward import inside the package is not.
"""
import shutil
import textwrap

import pytest

from ustat_grpo import _layers


@pytest.fixture(scope="module")
def graph():
    return _layers.import_graph()


def test_every_module_is_in_a_layer(graph):
    assert len(graph) > 40
    layers = {name: _layers.layer_of(name) for name in graph}     # raises for a module in no layer
    names = {s for s, _ in _layers.LAYERS}
    assert set(layers.values()) == names | {"api"}, "a layer without modules"
    # the root holds only the facade, the command's entry module and this table
    assert {n for n, lay in layers.items() if lay == "api"} == \
        {"ustat_grpo"} | {f"ustat_grpo.{m}" for m in _layers.ROOT_MODULES if m != "__init__"}


def test_no_upward_import(graph):
    up = _layers.upward_imports(graph)
    assert not up, "upward imports:\n" + "\n".join(up)


def test_no_import_cycle(graph):
    assert not _layers.cycles(graph)


def test_the_checker_sees_upward_lazy_and_cyclic_imports(tmp_path):
    """Negative control: a copy of the package with one lazy upward import and one cycle added."""
    pkg = tmp_path / "ustat_grpo"
    shutil.copytree(_layers.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("data", "__pycache__"))
    kernels = pkg / "stats" / "kernels.py"
    kernels.write_text(kernels.read_text() + textwrap.dedent('''
        def _lazy():
            from ..theory.estimators import leave_one_out   # upward, inside a function
            return leave_one_out
        '''))
    (pkg / "core" / "_a.py").write_text("from . import _b\n")
    (pkg / "core" / "_b.py").write_text("from ._a import x\n")
    g = _layers.import_graph(pkg)
    assert g["ustat_grpo.stats.kernels"]["ustat_grpo.theory.estimators"][1] is True   # lazy
    up = _layers.upward_imports(g)
    assert len(up) == 1 and "ustat_grpo.stats.kernels (layer stats) imports ustat_grpo.theory.estimators" in up[0]
    assert _layers.cycles(g) == [["ustat_grpo.core._a", "ustat_grpo.core._b"]]
    (pkg / "stray.py").write_text('"""A module in no layer."""\n')
    with pytest.raises(ValueError, match="in no layer"):
        [_layers.layer_of(n) for n in _layers.import_graph(pkg)]


def test_imports_resolve_like_python(graph):
    """The graph's edges are the modules Python imports: `from ..x import y` (y a module or a name)."""
    lm = graph["ustat_grpo.policies.lm"]
    assert "ustat_grpo.core._random" in lm and not lm["ustat_grpo.core._random"][1]
    assert all(t.startswith("ustat_grpo.") for deps in graph.values() for t in deps)
    import importlib
    import sys
    for name in ("ustat_grpo.scaling.constants", "ustat_grpo.measurement.pilot"):
        eager = {t for t, (_, lazy) in graph[name].items() if not lazy}
        importlib.import_module(name)
        # every eager edge is a module Python has loaded once the module is imported
        assert eager <= set(sys.modules), (name, eager - set(sys.modules))


def test_architecture_page_is_generated_from_the_code():
    text = _layers.render_architecture()
    assert _layers.ARCHITECTURE.read_text() == text, \
        "docs/architecture.md is stale: run `python -m ustat_grpo._layers --write`"
    for name in _layers.import_graph():
        assert f"`{name[len('ustat_grpo.'):] or 'ustat_grpo'}`" in text


def test_public_api_stays_at_the_top():
    import ustat_grpo
    for name in ustat_grpo.__all__:
        assert getattr(ustat_grpo, name) is not None, name
    from ustat_grpo.policies import lm
    from ustat_grpo.stats.ustat import ustatistic
    assert ustat_grpo.lm is lm and ustat_grpo.ustatistic is ustatistic
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = ustat_grpo.nonexistent
