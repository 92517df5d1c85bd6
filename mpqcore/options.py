"""The options of a registered implementation: declared once, checked in one wording.

An implementation's options are the fields of an attrs class, each declared with
:func:`option`::

    @attrs.frozen
    class HessianTrace:
        samples: int = option(int, default=16, minimum=1, help="draws per layer")
        estimator: str = option(str, default="auto", choices=ESTIMATORS)

The field converts what a user writes in Python or on the command line (``"4"``,
``"yes"``, ``"none"``) and refuses the rest with one message for every plugin:
``samples must be an integer >= 1, got 'abc'``. The message names the option, never the
plugin: the registry, which knows the entry point, says which method of which plugin
was asked for. :func:`describe_options` lists what a factory takes and
:func:`check_options` refuses an unknown option name, listing the valid ones with
their types and defaults, before the factory runs.

Kinds: ``int`` (no bools, no 2.5; ``"4"`` and ``4.0`` are 4), ``float`` (finite), ``bool``
(``True``/``False``, ``1``/``0`` and the strings true/false, yes/no, on/off, 1/0 in
any case), ``str`` (with ``choices``: one of them, with a did-you-mean), ``Path``, or any
other class or tuple of classes (an instance of it). ``optional=True`` adds ``None``
(also the strings ``"none"``/``"null"``); ``also=("auto",)`` adds literal values.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mpqcore.errors import ConfigError
from mpqcore.naming import suggest

__all__ = ["REQUIRED", "OptionSpec", "check_options", "describe_options", "format_options", "option", "options_class"]

#: The default of an option the user must give.
REQUIRED: Any = attrs.NOTHING

#: The key under which :func:`option` keeps its kind in ``attrs.Attribute.metadata``.
_KEY = "mpqcore.option"

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"none", "null"})


class _Rejected(Exception):
    """A kind cannot take a value; ``hint`` is appended to the standard message."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


@attrs.frozen
class _Invalid:
    """What the converter leaves for the validator, which knows the option's name."""

    value: Any
    hint: str


def _bounds(minimum, maximum, greater_than=None, less_than=None) -> str:
    """`` >= 1``, `` from 1 to 16``, `` > 0 and < 1``: the range part of a message."""
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    limits = ((">=", minimum), (">", greater_than), ("<=", maximum), ("<", less_than))
    kept = [f"{op} {v:g}" for op, v in limits if v is not None]
    return " " + " and ".join(kept) if kept else ""


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


@attrs.frozen
class _Integer:
    minimum: int | None = None
    maximum: int | None = None

    @property
    def expected(self) -> str:
        return "an integer" + _bounds(self.minimum, self.maximum)

    @property
    def type_name(self) -> str:
        return "int" + _bounds(self.minimum, self.maximum)

    def convert(self, value: Any) -> int:
        out = self._integer(value)
        if (self.minimum is not None and out < self.minimum) or (self.maximum is not None and out > self.maximum):
            raise _Rejected()
        return out

    @staticmethod
    def _integer(value: Any) -> int:
        if _is_bool(value):
            raise _Rejected()
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise _Rejected() from None
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(float(value))
        raise _Rejected()


@attrs.frozen
class _Number:
    minimum: float | None = None
    maximum: float | None = None
    greater_than: float | None = None
    less_than: float | None = None

    @property
    def _range(self) -> str:
        return _bounds(self.minimum, self.maximum, self.greater_than, self.less_than)

    @property
    def expected(self) -> str:
        return "a finite number" + self._range

    @property
    def type_name(self) -> str:
        return "float" + self._range

    def convert(self, value: Any) -> float:
        if _is_bool(value) or not isinstance(value, (numbers.Real, str)):
            raise _Rejected()
        try:
            out = float(value)
        except ValueError:
            raise _Rejected() from None
        lo, hi, above, below = self.minimum, self.maximum, self.greater_than, self.less_than
        if not math.isfinite(out):
            raise _Rejected()
        if (lo is not None and out < lo) or (hi is not None and out > hi):
            raise _Rejected()
        if (above is not None and out <= above) or (below is not None and out >= below):
            raise _Rejected()
        return out


@attrs.frozen
class _Boolean:
    expected = "true or false"
    type_name = "bool"

    def convert(self, value: Any) -> bool:
        if _is_bool(value):
            return bool(value)
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Rejected(" (also accepted: yes/no, on/off, 1/0)" if isinstance(value, str) else "")


@attrs.frozen
class _Choice:
    choices: tuple[str, ...]

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    @property
    def type_name(self) -> str:
        return self.expected

    def convert(self, value: Any) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        raise _Rejected(suggest(value, self.choices))


@attrs.frozen
class _Text:
    expected = "a string"
    type_name = "str"

    def convert(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        raise _Rejected()


@attrs.frozen
class _Path:
    expected = "a path"
    type_name = "path"

    def convert(self, value: Any) -> Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Rejected()


@attrs.frozen
class _Instance:
    types: tuple[type, ...]

    @property
    def type_name(self) -> str:
        return " or ".join(t.__name__ for t in self.types)

    @property
    def expected(self) -> str:
        return "a " + self.type_name

    def convert(self, value: Any) -> Any:
        if isinstance(value, self.types):
            return value
        raise _Rejected()


@attrs.frozen
class _Kind:
    """A base kind with its extras: ``None`` and literal values such as ``"auto"``."""

    base: Any
    optional: bool = False
    also: tuple[Any, ...] = ()
    help: str = ""

    @property
    def _extras(self) -> str:
        text = "".join(f" or {v!r}" for v in self.also)
        return text + (" or None" if self.optional else "")

    @property
    def expected(self) -> str:
        return self.base.expected + self._extras

    @property
    def type_name(self) -> str:
        return self.base.type_name + self._extras

    def convert(self, value: Any) -> Any:
        key = value.strip().lower() if isinstance(value, str) else value
        for literal in self.also:
            if key == (literal.lower() if isinstance(literal, str) else literal) and not _is_bool(value):
                return literal
        if self.optional and (value is None or (isinstance(key, str) and key in _NONE)):
            return None
        try:
            return self.base.convert(value)
        except _Rejected as exc:
            close = suggest(key, [v for v in self.also if isinstance(v, str)])
            exc.hint = close or exc.hint  # 'aut' is a typo of 'auto' before it is a bad bool
            raise


def _base_kind(kind: Any, minimum, maximum, greater_than, less_than, choices) -> Any:
    numeric = (minimum, maximum, greater_than, less_than)
    if kind is float:
        return _Number(minimum, maximum, greater_than, less_than)
    if any(v is not None for v in numeric):
        if kind is not int or greater_than is not None or less_than is not None:
            raise TypeError("minimum/maximum apply to int and float options; greater_than/less_than to float")
        return _Integer(minimum, maximum)
    if choices is not None:
        if kind is not str or not choices or not all(isinstance(c, str) for c in choices):
            raise TypeError("choices apply to str options and must be strings")
        return _Choice(tuple(choices))
    simple = {int: _Integer(), bool: _Boolean(), str: _Text(), Path: _Path()}
    if isinstance(kind, type) and kind in simple:
        return simple[kind]
    types = kind if isinstance(kind, tuple) else (kind,)
    if not types or not all(isinstance(t, type) for t in types):
        raise TypeError(f"option kind must be a class or a tuple of classes, got {kind!r}")
    return _Instance(types)


def option(
    kind: Any,
    *,
    default: Any = REQUIRED,
    minimum: float | None = None,
    maximum: float | None = None,
    greater_than: float | None = None,
    less_than: float | None = None,
    choices: Iterable[str] | None = None,
    optional: bool = False,
    also: Iterable[Any] = (),
    help: str = "",
    kw_only: bool = False,
) -> Any:
    """An attrs field for one option of ``kind`` (``int``, ``float``, ``bool``, ``str``, ``Path``, a class).

    ``minimum``/``maximum`` bound an int or float (inclusive), ``greater_than``/
    ``less_than`` a float (exclusive); ``choices`` limits a str; ``optional`` admits
    ``None``; ``also`` admits literal values (``("auto",)``). ``default=REQUIRED`` (the
    default) makes the option mandatory. A value of the wrong type or out of range
    raises :class:`~mpqcore.errors.ConfigError`: ``<name> must be <expected>, got <value>``.
    """
    spec = _Kind(
        _base_kind(kind, minimum, maximum, greater_than, less_than, choices),
        optional=optional,
        also=tuple(also),
        help=help,
    )

    def convert(value: Any) -> Any:
        try:
            return spec.convert(value)
        except _Rejected as exc:
            return _Invalid(value, exc.hint)

    def validate(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, _Invalid):
            name = getattr(attribute, "alias", None) or attribute.name
            raise ConfigError(f"{name} must be {spec.expected}, got {value.value!r}{value.hint}")

    return attrs.field(default=default, converter=convert, validator=validate, kw_only=kw_only, metadata={_KEY: spec})


@attrs.frozen
class OptionSpec:
    """One option of a factory, as users see it: ``samples (int >= 1, default 16)``."""

    name: str
    type: str
    default: Any = REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def __str__(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name} ({self.type}, {default})"


def options_class(factory: Any) -> type | None:
    """The attrs class whose fields are ``factory``'s options: itself, or ``factory.options_class``.

    ``None`` for a plain callable: its options are its signature's keywords.
    """
    if isinstance(factory, type) and attrs.has(factory):
        return factory
    cls = getattr(factory, "options_class", None)
    return cls if isinstance(cls, type) and attrs.has(cls) else None


def _type_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty or annotation is None:
        return "any"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _field_spec(field: attrs.Attribute) -> OptionSpec:
    kind = field.metadata.get(_KEY)
    default = field.default
    make = getattr(default, "factory", None)  # an attrs.Factory (a function to mypy, a class at run time)
    if callable(make):
        default = REQUIRED if getattr(default, "takes_self", False) else make()
    name = getattr(field, "alias", None) or field.name
    if kind is not None:
        return OptionSpec(name, kind.type_name, default, kind.help)
    # A plain attrs field: its annotation, unless metadata {"type": ..., "help": ...} says better.
    meta = field.metadata
    return OptionSpec(name, str(meta.get("type", _type_text(field.type))), default, str(meta.get("help", "")))


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or an object inspect cannot read
        return None


def describe_options(factory: Callable[..., Any]) -> tuple[OptionSpec, ...]:
    """The options ``factory`` takes: an attrs class's init fields, else its signature's keywords."""
    cls = options_class(factory)
    if cls is not None:
        return tuple(_field_spec(f) for f in attrs.fields(cls) if f.init)
    sig = _signature(factory)
    if sig is None:
        return ()
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(
        OptionSpec(p.name, _type_text(p.annotation), REQUIRED if p.default is p.empty else p.default)
        for p in sig.parameters.values()
        if p.kind in keywords
    )


def _takes_any_keyword(factory: Callable[..., Any]) -> bool:
    if options_class(factory) is not None:
        return False
    sig = _signature(factory)
    return sig is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def format_options(specs: Iterable[OptionSpec]) -> str:
    """``samples (int >= 1, default 16), estimator (...)``, or ``none`` when there are none."""
    return ", ".join(map(str, specs)) or "none"


def check_options(factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Refuse option names ``factory`` does not take, and options it needs that are missing.

    The :class:`~mpqcore.errors.ConfigError` lists every valid option with its type and
    default. Values are checked by the factory itself (the fields :func:`option` makes).
    """
    specs = describe_options(factory)
    names = [s.name for s in specs]
    unknown = [k for k in options if k not in names]
    if unknown and not _takes_any_keyword(factory):
        head = f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
        if not specs:
            raise ConfigError(f"{head}; it takes no options")
        hint = suggest(unknown[0], names) if len(unknown) == 1 else ""
        lead = f"{hint} Valid options: " if hint else "; valid options: "  # "...'samples'? Valid options: ..."
        raise ConfigError(head + lead + format_options(specs))
    missing = [s for s in specs if s.required and s.name not in options]
    if missing:
        listed = ", ".join(f"{s.name} ({s.type})" for s in missing)
        raise ConfigError(f"missing required option{'s' if len(missing) > 1 else ''}: {listed}")
