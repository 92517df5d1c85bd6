"""benchmarks/bench_cache.py on digits-cnn: an interrupted CLADO batch resumes with only the
missing half, the same objective, and a second search reads the objective back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mpqcore.plugins import ENV_DISABLE_AUTOLOAD, reset_plugins

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mpqcore_clado")


def test_the_cache_benchmark_resumes_and_reuses(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD)  # the benchmark finds clado as a user does: by entry point
    reset_plugins()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("bench_cache", ROOT / "benchmarks" / "bench_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--tasks", "digits-cnn", "--methods", "clado", "--out", str(tmp_path)])
    (row,) = json.loads((tmp_path / "cache.json").read_text())["rows"]
    cold, resumed = row["cold"], row["resumed"]
    assert resumed["interrupted_after"] == cold["evaluations"] // 2 > 0
    assert resumed["evaluations"] == cold["evaluations"] - resumed["interrupted_after"]
    assert resumed["from_cache"] >= resumed["interrupted_after"]
    assert resumed["objective_identical"]
    first, second = row["re_search"]
    assert not first["objective_from_cache"] and second["objective_from_cache"]
    assert second["measure_forward_passes"] == 0
    assert "| digits-cnn | clado |" in (tmp_path / "cache.md").read_text()
