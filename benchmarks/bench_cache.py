"""The measurement cache: what an interrupted measurement and a second search evaluate again.

For each task and method, three runs against cache directories of their own:

- ``cold``: :func:`mpqcore.measure` into an empty cache (every evaluation computed and stored);
- ``resumed``: a measurement interrupted (``KeyboardInterrupt``, as Ctrl-C raises) after half
  of the cold run's evaluations, then rerun: how many it evaluated, how many it read back,
  and whether its objective is bit for bit the cold one;
- ``re-search``: two :func:`mpqcore.search` calls on one more directory, at 3 average bits
  with ``highs``, then at 4 with ``auto``: what the second one's measuring evaluated
  (nothing: the method's objective is read back) and what its never-worse guard evaluated
  and read back.

    python benchmarks/bench_cache.py                      # digits-cnn, digits-resnet18
    python benchmarks/bench_cache.py --tasks digits-cnn   # a quick check of the script

Writes ``benchmarks/results/cache.json`` and ``cache.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mpqcore
from mpqcore import Budget
from mpqcore.evaluate import Evaluator

RESULTS = Path(__file__).parent / "results"
BITS = (2, 4, 8)
METHODS = {
    "hawq": {"samples": 4},
    "clado": {},
    "alps": {},
    "smpq": {"max_evaluations": 120, "exact": False},
}


class Interrupted(KeyboardInterrupt):
    """What Ctrl-C raises, after a set number of evaluations."""


def interrupt_after(k: int):
    """Patch the evaluator's loss and metric evaluations to raise after ``k`` of them; returns an undo."""
    real_loss, real_metric = Evaluator._loss_now, Evaluator._metric_now
    done = [0]

    def count(real):
        def wrapped(self, assignment):
            if done[0] >= k:
                raise Interrupted
            done[0] += 1
            return real(self, assignment)

        return wrapped

    Evaluator._loss_now = count(real_loss)  # type: ignore[method-assign]
    Evaluator._metric_now = count(real_metric)  # type: ignore[method-assign]

    def undo() -> None:
        Evaluator._loss_now = real_loss  # type: ignore[method-assign]
        Evaluator._metric_now = real_metric  # type: ignore[method-assign]

    return undo


def same_objective(a, b) -> bool:
    return bool(np.array_equal(a.unary, b.unary)) and {k: np.asarray(v).tolist() for k, v in dict(a.pairs).items()} == {
        k: np.asarray(v).tolist() for k, v in dict(b.pairs).items()
    }


def measure(task, method, cache):
    t = time.perf_counter()
    meas = mpqcore.measure(
        task.model, task.calibration, method=method, method_options=METHODS[method], bits=BITS,
        loss=task.loss, metric=task.metric if method in ("alps", "smpq") else None, cache=cache,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    ev = meas.evaluator
    out = {"evaluations": ev.evaluations, "from_cache": ev.cache_hits, "seconds": seconds}
    out["objective_from_cache"] = meas.objective_from_cache
    return meas, out


def search(task, method, cache, bits: float, solver: str) -> dict:
    t = time.perf_counter()
    report = mpqcore.search(
        task.model, task.calibration, method=method, method_options=METHODS[method], bits=BITS,
        budget=Budget.average_bits(bits), solver=solver, loss=task.loss,
        metric=task.metric if method in ("alps", "smpq") else None, cache=cache,
    )  # fmt: skip
    c = dict(report.cache)
    return {
        "budget_bits": bits,
        "solver": solver,
        "seconds": time.perf_counter() - t,
        "objective_from_cache": c.get("objective_from_cache"),
        "measure_forward_passes": report.measure_forward_passes,
        "read_back": c.get("hits"),
        "stored": c.get("stored"),
    }


def run(task_name: str, method: str, root: Path) -> dict:
    task = mpqcore.load_task(task_name)
    cold_dir, resumed_dir, search_dir = (root / f"{task_name}-{method}-{k}" for k in ("cold", "resumed", "search"))
    cold_meas, cold = measure(task, method, cold_dir)
    row = {"task": task_name, "method": method, "cold": cold}
    half = cold["evaluations"] // 2
    if half:
        undo = interrupt_after(half)
        try:
            measure(task, method, resumed_dir)
            raise AssertionError("the interrupted measurement finished")
        except Interrupted:
            pass
        finally:
            undo()
        resumed_meas, resumed = measure(task, method, resumed_dir)
        resumed["interrupted_after"] = half
        resumed["objective_identical"] = same_objective(resumed_meas.objective, cold_meas.objective)
        row["resumed"] = resumed
        resumed_meas.evaluator.close()
    cold_meas.evaluator.close()
    row["re_search"] = [search(task, method, search_dir, 3.0, "highs"), search(task, method, search_dir, 4.0, "auto")]
    return row


def write(out: Path, rows: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cache.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# The measurement cache: resume and re-search",
        "",
        f"`python benchmarks/bench_cache.py` on {meta['machine']}, torch {meta['torch']}, {meta['threads']} thread(s), "
        f"bits {meta['bits']}; load average at start {meta['load_average_at_start']}. `cold`: a measurement into an "
        "empty cache. `resumed`: one interrupted (KeyboardInterrupt) after half the cold run's evaluations, then "
        "rerun. `search`: a search at 3 bits (highs) into an empty cache, then one at 4 bits (auto) on it: the "
        "second reads the method's objective back; its guard computes only the held-out evaluations of "
        "candidates the first did not measure. Values read back / stored count the cache's entries.",
        "",
        "| task | method | cold: evaluations (s) | interrupted after | resumed: evaluated / read back (s) | same objective | "
        "search 3 bits: evaluated (s) | then 4 bits: objective read back, method's forward passes, "
        "read back / stored (s) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        c, res = r["cold"], r.get("resumed")
        resumed = "-" if res is None else f"{res['evaluations']} / {res['from_cache']} ({res['seconds']:.1f})"
        same = "-" if res is None else ("yes" if res["objective_identical"] else "**no**")
        first, second = r["re_search"]
        searches = [
            f"{first['stored']} ({first['seconds']:.1f})",
            f"{'yes' if second['objective_from_cache'] else '**no**'}, {second['measure_forward_passes']}, "
            f"{second['read_back']} / {second['stored']} ({second['seconds']:.1f})",
        ]
        lines.append(
            f"| {r['task']} | {r['method']} | {c['evaluations']} ({c['seconds']:.1f}) | "
            f"{'-' if res is None else res['interrupted_after']} | {resumed} | {same} | {searches[0]} | {searches[1]} |"
        )
    lines += [
        "",
        "hawq's Hessian traces are gradients, not evaluations: the count above is its loss evaluations; its "
        "objective is cached whole.",
    ]
    (out / "cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["digits-cnn", "digits-resnet18"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.tasks:
            for m in args.methods:
                rows.append(run(t, m, Path(tmp)))
                print(rows[-1], flush=True)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": args.threads,
        "bits": list(BITS),
        "load_average_at_start": [round(x, 2) for x in load],
    }
    write(args.out, rows, meta)


if __name__ == "__main__":
    main()
