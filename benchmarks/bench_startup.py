"""Start-up time of the ``mpq`` commands that do no measuring: --help, plugins, solve.

Each command runs ``REPEATS`` times in a fresh interpreter (with the installed plugins
loaded, as a user has them); the table gives the median wall time, and for reference
``python -c pass`` and ``import torch`` on the same machine. Writes
benchmarks/results/startup.md.  Run: ``python benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
    "mpq --help": [sys.executable, "-m", "mpqcore.cli", "--help"],
    "mpq plugins": [sys.executable, "-m", "mpqcore.cli", "plugins"],
    "mpq solve mpqcore/examples/small.json": [
        sys.executable,
        "-m",
        "mpqcore.cli",
        "solve",
        "mpqcore/examples/small.json",
    ],
}


def _median_seconds(argv: list[str], checkout: Path = ROOT) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of ``argv``; CPU time barely moves on a busy machine."""
    walls, cpus = [], []
    for _ in range(REPEATS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        # run in the checkout: `python -m` puts the current folder first on the path
        subprocess.run(argv, cwd=checkout, check=True, capture_output=True, env=_env_for(checkout))
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def _env_for(checkout: Path) -> dict[str, str]:
    """The environment that imports mpq (and its plugins) from ``checkout``."""
    paths = [str(checkout)] + [str(p) for p in sorted((checkout / "plugins").glob("*/src"))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout (e.g. the commit before lazy imports) to compare")
    args = parser.parse_args()
    rows = []
    for name, argv in COMMANDS.items():
        wall, cpu = _median_seconds(argv)
        old = _median_seconds(argv, args.before.resolve()) if args.before and name.startswith("mpq") else None
        rows.append((name, wall, cpu, old))
    lines = [
        "# Start-up time of mpq commands",
        "",
        f"Median wall time of {REPEATS} runs, each in a fresh interpreter, installed plugins loaded "
        f"(Python {platform.python_version()}, {platform.machine()}, {platform.system()}); "
        "`python benchmarks/bench_startup.py` writes this file.",
        "",
        "The machine was shared with other jobs while measuring: wall times carry their load, CPU",
        "time (user + system of the command) much less.",
        "",
        "| command | wall (median) | CPU (median) | before: wall | before: CPU |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| `{name}` | {wall:.2f} s | {cpu:.2f} s | " + (f"{old[0]:.2f} s | {old[1]:.2f} s |" if old else "| |")
            for name, wall, cpu, old in rows
        ),
        "",
        "*before*: the same commands on main before this branch (torch imported by `import mpqcore`, "
        "by every built-in plugin module and by every plugin's entry point).",
        "",
    ]
    out = ROOT / "benchmarks" / "results" / "startup.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
