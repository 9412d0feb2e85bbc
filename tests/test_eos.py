"""Edge of stability: progressive sharpening up to 2/η, then hovering there (Cohen et al. 2021)."""

from __future__ import annotations

import numpy as np
import pytest

import fastscape
from fastscape.eos import edge_of_stability


def _problem(n=60, seed=0):
    """A small regression task a tanh MLP cannot fit at once: sin(2 x0) cos(x1), standardised."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1])
    y = (y - y.mean()) / y.std()
    model = fastscape.MLP([4, 16, 16, 1], activation="tanh", loss="mse")
    return model, X, y


@pytest.fixture(scope="module")
def run():
    model, X, y = _problem()
    return model, X, y, edge_of_stability(model, X, y, lr=0.1, steps=800, every=20)


def test_progressive_sharpening_then_edge_of_stability(run):
    res = run[3]
    s = res.normalized_sharpness  # λmax / (2/η)
    assert res.stop_reason == "max_steps" and res.threshold == pytest.approx(20.0)
    assert res.eig_converged.all()
    # starts well below the threshold ...
    assert s[0] < 0.5
    # ... rises to it (progressive sharpening) ...
    cross = res.first_crossing()
    assert cross is not None and cross <= 400
    before = s[res.steps < cross]
    assert before[-1] > 1.8 * before[0]
    # ... and hovers around 2/η over the last 30% of training, while the loss still falls
    late = s[res.steps >= 0.7 * res.n_steps]
    assert late.size >= 10
    assert late.min() > 0.85 and late.max() < 1.2
    assert 0.95 < np.median(late) < 1.08
    assert res.loss[-1] < 0.1 * res.loss[0]


def test_recorded_values_are_exact(run):
    model, X, y, res = run
    np.testing.assert_allclose(res.loss[-1], model.loss(res.theta, X, y), rtol=1e-12)
    assert res.loss.shape == (801,) and res.steps[-1] == 800 and res.steps[1] == 20
    lam = np.linalg.eigvalsh(model.hessian(res.theta, X, y))[-1]
    np.testing.assert_allclose(res.lambda_max[-1], lam, rtol=1e-6)
    # the run is plain gradient descent
    gd = fastscape.fit(model, X, y, method="gd", lr=0.1, steps=800, gtol=0.0, theta0=model.init(0))
    np.testing.assert_allclose(res.theta, gd.theta, rtol=1e-10, atol=1e-12)


def test_power_and_lanczos_agree():
    model, X, y = _problem(n=30)
    a = edge_of_stability(model, X, y, lr=0.1, steps=40, every=10, method="power", tol=1e-8,
                          maxiter=5000)  # fmt: skip
    b = edge_of_stability(model, X, y, lr=0.1, steps=40, every=10, method="lanczos", tol=0.0)
    np.testing.assert_allclose(a.lambda_max, b.lambda_max, rtol=1e-6)
    np.testing.assert_array_equal(a.steps, [0, 10, 20, 30, 40])


def test_budget_per_measurement_is_passed_through(capsys):
    model, X, y = _problem(n=30)
    short = edge_of_stability(model, X, y, lr=0.1, steps=20, every=10, tol=1e-12, max_hvps=3)
    assert not short.eig_converged.any() and (short.eig_iterations == 3).all()
    full = edge_of_stability(model, X, y, lr=0.1, steps=20, every=10, progress=True)
    assert full.eig_converged.all()
    assert "edge of stability" in capsys.readouterr().err
    # the budget never changes the GD path, only the measurements
    np.testing.assert_array_equal(short.loss, full.loss)


def test_divergence_is_reported_and_bad_inputs():
    model, X, y = _problem(n=30)
    res = edge_of_stability(model, X, y, lr=50.0, steps=200, every=5)
    assert res.stop_reason == "nonfinite" and res.n_steps < 200
    assert np.isfinite(res.loss).all()
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        edge_of_stability(model, X, y, lr=0.0)
    with pytest.raises(ValueError, match="unknown method"):
        edge_of_stability(model, X, y, method="arpack")
    with pytest.raises(ValueError, match="every must be >= 1"):
        edge_of_stability(model, X, y, every=0)


def test_plot_eos(run):
    from fastscape import _plot_curvature as pc

    res = run[3]
    fig = pc.plot_eos(res)
    top, bottom = fig.axes
    np.testing.assert_allclose(top.lines[0].get_ydata(), res.lambda_max)
    np.testing.assert_allclose(top.lines[1].get_ydata(), [res.threshold] * 2)
    assert bottom.get_yscale() == "log"
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), res.loss)
