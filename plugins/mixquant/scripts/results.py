"""Measure MixQuant on digits-cnn; writes results.json and results.md next to this file.

    python plugins/mixquant/scripts/results.py

Bits {2,3,4,5,6,8}, average-bits budgets 3.0 and 4.0, torch.set_num_threads(2).
Compared with uniform precision (the search report's uniform reference) and with
``hawq`` at the same budget (measured once, solved for both budgets). Also: the
paper's rule at fixed QEMs (no budget), on one measurement.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import mpqcore
from mpqcore_mixquant import QEMSolver

HERE = Path(__file__).resolve().parent
BITS = (2, 3, 4, 5, 6, 8)
BUDGETS = (3.0, 4.0)
VARIANTS = {
    "mixquant + highs (scale=params, default)": ({"scale": "params"}, "highs", {}),
    "mixquant + highs (scale=per-weight)": ({"scale": "per-weight"}, "highs", {}),
    "mixquant + mixquant-qem (smallest QEM in budget)": ({}, "mixquant-qem", {}),
}
QEMS = (1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0)


def row(rep) -> dict:
    r = rep.results
    return {
        "allocation": dict(rep.allocation.bits),
        "average_bits": rep.average_bits,
        "accuracy": r["metric"],
        "uniform_bits": r["uniform_bits"],
        "uniform_accuracy": r["uniform_metric"],
        "loss": r["loss"],
        "measure_s": rep.timings["measure"],
        "solve_s": rep.timings["solve"],
        "qem": rep.allocation.info.get("qem"),
    }


def hawq_rows(task) -> dict:
    meas, points = mpqcore.sweep(task.model, task.calibration, "hawq", BITS, [mpqcore.Budget.average_bits(b) for b in BUDGETS], metric=task.metric)
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    return {
        str(b): {"allocation": dict(p.allocation.bits), "average_bits": p.allocation.average_bits(params), "accuracy": p.results["metric"],
                 "loss": p.results["loss"], "measure_s": meas.timings["measure"]}
        for b, p in zip(BUDGETS, points)
    }  # fmt: skip


def rule_rows(task) -> list[dict]:
    meas = mpqcore.measure(task.model, task.calibration, "mixquant", BITS, metric=task.metric)
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    rows = []
    for qem in QEMS:
        a = QEMSolver(qem=qem).solve(meas.problem)
        rows.append({"qem": qem, "allocation": dict(a.bits), "average_bits": a.average_bits(params), "accuracy": meas.evaluator.metric(a.bits)})
    return rows, meas.objective.info["mse"]


def main() -> None:
    torch.set_num_threads(2)
    task = mpqcore.load_task("digits-cnn")
    out: dict = {"task": task.description, "bits": BITS, "threads": 2, "runs": {}}
    for name, (options, solver, solver_options) in VARIANTS.items():
        out["runs"][name] = {}
        for avg in BUDGETS:
            rep = mpqcore.search(task.model, task.calibration, "mixquant", BITS, mpqcore.Budget.average_bits(avg), metric=task.metric,
                                 method_options=options, solver=solver, solver_options=solver_options)  # fmt: skip
            out["runs"][name][str(avg)] = row(rep)
    out["runs"]["hawq"] = hawq_rows(task)
    out["rule"], out["mse"] = rule_rows(task)
    (HERE / "results.json").write_text(json.dumps(out, indent=1))
    (HERE / "results.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    first = next(iter(VARIANTS))
    lines = [f"Task: {out['task']}. Bits {list(out['bits'])}; torch threads: {out['threads']}.", ""]
    lines += ["| method + solver | budget (avg bits) | allocation (conv1, conv2, conv3, fc1, fc2) | avg bits | accuracy | uniform accuracy (bits) | KL loss | measure (s) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, runs in out["runs"].items():
        for b in BUDGETS:
            r, u = runs[str(b)], out["runs"][first][str(b)]
            alloc = ", ".join(str(v) for v in r["allocation"].values())
            extra = f" (QEM {r['qem']:.1f})" if r.get("qem") else ""
            lines.append(f"| {name}{extra} | {b} | {alloc} | {r['average_bits']:.3f} | {r['accuracy']:.4f} | {u['uniform_accuracy']:.4f} ({u['uniform_bits']}) | {r['loss']:.4f} | {r['measure_s']:.2f} |")
    lines += ["", "The paper's rule at fixed QEMs (reference 8 bits, no budget):", "",
              "| QEM | allocation (conv1, conv2, conv3, fc1, fc2) | avg bits | accuracy |", "|---|---|---|---|"]  # fmt: skip
    for r in out["rule"]:
        lines.append(f"| {r['qem']:g} | {', '.join(str(v) for v in r['allocation'].values())} | {r['average_bits']:.3f} | {r['accuracy']:.4f} |")
    lines += ["", "QE_b (MSE) per layer and its ratio to QE_8:", "",
              "| layer | " + " | ".join(f"b={b}" for b in out["bits"]) + " |", "|---|" + "---|" * len(out["bits"])]  # fmt: skip
    for fqn, row_ in out["mse"].items():
        ref = row_[8]
        lines.append(f"| {fqn} | " + " | ".join(f"{row_[b]:.3g} (x{row_[b] / ref:.0f})" for b in out["bits"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
