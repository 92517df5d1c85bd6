"""The built-in methods pass the same conformance suite every plugin runs on itself."""

from mpqcore.testing import MethodConformance


class TestHawqConformance(MethodConformance):
    method = "hawq"
    method_options = {"samples": 4}


class TestUniformConformance(MethodConformance):
    method = "uniform"
