"""The value classes: budgets, objectives, layers, models, allocations, and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpqcore import Allocation, Budget, ConfigError, LayerInfo, ModelSpec, Objective

# ---------------------------------------------------------------------------
# Budget
# ---------------------------------------------------------------------------


def test_budget_constructors():
    b = Budget.average_bits(4.5)
    assert (b.cost, b.kind, b.value) == ("size", "average_bits", 4.5)
    b = Budget.size_bytes(1000)
    assert (b.cost, b.kind, b.value) == ("size", "absolute", 8000.0)  # size is counted in bits
    b = Budget.relative("bops", 0.25, reference_bits=4)
    assert (b.cost, b.kind, b.value, b.reference_bits) == ("bops", "relative", 0.25, 4)
    b = Budget.absolute("latency", 3.5)
    assert (b.cost, b.kind, b.value) == ("latency", "absolute", 3.5)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, -math.inf])
def test_budget_value_must_be_positive_and_finite(value):
    with pytest.raises(ConfigError, match="positive finite"):
        Budget.absolute("size", value)


def test_budget_rejects_a_huge_fraction_and_bad_reference_bits():
    with pytest.raises(ConfigError, match="not a fraction"):
        Budget.relative("bops", 1e7)
    with pytest.raises(
        ConfigError, match=r"reference_bits = 0 is outside the valid range; bit-widths are integers 1\.\.16"
    ):
        Budget.relative("bops", 0.5, reference_bits=0)
    with pytest.raises(ValueError):
        Budget(cost="size", kind="percent", value=1.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("avg-bits=4", ("size", "average_bits", 4.0)),
        ("average-bits = 3.5", ("size", "average_bits", 3.5)),
        ("size-bytes=6e6", ("size", "absolute", 48e6)),
        ("size-mb=6", ("size", "absolute", 48e6)),
        ("bops=0.6x", ("bops", "relative", 0.6)),
        ("latency=12.5", ("latency", "absolute", 12.5)),
        ("size=4000", ("size", "absolute", 4000.0)),
    ],
)
def test_budget_parse_forms(text, expected):
    b = Budget.parse(text)
    assert (b.cost, b.kind, b.value) == expected
    if b.kind == "relative":
        assert b.reference_bits == 8


@pytest.mark.parametrize(
    "text, message",
    [
        ("avg-bits", "not NAME=VALUE"),
        ("size-bytes=lots", "'lots' is not a number"),
        ("bops=0.6y", "'0.6y' is not a number"),
        ("avg-bits=4x", "'4x' is not a number"),
        ("=4", "names no cost model"),
    ],
)
def test_budget_parse_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        Budget.parse(text)


@pytest.mark.parametrize("text", ["avg-bits=-1", "size=nan", "size=0", "bops=0x", "latency=inf"])
def test_budget_parse_keeps_the_constructors_message(text):
    # Bug fixed: ConfigError is a ValueError, so the constructors' own complaint used to
    # be caught and replaced by "is not a number" for perfectly good numbers.
    with pytest.raises(ConfigError, match="positive finite") as info:
        Budget.parse(text)
    assert "is not a number" not in str(info.value)


def test_budget_resolve():
    bits = (2, 4, 8)
    table = np.array([[2.0, 4.0, 8.0], [20.0, 40.0, 80.0]])
    assert Budget.absolute("size", 33).resolve(table, bits) == 33
    assert Budget.average_bits(3).resolve(table, bits, params=[1, 10]) == pytest.approx(33.0)
    assert Budget.relative("size", 0.5).resolve(table, bits) == pytest.approx(0.5 * 88)
    assert Budget.relative("size", 0.5, reference_bits=4).resolve(table, bits) == pytest.approx(0.5 * 44)
    with pytest.raises(ConfigError, match="parameter counts"):
        Budget.average_bits(3).resolve(table, bits)
    with pytest.raises(ConfigError, match="refers to 8 bits, which is not among the tabulated bits"):
        Budget.relative("size", 0.5).resolve(table[:, :2], (2, 4))


def test_budget_describe_and_to_dict():
    assert "average 4 bits" in Budget.average_bits(4).describe()
    assert Budget.relative("bops", 0.5).describe() == "bops <= 0.5 x its 8-bit cost"
    assert Budget.parse("size=10").to_dict() == {"cost": "size", "kind": "absolute", "value": 10.0, "reference_bits": 8}


# ---------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------


def objective(**kw):
    args = {"layers": ["a", "b"], "bits": [2, 4], "unary": [[3.0, 1.0], [5.0, 2.0]]}
    args.update(kw)
    return Objective(**args)


def test_objective_unary_is_read_only():
    obj = objective()
    with pytest.raises(ValueError):
        obj.unary[0, 0] = 1.0


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"unary": [[1.0, 2.0]]}, r"unary has shape \(1, 2\), expected \(2, 2\)"),
        ({"unary": [[1.0, math.nan], [0.0, 0.0]]}, r"non-finite.*\('a', 4\)"),
        ({"unary": [[1.0, 0.0], [math.inf, 0.0]]}, r"non-finite.*\('b', 2\)"),
        ({"stderr": [[1.0, 1.0]]}, "stderr has shape"),
        ({"layers": ["a", "a"]}, "duplicate layer names"),
        ({"pairs": [("a", 2, "zz", 2, 1.0)]}, "unknown layer 'zz'"),
        ({"pairs": [("zz", 2, "a", 2, 1.0)]}, "unknown layer 'zz'"),
        ({"pairs": [("a", 2, "a", 4, 1.0)]}, "pairs a layer with itself"),
        ({"pairs": [("a", 2, "b", 3, 1.0)]}, r"uses bits outside \[2, 4\]"),
        ({"pairs": [("a", 2, "b", 2, math.nan)]}, "not finite"),
        ({"ties": [("a", "q")]}, r"^objective: tie \['a', 'q'\] names unknown layers \['q'\]"),
        ({"ties": ["ab"]}, "tie 'ab' is a single name, not a group"),
        ({"bits": [2, 17]}, "within 1..16"),
        ({"bits": [0, 4]}, "within 1..16"),
    ],
)
def test_objective_validation_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        objective(**kw)


@pytest.mark.parametrize("bits", [[4, 4], [4, 2]])
def test_objective_bits_must_be_distinct_and_ascending(bits):
    # Bug fixed: repeated bits were accepted and value() silently read the wrong column.
    with pytest.raises(ConfigError, match="distinct and ascending"):
        objective(bits=bits)


def test_objective_validate_names_its_source():
    obj = objective()
    object.__setattr__(obj, "unary", np.zeros((3, 2)))
    with pytest.raises(ConfigError, match=r"^method 'x': unary has shape"):
        obj.validate(source="method 'x'")


def test_pairs_are_stored_in_canonical_order_and_summed():
    obj = objective(pairs=[("b", 2, "a", 4, 1.0), ("a", 4, "b", 2, 0.5), ("a", 2, "b", 2, -0.25)])
    assert dict(obj.pairs) == {("a", 4, "b", 2): 1.5, ("a", 2, "b", 2): -0.25}
    # a mapping is canonicalized too
    obj = Objective(layers=["x", "y"], bits=[2, 4], unary=np.zeros((2, 2)), pairs={("y", 4, "x", 2): 2.0})
    assert dict(obj.pairs) == {("x", 2, "y", 4): 2.0}


@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.sampled_from([2, 4]),
            st.sampled_from("abc"),
            st.sampled_from([2, 4]),
            st.integers(-5, 5),
        ),
        max_size=8,
    )
)
@settings(max_examples=200, deadline=None)
def test_objective_value_matches_a_hand_sum(raw_pairs):
    raw_pairs = [p for p in raw_pairs if p[0] != p[2]]
    unary = np.arange(6, dtype=float).reshape(3, 2)
    obj = Objective(layers=["a", "b", "c"], bits=[2, 4], unary=unary, pairs=raw_pairs)
    for key in obj.pairs:
        assert (key[0], key[1]) < (key[2], key[3])
    for alloc in ({"a": 2, "b": 2, "c": 2}, {"a": 4, "b": 2, "c": 4}, {"a": 2, "b": 4, "c": 4}):
        expected = sum(unary["abc".index(n), [2, 4].index(b)] for n, b in alloc.items())
        expected += sum(v for a, ba, c, bc, v in raw_pairs if alloc[a] == ba and alloc[c] == bc)
        assert obj.value(alloc) == pytest.approx(expected)
        assert obj.without_pairs().value(alloc) == pytest.approx(
            sum(unary["abc".index(n), [2, 4].index(b)] for n, b in alloc.items())
        )


def test_objective_from_dict_and_as_dict():
    obj = Objective.from_dict({"a": {"4": 1.0, "2": 3.0}, "b": {2: 5.0, 4: 2.0}}, pairs=[("a", 2, "b", 4, 0.5)])
    assert obj.bits == (2, 4)
    np.testing.assert_array_equal(obj.unary, [[3.0, 1.0], [5.0, 2.0]])
    assert obj.as_dict() == {"a": {2: 3.0, 4: 1.0}, "b": {2: 5.0, 4: 2.0}}
    assert obj.has_pairs and not obj.without_pairs().has_pairs
    with pytest.raises(ConfigError, match=r"layer 'b' lists bits \[2\], expected \[2, 4\]"):
        Objective.from_dict({"a": {2: 1.0, 4: 0.0}, "b": {2: 1.0}})
    with pytest.raises(ConfigError, match="no layers"):
        Objective.from_dict({})


# ---------------------------------------------------------------------------
# LayerInfo, ModelSpec, Allocation
# ---------------------------------------------------------------------------


def test_layer_info_errors():
    with pytest.raises(ConfigError, match="layer 'fc': params must be positive, got 0"):
        LayerInfo("fc", "Linear", params=0)
    with pytest.raises(ConfigError, match="layer 'fc': macs must be >= 0, got -3"):
        LayerInfo("fc", "Linear", params=4, macs=-3)
    with pytest.raises(TypeError):
        LayerInfo(3, "Linear", params=4)
    layer = LayerInfo("fc", "Linear", params="12", macs=5.0, weight_shape=[3, 4], aliases=["head"])
    assert (layer.params, layer.macs, layer.weight_shape, layer.aliases) == (12, 5, (3, 4), ("head",))


def test_model_spec():
    spec = ModelSpec([LayerInfo("conv1", "Conv2d", 10, 100), LayerInfo("fc", "Linear", 5, 7)])
    assert spec.fqns == ("conv1", "fc") and len(spec) == 2
    assert (spec.total_params, spec.total_macs) == (15, 107)
    assert spec.layer("fc").params == 5
    with pytest.raises(ConfigError, match="no quantizable layer named 'conv2'; did you mean 'conv1'"):
        spec.layer("conv2")
    with pytest.raises(ConfigError, match=r"duplicate layer names \['fc'\]"):
        ModelSpec([LayerInfo("fc", "Linear", 1), LayerInfo("fc", "Linear", 2)])


def test_allocation_average_bits_and_to_dict():
    alloc = Allocation(bits={"a": 2, "b": 8}, objective=1.5, costs={"size": 34})
    assert alloc.average_bits({"a": 3, "b": 1, "unused": 100}) == pytest.approx((3 * 2 + 8) / 4)
    d = alloc.to_dict()
    assert d["allocation"] == {"a": 2, "b": 8} and d["objective"] == 1.5 and d["costs"] == {"size": 34.0}
    assert (d["status"], d["gap"], d["bound"]) == ("optimal", 0.0, None)


def test_allocation_to_dict_is_strict_json_for_an_unknown_gap():
    import json

    alloc = Allocation(bits={"a": 2}, objective=1.0, status="time_limit", gap=math.inf, bound=-math.inf)
    data = json.loads(json.dumps(alloc.to_dict(), allow_nan=False))
    assert data["gap"] is None and data["bound"] is None


# ---------------------------------------------------------------------------
# Immutable all the way down
# ---------------------------------------------------------------------------


def _problem():
    from mpqcore import Problem

    obj = objective(pairs=[("a", 2, "b", 4, 0.5)], info={"spreads": [1, 2], "nested": {"k": [3]}})
    return Problem(objective=obj, costs={"size": [[2.0, 4.0], [20.0, 40.0]]}, budgets={"size": 30}, pins={"a": 4})


def _mutations():
    """(what, mutation) for every container a value class holds."""
    p = _problem()
    alloc = Allocation(bits={"a": 2}, objective=1.0, costs={"size": 2.0}, info={"x": [1]})
    layer = LayerInfo("fc", "Linear", params=4, weight_shape=[2, 2], aliases=["head"])
    spec = ModelSpec([layer])
    return [
        ("problem.budgets", lambda: p.budgets.__setitem__("size", -1)),
        ("problem.budgets.update", lambda: p.budgets.update(size=-1)),
        ("problem.budgets del", lambda: p.budgets.__delitem__("size")),
        ("problem.costs", lambda: p.costs.__setitem__("bops", np.zeros((2, 2)))),
        ("problem.costs table", lambda: p.costs["size"].__setitem__((0, 0), 9.0)),
        ("problem.pins", lambda: p.pins.__setitem__("b", 2)),
        ("problem.pins.pop", lambda: p.pins.pop("a")),
        ("objective.pairs", lambda: p.objective.pairs.__setitem__(("a", 2, "b", 2), 1.0)),
        ("objective.pairs.clear", lambda: p.objective.pairs.clear()),
        ("objective.info", lambda: p.objective.info.__setitem__("x", 1)),
        ("objective.info nested", lambda: p.objective.info["nested"].__setitem__("k", 1)),
        ("objective.info list", lambda: p.objective.info["spreads"].append(3)),
        ("objective.unary", lambda: p.objective.unary.__setitem__((0, 0), 1.0)),
        ("allocation.bits", lambda: alloc.bits.__setitem__("a", 8)),
        ("allocation.bits.setdefault", lambda: alloc.bits.setdefault("b", 8)),
        ("allocation.costs", lambda: alloc.costs.__setitem__("size", 0.0)),
        ("allocation.info", lambda: alloc.info.__setitem__("y", 1)),
        ("layer.weight_shape", lambda: layer.weight_shape.__setitem__(0, 3)),
        ("spec.layers", lambda: spec.layers.append(layer)),
    ]


@pytest.mark.parametrize("what, mutate", _mutations(), ids=[m[0] for m in _mutations()])
def test_value_containers_refuse_mutation(what, mutate):
    # Bug fixed: the "frozen" values held plain dicts; problem.budgets["size"] = -1 went
    # in unchecked and solve then died with a raw KeyError. numpy refuses with ValueError.
    with pytest.raises((TypeError, ValueError, AttributeError)):
        mutate()


def test_frozen_fields_refuse_assignment():
    import attrs

    p = _problem()
    for value, field in [
        (p, "budgets"),
        (p.objective, "pairs"),
        (Budget.average_bits(4), "value"),
        (LayerInfo("fc", "Linear", 4), "params"),
        (Allocation({"a": 2}, 1.0), "bits"),
    ]:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(value, field, None)


def test_a_problem_mutated_through_its_mapping_cannot_reach_a_solver():
    p = _problem()
    with pytest.raises(TypeError):
        p.budgets["bops"] = 1.0  # would name no cost table
    assert dict(p.budgets) == {"size": 30.0}


def test_frozen_values_still_evolve_compare_pickle_copy_and_serialize():
    import copy
    import json
    import pickle

    import attrs

    from mpqcore.report import jsonable

    p = _problem()
    q = attrs.evolve(p, budgets={**p.budgets, "size": 40})
    assert q.budgets == {"size": 40.0} and p.budgets == {"size": 30.0}
    with pytest.raises(ConfigError, match="budget 'bops' names no cost table"):
        attrs.evolve(p, budgets={"bops": 1})  # evolve validates again
    assert p.with_budgets({"size": 10}).budgets["size"] == 10.0
    assert p.objective.info == {"spreads": (1, 2), "nested": {"k": (3,)}}
    for clone in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p), copy.copy(p)):
        assert clone.budgets == p.budgets and clone.pins == p.pins and clone.objective.pairs == p.objective.pairs
        np.testing.assert_array_equal(clone.costs["size"], p.costs["size"])
        with pytest.raises(TypeError):
            clone.budgets["size"] = 1
    alloc = Allocation(bits={"a": 2, "b": 4}, objective=1.0, info={"x": [1, 2]})
    assert pickle.loads(pickle.dumps(alloc)) == alloc and hash(alloc) == hash(copy.deepcopy(alloc))
    assert json.loads(json.dumps(alloc.bits)) == {"a": 2, "b": 4}
    assert jsonable(p.objective.info) == {"spreads": [1, 2], "nested": {"k": [3]}}
    assert jsonable(alloc.info) == {"x": [1, 2]}
    mutable = dict(p.budgets)  # a plain copy is the way to edit
    mutable["size"] = 1.0
    assert p.budgets["size"] == 30.0


def test_report_mappings_are_read_only():
    from mpqcore.report import Report

    p = _problem()
    alloc = Allocation(bits={"a": 4, "b": 2}, objective=1.0)
    report = Report(
        allocation=alloc,
        spec=ModelSpec([LayerInfo("a", "Linear", 1), LayerInfo("b", "Linear", 10)]),
        problem=p,
        budgets=(),
        method="m",
        method_options={"samples": 2},
        solver="highs",
        quantizer="q",
        cost="size",
        results={"loss": 1.0, "uniform_costs": {"size": 3.0}},
        objective_info={"x": [1]},
        forward_passes=1,
        evaluations=1,
        timings={"solve": 0.1},
        seed=0,
        versions={"python": "3"},
    )
    for mapping in (
        report.results,
        report.results["uniform_costs"],
        report.method_options,
        report.objective_info,
        report.timings,
        report.versions,
    ):
        with pytest.raises(TypeError):
            mapping["new"] = 1
    data = report.to_json()
    assert data["results"]["uniform_costs"] == {"size": 3.0} and data["method"]["info"] == {"x": [1]}


# ---------------------------------------------------------------------------
# One rule for budget -> limit
# ---------------------------------------------------------------------------


def _measurement(bits=(2, 4, 8)):
    """A Measurement built by hand (no model): the search path's own with_budgets."""
    from mpqcore.costs import BitOperations, WeightSize, cost_table
    from mpqcore.search import Measurement
    from mpqcore.types import Problem

    spec = ModelSpec([LayerInfo("conv", "Conv2d", 864, macs=10_000), LayerInfo("fc", "Linear", 650, macs=650)])
    models = {"size": WeightSize(), "bops": BitOperations()}
    tables = {name: cost_table(m, spec, bits, name=name) for name, m in models.items()}
    obj = Objective(layers=spec.fqns, bits=bits, unary=np.zeros((2, len(bits))))
    problem = Problem(objective=obj, costs=tables)
    meas = Measurement(
        problem=problem,
        spec=spec,
        objective=obj,
        evaluator=None,
        budgets=(),
        pins={},
        method="m",
        method_options={},
        quantizer="q",
        quantizer_options={},
        cost="size",
        seed=0,
        timings={},
        cost_models=models,
    )
    return meas, models, spec


@pytest.mark.parametrize(
    "budget",
    [
        Budget.average_bits(3.5),
        Budget.size_bytes(1000),
        Budget.absolute("size", 7000),
        Budget.absolute("bops", 1e6),
        Budget.relative("size", 0.5),
        Budget.relative("bops", 0.3, reference_bits=4),
        Budget.relative("bops", 0.3, reference_bits=16),  # not tabulated: the cost model's total
    ],
    ids=lambda b: b.describe(),
)
def test_the_search_path_and_budget_resolve_give_the_same_limit(budget):
    # Bug fixed: Budget.resolve and search._limit were two rules; they disagreed on a
    # relative budget whose reference bits are not tabulated (one raised, one did not).
    meas, models, spec = _measurement()
    params = [layer.params for layer in spec.layers]
    model = models[budget.cost]
    expected = budget.resolve(
        meas.problem.costs[budget.cost],
        meas.problem.bits,
        params,
        cost_at=lambda b: sum(model.cost(layer, b) for layer in spec.layers),
    )
    assert meas.with_budgets([budget]).budgets[budget.cost] == pytest.approx(expected, rel=1e-12)
    by_hand = {
        "absolute": budget.value,
        "average_bits": budget.value * spec.total_params,
        "relative": budget.value * sum(model.cost(layer, budget.reference_bits) for layer in spec.layers),
    }[budget.kind]
    assert expected == pytest.approx(by_hand, rel=1e-12)


def test_relative_budget_off_the_table_needs_the_cost_model():
    meas, _, _ = _measurement(bits=(2, 4))
    table = meas.problem.costs["size"]
    with pytest.raises(ConfigError, match="not among the tabulated bits"):
        Budget.relative("size", 0.5).resolve(table, (2, 4))
    assert meas.with_budgets([Budget.relative("size", 0.5)]).budgets["size"] == pytest.approx(0.5 * 8 * (864 + 650))


def test_two_budgets_on_one_cost_keep_the_tighter_limit():
    meas, _, spec = _measurement()
    p = meas.with_budgets([Budget.average_bits(4), Budget.size_bytes(100)])
    assert p.budgets == {"size": pytest.approx(min(4 * spec.total_params, 800))}
