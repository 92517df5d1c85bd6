"""Exact reuse of forward-pass prefixes between the evaluator's loss evaluations.

In execution order, nothing a module computed before layer ``d`` was first called can
depend on ``d``'s weights. So when two evaluations quantize the same layers to the same
bits up to ``d`` and differ from ``d`` on, every module that finished before ``d``
started returns exactly the same in both; the second evaluation can take those outputs
from the first and compute the network from ``d`` on. A single-layer sweep (every layer
at every bit-width) then costs about half its forward passes, a pair sweep (CLADO) far
less, and the losses are the same floats.

:class:`PrefixReuse` does it for :meth:`mpqcore.Evaluator.losses`: it orders the
assignments so that neighbours share long prefixes, lets each run record the outputs
the next one needs, and makes the *outermost* modules that finished before the next
run's divergence layer return copies of those outputs (an instance ``forward`` for the
length of one :meth:`~mpqcore.Evaluator.loss` call; everything else is the evaluator's
own ``loss``).

The evaluator owns the model and its counters: it hands :class:`PrefixReuse` the model,
its layers, a function that runs one counted forward pass and its ``loss``, and this
module imports nothing of the evaluator's.

A module can stand in for its computation only when it is called once per forward and
returns a tensor or a tuple/list of tensors. A model in which a quantizable layer is not
called exactly once, or whose call structure changes between batches, turns reuse off
(:attr:`PrefixReuse.reason` says why) and every evaluation runs in full.

Outputs are recorded and replayed as they are, without copies, as long as nothing
modifies them in place: every recorded tensor keeps the version counter it had when its
module returned, and a run that finds one changed afterwards (a parent's
``ReLU(inplace=True)``, an ``x += ...``) still has the right value, since a fresh copy
would have been modified the same way, but passes no recording on (the next run starts
from scratch) and that module's outputs are copied from then on.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

__all__ = ["ForwardTrace", "PrefixReuse", "trace_forward"]

Assignment = Mapping[str, int]


def _is_tensors(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value)


def _tensors(value: Any) -> tuple[torch.Tensor, ...]:
    return (value,) if isinstance(value, torch.Tensor) else tuple(value)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return type(value)(v.detach().clone() for v in value)


def _same(value: Any) -> Any:
    """``value`` itself, in a new container when it is one (a parent may append to a list)."""
    return value if isinstance(value, torch.Tensor) else type(value)(value)


@attrs.frozen(eq=False)
class Output:
    """One recorded module output and the version counters its tensors had when recorded."""

    value: Any
    versions: tuple[int, ...]

    @classmethod
    def of(cls, value: Any) -> Output:
        return cls(value, tuple(t._version for t in _tensors(value)))

    @property
    def intact(self) -> bool:
        """Nothing modified it in place since it was recorded."""
        return tuple(t._version for t in _tensors(self.value)) == self.versions


#: Recorded outputs: module name -> one output per calibration batch.
Recorded = dict[str, list[Output]]


@attrs.frozen
class ForwardTrace:
    """When each submodule was entered and left during one forward.

    ``enter``/``exit`` are positions in the sequence of hook events; ``calls`` counts
    calls; ``eligible`` are the modules called once that return tensors.
    """

    enter: dict[str, int]
    exit: dict[str, int]
    calls: dict[str, int]
    eligible: frozenset[str]

    def outermost_before(self, name: str) -> list[str]:
        """The outermost eligible modules that returned before ``name`` was entered."""
        start = self.enter[name]
        done = {m for m in self.eligible if self.exit[m] < start}
        out = [m for m in done if not any(".".join(m.split(".")[:k]) in done for k in range(1, m.count(".") + 1))]
        return sorted(out, key=lambda m: self.enter[m])


def trace_forward(model: torch.nn.Module, run: Callable[[], Any]) -> ForwardTrace:
    """Trace the submodule calls of ``run()`` (one forward of ``model``)."""
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


class PrefixReuse:
    """Runs ``loss`` with the modules before a layer replaced by recordings.

    Built lazily by the evaluator on the first :meth:`~mpqcore.Evaluator.losses` call
    that reuses prefixes, from what it owns:

    - ``model``: the working model that ``loss`` runs;
    - ``layers``: the quantizable layers, ``{fqn: module}`` (modules of ``model``);
    - ``macs``: each layer's MACs per example, for :attr:`skipped_fraction`;
    - ``batches``: how many calibration batches one ``loss`` call runs;
    - ``trace_pass``: runs ``model`` once on a calibration batch (the evaluator counts
      it as a forward pass), traced to learn the call structure;
    - ``loss``: the evaluator's loss of one assignment.

    :attr:`enabled` is False (and :attr:`reason` says why) when the model's call
    structure does not allow reuse.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Mapping[str, torch.nn.Module],
        macs: Mapping[str, float],
        batches: int,
        trace_pass: Callable[[], Any],
        loss: Callable[[Assignment], float],
    ):
        self.reason = ""
        #: Modules whose outputs were found modified in place: recorded and replayed as copies.
        self.copied: set[str] = set()
        self.skipped_macs = 0.0
        self.total_macs = 0.0
        self._loss = loss
        self._batches = batches
        self._total_macs = float(sum(macs.values()))
        try:  # reuse is an optimization: anything unexpected falls back to full evaluation
            self._prepare(model, layers, macs, trace_pass)
        except Exception as exc:
            self.reason = f"cannot trace the model: {type(exc).__name__}: {exc}"
        self.enabled = not self.reason

    def _prepare(
        self,
        model: torch.nn.Module,
        layers: Mapping[str, torch.nn.Module],
        macs: Mapping[str, float],
        trace_pass: Callable[[], Any],
    ) -> None:
        self._modules = dict(model.named_modules())
        by_id = {id(m): n for n, m in self._modules.items()}
        self._name_of = {fqn: by_id[id(m)] for fqn, m in layers.items()}
        with torch.no_grad():
            self.trace = trace_forward(model, trace_pass)
        uncalled = [f for f, n in self._name_of.items() if self.trace.calls.get(n, 0) != 1]
        if uncalled:
            self.reason = f"layers {uncalled[:3]} are not called exactly once per forward"
            return
        self._stubs = {f: self.trace.outermost_before(n) for f, n in self._name_of.items()}
        position = self.position
        self._macs_before = {
            f: float(sum(m for g, m in macs.items() if self.trace.exit[self._name_of[g]] < position(f)))
            for f in self._name_of
        }

    def position(self, fqn: str) -> int:
        """When layer ``fqn`` is first entered in a forward."""
        return self.trace.enter[self._name_of[fqn]]

    # -- planning ----------------------------------------------------------------------

    def _key(self, assignment: Assignment) -> tuple:
        return tuple(sorted((self.position(f), b) for f, b in assignment.items()))

    def divergence(self, a: Assignment, b: Assignment) -> str | None:
        """The earliest-running layer on which ``a`` and ``b`` differ (None: identical)."""
        differ = [f for f in set(a) | set(b) if a.get(f) != b.get(f)]
        return min(differ, key=self.position) if differ else None

    # -- running ---------------------------------------------------------------------

    def order(self, assignments: Sequence[Assignment]) -> list[int]:
        """The run order in which neighbours share the longest prefixes (indices into ``assignments``)."""
        return sorted(range(len(assignments)), key=lambda i: self._key(assignments[i]))

    def costs(self, assignments: Sequence[Assignment]) -> list[float]:
        """Each run's expected share of a full forward pass when ``assignments`` run in this order:
        one minus the share of quantizable MACs finished before it diverges from the previous one
        (1 for the first, and for all when reuse is off). Work split between workers by these
        shares keeps contiguous runs together, so each worker still reuses its prefixes."""
        if not self.enabled or not self._total_macs:
            return [1.0] * len(assignments)
        out = [1.0]
        for prev, current in itertools.pairwise(assignments):
            d = self.divergence(prev, current)
            out.append(0.0 if d is None else 1.0 - self._macs_before[d] / self._total_macs)
        return out[: len(assignments)]

    def losses(
        self, assignments: Sequence[Assignment], on_value: Callable[[int, float], None] | None = None
    ) -> list[float]:
        """``[loss(a) for a in assignments]``, reusing shared prefixes; ``on_value(i, value)`` is
        called as soon as each is known (the measurement cache stores it then, so an interrupted
        batch keeps what it computed)."""
        order = self.order(assignments)
        values: list[float] = [0.0] * len(assignments)
        source: Recorded | None = None
        resume: str | None = None
        for n, i in enumerate(order):
            current = assignments[i]
            nxt = assignments[order[n + 1]] if n + 1 < len(order) else None
            keep = self.divergence(current, nxt) if nxt is not None else None
            if not self.enabled:
                values[i] = self._loss(current)
            else:
                values[i], recorded = self._run(current, resume, source, keep)
                if self.enabled:  # else the structure changed mid-way: this value was redone in full
                    source, resume = recorded, (keep if recorded is not None else None)
            if on_value is not None:
                on_value(i, values[i])
        return values

    def _run(
        self, assignment: Assignment, resume: str | None, source: Recorded | None, keep: str | None
    ) -> tuple[float, Recorded | None]:
        stubs = self._stubs[resume] if resume is not None and source is not None else []
        wanted = self._stubs[keep] if keep is not None else []
        if any(m not in stubs and any(m.startswith(f"{s}.") for s in stubs) for m in wanted):
            wanted = []  # inside a module this run replays: not computed, so not recordable
        record = [m for m in wanted if m not in stubs]
        recorded: Recorded = {m: source[m] for m in wanted if m in stubs} if source is not None else {}
        calls: dict[str, int] = {}
        n_batches = self._batches
        with self._replaced(stubs, source or {}, calls), self._recording(record, recorded):
            value = self._loss(assignment)
        ok = all(calls.get(m, 0) == n_batches for m in stubs) and all(
            len(recorded.get(m, ())) == n_batches for m in wanted
        )
        if not ok:  # the call structure differs between batches: redo in full, stop reusing
            self.enabled = False
            self.reason = "the model's call structure differs between calibration batches"
            return self._loss(assignment), None
        self.total_macs += self._total_macs
        if stubs and resume is not None:
            self.skipped_macs += self._macs_before[resume]
        used = {m: source[m] for m in stubs} if source is not None else {}
        changed = {m for m, outs in (used | recorded).items() if not all(o.intact for o in outs)}
        if changed:  # the value is right (a copy would have changed alike); the recordings are not
            self.copied |= changed
            return value, None
        return value, (recorded if wanted else None)

    @contextlib.contextmanager
    def _replaced(self, names: Sequence[str], source: Recorded, calls: dict[str, int]) -> Iterator[None]:
        saved = {}
        try:
            for name in names:
                module = self._modules[name]
                saved[name] = module.__dict__.get("forward")
                module.forward = self._stub(name, source[name], calls, name in self.copied)
            yield
        finally:
            for name, previous in saved.items():
                module = self._modules[name]
                if previous is None:
                    del module.forward
                else:
                    module.forward = previous

    @staticmethod
    def _stub(name: str, outputs: list[Output], calls: dict[str, int], copy: bool):
        give = _copy if copy else _same

        def forward(*_args, **_kwargs):
            k = calls.get(name, 0)
            calls[name] = k + 1
            return give(outputs[k % len(outputs)].value)

        return forward

    @contextlib.contextmanager
    def _recording(self, names: Sequence[str], into: Recorded) -> Iterator[None]:
        handles = []
        try:
            for name in names:
                store: list[Output] = []
                into[name] = store
                keep = _copy if name in self.copied else _same
                handles.append(
                    self._modules[name].register_forward_hook(
                        lambda _m, _i, out, store=store, keep=keep: store.append(Output.of(keep(out)))
                    )
                )
            yield
        finally:
            for h in handles:
                h.remove()

    @property
    def skipped_fraction(self) -> float:
        """Share of the quantizable layers' MACs that reuse skipped so far."""
        return self.skipped_macs / self.total_macs if self.total_macs else 0.0
