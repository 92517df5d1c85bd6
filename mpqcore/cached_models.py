"""The models in the measurements directory: what each holds, and removing them, least recently used first.

``<mpq cache dir>/measurements`` holds one directory per model
(:mod:`mpqcore.measurement_cache`). :func:`cached_models` lists them with their size on
disk and last use; :func:`prune` removes the least recently used ones beyond a size or
older than an age; :func:`remove` removes chosen ones. Only a directory directly inside
the measurements directory that holds a cache's ``manifest.json`` (or its lock file) is
ever removed; a symbolic link, a file, or anything elsewhere is never touched, and a
directory another process holds open is kept (:mod:`mpqcore.cache_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from mpqcore import cache_lock
from mpqcore.errors import ConfigError

__all__ = ["CachedModel", "Pruned", "cached_models", "find", "prune", "remove"]


@attrs.frozen
class CachedModel:
    """One model's measurement directory."""

    path: Path
    #: The directory's name: the first 24 hex digits of the model's weight digest.
    digest: str
    #: ``DigitsCNN, 18,522 parameters``; ``None`` for a manifest written before descriptions were kept.
    description: str | None
    #: Values stored (evaluations and objectives); ``None`` when the database cannot be read.
    entries: int | None
    size_bytes: int
    #: Seconds since the epoch of the last opening (the newest file before mpq recorded it).
    last_used: float


@attrs.frozen
class Pruned:
    """What :func:`prune` or :func:`remove` did."""

    removed: tuple[CachedModel, ...]
    #: Directories that would have gone but another process holds open.
    in_use: tuple[CachedModel, ...]
    #: The measurements directory's size before and after.
    bytes_before: int
    bytes_after: int


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _entries(path: Path) -> int | None:
    db = path / "evaluations.sqlite"
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    except sqlite3.Error:
        return None


def _last_used(path: Path) -> float:
    lock = path / cache_lock.LOCK_NAME
    if lock.exists():
        return lock.stat().st_mtime
    times = [p.stat().st_mtime for p in path.iterdir() if p.is_file()]
    return max(times, default=path.stat().st_mtime)


def _describe(path: Path) -> CachedModel:
    try:
        description = json.loads((path / "manifest.json").read_text()).get("description")
    except (OSError, ValueError, AttributeError):
        description = None
    return CachedModel(
        path=path,
        digest=path.name,
        description=description if isinstance(description, str) else None,
        entries=_entries(path),
        size_bytes=_size(path),
        last_used=_last_used(path),
    )


def _is_cache(path: Path) -> bool:
    return (
        path.is_dir()
        and not path.is_symlink()
        and not path.name.startswith(".")
        and ((path / "manifest.json").is_file() or (path / cache_lock.LOCK_NAME).is_file())
    )


def cached_models(measurements: Path) -> list[CachedModel]:
    """Every model directory in ``measurements``, least recently used first."""
    if not measurements.is_dir():
        return []
    models = []
    for path in measurements.iterdir():
        try:
            if _is_cache(path):
                models.append(_describe(path))
        except FileNotFoundError:  # removed while being read
            continue
    return sorted(models, key=lambda m: (m.last_used, m.digest))


def _total(measurements: Path) -> int:
    return _size(measurements) if measurements.is_dir() else 0


def find(measurements: Path, digests: Sequence[str]) -> list[CachedModel]:
    """The directories named by ``digests`` (each a whole name or an unambiguous prefix of at
    least 4 characters), or a :class:`ConfigError` naming every one that matches none or several."""
    models = cached_models(measurements)
    chosen: dict[str, CachedModel] = {}
    problems = []
    for d in digests:
        matches = [m for m in models if m.digest.startswith(d.lower())] if len(d) >= 4 else []
        if len(matches) == 1:
            chosen[matches[0].digest] = matches[0]
        elif not matches:
            problems.append(f"{d!r} names no cached model" + (" (give at least 4 characters)" if len(d) < 4 else ""))
        else:
            problems.append(f"{d!r} matches {len(matches)} ({', '.join(m.digest for m in matches)}); give more of it")
    if problems:
        known = ", ".join(m.digest for m in models) or "none: the directory is empty"
        raise ConfigError(f"{'; '.join(problems)}; the cached models in {str(measurements)!r}: {known}")
    return list(chosen.values())


def remove(measurements: Path, models: Iterable[CachedModel]) -> Pruned:
    """Remove ``models``' directories, except those another process holds open."""
    before = _total(measurements)
    removed: list[CachedModel] = []
    in_use: list[CachedModel] = []
    root = measurements.resolve()
    for m in models:
        if m.path.resolve().parent != root or not _is_cache(m.path):  # never anything outside
            raise ConfigError(f"{str(m.path)!r} is not a model directory of {str(measurements)!r}; nothing removed")
        (removed if cache_lock.remove_unless_in_use(m.path) else in_use).append(m)
    for leftover in cache_lock.leftovers(measurements):  # a remover killed half-way
        cache_lock.remove_unless_in_use(leftover)
    return Pruned(tuple(removed), tuple(in_use), before, _total(measurements))


def prune(
    measurements: Path,
    *,
    max_bytes: int | None = None,
    older_than: float | None = None,
    keep: Path | None = None,
    now: float | None = None,
) -> Pruned:
    """Remove model directories least recently used first: every one last used more than
    ``older_than`` seconds ago, then more until the measurements directory holds at most
    ``max_bytes``. ``keep`` (the directory a search uses) and directories in use stay."""
    if max_bytes is None and older_than is None:
        raise ConfigError("prune needs a bound: max_bytes (--max-size 500MB) or older_than (--older-than 30d)")
    now = time.time() if now is None else now
    kept = keep.resolve() if keep is not None else None
    total = _total(measurements)
    before = total
    removed: list[CachedModel] = []
    in_use: list[CachedModel] = []
    for m in cached_models(measurements):
        if kept is not None and m.path.resolve() == kept:
            continue
        old = older_than is not None and now - m.last_used > older_than
        big = max_bytes is not None and total > max_bytes
        if not (old or big):
            continue
        if cache_lock.remove_unless_in_use(m.path):
            removed.append(m)
            total -= m.size_bytes
        else:
            in_use.append(m)
    for leftover in cache_lock.leftovers(measurements):
        cache_lock.remove_unless_in_use(leftover)
    return Pruned(tuple(removed), tuple(in_use), before, _total(measurements))
