"""Where mpq keeps what it caches: trained task models and measurements.

First found: the ``cache_dir`` argument, the ``MPQ_CACHE_DIR`` environment variable,
``$XDG_CACHE_HOME/mpq``, ``~/.cache/mpq``. Measurements live in its ``measurements``
folder, one directory per model (:mod:`mpqcore.measurement_cache`); trained task models
beside it (:mod:`mpqcore.tasks._cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["measurements_dir", "resolve_cache_dir"]


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory (not created)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MPQ_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mpq"


def measurements_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<mpq cache dir>/measurements``: the only folder ``mpq cache clear`` and pruning remove from."""
    return resolve_cache_dir(cache_dir) / "measurements"
