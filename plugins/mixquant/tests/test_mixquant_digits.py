"""MixQuant on the real digits-cnn task: the method's conformance and the solver in a search."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

import mpqcore
from mpqcore.problem import allocation_violations
from mpqcore.testing import MethodConformance, digits_task


class TestMixquantConformance(MethodConformance):
    method = "mixquant"
    method_options: ClassVar[dict[str, Any]] = {}


class TestMixquantPerWeightConformance(MethodConformance):
    method = "mixquant"
    method_options: ClassVar[dict[str, Any]] = {"scale": "per-weight"}


BITS = (2, 3, 4, 5, 6, 8)


def test_scaling_and_mse_match_the_fake_quantized_weights():
    task = digits_task()
    a = mpqcore.measure(task.model, task.calibration, method="mixquant", bits=BITS)
    b = mpqcore.measure(
        task.model, task.calibration, method="mixquant", bits=BITS, method_options={"scale": "per-weight"}
    )
    params = np.array([layer.params for layer in a.spec.layers], dtype=float)
    np.testing.assert_allclose(a.objective.unary, b.objective.unary * params[:, None])
    ev = b.evaluator
    for i, fqn in enumerate(b.objective.layers):
        w = ev.weight(fqn)
        for j, bits in enumerate(BITS):
            expected = float(((ev.fake_quantized(fqn, bits) - w).double() ** 2).mean())
            assert b.objective.unary[i, j] == pytest.approx(expected, rel=1e-6)  # float32 sums in the method
    # Data-free: no forward pass beyond those the core makes itself (uniform measures nothing).
    baseline = mpqcore.measure(task.model, task.calibration, method="uniform", bits=BITS).evaluator.forward_passes
    assert a.evaluator.forward_passes == b.evaluator.forward_passes == baseline


@pytest.mark.parametrize("avg_bits", [3.0, 4.0])
def test_qem_solver_in_a_search_meets_the_budget(avg_bits):
    task = digits_task()
    rep = mpqcore.search(
        task.model, task.calibration, method="mixquant", bits=BITS, budget=mpqcore.Budget.average_bits(avg_bits),
        solver="mixquant-qem", pins={"conv1": 8}, guard=False,
    )  # fmt: skip  # the solver's own answer: with the guard on, a uniform one may replace it
    assert allocation_violations(rep.problem, rep.allocation.bits) == []
    assert rep.allocation.bits["conv1"] == 8
    assert rep.allocation.info["qem"] >= 1.0
    assert set(rep.allocation.costs) == set(rep.problem.costs)
