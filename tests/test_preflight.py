"""Bad input is refused before any work, and the user's model is never harmed (issue 13).

"Before any work" is checked with a spy method that records whether it was asked to
measure: an argument the core can check up front must fail before the method runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import mpqcore
from mpqcore import Budget, ConfigError, InfeasibleError, Objective
from mpqcore.preflight import check_device, checked_metric, metric_value
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)


class Spy:
    """A method that remembers being called and otherwise behaves like 'uniform'."""

    def __init__(self):
        self.calls = 0

    def measure(self, ctx):
        self.calls += 1
        unary = np.tile(-np.asarray(ctx.bits, float), (len(ctx.layers), 1))
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=unary)


@pytest.fixture(scope="module")
def task():
    return digits_task()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(before, model):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed"


def refused(task, error=ConfigError, match=None, **kw):
    spy = Spy()
    with pytest.raises(error, match=match):
        mpqcore.search(task.model, task.calibration, method=spy, plugins=BUILTINS, **kw)
    assert spy.calls == 0, "the method ran before the bad input was refused"


# -- arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2.5, True, -1, 2**64, "7"])
def test_bad_seeds(task, seed):
    refused(task, match=r"seed must be an integer between 0 and 2\*\*63 - 1", seed=seed)


@pytest.mark.parametrize("act_bits", [8.5, True, 1, 17, "8"])
def test_bad_activation_widths(task, act_bits):
    refused(task, match="act_bits must be None or an integer between 2 and 16", act_bits=act_bits)


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("tpu", "not a torch device|mpq runs on cpu, cuda or mps"),
        (3, "device must be None, a str"),
        pytest.param(
            "cuda",
            "no CUDA device on this machine",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_unavailable_devices(task, device, match):
    refused(task, match=match, device=device)


def test_the_cpu_is_a_device():
    assert check_device("cpu") == torch.device("cpu") and check_device(None) is None


def test_metric_and_loss_must_be_callable(task):
    refused(task, match=r"metric must be a callable \(model\) -> float", metric="accuracy")
    refused(task, match=r"loss must be a callable \(outputs, batch\) -> Tensor", loss=3)


# -- budgets, pins and ties ------------------------------------------------------------


def test_a_budget_below_the_cheapest_allocation_is_refused_before_measuring(task):
    refused(task, InfeasibleError, match="cheapest achievable", bits=(2, 4, 8), budget=Budget.average_bits(1.5))


def test_a_tie_against_a_pin_is_refused_before_measuring(task):
    refused(
        task,
        InfeasibleError,
        match="tied but pinned to different bit-widths",
        bits=(2, 4, 8),
        pins={"conv1": 8, "conv2": 2},
        ties=[["conv1", "conv2"]],
    )


class TwoBitPenalty:
    """A cost that is 1 for every layer at 2 bits and 0 above: not monotone in the width."""

    unit = "layers at 2 bits"

    def cost(self, layer, bits):
        return 1.0 if bits == 2 else 0.0


def test_budgets_that_conflict_only_together_are_refused_before_measuring(task):
    # Each alone is reachable (all at 2 bits; all at 8 bits), both together are not.
    budgets = [Budget.average_bits(2.0), Budget.absolute("penalty", 0.5)]
    spy = Spy()
    mpqcore.measure(task.model, task.calibration, method=spy, bits=(2, 8), budget=budgets[:1],
                    cost_models={"penalty": TwoBitPenalty()}, cost="penalty", plugins=BUILTINS)  # fmt: skip
    assert spy.calls == 1
    refused(task, InfeasibleError, bits=(2, 8), budget=budgets, cost_models={"penalty": TwoBitPenalty()})


# -- the metric's own faults -----------------------------------------------------------


def test_a_metric_that_raises_returns_text_or_a_vector_is_named():
    model = nn.Linear(2, 2)

    def raises(m):
        raise RuntimeError("no test data")

    with pytest.raises(ConfigError, match=r"the metric .*raises raised RuntimeError: no test data"):
        checked_metric(raises)(model)
    with pytest.raises(ConfigError, match="returned str 'high'"):
        checked_metric(lambda m: "high")(model)
    with pytest.raises(ConfigError, match=r"returned a tensor of shape \(3,\)"):
        checked_metric(lambda m: torch.ones(3))(model)
    with pytest.raises(ConfigError, match="returned nan"):
        checked_metric(lambda m: math.nan)(model)
    assert checked_metric(lambda m: torch.tensor(0.5))(model) == 0.5
    assert metric_value(np.float32(0.25)) == 0.25 and metric_value(1) == 1.0


def test_a_raising_metric_in_an_in_place_search_leaves_the_model_as_it_was(task):
    # Bug: the weights were quantized in place first, then the metric raised: no report,
    # and the user's model quantized. Now the model is changed last, all or nothing.
    model = digits_task().model
    import copy

    model = copy.deepcopy(model)
    before = state(model)

    def broken(m):
        raise ValueError("metric data missing")

    with pytest.raises(ConfigError, match="metric data missing"):
        mpqcore.search(model, task.calibration, method="uniform", bits=(2, 4, 8), metric=broken, inplace=True,
                       plugins=BUILTINS)  # fmt: skip
    assert_same(before, model)


class FailsWhenArmed:
    """A quantizer that breaks on its second layer once armed (after measuring)."""

    def __init__(self):
        from mpqcore.quantizers import MinMaxPerTensor

        self.inner = MinMaxPerTensor()
        self.armed = False
        self.seen = 0

    def quantize(self, weight, bits):
        if self.armed:
            self.seen += 1
            if self.seen == 2:
                raise RuntimeError("out of memory (simulated)")
        return self.inner.quantize(weight, bits)


def test_an_in_place_apply_that_fails_midway_restores_every_weight(task):
    import copy

    model = copy.deepcopy(task.model)
    before = state(model)
    quantizer = FailsWhenArmed()
    meas = mpqcore.measure(model, task.calibration, method="uniform", bits=(2, 4, 8), quantizer=quantizer,
                           plugins=BUILTINS)  # fmt: skip
    quantizer.armed = True
    with pytest.raises(RuntimeError, match="simulated"):
        mpqcore.search(model, measurement=meas, budget=Budget.average_bits(4), inplace=True, plugins=BUILTINS)
    assert quantizer.seen == 2  # the first layer was quantized in place before the failure
    assert_same(before, model)


# -- models the core cannot work on ----------------------------------------------------


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.stream = (i for i in range(3))  # a generator cannot be deep-copied

    def forward(self, x):
        return self.fc(x)


def test_models_that_cannot_be_worked_on_get_clear_errors():
    x = torch.randn(5, 4)
    with pytest.raises(ConfigError, match="TorchScript module"):
        mpqcore.search(torch.jit.script(nn.Linear(4, 3)), [x], method="uniform", plugins=BUILTINS)
    with torch.device("meta"):
        meta = nn.Linear(4, 3)
    with pytest.raises(ConfigError, match="meta device"):
        mpqcore.search(meta, [x], method="uniform", plugins=BUILTINS)
    with pytest.raises(ConfigError, match=r"copy.deepcopy failed: TypeError"):
        mpqcore.search(Holder(), [x], method="uniform", plugins=BUILTINS)


def test_non_finite_float_outputs_and_empty_batches_are_named_by_batch():
    torch.manual_seed(0)
    bad = torch.randn(5, 4)
    bad[2, 1] = math.nan  # one missing feature in the second batch
    with pytest.raises(ConfigError, match="output on calibration batch 1 has 3 non-finite values"):
        mpqcore.search(nn.Linear(4, 3), [torch.randn(5, 4), bad], method="uniform", plugins=BUILTINS)
    with pytest.raises(ConfigError, match="calibration batch 1 is empty"):
        mpqcore.search(nn.Linear(4, 3), [torch.randn(5, 4), torch.randn(0, 4)], method="uniform", plugins=BUILTINS)


# -- sweeps ----------------------------------------------------------------------------


def test_a_sweep_keeps_the_points_it_can_solve_and_names_the_others(task):
    budgets = [Budget.average_bits(1.0), Budget.average_bits(3.0), Budget.average_bits(5.0)]
    meas, points = mpqcore.sweep(task.model, task.calibration, method="uniform", bits=(2, 4, 8), budgets=budgets,
                                 plugins=BUILTINS)  # fmt: skip
    assert [p.allocation is None for p in points] == [True, False, False]
    assert "cheapest achievable" in points[0].error and points[1].error == ""
    params = {layer.fqn: layer.params for layer in meas.spec.layers}
    assert points[2].allocation.average_bits(params) > points[1].allocation.average_bits(params)


def test_a_sweep_of_impossible_budgets_is_refused_before_measuring(task):
    spy = Spy()
    with pytest.raises(InfeasibleError, match="no budget of the sweep can be met"):
        mpqcore.sweep(task.model, task.calibration, method=spy, bits=(2, 4, 8),
                      budgets=[Budget.average_bits(1.0), Budget.average_bits(1.5)], plugins=BUILTINS)  # fmt: skip
    assert spy.calls == 0
    with pytest.raises(ConfigError, match="sweep got unknown options"):
        mpqcore.sweep(task.model, task.calibration, budgets=[Budget.average_bits(3)], quantiser="x", plugins=BUILTINS)


def test_the_checked_metric_keeps_the_direction_the_metric_declares():
    from mpqcore.metrics import higher_is_better, lower_is_better

    perplexity = checked_metric(lower_is_better(lambda m: 3.0))
    assert perplexity.higher_is_better is False and not higher_is_better(perplexity)
    assert checked_metric(lambda m: 0.9).higher_is_better is True


def test_a_budget_that_never_binds_is_said_to_be_so(task):
    with pytest.warns(UserWarning, match=r"budget on 'size' .* is above the dearest allocation"):
        mpqcore.measure(task.model, task.calibration, method=Spy(), bits=(2, 4, 8), budget=Budget.average_bits(12),
                        plugins=BUILTINS)  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exactly the dearest allocation binds: no warning
        mpqcore.measure(task.model, task.calibration, method=Spy(), bits=(2, 4, 8), budget=Budget.average_bits(8),
                        plugins=BUILTINS)  # fmt: skip
