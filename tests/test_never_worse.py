"""Never worse than uniform, on CNNs the methods were not tuned on (issue 14).

Six small CNNs (mpqcore.testing.digits_zoo: depths 3-7, with and without BatchNorm and
residual connections), each trained on the digits with its own seed, and every installed
method at 2.5 and 3 average bits from {2, 3, 4, 5, 6, 8}, with the default quantizer
with minmax-per-tensor, and with the default quantizer and bias_correction="guard" (the
allocation applied with the correction its point carries): the allocation a sweep returns
has a held-out loss no higher than uniform precision's at the same budget (re-measured
here by an evaluator of its own on the batch the guard held out), and a test accuracy at
least uniform's minus one test image.

Until the default quantizer took the full range (2026-12-02) one cell failed the accuracy
check: residual-plain, clado, 3 bits, where the mixed allocation's held-out loss was below
uniform 3-bit's (p = 0.0026) and its test accuracy 0.955 (0.96 corrected) against uniform's
0.9675, itself above the float model's 0.9625. With the full range uniform 3-bit scores 0.96
there and the allocation 0.96: the check holds in every cell, and is strict everywhere.
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
        assert mixed_acc >= uniform_acc - one_image - 1e-12, (avg, guard["chosen"], mixed_acc, uniform_acc)
