"""Layer kinds (hook ``mpq_register_layer_kinds``): which modules, which weights, their axes and MACs.

MACs are checked against hand counts; the channel axis by per-channel quantization;
parametrized weights by the evaluator's loss (it used to swap the ``.data`` of a
computed tensor and report a quantized layer that was never quantized); tied weights
as one decision; and a module two kinds claim as an error naming both.
"""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import mpqcore
from mpqcore import ConfigError, Evaluator, PluginError, PluginSet, hookimpl, introspect
from mpqcore.layer_kinds import BUILTIN_KINDS, WeightRef, quantize_along
from mpqcore.quantizers import MinMaxPerTensor, SymmetricPerChannel


def test_builtin_kinds_are_registered_as_a_plugin():
    plugins = mpqcore.get_plugins()
    assert plugins.layer_kinds.names() == sorted(BUILTIN_KINDS)
    info = {i.name: i for i in plugins.info()}["mpqcore.layer_kinds"]
    assert info.registers["layer kind"] == sorted(BUILTIN_KINDS)


# -- MACs by hand ------------------------------------------------------------------------


class Zoo(nn.Module):
    """One module of each kind whose MACs are easy to count by hand."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(8, 2, kdim=6, vdim=4, batch_first=True)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.gru = nn.GRU(6, 5, batch_first=True, bidirectional=True)
        self.up = nn.ConvTranspose1d(10, 4, 3, stride=2)
        self.head = nn.Linear(10, 3)

    def forward(self, tokens, memory, values):
        x = self.emb(tokens)  # [N, 5, 8]
        x, _ = self.attn(x, x, x)
        x, _ = self.cross(x, memory, values)  # memory [N, 7, 6], values [N, 7, 4]
        x, _ = self.lstm(x)  # [N, 5, 6]
        x, _ = self.gru(x)  # [N, 5, 10]
        y = self.up(x.transpose(1, 2))  # [N, 4, 11]
        return self.head(x[:, -1]).sum() + y.sum()


def zoo_batch(n=3):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 20, (n, 5), generator=g),
        torch.randn(n, 7, 6, generator=g),
        torch.randn(n, 7, 4, generator=g),
    )


# Per example:
#   attn.in_proj_weight [24, 8]: 5 query + 5 key + 5 value vectors, each 8 x 8  = 960
#   attn.out_proj: 5 outputs x 8 x 8 (counted by the attention kind)            = 320
#   cross.q_proj_weight [8, 8]: 5 x 64 = 320; k_proj [8, 6]: 7 x 48 = 336; v_proj [8, 4]: 7 x 32 = 224
#   cross.out_proj: 5 x 64                                                      = 320
#   lstm.weight_ih_l0 [24, 8]: 5 steps x 192 = 960; weight_hh_l0 [24, 6]: 5 x 144 = 720
#   gru.weight_ih_l0(_reverse) [15, 6]: 5 x 90 = 450; weight_hh_l0(_reverse) [15, 5]: 5 x 75 = 375
#   up: 10 x 5 inputs, each into 4 x 3 outputs                                  = 600
#   head: 3 outputs x 10                                                        = 30
#   emb: a lookup                                                                = 0
ZOO_MACS = {
    "emb": 0,
    "attn.in_proj_weight": 960,
    "attn.out_proj": 320,
    "cross.q_proj_weight": 320,
    "cross.k_proj_weight": 336,
    "cross.v_proj_weight": 224,
    "cross.out_proj": 320,
    "lstm.weight_ih_l0": 960,
    "lstm.weight_hh_l0": 720,
    "gru.weight_ih_l0": 450,
    "gru.weight_hh_l0": 375,
    "gru.weight_ih_l0_reverse": 450,
    "gru.weight_hh_l0_reverse": 375,
    "up": 600,
    "head": 30,
}


@pytest.mark.parametrize("n", [1, 3])
def test_macs_of_every_kind_by_hand(n):
    spec = introspect(Zoo(), zoo_batch(n))
    assert {layer.fqn: layer.macs for layer in spec.layers} == ZOO_MACS
    assert all(layer.macs_measured for layer in spec.layers)
    assert spec.float_weights == ()  # every weight of the zoo is some kind's


def test_layer_names_kinds_axes_and_weights():
    spec = introspect(Zoo(), zoo_batch())
    lstm = spec.layer("lstm.weight_hh_l0")
    assert (lstm.kind, lstm.layer_kind, lstm.weights, lstm.axis, lstm.weight_shape) == (
        "LSTM",
        "rnn",
        ("lstm.weight_hh_l0",),
        0,
        (24, 6),
    )
    up = spec.layer("up")
    assert (up.kind, up.layer_kind, up.weights, up.axis) == ("ConvTranspose1d", "conv-transpose", ("up.weight",), 1)
    out_proj = spec.layer("attn.out_proj")
    assert (out_proj.kind, out_proj.layer_kind) == ("NonDynamicallyQuantizableLinear", "linear")
    assert spec.layer("emb").layer_kind == "embedding"


def test_bops_of_a_lookup_is_zero_but_unmeasured_macs_are_an_error():
    bops = mpqcore.get_plugins().cost_models.create("bops")
    measured = introspect(Zoo(), zoo_batch())
    assert bops.cost(measured.layer("emb"), 4) == 0.0
    assert bops.cost(measured.layer("attn.out_proj"), 4) == 320 * 4 * 8  # MACs attention used to hide
    unmeasured = introspect(Zoo())
    with pytest.raises(ConfigError, match="has no MAC count; introspect the model with an example batch"):
        bops.cost(unmeasured.layer("emb"), 4)


def test_transformer_encoder_macs_are_counted_despite_the_fast_path():
    # nn.TransformerEncoderLayer in eval mode without grad takes a fused path that never
    # calls its submodules; introspection turns that path off so their hooks run.
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, dropout=0.0).eval()
    spec = introspect(layer, torch.randn(2, 5, 8))
    assert {f.fqn: f.macs for f in spec.layers} == {
        "self_attn.in_proj_weight": 3 * 5 * 64,
        "self_attn.out_proj": 5 * 64,
        "linear1": 5 * 16 * 8,
        "linear2": 5 * 8 * 16,
    }
    assert torch.backends.mha.get_fastpath_enabled()  # put back


# -- channel axes ----------------------------------------------------------------------


def test_quantize_along_moves_the_channel_axis_first_and_back():
    w = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(1))
    q = quantize_along(SymmetricPerChannel(), w, 3, axis=1)
    assert q.codes.shape == w.shape and q.axis == 1 and q.scale.shape == (1, 4, 1)
    expected = SymmetricPerChannel().quantize(w.movedim(1, 0), 3).dequantize().movedim(0, 1)
    assert torch.equal(q.dequantize(), expected)
    for c in range(4):  # 2**3 levels per output channel, at most
        assert torch.unique(q.dequantize()[:, c]).numel() <= 8
    per_tensor = quantize_along(MinMaxPerTensor(), w, 3, axis=1)
    assert per_tensor.axis is None and torch.equal(
        per_tensor.dequantize(), MinMaxPerTensor().quantize(w, 3).dequantize()
    )


def test_conv_transpose_is_quantized_per_output_channel():
    model = nn.Sequential(nn.ConvTranspose2d(6, 4, 3))
    x = torch.randn(2, 6, 5, 5)
    ev = Evaluator(model, [x], None, SymmetricPerChannel())
    fake = ev.fake_quantized("0", 2)
    assert ev.quantized("0", 2).axis == 1
    # weight [in 6, out 4, 3, 3]: 2 bits give at most 3 levels per output channel (axis 1) ...
    assert all(torch.unique(fake[:, c]).numel() <= 3 for c in range(4))
    # ... which a per-"row" (axis 0) quantization would not give
    wrong = SymmetricPerChannel().quantize(model[0].weight.detach(), 2).dequantize()
    assert any(torch.unique(wrong[:, c]).numel() > 3 for c in range(4))
    applied = mpqcore.apply(model, {"0": 2}, "symmetric-per-channel")
    assert torch.equal(applied[0].weight, fake)


# -- parametrized and computed weights ---------------------------------------------------


def _weight_normed(old_style: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    if old_style:
        with pytest.warns(FutureWarning):
            torch.nn.utils.weight_norm(model[0])
    else:
        parametrizations.weight_norm(model[0])
    return model


@pytest.mark.parametrize("old_style", [False, True], ids=["parametrizations.weight_norm", "weight_norm hook"])
def test_a_weight_normed_layer_is_really_quantized(old_style):
    # Bug fixed: the evaluator swapped .data of the computed weight, so a weight_norm
    # layer "at 2 bits" computed in float (its loss was 0, its report said 2 bits).
    model = _weight_normed(old_style)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(2))
    spec = introspect(model, x)
    assert spec.fqns == ("0", "2") and spec.layer("0").params == 48 and spec.float_weights == ()
    ev = Evaluator(model, [x], None, MinMaxPerTensor())
    assert ev.loss({"0": 2}) > 1e-4
    effective = model[0].weight.detach().clone()
    q = MinMaxPerTensor().quantize(effective, 2).dequantize()
    manual = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    manual[0].weight.data, manual[0].bias.data = q, model[0].bias.detach().clone()
    manual[2].load_state_dict(model[2].state_dict())
    with torch.no_grad(), ev.applied({"0": 2}) as working:
        torch.testing.assert_close(working(x), manual(x))
    # apply: the quantized value replaces the parametrization; the user's model stays as it was
    applied = mpqcore.apply(model, {"0": 2}, MinMaxPerTensor())  # the quantizer the evaluator used
    assert isinstance(applied[0]._parameters.get("weight"), nn.Parameter)
    assert torch.unique(applied[0].weight).numel() <= 4
    torch.testing.assert_close(applied(x), manual(x))
    assert torch.equal(model[0].weight, effective)


def test_a_weight_computed_some_other_way_is_refused_and_left_float():
    class Tied(nn.Module):  # its Linear's weight is a plain tensor attribute set in forward
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.base = nn.Parameter(torch.randn(4, 4))
            self.out = nn.Linear(4, 2)
            del self.lin.weight
            self.lin.weight = self.base * 1.0

        def forward(self, x):
            self.lin.weight = self.base * 2.0
            return self.out(self.lin(x))

    spec = introspect(Tied(), torch.randn(2, 4))
    assert spec.fqns == ("out",)
    reasons = {w.name: w.reason for w in spec.float_weights}
    assert reasons == {"lin": "refused", "base": "unknown-kind"}
    assert "not a Parameter" in next(w.detail for w in spec.float_weights if w.name == "lin")


# -- tied weights ------------------------------------------------------------------------


class TiedLM(nn.Module):
    """A GPT-2-like tie: the output head shares the embedding's Parameter."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(12, 6)
        self.mid = nn.Linear(6, 6)
        self.lm_head = nn.Linear(6, 12, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        return self.lm_head(torch.tanh(self.mid(self.wte(ids))))


def test_tied_weights_are_one_decision_under_every_name_with_macs_from_every_use():
    ids = torch.randint(0, 12, (2, 5))
    spec = introspect(TiedLM(), ids)
    assert spec.fqns == ("wte", "mid")
    wte = spec.layer("lm_head")  # an alias finds its layer
    assert wte.fqn == "wte" and wte.aliases == ("lm_head",) and wte.weights == ("wte.weight", "lm_head.weight")
    assert wte.macs == 5 * 12 * 6  # the lookup adds nothing, the head multiplies
    assert spec.weight_params == 72 + 36  # the tied tensor counted once


def test_apply_by_either_name_quantizes_the_one_tensor_and_refuses_two_widths():
    model = TiedLM()
    applied = mpqcore.apply(model, {"lm_head": 2})
    assert applied.lm_head.weight is applied.wte.weight  # still tied
    assert max(torch.unique(row).numel() for row in applied.wte.weight) <= 4  # per channel (the default)
    same = mpqcore.apply(model, {"wte": 2, "lm_head": 2})
    assert torch.equal(same.wte.weight, applied.wte.weight)
    with pytest.raises(ConfigError, match=r"'wte' 2 bits and 'lm_head' 8.*one tied weight tensor"):
        mpqcore.apply(model, {"wte": 2, "lm_head": 8})


def test_excluding_one_name_of_a_tied_tensor_leaves_the_tensor_float():
    spec = introspect(TiedLM(), torch.randint(0, 12, (2, 5)), exclude=["lm_head"])
    assert spec.fqns == ("mid",)
    (tied,) = spec.float_weights
    assert (tied.name, tied.reason) == ("wte", "tied") and "'lm_head'" in tied.detail


def test_prefix_reuse_is_off_when_a_tied_weight_is_used_before_its_layer():
    class Backwards(nn.Module):  # registered first, called last: the tie's first use is 'enc'
        def __init__(self):
            super().__init__()
            self.dec = nn.Linear(4, 4)
            self.enc = nn.Linear(4, 4)
            self.enc.weight = self.dec.weight
            self.mid = nn.Linear(4, 4)

        def forward(self, x):
            return self.dec(torch.tanh(self.mid(self.enc(x))))

    data = [torch.randn(3, 4, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    ev = Evaluator(Backwards(), data, None, MinMaxPerTensor())
    assignments = [{"dec": 2}, {"dec": 2, "mid": 2}, {"mid": 2}, {"dec": 4, "mid": 2}]
    assert ev.losses(assignments) == [ev.loss(a) for a in assignments]
    assert not ev.prefix_reuse["enabled"] and "tied" in ev.prefix_reuse["reason"]


# -- plugins -----------------------------------------------------------------------------


@attrs.frozen
class MyLinear:
    """A plugin kind that also claims nn.Linear: a clash with the built-in 'linear'."""

    def matches(self, module):
        return isinstance(module, nn.Linear)

    def weights(self, module):
        return [WeightRef("weight")]

    def macs(self, module, args, kwargs, output):
        return {}


class ClashPlugin:
    @hookimpl
    def mpq_register_layer_kinds(self, registry):
        registry.add("my-linear", MyLinear)


def test_a_module_two_kinds_claim_is_an_error_naming_both():
    plugins = PluginSet(autoload=False, plugins=[ClashPlugin()])
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(PluginError, match=r"module '2' \(Linear\) is claimed by two layer kinds") as info:
        introspect(model, plugins=plugins)
    message = str(info.value)
    assert "'linear' (plugin 'mpqcore.layer_kinds')" in message and "'my-linear' (plugin 'ClashPlugin')" in message
    assert "MPQ_DISABLE_PLUGINS" in message
    with pytest.raises(PluginError, match="claimed by two layer kinds"):
        mpqcore.search(model, [torch.randn(2, 1, 4, 4)], method="uniform", bits=(4,), plugins=plugins)


def test_a_layer_kind_lacking_a_member_names_the_protocol():
    class Half:
        def matches(self, module):
            return False

    class HalfPlugin:
        @hookimpl
        def mpq_register_layer_kinds(self, registry):
            registry.add("half", Half)

    with pytest.raises(PluginError, match=r"lacks weights, macs.*mpqcore.protocols.LayerKind"):
        introspect(nn.Linear(2, 2), plugins=PluginSet(autoload=False, plugins=[HalfPlugin()]))


def test_a_failing_macs_names_the_kind():
    @attrs.frozen
    class Broken:
        def matches(self, module):
            return isinstance(module, nn.Bilinear)

        def weights(self, module):
            return [WeightRef("weight")]

        def macs(self, module, args, kwargs, output):
            raise ZeroDivisionError("oops")

    class BrokenPlugin:
        @hookimpl
        def mpq_register_layer_kinds(self, registry):
            registry.add("broken", Broken)

    plugins = PluginSet(autoload=False, plugins=[BrokenPlugin()])
    model = nn.Bilinear(3, 2, 4)
    assert introspect(model, plugins=plugins).fqns == ("",)
    with pytest.raises(PluginError, match=r"layer kind 'broken' raised in macs.*ZeroDivisionError: oops"):
        introspect(model, (torch.randn(2, 3), torch.randn(2, 2)), plugins=plugins)
    assert not model._forward_hooks
