"""Registers the ``clado`` method with mpq (entry point group ``mpqcore``)."""

from mpqcore import hookimpl
from mpqcore_clado.method import Clado


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("clado", Clado)
