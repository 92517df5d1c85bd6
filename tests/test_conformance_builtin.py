"""The built-in methods pass the same conformance suite every plugin runs on itself."""

from typing import Any, ClassVar

from mpqcore.testing import MethodConformance


class TestHawqConformance(MethodConformance):
    method = "hawq"
    method_options: ClassVar[dict[str, Any]] = {"samples": 4}


class TestUniformConformance(MethodConformance):
    method = "uniform"


class _IgnoresPins:
    """A faulty method: it quantizes every layer at every width, the pinned one included."""

    def measure(self, ctx):
        import numpy as np

        from mpqcore import Objective

        for fqn in ctx.spec.fqns:  # every layer, not ctx.layers
            for b in ctx.bits:
                ctx.evaluator.quantized(fqn, b)
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=np.zeros((len(ctx.layers), len(ctx.bits))))


def test_the_pinned_check_fails_a_method_that_quantizes_the_pinned_layer(monkeypatch):
    # The check used to re-read the pins it was given, so it could not fail.
    import sys

    import pytest

    import mpqcore
    from mpqcore.testing import digits_task

    plugins = mpqcore.PluginSet(autoload=False)
    plugins.methods.current_plugin = "faulty"
    plugins.methods.add("ignores-pins", _IgnoresPins)
    monkeypatch.setattr(mpqcore, "get_plugins", lambda: plugins)
    # mpqcore.search is also the name of the function, so the module is taken from sys.modules
    monkeypatch.setattr(sys.modules["mpqcore.search"], "get_plugins", lambda: plugins)

    class Faulty(MethodConformance):
        method = "ignores-pins"

    with pytest.raises(AssertionError, match="quantized conv1, pinned at 2 bits, at \\[4, 8\\] bits"):
        Faulty().test_pinned_layers_are_not_measured(digits_task(), monkeypatch)
