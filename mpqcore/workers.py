"""Measurement across Ray workers: each actor holds one copy of the model and its own evaluator.

:class:`WorkerPool` splits a batch of assignments (:meth:`Evaluator.losses`,
:meth:`Evaluator.metrics`) into contiguous chunks, one per actor, and gathers the
values in order. Each actor scores its chunk exactly as the driver would (the same
evaluator code, prefix reuse included, the driver's torch thread count), so the values
are the single-process ones. Ray is an optional extra (``pip install "mpqcore[ray]"``);
with GPUs each actor takes one.

``address=None`` starts a local cluster of ``workers`` CPUs that listens on loopback only;
``address="auto"`` or ``"host:port"`` (``"ray://host:port"`` for Ray Client) joins a running
one. A ``host:port`` that accepts no connection is refused before any work, with the
address named.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mpqcore.errors import ConfigError

__all__ = ["WorkerPool", "check_workers", "split_by_cost"]

Assignment = Mapping[str, int]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            'workers= needs Ray, which is not installed: pip install "mpqcore[ray]" (or leave workers unset)'
        ) from exc
    return ray


def check_workers(workers: int | None, address: str | None) -> None:
    """Refuse a bad worker count, a missing Ray, or an address nobody answers at, before any work."""
    if workers is None:
        if address is not None:
            raise ConfigError(f"ray_address={address!r} was given without workers=N; say how many workers to use")
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}: give a whole number of Ray workers >= 1 (or None for none)")
    _ray()
    if address in (None, "auto", "local"):
        return
    if not isinstance(address, str):
        raise ConfigError(f"ray_address={address!r}: give 'host:port', 'ray://host:port' or 'auto'")
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray_address={address!r}: give 'host:port', 'ray://host:port' or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"ray_address={address!r}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "'ray start --head', give its address, or leave ray_address unset for a local cluster"
        ) from exc


def split_by_cost(n: int, parts: int, costs: Sequence[float] | None = None) -> list[slice]:
    """``range(n)`` as at most ``parts`` contiguous, non-empty slices in order, of about equal
    total ``costs`` (equal counts without): no slice's total exceeds ``sum / parts`` by more
    than its largest item. Contiguous, so each worker still runs neighbours that share prefixes."""
    if n == 0:
        return []
    if costs is None or n <= parts:
        size = -(-n // parts)
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]
    ends = np.cumsum(np.maximum(np.asarray(costs, dtype=float), 0.0))
    if ends[-1] <= 0:
        return split_by_cost(n, parts)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, parts) / parts)  # first item reaching each share
    bounds = [0, *sorted({int(c) + 1 for c in cuts if 0 < int(c) + 1 < n}), n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]


class _Actor:
    """One worker: an evaluator over its own copy of the model (built from the driver's)."""

    def __init__(
        self,
        factory: Any,
        model: Any,
        calibration: Any,
        spec: Any,
        quantizer: Any,
        options: dict[str, Any],
        threads: int,
    ):
        torch.set_num_threads(threads)
        # the Evaluator class travels as an argument: this module imports nothing from evaluate
        self.evaluator = factory(model, calibration, spec, quantizer, **options)

    def losses(self, assignments: list[dict[str, int]], reuse: bool) -> tuple[list[float], int]:
        before = self.evaluator.forward_passes
        values = self.evaluator.losses(assignments, reuse_prefix=reuse)
        return values, self.evaluator.forward_passes - before

    def metrics(self, assignments: list[dict[str, int]]) -> tuple[list[float], int]:
        before = self.evaluator.forward_passes
        values = [self.evaluator.metric(a) for a in assignments]
        return values, self.evaluator.forward_passes - before


class WorkerPool:
    """``workers`` Ray actors scoring chunks of assignments (see the module docstring).

    ``factory(model, calibration, spec, quantizer, **options)`` builds each actor's
    evaluator (:class:`mpqcore.Evaluator`).
    """

    def __init__(
        self,
        workers: int,
        model: torch.nn.Module,
        calibration: list[Any],
        spec: Any,
        quantizer: Any,
        options: dict[str, Any],
        *,
        factory: Any,
        address: str | None = None,
    ):
        check_workers(workers, address)
        ray = _ray()
        self.workers = workers
        self._started = False
        if not ray.is_initialized():
            if address in (None, "local"):
                # a local cluster listens on loopback only (not the machine's network address)
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            self._started = True
        gpus = 1 if torch.cuda.is_available() else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus)(_Actor)
        shared = [ray.put(x) for x in (model, calibration, spec, quantizer)]
        threads = torch.get_num_threads()  # the driver's: values are then bit-for-bit the driver's
        self._actors = [remote.remote(factory, *shared, options, threads) for _ in range(workers)]

    def _chunks(self, n: int, costs: Sequence[float] | None = None) -> list[slice]:
        return split_by_cost(n, self.workers, costs)

    def _gather(self, calls: list[Any]) -> tuple[list[float], int]:
        ray = _ray()
        values: list[float] = []
        passes = 0
        for chunk_values, chunk_passes in ray.get(calls):
            values.extend(chunk_values)
            passes += chunk_passes
        return values, passes

    def losses(
        self, assignments: Sequence[Assignment], reuse: bool, costs: Sequence[float] | None = None
    ) -> tuple[list[float], int]:
        """The loss of each assignment, in order, and the forward passes the workers made.

        ``costs`` (expected work per assignment, e.g. :meth:`mpqcore.prefix.PrefixReuse.costs`)
        splits them into contiguous parts of equal work; without, into equal counts."""
        items = [dict(a) for a in assignments]
        parts = self._chunks(len(items), costs)
        calls = [a.losses.remote(items[s], reuse) for a, s in zip(self._actors, parts, strict=False)]
        return self._gather(calls)

    def metrics(self, assignments: Sequence[Assignment]) -> tuple[list[float], int]:
        """The metric of each assignment, in order, and the forward passes the workers made."""
        items = [dict(a) for a in assignments]
        calls = [a.metrics.remote(items[s]) for a, s in zip(self._actors, self._chunks(len(items)), strict=False)]
        return self._gather(calls)

    def close(self) -> None:
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
            self._started = False
