"""Prefix reuse in Evaluator.losses: the same floats as evaluating each assignment in full."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mpqcore import Evaluator
from mpqcore.quantizers import MinMaxPerTensor
from mpqcore.testing import digits_task


class Residual(nn.Module):
    """Skip connections, an in-place ReLU, a layer inside a nested block, and functional
    code between modules: what a prefix replay must get exactly right."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = nn.ModuleDict({"conv": nn.Conv2d(8, 8, 3, padding=1), "bn": nn.BatchNorm2d(8), "act": nn.ReLU(inplace=True)})
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.block["act"](self.block["bn"](self.block["conv"](x)) + x)
        x = self.down(x)
        return self.head(x.flatten(1))


def residual():
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        model.block["bn"].running_mean.uniform_(-0.2, 0.2)
        model.down[1].running_var.uniform_(0.5, 2.0)
    return model, [torch.randn(16, 1, 8, 8), torch.randn(10, 1, 8, 8)]


def sweep(fqns, bits, pairs=True, fixed=None):
    fixed = fixed or {}
    out = [dict(fixed)]
    out += [{**fixed, f: b} for f in fqns for b in bits]
    if pairs:
        out += [{**fixed, f: b, g: c} for f, g in itertools.combinations(fqns, 2) for b in bits for c in bits]
    return out


@pytest.mark.parametrize("which", ["residual", "digits-cnn"])
def test_losses_equal_full_evaluation(which):
    if which == "residual":
        model, data = residual()
    else:
        task = digits_task()
        model, data = task.model, task.calibration
    fast = Evaluator(model, data, None, MinMaxPerTensor())
    plain = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    assignments = sweep(fast.spec.fqns, (2, 4, 8))
    assert fast.losses(assignments) == plain.losses(assignments)  # exactly the same floats
    info = fast.prefix_reuse
    assert info["enabled"], info["reason"]
    assert info["skipped_mac_fraction"] > 0.3
    assert fast.evaluations == plain.evaluations == len(assignments)
    for m in fast.model.modules():  # no replaced forward, no hook left behind
        assert "forward" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_pinned_layers_and_a_shuffled_order():
    model, data = residual()
    fast = Evaluator(model, data, None, MinMaxPerTensor())
    plain = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    free = [f for f in fast.spec.fqns if f != "stem"]
    assignments = sweep(free, (2, 8), fixed={"stem": 4})
    assignments = assignments[::-1][::2] + assignments[::2]  # duplicates, reversed, interleaved
    assert fast.losses(assignments) == plain.losses(assignments)
    assert fast.prefix_reuse["skipped_mac_fraction"] > 0.2


def test_a_layer_called_twice_turns_reuse_off():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 3)

        def forward(self, x):
            return self.b(self.a(self.a(x)))

    torch.manual_seed(0)
    data = [torch.randn(5, 6), torch.randn(4, 6)]
    model = Twice()
    fast = Evaluator(model, data, None, MinMaxPerTensor())
    plain = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    assignments = sweep(fast.spec.fqns, (2, 4))
    assert fast.losses(assignments) == plain.losses(assignments)
    assert not fast.prefix_reuse["enabled"]
    assert "not called exactly once" in fast.prefix_reuse["reason"]


def test_a_structure_that_changes_between_batches_falls_back():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.side = nn.Linear(6, 6)
            self.b = nn.Linear(6, 3)

        def forward(self, x):
            x = self.a(x)
            if x.shape[0] > 4:  # batch-dependent control flow
                x = torch.relu(self.side(x))
            return self.b(x)

    torch.manual_seed(0)
    data = [torch.randn(5, 6), torch.randn(3, 6)]
    model = Branchy()
    fast = Evaluator(model, data, None, MinMaxPerTensor())
    plain = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    assignments = sweep(["a", "b"], (2, 4), pairs=False)
    assert fast.losses(assignments) == plain.losses(assignments)
    assert not fast.prefix_reuse["enabled"]
    assert "differs between calibration batches" in fast.prefix_reuse["reason"]
