"""A module imported on first use: keeps torch out of ``mpq --help``, ``mpq plugins`` and ``mpq solve``.

``torch = lazy_module("torch")`` binds a stand-in whose first attribute access imports
the real module; each attribute is then kept on the stand-in, so later accesses cost a
dict lookup. Nothing is put into ``sys.modules`` until the real import happens.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["lazy_exports", "lazy_module"]


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):  # copy, pickle and friends probe these
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self.__name__), attr)
        setattr(self, attr, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on the first attribute access."""
    return _LazyModule(name)


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Any, Any]:
    """``__getattr__`` and ``__dir__`` for a package whose public ``names`` (name -> module) load on first use (PEP 562).

    A plugin's package uses it so that loading its entry point (``pkg.plugin``, which
    imports ``pkg`` first) does not import torch: ``mpq plugins`` stays fast.
    """
    import sys

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
