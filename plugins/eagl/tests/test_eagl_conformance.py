"""mpq's method conformance suite, run on the real digits-cnn task."""

from typing import Any, ClassVar

from mpqcore.testing import MethodConformance


class TestEaglConformance(MethodConformance):
    method = "eagl"
    method_options: ClassVar[dict[str, Any]] = {}


class TestEaglPerWeightConformance(MethodConformance):
    method = "eagl"
    method_options: ClassVar[dict[str, Any]] = {"scale": "per-weight"}
