"""A content-keyed cache of measurements on disk, so that an interrupted or repeated search resumes.

Every loss and metric evaluation of the :class:`~mpqcore.evaluate.Evaluator`, and each
method's whole objective, is stored under a key that hashes everything the number depends
on: the model's weights, the calibration batches, the quantizer and its options, the
loss and the metric (their code, and the values their closures hold), the activation
bits, the device type, the torch and mpq versions, the layers, and the assignment itself.
A rerun after Ctrl-C or a crash evaluates only what is missing, and a second search with
another solver or budget evaluates nothing new; the values read back are the stored
floats, so the objective is bit-for-bit the one a cold run gives.

A cache directory belongs to one model: ``manifest.json`` records the digest of its
weights and its layers, and a directory that holds another model's measurements is
refused with both digests named (never silently reused); it also keeps a short
description of the model (its class and parameter count) for ``mpq cache list``. Entries live in SQLite
(``evaluations.sqlite``, write-ahead log), which serialises concurrent writers: two
processes may share a directory. A metric whose result depends on data its code does not
show (a global, a file it reads) can declare ``metric.cache_key = "..."``: it enters the
key.

An open cache marks its directory in use (:mod:`mpqcore.cache_lock`), so pruning
(:mod:`mpqcore.cached_models`, ``cache_max_bytes``) never removes it; opening records
the directory's last use.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import os
import pickle
import sqlite3
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np
import torch

from mpqcore import cache_lock
from mpqcore.cache_dir import measurements_dir
from mpqcore.errors import ConfigError
from mpqcore.files import atomic_write_json

__all__ = [
    "MeasurementCache",
    "callable_identity",
    "code_digest",
    "default_cache_dir",
    "digest",
    "model_description",
    "model_digest",
    "open_cache",
    "settings_digest",
]

_FORMAT = 1


def _update(h: Any, value: Any, depth: int = 0) -> None:
    """Feed ``value`` into hash ``h``: tensors by dtype, shape and bytes; containers recursively."""
    if depth > 20:
        h.update(b"<deep>")
        return
    if isinstance(value, np.ndarray) and value.dtype != object:
        value = torch.from_numpy(np.ascontiguousarray(value))  # by content, as a tensor: repr elides
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        h.update(b"{")
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _update(h, value[k], depth + 1)
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(f"({type(value).__name__}".encode())
        for v in value:
            _update(h, v, depth + 1)
        h.update(b")")
    elif attrs.has(type(value)):
        h.update(type(value).__qualname__.encode())
        _update(h, {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}, depth + 1)
    elif callable(value):
        h.update(callable_identity(value).encode())
    else:
        h.update(repr(value).encode())


def digest(*values: Any) -> str:
    """A hex sha256 of ``values`` (tensors by content; see :func:`_update`)."""
    h = hashlib.sha256()
    for v in values:
        _update(h, v)
    return h.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """The digest of every tensor the model holds (parameters and buffers, by name)."""
    return digest(dict(model.state_dict()))


# the functions whose identity is being computed: a recursive one (through a closure or a
# global) is named, not followed again
_FOLLOWING: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("_FOLLOWING", default=frozenset())


def callable_identity(fn: Callable[..., Any] | None) -> str:
    """What a callable computes, as far as it can be read: its name, its code, the values it
    closes over and the module globals its code reads (``T`` in ``lambda o, r: kl(o / T, r)``:
    changed between two runs, the loss is another one).

    ``fn.cache_key``, when set, is part of it, for a callable whose result depends on
    something its code, closure and globals do not show.
    """
    if fn is None:
        return "None"
    parts = [getattr(fn, "__module__", "") or "", getattr(fn, "__qualname__", type(fn).__qualname__)]
    func = getattr(fn, "__func__", fn)  # a bound method: its function, and the object it is bound to
    following = _FOLLOWING.get()
    if id(func) in following:
        return "|".join([*parts, "recursive"])
    token = _FOLLOWING.set(following | {id(func)})
    try:
        extra = getattr(fn, "cache_key", None)
        if extra is not None:
            parts.append(f"key={extra!r}")
        inner = getattr(fn, "__wrapped__", None)
        if inner is not None and inner is not fn:
            parts.append(callable_identity(inner))
        code = getattr(func, "__code__", None)
        if code is not None:
            h = hashlib.sha256()
            _code_content(h, code)
            for cell in getattr(func, "__closure__", None) or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    _closure_value(h, cell.cell_contents)
            scope = getattr(func, "__globals__", None) or {}
            for name in sorted(_names_read(code) & scope.keys()):
                h.update(f"global {name}=".encode())
                _closure_value(h, scope[name])
            parts.append(h.hexdigest()[:16])
        bound = getattr(fn, "__self__", None)
        if bound is not None and not isinstance(bound, type):
            h = hashlib.sha256()
            _closure_value(h, bound)
            parts.append(h.hexdigest()[:16])
    finally:
        _FOLLOWING.reset(token)
    return "|".join(parts)


def _names_read(code: types.CodeType) -> set[str]:
    # the global (and attribute) names a code object and the code nested in it use
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_read(const)
    return names


def _code_content(h: Any, code: types.CodeType) -> None:
    # A code object by its bytecode, names and constants, the same in every process: a
    # nested one (a comprehension, a lambda, an inner function) by its own content, not its
    # repr, which holds its address; a frozenset (``x in {"a", "b"}``) sorted, not in its
    # hash-seeded order.
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        _code_constant(h, const)


def _code_constant(h: Any, const: Any) -> None:
    if isinstance(const, types.CodeType):
        _code_content(h, const)
    elif isinstance(const, tuple | frozenset):
        h.update(f"{type(const).__name__}[".encode())
        items = sorted(const, key=repr) if isinstance(const, frozenset) else const
        for item in items:
            _code_constant(h, item)
        h.update(b"]")
    else:
        h.update(repr(const).encode())


def _closure_value(h: Any, value: Any) -> None:
    # Tensors, numbers, strings and containers of them by content; a module by its
    # weights; anything else by type only (an object's identity changes every run).
    if isinstance(value, torch.nn.Module):
        _update(h, dict(value.state_dict()))
    elif isinstance(value, types.ModuleType):  # ``torch``, ``F``: their code is in the versions
        h.update(f"module {value.__name__}".encode())
    elif (
        isinstance(value, torch.Tensor | np.ndarray | int | float | str | bool | bytes | Mapping | list | tuple)
        or value is None
    ):
        _update(h, value)
    elif callable(value):
        h.update(callable_identity(value).encode())
    else:
        h.update(type(value).__qualname__.encode())


def settings_digest(obj: Any) -> str:
    """A plugin object (quantizer, method) by type and settings: an attrs instance by its
    fields, another by its instance attributes."""
    h = hashlib.sha256(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
    if attrs.has(type(obj)):
        _update(h, obj)
    else:
        _closure_value(h, dict(getattr(obj, "__dict__", {})))
    return h.hexdigest()


def code_digest(obj: Any) -> str:
    """The code that computes with ``obj`` (a quantizer, a method), as a digest: for each
    class of its type's MRO, the source of every ``.py`` file of the top-level package that
    defines it (the one file of a module outside a package) and that package's installed
    version; for a class without a source file (a notebook's), its methods' code.

    Settings alone do not say what a plugin computes: an upgraded plugin, or an edited
    editable install, with the same options gives other numbers, and a cache keyed by the
    options alone would hand back the old ones.
    """
    h = hashlib.sha256()
    packages: set[str] = set()
    for cls in type(obj).__mro__[:-1]:
        top = cls.__module__.partition(".")[0]
        files = _source_files(sys.modules.get(top) or sys.modules.get(cls.__module__))
        if not files:
            for name, attr in sorted(vars(cls).items()):
                if inspect.isfunction(attr):
                    h.update(f"{cls.__qualname__}.{name}={callable_identity(attr)}".encode())
        elif top not in packages:
            packages.add(top)
            h.update(f"{top}=={_installed_version(top)}".encode())
            h.update(_sources_digest(tuple((path, *_stamp(path)) for path in files)).encode())
    return h.hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _sources_digest(files: tuple[tuple[Path, int, int], ...]) -> str:
    # keyed by each file's modification time and size: every evaluator and objective of a
    # search asks for mpqcore's sources, which are read again only once a file changed
    h = hashlib.sha256()
    for path, _mtime, _size in files:
        h.update(path.name.encode())
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    return h.hexdigest()


def _source_files(module: Any) -> list[Path]:
    if module is None:
        return []
    roots = [Path(p) for p in getattr(module, "__path__", ())]  # a package: all of it
    if roots:
        return sorted(f for root in roots for f in root.rglob("*.py"))
    file = getattr(module, "__file__", None)
    return [Path(file)] if file else []


@functools.cache
def _installed_version(top_level: str) -> str:
    # most packages are installed under their own name (mpqcore, mpqcore_eagl): a direct
    # lookup; the scan of every installed distribution (~0.3 s) only for the others
    with contextlib.suppress(metadata.PackageNotFoundError):
        return f"{top_level}=={metadata.version(top_level)}"
    dists = metadata.packages_distributions().get(top_level, [])
    found = []
    for name in sorted(set(dists)):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name}=={metadata.version(name)}")
    return ",".join(found) or "not installed"


def model_description(model: torch.nn.Module) -> str:
    """What ``mpq cache list`` shows of a model: ``DigitsCNN, 18,522 parameters``."""
    count = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__}, {count:,} parameters"


def default_cache_dir(model_key: str) -> Path:
    """``<mpq cache dir>/measurements/<model digest>``: one directory per model."""
    return measurements_dir() / model_key[:24]


class MeasurementCache:
    """Evaluations and objectives of one model, in ``directory`` (see the module docstring).

    ``hits`` counts the values read back, ``stored`` those written, ``pruned`` names the
    directories removed for a bound when it opened. From its opening to
    :meth:`close` (and again while reopened) the directory is marked in use.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        model_key: str,
        layers: Iterable[str],
        description: str | None = None,
    ):
        self.directory = Path(directory).expanduser()
        self.model_key = model_key
        self.layers = tuple(layers)
        self.description = description
        self.hits = 0
        self.stored = 0
        #: The other models' directories (digests) removed to keep ``cache_max_bytes`` when this one opened.
        self.pruned: tuple[str, ...] = ()
        self._db: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._check_directory()
        self._lock = cache_lock.hold_shared(self.directory)
        try:
            self._bind_model()
        except BaseException:
            self.close()
            raise

    def _check_directory(self) -> None:
        d = self.directory
        if d.exists() and not d.is_dir():
            raise ConfigError(f"cache {str(d)!r} is a file, not a directory; give a directory (or --no-cache)")
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"cache directory {str(d)!r} cannot be written ({exc.strerror or exc}); give a writable directory "
                "with cache= / --cache, or turn the cache off (cache=False / --no-cache)"
            ) from exc

    def _bind_model(self) -> None:
        manifest = self.directory / "manifest.json"
        mine: dict[str, Any] = {"format": _FORMAT, "model": self.model_key, "layers": list(self.layers)}
        if self.description is not None:
            mine["description"] = self.description
        if not manifest.exists():
            atomic_write_json(manifest, mine)
            return
        try:
            theirs = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cache directory {str(self.directory)!r} has an unreadable manifest.json ({exc}); delete the "
                "directory to start over, or give another one"
            ) from exc
        if theirs.get("model") != self.model_key or theirs.get("format") != _FORMAT:
            layers = theirs.get("layers") or []
            raise ConfigError(
                f"cache directory {str(self.directory)!r} holds measurements of another model (weights digest "
                f"{str(theirs.get('model'))[:12]}..., {len(layers)} layers {layers[:3]}...) and this model's digest is "
                f"{self.model_key[:12]}... ({len(self.layers)} layers {list(self.layers[:3])}...); a cache is never "
                "reused across models: give another directory, or delete this one to start over"
            )
        if self.description is not None and "description" not in theirs:  # written before descriptions were kept
            atomic_write_json(manifest, {**theirs, "description": self.description})

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            if self._lock is None:  # reopened after close(): in use again (and the directory
                self._lock = cache_lock.hold_shared(self.directory)  # pruned meanwhile is made anew)
                self._bind_model()
            path = self.directory / "evaluations.sqlite"
            self._db = sqlite3.connect(path, timeout=120, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        return self._db

    def get(self, key: str) -> Any | None:
        row = self.db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return pickle.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        # INSERT OR IGNORE: two processes computing the same entry store the same value once.
        self.db.execute("INSERT OR IGNORE INTO entries (key, value) VALUES (?, ?)", (key, pickle.dumps(value)))
        self.stored += 1

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def close(self) -> None:
        """Close the database and drop the in-use mark (both come back when used again)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        cache_lock.release(self._lock)
        self._lock = None

    def __getstate__(self) -> dict[str, Any]:  # neither the connection nor the lock travels; they reopen
        state = dict(self.__dict__)
        state["_db"] = None
        state["_lock"] = None
        return state


def open_cache(
    cache: bool | str | os.PathLike[str] | MeasurementCache | None,
    model: torch.nn.Module,
    layers: Iterable[str] | None = None,
    *,
    max_bytes: int | None = None,
) -> MeasurementCache | None:
    """The cache a ``cache=`` argument asks for: ``None``/``False`` none, ``True`` the default
    directory for this model, a path that directory, or a ready :class:`MeasurementCache`.

    ``max_bytes`` (checked by :func:`mpqcore.cache_limits.check_cache_max_bytes`) bounds
    the measurements directory: once the cache is open (and so marked in use), other
    models' directories there are removed, least recently used first, until the whole
    directory fits or only directories in use are left (:func:`mpqcore.cached_models.prune`).
    """
    if cache is None or (isinstance(cache, bool) and not cache):
        return None
    if not isinstance(cache, bool | str | os.PathLike | MeasurementCache):
        raise ConfigError(f"cache={cache!r}: give True, False, a directory path, or an mpqcore MeasurementCache")
    key = model_digest(model)
    if isinstance(cache, MeasurementCache):
        if cache.model_key != key:
            raise ConfigError(
                f"the MeasurementCache given (directory {str(cache.directory)!r}) holds another model's "
                f"measurements (digest {cache.model_key[:12]}..., this model's {key[:12]}...)"
            )
        store = cache
    else:
        layers = [name for name, _ in model.named_parameters()] if layers is None else list(layers)
        directory = default_cache_dir(key) if isinstance(cache, bool) else cache
        store = MeasurementCache(directory, model_key=key, layers=layers, description=model_description(model))
    if max_bytes is not None:
        from mpqcore.cached_models import prune

        done = prune(measurements_dir(), max_bytes=max_bytes, keep=store.directory)
        store.pruned = (*store.pruned, *(m.digest for m in done.removed))
    return store
