"""Training: Newton on the convex models, first-order methods, minibatches, trajectories."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import datasets


def test_mse_newton_equals_lstsq():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    y = X @ rng.normal(size=5) + 0.3 + 0.1 * rng.normal(size=80)
    res = fastscape.fit(fastscape.LinearRegression(5), X, y, method="newton", steps=5, gtol=1e-10)
    coef = np.linalg.lstsq(np.c_[X, np.ones(80)], y, rcond=None)[0]
    assert res.stop_reason == "gtol"
    assert_allclose(res.theta, coef, rtol=1e-9, atol=1e-11)


def test_logistic_newton_on_blobs_reaches_tiny_gradient():
    X, y = datasets.blobs(200, seed=0)
    model = fastscape.Logistic(2)
    res = fastscape.fit(model, X, y, method="newton", steps=200, gtol=1e-8)
    assert res.converged and res.stop_reason == "gtol"
    assert np.linalg.norm(model.grad(res.theta, X, y)[1]) < 1e-8
    assert model.accuracy(res.theta, X, y) >= 0.99
    assert np.all(np.diff(res.loss_history) <= 1e-15)  # line search: monotone


@pytest.mark.parametrize("method", ["gd", "momentum", "adam"])
def test_first_order_methods_decrease_loss(method):
    X, y = datasets.blobs(100, seed=1)
    model = fastscape.MLP([2, 8, 1], activation="tanh", loss="logistic")
    res = fastscape.fit(model, X, y, method=method, lr=0.05, steps=200, seed=3)
    assert res.stop_reason == "max_steps" and res.n_steps == 200
    assert res.loss_history.shape == (201,)
    assert res.loss_history[-1] < 0.5 * res.loss_history[0]
    assert res.loss_history[-1] == pytest.approx(model.loss(res.theta, X, y), rel=1e-12)


def test_gd_step_is_exact():
    X, y = datasets.line(50)
    model = fastscape.LinearRegression(1)
    theta0 = np.array([0.5, -0.2])
    res = fastscape.fit(model, X, y, method="gd", lr=0.01, steps=1, theta0=theta0)
    assert_allclose(res.theta, theta0 - 0.01 * model.grad(theta0, X, y)[1], rtol=1e-15)


def test_minibatch_is_seeded_and_records_trajectory():
    X, y = datasets.blobs(90, seed=2)
    model = fastscape.MLP([2, 4, 1], loss="logistic")
    kw = dict(method="gd", lr=0.1, steps=25, batch_size=16, seed=5, record_every=10)
    a = fastscape.fit(model, X, y, **kw)
    b = fastscape.fit(model, X, y, **kw)
    c = fastscape.fit(model, X, y, **{**kw, "seed": 6})
    assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)
    assert_array_equal(a.trajectory_steps, [0, 10, 20, 25])
    assert a.trajectory.shape == (4, model.n_params)
    assert_array_equal(a.trajectory[-1], a.theta)
    assert_array_equal(a.trajectory[0], model.init(5))
    # per-step minibatch losses, then the full-batch loss of the result
    assert a.loss_history.shape == (27,)
    assert a.loss_history[-1] == pytest.approx(model.loss(a.theta, X, y), rel=1e-12)


def _check_diverged(res, model, X, y, theta0):
    """A diverged run: a finite, consistent result whose history ends at the returned theta."""
    assert res.stop_reason == "diverged" and not res.converged
    assert np.isfinite(res.theta).all()
    assert np.isfinite(res.loss_history).all()
    assert res.loss_history[-1] == pytest.approx(model.loss(res.theta, X, y), rel=1e-12)
    limit = fastscape.training.BLOWUP_FACTOR * max(
        model.loss(theta0, X, y), model.loss(np.zeros(model.n_params), X, y)
    )
    assert res.final_loss <= limit
    if res.trajectory is not None:
        assert_array_equal(res.trajectory[-1], res.theta)
        assert res.trajectory_steps[-1] == res.n_steps
        assert np.all(np.diff(res.trajectory_steps) > 0)


def test_nonfinite_loss_is_diverged():
    # lr = 1e300 on least squares: the first step overflows the loss to inf
    X, y = datasets.line(50)
    model = fastscape.LinearRegression(1)
    theta0 = np.array([0.5, -0.2])
    res = fastscape.fit(model, X, y, method="gd", lr=1e300, steps=50, theta0=theta0,
                        record_every=1)  # fmt: skip
    assert not np.isfinite(model.loss(theta0 - 1e300 * model.grad(theta0, X, y)[1], X, y))
    _check_diverged(res, model, X, y, theta0)
    assert res.n_steps == 0 and np.array_equal(res.theta, theta0)
    # a slower overflow: lr = 50 grows the residual geometrically until the limit
    slow = fastscape.fit(model, X, y, method="gd", lr=50.0, steps=2000, theta0=theta0)
    _check_diverged(slow, model, X, y, theta0)
    assert slow.n_steps < 2000


@pytest.mark.parametrize("method", ["gd", "adam"])
@pytest.mark.parametrize("lr", [1e10, 1e300])
def test_blown_up_loss_is_diverged_not_gtol_or_max_steps(method, lr):
    """The saturated tanh network blown up by a huge step: its loss stays finite (6e9 for
    adam at 1e10) and plain GD even walks to a zero gradient, which used to read as gtol."""
    X, y = datasets.blobs(200, seed=0)
    model = fastscape.MLP([2, 16, 2], activation="tanh")
    theta0 = model.init(0)
    res = fastscape.fit(model, X, y, method=method, lr=lr, steps=300, gtol=1e-8, record_every=5)
    _check_diverged(res, model, X, y, theta0)
    assert res.n_steps == 0 and np.array_equal(res.theta, theta0)  # the first step blew up
    assert res.loss_history.shape == (1,)


def test_minibatch_divergence_returns_the_last_checked_iterate():
    X, y = datasets.blobs(200, seed=0)
    model = fastscape.MLP([2, 16, 2], activation="tanh")
    res = fastscape.fit(model, X, y, method="gd", lr=1e10, steps=300, batch_size=16,
                        record_every=5)  # fmt: skip
    _check_diverged(res, model, X, y, model.init(0))
    assert res.n_steps == 0 and np.array_equal(res.theta, model.init(0))
    Xl, yl = datasets.line(50)
    lin = fastscape.LinearRegression(1)
    res = fastscape.fit(lin, Xl, yl, method="sam", lr=1e300, steps=50, batch_size=10)
    _check_diverged(res, lin, Xl, yl, lin.init(0))


@pytest.mark.parametrize(
    ("method", "lr", "batch_size"),
    [("gd", 0.5, None), ("momentum", 0.5, None), ("adam", 0.05, None), ("sam", 0.5, None),
     ("newton", 0.1, None), ("gd", 0.05, 1), ("adam", 0.05, 8), ("asam", 0.5, 4)],
)  # fmt: skip
def test_healthy_runs_never_read_as_diverged(method, lr, batch_size):
    """The CLI's default settings, and per-sample SGD, on a few problems."""
    problems = [
        (fastscape.MLP([2, 16, 2], activation="tanh"), *datasets.blobs(120, seed=4)),
        (fastscape.MLP([2, 8, 8, 1], activation="relu", loss="logistic"),
         *datasets.blobs(120, seed=5)),
        (fastscape.LinearRegression(1), *datasets.line(60)),
    ]  # fmt: skip
    for model, X, y in problems:
        if method == "newton" and not model.is_linear:
            continue
        res = fastscape.fit(model, X, y, method=method, lr=lr, steps=150, batch_size=batch_size)
        assert res.stop_reason in ("gtol", "max_steps")
        assert res.final_loss < model.loss(model.init(0), X, y)


def test_progress_bar_shows_and_changes_nothing(capsys):
    X, y = datasets.blobs(60, seed=1)
    model = fastscape.MLP([2, 4, 2])
    quiet = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=30)
    assert capsys.readouterr().err == ""
    shown = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=30, progress=True)
    err = capsys.readouterr().err
    assert "training (adam)" in err and "/30" in err
    assert_array_equal(shown.theta, quiet.theta)
    assert_array_equal(shown.loss_history, quiet.loss_history)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "lbfgs"}, "unknown method"),
        ({"lr": -1.0}, "lr must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"steps": -1}, "steps must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"method": "newton", "batch_size": 4}, "batch_size is not supported"),
        ({"theta0": np.zeros(5)}, "theta0 has length"),
        ({"record_every": 0}, "record_every must be"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    X, y = datasets.blobs(20)
    with pytest.raises((ValueError, TypeError), match=match):
        fastscape.fit(fastscape.Logistic(2), X, y, **kwargs)


@pytest.mark.parametrize("method", ["momentum", "adam"])
def test_momentum_and_adam_match_torch_optimizers(method):
    """fit's heavy ball is torch's SGD(momentum, dampening=0); its Adam is torch's Adam."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, size=30)
    model = fastscape.MLP([3, 5, 3], "tanh", "softmax_ce")
    theta0 = model.init(1)
    kw = {"momentum": 0.7} if method == "momentum" else {"betas": (0.8, 0.95), "eps": 1e-6}
    lr = 0.2 if method == "momentum" else 0.02
    res = fastscape.fit(model, X, y, method=method, lr=lr, steps=30, gtol=0.0, theta0=theta0,
                        **kw)  # fmt: skip
    net = model.to_torch(theta0)
    if method == "momentum":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.7, dampening=0.0)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.8, 0.95), eps=1e-6)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    losses = []
    for t in range(31):
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(net(Xt), yt)
        losses.append(value.item())
        if t < 30:
            value.backward()
            opt.step()
    assert_allclose(res.loss_history, losses, rtol=1e-10, atol=1e-14)
