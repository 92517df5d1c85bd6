"""Bias correction: the expected output shift of quantized weights is undone, measured on real layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mpqcore
from mpqcore import BiasCorrection, Budget, ConfigError
from mpqcore.bias_correction import layer_users
from mpqcore.introspect import find_layers
from mpqcore.quantizers import MinMaxPerTensor
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return digits_task()


def _inputs(model, name, batches):
    """The float inputs of ``model.<name>`` on ``batches``."""
    seen = []
    handle = getattr(model, name).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        for b in batches:
            model(b[0] if isinstance(b, (tuple, list)) else b)
    handle.remove()
    return seen


def _correction(model, batches, policy="add"):
    found = find_layers(model, BUILTINS)[0]
    run = lambda i: model(batches[i][0] if isinstance(batches[i], (tuple, list)) else batches[i])  # noqa: E731
    return BiasCorrection.measure(layer_users(found.values()), run, len(batches), policy=policy)


def _mean_shift(layer, weight, bias, xs):
    """Per-channel mean of ``layer`` with ``weight``/``bias`` minus its float mean, over inputs ``xs``."""
    fn = nn.functional.linear if isinstance(layer, nn.Linear) else layer._conv_forward
    reduce = (0,) if isinstance(layer, nn.Linear) else (0, 2, 3)
    q = torch.cat([fn(x, weight, bias) for x in xs]).mean(reduce)
    f = torch.cat([layer(x) for x in xs]).mean(reduce)
    return q - f


def test_a_linear_layers_mean_output_is_restored_exactly(task):
    model = task.model
    corr = _correction(model, task.calibration)
    xs = _inputs(model, "fc1", task.calibration)
    w, b = model.fc1.weight.detach(), model.fc1.bias.detach()
    wq = MinMaxPerTensor().quantize(w, 2).dequantize()
    new = corr.corrected_bias("fc1", model.fc1, w, wq, b)
    with torch.no_grad():
        before = _mean_shift(model.fc1, wq, b, xs).abs().max()
        after = _mean_shift(model.fc1, wq, new, xs).abs().max()
    assert before > 1e-2
    assert after < 1e-5  # exact in expectation for a Linear: E[Wq x + b'] = W E[x] + b


def test_a_convolutions_mean_shift_shrinks(task):
    model = task.model
    corr = _correction(model, task.calibration)
    for name in ("conv2", "conv3"):
        conv = getattr(model, name)
        xs = _inputs(model, name, task.calibration)
        w, b = conv.weight.detach(), conv.bias.detach()
        wq = MinMaxPerTensor().quantize(w, 2).dequantize()
        new = corr.corrected_bias(name, conv, w, wq, b)
        with torch.no_grad():
            before = _mean_shift(conv, wq, b, xs).norm()
            after = _mean_shift(conv, wq, new, xs).norm()
        # the mean over examples and positions, zero-padded borders included, is restored
        assert before > 0.1 and after < 1e-4 * before, (name, float(before), float(after))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 6, 3, groups=2, bias=False, padding=1, stride=2),
        nn.Conv2d(4, 6, (3, 2), dilation=2, padding="same", padding_mode="reflect", bias=False),
        nn.Conv1d(4, 4, 5, groups=4, padding=2, bias=False),
        nn.Conv3d(2, 3, 2, padding=1, bias=False),
    ],
)
def test_a_convolutions_shift_is_its_mean_output_shift(conv):
    torch.manual_seed(0)
    x = torch.randn(5, 4 if not isinstance(conv, nn.Conv3d) else 2, *([7] * (conv.weight.dim() - 2)))
    corr = _correction(nn.Sequential(conv), [x])
    delta = torch.randn_like(conv.weight) * 0.1
    shift = corr.shift("0", conv, delta)
    with torch.no_grad():
        real = conv._conv_forward(x, conv.weight + delta, None) - conv(x)
        real = real.transpose(0, 1).reshape(real.shape[1], -1).mean(1)
    assert torch.allclose(shift, real, atol=1e-5)


def test_the_search_measures_with_it_and_the_returned_model_carries_it(task):
    kwargs = {"method": "uniform", "bits": (2, 4, 8), "budget": Budget.average_bits(2.0), "metric": task.metric,
                  "quantizer": "minmax-per-tensor", "plugins": BUILTINS}  # fmt: skip
    plain = mpqcore.search(task.model, task.calibration, bias_correction=False, **kwargs)
    corrected = mpqcore.search(task.model, task.calibration, bias_correction=True, **kwargs)
    assert plain.bias_correction is None and corrected.bias_correction is not None
    assert corrected.results["loss"] < plain.results["loss"]
    assert corrected.to_json()["bias_correction"]["corrected"] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    # apply with the carried value reproduces the returned model exactly, and the reported metric
    again = mpqcore.apply(task.model, corrected.allocation, "minmax-per-tensor",
                          bias_correction=corrected.bias_correction, plugins=BUILTINS)  # fmt: skip
    for (n, a), (_, b) in zip(corrected.model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    assert task.metric(again) == corrected.results["metric"]
    assert not torch.equal(again.fc1.bias, task.model.fc1.bias)  # the user's model kept its own


def _no_bias_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4)
    )


def test_layers_without_bias_get_one_or_are_skipped_and_named():
    model = _no_bias_model().eval()
    batches = [torch.randn(4, 1, 8, 8) for _ in range(2)]
    kwargs = {"method": "uniform", "bits": (2, 8), "budget": Budget.average_bits(2.0), "plugins": BUILTINS}
    added = mpqcore.search(model, batches, bias_correction=True, **kwargs)
    assert isinstance(added.model[0].bias, nn.Parameter) and model[0].bias is None  # the user's model unchanged
    existing = mpqcore.search(model, batches, bias_correction="existing", **kwargs)
    assert existing.model[0].bias is None
    assert "no bias" in existing.bias_correction.skipped["0"]
    assert existing.bias_correction.summary()["corrected"] == ["4"]


def test_bad_values_are_refused_before_any_work(task):
    with pytest.raises(ConfigError, match=r"bias_correction must be .*'add', 'existing'"):
        mpqcore.measure(task.model, task.calibration, method="uniform", bias_correction="yes", plugins=BUILTINS)
    other = _correction(_no_bias_model(), [torch.randn(2, 1, 8, 8)])
    with pytest.raises(ConfigError, match=r"does not fit this model.*'0' is not a layer"):
        mpqcore.apply(task.model, {"fc2": 4}, bias_correction=other, plugins=BUILTINS)
    with pytest.raises(ConfigError, match=r"takes the mpqcore\.BiasCorrection"):
        mpqcore.apply(task.model, {"fc2": 4}, bias_correction=True, plugins=BUILTINS)
