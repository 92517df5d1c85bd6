"""ALPS on a two-layer model whose quantized weights, outputs and drops are known by hand.

Layer "0" (2x2) has weights [[0, 1/3], [2/3, 1]]: exact at 2 bits (min-max scale 1/3);
at 1 bit (scale 1) the codes round to [[0, 0], [1, 1]]. Layer "1" (1x2) is [[1, 0]],
exact at 1 and 2 bits. On the input x = [1, 1] the float model gives
h = [1/3, 5/3], y = 1/3; with layer "0" at 1 bit, h = [0, 2] and y = 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mpqcore

X = torch.ones(1, 2)


def _model(second=(1.0, 0.0)):
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
        model[1].weight.copy_(torch.tensor([second]))
    return model


def output(model):
    with torch.no_grad():
        return float(model(X))


def squared_miss(outputs, batch):  # a user loss: (y - 1)^2
    return ((outputs - 1.0) ** 2).mean()


def _measure(model=None, **kw):
    options = kw.pop("options", {})
    if "metric" in kw:  # these hand-worked cases check the paper's rule: the metric's drop
        options = {"use_metric": True, **options}
    kw.setdefault("quantizer", "minmax-per-tensor")  # the quantizer these cases were worked out by hand for
    return mpqcore.measure(model or _model(), [X], method="alps", bits=(1, 2), method_options=options, **kw)


def test_metric_drop_by_hand():
    obj = _measure(metric=output, options={"tie_break": "none"}).objective
    # drop["0"][1] = 1/3 - 0; layer "1" is exact at 1 bit: no drop; base column 0.
    np.testing.assert_allclose(obj.unary, [[1 / 3, 0.0], [0.0, 0.0]], atol=1e-6)
    assert obj.info["reference_score"] == pytest.approx(1 / 3, abs=1e-6)
    assert obj.info["score"] == "metric" and obj.info["base_bits"] == 2


def test_loss_drop_by_hand():
    # -loss: float y = 1/3 -> (2/3)^2 = 4/9; layer "0" at 1 bit: y = 0 -> 1. Drop 5/9.
    obj = _measure(loss=squared_miss, options={"use_metric": False}).objective
    np.testing.assert_allclose(obj.unary, [[5 / 9, 0.0], [0.0, 0.0]], atol=1e-6)
    assert obj.info["score"] == "loss"


def test_tie_break_weight_by_hand():
    # Metric drops [[1/3, 0], [0, 0]]: gap 1/3. Loss increases [[5/9, 0], [0, 0]]:
    # spread 5/9. eps = 0.5 * (1/3) / (5/9) = 0.3, so value = 1/3 + 0.3 * 5/9 = 1/2.
    obj = _measure(metric=output, loss=squared_miss).objective
    assert obj.info["tie_break_weight"] == pytest.approx(0.3, rel=1e-5)
    assert obj.info["tie_break_lexicographic"] is True
    np.testing.assert_allclose(obj.unary, [[0.5, 0.0], [0.0, 0.0]], atol=1e-6)


def test_a_flat_metric_leaves_the_loss_to_decide():
    obj = _measure(metric=lambda m: 0.5, loss=squared_miss).objective
    assert obj.info["tie_break_weight"] == 1.0
    np.testing.assert_allclose(obj.unary, [[5 / 9, 0.0], [0.0, 0.0]], atol=1e-6)


def test_pinned_layer_stays_quantized_while_measuring():
    # Layer "1" = [[1, 0.4]] pinned at 1 bit quantizes to [[1, 0]]. Base: y = 1/3;
    # layer "0" at 1 bit: y = 0, drop 1/3. Were the pin ignored (layer "1" float), the
    # base would give y = 1/3 + 0.4 * 5/3 = 1 and the drop 1 - 0.8 = 0.2.
    obj = _measure(_model((1.0, 0.4)), metric=output, pins={"1": 1}, options={"tie_break": "none"}).objective
    assert obj.layers == ("0",)
    np.testing.assert_allclose(obj.unary, [[1 / 3, 0.0]], atol=1e-6)


def test_base_below_the_top_measures_upgrades_too():
    # base 1: layer "0" moving up to 2 bits gains 1/3, a drop of -1/3.
    obj = _measure(metric=output, options={"base_bits": 1, "tie_break": "none"}).objective
    np.testing.assert_allclose(obj.unary, [[0.0, -1 / 3], [0.0, 0.0]], atol=1e-6)


def test_finetuning_trains_clones_only_and_is_deterministic():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = {"finetune_steps": 3, "lr": 1e-2, "use_metric": False}
    a = _measure(model, loss=squared_miss, options=opts)
    b = _measure(model, loss=squared_miss, options=opts)
    np.testing.assert_array_equal(a.objective.unary, b.objective.unary)
    np.testing.assert_array_equal(a.objective.unary[:, 1], 0.0)
    # 1 base + 2 layers x 1 other width = 3 scores, each 3 training passes + 1 evaluation.
    assert a.evaluator.forward_passes >= 3 * 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_use_metric_without_a_metric_is_an_error():
    # mpq wraps errors raised while measuring in a MethodError naming the plugin.
    with pytest.raises(mpqcore.MpqError, match=r"alps.*use_metric=True but no metric"):
        _measure(options={"use_metric": True})


@pytest.mark.parametrize(
    "options, text",
    [
        ({"base_bits": 0}, "base_bits must be an integer from 1 to 16 or None, got 0"),
        ({"base_bits": 17}, "base_bits must be an integer from 1 to 16 or None, got 17"),
        ({"finetune_steps": -1}, "finetune_steps must be an integer >= 0, got -1"),
        ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
        ({"use_metric": "maybe"}, "use_metric must be true or false or None, got 'maybe'"),
        ({"tie_break": "metric"}, "tie_break must be one of 'loss', 'none', got 'metric'"),
    ],
)
def test_bad_options_name_the_option_and_valid_values(options, text):
    with pytest.raises(mpqcore.ConfigError, match=rf"method 'alps' \(plugin .*\): {text}"):
        mpqcore.get_plugins().methods.create("alps", **options)


def test_the_drop_table_is_one_batch_of_the_evaluator_with_the_same_values():
    # Without fine-tuning, the whole table goes to Evaluator.losses in one call, so prefix
    # reuse (and Ray workers) apply: it skips MACs, and the drops equal those of one
    # evaluation at a time.
    from mpqcore.context import MeasureContext
    from mpqcore.evaluate import Evaluator
    from mpqcore.testing.conformance import digits_task
    from mpqcore_alps.drops import Scorer, drop_table

    task = digits_task()
    spec = mpqcore.introspect(task.model, task.calibration[0])
    ev = Evaluator(task.model, task.calibration, spec, mpqcore.PluginSet().quantizers.create("minmax-per-tensor"))
    ctx = MeasureContext(evaluator=ev, spec=spec, layers=tuple(spec.fqns), bits=(2, 4, 8))
    drops, reference = drop_table(ctx, 8, Scorer(ctx, use_metric=False))
    assert ev.prefix_reuse["skipped_mac_fraction"] > 0.0
    base = ctx.with_fixed(dict.fromkeys(ctx.layers, 8))
    assert reference == -ev.loss(base)
    for i, fqn in enumerate(ctx.layers):
        for j, b in enumerate(ctx.bits):
            one = 0.0 if b == 8 else reference + ev.loss({**base, fqn: b})
            assert drops[i, j] == pytest.approx(one, rel=1e-6, abs=1e-9)
