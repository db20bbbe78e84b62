"""JSON-safe conversion shared by every ``to_dict`` and JSON report of the package.

One rule set, so that a number prints the same way in every output:

* numpy arrays become (nested) lists, numpy scalars Python scalars;
* tuples (named tuples included) become lists, mappings dicts with the values converted;
* non-finite floats become the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (plain JSON has no
  literal for them; ``fit_scaling``'s JSON has always written an unbounded interval as ``"inf"``);
* anything else is returned unchanged (``str``, ``int``, ``bool``, ``None``, ...).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["jsonable"]


def jsonable(x):
    """``x`` with numpy values, tuples and non-finite floats made JSON-safe (module notes).

    Examples
    --------
    >>> import numpy as np
    >>> jsonable({"a": np.array([1.0, np.inf]), "b": (np.int64(2), float("nan"))})
    {'a': [1.0, 'inf'], 'b': [2, 'nan']}
    """
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, float):
        if math.isfinite(x):
            return x
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, Mapping):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
