"""Tables, plots, summary and README block of benchmarks/run.py (no measuring here)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from mpqcore.report import jsonable

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
METHOD_ORDER = ("uniform", "hawq", "alps", "clado", "eagl", "mixquant", "smpq")


def method_sort(names) -> list[str]:
    names = list(dict.fromkeys(names))
    known = [m for m in METHOD_ORDER if m in names]
    return known + sorted(n for n in names if n not in METHOD_ORDER)


# -- aggregation ---------------------------------------------------------------------------

COLUMNS = [
    "task",
    "config",
    "method",
    "budget",
    "bits_candidates",
    "seeds",
    "average_bits",
    "cost_bits",
    "limit_bits",
    "metric_mean",
    "metric_std",
    "metric_min",
    "metric_max",
    "loss_mean",
    "top10_agreement_mean",
    "predicted_mean",
    "forward_passes",
    "measure_s",
    "measure_cpu_s",
    "solve_s",
    "solver_status",
    "gap",
    "options",
    "notes",
    "guard_kept",
    "guard_replaced_by",
    "guard_metric_mean",
]


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate(records: list[dict]) -> list[dict]:
    groups: dict = defaultdict(list)
    for r in records:
        if r.get("status") == "ok":
            groups[(r["task"], r["config"], r["method"], r["budget"])].append(r)
    rows = []
    for (task, config, method, budget), rs in groups.items():
        metric = [r["metric"] for r in rs]
        rows.append(
            {
                "task": task,
                "config": config,
                "method": method,
                "budget": budget,
                "bits_candidates": ",".join(map(str, rs[0]["bits_candidates"])),
                "seeds": len(rs),
                "average_bits": _mean(r["average_bits"] for r in rs),
                "cost_bits": _mean(r["cost_bits"] for r in rs),
                "limit_bits": rs[0].get("limit_bits"),
                "metric_mean": float(np.mean(metric)),
                "metric_std": float(np.std(metric, ddof=1)) if len(metric) > 1 else 0.0,
                "metric_min": float(np.min(metric)),
                "metric_max": float(np.max(metric)),
                "loss_mean": _mean(r.get("loss") for r in rs),
                "top10_agreement_mean": _mean(r.get("top10_agreement") for r in rs),
                "predicted_mean": _mean(r["predicted"] for r in rs),
                "forward_passes": _mean(r["forward_passes"] for r in rs),
                "measure_s": _mean(r["measure_s"] for r in rs),
                "measure_cpu_s": _mean(r.get("measure_cpu_s") for r in rs),
                "solve_s": _mean(r["solve_s"] for r in rs),
                "solver_status": "/".join(sorted({r["solver_status"] for r in rs})),
                "gap": max((r["gap"] for r in rs if r.get("gap") is not None), default=None),
                "options": json.dumps(rs[0]["options"], sort_keys=True),
                "notes": "; ".join(rs[0]["notes"]),
                **_guard_columns(rs),
            }
        )
    task_order = {t: i for i, t in enumerate(dict.fromkeys(r["task"] for r in records))}
    order = {m: i for i, m in enumerate(method_sort(r["method"] for r in records))}
    rows.sort(key=lambda r: (task_order[r["task"]], r["config"] != "main", order[r["method"]], r["budget"]))
    return rows


def _guard_columns(rs: list[dict]) -> dict:
    """The never-worse guard over the seeds: the share of points where the method's answer was kept,
    what replaced it otherwise, the returned allocations' mean metric (None without the guard)."""
    guarded = [r for r in rs if r.get("guard")]
    if not guarded:
        return {"guard_kept": None, "guard_replaced_by": None, "guard_metric_mean": None}
    replaced = sorted({r["guard"].removeprefix("replaced by ") for r in guarded if r["guard"] != "kept"})
    return {
        "guard_kept": float(np.mean([r["guard"] == "kept" for r in guarded])),
        "guard_replaced_by": "/".join(replaced),
        "guard_metric_mean": _mean(r.get("guard_metric") for r in guarded),
    }


def guard_markdown(rows: list[dict], tasks: list[str], budgets: list) -> list[str]:
    """Per task, method and budget: the method's own answer kept, or what the guard returned instead."""
    main = [r for r in rows if r["config"] == "main" and r.get("guard_kept") is not None]
    if not main:
        return []
    methods = method_sort(r["method"] for r in main)
    lines = [
        "**The never-worse guard** (the method measures on 3/4 of the calibration, each answer is checked on the "
        "rest against uniform precision and neighbours): the method's own answer *kept*, or *replaced by* the "
        "candidate returned, with that allocation's metric:",
        "",
        "| task | avg bits | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for t in tasks:
        for b in budgets:
            cells = []
            for m in methods:
                r = next((r for r in main if r["task"] == t and r["method"] == m and r["budget"] == b), None)
                if r is None:
                    cells.append("n/a")
                elif r["guard_kept"] == 1.0:
                    cells.append("kept")
                else:
                    share = "" if r["seeds"] == 1 else f" ({1 - r['guard_kept']:.0%})"
                    cells.append(f"{r['guard_replaced_by']}{share}: {r['guard_metric_mean']:.4f}")
            lines.append(f"| {t} | {b:g} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_table(records: list[dict], out: Path) -> list[dict]:
    rows = aggregate(records)
    with (out / "table.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    (out / "table.json").write_text(json.dumps(jsonable(rows), indent=1))
    return rows


# -- analysis --------------------------------------------------------------------------------


def spearman(x, y) -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho) if math.isfinite(rho) else None


def higher_is_better(meta: dict, task: str) -> bool:
    """The task's metric direction (tiny-lm's perplexity is lower-is-better); runs before it was recorded: higher."""
    return meta["tasks"].get(task, {}).get("higher_is_better", True)


def drop(meta: dict, task: str, metric: float) -> float:
    """How much worse than float ``metric`` is, in metric points: float - metric, or metric - float when lower is better."""
    fm = meta["tasks"][task]["float"]["metric"]
    return fm - metric if higher_is_better(meta, task) else metric - fm


def correlations(records: list[dict], meta: dict) -> dict:
    """Per task and method: Spearman of the predicted objective vs the metric drop and the loss."""
    out: dict = {}
    for task in dict.fromkeys(r["task"] for r in records):
        for method in method_sort(r["method"] for r in records if r["task"] == task):
            rs = [
                r
                for r in records
                if r["task"] == task and r["method"] == method and r["config"] == "main" and r["status"] == "ok"
            ]
            if not rs:
                continue
            pred = [r["predicted"] for r in rs]
            out.setdefault(task, {})[method] = {
                "n": len(rs),
                "rho_metric_drop": spearman(pred, [drop(meta, task, r["metric"]) for r in rs]),
                "rho_loss": spearman(pred, [r["loss"] for r in rs]),
            }
    return out


def best_table(rows: list[dict], meta: dict | None = None) -> list[dict]:
    """Per task and budget (main configuration): the best method and its margins (> 0: better than the baseline).

    Best is the highest mean metric, the lowest for a lower-is-better one (``meta``'s ``higher_is_better``).
    """
    out = []
    by = defaultdict(dict)
    for r in rows:
        if r["config"] == "main":
            by[(r["task"], r["budget"])][r["method"]] = r
    for (task, budget), ms in by.items():
        sign = 1.0 if meta is None or higher_is_better(meta, task) else -1.0
        best = max(ms.values(), key=lambda r: (sign * r["metric_mean"], -(r["measure_s"] or 0)))
        tied = sorted(m for m, r in ms.items() if abs(r["metric_mean"] - best["metric_mean"]) < 1e-12)
        entry = {"task": task, "budget": budget, "best": best["method"], "tied": tied, "metric": best["metric_mean"]}
        for base in ("hawq", "uniform"):
            entry[f"over_{base}"] = sign * (best["metric_mean"] - ms[base]["metric_mean"]) if base in ms else None
            entry[base] = ms[base]["metric_mean"] if base in ms else None
        out.append(entry)
    return out


# -- plots ---------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(methods):
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(method_sort(list(METHOD_ORDER) + list(methods)))}


def plot_pareto(rows, meta, task, path) -> Path:
    plt = _plt()
    rs = [r for r in rows if r["task"] == task]
    methods = method_sort(r["method"] for r in rs)
    colors = _colors(methods)
    pinned = [r for r in rs if r["config"] == "pinned"]
    fig, axes = plt.subplots(1, 2 if pinned else 1, figsize=(11 if pinned else 6.5, 4.2), squeeze=False)
    fm = meta["tasks"][task]["float"]["metric"]
    name = meta["tasks"][task].get("metric_name", "metric")
    ax = axes[0, 0]
    for m in methods:
        pts = sorted(
            (r["average_bits"], r["metric_mean"], r["metric_std"])
            for r in rs
            if r["method"] == m and r["config"] == "main"
        )
        if pts:
            x, y, e = map(np.array, zip(*pts, strict=False))
            ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, label=m, color=colors[m], lw=1.3)
    ax.axhline(fm, color="k", ls=":", lw=1, label="float")
    ax.set_title(f"{task}: {name} vs average weight bits")
    ax.set_xlabel("achieved average weight bits")
    ax.set_ylabel(f"{name} ({'higher' if higher_is_better(meta, task) else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if pinned:
        ax = axes[0, 1]
        for m in method_sort(r["method"] for r in pinned):
            for config, style in (("main", "-"), ("pinned", "--")):
                pts = sorted(
                    (r["average_bits"], r["metric_mean"]) for r in rs if r["method"] == m and r["config"] == config
                )
                if pts:
                    ax.plot(
                        *zip(*pts, strict=False),
                        style,
                        marker="o",
                        ms=3,
                        color=colors[m],
                        label=f"{m} ({'free' if config == 'main' else 'pinned'})",
                    )
        ax.axhline(fm, color="k", ls=":", lw=1)
        extra = " + QKV tied" if meta["tasks"][task].get("ties") else ""
        ax.set_title(f"first/last layer pinned at 8 bits{extra} (dashed)", fontsize=9)
        ax.set_xlabel("achieved average weight bits")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_predicted(records, meta, corr, task, path) -> Path:
    plt = _plt()
    rs = [r for r in records if r["task"] == task and r["config"] == "main" and r["status"] == "ok"]
    methods = method_sort(r["method"] for r in rs)
    colors = _colors(methods)
    n = len(methods)
    cols = min(4, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.1 * cols, 2.6 * rows_n), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, m in zip(axes.flat, methods, strict=False):
        pts = [(r["predicted"], drop(meta, task, r["metric"]), r["budget"]) for r in rs if r["method"] == m]
        x, y, b = map(np.array, zip(*pts, strict=False))
        sc = ax.scatter(x, y, c=b, cmap="viridis", s=18, vmin=2.5, vmax=5)
        rho = corr.get(task, {}).get(m, {}).get("rho_metric_drop")
        ax.set_title(f"{m}: Spearman ρ = {'n/a' if rho is None else f'{rho:.2f}'}", fontsize=9, color=colors[m])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("measured metric drop", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("predicted objective", fontsize=8)
    worse = "float minus quantized" if higher_is_better(meta, task) else "quantized minus float"
    fig.suptitle(f"{task}: predicted objective vs measured drop ({worse}), one point per budget and seed", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    fig.colorbar(sc, ax=axes, shrink=0.6, label="budget (avg bits)", fraction=0.03, pad=0.02)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_times(rows, path) -> Path:
    plt = _plt()
    main = [r for r in rows if r["config"] == "main"]
    tasks = list(dict.fromkeys(r["task"] for r in main))
    methods = method_sort(r["method"] for r in main)
    colors = _colors(methods)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = []
        for t in tasks:
            v = [r["measure_cpu_s"] or r["measure_s"] for r in main if r["task"] == t and r["method"] == m]
            vals.append(max(v[0], 1e-3) if v else np.nan)
        ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, vals, width, label=m, color=colors[m])
    ax.set_yscale("log")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("measurement CPU time (s, log)")
    ax.set_title("cost of one measurement per method (CPU seconds, mean over seeds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- summary ----------------------------------------------------------------------------------------


def _f(v, fmt=".4f"):
    return "–" if v is None else format(v, fmt)


def _signed(v, fmt="+.4f"):
    return "–" if v is None else format(v, fmt)


def machine_line(meta) -> str:
    m = meta["machine"]
    dev = m.get("device", "cpu")
    gpu = (
        f"GPU: {m['device_name']}"
        if dev.startswith("cuda")
        else "GPU: none on this machine, so GPU timings were not available (with one, `--device auto` runs on it and names it here)"
    )
    load = m.get("load_average_start")
    load_s = f"; load average at start {load[0]:.1f}" if load else ""
    return (
        f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads{load_s}; torch {m['torch']}, "
        f"Python {m['python']}. {gpu}."
    )


def _failed(records, task, config, method, budget) -> str | None:
    for r in records:
        if (r["task"], r["config"], r["method"], r["budget"]) == (task, config, method, budget) and r["status"] != "ok":
            return "infeasible" if "Infeasible" in (r.get("error") or "") else "failed"
    return None


def results_markdown(rows, records, meta, link_prefix: str = "") -> str:
    """The generated block: best-method table, metric per method, times, missing, plots."""
    corr = correlations(records, meta)
    best = best_table(rows, meta)
    main = [r for r in rows if r["config"] == "main"]
    methods = method_sort(r["method"] for r in main)
    tasks = list(meta["tasks"])
    lines = []
    wall, cpu = meta.get("wall_s"), meta.get("cpu_s")
    cpu_s = (
        (
            f", process CPU time {cpu:.0f} s ({cpu / 60:.1f} min); the machine was shared with other jobs, so "
            f"both vary from run to run"
        )
        if cpu
        else ""
    )
    resumed = "".join(f" + `{c}`" for c in meta.get("resumed", []))
    lines.append(
        f"Generated by `{meta['command']}`{resumed} on {meta.get('finished', meta['started'])[:10]}"
        f"{'' if meta.get('complete') else ' (PARTIAL: the run did not finish)'}; wall time "
        f"{_f(wall, '.0f')} s ({_f(wall / 60 if wall else None, '.1f')} min){cpu_s}. Machine: {machine_line(meta)}"
    )
    if meta.get("quick"):
        lines.append("")
        lines.append(
            "This is the **quick** run (cheaper settings, listed below the tables); numbers are "
            "comparable between methods within the run, not with the full run."
        )
    lines.append("")
    lines.append("**Metric at each average-bits budget** (mean over seeds; ± = std over seeds; **bold** = best):")
    lines.append("")
    for t in tasks:
        info = meta["tasks"][t]
        lower = (
            ""
            if higher_is_better(meta, t)
            else " (lower is better; the best-minus-baseline columns say how much lower)"
        )
        lines.append(
            f"*{t}* — {info.get('metric_name', 'metric')}{lower}, float {info['float']['metric']:.4f}, "
            f"{info['layers']} layers, {info['params']:,} weights"
        )
        lines.append("")
        lines.append("| avg bits | " + " | ".join(methods) + " | best − hawq | best − uniform |")
        lines.append("|---" * (len(methods) + 3) + "|")
        for b in meta["budgets"]:
            cells = []
            bt = next((e for e in best if e["task"] == t and e["budget"] == b), None)
            for m in methods:
                r = next((r for r in main if r["task"] == t and r["method"] == m and r["budget"] == b), None)
                if r is None:
                    cells.append(_failed(records, t, "main", m, b) or "n/a")
                    continue
                s = f"{r['metric_mean']:.4f}" + (f" ±{r['metric_std']:.3f}" if r["seeds"] > 1 else "")
                if bt and m in bt["tied"]:
                    s = f"**{s}**"
                cells.append(s)
            lines.append(
                f"| {b:g} | "
                + " | ".join(cells)
                + f" | {_signed(bt and bt['over_hawq'])} | {_signed(bt and bt['over_uniform'])} |"
            )
        lines.append("")
    lines += guard_markdown(rows, tasks, meta["budgets"])
    lines.append(
        "**Cost of one measurement** (wall seconds / CPU seconds of the process, forward passes) and "
        "Spearman ρ of the predicted objective against the measured metric drop over budgets and seeds "
        "(one measurement serves all four budgets):"
    )
    lines.append("")
    lines.append("| task | " + " | ".join(methods) + " |")
    lines.append("|---" * (len(methods) + 1) + "|")
    for t in tasks:
        cells = []
        for m in methods:
            r = next((r for r in main if r["task"] == t and r["method"] == m), None)
            if r is None:
                cells.append("n/a")
                continue
            rho = corr.get(t, {}).get(m, {}).get("rho_metric_drop")
            cpu = f" / {r['measure_cpu_s']:.1f}" if r.get("measure_cpu_s") is not None else ""
            cells.append(f"{r['measure_s']:.1f}{cpu} s, {r['forward_passes']:.0f} fwd; ρ {_f(rho, '.2f')}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("")
    pinned = [r for r in rows if r["config"] == "pinned"]
    if pinned:
        lines.append(
            "**Pins and ties**: first and last quantizable layer pinned at 8 bits (on minilm also the "
            "query/key/value of each attention block tied); metric pinned − free at the same budget:"
        )
        lines.append("")
        pm = method_sort(r["method"] for r in pinned)
        lines.append("| task | avg bits | " + " | ".join(pm) + " |")
        lines.append("|---" * (len(pm) + 2) + "|")
        for t in tasks:
            for b in meta["budgets"]:
                cells = []
                for m in pm:
                    p = next((r for r in pinned if r["task"] == t and r["method"] == m and r["budget"] == b), None)
                    f = next((r for r in main if r["task"] == t and r["method"] == m and r["budget"] == b), None)
                    if p and f:
                        cells.append(f"{p['metric_mean']:.4f} ({p['metric_mean'] - f['metric_mean']:+.4f})")
                    else:
                        cells.append(_failed(records, t, "pinned", m, b) or "n/a")
                if any(c != "n/a" for c in cells):
                    lines.append(f"| {t} | {b:g} | " + " | ".join(cells) + " |")
        lines.append("")
    negative = defaultdict(set)
    for r in records:
        for f in (r.get("method_info") or {}).get("negative_traces") or []:
            negative[(r["task"], r["config"], r["seed"])].add(f)
    if negative:
        lines.append(
            "**hawq caveat:** some layers' Hutchinson trace estimates came out negative (noise; the true "
            "trace is >= 0); negative or clamped to 0, such a layer looks free to quantize and gets the "
            "lowest candidate at every budget: "
            + "; ".join(f"{t} [{c}] seed {s}: {', '.join(sorted(fs))}" for (t, c, s), fs in sorted(negative.items()))
            + "."
        )
        lines.append("")
    notes = defaultdict(set)
    for r in main:
        if r["notes"]:
            notes[(r["task"], r["method"])].add(r["notes"])
    changes = [(t, c) for t in tasks for c in meta["tasks"][t].get("quick_changes", [])]
    if notes or changes:
        lines.append("**Settings that differ from the defaults" + (" (quick run)" if meta.get("quick") else "") + ":**")
        lines.append("")
        for t, c in changes:
            lines.append(f"- {t}: {c}")
        for (t, m), ns in notes.items():
            lines.append(f"- {t} / {m}: {'; '.join(sorted(ns))}")
        lines.append("")
    missing = [
        x
        for x in meta.get("missing", [])
        if x.get("config", "main") == "main" and "pinned configuration" not in x["reason"]
    ]
    missing = [x for i, x in enumerate(missing) if x not in missing[:i]]
    pinned_failed = [x for x in meta.get("missing", []) if x.get("config") == "pinned"]
    run_tasks = set(tasks)
    not_run = [
        t
        for t in ("digits-cnn", "digits-resnet18", "minilm", "tiny-lm")
        if t not in run_tasks and not any(x["task"] == t for x in missing)
    ]
    if not missing and not not_run:
        lines.append("**Missing:** none — every installed method and both baselines ran on every task.")
    else:
        lines.append("**Missing:**")
    for x in missing:
        lines.append(f"- {x['task']} / {x['method']}: {x['reason']}")
    for t in not_run:
        lines.append(f"- {t}: not requested in this run (--tasks)")
    for x in pinned_failed:
        lines.append(f"- {x['task']} / {x['method']} (pinned): {x['reason']}")
    infeasible = defaultdict(set)
    for r in records:
        if "Infeasible" in (r.get("error") or ""):
            infeasible[(r["task"], r["config"], r["method"])].add(r["budget"])
    for (t, c, m), bs in infeasible.items():
        why = "the pinned and tied layers alone cost more than the budget"
        if m == "uniform":
            why += (
                "; uniform ties every free layer together, so a tie to a pinned layer (minilm: block 0's "
                "query is pinned and tied to its key and value) puts every layer at 8 bits"
            )
        lines.append(f"- {t} / {m} [{c}] at {', '.join(f'{b:g}' for b in sorted(bs))} bits: infeasible: {why}")
    lines.append("")
    plots = ["measure_time.png"] + [f"pareto_{t}.png" for t in tasks] + [f"predicted_{t}.png" for t in tasks]
    lines.append("Plots: " + ", ".join(f"[{p}]({link_prefix}{p})" for p in plots))
    return "\n".join(lines)


def write_summary(out: Path, rows, records, meta) -> Path:
    best = best_table(rows, meta)
    lines = ["# Benchmark summary", ""]
    lines.append(
        "Best method per task and average-bits budget (highest mean metric, lowest for a lower-is-better "
        "one such as tiny-lm's perplexity; ties listed), and its margin over the `hawq` and `uniform` "
        "baselines (metric points, same budget; > 0 = better)."
    )
    lines.append("")
    lines.append("| task | avg bits | best | metric | − hawq | − uniform | tied with |")
    lines.append("|---|---|---|---|---|---|---|")
    for e in best:
        tied = ", ".join(m for m in e["tied"] if m != e["best"]) or ""
        lines.append(
            f"| {e['task']} | {e['budget']:g} | {e['best']} | {e['metric']:.4f} | {_signed(e['over_hawq'])} | "
            f"{_signed(e['over_uniform'])} | {tied} |"
        )
    lines.append("")
    lines.append(results_markdown(rows, records, meta))
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def render(out: Path, records: list[dict], meta: dict) -> None:
    rows = aggregate(records)
    if not rows:
        return
    corr = correlations(records, meta)
    (out / "correlations.json").write_text(json.dumps(jsonable(corr), indent=1))
    for t in meta["tasks"]:
        if any(r["task"] == t for r in rows):
            plot_pareto(rows, meta, t, out / f"pareto_{t}.png")
            plot_predicted(records, meta, corr, t, out / f"predicted_{t}.png")
    plot_times(rows, out / "measure_time.png")
    write_summary(out, rows, records, meta)


def update_readme(readme: Path, out: Path, meta: dict, records: list[dict] | None = None) -> bool:
    """Replace the text between the bench markers of ``readme``; warn and skip when absent."""
    if not readme.is_file():
        print(f"warning: {readme} does not exist; README table not written", flush=True)
        return False
    text = readme.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        print(f"warning: {readme} has no {START} ... {END} markers; README table not written", flush=True)
        return False
    if records is None:
        records = json.loads((out / "runs.json").read_text())
    rows = aggregate(records)
    prefix = os.path.relpath(out.resolve(), readme.resolve().parent).replace(os.sep, "/") + "/"
    block = results_markdown(rows, records, meta, link_prefix=prefix)
    new = text[: text.index(START) + len(START)] + "\n" + block + "\n" + text[text.index(END) :]
    readme.write_text(new)
    print(f"updated the benchmark block of {readme}", flush=True)
    return True
