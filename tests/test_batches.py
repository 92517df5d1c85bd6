"""Which part of a batch reaches the model (mpqcore.batches' rule), and the loss seeing the whole batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mpqcore
from mpqcore.batches import BATCH_RULE, Supervised, batch_size, call_model, model_inputs, supervised, to_device


def _classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).eval()


def _pairs(n=48, batch=16):
    gen = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(n, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen))
    return DataLoader(data, batch_size=batch)


def _cross_entropy(outputs, batch):
    return nn.functional.cross_entropy(outputs, batch[1])


def test_a_dataloader_of_pairs_with_a_label_loss_searches():
    # Before: "forward() takes 2 positional arguments but 3 were given".
    model = _classifier()
    report = mpqcore.search(
        model, _pairs(), method="hawq", bits=(2, 8), loss=_cross_entropy,
        budget=mpqcore.Budget.average_bits(5.0), method_options={"samples": 2},
    )  # fmt: skip
    x = torch.cat([x for x, _ in _pairs()])
    y = torch.cat([y for _, y in _pairs()])
    with torch.no_grad():
        float_loss = float(nn.functional.cross_entropy(model(x), y))
    meas = mpqcore.measure(model, _pairs(), method="uniform", bits=(2, 8), loss=_cross_entropy)
    assert meas.evaluator.loss({}) == pytest.approx(float_loss, rel=1e-6)  # the labels reached the loss
    assert report.results["loss"] > 0


def test_the_default_loss_on_pairs_compares_outputs_of_the_inputs_only():
    model = _classifier()
    meas = mpqcore.measure(model, _pairs(), method="uniform", bits=(2, 8))
    assert meas.evaluator.loss({}) == pytest.approx(0.0, abs=1e-7)
    assert meas.evaluator.loss({"0": 2}) > 0


def test_a_model_taking_two_inputs_gets_both():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(5, 2)

        def forward(self, x, z):
            return self.a(x) + self.b(z)

    model = TwoInputs()
    batch = (torch.randn(4, 3), torch.randn(4, 5))
    args, kwargs = model_inputs(model, batch)
    assert len(args) == 2 and not kwargs
    assert torch.equal(call_model(model, batch), model(*batch))
    # Marked as (inputs, target): only the inputs, themselves a tuple of two, reach it.
    pair = Supervised(batch, torch.zeros(4))
    assert torch.equal(call_model(model, pair), model(*batch))


def test_supervised_marks_every_batch_and_refuses_what_is_not_a_pair():
    marked = supervised(_pairs())
    assert all(isinstance(b, Supervised) for b in marked) and len(marked) == 3
    assert batch_size(marked[0]) == 16
    moved = to_device(marked[0], "cpu")
    assert isinstance(moved, Supervised) and torch.equal(moved.target, marked[0].target)
    with pytest.raises(
        mpqcore.ConfigError, match=r"batch 0 is a 3-item tuple; each batch must be an \(inputs, target\)"
    ):
        supervised([(torch.zeros(1), torch.zeros(1), torch.zeros(1))])
    with pytest.raises(mpqcore.ConfigError, match="batch 0 is Tensor"):
        supervised([torch.zeros(2, 3)])


def test_dict_inputs_inside_a_pair_are_keyword_inputs():
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, *, features):
            return self.lin(features)

    model = Keyword()
    batch = Supervised({"features": torch.randn(4, 3)}, torch.zeros(4, dtype=torch.long))
    meas = mpqcore.measure(model, [batch], method="uniform", bits=(4, 8), loss=lambda out, b: out.pow(2).mean())
    assert meas.evaluator.loss({"lin": 4}) >= 0


def test_a_failing_call_states_the_rule():
    model = _classifier()  # forward takes one positional argument
    three = (torch.randn(4, 6), torch.zeros(4), torch.zeros(4))
    with pytest.raises(mpqcore.ConfigError, match="positional argument") as info:
        mpqcore.measure(model, [three], method="uniform", bits=(4, 8))
    assert BATCH_RULE in str(info.value)


def test_finetuning_reads_the_inputs_of_pairs_too():
    model = _classifier()
    meas = mpqcore.measure(model, supervised(_pairs()), method="uniform", bits=(2, 8), loss=_cross_entropy)
    before = meas.evaluator.forward_passes
    tuned = meas.evaluator.finetuned_score({"0": 2}, steps=3, lr=1e-3)  # model(inputs) in functional_call
    assert math.isfinite(tuned) and tuned < 0  # minus a cross-entropy
    assert meas.evaluator.forward_passes - before == 3 + len(meas.evaluator.calibration)


def test_hugging_face_dict_batches_with_labels():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, use_cache=False)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (2, 8))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    meas = mpqcore.measure(model, [batch], method="uniform", bits=(2, 8))
    assert meas.evaluator.loss({}) == pytest.approx(0.0, abs=1e-7)  # the logits are compared, not the loss
    with torch.no_grad():
        own_loss = float(model(**batch).loss)
    lm = mpqcore.measure(model, [batch], method="uniform", bits=(2, 8), loss=lambda out, b: out.loss)
    assert lm.evaluator.loss({}) == pytest.approx(own_loss, rel=1e-6)
