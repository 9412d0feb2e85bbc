"""The span engine (kernels/span.py) against its NumPy twin, and its invariances."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from fastscape.kernels import span as kspan
from numpy.testing import assert_allclose, assert_array_equal

from fastscape import config
from fastscape import reference as ref
from fastscape.landscape import evaluate


def _span_problem(case, K, m=7, n=45, seed=0):
    model, theta, X, y = make_problem(case, n=n, seed=seed)
    rng = np.random.default_rng(seed + 100 * K)
    basis = np.vstack([theta, rng.normal(size=(K - 1, model.n_params))])
    C = rng.normal(size=(m, K))
    C[0] = 0.0  # the zero vector
    C[1, 0] = 0.0  # one skipped row
    return model, basis, C, model.batch(X, y)


@pytest.mark.parametrize("K", [1, 2, 3, 4])
@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_evaluate_matches_seed_loop_twin(case, K):
    model, basis, C, data = _span_problem(case, K, seed=K)
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
    model, basis, C, data = _span_problem(case, 3, n=157)
    loss, acc = kspan.span_eval(basis, C, *model.spec.kernel_args, data.X, data.Y, 16, 3)
    want_loss, want_acc = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert_allclose(loss, want_loss, rtol=1e-10)
    assert_array_equal(acc, want_acc)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[7]], ids=case_id)
def test_zero_coefficients_are_skipped_exactly(case):
    """A point using 2 of K rows gives the same bits as the K = 2 problem of those rows."""
    model, basis, C, data = _span_problem(case, 4, m=6)
    C[:, [1, 3]] = 0.0
    full = evaluate(model, basis, C, data)
    small = evaluate(model, basis[[0, 2]], C[:, [0, 2]], data)
    assert_array_equal(full.loss, small.loss)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[1], MODEL_CASES[7]], ids=case_id)
def test_thread_count_invariance(case):
    model, basis, C, data = _span_problem(case, 3, m=40, n=300)
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 64, 2)
    _assert_same_bits_on_one_and_two_threads(args)


def _assert_same_bits_on_one_and_two_threads(args):
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kspan.span_eval(*args)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = kspan.span_eval(*args)
    finally:
        numba.set_num_threads(previous)
    assert_array_equal(one[0], two[0])
    assert_array_equal(one[1], two[1])


def test_cache_tiling_changes_no_bits():
    model, basis, C, data = _span_problem(MODEL_CASES[7], 3, m=11, n=150)
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 64, 4)
    ref_loss, ref_acc = kspan.span_eval(*args, sub_block=32)
    for sub in (1, 7, 1000):
        loss, acc = kspan.span_eval(*args, sub_block=sub)
        assert_array_equal(loss, ref_loss)
        assert_array_equal(acc, ref_acc)


def test_result_independent_of_tiling():
    model, basis, C, data = _span_problem(MODEL_CASES[5], 3, m=23)
    a = evaluate(model, basis, C, data, tile_size=23)
    b = evaluate(model, basis, C, data, tile_size=4)
    assert_array_equal(a.loss, b.loss)
    assert_array_equal(a.accuracy, b.accuracy)


def test_softplus_block_matches_logaddexp():
    z = np.concatenate(
        [np.linspace(-60, 60, 4001), [0.0, 1e-300, -1e-300, 1e-12, -1e-12, 700.0, -700.0]]
    )
    out = np.empty_like(z)
    kspan.softplus_block(z, out, np.empty(z.size, np.int64))
    want = np.logaddexp(0.0, z)
    assert_allclose(out, want, rtol=1e-13, atol=0)
    # beyond |z| = 708 the small term is dropped: exact there
    far = np.array([-1000.0, -709.0, 709.0, 1e6])
    out = np.empty_like(far)
    kspan.softplus_block(far, out, np.empty(far.size, np.int64))
    assert_array_equal(out, np.maximum(far, 0.0))


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "identity"])
def test_activate_block_matches_numpy(act):
    import scipy.special

    from fastscape.models import ACTIVATIONS

    z = np.concatenate([np.linspace(-40, 40, 8001), [0.0, 1e-300, -1e-12, 800.0, -800.0]])
    out = np.empty_like(z)
    kspan.activate_block(ACTIVATIONS[act], z, out, np.empty(z.size, np.int64))
    want = {
        "tanh": np.tanh(z), "sigmoid": scipy.special.expit(z), "relu": np.maximum(z, 0.0),
        "identity": z,
    }[act]  # fmt: skip
    assert_allclose(out, want, rtol=1e-14, atol=3e-16)


def test_nonfinite_logits_propagate():
    """An overflowing point gives inf/nan in its own slot only."""
    model, basis, C, data = _span_problem(MODEL_CASES[1], 2, m=3)
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


# ----------------------------------------------------------------------------- one hidden layer
# span_block_hidden: sample tiles, fused first layer + activation (<= 3 non-zero coefficients),
# output layer 4 samples x 2 outputs at a time, the loss vectorised over the tile.
# (output groups of 5, 2 and 1: n_out = 5 and 8 cover every group kind)
HIDDEN1 = [c for c in MODEL_CASES if len(c[0]) == 3] + [
    ([6, 7, 5], "tanh", "softmax_ce"),
    ([4, 9, 8], "sigmoid", "softmax_ce"),
]


def _hidden_args(case, K, m=11, n=150, seed=0):
    model, basis, C, data = _span_problem(case, K, m=m, n=n, seed=seed)
    C[2, 1:] = 0.0  # one term
    if K > 2:
        C[3, 2:] = 0.0  # two terms
    return model, basis, C, data


@pytest.mark.parametrize("K", [1, 2, 3, 5])
@pytest.mark.parametrize("case", HIDDEN1, ids=case_id)
def test_hidden_path_matches_twin(case, K):
    """1 to 5 non-zero coefficients (fused and general first layer), n not a multiple of 4."""
    model, basis, C, data = _hidden_args(case, K, n=103, seed=K)
    loss, acc = kspan.span_eval(basis, C, *model.spec.kernel_args, data.X, data.Y, 40, 3, 7)
    want_loss, want_acc = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert_allclose(loss, want_loss, rtol=1e-12)
    if model.is_classifier:
        assert_array_equal(acc, want_acc)


@pytest.mark.parametrize("K", [3, 5])
@pytest.mark.parametrize("case", HIDDEN1, ids=case_id)
def test_hidden_path_bits_independent_of_tiles_chunks_threads(case, K):
    """Sample tile (any size, rounded up to a multiple of 4), points per task and thread count
    change no bit: each point sums its per-sample losses in an order fixed by the block."""
    model, basis, C, data = _hidden_args(case, K)
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 64)
    ref_loss, ref_acc = kspan.span_eval(*args, 8, sub_block=32)
    previous = numba.get_num_threads()
    try:
        for threads, chunk, sub in [(1, 8, 32), (2, 1, 1), (2, 3, 7), (1, 64, 1000), (2, 5, 4)]:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            loss, acc = kspan.span_eval(*args, chunk, sub_block=sub)
            assert_array_equal(loss, ref_loss)
            assert_array_equal(acc, ref_acc)
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "identity"])
@pytest.mark.parametrize("cnt", [1, 2, 3])
def test_combine_activate_matches_activate_block(act, cnt):
    from fastscape.models import ACTIVATIONS

    rng = np.random.default_rng(cnt)
    F = rng.normal(size=(3, 997)) * 6.0
    F[:, :5] = [[0.0, 1e-300, 400.0, -400.0, 1e-12]] * 3
    c = np.array([0.7, -1.3, 0.4])
    code = ACTIVATIONS[act]
    bits = np.empty(F.shape[1], np.int64)
    out = np.empty(F.shape[1])
    kspan.combine_activate(code, cnt, F[0], c[0], F[1], c[1], F[2], c[2], out, bits)
    z = c[:cnt] @ F[:cnt]
    want = np.empty_like(z)
    kspan.activate_block(code, z, want, bits)
    assert_allclose(out, want, rtol=1e-14, atol=1e-15)


def test_log_block_matches_numpy():
    x = np.concatenate(
        [np.linspace(1.0, 12.0, 5001), np.geomspace(1e-300, 1e300, 2001), [1.0, 2.0, 0.5]]
    )
    out = np.empty_like(x)
    kspan.log_block(x, out, np.empty(x.size, np.int64))
    assert_allclose(out, np.log(x), rtol=4e-16, atol=4e-16)
    special = np.array([np.inf, np.nan])
    out = np.empty(2)
    kspan.log_block(special, out, np.empty(2, np.int64))
    assert out[0] == np.inf and np.isnan(out[1])


def test_hidden_path_saturated_units_stay_finite():
    """Huge first-layer pre-activations (tanh saturates): finite loss, as in the twin."""
    case = ([3, 4, 3], "tanh", "softmax_ce")
    model, basis, C, data = _span_problem(case, 2, m=3)
    w1 = model.layout[0].weight
    basis[1, w1] = 1e300
    C[:] = [[1.0, 0.5], [1.0, -0.5], [1.0, 0.0]]
    got = evaluate(model, basis, C, data).loss
    want, _ = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert np.isfinite(got).all()
    assert_allclose(got, want, rtol=1e-10)


# ----------------------------------------------------------------------------- logistic product
# The logistic product path (issue 6, B1): exp(z) as a product of tabulated factors, the sum of
# log1p(exp(-|z|)) as the log of a product. n = 2500 spans two blocks of 2048 and chunks of
# PRODUCT_CHUNK samples.
def _logistic_grid(scale, n=2500, d=4, g=7, seed=0, separable=False):
    rng = np.random.default_rng(seed)
    model = fastscape_mlp([d, 1], "logistic")
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d + 1)
    if separable:  # every sample at least 2 / |w| from the boundary
        side = np.sign(X @ w[:d] + w[d])
        X += 2.0 * side[:, None] * w[:d] / (w[:d] @ w[:d])
    y = (X @ w[:d] + w[d] > 0).astype(int) if separable else rng.integers(0, 2, size=n)
    theta = scale * w
    d1, d2 = (scale * 0.1 * rng.normal(size=d + 1) for _ in range(2))
    a = np.linspace(-1.0, 1.0, g)  # includes 0: points with one or two non-zero coefficients
    A, Bg = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), Bg.ravel()])
    return model, np.stack([theta, d1, d2]), C, model.batch(X, y)


def fastscape_mlp(sizes, loss):
    import fastscape

    return fastscape.MLP(sizes, loss=loss)


def _accurate_logistic(basis, C, data):
    """Mean loss with every per-sample term to full relative accuracy, summed exactly."""
    import math

    X1 = np.column_stack([data.X, np.ones(data.X.shape[0])])
    Z = X1 @ (C @ basis).T  # (n, m)
    y = data.Y[:, :1]
    terms = np.maximum(Z, 0.0) - y * Z + np.log1p(np.exp(-np.abs(Z)))
    loss = np.array([math.fsum(col) for col in terms.T]) / Z.shape[0]
    acc = ((Z > 0) == (y > 0.5)).mean(axis=0)
    return loss, acc, Z


def _reach(basis, C, data):
    """The kernel's per-block bound sum_t |c_t| max|F_t| (first block), as it decides paths."""
    X1 = np.column_stack([data.X, np.ones(data.X.shape[0])])[:2048]
    Fmax = np.abs(X1 @ basis.T).max(axis=0)
    return np.abs(C) @ Fmax


@pytest.mark.parametrize(
    "scale, path",
    [(0.3, "plain"), (6.0, "split"), (400.0, "fallback")],
)
def test_logistic_product_path_matches_accurate_sum(scale, path):
    model, basis, C, data = _logistic_grid(scale)
    reach = _reach(basis, C, data)
    # the regime the test is about is really the one the kernel takes
    if path == "plain":
        assert reach.max() <= kspan.PLAIN_REACH
    elif path == "split":
        assert (reach > kspan.PLAIN_REACH).mean() > 0.5
        assert reach.max() <= kspan.EXP_PRODUCT_RANGE
    else:
        assert (reach > kspan.EXP_PRODUCT_RANGE).mean() > 0.5
    got = evaluate(model, basis, C, data)
    want, acc, _ = _accurate_logistic(basis, C, data)
    assert_allclose(got.loss, want, rtol=1e-12)
    assert_array_equal(got.accuracy, acc)


def test_logistic_product_path_keeps_relative_accuracy_of_tiny_losses():
    # separable data with a margin at a large scale: mean losses far below 1e-6, where
    # log(1 + u) would have lost every digit
    model, basis, C, data = _logistic_grid(12.0, separable=True, seed=3)
    got = evaluate(model, basis, C, data)
    want, acc, _ = _accurate_logistic(basis, C, data)
    assert want.min() < 1e-9
    assert_allclose(got.loss, want, rtol=1e-12)
    assert_array_equal(got.accuracy, acc)


def test_logistic_product_path_all_logits_zero():
    # theta = 0: u = 1 for every sample, the largest factor (2) in every product
    model, basis, C, data = _logistic_grid(1.0, n=3000)
    basis[:] = 0.0
    got = evaluate(model, basis, C[:3], data)
    assert_allclose(got.loss, np.log(2.0), rtol=1e-15)
    # z = 0 is not > 0: the samples with y = 0 are the hits
    assert_array_equal(got.accuracy, (data.Y[:, 0] < 0.5).mean())


def test_logistic_product_point_bits_do_not_depend_on_company():
    # in a grid a point's factors come from shared tables and it goes through the four-point
    # loop with its row; alone it forms its own factors and fills a group with padding
    model, basis, C, data = _logistic_grid(0.3)
    grid = evaluate(model, basis, C, data)
    rng = np.random.default_rng(1)
    pick = rng.choice(C.shape[0], size=6, replace=False)
    for j in pick:
        one = evaluate(model, basis, C[j : j + 1], data)
        assert_array_equal(one.loss, grid.loss[j : j + 1])
        assert_array_equal(one.accuracy, grid.accuracy[j : j + 1])
    perm = rng.permutation(C.shape[0])
    shuffled = evaluate(model, basis, C[perm], data)
    assert_array_equal(shuffled.loss, grid.loss[perm])
    # split-path points too
    model, basis, C, data = _logistic_grid(6.0)
    grid = evaluate(model, basis, C, data)
    for j in pick:
        assert_array_equal(evaluate(model, basis, C[j : j + 1], data).loss, grid.loss[j : j + 1])


def test_logistic_product_path_thread_count_invariance():
    model, basis, C, data = _logistic_grid(0.3, g=11)
    C = np.vstack([C, _logistic_grid(6.0, g=5)[2] * 20.0])  # split points in the same call
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 2048, 8)
    _assert_same_bits_on_one_and_two_threads(args)


def test_exp_bounded_matches_numpy():
    x = np.concatenate([np.linspace(-708.0, 708.0, 20001), np.geomspace(1e-300, 1.0, 200)])
    x = np.concatenate([x, -x])
    out = np.empty_like(x)
    kspan.exp_row(x, 1.0, out, np.empty(x.size, np.int64))
    err = np.abs(out / np.exp(x) - 1.0)
    # a few ulp plus the reduction's |x| ulp (the condition number of exp)
    assert np.all(err <= 4e-16 * np.maximum(1.0, np.abs(x)))
