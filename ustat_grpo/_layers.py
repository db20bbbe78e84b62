"""The package's layers, lowest first; the checker of the import rule; the architecture page's generator.

The rule: a module imports only from its own layer's subpackage or from lower layers, and the
modules' import graph has no cycle.  Imports inside functions (lazy imports) count like top-level
ones: a lazy import of a heavy third-party package is fine, a lazy upward import inside the package
is not.  The root modules (``ustat_grpo/__init__.py``, the entry module of
``python -m ustat_grpo.fit_scaling`` and this file) are the top layer, ``api``.  ``tests/test_layers.py``
checks the rule and that docs/architecture.md is this module's output::

    python -m ustat_grpo._layers --write   # regenerate docs/architecture.md
    python -m ustat_grpo._layers --check   # list upward imports and cycles (exit 1 if any)

This module imports nothing from the package (it reads the sources with :mod:`ast`).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

__all__ = ["LAYERS", "ROOT_MODULES", "cycles", "import_graph", "layer_of", "modules", "render_architecture",
           "upward_imports"]

PACKAGE = "ustat_grpo"
PACKAGE_DIR = Path(__file__).resolve().parent
#: (subpackage, what it holds), lowest first
LAYERS = (
    ('core', 'shared conventions: JSON, confidence intervals, the RNG, provenance, Monte Carlo z-bounds'),
    ('stats', 'the statistics engine: kernels, U-statistics of any order, the weighted chi-squared law'),
    ('theory', ('GRPO theory and estimators: framework presets, estimators, advantages, exact MSE, the '
                "scale-free criterion, Theorem 8 weights, Paper 2's success amplification")),
    ('scaling', ('the scaling law from data: constants A1..A3 and their intervals, G* at a budget, grid and '
                 'performance-table fits, pool resampling, allocation across prompts')),
    ('policies', ('what draws samples: the policy protocol, toy bandits with exact moments, the arithmetic '
                  'task, transformer policies and their per-sample scores')),
    ('experiments', ('seeded runs on policies: Monte Carlo grids (fast paths, scheduler), Algorithm 1, Algorithm'
                     ' 2 on toy sequence policies and on a transformer')),
    ('measurement', ("measuring a user's task: dataset, rewards, the per-prompt sampler, pilots, samples per "
                     'prompt, the estimator card, one analysis for every source')),
    ('recommendation', ("from measurements to a typed group-size recommendation, its report, users' measurement "
                        'tables')),
    ('integrations', "inside trainers: TRL's GRPOTrainer monitor, verl's group statistics"),
    ('cli', 'the command line: python -m ustat_grpo.fit_scaling, its options, shared argument parsing'),
)
#: modules at the top of the package: the top layer, "api"
ROOT_MODULES = ('__init__', 'fit_scaling', '_layers')
API = "api"
ARCHITECTURE = PACKAGE_DIR.parent / "docs" / "architecture.md"
CONVENTIONS = PACKAGE_DIR.parent / "docs" / "architecture_conventions.md"


def modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    out = {}
    for p in sorted(package_dir.rglob("*.py")):
        parts = p.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((PACKAGE, *parts))] = p
    return out


def layer_of(name: str) -> str:
    """The layer of a dotted module name: its subpackage, ``"api"`` for the root modules.

    Raises
    ------
    ValueError
        If the module is in no layer (a root module not in ROOT_MODULES, or an unknown subpackage).
    """
    parts = name.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{name!r} is not a module of {PACKAGE}")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in ROOT_MODULES):
        return API
    if parts[1] in {s for s, _ in LAYERS}:
        return parts[1]
    raise ValueError(f"module {name!r} is in no layer: move it into one of "
                     f"{[s for s, _ in LAYERS]} or add it to ROOT_MODULES")


def _rank(layer: str) -> int:
    order = [s for s, _ in LAYERS] + [API]
    return order.index(layer)


def _imports(name: str, path: Path, known: set[str]):
    """(imported module of the package, line, inside a function) for every import statement."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rpartition(".")[0]
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            nested |= {id(n) for n in ast.walk(node) if n is not node}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            # `from x import y`: y is a module when x.y is one, else a name of module x
            targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in known else base_name
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known and "." in t:     # `import ustat_grpo.a.b.attr`-like: nearest module
                t = t.rpartition(".")[0]
            if t in known and t != name:
                yield t, node.lineno, id(node) in nested


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, dict[str, tuple[int, bool]]]:
    """Module -> {imported module of the package: (first line, only inside functions)}."""
    mods = modules(package_dir)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = {}
        for t, line, lazy in _imports(name, path, known):
            if t in deps:
                deps[t] = (min(deps[t][0], line), deps[t][1] and lazy)
            else:
                deps[t] = (line, lazy)
        graph[name] = deps
    return graph


def upward_imports(graph) -> list[str]:
    """Every import of a module from a higher layer, one line each (empty when the rule holds)."""
    out = []
    for name, deps in graph.items():
        for t, (line, lazy) in sorted(deps.items()):
            if _rank(layer_of(t)) > _rank(layer_of(name)):
                out.append(f"{name} (layer {layer_of(name)}) imports {t} (layer {layer_of(t)})"
                           f"{' inside a function' if lazy else ''}, line {line}")
    return out


def cycles(graph) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (or a self-import)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):                      # Tarjan, iterative enough for ~60 modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, {}):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _doc_line(path: Path) -> str:
    """The docstring's first sentence (its first paragraph, cut at the first full stop), as Markdown."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    if len(para) > 160 and ". " in para:
        para = para[:para.index(". ") + 1]
    para = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", para).replace("``", "`")
    return para.replace("|", "\\|")


def _public(path: Path) -> list[str] | None:
    """``__all__`` of a module (None when it is computed)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return None
    return []


def _listed(name: str, path: Path, graph) -> bool:
    """Whether a module gets a row (a layer's docstring-only ``__init__.py`` does not)."""
    return not (path.name == "__init__.py" and name != PACKAGE and not _public(path) and not graph[name])


def _short(name: str) -> str:
    return name[len(PACKAGE) + 1:] or PACKAGE


def render_architecture(package_dir: Path = PACKAGE_DIR, conventions: Path = CONVENTIONS) -> str:
    """The text of docs/architecture.md: layers, modules, measured imports, then the conventions."""
    mods = modules(package_dir)
    graph = import_graph(package_dir)
    order = [s for s, _ in LAYERS] + [API]
    uses = {lay: set() for lay in order}
    for name, deps in graph.items():
        for t in deps:
            if layer_of(t) != layer_of(name):
                uses[layer_of(name)].add(layer_of(t))
    lines = [
        "# Architecture",
        "",
        "<!-- Generated by `python -m ustat_grpo._layers --write` from the code and",
        "     docs/architecture_conventions.md (edit those, not this page); tests/test_layers.py checks it. -->",
        "",
        "## Layers",
        "",
        "The package is cut into layer subpackages, lowest first. A module imports only from its own",
        "layer or lower ones (imports inside functions count too; lazy imports of third-party packages",
        "such as torch are fine), and the module import graph has no cycle: `tests/test_layers.py`",
        "checks both on the code with `ast`. The public API stays at the top: `ustat_grpo/__init__.py`",
        "loads every public module lazily under its short name (`lm`, `pool`, ... and the functions",
        "`ustatistic`, `hoeffding`, ... as attributes of `ustat_grpo`), so `import ustat_grpo` stays light;",
        "`python -m ustat_grpo.fit_scaling` is the top-level entry module of the command.",
        "",
        "| # | layer | holds | modules | imports from (measured) |",
        "|---|---|---|---|---|",
    ]
    top = (API, "the public facade: lazy top-level names, the command's entry module, this layer table")
    for i, (sub, desc) in enumerate((*LAYERS, top)):
        n = sum(layer_of(m) == sub and _listed(m, p, graph) for m, p in mods.items())
        used = ", ".join(u for u in order if u in uses[sub]) or "-"
        lines.append(f"| {i} | `{sub}` | {desc} | {n} | {used} |")
    lines += ["", "## Modules", "",
              "Per layer: each module, the first line of its docstring, its public names (`__all__`) and",
              "the package modules it imports (measured; `*` = only inside functions).", ""]
    for sub, desc in LAYERS + ((API, "the public facade"),):
        title = f"`ustat_grpo.{sub}`" if sub != API else "top of the package (`api`)"
        lines += [f"### {title}", "", desc[0].upper() + desc[1:] + ".", "",
                  "| module | what it is | public names | imports |", "|---|---|---|---|"]
        for name, path in mods.items():
            if layer_of(name) != sub:
                continue
            if not _listed(name, path, graph):
                continue
            pub = _public(path)
            pub = "computed (see the module)" if pub is None else ", ".join(f"`{p}`" for p in pub) or "-"
            deps = ", ".join(f"`{_short(t)}`{'*' if lazy else ''}"
                             for t, (_, lazy) in sorted(graph[name].items())) or "-"
            lines.append(f"| `{_short(name)}` | {_doc_line(path)} | {pub} | {deps} |")
        lines.append("")
    up, cyc = upward_imports(graph), cycles(graph)
    lines += ["Measured now: " + (f"{len(up)} upward imports" if up else "no upward import") + ", "
              + (f"{len(cyc)} import cycles" if cyc else "no import cycle") + ".", ""]
    if conventions.exists():
        lines += [conventions.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ustat_grpo._layers", description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="regenerate docs/architecture.md")
    ap.add_argument("--check", action="store_true", help="list upward imports and cycles; exit 1 if any")
    args = ap.parse_args(argv)
    if args.write:
        text = render_architecture()
        if ARCHITECTURE.exists() and ARCHITECTURE.read_text() == text:
            print(f"{ARCHITECTURE.name} unchanged")
        else:
            ARCHITECTURE.write_text(text)
            print(f"wrote {ARCHITECTURE}")
    if args.check or not args.write:
        graph = import_graph()
        up, cyc = upward_imports(graph), cycles(graph)
        for line in up:
            print("upward:", line)
        for c in cyc:
            print("cycle:", " <-> ".join(c))
        print(f"layers: {len(graph)} modules, {len(up)} upward imports, {len(cyc)} cycles")
        return 1 if up or cyc else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
