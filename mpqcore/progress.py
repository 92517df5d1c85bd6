"""Progress of a long measurement: a tqdm bar on a terminal, plain lines otherwise.

A bar redrawn in place is noise in a log file or a CI job, and tqdm hides itself
there; a person watching ``mpq search ... > log`` still wants to know it is moving.
So when stderr is not a terminal, a loop prints one plain line every
:data:`PLAIN_INTERVAL` seconds (``hawq: gauss-newton draws: 6/16 (38%), 12 s``) and a
last one when it ends, and nothing at all for a loop that ends sooner.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

__all__ = ["PLAIN_INTERVAL", "plain_progress", "progress_factory"]

#: Seconds between two plain progress lines (``MPQ_PROGRESS_INTERVAL`` overrides it).
PLAIN_INTERVAL = 10.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MPQ_PROGRESS_INTERVAL", PLAIN_INTERVAL)))
    except ValueError:
        return PLAIN_INTERVAL


def plain_progress(
    iterable: Iterable[Any],
    *,
    desc: str = "",
    total: int | None = None,
    interval: float | None = None,
    stream: TextIO | None = None,
    **_: Any,
) -> Iterator[Any]:
    """Yield from ``iterable``, printing ``desc: n/total (p%), t s`` every ``interval`` seconds."""
    every = _interval() if interval is None else interval
    out = stream if stream is not None else sys.stderr
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    start = last = time.perf_counter()
    n = 0

    def line(now: float, end: str = "") -> None:
        done = f"{n}/{total} ({100 * n / total:.0f}%)" if total else f"{n}"
        print(f"{desc or 'progress'}: {done}, {now - start:.0f} s{end}", file=out, flush=True)

    for item in iterable:
        yield item
        n += 1
        now = time.perf_counter()
        if now - last >= every:
            line(now)
            last = now
    now = time.perf_counter()
    if now - start >= every:
        line(now, " (done)")


def progress_factory(enabled: bool, *, stream: TextIO | None = None) -> Callable[..., Iterable[Any]]:
    """What :class:`mpqcore.MeasureContext` calls as ``progress(iterable, desc=..., total=...)``."""
    if not enabled:
        return lambda it, **kw: it
    out = stream if stream is not None else sys.stderr
    if out.isatty():
        from tqdm.auto import tqdm

        return lambda it, **kw: tqdm(it, leave=False, **kw)
    return lambda it, **kw: plain_progress(it, stream=out, **kw)
