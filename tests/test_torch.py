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
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.Linear(4, 2)), "negative_slope"),
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
