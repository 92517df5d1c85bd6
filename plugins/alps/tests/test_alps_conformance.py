"""mpq's method conformance suite, run on the real digits-cnn task."""

from mpqcore.testing import MethodConformance


class TestAlpsConformance(MethodConformance):
    method = "alps"
    method_options = {}


class TestAlpsFinetunedConformance(MethodConformance):
    """Fine-tuning trains clones only: the user's model must come back unchanged."""

    method = "alps"
    method_options = {"finetune_steps": 2, "lr": 1e-3, "tie_break": "none"}
