"""Conformance suites that any plugin runs on itself.

A method plugin subclasses :class:`MethodConformance` in its tests::

    from mpqcore.testing import MethodConformance

    class TestMyMethodConformance(MethodConformance):
        method = "my-method"
        method_options = {"samples": 4}

and pytest runs every check below on the built-in ``digits-cnn`` task (trained once and
cached; set ``MPQ_CACHE_DIR`` to choose where).
"""

from __future__ import annotations

from mpqcore.testing.conformance import MethodConformance, digits_task

__all__ = ["MethodConformance", "digits_task"]
