"""Name -> implementation tables, one per kind of plugin.

A hook receives a :class:`Registry` and calls :meth:`Registry.add`. The plugin manager
sets :attr:`Registry.current_plugin` while each plugin's hook runs, so a clash names
both plugins and ``mpq plugins`` can say who registered what.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from mpqcore.errors import ConfigError, MpqError, PluginError

#: What a registered name looks like: the name a user types on the command line.
_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]*")

__all__ = ["KINDS", "Entry", "Registry", "suggest"]

#: The kinds of implementation a plugin can register, with the hook that registers each.
KINDS = {
    "method": "mpq_register_methods",
    "solver": "mpq_register_solvers",
    "quantizer": "mpq_register_quantizers",
    "cost model": "mpq_register_cost_models",
    "task": "mpq_register_tasks",
}


def suggest(name: str, valid: Iterable[str]) -> str:
    """A ``; did you mean 'x'?`` suffix when one valid name is close to ``name``."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@attrs.frozen
class Entry:
    """A registered implementation: a factory called with the user's options."""

    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""


class Registry:
    """The implementations of one kind, by name."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown registry kind {kind!r}; valid: {sorted(KINDS)}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self.current_plugin: str = "<direct>"

    def add(self, name: str, factory: Callable[..., Any], *, description: str = "") -> None:
        """Register ``factory`` under ``name``.

        ``factory(**options)`` must return the implementation (a class works). Names
        are lower-case words joined by ``-``; a name taken by another plugin is an error.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PluginError(
                f"plugin {self.current_plugin!r} registered a {self.kind} with invalid name {name!r}; "
                "use lower-case words, digits and '-' or '.', such as 'my-method'",
                plugin=self.current_plugin,
            )
        if not callable(factory):
            raise PluginError(
                f"plugin {self.current_plugin!r} registered {self.kind} {name!r} with a non-callable {factory!r}",
                plugin=self.current_plugin,
            )
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {other!r} and by plugin "
                f"{self.current_plugin!r}; uninstall one of them or disable it",
                plugin=self.current_plugin,
            )
        if not description:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, factory, self.current_plugin, description)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            valid = sorted(self._entries)
            raise ConfigError(
                f"unknown {self.kind} {name!r}{suggest(name, valid)}; valid {self.kind}s: "
                f"{', '.join(valid) if valid else '(none registered)'}"
            ) from None

    def create(self, name: str, **options: Any) -> Any:
        """Instantiate the implementation ``name`` with ``options``, naming the plugin on failure."""
        entry = self.get(name)
        try:
            return entry.factory(**options)
        except MpqError:
            raise  # already says what is wrong (an attrs validator, a missing file, ...)
        except (TypeError, ValueError) as exc:
            # An unknown keyword (TypeError) or a value its converter cannot take, such as
            # samples="abc" from the command line (ValueError): user input, not a crash.
            raise ConfigError(
                f"{self.kind} {name!r} (plugin {entry.plugin!r}) rejected options {sorted(options)}: {type(exc).__name__}: {exc}"
            ) from exc

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.plugin == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
