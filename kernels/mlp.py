"""CPU kernels of the MLP family: loss, loss + gradient, outputs, and the per-sample forward pass.

Hessian-vector products are in ``kernels.hvp`` (forward pass at theta cached, vectors as GEMM
columns), the exact Hessian in ``kernels.hessian``, the activations and per-sample losses in
``kernels.elementwise``, the parameter layout in ``kernels.layout``.

Model encoding shared by every kernel (the API builds it, see ``fastscape.models``):

``theta`` (P,)
    One flat float64 vector. Layer ``l`` holds ``W_l`` of shape ``(sizes[l+1], sizes[l])``
    (rows = output units), stored row-major, followed by ``b_l`` of shape ``(sizes[l+1],)``
    (offsets: ``kernels.layout.layout``).
``sizes`` (L+1,) int64
    Units per layer, input first.
``act`` int
    Hidden activation code (``kernels.elementwise``: ``IDENTITY``, ``TANH``, ``RELU``, ...).
    The output layer has no activation: it produces logits (or regression outputs).
``loss_kind`` int
    ``SOFTMAX_CE``, ``LOGISTIC`` or ``MSE`` (``kernels.elementwise``).
``X`` (n, d) C-contiguous float64 (or float32, see below), ``Y`` (n, out) C-contiguous float64
    Targets as a matrix: one-hot rows for softmax-CE, the 0/1 label for logistic, the
    regression targets for MSE. Per-sample losses (means are taken over samples):

    - softmax-CE: ``s * logsumexp(z) - y . z`` with ``s = sum(y)`` (= 1 for one-hot rows);
    - logistic: ``softplus(z) - y z``;
    - MSE: ``sum_o (z_o - y_o)**2``.

Working precision: the dtype of X. With a float32 X (``dtype="float32"`` on the API, cast once
by the backend) the parameters are cast to float32 once per call, the products (BLAS SGEMM) and
the activations run in float32, and every sum over samples is accumulated in float64: the
per-sample losses are added in float64, and a weight-gradient product sums the samples of one
block (at most ``config.F32_SAMPLE_BLOCK``, passed as ``block`` by the backend) in float32 before
the block's total is added to the float64 gradient. Results are float64 in both precisions.

Samples go in blocks (a fixed partition of range(n)); inside a block, per-sample work is split
into ``n_chunks`` contiguous chunks, a partition that depends only on the sizes, never on the
thread count. Each chunk accumulates into its own slot inside ``prange``; the slots are summed
serially in chunk order, and matrix products go through ``kernels._blas`` (reproducible for any
thread count). Results are therefore bitwise identical for any number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._blas import matmul
from ._jit import jit
from .elementwise import (  # noqa: F401  (the codes, re-exported for the API)
    IDENTITY,
    LOGISTIC,
    MSE,
    RELU,
    SIGMOID,
    SOFTMAX_CE,
    TANH,
    activate,
    activation_array,
    activation_d1_array,
    logistic_from_exp,
    output_loss,
    sigmoid_from_exp,
)
from .layout import layer_views
from .penalty import add_l2_grad, l2_value


@jit()
def chunk_bounds(n, n_chunks, c):
    """Samples [lo, hi) of chunk c: a fixed partition of range(n)."""
    return (c * n) // n_chunks, ((c + 1) * n) // n_chunks


# ----------------------------------------------------------------------------- one sample
@jit()
def forward(theta, sizes, w_off, b_off, u_off, act, x, Z, A):
    """Forward pass of one sample; fills pre-activations Z and activations A (both (S,))."""
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        prev = x if l == 0 else A[u_off[l - 1] : u_off[l]]
        last = l == n_layers - 1
        for j in range(n_out):
            w = theta[w_off[l] + j * n_in : w_off[l] + (j + 1) * n_in]
            s = theta[b_off[l] + j]
            for k in range(n_in):
                s += w[k] * prev[k]
            Z[u_off[l] + j] = s
            A[u_off[l] + j] = s if last else activate(act, s)


# ----------------------------------------------------------------------------- batch kernels
# Loss and gradient run layer by layer on blocks of samples: every layer's products
# (A_{l-1} W_l^T forward, delta_l^T A_{l-1} and delta_l W_l backward) are GEMMs done by BLAS
# (``_blas.matmul``: reproducible for any thread count) and
# the activations are NumPy's SIMD loops; one compiled kernel computes the loss of the logits and
# its derivative per sample (per-sample GEMV kernels were slower: ``bench/NOTES.md``).
@jit()
def chunk_loss(loss_kind, Z, Y, lo, hi, D, want_grad):
    """Sum of the per-sample losses of rows lo..hi-1, in order (and their dloss/dz into D)."""
    acc = 0.0
    if loss_kind == LOGISTIC:
        # one logit per sample: scalar 2-D indexing, no row views (faster per sample)
        for i in range(lo, hi):
            z = Z[i, 0]
            y = Y[i, 0]
            e = math.exp(-abs(z))
            if want_grad:
                D[i, 0] = sigmoid_from_exp(z, e) - y
            acc += logistic_from_exp(z, y, e)
        return acc
    for i in range(lo, hi):
        acc += output_loss(loss_kind, Z[i], Y[i], D[i], want_grad)
    return acc


@jit(parallel=True)
def output_loss_block(loss_kind, Z, Y, n_chunks, D, want_grad):
    """Sum over the rows of Z (B, out) of the per-sample loss; with want_grad, D[i] = dloss/dz_i.

    The B samples are split into ``n_chunks`` contiguous chunks (a fixed partition) whose sums
    are added in order.
    """
    n = Z.shape[0]
    partial = np.zeros(n_chunks)
    for c in prange(n_chunks):
        lo, hi = chunk_bounds(n, n_chunks, c)
        partial[c] = chunk_loss(loss_kind, Z, Y, lo, hi, D, want_grad)
    total = 0.0
    for c in range(n_chunks):
        total += partial[c]
    return total


@jit()
def output_loss_serial(loss_kind, Z, Y, n_chunks, D, want_grad):
    """:func:`output_loss_block` on one thread: the same chunks in the same order, so the same
    bits, without the cost of waking a thread team for small blocks."""
    n = Z.shape[0]
    total = 0.0
    for c in range(n_chunks):
        lo, hi = chunk_bounds(n, n_chunks, c)
        total += chunk_loss(loss_kind, Z, Y, lo, hi, D, want_grad)
    return total


def _output_loss(loss_kind, Z, Y, n_chunks, D, want_grad, serial_below):
    kernel = output_loss_serial if Z.size < serial_below else output_loss_block
    return kernel(loss_kind, Z, Y, n_chunks, D, want_grad)


def forward_block(layers, act, Xb):
    """Pre-activations and activations of every layer of a block; the last Z are the logits."""
    Zs, As = [], [Xb]
    A = Xb
    for l, (W, b) in enumerate(layers):
        Z = matmul(A, W.T)
        Z += b
        Zs.append(Z)
        if l < len(layers) - 1:
            A = activation_array(act, Z)
            if A.dtype != Z.dtype:  # the scalar-formula activations come back in float64
                A = A.astype(Z.dtype)
            As.append(A)
    return Zs, As


def working_theta(theta, X):
    """``theta`` in the working precision (the dtype of X): itself in float64, a float32 copy
    for a float32 X."""
    return theta if theta.dtype == X.dtype else theta.astype(X.dtype)


def mlp_loss(theta, sizes, act, loss_kind, X, Y, n_chunks, block, serial_below=0, penalty=None):
    """Mean loss over the n samples (plus the L2 term of ``penalty``). Returns a float.

    Samples go in blocks of ``block`` rows (a fixed partition of range(n), so the result does
    not depend on the thread count); ``n_chunks`` chunks per block in
    :func:`output_loss_block`, run on one thread (:func:`output_loss_serial`, same bits) when
    the block's logits have fewer than ``serial_below`` entries; block sums are added in order.
    ``penalty`` is None or the (P,) weights of the L2 term (``kernels.penalty.l2_vector``).
    """
    n = X.shape[0]
    layers = layer_views(working_theta(theta, X), sizes)
    total = 0.0
    for s0 in range(0, n, block):
        Zs, _ = forward_block(layers, act, X[s0 : s0 + block])
        Z = Zs[-1]
        total += _output_loss(loss_kind, Z, Y[s0 : s0 + block], n_chunks, Z, False, serial_below)
    if penalty is not None:
        return total / n + l2_value(theta, penalty)
    return total / n


def mlp_loss_grad(
    theta, sizes, act, loss_kind, X, Y, n_chunks, block, serial_below=0, penalty=None
):
    """Mean loss and its gradient by backpropagation (blocks and ``penalty`` as
    :func:`mlp_loss`).

    Returns
    -------
    loss : float
    grad : (P,) float64
    """
    n = X.shape[0]
    layers = layer_views(working_theta(theta, X), sizes)
    grad = np.zeros(theta.shape[0])
    glayers = layer_views(grad, sizes)
    total = 0.0
    for s0 in range(0, n, block):
        Zs, As = forward_block(layers, act, X[s0 : s0 + block])
        D = np.empty_like(Zs[-1])
        Yb = Y[s0 : s0 + block]
        total += _output_loss(loss_kind, Zs[-1], Yb, n_chunks, D, True, serial_below)
        for l in range(len(layers) - 1, -1, -1):
            gW, gb = glayers[l]
            gW += matmul(D.T, As[l])
            gb += D.sum(axis=0, dtype=np.float64)
            if l > 0:
                D = matmul(D, layers[l][0])
                D *= activation_d1_array(act, Zs[l - 1], As[l])
    grad /= n
    if penalty is not None:
        add_l2_grad(grad, theta, penalty)
        return total / n + l2_value(theta, penalty), grad
    return total / n, grad


def mlp_logits(theta, sizes, act, X, block):
    """Network outputs before the loss link (logits or regression outputs), (n, out).

    Layer by layer on blocks of ``block`` samples (BLAS products, NumPy activations).
    """
    layers = layer_views(working_theta(theta, X), sizes)
    n = X.shape[0]
    out = np.empty((n, int(sizes[-1])))
    for s0 in range(0, n, block):
        Zs, _ = forward_block(layers, act, X[s0 : s0 + block])
        out[s0 : s0 + block] = Zs[-1]
    return out
