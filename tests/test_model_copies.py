"""At most one working copy of the model (none in place), and a bounded cache of quantized weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mpqcore
from mpqcore import Budget, ConfigError, MethodError
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return digits_task()


@pytest.fixture
def model_copies(monkeypatch):
    """Counts the deep copies of modules made anywhere in mpq."""
    copies = []
    real = copy.deepcopy

    def counting(obj, *args, **kwargs):
        if isinstance(obj, nn.Module):
            copies.append(type(obj).__name__)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", counting)
    return copies


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _search(task, model, **kw):
    return mpqcore.search(
        model, task.calibration, method="hawq", bits=(2, 4, 8), budget=Budget.average_bits(4), metric=task.metric,
        method_options={"samples": 2}, plugins=BUILTINS, **kw,
    )  # fmt: skip


def test_a_search_makes_one_copy_and_returns_it_quantized(task, model_copies):
    model = copy.deepcopy(task.model).train()
    model_copies.clear()
    before = _state(model)
    report = _search(task, model)
    assert model_copies == [type(model).__name__]  # the evaluator's working copy, handed over
    assert report.model is not model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the returned model has the user's modes back, and its metric is the reported one
    assert all(m.training for m in report.model.modules())
    assert report.model.training
    report.model.eval()
    assert task.metric(report.model) == pytest.approx(report.results["metric"])
    assert not any(m._forward_pre_hooks for m in report.model.modules())


def test_in_place_a_search_makes_no_copy(task, model_copies):
    model = copy.deepcopy(task.model)
    model_copies.clear()
    report = _search(task, model, inplace=True)
    assert model_copies == []
    assert report.model is model
    assert task.metric(model) == pytest.approx(report.results["metric"])


class _Interrupted:
    def measure(self, ctx):
        ctx.evaluator.loss(ctx.with_fixed({ctx.layers[0]: 2}))
        with ctx.evaluator.applied({ctx.layers[0]: 2}):
            raise KeyboardInterrupt  # Ctrl-C while a layer is quantized


class _Raises:
    def measure(self, ctx):
        with ctx.evaluator.applied({ctx.layers[0]: 2}):
            raise ValueError("a bug in a method")


def test_measuring_in_place_puts_everything_back_also_on_ctrl_c(task):
    model = copy.deepcopy(task.model).train()
    before = _state(model)
    m = mpqcore.measure(model, task.calibration, method="hawq", method_options={"samples": 2}, act_bits=8,
                        inplace=True, plugins=BUILTINS)  # fmt: skip
    m.evaluator.close()
    with pytest.raises(KeyboardInterrupt):
        mpqcore.measure(model, task.calibration, method=_Interrupted(), act_bits=8, inplace=True, plugins=BUILTINS)
    with pytest.raises(MethodError):
        mpqcore.measure(model, task.calibration, method=_Raises(), act_bits=8, inplace=True, plugins=BUILTINS)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(m.training for m in model.modules())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_in_place_is_refused_where_it_would_change_the_model(task):
    model = copy.deepcopy(task.model)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    torch.nn.utils.parametrizations.weight_norm(conv)
    with pytest.raises(ConfigError, match="inplace=True would bake"):
        mpqcore.measure(model, task.calibration, method="uniform", inplace=True, plugins=BUILTINS)
    assert torch.nn.utils.parametrize.is_parametrized(conv)


def test_a_bounded_weight_cache_changes_speed_not_values(task):
    q = BUILTINS.quantizers.create("minmax-per-tensor")
    free = mpqcore.Evaluator(task.model, task.calibration, None, q)
    layers = list(free.spec.fqns)
    biggest = max(free.weight(f).numel() * free.weight(f).element_size() for f in layers)
    bounded = mpqcore.Evaluator(task.model, task.calibration, None, q, weight_cache_bytes=biggest)
    assignments = [{f: b} for f in layers for b in (2, 4, 8)] + [dict.fromkeys(layers, 4)]
    assert bounded.losses(assignments) == free.losses(assignments)
    assert bounded.weight_cache["peak"] <= biggest + max(
        bounded.quantized(f, 2).codes.numel() + bounded.fake_quantized(f, 2).numel() * 4 for f in layers
    )  # the newest entry is always kept
    assert bounded.weight_cache["held"] <= biggest
    assert len(free._weights.values("dequantized")) == 3 * len(layers)
    assert len(free._weights.values("codes")) == 3 * len(layers)


def test_the_weight_cache_bound_is_a_search_option(task, monkeypatch):
    # search/measure/sweep and the CLI pass it to the evaluator; a bad value is refused first.
    seen = []
    init = mpqcore.Evaluator.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self.weight_cache_bytes)

    monkeypatch.setattr(mpqcore.Evaluator, "__init__", spy)
    mpqcore.search(task.model, task.calibration, method="uniform", weight_cache_bytes=4096, plugins=BUILTINS)
    assert seen and all(v == 4096 for v in seen[1:])  # the measuring and the guard's evaluators (the first
    # only runs the user's model on the held-out batches before any work)
    for bad in (-1, 2.5, "1MB", True):
        with pytest.raises(mpqcore.ConfigError, match="weight_cache_bytes must be None"):
            mpqcore.measure(task.model, task.calibration, method="uniform", weight_cache_bytes=bad, plugins=BUILTINS)
