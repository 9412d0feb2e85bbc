"""The span engine's logistic product path (kernels/span_logistic.py) against exact sums."""

from __future__ import annotations

import numpy as np
import pytest
from fastscape.kernels import span_logistic as kl
from numpy.testing import assert_allclose, assert_array_equal
from span_helpers import assert_same_bits_on_one_and_two_threads

from fastscape.landscape import evaluate


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
        assert reach.max() <= kl.PLAIN_REACH
    elif path == "split":
        assert (reach > kl.PLAIN_REACH).mean() > 0.5
        assert reach.max() <= kl.EXP_PRODUCT_RANGE
    else:
        assert (reach > kl.EXP_PRODUCT_RANGE).mean() > 0.5
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
    assert_same_bits_on_one_and_two_threads(args)


def test_exp_bounded_matches_numpy():
    x = np.concatenate([np.linspace(-708.0, 708.0, 20001), np.geomspace(1e-300, 1.0, 200)])
    x = np.concatenate([x, -x])
    out = np.empty_like(x)
    kl.exp_row(x, 1.0, out, np.empty(x.size, np.int64))
    err = np.abs(out / np.exp(x) - 1.0)
    # a few ulp plus the reduction's |x| ulp (the condition number of exp)
    assert np.all(err <= 4e-16 * np.maximum(1.0, np.abs(x)))
