"""Read-only containers for the value classes: a frozen mapping and a deep ``freeze``.

``types.MappingProxyType`` would do for reading, but it cannot be pickled or
deep-copied, and values travel to worker processes and into caches. :class:`FrozenDict`
is a ``dict`` whose mutating methods raise ``TypeError``: ``json.dumps``, ``dict(...)``,
``{**d}`` and every ``isinstance(x, dict)`` check (writers, ``attrs.asdict``) keep
working, it compares equal to a dict with the same items, pickles and deep-copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn, TypeVar

import numpy as np

__all__ = ["FrozenDict", "freeze"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(dict[K, V]):
    """An immutable ``dict``; hashable when its values are. ``copy()`` gives a plain dict."""

    __slots__ = ()

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only; build a new value (attrs.evolve) instead")

    __setitem__ = _immutable
    __delitem__ = _immutable
    __ior__ = _immutable  # dict's in-place | must not mutate either
    clear = _immutable
    pop = _immutable
    popitem = _immutable
    setdefault = _immutable
    update = _immutable

    @classmethod
    def fromkeys(cls, iterable: Any, value: Any = None) -> FrozenDict[Any, Any]:
        return cls(dict.fromkeys(iterable, value))

    def __hash__(self) -> int:  # type: ignore[override]  # dict is unhashable; a frozen one need not be
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The default for a dict subclass restores items through __setitem__, which refuses.
        return (type(self), (dict(self),))


def freeze(value: Any) -> Any:
    """``value`` with every dict, list and set inside it replaced by a read-only one.

    Mappings become :class:`FrozenDict`, lists and plain tuples tuples, sets
    frozensets, numpy arrays read-only copies; anything else (numbers, strings, named
    tuples, objects) is kept as it is.
    """
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list) or type(value) is tuple:
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        if not value.flags.writeable and value.base is None:
            return value  # already a read-only array that owns its data
        out = np.array(value, copy=True)
        out.flags.writeable = False
        return out
    return value
