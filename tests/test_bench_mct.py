"""Smoke test of benchmarks/bench_mct.py without MCT: its arguments, its mpq half on one zoo CNN, its tables.

MCT itself is never installed in the project environment (the benchmark runs it in its own
venv), so only the refusal without it and ``--no-mct`` are exercised here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mct", ROOT / "benchmarks" / "bench_mct.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refuses_without_mct_before_any_work(bench, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main(["--models", "plain3", "--mct-python", str(tmp_path / "no-python"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no interpreter at" in err and "pip install model-compression-toolkit==2.6.1" in err and "--no-mct" in err
    assert not out.exists()


def test_budget_outside_the_candidates_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--budgets", "1.5"])
    assert exc.value.code == 2
    assert "1.5 is outside the candidate widths 2..8" in capsys.readouterr().err


def test_mpq_half_alone_on_one_model(bench, tmp_path):
    assert bench.main(["--no-mct", "--models", "plain3", "--budgets", "3", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "mct.json").read_text())["rows"]
    assert [(r["model"], r["budget"]) for r in rows] == [("plain3", 3.0)]
    (row,) = rows
    assert row["uniform_bits"] == 3 and row["params"] == 8 * 9 + 16 * 8 * 9 + 256 * 10
    for key in ("float", "mpq_uniform", "mpq_bc_uniform", "mpq", "mpq_bc", "grid", "grid_bc", "grid_uniform"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["mpq_bits"] <= 3.0 + 1e-9 and row["mpq_bc_bits"] <= 3.0 + 1e-9
    assert "mct" not in row
    table = (tmp_path / "mct.md").read_text()
    assert "| plain3 | 3 |" in table and "MCT not run" in table and "MCT minus mpq" not in table


def test_comparison_counts_images(bench):
    rows = [
        {"model": "a", "budget": 3.0, "mct": 0.9800, "mpq": 0.9750, "mpq_bc": 0.9800},
        {"model": "b", "budget": 3.0, "mct": 0.9500, "mpq": 0.9600, "mpq_bc": 0.9400},
    ]
    uniforms = [(0.9850, 0.9700, 0.9800), (0.9500, 0.9650, 0.9300)]  # MCT, mpq, mpq + bc
    for row, (mct, mpq, mpq_bc) in zip(rows, uniforms, strict=True):
        row.update(mct_uniform=mct, mpq_uniform=mpq, mpq_bc_uniform=mpq_bc)
    text = "\n".join(bench.comparison(rows))
    assert "bc by the guard" not in text  # not run: not counted as "0 of 2 cells"
    rows[0]["mpq_bcg"], rows[1]["mpq_bcg"] = 0.9800, 0.9600  # corrected in a, not in b (below mpq's uniform 0.9650)
    text = "\n".join(bench.comparison(rows))
    # a: +2 and 0 images; b: -4 and +4 images
    assert "vs mpq, no bc, 3 bits: mean -1.00 images (-0.25 accuracy points) over 2 cells; MCT better in 1, " in text
    assert "vs mpq + bias correction, 3 bits: mean +2.00 images" in text and "tied in 1; from +0 to +4." in text
    assert "vs mpq default (bc by the guard), 3 bits: mean -2.00 images" in text
    assert (
        "MCT in 1 of 2 cells; mpq, no bc in 1 of 2 cells; mpq + bias correction in 0 of 2 cells; "
        "mpq default (bc by the guard) in 1 of 2 cells." in text
    )
