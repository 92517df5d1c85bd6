"""Registries: picking an implementation by name, and the errors when that goes wrong."""

from __future__ import annotations

import attrs
import pytest

import mpqcore
from mpqcore import ConfigError, PluginError, hookimpl
from mpqcore.registry import KINDS, Registry, suggest


class Thing:
    """A thing with one option.

    More text that is not the description.
    """

    def __init__(self, size: int = 1):
        self.size = size

    def measure(self, ctx):  # fits the method protocol
        raise NotImplementedError

    def solve(self, problem):  # and the solver protocol
        raise NotImplementedError


def registry(*names: str, plugin: str = "acme") -> Registry:
    reg = Registry("method")
    reg.current_plugin = plugin
    for n in names:
        reg.add(n, Thing)
    reg.current_plugin = "<direct>"
    return reg


def test_add_get_create_and_listing():
    reg = registry("hawq", "eagl")
    assert reg.names() == ["eagl", "hawq"] and len(reg) == 2 and list(reg) == ["eagl", "hawq"]
    assert "hawq" in reg and "nope" not in reg
    entry = reg.get("hawq")
    assert (entry.name, entry.plugin, entry.factory) == ("hawq", "acme", Thing)
    assert entry.description == "A thing with one option."  # first line of the docstring
    assert reg.create("hawq", size=3).size == 3
    assert reg.by_plugin("acme") == ["eagl", "hawq"] and reg.by_plugin("other") == []
    assert [e.name for e in reg.entries()] == ["eagl", "hawq"]


def test_explicit_description_wins():
    reg = Registry("solver")
    reg.add("x", Thing, description="mine")
    assert reg.get("x").description == "mine"


def test_unknown_name_lists_valid_names_with_a_suggestion():
    reg = registry("hawq", "eagl", "alps")
    with pytest.raises(ConfigError) as info:
        reg.get("hawk")
    msg = str(info.value)
    assert "unknown method 'hawk'" in msg
    assert "did you mean 'hawq'?" in msg
    assert "valid methods: alps, eagl, hawq" in msg


def test_unknown_name_without_close_match_has_no_suggestion():
    reg = registry("hawq")
    with pytest.raises(ConfigError, match="unknown method 'zzzzzz'; valid methods: hawq") as info:
        reg.create("zzzzzz")
    assert "did you mean" not in str(info.value)
    with pytest.raises(ConfigError, match=r"\(none registered\)"):
        Registry("task").get("digits")


def test_suggest():
    assert (
        suggest("minmax-per-tensr", ["minmax-per-tensor", "mse-per-channel"]) == "; did you mean 'minmax-per-tensor'?"
    )
    assert suggest("q", ["minmax-per-tensor"]) == ""


def test_duplicate_name_names_both_plugins():
    reg = Registry("solver")
    reg.current_plugin = "first-plugin"
    reg.add("greedy", Thing)
    reg.current_plugin = "second-plugin"
    with pytest.raises(PluginError) as info:
        reg.add("greedy", Thing)
    msg = str(info.value)
    assert "solver 'greedy' is registered twice" in msg
    assert "'first-plugin'" in msg and "'second-plugin'" in msg
    assert info.value.plugin == "second-plugin"
    assert reg.get("greedy").plugin == "first-plugin"  # the first registration stays


@pytest.mark.parametrize("name", ["", " hawq", "hawq ", "my method", "MyMethod", "-x", "a/b", None, 3])
def test_invalid_names(name):
    reg = Registry("method")
    reg.current_plugin = "acme"
    with pytest.raises(PluginError, match="plugin 'acme' registered a method with invalid name") as info:
        reg.add(name, Thing)
    assert info.value.plugin == "acme"
    assert len(reg) == 0


def test_non_callable_factory():
    reg = Registry("cost model")
    reg.current_plugin = "acme"
    with pytest.raises(PluginError, match="cost model 'size' with a non-callable 42"):
        reg.add("size", 42)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown registry kind 'gizmo'"):
        Registry("gizmo")
    assert set(KINDS) == {"method", "solver", "quantizer", "cost model", "task", "layer kind", "export format"}


def test_create_with_an_unknown_option_names_the_plugin():
    reg = registry("hawq", plugin="mpqcore-fancy")
    with pytest.raises(ConfigError) as info:
        reg.create("hawq", colour="red")
    msg = str(info.value)
    assert (
        "method 'hawq' (plugin 'mpqcore-fancy'): unknown option 'colour'; valid options: size (int, default 1)" in msg
    )
    assert info.value.__cause__ is None  # caught before the factory is called


@attrs.frozen
class Counted:
    samples: int = attrs.field(default=4, converter=int)

    @samples.validator
    def _check(self, _attr, value):
        if value < 1:
            raise ConfigError(f"counted: samples must be >= 1, got {value}")


def test_create_with_an_unconvertible_option_is_a_config_error():
    # Bug fixed: `--method-option samples=abc` made int("abc") raise a bare ValueError,
    # which the command line does not catch (a traceback instead of a message).
    reg = Registry("method")
    reg.current_plugin = "acme"
    reg.add("counted", Counted)
    with pytest.raises(ConfigError, match=r"method 'counted' \(plugin 'acme'\) rejected options \['samples'\]") as info:
        reg.create("counted", samples="abc")
    assert type(info.value.__cause__) is ValueError


def test_create_passes_the_implementations_own_config_error_through_naming_it():
    reg = Registry("method")
    reg.add("counted", Counted)
    with pytest.raises(
        ConfigError, match=r"^method 'counted' \(registered directly\): counted: samples must be >= 1, got 0$"
    ):
        reg.create("counted", samples=0)


def test_builtin_registries_through_the_plugin_set():
    plugins = mpqcore.PluginSet(autoload=False)
    assert {"highs", "dp", "brute-force"} <= set(plugins.solvers.names())
    assert {"hawq", "uniform"} <= set(plugins.methods.names())
    assert set(plugins.quantizers.names()) >= {"minmax-per-tensor", "symmetric-per-channel", "mse-per-channel"}
    assert set(plugins.cost_models.names()) >= {"size", "bops", "latency"}
    assert plugins.registry("task") is plugins.tasks
    with pytest.raises(ConfigError, match="did you mean 'mse-per-channel'"):
        plugins.quantizers.create("mse-per-chanel")
    with pytest.raises(
        ConfigError,
        match=r"quantizer 'mse-per-channel' \(plugin 'mpqcore.quantizers'\): grid must be an integer >= 1, got 'many'",
    ):
        plugins.quantizers.create("mse-per-channel", grid="many")


def test_a_clash_with_a_builtin_blames_the_later_plugin():
    # Bug fixed: the hooks were run newest-first, so a plugin re-registering a built-in
    # name got the built-in blamed (PluginError.plugin == 'mpqcore.quantizers').
    class Clash:
        @hookimpl
        def mpq_register_quantizers(self, registry):
            registry.add("minmax-per-tensor", Thing)

    with pytest.raises(PluginError) as info:
        mpqcore.PluginSet(autoload=False, plugins=[Clash()])
    assert info.value.plugin == "Clash"
    assert "by plugin 'mpqcore.quantizers' and by plugin 'Clash'" in str(info.value)


# -- the kind's Protocol is checked when a product is created ----------------------


class NoMeasure:
    """A method factory whose product forgot measure()."""


class NotCallableSolve:
    solve = 3


def test_a_method_without_measure_is_refused_at_create_naming_the_plugin():
    reg = Registry("method", origins={"acme": "plugin 'acme' (distribution 'mpqcore-acme', entry point 'acme.plugin')"})
    reg.current_plugin = "acme"
    reg.add("lazy", NoMeasure)
    with pytest.raises(PluginError) as info:
        reg.create("lazy")
    msg = str(info.value)
    assert "method 'lazy'" in msg and "distribution 'mpqcore-acme'" in msg and "lacks measure" in msg
    assert "SensitivityMethod" in msg and info.value.plugin == "acme"


def test_a_solver_with_a_non_callable_solve_is_refused_at_create():
    reg = Registry("solver")
    reg.add("odd", NotCallableSolve)
    with pytest.raises(PluginError, match="non-callable solve"):
        reg.create("odd")


def test_a_cost_model_needs_its_unit_too():
    class NoUnit:
        def cost(self, layer, bits):
            return 1.0

    reg = Registry("cost model")
    reg.add("no-unit", NoUnit)
    with pytest.raises(PluginError, match="lacks unit"):
        reg.create("no-unit")


def test_resolve_takes_a_name_or_a_checked_instance():
    reg = registry("hawq")
    name, made = reg.resolve("hawq", {"size": 2})
    assert name == "hawq" and made.size == 2
    mine = Thing(5)
    name, same = reg.resolve(mine)
    assert same is mine and name == "hawq"  # the registered name of its class
    with pytest.raises(ConfigError, match="configure the instance itself"):
        reg.resolve(mine, {"size": 1})
    with pytest.raises(PluginError, match="lacks measure"):
        reg.resolve(NoMeasure())


def test_a_non_string_name_is_a_clear_error_not_a_crash_in_the_suggester():
    reg = registry("hawq")
    with pytest.raises(ConfigError, match=r"registered name .* got int"):
        reg.get(3)  # type: ignore[arg-type]


class Crashes:
    """A factory with a bug of its own."""

    def __init__(self):
        raise KeyError("table")


def test_a_factory_that_crashes_is_a_plugin_error_naming_it():
    reg = Registry("method", origins={"acme": "plugin 'acme' (distribution 'mpqcore-acme', entry point 'acme')"})
    reg.current_plugin = "acme"
    reg.add("crashes", Crashes)
    with pytest.raises(
        PluginError, match=r"method 'crashes' \(plugin 'acme' .*failed to build .*KeyError: 'table'"
    ) as info:
        reg.create("crashes")
    assert info.value.plugin == "acme" and isinstance(info.value.__cause__, KeyError)


def test_an_unknown_name_says_when_installed_plugins_were_not_loaded_or_blocked(monkeypatch):
    monkeypatch.delenv("MPQ_DISABLE_PLUGINS", raising=False)
    with pytest.raises(ConfigError, match=r"installed plugins were not loaded .*only the built-ins") as info:
        mpqcore.PluginSet(autoload=False).methods.get("clado")
    assert "valid methods: hawq, uniform" in str(info.value)
    blocked = mpqcore.PluginSet(autoload=False, disable=["mpqcore.tasks"])
    with pytest.raises(
        ConfigError, match=r"blocked plugins, whose names are not listed: mpqcore.tasks \(disable= argument\)"
    ):
        blocked.tasks.get("digits-cnn")
    assert mpqcore.PluginSet(autoload=True).methods.missing_hint == ""
