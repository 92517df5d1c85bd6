"""Never worse than uniform, on CNNs the methods were not tuned on (issue 14).

Six small CNNs (mpqcore.testing.digits_zoo: depths 3-7, with and without BatchNorm and
residual connections), each trained on the digits with its own seed, and every installed
method at 2.5 and 3 average bits from {2, 3, 4, 5, 6, 8}, with the default quantizer
with minmax-per-tensor, and with the default quantizer and bias_correction="guard" (the
allocation applied with the correction its point carries): the allocation a sweep returns
has a held-out loss no higher than uniform precision's at the same budget (re-measured
here by an evaluator of its own on the batch the guard held out), and a test accuracy at
least uniform's minus one test image.
"""

from __future__ import annotations

import pytest
import torch

import mpqcore
from mpqcore import Budget
from mpqcore.evaluate import Evaluator
from mpqcore.quantizers import DEFAULT_QUANTIZER
from mpqcore.tasks import _cache, digits
from mpqcore.testing.digits_zoo import ZOO, load_zoo_model
from mpqcore.verify import split_calibration

PLUGINS = mpqcore.PluginSet(autoload=True)  # every installed method, not only the built-ins
BITS = (2, 3, 4, 5, 6, 8)
BUDGETS = (2.5, 3.0)
#: (quantizer, bias_correction) as the sweep is run.
CONFIGS = ((DEFAULT_QUANTIZER, False), ("minmax-per-tensor", False), (DEFAULT_QUANTIZER, "guard"))
#: Small options so that the whole file stays within the CI limit.
METHOD_OPTIONS = {
    "hawq": {"samples": 2},
    "clado": {"pairs": "window", "window": 1},
    "smpq": {"max_evaluations": 120, "min_permutations": 4, "max_permutations": 12},
}


@pytest.fixture(scope="module")
def zoo():
    torch.set_num_threads(1)
    split = digits.load_split()
    calibration = [split.x_calibration[i : i + 64] for i in range(0, len(split.x_calibration), 64)]
    models = {entry.name: load_zoo_model(entry, split) for entry in ZOO}
    return split, calibration, models, _cache.accuracy_metric(split.x_test, split.y_test)


#: Where the test accuracy and every label-free measure disagree. residual-plain at 3 bits,
#: clado, default quantizer: the mixed allocation's held-out loss is below uniform 3-bit's on
#: the chunks' signed ranks (p = 0.0026, Holm over 5 rivals), its test-set KL from the float
#: model is 0.0144 against uniform's 0.0353 and both agree with the float model's top-1 on
#: 97.75% of the test images, yet its test accuracy is 0.955 against uniform's 0.9675, which is
#: itself 2 images above the float model's 0.9625. No guard that does not read the test
#: labels can return uniform there; kept visible (strict) instead of loosening the check.
#: With bias_correction="guard" the same allocation, corrected, reaches 0.96: still 3 images short.
DISAGREE = {
    ("residual-plain", "clado", DEFAULT_QUANTIZER, False, 3.0),
    ("residual-plain", "clado", DEFAULT_QUANTIZER, "guard", 3.0),
}


def _row(guard, name):
    return next(r for r in guard["candidates"] if r["name"] == name)


@pytest.mark.parametrize(("quantizer", "bias_correction"), CONFIGS, ids=[f"{q}-bc-{b}" for q, b in CONFIGS])
@pytest.mark.parametrize("method", sorted(PLUGINS.methods))
@pytest.mark.parametrize("entry", ZOO, ids=[e.name for e in ZOO])
def test_never_worse_than_uniform(zoo, entry, method, quantizer, bias_correction):
    split, calibration, models, accuracy = zoo
    model = models[entry.name]
    meas, points = mpqcore.sweep(
        model, calibration, method=method, bits=BITS, budgets=[Budget.average_bits(b) for b in BUDGETS],
        method_options=METHOD_OPTIONS.get(method), plugins=PLUGINS, quantizer=quantizer,
        bias_correction=bias_correction,
    )  # fmt: skip
    held = Evaluator(model, split_calibration(calibration).held_out, None, PLUGINS.quantizers.create(meas.quantizer))
    one_image = 1 / len(split.y_test)
    failures = []
    for avg, point in zip(BUDGETS, points, strict=True):
        assert point.allocation is not None, point.error
        guard = point.results["guard"]
        assert guard["data"]["how"] == "batches" and guard["data"]["held_out_batches"] == 1
        ref = guard["uniform_reference"]
        assert ref == int(avg)  # the dearest uniform width within the budget: 2 at 2.5 bits, 3 at 3
        uniform = _row(guard, f"uniform-{ref}")
        bc = point.bias_correction  # the guard's trial: the held-out loss of the corrected allocation
        quantizer_impl = PLUGINS.quantizers.create(meas.quantizer)
        scorer = held if bc is None else Evaluator(model, held.calibration, None, quantizer_impl, bias_correction=bc)
        mine = scorer.loss(point.allocation.bits)
        if bc is not None:
            assert point.results["bias_correction"]["measured_corrected"] == pytest.approx(mine, rel=1e-6, abs=1e-9)
            mine_plain = held.loss(point.allocation.bits)
        else:
            mine_plain = mine
        assert mine_plain == pytest.approx(_row(guard, guard["chosen"])["measured"], rel=1e-6, abs=1e-9)
        assert mine <= held.loss(uniform["bits"]) + 1e-12, (avg, guard["chosen"])
        mixed_acc = accuracy(
            mpqcore.apply(model, point.allocation, meas.quantizer, plugins=PLUGINS, bias_correction=bc)
        )
        uniform_acc = accuracy(mpqcore.apply(model, uniform["bits"], meas.quantizer, plugins=PLUGINS))
        held_up = mixed_acc >= uniform_acc - one_image - 1e-12
        if (entry.name, method, quantizer, bias_correction, avg) in DISAGREE:
            failures.append((avg, guard["chosen"], mixed_acc, uniform_acc, held_up))
            continue
        assert held_up, (avg, guard["chosen"], mixed_acc, uniform_acc)
    if failures:  # the accuracy check is expected to fail here, and must go on failing (see DISAGREE)
        assert not any(f[-1] for f in failures), failures
        pytest.xfail(f"test accuracy and the label-free measures disagree: {failures}")
