"""Pure-NumPy twins of the compiled kernels: slow, plain and obviously correct.

They serve as the ground truth in tests and as the baseline in benchmarks. They import no
kernel. Each twin is named after the kernel it checks (``kernels.mlp.mlp_loss`` ↔
``reference.mlp_loss``) and takes the same model encoding, with the activation and loss given
by name:

theta (P,), sizes (L+1,), activation in {"identity", "tanh", "relu", "sigmoid"},
loss in {"softmax_ce", "logistic", "mse"}, X (n, d), Y (n, out) target matrix (one-hot rows
for softmax-CE, the 0/1 label for logistic, targets for MSE).

Everything is written over the whole batch with matrix products, as one would on paper:
forward pass, backpropagation, Pearlmutter's R-operator for Hessian-vector products, and the
exact Hessian as the matrix whose columns are H e_j.
"""

from __future__ import annotations

import numpy as np


def unflatten(theta, sizes):
    """List of (W (out, in), b (out,)) views of theta."""
    params = []
    o = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        W = theta[o : o + n_out * n_in].reshape(n_out, n_in)
        o += n_out * n_in
        b = theta[o : o + n_out]
        o += n_out
        params.append((W, b))
    return params


def _act(name, z):
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def _act_d1(name, z):
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(float)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    return np.ones_like(z)


def _act_d2(name, z):
    if name == "tanh":
        t = np.tanh(z)
        return -2.0 * t * (1.0 - t**2)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    return np.zeros_like(z)


def _forward(theta, sizes, activation, X):
    """Pre-activations zs and activations as (as[0] = X); the last z are the logits."""
    params = unflatten(theta, sizes)
    zs, acts = [], [X]
    for l, (W, b) in enumerate(params):
        z = acts[-1] @ W.T + b
        zs.append(z)
        acts.append(z if l == len(params) - 1 else _act(activation, z))
    return zs, acts


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _per_sample_loss(loss, z, Y):
    if loss == "logistic":
        # softplus(z) - y z, with softplus(z) = logaddexp(0, z)
        return np.logaddexp(0.0, z[:, 0]) - Y[:, 0] * z[:, 0]
    if loss == "mse":
        return ((z - Y) ** 2).sum(axis=1)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return Y.sum(axis=1) * lse - (Y * z).sum(axis=1)


def _loss_grad_z(loss, z, Y):
    """d(per-sample loss)/dz, (n, out)."""
    if loss == "logistic":
        return 1.0 / (1.0 + np.exp(-z)) - Y
    if loss == "mse":
        return 2.0 * (z - Y)
    return Y.sum(axis=1, keepdims=True) * _softmax(z) - Y


def _loss_hvp_z(loss, z, Y, r):
    """(d2 per-sample loss/dz2) r, row by row, (n, out)."""
    if loss == "logistic":
        p = 1.0 / (1.0 + np.exp(-z))
        return p * (1.0 - p) * r
    if loss == "mse":
        return 2.0 * r
    p = _softmax(z)
    s = Y.sum(axis=1, keepdims=True)
    return s * p * (r - (p * r).sum(axis=1, keepdims=True))


def mlp_logits(theta, sizes, activation, X):
    """Network outputs (n, out)."""
    zs, _ = _forward(theta, sizes, activation, X)
    return zs[-1]


def mlp_loss(theta, sizes, activation, loss, X, Y):
    """Mean loss over samples."""
    zs, _ = _forward(theta, sizes, activation, X)
    return float(np.mean(_per_sample_loss(loss, zs[-1], Y)))


def mlp_loss_grad(theta, sizes, activation, loss, X, Y):
    """(mean loss, gradient (P,)) by backpropagation over the whole batch."""
    n = X.shape[0]
    params = unflatten(theta, sizes)
    zs, acts = _forward(theta, sizes, activation, X)
    delta = _loss_grad_z(loss, zs[-1], Y) / n
    grads = []
    for l in range(len(params) - 1, -1, -1):
        W, _ = params[l]
        grads.append((delta.T @ acts[l], delta.sum(axis=0)))
        if l > 0:
            delta = (delta @ W) * _act_d1(activation, zs[l - 1])
    grad = np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in reversed(grads)])
    return float(np.mean(_per_sample_loss(loss, zs[-1], Y))), grad


def block_hvp(theta, V, sizes, activation, loss, X, Y):
    """Hessian-vector products by Pearlmutter's R-operator over the whole batch.

    Twin of ``kernels.hvp.block_hvp`` (and of the CUDA driver ``kernels.cuda.mlp.mlp_hvp``).

    Parameters
    ----------
    V : (P,) or (K, P) array
        One vector or K vectors.

    Returns
    -------
    (P,) or (K, P) array
        ``H v``, or the rows ``H V[k]``.
    """
    V = np.asarray(V)
    if V.ndim == 2:
        return np.stack([_hvp(theta, v, sizes, activation, loss, X, Y) for v in V])
    return _hvp(theta, V, sizes, activation, loss, X, Y)


def _hvp(theta, v, sizes, activation, loss, X, Y):
    """H v (P,) for one vector."""
    n = X.shape[0]
    params = unflatten(theta, sizes)
    vparams = unflatten(v, sizes)
    zs, acts = _forward(theta, sizes, activation, X)
    L = len(params)
    # forward R-pass
    rzs, racts = [], [np.zeros_like(X)]
    for l in range(L):
        W, _ = params[l]
        V, vb = vparams[l]
        rz = acts[l] @ V.T + racts[l] @ W.T + vb
        rzs.append(rz)
        racts.append(rz if l == L - 1 else _act_d1(activation, zs[l]) * rz)
    # backward pass and its R-pass
    delta = _loss_grad_z(loss, zs[-1], Y) / n
    rdelta = _loss_hvp_z(loss, zs[-1], Y, rzs[-1]) / n
    out = []
    for l in range(L - 1, -1, -1):
        W, _ = params[l]
        V, _ = vparams[l]
        out.append((rdelta.T @ acts[l] + delta.T @ racts[l], rdelta.sum(axis=0)))
        if l > 0:
            back = delta @ W
            rback = delta @ V + rdelta @ W
            z = zs[l - 1]
            rdelta = _act_d2(activation, z) * rzs[l - 1] * back + _act_d1(activation, z) * rback
            delta = back * _act_d1(activation, z)
    return np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in reversed(out)])


def mlp_hessian(theta, sizes, activation, loss, X, Y):
    """Exact Hessian (P, P): column j is H e_j."""
    P = theta.size
    H = np.empty((P, P))
    for j in range(P):
        e = np.zeros(P)
        e[j] = 1.0
        H[:, j] = _hvp(theta, e, sizes, activation, loss, X, Y)
    return H


# ----------------------------------------------------------------------------- span engine
def span_eval(basis, coef, sizes, activation, loss, X, Y):
    """Loss and accuracy at the points ``coef @ basis``: a plain loop over points.

    The seeds' ``visualize_loss_landscape_2d`` written once for any span: form each point's
    full parameter vector, then call :func:`mlp_loss` (and :func:`mlp_logits` for accuracy).
    Twin of ``kernels.span.span_eval``.

    Parameters
    ----------
    basis : (K, P) array
    coef : (m, K) array

    Returns
    -------
    loss : (m,) array
    accuracy : (m,) array or None
        None for ``mse``.
    """
    m = coef.shape[0]
    losses = np.empty(m)
    acc = None if loss == "mse" else np.empty(m)
    for j in range(m):
        theta = coef[j] @ basis
        losses[j] = mlp_loss(theta, sizes, activation, loss, X, Y)
        if acc is not None:
            z = mlp_logits(theta, sizes, activation, X)
            if loss == "logistic":
                acc[j] = np.mean((z[:, 0] > 0) == (Y[:, 0] > 0.5))
            else:
                acc[j] = np.mean(z.argmax(axis=1) == Y.argmax(axis=1))
    return losses, acc


def span_function(f, basis, coef):
    """f at the points ``coef @ basis``, one call per point. Twin of
    ``kernels.span.span_function``; returns (m,)."""
    return np.array([float(f(c @ basis)) for c in coef])
