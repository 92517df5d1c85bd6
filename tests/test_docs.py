"""The documentation is checked against the code, so it fails CI when it drifts.

- every hook in :mod:`mpqcore.hookspecs` has ``docs/hooks/<hook>.md`` showing its exact
  signature, and every page there belongs to a hook;
- every hook is exercised by some other test file;
- the example plugin on each hook page runs: it is executed as a fresh module,
  registered through :class:`mpqcore.PluginSet` and its ``demo(plugins)`` is called;
- every public name of ``mpqcore`` and every ``mpq`` subcommand is in the user guide;
- the function signatures shown in the user guide match the code;
- every ``python`` snippet of the user guide and the problem-file page runs, in order
  (real searches on ``digits-cnn`` with one torch thread: about 10 s; set
  ``MPQ_DOCS_SKIP_SNIPPETS=1`` to skip them);
- relative links between the docs pages point at files that exist.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import re
import types
from pathlib import Path

import pytest
import torch

import mpqcore
from mpqcore import hookspecs
from mpqcore.cli import build_parser
from mpqcore.problem import allocation_violations
from mpqcore.registry import KINDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HOOK_DOCS = DOCS / "hooks"
GUIDE = DOCS / "guide.md"

HOOKS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("mpq_")}
KIND_OF_HOOK = {hook: kind for kind, hook in KINDS.items()}


def _annotation(value) -> str:
    # hookspecs uses ``from __future__ import annotations``: annotations are the source text.
    return value if isinstance(value, str) else inspect.formatannotation(value)


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


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def example_block(page: Path) -> str:
    blocks = [b for b in python_blocks(page.read_text()) if "def demo(plugins" in b]
    assert len(blocks) == 1, f"{page.name}: expected one ```python block defining demo(plugins), found {len(blocks)}"
    return blocks[0]


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


def _signature_blocks(text: str) -> dict[str, ast.FunctionDef]:
    out = {}
    for block in re.findall(r"^```python signature\n(.*?)^```", text, flags=re.S | re.M):
        fn = ast.parse(block.strip() + ": ...").body[0]
        out[fn.name] = fn
    return out


def _unqualified(annotation: str) -> str:
    # solve/load_task are annotated with classes, not strings: drop their module paths.
    return re.sub(r"\b(?:mpqcore\.[a-z_.]*\.)", "", annotation.replace(" ", ""))


def _documented(fn: ast.FunctionDef) -> list[tuple]:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = [(arg.arg, "positional", arg.annotation, d is not None) for arg, d in zip(positional, defaults)]
    if a.vararg:
        out.append((a.vararg.arg, "*args", a.vararg.annotation, False))
    out += [(arg.arg, "keyword", arg.annotation, d is not None) for arg, d in zip(a.kwonlyargs, a.kw_defaults)]
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


GUIDE_SIGNATURES = {
    "search": mpqcore.search,
    "measure": mpqcore.measure,
    "sweep": mpqcore.sweep,
    "apply": mpqcore.apply,
    "solve": mpqcore.solve,
    "search_problem": mpqcore.search_problem,
    "load_task": mpqcore.load_task,
    "with_budgets": mpqcore.Measurement.with_budgets,
}


@pytest.mark.parametrize("name", sorted(GUIDE_SIGNATURES))
def test_guide_signatures_match_the_code(name):
    documented = _signature_blocks(GUIDE.read_text())
    assert name in documented, f"docs/guide.md has no ```python signature block for {name}"
    fn = GUIDE_SIGNATURES[name]
    assert _documented(documented[name]) == _actual(fn), f"the signature of {name} in docs/guide.md differs from the code"
    returns = documented[name].returns
    actual = inspect.signature(fn).return_annotation
    assert _unqualified(ast.unparse(returns)) == _unqualified(_annotation(actual))


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
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, f"broken links: {broken}"


@pytest.mark.skipif(bool(os.environ.get("MPQ_DOCS_SKIP_SNIPPETS")), reason="MPQ_DOCS_SKIP_SNIPPETS is set")
@pytest.mark.parametrize("page", ["guide.md", "problem-file.md"])
def test_page_snippets_run(page, tmp_path, monkeypatch, cached_digits):
    """Every ```python block of the page, top to bottom in one namespace, as a reader would."""
    monkeypatch.chdir(tmp_path)  # the snippets write reports and problem files
    namespace: dict = {"__name__": f"mpq_docs_{Path(page).stem}"}
    blocks = python_blocks((DOCS / page).read_text())
    assert blocks, f"{page} has no ```python blocks"
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOCS / page} (python block {i + 1})", "exec"), namespace)
