"""The entry point mpq loads (group ``mpqcore``): the ``mixquant`` method and the
``mixquant-qem`` solver."""

from mpqcore.hookspecs import hookimpl


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("mixquant", "mpqcore_mixquant.method:QuantizationErrorMethod")  # imported when used


@hookimpl
def mpq_register_solvers(registry) -> None:
    registry.add("mixquant-qem", "mpqcore_mixquant.solver:QEMSolver")
