"""Exact torch.func references for the curvature matrices of the MLP family (imported by the
curvature tests after ``pytest.importorskip("torch")``): built from the network's outputs as a
function of the flat parameters, independently of fastscape's kernels."""

from __future__ import annotations

import numpy as np
import torch

func = torch.func

ACTS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda z: z,
    "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01),
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda z: torch.nn.functional.gelu(z, approximate="tanh"),
}


def torch_outputs(model, flat, X):
    """The network's outputs (n, out) as a function of the flat parameters."""
    h = X
    for l, lay in enumerate(model.layout):
        h = h @ flat[lay.weight].reshape(lay.shape).T + flat[lay.bias]
        if l < len(model.layout) - 1:
            h = ACTS[model.activation](h)
    return h


def per_sample_loss(model):
    """ℓ(z, y) for one sample's outputs z (out,) and target row y (out,) (fastscape's Y)."""
    if model.loss_name == "softmax_ce":
        return lambda z, y: -(y * torch.log_softmax(z, 0)).sum()
    if model.loss_name == "logistic":
        return lambda z, y: (torch.nn.functional.softplus(z) - y * z).sum()
    return lambda z, y: ((z - y) ** 2).sum()


def penalty_vector(model):
    r = np.zeros(model.n_params)
    for lay in model.layout:
        r[lay.weight] = model.l2
        if model.l2_bias:
            r[lay.bias] = model.l2
    return r


def references(model, theta, X, y):
    """(H, G, F) from torch.func, float64."""
    data = model.batch(X, y)
    Xt, Yt = torch.as_tensor(data.X), torch.as_tensor(data.Y)
    th = torch.as_tensor(theta)
    ell = per_sample_loss(model)
    r = torch.as_tensor(penalty_vector(model))
    n = X.shape[0]

    def objective(flat):
        z = torch_outputs(model, flat, Xt)
        return func.vmap(ell)(z, Yt).mean() + 0.5 * (r * flat**2).sum()

    H = func.hessian(objective)(th)
    J = func.jacrev(lambda flat: torch_outputs(model, flat, Xt))(th)  # (n, out, P)
    z = torch_outputs(model, th, Xt)
    Hl = func.vmap(func.hessian(ell))(z, Yt)  # (n, out, out)
    G = torch.einsum("iop,ioq,iqr->pr", J, Hl, J) / n + torch.diag(r)

    def sample_loss(flat, x, yy):
        return ell(torch_outputs(model, flat, x[None])[0], yy)

    g = func.vmap(func.grad(sample_loss), in_dims=(None, 0, 0))(th, Xt, Yt)  # (n, P)
    F = g.T @ g / n
    return H.numpy(), G.numpy(), F.numpy()
