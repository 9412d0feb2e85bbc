"""CPU kernels of the MLP family: loss, loss + gradient, Hessian-vector products, outputs.

Model encoding shared by every kernel (the API builds it, see ``fastscape.models``):

``theta`` (P,)
    One flat float64 vector. Layer ``l`` holds ``W_l`` of shape ``(sizes[l+1], sizes[l])``
    (rows = output units), stored row-major, followed by ``b_l`` of shape ``(sizes[l+1],)``.
``sizes`` (L+1,) int64
    Units per layer, input first.
``act`` int
    Hidden activation code: ``IDENTITY``, ``TANH``, ``RELU`` or ``SIGMOID``. The output layer
    has no activation: it produces logits (or regression outputs).
``loss_kind`` int
    ``SOFTMAX_CE``, ``LOGISTIC`` or ``MSE``.
``X`` (n, d) C-contiguous float64, ``Y`` (n, out) C-contiguous float64
    Targets as a matrix: one-hot rows for softmax-CE, the 0/1 label for logistic, the
    regression targets for MSE. Per-sample losses (means are taken over samples):

    - softmax-CE: ``s * logsumexp(z) - y . z`` with ``s = sum(y)`` (= 1 for one-hot rows);
    - logistic: ``softplus(z) - y z``;
    - MSE: ``sum_o (z_o - y_o)**2``.

Work is split into ``n_chunks`` contiguous chunks of samples, a partition that depends only on
``n`` and ``n_chunks``, never on the thread count. Each chunk accumulates into its own row of a
scratch array inside ``prange``; the rows are then summed serially in chunk order. Results are
therefore bitwise identical for any number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._blas import matmul
from ._jit import jit

IDENTITY, TANH, RELU, SIGMOID = 0, 1, 2, 3
SOFTMAX_CE, LOGISTIC, MSE = 0, 1, 2


# ----------------------------------------------------------------------------- scalar helpers
@jit()
def softplus(z):
    """log(1 + exp(z)), finite for any finite z."""
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@jit()
def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@jit()
def activate(act, z):
    """Hidden activation f(z)."""
    if act == TANH:
        return math.tanh(z)
    if act == RELU:
        return z if z > 0.0 else 0.0
    if act == SIGMOID:
        return sigmoid(z)
    return z


@jit()
def activate_d1(act, z, a):
    """f'(z), given z and a = f(z)."""
    if act == TANH:
        return 1.0 - a * a
    if act == RELU:
        return 1.0 if z > 0.0 else 0.0
    if act == SIGMOID:
        return a * (1.0 - a)
    return 1.0


@jit()
def activate_d2(act, z, a):
    """f''(z), given z and a = f(z)."""
    if act == TANH:
        return -2.0 * a * (1.0 - a * a)
    if act == SIGMOID:
        return a * (1.0 - a) * (1.0 - 2.0 * a)
    return 0.0


# ----------------------------------------------------------------------------- layout
@jit()
def layout(sizes):
    """Offsets of W_l and b_l in theta and of layer l's units in a per-sample buffer.

    Returns
    -------
    w_off, b_off : (L,) int64
    u_off : (L+1,) int64
        Units of layer l+1 (l = 0 .. L-1) occupy ``u_off[l]:u_off[l+1]``.
    """
    n_layers = sizes.shape[0] - 1
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    u_off = np.empty(n_layers + 1, np.int64)
    o = 0
    u = 0
    for l in range(n_layers):
        w_off[l] = o
        o += sizes[l + 1] * sizes[l]
        b_off[l] = o
        o += sizes[l + 1]
        u_off[l] = u
        u += sizes[l + 1]
    u_off[n_layers] = u
    return w_off, b_off, u_off


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


@jit()
def output_loss(loss_kind, z, y, g, want_grad):
    """Loss of one sample from its logits z; with want_grad, writes dloss/dz into g."""
    n_out = z.shape[0]
    if loss_kind == LOGISTIC:
        # one exp serves softplus and sigmoid: e = exp(-|z|)
        z0 = z[0]
        e = math.exp(-abs(z0))
        if want_grad:
            g[0] = (1.0 / (1.0 + e) if z0 >= 0.0 else e / (1.0 + e)) - y[0]
        return max(z0, 0.0) + math.log1p(e) - y[0] * z0
    if loss_kind == MSE:
        total = 0.0
        for o in range(n_out):
            r = z[o] - y[o]
            total += r * r
            if want_grad:
                g[o] = 2.0 * r
        return total
    m = z[0]
    for o in range(1, n_out):
        if z[o] > m:
            m = z[o]
    se = 0.0
    for o in range(n_out):
        se += math.exp(z[o] - m)
    lse = m + math.log(se)
    s = 0.0
    yz = 0.0
    for o in range(n_out):
        s += y[o]
        yz += y[o] * z[o]
    if want_grad:
        for o in range(n_out):
            g[o] = s * math.exp(z[o] - lse) - y[o]
    return s * lse - yz


@jit()
def output_hvp(loss_kind, z, y, r, out):
    """out = (d2 loss / dz2) r for one sample's logits z."""
    n_out = z.shape[0]
    if loss_kind == LOGISTIC:
        p = sigmoid(z[0])
        out[0] = p * (1.0 - p) * r[0]
        return
    if loss_kind == MSE:
        for o in range(n_out):
            out[o] = 2.0 * r[o]
        return
    m = z[0]
    for o in range(1, n_out):
        if z[o] > m:
            m = z[o]
    se = 0.0
    for o in range(n_out):
        se += math.exp(z[o] - m)
    lse = m + math.log(se)
    s = 0.0
    pr = 0.0
    for o in range(n_out):
        s += y[o]
        pr += math.exp(z[o] - lse) * r[o]
    for o in range(n_out):
        p = math.exp(z[o] - lse)
        out[o] = s * p * (r[o] - pr)


@jit()
def backward(theta, sizes, w_off, b_off, u_off, act, Z, A, D, T):
    """Backpropagate deltas of one sample.

    On entry D holds dloss/dz of the output layer. On exit ``D[u_off[l]:u_off[l+1]]`` holds
    dloss/dz_{l+1} for every layer and ``T`` holds ``W_{l+1}^T delta_{l+1}`` for every hidden
    layer (the backpropagated signal before multiplication by f').
    """
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers - 1, 0, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        lo = u_off[l - 1]
        t = T[lo : lo + n_in]
        d = D[lo : lo + n_in]
        z = Z[lo : lo + n_in]
        a = A[lo : lo + n_in]
        t[:] = 0.0
        for j in range(n_out):
            dj = D[u_off[l] + j]
            w = theta[w_off[l] + j * n_in : w_off[l] + (j + 1) * n_in]
            for k in range(n_in):
                t[k] += w[k] * dj
        for k in range(n_in):
            d[k] = t[k] * activate_d1(act, z[k], a[k])


# ----------------------------------------------------------------------------- batch kernels
# Loss and gradient run layer by layer on blocks of samples: every layer's products
# (A_{l-1} W_l^T forward, delta_l^T A_{l-1} and delta_l W_l backward) are GEMMs done by BLAS
# (``_blas.matmul``: reproducible for any thread count) and
# the activations are NumPy's SIMD loops; one compiled kernel computes the loss of the logits and
# its derivative per sample. (Per-sample GEMV kernels ran 2-3x slower than BLAS on a 784 x 128
# layer and no faster on small ones.)
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
        acc = 0.0
        for i in range(lo, hi):
            acc += output_loss(loss_kind, Z[i], Y[i], D[i], want_grad)
        partial[c] = acc
    total = 0.0
    for c in range(n_chunks):
        total += partial[c]
    return total


def activation_array(act, Z):
    """f(Z) elementwise (NumPy's vector loops), a new array."""
    if act == TANH:
        return np.tanh(Z)
    if act == RELU:
        return np.maximum(Z, 0.0)
    if act == SIGMOID:
        # 1 / (1 + exp(-z)) = (1 + tanh(z / 2)) / 2, without overflow
        A = np.tanh(0.5 * Z)
        A += 1.0
        A *= 0.5
        return A
    return Z.copy()


def activation_d1_array(act, Z, A):
    """f'(Z) given A = f(Z), a new array."""
    if act == TANH:
        return 1.0 - A * A
    if act == RELU:
        return (Z > 0.0).astype(np.float64)
    if act == SIGMOID:
        return A * (1.0 - A)
    return np.ones_like(Z)


def _layers(theta, sizes):
    """Views (W_l (out, in), b_l (out,)) of every layer."""
    out = []
    o = 0
    for l in range(sizes.shape[0] - 1):
        n_in, n_out = int(sizes[l]), int(sizes[l + 1])
        W = theta[o : o + n_out * n_in].reshape(n_out, n_in)
        o += n_out * n_in
        out.append((W, theta[o : o + n_out]))
        o += n_out
    return out


def _forward_block(layers, act, Xb):
    """Pre-activations and activations of every layer of a block; the last Z are the logits."""
    Zs, As = [], [Xb]
    A = Xb
    for l, (W, b) in enumerate(layers):
        Z = matmul(A, W.T)
        Z += b
        Zs.append(Z)
        if l < len(layers) - 1:
            A = activation_array(act, Z)
            As.append(A)
    return Zs, As


def mlp_loss(theta, sizes, act, loss_kind, X, Y, n_chunks, block):
    """Mean loss over the n samples. Returns a float.

    Samples go in blocks of ``block`` rows (a fixed partition of range(n), so the result does
    not depend on the thread count); ``n_chunks`` chunks per block in
    :func:`output_loss_block`; block sums are added in order.
    """
    n = X.shape[0]
    layers = _layers(theta, sizes)
    total = 0.0
    for s0 in range(0, n, block):
        Zs, _ = _forward_block(layers, act, X[s0 : s0 + block])
        Z = Zs[-1]
        total += output_loss_block(loss_kind, Z, Y[s0 : s0 + block], n_chunks, Z, False)
    return total / n


def mlp_loss_grad(theta, sizes, act, loss_kind, X, Y, n_chunks, block):
    """Mean loss and its gradient by backpropagation (blocks as :func:`mlp_loss`).

    Returns
    -------
    loss : float
    grad : (P,) float64
    """
    n = X.shape[0]
    layers = _layers(theta, sizes)
    grad = np.zeros(theta.shape[0])
    glayers = _layers(grad, sizes)
    total = 0.0
    for s0 in range(0, n, block):
        Zs, As = _forward_block(layers, act, X[s0 : s0 + block])
        D = np.empty_like(Zs[-1])
        total += output_loss_block(loss_kind, Zs[-1], Y[s0 : s0 + block], n_chunks, D, True)
        for l in range(len(layers) - 1, -1, -1):
            gW, gb = glayers[l]
            gW += matmul(D.T, As[l])
            gb += D.sum(axis=0)
            if l > 0:
                D = matmul(D, layers[l][0])
                D *= activation_d1_array(act, Zs[l - 1], As[l])
    grad /= n
    return total / n, grad


@jit()
def r_forward(theta, v, sizes, w_off, b_off, u_off, act, x, Z, A, RZ, RA):
    """Pearlmutter's forward R-pass: directional derivatives RZ = R{z}, RA = R{a} along v."""
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        prev = x if l == 0 else A[u_off[l - 1] : u_off[l]]
        last = l == n_layers - 1
        for j in range(n_out):
            lo = w_off[l] + j * n_in
            vw = v[lo : lo + n_in]
            s = v[b_off[l] + j]
            for k in range(n_in):
                s += vw[k] * prev[k]
            if l > 0:
                w = theta[lo : lo + n_in]
                rprev = RA[u_off[l - 1] : u_off[l]]
                for k in range(n_in):
                    s += w[k] * rprev[k]
            u = u_off[l] + j
            RZ[u] = s
            RA[u] = s if last else activate_d1(act, Z[u], A[u]) * s


@jit()
def r_backward(theta, v, sizes, w_off, b_off, u_off, act, x, Z, A, D, T, RZ, RA, RD, H):
    """Pearlmutter's backward R-pass for one sample; H += R{per-sample gradient}.

    On entry RD's output block holds R{delta_L} = (d2 loss/dz2) R{z_L}.
    """
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers - 1, -1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        prev = x if l == 0 else A[u_off[l - 1] : u_off[l]]
        for j in range(n_out):
            u = u_off[l] + j
            rdj = RD[u]
            dj = D[u]
            h = H[w_off[l] + j * n_in : w_off[l] + (j + 1) * n_in]
            for k in range(n_in):
                h[k] += rdj * prev[k]
            if l > 0:
                rprev = RA[u_off[l - 1] : u_off[l]]
                for k in range(n_in):
                    h[k] += dj * rprev[k]
            H[b_off[l] + j] += rdj
        if l > 0:
            lo = u_off[l - 1]
            # RD_{l-1} = f''(z) R{z} * T + f'(z) * (V_l^T delta_l + W_l^T R{delta_l})
            rd = RD[lo : lo + n_in]
            rd[:] = 0.0
            for j in range(n_out):
                u = u_off[l] + j
                dj = D[u]
                rdj = RD[u]
                w = theta[w_off[l] + j * n_in : w_off[l] + (j + 1) * n_in]
                vw = v[w_off[l] + j * n_in : w_off[l] + (j + 1) * n_in]
                for k in range(n_in):
                    rd[k] += vw[k] * dj + w[k] * rdj
            for k in range(n_in):
                z = Z[lo + k]
                a = A[lo + k]
                rd[k] = (
                    activate_d2(act, z, a) * RZ[lo + k] * T[lo + k] + activate_d1(act, z, a) * rd[k]
                )


@jit(parallel=True)
def mlp_hvp(theta, V, sizes, act, loss_kind, X, Y, n_chunks, sub_block):
    """Hessian-vector products of the mean loss, exact (Pearlmutter's R-operator).

    Parameters
    ----------
    theta : (P,) float64
    V : (K, P) float64
        K vectors; the forward and backward passes of each sample are shared by all K.
    n_chunks : int
        Fixed partition of the samples (see the module docstring).
    sub_block : int
        Samples whose forward/backward passes are kept while the K vectors sweep them.

    Returns
    -------
    (K, P) float64
        Row k is H @ V[k].
    """
    n = X.shape[0]
    K = V.shape[0]
    P = theta.shape[0]
    w_off, b_off, u_off = layout(sizes)
    n_units = u_off[-1]
    n_out = sizes[-1]
    out_lo = n_units - n_out
    scratch = np.zeros((n_chunks, K, P))
    for c in prange(n_chunks):
        # Forward and backward passes of a sub-block of samples are stored first; then each
        # vector k sweeps the sub-block, so its accumulator scratch[c, k] (P values) stays in
        # cache instead of K accumulators being streamed through memory for every sample.
        # For each k the samples are still added in increasing order.
        Zs = np.empty((sub_block, n_units))
        As = np.empty((sub_block, n_units))
        Ds = np.empty((sub_block, n_units))
        Ts = np.empty((sub_block, n_units))
        RZ = np.empty(n_units)
        RA = np.empty(n_units)
        RD = np.empty(n_units)
        lo, hi = chunk_bounds(n, n_chunks, c)
        for s0 in range(lo, hi, sub_block):
            s1 = min(hi, s0 + sub_block)
            for i in range(s0, s1):
                r = i - s0
                Z = Zs[r]
                A = As[r]
                D = Ds[r]
                forward(theta, sizes, w_off, b_off, u_off, act, X[i], Z, A)
                output_loss(loss_kind, Z[out_lo:], Y[i], D[out_lo:], True)
                backward(theta, sizes, w_off, b_off, u_off, act, Z, A, D, Ts[r])
            for k in range(K):
                v = V[k]
                acc = scratch[c, k]
                for i in range(s0, s1):
                    r = i - s0
                    x = X[i]
                    Z = Zs[r]
                    A = As[r]
                    r_forward(theta, v, sizes, w_off, b_off, u_off, act, x, Z, A, RZ, RA)
                    output_hvp(loss_kind, Z[out_lo:], Y[i], RZ[out_lo:], RD[out_lo:])
                    r_backward(
                        theta, v, sizes, w_off, b_off, u_off, act, x, Z, A, Ds[r], Ts[r],
                        RZ, RA, RD, acc,
                    )  # fmt: skip
    out = np.zeros((K, P))
    inv = 1.0 / n
    for c in range(n_chunks):
        for k in range(K):
            for p in range(P):
                out[k, p] += scratch[c, k, p]
    for k in range(K):
        for p in range(P):
            out[k, p] *= inv
    return out


def mlp_logits(theta, sizes, act, X, block):
    """Network outputs before the loss link (logits or regression outputs), (n, out).

    Layer by layer on blocks of ``block`` samples (BLAS products, NumPy activations).
    """
    layers = _layers(theta, sizes)
    n = X.shape[0]
    out = np.empty((n, int(sizes[-1])))
    for s0 in range(0, n, block):
        Zs, _ = _forward_block(layers, act, X[s0 : s0 + block])
        out[s0 : s0 + block] = Zs[-1]
    return out
