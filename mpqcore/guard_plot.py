"""The guard's and refinement's plot: what was predicted against what was measured."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plot_verification", "wants_verification_plot"]


def wants_verification_plot(results: Mapping[str, Any]) -> bool:
    """Whether a search's results have a guard or refinement record to plot."""
    guard = results.get("guard") or {}
    return bool(results.get("refine")) or bool(guard.get("enabled"))


def plot_verification(results: Mapping[str, Any], path: str | Path) -> Path:
    """Left: refinement's predicted and measured loss per round. Right: each guard candidate's
    measured value against its average bits, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refine: Mapping[str, Any] = results.get("refine") or {}
    guard = results.get("guard") or {}
    panels = [p for p in ("refine", "guard") if (p == "refine" and refine) or (p == "guard" and guard.get("enabled"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "refine":
            rounds = [r["round"] for r in refine["rounds"]]
            ax.plot(
                rounds, [r["predicted"] for r in refine["rounds"]], marker="o", label="predicted (before measuring)"
            )
            ax.plot(rounds, [r["measured"] for r in refine["rounds"]], marker="s", label="measured")
            ax.set_xlabel("refinement round")
            ax.set_ylabel("calibration loss")
            ax.set_xticks(rounds)
            ax.set_title(f"refinement: {refine['stopped']}", fontsize=8)
        else:
            for c in guard["candidates"]:
                kind = c["name"].split("-")[0]
                marker = {"method": "*", "uniform": "s", "neighbour": "o", "refine": "^"}.get(kind, "o")
                ax.scatter(c["average_bits"], c["measured"], marker=marker, s=120 if c["chosen"] else 40,
                           edgecolors="red" if c["chosen"] else "none", label=c["name"])  # fmt: skip
            label = "metric (negated)" if guard["data"]["how"] == "metric" else "held-out loss"
            ax.set_xlabel("average bits")
            ax.set_ylabel(label)
            verdict = "kept" if guard["kept"] else f"replaced by {guard['chosen']}"
            ax.set_title(f"guard: the method's answer {verdict} (red: returned)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
