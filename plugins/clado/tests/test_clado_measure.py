"""CLADO on real models: evaluation counts, exact prefix reuse, the solver round trip."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import torch
from torch import nn

import mpqcore
from mpqcore.context import MeasureContext
from mpqcore.testing import MethodConformance, digits_task
from mpqcore_clado import Clado, omega_matrix, quadratic_value


class TestCladoConformance(MethodConformance):
    method = "clado"
    method_options: ClassVar[dict[str, Any]] = {"pairs": "all"}


class TinyResidual(nn.Module):
    """A stem, a residual block with a downsample shortcut and in-place ReLUs, a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block = nn.ModuleDict(
            {
                "conv1": nn.Conv2d(4, 8, 3, stride=2, padding=1),
                "bn": nn.BatchNorm2d(8),
                "conv2": nn.Conv2d(8, 8, 3, padding=1),
            }
        )
        self.down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.BatchNorm2d(8))
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.relu(self.stem(x))
        out = self.relu(self.block["bn"](self.block["conv1"](x)))
        out = self.block["conv2"](out)
        out += self.down(x)  # in place, as torchvision's BasicBlock does
        return self.head(self.relu(out).flatten(1))


class SharedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.relu(self.a(x)))))


def _tiny_residual():
    torch.manual_seed(0)
    model = TinyResidual().eval()
    with torch.no_grad():
        model.block["bn"].running_mean.uniform_(-0.2, 0.2)
        model.down[1].running_var.uniform_(0.5, 2.0)
    calibration = [torch.randn(16, 1, 8, 8), torch.randn(10, 1, 8, 8)]
    return model, calibration


def _measure(model, calibration, bits=(2, 4, 8), fixed=None, **options):
    quantizer = mpqcore.get_plugins().quantizers.create("minmax-per-tensor")
    ev = mpqcore.Evaluator(model, calibration, None, quantizer)
    fixed = fixed or {}
    layers = tuple(f for f in ev.spec.fqns if f not in fixed)
    ctx = MeasureContext(evaluator=ev, spec=ev.spec, layers=layers, bits=tuple(bits), fixed=fixed)
    return Clado(**options).measure(ctx), ev


@pytest.fixture(scope="module")
def digits():
    return digits_task()


@pytest.fixture(scope="module")
def digits_all_pairs(digits):
    """CLADO on digits-cnn, bits (2, 4, 8), all pairs: with prefix reuse and without."""
    return {
        reuse: _measure(digits.model, digits.calibration, reuse_prefix=reuse, batch_size=7) for reuse in (True, False)
    }


def test_evaluation_count_matches_the_formula(digits_all_pairs):
    obj, ev = digits_all_pairs[True]
    n_layers, n_bits = 5, 3
    formula = n_layers * n_bits + n_layers * (n_layers - 1) // 2 * n_bits**2 + 1
    assert obj.info["evaluations_used"] == obj.info["evaluations_formula"] == formula == 106
    assert ev.evaluations == formula
    assert obj.info["pair_terms"] <= 10 * 9
    assert obj.info["prefix_reuse"]["enabled"]
    assert obj.info["base_loss"] == 0.0  # default loss, nothing pinned


def test_window_reduces_the_count(digits):
    obj, ev = _measure(digits.model, digits.calibration, bits=(2, 8), pairs="window", window=2)
    assert obj.info["layer_pairs"] == 4 + 3
    assert ev.evaluations == 5 * 2 + 7 * 4 + 1
    assert all(abs(int(a[-1]) - int(c[-1])) <= 2 for a, _, c, _ in obj.pairs)  # conv1..3, fc1..2 positions


@pytest.mark.parametrize("model_and_data", ["digits", "residual"])
def test_prefix_reuse_gives_the_same_floats(model_and_data, digits_all_pairs):
    if model_and_data == "digits":
        (fast, ev_fast), (plain, ev_plain) = digits_all_pairs[True], digits_all_pairs[False]
    else:
        model, calibration = _tiny_residual()
        fast, ev_fast = _measure(model, calibration, reuse_prefix=True)
        plain, ev_plain = _measure(model, calibration, reuse_prefix=False, batch_size=7)
    assert fast.info["prefix_reuse"]["enabled"]
    assert fast.info["prefix_reuse"]["skipped_mac_fraction"] > 0.2
    np.testing.assert_array_equal(fast.unary, plain.unary)
    assert dict(fast.pairs) == dict(plain.pairs)
    assert ev_fast.evaluations == ev_plain.evaluations
    # the working copy is left as it was: no replaced forward, no hooks
    for m in ev_fast.model.modules():
        assert "forward" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.mark.parametrize("reuse", [True, False])
def test_clado_leaves_every_evaluator_attribute_as_it_was(reuse):
    # The reuse option travels per call (losses(..., reuse_prefix=...)); clado never sets
    # anything on the evaluator. Only the counters the evaluator owns move.
    model, calibration = _tiny_residual()
    quantizer = mpqcore.get_plugins().quantizers.create("minmax-per-tensor")
    ev = mpqcore.Evaluator(model, calibration, None, quantizer)
    ev.losses([{}, {"stem": 2}])  # the evaluator's own lazy state: float outputs, prefix reuse
    written: list[str] = []

    class Watched(type(ev)):  # records writes of public attributes, even those undone later
        def __setattr__(self, name, value):
            if not name.startswith("_"):
                written.append(name)
            super().__setattr__(name, value)

    ev.__class__ = Watched
    before = dict(vars(ev))
    ctx = MeasureContext(evaluator=ev, spec=ev.spec, layers=tuple(ev.spec.fqns), bits=(2, 8))
    obj = Clado(reuse_prefix=reuse, batch_size=3).measure(ctx)
    after = dict(vars(ev))
    assert written == []
    assert after.keys() == before.keys()
    counters = {"_evaluations", "_forward_passes"}
    changed = [k for k in before if k not in counters and not (after[k] is before[k] or after[k] == before[k])]
    assert changed == []
    assert ev.reuse_prefix is True
    assert obj.info["evaluations_used"] == ev.evaluations - 2
    if not reuse:
        assert obj.info["prefix_reuse"]["reason"] == "option reuse_prefix=False"


def test_prefix_reuse_with_a_pinned_layer(digits):
    fast, _ = _measure(digits.model, digits.calibration, bits=(2, 8), fixed={"conv2": 2})
    plain, _ = _measure(digits.model, digits.calibration, bits=(2, 8), fixed={"conv2": 2}, reuse_prefix=False)
    assert fast.info["base_loss"] > 0  # L(∅) keeps the pinned layer quantized
    np.testing.assert_array_equal(fast.unary, plain.unary)
    assert dict(fast.pairs) == dict(plain.pairs)
    assert "conv2" not in fast.layers


def test_a_layer_called_twice_disables_reuse():
    torch.manual_seed(0)
    obj, _ = _measure(SharedLayer().eval(), [torch.randn(8, 6)], bits=(2, 8))
    assert not obj.info["prefix_reuse"]["enabled"]
    assert "called exactly once" in obj.info["prefix_reuse"]["reason"]
    assert obj.info["evaluations_used"] == 2 * 2 + 1 * 4 + 1


def test_psd_on_digits_gives_a_psd_omega(digits):
    obj, _ = _measure(digits.model, digits.calibration, bits=(2, 8), psd=True)
    full = omega_matrix(obj)
    # Entries between two bit-widths of one layer never count for a one-hot allocation and
    # are not stored; the stored matrix agrees with the PSD projection everywhere else.
    assert obj.info["psd"] is not None
    alloc = dict.fromkeys(obj.layers, 2)
    assert obj.value(alloc) == pytest.approx(quadratic_value(full, alloc, obj.layers, obj.bits))
    assert obj.value(alloc) >= 0


def test_highs_solves_the_pair_objective_and_the_ablation(digits):
    meas = mpqcore.measure(
        digits.model,
        digits.calibration,
        method="clado",
        bits=(2, 4, 8),
        budget=mpqcore.Budget.average_bits(3.0),
        metric=digits.metric,
    )
    problem = meas.problem
    assert problem.objective.has_pairs
    with_pairs = mpqcore.solve(problem, "highs")
    diagonal = mpqcore.solve(attrs.evolve(problem, objective=problem.objective.without_pairs()), "highs")
    assert with_pairs.status == diagonal.status == "optimal"
    brute = mpqcore.solve(problem, "brute-force")
    assert with_pairs.objective == pytest.approx(brute.objective, abs=1e-9)
    # the objective's value of an allocation is αᵀΩα of the symmetric Ω
    omega = omega_matrix(problem.objective)
    for alloc in (with_pairs.bits, diagonal.bits):
        assert problem.objective.value(alloc) == pytest.approx(
            quadratic_value(omega, alloc, problem.objective.layers, problem.objective.bits), rel=1e-12, abs=1e-12
        )
    # the prediction (plus L(∅) = 0) tracks the measured loss of the chosen allocation
    measured = meas.evaluator.loss(with_pairs.bits)
    assert problem.objective.value(with_pairs.bits) == pytest.approx(measured, rel=0.5)
