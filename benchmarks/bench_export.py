"""Exports that reproduce the report: digits-resnet18 and minilm searched at 3 and 4 average bits, exported in
every built-in format, reloaded, their metric against the report's and their size on disk against the prediction.

    python benchmarks/bench_export.py                       # digits-resnet18 and minilm
    python benchmarks/bench_export.py --tasks digits-cnn    # a quick check

The searches use hawq (2 Hutchinson samples) over widths 2, 3, 4, 8 with the
``symmetric-per-channel`` quantizer (per-channel scales: the layout torchao can map).
Predicted bytes: every quantized weight at its width plus its scales (and zero points)
at the layout's dtypes (``Layout.metadata_bits``), plus every tensor left float at its
dtype. ``forward ms``: the median of 5 forward passes of the reloaded model on one
calibration batch (after a warm-up), beside the float model's, at ``--threads`` (default
1) on this machine. Writes ``benchmarks/results/export.json`` and ``export.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import mpqcore

RESULTS = Path(__file__).parent / "results"
FORMATS = ("packed", "onnx", "torchao")


def forward_ms(model, batch, repeats: int = 5) -> float:
    """Median milliseconds of one forward pass on ``batch`` (after one warm-up call)."""
    from mpqcore.batches import call_model

    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            call_model(model, batch)
            if i:
                times.append(time.perf_counter() - t0)
    return round(1000 * sorted(times)[len(times) // 2], 2)


def run(task_name: str, avg_bits: float, out: Path) -> list[dict]:
    task = mpqcore.load_task(task_name)
    t0 = time.perf_counter()
    report = mpqcore.search(
        task.model, task.calibration, method="hawq", bits=(2, 3, 4, 8), quantizer="symmetric-per-channel",
        budget=mpqcore.Budget.average_bits(avg_bits), metric=task.metric, method_options={"samples": 2},
    )  # fmt: skip
    searched = time.perf_counter() - t0
    float_bytes = sum(t.numel() * t.element_size() for t in task.model.state_dict().values())
    float_ms = forward_ms(task.model, task.calibration[0])
    rows = []
    for fmt in FORMATS:
        row = {"task": task_name, "avg_bits": avg_bits, "format": fmt, "search_s": round(searched, 1),
               "reported": report.results["metric"], "float_bytes": float_bytes}  # fmt: skip
        t0 = time.perf_counter()
        try:
            res = mpqcore.export(task.model, report, format=fmt, path=out / f"{task_name}-{avg_bits}{'.' + fmt}",
                                 example=task.calibration[0], metric=task.metric)  # fmt: skip
        except mpqcore.ConfigError as exc:
            row.update(status="refused", error=str(exc)[:300])
        else:
            row.update(
                status="ok", bytes=res.bytes, predicted_bytes=res.predicted_bytes, ratio=round(res.size_ratio, 4),
                max_abs_diff=res.max_abs_diff, exact=res.exact, metric=res.metric,
                metric_equal=res.metric == report.results["metric"],
                forward_ms=forward_ms(res.model, task.calibration[0]), float_forward_ms=float_ms,
            )  # fmt: skip
        row["export_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | avg bits | format | bytes on disk | predicted | ratio | float bytes | max abs diff | metric reloaded "
        "| reported | metric diff | forward ms (float) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['task']} | {r['avg_bits']} | {r['format']} | refused: {r['error'][:140]} |" + " |" * 8)
            continue
        lines.append(
            f"| {r['task']} | {r['avg_bits']} | {r['format']} | {r['bytes']:,} | {r['predicted_bytes']:,} | "
            f"{r['ratio']:.3f} | {r['float_bytes']:,} | {r['max_abs_diff']:.3g} | {r['metric']:.4f} | "
            f"{r['reported']:.4f} | {abs(r['metric'] - r['reported']):.2g} | "
            f"{r.get('forward_ms', float('nan')):.1f} ({r.get('float_forward_ms', float('nan')):.1f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown-only", action="store_true", help="rewrite export.md from export.json")
    parser.add_argument("--tasks", nargs="+", default=["digits-resnet18", "minilm"])
    parser.add_argument("--avg-bits", nargs="+", type=float, default=[3.0, 4.0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.markdown_only:
        (RESULTS / "export.md").write_text(markdown(json.loads((RESULTS / "export.json").read_text())["rows"]))
        return
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks:
            for avg in args.avg_bits:
                rows.extend(run(name, avg, Path(tmp)))
    RESULTS.mkdir(exist_ok=True)
    meta = {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads}
    (RESULTS / "export.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / "export.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
