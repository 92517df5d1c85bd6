"""The report of a search, and its writers: JSON, CSV and matplotlib plots."""

from __future__ import annotations

import csv
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mpqcore.files import atomic_files, check_output_dir, write_json
from mpqcore.frozen import freeze
from mpqcore.guard_plot import plot_verification, wants_verification_plot
from mpqcore.layer_table import cost_units, layer_rows, objective_meaning
from mpqcore.metrics import direction_words
from mpqcore.problem import problem_to_dict
from mpqcore.types import Allocation, Budget, Coverage, ModelSpec, Problem
from mpqcore.units import cost_label, human, quantity

__all__ = ["BIAS_CORRECTION_FILE", "Report", "plot_bits_per_layer", "plot_pareto", "versions", "write_sweep"]

#: Beside report.json when the report's model is bias-corrected: the mean inputs (safetensors).
BIAS_CORRECTION_FILE = "bias_correction.safetensors"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("mpqcore", "torch", "highspy", "numpy", "pluggy", "attrs"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: numpy to Python, non-finite floats to ``None``."""
    if isinstance(value, Mapping):  # dicts and the frozen mappings of the value classes
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):  # a frozen set: its items in a stable order
        try:
            return [jsonable(v) for v in sorted(value)]
        except TypeError:
            return [jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


@attrs.frozen(eq=False)
class Report:
    """Everything a search found and measured.

    ``results`` holds ``loss`` (calibration divergence of the mixed model),
    ``predicted`` (the objective of the allocation), ``metric``/``float_metric`` when a
    metric was given, and ``uniform_bits`` with its ``uniform_metric``/``uniform_loss``:
    uniform precision at the highest bit-width that meets the budget. ``timings`` are
    wall seconds per phase. Its mappings are read-only (:func:`mpqcore.frozen.freeze`).
    """

    allocation: Allocation
    spec: ModelSpec
    problem: Problem
    budgets: tuple[Budget, ...]
    method: str
    method_options: Mapping[str, Any] = attrs.field(converter=freeze)
    solver: str
    quantizer: str
    cost: str
    results: Mapping[str, Any] = attrs.field(converter=freeze)
    objective_info: Mapping[str, Any] = attrs.field(converter=freeze)
    forward_passes: int
    evaluations: int
    timings: Mapping[str, float] = attrs.field(converter=freeze)
    seed: int
    versions: Mapping[str, str] = attrs.field(converter=freeze)
    model: Any = None
    #: Forward passes of the method's measurement alone (``forward_passes`` is the total).
    measure_forward_passes: int = 0
    #: The input means that corrected the biases (:class:`mpqcore.BiasCorrection`), ``None`` when off;
    #: ``mpqcore.apply(..., bias_correction=report.bias_correction)`` reproduces ``model``.
    bias_correction: Any = None
    #: The quantizer's options, and ``{layer: activation bits}`` of the layers whose inputs
    #: were quantized (empty: weights only); :func:`mpqcore.export` reads both.
    quantizer_options: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze)
    act_bits: Mapping[str, int] = attrs.field(factory=dict, converter=freeze)
    #: The measurement cache: ``directory``, ``hits`` (values read back), ``stored``,
    #: ``objective_from_cache``; empty without a cache.
    cache: Mapping[str, Any] = attrs.field(factory=dict, converter=freeze)
    #: Each cost model's unit (``size``: bits, ``bops``: BOPs, a latency table: its own).
    cost_units: Mapping[str, str] = attrs.field(factory=dict, converter=freeze)

    @property
    def units(self) -> dict[str, str]:
        """The unit of every tabled cost (declared by its model, else the built-in one)."""
        return cost_units(self.problem.costs, self.cost_units)

    def budget_text(self, budget: Budget) -> str:
        """A budget in words, an absolute limit at human scale in its cost's unit."""
        if budget.kind == "absolute":
            return f"{budget.cost} <= {budget.describe_limit(self.units.get(budget.cost) or None)}"
        return budget.describe()

    def layer_rows(self) -> list[dict[str, Any]]:
        """The per-layer table (:func:`mpqcore.layer_table.layer_rows`)."""
        return layer_rows(self.spec, self.problem, self.allocation)

    @property
    def average_bits(self) -> float:
        """The parameter-weighted average bits over the quantized layers (see :attr:`coverage` for all weights)."""
        return self.allocation.average_bits({layer.fqn: layer.params for layer in self.spec.layers})

    @property
    def coverage(self) -> Coverage:
        """The share of the model's weight parameters quantized, average bits over all of them, what stays float and why."""
        return self.spec.coverage(self.allocation.bits)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict of the whole report (the model excluded)."""
        return jsonable(
            {
                "allocation": dict(self.allocation.bits),
                "average_bits": self.average_bits,
                "coverage": self.coverage.to_dict(),
                "costs": dict(self.allocation.costs),
                "cost_units": self.units,
                "costs_human": {k: quantity(v, self.units.get(k, "")) for k, v in self.allocation.costs.items()},
                "budgets": [self._budget_json(b) for b in self.budgets],
                "limits": dict(self.problem.budgets),
                "limits_human": {k: quantity(v, self.units.get(k, "")) for k, v in self.problem.budgets.items()},
                "objective": self.allocation.objective,
                "objective_meaning": objective_meaning(self.method, self.objective_info),
                "solver": {
                    "name": self.solver,
                    "status": self.allocation.status,
                    "gap": self.allocation.gap,
                    "bound": self.allocation.bound,
                    "solve_time": self.allocation.solve_time,
                },
                "method": {"name": self.method, "options": self.method_options, "info": self.objective_info},
                "quantizer": self.quantizer,
                "bias_correction": None if self.bias_correction is None else self.bias_correction.summary(),
                "quantizer_options": self.quantizer_options,
                "act_bits": self.act_bits,
                "cost": self.cost,
                "results": self.results,
                "forward_passes": self.forward_passes,
                "measure_forward_passes": self.measure_forward_passes,
                "evaluations": self.evaluations,
                "cache": self.cache,
                "timings": self.timings,
                "seed": self.seed,
                "versions": self.versions,
                "layers": self.layer_rows(),
            }
        )

    def _budget_json(self, budget: Budget) -> dict[str, Any]:
        out = dict(budget.to_dict(), description=self.budget_text(budget), unit=self.units.get(budget.cost, ""))
        if budget.cost in self.problem.budgets:  # the limit it resolved to (the tightest of its cost's budgets)
            out["limit"] = quantity(self.problem.budgets[budget.cost], self.units.get(budget.cost, ""))
        return out

    def write(self, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write report.json, allocation.csv, problem.json, report.html and (optionally) bits.png and verify.png
        (the guard's and refinement's predicted against measured losses); with bias correction also
        bias_correction.safetensors (the mean inputs, for ``mpq export --report``)."""
        from mpqcore.html_report import write_html

        out = check_output_dir(out_dir, what="report folder")
        out.mkdir(parents=True, exist_ok=True)
        paths = {"report": out / "report.json", "allocation": out / "allocation.csv", "problem": out / "problem.json"}
        if plots:
            paths["plot"] = out / "bits.png"
        paths["html"] = out / "report.html"
        # as one set of atomic writes (mpqcore.files): an interrupted or concurrent write never
        # leaves half a file, nor a new CSV beside an old JSON
        with atomic_files() as stage:
            write_json(stage(paths["report"]), self.to_json())
            write_json(stage(paths["problem"]), problem_to_dict(self.problem))
            with open(stage(paths["allocation"]), "w", newline="", encoding="utf-8") as fh:
                self._write_csv(fh)
            images = {}
            if plots:
                images["bits per layer"] = plot_bits_per_layer(self, stage(paths["plot"]))
            if "measured-latency" in self.problem.costs:  # the table it measured, readable by the latency cost
                paths["latency"] = out / "latency.csv"
                write_latency_csv(self.problem, "measured-latency", stage(paths["latency"]))
            if plots and wants_verification_plot(self.results):
                paths["verify_plot"] = out / "verify.png"
                images["predicted against measured, per candidate"] = plot_verification(
                    self.results, stage(paths["verify_plot"])
                )
            if self.bias_correction is not None:  # what `mpq export --report` needs to rebuild the biases
                paths["bias_correction"] = out / BIAS_CORRECTION_FILE
                self.bias_correction.save(stage(paths["bias_correction"]))
            write_html(self, stage(paths["html"]), images=images)
        if self.bias_correction is None:  # a file from an earlier corrected run in this folder is not this one's
            (out / BIAS_CORRECTION_FILE).unlink(missing_ok=True)
        return paths

    def _write_csv(self, fh: Any) -> None:
        """allocation.csv: a row per layer; a cost's column names its unit, ``c@Nbit`` the method's sensitivity."""
        units = self.units
        rows = self.layer_rows()
        widths = [int(b) for b in self.problem.bits]
        writer = csv.writer(fh)
        writer.writerow(
            ["layer", "kind", "params", "macs", "bits"]
            + [f"{name} ({units[name]})" if units[name] else name for name in units]
            + [f"c@{b}bit" for b in widths]
            + ["predicted", "predicted_share"]
        )
        for row in rows:
            writer.writerow(
                [row["fqn"], row["kind"], row["params"], row["macs"], row["bits"]]
                + [row["costs"].get(name, "") for name in units]
                + [row["sensitivity"].get(str(b), "") for b in widths]
                + [row["predicted"], "" if row["predicted_share"] is None else row["predicted_share"]]
            )


def write_latency_csv(problem: Problem, cost: str, path: str | Path) -> Path:
    """``problem``'s ``cost`` table as ``layer,bits,latency`` rows (what the ``latency`` cost model reads)."""
    table = problem.costs[cost]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["layer", "bits", "latency"])
        for i, fqn in enumerate(problem.layers):
            for j, b in enumerate(problem.bits):
                writer.writerow([fqn, b, repr(float(table[i, j]))])
    return Path(path)


def plot_bits_per_layer(report: Report, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [layer.fqn for layer in report.spec.layers]
    bits = [report.allocation.bits[n] for n in names]
    params = np.array([layer.params for layer in report.spec.layers], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4))
    # colour on a log scale: parameter counts span orders of magnitude
    norm = matplotlib.colors.LogNorm(vmin=max(params.min(), 1), vmax=max(params.max(), 2))
    bars = ax.bar(range(len(names)), bits, color=plt.cm.viridis(norm(params)))
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="parameters")
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("weight bits")
    ax.set_title(_bits_title(report, width_inches=fig.get_figwidth()), fontsize=9)
    ax.set_yticks(sorted(set(report.problem.bits)))
    for bar, b in zip(bars, bits, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, b + 0.05, str(b), ha="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _bits_title(report: Report, *, width_inches: float) -> str:
    """The bits plot's title, wrapped to the figure's width (a long budget list is never clipped)."""
    import textwrap

    cov = report.coverage
    units = report.units
    budgets = ", ".join(report.budget_text(b) for b in report.budgets) or "no budget"
    costs = ", ".join(
        f"{cost_label(k, units.get(k, ''))} {human(v, units.get(k, ''))}" for k, v in report.allocation.costs.items()
    )
    lines = [
        f"{report.method}: {report.average_bits:.2f} average bits; {costs}",
        f"budget: {budgets}",
        f"{100 * cov.share:.1f}% of weight parameters quantized; {cov.average_bits_all:.2f} bits over all weights",
    ]
    chars = max(40, int(width_inches * 13))  # about 13 characters an inch at 9 pt
    return "\n".join(textwrap.fill(line, chars) for line in lines)


def plot_pareto(
    rows: Sequence[dict], path: str | Path, *, x: str = "average_bits", y: str = "metric", label: str = "method"
) -> Path:
    """Metric against cost, one line per ``label`` value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r[label] for r in rows}):
        pts = sorted((r[x], r[y]) for r in rows if r[label] == name and r.get(y) is not None)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xlabel(x.replace("_", " "))
    direction = _direction(rows, y)
    ax.set_ylabel(y.replace("_", " ") + (f" ({direction})" if direction else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _direction(rows: Sequence[dict], y: str) -> str:
    """Which way ``y`` is better, in words: a loss is lower-is-better, a metric as its rows say; else ``""``."""
    if y == "loss":
        return "lower is better"
    flags = {r.get("metric_higher_is_better") for r in rows} - {None}
    if y != "metric" or len(flags) != 1:
        return ""
    return direction_words(bool(flags.pop()))


def write_sweep(
    rows: Sequence[dict], out_dir: str | Path, *, plots: bool = True, table: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """pareto.csv and pareto.json (a row per budget); given the ``table`` of
    :func:`mpqcore.sweep_report.sweep_table`, also sweep.json (rows, float and uniform
    references, the metric's name and direction) and a plot per cost axis, pareto_COST.png."""
    out = check_output_dir(out_dir, what="sweep folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "pareto.csv", "json": out / "pareto.json"}
    if table is not None:
        return _write_sweep_table(table, out, paths, plots=plots)
    keys = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], dict)))
    with atomic_files() as stage:  # all or nothing, as in Report.write
        with open(stage(paths["csv"]), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        write_json(stage(paths["json"]), jsonable(list(rows)))
        if plots:
            y = "metric" if any(r.get("metric") is not None for r in rows) else "loss"
            paths["plot"] = out / "pareto.png"
            plot_pareto(rows, stage(paths["plot"]), y=y)
    return paths


def _write_sweep_table(table: Mapping[str, Any], out: Path, paths: dict[str, Path], *, plots: bool) -> dict[str, Path]:
    from mpqcore.sweep_plot import plot_cost_axis

    rows = list(table["rows"])
    paths["sweep"] = out / "sweep.json"
    keys = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], dict)))
    with atomic_files() as stage:  # all or nothing, as in Report.write
        with open(stage(paths["csv"]), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        write_json(stage(paths["json"]), jsonable(rows))
        write_json(stage(paths["sweep"]), jsonable(dict(table)))
        if plots:
            for cost in table["units"]:
                paths[f"plot {cost}"] = out / f"pareto_{cost}.png"
                plot_cost_axis(table, cost, stage(paths[f"plot {cost}"]))
    return paths
