"""Directions: normalizations, orthogonalization, PCA of a trajectory, between two solutions."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastscape
from fastscape import directions as D

MODEL = fastscape.MLP([4, 5, 3, 2], activation="tanh", loss="softmax_ce")


def _theta(seed=0):
    theta = np.random.default_rng(seed).normal(size=MODEL.n_params)
    return theta


def _row_norms(v, lay):
    return np.linalg.norm(v[lay.weight].reshape(lay.shape), axis=1)


def test_filter_rows_have_theta_row_norms():
    theta = _theta()
    d = D.random(MODEL, theta, seed=3, norm="filter")
    for lay in MODEL.layout:
        assert_allclose(_row_norms(d.vector, lay), _row_norms(theta, lay), rtol=1e-13)
        assert not d.vector[lay.bias].any()  # ignore_bias zeroes biases
    assert d.norm == "filter" and d.seed == 3 and d.ignore_bias is True


def test_filter_with_biases_scaled_once_per_layer():
    theta = _theta(1)
    d = D.random(MODEL, theta, seed=4, norm="filter", ignore_bias=False)
    for lay in MODEL.layout:
        b, tb = d.vector[lay.bias], theta[lay.bias]
        assert_allclose(np.linalg.norm(b), np.linalg.norm(tb), rtol=1e-13)
        # not theta's own bias: a fresh Gaussian block rescaled
        assert not np.allclose(b, tb)


def test_layer_and_model_norms():
    theta = _theta(2)
    d = D.random(MODEL, theta, seed=5, norm="layer")
    for lay in MODEL.layout:
        assert_allclose(np.linalg.norm(d.vector[lay.weight]), np.linalg.norm(theta[lay.weight]))
    d = D.random(MODEL, theta, seed=5, norm="model", ignore_bias=False)
    assert_allclose(np.linalg.norm(d.vector), np.linalg.norm(theta), rtol=1e-13)


def test_same_seed_same_direction_and_zero_rows():
    theta = _theta(3)
    lay = MODEL.layout[0]
    theta[lay.weight.start : lay.weight.start + lay.shape[1]] = 0.0  # first filter is zero
    a = D.random(MODEL, theta, seed=7)
    b = D.random(MODEL, theta, seed=7)
    np.testing.assert_array_equal(a.vector, b.vector)
    assert not a.vector[lay.weight.start : lay.weight.start + lay.shape[1]].any()


def test_orthonormalize():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 50))
    e1, e2 = D.orthonormalize(a, b)
    G = np.array([e1.vector, e2.vector])
    assert_allclose(G @ G.T, np.eye(2), atol=1e-14)
    # same plane: b is a combination of e1, e2
    coef = np.linalg.lstsq(G.T, b, rcond=None)[0]
    assert_allclose(G.T @ coef, b, atol=1e-12)


@pytest.mark.parametrize("norm", ["filter", "layer", "model", None])
def test_pair_orthogonal_and_normalized(norm):
    theta = _theta(4)
    d1, d2 = D.pair(MODEL, theta, seed=11, norm=norm, ignore_bias=False)
    assert abs(d1.vector @ d2.vector) < 1e-12 * np.linalg.norm(d1.vector) * np.linalg.norm(
        d2.vector
    )
    np.testing.assert_array_equal(
        d1.vector, D.random(MODEL, theta, 11, norm, ignore_bias=False).vector
    )
    if norm == "filter":
        for lay in MODEL.layout:
            assert_allclose(_row_norms(d2.vector, lay), _row_norms(theta, lay), rtol=1e-12)
    if norm == "layer":
        for lay in MODEL.layout:
            want = np.linalg.norm(theta[lay.weight])
            assert_allclose(np.linalg.norm(d2.vector[lay.weight]), want, rtol=1e-12)


def test_pca_of_a_trajectory():
    rng = np.random.default_rng(5)
    P, T = 30, 40
    u, v = np.linalg.qr(rng.normal(size=(P, 2)))[0].T
    t = np.linspace(0, 1, T)
    final = rng.normal(size=P)
    traj = final + np.outer(3 * (1 - t), u) + np.outer(0.5 * np.sin(3 * (1 - t)), v)
    res = D.pca(traj, final, k=2)
    assert_allclose(res.explained_variance_ratio.sum(), 1.0, rtol=1e-10)
    assert res.explained_variance_ratio[0] > res.explained_variance_ratio[1]
    G = np.array([d.vector for d in res.directions])
    assert_allclose(G @ G.T, np.eye(2), atol=1e-12)
    # the trajectory lies in the plane: the projection reconstructs it exactly
    assert_allclose(final + res.projection @ G, traj, atol=1e-10)
    assert_allclose(res.projection[-1], 0.0, atol=1e-12)
    assert res.projection.shape == (T, 2)


def test_pca_on_a_real_training_run():
    X, y = fastscape.datasets.blobs(60, seed=1)
    model = fastscape.MLP([2, 4, 2], "tanh", "softmax_ce")
    fit = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=60, record_every=5)
    res = D.pca(fit.trajectory, k=2)
    assert 0 < res.explained_variance_ratio[1] <= res.explained_variance_ratio[0] <= 1


def test_between():
    a, b = np.arange(5.0), np.arange(5.0) ** 2
    d = D.between(a, b)
    assert_allclose(a + 1.0 * np.asarray(d), b)
    assert d.kind == "between"


def test_bad_inputs():
    theta = _theta()
    with pytest.raises(ValueError, match="theta has length"):
        D.random(MODEL, theta[:-1])
    with pytest.raises(ValueError, match="unknown norm"):
        D.random(MODEL, theta, norm="row")
    with pytest.raises(ValueError, match="zero"):
        D.random(MODEL, np.zeros(MODEL.n_params), norm="filter")
    with pytest.raises(ValueError, match="not linearly independent"):
        D.orthonormalize(theta, 3 * theta)
    with pytest.raises(ValueError, match="d2 has zero norm"):
        D.orthonormalize(theta, np.zeros_like(theta))
    with pytest.raises(ValueError, match="d2 has length"):
        D.orthonormalize(theta, theta[:3])
    with pytest.raises(ValueError, match="equal"):
        D.between(theta, theta)
    with pytest.raises(ValueError, match="k=3 exceeds"):
        D.pca(np.random.default_rng(0).normal(size=(3, 5)), k=3)
    with pytest.raises(ValueError, match="non-finite"):
        D.between(theta, np.full_like(theta, np.nan))
    with pytest.raises(ValueError, match="layout"):
        D.random(2, np.ones(2), norm="filter")
