"""Built-in solvers: ``highs`` (MILP), ``mckp`` (the multiple-choice knapsack by its
structure), ``pairs-bnb`` (pair objectives by branch-and-bound), ``auto`` (``mckp`` where it applies, else ``highs``), ``dp`` (dynamic
programming, one budget) and ``brute-force`` (exhaustive, the reference in tests).
:mod:`.pareto` sweeps a budget."""

from mpqcore.hookspecs import hookimpl
from mpqcore.solvers.auto import AutoSolver, pick_solver
from mpqcore.solvers.brute_force import BruteForceSolver
from mpqcore.solvers.dp import DPSolver
from mpqcore.solvers.highs import HighsSolver
from mpqcore.solvers.mckp import MCKPSolver
from mpqcore.solvers.pairs_bnb import PairsBnBSolver
from mpqcore.solvers.pareto import pareto_sweep

__all__ = [
    "AutoSolver",
    "BruteForceSolver",
    "DPSolver",
    "HighsSolver",
    "MCKPSolver",
    "PairsBnBSolver",
    "pareto_sweep",
    "pick_solver",
]


@hookimpl
def mpq_register_solvers(registry) -> None:
    registry.add("highs", HighsSolver)
    registry.add("mckp", MCKPSolver)
    registry.add("pairs-bnb", PairsBnBSolver)
    registry.add("auto", AutoSolver)
    registry.add("dp", DPSolver)
    registry.add("brute-force", BruteForceSolver)
