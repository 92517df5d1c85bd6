"""Registers the ``smpq`` method with mpq (entry point group ``mpqcore``)."""

from __future__ import annotations

import mpqcore
from mpqcore_smpq.method import ShapleyBitWidth


@mpqcore.hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("smpq", ShapleyBitWidth)
