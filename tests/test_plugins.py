"""Plugins: the acceptance test of the plugin system, and the plugin manager in-process.

A third-party package outside this repo, with one entry point in group ``mpqcore``, is
listed by ``mpq plugins`` after ``pip install`` and its method and solver are usable by
name; a broken one is named in the error; the disable switch works.

The packages under ``tests/fixtures/`` are copied to a temporary folder and installed
there with ``pip install --target`` (once per module); each check then runs mpq in a
fresh interpreter with that folder on ``PYTHONPATH``, so ``importlib.metadata`` finds the
entry points exactly as it would after a real install. Those interpreters are started
together in one module fixture (``runs``) and each test asserts on one of them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pluggy
import pytest

import mpqcore
from mpqcore import PluginError, hookimpl
from mpqcore.plugins import DEFAULT_PLUGINS, ENV_DISABLE_AUTOLOAD, ENV_DISABLE_PLUGINS
from mpqcore.problem import allocation_violations, load_problem

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = Path(mpqcore.__file__).parent / "examples" / "small.json"
DISTRIBUTIONS = {
    "mpq_thirdparty": "mpq-thirdparty-example",
    "mpq_broken": "mpq-broken-example",
    "mpq_hookraise": "mpq-hookraise-example",
}
PACKAGES = tuple(DISTRIBUTIONS)


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    """``{package: folder it is pip-installed into}``; the three installs run at once."""
    # Looked up, not imported: importing setuptools here would fight torch's distutils.
    for needed in ("pip", "setuptools"):  # setuptools: the fixtures' build backend, no isolation
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed")
    root = tmp_path_factory.mktemp("plugin-sites")
    procs = {}
    for name in PACKAGES:
        src = root / "src" / name
        # Built from a copy: an in-tree build would leave build/ and *.egg-info here.
        shutil.copytree(FIXTURES / name, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
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
            str(root / name),
            str(src),
        ]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"pip install of {name} failed:\n{out}\n{err}"
    return {name: root / name for name in PACKAGES}


def mpq_process(args, *, sites=(), disable=False, cwd, script=None, block="") -> subprocess.Popen:
    """mpq (or a script) in a fresh interpreter that sees the packages in ``sites``.

    Other mpq plugins installed in this environment are hidden (see
    ``fixtures/only_these_plugins.py``): the checks are about the stand-ins alone.
    """
    env = {k: v for k, v in os.environ.items() if k != ENV_DISABLE_AUTOLOAD}
    if disable:
        env[ENV_DISABLE_AUTOLOAD] = "1"
    env.pop(ENV_DISABLE_PLUGINS, None)
    if block:
        env[ENV_DISABLE_PLUGINS] = block
    env["PYTHONPATH"] = os.pathsep.join(
        [str(s) for s in sites] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    target = [str(script)] if script else ["-m", "mpqcore.cli", *args]
    cmd = [sys.executable, str(FIXTURES / "only_these_plugins.py"), ",".join(DISTRIBUTIONS.values()), *target]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


@pytest.fixture
def only_stand_in_plugins(monkeypatch):
    """In this process, hide installed mpq plugins other than the stand-ins."""
    real = importlib.metadata.entry_points

    def entry_points(**params):
        found = real(**params)
        if params.get("group") != "mpqcore":
            return found
        return importlib.metadata.EntryPoints(
            e for e in found if e.dist is not None and e.dist.name in DISTRIBUTIONS.values()
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


@pytest.fixture(scope="module")
def runs(sites, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every command the acceptance tests check, started at once (each is mostly the
    interpreter importing torch) and collected; each test below asserts on one."""
    cwd = tmp_path_factory.mktemp("runs")
    script = cwd / "search.py"
    script.write_text(SEARCH_SCRIPT)
    good, broken = sites["mpq_thirdparty"], sites["mpq_broken"]
    procs = {
        "list": mpq_process(["plugins", "--json"], sites=[good], cwd=cwd),
        "solve": mpq_process(["solve", str(SMALL), "--solver", "greedy-upgrade"], sites=[good], cwd=cwd),
        "search": mpq_process([], sites=[good], cwd=cwd, script=script),
        "broken": mpq_process(["plugins", "--json"], sites=[good, broken], cwd=cwd),
        "disabled": mpq_process(["plugins", "--json"], sites=[good, broken], disable=True, cwd=cwd),
        "blocked": mpq_process(["plugins"], sites=[good, broken], block="broken,nosuch", cwd=cwd),
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


SEARCH_SCRIPT = textwrap.dedent(
    """
    import json

    import torch
    from torch import nn

    import mpqcore
    from mpqcore.quantizers import MinMaxPerTensor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    calibration = [torch.randn(10, 8) for _ in range(2)]
    report = mpqcore.search(model, calibration, method="weight-norm", bits=(2, 4, 8),
                            budget=mpqcore.Budget.average_bits(5.0), solver="greedy-upgrade",
                            quantizer="minmax-per-tensor", guard=False)  # the plugin solver's own answer
    # The method's definition, computed here independently of the plugin.
    expected = {
        fqn: {b: float(((MinMaxPerTensor().quantize(m.weight, b).dequantize() - m.weight) ** 2).sum()) for b in (2, 4, 8)}
        for fqn, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    print(json.dumps({
        "method": report.method,
        "objective_info": report.objective_info,
        "solver": report.allocation.solver,
        "allocation": dict(report.allocation.bits),
        "average_bits": report.average_bits,
        "unary": {f: {str(b): v for b, v in row.items()} for f, row in report.problem.objective.as_dict().items()},
        "expected": expected,
    }))
    """
)


# ---------------------------------------------------------------------------
# The acceptance test, through pip and fresh interpreters
# ---------------------------------------------------------------------------


def test_installed_plugin_is_listed_with_distribution_version_and_registrations(runs):
    proc = runs["list"]
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["thirdparty"] == {
        "name": "thirdparty",
        "version": "1.2.3",
        "distribution": "mpq-thirdparty-example",
        "entry_point": "mpq_thirdparty",
        "registers": {"method": ["weight-norm"], "solver": ["greedy-upgrade"]},
    }
    assert list(infos) == [*DEFAULT_PLUGINS, "thirdparty"]  # built-ins first, then the installed one


def test_installed_solver_is_usable_by_name_in_mpq_solve(runs):
    proc = runs["solve"]
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["solver"] == "greedy-upgrade" and out["status"] == "heuristic"  # the plugin's, not highs
    problem = load_problem(SMALL)
    assert allocation_violations(problem, out["allocation"]) == []
    assert out["objective"] == pytest.approx(problem.objective.value(out["allocation"]))
    optimum = mpqcore.PluginSet(autoload=False).solvers.create("brute-force").solve(problem).objective
    assert out["objective"] >= optimum - 1e-9


def test_installed_method_and_solver_run_a_search_by_name(runs):
    proc = runs["search"]
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["method"] == "weight-norm" and out["objective_info"]["method"] == "weight-norm"
    assert out["solver"] == "greedy-upgrade"
    assert set(out["unary"]) == {"0", "2", "4"}
    for fqn, row in out["expected"].items():
        for b, value in row.items():
            assert out["unary"][fqn][b] == pytest.approx(value, rel=1e-6)
    assert out["average_bits"] <= 5.0 + 1e-9
    assert set(out["allocation"].values()) <= {2, 4, 8} and len(set(out["allocation"].values())) > 1


def test_a_plugin_that_fails_to_import_is_named_with_its_cause(runs):
    proc = runs["broken"]
    assert proc.returncode == 4 and proc.stdout == ""  # 4: a plugin failed (docs/errors.md)
    err = proc.stderr
    assert err.startswith("mpq plugins: error: plugin 'broken' failed to import")
    assert "distribution 'mpq-broken-example'" in err
    assert "entry point 'broken' = 'mpq_broken'" in err
    assert "ModuleNotFoundError: No module named 'mpq_missing_dependency_xyz'" in err  # the cause
    assert ENV_DISABLE_AUTOLOAD in err  # says how to get going again
    assert "thirdparty" not in err and "Traceback" not in err


def test_the_disable_switch_loads_built_ins_only(runs):
    proc = runs["disabled"]
    assert proc.returncode == 0, proc.stderr  # the broken plugin (on the path) is not even imported
    assert [i["name"] for i in json.loads(proc.stdout)] == list(DEFAULT_PLUGINS)


def test_blocking_one_plugin_by_name_skips_its_import_and_is_shown(runs):
    proc = runs["blocked"]
    assert proc.returncode == 0, proc.stderr  # the broken plugin is blocked, so never imported
    out = proc.stdout
    assert "thirdparty  1.2.3" in out  # the other installed plugin still loads
    assert "blocked: broken (MPQ_DISABLE_PLUGINS environment variable)" in out
    assert "blocked: nosuch (MPQ_DISABLE_PLUGINS environment variable; no plugin of this name was found)" in out


def test_a_hook_that_raises_names_the_distribution_and_chains_the_cause(sites, monkeypatch, only_stand_in_plugins):
    monkeypatch.syspath_prepend(str(sites["mpq_hookraise"]))
    with pytest.raises(PluginError) as info:
        mpqcore.PluginSet(autoload=True)
    msg = str(info.value)
    assert info.value.plugin == "hookraise"
    assert "distribution 'mpq-hookraise-example', entry point 'mpq_hookraise'" in msg
    assert "hook mpq_register_methods raised RuntimeError: hookraise cannot read its method table" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_autoload_follows_the_argument_and_the_environment(sites, monkeypatch, only_stand_in_plugins):
    monkeypatch.syspath_prepend(str(sites["mpq_thirdparty"]))
    loaded = mpqcore.PluginSet(autoload=True)
    assert "greedy-upgrade" in loaded.solvers and loaded.methods.get("weight-norm").plugin == "thirdparty"
    assert "greedy-upgrade" not in mpqcore.PluginSet(autoload=False).solvers
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    assert "thirdparty" not in {i.name for i in mpqcore.PluginSet().info()}
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "0")
    assert "thirdparty" in {i.name for i in mpqcore.PluginSet().info()}


# ---------------------------------------------------------------------------
# In-process plugin objects
# ---------------------------------------------------------------------------


class Constant:
    """A method whose every (layer, bits) costs minus the bit-width."""

    def measure(self, ctx):
        return mpqcore.Objective(
            layers=ctx.layers, bits=ctx.bits, unary=-np.tile(np.asarray(ctx.bits, float), (len(ctx.layers), 1))
        )


class MyPlugin:
    @hookimpl
    def mpq_register_methods(self, registry):
        registry.add("constant", Constant)

    @hookimpl
    def mpq_register_cost_models(self, registry):
        registry.add("free", lambda: None, description="costs nothing")


def test_a_plugin_object_registers_like_a_builtin():
    plugins = mpqcore.PluginSet(autoload=False, plugins=[MyPlugin()])
    assert plugins.methods.get("constant").plugin == "MyPlugin"
    assert isinstance(plugins.methods.create("constant"), Constant)
    assert plugins.cost_models.get("free").description == "costs nothing"
    info = {i.name: i for i in plugins.info()}["MyPlugin"]
    assert info.registers == {"method": ["constant"], "cost model": ["free"]}
    assert (info.version, info.distribution, info.entry_point) == ("", "", "")
    assert "constant" not in mpqcore.PluginSet(autoload=False).methods  # no leak between sets


def test_a_plugin_module_works_too(tmp_path, monkeypatch):
    (tmp_path / "mpq_inline_plugin.py").write_text(
        "from mpqcore import hookimpl\n\n@hookimpl\ndef mpq_register_solvers(registry):\n    registry.add('inline', dict)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import mpq_inline_plugin

    plugins = mpqcore.PluginSet(autoload=False, plugins=[mpq_inline_plugin])
    assert plugins.solvers.get("inline").plugin == "mpq_inline_plugin"


def test_an_unknown_hook_is_a_plugin_error():
    class Bogus:
        @hookimpl
        def mpq_register_bogus(self, registry):
            registry.add("x", object)

    with pytest.raises(PluginError, match=r"plugin .*Bogus.* implements a hook mpq does not define") as info:
        mpqcore.PluginSet(autoload=False, plugins=[Bogus()])
    assert "mpq_register_bogus" in str(info.value)
    assert isinstance(info.value.__cause__, pluggy.PluginValidationError)


def test_a_hook_with_an_unknown_argument_is_a_plugin_error():
    class Greedy:
        @hookimpl
        def mpq_register_methods(self, registry, config):
            pass

    with pytest.raises(PluginError, match="plugin 'Greedy' has an invalid hook implementation") as info:
        mpqcore.PluginSet(autoload=False, plugins=[Greedy()])
    assert "config" in str(info.value)


def test_a_raising_hook_is_a_plugin_error_naming_the_plugin():
    class Exploding:
        @hookimpl
        def mpq_register_solvers(self, registry):
            raise KeyError("no table")

    with pytest.raises(
        PluginError, match=r"plugin 'Exploding': hook mpq_register_solvers raised KeyError: 'no table'"
    ) as info:
        mpqcore.PluginSet(autoload=False, plugins=[Exploding()])
    assert info.value.plugin == "Exploding"
    assert isinstance(info.value.__cause__, KeyError)


def test_two_plugins_with_one_name():
    with pytest.raises(PluginError, match="plugin name 'MyPlugin' is used by two plugins"):
        mpqcore.PluginSet(autoload=False, plugins=[MyPlugin(), MyPlugin()])


def test_a_plugin_method_runs_in_a_search_in_process():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    plugins = mpqcore.PluginSet(autoload=False, plugins=[MyPlugin()])
    report = mpqcore.search(
        model,
        [torch.randn(6, 4)],
        method="constant",
        bits=(2, 4, 8),
        budget=mpqcore.Budget.average_bits(8),
        plugins=plugins,
    )
    assert report.method == "constant"
    assert dict(report.allocation.bits) == {"0": 8, "2": 8}  # -bits is lowest at 8; the budget allows it


def test_two_distributions_with_one_entry_point_name_are_both_named(monkeypatch):
    real = importlib.metadata.entry_points

    class Dist:
        def __init__(self, name):
            self.name, self.version = name, "1.0"

    def entry_points(**params):
        if params.get("group") != "mpqcore":
            return real(**params)
        eps = []
        for dist, value in (("mpq-first", "first_mod"), ("mpq-second", "second_mod")):
            ep = importlib.metadata.EntryPoint(name="clash", value=value, group="mpqcore")
            eps.append(ep._for(Dist(dist)) if hasattr(ep, "_for") else ep)
        return importlib.metadata.EntryPoints(eps)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    with pytest.raises(PluginError, match=r"'clash'.*'mpq-first'.*'mpq-second'"):
        mpqcore.PluginSet(autoload=True)


# -- hooks are called through pluggy: wrappers, ordering, blocking -------------------


class Wrapping:
    """A new-style wrapper: it runs around every other implementation of the hook."""

    def __init__(self):
        self.seen_before: list[str] = []
        self.seen_after: list[str] = []

    @hookimpl(wrapper=True)
    def mpq_register_methods(self, registry):
        self.seen_before = registry.names()
        result = yield
        self.seen_after = registry.names()
        registry.add("wrapped", Constant)  # a wrapper may register too, and is named for it
        return result


def test_a_hookwrapper_implementation_wraps_the_others_and_registers():
    wrapper = Wrapping()
    plugins = mpqcore.PluginSet(autoload=False, plugins=[wrapper])
    assert "hawq" not in wrapper.seen_before and "hawq" in wrapper.seen_after
    assert plugins.methods.get("wrapped").plugin == "Wrapping"
    assert isinstance(plugins.methods.create("wrapped"), Constant)


class Early:
    def __init__(self, log):
        self.log = log

    @hookimpl(tryfirst=True)
    def mpq_register_solvers(self, registry):
        self.log.append(("early", "highs" in registry))


class Late:
    def __init__(self, log):
        self.log = log

    @hookimpl(trylast=True)
    def mpq_register_solvers(self, registry):
        self.log.append(("late", "highs" in registry))


def test_tryfirst_and_trylast_order_the_calls_as_pluggy_documents():
    log: list = []
    mpqcore.PluginSet(autoload=False, plugins=[Late(log), Early(log)])
    # tryfirst runs before the built-in solvers registered; trylast after.
    assert log == [("early", False), ("late", True)]


def test_pluggy_tracing_sees_the_hook_calls():
    plugins = mpqcore.PluginSet(autoload=False)
    calls: list = []
    undo = plugins.pm.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append(name), lambda *a: None)
    plugins.pm.hook.mpq_register_methods(registry=mpqcore.registry.Registry("method"))
    undo()
    assert calls == ["mpq_register_methods"]


def test_disable_blocks_single_plugins_builtin_or_object():
    plugins = mpqcore.PluginSet(autoload=False, plugins=[MyPlugin()], disable=["MyPlugin", "mpqcore.tasks", "nosuch"])
    assert "constant" not in plugins.methods and len(plugins.tasks) == 0
    assert "hawq" in plugins.methods
    blocked = {b.name: b for b in plugins.blocked}
    assert set(blocked) == {"MyPlugin", "mpqcore.tasks", "nosuch"}
    assert blocked["MyPlugin"].found and blocked["mpqcore.tasks"].found and not blocked["nosuch"].found
    assert blocked["nosuch"].reason == "disable= argument"


def test_the_environment_variable_blocks_plugins(monkeypatch):
    monkeypatch.setenv("MPQ_DISABLE_PLUGINS", " mpqcore.tasks , MyPlugin ")
    plugins = mpqcore.PluginSet(autoload=False, plugins=[MyPlugin()])
    assert "constant" not in plugins.methods and len(plugins.tasks) == 0
    assert {b.reason for b in plugins.blocked} == {"MPQ_DISABLE_PLUGINS environment variable"}
