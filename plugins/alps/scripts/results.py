"""Measure ALPS on digits-cnn; writes results.json and results.md next to this file.

    python plugins/alps/scripts/results.py

Bits {2,3,4,5,6,8}, average-bits budgets 3.0 and 4.0, torch.set_num_threads(2).
Compared with uniform precision (the search report's uniform reference) and with
``hawq`` at the same budget (measured once, solved for both budgets).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import mpqcore

HERE = Path(__file__).resolve().parent
BITS = (2, 3, 4, 5, 6, 8)
BUDGETS = (3.0, 4.0)
VARIANTS = {
    "alps (default: metric, loss tie-break)": {},
    "alps (tie_break=none)": {"tie_break": "none"},
    "alps (use_metric=False: KL loss)": {"use_metric": False},
    "alps (base_bits=4)": {"base_bits": 4},
    "alps (finetune_steps=20, lr=1e-4)": {"finetune_steps": 20, "lr": 1e-4},
}


def row(rep) -> dict:
    r = rep.results
    return {
        "allocation": dict(rep.allocation.bits),
        "average_bits": rep.average_bits,
        "accuracy": r["metric"],
        "uniform_bits": r["uniform_bits"],
        "uniform_accuracy": r["uniform_metric"],
        "loss": r["loss"],
        "predicted": r["predicted"],
        "measure_s": rep.timings["measure"],
        "forward_passes": rep.forward_passes,
        "evaluations": rep.evaluations,
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
    out: dict = {"task": task.description, "bits": BITS, "threads": 2, "runs": {}, "drops": {}}
    for name, options in VARIANTS.items():
        out["runs"][name] = {}
        for avg in BUDGETS:
            rep = mpqcore.search(task.model, task.calibration, "alps", BITS, mpqcore.Budget.average_bits(avg), metric=task.metric, method_options=options)
            out["runs"][name][str(avg)] = row(rep)
        info = rep.objective_info
        out["drops"][name] = {k: info[k] for k in ("drop", "loss_increase", "tie_break_weight", "tie_break_lexicographic", "reference_score") if k in info}
    out["runs"]["hawq"] = hawq_rows(task)
    (HERE / "results.json").write_text(json.dumps(out, indent=1))
    (HERE / "results.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    first = next(iter(VARIANTS))
    lines = [f"Task: {out['task']}. Bits {list(out['bits'])}; torch threads: {out['threads']}.", ""]
    lines += ["| method | budget (avg bits) | allocation (conv1, conv2, conv3, fc1, fc2) | avg bits | accuracy | uniform accuracy (bits) | KL loss | measure (s) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, runs in out["runs"].items():
        for b in BUDGETS:
            r, u = runs[str(b)], out["runs"][first][str(b)]
            alloc = ", ".join(str(v) for v in r["allocation"].values())
            lines.append(f"| {name} | {b} | {alloc} | {r['average_bits']:.3f} | {r['accuracy']:.4f} | {u['uniform_accuracy']:.4f} ({u['uniform_bits']}) | {r['loss']:.4f} | {r['measure_s']:.2f} |")
    d = out["drops"][first]
    lines += ["", f"Accuracy drop from the all-8-bit model (accuracy {d['reference_score']:.4f}) when one layer alone moves to b bits (default run):", "",
              "| layer | " + " | ".join(f"b={b}" for b in out["bits"]) + " |", "|---|" + "---|" * len(out["bits"])]  # fmt: skip
    for fqn, row_ in d["drop"].items():
        lines.append(f"| {fqn} | " + " | ".join(f"{row_[b]:+.4f}" for b in out["bits"]) + " |")
    lines += ["", "KL-loss increase for the same moves (the tie-break; weight "
              f"{d['tie_break_weight']:.3g}, lexicographic: {d['tie_break_lexicographic']}):", "",
              "| layer | " + " | ".join(f"b={b}" for b in out["bits"]) + " |", "|---|" + "---|" * len(out["bits"])]  # fmt: skip
    for fqn, row_ in d["loss_increase"].items():
        lines.append(f"| {fqn} | " + " | ".join(f"{row_[b]:.4f}" for b in out["bits"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
