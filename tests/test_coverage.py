"""Coverage on real architectures: a search quantizes every weight a user has, and says so.

Each model is built from its library's constructor with a small configuration and
random weights (torchvision ViT, MobileNetV3, ResNet-18; transformers BERT and GPT-2;
an Embedding + LSTM model and a ConvTranspose model). A search with one candidate
width must quantize at least 99% of the weight parameters (position embeddings and
class tokens aside, which mpq leaves float by default), ``apply`` must leave at most
2**b distinct values per tensor (per output channel for a per-channel quantizer, along
the layer's own channel axis), and the report's coverage line must agree with a count
made directly on the quantized model.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

import mpqcore
from mpqcore import ConfigError
from mpqcore.cli import _summary

BITS = 3

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _vit():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    with torch.no_grad():  # torchvision starts the class token and the head at zero
        model.class_token.normal_()
        model.heads.head.weight.normal_(std=0.1)
    return model, torch.randn(2, 3, 32, 32)


def _mobilenet():
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.mobilenet_v3_small(num_classes=10), torch.randn(2, 3, 32, 32)


def _resnet():
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 32, 32)


def _bert():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    ids = torch.randint(0, 100, (2, 12))
    return transformers.BertForSequenceClassification(config), {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
    }


def _gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config), {"input_ids": torch.randint(0, 100, (2, 12))}


class EmbeddingLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 24, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        return self.fc(h[:, -1])


class ConvTransposeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.out = nn.ConvTranspose2d(6, 3, 3, padding=1, groups=3)

    def forward(self, x):
        return self.out(torch.relu(self.dec(torch.relu(self.enc(x)))))


MODELS = {
    "vit": _vit,
    "mobilenet_v3_small": _mobilenet,
    "resnet18": _resnet,
    "bert": _bert,
    "gpt2": _gpt2,
    "embedding-lstm": lambda: (EmbeddingLSTM(), torch.randint(0, 50, (2, 7))),
    "conv-transpose": lambda: (ConvTransposeNet(), torch.randn(2, 3, 8, 8)),
}


def _build(name):
    torch.manual_seed(0)
    return MODELS[name]()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight parameter (two or more axes), each tied tensor once."""
    return {name: p for name, p in model.named_parameters() if p.dim() >= 2}


def _line_numbers(line: str) -> tuple[float, int]:
    m = re.search(r"coverage: ([\d.]+)% of ([\d,]+) weight parameters quantized", line)
    assert m, line
    return float(m[1]), int(m[2].replace(",", ""))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_width_search_quantizes_every_weight_and_the_coverage_line_agrees(name):
    model, batch = _build(name)
    before = {k: v.detach().clone() for k, v in _weights(model).items()}
    report = mpqcore.search(model, [batch], method="uniform", bits=(BITS,), budget=None)
    coverage = report.coverage
    # >= 99% of the weights, position embeddings and class tokens aside (float by default)
    default = sum(w.params for w in coverage.float_weights if w.reason == "default-excluded")
    assert {w.reason for w in coverage.float_weights} <= {"default-excluded"}
    assert coverage.quantized_params / (coverage.weight_params - default) >= 0.99
    # apply: at most 2**b values in every output channel of every quantized tensor (the
    # default quantizer has a scale per channel); the ones left float untouched
    quantized = report.model
    weights = _weights(quantized)
    layer_of = {path: layer for layer in report.spec.layers for path in layer.weights}
    few = 0
    for path, w in weights.items():
        if path in layer_of:
            channels = w.movedim(layer_of[path].axis, 0)
            assert max(torch.unique(c).numel() for c in channels) <= 2**BITS, path
            few += w.numel()
        else:
            assert torch.equal(w, before[path]), f"{path} is not a layer, yet it changed"
            assert torch.unique(w).numel() > 2**BITS, f"{path} looks quantized"
    # the report's line agrees with the count on the model itself
    percent, total = _line_numbers(coverage.line())
    assert total == sum(w.numel() for w in weights.values()) == coverage.weight_params
    assert percent == pytest.approx(100 * few / total, abs=0.05)
    assert coverage.average_bits == BITS
    assert coverage.average_bits_all == pytest.approx((BITS * few + 32 * (total - few)) / total)


@pytest.mark.parametrize("name", ["vit", "gpt2", "conv-transpose", "embedding-lstm"])
def test_per_channel_quantization_follows_each_layers_channel_axis(name):
    model, batch = _build(name)
    spec = mpqcore.introspect(model, batch, exclude=())
    assert spec.float_weights == ()  # with the defaults included, everything is covered
    quantized = mpqcore.apply(model, dict.fromkeys(spec.fqns, BITS), "symmetric-per-channel", exclude=())
    for layer in spec.layers:
        w = quantized.get_parameter(layer.weights[0]).detach()
        for channel in w.movedim(layer.axis, 0):
            assert torch.unique(channel).numel() <= 2**BITS, layer.fqn


def test_gpt2_tied_head_is_one_layer_and_conv1d_is_covered():
    model, batch = _build("gpt2")
    spec = mpqcore.introspect(model, batch)
    wte = spec.layer("lm_head")
    assert (wte.fqn, wte.aliases) == ("transformer.wte", ("lm_head",))
    assert wte.macs == 12 * 100 * 32 // 1  # the head's use, per example: 12 tokens x vocabulary x width
    c_attn = spec.layer("transformer.h.0.attn.c_attn")
    assert (c_attn.kind, c_attn.layer_kind, c_attn.axis, c_attn.weight_shape) == (
        "Conv1D",
        "transformers-conv1d",
        1,
        (32, 96),
    )
    assert c_attn.macs == 12 * 32 * 96


def test_vit_attention_is_covered_and_a_bops_budget_works():
    # Bug fixed: in_proj_weight was never quantized and out_proj had 0 MACs, so any BOPs
    # budget failed ("has no MAC count; introspect the model with an example batch").
    model, batch = _build("vit")
    spec = mpqcore.introspect(model, batch)
    attn = "encoder.layers.encoder_layer_0.self_attention"
    assert spec.layer(f"{attn}.in_proj_weight").macs == 3 * 17 * 32 * 32  # 16 patches + the class token
    assert spec.layer(f"{attn}.out_proj").macs == 17 * 32 * 32
    report = mpqcore.search(model, [batch], method="uniform", bits=(4, 8), budget=mpqcore.Budget.relative("bops", 0.75))
    assert report.allocation.costs["bops"] <= report.problem.budgets["bops"] * (1 + 1e-9)


def test_exclude_leaves_layers_float_with_their_reason():
    model, batch = _build("vit")
    spec = mpqcore.introspect(model, batch, exclude=["heads.*", "*.pos_embedding"])
    reasons = {w.name: w.reason for w in spec.float_weights}
    assert reasons == {"heads.head": "excluded", "encoder.pos_embedding": "excluded"}
    assert "class_token" in spec.fqns  # a given list replaces the defaults
    assert "excluded by pattern 'heads.*'" in next(w.detail for w in spec.float_weights if w.name == "heads.head")


def test_an_exclude_pattern_matching_nothing_is_an_error_listing_the_layers():
    model, batch = EmbeddingLSTM(), torch.randint(0, 50, (2, 7))
    with pytest.raises(ConfigError, match=r"exclude patterns \['\*\.pos_embed'\] match no quantizable layer") as info:
        mpqcore.search(model, [batch], method="uniform", bits=(4,), exclude=["*.pos_embed", "fc"])
    assert "the layers: emb, lstm.weight_ih_l0, lstm.weight_hh_l0" in str(info.value)
    with pytest.raises(ConfigError, match="leaves no layer to quantize"):
        mpqcore.introspect(model, exclude=["*"])
    with pytest.raises(ConfigError, match="a list of fnmatch patterns"):
        mpqcore.introspect(model, exclude="fc")


def test_apply_exclude_leaves_an_allocated_layer_float():
    model, batch = EmbeddingLSTM(), torch.randint(0, 50, (2, 7))
    spec = mpqcore.introspect(model, batch)
    out = mpqcore.apply(model, dict.fromkeys(spec.fqns, 2), exclude=["lstm.*"])
    assert torch.equal(out.lstm.weight_ih_l0, model.lstm.weight_ih_l0)
    assert max(torch.unique(row).numel() for row in out.fc.weight) <= 4  # per output channel
    with pytest.raises(ConfigError, match="match no quantizable layer"):
        mpqcore.apply(model, {"fc": 2}, exclude=["gru.*"])


def test_coverage_is_in_the_json_the_summary_and_the_plot_title(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    titles: list[str] = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_title",
        lambda self, text, *a, **k: (titles.append(text), original(self, text, *a, **k))[1],
    )
    model, batch = _build("vit")
    report = mpqcore.search(model, [batch], method="uniform", bits=(4,), budget=None, exclude=["heads.*"])
    paths = report.write(tmp_path)
    data = json.loads(paths["report"].read_text())["coverage"]
    coverage = report.coverage
    assert data["share"] == pytest.approx(coverage.share) and coverage.share < 1
    assert data["average_bits"] == 4 and data["average_bits_all"] == pytest.approx(coverage.average_bits_all)
    assert coverage.average_bits_all == pytest.approx(
        (4 * coverage.quantized_params + 32 * 320) / coverage.weight_params
    )
    # a given list replaces the defaults: the class token and position embedding are quantized here
    assert [(w["name"], w["reason"]) for w in data["float"]] == [("heads.head", "excluded")]
    text = _summary(report, type("Task", (), {"metric_name": "metric", "higher_is_better": True})())
    assert coverage.line() in text and "float: heads.head (320 parameters): excluded by pattern 'heads.*'" in text
    assert any(f"{100 * coverage.share:.1f}% of weight parameters quantized" in t for t in titles)


def test_a_pin_or_tie_may_name_a_tied_layer_by_any_of_its_names():
    # GPT-2's lm_head is the word embedding's weight: pinning it by that name pins the one layer.
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(config).eval()
    batch = {"input_ids": torch.randint(0, 50, (2, 8))}
    meas = mpqcore.measure(model, [batch], method="uniform", bits=(2, 8), pins={"lm_head": 8},
                           ties=[["lm_head", "transformer.h.0.mlp.c_fc"]], plugins=mpqcore.PluginSet(autoload=False))  # fmt: skip
    wte = meas.spec.layer("lm_head").fqn
    assert dict(meas.problem.pins) == {wte: 8}
    assert (wte, "transformer.h.0.mlp.c_fc") in [tuple(g) for g in meas.problem.ties]
