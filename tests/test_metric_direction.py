"""A lower-is-better metric: declared, carried through wrappers and tasks, turned into scores and reported."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import mpqcore
from mpqcore.metrics import DirectedMetric, as_score, higher_is_better, lower_is_better
from mpqcore.tasks import Task


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5)).eval()
    calibration = [torch.randn(16, 6) for _ in range(2)]
    x = torch.randn(64, 6)
    with torch.no_grad():
        reference = model(x)

    def change(m):  # 0 for the float model, grows as quantization moves the outputs
        with torch.no_grad():
            return float(((m(x) - reference) ** 2).mean())

    return model, calibration, change


def test_the_declaration_and_its_wrappers():
    def accuracy(model):
        return 1.0

    assert higher_is_better(accuracy) is True and higher_is_better(None) is True
    wrapped = lower_is_better(accuracy)
    assert isinstance(wrapped, DirectedMetric) and wrapped.higher_is_better is False
    assert wrapped.__name__ == "accuracy" and wrapped(None) == 1.0
    # a wrapper that keeps functools' __wrapped__ (as the search's own metric check does) keeps the direction
    outer = functools.wraps(wrapped)(lambda m: wrapped(m))
    assert higher_is_better(outer) is False
    accuracy.higher_is_better = "no"
    with pytest.raises(mpqcore.ConfigError, match="higher_is_better must be True or False, got 'no'"):
        higher_is_better(accuracy)
    assert as_score(3.0, True) == 3.0 and as_score(3.0, False) == -3.0


def test_evaluator_scores_a_lower_is_better_metric_as_its_negative():
    model, calibration, change = _model_and_data()
    meas = mpqcore.measure(model, calibration, method="uniform", bits=(2, 8), metric=lower_is_better(change))
    ev = meas.evaluator
    assert ev.metric_higher_is_better is False
    worse = {"0": 2, "2": 2}
    assert ev.metric(worse) > ev.metric({}) == 0.0
    assert ev.metric_score(worse) == -ev.metric(worse)
    assert ev.score(worse) < ev.score({})  # more damage, lower score
    assert ev.finetuned_score(worse, steps=0) == ev.metric_score(worse)
    assert ev.finetuned_score(worse, steps=2) < 0
    plain = mpqcore.measure(model, calibration, method="uniform", bits=(2, 8), metric=change).evaluator
    assert plain.metric_higher_is_better is True and plain.score(worse) == plain.metric(worse)


def test_search_records_the_direction():
    model, calibration, change = _model_and_data()
    report = mpqcore.search(
        model, calibration, method="uniform", bits=(2, 8), metric=lower_is_better(change),
        budget=mpqcore.Budget.average_bits(5.0),
    )  # fmt: skip
    assert report.results["metric_higher_is_better"] is False
    assert report.to_json()["results"]["metric_higher_is_better"] is False
    up = mpqcore.search(model, calibration, method="uniform", bits=(2, 8), metric=change,
                        budget=mpqcore.Budget.average_bits(5.0))  # fmt: skip
    assert up.results["metric_higher_is_better"] is True


def test_task_direction_is_carried_by_its_metric():
    model, calibration, change = _model_and_data()
    task = Task(name="t", model=model, calibration=calibration, metric=change, higher_is_better=False)
    assert task.metric.higher_is_better is False and task.metric.__wrapped__ is change
    declared = Task(name="t", model=model, calibration=calibration, metric=lower_is_better(change))
    assert declared.higher_is_better is False
    assert Task(name="t", model=model, calibration=calibration, metric=change).higher_is_better is True
    with pytest.raises(
        mpqcore.ConfigError, match="higher_is_better=True but its metric declares higher_is_better=False"
    ):
        Task(name="t", model=model, calibration=calibration, metric=lower_is_better(change), higher_is_better=True)


def test_cli_summary_and_sweep_plot_say_which_way_is_better(tmp_path):
    from mpqcore.cli import _summary
    from mpqcore.report import _direction

    model, calibration, change = _model_and_data()
    task = Task(name="t", model=model, calibration=calibration, metric=change, metric_name="change",
                higher_is_better=False)  # fmt: skip
    report = mpqcore.search(model, calibration, method="uniform", bits=(2, 8), metric=task.metric,
                            budget=mpqcore.Budget.average_bits(5.0))  # fmt: skip
    assert "(change: lower is better; loss: lower is better)" in _summary(report, task)
    rows = [{"metric": 1.0, "metric_higher_is_better": False}]
    assert _direction(rows, "metric") == "lower is better"
    assert _direction([{"metric": 1.0, "metric_higher_is_better": True}], "metric") == "higher is better"
    assert _direction(rows, "loss") == "lower is better"


def test_benchmark_tables_pick_the_lowest_perplexity(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import _render

    meta = {"tasks": {"lm": {"float": {"metric": 100.0}, "higher_is_better": False}, "cls": {"float": {"metric": 0.9}}}}
    rows = [
        {"task": t, "config": "main", "budget": 4.0, "method": m, "metric_mean": v, "measure_s": 1.0}
        for t, m, v in [("lm", "hawq", 120.0), ("lm", "uniform", 150.0), ("cls", "hawq", 0.8), ("cls", "uniform", 0.7)]
    ]
    best = {e["task"]: e for e in _render.best_table(rows, meta)}
    assert best["lm"]["best"] == "hawq" and best["lm"]["over_uniform"] == 30.0  # 30 perplexity points lower
    assert best["cls"]["best"] == "hawq" and best["cls"]["over_uniform"] == pytest.approx(0.1)
    assert _render.drop(meta, "lm", 120.0) == 20.0 and _render.drop(meta, "cls", 0.8) == pytest.approx(0.1)
