"""``mpq cache``: see and bound what mpq keeps on disk (list, info, clear, prune).

Only the measurements directory (``<mpq cache dir>/measurements``, one directory per
model) is ever removed from; trained task models beside it are counted by ``info`` and
left alone. A directory another process has open is kept (:mod:`mpqcore.cache_lock`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from mpqcore.cache_dir import measurements_dir, resolve_cache_dir
from mpqcore.cache_limits import ENV_CACHE_MAX_SIZE, check_cache_max_bytes, parse_age, parse_size
from mpqcore.cached_models import CachedModel, Pruned, cached_models, find, prune, remove
from mpqcore.errors import ConfigError
from mpqcore.units import human_bytes

__all__ = ["add_cache_parser", "size_argument"]


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


#: ``--cache-max-size 500MB`` and ``--max-size``: a size with a unit, refused when the command line is read.
size_argument = _argument(lambda text: parse_size(text, what="size"))
_age_argument = _argument(lambda text: parse_age(text, what="age"))


def _ago(seconds_since_epoch: float) -> str:
    age = max(0.0, time.time() - seconds_since_epoch)
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if age >= scale:
            return f"{age / scale:.0f} {unit} ago"
    return "just now"


def _row(m: CachedModel) -> dict[str, Any]:
    return {
        "digest": m.digest,
        "description": m.description,
        "evaluations": m.entries,
        "size_bytes": m.size_bytes,
        "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.last_used)),
        "path": str(m.path),
    }


def cmd_list(args: argparse.Namespace) -> int:
    where = measurements_dir(args.cache_dir)
    models = sorted(cached_models(where), key=lambda m: -m.last_used)  # most recently used first
    if args.json:
        print(json.dumps([_row(m) for m in models], indent=1))
        return 0
    if not models:
        print(f"no cached measurements in {where}")
        return 0
    print(f"{'digest':<24}  {'model':<34} {'evaluations':>11} {'size':>10}  last used")
    for m in models:
        entries = "?" if m.entries is None else f"{m.entries:,}"
        print(
            f"{m.digest:<24}  {(m.description or '-'):<34} {entries:>11} {human_bytes(m.size_bytes):>10}  "
            f"{_ago(m.last_used)}"
        )
    total = sum(m.size_bytes for m in models)
    print(f"{len(models)} model(s), {human_bytes(total)} in {where}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    root = resolve_cache_dir(args.cache_dir)
    where = measurements_dir(args.cache_dir)
    models = cached_models(where)
    tasks = sorted(p for p in root.glob("*.pt") if p.is_file()) if root.is_dir() else []
    bound = check_cache_max_bytes(None)
    measured = sum(m.size_bytes for m in models)
    task_bytes = sum(p.stat().st_size for p in tasks)
    info = {
        "cache_dir": str(root),
        "measurements": str(where),
        "models": len(models),
        "measurements_bytes": measured,
        "task_models": len(tasks),
        "task_models_bytes": task_bytes,
        "max_bytes": bound,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"mpq cache directory: {root}")
    print(f"  measurements: {where}: {len(models)} model(s), {human_bytes(measured)}")
    print(f"  trained task models: {len(tasks)} file(s), {human_bytes(task_bytes)} (never pruned)")
    print(
        f"  bound on measurements: {human_bytes(bound)} (${ENV_CACHE_MAX_SIZE})"
        if bound is not None
        else f"  bound on measurements: none (set ${ENV_CACHE_MAX_SIZE} or pass --cache-max-size to a search)"
    )
    return 0


def _outcome(done: Pruned, verb: str) -> int:
    for m in done.removed:
        print(f"{verb} {m.digest}  {m.description or '-'}  {human_bytes(m.size_bytes)}")
    for m in done.in_use:
        print(f"kept {m.digest}: another process has it open (rerun when it is done)")
    print(
        f"{len(done.removed)} removed, {human_bytes(done.bytes_before - done.bytes_after)} freed; "
        f"{human_bytes(done.bytes_after)} left"
    )
    return 1 if done.in_use else 0


def cmd_clear(args: argparse.Namespace) -> int:
    where = measurements_dir(args.cache_dir)
    if args.all and args.digests:
        raise ConfigError("give DIGEST... or --all, not both")
    if not args.all and not args.digests:
        raise ConfigError(
            "say what to clear: DIGEST... (see mpq cache list) or --all; nothing was removed "
            "(mpq cache prune --max-size / --older-than removes the least recently used)"
        )
    models = cached_models(where) if args.all else find(where, args.digests)  # every digest checked first
    return _outcome(remove(where, models), "removed")


def cmd_prune(args: argparse.Namespace) -> int:
    if args.max_size is None and args.older_than is None:
        raise ConfigError("say how to prune: --max-size SIZE (e.g. 500MB) and/or --older-than AGE (e.g. 30d)")
    where = measurements_dir(args.cache_dir)
    return _outcome(prune(where, max_bytes=args.max_size, older_than=args.older_than), "removed")


def add_cache_parser(sub: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """``mpq cache list|info|clear|prune`` on the subcommands of the ``mpq`` parser."""
    p = sub.add_parser("cache", help="see and bound the measurement cache on disk")
    p.set_defaults(func=lambda args: _missing(p))
    commands = p.add_subparsers(dest="cache_command", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the mpq cache directory (default $MPQ_CACHE_DIR, else $XDG_CACHE_HOME/mpq or ~/.cache/mpq)",
    )
    extra = [common, *(parents or [])]

    q = commands.add_parser("list", parents=extra, help="one line per cached model, most recently used first")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=cmd_list)

    q = commands.add_parser("info", parents=extra, help="where the cache is and how large")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=cmd_info)

    q = commands.add_parser("clear", parents=extra, help="remove the measurements of the models named, or all")
    q.add_argument("digests", nargs="*", metavar="DIGEST", help="a digest from mpq cache list (or 4+ characters of it)")
    q.add_argument("--all", action="store_true", help="every cached model's measurements")
    q.set_defaults(func=cmd_clear)

    q = commands.add_parser("prune", parents=extra, help="remove the least recently used models' measurements")
    q.add_argument(
        "--max-size", type=size_argument, default=None, metavar="SIZE", help="keep at most this much, e.g. 500MB, 2GiB"
    )
    q.add_argument(
        "--older-than", type=_age_argument, default=None, metavar="AGE", help="remove those unused this long, e.g. 30d"
    )
    q.set_defaults(func=cmd_prune)


def _missing(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2
