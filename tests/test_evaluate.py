"""The shared evaluator: never touches the user's model, caches quantization and float
outputs, restores weights, and computes the losses it documents."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mpqcore
from mpqcore import ConfigError, Evaluator
from mpqcore.evaluate import default_loss, primary_output
from mpqcore.quantizers import MinMaxPerTensor

N_BATCHES = 3


def tiny(out_features: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, out_features))


def calibration(n: int = N_BATCHES, size: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(size, 6, generator=g) for _ in range(n)]


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ptrs": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "grad": {k: p.grad for k, p in model.named_parameters()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
    }


def assert_unchanged(before: dict, model: nn.Module):
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"
    for key in ("ptrs", "grad", "requires_grad", "training", "hooks"):
        assert before[key] == after[key], key


class CountingQuantizer:
    """MinMaxPerTensor that counts how often each float tensor is quantized at each width."""

    def __init__(self):
        self.inner = MinMaxPerTensor()
        self.calls: Counter = Counter()

    def quantize(self, weight, bits):
        self.calls[(weight.data_ptr(), bits)] += 1
        return self.inner.quantize(weight, bits)


def accuracy_like(model: nn.Module) -> float:
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(9))
    return float(model(x).softmax(1)[:, 0].mean())


def quantized_copy(model: nn.Module, assignment: dict[str, int]) -> nn.Module:
    """An independent reference: a deep copy with the weights replaced by hand."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for fqn, b in assignment.items():
            m = out.get_submodule(fqn)
            m.weight.copy_(MinMaxPerTensor().quantize(m.weight, b).dequantize())
    return out


# ---------------------------------------------------------------------------


def test_the_users_model_is_never_modified():
    model = tiny().train()
    before = snapshot(model)
    ev = Evaluator(model, calibration(), None, MinMaxPerTensor(), metric=accuracy_like, act_bits=4)
    ev.loss({"0": 2, "2": 4})
    ev.metric({"0": 2})
    ev.score({"2": 2})
    ev.batch_loss(0).backward()
    ev.finetuned_score({"0": 2, "2": 2}, steps=3, lr=1e-2)
    ev.finetuned_score({"0": 4}, steps=2, use_metric=False)
    ev.close()
    assert_unchanged(before, model)
    assert model.training  # the evaluator works on an eval() copy


def test_each_layer_and_bits_is_quantized_once():
    q = CountingQuantizer()
    ev = Evaluator(tiny(), calibration(), None, q, metric=accuracy_like)
    ptr = {fqn: ev.weight(fqn).data_ptr() for fqn in ("0", "2")}
    assignments = [{"0": 2}, {"0": 2, "2": 4}, {"2": 4}, {"0": 8, "2": 2}, {"0": 2}]
    for _ in range(2):
        ev.losses(assignments)
        ev.metric({"0": 2, "2": 8})
        ev.quantized("0", 2)
        ev.fake_quantized("2", 4)
    ev.finetuned_score({"0": 2}, steps=2)  # trains clones; their quantization is not cached
    float_calls = {k: v for k, v in q.calls.items() if k[0] in ptr.values()}
    expected = {(ptr["0"], 2), (ptr["0"], 8), (ptr["2"], 2), (ptr["2"], 4), (ptr["2"], 8)}
    assert set(float_calls) == expected
    assert all(v == 1 for v in float_calls.values()), float_calls


def test_float_outputs_are_computed_once():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    calls = []
    ev.model.register_forward_hook(lambda *a: calls.append(1))
    assert ev.forward_passes == 0
    for k in range(1, 5):
        ev.loss({"0": 2 + k})
        assert ev.forward_passes == N_BATCHES * (k + 1)
        assert len(calls) == ev.forward_passes
    assert ev.evaluations == 4
    first = ev.float_outputs()
    assert ev.float_outputs() is first and len(first) == N_BATCHES
    assert ev.forward_passes == N_BATCHES * 5


def test_weights_are_restored_after_a_metric_raises():
    def broken(model):
        raise RuntimeError("metric data missing")

    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor(), metric=broken)
    floats = {f: ev.weight(f).clone() for f in ("0", "2")}
    with pytest.raises(RuntimeError, match="metric data missing"):
        ev.metric({"0": 2, "2": 2})
    for f, w in floats.items():
        assert torch.equal(ev.modules[f].weight, w)
        assert ev.modules[f].weight.data_ptr() == ev.weight(f).data_ptr()  # the float tensor itself
    assert ev.loss({}) == 0.0


def test_weights_are_restored_after_a_loss_raises():
    calls = []

    def flaky(outputs, batch):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("bad batch")
        return outputs.pow(2).mean()

    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor(), loss=flaky)
    with pytest.raises(ValueError, match="bad batch"):
        ev.loss({"2": 2})
    assert ev.modules["2"].weight.data_ptr() == ev.weight("2").data_ptr()
    assert not torch.equal(ev.modules["2"].weight, ev.fake_quantized("2", 2))


def test_default_loss_of_the_float_model_is_zero():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    assert ev.loss({}) == 0.0
    assert ev.loss() == 0.0
    assert ev.loss({"0": 2}) > 0.0
    assert ev.score({"0": 2}) == -ev.loss({"0": 2})


def test_default_loss_is_kl_for_class_logits_by_hand():
    g = torch.Generator().manual_seed(2)
    y, ref = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    p = torch.exp(ref) / torch.exp(ref).sum(1, keepdim=True)
    q = torch.exp(y) / torch.exp(y).sum(1, keepdim=True)
    kl = float((p * (p.log() - q.log())).sum() / 4)  # KL(float || quantized), mean over examples
    assert float(default_loss(y, ref)) == pytest.approx(kl, rel=1e-5)
    assert float(default_loss({"logits": y, "aux": ref}, ref)) == pytest.approx(kl, rel=1e-5)


@pytest.mark.parametrize("shape", [(4, 1), (4,), (2, 3, 5)])
def test_default_loss_is_normalized_mse_otherwise(shape):
    g = torch.Generator().manual_seed(3)
    y, ref = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    expected = float(((y - ref) ** 2).sum() / (ref**2).sum())
    assert float(default_loss(y, ref)) == pytest.approx(expected, rel=1e-5)
    assert float(default_loss((y, "extra"), ref)) == pytest.approx(expected, rel=1e-5)


def test_primary_output_errors():
    with pytest.raises(ConfigError, match="cannot find a tensor in the model's output of type str; pass loss"):
        primary_output("nope")


@pytest.mark.parametrize("out_features", [4, 1])
def test_evaluator_loss_matches_an_independent_quantized_copy(out_features):
    model, data = tiny(out_features), calibration()
    ev = Evaluator(model, data, None, MinMaxPerTensor())
    assignment = {"0": 2, "2": 3}
    ref_model = quantized_copy(model, assignment)
    with torch.no_grad():
        losses = []
        for x in data:
            y, ref = ref_model(x), model.eval()(x)
            if out_features > 1:
                losses.append(F.kl_div(y.log_softmax(1), ref.log_softmax(1), log_target=True, reduction="batchmean"))
            else:
                losses.append(((y - ref) ** 2).sum() / (ref**2).sum())
    assert ev.loss(assignment) == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)


def test_user_loss_is_used_and_float_outputs_are_not_needed():
    model, data = tiny(), [*calibration(n=2, size=4), torch.randn(2, 6)]
    seen = []

    def loss(outputs, batch):
        seen.append(batch)
        return outputs.pow(2).mean()

    ev = Evaluator(model, data, None, MinMaxPerTensor(), loss=loss)
    ref_model = quantized_copy(model, {"2": 2})
    with torch.no_grad():
        expected = sum(float(ref_model(x).pow(2).mean()) * len(x) for x in data) / sum(len(x) for x in data)
    assert ev.loss({"2": 2}) == pytest.approx(expected, rel=1e-5)  # weighted by batch size
    assert ev.forward_passes == len(data)  # no float pass
    assert all(s is d for s, d in zip(seen, ev.calibration, strict=False))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(5, 3)

    def forward(self, x, shift=None):
        h = self.a(x)
        if shift is not None:
            h = h + shift
        return self.b(torch.relu(h))


@pytest.mark.parametrize("form", ["tensor", "tuple", "list", "dict", "dict+kw"])
def test_batches_as_tensor_tuple_or_dict(form):
    xs = calibration(n=2)
    shift = torch.full((1, 5), 0.5)
    batches = {
        "tensor": xs,
        "tuple": [(x,) for x in xs],
        "list": [[x] for x in xs],
        "dict": [{"x": x} for x in xs],
        "dict+kw": [{"x": x, "shift": shift} for x in xs],
    }[form]
    model = TwoInputs()
    ev = Evaluator(model, batches, None, MinMaxPerTensor())
    assert ev.spec.fqns == ("a", "b")
    assert ev.loss({}) == 0.0
    ref_model = quantized_copy(model, {"a": 2})
    kw = {"shift": shift} if form == "dict+kw" else {}
    with torch.no_grad():
        expected = sum(
            float(
                F.kl_div(
                    ref_model(x, **kw).log_softmax(1),
                    model(x, **kw).log_softmax(1),
                    log_target=True,
                    reduction="batchmean",
                )
            )
            for x in xs
        ) / len(xs)
    assert ev.loss({"a": 2}) == pytest.approx(expected, rel=1e-5)


def test_a_single_tensor_is_one_batch():
    ev = Evaluator(tiny(), torch.randn(5, 6), None, MinMaxPerTensor())
    assert len(ev.calibration) == 1


@pytest.mark.parametrize("bad_index", [1, 2])
def test_a_failing_calibration_batch_is_named(bad_index):
    data = calibration()
    data[bad_index] = torch.randn(5, 7)  # wrong feature count
    ev = Evaluator(tiny(), data, None, MinMaxPerTensor())  # introspection only runs batch 0
    with pytest.raises(ConfigError, match=f"the model failed on calibration batch {bad_index}: RuntimeError") as info:
        ev.loss({"0": 2})
    assert isinstance(info.value.__cause__, RuntimeError)


def test_empty_or_malformed_calibration():
    with pytest.raises(ConfigError, match="calibration is empty"):
        Evaluator(tiny(), [], None, MinMaxPerTensor())
    with pytest.raises(ConfigError, match="calibration batch 1 is a str"):
        Evaluator(tiny(), [torch.randn(2, 6), "x"], None, MinMaxPerTensor())
    with pytest.raises(ConfigError, match="must be an iterable of batches"):
        Evaluator(tiny(), 3, None, MinMaxPerTensor())


def test_unknown_layers_and_missing_metric():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    with pytest.raises(ConfigError, match="no quantizable layer '3'"):
        ev.loss({"3": 2})
    with pytest.raises(ConfigError, match="no metric was given"):
        ev.metric({})
    assert not ev.has_metric
    spec = mpqcore.introspect(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.Linear(4, 2)))
    with pytest.raises(ConfigError, match=r"layers \['3'\] of the spec are not quantizable modules"):
        Evaluator(tiny(), calibration(), spec, MinMaxPerTensor())


def test_a_non_finite_loss_is_an_error():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor(), loss=lambda out, b: out.sum() * float("nan"))
    with pytest.raises(ConfigError, match="the calibration loss is nan"):
        ev.loss({})


def test_finetuned_score_leaves_the_evaluator_intact():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor(), metric=accuracy_like)
    assignment = {"0": 2, "2": 2}
    floats = {f: ev.weight(f).clone() for f in ("0", "2")}
    fake = {f: ev.fake_quantized(f, 2).clone() for f in ("0", "2")}
    loss_before, metric_before = ev.loss(assignment), ev.metric(assignment)
    tuned = ev.finetuned_score(assignment, steps=20, lr=1e-2, use_metric=False)
    assert tuned > -loss_before  # fine-tuning helps on the data it trains on
    ev.finetuned_score(assignment, steps=3, lr=1e-2)  # with the metric
    for f in ("0", "2"):
        assert torch.equal(ev.modules[f].weight, floats[f])
        assert torch.equal(ev.fake_quantized(f, 2), fake[f])
    assert ev.loss(assignment) == loss_before
    assert ev.metric(assignment) == metric_before
    assert ev.finetuned_score(assignment, steps=0) == metric_before  # no steps: the plain score


def test_act_bits_quantizes_the_inputs_of_quantized_layers_only():
    model, data = tiny(), calibration()
    plain = Evaluator(model, data, None, MinMaxPerTensor())
    act = Evaluator(model, data, None, MinMaxPerTensor(), act_bits=2)
    assert act.loss({}) == 0.0  # nothing quantized: no hook active
    assert act.loss({"0": 8}) != pytest.approx(plain.loss({"0": 8}), rel=1e-3)

    seen: dict[str, torch.Tensor] = {}
    for f in ("0", "2"):  # registered after the evaluator's hooks: sees what the layer sees
        act.modules[f].register_forward_pre_hook(lambda m, inp, f=f: seen.__setitem__(f, inp[0]))
    act.loss({"0": 8})
    assert seen["0"].unique().numel() <= 4  # 2-bit inputs
    assert seen["2"].unique().numel() > 4  # layer 2 is not quantized: its inputs are not either
    act.loss({"2": 8})
    assert seen["0"].unique().numel() > 4 and seen["2"].unique().numel() <= 4
    act.close()
    act.loss({"2": 8})
    assert seen["2"].unique().numel() > 4  # hooks removed


def test_finetuning_leaves_no_gradient_on_the_working_copy():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    ev.finetuned_score({"0": 2}, steps=3, lr=1e-2)
    assert all(p.grad is None for p in ev.model.parameters())


def test_finetuning_on_the_metric_without_one_is_a_config_error():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    for steps in (0, 2):
        with pytest.raises(ConfigError, match="needs a metric"):
            ev.finetuned_score({"0": 2}, steps=steps, use_metric=True)


# -- the evaluator is the only door to its model -----------------------------------


def test_gradients_lends_the_weights_and_restores_them():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    for p in ev.model.parameters():
        p.requires_grad_(False)
    ev.modules["2"].weight.requires_grad_(True)  # restored as it was, not to a fixed value
    with ev.gradients(["0", "2"]) as weights:
        assert [w is ev.modules[f].weight for f, w in zip(("0", "2"), weights, strict=True)] == [True, True]
        assert all(w.requires_grad for w in weights)
        grads = torch.autograd.grad(ev.batch_loss(0), weights)
        assert all(g.shape == w.shape for g, w in zip(grads, weights, strict=True))
    assert not ev.modules["0"].weight.requires_grad
    assert ev.modules["2"].weight.requires_grad
    assert all(p.grad is None for p in ev.model.parameters())


def test_gradients_restores_requires_grad_when_the_block_raises():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    before = {k: p.requires_grad for k, p in ev.model.named_parameters()}
    with pytest.raises(RuntimeError, match="inside"), ev.gradients(["0"]) as (w,):
        ev.batch_loss(0).backward()  # leaves a .grad that must not survive
        assert w.grad is not None
        raise RuntimeError("inside")
    assert {k: p.requires_grad for k, p in ev.model.named_parameters()} == before
    assert ev.modules["0"].weight.grad is None


def test_gradients_of_an_unknown_layer_is_a_config_error():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    ev.modules["0"].weight.requires_grad_(False)
    with pytest.raises(ConfigError, match="no quantizable layer '1'"), ev.gradients(["0", "1"]):
        pass
    assert not ev.modules["0"].weight.requires_grad  # refused before anything was touched


@pytest.mark.parametrize("name", ["forward_passes", "evaluations", "reuse_prefix", "prefix_reuse"])
def test_counters_and_switches_are_read_only(name):
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    ev.loss({"0": 2})
    before = getattr(ev, name)
    with pytest.raises(AttributeError):
        setattr(ev, name, 0)
    assert getattr(ev, name) == before


def test_the_layer_mapping_is_read_only():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor())
    with pytest.raises(TypeError):
        ev.modules["0"] = nn.Linear(6, 8)


def test_every_forward_pass_is_counted_by_the_evaluator():
    ev = Evaluator(tiny(), calibration(), None, MinMaxPerTensor(), metric=accuracy_like)
    calls = []
    ev.model.register_forward_hook(lambda *a: calls.append(1))
    ev.losses([{"0": 2}, {"0": 2, "2": 4}, {"2": 4}])  # float outputs, a tracing pass, the evaluations
    ev.forward(1)
    ev.batch_loss(2)
    ev.finetuned_score({"0": 2}, steps=2, use_metric=False)  # functional calls run the model too
    assert ev.forward_passes == len(calls)
