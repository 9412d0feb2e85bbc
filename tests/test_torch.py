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


# ----------------------------------------------------------------------------- new activations, L2
# Each new activation and the L2 term against PyTorch float64 autograd: loss, gradient, HVP,
# exact Hessian and a small surface, to 1e-10.
NEW_CASES = [
    ([4, 5, 3], "leaky_relu", "softmax_ce"),
    ([3, 6, 1], "gelu", "logistic"),
    ([4, 5, 2], "gelu_tanh", "mse"),
    ([3, 4, 5, 3], "gelu", "softmax_ce"),
    ([3, 5, 4, 1], "gelu_tanh", "logistic"),
    ([4, 3, 4, 2], "leaky_relu", "mse"),
]
L2_CASES = [(0.0, False), (0.3, False), (0.3, True)]


def _torch_objective(model, net, X, y):
    """The mean loss plus the model's L2 term, as a torch scalar."""
    loss = _torch_loss(model, net, X, y)
    if model.l2 > 0.0:
        for name, p in net.named_parameters():
            if name.endswith("weight") or model.l2_bias:
                loss = loss + 0.5 * model.l2 * (p**2).sum()
    return loss


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


@pytest.mark.parametrize(("l2", "l2_bias"), L2_CASES)
@pytest.mark.parametrize("case", NEW_CASES, ids=case_id)
def test_new_activations_and_l2_agree_with_torch(case, l2, l2_bias):
    sizes, act, loss = case
    _, theta, X, y = make_problem(case, n=25, seed=21, scale=0.8)
    model = fastscape.MLP(sizes, activation=act, loss=loss, l2=l2, l2_bias=l2_bias)
    net = model.to_torch(theta)
    params = list(net.parameters())
    value = _torch_objective(model, net, X, y)
    g = _flat(torch.autograd.grad(value, params, create_graph=True))
    V = np.random.default_rng(22).normal(size=(2, model.n_params))
    hv = np.stack(
        [_flat(torch.autograd.grad(g @ torch.as_tensor(v), params, retain_graph=True)).numpy()
         for v in V]
    )  # fmt: skip
    H = torch.autograd.functional.hessian(
        lambda flat: _objective_of_flat(model, flat, X, y), torch.as_tensor(theta)
    ).numpy()

    data = model.batch(X, y)
    assert_allclose(model.loss(theta, data), value.item(), rtol=1e-10)
    got_v, got_g = model.grad(theta, data)
    assert_allclose(got_v, value.item(), rtol=1e-10)
    assert_allclose(got_g, g.detach().numpy(), rtol=1e-10, atol=1e-13)
    assert_allclose(model.hvp(theta, V, data), hv, rtol=1e-10, atol=1e-12)
    assert_allclose(model.hessian(theta, data), H, rtol=1e-10, atol=1e-12)
    # a small surface: the span engine against torch at every point
    rng = np.random.default_rng(23)
    basis = np.stack([theta, rng.normal(size=model.n_params), rng.normal(size=model.n_params)])
    a = np.linspace(-1.0, 1.0, 4)
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    C = np.vstack([C, [[0.5, -0.2, 0.7], [1.0, 0.3, -0.4]]])  # pass through the general path
    C[-1, 0] = 0.0
    surface = fastscape.evaluate(model, basis, C, data).loss
    want = [_objective_of_flat(model, torch.as_tensor(c @ basis), X, y).item() for c in C]
    assert_allclose(surface, want, rtol=1e-10)


def _objective_of_flat(model, flat, X, y):
    """The objective as a function of the flat parameter tensor (for autograd's Hessian)."""
    h = torch.as_tensor(X)
    acts = {
        "leaky_relu": lambda z: nn.functional.leaky_relu(z, 0.01),
        "gelu": nn.functional.gelu,
        "gelu_tanh": lambda z: nn.functional.gelu(z, approximate="tanh"),
        "tanh": torch.tanh,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "identity": lambda z: z,
    }
    penalty = 0.0
    for l, lay in enumerate(model.layout):
        W = flat[lay.weight].reshape(lay.shape)
        b = flat[lay.bias]
        h = h @ W.T + b
        if l < len(model.layout) - 1:
            h = acts[model.activation](h)
        penalty = penalty + (W**2).sum() + ((b**2).sum() if model.l2_bias else 0.0)
    if model.loss_name == "softmax_ce":
        value = nn.functional.cross_entropy(h, torch.as_tensor(y))
    elif model.loss_name == "logistic":
        value = nn.functional.binary_cross_entropy_with_logits(
            h[:, 0], torch.as_tensor(y, dtype=torch.float64)
        )
    else:
        target = torch.as_tensor(np.asarray(y, dtype=float).reshape(h.shape))
        value = ((h - target) ** 2).sum(dim=1).mean()
    return value + 0.5 * model.l2 * penalty


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (lambda: nn.LeakyReLU(0.01), "leaky_relu"),
        (lambda: nn.LeakyReLU(), "leaky_relu"),
        (lambda: nn.GELU(), "gelu"),
        (lambda: nn.GELU(approximate="tanh"), "gelu_tanh"),
    ],
)
def test_from_torch_round_trip_new_activations(module, name):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), module(), nn.Linear(6, 5), module(), nn.Linear(5, 3))
    model, theta = fastscape.MLP.from_torch(net.double())
    assert model == fastscape.MLP([4, 6, 5, 3], activation=name)
    X = np.random.default_rng(2).normal(size=(11, 4)) * 2.0
    with torch.no_grad():
        want = net(torch.as_tensor(X)).numpy()
    assert_allclose(model.logits(theta, X), want, rtol=1e-12, atol=1e-15)
    back = model.to_torch(theta)
    assert type(back[1]) is type(net[1])
    if name.startswith("gelu"):
        assert back[1].approximate == net[1].approximate
    else:
        assert back[1].negative_slope == 0.01
    assert_allclose(fastscape.MLP.from_torch(back)[1], theta, rtol=0)


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
