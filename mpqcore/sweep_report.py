"""A sweep as a person reads it: a row per budget, its uniform baseline, and a Pareto plot per cost.

:func:`sweep_table` turns :func:`mpqcore.sweep`'s points into rows (one per budget)
and references (float, and uniform precision at every candidate width, measured on the
same evaluator); each row carries the uniform baseline for its budget (the highest
uniform width meeting it, as :func:`mpqcore.search` compares against) and, per cost
axis, whether it is on the non-dominated front of all the points plotted there.
:func:`plot_cost_axis` draws one axis: cost at human scale against the task's own
metric (or the loss), the front marked, uniform points and the float line beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mpqcore.layer_table import cost_units
from mpqcore.metrics import direction_words
from mpqcore.sweep_plot import quality_of as _quality
from mpqcore.units import cost_label, human

__all__ = ["SweepTable", "cli_lines", "non_dominated", "sweep_table"]


class SweepTable(dict):
    """``{"rows": [...], "uniform": [...], "float": {...}, "quality": {...}, "units": {...}, "params": N}``."""


def non_dominated(points: Sequence[tuple[float, float]], *, higher_is_better: bool) -> list[bool]:
    """Whether each ``(cost, quality)`` is on the front: no other point is as cheap and as good, one strictly."""
    sign = 1.0 if higher_is_better else -1.0
    flags = []
    for i, (c, q) in enumerate(points):
        dominated = any(
            j != i and c2 <= c and sign * q2 >= sign * q and (c2 < c or sign * q2 > sign * q)
            for j, (c2, q2) in enumerate(points)
        )
        flags.append(not dominated)
    return flags


def sweep_table(
    meas: Any, points: Sequence[Any], *, method: str, metric_name: str = "metric", higher_is_better: bool | None = None
) -> SweepTable:
    """The rows and references of a sweep (the uniform points are measured here, on ``meas``'s evaluator)."""
    from mpqcore.problem import allocation_costs
    from mpqcore.search import _uniform_reference

    ev = meas.evaluator
    problem = meas.problem
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    total = float(sum(params.values()))
    has_metric = ev.has_metric
    higher = ev.metric_higher_is_better if has_metric else False
    if higher_is_better is not None and has_metric:
        higher = bool(higher_is_better)
    quality: dict[str, Any] = {"key": "metric" if has_metric else "loss", "name": metric_name if has_metric else "loss"}
    quality["higher_is_better"] = higher if has_metric else False
    units = cost_units(problem.costs, {k: getattr(m, "unit", "") for k, m in meas.cost_models.items()})

    uniform = []
    for b in problem.bits:
        assign = {f: meas.pins.get(f, int(b)) for f in problem.layers}
        costs = allocation_costs(problem, assign)
        point = {"bits": int(b), "average_bits": costs["size"] / total, **{f"cost_{k}": v for k, v in costs.items()}}
        point["loss"] = ev.loss(assign)
        point["predicted"] = problem.objective.value(assign)
        if has_metric:
            point["metric"] = ev.metric(assign)
        uniform.append(point)
    by_bits = {p["bits"]: p for p in uniform}
    float_point: dict[str, Any] = {"average_bits": 32.0, "loss": 0.0}
    if has_metric:
        float_point["metric"] = ev.metric({})

    rows = []
    for p in points:
        row: dict[str, Any] = {"method": method, "budget": p.budget.describe(), "metric_name": quality["name"]}
        if p.allocation is None:
            rows.append(dict(row, status="infeasible", error=p.error))
            continue
        row.update(
            average_bits=p.allocation.average_bits(params),
            **{f"cost_{k}": v for k, v in p.allocation.costs.items()},
            predicted=p.results["predicted"],
            loss=p.results["loss"],
            metric=p.results.get("metric"),
            metric_higher_is_better=p.results.get("metric_higher_is_better"),
            status=p.allocation.status,
            gap=p.allocation.gap,
        )
        ub, _ = _uniform_reference(meas.with_budgets([p.budget]), problem.bits, meas.pins)
        base = by_bits[int(ub)]
        row["uniform_bits"] = int(ub)
        row["uniform_loss"] = base["loss"]
        if has_metric:
            row["uniform_metric"] = base["metric"]
        row["allocation"] = dict(p.allocation.bits)
        if isinstance(p.results.get("guard"), Mapping):  # which candidate the never-worse-than-uniform guard kept
            row["guard"] = p.results["guard"].get("chosen", "off")
        rows.append(row)

    for name in problem.costs:
        key = f"cost_{name}"
        plotted = [r for r in rows if r.get("status") != "infeasible"] + uniform
        pts = [(float(r[key]), _quality(r, quality)) for r in plotted]
        usable = [(i, c, q) for i, (c, q) in enumerate(pts) if q is not None]
        flags = non_dominated([(c, q) for _, c, q in usable], higher_is_better=bool(quality["higher_is_better"]))
        for (i, _, _), flag in zip(usable, flags, strict=True):
            plotted[i][f"on_front_{name}"] = flag
    return SweepTable(rows=rows, uniform=uniform, float=float_point, quality=quality, units=units, params=total)


def cli_lines(table: Mapping[str, Any]) -> list[str]:
    """The sweep table the CLI prints: each budget, its costs at human scale, quality, the uniform baseline."""
    units = table["units"]
    quality = table["quality"]
    name = quality["name"]
    costs = list(units)
    head = f"{'budget':<30} {'avg bits':>8} " + " ".join(f"{cost_label(c, units[c])[:14]:>14}" for c in costs)
    head += f" {'loss':>9} {name[:10]:>10} {'uniform':>8} {'uniform ' + name[:10]:>18}  front"
    lines = [head]
    for r in table["rows"]:
        if r.get("status") == "infeasible":
            lines.append(f"{r['budget']:<30} infeasible: {r['error']}")
            continue
        metric = "" if r.get("metric") is None else f"{r['metric']:.4f}"
        umetric = r.get("uniform_metric", r.get("uniform_loss"))
        on = [c for c in costs if r.get(f"on_front_{c}")]
        lines.append(
            f"{r['budget']:<30} {r['average_bits']:>8.3f} "
            + " ".join(f"{human(r[f'cost_{c}'], units[c]):>14}" for c in costs)
            + f" {r['loss']:>9.5f} {metric:>10} {str(r['uniform_bits']) + '-bit':>8} "
            + f"{'' if umetric is None else f'{umetric:.4f}':>18}  {', '.join(on) or '-'}"
        )
    if "metric" in table["float"]:
        lines.append(f"float: {name} {table['float']['metric']:.4f}")
    lines.append(
        f"({name}: {direction_words(bool(quality['higher_is_better']))}; loss: lower is better; "
        "front: the cost axes on which the point is not dominated by another point or uniform precision)"
    )
    return lines
