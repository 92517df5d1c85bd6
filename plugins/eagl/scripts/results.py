"""Measure EAGL on digits-cnn; writes results.json and results.md next to this file.

    python plugins/eagl/scripts/results.py            # measure (a minute)
    python plugins/eagl/scripts/results.py --render   # the tables again, from results.json

The comparison is :data:`mpqcore.result_tables.DIGITS_CNN`: both scalings of EAGL
against uniform precision and hawq, at 3.0 and 4.0 average bits.
"""

from __future__ import annotations

import platform
from pathlib import Path

import mpqcore
from mpqcore.result_tables import DIGITS_CNN, bits_table, layer_params, markdown_blocks, results_main

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "eagl (scale=params, default)": {"method_options": {"scale": "params"}},
    "eagl (scale=per-weight)": {"method_options": {"scale": "per-weight"}},
}


def measure() -> dict:
    task = DIGITS_CNN.load()
    reports = DIGITS_CNN.search_variants(task, "eagl", VARIANTS)
    runs = DIGITS_CNN.rows(reports, "uniform_loss", "measure_s", "forward_passes")
    last = reports[list(VARIANTS)[-1]][str(DIGITS_CNN.budgets[-1])]
    return {
        **DIGITS_CNN.header(task),
        "machine": platform.processor() or platform.machine(),
        "runs": {**runs, "hawq": DIGITS_CNN.reference_rows(task)},
        "entropy": last.objective_info["entropy"],  # the same for every variant: scaling comes after
        "params": layer_params(mpqcore.introspect(task.model, task.calibration[0])),
    }


def markdown(out: dict) -> str:
    bits, top = out["bits"], max(out["bits"])
    return markdown_blocks(
        DIGITS_CNN.intro(out),
        DIGITS_CNN.table(out["runs"]),
        ["Code entropy H_b (bits) per layer:"],
        bits_table(out["entropy"], bits, lambda h, b: f"{h[b]:.3f}", columns={"params": out["params"]}),
        ["Entropy lost per weight relative to 8 bits, H_8 - H_b (the `per-weight` objective; `params` multiplies by the layer's parameter count):"],
        bits_table(out["entropy"], bits, lambda h, b: f"{h[top] - h[b]:.3f}"),
    )  # fmt: skip


if __name__ == "__main__":
    results_main(HERE, measure, markdown, doc=__doc__)
