"""Who is using a measurement cache directory, told by a lock file: the one rule pruning obeys.

A process that opens a cache (:class:`~mpqcore.measurement_cache.MeasurementCache`)
holds a *shared* ``flock`` on ``<directory>/in-use.lock`` until it closes the cache (or
exits: the kernel drops the lock of a process that dies, even by SIGKILL, so a crash
never leaves a directory marked in use). Opening and closing set the file's modification
time: the directory's *last use*, by which pruning orders directories, least recently
used first.

Removing a directory (``mpq cache clear``/``prune``, or a search's ``cache_max_bytes``)
first takes an *exclusive* lock without waiting: if any process holds the directory
open the attempt fails and the directory is kept. Holding the exclusive lock, the
remover renames the directory away and deletes it; an opener that was waiting for its
shared lock meanwhile finds the lock file gone and starts over in a new directory. So a
directory is never deleted under a process that uses it, and never half-deleted under
one that is about to.

Where ``fcntl`` does not exist (Windows) nothing can be told: every directory counts as
in use, and nothing is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["LOCK_NAME", "hold_shared", "leftovers", "release", "remove_unless_in_use"]

LOCK_NAME = "in-use.lock"
_REMOVING = ".removing-"


def hold_shared(directory: Path) -> IO[bytes] | None:
    """Mark ``directory`` in use by this process (creating it); returns the open lock file
    for :func:`release` (``None`` where locks are not available). Dropping the file
    object (garbage collection, the process's exit) drops the mark too."""
    if sys.platform == "win32":
        return None
    import fcntl

    while True:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a remover holds it
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.utime(path)  # last use
                return os.fdopen(fd, "r+b", buffering=0)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the directory was removed while this process waited: open it anew


def release(lock: IO[bytes] | None) -> None:
    """Drop the mark of :func:`hold_shared`, recording the last use again (a search may run for hours)."""
    if lock is not None:
        with contextlib.suppress(OSError):
            os.utime(lock.fileno())
        with contextlib.suppress(OSError):
            lock.close()


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[bool]:
    """Whether this process now holds ``directory`` alone (no other process has it open)."""
    if sys.platform == "win32":
        yield False
        return
    import fcntl

    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def remove_unless_in_use(directory: Path) -> bool:
    """Delete ``directory`` unless a process holds it open; whether it was deleted."""
    with _exclusive(directory) as alone:
        if not alone:
            return False
        doomed = directory.with_name(f"{_REMOVING}{directory.name}-{os.getpid()}")
        os.rename(directory, doomed)  # atomic: no opener sees a half-deleted directory
        shutil.rmtree(doomed, ignore_errors=True)
        return True


def leftovers(measurements: Path) -> list[Path]:
    """Directories a remover renamed away but did not finish deleting (it was killed)."""
    return sorted(p for p in measurements.glob(f"{_REMOVING}*") if p.is_dir() and not p.is_symlink())
