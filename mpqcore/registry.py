"""Name -> implementation tables, one typed registry per kind of plugin.

A hook receives a :class:`Registry` and calls :meth:`Registry.add`. Which plugin is
adding is read off the call stack (the frame of the plugin's hook implementation), so
the hook is called through pluggy as a whole and a clash or a bad product still names
the plugin. :meth:`Registry.create` checks the user's options against the factory's
declared options (:mod:`mpqcore.options`) and what the factory returns against the
kind's Protocol (:mod:`mpqcore.protocols`), naming the plugin, its distribution and
the missing member.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from types import CodeType
from typing import Any, Generic, TypeVar, cast

import attrs

from mpqcore import protocols
from mpqcore.errors import ConfigError, MpqError, PluginError
from mpqcore.naming import suggest
from mpqcore.options import check_options

__all__ = ["KINDS", "KIND_SPECS", "Entry", "Kind", "Registry", "protocol_members", "suggest"]

T = TypeVar("T")

#: What a registered name looks like: the name a user types on the command line.
_NAME = re.compile(r"[a-z0-9][a-z0-9.\-]*")

#: A factory named by a string: ``package.module:Name``.
_LAZY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

#: Who registered an entry when no plugin hook is on the call stack (tests, scripts).
DIRECT = "<direct>"


@attrs.frozen
class Kind:
    """One kind of plugin: its registry name, the hook that fills it, the Protocol its products meet."""

    name: str
    hook: str
    protocol: type


#: Every kind of implementation a plugin can register. A new kind is one line here,
#: a hook spec in :mod:`mpqcore.hookspecs` and a Protocol in :mod:`mpqcore.protocols`.
KIND_SPECS: tuple[Kind, ...] = (
    Kind("method", "mpq_register_methods", protocols.SensitivityMethod),
    Kind("solver", "mpq_register_solvers", protocols.Solver),
    Kind("quantizer", "mpq_register_quantizers", protocols.Quantizer),
    Kind("cost model", "mpq_register_cost_models", protocols.CostModel),
    Kind("task", "mpq_register_tasks", protocols.TaskLike),
    Kind("layer kind", "mpq_register_layer_kinds", protocols.LayerKind),
    Kind("export format", "mpq_register_export_formats", protocols.ExportFormat),
)

#: kind name -> hook name (the table docs and the CLI iterate over).
KINDS: Mapping[str, str] = {k.name: k.hook for k in KIND_SPECS}
_KIND_BY_NAME = {k.name: k for k in KIND_SPECS}


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The attribute and method names a Protocol class declares (its own and its bases')."""
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass in (object,) or klass.__module__ == "typing":
            continue
        for name in [*getattr(klass, "__annotations__", {}), *vars(klass)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return tuple(names)


@attrs.frozen
class Entry:
    """A registered implementation: a factory called with the user's options.

    ``plugin`` is the pluggy plugin name (the entry point name for installed plugins);
    ``origin`` says where it comes from in words, for error messages. A factory
    registered as ``"module:Name"`` is imported when first used (:attr:`factory`), so
    listing plugins never imports a method's heavy dependencies (torch).
    """

    name: str
    _factory: Callable[..., Any] | str = attrs.field(alias="factory")
    plugin: str
    description: str = ""
    origin: str = ""
    _loaded: list[Any] = attrs.field(factory=list, init=False, eq=False, repr=False)

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory itself (a lazy ``"module:Name"`` imported now, once; a failure names the plugin)."""
        if not isinstance(self._factory, str):
            return self._factory
        if not self._loaded:
            module, _, attr = self._factory.partition(":")
            try:
                found = getattr(importlib.import_module(module), attr)
            except Exception as exc:
                raise PluginError(
                    f"{self.where} registered {self.name!r} as {self._factory!r}, which cannot be loaded: "
                    f"{type(exc).__name__}: {exc}",
                    plugin=self.plugin,
                ) from exc
            self._loaded.append(found)
        return self._loaded[0]

    @property
    def target(self) -> str:
        """``module:Name`` of the factory (without importing a lazy one)."""
        if isinstance(self._factory, str):
            return self._factory
        return f"{getattr(self._factory, '__module__', '')}:{getattr(self._factory, '__qualname__', '')}"

    @property
    def where(self) -> str:
        return self.origin or (f"plugin {self.plugin!r}" if self.plugin != DIRECT else "registered directly")


class Registry(Generic[T]):
    """The implementations of one kind, by name; products are checked against the kind's Protocol."""

    def __init__(self, kind: str, *, origins: Mapping[str, str] | None = None):
        if kind not in _KIND_BY_NAME:
            raise ValueError(f"unknown registry kind {kind!r}; valid: {sorted(_KIND_BY_NAME)}")
        self.kind = kind
        self.protocol: type = _KIND_BY_NAME[kind].protocol
        self.members = protocol_members(self.protocol)
        self._entries: dict[str, Entry] = {}
        #: Plugin name -> "plugin 'x' (distribution 'y', entry point 'z')", filled by the plugin set.
        self.origins: dict[str, str] = dict(origins or {})
        #: Hook-implementation code objects -> plugin name, while a hook fills this registry.
        self._hook_code: dict[CodeType, str] = {}
        #: Set by hand to attribute direct registrations (tests); otherwise read off the stack.
        self.current_plugin: str = DIRECT
        #: Appended to an unknown-name error: why installed plugins may be missing here.
        self.missing_hint: str = ""

    # -- filling -------------------------------------------------------------------

    def attribute(self, code_to_plugin: Mapping[CodeType, str]) -> None:
        """Name the hook implementations (by code object) whose calls to :meth:`add` come from which plugin."""
        self._hook_code = dict(code_to_plugin)

    def _where(self, plugin: str) -> str:
        return self.origins.get(plugin, "registered directly" if plugin == DIRECT else f"plugin {plugin!r}")

    def _rank(self, plugin: str) -> int:
        order = list(self.origins)
        return order.index(plugin) if plugin in order else len(order)

    def _caller_plugin(self) -> str:
        if self.current_plugin != DIRECT or not self._hook_code:
            return self.current_plugin
        frame = sys._getframe(2)
        while frame is not None:
            plugin = self._hook_code.get(frame.f_code)
            if plugin is not None:
                return plugin
            frame = frame.f_back  # type: ignore[assignment]  # None ends the loop
        return DIRECT

    def add(self, name: str, factory: Callable[..., T] | str, *, description: str = "") -> None:
        """Register ``factory`` under ``name``.

        ``factory(**options)`` must return the implementation (a class works); given as
        ``"package.module:Name"`` it is imported only when first used. Names
        are lower-case words joined by ``-``; a name taken by another plugin is an error.
        """
        plugin = self._caller_plugin()
        where = self._where(plugin)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PluginError(
                f"{where} registered a {self.kind} with invalid name {name!r}; "
                "use lower-case words, digits and '-' or '.', such as 'my-method'",
                plugin=plugin,
            )
        lazy = isinstance(factory, str)
        if lazy and not _LAZY.fullmatch(factory):  # type: ignore[arg-type]
            raise PluginError(
                f"{where} registered {self.kind} {name!r} as {factory!r}; a factory named by a string is "
                "'package.module:Name'",
                plugin=plugin,
            )
        if not lazy and not callable(factory):
            raise PluginError(f"{where} registered {self.kind} {name!r} with a non-callable {factory!r}", plugin=plugin)
        if name in self._entries:
            # pluggy calls the later-registered plugin first: blame whichever loaded later.
            first, later = self._entries[name].plugin, plugin
            if self._rank(first) > self._rank(later):
                first, later = later, first
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {self._where(first)} and by {self._where(later)}; "
                f"uninstall one of them or block one with MPQ_DISABLE_PLUGINS={later}",
                plugin=later,
            )
        if not description and not lazy:  # a lazy factory's docstring would need its import
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, factory, plugin, description, "" if plugin == DIRECT else where)

    # -- lookup --------------------------------------------------------------------

    def get(self, name: str) -> Entry:
        if not isinstance(name, str):
            raise ConfigError(
                f"a {self.kind} is chosen by its registered name (a str) or given as an object with "
                f"{', '.join(self.members)}; got {type(name).__name__}"
            )
        try:
            return self._entries[name]
        except KeyError:
            valid = sorted(self._entries)
            raise ConfigError(
                f"unknown {self.kind} {name!r}{suggest(name, valid)}; valid {self.kind}s: "
                f"{', '.join(valid) if valid else '(none registered)'}{self.missing_hint}"
            ) from None

    def create(self, name: str, **options: Any) -> T:
        """Instantiate ``name`` with ``options``; the options and the product are checked, the plugin named."""
        entry = self.get(name)
        head = f"{self.kind} {name!r} ({entry.where})"
        try:
            check_options(entry.factory, options)
        except ConfigError as exc:
            raise ConfigError(f"{head}: {exc}") from None
        try:
            product = entry.factory(**options)
        except ConfigError as exc:  # an option's own validator: say whose option it is
            raise ConfigError(f"{head}: {exc}") from exc
        except MpqError:
            raise  # already says what is wrong (a missing file, ...)
        except (TypeError, ValueError) as exc:
            # A value its own converter cannot take, such as samples="abc" from the command line.
            raise ConfigError(f"{head} rejected options {sorted(options)}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # the plugin's own fault: say whose
            raise PluginError(
                f"{head} failed to build with options {dict(options)}: {type(exc).__name__}: {exc}",
                plugin=entry.plugin,
            ) from exc
        self.check(product, head=head, plugin=entry.plugin)
        return cast(T, product)

    def check(self, product: Any, *, head: str | None = None, plugin: str | None = None) -> T:
        """Raise :class:`PluginError` unless ``product`` has every member of the kind's Protocol."""
        missing = [m for m in self.members if not hasattr(product, m)]
        not_callable = [
            m
            for m in self.members
            if m not in missing and callable(getattr(self.protocol, m, None)) and not callable(getattr(product, m))
        ]
        if missing or not_callable:
            head = head or f"{self.kind} object"
            parts = []
            if missing:
                parts.append(f"lacks {', '.join(missing)}")
            if not_callable:
                parts.append(f"has non-callable {', '.join(not_callable)}")
            raise PluginError(
                f"{head} produced a {type(product).__name__} that {' and '.join(parts)}; "
                f"a {self.kind} must provide {', '.join(self.members)} (mpqcore.protocols.{self.protocol.__name__})",
                plugin=plugin,
            )
        return cast(T, product)

    def resolve(self, choice: str | T, options: Mapping[str, Any] | None = None) -> tuple[str, T]:
        """A (name, instance) from a registered name or a ready instance (then ``options`` must be empty)."""
        if isinstance(choice, str):
            return choice, self.create(choice, **dict(options or {}))
        if options:
            raise ConfigError(
                f"{self.kind} options {sorted(options)} were given with a {self.kind} instance "
                f"({type(choice).__name__}); configure the instance itself, or pass the {self.kind}'s name"
            )
        instance = self.check(choice, head=f"the {self.kind} given ({type(choice).__name__})")
        return self.name_of(instance), instance

    def name_of(self, instance: Any) -> str:
        """The registered name whose factory is ``instance``'s class, else the class name."""
        cls = type(instance)
        for entry in self._entries.values():
            if entry.target == f"{cls.__module__}:{cls.__qualname__}" or (
                not isinstance(entry._factory, str) and entry.factory is cls
            ):
                return entry.name
        return type(instance).__name__

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.plugin == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
