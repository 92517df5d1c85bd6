"""Exact reuse of shared forward-pass prefixes between CLADO's evaluations.

In forward (execution) order, nothing a module computed before layer ``j`` was first
called can depend on ``j``'s weights. So when an evaluation differs from an earlier
one only in layer ``j`` (a pair ``{(i,b),(j,b')}`` after the single ``{(i,b)}``, a
single ``{(j,b')}`` after the base), every module that finished before ``j`` started
returns exactly what it returned then, and can be replaced by that output. A pair
evaluation then only computes the network from its later layer on.

The replacement is done on the evaluator's working copy for the length of one
:meth:`~mpqcore.Evaluator.loss` call: the *outermost* modules that finished before
``j`` get an instance ``forward`` that returns a copy of the recorded output of the
current calibration batch. Everything else (the loss, the counters, the weight
swapping) is the evaluator's own ``loss``, so the values are the same floats.

A module can stand in for its computation only if it is called once per forward and
returns a tensor or a tuple/list of tensors; a model in which a decided layer is not
called exactly once disables the reuse. Outputs are recorded as copies at the time the
module returns, because parents may modify them in place later (``ReLU(inplace=True)``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

from mpqcore.evaluate import Evaluator

__all__ = ["ForwardTrace", "trace_forward", "SharedPrefix", "Recorded"]

#: Recorded outputs: module name -> one output per calibration batch.
Recorded = dict[str, list[Any]]


def _is_tensors(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return type(value)(v.detach().clone() for v in value)


@attrs.frozen
class ForwardTrace:
    """When each submodule of a model was entered and left during one forward.

    ``enter``/``exit`` are positions in the sequence of hook events; ``calls`` counts
    calls; ``eligible`` are modules called once that return tensors.
    """

    enter: dict[str, int]
    exit: dict[str, int]
    calls: dict[str, int]
    eligible: frozenset[str]

    def finished_before(self, name: str) -> set[str]:
        """Eligible modules that returned before ``name`` was first entered."""
        start = self.enter[name]
        return {m for m in self.eligible if self.exit[m] < start}

    def outermost_before(self, name: str) -> list[str]:
        """The outermost modules finished before ``name``: those to replace."""
        done = self.finished_before(name)
        out = []
        for m in done:
            parts = m.split(".")
            if not any(".".join(parts[:k]) in done for k in range(1, len(parts))):
                out.append(m)
        return sorted(out, key=lambda m: self.enter[m])


def trace_forward(model: torch.nn.Module, run) -> ForwardTrace:
    """Trace the module calls of ``run()`` (one forward of ``model``)."""
    names = {id(m): n for n, m in model.named_modules() if n}
    clock = [0]
    enter: dict[str, int] = {}
    exit_: dict[str, int] = {}
    calls: dict[str, int] = {}
    tensors: dict[str, bool] = {}

    def pre(module, _inputs):
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        enter.setdefault(name, clock[0])
        clock[0] += 1

    def post(module, _inputs, output):
        name = names[id(module)]
        exit_[name] = clock[0]
        tensors[name] = tensors.get(name, True) and _is_tensors(output)
        clock[0] += 1

    handles = []
    try:
        for n, m in model.named_modules():
            if n:
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
        run()
    finally:
        for h in handles:
            h.remove()
    eligible = frozenset(n for n, c in calls.items() if c == 1 and tensors.get(n, False) and n in exit_)
    return ForwardTrace(enter=enter, exit=exit_, calls=calls, eligible=eligible)


class SharedPrefix:
    """Runs the evaluator's ``loss`` with the modules before a layer replaced by recordings.

    Build it once per measurement with the assignment every evaluation contains (the
    pinned layers); :attr:`enabled` is False when the model's call structure does not
    allow reuse, and then :meth:`run` is the plain ``evaluator.loss``.
    """

    def __init__(self, evaluator: Evaluator, layers: Sequence[str], base: Mapping[str, int]):
        self.evaluator = evaluator
        self.reason = ""
        self.trace: ForwardTrace | None = None
        self.skipped_macs = 0.0
        self.total_macs = 0.0
        self._stubs: dict[str, list[str]] = {}
        self._layer_macs: dict[str, float] = {}
        try:  # reuse is an optimization: anything unexpected falls back to plain evaluation
            self._prepare(layers, base)
        except Exception as exc:
            self.reason = f"cannot trace the model: {type(exc).__name__}: {exc}"
        self.enabled = not self.reason

    def _prepare(self, layers: Sequence[str], base: Mapping[str, int]) -> None:
        ev = self.evaluator
        self.model = ev.model
        self.n_batches = len(ev.calibration)
        self.total_layer_macs = float(ev.spec.total_macs)
        self._modules = dict(self.model.named_modules())
        self._name_of = {fqn: self._module_name(ev.modules[fqn]) for fqn in layers}
        if ev.user_loss is None:
            ev.float_outputs()  # computed before any replacement is installed
        self.trace = self._trace(base)
        uncalled = [f for f, n in self._name_of.items() if self.trace.calls.get(n, 0) != 1]
        if uncalled:
            self.reason = f"layers {uncalled[:3]} are not called exactly once per forward"
            return
        self._stubs = {f: self.trace.outermost_before(n) for f, n in self._name_of.items()}
        self._layer_macs = self._macs_before()

    def _module_name(self, module: torch.nn.Module) -> str:
        for n, m in self.model.named_modules():
            if m is module:
                return n
        raise LookupError("layer module not found in the evaluator's model")

    def _trace(self, base: Mapping[str, int]) -> ForwardTrace:
        ev = self.evaluator
        from mpqcore.batches import call_model

        with torch.no_grad(), ev.applied(dict(base)) as model:
            trace = trace_forward(model, lambda: call_model(model, ev.calibration[0]))
        ev.forward_passes += 1  # an honest count: tracing is a forward pass
        return trace

    def _macs_before(self) -> dict[str, float]:
        """MACs of quantizable layers (all of the spec) that finish before each decided layer."""
        spec = self.evaluator.spec
        names = {layer.fqn: self._module_name(self.evaluator.modules[layer.fqn]) for layer in spec.layers}
        out = {}
        for fqn, name in self._name_of.items():
            start = self.trace.enter[name]
            out[fqn] = float(sum(
                layer.macs for layer in spec.layers if self.trace.exit.get(names[layer.fqn], start) < start
            ))
        return out

    # -- ordering -------------------------------------------------------------------

    def position(self, fqn: str) -> int:
        """When ``fqn`` first runs (for ordering a pair's earlier and later layer)."""
        return self.trace.enter[self._name_of[fqn]] if self.enabled else 0

    # -- running ---------------------------------------------------------------------

    def run(
        self,
        assignment: Mapping[str, int],
        *,
        resume_at: str | None = None,
        source: Recorded | None = None,
        keep_for: Sequence[str] = (),
    ) -> tuple[float, Recorded | None]:
        """``evaluator.loss(assignment)``, reusing ``source`` for what precedes ``resume_at``.

        ``source`` must come from a run whose assignment equals ``assignment`` on every
        layer that runs before ``resume_at``. With ``keep_for``, the outputs needed to
        resume later runs at those layers are recorded and returned.
        """
        ev = self.evaluator
        if not self.enabled:
            return ev.loss(assignment), None
        stubs = self._stubs[resume_at] if resume_at is not None and source is not None else []
        wanted = sorted({m for f in keep_for for m in self._stubs[f]})
        record = [m for m in wanted if m not in stubs]
        recorded: Recorded = {m: source[m] for m in wanted if m in stubs}
        calls: dict[str, int] = {}
        with self._replaced(stubs, source, calls), self._recording(record, recorded):
            value = ev.loss(assignment)
        ok = all(calls.get(m, 0) == self.n_batches for m in stubs) and all(
            len(recorded.get(m, ())) == self.n_batches for m in wanted
        )
        if not ok:  # the call structure changed between batches: redo plainly, stop reusing
            self.enabled = False
            self.reason = "the model's call structure differs between calibration batches"
            return ev.loss(assignment), None
        self.total_macs += self.total_layer_macs
        if stubs:
            self.skipped_macs += self._layer_macs[resume_at]
        return value, (recorded if keep_for else None)

    @contextlib.contextmanager
    def _replaced(self, names: Sequence[str], source: Recorded | None, calls: dict[str, int]) -> Iterator[None]:
        saved = {}
        try:
            for name in names:
                module = self._modules[name]
                saved[name] = module.__dict__.get("forward")
                module.forward = self._stub(name, source[name], calls)
            yield
        finally:
            for name, previous in saved.items():
                module = self._modules[name]
                if previous is None:
                    del module.forward
                else:
                    module.forward = previous

    def _stub(self, name: str, outputs: list[Any], calls: dict[str, int]):
        def forward(*_args, **_kwargs):
            k = calls.get(name, 0)
            calls[name] = k + 1
            return _copy(outputs[k % len(outputs)])

        return forward

    @contextlib.contextmanager
    def _recording(self, names: Sequence[str], into: Recorded) -> Iterator[None]:
        handles = []
        try:
            for name in names:
                into[name] = []
                handles.append(self._modules[name].register_forward_hook(self._recorder(into[name])))
            yield
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _recorder(store: list[Any]):
        def hook(_module, _inputs, output):
            store.append(_copy(output))

        return hook

    @property
    def skipped_fraction(self) -> float:
        """Share of the quantizable layers' MACs that reuse skipped."""
        return self.skipped_macs / self.total_macs if self.total_macs else 0.0
