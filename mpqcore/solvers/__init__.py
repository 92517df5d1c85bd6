"""Built-in solvers: ``highs`` (MILP), ``dp`` (dynamic programming, one budget) and
``brute-force`` (exhaustive, the reference in tests). :mod:`.pareto` sweeps a budget."""

from mpqcore.hookspecs import hookimpl
from mpqcore.solvers.brute_force import BruteForceSolver
from mpqcore.solvers.dp import DPSolver
from mpqcore.solvers.highs import HighsSolver
from mpqcore.solvers.pareto import pareto_sweep

__all__ = ["BruteForceSolver", "DPSolver", "HighsSolver", "pareto_sweep"]


@hookimpl
def mpq_register_solvers(registry) -> None:
    registry.add("highs", HighsSolver)
    registry.add("dp", DPSolver)
    registry.add("brute-force", BruteForceSolver)
