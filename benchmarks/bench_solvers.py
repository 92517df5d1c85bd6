"""How long the built-in solvers take on allocation problems of realistic size.

Two families, both random but shaped like real ones:

* multiple-choice knapsack (what ``mpq solve`` sees): L layers x 6 bit-widths
  (2, 3, 4, 5, 6, 8), parameter counts log-uniform in 1e3..1e6, size cost
  ``params * bits``, objective ``params * 2^(-2 bits) * lognormal noise`` (quantization
  noise power falls ~4x per bit), budget an average of 4 bits. ``highs`` is timed
  build + solve; ``dp`` on a grid coarse enough for a ~20 M-cell table (costs rounded
  up, so it reports a proven gap instead of optimality).
* dense pair objectives (CLADO-style): 52 layers x (2, 4, 8) bits, every pair of layers
  coupled with mixed-sign terms of 0.1-0.5 x the unary terms' geometric mean, average
  5 bits: the onehot (RLT) against the generic (McCormick) linearization.

    python benchmarks/bench_solvers.py            # full, ~4-5 minutes on 2 cores
    python benchmarks/bench_solvers.py --quick    # smaller sizes, ~1 minute

Writes ``benchmarks/results/solvers.json`` and ``solvers.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from mpqcore.errors import MpqError
from mpqcore.problem import reduce_problem
from mpqcore.solvers import DPSolver, HighsSolver
from mpqcore.types import Objective, Problem

RESULTS = Path(__file__).parent / "results"
MCKP_BITS = (2, 3, 4, 5, 6, 8)
PAIR_BITS = (2, 4, 8)


def mckp_problem(L: int, seed: int = 0, avg_bits: float = 4.0) -> Problem:
    rng = np.random.default_rng(seed)
    params = np.round(np.exp(rng.uniform(math.log(1e3), math.log(1e6), L))).astype(np.int64)
    b = np.array(MCKP_BITS)
    unary = params[:, None] * 2.0 ** (-2 * b) * rng.lognormal(0, 0.3, (L, len(b)))
    return Problem(
        objective=Objective(layers=[f"layer{i}" for i in range(L)], bits=MCKP_BITS, unary=unary),
        costs={"size": params[:, None] * b},
        budgets={"size": float(avg_bits * params.sum())},
    )


def pair_problem(L: int, seed: int = 0, avg_bits: float = 5.0) -> Problem:
    rng = np.random.default_rng(seed)
    params = np.round(np.exp(rng.uniform(math.log(1e3), math.log(1e6), L))).astype(np.int64)
    b = np.array(PAIR_BITS)
    unary = params[:, None] * 2.0 ** (-2 * b) * rng.lognormal(0, 0.3, (L, len(b))) / 1e3
    scale = math.exp(np.log(unary).mean())
    pairs = [
        (f"layer{i}", x, f"layer{k}", y, scale * rng.uniform(0.1, 0.5) * rng.choice([-1.0, 1.0]))
        for i in range(L) for k in range(i + 1, L) for x in PAIR_BITS for y in PAIR_BITS
    ]
    return Problem(
        objective=Objective(layers=[f"layer{i}" for i in range(L)], bits=PAIR_BITS, unary=unary, pairs=pairs),
        costs={"size": params[:, None] * b},
        budgets={"size": float(avg_bits * params.sum())},
    )


def coarse_grid(problem: Problem, cells: float = 2e7) -> float:
    """A power-of-two grid putting the DP table near ``cells`` cells."""
    size = problem.costs["size"]
    slack = problem.budgets["size"] - size.min(axis=1).sum()
    grid = slack * len(problem.layers) / cells
    return float(2 ** math.ceil(math.log2(max(grid, 1.0))))


def record(alloc, seconds: float, **extra) -> dict:
    return {
        "seconds": round(seconds, 3),
        "status": alloc.status,
        "objective": alloc.objective,
        "bound": alloc.bound,
        "gap": alloc.gap,
        "columns": alloc.info.get("columns"),
        "rows": alloc.info.get("rows"),
        **extra,
    }


def bench_mckp(sizes: list[int]) -> list[dict]:
    out = []
    for L in sizes:
        problem = mckp_problem(L)
        t = time.perf_counter()
        build = HighsSolver().build(reduce_problem(problem))
        build_s = time.perf_counter() - t
        del build
        t = time.perf_counter()
        highs = HighsSolver(time_limit=120).solve(problem)
        highs_s = time.perf_counter() - t
        row = {"layers": L, "bits": len(MCKP_BITS), "highs": record(highs, highs_s, build_seconds=round(build_s, 3))}
        grid = coarse_grid(problem)
        t = time.perf_counter()
        try:
            dp = DPSolver(grid=grid).solve(problem)
            dp_s = time.perf_counter() - t
            row["dp"] = record(dp, dp_s, grid=grid, cells=dp.info["cells"],
                               vs_highs=(dp.objective - highs.objective) / abs(highs.objective))
        except MpqError as exc:
            row["dp"] = {"error": str(exc), "grid": grid}
        print(f"mckp {L:5d} layers: highs {highs_s:6.2f} s ({highs.status}, build {build_s:.2f} s), "
              f"dp {row['dp'].get('seconds', '-')} s on grid {grid:g} ({row['dp'].get('status', 'error')}, "
              f"gap {row['dp'].get('gap', float('nan')):.2e})", flush=True)
        out.append(row)
    return out


def bench_pairs(L: int, onehot_limit: float, generic_limit: float) -> dict:
    problem = pair_problem(L)
    row: dict = {"layers": L, "bits": len(PAIR_BITS), "pair_terms": len(problem.objective.pairs)}
    for lin, limit in (("onehot", onehot_limit), ("generic", generic_limit)):
        t = time.perf_counter()
        alloc = HighsSolver(linearization=lin, time_limit=limit).solve(problem)
        seconds = time.perf_counter() - t
        row[lin] = record(alloc, seconds, time_limit=limit, start_objective=alloc.info.get("start_objective"))
        print(f"pairs {L} layers, {lin:7s}: {seconds:6.1f} s {alloc.status} objective {alloc.objective:.6g} "
              f"bound {alloc.bound} gap {alloc.gap:.3g} ({alloc.info['columns']} cols, {alloc.info['rows']} rows)",
              flush=True)
    return row


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Solver benchmark",
        "",
        f"`python benchmarks/bench_solvers.py{' --quick' if result['quick'] else ''}` on {result['machine']}, "
        f"highspy {result['highspy']}; wall seconds, one run each (other work may share the machine).",
        "",
        "## Multiple-choice knapsack (6 bit-widths, average <= 4 bits)",
        "",
        "| layers | highs s (build s) | highs status, gap | dp s | dp grid | dp table cells | dp status, proven gap | dp vs highs optimum |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["mckp"]:
        h, d = r["highs"], r["dp"]
        if "error" in d:
            dp_cols = f"- | {d['grid']:g} | - | {d['error'][:60]} | -"
        else:
            dp_cols = (f"{d['seconds']:.2f} | {d['grid']:g} | {d['cells']:,} | {d['status']}, {d['gap']:.1e} | "
                       f"+{d['vs_highs']:.1e}")
        lines.append(f"| {r['layers']} | {h['seconds']:.2f} ({h['build_seconds']:.2f}) | {h['status']}, {h['gap']:.1e} | {dp_cols} |")
    p = result["pairs"]
    lines += [
        "",
        f"## Dense pair objective: {p['layers']} layers x {p['bits']} bits, {p['pair_terms']:,} pair terms, average <= 5 bits",
        "",
        "| linearization | columns | rows | seconds (limit) | status | objective | bound | gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lin in ("onehot", "generic"):
        r = p[lin]
        bound = "-" if r["bound"] is None else f"{r['bound']:.6g}"
        lines.append(f"| {lin} | {r['columns']:,} | {r['rows']:,} | {r['seconds']:.1f} ({r['time_limit']:g}) | "
                     f"{r['status']} | {r['objective']:.6g} | {bound} | {r['gap']:.3g} |")
    lines += [
        "",
        f"Warm start (diagonal-only optimum + 1-swaps) objective: {p['onehot']['start_objective']:.6g}.",
        "",
        "Notes:",
        "- dp rounds every cost up to its grid, so it stays within budget but loses optimality as the grid",
        "  coarsens with the layer count; its proven gap comes from the rounded-down relaxation.",
        "- How hard a pair objective is depends on how strongly the layers interact (SOLVERS.md proved a",
        "  52-layer onehot instance in 20-25 s); these pair terms are 0.1-0.5 x the unary terms' geometric",
        "  mean on every pair, which is large next to the many small unary terms.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    args = parser.parse_args()
    import highspy

    sizes = [200, 500] if args.quick else [200, 1000, 2000]
    pair_layers, onehot_limit, generic_limit = (20, 60.0, 10.0) if args.quick else (52, 120.0, 120.0)
    started = time.perf_counter()
    result = {
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "highspy": highspy.Highs().version(),
        "mckp": bench_mckp(sizes),
        "pairs": bench_pairs(pair_layers, onehot_limit, generic_limit),
    }
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "solvers_quick" if args.quick else "solvers"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    write_markdown(result, RESULTS / f"{stem}.md")
    print(f"wrote {RESULTS / stem}.json and .md in {result['total_seconds']} s")


if __name__ == "__main__":
    main()
