"""Options dataclasses as command lines: the public helpers behind every script's ``--help``.

:func:`parser_from_dataclass` builds an ``argparse`` parser from one frozen options dataclass
(one help line per field, taken from ``field(metadata={"help": ...})``; defaults shown), so the
dataclass is the single source of a command line, its ``--help`` and the logged config;
:func:`options_from_args` turns the parsed namespace back into the dataclass and
:func:`given_options` names the options given explicitly.  Used by the package's CLI and by the
scripts in ``simulations/`` and ``paper_checks/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

__all__ = ["parser_from_dataclass", "options_from_args", "given_options"]


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    import types

    if isinstance(tp, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def parser_from_dataclass(cls, *, prog: str, description: str, epilog: str = "",
                          positional: tuple = (), suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one option per field of the dataclass ``cls``.

    Field metadata: ``help`` (required), ``choices``, ``metavar``, and for list-valued fields
    ``type`` (of one element) with ``nargs`` or ``action`` (optional).
    Boolean fields become ``--flag`` switches; names in ``positional`` become optional
    positional arguments (``nargs="?"``).  ``suppress_defaults``: options not given are absent from
    the parsed namespace (:func:`given_options`).
    """
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        md = f.metadata
        tp = _base_type(hints[f.name])
        default = f.default
        hlp = md.get("help", "") + (f" (default: {default})" if tp is not bool else "")
        # argparse %-formats help strings: a literal "95%" must be written "95%%"
        kw = dict(help=hlp.replace("%", "%%"), default=argparse.SUPPRESS if suppress_defaults else default)
        if "type" in md:  # list-valued fields: element type with nargs / action (e.g. "append")
            tp = md["type"]
        for key in ("nargs", "action"):
            if key in md:
                kw[key] = md[key]
        if "choices" in md:
            kw["choices"] = md["choices"]
        if "metavar" in md:
            kw["metavar"] = md["metavar"]
        if f.name in positional:
            p.add_argument(f.name, nargs="?", type=tp, **kw)
        elif tp is bool:
            p.add_argument("--" + f.name.replace("_", "-"), action="store_true", help=md.get("help", "").replace("%", "%%"),
                           **({"default": argparse.SUPPRESS} if suppress_defaults else {}))
        else:
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=tp, **kw)
    return p


def given_options(parser_factory, argv) -> set:
    """Names of the options given on the command line ``argv`` (``parser_factory(suppress_defaults=True)``
    builds the same parser with suppressed defaults)."""
    ns, _ = parser_factory(suppress_defaults=True).parse_known_args(argv)
    return set(vars(ns))


def options_from_args(cls, ns: argparse.Namespace):
    """Build the frozen options dataclass from a parsed namespace."""
    val = lambda v: tuple(v) if isinstance(v, list) else v
    return cls(**{f.name: val(getattr(ns, f.name)) for f in dataclasses.fields(cls)})
