"""BLAS products whose bits do not depend on the Numba or the BLAS thread count."""

from __future__ import annotations

import numpy as np
import pytest
from fastscape.kernels import _blas
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info, threadpool_limits

import fastscape


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.parametrize(
    "shape", [(3, 4, 5), (300, 70, 40), (40, 700, 300), (1000, 64, 32), (64, 900, 1200)]
)
@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_is_a_matrix_product(shape, transposed):
    m, k, n = shape
    rng = np.random.default_rng(m + n)
    A = rng.normal(size=(k, m)).T if transposed else rng.normal(size=(m, k))
    B = rng.normal(size=(k, n))
    C = _blas.matmul(A, B)
    assert C.shape == (m, n) and C.flags.c_contiguous
    assert_allclose(C, A @ B, rtol=1e-12, atol=1e-12 * np.abs(A @ B).max())


def test_parts_are_a_fixed_partition():
    for length in (1, 31, 32, 100, 1000, 12345):
        p = _blas.parts(length)
        assert p[0][0] == 0 and p[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(p, p[1:]))
        assert len(p) <= _blas.PARTS


def test_serial_blas_restores_the_thread_counts():
    before = _blas_threads()
    with _blas.serial_blas():
        assert set(_blas_threads()) <= {1}
    assert _blas_threads() == before


def test_nested_serial_blas_keeps_one_thread_until_the_outermost_exits():
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        with _blas.serial_blas():
            with _blas.serial_blas():
                assert set(_blas_threads()) <= {1}
            assert set(_blas_threads()) <= {1}  # the inner exit restored nothing
            with pytest.raises(RuntimeError), _blas.serial_blas():
                raise RuntimeError("inside a nested context")
            assert set(_blas_threads()) <= {1}
        assert _blas_threads() == before
        with _blas.serial_blas():  # a fresh outermost context sets and restores again
            assert set(_blas_threads()) <= {1}
        assert _blas_threads() == before


def _everything(model, theta, data):
    return [
        _blas.matmul(data.X.T, data.X),
        np.array([model.loss(theta, data)]),
        model.grad(theta, data)[1],
        model.logits(theta, data),
        model.hessian(theta, data),
        model.hvp(theta, np.cos(np.arange(model.n_params)), data),
        fastscape.landscape.slice_1d(
            model,
            theta,
            np.sin(np.arange(model.n_params)),
            data,
            None,
            np.linspace(-1, 1, 5),
            progress=False,
        ).loss,
    ]


@pytest.mark.parametrize(
    "sizes, loss", [([48, 1], "logistic"), ([40, 24, 5], "softmax_ce"), ([30, 16, 8, 3], "mse")]
)
def test_results_do_not_depend_on_any_thread_count(sizes, loss):
    # big enough that OpenBLAS runs its products multithreaded (with plain ``A @ B`` the
    # gradient's D^T X differs in its last bits between 1 and 2 BLAS threads at this size)
    rng = np.random.default_rng(0)
    model = fastscape.MLP(sizes, activation="tanh", loss=loss)
    X = rng.normal(size=(2500, sizes[0]))
    y = rng.integers(0, 2, 2500) if loss == "logistic" else rng.integers(0, sizes[-1], 2500)
    if loss == "mse":
        y = rng.normal(size=(2500, sizes[-1]))
    data = model.batch(X, y)
    theta = model.init(0)
    runs = []
    for numba_threads, blas_threads in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        with fastscape.threads(numba_threads), threadpool_limits(blas_threads, user_api="blas"):
            runs.append(_everything(model, theta, data))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert_array_equal(a, b)


def test_matmul_writes_into_out():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(300, 500))
    B = rng.normal(size=(500, 200))
    F = np.zeros((3, 300, 200))
    _blas.matmul(A, B, out=F[1])
    assert_array_equal(F[1], _blas.matmul(A, B))
    assert not F[0].any() and not F[2].any()
