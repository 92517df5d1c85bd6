"""Copy the evaluator and solver benchmark tables into README.md (between markers).

    python benchmarks/readme_sections.py

Reads ``benchmarks/results/evaluator.md``, ``clado_pairs.md``, ``solvers.md``, ``mckp.md``,
``pairs.md``, ``export.md``, ``memory.md`` and ``cache.md`` (written by ``bench_evaluator.py``,
``bench_clado_pairs.py``, ``bench_solvers.py [--mckp | --pairs]``, ``bench_export.py``,
``bench_memory.py`` and ``bench_cache.py``) and replaces the text between the matching
``<!-- name:start/end -->`` markers (``evaluator``, ``clado-pairs``, ``solvers``, ``mckp``,
``pairs``, ``export``, ``memory``, ``cache``), so the README never carries numbers typed by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def body(path: Path) -> str:
    """The file without its level-1 title (the README has its own headings)."""
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join(lines).strip()
    return re.sub(r"^## ", "#### ", text, flags=re.M)


def replace(readme: str, marker: str, text: str) -> str:
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no <!-- {marker}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), readme)


def main() -> int:
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    for marker, name in (
        ("evaluator", "evaluator.md"),
        ("clado-pairs", "clado_pairs.md"),
        ("solvers", "solvers.md"),
        ("mckp", "mckp.md"),
        ("pairs", "pairs.md"),
        ("export", "export.md"),
        ("memory", "memory.md"),
        ("cache", "cache.md"),
    ):
        source = RESULTS / name
        if not source.exists():
            print(f"{source} missing: run benchmarks/bench_{marker.replace('-', '_')}.py first", file=sys.stderr)
            continue
        readme = replace(readme, marker, f"From `benchmarks/results/{name}`:\n\n" + body(source))
    readme_path.write_text(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
