"""The structured exact Hessian (kernels/hessian.py) against its NumPy twin and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from fastscape.kernels import hessian as kh
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import config
from fastscape import reference as ref
from fastscape._threads import threads

# deeper than the shared model cases: the second (cross) term reaches two and three layers down
DEEP = [
    ([3, 4, 5, 2], "tanh", "mse"),
    ([3, 4, 3, 4, 1], "sigmoid", "logistic"),
    ([5, 6, 4, 3], "relu", "softmax_ce"),
    ([4, 3, 3, 3, 3], "tanh", "softmax_ce"),
    ([3, 4, 2], "identity", "mse"),
    ([6, 4], "identity", "softmax_ce"),
]


def _problem(sizes, act, loss, n=29, seed=0):
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    theta = model.init(seed) + 0.4 * rng.normal(size=model.n_params)
    X = rng.normal(size=(n, sizes[0]))
    if loss == "softmax_ce":
        y = rng.integers(0, sizes[-1], n)
    elif loss == "logistic":
        y = rng.integers(0, 2, n).astype(float)
    else:
        y = (
            rng.normal(size=(n, sizes[-1])).squeeze(-1)
            if sizes[-1] == 1
            else rng.normal(size=(n, sizes[-1]))
        )
    return model, theta, model.batch(X, y)


def _kernel(model, theta, data, block):
    return kh.mlp_hessian(theta, *model.spec.kernel_args, data.X, data.Y, block)


@pytest.mark.parametrize("case", DEEP, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_matches_reference_on_deep_models(case):
    model, theta, data = _problem(*case, seed=len(case[0]))
    R = ref.mlp_hessian(theta, model.sizes, model.activation, model.loss_name, data.X, data.Y)
    H = model.hessian(theta, data)
    assert_allclose(H, R, rtol=1e-10, atol=1e-13 * np.abs(R).max())
    assert_array_equal(H, H.T)  # every pair is computed once and written to both places


@pytest.mark.parametrize("case", DEEP[:4], ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_sample_blocks_change_only_rounding(case):
    model, theta, data = _problem(*case, n=31)
    whole = _kernel(model, theta, data, 31)
    for block in (1, 4, 30):
        assert_allclose(_kernel(model, theta, data, block), whole, rtol=1e-13, atol=1e-15)


def test_thread_count_changes_no_bits():
    model, theta, data = _problem([5, 6, 4, 3], "tanh", "softmax_ce", n=200)
    with threads(1):
        one = _kernel(model, theta, data, 64)
    with threads(2):
        two = _kernel(model, theta, data, 64)
    assert_array_equal(one, two)


def test_bias_and_weight_rows_map_to_the_flat_layout():
    model = fastscape.MLP([3, 2, 4])
    w_off, b_off, _ = fastscape.kernels.layout.layout(model.spec.sizes_array)
    for l, lay in enumerate(model.layout):
        rows = kh.param_rows(model.spec.sizes_array, w_off, b_off, l)
        idx = np.arange(model.n_params)
        assert_array_equal(rows[:, :-1], idx[lay.weight].reshape(lay.shape))
        assert_array_equal(rows[:, -1], idx[lay.bias])


def test_block_size_keeps_the_widest_factor_within_the_budget():
    sizes = np.array([64, 32, 10])
    # widest per-sample factor: the packed (a_0 a_0^T) triangle, 65 * 66 / 2 columns
    widest = 65 * 66 // 2
    assert kh.block_size(sizes, 10**6, 8 * widest * 100) == 100
    assert kh.block_size(sizes, 50, config.HESSIAN_SCRATCH_BYTES) == 50
    assert kh.block_size(sizes, 10**6, 1) == 1


def test_hessian_of_a_quadratic_model_is_its_closed_form():
    # one linear layer with MSE through the structured path (the API uses the closed form):
    # H = 2 [X 1]^T [X 1] / n for each output, block-diagonal over outputs
    rng = np.random.default_rng(3)
    model = fastscape.MLP([3, 2], activation="identity", loss="mse")
    X = rng.normal(size=(17, 3))
    data = model.batch(X, rng.normal(size=(17, 2)))
    H = _kernel(model, model.init(0), data, 5)
    Xa = np.hstack([X, np.ones((17, 1))])
    G = 2.0 * Xa.T @ Xa / 17
    w_off, b_off, _ = fastscape.kernels.layout.layout(model.spec.sizes_array)
    rows = kh.param_rows(model.spec.sizes_array, w_off, b_off, 0)
    for j in range(2):
        assert_allclose(H[np.ix_(rows[j], rows[j])], G, rtol=1e-13)
    assert_array_equal(H[np.ix_(rows[0], rows[1])], 0.0)
