"""A griffe extension for the API reference: Sphinx cross-reference roles in the docstrings
(``:func:`~ustat_grpo.pilot.width_rule```) are shown as code (``width_rule``) instead of literally.

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


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = strip_roles(obj.docstring.value)
