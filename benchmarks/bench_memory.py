"""Peak memory of one search: how many copies of the model it holds at once.

Each configuration runs in a fresh process (peak resident memory only grows), after the
task's model is loaded and has run once; the figure is the growth of the peak resident
set during ``mpqcore.search`` (hawq, 2 Hutchinson samples, 4 average bits, no cache),
in MB and in multiples of the model's own parameter bytes:

- ``copy``: the default; the evaluator's working copy is the one copy, handed over and
  quantized as ``report.model`` (before: a second copy was made for it);
- ``in place``: ``inplace=True``, measured and quantized on the model itself;
- ``bounded``: the default with ``weight_cache_bytes`` = the model's parameter bytes
  (the quantized weights kept for reuse are bounded; unbounded they are, per candidate
  width, one-byte codes and a dequantized float copy of every layer).

The last column is the largest :attr:`mpqcore.Evaluator.weight_cache` peak of the search's
evaluators; the rest of the growth is the method's own (hawq's Hessian-vector products
keep an autograd graph and gradients), activations and the float reference outputs.

    python benchmarks/bench_memory.py                      # digits-resnet18, minilm
    python benchmarks/bench_memory.py --tasks digits-resnet18

Writes ``benchmarks/results/memory.json`` and ``memory.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

_CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
import mpqcore
from mpqcore.evaluate import Evaluator
task = mpqcore.load_task(sys.argv[1])
mode = sys.argv[2]
with torch.no_grad():
    mpqcore.batches.call_model(task.model, task.calibration[0])
param_bytes = sum(p.numel() * p.element_size() for p in task.model.parameters())
made = []
init = Evaluator.__init__
def spy(self, *a, **k):
    init(self, *a, **k)
    made.append(self)
Evaluator.__init__ = spy
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = mpqcore.search(task.model, task.calibration, method="hawq", method_options={"samples": 2}, bits=(2, 4, 8),
                        budget=mpqcore.Budget.average_bits(4), inplace=(mode == "in place"), loss=task.loss,
                        weight_cache_bytes=param_bytes if mode == "bounded" else None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cache_peak = max(ev.weight_cache["peak"] for ev in made)
print(json.dumps({"param_bytes": param_bytes, "growth_kb": peak - base, "avg_bits": report.average_bits,
                  "weight_cache_peak_bytes": cache_peak}))
"""


def run(task: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, task, mode], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(task=task, mode=mode)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits-resnet18", "minilm"])
    args = parser.parse_args(argv)
    rows = [run(t, m) for t in args.tasks for m in ("copy", "in place", "bounded")]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps({"rows": rows, "python": platform.python_version()}, indent=1))
    lines = [
        "| task | mode | model parameters (MB) | peak growth during search (MB) | in model copies "
        "| of which quantized weights kept (MB, peak) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        mb = r["param_bytes"] / 1e6
        growth = r["growth_kb"] * 1024 / 1e6
        kept = r["weight_cache_peak_bytes"] / 1e6
        lines.append(f"| {r['task']} | {r['mode']} | {mb:.1f} | {growth:.1f} | {growth / mb:.2f} | {kept:.1f} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "memory.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
