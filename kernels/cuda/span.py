"""CUDA span engine: loss and accuracy at m points in the span of K fixed vectors.

GPU twin of ``kernels/span.py`` (same inputs, same outputs): the points are
``theta_j = sum_k coef[j, k] basis[k]``, and the first layer is linear in its parameters,
``X W1(c)^T + b1(c) = sum_k c_k (X W1_k^T + b1_k)``. For each fixed block of samples:

1. ``first_layer_kernel`` forms ``F[k] = (X_blk W1_k^T + b1_k)^T``, stored (K, h1, block),
   for every basis row k that some point uses (one thread per (k, unit, sample));
2. ``points_kernel`` runs one thread per (point j, slot s): it takes the block's samples
   ``s, s + S, ...`` (S slots), forms each sample's first-layer outputs from F with the point's
   non-zero coefficients, runs the later layers with the point's own tail parameters (formed
   once per call by ``tail_kernel``, one thread per (point, parameter)), and adds the loss and
   the correct predictions of those samples to its own accumulators ``acc[s, j]``.

Blocks are processed in order and the host adds ``acc[:, j]`` over the S slots in order: every
sum has one fixed order, no atomics, so two runs give identical bits and a point's value does
not depend on the other points of the call.

Memory access: consecutive threads are consecutive slots of one point (with the default
S = 32, a warp is one point), so the point's coefficients and tail parameters are broadcast
to the warp, its F reads (consecutive samples) coalesce, and the per-thread scratch rows are
stored thread-fastest (Fortran order) so that they coalesce too.

Memory: ``O(K * block * h1 + m * P_tail + m * S * units)``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..elementwise import LOGISTIC, SOFTMAX_CE
from ..layout import layout
from ..penalty import span_l2
from .elementwise import activate, output_loss
from .mlp import configure, forward, to_device


@cuda.jit(device=True)
def correct(loss_kind, n_out, Z, r, z0, Y, i):
    """1.0 when the sample with logits ``Z[r, z0:]`` and targets ``Y[i]`` is classified
    correctly, else 0.0 (0.0 for MSE); twin of ``kernels.span.correct``."""
    if loss_kind == LOGISTIC:
        return 1.0 if (Z[r, z0] > 0.0) == (Y[i, 0] > 0.5) else 0.0
    if loss_kind == SOFTMAX_CE:
        bz = 0
        by = 0
        for o in range(1, n_out):
            if Z[r, z0 + o] > Z[r, z0 + bz]:
                bz = o
            if Y[i, o] > Y[i, by]:
                by = o
        return 1.0 if bz == by else 0.0
    return 0.0


@cuda.jit
def tail_kernel(coef, tail, theta_t):
    """``theta_t[j, p] = sum_k coef[j, k] tail[k, p]`` over the non-zero coefficients, in k
    order (one thread per (point, parameter))."""
    t = cuda.grid(1)
    m, K = coef.shape
    P = tail.shape[1]
    if t >= m * P:
        return
    j = t // P
    p = t - j * P
    s = 0.0
    for k in range(K):
        c = coef[j, k]
        if c != 0.0:
            s += c * tail[k, p]
    theta_t[j, p] = s


@cuda.jit
def first_layer_kernel(basis, used, X, lo, hi, F):
    """``F[k, u, r] = X[lo + r] . W1_k[u] + b1_k[u]`` for the used rows k (one thread per
    (used row, unit, sample), samples fastest); W1_k is ``basis[k, :h1 * d]`` row-major, b1_k
    follows it."""
    t = cuda.grid(1)
    h1 = F.shape[1]
    d = X.shape[1]
    nb = hi - lo
    per_row = nb * h1
    if t >= used.shape[0] * per_row:
        return
    q = t // per_row
    rem = t - q * per_row
    u = rem // nb
    r = rem - u * nb
    k = used[q]
    w0 = u * d
    s = 0.0
    for c in range(d):
        s += X[lo + r, c] * basis[k, w0 + c]
    F[k, u, r] = s + basis[k, h1 * d + u]


@cuda.jit
def points_kernel(
    coef, F, theta_t, sizes, tw_off, tb_off, tu_off, act, loss_kind, Y, lo, hi,
    Z1, A1, ZT, AT, G, acc_loss, acc_hits,
):  # fmt: skip
    """One thread per (point j, slot s), slots fastest: ``acc_*[s, j] +=`` the sums over the
    block's samples ``s, s + S, ...`` (S = acc_loss.shape[0]).

    ``theta_t`` is (m, P_tail): row j holds point j's tail parameters; F is (K, h1, block). The
    scratch arrays Z1, A1, ZT, AT, G are indexed ``[thread, unit]`` and stored in Fortran order
    by the driver, so that a warp's accesses coalesce.
    """
    t = cuda.grid(1)
    S, m = acc_loss.shape
    if t >= S * m:
        return
    j = t // S
    s = t - j * S
    K = coef.shape[1]
    h1 = F.shape[1]
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    nt = tu_off.shape[0] - 1
    z0 = tu_off[nt] - n_out
    theta = theta_t[j]
    nb = hi - lo
    total = 0.0
    hits = 0.0
    for r in range(s, nb, S):
        for u in range(h1):
            Z1[t, u] = 0.0
        for k in range(K):
            c = coef[j, k]
            if c != 0.0:
                for u in range(h1):
                    Z1[t, u] += c * F[k, u, r]
        if n_layers == 1:
            total += output_loss(loss_kind, n_out, Z1, t, 0, Y, lo + r, G, t, 0, False)
            hits += correct(loss_kind, n_out, Z1, t, 0, Y, lo + r)
        else:
            for u in range(h1):
                A1[t, u] = activate(act, Z1[t, u])
            forward(theta, sizes[1:], tw_off, tb_off, tu_off, act, A1, t, ZT, AT, t)
            total += output_loss(loss_kind, n_out, ZT, t, z0, Y, lo + r, G, t, 0, False)
            hits += correct(loss_kind, n_out, ZT, t, z0, Y, lo + r)
    acc_loss[s, j] += total
    acc_hits[s, j] += hits


def _launch(n_work: int, threads_per_block: int):
    return (max(1, -(-n_work // threads_per_block)), threads_per_block)


def span_eval(
    basis, coef, sizes, act, loss_kind, X, Y, block, slots, threads_per_block, dtype=np.float64,
    penalty=None,
):  # fmt: skip
    """Mean loss and accuracy of the model at the m points ``coef @ basis`` on the GPU.

    Twin of ``kernels.span.span_eval``; ``slots`` and ``threads_per_block`` replace its
    ``point_chunk``.

    Parameters
    ----------
    basis : (K, P) float64
    coef : (m, K) float64
    sizes : (L+1,) int64
    act, loss_kind : int
        Codes of ``kernels.mlp``.
    X : (n, d) float64, host or device array
    Y : (n, out) float64, host or device array
    block : int
        Samples per block (memory ``K * block * h1`` floats for the first-layer products).
    slots : int
        Threads per point: slot s sums the block's samples s, s + slots, ... (the bits depend
        on ``block`` and ``slots``, not on ``threads_per_block``).
    threads_per_block : int
    dtype : numpy dtype, optional
        float64, or float32: basis, coefficients, data and per-sample arithmetic in float32,
        per-point sums over samples in float64 (``kernels.cuda.mlp.FLOAT32_NOTE``).
    penalty : (P,) float64, optional
        Weights of the L2 term (``kernels.penalty.l2_vector``): each point gains ``½ cᵀ G c``,
        computed on the host by ``kernels.penalty.span_l2``; None: no L2 term.

    Returns
    -------
    loss : (m,) float64
        Mean loss at each point.
    accuracy : (m,) float64
        Fraction classified correctly (zeros for MSE).
    """
    l2 = None
    if penalty is not None:
        l2 = span_l2(
            np.ascontiguousarray(basis, dtype=np.float64),
            np.ascontiguousarray(coef, dtype=np.float64),
            penalty,
        )
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    basis = np.ascontiguousarray(basis, dtype=dtype)
    coef = np.ascontiguousarray(coef, dtype=dtype)
    n, d = X.shape
    K, _ = basis.shape
    m = coef.shape[0]
    h1 = int(sizes[1])
    n_layers = sizes.shape[0] - 1
    n_out = int(sizes[-1])
    tail_sizes = sizes[1:]
    tw_off, tb_off, tu_off = layout(tail_sizes)
    n_tail = max(int(tu_off[-1]), 1)
    block = max(1, min(int(block), n))
    S = max(1, min(int(slots), block))
    used = np.flatnonzero((coef != 0.0).any(axis=0)).astype(np.int64)
    dX, dY = to_device(X, dtype), to_device(Y, dtype)
    d_basis = cuda.to_device(basis)
    d_coef = cuda.to_device(coef)
    tail = np.ascontiguousarray(basis[:, h1 * d + h1 :])
    P_tail = tail.shape[1]
    theta_t = cuda.device_array((m, max(P_tail, 1)), dtype)
    if n_layers > 1:
        grid, tpb = _launch(m * P_tail, threads_per_block)
        configure(tail_kernel, grid, tpb)(d_coef, cuda.to_device(tail), theta_t)
    d_used = cuda.to_device(used if used.size else np.zeros(1, np.int64))
    # no hidden layer: the tail has no layers; keep the (unread) offset arrays non-empty
    tw_off = tw_off if tw_off.size else np.zeros(1, np.int64)
    tb_off = tb_off if tb_off.size else np.zeros(1, np.int64)
    d_sizes, d_tw, d_tb, d_tu = (cuda.to_device(a) for a in (sizes, tw_off, tb_off, tu_off))
    F = cuda.device_array((K, h1, block), dtype)
    n_thr = S * m
    # per-thread scratch indexed [thread, unit], Fortran order: a warp's accesses coalesce
    Z1 = cuda.device_array((n_thr, h1), dtype, order="F")
    A1 = cuda.device_array((n_thr, h1), dtype, order="F")
    ZT = cuda.device_array((n_thr, n_tail), dtype, order="F")
    AT = cuda.device_array((n_thr, n_tail), dtype, order="F")
    G = cuda.device_array((n_thr, n_out), dtype, order="F")
    acc_loss = cuda.to_device(np.zeros((S, m)))
    acc_hits = cuda.to_device(np.zeros((S, m)))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        if used.size:
            grid, tpb = _launch(used.size * (hi - lo) * h1, threads_per_block)
            configure(first_layer_kernel, grid, tpb)(d_basis, d_used, dX, lo, hi, F)
        grid, tpb = _launch(n_thr, threads_per_block)
        configure(points_kernel, grid, tpb)(
            d_coef, F, theta_t, d_sizes, d_tw, d_tb, d_tu, act, loss_kind, dY, lo, hi,
            Z1, A1, ZT, AT, G, acc_loss, acc_hits,
        )  # fmt: skip
    sums_loss = acc_loss.copy_to_host()
    sums_hits = acc_hits.copy_to_host()
    loss = np.zeros(m)
    hits = np.zeros(m)
    for s in range(S):  # fixed order
        loss += sums_loss[s]
        hits += sums_hits[s]
    if l2 is not None:
        return loss / n + l2, hits / n
    return loss / n, hits / n
