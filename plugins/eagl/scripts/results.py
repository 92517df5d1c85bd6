"""Measure EAGL on digits-cnn; writes results.json and results.md next to this file.

    python plugins/eagl/scripts/results.py

Bits {2,3,4,5,6,8}, average-bits budgets 3.0 and 4.0, torch.set_num_threads(2).
Compared with uniform precision (the search report's uniform reference) and with
``hawq`` at the same budget (measured once, solved for both budgets).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

import mpqcore

HERE = Path(__file__).resolve().parent
BITS = (2, 3, 4, 5, 6, 8)
BUDGETS = (3.0, 4.0)
VARIANTS = {"eagl (scale=params, default)": {"scale": "params"}, "eagl (scale=per-weight)": {"scale": "per-weight"}}


def row(rep) -> dict:
    r = rep.results
    return {
        "allocation": dict(rep.allocation.bits),
        "average_bits": rep.average_bits,
        "accuracy": r["metric"],
        "uniform_bits": r["uniform_bits"],
        "uniform_accuracy": r["uniform_metric"],
        "loss": r["loss"],
        "uniform_loss": r["uniform_loss"],
        "measure_s": rep.timings["measure"],
        "forward_passes": rep.forward_passes,
    }


def hawq_rows(task) -> dict:
    meas, points = mpqcore.sweep(task.model, task.calibration, "hawq", BITS, [mpqcore.Budget.average_bits(b) for b in BUDGETS], metric=task.metric)
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    return {
        str(b): {"allocation": dict(p.allocation.bits), "average_bits": p.allocation.average_bits(params), "accuracy": p.results["metric"],
                 "loss": p.results["loss"], "measure_s": meas.timings["measure"]}
        for b, p in zip(BUDGETS, points)
    }  # fmt: skip


def main() -> None:
    torch.set_num_threads(2)
    task = mpqcore.load_task("digits-cnn")
    out: dict = {"task": task.description, "bits": BITS, "threads": 2, "machine": platform.processor() or platform.machine(), "runs": {}}
    entropy = None
    for name, options in VARIANTS.items():
        out["runs"][name] = {}
        for avg in BUDGETS:
            rep = mpqcore.search(task.model, task.calibration, "eagl", BITS, mpqcore.Budget.average_bits(avg), metric=task.metric, method_options=options)
            out["runs"][name][str(avg)] = row(rep)
            entropy = rep.objective_info["entropy"]
    out["runs"]["hawq"] = hawq_rows(task)
    out["entropy"] = entropy
    out["params"] = {layer.fqn: layer.params for layer in mpqcore.introspect(task.model, task.calibration[0]).layers}
    (HERE / "results.json").write_text(json.dumps(out, indent=1))
    (HERE / "results.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    lines = [f"Task: {out['task']}. Bits {list(out['bits'])}; torch threads: {out['threads']}.", ""]
    lines += ["| method | budget (avg bits) | allocation (conv1, conv2, conv3, fc1, fc2) | avg bits | accuracy | uniform accuracy (bits) | KL loss | measure (s) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    uniform = {b: (out["runs"][next(iter(VARIANTS))][str(b)]["uniform_accuracy"], out["runs"][next(iter(VARIANTS))][str(b)]["uniform_bits"]) for b in BUDGETS}
    for name, runs in out["runs"].items():
        for b in BUDGETS:
            r = runs[str(b)]
            alloc = ", ".join(str(v) for v in r["allocation"].values())
            ua, ub = uniform[b]
            lines.append(f"| {name} | {b} | {alloc} | {r['average_bits']:.3f} | {r['accuracy']:.4f} | {ua:.4f} ({ub}) | {r['loss']:.4f} | {r['measure_s']:.2f} |")
    lines += ["", "Code entropy H_b (bits) per layer:", "", "| layer | params | " + " | ".join(f"b={b}" for b in out["bits"]) + " |",
              "|---|---|" + "---|" * len(out["bits"])]  # fmt: skip
    for fqn, row_ in out["entropy"].items():
        lines.append(f"| {fqn} | {out['params'][fqn]} | " + " | ".join(f"{row_[str(b)] if str(b) in row_ else row_[b]:.3f}" for b in out["bits"]) + " |")
    lines += ["", "Entropy lost per weight relative to 8 bits, H_8 - H_b (the `per-weight` objective; `params` multiplies by the layer's parameter count):", "",
              "| layer | " + " | ".join(f"b={b}" for b in out["bits"]) + " |", "|---|" + "---|" * len(out["bits"])]  # fmt: skip
    for fqn, row_ in out["entropy"].items():
        vals = {int(k): v for k, v in row_.items()}
        lines.append(f"| {fqn} | " + " | ".join(f"{vals[max(out['bits'])] - vals[b]:.3f}" for b in out["bits"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
