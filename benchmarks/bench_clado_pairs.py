"""CLADO's all-pairs measurement on digits-resnet18: wall time at 1 and 2 workers.

Every single-layer term and every layer pair at every pair of widths ({2, 4, 8}: 1,954
loss evaluations over 21 layers) through :meth:`mpqcore.Evaluator.losses`, with prefix
reuse; ``--workers 2`` splits them over two Ray actors (the ``ray`` extra). Each run's
objective is compared with the first one's: the values must be the same.

    python benchmarks/bench_clado_pairs.py                      # 1 worker, then 2 if Ray is installed
    python benchmarks/bench_clado_pairs.py --workers 1 --threads 2

Writes ``benchmarks/results/clado_pairs.json`` and ``clado_pairs.md``; ``--objective FILE``
also saves the first run's objective terms, and ``--compare FILE`` reports the largest
difference from a saved one (for a before/after check across code versions).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import mpqcore

RESULTS = Path(__file__).parent / "results"
BITS = (2, 4, 8)
TASK = "digits-resnet18"  # --task digits-cnn: a quick check of the script itself


def terms(objective) -> dict[str, list[float]]:
    """The objective's numbers in a fixed order: unary (layers x bits), then pair values by key."""
    items = sorted(dict(objective.pairs).items(), key=lambda kv: repr(kv[0]))
    return {
        "unary": np.asarray(objective.unary, dtype=float).ravel().tolist(),
        "pairs": [float(np.asarray(v, dtype=float).sum()) for _, v in items],
        "pair_keys": [repr(k) for k, _ in items],
    }


def max_difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two :func:`terms` (inf when their shapes differ)."""
    if a["pair_keys"] != b["pair_keys"] or len(a["unary"]) != len(b["unary"]):
        return float("inf")
    ua, ub = np.asarray(a["unary"]), np.asarray(b["unary"])
    pa, pb = np.asarray(a["pairs"]), np.asarray(b["pairs"])
    diffs = [np.abs(ua - ub).max(initial=0.0), np.abs(pa - pb).max(initial=0.0)]
    return float(max(diffs))


def run(task, workers: int) -> tuple[dict, dict]:
    wall, cpu = time.perf_counter(), time.process_time()
    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="clado",
        bits=BITS,
        method_options={"pairs": "all"},
        workers=workers if workers > 1 else None,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    info = meas.objective.info
    row = {
        "workers": workers,
        "wall_s": wall,
        "cpu_s_driver": cpu,
        "evaluations": info.get("evaluations_used"),
        "forward_passes": info.get("forward_passes_used"),
        "measure_s": info.get("measure_seconds"),
        # measured in the actors with workers: the driver's evaluator reports none
        "skipped_mac_fraction": (info.get("prefix_reuse") or {}).get("skipped_mac_fraction") if workers == 1 else None,
    }
    out = terms(meas.objective)
    meas.evaluator.close()
    return row, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=TASK)
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default: 1, and 2 when Ray is installed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    parser.add_argument("--objective", type=Path, default=None, help="save the first run's objective terms here")
    parser.add_argument("--compare", type=Path, default=None, help="report the difference from these saved terms")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where clado_pairs.json/.md go ('-': nowhere)")
    args = parser.parse_args(argv)
    workers = args.workers or ([1, 2] if importlib.util.find_spec("ray") else [1])
    torch.set_num_threads(args.threads)
    task = mpqcore.load_task(args.task)
    load = os.getloadavg()
    rows, first = [], None
    for w in workers:
        row, out = run(task, w)
        first = first or out
        row["max_abs_difference_from_first"] = max_difference(first, out)
        rows.append(row)
        print(row, flush=True)
    assert first is not None
    if args.objective is not None:
        args.objective.write_text(json.dumps(first))
    compared = None
    if args.compare is not None:
        compared = max_difference(json.loads(args.compare.read_text()), first)
        print(f"largest difference from {args.compare}: {compared}")
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": args.threads,
        "load_average_at_start": [round(x, 2) for x in load],
        "task": args.task,
        "bits": list(BITS),
        "compared_with": None if compared is None else {"file": str(args.compare), "max_abs_difference": compared},
    }
    if str(args.out) != "-":
        write(args.out, rows, meta)


def write(out: Path, rows: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "clado_pairs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# CLADO all-pairs measurement on {meta['task']}",
        "",
        f"`python benchmarks/bench_clado_pairs.py` on {meta['machine']}, torch {meta['torch']}, "
        f"{meta['threads']} thread(s) in the driver, bits {meta['bits']}, pairs 'all', prefix reuse on; "
        f"load average at start {meta['load_average_at_start']} (the 2 cores are shared with other work: wall "
        "times are upper bounds).",
        "",
        "| workers | evaluations | forward passes | wall s | wall ms / evaluation | CPU s of this process | MACs skipped | max abs. difference from the first row |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = 1e3 * r["wall_s"] / r["evaluations"] if r["evaluations"] else float("nan")
        skipped = r["skipped_mac_fraction"]
        lines.append(
            f"| {r['workers']} | {r['evaluations']:,} | {r['forward_passes']:,} | {r['wall_s']:.1f} | {per:.1f} | "
            f"{r['cpu_s_driver']:.1f}{'' if r['workers'] == 1 else ' (the actors not counted)'} | "
            f"{'-' if skipped is None else f'{100 * skipped:.0f}%'} | {r['max_abs_difference_from_first']:.1e} |"
        )
    if meta["compared_with"] is not None:
        c = meta["compared_with"]
        lines += ["", f"Largest difference of the objective from `{c['file']}`: {c['max_abs_difference']:.1e}."]
    (out / "clado_pairs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
