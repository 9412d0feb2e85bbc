"""The model family: layout, parameters, predictions and input validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import reference as ref


def test_layout_is_one_flat_vector():
    model = fastscape.MLP([4, 3, 2], activation="relu", loss="softmax_ce")
    assert model.n_params == 4 * 3 + 3 + 3 * 2 + 2
    lay = model.layout
    assert (lay[0].weight, lay[0].bias, lay[0].shape) == (slice(0, 12), slice(12, 15), (3, 4))
    assert (lay[1].weight, lay[1].bias, lay[1].shape) == (slice(15, 21), slice(21, 23), (2, 3))
    theta = np.arange(model.n_params, dtype=float)
    params = model.unflatten(theta)
    assert_array_equal(params[0][0], theta[:12].reshape(3, 4))
    assert_array_equal(model.flatten(params), theta)
    assert_array_equal(ref.unflatten(theta, model.sizes)[1][0], params[1][0])


def test_no_hidden_layer_members():
    assert fastscape.Logistic(5) == fastscape.MLP([5, 1], loss="logistic")
    assert fastscape.LinearRegression(5) == fastscape.MLP([5, 1], loss="mse")
    assert fastscape.Logistic(5).is_linear and not fastscape.MLP([5, 2, 1], loss="mse").is_linear


def test_init_is_seeded_glorot():
    model = fastscape.MLP([30, 20, 10])
    a, b, c = model.init(1), model.init(1), model.init(2)
    assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    W, bias = model.unflatten(a)[0]
    assert np.abs(W).max() <= np.sqrt(6 / 50)
    assert_array_equal(bias, 0.0)
    assert W.std() == pytest.approx(np.sqrt(6 / 50) / np.sqrt(3), rel=0.1)


def test_predict_and_accuracy():
    model, theta, X, y = make_problem(([4, 5, 3], "tanh", "softmax_ce"), n=60)
    P = model.predict(theta, X)
    assert_allclose(P.sum(axis=1), 1.0)
    assert model.accuracy(theta, X, y) == pytest.approx(np.mean(P.argmax(1) == y))
    model, theta, X, y = make_problem(([4, 1], "identity", "logistic"), n=60)
    p = model.predict(theta, X)
    assert_allclose(p, 1 / (1 + np.exp(-(X @ theta[:4] + theta[4]))), rtol=1e-12)
    assert model.accuracy(theta, X, y) == pytest.approx(np.mean((p > 0.5) == y))
    model, theta, X, y = make_problem(([4, 1], "identity", "mse"), n=60)
    assert model.predict(theta, X).shape == (60,)
    with pytest.raises(ValueError, match="accuracy"):
        model.accuracy(theta, X, y)


def test_soft_labels_and_float_integer_labels():
    model, theta, X, y = make_problem(([3, 4, 3], "tanh", "softmax_ce"), n=20)
    onehot = np.eye(3)[y]
    assert model.loss(theta, X, onehot) == model.loss(theta, X, y)
    assert model.loss(theta, X, y.astype(float)) == model.loss(theta, X, y)
    assert model.loss(theta, X.astype(np.float32), y) == pytest.approx(
        model.loss(theta, X.astype(np.float32).astype(float), y), rel=0
    )


def test_batch_is_reused():
    model, theta, X, y = make_problem(([3, 4, 1], "tanh", "logistic"))
    data = model.batch(X, y)
    assert model.loss(theta, data) == model.loss(theta, X, y)
    with pytest.raises(ValueError, match="y must be None"):
        model.loss(theta, data, y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": [3]}, "sizes"),
        ({"sizes": [3, 0]}, "sizes entry"),
        ({"sizes": [3, 2.5]}, "sizes entry"),
        ({"sizes": [3, 2], "activation": "swish"}, "activation"),
        ({"sizes": [3, 2], "loss": "hinge"}, "loss"),
        ({"sizes": [3, 2], "loss": "logistic"}, "1 output"),
        ({"sizes": [3, 1], "loss": "softmax_ce"}, ">= 2 output"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastscape.MLP(**kwargs)


def _bad_inputs():
    model, theta, X, y = make_problem(([3, 4, 3], "tanh", "softmax_ce"), n=10)
    nan_X = X.copy()
    nan_X[2, 1] = np.nan
    inf_theta = theta.copy()
    inf_theta[3] = np.inf
    return (
        model,
        theta,
        X,
        y,
        [
            ({"theta": theta[:-1]}, "theta has length"),
            ({"theta": inf_theta}, "theta contains non-finite"),
            ({"theta": theta.reshape(1, -1)}, "theta must be 1-D"),
            ({"X": X[:, :2]}, "X has 2 columns"),
            ({"X": nan_X}, r"X contains non-finite values \(first at index \(2, 1\)\)"),
            ({"X": X[:0]}, "X is empty"),
            ({"X": X[0]}, "X must be 2-D"),
            ({"X": X.astype(complex)}, "X must hold real numbers"),
            ({"y": y[:-1]}, "y has 9 rows"),
            ({"y": np.where(y == 0, 3, y)}, "label 3, outside"),
            ({"y": y - 1.0 * (y == 0)}, "label -1"),
            ({"y": y + 0.5}, "integer class labels"),
            ({"y": np.eye(3)[y] * 2}, "class probabilities"),
            ({"y": y.astype(str)}, "y must hold numbers"),
        ],
    )


@pytest.mark.parametrize("method", ["loss", "grad", "hvp", "hessian"])
def test_bad_inputs_raise_before_kernels(method):
    model, theta, X, y, cases = _bad_inputs()
    for override, match in cases:
        args = {"theta": theta, "X": X, "y": y, **override}
        call = getattr(model, method)
        with pytest.raises((ValueError, TypeError), match=match):
            if method == "hvp":
                call(args["theta"], np.ones(model.n_params), args["X"], args["y"])
            else:
                call(args["theta"], args["X"], args["y"])


def test_bad_labels_for_logistic_and_mse():
    model, theta, X, y = make_problem(([3, 1], "identity", "logistic"), n=10)
    with pytest.raises(ValueError, match="labels 0 or 1"):
        model.loss(theta, X, y * 2)
    model, theta, X, y = make_problem(([3, 2], "identity", "mse"), n=10)
    with pytest.raises(ValueError, match="y has 1 columns"):
        model.loss(theta, X, y[:, :1])
    with pytest.raises(ValueError, match=r"shape \(10, 2\)"):
        model.loss(theta, X, y[:, 0])
    bad = y.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="y contains non-finite"):
        model.loss(theta, X, bad)


def test_bad_hvp_vector():
    model, theta, X, y = make_problem(([3, 4, 1], "tanh", "logistic"), n=10)
    with pytest.raises(ValueError, match="v has length"):
        model.hvp(theta, np.ones(3), X, y)
    with pytest.raises(ValueError, match="v contains non-finite"):
        model.hvp(theta, np.full(model.n_params, np.nan), X, y)


def test_hessian_size_limit_names_memory():
    model = fastscape.MLP([80, 60, 10])
    theta = model.init(0)
    X = np.zeros((2, 80))
    with pytest.raises(ValueError, match=r"GiB.*max_params=5000"):
        model.hessian(theta, X, [0, 1])
    small = fastscape.MLP([3, 4, 2])
    with pytest.raises(ValueError, match="max_params=10"):
        small.hessian(small.init(0), np.zeros((2, 3)), [0, 1], max_params=10)


def test_flatten_checks_shapes():
    model = fastscape.MLP([3, 2])
    with pytest.raises(ValueError, match=r"W has shape \(3, 2\), expected \(2, 3\)"):
        model.flatten([(np.zeros((3, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="params has 2 layers"):
        model.flatten([(np.zeros((2, 3)), np.zeros(2))] * 2)


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_spec_is_what_the_kernels_are_told(case):
    from fastscape.kernels import mlp as kmlp

    model, *_ = make_problem(case)
    spec = model.spec
    assert spec.sizes == model.sizes and spec.n_outputs == model.n_outputs
    assert spec.n_params == model.n_params and spec.is_linear == model.is_linear
    codes = {"identity": kmlp.IDENTITY, "tanh": kmlp.TANH, "relu": kmlp.RELU}
    codes.update(sigmoid=kmlp.SIGMOID)
    losses = {"softmax_ce": kmlp.SOFTMAX_CE, "logistic": kmlp.LOGISTIC, "mse": kmlp.MSE}
    assert spec.activation == codes[model.activation] and spec.loss == losses[model.loss_name]
    sizes, act, loss = spec.kernel_args
    assert sizes.dtype == np.int64 and tuple(sizes) == model.sizes
    assert (act, loss) == (spec.activation, spec.loss)
    twin = fastscape.MLP(*case)
    assert twin.spec == spec and hash(twin.spec) == hash(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.loss = 0


def test_batch_is_one_type_wherever_it_is_imported():
    from fastscape import _device, data, models

    assert fastscape.Batch is models.Batch is data.Batch
    assert _device.DeviceBatch is models.DeviceBatch is data.DeviceBatch
    assert issubclass(data.DeviceBatch, data.Batch)
    model, _, X, y = make_problem(MODEL_CASES[4])
    b = model.batch(X, y)
    assert type(b) is data.Batch and model.batch(b, None) is b
    assert not hasattr(data.DeviceBatch(b.X, b.Y), "device_Y")  # dead code removed
