"""The default loss by output type, its Hessian probes, and gradient methods on outputs the loss never reads."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mpqcore
from mpqcore.divergence import (
    CLASS_KL,
    COSINE,
    NORMALIZED_MSE,
    TOKEN_KL,
    default_divergence,
    default_loss,
    primary_output,
    token_mask,
)

transformers = pytest.importorskip("transformers")


def _lm_output(logits):
    return types.SimpleNamespace(logits=logits)


def test_divergence_follows_the_output_type():
    assert default_divergence(torch.zeros(4, 10)) is CLASS_KL  # a classifier's plain logits, as before
    assert default_divergence(torch.zeros(4, 3, 8, 8)) is NORMALIZED_MSE  # a feature map, as before
    assert default_divergence(torch.zeros(4, 5, 10)) is NORMALIZED_MSE  # a plain 3-D tensor: unknown kind
    assert default_divergence(_lm_output(torch.zeros(4, 5, 10))) is TOKEN_KL
    assert default_divergence({"logits": torch.zeros(4, 10)}) is CLASS_KL
    assert default_divergence({"last_hidden_state": torch.zeros(4, 5, 8)}) is COSINE
    hidden = types.SimpleNamespace(last_hidden_state=torch.zeros(4, 5, 8), pooler_output=torch.zeros(4, 8))
    assert default_divergence(hidden) is COSINE
    assert primary_output(hidden) is hidden.last_hidden_state


def test_class_kl_is_the_formula_the_digits_benchmarks_were_measured_with():
    torch.manual_seed(0)
    y, ref = torch.randn(6, 10), torch.randn(6, 10)
    expected = F.kl_div(F.log_softmax(y, dim=1), F.log_softmax(ref, dim=1), log_target=True, reduction="batchmean")
    assert torch.equal(default_loss(y, ref), expected)
    y4, ref4 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(default_loss(y4, ref4), ((y4 - ref4) ** 2).sum() / ref4.pow(2).sum())


def test_token_kl_ignores_padding_and_averages_over_kept_tokens():
    torch.manual_seed(0)
    ref, y = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "attention_mask": mask}
    loss = default_loss(_lm_output(y), ref, batch)
    per_token = (F.softmax(ref, -1) * (F.log_softmax(ref, -1) - F.log_softmax(y, -1))).sum(-1)
    torch.testing.assert_close(loss, per_token[mask.bool()].mean())
    changed = y.clone()
    changed[0, 3:] += 100.0  # the padding of row 0
    assert torch.equal(default_loss(_lm_output(changed), ref, batch), loss)
    assert float(default_loss(_lm_output(ref), ref, batch)) == pytest.approx(0.0, abs=1e-6)
    # the same tokens without a mask count the padding too
    assert not torch.equal(default_loss(_lm_output(changed), ref), loss)


def test_cosine_distance_per_token():
    torch.manual_seed(0)
    ref = torch.randn(2, 4, 6)
    y = ref * 3.0  # same directions: cosine distance 0, whatever the scale
    out = {"last_hidden_state": y}
    assert float(default_loss(out, ref)) == pytest.approx(0.0, abs=1e-6)
    y2 = torch.randn(2, 4, 6)
    expected = (1 - F.cosine_similarity(y2, ref, dim=-1)).mean()
    torch.testing.assert_close(default_loss({"last_hidden_state": y2}, ref), expected)


def test_a_mask_that_does_not_fit_the_output_is_refused():
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4)}
    with pytest.raises(mpqcore.ConfigError, match=r"attention_mask has shape \[2, 4\] but the output is \[2, 6, 3\]"):
        token_mask(batch, torch.zeros(2, 6, 3))
    assert token_mask(batch, torch.zeros(2, 3)) is None  # pooled: nothing to mask


def _hessian(divergence, ref, mask):
    flat = ref.reshape(-1)

    def f(v):
        return divergence.loss(v.reshape(ref.shape), ref, mask)

    return torch.autograd.functional.hessian(f, flat.clone()).reshape(flat.numel(), flat.numel())


@pytest.mark.parametrize("divergence", [CLASS_KL, TOKEN_KL, COSINE, NORMALIZED_MSE], ids=lambda d: d.name)
def test_each_probe_has_the_divergence_hessian_as_covariance(divergence):
    # HAWQ's Gauss-Newton estimate is unbiased only if E[u u^T] is the loss's Hessian at y = ref.
    torch.manual_seed(0)
    ref = torch.randn(3, 4).double() if divergence is CLASS_KL else torch.randn(2, 3, 4).double()
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool() if divergence in (TOKEN_KL, COSINE) else None
    hessian = _hessian(divergence, ref, mask)
    gen = torch.Generator().manual_seed(1)
    draws = 20000
    cov = torch.zeros_like(hessian)
    for _ in range(draws):
        u = divergence.probe(ref, mask, gen).double().reshape(-1)
        cov += torch.outer(u, u)
    cov /= draws
    scale = hessian.abs().max()
    assert float((cov - hessian).abs().max() / scale) < 0.05


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2, use_cache=False)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 64, (3, 8))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
    return model, [{"input_ids": ids, "attention_mask": mask}]


def test_causal_lm_default_loss_is_the_masked_per_token_kl():
    model, calibration = _tiny_gpt2()
    meas = mpqcore.measure(model, calibration, method="uniform", bits=(2, 8))
    ev = meas.evaluator
    fqn = meas.spec.fqns[-1]
    with torch.no_grad():
        ref = model(**calibration[0]).logits
        with ev.applied({fqn: 2}) as quantized:
            y = quantized(**calibration[0]).logits
    mask = calibration[0]["attention_mask"].bool()
    per_token = (F.softmax(ref, -1) * (F.log_softmax(ref, -1) - F.log_softmax(y, -1))).sum(-1)
    assert ev.loss({fqn: 2}) == pytest.approx(float(per_token[mask].mean()), rel=1e-5)
    assert ev.loss({}) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("estimator", ["gauss-newton", "hutchinson"])
def test_hawq_on_bert_whose_pooler_the_loss_never_reads(estimator):
    # Before: a raw autograd error ("One of the differentiated Tensors appears to not have
    # been used in the graph") because the default loss reads last_hidden_state only.
    from mpqcore.testing.models import small_bert

    model, calibration = small_bert(attn_implementation="eager" if estimator == "hutchinson" else "sdpa")
    meas = mpqcore.measure(
        model, calibration, method="hawq", bits=(4, 8), method_options={"samples": 2, "estimator": estimator}
    )
    traces = meas.objective.info["hessian_trace"]
    pooler = [f for f in traces if f.startswith("pooler")]
    assert pooler and all(traces[f] == 0.0 for f in pooler)
    encoder = [traces[f] for f in traces if f.startswith("encoder")]
    # Gauss-Newton never goes below 0; a 2-draw Hutchinson estimate may be clamped at 0.
    assert (
        all(t > 0 for t in encoder) if estimator == "gauss-newton" else sum(t > 0 for t in encoder) > len(encoder) / 2
    )
    assert np.isfinite(meas.objective.unary).all()


def test_hawq_gauss_newton_on_a_causal_lm_skips_padding():
    model, calibration = _tiny_gpt2()
    meas = mpqcore.measure(model, calibration, method="hawq", bits=(4, 8), method_options={"samples": 4})
    assert meas.objective.info["estimator"] == "gauss-newton"
    assert all(t > 0 for t in meas.objective.info["hessian_trace"].values())


def test_hutchinson_through_fused_attention_runs_on_the_math_kernel():
    # Before: a ConfigError (torch's fused scaled_dot_product_attention has no double
    # backward on CPU); now the draws run with SDPBackend.MATH, the same attention.
    from mpqcore.testing.models import small_bert

    opts = {"samples": 2, "estimator": "hutchinson", "calibrate": "none"}
    traces = {}
    for attn in ("sdpa", "eager"):
        model, calibration = small_bert(attn_implementation=attn)
        meas = mpqcore.measure(model, calibration, method="hawq", bits=(4, 8), method_options=opts)
        traces[attn] = meas.objective.info["hessian_trace"]
    # the same probes through the same attention: the same traces, up to float rounding
    assert traces["sdpa"].keys() == traces["eager"].keys()
    for f, t in traces["eager"].items():
        assert traces["sdpa"][f] == pytest.approx(t, rel=1e-3, abs=1e-9), f
    assert sum(t > 0 for t in traces["sdpa"].values()) > len(traces["sdpa"]) / 2
