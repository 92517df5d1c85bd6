"""The guard's and refinement's command-line flags and summary lines (``mpq search``, ``mpq sweep``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from mpqcore.verify_on import VERIFY_ON

__all__ = ["add_guard_args", "guard_lines", "guard_options"]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def add_guard_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    p.add_argument(
        "--no-guard",
        action="store_true",
        help="return the solver's answer as it is (default: measure it on held-out calibration data against "
        "uniform precision and neighbours, and return the best measured)",
    )
    p.add_argument(
        "--guard-candidates", type=_count, default=3, metavar="K", help="neighbours along the budget (default 3)"
    )
    p.add_argument(
        "--verify-on", choices=VERIFY_ON, default="held-out", help="what the guard measures on (default held-out)"
    )
    if not sweep:
        p.add_argument(
            "--refine", type=_count, default=0, metavar="N", help="rounds of measure, correct, re-solve (default 0)"
        )
        p.add_argument(
            "--refine-evaluations", type=_count, default=None, metavar="E", help="evaluations refinement may spend"
        )


def guard_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of :func:`mpqcore.search` / :func:`mpqcore.sweep` from the flags."""
    out: dict[str, Any] = {
        "guard": not args.no_guard,
        "guard_candidates": args.guard_candidates,
        "verify_on": args.verify_on,
    }
    if hasattr(args, "refine"):
        out["refine"] = args.refine
        out["refine_evaluations"] = args.refine_evaluations or None
    return out


def guard_lines(results: Mapping[str, Any]) -> list[str]:
    """What the guard measured and chose, and each round of refinement, for the search summary."""
    lines: list[str] = []
    if "uniform_note" in results:
        lines.append(f"  note: {results['uniform_note']}")
    refine = results.get("refine")
    if refine:
        lines.append("")
        lines.append(
            f"  refine: {len(refine['rounds'])} rounds ({refine['stopped']}), {refine['evaluations']} evaluations"
        )
        for r in refine["rounds"]:
            lines.append(
                f"    round {r['round']}: {r['average_bits']:.3f} avg bits, predicted loss {r['predicted']:.5f}, "
                f"measured {r['measured']:.5f}"
            )
    guard = results.get("guard")
    if not guard or not guard.get("enabled"):
        return lines
    data = guard["data"]
    where = f"{data['held_out_examples']} held-out examples" if data["how"] in ("batches", "examples") else data["note"]
    verdict = "kept" if guard["kept"] else f"replaced by {guard['chosen']}"
    lines.append("")
    lines.append(f"  guard ({where}): the method's answer {verdict}; {guard['why']}")
    label = "metric (negated)" if data["how"] == "metric" else "loss"
    lines.append(f"    {'candidate':<14} {'avg bits':>8} {'predicted':>12} {'measured ' + label:>16}")
    for c in guard["candidates"]:
        mark = " <" if c["chosen"] else ""
        same = f" (= {c['same_as']})" if c["same_as"] else ""
        lines.append(
            f"    {c['name']:<14} {c['average_bits']:>8.3f} {c['predicted']:>12.5g} {c['measured']:>16.5f}{mark}{same}"
        )
    bc = results.get("bias_correction")
    if bc and bc.get("mode") == "guard":
        if bc["tried"]:
            verdict = "corrected" if bc["chosen"] else "not corrected"
            lines.append(
                f"  bias correction: {verdict} (measured loss {bc['measured']:.5f} without, "
                f"{bc['measured_corrected']:.5f} with; p = {bc['p_lower']:.3g}, level {bc['alpha']:g})"
            )
        else:
            lines.append(f"  bias correction: not tried ({bc['why']})")
    return lines
