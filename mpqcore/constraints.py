"""The rules every constraint of an allocation follows, each written once.

* **Budget tolerance.** A cost meets a limit when ``cost <= limit + budget_slack(limit)``
  (:func:`within_budget`), a relative slack of :data:`BUDGET_RTOL` (absolute below 1).
  The checker (:func:`mpqcore.problem.allocation_violations`), the reachability test,
  the uniform reference of a search and every built-in solver use it, so a solver never
  returns what the checker rejects, nor rejects what it accepts.
* **Pins.** :func:`expand_pins` turns ``{fqn or fnmatch pattern: bits}`` into
  ``{fqn: bits}``, refusing a pattern that matches nothing or two that disagree.
* **Ties.** :func:`check_ties` normalizes tie groups and refuses unknown layers.
* **Widths.** :func:`check_width` is the one rule for a bit-width: an integer in
  :data:`BITS_RANGE` (``True``, ``2.5`` and ``"4"`` are not); :func:`mpqcore.types.check_bits`
  applies it to each candidate, pins to their widths.

A leaf module: the value classes validate with it, the problem file, the search and
the solvers call it, and it imports only the errors and the name suggester.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

import numpy as np

from mpqcore.errors import ConfigError
from mpqcore.naming import suggest

__all__ = [
    "BITS_RANGE",
    "BUDGET_RTOL",
    "Ties",
    "budget_slack",
    "check_ties",
    "check_width",
    "expand_pins",
    "normalize_ties",
    "within_budget",
]

#: What makes a pin a pattern rather than a layer name (fnmatch's special characters).
_GLOB = re.compile(r"[*?\[]")

#: The weight bit-widths mpq accepts anywhere.
BITS_RANGE = range(1, 17)

#: Relative slack on every budget: costs are sums of floats, and a limit computed from
#: the same numbers (an average-bits budget met exactly) must not fail by rounding.
BUDGET_RTOL = 1e-9

#: Tie groups as the value classes store them.
Ties = tuple[tuple[str, ...], ...]

_A = TypeVar("_A", bound=np.ndarray)


def budget_slack(limit: float) -> float:
    """How far above ``limit`` a cost may be and still meet it."""
    return BUDGET_RTOL * max(1.0, abs(float(limit)))


@overload
def within_budget(cost: float, limit: float) -> bool: ...
@overload
def within_budget(cost: _A, limit: float) -> _A: ...
def within_budget(cost: Any, limit: float) -> Any:
    """Whether ``cost`` meets ``limit`` (element-wise for an array of costs)."""
    ok = cost <= limit + budget_slack(limit)
    return bool(ok) if np.ndim(ok) == 0 else ok


def check_width(value: Any, *, what: str = "bit-width") -> int:
    """``value`` as a bit-width (an ``int`` in :data:`BITS_RANGE`), or a :class:`ConfigError` naming it.

    Integers (Python's, numpy's, anything with ``__index__``) and integral floats
    (``8.0``, as JSON may write it) are taken; booleans, fractions (``2.5``: a width is
    never rounded), strings and everything else are refused, as is a width outside 1..16.
    """
    valid = f"bit-widths are integers {BITS_RANGE.start}..{BITS_RANGE.stop - 1}"
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{what} = {value!r} is a boolean, not a bit-width; {valid}")
    if isinstance(value, (str, bytes)):
        raise ConfigError(f"{what} = {value!r} is a string, not a bit-width; {valid} (write 4, not '4')")
    try:
        width = operator.index(value)
    except TypeError:
        if not isinstance(value, (float, np.floating)) or not float(value).is_integer():
            raise ConfigError(f"{what} = {value!r} is not an integer; {valid}") from None
        width = int(value)
    if width not in BITS_RANGE:
        raise ConfigError(f"{what} = {width} is outside the valid range; {valid}")
    return width


def expand_pins(
    pins: Mapping[str, Any], layers: Sequence[str], bits: Sequence[int], *, noun: str = "layer"
) -> dict[str, int]:
    """Expand pin patterns (fnmatch) to ``{fqn: bits}``; conflicting or empty patterns are errors."""
    out: dict[str, int] = {}
    source: dict[str, str] = {}
    known: set[str] | None = None
    for pattern, raw in pins.items():
        if not isinstance(pattern, str):
            raise ConfigError(f"pin {pattern!r}: a pin's key is a {noun} name or fnmatch pattern (a str)")
        b = check_width(raw, what=f"pin {pattern!r}")
        if b not in bits:
            raise ConfigError(
                f"pin {pattern!r}={b}: {b} is not a candidate bit-width; candidates: {list(bits)}; add it to bits"
            )
        if _GLOB.search(pattern):
            matched = [name for name in layers if name == pattern or fnmatch.fnmatchcase(name, pattern)]
        else:  # a plain name: one lookup, so a pin on every layer of a large model stays linear
            known = known if known is not None else set(layers)
            matched = [pattern] if pattern in known else []
        if not matched:
            raise ConfigError(
                f"pin {pattern!r} matches no {noun}{suggest(pattern, layers)}; layers: {list(layers)[:10]}"
            )
        for name in matched:
            if name in out and out[name] != b:
                raise ConfigError(
                    f"layer {name!r} is pinned to {out[name]} by {source[name]!r} and to {b} by {pattern!r}"
                )
            out[name] = b
            source[name] = pattern
    return out


def normalize_ties(ties: Iterable[Iterable[str]] | None) -> Ties:
    """Tie groups as tuples of names; a bare string (a group written without its list) is an error."""
    out = []
    for group in ties or ():
        if isinstance(group, str):
            raise ConfigError(
                f"tie {group!r} is a single name, not a group; give each tie as a list of layers, "
                'e.g. ties=[["fc1", "fc2"]]'
            )
        out.append(tuple(str(name) for name in group))
    return tuple(out)


def check_ties(ties: Iterable[Iterable[str]] | None, layers: Sequence[str], *, source: str = "") -> Ties:
    """The normalized tie groups, or a :class:`ConfigError` for a layer not in ``layers``."""
    out = normalize_ties(ties)
    known = set(layers)
    for group in out:
        unknown = [name for name in group if name not in known]
        if unknown:
            prefix = f"{source}: " if source else ""
            raise ConfigError(
                f"{prefix}tie {list(group)} names unknown layers {unknown}{suggest(unknown[0], layers)}; "
                f"layers: {list(layers)[:10]}"
            )
    return out
