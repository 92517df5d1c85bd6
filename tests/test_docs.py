"""The documentation is checked against the code, so it fails CI when it drifts.

- every fenced block of every page under ``docs/`` (and ``README.md``) is accounted for:
  each ``python`` block runs, each ``python signature`` block matches the code, each
  block marked ``<!-- file: PATH -->`` is a file of the plugin guide's end-to-end test,
  and a block that deliberately does not run says why in ``<!-- not-run: REASON -->``
  right above it (counted, at most :data:`NOT_RUN_LIMIT`);
- the ``python`` blocks of each page run top to bottom in one fresh namespace, as a
  reader pasting them into one session would, in a temporary working directory (real
  searches on ``digits-cnn`` with one torch thread: about 10 s for all pages; set
  ``MPQ_DOCS_SKIP_SNIPPETS=1`` to skip them);
- ``docs/writing-a-plugin.md`` followed literally (about 20-30 s, marked slow): its
  files are written out, the package is pip-installed (into a temporary folder,
  offline, never into this environment), and its shell blocks run in fresh
  interpreters: ``mpq plugins`` lists it, ``mpq search`` searches with it and its
  conformance tests pass;
- every hook in :mod:`mpqcore.hookspecs` has ``docs/hooks/<hook>.md`` showing its exact
  signature, every page there belongs to a hook, and every hook is exercised by some
  other test file; the example plugin on each hook page is executed as a fresh module,
  registered through :class:`mpqcore.PluginSet` and its ``demo(plugins)`` is called;
- every public name of ``mpqcore`` and every ``mpq`` subcommand is in the user guide;
- relative links between the docs pages point at files that exist.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

import mpqcore
from mpqcore import hookspecs, protocols
from mpqcore.cli import build_parser
from mpqcore.plugins import ENV_DISABLE_AUTOLOAD
from mpqcore.problem import allocation_violations
from mpqcore.registry import KINDS, Registry
from mpqcore.testing import digits_task

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOK_DOCS = DOCS / "hooks"
GUIDE = DOCS / "guide.md"
PLUGIN_GUIDE = DOCS / "writing-a-plugin.md"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
ONLY_THESE_PLUGINS = ROOT / "tests" / "fixtures" / "only_these_plugins.py"

#: Blocks marked ``<!-- not-run: reason -->``, over all pages: a page that needs more
#: should be made runnable instead.
NOT_RUN_LIMIT = 3

HOOKS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("mpq_")}
KIND_OF_HOOK = {hook: kind for kind, hook in KINDS.items()}


# -- the fenced blocks of a page ---------------------------------------------------------

FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
#: An HTML comment right above a fence marks it; only these words are marks.
MARK = re.compile(
    r"<!--\s*(?P<kind>not-run|file|notrun|no-run|skip|not_run)\s*(?::(?P<value>(?:(?!-->).)*))?-->\s*\Z", re.S
)
PYTHON_LANGS = {"python", "py", "python3", "py3", "pycon", "ipython"}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its info string, its text and its mark."""

    page: Path
    line: int
    info: str
    body: str
    mark: str = ""  # "not-run", "file" or ""
    value: str = ""  # the reason, or the file's path

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_LANGS or self.lang.startswith("python")

    @property
    def role(self) -> str:
        """``run``, ``signature``, ``file``, ``not-run``, ``shell``, ``other`` or an error message."""
        if self.mark == "not-run":
            return "not-run" if self.value else f"{self.where}: <!-- not-run: REASON --> needs a reason"
        if self.mark == "file":
            return "file" if self.value and ".." not in Path(self.value).parts else f"{self.where}: bad file path"
        if self.mark:
            return f"{self.where}: unknown mark {self.mark!r}; use <!-- not-run: REASON --> or <!-- file: PATH -->"
        if self.info.strip() == "python":
            return "run"
        if self.info.strip() == "python signature":
            return "signature"
        if self.is_python:
            return f"{self.where}: fence ```{self.info}: use ```python (runs) or ```python signature"
        if self.lang in ("sh", "bash", "shell", "console"):
            return "shell"
        return "other"


def blocks(page: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of ``page`` (or of ``text``, read as that page), in order."""
    text = page.read_text() if text is None else text
    out = []
    for m in FENCE.finditer(text):
        mark = MARK.search(text[: m.start()].rstrip() + "\n")
        kind, value = (mark["kind"], (mark["value"] or "").strip()) if mark else ("", "")
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(page, line, m["info"].strip(), m["body"], kind, value))
    return out


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _stubbed(body: str) -> str:
    """A signature block as parseable Python: ``: ...`` after every bodiless ``def``."""
    out, depth, in_def = [], 0, False
    for line in body.splitlines():
        if depth == 0 and re.match(r"\s*def\s", line):
            in_def = True
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
        if in_def and depth == 0:
            in_def = False
            if not line.rstrip().endswith(":"):
                line += ": ..."
        out.append(line)
    return "\n".join(out) + "\n"


def _inventory() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def test_every_block_is_accounted_for():
    """Each python block runs, is a checked signature, a guide file or says why it does not run."""
    every = _inventory()
    roles = {"run", "signature", "file", "not-run", "shell", "other"}
    problems = [b.role for b in every if b.role not in roles]
    for b in every:
        if b.role not in roles or not (b.is_python or (b.role == "file" and b.value.endswith(".py"))):
            continue
        source = _stubbed(b.body) if b.role == "signature" else b.body
        try:
            ast.parse(source)
        except SyntaxError as exc:  # a not-run block must at least be Python
            problems.append(f"{b.where}: not valid Python ({exc.msg}, line {exc.lineno})")
    assert not problems, "\n".join(problems)
    not_run = [b for b in every if b.role == "not-run"]
    assert len(not_run) <= NOT_RUN_LIMIT, f"too many blocks marked not-run: {[b.where for b in not_run]}"
    assert sum(b.role == "run" for b in every) >= 20  # the collector still finds the blocks


def test_the_collector_reads_marks():
    page = DOCS / "x.md"
    text = (
        "```python\na = 1\n```\n\n<!-- not-run: needs a GPU -->\n```python\nb = 2\n```\n"
        "<!-- file: pkg/a.py -->\n```python\nc = 3\n```\n<!-- not-run -->\n```python\n```\n"
        "````py\nd = 4\n````\n"
    )
    found = blocks(page, text)
    assert [b.role for b in found[:3]] == ["run", "not-run", "file"]
    assert found[1].value == "needs a GPU" and found[2].value == "pkg/a.py"
    assert "needs a reason" in found[3].role and "use ```python" in found[4].role


# -- the python blocks of every page run ---------------------------------------------------


@pytest.fixture(scope="module")
def quick_torch():
    """One thread (deterministic, and no oversubscription on busy CI) and digits-cnn built once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cached_digits(monkeypatch, quick_torch):
    real = mpqcore.load_task
    cache = _TASK_CACHE

    def load_task(name, **options):
        if options:
            return real(name, **options)
        if name not in cache:
            cache[name] = real(name)
        return cache[name]

    monkeypatch.setattr(mpqcore, "load_task", load_task)


_TASK_CACHE: dict = {}
RUNNABLE_PAGES = [p for p in PAGES if any(b.role == "run" for b in blocks(p))]


@pytest.mark.skipif(bool(os.environ.get("MPQ_DOCS_SKIP_SNIPPETS")), reason="MPQ_DOCS_SKIP_SNIPPETS is set")
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_python_blocks_run(page, tmp_path, monkeypatch, cached_digits):
    """Every ```python block of the page, top to bottom in one namespace, as a reader would."""
    monkeypatch.chdir(tmp_path)  # the snippets write reports and problem files
    module = types.ModuleType("mpq_docs_" + re.sub(r"\W", "_", page.stem))
    monkeypatch.setitem(sys.modules, module.__name__, module)  # classes defined there get a module
    for block in blocks(page):
        if block.role == "run":
            exec(compile(block.body, f"{block.where} (python block)", "exec"), module.__dict__)


# -- signature blocks match the code -------------------------------------------------------


def _annotation(value) -> str:
    # The core uses ``from __future__ import annotations``: annotations are the source text.
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _unqualified(annotation: str) -> str:
    # solve/load_task are annotated with classes, not strings: drop their module paths.
    return re.sub(r"\b(?:mpqcore\.[a-z_.]*\.)", "", annotation.replace(" ", ""))


def _documented(fn: ast.FunctionDef) -> list[tuple]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [(arg.arg, "positional", arg.annotation, d is not None) for arg, d in zip(positional, defaults, strict=True)]
    if a.vararg:
        out.append((a.vararg.arg, "*args", a.vararg.annotation, False))
    out += [
        (arg.arg, "keyword", arg.annotation, d is not None) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
    ]
    if a.kwarg:
        out.append((a.kwarg.arg, "**kwargs", a.kwarg.annotation, False))
    return [(n, k, "" if ann is None else _unqualified(ast.unparse(ann)), has) for n, k, ann, has in out]


def _actual(fn) -> list[tuple]:
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.VAR_POSITIONAL: "*args",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
        inspect.Parameter.VAR_KEYWORD: "**kwargs",
    }
    out = []
    for p in inspect.signature(fn).parameters.values():
        ann = "" if p.annotation is inspect.Parameter.empty else _unqualified(_annotation(p.annotation))
        out.append((p.name, kinds[p.kind], ann, p.default is not inspect.Parameter.empty))
    return out


def _fields(cls) -> list[tuple]:
    return [(f.name, _unqualified(_annotation(f.type)), f.default is not attrs.NOTHING) for f in attrs.fields(cls)]


def _documented_fields(node: ast.ClassDef) -> list[tuple]:
    return [
        (s.target.id, _unqualified(ast.unparse(s.annotation)), s.value is not None)
        for s in node.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    ]


#: What each page's ```python signature blocks document: a function, method, attrs class
#: or ``(Protocol, attribute)``. Every hook page shows its hook.
SIGNATURES: dict[str, dict[str, Any]] = {
    "docs/guide.md": {
        "search": mpqcore.search,
        "measure": mpqcore.measure,
        "sweep": mpqcore.sweep,
        "apply": mpqcore.apply,
        "solve": mpqcore.solve,
        "search_problem": mpqcore.search_problem,
        "load_task": mpqcore.load_task,
        "with_budgets": mpqcore.Measurement.with_budgets,
        "export": mpqcore.export,
    },
    "docs/hooks/mpq_register_methods.md": {"add": Registry.add, "measure": protocols.SensitivityMethod.measure},
    "docs/hooks/mpq_register_solvers.md": {"solve": protocols.Solver.solve},
    "docs/hooks/mpq_register_quantizers.md": {"quantize": protocols.Quantizer.quantize},
    "docs/hooks/mpq_register_cost_models.md": {"unit": (protocols.CostModel, "unit"), "cost": protocols.CostModel.cost},
    "docs/hooks/mpq_register_tasks.md": {"Task": mpqcore.Task},
}
for _hook, _fn in HOOKS.items():
    SIGNATURES.setdefault(f"docs/hooks/{_hook}.md", {})[_hook] = _fn


def _signature_nodes(page: Path) -> dict[str, ast.stmt]:
    out: dict[str, ast.stmt] = {}
    for b in blocks(page):
        if b.role == "signature":
            for node in ast.parse(_stubbed(b.body)).body:
                name = node.target.id if isinstance(node, ast.AnnAssign) else getattr(node, "name", None)
                assert name, f"{b.where}: a signature block holds defs, classes and `name: type` lines only"
                out[name] = node
    return out


SIGNATURE_CASES = sorted(
    {(page, name) for page, names in SIGNATURES.items() for name in names}
    | {(str(p.relative_to(ROOT)), n) for p in PAGES for n in _signature_nodes(p)}
)


@pytest.mark.parametrize(("page", "name"), SIGNATURE_CASES, ids=[f"{p}::{n}" for p, n in SIGNATURE_CASES])
def test_signature_blocks_match_the_code(page, name):
    documented = _signature_nodes(ROOT / page)
    assert name in documented, f"{page} has no ```python signature block for {name}"
    target = SIGNATURES.get(page, {}).get(name)
    assert target is not None, f"{page} documents {name!r}; add what it documents to SIGNATURES in this file"
    node = documented[name]
    if isinstance(node, ast.ClassDef):
        assert _documented_fields(node) == _fields(target), f"the fields of {name} in {page} differ from the code"
    elif isinstance(node, ast.AnnAssign):
        cls, attr = target
        assert _unqualified(ast.unparse(node.annotation)) == _unqualified(_annotation(cls.__annotations__[attr]))
    else:
        assert isinstance(node, ast.FunctionDef)
        assert _documented(node) == _actual(target), f"the signature of {name} in {page} differs from the code"
        actual = inspect.signature(target).return_annotation
        actual_text = "" if actual is inspect.Signature.empty else _unqualified(_annotation(actual))
        documented_text = _unqualified(ast.unparse(node.returns)) if node.returns else ""
        assert documented_text == actual_text, f"the return type of {name} in {page} differs from the code"


# -- hooks ---------------------------------------------------------------------------------


def hook_signature(fn) -> str:
    """``def name(arg: Type, ...) -> Ret`` with the annotations as written in hookspecs.py."""
    sig = inspect.signature(fn)
    params = []
    for p in sig.parameters.values():
        text = p.name if p.annotation is inspect.Parameter.empty else f"{p.name}: {_annotation(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        params.append(text)
    ret = "" if sig.return_annotation is inspect.Signature.empty else f" -> {_annotation(sig.return_annotation)}"
    return f"def {fn.__name__}({', '.join(params)}){ret}"


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\s*([(),:\[\]])\s*", r"\1", text)).strip()


def example_block(page: Path) -> str:
    found = [b.body for b in blocks(page) if b.role == "run" and "def demo(plugins" in b.body]
    assert len(found) == 1, f"{page.name}: expected one ```python block defining demo(plugins), found {len(found)}"
    return found[0]


def test_there_are_hooks():
    assert set(HOOKS) == set(KINDS.values())


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_page_with_its_exact_signature(hook):
    page = HOOK_DOCS / f"{hook}.md"
    assert page.exists(), f"hook {hook} has no page {page.relative_to(ROOT)}"
    expected = hook_signature(HOOKS[hook])
    assert normalize(expected) in normalize(page.read_text()), f"{page.name} does not show the signature `{expected}`"


def test_every_hook_page_belongs_to_a_hook():
    stray = sorted(p.stem for p in HOOK_DOCS.glob("*.md") if p.stem not in HOOKS)
    assert not stray, f"docs/hooks has pages for hooks mpqcore.hookspecs does not define: {stray}"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_tested(hook):
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    assert any(hook in p.read_text() for p in tests), f"no test file under tests/ mentions {hook}"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_page_example_runs(hook, cached_digits):
    code = example_block(HOOK_DOCS / f"{hook}.md")
    module = types.ModuleType(f"mpq_docs_example_{hook}")
    module.__file__ = str(HOOK_DOCS / f"{hook}.md")
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    assert hasattr(module, hook), f"the example on {hook}.md does not implement {hook}"

    plugins = mpqcore.PluginSet(autoload=False, plugins=[module])
    info = {i.name: i for i in plugins.info()}[module.__name__]
    kind = KIND_OF_HOOK[hook]
    assert info.registers.get(kind), f"the example on {hook}.md registers no {kind}"

    result = module.demo(plugins)
    assert result is not None
    if isinstance(result, mpqcore.Report):
        assert allocation_violations(result.problem, result.allocation.bits) == []
        assert set(result.allocation.bits) == set(result.spec.fqns)


# -- the user guide covers the API and the command line ------------------------------------


def test_every_public_name_is_in_the_guide():
    text = GUIDE.read_text()
    missing = [name for name in mpqcore.__all__ if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"docs/guide.md never mentions {missing}"


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, "the mpq parser has no subcommands"
    return sorted(actions[0].choices)


def test_every_cli_subcommand_is_in_the_guide():
    text = GUIDE.read_text()
    missing = [cmd for cmd in _subcommands() if not re.search(rf"\bmpq {cmd}\b", text)]
    assert not missing, f"docs/guide.md never shows `mpq <cmd>` for {missing}"


def test_relative_links_resolve():
    broken = []
    for page in [*DOCS.rglob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_shipped_docstrings_point_inside_the_repository():
    """Solver facts and the like are cited from docs/ or benchmarks/, not from a file elsewhere."""
    outside = []
    for path in (ROOT / "mpqcore").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"/work/|\.\./shared|\bshared/[A-Z]+\.md|\bSOLVERS\.md", line):
                outside.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
            for cited in re.findall(r"\b((?:docs|benchmarks)/[\w./-]+\.(?:md|json|py))", line):
                if not (ROOT / cited).exists():
                    outside.append(f"{path.relative_to(ROOT)}:{i}: cites {cited}, which does not exist")
    assert not outside, "\n".join(outside)


# -- the plugin guide, followed literally --------------------------------------------------


def guide_files() -> dict[str, str]:
    """``{path: text}`` of every block of writing-a-plugin.md marked ``<!-- file: PATH -->``."""
    files = {b.value: b.body for b in blocks(PLUGIN_GUIDE) if b.role == "file"}
    assert len(files) == sum(b.role == "file" for b in blocks(PLUGIN_GUIDE)), "a file is written twice"
    return files


def guide_commands() -> list[str]:
    """The command lines of the guide's shell blocks, in order, comments dropped."""
    lines = []
    for b in blocks(PLUGIN_GUIDE):
        if b.role == "shell":
            lines += [" ".join(shlex.split(line, comments=True)) for line in b.body.splitlines()]
    return [line for line in lines if line]


def _guide_package() -> tuple[str, str, dict]:
    """(folder, distribution, pyproject) of the package the guide writes."""
    (pyproject,) = [p for p in guide_files() if p.endswith("pyproject.toml")]
    data = tomllib.loads(guide_files()[pyproject])
    return str(Path(pyproject).parent), data["project"]["name"], data


def test_plugin_guide_package_follows_the_naming_rules():
    folder, dist, data = _guide_package()
    ((entry, target),) = data["project"]["entry-points"]["mpqcore"].items()
    assert dist == f"mpqcore-{entry}" and target.startswith(f"mpqcore_{entry}.")
    module = f"{folder}/src/{target.replace('.', '/')}.py"
    assert module in guide_files(), f"the entry point {target} names a module the guide does not write"
    for needed in ("README.md", f"src/mpqcore_{entry}/__init__.py"):
        assert f"{folder}/{needed}" in guide_files(), f"the guide's package lacks {needed}"
    assert any(p.startswith(f"{folder}/tests/test_") for p in guide_files())


def _plugin_entries(listing: Any) -> list[dict]:
    """The plugins of ``mpq plugins --json`` (a list, or an object holding one)."""
    if isinstance(listing, dict):
        listing = listing.get("plugins", listing.get("loaded", []))
    return list(listing)


@dataclass
class GuideReader:
    """Runs the guide's shell commands as a reader would, in fresh interpreters.

    ``pip install [-e] PATH`` installs into ``site`` (on ``PYTHONPATH``), offline and
    without touching this environment; ``mpq ...`` and ``python -m pytest ...`` run with
    only the guide's distribution visible as an installed plugin
    (``tests/fixtures/only_these_plugins.py``), so the result does not depend on the
    plugins this environment has installed.
    """

    cwd: Path
    site: Path
    distribution: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != ENV_DISABLE_AUTOLOAD}
        core = str(Path(mpqcore.__file__).resolve().parent.parent)  # the mpqcore under test
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), core, env.get("PYTHONPATH")]))
        env.setdefault("OMP_NUM_THREADS", "1")  # speed only: two cores shared on CI
        return env

    def run(self, line: str) -> subprocess.CompletedProcess:
        argv = shlex.split(line)
        python = [sys.executable, str(ONLY_THESE_PLUGINS), self.distribution]
        if argv[0] == "cd" and len(argv) == 2:
            self.cwd = (self.cwd / argv[1]).resolve()
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[:2] == ["pip", "install"]:
            paths = [a for a in argv[2:] if a != "-e"]
            assert len(paths) == 1 and not paths[0].startswith("-"), f"the test cannot run `{line}`"
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--disable-pip-version-check",
                "--quiet",
                "--target",
                str(self.site),
                str(self.cwd / paths[0]),
            ]
        elif argv[0] == "mpq":
            cmd = [*python, "-m", "mpqcore.cli", *argv[1:]]
        elif argv[:3] == ["python", "-m", "pytest"]:
            cmd = [*python, "-m", "pytest", *argv[3:]]
        else:
            raise AssertionError(f"the test does not know how to run `{line}` from {PLUGIN_GUIDE.name}")
        done = subprocess.run(cmd, cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"`{line}` failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
        return done


@pytest.fixture
def guide_reader(tmp_path) -> Iterator[GuideReader]:
    # Looked up, not imported: importing setuptools here would fight torch's distutils.
    for needed in ("pip", "setuptools"):  # setuptools builds the package, offline, no isolation
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed")
    _, dist, _ = _guide_package()
    for path, text in guide_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    digits_task()  # train and cache digits-cnn once, before the interpreters need it
    site = tmp_path / "site"
    try:
        yield GuideReader(tmp_path, site, dist)
    finally:
        shutil.rmtree(site, ignore_errors=True)  # the only place it was installed
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(dist)


@pytest.mark.slow
def test_plugin_guide_followed_literally(guide_reader):
    """Write the guide's files, install, list, search, run the conformance suite: all pass."""
    _, dist, data = _guide_package()
    ((entry, _),) = data["project"]["entry-points"]["mpqcore"].items()
    method = re.search(r'registry\.add\("([^"]+)"', "".join(guide_files().values()))[1]
    commands = guide_commands()
    kinds = [c.split()[0] if not c.startswith("python -m pytest") else "pytest" for c in commands]
    assert kinds.index("pip") < kinds.index("mpq") and "pytest" in kinds, f"the guide's commands: {commands}"

    outputs = {line: guide_reader.run(line) for line in commands}

    listing = next(out.stdout for line, out in outputs.items() if line.split()[:2] == ["mpq", "plugins"])
    assert entry in listing and method in listing and dist in listing
    searched = [out.stdout for line, out in outputs.items() if line.split()[:2] == ["mpq", "search"]]
    assert searched and all(f"method {method}" in out for out in searched)
    tested = next(out.stdout for line, out in outputs.items() if line.startswith("python -m pytest"))
    passed = re.search(r"(\d+) passed", tested)
    assert passed and int(passed[1]) >= 7 and not re.search(r"\d+ (failed|error|skipped)", tested), tested

    listed = json.loads(guide_reader.run("mpq plugins --json").stdout)
    (info,) = [p for p in _plugin_entries(listed) if p["name"] == entry]
    assert info["distribution"] == dist and info["version"] == data["project"]["version"]
    assert info["registers"] == {"method": [method]}
