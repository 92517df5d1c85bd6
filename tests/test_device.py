"""GPU-readiness without a GPU: nothing on the evaluation path creates tensors on the CPU
by default, so a model, its batches and every cache stay on the evaluator's device."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import mpqcore
from mpqcore import Evaluator
from mpqcore.quantizers import MinMaxPerTensor, MSEPerChannel
from mpqcore.testing import digits_task

ROOT = Path(mpqcore.__file__).resolve().parent
#: Factories that place a new tensor on the default (CPU) device unless given ``device=``.
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "tensor", "eye"}
FACTORIES |= {"rand", "randn", "randint", "randperm"}


def _cpu_by_default(path: Path) -> list[str]:
    """Factory calls without ``device=``; a seeded draw (``generator=``, a CPU generator so
    the numbers are the same on every device) is moved to the device by its caller."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in FACTORIES or not (
            isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
        ):
            continue
        keywords = {k.arg for k in node.keywords}
        if "device" not in keywords and "generator" not in keywords:
            found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_evaluation_path_creates_no_tensor_on_the_cpu_by_default():
    paths = [ROOT / f"{m}.py" for m in ("evaluate", "prefix", "quantizers", "divergence", "bias_correction")]
    paths += [ROOT / f"{m}.py" for m in ("activations", "layer_kinds", "batches", "methods", "workers")]
    paths += sorted((ROOT.parent / "plugins").glob("*/src/*/*.py"))
    found = [hit for p in paths for hit in _cpu_by_default(p)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("quantizer", [MinMaxPerTensor(), MSEPerChannel(grid=4)])
def test_the_evaluator_keeps_everything_on_its_device(quantizer):
    task = digits_task()
    ev = Evaluator(task.model, task.calibration, None, quantizer, device="cpu")
    fqns = ev.spec.fqns
    ev.losses([{f: b} for f in fqns for b in (2, 4)])
    device = torch.device("cpu")
    assert {p.device for p in ev.model.parameters()} == {device}
    assert {b.device for b in ev.calibration} == {device}
    assert {o.device for o in ev.float_outputs()} == {device}
    assert {t.device for t in ev._weights.values("dequantized")} == {device}
    assert ev._prefix is not None
