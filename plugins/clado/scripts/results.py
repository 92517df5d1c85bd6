"""Every number in the CLADO README: accuracy, solver, measurement cost, prediction quality.

    python plugins/clado/scripts/results.py                       # digits-cnn (+ digits-resnet18 if registered)
    python plugins/clado/scripts/results.py --tasks digits-cnn --threads 2

Writes ``results.json`` and ``results.md`` next to this file. For each task: CLADO
(pairs "all") is measured once; for each budget the quadratic program is solved with
``highs`` and so is its diagonal-only ablation (same measurement, pairs dropped); ``hawq``
is measured once and solved per budget; ``uniform`` is the highest uniform bit-width that
fits. On digits-cnn also: CLADO's predicted loss change ``αᵀΩα`` against the measured
one over a sweep of budgets and over random allocations (Spearman), and the measurement
speed with and without prefix reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import attrs
import numpy as np
import torch
from scipy.stats import spearmanr

import mpqcore
from mpqcore.result_tables import add_render_flag, allocation_row, layer_params, markdown_table, rerender, write_results
from mpqcore.types import Budget

HERE = Path(__file__).resolve().parent
BITS = (2, 4, 8)
BUDGETS = (2.5, 3.0, 4.0)
SWEEP = tuple(float(b) for b in np.round(np.linspace(2.2, 7.5, 15), 3))


def _cpu() -> float:
    return time.process_time()


def measure(task, method, options=None):
    w, c = time.perf_counter(), _cpu()
    meas = mpqcore.measure(
        task.model, task.calibration, method=method, bits=BITS, metric=task.metric, method_options=options or {}
    )
    return meas, {"wall_s": time.perf_counter() - w, "cpu_s": _cpu() - c}


def evaluate(meas, allocation):
    return {
        **allocation_row(meas, allocation),
        "objective": allocation.objective,
        "status": allocation.status,
        "gap": allocation.gap,
        "solve_s": allocation.solve_time,
        "columns": allocation.info.get("columns"),
        "rows": allocation.info.get("rows"),
    }


def uniform(meas, budget):
    params = layer_params(meas.spec)
    total = sum(params.values())
    fits = [b for b in BITS if b * total <= budget * total + 1e-9]
    b = max(fits) if fits else min(BITS)
    alloc = dict.fromkeys(params, b)
    return {"bits": b, "accuracy": meas.evaluator.metric(alloc), "loss": meas.evaluator.loss(alloc)}


def interaction_by_distance(objective) -> dict:
    """How strongly layers ``d`` apart (forward order) interact, relative to their single terms.

    For every measured pair term ``P[(l,j),(m,k)]`` (the full interaction ``2 Ω_ij``) with
    both single terms ``u > 0``: ``|P| / sqrt(u[l,j] u[m,k])``. Per distance ``d = m - l``:
    the aggregate ratio ``sum |P| / sum sqrt(u u)``, the median of the per-term ratios and
    the fraction of negative terms and the spread (std of the log of the per-term ratios).
    ``benchmarks/bench_solvers.py`` builds its realistic
    dense instance from these numbers.
    """
    layers = list(objective.layers)
    pos = {f: i for i, f in enumerate(layers)}
    bpos = {b: j for j, b in enumerate(objective.bits)}
    u = np.asarray(objective.unary, dtype=float)
    by_d: dict[int, list[tuple[float, float]]] = {}
    for (a, ba, c, bc), v in objective.pairs.items():
        near, far = sorted((pos[a], pos[c]))
        ua, uc = u[pos[a], bpos[ba]], u[pos[c], bpos[bc]]
        if ua > 0 and uc > 0:
            by_d.setdefault(far - near, []).append((v, float(np.sqrt(ua * uc))))
    out = {}
    for d in sorted(by_d):
        v, g = np.array(by_d[d]).T
        out[d] = {
            "terms": len(v),
            "aggregate_ratio": float(np.abs(v).sum() / g.sum()),
            "median_ratio": float(np.median(np.abs(v) / g)),
            "negative_fraction": float((v < 0).mean()),
            "log_ratio_std": float(np.log(np.abs(v[v != 0]) / g[v != 0]).std()) if (v != 0).any() else 0.0,
        }
    return out


def compare(task, time_limit: float, pairs: str = "all") -> dict:
    """CLADO vs its diagonal-only ablation vs hawq vs uniform at each budget."""
    clado, clado_cost = measure(task, "clado", {"pairs": pairs, "window": 2})
    hawq, hawq_cost = measure(task, "hawq")
    info = clado.objective.info
    out = {
        "float_accuracy": clado.evaluator.metric({}),
        "layers": len(clado.spec.layers),
        "measurement": {
            "clado": {
                **clado_cost,
                "evaluations": info["evaluations_used"],
                "evaluations_formula": info["evaluations_formula"],
                "forward_passes": info["forward_passes_used"],
                "seconds_per_evaluation": info["seconds_per_evaluation"],
                "pair_terms": info["pair_terms"],
                "prefix_reuse": info["prefix_reuse"],
                "pairs": pairs,
                "interaction_by_distance": interaction_by_distance(clado.objective),
            },
            "hawq": {**hawq_cost, "forward_passes": hawq.objective.info["forward_passes"]},
        },
        "budgets": {},
    }
    for avg in BUDGETS:
        budget = [Budget.average_bits(avg)]
        problem = clado.with_budgets(budget)
        ablation = attrs.evolve(problem, objective=problem.objective.without_pairs())
        row = {
            "clado": evaluate(clado, mpqcore.solve(problem, "highs", time_limit=time_limit)),
            "clado_diagonal": evaluate(clado, mpqcore.solve(ablation, "highs", time_limit=time_limit)),
            "hawq": evaluate(hawq, mpqcore.solve(hawq.with_budgets(budget), "highs", time_limit=time_limit)),
            "uniform": uniform(clado, avg),
        }
        # what CLADO's full objective says of the ablation's choice
        row["clado_diagonal"]["clado_objective"] = problem.objective.value(row["clado_diagonal"]["bits"])
        out["budgets"][str(avg)] = row
    clado.evaluator.close()
    hawq.evaluator.close()
    return out


def prediction(task, time_limit: float, n_random: int = 200, seed: int = 0) -> dict:
    """Predicted (αᵀΩα) vs measured loss change: a budget sweep and random allocations."""
    meas, _ = measure(task, "clado", {"pairs": "all"})
    ev, obj = meas.evaluator, meas.problem.objective
    base = meas.objective.info["base_loss"]
    diagonal = obj.without_pairs()
    sweep = []
    for avg in SWEEP:
        alloc = mpqcore.solve(meas.with_budgets([Budget.average_bits(avg)]), "highs", time_limit=time_limit)
        sweep.append({
            "budget": avg, "predicted": obj.value(alloc.bits), "diagonal_predicted": diagonal.value(alloc.bits),
            "measured": ev.loss(alloc.bits) - base, "accuracy": ev.metric(alloc.bits), "gap": alloc.gap,
            "solve_s": alloc.solve_time, "bits": dict(alloc.bits),
        })  # fmt: skip
    rng = np.random.default_rng(seed)
    randoms = []
    for _ in range(n_random):
        alloc = {f: int(rng.choice(BITS)) for f in obj.layers}
        randoms.append(
            {
                "predicted": obj.value(alloc),
                "diagonal_predicted": diagonal.value(alloc),
                "measured": ev.loss(alloc) - base,
            }
        )

    def rho(rows, key):
        return float(spearmanr([r[key] for r in rows], [r["measured"] for r in rows]).statistic)

    ev.close()
    return {
        "sweep": sweep,
        "spearman_sweep": rho(sweep, "predicted"),
        "spearman_sweep_diagonal": rho(sweep, "diagonal_predicted"),
        "random_allocations": len(randoms),
        "spearman_random": rho(randoms, "predicted"),
        "spearman_random_diagonal": rho(randoms, "diagonal_predicted"),
        "median_relative_error_random": float(
            np.median([abs(r["predicted"] - r["measured"]) / max(abs(r["measured"]), 1e-12) for r in randoms])
        ),
        "median_relative_error_random_diagonal": float(
            np.median([abs(r["diagonal_predicted"] - r["measured"]) / max(abs(r["measured"]), 1e-12) for r in randoms])
        ),
    }


def speed(task, options: dict) -> dict:
    """Seconds per evaluation with and without prefix reuse (same floats, checked)."""
    out = {}
    objectives = {}
    for reuse in (False, True):
        meas, cost = measure(task, "clado", {**options, "reuse_prefix": reuse})
        info = meas.objective.info
        out["reuse" if reuse else "plain"] = {
            **cost,
            "evaluations": info["evaluations_used"],
            "wall_ms_per_evaluation": 1000 * cost["wall_s"] / info["evaluations_used"],
            "cpu_ms_per_evaluation": 1000 * cost["cpu_s"] / info["evaluations_used"],
            "skipped_mac_fraction": info["prefix_reuse"]["skipped_mac_fraction"],
        }
        objectives[reuse] = meas.objective
        meas.evaluator.close()
    a, b = objectives[True], objectives[False]
    out["identical"] = bool(np.array_equal(a.unary, b.unary) and dict(a.pairs) == dict(b.pairs))
    out["options"] = options
    return out


def markdown(results: dict) -> str:
    lines = [
        f"load average at start of the last run: {results['load_average']} (2 cores shared with other work: wall times are inflated; CPU times are steadier)",
        "",
    ]
    for name, res in results["tasks"].items():
        cmp_ = res["compare"]
        m = cmp_["measurement"]["clado"]
        lines += [
            f"## {name} ({cmp_['layers']} layers, float accuracy {cmp_['float_accuracy']:.4f}, bits {{2,4,8}}, "
            f"torch threads {res.get('threads', results['threads'])})", "",
        ]  # fmt: skip
        lines += markdown_table(
            [
                "avg bits",
                "CLADO",
                "CLADO diagonal-only",
                "hawq",
                "uniform",
                "CLADO solve s",
                "CLADO gap",
                "diag. solve s",
            ],
            (_compare_cells(avg, row) for avg, row in cmp_["budgets"].items()),
        )
        lines += [
            "",
            f"CLADO measurement: {m['evaluations']} loss evaluations (formula {m['evaluations_formula']}), "
            f"{m['forward_passes']} forward passes over calibration batches, {m['wall_s']:.1f} s wall / {m['cpu_s']:.1f} s CPU "
            f"({1000 * m['seconds_per_evaluation']:.1f} ms wall per evaluation), {m['pair_terms']} pair terms, "
            f"prefix reuse skipped {100 * m['prefix_reuse']['skipped_mac_fraction']:.0f}% of conv/linear MACs. "
            f"hawq: {cmp_['measurement']['hawq']['forward_passes']} forward passes, {cmp_['measurement']['hawq']['wall_s']:.1f} s. "
            f"CLADO pairs: {m.get('pairs', 'all')}.",
            "",
        ]
        if m.get("interaction_by_distance"):
            lines += [
                "Interaction by layer distance d (|pair term| / sqrt(u_l u_m), terms with both single terms > 0):",
                "",
            ]
            lines += markdown_table(
                ["d", "terms", "aggregate ratio", "median ratio", "negative fraction", "std of log ratio"],
                ([d, r["terms"], f"{r['aggregate_ratio']:.3f}", f"{r['median_ratio']:.3f}", f"{r['negative_fraction']:.2f}",
                  f"{r['log_ratio_std']:.2f}" if "log_ratio_std" in r else "-"] for d, r in m["interaction_by_distance"].items()),
            )  # fmt: skip
            lines.append("")
        if "speed" in res:
            s = res["speed"]
            lines += [
                f"Measurement speed ({s['options']}): plain {s['plain']['wall_ms_per_evaluation']:.1f} ms wall / "
                f"{s['plain']['cpu_ms_per_evaluation']:.1f} ms CPU per evaluation; prefix reuse "
                f"{s['reuse']['wall_ms_per_evaluation']:.1f} ms wall / {s['reuse']['cpu_ms_per_evaluation']:.1f} ms CPU "
                f"({100 * s['reuse']['skipped_mac_fraction']:.0f}% of MACs skipped); identical Ω: {s['identical']}.",
                "",
            ]
        if "prediction" in res:
            p = res["prediction"]
            lines += [
                f"Predicted vs measured loss change, {len(p['sweep'])} budgets {SWEEP[0]}..{SWEEP[-1]} avg bits: "
                f"Spearman {p['spearman_sweep']:.3f} (diagonal-only terms on the same allocations: {p['spearman_sweep_diagonal']:.3f}). "
                f"{p['random_allocations']} random allocations: Spearman {p['spearman_random']:.3f} "
                f"(diagonal-only {p['spearman_random_diagonal']:.3f}); median relative error {p['median_relative_error_random']:.2f} "
                f"(diagonal-only {p['median_relative_error_random_diagonal']:.2f}).",
                "",
            ]
            lines += markdown_table(
                ["budget", "predicted αᵀΩα", "diagonal only", "measured", "accuracy", "gap", "solve s"],
                ([r["budget"], f"{r['predicted']:.4g}", f"{r['diagonal_predicted']:.4g}", f"{r['measured']:.4g}",
                  f"{r['accuracy']:.4f}", f"{r['gap']:.2g}", f"{r['solve_s']:.3f}"] for r in p["sweep"]),
            )  # fmt: skip
            lines.append("")
    return "\n".join(lines)


def _compare_cells(avg: str, row: dict) -> list[str]:
    c, d, h, u = row["clado"], row["clado_diagonal"], row["hawq"], row["uniform"]
    return [
        avg, f"{c['accuracy']:.4f} ({c['average_bits']:.2f})", f"{d['accuracy']:.4f} ({d['average_bits']:.2f})",
        f"{h['accuracy']:.4f} ({h['average_bits']:.2f})", f"{u['accuracy']:.4f} ({u['bits']}-bit)",
        f"{c['solve_s']:.3f}", f"{c['gap']:.2g} ({c['status']})", f"{d['solve_s']:.3f}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits-cnn,digits-resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument(
        "--speed-options",
        default='{"pairs": "window", "window": 1}',
        help="CLADO options for the speed comparison on tasks other than digits-cnn",
    )
    parser.add_argument(
        "--pairs", default="all", help="CLADO pair mode for the accuracy comparison: all or window (window=2)"
    )
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--merge", action="store_true", help="keep the other tasks already in results.json")
    add_render_flag(parser)
    args = parser.parse_args()
    if args.render:
        print(rerender(args.out, markdown))
        return
    torch.set_num_threads(args.threads)
    available = set(mpqcore.get_plugins().tasks)
    previous = Path(args.out) / "results.json"
    kept = json.loads(previous.read_text())["tasks"] if args.merge and previous.exists() else {}
    results = {
        "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "bits": BITS,
        "tasks": kept,
        "missing_tasks": [],
    }
    for name in args.tasks.split(","):
        if name not in available:
            results["missing_tasks"].append(name)
            print(f"task {name} is not registered; skipped")
            continue
        print(f"== {name}", flush=True)
        task = mpqcore.load_task(name)
        res = {"threads": args.threads, "compare": compare(task, args.time_limit, args.pairs)}
        if name == "digits-cnn":
            res["prediction"] = prediction(task, args.time_limit)
            res["speed"] = speed(task, {"pairs": "all"})
        else:
            res["speed"] = speed(task, json.loads(args.speed_options))
        results["tasks"][name] = res
        write_results(args.out, results, markdown)
        print(markdown({**results, "tasks": {name: res}}), flush=True)


if __name__ == "__main__":
    main()
