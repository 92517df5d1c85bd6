"""report.html: the whole report as one self-contained page (plots inlined as base64 PNG).

It is written beside report.json by :meth:`mpqcore.Report.write` and opens in any
browser with no network and no other file: the summary against float and uniform
precision, the budgets, the per-layer table (costs, sensitivity, share of the predicted
loss), the plots, the coverage, the timings and the predicted-against-measured check.
Result keys this page does not know (added by newer code or a plugin) are listed
generically at the end, so nothing measured is hidden.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpqcore.metrics import direction_words
from mpqcore.units import cost_label, human

if TYPE_CHECKING:
    from mpqcore.report import Report

__all__ = ["html_page", "image_tag", "table", "write_html"]

#: Result keys the summary and the check already show.
_KNOWN_RESULTS = {
    "loss",
    "predicted",
    "metric",
    "float_metric",
    "metric_higher_is_better",
    "uniform_bits",
    "uniform_costs",
    "uniform_loss",
    "uniform_metric",
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:.9em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.bad{color:#b00}.good{color:#070}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return html.escape(text)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, cls: str = "") -> str:
    """An HTML table (every cell escaped)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image_tag(path: str | Path, alt: str) -> str:
    """``<img>`` with the PNG at ``path`` inlined as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_page(title: str, sections: Sequence[tuple[str, str]], *, intro: str = "") -> str:
    """A complete page: ``sections`` are (heading, HTML body)."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{intro}\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _summary(report: Report) -> str:
    r = report.results
    units = report.units
    names = list(units)
    higher = r.get("metric_higher_is_better", True)
    header = ["model", "average bits", *(f"{cost_label(n, units[n])}" for n in names), "metric", "loss"]
    rows: list[list[Any]] = []
    if "float_metric" in r:
        rows.append(["float", 32, *("-" for _ in names), r["float_metric"], 0.0])
    rows.append(
        [
            f"mixed precision ({report.method})",
            round(report.average_bits, 3),
            *(human(report.allocation.costs.get(n), units[n]) for n in names),
            r.get("metric"),
            r.get("loss"),
        ]
    )
    if "uniform_bits" in r:
        ucosts = r.get("uniform_costs", {})
        total = sum(layer.params for layer in report.spec.layers)
        avg = ucosts["size"] / total if "size" in ucosts else None
        rows.append(
            [
                f"uniform {r['uniform_bits']}-bit",
                None if avg is None else round(avg, 3),
                *(human(ucosts.get(n), units[n]) for n in names),
                r.get("uniform_metric"),
                r.get("uniform_loss"),
            ]
        )
    note = (
        f'<p class="note">metric: {html.escape(direction_words(bool(higher)))}; loss (calibration divergence from '
        "the float model): lower is better.</p>"
    )
    return table(header, rows, cls="summary") + note


def _budgets(report: Report) -> str:
    rows = []
    for b in report.budgets:
        unit = report.units.get(b.cost, "")
        limit = report.problem.budgets.get(b.cost)
        used = report.allocation.costs.get(b.cost)
        rows.append([report.budget_text(b), human(limit, unit), human(used, unit)])
    if not rows:
        return '<p class="note">no budget (the solver used its own rule)</p>'
    return table(["budget", "limit", "used"], rows, cls="budgets")


def _layers(report: Report) -> str:
    units = report.units
    widths = [int(b) for b in report.problem.bits]
    header = ["layer", "kind", "params", "MACs", "bits", *(cost_label(n, units[n]) for n in units)]
    header += [f"c@{b}" for b in widths] + ["predicted", "share"]
    rows = []
    for row in report.layer_rows():
        share = row["predicted_share"]
        rows.append(
            [row["fqn"], row["kind"], row["params"], row["macs"], row["bits"]]
            + [human(row["costs"].get(n), units[n]) for n in units]
            + [row["sensitivity"].get(str(b)) for b in widths]
            + [row["predicted"], "-" if share is None else f"{100 * share:.1f}%"]
        )
    from mpqcore.layer_table import objective_meaning

    note = (
        f'<p class="note">c@b: the method\'s objective for the layer at b bits, '
        f"{html.escape(objective_meaning(report.method, report.objective_info))}. "
        "share: the layer's part of the predicted loss of the allocation.</p>"
    )
    return table(header, rows, cls="layers") + note


def _check(report: Report) -> str:
    """Predicted (the objective) against measured (the calibration loss) for each measured candidate."""
    r = report.results
    objective = report.problem.objective
    rows: list[list[Any]] = [[f"mixed precision ({report.method})", r.get("predicted"), r.get("loss"), r.get("metric")]]
    if "uniform_bits" in r:
        assign = {f: report.problem.pins.get(f, r["uniform_bits"]) for f in objective.layers}
        rows.append(
            [
                f"uniform {r['uniform_bits']}-bit",
                objective.value(assign),
                r.get("uniform_loss"),
                r.get("uniform_metric"),
            ]
        )
    verdict = ""
    if len(rows) == 2 and None not in (rows[0][1], rows[1][1], rows[0][2], rows[1][2]):
        agree = (rows[0][1] <= rows[1][1]) == (rows[0][2] <= rows[1][2])
        verdict = (
            '<p class="good">the objective ranks the two as the measured loss does</p>'
            if agree
            else '<p class="bad">the objective ranks the two opposite to the measured loss: its prediction is off</p>'
        )
    return table(["candidate", "predicted (objective)", "measured loss", "metric"], rows, cls="check") + verdict


def _coverage(report: Report) -> str:
    cov = report.coverage
    rows = [[w.name, w.params, w.detail or w.reason] for w in cov.float_weights]
    body = f"<p>{html.escape(cov.line())}</p>"
    if rows:
        body += table(["weight left float", "parameters", "why"], rows, cls="coverage")
    return body


def _timings(report: Report) -> str:
    rows: list[list[Any]] = [[k, f"{v:.2f} s"] for k, v in report.timings.items()]
    rows.append(["forward passes", report.forward_passes])
    rows.append(["... by the method", report.measure_forward_passes])
    rows.append(["evaluations", report.evaluations])
    return table(["phase", "wall time"], rows, cls="timings")


def _plain(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: read-only mappings, numpy values, anything else as its repr."""
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def _other_results(results: Mapping[str, Any]) -> str:
    extra = {k: v for k, v in results.items() if k not in _KNOWN_RESULTS}
    if not extra:
        return ""
    rows = []
    for key, value in extra.items():
        text = json.dumps(value, default=_plain)
        rows.append([key, text if len(text) <= 400 else text[:400] + " ..."])
    return table(["result", "value"], rows, cls="other")


def write_html(report: Report, path: str | Path, *, images: Mapping[str, str | Path] | None = None) -> Path:
    """Write ``report`` as one self-contained HTML page at ``path``; ``images`` are inlined PNGs by caption."""
    solver = report.allocation
    intro = (
        f"<p>method <b>{html.escape(report.method)}</b>, solver {html.escape(report.solver)} "
        f"({html.escape(str(solver.status))}, gap {solver.gap:.2g}), quantizer {html.escape(report.quantizer)}, "
        f"candidate widths {', '.join(str(b) for b in report.problem.bits)}, seed {report.seed}</p>"
    )
    sections = [
        ("Result", _summary(report)),
        ("Budgets", _budgets(report)),
        ("Predicted against measured", _check(report)),
        ("Layers", _layers(report)),
    ]
    for caption, image in (images or {}).items():
        sections.append((caption.capitalize(), image_tag(image, caption)))
    sections += [("Coverage", _coverage(report)), ("Timings", _timings(report))]
    other = _other_results(report.results)
    if other:
        sections.append(("Other results", other))
    page = html_page(f"mpq report: {report.method}", sections, intro=intro)
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)
