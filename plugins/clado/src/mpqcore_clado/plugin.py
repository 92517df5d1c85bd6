"""Registers the ``clado`` method with mpq (entry point group ``mpqcore``)."""

from mpqcore import hookimpl


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("clado", "mpqcore_clado.method:Clado")  # imported when used: listing plugins needs no torch
