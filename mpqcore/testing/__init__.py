"""Conformance suites that any plugin runs on itself.

A method plugin subclasses :class:`MethodConformance` in its tests::

    from mpqcore.testing import MethodConformance

    class TestMyMethodConformance(MethodConformance):
        method = "my-method"
        method_options = {"score": "metric"}  # options of *your* method; {} by default

and pytest runs every check below on the built-in ``digits-cnn`` task (trained once and
cached; set ``MPQ_CACHE_DIR`` to choose where). docs/writing-a-plugin.md builds a
whole plugin that passes it.
"""

from __future__ import annotations

from mpqcore.testing.conformance import MethodConformance, digits_task

__all__ = ["MethodConformance", "digits_task"]
