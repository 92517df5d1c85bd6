"""mpq's method conformance suite, run on the real digits-cnn task."""

import pytest
import torch

from mpqcore.testing import MethodConformance


@pytest.fixture(autouse=True, scope="module")
def _alps_conformance_one_torch_thread():
    """Run this module's tests on one torch thread: with two, OpenMP's waiting threads
    stall on a loaded 2-core CI machine (measured ~25x slower there); results are seeded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TestAlpsConformance(MethodConformance):
    method = "alps"
    method_options = {}


class TestAlpsFinetunedConformance(MethodConformance):
    """Fine-tuning trains clones only: the user's model must come back unchanged."""

    method = "alps"
    method_options = {"finetune_steps": 2, "lr": 1e-3, "tie_break": "none"}
