"""The rules every constraint of an allocation follows, each written once.

* **Budget tolerance.** A cost meets a limit when ``cost <= limit + budget_slack(limit)``
  (:func:`within_budget`), a relative slack of :data:`BUDGET_RTOL` (absolute below 1).
  The checker (:func:`mpqcore.problem.allocation_violations`), the reachability test,
  the uniform reference of a search and every built-in solver use it, so a solver never
  returns what the checker rejects, nor rejects what it accepts.
* **Pins.** :func:`expand_pins` turns ``{fqn or fnmatch pattern: bits}`` into
  ``{fqn: bits}``, refusing a pattern that matches nothing or two that disagree.
* **Ties.** :func:`check_ties` normalizes tie groups and refuses unknown layers.

A leaf module: the value classes validate with it, the problem file, the search and
the solvers call it, and it imports only the errors and the name suggester.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

import numpy as np

from mpqcore.errors import ConfigError
from mpqcore.naming import suggest

__all__ = ["BUDGET_RTOL", "Ties", "budget_slack", "check_ties", "expand_pins", "normalize_ties", "within_budget"]

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


def expand_pins(
    pins: Mapping[str, Any], layers: Sequence[str], bits: Sequence[int], *, noun: str = "layer"
) -> dict[str, int]:
    """Expand pin patterns (fnmatch) to ``{fqn: bits}``; conflicting or empty patterns are errors."""
    out: dict[str, int] = {}
    source: dict[str, str] = {}
    for pattern, raw in pins.items():
        try:
            b = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"pin {pattern!r}: bits {raw!r} is not an integer") from None
        if b not in bits:
            raise ConfigError(
                f"pin {pattern!r}={b}: {b} is not a candidate bit-width; candidates: {list(bits)}; add it to bits"
            )
        matched = [name for name in layers if name == pattern or fnmatch.fnmatchcase(name, pattern)]
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
