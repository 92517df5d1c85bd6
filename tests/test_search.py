"""The search pipeline end to end on the real digits-cnn task, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import mpqcore
from mpqcore import Budget, ConfigError, InfeasibleError, MethodError, Objective
from mpqcore.problem import allocation_violations, problem_from_dict, problem_to_dict
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(before, model):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} changed"


@pytest.fixture(scope="module")
def task():
    return digits_task()


@pytest.fixture(scope="module")
def hawq_reports(task):
    out = {}
    for avg in (3.0, 4.0):
        out[avg] = mpqcore.search(
            task.model,
            task.calibration,
            method="hawq",
            bits=(2, 3, 4, 5, 6, 8),
            budget=Budget.average_bits(avg),
            metric=task.metric,
            plugins=BUILTINS,
            method_options={"samples": 4},
        )
    return out


@pytest.mark.parametrize("avg", [3.0, 4.0])
def test_search_allocation_within_budget(hawq_reports, avg):
    report = hawq_reports[avg]
    assert report.average_bits <= avg + 1e-9
    assert allocation_violations(report.problem, report.allocation.bits) == []
    # the solver's proven optimum, unless the guard measured a uniform allocation better (not a solver's answer)
    kept = report.results["guard"]["kept"] or not report.results["guard"]["chosen"].startswith("uniform")
    assert report.allocation.status == ("optimal" if kept else "heuristic")
    assert set(report.allocation.bits.values()) <= {2, 3, 4, 5, 6, 8}


def test_reported_metrics_match_the_applied_models(task, hawq_reports):
    # The evaluator's numbers (weights swapped in a private copy) must equal what the
    # user gets from apply(): the same quantizer, the same model, the same metric.
    for report in hawq_reports.values():
        r = report.results
        assert task.metric(report.model) == pytest.approx(r["metric"], abs=1e-12)
        assert task.metric(mpqcore.apply(task.model, report.allocation)) == pytest.approx(r["metric"], abs=1e-12)
        uniform = dict.fromkeys(report.allocation.bits, r["uniform_bits"])
        assert task.metric(mpqcore.apply(task.model, uniform)) == pytest.approx(r["uniform_metric"], abs=1e-12)
    assert hawq_reports[3.0].results["uniform_bits"] == 3
    assert hawq_reports[4.0].results["uniform_bits"] == 4


def test_report_contents_and_files(hawq_reports, tmp_path):
    report = hawq_reports[3.0]
    data = report.to_json()
    json.dumps(data)  # serializable
    for key in (
        "allocation",
        "average_bits",
        "costs",
        "objective",
        "solver",
        "results",
        "forward_passes",
        "timings",
        "seed",
        "versions",
    ):
        assert key in data
    # the default bias_correction='auto' is the guard's trial, timed beside the guard
    assert set(data["timings"]) == {"introspect", "measure", "solve", "guard", "bias_correction", "apply", "evaluate"}
    assert data["results"]["float_metric"] >= 0.95
    assert data["forward_passes"] > 0
    paths = report.write(tmp_path)
    assert json.loads(paths["report"].read_text())["allocation"] == data["allocation"]
    assert paths["plot"].stat().st_size > 1000
    rows = paths["allocation"].read_text().strip().splitlines()
    assert len(rows) == 1 + len(report.spec.layers)
    # the problem file written with the report solves again to the same allocation
    problem = problem_from_dict(json.loads(paths["problem"].read_text()))
    again = mpqcore.solve(problem, "highs")
    solved = report.results["guard"]["candidates"][0]  # the solver's answer, before the guard chose
    assert again.objective == pytest.approx(solved["predicted"], rel=1e-9, abs=1e-12)


def test_search_problem_resolves_under_other_budgets(task):
    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        method_options={"samples": 4, "estimator": "hutchinson"},
        plugins=BUILTINS,
    )
    objectives = []
    for avg in (2.5, 4.0, 6.0):
        problem = meas.with_budgets([Budget.average_bits(avg)])
        alloc = mpqcore.solve(problem, "highs")
        assert alloc.average_bits({layer.fqn: layer.params for layer in meas.spec.layers}) <= avg + 1e-9
        objectives.append(alloc.objective)
    assert objectives == sorted(objectives, reverse=True)
    assert problem_to_dict(
        mpqcore.search_problem(task.model, task.calibration, method="uniform", bits=(2, 4, 8), plugins=BUILTINS)
    )["layers"]


def test_apply_limits_distinct_values(task, hawq_reports):
    report = hawq_reports[3.0]
    for quantizer in ("minmax-per-tensor", "symmetric-per-channel", "mse-per-channel"):
        qmodel = mpqcore.apply(task.model, report.allocation, quantizer=quantizer)
        modules = dict(qmodel.named_modules())
        for fqn, b in report.allocation.bits.items():
            w = modules[fqn].weight.detach()
            if quantizer == "minmax-per-tensor":
                assert w.unique().numel() <= 2**b
            else:
                for row in w.reshape(w.shape[0], -1):
                    assert row.unique().numel() <= 2**b


def test_user_model_unchanged_and_inplace(task):
    before = state(task.model)
    report = mpqcore.search(
        task.model, task.calibration, method="uniform", bits=(2, 4, 8), budget=Budget.average_bits(4), plugins=BUILTINS
    )
    assert_same(before, task.model)
    assert report.model is not task.model
    assert set(report.allocation.bits.values()) == {4}
    model = digits_task().model.__class__()
    model.load_state_dict(task.model.state_dict())
    model.eval()
    rep = mpqcore.search(
        model,
        task.calibration,
        method="uniform",
        bits=(2, 4, 8),
        budget=Budget.average_bits(4),
        inplace=True,
        plugins=BUILTINS,
    )
    assert rep.model is model
    assert max(channel.unique().numel() for channel in model.conv2.weight) <= 16  # 4 bits per channel
    assert not torch.equal(model.conv2.weight, task.model.conv2.weight)


def test_pins_and_ties_are_honoured(task):
    report = mpqcore.search(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        budget=Budget.average_bits(3.0),
        pins={"conv1": 8, "fc2": 8},
        ties=[["conv2", "conv3"]],
        method_options={"samples": 4},
        plugins=BUILTINS,
    )
    bits = report.allocation.bits
    assert bits["conv1"] == 8 and bits["fc2"] == 8
    assert bits["conv2"] == bits["conv3"]
    assert report.average_bits <= 3.0 + 1e-9


def test_several_budgets_at_once(task):
    spec = mpqcore.introspect(task.model, task.calibration[0])
    bops8 = sum(layer.macs * 8 * 8 for layer in spec.layers)
    report = mpqcore.search(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        budget=[Budget.average_bits(5.0), Budget.relative("bops", 0.4)],
        method_options={"samples": 4},
        plugins=BUILTINS,
    )
    assert report.average_bits <= 5.0 + 1e-9
    assert report.allocation.costs["bops"] <= 0.4 * bops8 * (1 + 1e-9)


# ---------------------------------------------------------------------------
# Bad input: a clear error, and the user's model untouched
# ---------------------------------------------------------------------------


def _bad(task, match, **kw):
    before = state(task.model)
    args = {"method": "uniform", "bits": (2, 4, 8), "budget": Budget.average_bits(4), "plugins": BUILTINS}
    args.update(kw)
    with pytest.raises(mpqcore.MpqError, match=match):
        mpqcore.search(task.model, task.calibration, **args)
    assert_same(before, task.model)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"method": "hawk"}, r"unknown method 'hawk'; did you mean 'hawq'\?; valid methods: hawq, uniform"),
        ({"quantizer": "minmax"}, r"unknown quantizer 'minmax'.*valid quantizers: minmax-per-tensor"),
        ({"cost": "latencies"}, r"unknown cost model 'latencies'.*did you mean 'latency'"),
        ({"solver": "hihgs"}, r"unknown solver 'hihgs'.*did you mean 'highs'"),
        ({"bits": ()}, r"bits is empty"),
        ({"bits": (0, 4)}, r"outside the valid range; bit-widths are integers 1\.\.16"),
        ({"bits": (4, 17)}, r"outside the valid range; bit-widths are integers 1\.\.16"),
        ({"budget": Budget.average_bits(1.0)}, r"cheapest achievable"),
        ({"pins": {"conv9": 8}}, r"matches no quantizable layer"),
        ({"pins": {"conv1": 6}}, r"not a candidate bit-width"),
        ({"budget": 4.0}, r"must be a mpqcore\.Budget"),
        ({"pins": {"conv*": 8, "conv2": 4}}, r"layer 'conv2' is pinned to 8 by 'conv\*' and to 4 by 'conv2'"),
    ],
)
def test_bad_input_errors(task, kw, match):
    _bad(task, match, **kw)


def test_budget_below_cheapest_names_the_cheapest(task):
    spec = mpqcore.introspect(task.model)
    with pytest.raises(InfeasibleError) as info:
        mpqcore.search(
            task.model,
            task.calibration,
            method="uniform",
            bits=(2, 4, 8),
            budget=Budget.average_bits(1.5),
            plugins=BUILTINS,
        )
    # sizes count what is stored: codes plus the default quantizer's scales and zero points
    layout = mpqcore.layout_of(BUILTINS.quantizers.create(mpqcore.DEFAULT_QUANTIZER))
    metadata = sum(layout.metadata_bits(layer.weight_shape, layer.axis) for layer in spec.layers)
    assert metadata > 0
    assert info.value.cheapest["size"] == pytest.approx(2 * spec.total_params + metadata)
    # average bits count the codes: the metadata is added to the limit
    assert info.value.budgets["size"] == pytest.approx(1.5 * spec.total_params + metadata)


def test_model_without_quantizable_layer():
    model = nn.Sequential(nn.ReLU(), nn.Flatten())
    with pytest.raises(ConfigError, match=r"no quantizable layer.*Conv1d, Conv2d, Linear"):
        mpqcore.search(model, [torch.randn(2, 4)], method="uniform", plugins=BUILTINS)


def test_calibration_failure_names_the_batch(task):
    batches = [*list(task.calibration[:2]), torch.randn(4, 3, 8, 8)]
    before = state(task.model)
    with pytest.raises(ConfigError, match="calibration batch 2"):
        mpqcore.search(task.model, batches, method="hawq", bits=(2, 4, 8), plugins=BUILTINS)
    assert_same(before, task.model)


class _BadMethods:
    """A plugin whose methods misbehave in the ways the core must catch."""

    __name__ = "bad-methods-plugin"

    @mpqcore.hookimpl
    def mpq_register_methods(self, registry):
        registry.add("nan", lambda: _Returns(lambda ctx: np.full((len(ctx.layers), len(ctx.bits)), np.nan)))
        registry.add(
            "short", lambda: _Returns(lambda ctx: np.zeros((len(ctx.layers) - 1, len(ctx.bits))), layers_cut=1)
        )
        registry.add("raises", lambda: _Returns(lambda ctx: 1 / 0))
        registry.add("not-objective", lambda: _Raw())


class _Returns:
    def __init__(self, make, layers_cut=0):
        self.make, self.cut = make, layers_cut

    def measure(self, ctx):
        values = self.make(ctx)
        layers = ctx.layers[: len(ctx.layers) - self.cut]
        return Objective(layers=layers, bits=ctx.bits, unary=values)


class _Raw:
    def measure(self, ctx):
        return {"conv1": {2: 1.0}}


@pytest.mark.parametrize(
    "method, match",
    [
        ("nan", r"method 'nan' \(plugin 'bad-methods-plugin'\).*non-finite values"),
        ("short", r"method 'short' \(plugin 'bad-methods-plugin'\).*wrong layers: missing"),
        ("raises", r"method 'raises' \(plugin 'bad-methods-plugin'\) raised ZeroDivisionError"),
        ("not-objective", r"method 'not-objective' \(plugin 'bad-methods-plugin'\) returned dict"),
    ],
)
def test_malformed_method_output_names_the_plugin(task, method, match):
    plugins = mpqcore.PluginSet(autoload=False, plugins=[_BadMethods()])
    before = state(task.model)
    with pytest.raises(MethodError, match=match) as info:
        mpqcore.search(task.model, task.calibration, method=method, bits=(2, 4, 8), plugins=plugins)
    assert info.value.plugin == "bad-methods-plugin"
    assert_same(before, task.model)


def test_sweep_is_monotone(task):
    _meas, points = mpqcore.sweep(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        budgets=[Budget.average_bits(b) for b in (2.5, 3.5, 5.0, 7.0)],
        metric=task.metric,
        plugins=BUILTINS,
        method_options={"samples": 4},
        guard=False,  # the solver's answers: the guard may return a uniform one instead (test_guard.py)
    )
    predicted = [p.results["predicted"] for p in points]
    assert predicted == sorted(predicted, reverse=True)
    assert all(p.allocation.status == "optimal" for p in points)


def test_without_a_budget_the_uniform_reference_is_the_allocations_size(task):
    report = mpqcore.search(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        budget=None,
        metric=task.metric,
        method_options={"samples": 16},
        plugins=BUILTINS,
    )
    assert report.budgets == ()
    assert set(report.allocation.bits.values()) == {8}  # nothing to trade: the least loss
    assert report.results["uniform_bits"] == 8
    assert report.measure_forward_passes > 0
    data = report.to_json()
    assert data["measure_forward_passes"] == report.measure_forward_passes < data["forward_passes"]


def test_a_data_free_method_makes_no_forward_pass_of_its_own(task):
    report = mpqcore.search(
        task.model, task.calibration, method="uniform", bits=(2, 4, 8), budget=Budget.average_bits(4), plugins=BUILTINS,
        guard=False,  # all the batches measure: the guard would hold some out, and what it runs there varies
    )  # fmt: skip
    assert report.measure_forward_passes == 0
    assert report.forward_passes >= len(task.calibration)  # the core's reference pass and the evaluation


def test_hawq_never_prefers_fewer_bits(task):
    # With 4 probes conv1's Hutchinson estimate comes out negative (cross-layer noise);
    # the true trace of the Gauss-Newton Hessian is >= 0, so it is clamped and reported.
    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        method_options={"samples": 4, "estimator": "hutchinson"},
        plugins=BUILTINS,
    )
    info = meas.objective.info
    assert info["clamped_negative_traces"], "expected a negative raw estimate at 4 samples on digits-cnn"
    assert all(t >= 0 for t in info["hessian_trace"].values())
    unary = np.asarray(meas.objective.unary)
    assert np.all(np.diff(unary, axis=1) <= 0)  # more bits never cost more sensitivity


def test_hawq_estimators_agree_and_gauss_newton_is_never_negative(task):
    # Two unbiased estimators of the same per-layer traces: they must agree within their
    # standard errors; the Gauss-Newton draws are squared norms, so never below zero.
    traces = {}
    for estimator in ("gauss-newton", "hutchinson"):
        meas = mpqcore.measure(
            task.model,
            task.calibration,
            method="hawq",
            bits=(2, 8),
            plugins=BUILTINS,
            method_options={"samples": 48, "estimator": estimator},
        )
        info = meas.objective.info
        assert info["estimator"] == estimator
        traces[estimator] = {f: (t, t * info["trace_relative_stderr"][f]) for f, t in info["hessian_trace"].items()}
    assert (
        mpqcore.measure(
            task.model, task.calibration, method="hawq", bits=(2, 8), plugins=BUILTINS, method_options={"samples": 2}
        ).objective.info["clamped_negative_traces"]
        == {}
    )
    for f, (gn, gn_se) in traces["gauss-newton"].items():
        hu, hu_se = traces["hutchinson"][f]
        assert abs(gn - hu) <= 4 * (gn_se**2 + hu_se**2) ** 0.5, (f, gn, gn_se, hu, hu_se)


def test_hawq_gauss_newton_refuses_a_user_loss(task):
    loss = lambda out, batch: out.pow(2).mean()  # noqa: E731
    with pytest.raises(MethodError, match="estimator 'gauss-newton' needs the default loss"):
        mpqcore.measure(
            task.model,
            task.calibration,
            method="hawq",
            bits=(2, 8),
            loss=loss,
            plugins=BUILTINS,
            method_options={"estimator": "gauss-newton", "samples": 2},
        )
    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 8),
        loss=loss,
        plugins=BUILTINS,
        method_options={"samples": 2},
    )
    assert meas.objective.info["estimator"] == "hutchinson"


# -- one API: names or instances, keyword-only options, a measurement reused ----------


def test_the_old_positional_form_still_works_with_a_deprecation_warning(task):
    with pytest.warns(DeprecationWarning, match="by position is deprecated"):
        old = mpqcore.search(
            task.model, task.calibration, "uniform", (2, 4, 8), Budget.average_bits(4), plugins=BUILTINS
        )
    new = mpqcore.search(
        task.model, task.calibration, method="uniform", bits=(2, 4, 8), budget=Budget.average_bits(4), plugins=BUILTINS
    )
    assert dict(old.allocation.bits) == dict(new.allocation.bits)
    with pytest.raises(ConfigError, match="both by position and by keyword"):
        mpqcore.search(task.model, task.calibration, "uniform", (2, 4, 8), bits=(2, 8), plugins=BUILTINS)
    with pytest.raises(ConfigError, match="at most 11 more"):
        mpqcore.search(task.model, task.calibration, *range(12), plugins=BUILTINS)


def test_instances_work_where_names_do(task):
    from mpqcore.methods import HessianTrace
    from mpqcore.quantizers import SymmetricPerChannel

    by_name = mpqcore.search(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        method_options={"samples": 2},
        quantizer="symmetric-per-channel",
        plugins=BUILTINS,
    )
    solver = BUILTINS.solvers.create("dp")
    by_instance = mpqcore.search(
        task.model,
        task.calibration,
        method=HessianTrace(samples=2),
        bits=(2, 4, 8),
        quantizer=SymmetricPerChannel(),
        solver=solver,
        plugins=BUILTINS,
    )
    assert by_instance.method == "hawq" and by_instance.quantizer == "symmetric-per-channel"
    assert dict(by_instance.allocation.bits) == dict(by_name.allocation.bits)
    assert by_instance.results["metric" if "metric" in by_name.results else "loss"] == pytest.approx(
        by_name.results["metric" if "metric" in by_name.results else "loss"], abs=1e-12
    )
    with pytest.raises(mpqcore.PluginError, match="lacks measure"):
        mpqcore.search(task.model, task.calibration, method=object(), plugins=BUILTINS)
    with pytest.raises(ConfigError, match="configure the instance itself"):
        mpqcore.measure(
            task.model, task.calibration, method=HessianTrace(), method_options={"samples": 3}, plugins=BUILTINS
        )


def test_a_cost_model_instance_by_name(task):
    class PerLayer:
        """Every layer costs 1 whatever its bits: a layer-count budget."""

        unit = "layers"

        def cost(self, layer, bits):
            return float(bits)

    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="uniform",
        bits=(2, 4, 8),
        cost="per-layer",
        cost_models={"per-layer": PerLayer()},
        plugins=BUILTINS,
    )
    assert meas.problem.costs["per-layer"][0].tolist() == [2.0, 4.0, 8.0]


def test_search_reuses_a_measurement_without_measuring_again(task):
    before = state(task.model)
    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        method_options={"samples": 2},
        metric=task.metric,
        plugins=BUILTINS,
    )
    passes = meas.evaluator.forward_passes
    fresh = mpqcore.search(
        task.model,
        task.calibration,
        method="hawq",
        bits=(2, 4, 8),
        method_options={"samples": 2},
        metric=task.metric,
        budget=Budget.average_bits(3),
        plugins=BUILTINS,
        guard=False,  # measured on all batches, like meas (the guard would hold some out)
    )
    again = [
        mpqcore.search(
            task.model, measurement=meas, budget=Budget.average_bits(avg), solver=solver, plugins=BUILTINS, guard=False
        )
        for avg, solver in ((3, "highs"), (3, "dp"), (5, "highs"))
    ]
    assert again[0].timings["measure"] == 0.0
    assert dict(again[0].allocation.bits) == dict(fresh.allocation.bits) == dict(again[1].allocation.bits)
    assert again[0].results["metric"] == pytest.approx(fresh.results["metric"], abs=1e-12)
    assert again[2].average_bits > again[0].average_bits
    # after measuring, each search only evaluates: the same passes for each of them
    steps = np.diff([passes] + [r.forward_passes for r in again])
    assert len(set(steps.tolist())) == 1 and steps[0] < passes
    assert_same(before, task.model)
    with pytest.raises(ConfigError, match=r"bits=\(2, 8\) \(measured with \(2, 4, 8\)\)"):
        mpqcore.search(task.model, measurement=meas, bits=(2, 8), plugins=BUILTINS)


def test_search_on_a_measurement_alone_and_with_its_own_metric(task):
    meas = mpqcore.measure(
        task.model, task.calibration, method="uniform", bits=(2, 4, 8), metric=task.metric, plugins=BUILTINS
    )
    alone = mpqcore.search(measurement=meas, budget=Budget.average_bits(4), plugins=BUILTINS)
    same = mpqcore.search(
        task.model, measurement=meas, metric=task.metric, budget=Budget.average_bits(4), plugins=BUILTINS
    )
    assert alone.results["metric"] == same.results["metric"]
    with pytest.raises(ConfigError, match=r"metric=.*the measurement has"):
        mpqcore.search(measurement=meas, metric=lambda m: 0.0, plugins=BUILTINS)
    with pytest.raises(ConfigError, match="inplace=True needs the model"):
        mpqcore.search(measurement=meas, inplace=True, plugins=BUILTINS)
