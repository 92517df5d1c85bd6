"""The entry point mpq loads (group ``mpqcore``): the ``mixquant`` method and the
``mixquant-qem`` solver."""

from mpqcore.hookspecs import hookimpl
from mpqcore_mixquant.method import QuantizationErrorMethod
from mpqcore_mixquant.solver import QEMSolver


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("mixquant", QuantizationErrorMethod)


@hookimpl
def mpq_register_solvers(registry) -> None:
    registry.add("mixquant-qem", QEMSolver)
