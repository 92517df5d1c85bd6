"""Measurement on Ray workers: the single-process objective, and clear errors before any work."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

import mpqcore
from mpqcore import Budget, ConfigError
from mpqcore.testing import digits_task

ray = pytest.importorskip("ray")
BUILTINS = mpqcore.PluginSet(autoload=False)


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return digits_task()


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _methods():
    out = [("hawq", {"samples": 2})]
    for module, cls, options in [
        ("mpqcore_clado.method", "Clado", {}),
        ("mpqcore_alps.method", "AccuracyAwareSelection", {}),
        ("mpqcore_smpq.method", "ShapleyBitWidth", {"max_evaluations": 60, "exact": False}),
    ]:
        try:
            mod = __import__(module, fromlist=[cls])
        except ImportError:
            continue
        out.append((getattr(mod, cls), options))  # a renamed class fails here, loudly
    return out


@pytest.mark.parametrize("method, options", _methods(), ids=lambda m: getattr(m, "__name__", str(m)))
def test_two_ray_workers_give_the_single_process_objective(task, cluster, method, options):
    def run(workers):
        impl = method if isinstance(method, str) else method(**options)
        return mpqcore.measure(
            task.model, task.calibration, method=impl, bits=(2, 4, 8), metric=task.metric, workers=workers,
            method_options=options if isinstance(method, str) else None, plugins=BUILTINS,
        )  # fmt: skip

    alone, spread = run(None), run(2)
    assert np.array_equal(alone.objective.unary, spread.objective.unary)
    assert dict(alone.objective.pairs) == dict(spread.objective.pairs)
    spread.evaluator.close()


def test_a_search_on_workers_returns_the_same_allocation(task, cluster):
    kw = {"method": "uniform", "bits": (2, 4, 8), "budget": Budget.average_bits(4), "plugins": BUILTINS}
    one = mpqcore.search(task.model, task.calibration, **kw)
    two = mpqcore.search(task.model, task.calibration, workers=2, **kw)
    assert dict(one.allocation.bits) == dict(two.allocation.bits)


def test_losses_and_metrics_on_workers_are_the_driver_values(task, cluster):
    q = BUILTINS.quantizers.create("minmax-per-tensor")
    local = mpqcore.Evaluator(task.model, task.calibration, None, q, metric=task.metric)
    pooled = mpqcore.Evaluator(task.model, task.calibration, None, q, metric=task.metric, workers=2)
    assignments = [{f: b} for f in local.spec.fqns for b in (2, 4)]
    assert pooled.losses(assignments) == local.losses(assignments)
    assert pooled.metrics(assignments[:4]) == local.metrics(assignments[:4])
    assert pooled.evaluations == len(assignments) + 4
    pooled.close()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"workers": 0}, "workers=0"),
        ({"workers": 2.5}, "whole number"),
        ({"ray_address": "127.0.0.1:9"}, "without workers"),
        ({"workers": 2, "ray_address": "127.0.0.1:1"}, "no Ray cluster answers"),
        ({"workers": 2, "ray_address": "nonsense"}, "host:port"),
    ],
)
def test_bad_worker_settings_are_refused_before_any_work(task, kw, match):
    with pytest.raises(ConfigError, match=match):
        mpqcore.measure(task.model, task.calibration, method="hawq", plugins=BUILTINS, **kw)


def test_workers_without_ray_installed_say_how_to_get_it(task, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"mpqcore\[ray\]"):
        mpqcore.measure(task.model, task.calibration, method="hawq", workers=2, plugins=BUILTINS)


def test_values_stored_as_they_come_on_workers_are_the_driver_values(task, cluster, tmp_path, monkeypatch):
    # with a cache, the workers score in rounds and every round is stored before the next
    from mpqcore import evaluate
    from mpqcore.measurement_cache import MeasurementCache, model_digest

    monkeypatch.setattr(evaluate, "POOL_ROUND", 4)
    q = BUILTINS.quantizers.create("minmax-per-tensor")
    local = mpqcore.Evaluator(task.model, task.calibration, None, q, metric=task.metric)
    fqns = local.spec.fqns
    cache = MeasurementCache(tmp_path, model_key=model_digest(task.model), layers=fqns)
    pooled = mpqcore.Evaluator(task.model, task.calibration, None, q, metric=task.metric, workers=2, cache=cache)
    stored = []
    put = cache.put
    monkeypatch.setattr(cache, "put", lambda key, value: stored.append(key) or put(key, value))
    rounds = []
    gather = pooled._pool._gather
    monkeypatch.setattr(pooled._pool, "_gather", lambda calls: rounds.append(len(stored)) or gather(calls))
    batch = [{f: b, g: c} for f in fqns for g in fqns if f < g for b in (2, 4) for c in (2, 8)]
    assert pooled.losses(batch) == local.losses(batch)
    assert pooled.metrics(batch[:10]) == local.metrics(batch[:10])
    assert len(cache) == len(batch) + 10
    assert len(rounds) == -(-len(batch) // 8) + -(-10 // 8)  # rounds of 4 per worker
    assert rounds[:3] == [0, 8, 16]  # each round stored before the next was sent
    pooled.close()
