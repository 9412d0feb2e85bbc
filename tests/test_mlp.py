"""MLP kernels against their NumPy twins, finite differences and closed forms."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from fastscape.kernels import mlp as kmlp
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import reference as ref


def _ref_args(model, X, y):
    data = model.batch(X, y)
    return model.sizes, model.activation, model.loss_name, data.X, data.Y


def test_loss_matches_reference(problem):
    model, theta, X, y = problem
    sizes, act, loss, Xk, Y = _ref_args(model, X, y)
    assert_allclose(
        model.loss(theta, X, y), ref.mlp_loss(theta, sizes, act, loss, Xk, Y), rtol=1e-10
    )


def test_grad_matches_reference(problem):
    model, theta, X, y = problem
    sizes, act, loss, Xk, Y = _ref_args(model, X, y)
    value, g = model.grad(theta, X, y)
    rvalue, rg = ref.mlp_loss_grad(theta, sizes, act, loss, Xk, Y)
    assert_allclose(value, rvalue, rtol=1e-10)
    assert_allclose(g, rg, rtol=1e-10, atol=1e-13 * np.abs(rg).max())


def test_hvp_matches_reference(problem):
    model, theta, X, y = problem
    sizes, act, loss, Xk, Y = _ref_args(model, X, y)
    V = np.random.default_rng(1).normal(size=(3, model.n_params))
    HV = model.hvp(theta, V, X, y)
    for v, hv in zip(V, HV):
        r = ref.block_hvp(theta, v, sizes, act, loss, Xk, Y)
        assert_allclose(hv, r, rtol=1e-8, atol=1e-11 * np.abs(r).max())
    # a single vector gives a single row
    assert_allclose(model.hvp(theta, V[0], X, y), HV[0], rtol=1e-12)


def test_hessian_matches_reference(problem):
    model, theta, X, y = problem
    sizes, act, loss, Xk, Y = _ref_args(model, X, y)
    H = model.hessian(theta, X, y)
    R = ref.mlp_hessian(theta, sizes, act, loss, Xk, Y)
    assert_allclose(H, R, rtol=1e-8, atol=1e-11 * np.abs(R).max())
    assert_allclose(H, H.T, rtol=0, atol=1e-12 * np.abs(H).max())
    v = np.random.default_rng(2).normal(size=model.n_params)
    hv = model.hvp(theta, v, X, y)
    assert_allclose(H @ v, hv, rtol=1e-8, atol=1e-10 * np.abs(hv).max())


def test_logits_match_reference(problem):
    model, theta, X, _ = problem
    assert_allclose(
        model.logits(theta, X), ref.mlp_logits(theta, model.sizes, model.activation, X), rtol=1e-12
    )


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_grad_against_finite_differences(case):
    model, theta, X, y = make_problem(case, n=25, seed=7, scale=0.5)
    sizes, act, loss, Xk, Y = _ref_args(model, X, y)
    _, g = model.grad(theta, X, y)
    h = 1e-6
    fd = np.empty_like(theta)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        fd[j] = (
            ref.mlp_loss(theta + e, sizes, act, loss, Xk, Y)
            - ref.mlp_loss(theta - e, sizes, act, loss, Xk, Y)
        ) / (2 * h)
    # relu kinks: a sample whose pre-activation sits within h of 0 would spoil the difference
    assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_hvp_against_finite_differences(case):
    model, theta, X, y = make_problem(case, n=25, seed=8, scale=0.5)
    sizes, act, loss, Xk, Y = _ref_args(model, X, y)
    v = np.random.default_rng(9).normal(size=model.n_params)
    h = 1e-5
    fd = (
        ref.mlp_loss_grad(theta + h * v, sizes, act, loss, Xk, Y)[1]
        - ref.mlp_loss_grad(theta - h * v, sizes, act, loss, Xk, Y)[1]
    ) / (2 * h)
    assert_allclose(model.hvp(theta, v, X, y), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_fn", [fastscape.Logistic, fastscape.LinearRegression])
def test_linear_models_hessian_is_psd_and_closed_form(model_fn):
    rng = np.random.default_rng(3)
    model = model_fn(6)
    X = rng.normal(size=(50, 6))
    y = rng.integers(0, 2, 50) if model.loss_name == "logistic" else rng.normal(size=50)
    theta = rng.normal(size=model.n_params)
    H = model.hessian(theta, X, y)
    assert np.linalg.eigvalsh(H).min() > -1e-12
    if model.loss_name == "mse":
        Xa = np.c_[X, np.ones(50)]
        assert_allclose(H, 2 * Xa.T @ Xa / 50, rtol=1e-12)
    else:
        p = 1 / (1 + np.exp(-(X @ theta[:6] + theta[6])))
        Xa = np.c_[X, np.ones(50)]
        assert_allclose(H, Xa.T @ np.diag(p * (1 - p)) @ Xa / 50, rtol=1e-10)


def test_multi_output_mse_hessian_closed_form():
    model = fastscape.LinearRegression(3, n_outputs=2)
    model_, theta, X, y = make_problem(([3, 2], "identity", "mse"), n=30, seed=4)
    assert model == model_
    H = model.hessian(theta, X, y)
    R = ref.mlp_hessian(theta, model.sizes, "identity", "mse", X, np.asarray(y))
    assert_allclose(H, R, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[2], MODEL_CASES[7]], ids=case_id)
def test_thread_count_invariance(case):
    model, theta, X, y = make_problem(case, n=301, seed=5)
    V = np.random.default_rng(6).normal(size=(2, model.n_params))
    results = []
    for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        with fastscape.threads(n_threads):
            results.append(
                (model.loss(theta, X, y), *model.grad(theta, X, y), model.hvp(theta, V, X, y))
            )
    for a, b in zip(*results):
        assert_array_equal(a, b)


@pytest.mark.parametrize("case", MODEL_CASES[:6], ids=case_id)
def test_sample_blocks_change_only_rounding(case):
    """Loss and gradient go through blocks of samples; the block size is a memory knob."""
    model, theta, X, y = make_problem(case, n=45)
    data = model.batch(X, y)
    s, a, l = model.spec.kernel_args
    Xk, Yk, c = data.X, data.Y, fastscape.config.n_chunks_for(data.X.shape[0])
    whole = kmlp.mlp_loss_grad(theta, s, a, l, Xk, Yk, c, 45)
    assert kmlp.mlp_loss(theta, s, a, l, Xk, Yk, c, 45) == whole[0]
    for block in (1, 8, 44):
        value, g = kmlp.mlp_loss_grad(theta, s, a, l, Xk, Yk, c, block)
        assert_allclose(value, whole[0], rtol=1e-13)
        assert_allclose(g, whole[1], rtol=1e-12, atol=1e-15 * np.abs(whole[1]).max())
        assert_allclose(kmlp.mlp_loss(theta, s, a, l, Xk, Yk, c, block), value, rtol=1e-13)


def test_threads_context_restores_count():
    before = numba.get_num_threads()
    with fastscape.threads(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="n_threads"):
        with fastscape.threads(0):
            pass


@pytest.mark.parametrize("loss", ["logistic", "softmax_ce"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_extreme_logits_stay_finite(loss, sign):
    out = 1 if loss == "logistic" else 3
    model = fastscape.MLP([2, out], loss=loss)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([1, 0, 1]) if loss == "logistic" else np.array([0, 1, 2])
    W = sign * 1e4 * np.ones((out, 2))
    if out > 1:
        W[0] *= -1
    theta = model.flatten([(W, np.zeros(out))])
    value, g = model.grad(theta, X, y)
    hv = model.hvp(theta, np.ones(model.n_params), X, y)
    H = model.hessian(theta, X, y)
    assert np.isfinite(value) and np.isfinite(g).all() and np.isfinite(hv).all()
    assert np.isfinite(H).all()
    sizes, act, lname, Xk, Y = _ref_args(model, X, y)
    assert_allclose(value, ref.mlp_loss(theta, sizes, act, lname, Xk, Y), rtol=1e-12)


def test_nan_propagates_through_kernels():
    """fastmath flags exclude nnan/ninf: a NaN in theta must reach the result."""
    model, theta, X, y = make_problem(MODEL_CASES[7], n=20)
    assert len(model.layout) > 1  # a NaN in the first layer (BLAS) and in a later one (kernel)
    data = model.batch(X, y)
    s, a, l = model.spec.kernel_args
    Xk, Yk, c = data.X, data.Y, fastscape.config.n_chunks_for(data.X.shape[0])
    for where in (0, model.layout[1].weight.start):
        bad = theta.copy()
        bad[where] = np.nan
        assert np.isnan(kmlp.mlp_loss(bad, s, a, l, Xk, Yk, c, 7))
        value, g = kmlp.mlp_loss_grad(bad, s, a, l, Xk, Yk, c, 7)
        assert np.isnan(value) and np.isnan(g).any()
    theta = theta.copy()
    theta[model.layout[-1].bias.start] = np.inf  # an infinite logit
    assert not np.isfinite(kmlp.mlp_loss(theta, s, a, l, Xk, Yk, c, 7))


NEW_CASES = [
    ([4, 5, 3], "leaky_relu", "softmax_ce"),
    ([3, 6, 1], "gelu", "logistic"),
    ([4, 5, 2], "gelu_tanh", "mse"),
    ([3, 4, 5, 3], "gelu", "softmax_ce"),
    ([3, 5, 4, 1], "gelu_tanh", "logistic"),
    ([4, 3, 4, 2], "leaky_relu", "mse"),
]


@pytest.mark.parametrize("case", NEW_CASES, ids=case_id)
def test_new_activations_match_reference(case):
    """leaky_relu, gelu, gelu_tanh: loss, gradient, HVP, Hessian and logits against the twins."""
    model, theta, X, y = make_problem(case, n=50, seed=7, scale=0.9)
    sizes, act, lname, Xk, Y = _ref_args(model, X, y)
    value, g = model.grad(theta, X, y)
    want_v, want_g = ref.mlp_loss_grad(theta, sizes, act, lname, Xk, Y)
    assert_allclose(model.loss(theta, X, y), want_v, rtol=1e-12)
    assert_allclose(value, want_v, rtol=1e-12)
    assert_allclose(g, want_g, rtol=1e-10, atol=1e-14)
    V = np.random.default_rng(8).normal(size=(2, model.n_params))
    want_hv = np.stack([ref.block_hvp(theta, v, sizes, act, lname, Xk, Y) for v in V])
    assert_allclose(model.hvp(theta, V, X, y), want_hv, rtol=1e-10, atol=1e-12)
    want_H = ref.mlp_hessian(theta, sizes, act, lname, Xk, Y)
    assert_allclose(model.hessian(theta, X, y), want_H, rtol=1e-10, atol=1e-12)
    assert_allclose(model.logits(theta, X), ref.mlp_logits(theta, sizes, act, Xk), rtol=1e-12)


@pytest.mark.parametrize("case", NEW_CASES[3:], ids=case_id)
def test_new_activations_thread_count_invariance(case):
    model, theta, X, y = make_problem(case, n=301, seed=5)
    V = np.random.default_rng(6).normal(size=(2, model.n_params))
    results = []
    for n_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        with fastscape.threads(n_threads):
            results.append(
                (model.loss(theta, X, y), *model.grad(theta, X, y), model.hvp(theta, V, X, y),
                 model.hessian(theta, X, y))
            )  # fmt: skip
    for a, b in zip(*results):
        assert_array_equal(a, b)
