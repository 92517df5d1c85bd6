"""Result tables of method runs: the JSON and markdown that the plugins' ``scripts/results.py`` write.

A plugin's README shows measured numbers; its ``scripts/results.py`` measures them,
writes ``results.json`` (every number) and ``results.md`` (the tables), and can
re-render the tables from the JSON alone (``--render``). This module is what those
scripts share:

- :class:`BudgetComparison`: a method's variants against uniform precision and a
  reference method (``hawq``) at average-bits budgets, on one task (``DIGITS_CNN``);
- :func:`report_row`, :func:`allocation_row`, :func:`layer_params`: the numbers of one run;
- :func:`markdown_table`, :func:`bits_table`, :func:`markdown_blocks`: the tables;
- :func:`results_main`, :func:`write_results`, :func:`rerender`: the files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from mpqcore.errors import InfeasibleError
from mpqcore.plugins import get_plugins
from mpqcore.protocols import TaskLike
from mpqcore.report import Report
from mpqcore.search import Measurement, search, sweep
from mpqcore.types import Allocation, Budget, ModelSpec

__all__ = [
    "DIGITS_CNN",
    "REPORT_FIELDS",
    "BudgetComparison",
    "add_render_flag",
    "allocation_row",
    "bits_table",
    "int_keys",
    "layer_params",
    "markdown_blocks",
    "markdown_row",
    "markdown_table",
    "report_row",
    "rerender",
    "results_main",
    "write_results",
]

#: What :func:`report_row` can take from a search report, by the name it has in the row.
REPORT_FIELDS: Mapping[str, Callable[[Report], Any]] = {
    "allocation": lambda rep: dict(rep.allocation.bits),
    "average_bits": lambda rep: rep.average_bits,
    "accuracy": lambda rep: rep.results["metric"],
    "uniform_bits": lambda rep: rep.results["uniform_bits"],
    "uniform_accuracy": lambda rep: rep.results["uniform_metric"],
    "loss": lambda rep: rep.results["loss"],
    "uniform_loss": lambda rep: rep.results["uniform_loss"],
    "predicted": lambda rep: rep.results["predicted"],
    "measure_s": lambda rep: rep.timings["measure"],
    "solve_s": lambda rep: rep.timings["solve"],
    "forward_passes": lambda rep: rep.forward_passes,
    "evaluations": lambda rep: rep.evaluations,
}

#: The fields every row of a :class:`BudgetComparison` has, in this order.
_COMPARED = ("allocation", "average_bits", "accuracy", "uniform_bits", "uniform_accuracy", "loss")


def layer_params(spec: ModelSpec) -> dict[str, int]:
    """Each layer's parameter count, by fqn (what average bits are weighted by)."""
    return {layer.fqn: layer.params for layer in spec.layers}


def report_row(report: Report, *fields: str, **values: Any) -> dict[str, Any]:
    """The :data:`REPORT_FIELDS` named in ``fields`` (in that order), then ``values``."""
    unknown = [f for f in fields if f not in REPORT_FIELDS]
    if unknown:
        raise KeyError(f"unknown report fields {unknown}; known: {', '.join(REPORT_FIELDS)}")
    return {**{f: REPORT_FIELDS[f](report) for f in fields}, **values}


def allocation_row(measurement: Measurement, allocation: Allocation) -> dict[str, Any]:
    """An allocation scored by the measurement's evaluator: bits, average bits, accuracy, loss."""
    ev = measurement.evaluator
    return {
        "bits": dict(allocation.bits),
        "average_bits": allocation.average_bits(layer_params(measurement.spec)),
        "accuracy": ev.metric(allocation.bits),
        "loss": ev.loss(allocation.bits),
    }


# -- markdown -------------------------------------------------------------------------------------


def markdown_row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_table(header: Sequence[Any], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A markdown table's lines: the header, its rule, one line per row."""
    return [markdown_row(header), "|" + "---|" * len(header), *map(markdown_row, rows)]


def bits_table(
    table: Mapping[str, Mapping[int, Any]],
    bits: Sequence[int],
    cell: Callable[[Mapping[int, Any], int], str],
    *,
    columns: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """One row per layer of ``table`` (fqn -> {bits: value}), one ``b=...`` column per bit-width.

    ``cell(row, b)`` formats the layer's value at ``b``; ``columns`` (name -> fqn -> value)
    come between the layer and the bit-widths.
    """
    columns = columns or {}
    header = ["layer", *columns, *(f"b={b}" for b in bits)]
    rows = ([fqn, *(col[fqn] for col in columns.values()), *(cell(row, b) for b in bits)] for fqn, row in table.items())
    return markdown_table(header, rows)


def markdown_blocks(*blocks: Sequence[str]) -> str:
    """The blocks (each a list of lines) separated by blank lines, with a final newline."""
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


# -- one experiment: variants against uniform and a reference method ------------------------------


@attrs.frozen
class BudgetComparison:
    """A method's variants against uniform precision and ``reference`` at average-bits budgets.

    Each variant is searched once per budget (search keywords such as ``method_options``,
    ``solver``); the reference method is measured once and solved for every budget;
    uniform is the search report's own reference, the highest uniform bit-width that
    fits. Torch runs on ``threads`` threads.
    """

    task: str
    bits: tuple[int, ...]
    budgets: tuple[float, ...]
    threads: int = 2
    reference: str = "hawq"

    def load(self) -> TaskLike:
        torch.set_num_threads(self.threads)
        return get_plugins().tasks.create(self.task)

    def header(self, task: TaskLike) -> dict[str, Any]:
        """What every results.json of this comparison starts with."""
        return {"task": task.description, "bits": self.bits, "threads": self.threads}

    def search_variants(
        self, task: TaskLike, method: str, variants: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, dict[str, Report]]:
        """variant -> budget (as a string, a JSON key) -> its search report."""
        out: dict[str, dict[str, Report]] = {}
        for name, keywords in variants.items():
            out[name] = {
                str(avg): search(
                    task.model,
                    task.calibration,
                    method=method,
                    bits=self.bits,
                    budget=Budget.average_bits(avg),
                    metric=task.metric,
                    **keywords,
                )
                for avg in self.budgets
            }
        return out

    def rows(self, reports: Mapping[str, Mapping[str, Report]], *fields: str, **values: Callable[[Report], Any]):
        """Each report as :func:`report_row` of the compared fields, then ``fields``, then ``values``."""
        return {
            name: {
                b: report_row(rep, *_COMPARED, *fields, **{k: f(rep) for k, f in values.items()})
                for b, rep in by_budget.items()
            }
            for name, by_budget in reports.items()
        }

    def reference_rows(self, task: TaskLike) -> dict[str, dict[str, Any]]:
        """The reference method, measured once and solved for each budget."""
        budgets = [Budget.average_bits(b) for b in self.budgets]
        meas, points = sweep(
            task.model, task.calibration, method=self.reference, bits=self.bits, budgets=budgets, metric=task.metric
        )
        params = layer_params(meas.spec)
        rows: dict[str, dict[str, Any]] = {}
        for b, p in zip(self.budgets, points, strict=True):
            if p.allocation is None:
                raise InfeasibleError(f"the reference {self.reference!r} cannot meet {b} average bits: {p.error}")
            rows[str(b)] = {
                "allocation": dict(p.allocation.bits),
                "average_bits": p.allocation.average_bits(params),
                "accuracy": p.results["metric"],
                "loss": p.results["loss"],
                "measure_s": meas.timings["measure"],
            }
        return rows

    def intro(self, out: Mapping[str, Any]) -> list[str]:
        return [f"Task: {out['task']}. Bits {list(out['bits'])}; torch threads: {out['threads']}."]

    def table(
        self,
        runs: Mapping[str, Mapping[str, Mapping[str, Any]]],
        *,
        method_column: str = "method",
        label: Callable[[str, Mapping[str, Any]], str] | None = None,
    ) -> list[str]:
        """One row per run and budget; the uniform reference is the first run's."""
        first = next(iter(runs.values()))
        layers = ", ".join(first[str(self.budgets[0])]["allocation"])
        header = [method_column, "budget (avg bits)", f"allocation ({layers})", "avg bits", "accuracy"]
        header += ["uniform accuracy (bits)", "KL loss", "measure (s)"]
        rows = []
        for name, run in runs.items():
            for b in self.budgets:
                r, u = run[str(b)], first[str(b)]
                rows.append([
                    label(name, r) if label else name, b, ", ".join(str(v) for v in r["allocation"].values()),
                    f"{r['average_bits']:.3f}", f"{r['accuracy']:.4f}",
                    f"{u['uniform_accuracy']:.4f} ({u['uniform_bits']})", f"{r['loss']:.4f}", f"{r['measure_s']:.2f}",
                ])  # fmt: skip
        return markdown_table(header, rows)


#: digits-cnn, bits {2,3,4,5,6,8}, average-bits budgets 3.0 and 4.0, two torch threads, against hawq.
DIGITS_CNN = BudgetComparison(task="digits-cnn", bits=(2, 3, 4, 5, 6, 8), budgets=(3.0, 4.0))


# -- the files ------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.tolist() if getattr(value, "ndim", 0) else value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def int_keys(value: Any) -> Any:
    """JSON data with the keys that were integers (bit-widths, distances) integers again."""
    if isinstance(value, dict):
        return {
            (int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): int_keys(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [int_keys(v) for v in value]
    return value


def write_results(directory: str | Path, data: Mapping[str, Any], markdown: Callable[[Any], str]) -> str:
    """Write ``results.json`` (``data``) and ``results.md`` (``markdown(data)``); return the markdown."""
    out = Path(directory)
    (out / "results.json").write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    text = markdown(data)
    (out / "results.md").write_text(text)
    return text


def rerender(directory: str | Path, markdown: Callable[[Any], str], *, write: bool = True) -> str:
    """``markdown`` of the ``results.json`` in ``directory``, written to ``results.md`` unless ``write=False``."""
    out = Path(directory)
    text = markdown(int_keys(json.loads((out / "results.json").read_text())))
    if write:
        (out / "results.md").write_text(text)
    return text


def add_render_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--render", action="store_true", help="rewrite results.md from results.json; measure nothing")


def results_main(
    directory: str | Path, measure: Callable[[], Mapping[str, Any]], markdown: Callable[[Any], str], *, doc: str = ""
) -> None:
    """The command line of a results script: measure and write both files, or ``--render`` the tables only."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0] if doc.strip() else None)
    add_render_flag(parser)
    args = parser.parse_args()
    print(rerender(directory, markdown) if args.render else write_results(directory, measure(), markdown))
