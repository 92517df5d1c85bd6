"""benchmarks/bench_evaluator.py's device plumbing, on the CPU: ``--device`` moves the model
and the batches, names the results file after the device type, and refuses a device
torch does not see before any work; ``--workers`` adds runs on that many cores with the
same values."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_evaluator", ROOT / "benchmarks" / "bench_evaluator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    monkeypatch.setattr(module, "BITS", (2, 8))
    yield module
    sys.modules.pop("bench_evaluator", None)


def test_results_are_named_after_the_device_type(bench):
    assert bench.results_name(torch.device("cpu")) == "evaluator"
    assert bench.results_name(torch.device("cuda:1")) == "evaluator-cuda"


def test_a_cpu_run_writes_the_cpu_results_with_equal_values(bench, tmp_path):
    bench.main(["--tasks", "digits-cnn", "--threads", "1", "--repeats", "1", "--device", "cpu"])
    saved = json.loads((tmp_path / "evaluator.json").read_text())
    assert saved["meta"]["device"] == "cpu"
    (row,) = saved["rows"]
    assert row["max_relative_difference"] == 0.0 and row["terms"] == 2 * row["layers"]
    assert "--device" not in (tmp_path / "evaluator.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_cuda_without_a_gpu_is_refused_before_any_work(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--tasks", "digits-cnn", "--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_merge_replaces_only_the_rerun_tasks_rows(bench, tmp_path):
    bench.main(["--tasks", "digits-cnn", "--threads", "1", "--repeats", "1"])
    saved = json.loads((tmp_path / "evaluator.json").read_text())
    other = {**saved["rows"][0], "task": "other-task"}
    saved["rows"] = [other, {**saved["rows"][0], "speedup": -1.0}]
    (tmp_path / "evaluator.json").write_text(json.dumps(saved))
    bench.main(["--tasks", "digits-cnn", "--threads", "1", "--repeats", "2", "--merge"])
    merged = json.loads((tmp_path / "evaluator.json").read_text())
    assert [r["task"] for r in merged["rows"]] == ["other-task", "digits-cnn"]
    assert merged["rows"][1]["speedup"] > 0 and merged["meta"]["reruns"] == {"digits-cnn": 2}
    assert "digits-cnn rerun alone: best of 2" in (tmp_path / "evaluator.md").read_text()


def test_the_workers_runs_give_the_single_runs_values(bench, tmp_path):
    ray = pytest.importorskip("ray")
    try:
        bench.main(["--tasks", "digits-cnn", "--threads", "1", "--repeats", "1", "--workers", "2"])
    finally:
        ray.shutdown()
    saved = json.loads((tmp_path / "evaluator.json").read_text())
    (row,) = saved["rows"]
    # the difference is over every run against the naive loop, the workers' included
    assert row["cores"] == 2 and row["max_relative_difference"] == 0.0
    assert row["workers"]["forward_passes"] > 0 and row["naive_cores"]["forward_passes"] > 0
    assert row["skipped_mac_fraction"] > 0  # from the single-process evaluator, not the idle driver
    assert saved["meta"]["ray_cluster_start_seconds"] > 0
    assert "| digits-cnn | 2 |" in (tmp_path / "evaluator.md").read_text()


def test_fewer_than_two_workers_is_refused_before_any_work(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--tasks", "digits-cnn", "--workers", "1"])
    assert "give 2 or more" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
