"""mpq's method conformance suite, run on the real digits-cnn task."""

import pytest
import torch

from mpqcore.testing import MethodConformance


@pytest.fixture(autouse=True, scope="module")
def _eagl_conformance_one_torch_thread():
    """Run this module's tests on one torch thread: with two, OpenMP's waiting threads
    stall on a loaded 2-core CI machine (measured ~25x slower there); results are seeded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TestEaglConformance(MethodConformance):
    method = "eagl"
    method_options = {}


class TestEaglPerWeightConformance(MethodConformance):
    method = "eagl"
    method_options = {"scale": "per-weight"}
