"""The span engine (kernels/span.py) against its NumPy twin, and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, case_id
from fastscape.kernels import span as kspan
from numpy.testing import assert_allclose, assert_array_equal
from span_helpers import assert_same_bits_on_one_and_two_threads, span_problem

from fastscape import config
from fastscape import reference as ref
from fastscape.landscape import evaluate


@pytest.mark.parametrize("K", [1, 2, 3, 4])
@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_evaluate_matches_seed_loop_twin(case, K):
    model, basis, C, data = span_problem(case, K, seed=K)
    got = evaluate(model, basis, C, data)
    want_loss, want_acc = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert_allclose(got.loss, want_loss, rtol=1e-10)
    if model.is_classifier:
        assert_array_equal(got.accuracy, want_acc)
    else:
        assert got.accuracy is None


def test_blocks_cover_all_samples():
    """More samples than one block: every block contributes (n not a multiple of block)."""
    case = ([5, 4, 3], "tanh", "softmax_ce")
    model, basis, C, data = span_problem(case, 3, n=157)
    loss, acc = kspan.span_eval(basis, C, *model.spec.kernel_args, data.X, data.Y, 16, 3)
    want_loss, want_acc = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert_allclose(loss, want_loss, rtol=1e-10)
    assert_array_equal(acc, want_acc)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[7]], ids=case_id)
def test_zero_coefficients_are_skipped_exactly(case):
    """A point using 2 of K rows gives the same bits as the K = 2 problem of those rows."""
    model, basis, C, data = span_problem(case, 4, m=6)
    C[:, [1, 3]] = 0.0
    full = evaluate(model, basis, C, data)
    small = evaluate(model, basis[[0, 2]], C[:, [0, 2]], data)
    assert_array_equal(full.loss, small.loss)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[1], MODEL_CASES[7]], ids=case_id)
def test_thread_count_invariance(case):
    model, basis, C, data = span_problem(case, 3, m=40, n=300)
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 64, 2)
    assert_same_bits_on_one_and_two_threads(args)


@pytest.mark.parametrize("case", [MODEL_CASES[2], MODEL_CASES[5]], ids=case_id)
def test_cache_tiling_changes_no_bits(case):
    """sub_block tiles the float64 paths without hidden layer (several outputs) and with one;
    the general path's tiles are tested in test_span_deep.py."""
    model, basis, C, data = span_problem(case, 3, m=11, n=150)
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 64, 4)
    ref_loss, ref_acc = kspan.span_eval(*args, sub_block=32)
    for sub in (1, 7, 1000):
        loss, acc = kspan.span_eval(*args, sub_block=sub)
        assert_array_equal(loss, ref_loss)
        assert_array_equal(acc, ref_acc)


def test_result_independent_of_tiling():
    model, basis, C, data = span_problem(MODEL_CASES[5], 3, m=23)
    a = evaluate(model, basis, C, data, tile_size=23)
    b = evaluate(model, basis, C, data, tile_size=4)
    assert_array_equal(a.loss, b.loss)
    assert_array_equal(a.accuracy, b.accuracy)


def test_nonfinite_logits_propagate():
    """An overflowing point gives inf/nan in its own slot only."""
    model, basis, C, data = span_problem(MODEL_CASES[1], 2, m=3)
    C[2] = [1e200, 1e200]
    loss = evaluate(model, basis, C, data).loss
    assert np.isfinite(loss[:2]).all()
    assert not np.isfinite(loss[2])


@pytest.mark.parametrize("name", ["quadratic", "multimodal", "saddle", "rosenbrock"])
def test_span_analytic_matches_twin(name):
    from fastscape.functions import get

    f = get(name)
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(3, 2))
    C = rng.normal(size=(17, 3))
    C[4, 1] = 0.0
    got = kspan.span_analytic(f.code, basis, C, 4)
    assert_allclose(got, ref.span_function(f, basis, C), rtol=1e-12)


def test_block_size_rule():
    assert config.span_block_for(3, 1) == config.SPAN_BLOCK
    small = config.span_block_for(10_000, 10_000)
    assert small == config.SPAN_MIN_BLOCK
