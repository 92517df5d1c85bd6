"""The measurement cache on disk: resume after an interruption, reuse across searches, refuse what is not its own."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import attrs
import numpy as np
import pytest
import torch

import mpqcore
from mpqcore import Budget, ConfigError, MethodError, Objective
from mpqcore.measurement_cache import MeasurementCache, callable_identity, code_digest, digest, model_digest
from mpqcore.plugins import ENV_DISABLE_AUTOLOAD
from mpqcore.quantizers import MinMaxPerTensor
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)
BITS = (2, 4, 8)


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return digits_task()


@attrs.frozen
class SingleLayerLoss:
    """A method that measures each layer alone at each width (one loss evaluation each),
    and, given ``fail_after``, raises after that many evaluations (an interrupted run)."""

    fail_after: int | None = None

    def measure(self, ctx):
        table = np.zeros((len(ctx.layers), len(ctx.bits)))
        done = 0
        for i, fqn in enumerate(ctx.layers):
            for j, b in enumerate(ctx.bits):
                if self.fail_after is not None and done == self.fail_after:
                    raise RuntimeError("interrupted")
                table[i, j] = ctx.evaluator.loss(ctx.with_fixed({fqn: b}))
                done += 1
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=table)


def _measure(task, cache, method=None, **kw):
    return mpqcore.measure(
        task.model,
        task.calibration,
        method=method or SingleLayerLoss(),
        bits=BITS,
        cache=cache,
        plugins=BUILTINS,
        **kw,
    )


def test_an_interrupted_measurement_resumes_with_only_the_missing_evaluations(task, tmp_path):
    cold = _measure(task, None)
    total = cold.evaluator.evaluations
    with pytest.raises(MethodError, match="interrupted"):
        _measure(task, tmp_path, method=SingleLayerLoss(fail_after=5))
    resumed = _measure(task, tmp_path)
    assert resumed.evaluator.evaluations == total - 5
    assert resumed.evaluator.cache_hits == 5
    # bit for bit the objective of a run without a cache
    assert np.array_equal(resumed.objective.unary, cold.objective.unary)
    assert not resumed.objective_from_cache


def test_a_second_search_with_another_budget_or_solver_measures_nothing(task, tmp_path):
    first = mpqcore.search(
        task.model, task.calibration, method=SingleLayerLoss(), bits=BITS, budget=Budget.average_bits(4),
        cache=tmp_path, plugins=BUILTINS, guard=False,  # measured on every batch, as measure() does
    )  # fmt: skip
    assert first.cache["stored"] > 0 and not first.cache["objective_from_cache"]
    again = _measure(task, tmp_path)
    assert again.objective_from_cache and again.evaluator.evaluations == 0
    second = mpqcore.search(
        task.model, task.calibration, method=SingleLayerLoss(), bits=BITS, budget=Budget.average_bits(3),
        solver="dp", cache=tmp_path, plugins=BUILTINS, guard=False,
    )  # fmt: skip
    assert second.cache["objective_from_cache"]
    assert second.measure_forward_passes == 0
    assert second.cache["hits"] >= 1


def test_the_key_follows_what_the_numbers_depend_on(task, tmp_path):
    base = _measure(task, tmp_path)
    other_quantizer = _measure(task, tmp_path, quantizer="symmetric-per-channel")
    assert other_quantizer.evaluator.cache_hits == 0  # another quantizer: nothing reused
    assert other_quantizer.evaluator.evaluations == base.evaluator.evaluations
    other_act = _measure(task, tmp_path, act_bits=8)
    assert other_act.evaluator.cache_hits == 0


def test_a_builtin_method_objective_is_reused(task, tmp_path):
    cold = _measure(task, tmp_path, method="hawq", method_options={"samples": 2})
    warm = _measure(task, tmp_path, method="hawq", method_options={"samples": 2})
    assert warm.objective_from_cache and warm.measure_forward_passes == 0
    assert np.array_equal(warm.objective.unary, cold.objective.unary)
    other = _measure(task, tmp_path, method="hawq", method_options={"samples": 3})
    assert not other.objective_from_cache


def test_a_directory_of_another_model_is_refused_before_any_work(task, tmp_path):
    _measure(task, tmp_path)
    other = copy.deepcopy(task.model)  # the task is shared by the module: never change it
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ConfigError, match="holds measurements of another model"):
        mpqcore.measure(other, task.calibration, method=SingleLayerLoss(), bits=BITS, cache=tmp_path, plugins=BUILTINS)


@pytest.mark.parametrize("kind", ["file", "under-a-file", "bad-type"])
def test_a_cache_that_cannot_be_used_is_a_clear_error(task, tmp_path, kind):
    target = tmp_path / "f"
    target.write_text("x")
    cache = {"file": target, "under-a-file": target / "sub", "bad-type": 3.5}[kind]
    calls = []

    @attrs.frozen
    class Counting:
        def measure(self, ctx):
            calls.append(1)
            return SingleLayerLoss().measure(ctx)

    with pytest.raises(ConfigError, match="cache"):
        _measure(task, cache, method=Counting())
    assert not calls


def test_callable_identity_sees_code_and_closed_over_values():
    def make(scale):
        return lambda x: x * scale

    assert callable_identity(make(2)) == callable_identity(make(2))
    assert callable_identity(make(2)) != callable_identity(make(3))
    t = torch.arange(4.0)
    assert digest(t) != digest(t + 1)
    assert digest({"a": t}) == digest({"a": t.clone()})


def _script_loss(**scope):
    """A loss defined the way a notebook or script defines it: reading module globals."""
    namespace = {"torch": torch, **scope}
    exec(
        textwrap.dedent(
            """
            def loss(output, reference):
                return torch.mean(((output - reference) / T) ** 2) * helper(WEIGHTS)

            def helper(weights):
                return float(sum(weights)) if len(weights) < 2 else helper(weights[:1])
            """
        ),
        namespace,
    )
    return namespace["loss"]


def test_callable_identity_sees_the_module_globals_a_loss_reads():
    # a notebook user changes T and reruns: the cache must not hand back the old loss's numbers
    base = callable_identity(_script_loss(T=2.0, WEIGHTS=[1.0]))
    assert callable_identity(_script_loss(T=2.0, WEIGHTS=[1.0])) == base
    assert callable_identity(_script_loss(T=3.0, WEIGHTS=[1.0])) != base
    assert callable_identity(_script_loss(T=2.0, WEIGHTS=[1.0, 2.0])) != base
    ones = callable_identity(_script_loss(T=2.0, WEIGHTS=np.ones(1)))  # an array by its content
    assert ones == callable_identity(_script_loss(T=2.0, WEIGHTS=np.ones(1)))
    assert ones != callable_identity(_script_loss(T=2.0, WEIGHTS=np.zeros(1)))
    # a global the code does not read changes nothing; the recursive helper is named, not followed forever
    assert callable_identity(_script_loss(T=2.0, WEIGHTS=[1.0], UNUSED=5)) == base


_STABLE_LOSS = textwrap.dedent(
    """
    import sys
    from mpqcore.measurement_cache import callable_identity

    def loss(output, reference):
        # a comprehension, a lambda and a set literal: constants whose repr holds an address
        # (nested code objects) or a hash-seeded order (a frozenset)
        parts = [(o - r).abs().mean() for o, r in zip(output, reference)]
        pick = lambda xs: max(xs, key=float)
        return pick(parts) if type(output).__name__ in {"tuple", "list", "Tensor"} else 0.0

    print(callable_identity(loss))
    """
)


def test_callable_identity_is_the_same_in_every_process(tmp_path):
    # The cache is shared across runs and processes: a user loss with a comprehension got
    # another key in each process (its nested code object's repr holds an address).
    script = tmp_path / "loss.py"
    script.write_text(_STABLE_LOSS)
    seen = {
        subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2)
    }
    assert len(seen) == 1, seen


_EDITED_PLUGIN = """
import attrs
import numpy as np
from mpqcore import Objective
from mpqcore.quantizers import MinMaxPerTensor

SHRINK = {shrink}


@attrs.frozen
class Shrunk(MinMaxPerTensor):
    name = "shrunk"

    def quantize(self, weight, bits):
        return super().quantize(weight * SHRINK, bits)


@attrs.frozen
class Scaled:
    def measure(self, ctx):
        table = np.array([[SHRINK * b for b in ctx.bits] for _ in ctx.layers])
        return Objective(layers=ctx.layers, bits=ctx.bits, unary=table)
"""


def _edited_plugin(tmp_path, monkeypatch, shrink):
    """A plugin package whose code, not its options, changes what it computes."""
    package = tmp_path / "src" / "edited_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("from edited_plugin.impl import Scaled, Shrunk\n")
    (package / "impl.py").write_text(_EDITED_PLUGIN.format(shrink=shrink))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    for name in [m for m in sys.modules if m.partition(".")[0] == "edited_plugin"]:
        del sys.modules[name]
    import edited_plugin

    return edited_plugin


def test_an_edited_plugin_is_not_answered_from_its_old_cached_numbers(task, tmp_path, monkeypatch):
    # Same type, same options, other code: an upgraded (or edited) quantizer or method must
    # be measured again, not handed the numbers its old version computed.
    cache = tmp_path / "cache"
    old = _edited_plugin(tmp_path, monkeypatch, 1.0)
    first = _measure(task, cache, quantizer=old.Shrunk())
    assert _measure(task, cache, method=old.Scaled()).objective.unary[0][0] == 2.0
    assert _measure(task, cache, quantizer=old.Shrunk()).objective_from_cache  # the key is stable
    new = _edited_plugin(tmp_path, monkeypatch, 0.5)
    second = _measure(task, cache, quantizer=new.Shrunk())
    assert not second.objective_from_cache and second.evaluator.cache_hits == 0
    assert not np.array_equal(second.objective.unary, first.objective.unary)
    fresh = _measure(task, None, quantizer=new.Shrunk())
    assert np.array_equal(second.objective.unary, fresh.objective.unary)
    objective = _measure(task, cache, method=new.Scaled())
    assert not objective.objective_from_cache and objective.objective.unary[0][0] == 1.0


def _notebook_class(factor):
    """A quantizer class defined the way a notebook defines it: no source file behind it."""
    namespace = {"MinMaxPerTensor": MinMaxPerTensor, "attrs": attrs}
    exec(
        textwrap.dedent(
            f"""
            @attrs.frozen
            class Cell(MinMaxPerTensor):
                def quantize(self, weight, bits):
                    return super().quantize(weight * {factor}, bits)
            """
        ),
        namespace,
    )
    return namespace["Cell"]


def test_code_digest_sees_the_methods_of_a_class_without_a_source_file():
    assert code_digest(_notebook_class(0.5)()) == code_digest(_notebook_class(0.5)())
    assert code_digest(_notebook_class(0.5)()) != code_digest(_notebook_class(0.25)())
    # a built-in's digest is mpqcore's code and version
    assert code_digest(MinMaxPerTensor()) != code_digest(_notebook_class(0.5)())


_WORKER = textwrap.dedent(
    """
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    import mpqcore
    from mpqcore.testing import digits_task
    sys.path.insert(0, sys.argv[2])
    from test_measurement_cache import SingleLayerLoss
    task = digits_task()
    m = mpqcore.measure(task.model, task.calibration, method=SingleLayerLoss(), bits=(2, 4, 8), cache=sys.argv[1],
                        plugins=mpqcore.PluginSet(autoload=False))
    np.save(sys.argv[3], m.objective.unary)
    """
)


def test_two_processes_share_a_cache_directory(task, tmp_path):
    cache = tmp_path / "shared"
    env = {**os.environ, ENV_DISABLE_AUTOLOAD: "1"}
    here = os.path.dirname(__file__)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(cache), here, str(tmp_path / f"u{i}.npy")], env=env)
        for i in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = (np.load(tmp_path / f"u{i}.npy") for i in range(2))
    assert np.array_equal(a, b)
    store = MeasurementCache(cache, model_key=model_digest(task.model), layers=[])
    n_layers = len(_measure(task, None).objective.layers)
    # every evaluation once (plus the objective), however the two processes interleaved
    assert len(store) == n_layers * len(BITS) + 1


def test_an_interrupted_batch_keeps_every_value_it_finished(task, tmp_path, monkeypatch):
    # CLADO sends all its pair evaluations in one Evaluator.losses call: a Ctrl-C in the middle
    # must not lose the finished ones (they were stored only when the whole batch returned).
    q = BUILTINS.quantizers.create("minmax-per-tensor")
    fqns = mpqcore.Evaluator(task.model, task.calibration, None, q).spec.fqns
    batch = [{f: b} for f in fqns for b in BITS] + [{f: 2, g: 4} for f in fqns for g in fqns if f < g]
    expected = mpqcore.Evaluator(task.model, task.calibration, None, q).losses(batch)
    calls = []
    real = mpqcore.Evaluator._loss_now

    def interrupted(self, assignment):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(assignment)
        return real(self, assignment)

    monkeypatch.setattr(mpqcore.Evaluator, "_loss_now", interrupted)
    first = mpqcore.Evaluator(task.model, task.calibration, None, q, cache=MeasurementCache(
        tmp_path, model_key=model_digest(task.model), layers=fqns))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        first.losses(batch)
    assert first.cache is not None and len(first.cache) == 7
    monkeypatch.setattr(mpqcore.Evaluator, "_loss_now", real)
    counted = []
    monkeypatch.setattr(mpqcore.Evaluator, "_loss_now", lambda self, a: counted.append(a) or real(self, a))
    again = mpqcore.Evaluator(task.model, task.calibration, None, q, cache=MeasurementCache(
        tmp_path, model_key=model_digest(task.model), layers=fqns))  # fmt: skip
    assert again.losses(batch) == expected  # bit for bit
    assert len(counted) == len(batch) - 7
    assert again.cache_hits == 7
