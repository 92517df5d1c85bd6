"""Close-match suggestions for names a user mistyped (a layer, a plugin, an option).

A leaf module: the value classes, the registries and the evaluator all use it, and it
imports nothing of mpq's, so none of them has to import another to suggest a name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["suggest"]


def suggest(name: object, valid: Iterable[object]) -> str:
    """A ``; did you mean 'x'?`` suffix when one valid name is close to ``name``.

    ``name`` need not be a string (a method instance passed where a name was expected):
    then there is nothing to suggest, and the caller's own message says what is wrong.
    """
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [v for v in valid if isinstance(v, str)], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
