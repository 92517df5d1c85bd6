"""Introspection: which layers are quantizable, their fqns, parameters and MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpqcore import ConfigError, introspect
from mpqcore.introspect import quantizable_modules


class Small(nn.Module):
    """Conv2d 3->4 (3x3, pad 1) on 8x8; grouped strided Conv2d 4->8; Linear 72->10;
    a Conv1d branch on a second input; a Linear on a 3-D tensor."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False),
        )
        self.fc = nn.Linear(72, 10)
        self.seq = nn.Conv1d(2, 5, 3)
        self.tok = nn.Linear(6, 3)

    def forward(self, image, signal, tokens):
        x = self.features(image).flatten(1)
        return self.fc(x).sum() + self.seq(signal).sum() + self.tok(tokens).sum()


def batch(n=4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 2, 10, generator=g), torch.randn(n, 4, 6, generator=g))


# Hand-computed, per example:
#   features.0: 4 x 8 x 8 outputs, each 3 * 3 * 3 MACs        = 6912; params 4*3*3*3 = 108
#   features.3: 8 x 3 x 3 outputs ((8-3)//2+1 = 3), each (4/2) * 3 * 3 = 18 MACs = 1296; params 8*2*3*3 = 144
#   fc:         10 outputs, each 72 MACs                          = 720;  params 720
#   seq:        5 x 8 outputs, each 2 * 3 MACs                    = 240;  params 30
#   tok:        4 x 3 outputs, each 6 MACs                        = 72;   params 18
EXPECTED = {
    "features.0": ("Conv2d", 108, 6912, (4, 3, 3, 3)),
    "features.3": ("Conv2d", 144, 1296, (8, 2, 3, 3)),
    "fc": ("Linear", 720, 720, (10, 72)),
    "seq": ("Conv1d", 30, 240, (5, 2, 3)),
    "tok": ("Linear", 18, 72, (3, 6)),
}


def test_layers_params_and_macs_by_hand():
    spec = introspect(Small(), batch())
    assert spec.fqns == tuple(EXPECTED)  # registration order; BatchNorm and ReLU skipped
    for layer in spec.layers:
        assert (layer.kind, layer.params, layer.macs, layer.weight_shape) == EXPECTED[layer.fqn], layer.fqn
        assert layer.aliases == ()
    assert spec.total_params == sum(v[1] for v in EXPECTED.values())


@pytest.mark.parametrize("n", [1, 3])
def test_macs_are_per_example(n):
    spec = introspect(Small(), batch(n))
    assert {layer.fqn: layer.macs for layer in spec.layers} == {k: v[2] for k, v in EXPECTED.items()}


def test_dict_batch_and_no_batch():
    model = Small()
    image, signal, tokens = batch(2)
    spec = introspect(model, {"image": image, "signal": signal, "tokens": tokens})
    assert spec.layer("fc").macs == 720
    spec = introspect(model)  # no example batch: no MACs, everything else known
    assert [layer.macs for layer in spec.layers] == [0] * 5
    assert spec.layer("seq").params == 30


@pytest.mark.parametrize("groups, expected", [(1, 73728), (4, 18432), (8, 9216)])
def test_grouped_conv_macs(groups, expected):
    # Conv2d(8, 16, 3, padding=1) on 8x8: 16*8*8 = 1024 outputs, each (8/groups)*3*3 MACs:
    # 1024*72, 1024*18, 1024*9.
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=groups)
    spec = introspect(nn.Sequential(conv), torch.randn(2, 8, 8, 8))
    assert spec.layers[0].macs == expected
    assert spec.layers[0].params == 16 * (8 // groups) * 9


def test_model_is_untouched_and_hooks_are_removed():
    model = Small().train()
    model.fc.eval()  # a mixed-mode model: each module's own mode must come back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    introspect(model, batch())
    assert {name: m.training for name, m in model.named_modules()} == modes
    for name, m in model.named_modules():
        assert not m._forward_hooks, name
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:  # weights and buffers alike
        assert torch.equal(before[key], after[key]), key


def test_introspection_leaves_batchnorm_statistics_alone():
    # Bug fixed (issue 13): introspect ran a train()-mode model in train mode, so the
    # MAC-counting pass moved BatchNorm's running_mean/var and num_batches_tracked.
    model = Small().train()
    bn = model.features[1]
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    introspect(model, batch())
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == 0
    assert model.training and bn.training


class Shared(nn.Module):
    """``first`` and ``second`` share one weight Parameter and both run; ``head`` is one
    module registered under two names (``head`` and ``alias``) and runs once."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4, bias=False)
        self.second = nn.Linear(4, 4, bias=False)
        self.second.weight = self.first.weight
        self.head = nn.Linear(4, 2)
        self.alias = self.head

    def forward(self, x):
        return self.head(self.second(self.first(x)))


def test_shared_layers_are_reported_once_with_aliases():
    spec = introspect(Shared(), torch.randn(3, 4))
    assert spec.fqns == ("first", "head")
    first, head = spec.layers
    assert first.aliases == ("second",) and head.aliases == ("alias",)
    assert (first.params, head.params) == (16, 8)
    assert head.macs == 8  # one module under two names, called once: counted once


def test_macs_of_a_weight_shared_by_two_modules_count_both():
    # Bug fixed: only the first module had a MAC hook, so the second module's
    # multiplications with the same (quantized) weight were missing from BOPs.
    spec = introspect(Shared(), torch.randn(3, 4))
    assert spec.layer("first").macs == 2 * 4 * 4


def test_quantizable_modules_maps_fqn_to_module_and_aliases():
    model = Shared()
    mods = quantizable_modules(model)
    assert list(mods) == ["first", "head"]
    assert mods["first"][0] is model.first and mods["first"][1] == ["second"]
    assert mods["head"][0] is model.head and mods["head"][1] == ["alias"]


def test_no_quantizable_layer_names_the_valid_kinds():
    with pytest.raises(ConfigError, match="no quantizable layer; mpq quantizes Conv1d, Conv2d, Linear modules") as info:
        introspect(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), torch.randn(2, 3))
    for kind in ("conv-transpose", "embedding", "multihead-attention", "rnn", "transformers-conv1d"):
        assert kind in str(info.value)
    assert "mpq_register_layer_kinds" in str(info.value)


def test_a_failing_forward_names_calibration_batch_0():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="the model failed on calibration batch 0: RuntimeError") as info:
        introspect(model, torch.randn(2, 5))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not model[0]._forward_hooks  # removed on failure too
