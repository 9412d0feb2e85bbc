"""Pure-NumPy twins of the compiled kernels: slow, plain and obviously correct.

They serve as the ground truth in tests and as the baseline in benchmarks. They import no
kernel. Each twin is named after the kernel it checks (``kernels.mlp.mlp_loss`` ↔
``reference.mlp_loss``) and takes the same model encoding, with the activation and loss given
by name:

theta (P,), sizes (L+1,), activation in {"identity", "tanh", "relu", "sigmoid", "leaky_relu",
"gelu", "gelu_tanh"}, loss in {"softmax_ce", "logistic", "mse"}, X (n, d), Y (n, out) target
matrix (one-hot rows for softmax-CE, the 0/1 label for logistic, targets for MSE), and the L2
term ``½ l2 ‖w‖²`` on the weights (on the biases too with ``l2_bias``) added to the loss.

Everything is written over the whole batch with matrix products, as one would on paper:
forward pass, backpropagation, Pearlmutter's R-operator for Hessian-vector products, and the
exact Hessian as the matrix whose columns are H e_j.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[float])
_GELU_C = np.sqrt(2.0 / np.pi)


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


def _phi(z):
    """Standard normal density."""
    return np.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)


def _gelu_tanh_parts(z):
    """t = tanh(u), u' and u'' of GELU's tanh approximation, u = c (z + 0.044715 z**3)."""
    t = np.tanh(_GELU_C * (z + 0.044715 * z**3))
    return t, _GELU_C * (1.0 + 3 * 0.044715 * z**2), _GELU_C * 6 * 0.044715 * z


def _act(name, z):
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "gelu":
        return 0.5 * z * (1.0 + _erf(z / np.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + _gelu_tanh_parts(z)[0])
    return z


def _act_d1(name, z):
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(float)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.01)
    if name == "gelu":
        return 0.5 * (1.0 + _erf(z / np.sqrt(2.0))) + z * _phi(z)
    if name == "gelu_tanh":
        t, du, _ = _gelu_tanh_parts(z)
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t**2) * du
    return np.ones_like(z)


def _act_d2(name, z):
    if name == "tanh":
        t = np.tanh(z)
        return -2.0 * t * (1.0 - t**2)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    if name == "gelu":
        return _phi(z) * (2.0 - z**2)
    if name == "gelu_tanh":
        t, du, ddu = _gelu_tanh_parts(z)
        # d/dz of 0.5 (1 + t) + 0.5 z (1 - t**2) u', with t' = (1 - t**2) u'
        return (1.0 - t**2) * du + 0.5 * z * (1.0 - t**2) * (ddu - 2.0 * t * du**2)
    return np.zeros_like(z)


def l2_weights(sizes, l2=0.0, l2_bias=False):
    """The (P,) vector with ``l2`` on the weights (and biases with l2_bias), else 0."""
    parts = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        parts.append(np.full(n_out * n_in, float(l2)))
        parts.append(np.full(n_out, float(l2) if l2_bias else 0.0))
    return np.concatenate(parts)


def _l2_value(theta, sizes, l2, l2_bias):
    """½ l2 ‖w‖² (and the biases with l2_bias); 0 without an L2 term."""
    if l2 == 0.0:
        return 0.0
    return 0.5 * float(np.sum(l2_weights(sizes, l2, l2_bias) * theta**2))


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


def mlp_loss(theta, sizes, activation, loss, X, Y, l2=0.0, l2_bias=False):
    """Mean loss over samples (plus the L2 term)."""
    zs, _ = _forward(theta, sizes, activation, X)
    return float(np.mean(_per_sample_loss(loss, zs[-1], Y))) + _l2_value(theta, sizes, l2, l2_bias)


def mlp_loss_grad(theta, sizes, activation, loss, X, Y, l2=0.0, l2_bias=False):
    """(mean loss, gradient (P,)) by backpropagation over the whole batch (plus the L2 term)."""
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
    if l2 > 0.0:
        grad = grad + l2_weights(sizes, l2, l2_bias) * theta
    value = float(np.mean(_per_sample_loss(loss, zs[-1], Y))) + _l2_value(theta, sizes, l2, l2_bias)
    return value, grad


def block_hvp(theta, V, sizes, activation, loss, X, Y, l2=0.0, l2_bias=False):
    """Hessian-vector products by Pearlmutter's R-operator over the whole batch (plus the L2
    term's ``l2 v`` on the penalised entries).

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
        return np.stack([_hvp(theta, v, sizes, activation, loss, X, Y, l2, l2_bias) for v in V])
    return _hvp(theta, V, sizes, activation, loss, X, Y, l2, l2_bias)


def _hvp(theta, v, sizes, activation, loss, X, Y, l2=0.0, l2_bias=False):
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
    hv = np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in reversed(out)])
    return hv + l2_weights(sizes, l2, l2_bias) * v if l2 > 0.0 else hv


def mlp_hessian(theta, sizes, activation, loss, X, Y, l2=0.0, l2_bias=False):
    """Exact Hessian (P, P): column j is H e_j."""
    P = theta.size
    H = np.empty((P, P))
    for j in range(P):
        e = np.zeros(P)
        e[j] = 1.0
        H[:, j] = _hvp(theta, e, sizes, activation, loss, X, Y, l2, l2_bias)
    return H


# ----------------------------------------------------------------------------- span engine
def span_eval(basis, coef, sizes, activation, loss, X, Y, l2=0.0, l2_bias=False):
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
        losses[j] = mlp_loss(theta, sizes, activation, loss, X, Y, l2, l2_bias)
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
