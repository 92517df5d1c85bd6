"""Smoke test of benchmarks/run.py: the two built-in methods, one budget, one seed, on digits-cnn.

(The core test session hides installed plugins, so only ``uniform`` and ``hawq`` exist here.)"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_harness():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_on_digits_cnn(tmp_path, monkeypatch):
    bench = _load_harness()
    monkeypatch.setattr(bench, "BUDGETS", (3.0,))
    plan = bench.method_plan

    def cheap(method, task, quick, config):
        out = plan(method, task, quick, config)
        if method == "hawq":
            out.update(options={"samples": 2}, seeds=[0])
        return out

    monkeypatch.setattr(bench, "method_plan", cheap)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\nOLD-TEXT\n<!-- bench:end -->\ntail\n")
    out = tmp_path / "out"
    rc = bench.main(
        [
            "--quick",
            "--tasks",
            "digits-cnn",
            "--methods",
            "uniform",
            "hawq",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--readme",
            str(readme),
            "--bench-readme",
            "",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    got = {(r["config"], r["method"]) for r in rows}
    assert got == {("main", "uniform"), ("main", "hawq"), ("pinned", "uniform"), ("pinned", "hawq")}
    for r in rows:
        assert float(r["average_bits"]) <= 3.0 + 1e-9
        assert 0.0 <= float(r["metric_mean"]) <= 1.0
        assert r["solver_status"] == "optimal"
        assert 0.0 <= float(r["guard_kept"]) <= 1.0  # the never-worse guard's column
    runs = json.loads((out / "runs.json").read_text())
    pinned = [r for r in runs if r["config"] == "pinned"]
    assert pinned and all(r["allocation"]["conv1"] == 8 and r["allocation"]["fc2"] == 8 for r in pinned)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["machine"]["device"] == "cpu"
    for name in ("summary.md", "measure_time.png", "pareto_digits-cnn.png", "predicted_digits-cnn.png"):
        assert (out / name).is_file(), name
    text = readme.read_text()
    assert "**The never-worse guard**" in text
    assert "OLD-TEXT" not in text and text.endswith("<!-- bench:end -->\ntail\n") and "| 3 |" in text


def test_readme_without_markers_is_left_alone(tmp_path, capsys):
    bench = _load_harness()
    import _render

    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert _render.update_readme(readme, tmp_path, {}, records=[]) is False
    assert readme.read_text() == "no markers\n"
    assert "warning" in capsys.readouterr().out
    assert bench.method_plan("clado", "digits-cnn", True, "main")["bits"] == (2, 4, 8)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
