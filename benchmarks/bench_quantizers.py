"""Which built-in quantizer measures best across the tasks: the measurement behind DEFAULT_QUANTIZER.

    python benchmarks/bench_quantizers.py                      # digits-cnn, digits-resnet18, minilm
    python benchmarks/bench_quantizers.py --tasks digits-cnn   # one task

For each task and each quantizer configuration (the three built-ins, each without and
with bias correction (on digits-resnet18 also correcting only the layers that have a
bias: its convolutions have none), plus per-group variants where the task's weights are long enough
for groups to matter), ``uniform`` and ``hawq`` (the default method) measure once and
solve for average-bits budgets 2.5, 3 and 4 from the candidates {2,3,4,5,6,8}; each
allocation is scored with the task's held-out metric through the measurement's own
evaluator (so bias correction, when on, is in the score). Calibration is the quick
slice of benchmarks/run.py (digits-resnet18: 32 images; minilm: 16 texts, metric on
128 held-out texts). Budgets count code bits per weight; the stored bits per weight
(codes plus scales and zero points, the ``size`` cost) are recorded beside them.

The default is the quantizer without bias correction and without groups (those are
options on top of any quantizer) with the best mean rank over every (task, method,
budget) cell. Writes benchmarks/results/quantizers.json and quantizers.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import subset, task_setup  # noqa: E402  (benchmarks/run.py: the quick calibration slices)

BUDGETS = (2.5, 3.0, 4.0)
BITS = (2, 3, 4, 5, 6, 8)
METHODS = ("uniform", "hawq")
QUANTIZERS = ("minmax-per-tensor", "symmetric-per-channel", "mse-per-channel")
TASKS = ("digits-cnn", "digits-resnet18", "minilm")
#: mse-per-channel as it was before 2026-12-02: the narrow range, ratios down to 0.3, clipping by MSE alone.
NARROW = {"narrow_range": True, "min_ratio": 0.3, "mean_penalty": 0.0}


def configs(task: str) -> list[dict]:
    out = [{"quantizer": q, "options": {}, "bias_correction": bc} for q in QUANTIZERS for bc in (False, True)]
    out += [{"quantizer": "mse-per-channel", "options": dict(NARROW), "bias_correction": bc} for bc in (False, True)]
    if task == "digits-resnet18":  # its convolutions have no bias (BatchNorm follows): add one, or correct only fc
        out += [{"quantizer": q, "options": {}, "bias_correction": "existing"} for q in QUANTIZERS]
    if task == "minilm":  # rows of 384 and 1536: groups of 32..128 are what transformer layouts use
        out += [{"quantizer": "mse-per-channel", "options": {"group_size": 64}, "bias_correction": False}]
        out += [{"quantizer": "minmax-per-tensor", "options": {"group_size": 64}, "bias_correction": False}]
    return out


def label(cfg: dict) -> str:
    text = cfg["quantizer"]
    if cfg["options"].get("group_size"):
        text += f" g{cfg['options']['group_size']}"
    if cfg["options"] == NARROW:
        text += " narrow, MSE alone (before 2026-12-02)"
    if cfg["bias_correction"] == "existing":
        return text + " + bias corr. (existing biases only)"
    return text + (" + bias corr." if cfg["bias_correction"] else "")


def run_task(name: str, log) -> list[dict]:
    import mpqcore

    setup = task_setup(name, quick=True)
    task = mpqcore.load_task(name, **setup["build"])
    calibration = subset(task.calibration, setup["calibration"])
    float_metric = float(task.metric(task.model))
    rows = []
    for cfg in configs(name):
        for method in METHODS:
            t0 = time.perf_counter()
            meas = mpqcore.measure(
                task.model, calibration, method=method, bits=BITS, metric=task.metric, seed=0,
                quantizer=cfg["quantizer"], quantizer_options=cfg["options"], bias_correction=cfg["bias_correction"],
                method_options={"samples": 2 if name == "minilm" else 4} if method == "hawq" else None,
            )  # fmt: skip
            params = sum(layer.params for layer in meas.spec.layers)
            seen: dict = {}
            for avg in BUDGETS:
                allocation = mpqcore.solve(meas.with_budgets([mpqcore.Budget.average_bits(avg)]))
                key = tuple(sorted(allocation.bits.items()))
                if key not in seen:
                    seen[key] = meas.evaluator.metric(allocation.bits)
                rows.append(
                    {
                        "task": name, "config": label(cfg), "quantizer": cfg["quantizer"],
                        "options": cfg["options"], "bias_correction": cfg["bias_correction"], "method": method,
                        "budget": avg, "metric": seen[key], "float_metric": float_metric,
                        "code_bits": allocation.average_bits({layer.fqn: layer.params for layer in meas.spec.layers}),
                        "stored_bits": allocation.costs["size"] / params,
                    }
                )  # fmt: skip
            meas.evaluator.close()
            log(f"{name} {label(cfg)} {method}: {[round(r['metric'], 4) for r in rows[-3:]]} "
                f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    return rows


def ranks(rows: list[dict]) -> dict[str, float]:
    """Mean rank (1 = best) of each plain quantizer (and the narrow-range variant) over the (task, method, budget) cells."""
    plain = [r for r in rows if not r["bias_correction"] and not r["options"].get("group_size")]
    cells: dict = {}
    for r in plain:
        cells.setdefault((r["task"], r["method"], r["budget"]), []).append(r)
    total: dict[str, list[float]] = {}
    for group in cells.values():
        ordered = sorted(group, key=lambda r: -r["metric"])
        for i, r in enumerate(ordered):
            tied = [j for j, o in enumerate(ordered) if o["metric"] == r["metric"]]
            total.setdefault(r["config"], []).append(1 + sum(tied) / len(tied))
            del i
    return {q: sum(v) / len(v) for q, v in total.items()}


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Quantizers measured across the tasks",
        "",
        "Generated by `python benchmarks/bench_quantizers.py` "
        f"({meta['date']}, {meta['wall_s']:.0f} s wall on {meta['machine']}; the machine was shared).",
        "",
        "Held-out metric (digits: test accuracy; minilm: its task metric) of the allocation the method "
        "returns at each average-bits budget (code bits per weight; candidates {2,3,4,5,6,8}), measured "
        "through the measurement's evaluator, so bias correction is in the score when on. `hawq` is the "
        "default method (seed 0, 4 trace draws; 2 on minilm); `uniform` is uniform precision at the "
        "highest width within the budget. In brackets: stored bits per weight (codes + scales + zero "
        "points, what the `size` cost counts). Calibration: the quick slices of benchmarks/run.py.",
        "",
    ]
    for task in sorted(dict.fromkeys(r["task"] for r in rows), key=lambda t: TASKS.index(t) if t in TASKS else 99):
        sub = [r for r in rows if r["task"] == task]
        lines += [f"## {task} (float {sub[0]['float_metric']:.4f})", ""]
        header = "| quantizer | " + " | ".join(f"{m} {b:g}" for m in METHODS for b in BUDGETS) + " |"
        lines += [header, "|---" * (1 + len(METHODS) * len(BUDGETS)) + "|"]
        for cfg in dict.fromkeys(r["config"] for r in sub):
            cells = []
            for m in METHODS:
                for b in BUDGETS:
                    r = next(r for r in sub if r["config"] == cfg and r["method"] == m and r["budget"] == b)
                    cells.append(f"{r['metric']:.4f} ({r['stored_bits']:.2f})")
            lines.append(f"| {cfg} | " + " | ".join(cells) + " |")
        lines.append("")
    rank = ranks(rows)
    best = min(rank, key=rank.get)
    lines += [
        "## The default",
        "",
        "Mean rank of each quantizer (without bias correction and groups, which are options on top of "
        "any quantizer) over every (task, method, budget) cell, 1 = best:",
        "",
        "| quantizer | mean rank |",
        "|---|---|",
        *(f"| {q} | {v:.2f} |" for q, v in sorted(rank.items(), key=lambda kv: kv[1])),
        "",
        f"Best: **{best}**, which `mpqcore.DEFAULT_QUANTIZER` names.",
        "",
    ]
    bc = []
    for r in rows:
        if r["bias_correction"]:
            base = next(
                o for o in rows
                if not o["bias_correction"] and o["quantizer"] == r["quantizer"] and o["options"] == r["options"]
                and o["task"] == r["task"] and o["method"] == r["method"] and o["budget"] == r["budget"]
            )  # fmt: skip
            bc.append(r["metric"] - base["metric"])
    if bc:
        better = sum(d > 0 for d in bc)
        worse = sum(d < 0 for d in bc)
        lines += [
            "## Bias correction",
            "",
            f"Over {len(bc)} cells (every quantizer, task, method and budget), bias correction changed the "
            f"metric by {sum(bc) / len(bc):+.4f} on average (better in {better}, worse in {worse}, equal in "
            f"{len(bc) - better - worse}); the per-task rows above show where. `mse-per-channel + bias corr.` "
            "is the recipe of Sony's MCT (MSE thresholds per channel + bias correction); MCT's own figures, "
            "on seven digits CNNs, are in results/mct.md (benchmarks/bench_mct.py).",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge", action="store_true", help="keep the other tasks' rows of an earlier run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    json_path = args.out / "quantizers.json"
    rows: list[dict] = []
    earlier = 0.0
    if args.merge and json_path.exists():
        data = json.loads(json_path.read_text())
        rows = [r for r in data["rows"] if r["task"] not in args.tasks]
        earlier = data["meta"].get("wall_s", 0.0)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "command": " ".join(sys.argv),
    }
    for task in args.tasks:
        rows += run_task(task, log)
        meta["wall_s"] = earlier + time.perf_counter() - start
        json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (args.out / "quantizers.md").write_text(render(rows, meta))
    log(f"wrote {json_path} and quantizers.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
