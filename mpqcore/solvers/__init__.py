"""Built-in solvers (in progress)."""
from mpqcore.hookspecs import hookimpl


@hookimpl
def mpq_register_solvers(registry) -> None:
    pass
