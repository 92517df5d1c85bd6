"""mpq's method conformance suite, run on the real digits-cnn task."""

from mpqcore.testing import MethodConformance


class TestEaglConformance(MethodConformance):
    method = "eagl"
    method_options = {}


class TestEaglPerWeightConformance(MethodConformance):
    method = "eagl"
    method_options = {"scale": "per-weight"}
