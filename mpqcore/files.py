"""Writing files so that a reader never sees half of one, and checking an output folder first.

Every file mpq writes (the report's JSON and CSV, the problem file, the plots) is
written atomically: the content goes to a temporary file in the same folder, is flushed
to disk, and is renamed over the target with :func:`os.replace`, which is atomic on
POSIX and Windows within one file system (:func:`atomic_files` does it for a set of files,
renaming none until all are written). A run that is interrupted (Ctrl-C, a
crash, a full disk) or two runs writing the same file at once leave either the old file
or a complete new one, never a partial one. A hard kill (SIGKILL, power loss) can leave
a temporary ``.NAME.XXXXXXXX.tmp`` file beside the target; it is never read.

:func:`check_output_dir` says before any work whether a folder can be written, so a
long search does not fail at its very end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from mpqcore.errors import ConfigError

__all__ = [
    "atomic_files",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_writer",
    "check_output_dir",
    "write_json",
]


def _temporary(path: Path) -> Path:
    """A new, empty file beside ``path`` (same folder, so the rename stays on one file system).

    Created with mode 0o666 under the process umask, as ``open(path, "w")`` would be, so
    the renamed file gets the permissions a plain write would have given it.
    """
    while True:
        # the target's suffix kept last: tools that pick a format from it (matplotlib) still can
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover - 2**32 names
            continue
        return tmp


@contextlib.contextmanager
def atomic_files() -> Iterator[Callable[[str | Path], Path]]:
    """Write several files as a set: ``stage(target)`` gives a temporary path to write ``target``'s
    content to; when the block ends, every staged file is flushed to disk and then renamed
    over its target.

    If the block raises (or is interrupted), every temporary file is removed and every
    target is left as it was: a report folder never mixes a new CSV with an old JSON
    because the JSON failed. (Only a crash between the renames, which take microseconds,
    could.)
    """
    staged: list[tuple[Path, Path]] = []

    def stage(target: str | Path) -> Path:
        tmp = _temporary(Path(target))
        staged.append((tmp, Path(target)))
        return tmp

    try:
        yield stage
        for tmp, _ in staged:  # what the writers wrote reaches the disk before any rename
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()  # the renamed ones are gone already
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed over ``path`` when the block ends.

    If the block raises (or is interrupted), the temporary file is removed and ``path``
    is left as it was. For writers that take a file name (``savefig``).
    """
    with atomic_files() as stage:
        yield stage(path)


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file (UTF-8) whose content replaces ``path`` only when the block completes."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as fh:
        yield fh


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path``'s content with ``text``, atomically."""
    with atomic_writer(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> Path:
    """Write ``data`` to ``path`` as strict JSON (NaN and infinity refused), UTF-8; not atomic by
    itself: give it a path from :func:`atomic_files` or use :func:`atomic_write_json`."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent, allow_nan=False)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> Path:
    """Write ``data`` as strict JSON (NaN and infinity refused) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        write_json(tmp, data, indent=indent)
    return Path(path)


def check_output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """``path`` as a folder mpq can write into, checked now, or a :class:`ConfigError` saying why not.

    The folder may exist (then it must be a folder mpq can create files in) or not (then
    its nearest existing parent must be such a folder; the folder is created when the
    files are written). The check creates and removes a probe file, which tells the truth
    where permission bits do not (a read-only mount, a root user, access control lists).
    Nothing is left behind.
    """
    if not str(path):
        raise ConfigError(f"{what}: an empty path; give a folder, e.g. mpq-out/run1")
    try:
        return _check_output_dir(Path(path), what)
    except OSError as exc:  # a name too long, a folder that cannot be listed, ...
        raise ConfigError(f"{what} {str(path)[:200]!r} cannot be used: {exc.strerror or exc}") from None


def _check_output_dir(target: Path, what: str) -> Path:
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"{what} {str(target)!r} is an existing file, not a folder; give a folder for the report files"
        )
    probe_in = target
    while not probe_in.exists():
        parent = probe_in.parent
        if parent == probe_in:  # pragma: no cover - the root always exists
            break
        probe_in = parent
    if not probe_in.is_dir():
        raise ConfigError(
            f"{what} {str(target)!r} cannot be created: {str(probe_in)!r} is a file, not a folder; "
            "give a folder path whose parents are folders"
        )
    try:
        tmp = _temporary(probe_in / "mpq-write-check")
        tmp.unlink()
    except OSError as exc:
        where = "" if probe_in == target else f" (its nearest existing parent {str(probe_in)!r})"
        raise ConfigError(
            f"{what} {str(target)!r} is not writable{where}: {exc.strerror or exc}; give a folder you can write to"
        ) from None
    return target
