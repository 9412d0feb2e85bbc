"""Paths: Bézier endpoints, weights, barriers, a trained curve lowering the barrier."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastscape
from fastscape import functions as F
from fastscape import paths


def _xor(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, ((X[:, 0] * X[:, 1]) > 0).astype(int)


@pytest.fixture(scope="module")
def two_minima():
    """A small MLP trained from two seeds on XOR-like data: two distinct minima."""
    X, y = _xor()
    model = fastscape.MLP([2, 8, 2], "tanh", "softmax_ce")
    a = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=400, seed=1).theta
    b = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=400, seed=2).theta
    return model, a, b, X, y


def test_weights():
    t = np.linspace(0, 1, 13)
    assert_allclose(paths.bernstein(t).sum(axis=1), 1.0)
    H = paths.hat_weights(t, 4)
    assert_allclose(H.sum(axis=1), 1.0)
    assert_allclose(H[[0, 4, 8, 12]], np.eye(4))  # knots at t = 0, 1/3, 2/3, 1


def test_bezier_passes_through_endpoints_and_matches_formula(two_minima):
    model, a, b, X, y = two_minima
    w = a + b + 0.3
    p = paths.bezier_path(model, a, w, b, X, y, ts=[0.0, 0.3, 1.0])
    assert_allclose(p.loss[0], model.loss(a, X, y), rtol=1e-10)
    assert_allclose(p.loss[2], model.loss(b, X, y), rtol=1e-10)
    assert_allclose(p.endpoint_loss, [model.loss(a, X, y), model.loss(b, X, y)], rtol=1e-10)
    t = 0.3
    phi = (1 - t) ** 2 * a + 2 * t * (1 - t) * w + t**2 * b
    assert_allclose(p.loss[1], model.loss(phi, X, y), rtol=1e-10)
    # with the bend at the midpoint the curve is the segment (re-parametrized identically)
    lin = paths.linear_path(model, a, b, X, y, ts=11)
    mid = paths.bezier_path(model, a, 0.5 * (a + b), b, X, y, ts=11)
    assert_allclose(mid.loss, lin.loss, rtol=1e-9)


def test_polychain_hits_its_points():
    pts = np.array([[1.0, 1.0], [0.0, 2.0], [-1.0, 0.5]])
    p = paths.polychain_path(F.rosenbrock, pts, ts=5)
    assert_allclose(p.loss[[0, 2, 4]], [F.rosenbrock(q) for q in pts], rtol=1e-14)
    assert_allclose(p.loss[1], F.rosenbrock(0.5 * (pts[0] + pts[1])), rtol=1e-14)


def test_barrier_definition():
    p = paths.linear_path(F.saddle, [-1.0, 0.0], [1.0, 0.0], ts=21)  # x^2: 1 -> 0 -> 1
    assert p.barrier == 0.0
    q = paths.linear_path(F.saddle, [0.0, -1.0], [0.0, 1.0], ts=21)  # -y^2: -1 -> 0 -> -1
    assert_allclose(paths.barrier(q), 1.0)


def test_fit_bezier_lowers_the_barrier(two_minima):
    model, a, b, X, y = two_minima
    lin = paths.linear_path(model, a, b, X, y)
    fit = paths.fit_bezier(model, a, b, X, y, steps=300, lr=0.05, seed=0)
    curve = paths.bezier_path(model, a, fit.bend, b, X, y)
    assert lin.barrier > 0.5
    assert curve.barrier < 0.5 * lin.barrier
    assert fit.loss_history.shape == (300,)


def test_mode_connectivity_report(two_minima):
    model, a, b, X, y = two_minima
    mc = paths.mode_connectivity(model, a, b, X, y, ts=21, steps=50, lr=0.05)
    assert_allclose(mc.linear_barrier, mc.linear.barrier)
    assert mc.curve is not None and mc.bend.shape == a.shape
    assert mc.linear_connected is False  # the segment rises far above 1.1 x the endpoints
    same = paths.mode_connectivity(model, a, a + 1e-9, X, y, fit=False)
    assert same.linear_connected is True and np.isnan(same.curve_barrier)


def test_bad_inputs(two_minima):
    model, a, b, X, y = two_minima
    with pytest.raises(ValueError, match="ts must lie in"):
        paths.linear_path(model, a, b, X, y, ts=[0.0, 1.5])
    with pytest.raises(ValueError, match="theta_b has length"):
        paths.linear_path(model, a, b[:-1], X, y)
    with pytest.raises(ValueError, match="bend has length"):
        paths.bezier_path(model, a, a[:3], b, X, y)
    with pytest.raises(ValueError, match="unknown method"):
        paths.fit_bezier(model, a, b, X, y, method="lbfgs")
    with pytest.raises(ValueError, match="points needs at least 2"):
        paths.polychain_path(F.quadratic, np.ones((1, 2)))


def _near_zero_pair():
    """The issue's case: two equivalent least-squares fits of a 1-1-1 linear net, (w1, w2)
    and (−w1, −w2), endpoint losses 5.7e-5 and 6.2e-5; the segment passes through w = 0
    (the product w1 w2 vanishes at t = ½), a barrier of 1.7e-4."""
    model = fastscape.MLP([1, 1, 1], "identity", "mse")
    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, 40)
    x = (x - x.mean()) / x.std()
    noise = rng.normal(size=40)
    noise -= noise.mean()
    noise -= (noise @ x) / (x @ x) * x  # orthogonal to the fit: L(a) = its variance
    s = 0.01318
    y = s * x + np.sqrt(5.7e-5) * noise / noise.std()

    def theta(w1, w2, b2=0.0):
        t = np.zeros(model.n_params)
        t[model.layout[0].weight], t[model.layout[1].weight] = w1, w2
        t[model.layout[1].bias] = b2
        return t

    return model, theta(1.0, s), theta(-1.0, -s, np.sqrt(5e-6)), x[:, None], y


def test_connectivity_flags_near_zero_loss_use_the_absolute_tolerance():
    model, a, b, X, y = _near_zero_pair()
    rel = paths.mode_connectivity(model, a, b, X, y, fit=False, atol=0.0)
    assert_allclose(rel.linear.endpoint_loss, [5.7e-5, 6.2e-5], rtol=1e-10)
    assert_allclose(rel.linear_barrier, 1.7e-4, rtol=1e-3)
    # the purely relative rule (the seeds' 1.1×) calls this pair unconnected ...
    assert rel.linear_connected is False and rel.atol == 0.0
    # ... the default absolute tolerance (1e-3) does not, and a smaller one does again
    mc = paths.mode_connectivity(model, a, b, X, y, fit=False)
    assert mc.linear_connected is True and mc.atol == paths.DEFAULT_BARRIER_ATOL == 1e-3
    tight = paths.mode_connectivity(model, a, b, X, y, fit=False, atol=1.6e-4)
    assert tight.linear_connected is False
    # the flag is exactly max loss <= max(threshold × ends, ends + atol)
    top = max(mc.linear.loss.max(), 6.2e-5)
    edge = top - mc.linear.endpoint_loss.max()
    assert paths.mode_connectivity(model, a, b, X, y, fit=False,
                                   atol=edge * (1 + 1e-9)).linear_connected  # fmt: skip
    with pytest.raises(ValueError, match="atol"):
        paths.mode_connectivity(model, a, b, X, y, fit=False, atol=-1.0)
    with pytest.raises(ValueError, match="threshold must be >= 1"):
        paths.mode_connectivity(model, a, b, X, y, fit=False, threshold=0.9)


def test_interpolated_barrier_is_frankles_definition():
    model, a, b, X, y = _near_zero_pair()
    mc = paths.mode_connectivity(model, a, b, X, y, ts=41, fit=False)
    t = np.linspace(0, 1, 41)
    la, lb = model.loss(a, X, y), model.loss(b, X, y)
    along = np.array([model.loss((1 - s) * a + s * b, X, y) for s in t])
    want = np.max(along - ((1 - t) * la + t * lb))
    assert_allclose(mc.linear_interpolated_barrier, want, rtol=1e-9)
    # the bump is at t = ½ where the baseline is the mean of the endpoints: above the
    # worse-endpoint barrier by half the endpoint gap
    assert_allclose(mc.linear_interpolated_barrier - mc.linear_barrier, 0.5 * (lb - la),
                    rtol=1e-6)  # fmt: skip
    assert np.isnan(mc.curve_interpolated_barrier)
    # a convex loss stays below the line between its endpoint losses: no barrier, whether
    # the segment climbs one wall or crosses the bottom
    wall = paths.linear_path(F.quadratic, [0.0, 1.0], [0.0, 3.0], ts=11)
    assert paths.interpolated_barrier(wall) == 0.0
    bowl = paths.linear_path(F.saddle, [-1.0, 0.0], [1.0, 0.0], ts=21)
    assert paths.interpolated_barrier(bowl) == 0.0
    hill = paths.linear_path(F.saddle, [0.0, -1.0], [0.0, 1.0], ts=21)  # -y²: -1 -> 0 -> -1
    assert_allclose(paths.interpolated_barrier(hill), 1.0)
    with pytest.raises(TypeError, match="PathProfile"):
        paths.interpolated_barrier(np.zeros(3))


def test_mode_connectivity_reports_the_curves_interpolated_barrier(two_minima):
    model, a, b, X, y = two_minima
    mc = paths.mode_connectivity(model, a, b, X, y, ts=21, steps=30, lr=0.05)
    assert_allclose(mc.curve_interpolated_barrier, paths.interpolated_barrier(mc.curve))
    assert mc.linear_interpolated_barrier >= mc.linear_barrier - 1e-15
