"""Before/after figures of issue 14 item 4: the sensitivity proxies that failed, on models they never saw.

For each model (the project's digits-cnn, digits-resnet18 and minilm, and the five small
CNNs of :mod:`mpqcore.testing.small_cnns`, each trained on the digits with its own seed)
and each method, the variant before the fix and the default after it are measured once
and solved at 2.5, 3 and 4 average weight bits (candidates {2,3,4,5,6,8}, the default
quantizer and solver); every row gives the allocation's test metric and calibration
loss beside uniform precision's at the same budget (the search report's reference).

- hawq: ``calibrate="none"`` (the second-order proxy alone) vs the default ``adaptive``.
- alps: ``use_metric=True`` (the accuracy drop, the old default when a metric is given)
  vs the default calibration-loss drop.
- eagl: ``scale="params"`` vs the default ``cost`` under BOPs budgets (``bops`` at
  2.5/8, 3/8 and 4/8 of the 8-bit cost; under size budgets the two are the same).

    python benchmarks/bench_proxies.py            # writes benchmarks/results/proxies.{json,md}
    python benchmarks/bench_proxies.py --quick    # small CNNs and digits-cnn only

Torch runs on one thread; timings are wall seconds of the measurement on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

import mpqcore
from mpqcore.testing.small_cnns import SHAPES, small_cnn_task

BITS = (2, 3, 4, 5, 6, 8)
AVG_BITS = (2.5, 3.0, 4.0)
OUT = Path(__file__).parent / "results"
VARIANTS = {
    "hawq": [("before: calibrate=none", {"calibrate": "none"}), ("after: default (adaptive)", {})],
    "alps": [("before: use_metric=True", {"use_metric": True}), ("after: default (loss)", {})],
    "eagl": [("before: scale=params", {"scale": "params"}), ("after: default (cost)", {})],
}


def load(name: str):
    if name in SHAPES:
        return small_cnn_task(name), None
    if name == "minilm":
        task = mpqcore.load_task("minilm", n_eval=128)
        return task, task.calibration[1:2]
    return mpqcore.load_task(name), None


def budgets(method: str) -> list[tuple[str, mpqcore.Budget]]:
    if method == "eagl":
        return [(f"bops {b:g}/8", mpqcore.Budget.relative("bops", b / 8)) for b in AVG_BITS]
    return [(f"avg-bits {b:g}", mpqcore.Budget.average_bits(b)) for b in AVG_BITS]


def run_one(name: str, method: str) -> list[dict]:
    task, calibration = load(name)
    calibration = calibration if calibration is not None else task.calibration
    rows = []
    for label, options in VARIANTS[method]:
        for budget_label, budget in budgets(method):
            t0 = time.perf_counter()
            meas = mpqcore.measure(
                task.model, calibration, method=method, bits=BITS, metric=task.metric, budget=budget,
                method_options=options,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            rep = mpqcore.search(measurement=meas, budget=budget, guard=False)
            r = rep.results
            rows.append({
                "model": name, "method": method, "variant": label, "budget": budget_label,
                "metric": r["metric"], "uniform_metric": r["uniform_metric"], "uniform_bits": r["uniform_bits"],
                "loss": r["loss"], "uniform_loss": r["uniform_loss"], "allocation": dict(rep.allocation.bits),
                "evaluations": meas.objective.info.get("evaluations", 0), "measure_s": seconds,
            })  # fmt: skip
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "allocation"}), flush=True)
            if method != "eagl":  # one measurement serves every size budget: solve the others from it
                for other_label, other in budgets(method)[1:]:
                    rep = mpqcore.search(measurement=meas, budget=other, guard=False)
                    r = rep.results
                    rows.append({**rows[-1], "budget": other_label, "metric": r["metric"],
                                 "uniform_metric": r["uniform_metric"], "uniform_bits": r["uniform_bits"],
                                 "loss": r["loss"], "uniform_loss": r["uniform_loss"],
                                 "allocation": dict(rep.allocation.bits)})  # fmt: skip
                break
    return rows


def render(rows: list[dict], notes: list[str]) -> str:
    out = ["# Sensitivity proxies before and after issue 14's fixes", "", *notes, ""]
    out += [
        "Each cell: the allocation's test metric (its calibration loss) against uniform precision's at the same",
        "budget; **bold** where the allocation's loss is no higher than uniform's. Metric: accuracy on 400",
        "held-out digits; minilm: cosine similarity to the float embeddings on 128 held-out texts.",
        "",
    ]
    for method in VARIANTS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        labels = list(dict.fromkeys(r["budget"] for r in mine))
        out += [f"## {method}", "", "| model | variant | " + " | ".join(labels) + " | evaluations | measure (s) |"]
        out.append("|---|---|" + "---|" * len(labels) + "---|---|")
        for model in dict.fromkeys(r["model"] for r in mine):
            for variant in dict.fromkeys(r["variant"] for r in mine):
                cells = []
                sel = [r for r in mine if r["model"] == model and r["variant"] == variant]
                for lab in labels:
                    r = next(x for x in sel if x["budget"] == lab)
                    cell = f"{r['metric']:.4f} ({r['loss']:.4f}) vs {r['uniform_metric']:.4f} ({r['uniform_loss']:.4f})"
                    cells.append(f"**{cell}**" if r["loss"] <= r["uniform_loss"] else cell)
                ev = ", ".join(str(x) for x in dict.fromkeys(r["evaluations"] for r in sel))
                secs = sum(dict.fromkeys(round(r["measure_s"], 1) for r in sel))
                out.append(f"| {model} | {variant} | " + " | ".join(cells) + f" | {ev} | {secs:.1f} |")
        out.append("")
    wins = {}
    for r in rows:
        key = (r["method"], r["variant"])
        w = wins.setdefault(key, [0, 0])
        w[0] += r["loss"] <= r["uniform_loss"]
        w[1] += 1
    out += ["## Loss no higher than uniform's (count of model x budget)", "", "| method | variant | count |"]
    out.append("|---|---|---|")
    out += [f"| {m} | {v} | {a} of {b} |" for (m, v), (a, b) in wins.items()]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small CNNs and digits-cnn only")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    models = ["digits-cnn", *SHAPES] + ([] if args.quick else ["digits-resnet18", "minilm"])
    t0 = time.perf_counter()
    rows: list[dict] = []
    for name in models:
        for method in VARIANTS:
            if name == "minilm" and method != "hawq":
                continue  # alps' 1 + 38 x 5 scores and eagl's BOPs (embeddings: 0 MACs) left out for time
            rows += run_one(name, method)
    notes = [
        f"Produced by `python benchmarks/bench_proxies.py{' --quick' if args.quick else ''}` in "
        f"{time.perf_counter() - t0:.0f} s on {platform.machine()} ({torch.get_num_threads()} torch thread), "
        f"torch {torch.__version__}, candidates {list(BITS)}, default quantizer and solver.",
        "minilm: 16 calibration texts (one batch), hawq only.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proxies.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "proxies.md").write_text(render(rows, notes))
    print(render(rows, notes))


if __name__ == "__main__":
    main()
