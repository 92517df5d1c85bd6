"""The bounds of the on-disk cache, read in one place: a size (``500MB``) and an age (``30d``).

Sizes take a decimal unit (``B``, ``kB``, ``MB``, ``GB``, ``TB``: powers of 1000, as
:mod:`mpqcore.units` prints them) or a binary one (``KiB``, ``MiB``, ``GiB``, ``TiB``:
powers of 1024); the case of the letters does not matter (``500mb``), a space may stand
between number and unit, and a bare number counts bytes. Ages take ``s``, ``m``, ``h``,
``d`` or ``w``. A bad value is a :class:`~mpqcore.errors.ConfigError` that names it and
says what is valid, raised before any work.

``cache_max_bytes`` (the API) / ``--cache-max-size`` (the command line) bound the
measurements directory; ``MPQ_CACHE_MAX_SIZE`` does when neither is given.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from mpqcore.errors import ConfigError

__all__ = ["ENV_CACHE_MAX_SIZE", "check_cache_max_bytes", "parse_age", "parse_size"]

#: Bounds the measurements directory when ``cache_max_bytes`` / ``--cache-max-size`` is not given.
ENV_CACHE_MAX_SIZE = "MPQ_CACHE_MAX_SIZE"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_SIZE_HINT = (
    "write a number of bytes with a unit, e.g. 500MB, 2GB, 1.5GiB (units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
)
_AGE_HINT = "write a number with a unit, e.g. 30d, 12h, 2w (units s, m, h, d, w)"


def _parse(text: str, what: str, noun: str, units: Mapping[str, float], hint: str) -> float:
    """``text`` as a number times its unit's scale (``units`` keyed by lower-case unit), or a clear error."""
    match = _NUMBER_UNIT.match(str(text))
    if match is None:
        raise ConfigError(f"{what} {text!r} is not {noun}; {hint}")
    number, unit = match.groups()
    scale = units.get(unit.lower())
    if scale is None:
        raise ConfigError(f"{what} {text!r}: {'no unit' if not unit else f'unknown unit {unit!r}'}; {hint}")
    value = float(number) * scale
    if not math.isfinite(value):
        raise ConfigError(f"{what} {text!r} is too large; {hint}")
    return value


def parse_size(text: str, *, what: str = "size") -> int:
    """``"500MB"`` -> 500000000 bytes, ``"1GiB"`` -> 1073741824, ``"0"`` -> 0."""
    return int(_parse(text, what, "a size", _SIZE_UNITS, _SIZE_HINT))


def parse_age(text: str, *, what: str = "age") -> float:
    """``"30d"`` -> 2592000.0 seconds."""
    return _parse(text, what, "an age", _AGE_UNITS, _AGE_HINT)


def check_cache_max_bytes(value: Any) -> int | None:
    """``cache_max_bytes`` as bytes: ``None`` (then ``MPQ_CACHE_MAX_SIZE``, else no bound),
    a number of bytes ``>= 0``, or a size with a unit (``"500MB"``)."""
    if value is None:
        env = os.environ.get(ENV_CACHE_MAX_SIZE, "").strip()
        return parse_size(env, what=f"${ENV_CACHE_MAX_SIZE}") if env else None
    if isinstance(value, str):
        return parse_size(value, what="cache_max_bytes")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"cache_max_bytes must be None (no bound unless ${ENV_CACHE_MAX_SIZE} is set), a number of bytes >= 0 "
            f"or a size such as '500MB', got {value!r}"
        )
    return int(value)
