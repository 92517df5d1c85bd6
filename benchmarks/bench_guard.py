"""What the never-worse guard and closed-loop refinement change, and what they cost.

    python benchmarks/bench_guard.py --quick      # < 10 min on 2 CPU cores
    python benchmarks/bench_guard.py              # every task that is installed

For each task (digits-cnn, the six CNNs of mpqcore.testing.digits_zoo, tiny-lm and, not
with --quick, digits-resnet18 and minilm) and each installed method, one
:func:`mpqcore.sweep` at 2.5, 3 and 4 average bits from {2,3,4,5,6,8} with the guard on
(the method measures on 3/4 of the calibration batches, the guard on the last quarter).
Per point: the test metric of the method's own answer, of the uniform reference (the
dearest uniform allocation within the budget) and of what the guard returned; whether the
method's answer was kept or replaced (and by which candidate); the guard's extra
evaluations and seconds beside the method's measuring seconds. Then ``refine=2`` on the
same measurement at 3 bits: its evaluations, seconds and the prediction error per round.

Writes benchmarks/results/guard.json and guard.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BUDGETS = (2.5, 3.0, 4.0)
BITS = (2, 3, 4, 5, 6, 8)
QUICK_OPTIONS = {
    "hawq": {"samples": 4},
    "clado": {"pairs": "window", "window": 1},
    "smpq": {"max_evaluations": 80, "min_permutations": 4},
}


# -- the guard inside benchmarks/run.py (its "kept / replaced by the guard" column) ---------


def split_for_guard(calibration):
    """The held-out split :func:`mpqcore.search` makes (the last quarter of the batches)."""
    from mpqcore.verify import split_calibration

    return split_calibration(calibration)


def held_out_for(model, split, meas, device):
    """The guard's evaluator on the measuring evaluator's working copy (as search makes it)."""
    from mpqcore.verify import held_out_evaluator

    ev = meas.evaluator
    return held_out_evaluator(ev.model, split, ev.quantizer, spec=meas.spec, act_bits=ev.act_bits, device=ev.device)


def guard_fields(meas, problem, allocation, split, held, scorer, metric) -> dict:
    """The guard on one solved point: kept or replaced, the returned allocation's metric, its cost."""
    import attrs

    import mpqcore
    from mpqcore.verify import verify

    chosen, results, _ = verify(
        attrs.evolve(meas, problem=problem), allocation, lambda p: mpqcore.solve(p, "highs"), split=split, held=held,
        guard_on=True, candidates=3, verify_on="held-out", rounds=0, max_evaluations=None,
    )  # fmt: skip
    g = results["guard"]
    return {
        "guard": "kept" if g["kept"] else f"replaced by {g['chosen']}",
        "guard_metric": metric if g["kept"] else scorer(dict(chosen.bits))["metric"],
        "guard_evaluations": g["evaluations"],
        "guard_s": g["seconds"],
    }


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tasks(quick: bool):
    """``(name, model, calibration, metric)`` of every task to run."""
    import mpqcore
    from mpqcore.tasks import _cache, digits
    from mpqcore.testing.digits_zoo import ZOO, load_zoo_model

    cnn = mpqcore.load_task("digits-cnn")
    yield "digits-cnn", cnn.model, cnn.calibration, cnn.metric
    split = digits.load_split()
    calibration = [split.x_calibration[i : i + 64] for i in range(0, len(split.x_calibration), 64)]
    accuracy = _cache.accuracy_metric(split.x_test, split.y_test)
    for entry in ZOO:
        yield f"zoo:{entry.name}", load_zoo_model(entry, split), calibration, accuracy
    names = ["tiny-lm"] if quick else ["tiny-lm", "digits-resnet18", "minilm"]
    for name in names:
        try:
            task = mpqcore.load_task(name)
        except Exception as exc:  # an extra not installed
            log(f"skip {name}: {type(exc).__name__}: {exc}")
            continue
        yield name, task.model, task.calibration, task.metric


def run_one(name, model, calibration, metric, method, quick):
    import mpqcore

    options = QUICK_OPTIONS.get(method) if quick else None
    t0 = time.perf_counter()
    meas, points = mpqcore.sweep(
        model, calibration, method=method, bits=BITS, budgets=[mpqcore.Budget.average_bits(b) for b in BUDGETS],
        metric=metric, method_options=options, cache=False,  # costs measured, never read from a cache
    )  # fmt: skip
    sweep_s = time.perf_counter() - t0
    ev = meas.evaluator
    rows = []
    for b, p in zip(BUDGETS, points, strict=True):
        if p.allocation is None:
            rows.append({"task": name, "method": method, "budget": b, "error": p.error})
            continue
        g = p.results["guard"]
        by_name = {c["name"]: c for c in g["candidates"]}
        uniform = by_name.get(f"uniform-{g['uniform_reference']}")
        rows.append(
            {
                "task": name,
                "method": method,
                "budget": b,
                "kept": g["kept"],
                "chosen": g["chosen"],
                "method_bits": by_name["method"]["average_bits"],
                "chosen_bits": by_name[g["chosen"]]["average_bits"],
                "method_metric": ev.metric(by_name["method"]["bits"]),
                "uniform_bits": g["uniform_reference"],
                "uniform_metric": ev.metric(uniform["bits"]) if uniform else None,
                "returned_metric": p.results["metric"],
                "higher_is_better": ev.metric_higher_is_better,
                "one_example": 1 / 400 if name == "digits-cnn" or name.startswith("zoo:") else 0.0,
                "guard_evaluations": g["evaluations"],
                "guard_s": g["seconds"],
                "measure_s": meas.timings["measure"],
                "measure_evaluations": meas.measure_forward_passes,
                "held_out": g["data"],
            }
        )
    t0 = time.perf_counter()
    refined = mpqcore.search(
        model, measurement=meas, budget=mpqcore.Budget.average_bits(3.0), refine=2, guard=False, metric=metric
    )
    r = refined.results["refine"]
    refine_row = {
        "task": name,
        "method": method,
        "rounds": len(r["rounds"]),
        "stopped": r["stopped"],
        "evaluations": r["evaluations"],
        "seconds": r["seconds"],
        "relative_errors": [x["relative_error"] for x in r["rounds"]],
        "measured": [x["measured"] for x in r["rounds"]],
        "first_metric": ev.metric(r["rounds"][0]["bits"]),
        "refined_metric": refined.results["metric"],
        "search_s": time.perf_counter() - t0,
    }
    ev.close()
    return rows, refine_row, sweep_s


def _at_least(a: float, b: float, row: dict, slack: float = 0.0) -> bool:
    """``a`` is as good as ``b`` (less ``slack``) in the direction of the row's metric."""
    return a >= b - slack - 1e-12 if row.get("higher_is_better", True) else a <= b + slack + 1e-12


def render(data: dict) -> str:
    rows = [r for r in data["rows"] if "error" not in r]
    lines = [
        "# The never-worse guard and closed-loop refinement: what they change and cost",
        "",
        f"Generated by `python benchmarks/bench_guard.py{' --quick' if data['quick'] else ''}` "
        f"({data['date']}, {data['wall_s']:.0f} s, torch threads {data['threads']}). Candidates {{2,3,4,5,6,8}}, "
        "the default quantizer; the method measures on 3/4 of the calibration batches, the guard on the last quarter. "
        "Metric: each task's test metric (accuracy on held-out test images for the CNNs).",
        "",
        "## Kept or replaced, per budget",
        "",
        "| budget | points | method's answer kept | replaced by uniform | replaced by a neighbour | returned metric as good as the method's | returned as good as uniform (CNNs: less one test image) |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in BUDGETS:
        at = [r for r in rows if r["budget"] == b]
        kept = sum(r["kept"] for r in at)
        uni = sum((not r["kept"]) and r["chosen"].startswith("uniform") for r in at)
        nb = len(at) - kept - uni
        ge = sum(_at_least(r["returned_metric"], r["method_metric"], r) for r in at)
        ok = sum(
            r["uniform_metric"] is None or _at_least(r["returned_metric"], r["uniform_metric"], r, r["one_example"])
            for r in at
        )
        lines.append(f"| {b:g} | {len(at)} | {kept} | {uni} | {nb} | {ge} | {ok} |")
    lines += [
        "",
        "## Cost per task (means over methods and budgets; seconds are wall time on a shared machine)",
        "",
        "| task | points | kept | guard evaluations | guard s | method's measuring s | refine=2 evaluations | refine s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        at = [r for r in rows if r["task"] == task]
        ref = [r for r in data["refine"] if r["task"] == task]

        def mean(values):
            values = list(values)
            return sum(values) / max(len(values), 1)

        lines.append(
            f"| {task} | {len(at)} | {sum(r['kept'] for r in at)} | {mean(r['guard_evaluations'] for r in at):.1f} | "
            f"{mean(r['guard_s'] for r in at):.2f} | {mean(r['measure_s'] for r in at):.2f} | "
            f"{mean(r['evaluations'] for r in ref):.1f} | {mean(r['seconds'] for r in ref):.2f} |"
        )
    lines += [
        "",
        "## Every point",
        "",
        "The guard's cost is its extra evaluations (held-out chunks count as one evaluation per candidate) and seconds, "
        "beside the method's own measuring time.",
        "",
        "| task | method | budget | method's answer (avg bits, metric) | uniform ref (bits, metric) | returned | guard | guard evals | guard s | measure s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        u = "-" if r["uniform_metric"] is None else f"{r['uniform_bits']}, {r['uniform_metric']:.4f}"
        verdict = "kept" if r["kept"] else f"replaced by {r['chosen']}"
        lines.append(
            f"| {r['task']} | {r['method']} | {r['budget']:g} | {r['method_bits']:.2f}, {r['method_metric']:.4f} | {u} | "
            f"{r['returned_metric']:.4f} | {verdict} | {r['guard_evaluations']} | {r['guard_s']:.2f} | {r['measure_s']:.2f} |"
        )
    lines += [
        "",
        "## Refinement (refine=2 at 3 bits, on the same measurement)",
        "",
        "Relative prediction error |predicted - measured| / measured of each round's allocation, predicted before it "
        "was measured (round 0: the method's objective rescaled to loss units).",
        "",
        "| task | method | rounds | stopped | evaluations | seconds | relative error per round | metric: round 0 -> kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["refine"]:
        errs = ", ".join(f"{e:.2f}" for e in r["relative_errors"])
        lines.append(
            f"| {r['task']} | {r['method']} | {r['rounds']} | {r['stopped']} | {r['evaluations']} | {r['seconds']:.2f} | "
            f"{errs} | {r['first_metric']:.4f} -> {r['refined_metric']:.4f} |"
        )
    if data["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in data["errors"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small method options; tasks digits-cnn, zoo, tiny-lm")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: every installed one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for guard.json and guard.md")
    parser.add_argument("--render-only", action="store_true", help="rewrite guard.md from OUT/guard.json")
    args = parser.parse_args(argv)
    if args.render_only:
        out = Path(args.out)
        (out / "guard.md").write_text(render(json.loads((out / "guard.json").read_text())))
        return 0
    torch.set_num_threads(args.threads)
    import mpqcore

    methods = args.methods or sorted(mpqcore.get_plugins().methods.names())
    t_start = time.perf_counter()
    data: dict = {"quick": args.quick, "threads": args.threads, "rows": [], "refine": [], "errors": []}
    for name, model, calibration, metric in tasks(args.quick):
        for method in methods:
            try:
                rows, refine_row, seconds = run_one(name, model, calibration, metric, method, args.quick)
            except Exception as exc:
                data["errors"].append(f"{name} / {method}: {type(exc).__name__}: {exc}")
                log(f"{name} {method} failed: {exc}")
                continue
            data["rows"] += rows
            data["refine"].append(refine_row)
            log(f"{name} {method}: {seconds:.1f} s, " + ", ".join(str(r.get("chosen")) for r in rows))
    data["wall_s"] = time.perf_counter() - t_start
    data["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guard.json").write_text(json.dumps(data, indent=1, default=str))
    (out / "guard.md").write_text(render(data))
    log(f"wrote {out / 'guard.md'} ({data['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
