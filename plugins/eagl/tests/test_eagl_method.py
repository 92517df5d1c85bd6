"""The ``eagl`` method end to end on tiny models whose entropies are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mpqcore
from mpqcore_eagl import EntropyGuided


def _model(*weights):
    layers = []
    for w in weights:
        lin = nn.Linear(len(w), 1, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([w]))
        layers.append(lin)
    return nn.Sequential(*layers)


def test_hand_worked_objective_both_scales():
    # Layer "0": w = [0, 1, 2, 3] has H_1 = 1, H_2 = 2, H_3 = 2 (see test_eagl_entropy).
    # Layer "1": a single weight: one code, H = 0 at every width.
    model = _model([0.0, 1.0, 2.0, 3.0], [0.5])
    calib = [torch.zeros(2, 4)]
    hand = {"quantizer": "minmax-per-tensor"}  # the quantizer these entropies were worked out for
    per_weight = mpqcore.measure(
        model, calib, method="eagl", bits=(1, 2, 3), method_options={"scale": "per-weight"}, **hand
    ).objective
    np.testing.assert_allclose(per_weight.unary, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-12)
    assert per_weight.info["entropy"]["0"] == pytest.approx({1: 1.0, 2: 2.0, 3: 2.0})
    params = mpqcore.measure(model, calib, method="eagl", bits=(1, 2, 3), **hand).objective
    np.testing.assert_allclose(params.unary, [[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-12)
    assert params.info["scale"] == "cost" and params.info["scaled_by"] == "size"  # size: the parameter count


def test_scaling_is_the_parameter_count_and_zero_at_the_top():
    from mpqcore.testing import digits_task

    task = digits_task()
    a = mpqcore.measure(task.model, task.calibration, method="eagl", bits=(2, 4, 8), method_options={"scale": "params"})
    b = mpqcore.measure(
        task.model, task.calibration, method="eagl", bits=(2, 4, 8), method_options={"scale": "per-weight"}
    )
    params = np.array([layer.params for layer in a.spec.layers], dtype=float)
    np.testing.assert_allclose(a.objective.unary, b.objective.unary * params[:, None])
    np.testing.assert_array_equal(b.objective.unary[:, -1], 0.0)
    # Data-free: no forward pass beyond those the core makes itself (uniform measures nothing).
    baseline = mpqcore.measure(task.model, task.calibration, method="uniform", bits=(2, 4, 8)).evaluator.forward_passes
    assert a.evaluator.forward_passes == b.evaluator.forward_passes == baseline


def test_bad_scale_names_the_option_and_valid_values():
    # The registry names the plugin by its entry point; the option says what is valid.
    with pytest.raises(
        mpqcore.ConfigError,
        match=r"method 'eagl' \(plugin .*\): scale must be one of 'cost', 'params', 'per-weight', got 'bits'",
    ):
        mpqcore.get_plugins().methods.create("eagl", scale="bits")
    with pytest.raises(
        mpqcore.ConfigError, match=r"^scale must be one of 'cost', 'params', 'per-weight', got 'per-layer'$"
    ):
        EntropyGuided(scale="per-layer")
