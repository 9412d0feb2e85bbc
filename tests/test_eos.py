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
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["λmax", "2/η = 20"]
    model, X, y = _small()
    adam = edge_of_stability(model, X, y, lr=0.01, steps=4, every=2, optimizer="adam")
    legend = [t.get_text() for t in pc.plot_eos(adam).axes[0].get_legend().get_texts()]
    assert legend == ["λmax(P⁻¹H)", "(2+2β1)/((1−β1)η) = 3.8e+03"]


# ----------------------------------------------------------------------------- against torch
def _small(l2=0.0, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(25, 3))
    y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1])
    model = fastscape.MLP([3, 6, 1], activation="tanh", loss="mse", l2=l2)
    return model, X, (y - y.mean()) / y.std()


def _torch_run(model, X, y, theta0, steps, make_opt, c=1.0):
    """The same run in PyTorch (float64): losses, iterates, Hessians and Adam's P per step.

    The loss is written from the flat vector with fastscape's layout (W row-major, then b)
    and the definitions: ``c · mean_i Σ_k (f_ik − y_ik)² + ½ λ ‖W‖²``.
    """
    torch = pytest.importorskip("torch")
    Xt = torch.as_tensor(X)
    Yt = torch.as_tensor(y).reshape(-1, 1)

    def loss(th):
        h = Xt
        reg = 0.0
        for i, lay in enumerate(model.layout):
            W = th[lay.weight].reshape(lay.shape)
            h = h @ W.T + th[lay.bias]
            reg = reg + (W * W).sum()
            if i < len(model.layout) - 1:
                h = torch.tanh(h)
        return c * ((h - Yt) ** 2).sum(dim=1).mean() + 0.5 * model.l2 * reg

    th = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = make_opt(torch, [th])
    losses, hessians, precond = [], [], []
    for t in range(steps + 1):
        opt.zero_grad()
        value = loss(th)
        losses.append(value.item())
        hessians.append(torch.autograd.functional.hessian(loss, th.detach()).numpy())
        if t == steps:
            break
        value.backward()
        opt.step()
        state = opt.state[th]
        if "exp_avg_sq" in state:  # Adam: P = (1 − β1^t)(√(v / (1 − β2^t)) + ε) of this step
            (b1, b2), eps = opt.param_groups[0]["betas"], opt.param_groups[0]["eps"]
            k = float(state["step"])
            v = state["exp_avg_sq"].numpy()
            precond.append((1 - b1**k) * (np.sqrt(v / (1 - b2**k)) + eps))
    return np.array(losses), hessians, precond


@pytest.mark.parametrize(
    "optimizer, kwargs, make_opt",
    [
        ("gd", {}, lambda torch, p: torch.optim.SGD(p, lr=0.3)),
        ("momentum", {"momentum": 0.8},
         lambda torch, p: torch.optim.SGD(p, lr=0.3, momentum=0.8, dampening=0.0)),
        ("adam", {"betas": (0.85, 0.99), "adam_eps": 1e-7},
         lambda torch, p: torch.optim.Adam(p, lr=0.01, betas=(0.85, 0.99), eps=1e-7)),
    ],
    ids=["gd", "momentum", "adam"],
)  # fmt: skip
def test_trajectory_and_sharpness_match_torch(optimizer, kwargs, make_opt):
    model, X, y = _small()
    lr = 0.01 if optimizer == "adam" else 0.3
    theta0 = model.init(3)
    res = edge_of_stability(model, X, y, lr=lr, steps=40, every=8, optimizer=optimizer,
                            theta0=theta0, tol=1e-12, **kwargs)  # fmt: skip
    losses, hessians, precond = _torch_run(model, X, y, theta0, 40, make_opt)
    np.testing.assert_allclose(res.loss, losses, rtol=1e-10, atol=1e-14)
    assert res.optimizer == optimizer and res.mse_convention == "sum"
    if optimizer == "adam":
        # the preconditioned sharpness λmax(P⁻¹H) against P⁻¹H built from torch's state
        assert res.sharpness == "preconditioned" and res.betas == (0.85, 0.99)
        want = [np.linalg.eigvals(hessians[s] / precond[s][:, None]).real.max()
                for s in res.steps[:-1]]  # fmt: skip
        np.testing.assert_allclose(res.lambda_max[:-1], want, rtol=1e-8)
        np.testing.assert_allclose(res.threshold, (2 + 2 * 0.85) / (0.15 * lr), rtol=1e-15)
    else:
        assert res.sharpness == "hessian"
        want = [np.linalg.eigvalsh(hessians[s])[-1] for s in res.steps]
        np.testing.assert_allclose(res.lambda_max, want, rtol=1e-8)
        beta = kwargs.get("momentum", 0.0)
        assert res.momentum == (kwargs.get("momentum"))
        np.testing.assert_allclose(res.threshold, (2 + 2 * beta) / lr, rtol=1e-15)
    assert res.eig_converged.all()


def test_half_sum_convention_matches_torch_and_halves_the_sharpness():
    model, X, y = _small(l2=0.05)
    theta0 = model.init(2)
    half = edge_of_stability(model, X, y, lr=0.5, steps=30, every=10, theta0=theta0,
                             optimizer="momentum", momentum=0.5, mse_convention="half_sum",
                             tol=1e-12)  # fmt: skip
    losses, hessians, _ = _torch_run(
        model, X, y, theta0, 30,
        lambda torch, p: torch.optim.SGD(p, lr=0.5, momentum=0.5, dampening=0.0), c=0.5,
    )  # fmt: skip
    np.testing.assert_allclose(half.loss, losses, rtol=1e-10, atol=1e-14)
    want = [np.linalg.eigvalsh(hessians[s])[-1] for s in half.steps]
    np.testing.assert_allclose(half.lambda_max, want, rtol=1e-8)
    assert half.mse_convention == "half_sum" and half.threshold == pytest.approx(3.0 / 0.5)
    # without an L2 term the half-sum run is the sum run at half the step, its loss and
    # λmax halved at the same iterates
    model, X, y = _small()
    a = edge_of_stability(model, X, y, lr=0.2, steps=20, every=10, mse_convention="half_sum",
                          tol=1e-12)  # fmt: skip
    b = edge_of_stability(model, X, y, lr=0.1, steps=20, every=10, tol=1e-12)
    np.testing.assert_allclose(a.loss, 0.5 * b.loss, rtol=1e-12)
    np.testing.assert_allclose(a.lambda_max, 0.5 * b.lambda_max, rtol=1e-9)
    assert b.mse_convention == "sum"


def test_options_that_do_not_apply_are_refused():
    model, X, y = _small()
    with pytest.raises(ValueError, match="momentum applies to optimizer='momentum' only"):
        edge_of_stability(model, X, y, momentum=0.9)
    with pytest.raises(ValueError, match="betas applies to optimizer='adam' only"):
        edge_of_stability(model, X, y, optimizer="momentum", betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="adam_eps applies"):
        edge_of_stability(model, X, y, adam_eps=1e-8)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        edge_of_stability(model, X, y, optimizer="momentum", momentum=1.0)
    with pytest.raises(ValueError, match="betas must be a pair"):
        edge_of_stability(model, X, y, optimizer="adam", betas=(0.9,))
    with pytest.raises(ValueError, match="unknown optimizer"):
        edge_of_stability(model, X, y, optimizer="sgd")
    with pytest.raises(ValueError, match="unknown mse_convention"):
        edge_of_stability(model, X, y, mse_convention="mean")
    clf = fastscape.MLP([3, 4, 2], "tanh", "softmax_ce")
    labels = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="mse_convention applies to the mse loss only"):
        edge_of_stability(clf, X, labels, mse_convention="sum")
    res = edge_of_stability(clf, X, labels, steps=2, every=1)
    assert res.mse_convention is None and res.momentum is None and res.betas is None


def test_adam_reaches_the_adaptive_edge_of_stability():
    """Cohen et al. 2022: Adam's preconditioned sharpness rises to (2+2β1)/((1−β1)η) = 38/η
    and equilibrates there while the loss keeps falling."""
    model, X, y = _problem()
    res = edge_of_stability(model, X, y, lr=0.01, steps=600, every=20, optimizer="adam")
    s = res.normalized_sharpness
    assert res.threshold == pytest.approx(3800.0) and res.eig_converged.all()
    cross = res.first_crossing(0.95)
    assert cross is not None and cross <= 250
    assert s[1] < 0.3  # after the first step's bias-correction transient, well below
    late = s[res.steps >= 250]
    assert late.min() > 0.75 and late.max() < 1.15 and 0.85 < np.median(late) < 1.05
    assert res.loss[-1] < 1e-3 * res.loss[0]
