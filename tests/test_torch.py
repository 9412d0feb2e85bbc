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
        (nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 2)), r"layer 1 \(ELU\)"),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.Linear(4, 2)),
         r"layer 1 \(LeakyReLU\) has negative_slope=0.2"),
        (nn.Sequential(nn.Flatten(0), nn.Linear(3, 2)), r"layer 0 \(Flatten\) has start_dim=0"),
        (nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Tanh(), nn.ELU()), nn.Linear(4, 2)),
         r"layer 1.1 \(ELU\)"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), "do not chain"),
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


ACTIVATION_NAMES = list(fastscape.models.ACTIVATIONS)


def _data(loss, n=40, d=5, out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if loss == "softmax_ce":
        return X, rng.integers(0, out, n)
    if loss == "logistic":
        return X, rng.integers(0, 2, n)
    return X, rng.normal(size=(n, out))


def _agree(model, theta, net, X, y):
    """The converted model's loss equals torch's (float64, evaluation mode) to 1e-12."""
    net = net.double().eval()
    with torch.no_grad():
        want = _torch_loss(model, net, X, y).item()
        logits = net(torch.as_tensor(X)).numpy()
    assert_allclose(model.loss(theta, X, y), want, rtol=1e-12)
    assert_allclose(model.logits(theta, X), logits, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize(("loss", "out"), [("softmax_ce", 3), ("logistic", 1), ("mse", 2)])
def test_from_torch_flatten_dropout_nested_every_activation(activation, loss, out):
    from fastscape._torch import activation_module

    torch.manual_seed(1)
    act = activation_module  # a fresh module per use
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(5, 7),
        act(activation),
        nn.Dropout(0.3),
        nn.Sequential(nn.Linear(7, 4), act(activation), nn.Sequential(nn.Dropout(0.1))),
        nn.Linear(4, out),
    )
    model, theta = fastscape.MLP.from_torch(net, loss=loss)
    assert model.sizes == (5, 7, 4, out) and model.activation == activation
    X, y = _data(loss, out=out)
    _agree(model, theta, net, X, y)
    # the state_dict of the same network, with its spec, gives the same model and theta
    model2, theta2 = fastscape.MLP.from_torch(net.state_dict(), loss=loss, activation=activation)
    assert model2 == model
    assert_allclose(theta2, theta, rtol=0)
    model3, _ = fastscape.MLP.from_torch(
        net.state_dict(), loss=loss, activation=activation, sizes=[5, 7, 4, out]
    )
    assert model3 == model
    # and back: to_torch builds the same function
    _agree(model, theta, model.to_torch(theta), X, y)


def test_from_torch_state_dict_of_a_trained_model_agrees():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    X, y = _data("softmax_ce", d=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(20):  # parameters that are not an initialisation
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.as_tensor(X, dtype=torch.float32)),
                                    torch.as_tensor(y)).backward()  # fmt: skip
        opt.step()
    model, theta = fastscape.MLP.from_torch(net.state_dict(), activation="tanh")
    assert model == fastscape.MLP([4, 6, 6, 3], "tanh", "softmax_ce")
    _agree(model, theta, net, X, y)
    single, th = fastscape.MLP.from_torch(nn.Linear(3, 1).state_dict(), loss="mse")
    assert single == fastscape.LinearRegression(3) and th.shape == (4,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "does not record the activation: pass activation="),
        ({"activation": "tanh", "sizes": [4, 5, 2]}, r"sizes=\[4, 5, 2\] given, .* \[4, 6, 2\]"),
        ({"activation": "swish"}, "activation"),
    ],
)
def test_from_torch_state_dict_errors(kwargs, match):
    sd = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).state_dict()
    with pytest.raises(ValueError, match=match):
        fastscape.MLP.from_torch(sd, **kwargs)


def test_from_torch_state_dict_names_what_it_cannot_take():
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).state_dict()
    with pytest.raises(ValueError, match=r"'1\.running_mean' is not a dense layer"):
        fastscape.MLP.from_torch(bn, activation="tanh")
    nobias = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)).state_dict()
    with pytest.raises(ValueError, match="layer '0' has no bias"):
        fastscape.MLP.from_torch(nobias, activation="tanh")
    with pytest.raises(ValueError, match="layers 0 and 1 do not chain"):
        fastscape.MLP.from_torch({"a.weight": torch.ones(4, 3), "a.bias": torch.ones(4),
                                  "b.weight": torch.ones(2, 5), "b.bias": torch.ones(2)},
                                 activation="relu")  # fmt: skip
    with pytest.raises(ValueError, match="are for a state_dict"):
        fastscape.MLP.from_torch(nn.Linear(3, 2), activation="tanh")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module or a state_dict"):
        fastscape.MLP.from_torch([1, 2, 3])


def test_activation_table_covers_the_model_family():
    """Every activation of the family converts both ways; names the kernels lack are refused."""
    from fastscape._torch import ACTIVATION_MODULES, activation_module

    assert set(ACTIVATION_NAMES) <= set(ACTIVATION_MODULES)
    for name in ACTIVATION_MODULES:
        net = nn.Sequential(nn.Linear(2, 3), activation_module(name), nn.Linear(3, 2))
        if name in ACTIVATION_NAMES:
            assert fastscape.MLP.from_torch(net)[0].activation == name
        else:
            with pytest.raises(ValueError, match=f"activation '{name}' is not available"):
                fastscape.MLP.from_torch(net)
