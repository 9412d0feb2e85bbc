"""CUDA kernels of the MLP family: loss, loss + gradient, batched Hessian-vector products.

GPU twins of ``kernels/mlp.py`` with the same model encoding (flat ``theta``, ``sizes``,
activation and loss codes, target matrix ``Y``); see that module's docstring.

Work decomposition (no floating-point atomics, fixed summation orders):

``mlp_loss``
    One thread per slice of samples (thread ``t`` of ``T`` takes samples ``t, t + T, ...``);
    each thread keeps its loss sum in a register and writes it to ``partial[t]``. The host adds
    the ``T`` partials in index order.
``mlp_loss_grad`` and ``mlp_hvp``
    Samples are processed in fixed blocks of ``block`` samples (memory stays bounded). For each
    block, a *sample kernel* runs one thread per sample (per (vector, sample) pair for the
    R-pass of the HVP) and stores that sample's activations and back-propagated deltas in a
    (block, units) buffer. A *parameter kernel* then runs one thread per parameter (per
    (vector, parameter) pair), which sums the block's per-sample contributions in sample order
    and adds the block sum to its own accumulator. Blocks are processed in order, so each
    output element is summed in one fixed order: the bits depend on ``n`` and ``block`` only,
    never on the launch shape.

Per-sample scratch lives in global device memory (rows of 2-D arrays indexed by thread or by
sample), because ``cuda.local.array`` needs compile-time sizes and the model sizes are data.

The element-wise device functions (activations, their derivatives, per-sample losses) are in
``kernels/cuda/elementwise.py``; the helpers here are index-based twins of the CPU helpers
(device code takes buffers and row numbers instead of slices).
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import cuda

from ..layout import as_sizes, layout
from ..penalty import add_l2_grad, add_l2_hvp, l2_value
from .elementwise import activate, activate_d1, activate_d2, output_hvp, output_loss


# ----------------------------------------------------------------------------- one sample
@cuda.jit(device=True)
def forward(theta, sizes, w_off, b_off, u_off, act, X, i, Z, A, r):
    """Forward pass of sample ``X[i]``; fills rows ``Z[r]`` and ``A[r]`` (all units)."""
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        last = l == n_layers - 1
        for j in range(n_out):
            w0 = w_off[l] + j * n_in
            s = theta[b_off[l] + j]
            if l == 0:
                for k in range(n_in):
                    s += theta[w0 + k] * X[i, k]
            else:
                p0 = u_off[l - 1]
                for k in range(n_in):
                    s += theta[w0 + k] * A[r, p0 + k]
            u = u_off[l] + j
            Z[r, u] = s
            A[r, u] = s if last else activate(act, s)


@cuda.jit(device=True)
def backward(theta, sizes, w_off, u_off, act, Z, A, D, T, r):
    """Backpropagate the deltas of row r (twin of ``kernels.mlp.backward``).

    On entry ``D[r]`` holds dloss/dz of the output layer; on exit it holds the deltas of every
    layer and ``T[r]`` holds ``W_{l+1}^T delta_{l+1}`` for every hidden layer.
    """
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers - 1, 0, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        lo = u_off[l - 1]
        for k in range(n_in):
            T[r, lo + k] = 0.0
        for j in range(n_out):
            dj = D[r, u_off[l] + j]
            w0 = w_off[l] + j * n_in
            for k in range(n_in):
                T[r, lo + k] += theta[w0 + k] * dj
        for k in range(n_in):
            D[r, lo + k] = T[r, lo + k] * activate_d1(act, Z[r, lo + k], A[r, lo + k])


@cuda.jit(device=True)
def r_forward(theta, V, vk, sizes, w_off, b_off, u_off, act, X, i, Z, A, r, RZ, RA, rr):
    """Forward R-pass along ``V[vk]``: rows ``RZ[rr]``, ``RA[rr]`` (twin of ``r_forward``)."""
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        last = l == n_layers - 1
        for j in range(n_out):
            w0 = w_off[l] + j * n_in
            s = V[vk, b_off[l] + j]
            if l == 0:
                for k in range(n_in):
                    s += V[vk, w0 + k] * X[i, k]
            else:
                p0 = u_off[l - 1]
                for k in range(n_in):
                    s += V[vk, w0 + k] * A[r, p0 + k]
                for k in range(n_in):
                    s += theta[w0 + k] * RA[rr, p0 + k]
            u = u_off[l] + j
            RZ[rr, u] = s
            RA[rr, u] = s if last else activate_d1(act, Z[r, u], A[r, u]) * s


@cuda.jit(device=True)
def r_backward(theta, V, vk, sizes, w_off, u_off, act, Z, D, T, A, r, RZ, RD, rr):
    """Backward R-pass of the deltas: on entry ``RD[rr]``'s output block holds R{delta_L}; on
    exit ``RD[rr]`` holds R{delta_l} of every layer (the R-part of ``kernels.mlp.r_backward``;
    the parameter sums are done by :func:`hvp_params_kernel`)."""
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers - 1, 0, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        lo = u_off[l - 1]
        for k in range(n_in):
            RD[rr, lo + k] = 0.0
        for j in range(n_out):
            u = u_off[l] + j
            dj = D[r, u]
            rdj = RD[rr, u]
            w0 = w_off[l] + j * n_in
            for k in range(n_in):
                RD[rr, lo + k] += V[vk, w0 + k] * dj + theta[w0 + k] * rdj
        for k in range(n_in):
            z = Z[r, lo + k]
            a = A[r, lo + k]
            RD[rr, lo + k] = (
                activate_d2(act, z, a) * RZ[rr, lo + k] * T[r, lo + k]
                + activate_d1(act, z, a) * RD[rr, lo + k]
            )


@cuda.jit(device=True)
def param_of(p, sizes, w_off, b_off):
    """Layer l, unit j and input k of parameter p (k = -1 for a bias)."""
    n_layers = sizes.shape[0] - 1
    for l in range(n_layers):
        n_in = sizes[l]
        if p < b_off[l]:
            q = p - w_off[l]
            return l, q // n_in, q - (q // n_in) * n_in
        if p < b_off[l] + sizes[l + 1]:
            return l, p - b_off[l], -1
    return -1, -1, -1


# ----------------------------------------------------------------------------- kernels
@cuda.jit
def loss_kernel(theta, sizes, w_off, b_off, u_off, act, loss_kind, X, Y, Z, A, G, partial):
    """partial[t] = sum of the losses of samples t, t + T, ... (T = partial.shape[0])."""
    t = cuda.grid(1)
    n_threads = partial.shape[0]
    if t >= n_threads:
        return
    n = X.shape[0]
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    z0 = u_off[n_layers] - n_out
    acc = 0.0
    for i in range(t, n, n_threads):
        forward(theta, sizes, w_off, b_off, u_off, act, X, i, Z, A, t)
        acc += output_loss(loss_kind, n_out, Z, t, z0, Y, i, G, t, 0, False)
    partial[t] = acc


@cuda.jit
def sample_grad_kernel(
    theta, sizes, w_off, b_off, u_off, act, loss_kind, X, Y, lo, hi, Z, A, D, T, lossbuf
):
    """One thread per sample i in [lo, hi): row r = i - lo of Z, A, D, T and lossbuf[r]."""
    r = cuda.grid(1)
    i = lo + r
    if i >= hi:
        return
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    z0 = u_off[n_layers] - n_out
    forward(theta, sizes, w_off, b_off, u_off, act, X, i, Z, A, r)
    lossbuf[r] = output_loss(loss_kind, n_out, Z, r, z0, Y, i, D, r, z0, True)
    backward(theta, sizes, w_off, u_off, act, Z, A, D, T, r)


@cuda.jit
def grad_params_kernel(sizes, w_off, b_off, u_off, X, lo, hi, A, D, lossbuf, G, loss_acc):
    """One thread per parameter p < P: ``G[p] +=`` the block's sum, samples in order.

    Thread P adds the block's losses to ``loss_acc[0]``.
    """
    p = cuda.grid(1)
    P = G.shape[0]
    nb = hi - lo
    if p == P:
        s = 0.0
        for r in range(nb):
            s += lossbuf[r]
        loss_acc[0] += s
        return
    if p > P:
        return
    l, j, k = param_of(p, sizes, w_off, b_off)
    u = u_off[l] + j
    s = 0.0
    if k < 0:
        for r in range(nb):
            s += D[r, u]
    elif l == 0:
        for r in range(nb):
            s += D[r, u] * X[lo + r, k]
    else:
        p0 = u_off[l - 1]
        for r in range(nb):
            s += D[r, u] * A[r, p0 + k]
    G[p] += s


@cuda.jit
def sample_rop_kernel(
    theta, V, sizes, w_off, b_off, u_off, act, loss_kind, X, Y, lo, hi, Z, A, D, T, RZ, RA, RD
):
    """One thread per (vector vk, sample i) pair: R-passes into row ``vk * B + (i - lo)``."""
    t = cuda.grid(1)
    nb = hi - lo
    K = V.shape[0]
    if t >= K * nb:
        return
    vk = t // nb
    r = t - vk * nb
    i = lo + r
    rr = vk * Z.shape[0] + r
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    z0 = u_off[n_layers] - n_out
    r_forward(theta, V, vk, sizes, w_off, b_off, u_off, act, X, i, Z, A, r, RZ, RA, rr)
    output_hvp(loss_kind, n_out, Z, r, z0, Y, i, RZ, RD, rr)
    r_backward(theta, V, vk, sizes, w_off, u_off, act, Z, D, T, A, r, RZ, RD, rr)


@cuda.jit
def hvp_params_kernel(sizes, w_off, b_off, u_off, X, lo, hi, A, D, RA, RD, H):
    """One thread per (vector vk, parameter p): ``H[vk, p] +=`` the block's sum, in order."""
    t = cuda.grid(1)
    K, P = H.shape
    if t >= K * P:
        return
    vk = t // P
    p = t - vk * P
    B = A.shape[0]
    nb = hi - lo
    base = vk * B
    l, j, k = param_of(p, sizes, w_off, b_off)
    u = u_off[l] + j
    s = 0.0
    if k < 0:
        for r in range(nb):
            s += RD[base + r, u]
    elif l == 0:
        for r in range(nb):
            s += RD[base + r, u] * X[lo + r, k]
    else:
        p0 = u_off[l - 1]
        for r in range(nb):
            s += RD[base + r, u] * A[r, p0 + k]
            s += D[r, u] * RA[base + r, p0 + k]
    H[vk, p] += s


# ----------------------------------------------------------------------------- host drivers
#: The float32 path: the drivers' ``dtype=np.float32`` stores parameters, data and per-sample
#: buffers in float32, so the per-sample arithmetic (the forward pass, backpropagation and the
#: R-passes: almost all of the work) runs in float32, while the loss link functions and every
#: sum over samples (loss, gradient and HVP accumulators) stay in float64. Its error is that of
#: a float32 forward pass, about 1e-6 relative for well-scaled problems (inputs rounded to
#: 6e-8, a few roundings per layer), independent of n. The outputs are float64 arrays.
FLOAT32_NOTE = "float32 storage and per-sample arithmetic, float64 sums over samples"


def is_device_array(a) -> bool:
    """True for a Numba device array (or the simulator's fake one)."""
    return hasattr(a, "copy_to_host")


def to_device(a, dtype=np.float64):
    """``a`` on the device: device arrays pass through (their dtype is the caller's business),
    host arrays are converted to ``dtype`` and copied once."""
    return a if is_device_array(a) else cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def _layout(sizes):
    sizes = as_sizes(sizes)
    w_off, b_off, u_off = layout(sizes)
    return sizes, w_off, b_off, u_off, int(u_off[-1])


def _launch(n_work: int, threads_per_block: int):
    return (max(1, -(-n_work // threads_per_block)), threads_per_block)


def configure(kernel, grid: int, threads_per_block: int):
    """``kernel[grid, threads_per_block]``, without numba-cuda's low-occupancy warning.

    numba-cuda warns (NumbaPerformanceWarning) on every launch of fewer than 128 blocks. Our
    grid sizes follow the problem (a small model or a few points give a small grid, and a
    larger grid would only add idle threads), so that warning says nothing actionable here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Grid size \d+ will likely result in GPU")
        return kernel[grid, threads_per_block]


def mlp_loss(
    theta, sizes, act, loss_kind, X, Y, n_threads, threads_per_block, dtype=np.float64,
    penalty=None,
):  # fmt: skip
    """Mean loss over the n samples (twin of ``kernels.mlp.mlp_loss``). Returns a float.

    Parameters
    ----------
    theta : (P,) float64
    sizes : (L+1,) int64
    act, loss_kind : int
    X : (n, d) float64, host or device array
    Y : (n, out) float64, host or device array
    n_threads : int
        Total threads T; thread t sums samples t, t + T, ... (the bits depend on T).
    threads_per_block : int
    dtype : numpy dtype, optional
        float64, or float32: parameters, data and per-sample arithmetic in float32, sums over
        samples in float64 (see :data:`FLOAT32_NOTE`).
    penalty : (P,) float64, optional
        Weights of the L2 term (``kernels.penalty.l2_vector``), added on the host with the CPU
        kernel's functions; None: no L2 term.
    """
    sizes, w_off, b_off, u_off, n_units = _layout(sizes)
    n = X.shape[0]
    n_out = int(sizes[-1])
    T = max(1, min(int(n_threads), n))
    dX, dY = to_device(X, dtype), to_device(Y, dtype)
    # per-thread scratch indexed [thread, unit], Fortran order: a warp's accesses coalesce
    Z = cuda.device_array((T, n_units), dtype, order="F")
    A = cuda.device_array((T, n_units), dtype, order="F")
    G = cuda.device_array((T, n_out), dtype, order="F")
    partial = cuda.device_array(T)
    grid, tpb = _launch(T, threads_per_block)
    configure(loss_kernel, grid, tpb)(
        cuda.to_device(theta.astype(dtype)), cuda.to_device(sizes), cuda.to_device(w_off),
        cuda.to_device(b_off), cuda.to_device(u_off), act, loss_kind, dX, dY, Z, A, G, partial,
    )  # fmt: skip
    host = partial.copy_to_host()
    total = 0.0
    for t in range(T):  # fixed order
        total += host[t]
    if penalty is not None:
        return total / n + l2_value(theta, penalty)
    return total / n


def _block_buffers(block, n_units, dtype):
    return tuple(cuda.device_array((block, n_units), dtype) for _ in range(4))


def mlp_loss_grad(
    theta, sizes, act, loss_kind, X, Y, block, threads_per_block, dtype=np.float64, penalty=None
):
    """Mean loss and its gradient (twin of ``kernels.mlp.mlp_loss_grad``).

    Parameters
    ----------
    theta : (P,) float64
    sizes : (L+1,) int64
    act, loss_kind : int
    X : (n, d) float64, host or device array
    Y : (n, out) float64, host or device array
    block : int
        Samples per block (memory: 4 * block * units floats).
    threads_per_block : int
    dtype : numpy dtype, optional
        float64 or float32 (see :data:`FLOAT32_NOTE`); the result is float64 either way.
    penalty : (P,) float64, optional
        Weights of the L2 term (``kernels.penalty.l2_vector``), added on the host with the CPU
        kernel's functions; None: no L2 term.

    Returns
    -------
    loss : float
    grad : (P,) float64
    """
    sizes, w_off, b_off, u_off, n_units = _layout(sizes)
    n = X.shape[0]
    P = theta.shape[0]
    block = max(1, min(int(block), n))
    dX, dY = to_device(X, dtype), to_device(Y, dtype)
    d_theta = cuda.to_device(theta.astype(dtype))
    d_sizes, d_w, d_b, d_u = (cuda.to_device(a) for a in (sizes, w_off, b_off, u_off))
    Z, A, D, T = _block_buffers(block, n_units, dtype)
    lossbuf = cuda.device_array(block)
    G = cuda.to_device(np.zeros(P))
    loss_acc = cuda.to_device(np.zeros(1))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        grid, tpb = _launch(hi - lo, threads_per_block)
        configure(sample_grad_kernel, grid, tpb)(
            d_theta, d_sizes, d_w, d_b, d_u, act, loss_kind, dX, dY, lo, hi, Z, A, D, T, lossbuf
        )
        grid, tpb = _launch(P + 1, threads_per_block)
        configure(grad_params_kernel, grid, tpb)(
            d_sizes, d_w, d_b, d_u, dX, lo, hi, A, D, lossbuf, G, loss_acc
        )
    inv = 1.0 / n
    grad = G.copy_to_host()
    grad *= inv
    value = float(loss_acc.copy_to_host()[0]) * inv
    if penalty is not None:
        add_l2_grad(grad, theta, penalty)
        value += l2_value(theta, penalty)
    return value, grad


def hvp_block_for(K: int, n_units: int, block: int, scratch_bytes: int) -> int:
    """Samples per block of :func:`mlp_hvp`: ``block``, shrunk so that the (3K + 4) per-sample
    rows of ``n_units`` floats fit in ``scratch_bytes``."""
    fit = scratch_bytes // max(1, 8 * n_units * (3 * K + 4))
    return int(max(1, min(block, fit)))


def mlp_hvp(
    theta, V, sizes, act, loss_kind, X, Y, block, threads_per_block, dtype=np.float64,
    penalty=None,
):  # fmt: skip
    """Hessian-vector products of the mean loss (twin of ``kernels.mlp.mlp_hvp``).

    Parameters
    ----------
    theta : (P,) float64
    V : (K, P) float64
        K vectors; the forward and backward passes of each sample are shared by all K.
    sizes : (L+1,) int64
    act, loss_kind : int
    X : (n, d) float64, host or device array
    Y : (n, out) float64, host or device array
    block : int
        Samples per block (memory: (3K + 4) * block * units floats; see :func:`hvp_block_for`).
    threads_per_block : int
    dtype : numpy dtype, optional
        float64 or float32 (see :data:`FLOAT32_NOTE`); the result is float64 either way.
    penalty : (P,) float64, optional
        Weights of the L2 term (``kernels.penalty.l2_vector``), added on the host with the CPU
        kernel's functions; None: no L2 term.

    Returns
    -------
    (K, P) float64
        Row k is H @ V[k].
    """
    sizes, w_off, b_off, u_off, n_units = _layout(sizes)
    n = X.shape[0]
    K, P = V.shape
    block = max(1, min(int(block), n))
    dX, dY = to_device(X, dtype), to_device(Y, dtype)
    d_theta = cuda.to_device(theta.astype(dtype))
    d_V = cuda.to_device(np.ascontiguousarray(V, dtype=dtype))
    d_sizes, d_w, d_b, d_u = (cuda.to_device(a) for a in (sizes, w_off, b_off, u_off))
    Z, A, D, T = _block_buffers(block, n_units, dtype)
    lossbuf = cuda.device_array(block)
    RZ = cuda.device_array((K * block, n_units), dtype)
    RA = cuda.device_array((K * block, n_units), dtype)
    RD = cuda.device_array((K * block, n_units), dtype)
    H = cuda.to_device(np.zeros((K, P)))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        grid, tpb = _launch(hi - lo, threads_per_block)
        configure(sample_grad_kernel, grid, tpb)(
            d_theta, d_sizes, d_w, d_b, d_u, act, loss_kind, dX, dY, lo, hi, Z, A, D, T, lossbuf
        )
        grid, tpb = _launch(K * (hi - lo), threads_per_block)
        configure(sample_rop_kernel, grid, tpb)(
            d_theta, d_V, d_sizes, d_w, d_b, d_u, act, loss_kind, dX, dY, lo, hi,
            Z, A, D, T, RZ, RA, RD,
        )  # fmt: skip
        grid, tpb = _launch(K * P, threads_per_block)
        configure(hvp_params_kernel, grid, tpb)(d_sizes, d_w, d_b, d_u, dX, lo, hi, A, D, RA, RD, H)
    out = H.copy_to_host()
    out *= 1.0 / n
    if penalty is not None:
        add_l2_hvp(out, np.ascontiguousarray(V, dtype=np.float64), penalty)
    return out
