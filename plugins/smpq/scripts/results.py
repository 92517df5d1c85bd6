"""Measured results of ``smpq`` on digits-cnn, for the README.

    python plugins/smpq/scripts/results.py [--quick]

Writes ``results.json`` and ``results.md`` next to this script and
``plugins/smpq/convergence.png`` (Monte Carlo estimate vs permutations, with the
standard-error band and the exact values). Runs with ``torch.set_num_threads(2)``.

Every method is measured once (bits {2, 4, 8}), then solved with ``highs`` for an
average of 3 and of 4 bits per weight and evaluated: test accuracy of the task's
held-out images and the calibration loss (KL divergence from the float model). The
other installed methods (eagl, alps, mixquant, clado) run with their default options;
a plugin that is missing or fails to import is listed as missing. The "oracle" row is
the best calibration loss over all 3**5 allocations under the budget (read from the
exact game's table), the best that any loss-driven objective could reach.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

import mpqcore
from mpqcore import Budget, MeasureContext
from mpqcore.result_tables import add_render_flag, allocation_row, markdown_row, markdown_table, rerender, write_results

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parent
BITS = (2, 4, 8)
BUDGETS = (3.0, 4.0)
OTHERS = ("eagl", "alps", "mixquant", "clado")


def load_plugins() -> tuple[mpqcore.PluginSet, dict[str, str]]:
    """Every installed plugin that imports; the broken ones are reported, not fatal."""
    objects, broken = [], {}
    for ep in metadata.entry_points(group="mpqcore"):
        try:
            objects.append(ep.load())
        except Exception as exc:  # another plugin's problem: record it and go on
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
    return mpqcore.PluginSet(autoload=False, plugins=objects), broken


def run_method(plugins, task, method: str, options: dict, seed: int = 0) -> dict:
    meas = mpqcore.measure(
        task.model, task.calibration, method=method, bits=BITS, metric=task.metric, method_options=options, seed=seed, plugins=plugins,
    )  # fmt: skip
    ev = meas.evaluator
    row = {
        "method": method,
        "options": options,
        "seed": seed,
        "measure_s": meas.timings["measure"],
        "forward_passes": meas.measure_forward_passes,  # the method's own, not the core's reference pass
        "evaluations": ev.evaluations,
        "budgets": {},
    }
    info = dict(meas.objective.info)
    for key in ("estimator", "game_evaluations", "permutations", "max_stderr", "games"):
        if key in info:
            row[key] = info[key]
    for avg in BUDGETS:
        problem = meas.with_budgets([Budget.average_bits(avg)])
        row["budgets"][str(avg)] = allocation_row(meas, plugins.solvers.create("highs").solve(problem))
    return row


def oracle(plugins, task, table: dict, layers, params) -> dict:
    quantizer = plugins.quantizers.create("minmax-per-tensor")
    ev = mpqcore.Evaluator(task.model, task.calibration, None, quantizer, metric=task.metric)
    out = {}
    for avg in BUDGETS:
        best = None
        for combo in itertools.product(BITS, repeat=len(layers)):
            if np.dot(params, combo) <= avg * params.sum() + 1e-9:
                loss = -table[combo]
                if best is None or loss < best[0]:
                    best = (loss, combo)
        bits = dict(zip(layers, best[1], strict=True))
        out[str(avg)] = {
            "bits": bits,
            "loss": best[0],
            "accuracy": ev.metric(bits),
            "average_bits": float(np.dot(params, best[1]) / params.sum()),
        }
    return out


def convergence(plugins, task, permutations: int) -> dict:
    """One long Monte Carlo run on the real game (cached, so it ends at 3**5 evaluations)."""
    from mpqcore_smpq import ShapleyBitWidth

    quantizer = plugins.quantizers.create("minmax-per-tensor")
    ev = mpqcore.Evaluator(task.model, task.calibration, None, quantizer)
    ctx = MeasureContext(evaluator=ev, spec=ev.spec, layers=ev.spec.fqns, bits=BITS, seed=0)
    exact = ShapleyBitWidth(exact=True).estimate(ctx)
    mc = ShapleyBitWidth(exact=False, tolerance=0.0, truncation=0.0, min_permutations=permutations,
                         max_permutations=permutations, max_evaluations=None).estimate(ctx)  # fmt: skip
    return {"exact": exact, "mc": mc}


def plot(conv: dict, path: Path, players=(("conv1", 4), ("conv1", 8), ("fc1", 4), ("fc2", 8))) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = conv["mc"].shapley["upgrade"]
    exact = conv["exact"].shapley["upgrade"]
    mean, se = est.history()
    x = 2 * np.arange(1, len(mean) + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, player in enumerate(players):
        i = est.index(player)
        color = f"C{k}"
        ax.plot(x, mean[:, i], color=color, label=f"{player[0]} -> {player[1]} bits")
        ax.fill_between(x, mean[:, i] - se[:, i], mean[:, i] + se[:, i], color=color, alpha=0.2, linewidth=0)
        ax.axhline(exact.values[exact.index(player)], color=color, linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("permutations (antithetic pairs x 2)")
    ax.set_ylabel("Shapley value (reduction of the calibration KL)")
    ax.set_title("smpq on digits-cnn, bits {2,4,8}: Monte Carlo estimate +- 1 stderr; dashed: exact")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(data: dict) -> str:
    lines = [
        f"digits-cnn (float accuracy {data['float_accuracy']:.4f}), bits {{2,4,8}}, solver highs, "
        f"torch threads 2, {data['platform']}. Accuracy on the 400 held-out test images; "
        "loss = calibration KL divergence from the float model.",
        "",
        *markdown_table(
            ["method", "options", "avg 3: acc", "avg 3: loss", "avg 4: acc", "avg 4: loss", "forward passes",
             "game evaluations", "permutations", "measure s", "max stderr"], []),
    ]  # fmt: skip

    def fmt(row, name, options):
        cells = [name, options]
        for avg in map(str, BUDGETS):
            b = row["budgets"][avg]
            cells += [f"{b['accuracy']:.4f}", f"{b['loss']:.4f}"]
        se = row.get("max_stderr")
        cells += [
            str(row.get("forward_passes", "")),
            str(row.get("game_evaluations", "")),
            str(row.get("permutations", "")),
        ]
        cells += [f"{row['measure_s']:.2f}" if "measure_s" in row else "", "" if se is None else f"{se:.4f}"]
        return markdown_row(cells)

    for row in data["rows"]:
        opts = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "defaults"
        if row.get("seed"):
            opts += f", seed={row['seed']}"
        lines.append(fmt(row, row["method"], opts))
    lines.append(fmt({"budgets": data["oracle"]}, "oracle (best loss, brute force)", "3**5 allocations"))
    lines += ["", "Allocations (conv1, conv2, conv3, fc1, fc2):", ""]
    for row in data["rows"]:
        opts = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "defaults"
        allocs = "; ".join(f"avg {avg}: {tuple(row['budgets'][avg]['bits'].values())}" for avg in map(str, BUDGETS))
        lines.append(f"- {row['method']} ({opts}{', seed=' + str(row['seed']) if row.get('seed') else ''}): {allocs}")
    lines.append(
        "- oracle: "
        + "; ".join(f"avg {avg}: {tuple(data['oracle'][avg]['bits'].values())}" for avg in map(str, BUDGETS))
    )
    if data["missing"]:
        lines += ["", "Missing or broken methods: " + ", ".join(f"{k} ({v})" for k, v in data["missing"].items())]
    lines += ["", "Exact vs Monte Carlo Shapley values (upgrade players, -loss; "
              f"{data['convergence']['permutations']} permutations, {data['convergence']['evaluations']} evaluations):", ""]  # fmt: skip
    players = data["convergence"]["players"]
    lines += markdown_table(
        ["player", "exact", "Monte Carlo", "stderr", "|MC - exact| / stderr"],
        ([p["player"], f"{p['exact']:.5f}", f"{p['mc']:.5f}", f"{p['stderr']:.5f}", f"{_z(p):.2f}"] for p in players),
    )
    return "\n".join(lines) + "\n"


def _z(player: dict) -> float:
    """How many standard errors the Monte Carlo estimate is from the exact value."""
    return abs(player["mc"] - player["exact"]) / player["stderr"] if player["stderr"] > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and permutations (smoke test)")
    add_render_flag(parser)
    args = parser.parse_args()
    if args.render:
        print(rerender(HERE, markdown))
        return
    torch.set_num_threads(2)
    plugins, broken = load_plugins()
    task = plugins.tasks.create("digits-cnn")
    t0 = time.perf_counter()

    configs = [
        ("uniform", {}, 0),
        ("hawq", {}, 0),
        ("smpq", {}, 0),
        ("smpq", {"conversion": "cumulative"}, 0),
        ("smpq", {"players": "layer"}, 0),
        ("smpq", {"interactions": True}, 0),
        ("smpq", {"players": "layer", "interactions": True}, 0),
    ]
    seeds = (0,) if args.quick else (0, 1, 2)
    configs += [("smpq", {"exact": False, "max_evaluations": 100}, s) for s in seeds]
    configs += [("smpq", {"exact": False, "max_evaluations": 100, "conversion": "cumulative"}, 0)]
    configs += [("smpq", {"exact": False}, 0)]
    missing = {}
    for name in OTHERS:
        if name in plugins.methods:
            configs.append((name, {}, 0))
        else:
            missing[name] = broken.get(name, "not installed")
    rows = []
    for method, options, seed in configs:
        try:
            rows.append(run_method(plugins, task, method, options, seed))
        except Exception as exc:  # another plugin failing at run time: report it
            missing[method] = f"raised {type(exc).__name__}: {exc}"
            continue
        print(
            method,
            options,
            seed,
            {k: (v["accuracy"], round(v["loss"], 4)) for k, v in rows[-1]["budgets"].items()},
            flush=True,
        )

    conv = convergence(plugins, task, 100 if args.quick else 1000)
    est, exact = conv["mc"].shapley["upgrade"], conv["exact"].shapley["upgrade"]
    layers = conv["exact"].objective.layers
    table = {tuple(dict(k)[f] for f in layers): v for k, v in conv["exact"].values.items()}
    spec = mpqcore.introspect(task.model)
    params = np.array([spec.layer(f).params for f in layers], dtype=float)
    plot(conv, PLUGIN / "convergence.png")
    data = {
        "task": "digits-cnn",
        "float_accuracy": task.info["float_metric"],
        "bits": BITS,
        "threads": torch.get_num_threads(),
        "platform": f"{platform.machine()} {platform.processor() or platform.system()}, torch {torch.__version__}",
        "rows": rows,
        "oracle": oracle(plugins, task, table, layers, params),
        "missing": missing,
        "convergence": {
            "permutations": est.n_permutations,
            "evaluations": conv["mc"].evaluations,
            "forward_passes": conv["mc"].forward_passes,
            "players": [
                {
                    "player": f"{p[0]}:{p[1]}",
                    "exact": float(exact.values[exact.index(p)]),
                    "mc": float(v),
                    "stderr": float(s),
                }
                for p, v, s in zip(est.players, est.values, est.stderr, strict=True)
            ],
        },
        "wall_s": time.perf_counter() - t0,
        "load_average_at_end": list(__import__("os").getloadavg()),
    }
    print(write_results(HERE, data, markdown))


if __name__ == "__main__":
    main()
