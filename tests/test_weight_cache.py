"""The evaluator's weight cache: one-byte codes, a byte bound, dequantized tensors dropped first."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mpqcore
from mpqcore.quantizers import MinMaxPerTensor, MSEPerChannel
from mpqcore.testing import digits_task
from mpqcore.weight_cache import WeightCache, compact_codes


def test_compact_codes_are_one_byte_and_dequantize_to_the_same_floats():
    torch.manual_seed(0)
    w = torch.randn(16, 24)
    for quantizer in (MSEPerChannel(), MinMaxPerTensor()):
        for bits in (2, 3, 4, 8):
            q = quantizer.quantize(w, bits)
            small = compact_codes(q)
            assert small.codes.dtype == torch.uint8
            assert torch.equal(small.dequantize(), q.dequantize())


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["codes", "dequantized"]), st.integers(0, 5), st.integers(1, 40)),
        min_size=1,
        max_size=40,
    ),
    bound=st.one_of(st.none(), st.integers(0, 200)),
)
def test_the_bound_holds_and_dequantized_tensors_go_first(ops, bound):
    cache = WeightCache(bound)
    for kind, layer, size in ops:
        before = set(cache._entries)
        key = (kind, str(layer), size)
        value = cache.get(key, lambda size=size: torch.zeros(size, dtype=torch.uint8))
        assert value.numel() == size  # the value asked for, cached or computed
        entries = list(cache._entries.items())
        assert cache.held == sum(n for _, (_, n) in entries)
        if bound is not None:
            assert cache.held <= bound or len(entries) == 1
        dropped = before - set(cache._entries)
        if any(k[0] == "codes" for k in dropped):  # codes go only when no older dequantized tensor is left
            assert not any(k[0] == "dequantized" and k != key for k in cache._entries)
    if bound is None:
        assert len(cache._entries) == len({(k, str(layer), s) for k, layer, s in ops})


def test_codes_survive_while_dequantized_tensors_can_be_dropped():
    cache = WeightCache(10)
    cache.get(("codes", "a", 2), lambda: torch.zeros(4, dtype=torch.uint8))
    cache.get(("dequantized", "a", 2), lambda: torch.zeros(4, dtype=torch.uint8))
    cache.get(("codes", "b", 2), lambda: torch.zeros(4, dtype=torch.uint8))  # 12 > 10: the dequantized goes
    assert list(cache._entries) == [("codes", "a", 2), ("codes", "b", 2)]
    cache.get(("codes", "c", 2), lambda: torch.zeros(4, dtype=torch.uint8))  # codes alone over: the oldest
    assert list(cache._entries) == [("codes", "b", 2), ("codes", "c", 2)]


def test_an_unbounded_evaluator_holds_a_quarter_less_than_int32_codes_would():
    torch.set_num_threads(1)
    task = digits_task()
    ev = mpqcore.Evaluator(task.model, task.calibration, None, MSEPerChannel())
    for f in ev.spec.fqns:
        for b in (2, 4, 8):
            ev.fake_quantized(f, b)
    weights = sum(ev.weight(f).numel() for f in ev.spec.fqns)
    # per width: the float32 dequantized copy (4 bytes) and one byte of code per weight, plus scales
    assert ev.weight_cache["held"] < 3 * weights * (4 + 1) * 1.05
    assert all(q.codes.dtype == torch.uint8 for q in ev._weights.values("codes"))
