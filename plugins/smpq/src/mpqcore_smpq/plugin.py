"""Registers the ``smpq`` method with mpq (entry point group ``mpqcore``)."""

from __future__ import annotations

import mpqcore


@mpqcore.hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("smpq", "mpqcore_smpq.method:ShapleyBitWidth")  # imported when used: listing plugins needs no torch
