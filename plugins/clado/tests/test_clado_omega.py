"""CLADO's Ω and objective on hand-built losses (no model): formula, factor 2, PSD, pairs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mpqcore
from mpqcore.context import MeasureContext
from mpqcore.types import LayerInfo, ModelSpec
from mpqcore_clado import (
    Clado,
    block_of,
    expected_evaluations,
    layer_pairs,
    objective_terms,
    omega_from_losses,
    omega_matrix,
    project_psd,
    quadratic_value,
)


class QuadraticLossEvaluator:
    """A stand-in evaluator whose loss is a known function of the assignment.

    ``L(S) = c + Σ u[l, b] + Σ_{l<m} v[(l, b, m, b')] + Σ_{l<m<n} w`` (the cubic part
    only when ``cubic`` is given): CLADO's second-order model is exact without it.
    """

    def __init__(self, layers, bits, unary, pair, const=0.0, cubic=None):
        self.layers, self.bits = list(layers), list(bits)
        self.unary, self.pair, self.const, self.cubic = unary, pair, const, cubic or {}
        self.evaluations = 0
        self.forward_passes = 0
        self.seen = []

    def loss(self, assignment=None):
        assignment = dict(assignment or {})
        self.evaluations += 1
        self.seen.append(assignment)
        chosen = sorted((self.layers.index(f), self.bits.index(b)) for f, b in assignment.items())
        total = self.const + sum(self.unary[li, j] for li, j in chosen)
        for (li, j), (m, k) in itertools.combinations(chosen, 2):
            total += self.pair.get((li, j, m, k), 0.0)
        for (li, j), (m, k), (n, i) in itertools.combinations(chosen, 3):
            total += self.cubic.get((li, j, m, k, n, i), 0.0)
        return total

    def losses(self, assignments, *, reuse_prefix=None):
        return [self.loss(a) for a in assignments]

    @property
    def prefix_reuse(self):
        return {"enabled": False, "reason": "a stand-in evaluator", "skipped_mac_fraction": 0.0}


def _context(evaluator, layers, bits, fixed=None):
    spec = ModelSpec([LayerInfo(f, "Linear", 10) for f in layers])
    return MeasureContext(evaluator=evaluator, spec=spec, layers=tuple(layers), bits=tuple(bits), fixed=fixed or {})


def _allocations(layers, bits):
    for choice in itertools.product(bits, repeat=len(layers)):
        yield dict(zip(layers, choice, strict=False))


def test_omega_entries_by_hand():
    # Two layers a, b; bits (2, 4). L(∅) = 1, L(a2) = 3, L(a4) = 1.5, L(b2) = 2, L(b4) = 1.25,
    # L(a2, b2) = 7  ->  Ω[a2,b2] = ½ (7 - 3 - 2 + 1) = 1.5.
    singles = np.array([[3.0, 1.5], [2.0, 1.25]])
    pairs = {(0, 0, 1, 0): 7.0, (0, 0, 1, 1): 3.25, (0, 1, 1, 0): 2.5, (0, 1, 1, 1): 1.75}
    omega = omega_from_losses(1.0, singles, pairs)
    np.testing.assert_allclose(np.diag(omega), [2.0, 0.5, 1.0, 0.25])
    assert omega[0, 2] == omega[2, 0] == 1.5
    assert omega[0, 3] == omega[3, 0] == 0.5 * (3.25 - 3 - 1.25 + 1)  # 0
    assert omega[1, 2] == 0.5 * (2.5 - 1.5 - 2 + 1)  # 0
    assert omega[1, 3] == 0.5 * (1.75 - 1.5 - 1.25 + 1)  # 0
    assert omega[0, 1] == omega[2, 3] == 0.0  # two bit-widths of one layer
    unary, terms = objective_terms(omega, ["a", "b"], [2, 4])
    np.testing.assert_allclose(unary, [[2.0, 0.5], [1.0, 0.25]])
    assert terms == {("a", 2, "b", 2): 3.0}  # 2 Ω_ij: αᵀΩα counts it twice; zero terms left out
    # a2, b2 -> predicted L - L(∅) = 2 + 1 + 3 = 6 = 7 - 1
    assert quadratic_value(omega, {"a": 2, "b": 2}, ["a", "b"], [2, 4]) == pytest.approx(6.0)


def test_method_on_a_known_quadratic_loss():
    layers, bits = ["x", "y", "z"], [2, 8]
    unary = np.array([[0.5, 0.01], [0.9, 0.02], [0.3, 0.0]])
    pair = {(0, 0, 1, 0): 0.4, (0, 0, 2, 0): -0.1, (1, 0, 2, 1): 0.05}
    ev = QuadraticLossEvaluator(layers, bits, unary, pair, const=0.25)
    obj = Clado(reuse_prefix=False).measure(_context(ev, layers, bits))
    np.testing.assert_allclose(obj.unary, unary, atol=1e-12)
    assert {k: v for k, v in obj.pairs.items() if abs(v) > 1e-12} == pytest.approx(
        {("x", 2, "y", 2): 0.4, ("x", 2, "z", 2): -0.1, ("y", 2, "z", 8): 0.05}
    )
    for alloc in _allocations(layers, bits):  # the second-order model is exact here
        assert obj.value(alloc) == pytest.approx(ev.loss(alloc) - 0.25, abs=1e-12)
    assert obj.info["evaluations_used"] == obj.info["evaluations_formula"] == 3 * 2 + 3 * 4 + 1


def test_pinned_layers_stay_quantized_while_measuring():
    layers, bits = ["x", "y"], [2, 8]
    ev = QuadraticLossEvaluator(["x", "y", "p"], bits, np.ones((3, 2)), {}, const=0.0)
    Clado(reuse_prefix=False).measure(_context(ev, layers, bits, fixed={"p": 8}))
    assert all(a.get("p") == 8 for a in ev.seen)
    assert {} not in ev.seen


@settings(max_examples=40, deadline=None)
@given(
    n_layers=st.integers(1, 4),
    n_bits=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
    symmetrize=st.booleans(),
    psd=st.booleans(),
)
def test_objective_value_equals_alpha_omega_alpha(n_layers, n_bits, seed, symmetrize, psd):
    """objective.value(alloc) == αᵀΩα for every allocation (the factor-2 identity)."""
    rng = np.random.default_rng(seed)
    layers = [f"l{i}" for i in range(n_layers)]
    bits = sorted(rng.choice([2, 3, 4, 6, 8], size=n_bits, replace=False).tolist())
    singles = rng.normal(size=(n_layers, n_bits))
    base = float(rng.normal())
    pair_losses = {
        (li, j, m, k): float(rng.normal())
        for li, m in itertools.combinations(range(n_layers), 2)
        for j in range(n_bits)
        for k in range(n_bits)
    }
    omega = omega_from_losses(base, singles, pair_losses, symmetric=symmetrize)
    if psd:
        omega, _ = project_psd(omega)
    unary, pairs = objective_terms(omega, layers, bits)
    obj = mpqcore.Objective(layers=layers, bits=bits, unary=unary, pairs=pairs)
    for alloc in _allocations(layers, bits):
        assert obj.value(alloc) == pytest.approx(quadratic_value(omega, alloc, layers, bits), rel=1e-9, abs=1e-9)
        # and without PSD the prediction is L(∅)-relative loss with each pair read once
        if not psd:
            chosen = [(layers.index(f), bits.index(b)) for f, b in alloc.items()]
            expected = sum(singles[li, j] - base for li, j in chosen)
            for (li, j), (m, k) in itertools.combinations(sorted(chosen), 2):
                expected += pair_losses[(li, j, m, k)] - singles[li, j] - singles[m, k] + base
            assert obj.value(alloc) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # omega_matrix gives back the symmetric Ω of the objective
    sym = 0.5 * (omega + omega.T)
    mask = np.kron(1 - np.eye(n_layers), np.ones((n_bits, n_bits))) + np.eye(n_layers * n_bits)
    np.testing.assert_allclose(omega_matrix(obj), sym * mask, atol=1e-12)


def test_symmetrize_false_gives_the_same_objective():
    rng = np.random.default_rng(3)
    singles = rng.normal(size=(3, 2))
    pair_losses = {
        (li, j, m, k): float(rng.normal()) for li, m in [(0, 1), (0, 2), (1, 2)] for j in range(2) for k in range(2)
    }
    a = omega_from_losses(0.1, singles, pair_losses, symmetric=True)
    b = omega_from_losses(0.1, singles, pair_losses, symmetric=False)
    assert np.allclose(a, a.T) and np.allclose(np.tril(b, -1), 0)
    ua, pa = objective_terms(a, ["a", "b", "c"], [4, 8])
    ub, pb = objective_terms(b, ["a", "b", "c"], [4, 8])
    np.testing.assert_array_equal(ua, ub)
    assert pa == pytest.approx(pb)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_psd_projection_is_psd_and_nearest(n, seed):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, n))
    projected, info = project_psd(m)
    np.testing.assert_allclose(projected, projected.T, atol=1e-12)
    assert np.linalg.eigvalsh(projected).min() >= -1e-9 * max(1.0, np.abs(m).max())
    sym = 0.5 * (m + m.T)
    assert info["negative_eigenvalues"] == int((np.linalg.eigvalsh(sym) < 0).sum())
    # a PSD matrix is its own projection
    psd = m @ m.T
    np.testing.assert_allclose(project_psd(psd)[0], psd, atol=1e-9 * max(1.0, np.abs(psd).max()))
    # nearer to sym than another PSD matrix
    assert np.linalg.norm(projected - sym) <= np.linalg.norm(psd - sym) + 1e-9


def test_psd_option_gives_a_psd_matrix_and_consistent_objective():
    layers, bits = ["x", "y", "z"], [2, 4]
    rng = np.random.default_rng(0)
    unary = np.abs(rng.normal(size=(3, 2)))
    pair = {
        (li, j, m, k): float(rng.normal()) for li, m in [(0, 1), (0, 2), (1, 2)] for j in range(2) for k in range(2)
    }
    ev = QuadraticLossEvaluator(layers, bits, unary, pair)
    obj = Clado(psd=True, reuse_prefix=False).measure(_context(ev, layers, bits))
    assert obj.info["psd"]["negative_eigenvalues"] > 0
    full = omega_matrix(obj)
    # The one-hot problem ignores entries between two bit-widths of one layer; what the
    # objective keeps is that of a PSD matrix, which is non-negative on every allocation.
    assert all(obj.value(a) >= -1e-12 for a in _allocations(layers, bits))
    assert np.allclose(full, full.T)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
@pytest.mark.parametrize("k", [1, 2, 3, 20])
def test_window_pairs_and_evaluation_count(n, k):
    pairs = layer_pairs([f"l{i}" for i in range(n)], "window", k)
    expected = sum(min(k, n - 1 - i) for i in range(n))
    assert len(pairs) == expected
    assert all(0 < m - li <= k for li, m in pairs)
    assert len(layer_pairs([f"l{i}" for i in range(n)], "all")) == math.comb(n, 2)
    assert expected_evaluations(n, 3, expected) == n * 3 + expected * 9 + 1


def test_window_measures_fewer_evaluations():
    layers, bits = [f"l{i}" for i in range(5)], [2, 4, 8]
    for window, n_pairs in [(1, 4), (2, 7), (4, 10)]:
        ev = QuadraticLossEvaluator(layers, bits, np.zeros((5, 3)), {})
        obj = Clado(pairs="window", window=window, reuse_prefix=False).measure(_context(ev, layers, bits))
        assert obj.info["layer_pairs"] == n_pairs
        assert ev.evaluations == obj.info["evaluations_used"] == 5 * 3 + n_pairs * 9 + 1
        assert obj.info["evaluations_all_pairs"] == 5 * 3 + 10 * 9 + 1


def test_blocks_by_fqn():
    assert block_of("conv1") == block_of("fc") == ""
    assert block_of("layer1.0.conv1") == block_of("layer1.0.downsample.0") == "layer1.0"
    assert block_of("layer1.1.conv1") == "layer1.1"
    assert block_of("encoder.layer.3.attention.self.query") == "encoder.layer.3"
    assert block_of("features.0") == ""  # a Sequential's own layer: no parent block
    names = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "fc"]
    assert layer_pairs(names, "block") == [(0, 4), (1, 2)]


@pytest.mark.parametrize(
    "options, option",
    [
        ({"pairs": "some"}, "pairs"),
        ({"window": 0}, "window"),
        ({"window": 1.5}, "window"),
        ({"batch_size": 0}, "batch_size"),
        ({"psd": "maybe"}, "psd"),
        ({"symmetrize": 2}, "symmetrize"),
        ({"reuse_prefix": None}, "reuse_prefix"),
    ],
)
def test_bad_options_raise_config_error(options, option):
    with pytest.raises(mpqcore.ConfigError, match=rf"method 'clado' \(plugin .*\): {option} must be .*, got"):
        mpqcore.get_plugins().methods.create("clado", **options)


def test_command_line_booleans_are_accepted():
    assert mpqcore.get_plugins().methods.create("clado", psd="yes", symmetrize=0, reuse_prefix="off") == Clado(
        psd=True, symmetrize=False, reuse_prefix=False
    )
