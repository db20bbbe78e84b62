"""Generate the API reference pages at build time (run by mkdocs-gen-files, see mkdocs.yml).

Walks the ``ustat_grpo`` package on disk, so the pages follow whatever layout the package has:
one page per public module (no leading underscore in any part of its dotted name), each rendered
by mkdocstrings from the module's numpydoc docstrings by static analysis (nothing is imported, so
building the site needs neither torch nor transformers).  The navigation is written as
``reference/SUMMARY.md`` for mkdocs-literate-nav.
"""
from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

PACKAGE = "ustat_grpo"
ROOT = Path(__file__).resolve().parent.parent
nav = mkdocs_gen_files.Nav()

for path in sorted((ROOT / PACKAGE).rglob("*.py")):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    elif parts[-1] == "__main__":
        continue
    if any(p.startswith("_") for p in parts) or not (path.parent / "__init__.py").exists():
        continue                                    # private modules; folders that are not packages
    dotted = ".".join(parts)
    doc_path = Path(*parts).with_suffix(".md") if len(parts) > 1 else Path("index.md")
    nav[tuple(parts[1:]) or (PACKAGE,)] = doc_path.as_posix()
    with mkdocs_gen_files.open(Path("reference", doc_path), "w") as fh:
        fh.write(f"# `{dotted}`\n\n::: {dotted}\n")
    mkdocs_gen_files.set_edit_path(Path("reference", doc_path), path.relative_to(ROOT))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as fh:
    fh.writelines(nav.build_literate_nav())
