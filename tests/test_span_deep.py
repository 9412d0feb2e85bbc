"""The span engine's general path (kernels/span_deep.py) against its NumPy twin; float32."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import MODEL_CASES, case_id
from fastscape.kernels import span as kspan
from fastscape.kernels import span_deep as kd
from numpy.testing import assert_allclose, assert_array_equal
from span_helpers import span_problem

import fastscape
from fastscape import reference as ref
from fastscape._device import CPUBackend
from fastscape.models import ACTIVATIONS

# Two and three hidden layers, every activation and every loss; output widths 1, 2, 3, 10.
DEEP = [c for c in MODEL_CASES if len(c[0]) >= 4] + [
    ([6, 7, 5, 4, 3], "tanh", "softmax_ce"),
    ([5, 6, 4, 3, 1], "relu", "logistic"),
    ([4, 5, 6, 5, 2], "sigmoid", "mse"),
] + [([5, 6, 7, 3], act, "softmax_ce") for act in sorted(ACTIVATIONS)] + [
    ([5, 6, 7, 10], "gelu", "softmax_ce"),
    ([5, 6, 7, 1], "leaky_relu", "logistic"),
    ([5, 6, 7, 2], "gelu_tanh", "mse"),
]  # fmt: skip


def _args(case, K, m=11, n=150, seed=0, l2=0.0, l2_bias=False):
    model, basis, C, data = span_problem(case, K, m=m, n=n, seed=seed)
    if l2:
        model = fastscape.MLP(model.sizes, model.activation, model.loss_name, l2=l2,
                              l2_bias=l2_bias)  # fmt: skip
    C[2, 1:] = 0.0  # one term
    if K > 2:
        C[3, 2:] = 0.0  # two terms
    return model, basis, C, data


def _twin(model, basis, C, data):
    return ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y,
        model.l2, model.l2_bias,
    )  # fmt: skip


def _run(model, basis, C, data, block=40, chunk=3, tile=8, dtype=np.float64):
    return kspan.span_eval(
        basis, C, *model.spec.kernel_args, data.X, data.Y, block, chunk,
        penalty=model.spec.penalty, dtype=dtype, deep_tile=tile,
    )  # fmt: skip


@pytest.mark.parametrize("K", [1, 3, 5])
@pytest.mark.parametrize("case", DEEP, ids=case_id)
def test_deep_path_matches_twin(case, K):
    """1 to 5 non-zero coefficients, n a multiple of neither the tile nor the block (padded
    last tiles, a short last block)."""
    model, basis, C, data = _args(case, K, n=103, seed=K)
    loss, acc = _run(model, basis, C, data)
    want_loss, want_acc = _twin(model, basis, C, data)
    assert_allclose(loss, want_loss, rtol=1e-12)
    if model.is_classifier:
        assert_array_equal(acc, want_acc)


@pytest.mark.parametrize("l2_bias", [False, True])
@pytest.mark.parametrize("case", [DEEP[0], DEEP[2], DEEP[5]], ids=case_id)
def test_deep_path_l2_and_zero_biases(case, l2_bias):
    """The L2 term (weights only, or biases too) and a basis whose biases are all zero."""
    model, basis, C, data = _args(case, 3, l2=0.3, l2_bias=l2_bias)
    loss, _ = _run(model, basis, C, data)
    assert_allclose(loss, _twin(model, basis, C, data)[0], rtol=1e-12)
    for lay in model.layout:
        basis[:, lay.bias] = 0.0
    loss, _ = _run(model, basis, C, data)
    assert_allclose(loss, _twin(model, basis, C, data)[0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [DEEP[0], DEEP[3], DEEP[4], DEEP[6]], ids=case_id)
def test_deep_path_bits_independent_of_chunks_threads_and_neighbours(case, dtype):
    """Points per task, thread count and the other points of the call change no bit: every
    BLAS call has the shape (tile, h), and each point sums its per-sample losses in an order
    fixed by the block."""
    model, basis, C, data = _args(case, 3, m=13, n=150)
    ref_loss, ref_acc = _run(model, basis, C, data, 64, 8, 8, dtype)
    previous = numba.get_num_threads()
    try:
        for threads, chunk in [(1, 8), (2, 1), (2, 3), (1, 64), (2, 5)]:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            loss, acc = _run(model, basis, C, data, 64, chunk, 8, dtype)
            assert_array_equal(loss, ref_loss)
            assert_array_equal(acc, ref_acc)
    finally:
        numba.set_num_threads(previous)
    perm = np.random.default_rng(1).permutation(C.shape[0])[:7]  # a subset, reordered
    loss, acc = _run(model, basis, C[perm], data, 64, 3, 8, dtype)
    assert_array_equal(loss, ref_loss[perm])
    assert_array_equal(acc, ref_acc[perm])


def test_deep_path_through_the_api_is_tiling_independent():
    """evaluate() with point tiles of 5 and of 23 on a two-hidden-layer model: same bits."""
    model, basis, C, data = _args(DEEP[0], 3, m=23)
    a = fastscape.landscape.evaluate(model, basis, C, data, tile_size=23)
    b = fastscape.landscape.evaluate(model, basis, C, data, tile_size=5)
    assert_array_equal(a.loss, b.loss)
    assert_array_equal(a.accuracy, b.accuracy)
    assert_allclose(a.loss, _twin(model, basis, C, data)[0], rtol=1e-12)


def test_deep_path_nonfinite_point_stays_in_its_slot():
    """An overflowing point gives inf/nan in its own slot; its tile-mates stay finite."""
    model, basis, C, data = _args(([4, 5, 4, 3], "relu", "softmax_ce"), 2, m=4)
    C[2] = [1e200, 1e200]
    loss, _ = _run(model, basis, C, data)
    assert not np.isfinite(loss[2])
    assert np.isfinite(np.delete(loss, 2)).all()


# ----------------------------------------------------------------------------- float32
ALL = MODEL_CASES + DEEP[-6:]


@pytest.mark.parametrize("case", ALL, ids=case_id)
def test_float32_matches_twin_loosely(case):
    """float32 for every model (the general path serves them all): the loss within 1e-5 of the
    float64 twin on these small random models with N(0, 1) parameters (large logits), the
    accuracy within one sample's flip per point."""
    model, basis, C, data = _args(case, 3, n=103, seed=4)
    loss, acc = _run(model, basis, C, data, dtype=np.float32)
    want_loss, want_acc = _twin(model, basis, C, data)
    assert loss.dtype == np.float64
    assert_allclose(loss, want_loss, rtol=1e-5)
    if model.is_classifier:
        assert np.abs(acc - want_acc).max() <= 1.0 / 103 + 1e-12


def _realistic(sizes, act, loss, n, grid, seed=0):
    """Glorot parameters, data ~ N(0, 1/d), two filter-normalised directions, a grid on
    [-1, 1]^2: the B7 problem at a smaller size."""
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0])) / np.sqrt(sizes[0])
    y = rng.integers(0, max(2, sizes[-1]), size=n)
    theta = model.init(1)
    d1, d2 = fastscape.directions.pair(model, theta, seed=2)
    a = np.linspace(-1.0, 1.0, grid)
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    return model, np.stack([theta, d1.vector, d2.vector]), C, model.batch(X, y)


@pytest.mark.parametrize(
    "case",
    [
        ([64, 32, 32, 10], "tanh", "softmax_ce"),
        ([64, 32, 32, 32, 10], "relu", "softmax_ce"),
        ([64, 32, 10], "tanh", "softmax_ce"),
        ([64, 32, 1], "gelu", "logistic"),
        ([64, 10], "identity", "softmax_ce"),
    ],
    ids=case_id,
)
def test_float32_loss_within_1e6_of_float64_on_realistic_models(case):
    """The documented accuracy: Glorot-initialised models on standardised data, a 7 x 7
    surface of filter-normalised directions, through the CPU backend."""
    model, basis, C, data = _realistic(*case, n=700, grid=7)
    cpu = CPUBackend()
    l64, a64 = cpu.span_eval(model.spec, basis, C, data, "float64")
    l32, a32 = cpu.span_eval(model.spec, basis, C, data, "float32")
    assert_allclose(l32, l64, rtol=1e-6)
    assert np.abs(a32 - a64).max() <= 1.0 / 700 + 1e-12


def test_float32_casts_blocks_not_the_data():
    """float64 data with dtype=float32 gives the bits of float32 data (cast block by block)."""
    model, basis, C, data = _args(DEEP[0], 3, n=150)
    args = (basis, C, *model.spec.kernel_args)
    a = kspan.span_eval(*args, data.X, data.Y, 64, 3, dtype=np.float32)
    b = kspan.span_eval(*args, data.X.astype(np.float32), data.Y, 64, 3, dtype=np.float32)
    assert_array_equal(a[0], b[0])


# ----------------------------------------------------------------------------- helpers
def test_bias_activate_and_add_bias_rows():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(8, 5))
    b = rng.normal(size=5)
    want = np.tanh(Z + b)
    A = np.empty_like(Z)
    kd.bias_activate(1, Z.copy(), b, A, np.empty(40, np.int64))
    assert_allclose(A, want, rtol=1e-14, atol=2e-16)
    Zo = rng.normal(size=(3, 8))
    want = Zo + b[:3, None]
    kd.add_bias_rows(Zo, b[:3])
    assert_array_equal(Zo, want)
