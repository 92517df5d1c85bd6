"""The plugin manager: built-ins and installed plugins, registered the same way.

Built-in implementations are plugins listed in :data:`DEFAULT_PLUGINS`; installed ones
are found through the entry point group ``mpqcore``. Core code asks a
:class:`PluginSet` for a registry by kind and never calls ``pm.hook`` itself.
Set ``MPQ_DISABLE_PLUGIN_AUTOLOAD=1`` to load built-ins only.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from mpqcore import hookspecs
from mpqcore.errors import PluginError
from mpqcore.protocols import CostModel, ExportFormat, LayerKind, Quantizer, SensitivityMethod, Solver, TaskLike
from mpqcore.registry import KIND_SPECS, Registry

__all__ = [
    "DEFAULT_PLUGINS",
    "ENV_DISABLE_AUTOLOAD",
    "ENV_DISABLE_PLUGINS",
    "BlockedPlugin",
    "PluginInfo",
    "PluginSet",
    "get_plugins",
    "reset_plugins",
]

#: Modules that implement the built-in methods, solvers, quantizers, cost models, tasks.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mpqcore.quantizers",
    "mpqcore.costs",
    "mpqcore.solvers",
    "mpqcore.methods",
    "mpqcore.tasks",
    "mpqcore.layer_kinds",
    "mpqcore.export_formats",  # packed, onnx, torchao: imported when used
    "mpqcore.latency",
)

ENV_DISABLE_AUTOLOAD = "MPQ_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLE_PLUGINS = "MPQ_DISABLE_PLUGINS"


@attrs.frozen
class PluginInfo:
    """What ``mpq plugins`` shows for one plugin."""

    name: str
    version: str
    distribution: str
    entry_point: str
    registers: dict[str, list[str]]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class BlockedPlugin:
    """A plugin name that was blocked, why, and whether a plugin of that name was there to block."""

    name: str
    reason: str
    found: bool

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _disabled_from_env() -> tuple[str, ...]:
    raw = os.environ.get(ENV_DISABLE_PLUGINS, "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _plugin_in_traceback(exc: BaseException, code: dict[Any, str]) -> str:
    """The plugin whose hook implementation's frame is deepest in ``exc``'s traceback ('' if none)."""
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        found = code.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def _autoload_disabled() -> bool:
    return os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() in ("1", "true", "yes", "on")


class PluginSet:
    """A loaded set of plugins and the registries they filled.

    ``disable`` names plugins to block (entry point names, or built-in module names
    such as ``mpqcore.tasks``); by default the comma-separated list in
    ``MPQ_DISABLE_PLUGINS``. A blocked plugin is never imported.
    """

    def __init__(
        self, *, autoload: bool | None = None, plugins: Iterable[Any] = (), disable: Iterable[str] | None = None
    ):
        self.pm = pluggy.PluginManager(hookspecs.NAME)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, dict[str, str]] = {}
        reason = "disable= argument" if disable is not None else f"{ENV_DISABLE_PLUGINS} environment variable"
        wanted = _disabled_from_env() if disable is None else tuple(str(n).strip() for n in disable if str(n).strip())
        for name in wanted:
            self.pm.set_blocked(name)
        self._blocked_reason = reason
        self._blocked_found: set[str] = set()
        for modname in DEFAULT_PLUGINS:
            if self.pm.is_blocked(modname):
                self._blocked_found.add(modname)
                continue
            module = importlib.import_module(modname)
            self._register(module, modname, {"version": _core_version(), "distribution": "mpqcore", "entry_point": ""})
        if autoload is None:
            autoload = not _autoload_disabled()
        if autoload:
            self._load_entry_points()
        for obj in plugins:
            name = getattr(obj, "__name__", None) or type(obj).__name__
            if self.pm.is_blocked(name):
                self._blocked_found.add(name)
                continue
            self._register(obj, name, {"version": "", "distribution": "", "entry_point": ""})
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(
                f"{self._origin(name)} implements a hook mpq does not define: {exc}", plugin=name
            ) from exc
        origins = {name: self._origin(name) for name in self._info}
        hint = self._missing_hint(autoload)
        self.registries: dict[str, Registry[Any]] = {}
        for kind in KIND_SPECS:
            registry: Registry[Any] = Registry(kind.name, origins=origins)
            registry.missing_hint = hint
            self.registries[kind.name] = self._fill(registry, kind.hook)

    # -- loading ---------------------------------------------------------------

    def _missing_hint(self, autoload: bool) -> str:
        """Why a name a user expects may be missing: installed plugins not loaded, or blocked."""
        parts = []
        if not autoload:
            parts.append(
                f"installed plugins were not loaded ({ENV_DISABLE_AUTOLOAD} is set, or autoload=False): "
                "only the built-ins are here"
            )
        found = sorted(self._blocked_found)
        if found:
            parts.append(f"blocked plugins, whose names are not listed: {', '.join(found)} ({self._blocked_reason})")
        return "".join(f"; {p}" for p in parts)

    def _origin(self, name: str) -> str:
        info = self._info.get(name, {})
        if info.get("entry_point"):
            return f"plugin {name!r} (distribution {info['distribution']!r}, entry point {info['entry_point']!r})"
        return f"plugin {name!r}"

    def _register(self, obj: Any, name: str, info: dict[str, str]) -> None:
        try:
            self.pm.register(obj, name=name)
        except pluggy.PluginValidationError as exc:
            where = (
                f" (distribution {info['distribution']!r}, entry point {info['entry_point']!r})"
                if info["distribution"]
                else ""
            )
            raise PluginError(f"plugin {name!r}{where} has an invalid hook implementation: {exc}", plugin=name) from exc
        except ValueError as exc:  # name already registered
            raise PluginError(f"plugin name {name!r} is used by two plugins: {exc}", plugin=name) from exc
        self._info[name] = info

    def _load_entry_points(self) -> None:
        # Find every entry point first, so a name clash is reported (naming both
        # distributions) before either plugin is imported.
        chosen: dict[str, tuple[Any, str]] = {}
        for ep in metadata.entry_points(group=hookspecs.NAME):
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in chosen:
                first, first_dist = chosen[ep.name]
                if first_dist == dist:
                    continue  # the same distribution found twice on sys.path
                raise PluginError(
                    f"two installed distributions register the plugin name {ep.name!r}: {first_dist!r} "
                    f"(entry point {first.value!r}) and {dist!r} (entry point {ep.value!r}); uninstall one",
                    plugin=ep.name,
                )
            chosen[ep.name] = (ep, dist)
        for ep, dist in chosen.values():
            version = ep.dist.version if ep.dist is not None else "?"
            where = f"distribution {dist!r}, entry point {ep.name!r} = {ep.value!r}"
            if self.pm.is_blocked(ep.name):
                self._blocked_found.add(ep.name)
                continue  # never imported
            if self.pm.has_plugin(ep.name):
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} failed to import ({where}): {type(exc).__name__}: {exc}. "
                    f"Fix or uninstall {dist!r}, or set {ENV_DISABLE_PLUGINS}={ep.name} to skip it "
                    f"({ENV_DISABLE_AUTOLOAD}=1 skips every installed plugin).",
                    plugin=ep.name,
                ) from exc
            self._register(obj, ep.name, {"version": version, "distribution": dist, "entry_point": ep.value})

    def _fill(self, registry: Registry[Any], hookname: str) -> Registry[Any]:
        """Call the hook through pluggy (wrappers, tryfirst/trylast and tracing apply) to fill ``registry``."""
        caller = getattr(self.pm.hook, hookname)
        code = {impl.function.__code__: impl.plugin_name for impl in caller.get_hookimpls()}
        registry.attribute(code)
        try:
            caller(registry=registry)
        except PluginError:
            raise
        except Exception as exc:
            plugin = _plugin_in_traceback(exc, code)
            where = self._origin(plugin) if plugin else f"a plugin implementing {hookname}"
            raise PluginError(
                f"{where}: hook {hookname} raised {type(exc).__name__}: {exc}", plugin=plugin or None
            ) from exc
        finally:
            registry.attribute({})
        return registry

    @property
    def blocked(self) -> list[BlockedPlugin]:
        """The plugins blocked by name, whether or not such a plugin exists."""
        return [
            BlockedPlugin(name, self._blocked_reason, name in self._blocked_found)
            for name in sorted(n for n in self._blocked_names())
        ]

    def _blocked_names(self) -> list[str]:
        # pluggy keeps a blocked name mapped to None
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is None]

    # -- queries -----------------------------------------------------------------

    def registry(self, kind: str) -> Registry[Any]:
        return self.registries[kind]

    @property
    def methods(self) -> Registry[SensitivityMethod]:
        return self.registries["method"]

    @property
    def solvers(self) -> Registry[Solver]:
        return self.registries["solver"]

    @property
    def quantizers(self) -> Registry[Quantizer]:
        return self.registries["quantizer"]

    @property
    def cost_models(self) -> Registry[CostModel]:
        return self.registries["cost model"]

    @property
    def tasks(self) -> Registry[TaskLike]:
        return self.registries["task"]

    @property
    def layer_kinds(self) -> Registry[LayerKind]:
        return self.registries["layer kind"]

    @property
    def export_formats(self) -> Registry[ExportFormat]:
        return self.registries["export format"]

    def info(self) -> list[PluginInfo]:
        out = []
        for name, meta in self._info.items():
            registers = {kind: reg.by_plugin(name) for kind, reg in self.registries.items()}
            registers = {k: v for k, v in registers.items() if v}
            out.append(PluginInfo(name, meta["version"], meta["distribution"], meta["entry_point"], registers))
        return out


def _core_version() -> str:
    try:
        return metadata.version("mpqcore")
    except metadata.PackageNotFoundError:
        return "0+unknown"


_DEFAULT: PluginSet | None = None


def get_plugins() -> PluginSet:
    """The process-wide plugin set, loaded on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PluginSet()
    return _DEFAULT


def reset_plugins() -> None:
    """Forget the loaded plugin set (tests, or after installing a plugin at run time)."""
    global _DEFAULT
    _DEFAULT = None
