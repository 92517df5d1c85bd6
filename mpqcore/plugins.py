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
from mpqcore.registry import KINDS, Registry

__all__ = ["DEFAULT_PLUGINS", "ENV_DISABLE_AUTOLOAD", "PluginInfo", "PluginSet", "get_plugins", "reset_plugins"]

#: Modules that implement the built-in methods, solvers, quantizers, cost models, tasks.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "mpqcore.quantizers",
    "mpqcore.costs",
    "mpqcore.solvers",
    "mpqcore.methods",
    "mpqcore.tasks",
)

ENV_DISABLE_AUTOLOAD = "MPQ_DISABLE_PLUGIN_AUTOLOAD"


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


def _autoload_disabled() -> bool:
    return os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() in ("1", "true", "yes", "on")


class PluginSet:
    """A loaded set of plugins and the registries they filled."""

    def __init__(self, *, autoload: bool | None = None, plugins: Iterable[Any] = ()):
        self.pm = pluggy.PluginManager(hookspecs.NAME)
        self.pm.add_hookspecs(hookspecs)
        self._info: dict[str, dict[str, str]] = {}
        for modname in DEFAULT_PLUGINS:
            module = importlib.import_module(modname)
            self._register(module, modname, {"version": _core_version(), "distribution": "mpqcore", "entry_point": ""})
        if autoload is None:
            autoload = not _autoload_disabled()
        if autoload:
            self._load_entry_points()
        for obj in plugins:
            name = getattr(obj, "__name__", None) or type(obj).__name__
            self._register(obj, name, {"version": "", "distribution": "", "entry_point": ""})
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {exc.plugin!r} implements a hook mpq does not define: {exc}", plugin=str(exc.plugin)
            ) from exc
        self.registries = {kind: Registry(kind) for kind in KINDS}
        for kind, hookname in KINDS.items():
            self._fill(self.registries[kind], hookname)

    # -- loading ---------------------------------------------------------------

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
            if self.pm.has_plugin(ep.name):
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} failed to import ({where}): {type(exc).__name__}: {exc}. "
                    f"Fix or uninstall {dist!r}, or set {ENV_DISABLE_AUTOLOAD}=1 to skip installed plugins.",
                    plugin=ep.name,
                ) from exc
            self._register(obj, ep.name, {"version": version, "distribution": dist, "entry_point": ep.value})

    def _fill(self, registry: Registry, hookname: str) -> None:
        caller = getattr(self.pm.hook, hookname)
        # Oldest first, so built-ins register before installed plugins and a clash is
        # blamed on the later plugin. get_hookimpls() is already in registration order
        # (pluggy *calls* them last-registered first, which is why we do not call the hook).
        for impl in caller.get_hookimpls():
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(**dict.fromkeys(impl.argnames, registry))
            except PluginError:
                raise
            except Exception as exc:
                info = self._info.get(impl.plugin_name, {})
                where = (
                    f" (distribution {info['distribution']!r}, entry point {info['entry_point']!r})"
                    if info.get("entry_point")
                    else ""
                )
                raise PluginError(
                    f"plugin {impl.plugin_name!r}{where}: hook {hookname} raised {type(exc).__name__}: {exc}",
                    plugin=impl.plugin_name,
                ) from exc
            finally:
                registry.current_plugin = "<direct>"

    # -- queries -----------------------------------------------------------------

    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    @property
    def methods(self) -> Registry:
        return self.registries["method"]

    @property
    def solvers(self) -> Registry:
        return self.registries["solver"]

    @property
    def quantizers(self) -> Registry:
        return self.registries["quantizer"]

    @property
    def cost_models(self) -> Registry:
        return self.registries["cost model"]

    @property
    def tasks(self) -> Registry:
        return self.registries["task"]

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
