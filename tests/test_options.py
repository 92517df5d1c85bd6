"""mpqcore.options: the one place option values are converted and checked, and every registered factory uses it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpqcore.errors import ConfigError
from mpqcore.options import REQUIRED, OptionSpec, check_options, describe_options, option, options_class
from mpqcore.plugins import PluginSet


@attrs.frozen
class Example:
    """Every kind of option once."""

    samples: int = option(int, default=4, minimum=1, help="Hutchinson draws per layer")
    bits: int | None = option(int, default=None, minimum=1, maximum=16, optional=True)
    lr: float = option(float, default=1e-3, greater_than=0.0)
    gap: float = option(float, default=0.0, minimum=0.0, less_than=1.0)
    flag: bool = option(bool, default=False)
    exact: bool | str = option(bool, default="auto", also=("auto",))
    scale: str = option(str, default="params", choices=("params", "per-weight"))
    label: str = option(str, default="x")
    path: Path | None = option(Path, default=None, optional=True)


def error(**options: Any) -> str:
    with pytest.raises(ConfigError) as info:
        Example(**options)
    return str(info.value)


# -- int ------------------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**12))
def test_int_takes_integers_their_strings_and_integral_floats(n):
    assert Example(samples=n).samples == n
    assert Example(samples=str(n)).samples == n
    assert Example(samples=f"  {n}\n").samples == n
    assert Example(samples=np.int64(n)).samples == n
    if n < 2**53:
        assert Example(samples=float(n)).samples == n
    assert type(Example(samples=str(n)).samples) is int


@given(st.integers(max_value=0))
def test_int_below_its_minimum_is_refused(n):
    assert error(samples=n) == f"samples must be an integer >= 1, got {n}"


@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (math.isfinite(x) and x.is_integer())))
def test_int_refuses_non_integral_floats(x):
    assert error(samples=x) == f"samples must be an integer >= 1, got {x!r}"


@given(st.text())
def test_int_from_any_text_is_an_integer_or_the_standard_message(text):
    try:
        expected: int | None = int(text.strip())
    except ValueError:
        try:
            f = float(text)
            expected = int(f) if math.isfinite(f) and f.is_integer() else None
        except ValueError:
            expected = None
    if expected is not None and expected >= 1:
        assert Example(samples=text).samples == expected
    else:
        assert error(samples=text) == f"samples must be an integer >= 1, got {text!r}"


def test_int_refuses_bools_and_other_types():
    assert error(samples=True) == "samples must be an integer >= 1, got True"
    assert error(samples=np.bool_(True)).startswith("samples must be an integer >= 1")
    assert error(samples=[4]) == "samples must be an integer >= 1, got [4]"
    assert error(samples="abc") == "samples must be an integer >= 1, got 'abc'"
    assert error(samples=2.5) == "samples must be an integer >= 1, got 2.5"


def test_int_range_and_optional():
    assert Example(bits=16).bits == 16 and Example(bits=None).bits is None
    assert Example(bits="None").bits is None and Example(bits="null").bits is None
    assert error(bits=17) == "bits must be an integer from 1 to 16 or None, got 17"
    assert error(bits=0) == "bits must be an integer from 1 to 16 or None, got 0"


# -- float ----------------------------------------------------------------------------------------


@given(st.floats(min_value=0.0, max_value=1.0, exclude_min=True))
def test_float_takes_numbers_and_their_strings(x):
    assert Example(lr=x).lr == x
    assert Example(lr=repr(x)).lr == x


@given(st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan), st.just("nan"), st.just("abc")))
def test_float_refuses_non_finite_and_out_of_range(x):
    assert error(lr=x) == f"lr must be a finite number > 0, got {x!r}"


def test_float_bounds_and_types():
    assert Example(lr=1).lr == 1.0 and type(Example(lr=1).lr) is float
    assert error(gap=1.0) == "gap must be a finite number >= 0 and < 1, got 1.0"
    assert error(gap=-0.1) == "gap must be a finite number >= 0 and < 1, got -0.1"
    assert error(lr=True) == "lr must be a finite number > 0, got True"
    assert error(lr=None) == "lr must be a finite number > 0, got None"


# -- bool -----------------------------------------------------------------------------------------

SPELLINGS = [(True, True), (False, False), (1, True), (0, False), (np.bool_(True), True)] + [
    (word, value) for words, value in (("true yes on 1", True), ("false no off 0", False)) for word in words.split()
]


@given(st.sampled_from(SPELLINGS), st.randoms())
def test_bool_takes_every_spelling_in_any_case(spelling, rng):
    raw, value = spelling
    if isinstance(raw, str):
        raw = "".join(c.upper() if rng.random() < 0.5 else c for c in raw) + " " * rng.randint(0, 2)
    assert Example(flag=raw).flag is value


@pytest.mark.parametrize("raw", ["maybe", "", 2, -1, 0.5, None, "2"])
def test_bool_refuses_anything_else(raw):
    assert error(flag=raw).startswith(f"flag must be true or false, got {raw!r}")


def test_bool_with_a_literal():
    assert Example(exact="AUTO").exact == "auto"
    assert Example(exact="no").exact is False
    assert error(exact="aut") == "exact must be true or false or 'auto', got 'aut'; did you mean 'auto'?"


# -- str, choices, path, classes ------------------------------------------------------------------


def test_choice_suggests_the_closest():
    assert Example(scale="per-weight").scale == "per-weight"
    assert error(scale="param") == "scale must be one of 'params', 'per-weight', got 'param'; did you mean 'params'?"
    assert error(scale="bits") == "scale must be one of 'params', 'per-weight', got 'bits'"
    assert error(scale=1) == "scale must be one of 'params', 'per-weight', got 1"


def test_text_path_and_instance_kinds(tmp_path):
    assert error(label=3) == "label must be a string, got 3"
    assert Example(path=str(tmp_path)).path == tmp_path
    assert error(path=3) == "path must be a path or None, got 3"

    @attrs.frozen
    class Device:
        device: object = option((str, Path), default="cpu")

    assert Device(Path("x")).device == Path("x")
    with pytest.raises(ConfigError, match=r"^device must be a str or Path, got 1$"):
        Device(1)


def test_option_declaration_mistakes_are_type_errors():
    with pytest.raises(TypeError):
        option(str, minimum=1)
    with pytest.raises(TypeError):
        option(int, choices=("a",))
    with pytest.raises(TypeError):
        option(int, greater_than=0)
    with pytest.raises(TypeError):
        option("int")


def test_a_required_option():
    @attrs.frozen
    class Needs:
        table: str = option(str)

    assert describe_options(Needs) == (OptionSpec("table", "str", REQUIRED, ""),)
    with pytest.raises(ConfigError, match=r"^missing required option: table \(str\)$"):
        check_options(Needs, {})


# -- describe_options / check_options -------------------------------------------------------------


def test_describe_lists_name_type_default_and_help():
    specs = describe_options(Example)
    assert specs[0] == OptionSpec("samples", "int >= 1", 4, "Hutchinson draws per layer")
    assert [str(s) for s in specs[1:3]] == [
        "bits (int from 1 to 16 or None, default None)",
        "lr (float > 0, default 0.001)",
    ]
    assert str(specs[5]) == "exact (bool or 'auto', default 'auto')"


def test_describe_a_plain_attrs_field_and_a_plain_callable():
    @attrs.frozen
    class Plain:
        table: dict = attrs.field(factory=dict, metadata={"type": "mapping", "help": "a table"})
        unit: str = "s"

    assert describe_options(Plain) == (OptionSpec("table", "mapping", {}, "a table"), OptionSpec("unit", "str", "s"))

    def build(n: int, *, name: str = "a", **rest: Any) -> None: ...

    assert [str(s) for s in describe_options(build)] == ["n (int, required)", "name (str, default 'a')"]
    check_options(build, {"n": 1, "anything": 2})  # **rest takes any name


def test_describe_follows_options_class():
    class Lazy:
        options_class = Example

        def __call__(self, **options: Any) -> Example:
            return Example(**options)

    assert options_class(Lazy()) is Example
    assert describe_options(Lazy()) == describe_options(Example)


def test_an_unknown_option_lists_the_valid_ones_with_types_and_defaults():
    with pytest.raises(ConfigError) as info:
        check_options(Example, {"sample": 3})
    msg = str(info.value)
    assert msg.startswith(
        "unknown option 'sample'; did you mean 'samples'? Valid options: samples (int >= 1, default 4), "
    )
    for spec in describe_options(Example):
        assert str(spec) in msg
    with pytest.raises(ConfigError, match=r"^unknown options 'a', 'b'; valid options: samples \(int >= 1, default 4\)"):
        check_options(Example, {"a": 1, "b": 2})
    with pytest.raises(ConfigError, match=r"^unknown option 'a'; it takes no options$"):
        check_options(attrs.make_class("Empty", {}), {"a": 1})
    check_options(Example, {"samples": "abc"})  # values are the factory's to check


# -- every registered factory uses the helper -----------------------------------------------------

PLUGINS = PluginSet(autoload=True)
REGISTRIES = dict(getattr(PLUGINS, "registries", None) or {})
#: What a factory's required options must be to build it here.
REQUIRED_VALUES: dict[tuple[str, str], dict[str, Any]] = {("cost model", "latency"): {"table": {"fc": {8: 1.0}}}}


def _entries() -> list[tuple[str, str]]:
    return [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


def _options_of(kind: str, name: str, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    factory = REGISTRIES[kind].get(name).factory
    return [(kind, name, s.name) for s in describe_options(factory) if s.type.split(" ")[0] in kinds]


def _all_options(kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return [o for kind, name in _entries() for o in _options_of(kind, name, kinds)]


def test_the_installed_plugins_are_seen():
    assert {"method", "solver", "quantizer", "cost model", "task"} <= set(REGISTRIES)
    assert {"hawq", "uniform"} <= set(REGISTRIES["method"].names())


@pytest.mark.parametrize("kind, name", _entries())
def test_every_factory_declares_its_options(kind, name):
    factory = REGISTRIES[kind].get(name).factory
    cls = options_class(factory)
    assert cls is not None, f"{kind} {name!r}: options not declared as an attrs class"
    for field in attrs.fields(cls):
        if field.init:
            assert "mpqcore.option" in field.metadata or "type" in field.metadata, f"{kind} {name!r}: {field.name}"


@pytest.mark.parametrize("kind, name", _entries())
def test_every_factory_lists_its_options_for_an_unknown_one(kind, name):
    registry = REGISTRIES[kind]
    specs = describe_options(registry.get(name).factory)
    with pytest.raises(ConfigError) as info:
        registry.create(name, no_such_option=1)
    msg = str(info.value)
    assert f"{kind} {name!r}" in msg and "unknown option 'no_such_option'" in msg
    for spec in specs:
        assert str(spec) in msg


def _build_options(kind: str, name: str, **options: Any) -> Any:
    cls = options_class(REGISTRIES[kind].get(name).factory)
    assert cls is not None
    return cls(**REQUIRED_VALUES.get((kind, name), {}), **options)


@pytest.mark.parametrize("kind, name, option_name", _all_options(("bool",)))
def test_every_bool_option_takes_yes_and_no(kind, name, option_name):
    attribute = {f.alias: f.name for f in attrs.fields(options_class(REGISTRIES[kind].get(name).factory))}[option_name]
    for raw, value in [("yes", True), ("no", False), ("ON", True), ("0", False), (1, True), (False, False)]:
        assert getattr(_build_options(kind, name, **{option_name: raw}), attribute) is value
    with pytest.raises(ConfigError, match=rf"\): {option_name} must be true or false.*, got 'maybe'"):
        REGISTRIES[kind].create(name, **REQUIRED_VALUES.get((kind, name), {}), **{option_name: "maybe"})


@pytest.mark.parametrize("kind, name, option_name", _all_options(("int",)))
def test_every_int_option_refuses_text_and_fractions(kind, name, option_name):
    registry = REGISTRIES[kind]
    for raw in ("abc", 2.5):
        with pytest.raises(ConfigError) as info:
            registry.create(name, **REQUIRED_VALUES.get((kind, name), {}), **{option_name: raw})
        assert f"{kind} {name!r}" in str(info.value)
        assert f": {option_name} must be an integer" in str(info.value) and str(info.value).endswith(f", got {raw!r}")
