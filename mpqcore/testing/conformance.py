"""The method conformance suite (see :mod:`mpqcore.testing`)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import mpqcore
from mpqcore.evaluate import Evaluator
from mpqcore.problem import allocation_violations
from mpqcore.protocols import TaskLike
from mpqcore.types import Budget, Objective


@functools.cache
def digits_task() -> TaskLike:
    """The ``digits-cnn`` task, built once per process with one thread (deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return mpqcore.load_task("digits-cnn")
    finally:
        torch.set_num_threads(threads)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class MethodConformance:
    """Checks every sensitivity method must pass. Subclass it as ``Test...``."""

    method: ClassVar[str] = ""
    method_options: ClassVar[dict[str, Any]] = {}
    bits: ClassVar[tuple[int, ...]] = (2, 4, 8)
    budget: ClassVar[Budget] = Budget.average_bits(4.0)
    #: Set when the method's objective is random by design and seeds must still agree.
    seed: ClassVar[int] = 0

    @pytest.fixture(scope="class")
    @classmethod
    def task(cls) -> TaskLike:
        return digits_task()

    def _measure(self, task: TaskLike, **kw: Any) -> mpqcore.Measurement:
        return mpqcore.measure(
            task.model,
            task.calibration,
            method=self.method,
            bits=self.bits,
            budget=self.budget,
            metric=task.metric,
            method_options=self.method_options,
            seed=kw.pop("seed", self.seed),
            **kw,
        )

    def _search(self, task: TaskLike, budget: Budget) -> mpqcore.Report:
        return mpqcore.search(
            task.model,
            task.calibration,
            method=self.method,
            bits=self.bits,
            budget=budget,
            metric=task.metric,
            method_options=self.method_options,
            seed=self.seed,
        )

    def test_method_is_registered(self) -> None:
        assert self.method, "set the class attribute `method` to the registered name"
        assert self.method in mpqcore.get_plugins().methods

    def test_objective_covers_every_layer_and_bits(self, task: TaskLike) -> None:
        meas = self._measure(task)
        obj = meas.objective
        assert isinstance(obj, Objective)
        assert tuple(obj.layers) == meas.spec.fqns
        assert tuple(obj.bits) == self.bits
        assert obj.unary.shape == (len(meas.spec.layers), len(self.bits))
        assert np.all(np.isfinite(obj.unary))

    def test_pinned_layers_are_not_measured(self, task: TaskLike, monkeypatch: pytest.MonkeyPatch) -> None:
        # Pinned at the lowest candidate, so that a method ignoring the pin (measuring the
        # layer, or holding it at the highest candidate for a reference) shows.
        first, pin = mpqcore.introspect(task.model).fqns[0], min(self.bits)
        asked: list[tuple[str, int]] = []
        quantized = Evaluator.quantized

        def spy(evaluator: Evaluator, fqn: str, bits: int) -> Any:
            asked.append((fqn, int(bits)))
            return quantized(evaluator, fqn, bits)

        monkeypatch.setattr(Evaluator, "quantized", spy)
        meas = self._measure(task, pins={first: pin})
        assert first not in meas.objective.layers
        assert dict(meas.problem.pins) == {first: pin}
        other = sorted({b for fqn, b in asked if fqn == first and b != pin})
        assert not other, f"{self.method} quantized {first}, pinned at {pin} bits, at {other} bits while measuring"

    def test_user_model_unchanged(self, task: TaskLike) -> None:
        before = _state(task.model)
        training = task.model.training
        report = self._search(task, self.budget)
        after = task.model.state_dict()
        assert set(before) == set(after)
        for name, value in before.items():
            assert torch.equal(value, after[name]), f"{self.method} changed {name} of the user's model"
        assert task.model.training == training
        assert report.model is not task.model

    def test_deterministic_for_a_seed(self, task: TaskLike) -> None:
        a = self._measure(task).objective
        b = self._measure(task).objective
        np.testing.assert_array_equal(a.unary, b.unary)
        assert dict(a.pairs) == dict(b.pairs)

    @pytest.mark.parametrize("avg_bits", [3.0, 4.0])
    def test_allocation_respects_the_budget(self, task: TaskLike, avg_bits: float) -> None:
        report = self._search(task, Budget.average_bits(avg_bits))
        assert allocation_violations(report.problem, report.allocation.bits) == []
        assert report.average_bits <= avg_bits + 1e-9
        assert set(report.allocation.bits) == set(report.spec.fqns)
