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
        self.block = nn.ModuleDict(
            {"conv": nn.Conv2d(8, 8, 3, padding=1), "bn": nn.BatchNorm2d(8), "act": nn.ReLU(inplace=True)}
        )
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


class InPlace(nn.Module):
    """A replayed module's output modified in place by functional code after it: a
    replay without a copy must notice, since the next replay would see the changed value."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        g = self.b(h)
        h.mul_(2.0)  # after b read it: changes what a replay of ``a`` would give
        return self.c(torch.relu(g) + h)


def test_outputs_modified_in_place_are_copied_from_then_on():
    torch.manual_seed(0)
    data = [torch.randn(5, 6), torch.randn(4, 6)]
    model = InPlace()
    fast = Evaluator(model, data, None, MinMaxPerTensor())
    plain = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    assignments = sweep(fast.spec.fqns, (2, 4, 8))
    assert fast.losses(assignments) == plain.losses(assignments)
    assert fast._prefix is not None and fast._prefix.copied == {"a"}
    assert fast.prefix_reuse["skipped_mac_fraction"] > 0.2


def test_outputs_nothing_modifies_are_replayed_without_copies():
    # The in-place ReLUs of Residual act on tensors no replay hands out.
    model, data = residual()
    ev = Evaluator(model, data, None, MinMaxPerTensor())
    ev.losses(sweep(ev.spec.fqns, (2, 8)))
    assert ev._prefix is not None and ev._prefix.copied == set()
    assert ev.prefix_reuse["skipped_mac_fraction"] > 0.3


def test_reuse_can_be_switched_off_per_call():
    model, data = residual()
    ev = Evaluator(model, data, None, MinMaxPerTensor())
    assignments = sweep(ev.spec.fqns, (2, 8))
    plain = ev.losses(assignments, reuse_prefix=False)
    assert ev.prefix_reuse == {"enabled": True, "reason": "", "skipped_mac_fraction": 0.0}  # not used yet
    assert ev.losses(assignments) == plain  # the default (on): the same floats
    assert ev.prefix_reuse["skipped_mac_fraction"] > 0.2
    assert ev.reuse_prefix  # the default is unchanged by a per-call switch
    assert ev.evaluations == 2 * len(assignments)


def test_reuse_can_be_switched_on_per_call():
    model, data = residual()
    ev = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    assignments = sweep(ev.spec.fqns, (2, 8), pairs=False)
    assert ev.prefix_reuse["reason"] == "reuse_prefix=False"
    plain = ev.losses(assignments)
    assert ev.losses(assignments, reuse_prefix=True) == plain
    assert ev.prefix_reuse["enabled"] and ev.prefix_reuse["skipped_mac_fraction"] > 0  # what was done
    assert not ev.reuse_prefix


def test_prefix_reuse_needs_no_evaluator():
    # PrefixReuse works from what it is handed (a model, its layers, a counted pass, a
    # loss): it reads nothing of the evaluator's and counts nothing itself.
    from mpqcore.prefix import PrefixReuse

    model, data = residual()
    ev = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    passes = []

    def trace_pass():
        passes.append(1)
        return ev.model(data[0])

    reuse = PrefixReuse(
        ev.model, ev.modules, {layer.fqn: layer.macs for layer in ev.spec.layers}, len(data), trace_pass, ev.loss
    )
    assert reuse.enabled, reuse.reason
    assignments = sweep(ev.spec.fqns, (2, 4))
    assert reuse.losses(assignments) == ev.losses(assignments)
    assert passes == [1]
    assert reuse.skipped_fraction > 0.2


def test_prefix_does_not_import_the_evaluator():
    # Not even for type checking: the evaluator depends on prefix reuse, never back.
    import ast
    from pathlib import Path

    import mpqcore.prefix

    tree = ast.parse(Path(mpqcore.prefix.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("mpqcore")}, imported


class EmbeddingLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 24, num_layers=2, batch_first=True)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        return self.fc(torch.relu(h[:, -1]))


def _real(name):
    """A small model of a real family and two calibration batches."""
    torch.manual_seed(0)
    if name == "bert":
        pytest.importorskip("transformers")
        from mpqcore.testing.models import small_bert

        return small_bert()
    if name == "resnet18":  # BasicBlock's ``out += identity`` and in-place ReLUs on replayed inputs
        torchvision = pytest.importorskip("torchvision")
        return torchvision.models.resnet18(num_classes=10).eval(), [
            torch.randn(3, 3, 32, 32),
            torch.randn(2, 3, 32, 32),
        ]
    if name == "gpt2":
        transformers = pytest.importorskip("transformers")
        config = transformers.GPT2Config(
            vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
        )
        ids = [torch.randint(0, 100, (2, 12)), torch.randint(0, 100, (3, 12))]
        return transformers.GPT2LMHeadModel(config).eval(), [{"input_ids": i} for i in ids]
    return EmbeddingLSTM().eval(), [torch.randint(0, 50, (4, 7)), torch.randint(0, 50, (3, 7))]


@pytest.mark.parametrize("name", ["bert", "resnet18", "gpt2", "lstm"])
def test_losses_equal_full_evaluation_on_real_families(name):
    model, data = _real(name)
    fast = Evaluator(model, data, None, MinMaxPerTensor())
    plain = Evaluator(model, data, None, MinMaxPerTensor(), reuse_prefix=False)
    fqns = fast.spec.fqns
    assignments = sweep(fqns, (2, 8), pairs=False)
    assignments += [{f: 2, g: 4} for f, g in itertools.pairwise(fqns)] + [{fqns[0]: 3, fqns[-1]: 3}]
    assert fast.losses(assignments) == plain.losses(assignments)  # exactly the same floats
    assert fast.prefix_reuse["enabled"], fast.prefix_reuse["reason"]
    assert fast.prefix_reuse["skipped_mac_fraction"] > 0  # the LSTM holds most of its MACs: ~5%


def test_expected_costs_are_the_share_of_work_reuse_leaves():
    # PrefixReuse.costs (what the workers' split is weighted by) predicts the MACs reuse skips
    model, data = residual()
    ev = Evaluator(model, data, None, MinMaxPerTensor())
    batch = sweep(ev.spec.fqns, (2, 4, 8))
    ev.losses(batch[:2])  # builds the planner
    prefix = ev._prefix_reuse()
    ordered = [batch[i] for i in prefix.order(batch)]
    costs = prefix.costs(ordered)
    assert costs[0] == 1.0 and all(0.0 <= c <= 1.0 for c in costs)
    before = (prefix.skipped_macs, prefix.total_macs)
    ev.losses(batch)
    skipped = (prefix.skipped_macs - before[0]) / (prefix.total_macs - before[1])
    assert abs((1.0 - sum(costs) / len(costs)) - skipped) < 1e-9
    assert skipped > 0.3
