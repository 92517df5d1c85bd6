"""Measure ALPS on digits-cnn; writes results.json and results.md next to this file.

    python plugins/alps/scripts/results.py            # measure (minutes)
    python plugins/alps/scripts/results.py --render   # the tables again, from results.json

The comparison is :data:`mpqcore.result_tables.DIGITS_CNN`: ALPS's variants against
uniform precision and hawq, at 3.0 and 4.0 average bits; then the default run's drops.
"""

from __future__ import annotations

from pathlib import Path

from mpqcore.result_tables import DIGITS_CNN, bits_table, markdown_blocks, results_main

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "alps (default: metric, loss tie-break)": {},
    "alps (tie_break=none)": {"tie_break": "none"},
    "alps (use_metric=False: KL loss)": {"use_metric": False},
    "alps (base_bits=4)": {"base_bits": 4},
    "alps (finetune_steps=20, lr=1e-4)": {"finetune_steps": 20, "lr": 1e-4},
}
#: What results.json keeps of each variant's objective info (its last budget's run).
DROPS = ("drop", "loss_increase", "tie_break_weight", "tie_break_lexicographic", "reference_score")


def measure() -> dict:
    task = DIGITS_CNN.load()
    reports = DIGITS_CNN.search_variants(task, "alps", {k: {"method_options": v} for k, v in VARIANTS.items()})
    runs = DIGITS_CNN.rows(reports, "predicted", "measure_s", "forward_passes", "evaluations")
    last = {name: by_budget[str(DIGITS_CNN.budgets[-1])].objective_info for name, by_budget in reports.items()}
    return {
        **DIGITS_CNN.header(task),
        "runs": {**runs, "hawq": DIGITS_CNN.reference_rows(task)},
        "drops": {name: {k: info[k] for k in DROPS if k in info} for name, info in last.items()},
    }


def markdown(out: dict) -> str:
    d = out["drops"][next(iter(VARIANTS))]
    return markdown_blocks(
        DIGITS_CNN.intro(out),
        DIGITS_CNN.table(out["runs"]),
        [f"Accuracy drop from the all-8-bit model (accuracy {d['reference_score']:.4f}) when one layer alone moves to b bits (default run):"],
        bits_table(d["drop"], out["bits"], lambda row, b: f"{row[b]:+.4f}"),
        [f"KL-loss increase for the same moves (the tie-break; weight {d['tie_break_weight']:.3g}, lexicographic: {d['tie_break_lexicographic']}):"],
        bits_table(d["loss_increase"], out["bits"], lambda row, b: f"{row[b]:.4f}"),
    )  # fmt: skip


if __name__ == "__main__":
    results_main(HERE, measure, markdown, doc=__doc__)
