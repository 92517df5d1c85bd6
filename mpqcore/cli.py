"""The ``mpq`` command line: plugins, solve, search, sweep, demo.

An error never shows a traceback: one line ``mpq COMMAND: error: ...`` on stderr and an
exit status that says what kind of failure it was (docs/errors.md lists them):

=====  =====================================================================
0      success
1      the run failed: an mpq error not listed below, a file that cannot be
       written, or an internal error (a bug: the message says so, and names
       the plugin it happened in)
2      usage: a bad command line or bad input (argparse, ``ConfigError``)
3      no allocation meets the budgets (``InfeasibleError``)
4      a plugin failed (``PluginError``, ``MethodError``)
130    interrupted (Ctrl-C)
=====  =====================================================================

``--traceback`` (or ``MPQ_TRACEBACK=1``) prints the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from types import TracebackType
from typing import Any

from mpqcore.errors import ConfigError, InfeasibleError, MpqError, PluginError
from mpqcore.exports.command import add_export_args
from mpqcore.guard_cli import add_guard_args, guard_lines, guard_options
from mpqcore.metrics import direction_words
from mpqcore.quantizers import DEFAULT_QUANTIZER

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INFEASIBLE = 3
EXIT_PLUGIN = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

#: Set to 1 (or pass --traceback) to see the traceback of an error as well.
ENV_TRACEBACK = "MPQ_TRACEBACK"


def _bits(text: str) -> tuple[int, ...]:
    """``2,4,8`` as candidate widths: every item an integer 1..16 (no empty items, no ``4.5``)."""
    from mpqcore.constraints import check_width
    from mpqcore.types import check_bits

    hint = "write comma-separated integers 1..16, e.g. 2,4,8"
    values = []
    try:
        for i, item in enumerate((part.strip() for part in text.split(",")), start=1):
            if not item:
                raise ConfigError(f"item {i} of {text!r} is empty; {hint}")
            try:
                number = int(item)
            except ValueError:
                raise ConfigError(f"item {i} of {text!r}, {item!r}, is not an integer; {hint}") from None
            values.append(check_width(number, what=f"item {i} of {text!r}"))
        return check_bits(values, what=repr(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pin(text: str) -> tuple[str, int]:
    """``LAYER=BITS`` with BITS an integer 1..16."""
    from mpqcore.constraints import check_width

    hint = "write LAYER=BITS with BITS an integer 1..16, e.g. conv1=8"
    layer, _, raw = (part.strip() for part in text.partition("="))
    if "=" not in text or not layer:
        raise argparse.ArgumentTypeError(f"pin {text!r} is not LAYER=BITS; {hint}")
    try:
        number = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pin {text!r}: bits {raw!r} is not an integer; {hint}") from None
    try:
        return layer, check_width(number, what=f"pin {text!r}: bits")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tie(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names):
        raise argparse.ArgumentTypeError(f"tie {text!r} has an empty layer name; write L1,L2,..., e.g. fc1,fc2")
    return names


def _out_dir(text: str) -> str:
    """An output folder, checked when the command line is read: long before a search ends."""
    from mpqcore.files import check_output_dir

    try:
        check_output_dir(text, what="--out")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds")
    return value


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _option_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _options(pairs: Sequence[tuple[str, str]] | None) -> dict[str, Any]:
    return {k: _option_value(v) for k, v in (pairs or [])}


def _pins(pairs: Sequence[tuple[str, int]] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in pairs or []:
        if k in out and out[k] != v:
            raise ConfigError(f"--pin {k}={v}: {k!r} is already pinned to {out[k]}; pin each layer once")
        out[k] = v
    return out


def _limit(name: str, value: str) -> float:
    """A ``--budget COST=LIMIT`` limit of ``mpq solve``: a finite number >= 0."""
    import math

    try:
        limit = float(value)
    except ValueError:
        raise ConfigError(f"--budget {name}={value}: the limit must be a number, e.g. {name}=120000") from None
    if not math.isfinite(limit) or limit < 0:
        raise ConfigError(f"--budget {name}={value}: the limit must be a finite number >= 0")
    return limit


def _progress_wanted(args) -> bool:
    """Progress unless --quiet: a bar on a terminal, else a plain line now and then (mpqcore.progress)."""
    return not args.quiet


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def cmd_plugins(args) -> int:
    from mpqcore.plugins import get_plugins

    plugins = get_plugins()
    infos = plugins.info()
    if args.json:
        blocked = [{"name": b.name, "blocked": {"reason": b.reason, "found": b.found}} for b in plugins.blocked]
        print(json.dumps([i.to_dict() for i in infos] + blocked, indent=1))
        return 0
    for info in infos:
        where = info.distribution + (f" ({info.entry_point})" if info.entry_point else " (built-in)")
        print(f"{info.name}  {info.version}  {where}")
        for kind, names in info.registers.items():
            print(f"    {kind}: {', '.join(names)}")
    for b in plugins.blocked:
        print(f"blocked: {b.name} ({b.reason}{'' if b.found else '; no plugin of this name was found'})")
    return 0


def _time_limit_option(solver: str, time_limit: float) -> dict[str, float]:
    """``{"time_limit": ...}`` for a solver that takes one, else a ConfigError saying it does not."""
    from mpqcore.options import describe_options, format_options
    from mpqcore.plugins import get_plugins

    specs = describe_options(get_plugins().solvers.get(solver).factory)
    if "time_limit" not in [spec.name for spec in specs]:
        raise ConfigError(
            f"--time-limit {time_limit:g}: solver {solver!r} takes no time_limit option (its options: "
            f"{format_options(specs)}); leave --time-limit out, or use a solver that takes one, such as highs"
        )
    return {"time_limit": time_limit}


def cmd_solve(args) -> int:
    import mpqcore
    from mpqcore.problem import load_problem

    started = time.perf_counter()  # --time-limit covers reading the file too
    options = _options(args.solver_option)
    if args.time_limit is not None:
        _time_limit_option(args.solver, args.time_limit)  # before reading a large file
    problem = load_problem(args.problem)
    if args.budget:
        budgets = dict(problem.budgets)
        for name, value in args.budget:
            budgets[name] = _limit(name, value)
        problem = problem.with_budgets(budgets)
    if args.time_limit is not None:
        left = args.time_limit - (time.perf_counter() - started)
        if left <= 0:
            raise MpqError(
                f"reading {args.problem!r} took {time.perf_counter() - started:.1f} s, all of --time-limit "
                f"{args.time_limit:g} s, before solving began; raise --time-limit"
            )
        options.update(_time_limit_option(args.solver, left))
    allocation = mpqcore.solve(problem, args.solver, **options)  # checked: layers, widths, budgets, pins, ties
    out = allocation.to_dict()
    print(json.dumps(out, indent=None if args.compact else 1))
    return 0


def _task_and_common(args):
    """The registered ``--task``, or the user's own ``--model``/``--calibration``/``--metric``."""
    from mpqcore.plugins import get_plugins

    if args.model is not None:
        from mpqcore.user_model import load_user_task

        if args.task is not None or args.task_option:
            raise ConfigError("--model replaces --task: give either a registered task or your own model, not both")
        return load_user_task(args.model, args.calibration, args.metric)
    if args.calibration is not None or args.metric is not None:
        raise ConfigError("--calibration and --metric go with --model (your own model); a --task brings its own")
    return get_plugins().tasks.create(args.task or "digits-cnn", **_options(args.task_option))


def _search_options(args, task) -> dict:
    """The keyword options ``mpq search`` and ``mpq sweep`` share, from the command line and the task."""
    return {
        "method": args.method,
        "bits": args.bits,
        "metric": task.metric,
        "loss": task.loss,
        "quantizer": args.quantizer,
        "cost": args.cost,
        "solver": args.solver,
        "pins": _pins(args.pin),
        "ties": list(args.tie or []),
        "seed": args.seed,
        "method_options": _options(args.method_option),
        "solver_options": _options(args.solver_option),
        "quantizer_options": _options(args.quantizer_option),
        "cost_options": {args.cost: _options(args.cost_option)},
        "act_bits": args.act_bits,
        "bias_correction": {"off": False, "always": "add"}.get(args.bias_correction, args.bias_correction),
        "exclude": None if args.exclude is None else [p for p in args.exclude if p],
        "progress": _progress_wanted(args),
        "cache": False if args.no_cache else (args.cache or True),
        "workers": args.workers,
        "ray_address": args.ray_address,
        "weight_cache_bytes": args.weight_cache_bytes,
        **guard_options(args),
    }


def cmd_search(args) -> int:
    import mpqcore
    from mpqcore.types import Budget

    if [b.strip().lower() for b in args.budget] == ["none"]:
        budgets = []  # for a solver with its own rule, which needs no budget
    else:
        budgets = [Budget.parse(b) for b in args.budget] or [Budget.average_bits(4.0)]
    task = _task_and_common(args)
    report = mpqcore.search(task.model, task.calibration, budget=budgets, **_search_options(args, task))
    paths = report.write(args.out) if args.out else {}
    print(_summary(report, task))
    for name, path in paths.items():
        print(f"  wrote {name}: {path}")
    return 0


def cmd_export(args) -> int:
    import mpqcore
    from mpqcore.exports.command import cmd_export as run
    from mpqcore.types import Budget

    def search(args, task):
        budgets = [Budget.parse(b) for b in args.budget] or [Budget.average_bits(4.0)]
        report = mpqcore.search(task.model, task.calibration, budget=budgets, **_search_options(args, task))
        if args.out:
            report.write(args.out)
        return report

    return run(args, search, _task_and_common)


def cmd_sweep(args) -> int:
    import mpqcore
    from mpqcore.report import write_sweep
    from mpqcore.types import Budget

    budgets = [Budget.parse(b) for b in args.budget]
    if not budgets:
        raise ConfigError("mpq sweep needs budgets: --budget avg-bits=2.5 --budget avg-bits=3 ...")
    task = _task_and_common(args)
    meas, points = mpqcore.sweep(task.model, task.calibration, budgets=budgets, **_search_options(args, task))
    from mpqcore.sweep_report import cli_lines, sweep_table

    table = sweep_table(
        meas,
        points,
        method=args.method,
        metric_name=task.metric_name,
        higher_is_better=getattr(task, "higher_is_better", None),
    )
    print("\n".join(cli_lines(table)))
    if args.out:
        for name, path in write_sweep(table["rows"], args.out, table=table).items():
            print(f"  wrote {name}: {path}")
    return 0


def cmd_demo(args) -> int:
    import mpqcore
    from mpqcore.types import Budget

    t0 = time.perf_counter()
    print("mpq demo: mixed-precision search on digits-cnn (a CNN trained on scikit-learn's handwritten digits)")
    task = mpqcore.load_task("digits-cnn", progress=_progress_wanted(args) and sys.stderr.isatty())
    print(f"  task ready in {time.perf_counter() - t0:.1f} s; float accuracy {task.metric(task.model):.4f}")
    budget = Budget.average_bits(args.avg_bits)
    report = mpqcore.search(
        task.model,
        task.calibration,
        method=args.method,
        bits=args.bits,
        budget=budget,
        metric=task.metric,
        seed=0,
        progress=_progress_wanted(args),
    )
    paths = report.write(args.out)
    print(_summary(report, task))
    for name, path in paths.items():
        print(f"  wrote {name}: {path}")
    print(f"  total {time.perf_counter() - t0:.1f} s")
    return 0


def _summary(report, task) -> str:
    r = report.results
    name = task.metric_name
    lines = [
        "",
        f"method {report.method}, solver {report.solver} ({report.allocation.status}, gap {report.allocation.gap:.2g}), "
        f"budget: {', '.join(report.budget_text(b) for b in report.budgets) or 'none'}",
        "",
        f"  {'layer':<28} {'kind':<8} {'params':>9} {'MACs':>11} {'bits':>4} {'share of predicted loss':>23}",
    ]
    for row in report.layer_rows():
        share = "-" if row["predicted_share"] is None else f"{100 * row['predicted_share']:.1f}%"
        lines.append(
            f"  {row['fqn']:<28} {row['kind']:<8} {row['params']:>9,} {row['macs']:>11,} {row['bits']:>4} {share:>23}"
        )
    lines.append("")
    lines.append("  " + _costs_line(report))
    lines.append("")
    lines.append(f"  {'model':<34} {'avg bits':>8} {name:>10} {'loss':>10}")
    if "float_metric" in r:
        lines.append(f"  {'float':<34} {32:>8} {r['float_metric']:>10.4f} {0.0:>10.5f}")
    metric = f"{r['metric']:.4f}" if "metric" in r else "-"
    lines.append(
        f"  {'mixed precision (' + report.method + ')':<34} {report.average_bits:>8.3f} {metric:>10} {r['loss']:>10.5f}"
    )
    if "uniform_bits" in r:
        um = f"{r['uniform_metric']:.4f}" if "uniform_metric" in r else "-"
        total = sum(layer.params for layer in report.spec.layers)
        avg = r["uniform_costs"]["size"] / total if "size" in r["uniform_costs"] else float("nan")
        avg = r.get("uniform_average_bits", avg)  # the same basis as the allocation's average bits
        lines.append(
            f"  {'uniform ' + str(r['uniform_bits']) + '-bit':<34} {avg:>8.3f} {um:>10} {r['uniform_loss']:>10.5f}"
        )
    lines += guard_lines(r)
    if "metric" in r:
        higher = r.get("metric_higher_is_better", getattr(task, "higher_is_better", True))
        lines.append(f"  ({name}: {direction_words(higher)}; loss: lower is better)")
    coverage = report.coverage
    lines.append("")
    lines.append(f"  {coverage.line()}")
    for w in coverage.float_weights[:10]:
        lines.append(f"    float: {w.name} ({w.params:,} parameters): {w.detail or w.reason}")
    if len(coverage.float_weights) > 10:
        lines.append(f"    ... {len(coverage.float_weights) - 10} more weights left float (report.json lists all)")
    lines.append("")
    t = report.timings
    lines.append(
        "  time: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in t.items())
        + f"; forward passes {report.forward_passes} ({report.measure_forward_passes} by the method)"
    )
    if report.cache:
        c = report.cache
        reused = "the objective and " if c["objective_from_cache"] else ""
        lines.append(f"  cache: {reused}{c['hits']} values read back, {c['stored']} stored, in {c['directory']}")
    return "\n".join(lines)


def _costs_line(report) -> str:
    """``cost: weight size 14.7 kB, bit operations 10.6 M BOPs`` at human scale."""
    from mpqcore.units import cost_label, human

    units = report.units
    return "cost: " + ", ".join(
        f"{cost_label(name, units.get(name, ''))} {human(value, units.get(name, ''))}"
        for name, value in report.allocation.costs.items()
    )


# ---------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------


def _add_search_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    p.add_argument("--task", default=None, help="a registered task (see `mpq plugins`); default digits-cnn")
    p.add_argument(
        "--model",
        default=None,
        metavar="MODULE:NAME",
        help="your own model instead of a task: an nn.Module or a factory returning one, as "
        "pkg.module:factory or path/to/file.py:factory (needs --calibration)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="MODULE:NAME",
        help="with --model: the calibration batches (an iterable, or a function returning one)",
    )
    p.add_argument(
        "--metric",
        default=None,
        metavar="MODULE:NAME",
        help="with --model: metric(model) -> float on held-out data (higher is better unless marked "
        "with mpqcore.lower_is_better)",
    )
    p.add_argument(
        "--task-option", action="append", type=_key_value, metavar="KEY=VALUE", help="option for the task factory"
    )
    p.add_argument("--method", default="hawq", help="a registered sensitivity method; default hawq")
    p.add_argument(
        "--method-option",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="option for the method (value parsed as JSON when it can be)",
    )
    p.add_argument("--bits", type=_bits, default=(2, 4, 8), help="candidate weight bit-widths, e.g. 2,4,8")
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="avg-bits=4, size-bytes=N, size-mb=N, COST=N (absolute) or COST=0.6x (of the 8-bit cost); "
        + (
            "repeat for each point of the sweep"
            if sweep
            else "repeat for several budgets at once; default avg-bits=4; "
            "'none' for no budget (for a solver with its own stopping rule)"
        ),
    )
    p.add_argument(
        "--pin", action="append", type=_pin, metavar="LAYER=BITS", help="fix a layer (fnmatch pattern) to BITS"
    )
    p.add_argument(
        "--tie", action="append", type=_tie, metavar="L1,L2,...", help="layers that must share one bit-width"
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="keep matching weights in float (fnmatch; repeatable); replaces the default exclusions "
        "(position embeddings, class tokens); --exclude '' quantizes every weight",
    )
    p.add_argument(
        "--quantizer", default=DEFAULT_QUANTIZER, help=f"a registered weight quantizer; default {DEFAULT_QUANTIZER}"
    )
    p.add_argument(
        "--quantizer-option", action="append", type=_key_value, metavar="KEY=VALUE", help="option for the quantizer"
    )
    p.add_argument(
        "--cost",
        default="size",
        help="cost model tabled and reported besides size (and those budgets name); default size",
    )
    p.add_argument(
        "--cost-option",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="option for the --cost model, e.g. --cost latency --cost-option table=lat.json",
    )
    p.add_argument(
        "--solver",
        default="auto",
        help="a registered solver; default auto: mckp for one budget without pair terms, else highs",
    )
    p.add_argument("--solver-option", action="append", type=_key_value, metavar="KEY=VALUE")
    p.add_argument(
        "--act-bits", type=int, default=None, help="also fake-quantize the inputs of quantized layers at this width"
    )
    p.add_argument(
        "--bias-correction",
        nargs="?",
        const="add",
        default="auto",
        choices=("auto", "guard", "off", "always", "add", "existing"),
        help="correct each quantized layer's bias for its expected output shift. auto (default): guard when the "
        "guard is on, else off; guard: only when the guard measures the returned allocation lower with it than "
        "without, on the held-out part; off: never; always/add: always, giving layers without a bias one; "
        "existing: always, only layers that have a bias",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=_out_dir, default=None, help="directory for the report files (checked before any work)"
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="keep every evaluation here, so a rerun measures only what is missing "
        "(default: a folder per model under the mpq cache directory, $MPQ_CACHE_DIR or ~/.cache/mpq)",
    )
    cache.add_argument("--no-cache", action="store_true", help="measure everything, store nothing")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="score batches of evaluations on N Ray workers (mpqcore[ray])",
    )
    p.add_argument(
        "--ray-address", default=None, help="join this Ray cluster (host:port, ray://host:port, auto); default: local"
    )
    p.add_argument(
        "--weight-cache-bytes",
        type=_positive_int,
        default=None,
        metavar="BYTES",
        help="bound the memory of the quantized weights kept for reuse (default: keep all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: torch's own choice)")
    add_guard_args(p, sweep=sweep)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpq",
        description="Mixed-precision quantization: measure, allocate, apply, report.",
        epilog="exit status: 0 success, 1 run failed (or an internal error), 2 usage or bad input, "
        "3 infeasible budget, 4 plugin failure, 130 interrupted; see docs/errors.md",
    )
    parser.add_argument("--traceback", action="store_true", help=_TRACEBACK_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=_TRACEBACK_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return _add(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]  # every subcommand takes --traceback too

    p = sub.add_parser("plugins", help="list loaded plugins and what each registers")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("solve", help="solve an allocation problem file (JSON)")
    p.add_argument("problem", help="problem file (see docs/problem-file.md)")
    p.add_argument(
        "--solver",
        default="auto",
        help="a registered solver; default auto (mckp for one budget without pair terms, which proves "
        "100,000s of layers in seconds, else highs)",
    )
    p.add_argument("--budget", action="append", type=_key_value, metavar="COST=LIMIT", help="set or override a budget")
    p.add_argument("--solver-option", action="append", type=_key_value, metavar="KEY=VALUE")
    p.add_argument(
        "--time-limit",
        type=_positive_float,
        default=None,
        help="seconds for reading the file and solving (solvers that take time_limit)",
    )
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("search", help="one mixed-precision search on a task")
    _add_search_args(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "export", help="a task's model quantized by a saved report (or a search now), written and reloaded"
    )
    _add_search_args(p)
    add_export_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="measure once, solve for many budgets: Pareto CSV and plot")
    _add_search_args(p, sweep=True)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("demo", help="the main job: a full search on digits-cnn with a summary table")
    p.add_argument("--method", default="hawq")
    p.add_argument("--bits", type=_bits, default=(2, 3, 4, 5, 6, 8))
    p.add_argument("--avg-bits", type=float, default=3.0)
    p.add_argument("--out", type=_out_dir, default="mpq-out/demo", help="directory for the report files")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch threads; default 1: the CNN is small, and extra threads only contend on a busy machine",
    )
    p.set_defaults(func=cmd_demo)
    return parser


_TRACEBACK_HELP = f"on an error, print the traceback too (or set {ENV_TRACEBACK}=1)"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _plugin_packages() -> dict[str, str]:
    """Top-level package -> "plugin 'name' (distribution 'dist')", for every installed mpqcore plugin."""
    out: dict[str, str] = {}
    try:
        for ep in metadata.entry_points(group="mpqcore"):
            dist = getattr(ep.dist, "name", None)
            out[ep.module.split(".")[0]] = f"plugin {ep.name!r}" + (f" (distribution {dist!r})" if dist else "")
    except Exception:  # the metadata itself is broken: blame no plugin rather than fail here
        pass
    return out


def _culprit(tb: TracebackType | None) -> str:
    """Who raised: the innermost frame in an installed plugin's package or in mpq, in words."""
    plugins = _plugin_packages()
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        package = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if package in plugins:
            return plugins[package]
        if package == "mpqcore":
            return "mpq"
    return "mpq"


def _failure(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message of an exception that ended a command."""
    if isinstance(exc, InfeasibleError):
        return EXIT_INFEASIBLE, _one_line(str(exc))
    if isinstance(exc, PluginError):
        return EXIT_PLUGIN, _one_line(str(exc))
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, _one_line(str(exc))
    if isinstance(exc, MpqError):
        return EXIT_ERROR, _one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename!s}" if exc.filename else ""
        return EXIT_ERROR, _one_line(f"cannot use{where}: {exc.strerror}")
    if isinstance(exc, MemoryError):
        return EXIT_ERROR, "out of memory; try a smaller model, fewer layers or fewer calibration batches"
    text = _one_line(f"{type(exc).__name__}: {exc}")
    return EXIT_ERROR, (
        f"internal error, a bug in {_culprit(exc.__traceback__)}: {text} "
        f"(rerun with --traceback or {ENV_TRACEBACK}=1 to see where, and please report it)"
    )


def _wants_traceback(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "traceback", False)) or os.environ.get(ENV_TRACEBACK, "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``mpq`` command; returns the exit status (argparse exits with 2 on a bad command line)."""
    parser = build_parser()
    args = argparse.Namespace(command=None)
    try:
        args = parser.parse_args(argv)  # a usage error exits 2 from here (SystemExit)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
    except KeyboardInterrupt:
        print("mpq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug in an argument's own check: still one line
        code, message = _failure(exc)
        print(f"mpq: error: {message}", file=sys.stderr)
        return code
    head = f"mpq {args.command}"
    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except KeyboardInterrupt:
        if _wants_traceback(args):
            traceback.print_exc()
        print(f"{head}: interrupted; every file already written is complete", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (mpq solve ... | head): nothing left to tell it
        _silence_stdout()
        return EXIT_ERROR
    except Exception as exc:
        if _wants_traceback(args):
            traceback.print_exc()
        code, message = _failure(exc)
        print(f"{head}: error: {message}", file=sys.stderr)
        return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's own flush at exit does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real descriptor (captured in tests): nothing to redirect
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
