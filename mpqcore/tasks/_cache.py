"""The shared model cache and deterministic CPU training for the built-in tasks.

A trained model is cached as ``<cache dir>/<name>-<hash>.pt`` where the hash covers the
training configuration and the torch version, so changing either retrains. Files are
written atomically (a temporary file, then :func:`os.replace`), so a crash or two
concurrent builds never leave a half-written file behind.

The cache directory is, first found: the ``cache_dir`` argument, the ``MPQ_CACHE_DIR``
environment variable, ``$XDG_CACHE_HOME/mpq``, ``~/.cache/mpq``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from mpqcore.cache_dir import resolve_cache_dir

__all__ = [
    "accuracy_metric",
    "atomic_save",
    "cache_path",
    "config_hash",
    "count_params",
    "deterministic",
    "load_or_train",
    "preserve_modes",
    "resolve_cache_dir",
]


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able training config plus the torch version."""
    payload = json.dumps({"config": config, "torch": str(torch.__version__)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(name: str, config: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    return resolve_cache_dir(cache_dir) / f"{name}-{config_hash(config)}.pt"


@contextlib.contextmanager
def deterministic(seed: int, *, threads: int = 1) -> Iterator[None]:
    """Seeded, single-threaded, deterministic torch; everything is restored on exit.

    The global RNG state is saved and restored too, so building a task does not move
    the caller's random stream.
    """
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_rng_state(rng)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_or_train(
    name: str,
    config: dict[str, Any],
    train: Callable[[], dict[str, torch.Tensor]],
    *,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The cached state dict for ``config``, training (and caching) it when missing.

    ``train()`` returns a CPU state dict. Returns ``(state_dict, meta)``; ``meta`` has
    ``cache_path``, ``cache_hit``, ``train_time_s`` and ``train_cpu_time_s`` (wall and
    process CPU time of the training that produced the file). An unreadable cache file is retrained and overwritten.
    """
    path = cache_path(name, config, cache_dir)
    if not retrain and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            state, meta = blob["state_dict"], dict(blob["meta"])
            meta.update(cache_path=str(path), cache_hit=True)
            return state, meta
        except Exception as exc:
            warnings.warn(f"unreadable cached model {path} ({type(exc).__name__}: {exc}); retraining", stacklevel=2)
    t0, c0 = time.perf_counter(), time.process_time()
    state = train()
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    meta = {
        "train_time_s": train_time,
        "train_cpu_time_s": train_cpu,
        "config_hash": config_hash(config),
        "torch": str(torch.__version__),
    }
    atomic_save({"state_dict": state, "meta": meta}, path)
    meta.update(cache_path=str(path), cache_hit=False)
    return state, meta


@contextlib.contextmanager
def preserve_modes(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode under ``torch.no_grad``; restore each module's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def accuracy_metric(x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512) -> Callable[[torch.nn.Module], float]:
    """``metric(model) -> float``: top-1 accuracy of ``model`` on ``(x, y)``, a fraction."""
    x = x.detach().clone()
    y = y.detach().clone()

    def accuracy(model: torch.nn.Module) -> float:
        device = model_device(model)
        correct = 0
        with preserve_modes(model):
            for i in range(0, len(x), batch_size):
                out = model(x[i : i + batch_size].to(device))
                correct += int((out.argmax(dim=1).cpu() == y[i : i + batch_size]).sum())
        return correct / len(x)

    accuracy.__doc__ = f"top-1 accuracy on {len(x)} held-out examples (fraction)"
    return accuracy


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
