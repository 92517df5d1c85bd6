"""One cost axis of a sweep as a plot: cost at human scale against the task's metric (or the loss).

Mixed-precision points on the non-dominated front filled, dominated ones hollow, uniform
precision at every candidate width beside them, the front as a step line and float as
a dotted line; the metric's own name and direction on the y axis. Reads the table of
:func:`mpqcore.sweep_report.sweep_table`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpqcore.metrics import direction_words
from mpqcore.units import axis_scale, cost_label

__all__ = ["plot_cost_axis", "quality_of"]


def quality_of(point: Mapping[str, Any], quality: Mapping[str, Any]) -> float | None:
    value = point.get(quality["key"])
    return None if value is None or not math.isfinite(float(value)) else float(value)


def plot_cost_axis(table: Mapping[str, Any], cost: str, path: str | Path, *, title: str = "") -> Path:
    """One cost axis of a sweep: mixed-precision points (front filled), uniform points, the float line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, unit = f"cost_{cost}", table["units"].get(cost, "")
    quality = table["quality"]

    def _y(point: Mapping[str, Any]) -> float:
        return float(quality_of(point, quality) or 0.0)  # only called on points with a quality

    rows = [r for r in table["rows"] if r.get("status") != "infeasible" and quality_of(r, quality) is not None]
    uniform = [u for u in table["uniform"] if quality_of(u, quality) is not None]
    scale, unit_label = axis_scale([r[key] for r in rows + uniform], unit)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = sorted(rows, key=lambda r: r[key])
    if pts:
        ax.plot([r[key] / scale for r in pts], [_y(r) for r in pts], color="C0", alpha=0.35, lw=1)
    front = [r for r in pts if r.get(f"on_front_{cost}")]
    dominated = [r for r in pts if not r.get(f"on_front_{cost}")]
    method = rows[0]["method"] if rows else "mixed"
    ax.scatter([r[key] / scale for r in front], [_y(r) for r in front], color="C0", s=46, zorder=3,
               label=f"{method} (on the front)")  # fmt: skip
    if dominated:
        ax.scatter([r[key] / scale for r in dominated], [_y(r) for r in dominated], facecolors="none",
                   edgecolors="C0", s=46, zorder=3, label=f"{method} (dominated)")  # fmt: skip
    ax.plot([u[key] / scale for u in uniform], [_y(u) for u in uniform], "s--", color="C1", ms=6,
            label="uniform precision")  # fmt: skip
    for u in uniform:
        ax.annotate(f"{u['bits']}-bit", (u[key] / scale, _y(u)), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="C1")  # fmt: skip
    everything = sorted(
        [(r[key] / scale, _y(r)) for r in rows if r.get(f"on_front_{cost}")]
        + [(u[key] / scale, _y(u)) for u in uniform if u.get(f"on_front_{cost}")]
    )
    if len(everything) > 1:
        ax.step(*zip(*everything, strict=True), where="post", color="k", lw=0.8, alpha=0.6, label="non-dominated front")
    fq = quality_of(table["float"], quality)
    if fq is not None:
        ax.axhline(fq, color="grey", ls=":", lw=1.2, label=f"float: {fq:.4g}")
    ax.set_xlabel(f"{cost_label(cost, unit)} ({unit_label})" if unit_label else cost_label(cost, unit))
    direction = direction_words(bool(quality["higher_is_better"]))
    ax.set_ylabel(f"{quality['name']} ({direction})")
    if cost == "size" and table.get("params"):
        per = scale / float(table["params"])

        def to_bits(x: Any) -> Any:
            return x * per

        def to_size(a: Any) -> Any:
            return a / per

        top = ax.secondary_xaxis("top", functions=(to_bits, to_size))
        top.set_xlabel("average bits per weight", fontsize=8)
    ax.set_title(title or f"{method}: {quality['name']} against {cost_label(cost, unit)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
