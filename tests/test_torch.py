"""Real PyTorch computing the same numbers, and conversion to and from torch modules."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from numpy.testing import assert_allclose

import fastscape

torch = pytest.importorskip("torch")
nn = torch.nn


def _torch_loss(model, net, X, y):
    out = net(torch.as_tensor(X))
    if model.loss_name == "softmax_ce":
        return nn.functional.cross_entropy(out, torch.as_tensor(y))
    if model.loss_name == "logistic":
        return nn.functional.binary_cross_entropy_with_logits(
            out[:, 0], torch.as_tensor(y, dtype=torch.float64)
        )
    target = torch.as_tensor(np.asarray(y, dtype=float).reshape(out.shape))
    return ((out - target) ** 2).sum(dim=1).mean()  # fastscape's MSE convention


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_loss_grad_hvp_agree_with_torch(case):
    model, theta, X, y = make_problem(case, n=30, seed=11, scale=0.7)
    net = model.to_torch(theta)
    params = list(net.parameters())
    loss = _torch_loss(model, net, X, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    v = np.random.default_rng(12).normal(size=model.n_params)
    hv = torch.autograd.grad(flat_g @ torch.as_tensor(v), params)
    flat_hv = torch.cat([h.reshape(-1) for h in hv]).numpy()

    value, g = model.grad(theta, X, y)
    assert_allclose(value, loss.item(), rtol=1e-12)
    assert_allclose(g, flat_g.detach().numpy(), rtol=1e-10, atol=1e-14)
    assert_allclose(model.hvp(theta, v, X, y), flat_hv, rtol=1e-9, atol=1e-12)


def test_from_torch_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 4), nn.ReLU(), nn.Linear(4, 3))
    model, theta = fastscape.MLP.from_torch(net)
    assert model == fastscape.MLP([5, 7, 4, 3], activation="relu", loss="softmax_ce")
    X = np.random.default_rng(0).normal(size=(9, 5))
    with torch.no_grad():
        want = net.double()(torch.as_tensor(X)).numpy()
    assert_allclose(model.logits(theta, X), want, rtol=1e-12)
    back = model.to_torch(theta)
    assert_allclose(fastscape.MLP.from_torch(back)[1], theta, rtol=0)
    single, th1 = fastscape.MLP.from_torch(nn.Linear(3, 1), loss="mse")
    assert single == fastscape.LinearRegression(3) and th1.shape == (4,)


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)), r"layer 1 \(GELU\)"),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softmax(dim=1)),
         r"layer 3 \(Softmax\)"),
        (nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)), "no bias"),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
         "mixed activations"),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Tanh()),
         "ends with an activation"),
        (nn.Sequential(nn.Conv1d(1, 1, 3)), r"layer 0 \(Conv1d\)"),
    ],
)  # fmt: skip
def test_from_torch_names_the_layer_it_cannot_take(net, match):
    with pytest.raises(ValueError, match=match):
        fastscape.MLP.from_torch(net)
