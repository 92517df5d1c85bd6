"""The ``size`` cost counts what is stored: integer codes plus the quantizer's scales and zero points."""

from __future__ import annotations

import math
import warnings

import attrs
import pytest
import torch

import mpqcore
from mpqcore import Budget, InfeasibleError
from mpqcore.costs import WeightSize, bind_quantizer
from mpqcore.quantizers import MSEPerChannel
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)
BITS = (2, 4, 8)


@pytest.fixture(scope="module")
def task():
    return digits_task()


def _measure(task, quantizer, **kwargs):
    return mpqcore.measure(
        task.model, task.calibration[:1], method="uniform", bits=BITS, quantizer=quantizer, plugins=BUILTINS, **kwargs
    )


def _stored_bits(layer, bits, scales, zero_points: bool) -> int:
    return layer.params * bits + scales * (32 + (8 if zero_points else 0))


@pytest.mark.parametrize(
    ("quantizer", "options"),
    [
        ("minmax-per-tensor", {}),
        ("mse-per-channel", {}),
        ("symmetric-per-channel", {"group_size": 32}),
        ("minmax-per-tensor", {"group_size": 64}),
    ],
)
def test_size_counts_the_layouts_scales_and_zero_points_exactly(task, quantizer, options):
    meas = _measure(task, quantizer, quantizer_options=options)
    table = meas.problem.costs["size"]
    group = options.get("group_size")
    asymmetric = quantizer == "minmax-per-tensor"
    for i, layer in enumerate(meas.spec.layers):
        channels = layer.weight_shape[layer.axis]
        k = layer.params // channels
        scales = 1 if quantizer == "minmax-per-tensor" and group is None else channels
        if group is not None:
            scales = channels * math.ceil(k / group)
        for j, b in enumerate(BITS):
            assert table[i, j] == _stored_bits(layer, b, scales, asymmetric), (layer.fqn, b)


def test_a_byte_budget_means_bytes_on_disk(task):
    codes_only = sum(layer.params for layer in _measure(task, "mse-per-channel").spec.layers) * 4 / 8
    # uniform 4 bits fits its codes' bytes only when nothing else is stored...
    report = mpqcore.search(task.model, task.calibration[:1], method="uniform", bits=BITS, plugins=BUILTINS,
                            quantizer="mse-per-channel", budget=Budget.size_bytes(codes_only))  # fmt: skip
    assert min(report.allocation.bits.values()) < 4  # the scales take room: some layer drops below 4 bits
    assert report.allocation.costs["size"] <= 8 * codes_only
    scales = sum(layer.weight_shape[layer.axis] for layer in report.spec.layers)
    stored = sum(layer.params * report.allocation.bits[layer.fqn] for layer in report.spec.layers) + 32 * scales
    assert report.allocation.costs["size"] == stored


def test_average_bits_count_the_codes_so_uniform_precision_fits_its_own_width(task):
    meas = _measure(task, "mse-per-channel", budget=Budget.average_bits(4.0))
    params = sum(layer.params for layer in meas.spec.layers)
    metadata = sum(32 * layer.weight_shape[layer.axis] for layer in meas.spec.layers)
    assert meas.problem.budgets["size"] == 4.0 * params + metadata
    report = mpqcore.search(measurement=meas, budget=Budget.average_bits(4.0), plugins=BUILTINS)
    assert set(report.allocation.bits.values()) == {4}
    with pytest.raises(InfeasibleError):  # below 2 bits of codes per weight nothing fits
        _measure(task, "mse-per-channel", budget=Budget.average_bits(1.9))


def test_a_quantizer_without_layout_counts_codes_only_and_says_so(task):
    @attrs.frozen
    class NoLayout:
        name = "no-layout"

        def quantize(self, weight, bits):
            return MSEPerChannel().quantize(weight, bits)

    with pytest.warns(UserWarning, match=r"'no-layout' declares no layout.*codes only"):
        meas = _measure(task, NoLayout())
    for i, layer in enumerate(meas.spec.layers):
        assert list(meas.problem.costs["size"][i]) == [layer.params * b for b in BITS]


def test_binding_is_one_place_and_leaves_other_costs_alone():
    size, bops = WeightSize(), BUILTINS.cost_models.create("bops")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bound = bind_quantizer({"size": size, "bops": bops}, MSEPerChannel(group_size=32))
    assert bound["bops"] is bops and size.layout is None  # the unbound model is unchanged
    assert bound["size"].layout == mpqcore.Layout("group", symmetric=True, group_size=32)
    layer = mpqcore.LayerInfo("fc", "Linear", params=10 * 100, weight_shape=(10, 100))
    assert bound["size"].cost(layer, 3) == 3000 + 10 * 4 * 32
    assert size.cost(layer, 3) == 3000


def test_a_problem_file_keeps_the_stored_sizes(task, tmp_path):
    from mpqcore.problem import problem_from_dict, problem_to_dict

    meas = _measure(task, "mse-per-channel", budget=Budget.size_bytes(12000))
    again = problem_from_dict(problem_to_dict(meas.problem))
    assert torch.equal(torch.as_tensor(again.costs["size"]), torch.as_tensor(meas.problem.costs["size"]))
    assert again.budgets["size"] == 12000 * 8
