"""Every installed method side by side on the built-in tasks: which one, at what cost.

    python benchmarks/run.py --quick                 # < 15 min on 2 CPU cores (see README)
    python benchmarks/run.py                         # the full run
    python benchmarks/run.py --render-only           # redraw plots/summary/README from table

For each task (digits-cnn, digits-resnet18, minilm and tiny-lm when their extras are installed) and each
method (every registered one: the plugins plus ``uniform`` and ``hawq``) the harness
measures ONCE per (task, configuration, method, seed) with :func:`mpqcore.measure`, then
solves the measured problem for each average-bits budget {2.5, 3, 4, 5}
(:meth:`mpqcore.Measurement.with_budgets`) and evaluates the task's metric of each
allocation (identical allocations are evaluated once). Candidates are {2,3,4,5,6,8}
({2,4,8} for CLADO). Random methods (hawq's Hutchinson probes, smpq's Monte Carlo) run
several seeds. A second configuration pins the first and last quantizable layers at 8
bits and, on minilm, ties the query/key/value layers of each attention block.

Writes under ``--out`` (default benchmarks/results/bench): ``runs.json`` (one record per
measurement and budget), ``table.csv``/``table.json`` (aggregated over seeds),
``summary.md``, ``meta.json`` and PNG plots; partial results are written after every
measurement, so a killed run leaves what it finished. ``--readme`` replaces the text
between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` with the generated table.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _render  # noqa: E402  (benchmarks/_render.py)
import bench_guard  # noqa: E402  (benchmarks/bench_guard.py)

BUDGETS = (2.5, 3.0, 4.0, 5.0)
BITS = (2, 3, 4, 5, 6, 8)
CLADO_BITS = (2, 4, 8)
TASKS = ("digits-cnn", "digits-resnet18", "minilm", "tiny-lm")
BASELINES = ("uniform", "hawq")
RANDOM_METHODS = ("hawq", "smpq")
#: The pinned configuration: first and last quantizable layer at this width.
PIN_BITS = 8
#: Methods run in the pinned configuration (cheap enough to repeat, plus the baselines).
PINNED_METHODS_QUICK = ("uniform", "hawq", "eagl", "mixquant")
#: The never-worse guard (as mpqcore.search runs it): the method measures on 3/4 of the
#: calibration, each solved allocation is checked on the rest (``--no-guard`` turns it off).
GUARD = True


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- what each task and method runs with ---------------------------------------------------


def task_setup(name: str, quick: bool) -> dict:
    """Build options of the task, which calibration data to keep, and what quick changed.

    ``calibration`` is ``(batches, items)``: a slice of the batch list, then how many
    items of each batch to keep (None: all).
    """
    if quick and name == "digits-resnet18":
        return {
            "build": {},
            "calibration": (slice(0, 1), 32),
            "notes": ["calibration: 32 images (1 batch) instead of 256"],
        }
    if quick and name == "minilm":
        return {
            "build": {"n_eval": 128},
            "calibration": (slice(1, 2), None),
            "notes": [
                "calibration: 16 texts (1 batch of medium length) instead of 64",
                "metric on 128 held-out texts instead of 256, no top-10 agreement",
            ],
        }
    return {"build": {}, "calibration": None, "notes": []}


def subset(calibration: list, which) -> list:
    if which is None:
        return calibration
    batches, items = which
    out = calibration[batches]
    if items is None:
        return out
    return [b[:items] if not isinstance(b, dict) else {k: v[:items] for k, v in b.items()} for b in out]


def method_plan(method: str, task: str, quick: bool, config: str) -> dict:
    """Options, seeds, candidate bits and notes of one method on one task.

    ``skip`` is a reason when the method does not run there.
    """
    seeds = [0]
    options: dict = {}
    notes: list[str] = []
    bits = BITS
    skip = None
    heavy = task in ("digits-resnet18", "minilm")
    if method in RANDOM_METHODS:
        seeds = [0, 1, 2]
        if config == "pinned" or (quick and task == "minilm"):
            seeds = [0]
            notes.append("1 seed" + (" (quick)" if quick and config == "main" else ""))
        elif quick:
            seeds = [0, 1]
            notes.append("2 seeds (quick)")
    if method == "hawq":
        options = {"samples": (2 if task == "minilm" else 4) if quick else 16}
        if quick:
            notes.append(f"samples={options['samples']} trace draws (quick; full: 16)")
    elif method == "smpq":
        if quick and heavy:
            # Monte Carlo needs two antithetic permutation pairs, ~4 evaluations per player:
            # 21 x 5 or 36 x 5 upgrade players need 420-720; with {2,4,8} 168-288.
            bits = CLADO_BITS
            options = {"max_evaluations": 200 if task == "digits-resnet18" else 320}
            notes.append(
                f"candidates {{2,4,8}} and max_evaluations={options['max_evaluations']} (quick; full: "
                "{2,3,4,5,6,8} and 2000): sampling needs ~4 evaluations per (layer, bits) player"
            )
        elif quick:
            options = {"max_evaluations": 150}
            notes.append("max_evaluations=150 (quick; full: 2000)")
    elif method == "clado":
        bits = CLADO_BITS
        if task in ("digits-cnn", "tiny-lm"):  # tiny-lm: 9 layers (8 Conv1D, the tied embedding / lm_head)
            options = {"pairs": "all"}
        elif task == "digits-resnet18":
            options = {"pairs": "window", "window": 1} if quick else {"pairs": "all"}
            if quick:
                notes.append("pairs=window(1) (quick; full: all)")
        else:
            options = {"pairs": "block"}
            if quick:
                skip = (
                    "quick: skipped, 36 layers x {2,4,8} need >= 424 loss evaluations even with pairs=window(1) "
                    "(the full run measures same-block pairs: 918)"
                )
    elif method == "alps" and (task == "minilm" or (quick and heavy)):
        options = {"use_metric": False}
        notes.append(
            "scored by calibration loss, not the metric" + (" (quick)" if task != "minilm" else " (metric ~5 s/call)")
        )
    if config == "pinned" and quick and method not in PINNED_METHODS_QUICK:
        skip = "pinned configuration: quick runs only " + ", ".join(PINNED_METHODS_QUICK)
    return {"options": options, "seeds": seeds, "bits": bits, "notes": notes, "skip": skip}


def methods_available(wanted: list[str] | None) -> list[str]:
    import mpqcore

    names = list(mpqcore.get_plugins().methods.names())
    order = ["uniform", "hawq", *sorted(n for n in names if n not in BASELINES)]
    if wanted:
        unknown = [m for m in wanted if m not in names]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; installed: {names}")
        order = [m for m in order if m in wanted]
    return order


def task_available(name: str) -> str | None:
    """None when the task can be built, else the reason it cannot."""
    if name == "minilm":
        try:
            from mpqcore.tasks.minilm import model_dir

            model_dir()
        except Exception as exc:  # ConfigError with the pip command
            return str(exc)
    if name == "digits-resnet18":
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return 'torchvision is not installed (pip install "mpqcore[vision]")'
    if name == "tiny-lm":
        try:
            import tokenizers  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            return f'{exc.name} is not installed (pip install "mpqcore[lm]")'
    return None


# -- machine -----------------------------------------------------------------------------


def machine(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu,
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import mpqcore.report

        out["versions"] = mpqcore.report.versions()
    except Exception:
        pass
    return out


# -- evaluation ------------------------------------------------------------------------------


class Scorer:
    """Metric (and loss) of allocations of one task, each distinct allocation once."""

    def __init__(self, task, calibration, device, extra_metrics: dict):
        import mpqcore

        quantizer = mpqcore.get_plugins().quantizers.create(mpqcore.DEFAULT_QUANTIZER)  # the one the measurement used
        self.ev = mpqcore.Evaluator(task.model, calibration, None, quantizer, metric=task.metric, device=device)
        self.extra = extra_metrics
        self.cache: dict = {}
        self.seconds = 0.0
        self.calls = 0

    @property
    def spec(self):
        return self.ev.spec

    def __call__(self, bits: dict) -> dict:
        key = tuple(sorted(bits.items()))
        if key not in self.cache:
            t0 = time.perf_counter()
            out = {"metric": self.ev.metric(bits), "loss": self.ev.loss(bits)}
            if self.extra:
                import torch

                with torch.no_grad(), self.ev.applied(bits) as model:
                    for name, fn in self.extra.items():
                        out[name] = float(fn(model))
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.cache[key] = out
        return dict(self.cache[key])


def extra_metrics(task, quick: bool) -> dict:
    """Secondary metrics: minilm's top-10 neighbour agreement (full runs only)."""
    fn = task.info.get("top10_agreement") if task.name == "minilm" else None
    if fn is None or quick:
        return {}
    return {"top10_agreement": fn}


# -- one measurement -------------------------------------------------------------------------


def attention_kernel(method: str, task: str, options: dict):
    """hawq's Hessian-vector products need a double backward, which PyTorch's CPU flash
    attention lacks; the math kernel computes the same attention and has one."""
    import contextlib

    if method != "hawq" or task != "minilm" or options.get("estimator") != "hutchinson":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def measure_and_solve(task, calibration, scorer, method, plan, seed, config, pins, ties, device, budgets):
    import mpqcore

    split = bench_guard.split_for_guard(calibration) if GUARD else None
    calibration = list(split.measure) if split is not None else calibration
    t0, c0 = time.perf_counter(), time.process_time()
    with attention_kernel(method, task.name, plan["options"]):
        meas = mpqcore.measure(
            task.model, calibration, method=method, bits=plan["bits"], pins=pins, ties=ties, seed=seed,
            metric=task.metric, method_options=plan["options"], device=device,
        )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    held = bench_guard.held_out_for(task.model, split, meas, device) if split is not None else None
    passes, evaluations = meas.evaluator.forward_passes, meas.evaluator.evaluations
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    info = meas.problem.objective.info or {}
    records = []
    for b in budgets:
        budget = mpqcore.Budget.average_bits(b)
        problem = meas.with_budgets([budget])
        s0 = time.perf_counter()
        status, alloc, error = "ok", None, None
        try:
            alloc = mpqcore.solve(problem, "highs")
        except Exception as exc:  # infeasible under the pins, solver failure
            status, error = "solve-failed", f"{type(exc).__name__}: {exc}"
        solve_time = time.perf_counter() - s0
        rec = {
            "task": task.name,
            "config": config,
            "method": method,
            "seed": seed,
            "budget": b,
            "bits_candidates": list(plan["bits"]),
            "options": plan["options"],
            "notes": plan["notes"],
            "measure_s": meas.timings.get("measure", wall),
            "measure_wall_s": wall,
            "measure_cpu_s": cpu,
            "forward_passes": passes,
            "evaluations": evaluations,
            "solve_s": solve_time,
            "status": status,
        }
        if alloc is not None:
            scores = scorer(dict(alloc.bits))
            rec.update(
                average_bits=alloc.average_bits(params),
                cost_bits=alloc.costs.get("size"),
                limit_bits=problem.budgets.get("size"),
                predicted=float(alloc.objective),
                solver_status=alloc.status,
                gap=alloc.gap if math.isfinite(alloc.gap) else None,
                allocation=dict(alloc.bits),
                **scores,
            )
            if split is not None:
                rec.update(bench_guard.guard_fields(meas, problem, alloc, split, held, scorer, rec["metric"]))
        else:
            rec["error"] = error
        for k in ("exact", "evaluations_used", "prefix_reuse", "tie_break_lexicographic", "samples"):
            if k in info and not callable(info[k]):
                rec.setdefault("method_info", {})[k] = info[k]
        if "hessian_trace" in info:  # hawq: a negative (or zero-clamped) trace makes a layer look free to cut
            negative = {f for f, t in info["hessian_trace"].items() if t < 0} | set(
                info.get("clamped_negative_traces") or {}
            )
            rec.setdefault("method_info", {})["negative_traces"] = sorted(negative)
            rec["method_info"]["estimator"] = info.get("estimator", "hutchinson")
        records.append(rec)
    if held is not None:  # before the evaluator whose model it works on
        held.close()
    meas.evaluator.close()
    del meas
    gc.collect()
    return records


# -- the run -----------------------------------------------------------------------------------


def run(args) -> int:
    import torch

    import mpqcore

    torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    meta = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "budgets": list(BUDGETS),
        "bits": list(BITS),
        "clado_bits": list(CLADO_BITS),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(device),
        "tasks": {},
        "missing": [],
        "complete": False,
    }
    methods = methods_available(args.methods)
    records: list[dict] = []
    runs_path = out / "runs.json"
    done: set = set()
    previous = {"wall_s": 0.0, "cpu_s": 0.0}
    if args.resume and runs_path.is_file() and (out / "meta.json").is_file():
        records = json.loads(runs_path.read_text())
        old = json.loads((out / "meta.json").read_text())
        done = {(r["task"], r["config"], r["method"], r["seed"]) for r in records}
        previous = {"wall_s": old.get("wall_s") or 0.0, "cpu_s": old.get("cpu_s") or 0.0}
        meta["tasks"] = old.get("tasks", {})
        meta["missing"] = old.get("missing", [])
        meta["started"] = old.get("started", meta["started"])
        meta["command"] = old.get("command", meta["command"])
        meta["resumed"] = [*old.get("resumed", []), "python benchmarks/run.py " + " ".join(sys.argv[1:])]
        log(f"resuming: {len(done)} measurements already in {runs_path}")

    def flush(final: bool = False) -> None:
        meta["wall_s"] = previous["wall_s"] + time.perf_counter() - started
        meta["cpu_s"] = previous["cpu_s"] + time.process_time() - cpu_started
        meta["complete"] = final
        if final:
            meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            meta["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        runs_path.write_text(json.dumps(_render.jsonable(records), indent=0))
        (out / "meta.json").write_text(json.dumps(_render.jsonable(meta), indent=1))
        _render.write_table(records, out)

    for name in args.tasks:
        reason = task_available(name)
        if reason:
            log(f"{name}: skipped: {reason}")
            meta["missing"].append({"task": name, "method": "*", "reason": reason})
            continue
        todo = [
            (config, m, seed)
            for config in ("main", "pinned")
            for m in methods
            if not (plan := method_plan(m, name, args.quick, config))["skip"]
            for seed in plan["seeds"]
            if (name, config, m, seed) not in done
        ]
        if not todo:
            continue
        prev_task = meta["tasks"].get(name, {})
        setup = task_setup(name, args.quick)
        t0 = time.perf_counter()
        task = mpqcore.load_task(name, device=device, **setup["build"])
        calibration = subset(task.calibration, setup["calibration"])
        scorer = Scorer(task, calibration, device, extra_metrics(task, args.quick))
        spec = scorer.spec
        build_s = time.perf_counter() - t0
        float_scores = scorer({})
        pins = {spec.fqns[0]: PIN_BITS, spec.fqns[-1]: PIN_BITS}
        ties = [list(g) for g in task.info.get("qkv_ties", [])] if name == "minilm" else None
        meta["tasks"][name] = {
            "description": task.description,
            "metric_name": task.metric_name,
            "higher_is_better": task.higher_is_better,
            "float": float_scores,
            "layers": len(spec.layers),
            "params": spec.total_params,
            "calibration_batches": len(calibration),
            "build_s": build_s,
            "quick_changes": setup["notes"],
            "pins": pins,
            "ties": ties,
        }
        log(
            f"{name}: built in {build_s:.1f}s, {len(spec.layers)} layers, float {task.metric_name} {float_scores['metric']:.4f}"
        )
        flush()
        task_t0 = time.perf_counter()
        for config in ("main", "pinned"):
            for method in methods:
                plan = method_plan(method, name, args.quick, config)
                if plan["skip"]:
                    entry = {"task": name, "method": method, "reason": plan["skip"]}
                    if config == "main" and entry not in meta["missing"]:
                        meta["missing"].append(entry)
                    continue
                for seed in plan["seeds"]:
                    if (name, config, method, seed) in done:
                        continue
                    meta["missing"] = [
                        x
                        for x in meta["missing"]
                        if (x["task"], x["method"], x.get("config"), x.get("seed")) != (name, method, config, seed)
                    ]
                    log(f"{name} [{config}] {method} seed {seed} {plan['options'] or ''} ...")
                    try:
                        recs = measure_and_solve(
                            task, calibration, scorer, method, plan, seed, config,
                            pins if config == "pinned" else None, ties if config == "pinned" else None,
                            device, BUDGETS,
                        )  # fmt: skip
                    except Exception as exc:
                        traceback.print_exc()
                        reason = f"{type(exc).__name__}: {exc}"
                        meta["missing"].append(
                            {"task": name, "method": method, "config": config, "seed": seed, "reason": reason[:500]}
                        )
                        log(f"  FAILED: {reason[:300]}")
                        flush()
                        continue
                    records.extend(recs)
                    r = recs[0]
                    summary = ", ".join(f"{x['budget']:g}b: {x.get('metric', float('nan')):.4f}" for x in recs)
                    log(f"  measured in {r['measure_s']:.1f}s, {r['forward_passes']} fwd passes; {summary}")
                    flush()
        meta["tasks"][name]["wall_s"] = prev_task.get("wall_s", 0.0) + time.perf_counter() - task_t0
        meta["tasks"][name]["eval_s"] = prev_task.get("eval_s", 0.0) + scorer.seconds
        meta["tasks"][name]["eval_calls"] = prev_task.get("eval_calls", 0) + scorer.calls
        scorer.ev.close()
        del task, scorer
        gc.collect()
        _render.render(out, records, meta)
    flush(final=True)
    _render.render(out, records, meta)
    log(f"done in {meta['wall_s']:.0f}s; results in {out}")
    update_readmes(args, out, meta)
    return 0


def update_readmes(args, out: Path, meta: dict) -> None:
    for path in (args.readme, args.bench_readme):
        if path:
            _render.update_readme(Path(path), out, meta)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="cheaper settings (fewer seeds, probes, evaluations, calibration); < 15 min on 2 cores",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"tasks (default: {' '.join(TASKS)})")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: every installed one)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--out", default=str(HERE / "results" / "bench"), help="output folder")
    parser.add_argument(
        "--readme",
        default=str(HERE.parent / "README.md"),
        help="README whose <!-- bench:start --> ... <!-- bench:end --> block is replaced ('' to skip)",
    )
    parser.add_argument(
        "--bench-readme",
        default=str(HERE / "README.md"),
        help="benchmarks README whose bench block is replaced too ('' to skip)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the measurements already in OUT/runs.json and run only the missing ones",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="redraw table, plots, summary and README from OUT/runs.json"
    )
    parser.add_argument("--no-guard", action="store_true", help="measure on every batch; no never-worse guard")
    args = parser.parse_args(argv)
    global GUARD
    GUARD = not args.no_guard
    if args.render_only:
        out = Path(args.out)
        records = json.loads((out / "runs.json").read_text())
        meta = json.loads((out / "meta.json").read_text())
        _render.write_table(records, out)
        _render.render(out, records, meta)
        update_readmes(args, out, meta)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
