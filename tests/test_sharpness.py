"""Sharpness: ε-sharpness on exact quadratics, SAM/ASAM against definitions and finite
differences, the sam/asam training methods, and the comparison table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_problem

import fastscape
from fastscape import curvature, sharpness


def _least_squares(seed=0, n=50, d=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    model = fastscape.LinearRegression(d)
    A = np.hstack([X, np.ones((n, 1))])
    w = np.linalg.lstsq(A, y, rcond=None)[0]
    return model, w, X, y  # theta = (W row, b): the exact minimiser


def _directions(seed, r, P):
    D = np.random.default_rng(seed).standard_normal((r, P))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def test_epsilon_sharpness_is_exact_on_a_quadratic():
    model, theta, X, y = _least_squares()
    H = model.hessian(theta, X, y)
    eps = 0.3
    res = sharpness.epsilon_sharpness(model, theta, X, y, eps=eps, n_directions=200, seed=4)
    D = _directions(4, 200, model.n_params)
    # MSE is exactly quadratic and theta is its minimiser: L(θ + εd) - L(θ) = ½ ε² dᵀHd
    want = 0.5 * eps**2 * np.einsum("ij,jk,ik->i", D, H, D)
    np.testing.assert_allclose(res.increases, want, rtol=1e-8, atol=1e-14)
    lam = np.linalg.eigvalsh(H)[-1]
    np.testing.assert_allclose(res.lambda_max, lam, rtol=1e-10)
    np.testing.assert_allclose(res.quadratic_prediction, 0.5 * eps**2 * lam, rtol=1e-10)
    assert res.max_increase <= res.quadratic_prediction * (1 + 1e-10)
    assert res.max_increase == res.increases.max() and res.grad_norm < 1e-10


def test_epsilon_sharpness_matches_pointwise_losses():
    model, theta, X, y = make_problem(([4, 6, 3], "tanh", "softmax_ce"), n=40, seed=2)
    res = sharpness.epsilon_sharpness(model, theta, X, y, eps=0.1, n_directions=16, seed=1,
                                      lambda_max=1.0)  # fmt: skip
    D = _directions(1, 16, model.n_params)
    base = model.loss(theta, X, y)
    want = np.array([model.loss(theta + 0.1 * d, X, y) for d in D]) - base
    np.testing.assert_allclose(res.increases, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(res.base_loss, base, rtol=1e-13)
    assert res.mean_increase == pytest.approx(want.mean(), rel=1e-9, abs=1e-13)


def test_sam_perturbation_and_sharpness():
    model, theta, X, y = make_problem(([3, 5, 2], "tanh", "mse"), n=30, seed=3)
    g = model.grad(theta, X, y)[1]
    e = sharpness.sam_perturbation(model, theta, X, y, rho=0.07)
    np.testing.assert_allclose(np.linalg.norm(e), 0.07, rtol=1e-12)
    np.testing.assert_allclose(e, 0.07 * g / np.linalg.norm(g), rtol=1e-12)
    s = sharpness.sam_sharpness(model, theta, X, y, rho=0.07)
    assert s == pytest.approx(model.loss(theta + e, X, y) - model.loss(theta, X, y), rel=1e-12)
    # first order: L(θ + ρ g/|g|) - L(θ) = ρ |g| + O(ρ²)
    for rho in (1e-3, 1e-4):
        s = sharpness.sam_sharpness(model, theta, X, y, rho=rho)
        assert abs(s - rho * np.linalg.norm(g)) < 50 * rho**2 * max(1.0, np.linalg.norm(g))


def test_asam_perturbation_scales_weights_not_biases():
    model, theta, X, y = make_problem(([3, 4, 2], "relu", "softmax_ce"), n=30, seed=5)
    g = model.grad(theta, X, y)[1]
    mask = sharpness.weight_mask(model)
    assert mask.sum() == 3 * 4 + 4 * 2
    e = sharpness.sam_perturbation(model, theta, X, y, rho=0.5, adaptive=True, eta=0.01)
    T = np.where(mask, np.abs(theta) + 0.01, 1.0)
    # in the scaled coordinates the step has length rho and points along T g
    np.testing.assert_allclose(np.linalg.norm(e / T), 0.5, rtol=1e-12)
    np.testing.assert_allclose(e / T, 0.5 * (T * g) / np.linalg.norm(T * g), rtol=1e-12)


def test_sam_gradient_matches_finite_differences_of_the_perturbed_loss():
    model, theta, X, y = make_problem(([4, 5, 3], "tanh", "softmax_ce"), n=40, seed=6)
    for adaptive in (False, True):
        e = sharpness.sam_perturbation(model, theta, X, y, rho=0.05, adaptive=adaptive)
        gs = sharpness.sam_gradient(model, theta, X, y, rho=0.05, adaptive=adaptive)
        rng = np.random.default_rng(0)
        h = 1e-5
        for _ in range(4):  # directional derivatives of u -> L(u + ε*) at u = θ
            v = rng.normal(size=model.n_params)
            fd = (model.loss(theta + h * v + e, X, y) - model.loss(theta - h * v + e, X, y)) / (
                2 * h
            )
            assert fd == pytest.approx(gs @ v, rel=1e-6, abs=1e-9)


def test_raw_sharpness_changes_under_function_preserving_rescaling():
    """The premise of the warning (Dinh et al. 2017): ReLU layers rescaled by α and 1/α."""
    model, theta, X, y = make_problem(([3, 4, 2], "relu", "mse"), n=30, seed=8)
    (W1, b1), (W2, b2) = model.unflatten(theta)
    t2 = model.flatten([(3.0 * W1, 3.0 * b1), (W2 / 3.0, b2)])
    assert model.loss(t2, X, y) == pytest.approx(model.loss(theta, X, y), rel=1e-12)
    lam1 = curvature.top_eigen(model, theta, X, y, method="exact", which="LA").eigenvalue
    lam2 = curvature.top_eigen(model, t2, X, y, method="exact", which="LA").eigenvalue
    assert abs(lam2 / lam1 - 1.0) > 0.1


# ----------------------------------------------------------------------------- fit
@pytest.mark.parametrize("method", ["sam", "asam"])
def test_fit_sam_step_is_the_sam_gradient_step(method):
    model, theta, X, y = make_problem(([3, 4, 2], "tanh", "softmax_ce"), n=30, seed=9)
    res = fastscape.fit(model, X, y, method=method, lr=0.3, steps=1, theta0=theta, rho=0.1,
                        gtol=0.0)  # fmt: skip
    gs = sharpness.sam_gradient(model, theta, X, y, rho=0.1, adaptive=method == "asam")
    np.testing.assert_allclose(res.theta, theta - 0.3 * gs, rtol=1e-13, atol=1e-15)
    assert res.settings["rho"] == 0.1 and res.method == method


def test_fit_sam_trains():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    model = fastscape.MLP([2, 8, 2], "tanh", "softmax_ce")
    full = fastscape.fit(model, X, y, method="sam", lr=0.5, steps=150, rho=0.05)
    mini = fastscape.fit(model, X, y, method="sam", lr=0.2, steps=100, batch_size=16, rho=0.05)
    assert full.loss_history[-1] < 0.7 * full.loss_history[0]
    assert mini.final_loss < mini.loss_history[0]
    # as rho -> 0 SAM becomes gradient descent
    a = fastscape.fit(model, X, y, method="sam", lr=0.5, steps=20, rho=1e-9)
    b = fastscape.fit(model, X, y, method="gd", lr=0.5, steps=20)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-6)
    with pytest.raises(ValueError, match="rho must be finite and > 0"):
        fastscape.fit(model, X, y, method="sam", rho=0.0)


# ----------------------------------------------------------------------------- comparison
def test_compare_minima_table_and_warning():
    model, theta, X, y = make_problem(([3, 4, 2], "tanh", "softmax_ce"), n=40, seed=10)
    a = fastscape.fit(model, X, y, method="gd", lr=0.5, steps=60, theta0=theta).theta
    b = fastscape.fit(model, X, y, method="sam", lr=0.5, steps=60, theta0=theta, rho=0.1).theta
    with pytest.warns(sharpness.SharpnessWarning, match="reparameterization-invariant"):
        table = sharpness.compare_minima(model, {"gd": a, "sam": b}, X, y, n_directions=32)
    assert [r["name"] for r in table.rows] == ["gd", "sam"]
    H = model.hessian(a, X, y)
    row = table.rows[0]
    np.testing.assert_allclose(row["lambda_max"], np.linalg.eigvalsh(H)[-1], rtol=1e-9)
    np.testing.assert_allclose(row["trace"], np.trace(H), rtol=1e-12)
    assert row["loss"] == pytest.approx(model.loss(a, X, y), rel=1e-12)
    assert row["accuracy"] == model.accuracy(a, X, y)
    assert row["sam_sharpness"] == pytest.approx(sharpness.sam_sharpness(model, a, X, y))
    text = str(table)
    assert "lambda_max" in text and "sam" in text.splitlines()[-1]
    assert table.column("name") == ["gd", "sam"]


def test_bad_inputs():
    model, theta, X, y = make_problem(([3, 4, 2], "tanh", "softmax_ce"), n=20)
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        sharpness.epsilon_sharpness(model, theta, X, y, eps=-0.1)
    with pytest.raises(ValueError, match="n_directions must be >= 1"):
        sharpness.epsilon_sharpness(model, theta, X, y, n_directions=0)
    with pytest.raises(ValueError, match="rho must be finite and > 0"):
        sharpness.sam_perturbation(model, theta, X, y, rho=np.nan)
    with pytest.raises(ValueError, match="non-empty dict"):
        sharpness.compare_minima(model, {}, X, y)
    with pytest.raises(ValueError, match="has length"):
        sharpness.compare_minima(model, {"a": np.ones(3)}, X, y)
    with pytest.raises(TypeError, match="model must be an MLP"):
        sharpness.sam_gradient("model", theta, X, y)


# ----------------------------------------------------------------------------- box ε-sharpness
def _two_blobs_net():
    """The issue's 2-8-2 example: a tanh net trained on two Gaussian blobs."""
    rng = np.random.default_rng(0)
    shift = np.array([1.5, 0.0])
    X = np.vstack([rng.normal(size=(40, 2)) + shift, rng.normal(size=(40, 2)) - shift])
    y = np.repeat([0, 1], 40)
    model = fastscape.MLP([2, 8, 2], "tanh", "softmax_ce")
    theta = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=2000, gtol=1e-6).theta
    return model, theta, X, y


def test_box_sharpness_finds_more_than_random_directions_on_the_2_8_2_net():
    model, theta, X, y = _two_blobs_net()
    eps = 1e-3
    rand = sharpness.epsilon_sharpness(model, theta, X, y, eps=eps, n_directions=256,
                                       lambda_max=1.0)  # fmt: skip
    box = sharpness.box_sharpness(model, theta, X, y, eps=eps)
    assert rand.definition == "random-direction" and box.definition.startswith("box")
    # the ε-sphere lies inside the box (half-widths >= ε), and L-BFGS-B climbs: far above
    assert box.converged and box.status.tolist() == [0] and box.n_iterations[0] > 0
    assert box.n_evaluations[0] >= box.n_iterations[0]
    assert box.max_increase >= 10 * rand.max_increase > 0
    # the paper's normalisation, and the loss recomputed at the reported perturbation
    base = model.loss(theta, X, y)
    top = model.loss(theta + box.z, X, y)
    np.testing.assert_allclose([box.base_loss, box.max_loss], [base, top], rtol=1e-13)
    np.testing.assert_allclose(box.sharpness, (top - base) / (1 + base) * 100, rtol=1e-12)
    # the box is respected
    np.testing.assert_allclose(box.half_widths, eps * (np.abs(theta) + 1), rtol=1e-15)
    assert np.all(np.abs(box.z) <= box.half_widths)
    assert "converged" in str(box) and "Keskar" in str(box)


def test_box_sharpness_subspace_respects_the_box_in_y():
    model, theta, X, y = make_problem(([3, 5, 2], "tanh", "mse"), n=30, seed=3)
    A = np.linalg.qr(np.random.default_rng(7).normal(size=(model.n_params, 4)))[0]
    A = A * [1.0, 2.0, 0.5, 3.0]  # not orthonormal: the box uses the pseudo-inverse
    res = sharpness.box_sharpness(model, theta, X, y, eps=0.05, subspace=A, n_starts=2)
    want = 0.05 * (np.abs(np.linalg.pinv(A) @ theta) + 1)
    np.testing.assert_allclose(res.half_widths, want, rtol=1e-12)
    assert res.subspace_dim == 4 and res.y.shape == (4,) and res.status.shape == (2,)
    assert np.all(np.abs(res.y) <= res.half_widths)
    np.testing.assert_allclose(res.z, A @ res.y, rtol=1e-14)
    np.testing.assert_allclose(res.max_loss, model.loss(theta + res.z, X, y), rtol=1e-13)
    # an integer p draws an orthonormal A (seeded): same seed, same answer
    a = sharpness.box_sharpness(model, theta, X, y, eps=0.05, subspace=3, seed=2)
    b = sharpness.box_sharpness(model, theta, X, y, eps=0.05, subspace=3, seed=2)
    assert a.max_loss == b.max_loss and a.subspace_dim == 3


def test_box_sharpness_reaches_the_best_vertex_of_least_squares():
    """A convex quadratic's maximum on a box is at a vertex: enumerate the 2^P vertices."""
    import itertools

    model, theta, X, y = _least_squares(seed=1, n=30, d=3)
    eps = 0.2
    res = sharpness.box_sharpness(model, theta, X, y, eps=eps, n_starts=8, seed=0)
    half = eps * (np.abs(theta) + 1)
    A = np.hstack([X, np.ones((X.shape[0], 1))])

    def loss(t):  # the least-squares loss, written out
        return float(np.mean((A @ t - y) ** 2))

    vertices = [np.array(s) * half for s in itertools.product((-1.0, 1.0), repeat=theta.size)]
    brute = max(loss(theta + v) for v in vertices)
    assert res.converged
    np.testing.assert_allclose(res.max_loss, brute, rtol=1e-10)
    # the maximiser is a vertex
    np.testing.assert_allclose(np.abs(res.z), half, rtol=1e-10)
    # and no start can exceed the enumeration: one start only gives a lower bound
    one = sharpness.box_sharpness(model, theta, X, y, eps=eps, n_starts=1, seed=3)
    assert one.max_loss <= brute * (1 + 1e-12)


def test_box_sharpness_reports_a_maximisation_that_did_not_converge():
    model, theta, X, y = make_problem(([3, 5, 2], "tanh", "softmax_ce"), n=30, seed=3)
    res = sharpness.box_sharpness(model, theta, X, y, eps=0.5, maxiter=1, gtol=0.0, ftol=0.0)
    assert not res.converged and res.status[0] == 1 and res.n_iterations[0] == 1
    assert "NOT converged" in str(res)
    assert np.all(np.abs(res.z) <= res.half_widths)


def test_box_sharpness_bad_inputs():
    model, theta, X, y = make_problem(([3, 5, 2], "tanh", "mse"), n=10, seed=3)
    with pytest.raises(ValueError, match="eps"):
        sharpness.box_sharpness(model, theta, X, y, eps=0.0)
    with pytest.raises(ValueError, match="n_starts"):
        sharpness.box_sharpness(model, theta, X, y, n_starts=0)
    with pytest.raises(ValueError, match="subspace"):
        sharpness.box_sharpness(model, theta, X, y, subspace=model.n_params + 1)
    with pytest.raises(ValueError, match="subspace"):
        sharpness.box_sharpness(model, theta, X, y, subspace=np.ones((3, 2)))
    with pytest.raises(ValueError, match="maxiter"):
        sharpness.box_sharpness(model, theta, X, y, maxiter=0)
