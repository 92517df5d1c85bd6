"""mpq's method conformance suite, run on the real digits-cnn task."""

from typing import Any, ClassVar

from mpqcore.testing import MethodConformance


class TestAlpsConformance(MethodConformance):
    method = "alps"
    method_options: ClassVar[dict[str, Any]] = {}


class TestAlpsFinetunedConformance(MethodConformance):
    """Fine-tuning trains clones only: the user's model must come back unchanged."""

    method = "alps"
    method_options: ClassVar[dict[str, Any]] = {"finetune_steps": 2, "lr": 1e-3, "tie_break": "none"}
