"""hawq where its second-order proxy fails: large (2-bit) perturbations, measured instead.

Before the fix hawq's objective was ``tr(H)/n * ||Q_b(W) - W||^2`` alone. On small CNNs
it never saw before, at 2 bits that Taylor term is 10-40x below the loss measured with
the layer alone quantized, so hawq put a large layer at 2 bits and lost to uniform
precision at the same size (wide3 at 3 bits: accuracy 0.9325 against uniform's 0.9875).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import mpqcore
from mpqcore.methods import perturbation_table
from mpqcore.tasks import digits
from mpqcore.testing.small_cnns import small_cnn_task

BITS = (2, 3, 4, 5, 6, 8)
#: The level of the paired test on the test images below.
ALPHA = 0.05


@pytest.fixture(scope="module")
def measured():
    out = {}
    for shape in ("wide3", "deep8"):
        task = small_cnn_task(shape)
        # the quantizer the calibration checks were written with; with mse-per-channel (the
        # default now) the lowest-width ratio below is 8.6x instead of > 10x: open, reported
        meas = mpqcore.measure(task.model, task.calibration, method="hawq", bits=BITS, metric=task.metric,
                               quantizer="minmax-per-tensor")  # fmt: skip
        out[shape] = (task, meas)
    return out


def _right(model: torch.nn.Module) -> torch.Tensor:
    split = digits.load_split()
    with torch.no_grad():
        return model(split.x_test).argmax(1) == split.y_test


@pytest.mark.parametrize("shape", ["wide3", "deep8"])
def test_hawq_at_3_bits_is_not_worse_than_uniform_on_unseen_cnns(measured, shape):
    """The loss hawq minimises is no higher than uniform precision's, and the accuracy is not measurably lower.

    Before: wide3 loss 0.244 vs uniform 0.0053 (accuracy 0.9325 vs 0.9875: 22 more of the 400 test images
    wrong, one-sided p < 1e-6); deep8 loss 0.195 vs uniform 0.163 (accuracy 0.8950 vs 0.9075). Accuracy is
    compared by the images the two models disagree on (McNemar's exact test, one-sided): on deep8 hawq's
    loss is 37% below uniform's while 400 images put its accuracy either side of uniform's by a few images,
    from one machine's trained weights to another's (0.9275 vs 0.9325 here: 11 against 9 discordant,
    p = 0.41), so a fixed margin of images would test the machine, not the method."""
    task, meas = measured[shape]
    rep = mpqcore.search(measurement=meas, budget=mpqcore.Budget.average_bits(3.0), guard=False)  # the method alone
    r = rep.results
    assert r["loss"] <= r["uniform_loss"] * (1 + 1e-9), (dict(rep.allocation.bits), r["loss"], r["uniform_loss"])
    uniform = mpqcore.apply(
        task.model, mpqcore.Allocation(dict.fromkeys(rep.allocation.bits, r["uniform_bits"]), 0.0), rep.quantizer
    )
    ours, theirs = _right(rep.model), _right(uniform)
    assert float(ours.float().mean()) == pytest.approx(r["metric"]) and float(theirs.float().mean()) == pytest.approx(
        r["uniform_metric"]
    )  # the images are the metric's
    lost, won = int((theirs & ~ours).sum()), int((ours & ~theirs).sum())
    p_worse = stats.binomtest(lost, lost + won, 0.5, alternative="greater").pvalue if lost + won else 1.0
    assert p_worse > ALPHA, (lost, won, p_worse)


def test_lowest_widths_carry_at_least_the_measured_single_layer_loss(measured):
    _, meas = measured["wide3"]
    obj, ev = meas.objective, meas.evaluator
    info = obj.info
    assert info["calibrate"] == "adaptive"
    ctx_layers = list(obj.layers)
    traces = info["hessian_trace"]
    params = np.array([meas.spec.layer(f).params for f in ctx_layers], dtype=float)
    # recompute the Taylor term independently of the method
    from mpqcore.context import MeasureContext

    ctx = MeasureContext(evaluator=ev, spec=meas.spec, layers=obj.layers, bits=obj.bits)
    taylor = 0.5 * np.array([traces[f] for f in ctx_layers])[:, None] / params[:, None] * perturbation_table(ctx)
    for i, f in enumerate(ctx_layers):
        single = ev.loss({f: 2})  # the default loss: 0 for the float model
        assert obj.unary[i, 0] == pytest.approx(max(single, taylor[i, 0]), rel=1e-6), f
        assert info["measured"][f][2]["measured"] == pytest.approx(single, rel=1e-6)
        for j, b in enumerate(obj.bits):  # entries not measured are the Taylor term itself
            if b not in info["measured"][f]:
                assert obj.unary[i, j] == pytest.approx(taylor[i, j], rel=1e-9)
    # the cause: the big convolution's 2-bit loss is far above the second-order estimate
    big = ctx_layers[int(np.argmax(params))]
    entry = info["measured"][big][2]
    assert entry["measured"] > 10 * entry["taylor"]


def test_calibrate_none_is_the_papers_proxy_with_no_evaluation():
    task = small_cnn_task("wide3")
    meas = mpqcore.measure(
        task.model, task.calibration, method="hawq", bits=BITS, method_options={"calibrate": "none", "samples": 4}
    )
    info = meas.objective.info
    assert info["measured"] == {} and info["evaluations"] == 0
    ctx_layers = list(meas.objective.layers)
    ev = meas.evaluator
    for i, f in enumerate(ctx_layers):
        n = meas.spec.layer(f).params
        for j, b in enumerate(BITS):
            pert = float(((ev.fake_quantized(f, b) - ev.weight(f)) ** 2).sum())
            assert meas.objective.unary[i, j] == pytest.approx(0.5 * info["hessian_trace"][f] / n * pert, rel=1e-9)


def test_tolerance_must_exceed_one():
    task = small_cnn_task("wide3")
    with pytest.raises(mpqcore.ConfigError, match="tolerance"):
        mpqcore.measure(task.model, task.calibration, method="hawq", bits=BITS, method_options={"tolerance": 1.0})
