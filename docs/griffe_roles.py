"""A griffe extension for the API reference, so the numpydoc docstrings render as Markdown:

* Sphinx cross-reference roles (``:func:`~ustat_grpo.measurement.pilot.width_rule```) are shown as code
  (``width_rule``) instead of literally;
* doctest blocks (``>>>`` lines and their output, up to a blank line) outside an Examples section
  are fenced as ``pycon`` code (Markdown would read ``>>>`` as quotes).

Loaded by mkdocstrings (``extensions`` in mkdocs.yml); it changes only the rendered text.
"""
from __future__ import annotations

import re

import griffe

#: ``:role:`target``` or ``:role:`~pkg.mod.target``` (the tilde shows the last component only)
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const|ref|term):`(~?)([^`<]+?)(?:\s*<([^>]+)>)?`")


def _plain(m: re.Match) -> str:
    tilde, text, target = m.group(1), m.group(2).strip(), m.group(3)
    if target is None and tilde:
        text = text.rsplit(".", 1)[-1]
    return f"`{text}`"


def strip_roles(text: str) -> str:
    """``strip_roles(":func:`~a.b.f` and :class:`C`")`` -> ``"`f` and `C`"``."""
    return ROLE.sub(_plain, text)


def fence_doctests(text: str) -> str:
    """Wrap each doctest block outside an Examples section (from a ``>>>`` line after a blank line to
    the next blank line) in a fenced ``pycon`` block of the same indentation; griffe parses the
    blocks of an Examples section itself."""
    lines, out, i, examples = text.split("\n"), [], 0, False
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and len(nxt) >= 3 and set(nxt) == {"-"}:        # a numpydoc section heading
            examples = line.strip() == "Examples"
        if (not examples and line.lstrip().startswith(">>>")
                and (not out or not out[-1].strip())):
            indent = line[:len(line) - len(line.lstrip())]
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += [f"{indent}```pycon", *lines[i:j], f"{indent}```"]
            i = j
        else:
            out.append(line)
            i += 1
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite the roles and fence the doctests of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(strip_roles(obj.docstring.value))
