"""Measure MixQuant on digits-cnn; writes results.json and results.md next to this file.

    python plugins/mixquant/scripts/results.py            # measure (a minute)
    python plugins/mixquant/scripts/results.py --render   # the tables again, from results.json

The comparison is :data:`mpqcore.result_tables.DIGITS_CNN`: MixQuant's error with the
knapsack and with its own QEM rule, against uniform precision and hawq, at 3.0 and 4.0
average bits. Also: the paper's rule at fixed QEMs (no budget), on one measurement.
"""

from __future__ import annotations

from pathlib import Path

import mpqcore
from mpqcore.result_tables import DIGITS_CNN, bits_table, layer_params, markdown_blocks, markdown_table, results_main
from mpqcore_mixquant import QEMSolver

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "mixquant + highs (scale=params, default)": {"method_options": {"scale": "params"}, "solver": "highs"},
    "mixquant + highs (scale=per-weight)": {"method_options": {"scale": "per-weight"}, "solver": "highs"},
    "mixquant + mixquant-qem (smallest QEM in budget)": {"solver": "mixquant-qem"},
}
QEMS = (1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0)


def rule_rows(task) -> tuple[list[dict], dict]:
    """The rule at each of QEMS (no budget) on one measurement, and the measured errors."""
    meas = mpqcore.measure(task.model, task.calibration, method="mixquant", bits=DIGITS_CNN.bits, metric=task.metric)
    params = layer_params(meas.spec)
    rows = []
    for qem in QEMS:
        a = QEMSolver(qem=qem).solve(meas.problem)
        rows.append(
            {
                "qem": qem,
                "allocation": dict(a.bits),
                "average_bits": a.average_bits(params),
                "accuracy": meas.evaluator.metric(a.bits),
            }
        )
    return rows, meas.objective.info["mse"]


def measure() -> dict:
    task = DIGITS_CNN.load()
    reports = DIGITS_CNN.search_variants(task, "mixquant", VARIANTS)
    runs = DIGITS_CNN.rows(reports, "measure_s", "solve_s", qem=lambda rep: rep.allocation.info.get("qem"))
    rule, mse = rule_rows(task)
    return {
        **DIGITS_CNN.header(task),
        "runs": {**runs, "hawq": DIGITS_CNN.reference_rows(task)},
        "rule": rule,
        "mse": mse,
    }


def _with_qem(name: str, row: dict) -> str:
    return f"{name} (QEM {row['qem']:.1f})" if row.get("qem") else name


def markdown(out: dict) -> str:
    rule = out["rule"]
    layers = ", ".join(rule[0]["allocation"])
    return markdown_blocks(
        DIGITS_CNN.intro(out),
        DIGITS_CNN.table(out["runs"], method_column="method + solver", label=_with_qem),
        ["The paper's rule at fixed QEMs (reference 8 bits, no budget):"],
        markdown_table(["QEM", f"allocation ({layers})", "avg bits", "accuracy"],
                       ([f"{r['qem']:g}", ", ".join(map(str, r["allocation"].values())), f"{r['average_bits']:.3f}", f"{r['accuracy']:.4f}"] for r in rule)),
        ["QE_b (MSE) per layer and its ratio to QE_8:"],
        bits_table(out["mse"], out["bits"], lambda row, b: f"{row[b]:.3g} (x{row[b] / row[8]:.0f})"),
    )  # fmt: skip


if __name__ == "__main__":
    results_main(HERE, measure, markdown, doc=__doc__)
