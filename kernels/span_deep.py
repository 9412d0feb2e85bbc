"""The span engine's general path on sample tiles: layers 2..L as matrix products per tile.

:func:`span_block_deep` serves two or more hidden layers in float64, and every model in
float32 (the one-hidden-layer and logistic paths, ``kernels.span_hidden`` and
``kernels.span_logistic``, are float64 kernels). The driver ``kernels.span.span_eval`` forms
the first-layer products ``F[k] = X_blk W1_k^T + b1_k`` of each basis row once per block; each
point then runs through fixed tiles of ``S`` samples:

1. first layer and activation of the tile, ``A1 = f(sum_t c_t F[k_t, tile])``
   (``tile_hidden``: one flat axpy per non-zero coefficient, or the fused
   1-3-term form, then the vectorised activation of ``kernels.elementwise``);
2. every later hidden layer as one single-threaded BLAS product ``Z = A W_l^T`` of shape
   ``(S, h_l)``, then the bias and the activation in one vectorised pass per row
   (:func:`bias_activate`);
3. the output layer as ``Z_out = W_L A^T`` of shape ``(out, S)``, its bias added
   (:func:`add_bias_rows`);
4. the loss fused at the end, the sample index as the vector lane (``tile_loss``).

Why BLAS per (point, tile) task rather than register-blocked Numba micro-kernels: measured
side by side (``bench/NOTES.md``, session 7), single-threaded DGEMM on a (64, 128) x (128, 128)
tile runs at 1.4x the best Numba micro-kernel (4 samples x 4 outputs, LLVM-vectorised dot
products) in float64 and 1.8x in float32.

Determinism. A BLAS library rounds a product row differently depending on the shape of the
call (its small-matrix and edge kernels), so every call here has a fixed shape: the tile
length ``S`` is a constant of the call (``config.SPAN_DEEP_TILE``), the last tile of a block is
padded with zero rows, and the tiles start at multiples of ``S`` from the block's start. A
sample's logits are therefore computed by the same calls whatever the point chunk, the thread
count or the other points of the call; the per-sample losses of the block go into a
(points, B) buffer and each point sums its row in one loop over the B samples (float64), as
``span_hidden`` does. The caller must run BLAS single-threaded (``kernels._blas.serial_blas``):
a multithreaded GEMM partitions by thread count. Unlike the one-hidden-layer path, the bits
depend on ``S`` (as on the block length).

float32: with F, the data and the later-layer parameters in float32 the products run in
single precision (SGEMM, about twice the DGEMM rate), the activations are evaluated in float64
from float32 inputs and stored in float32, and every per-sample loss and every sum over
samples is float64.

Memory per task: ``O(point_chunk * B + S * max_l h_l)``; never ``O(n * m)``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit
from .elementwise import (
    IDENTITY,
    LOGISTIC,
    RELU,
    SIGMOID,
    SOFTMAX_CE,
    TANH,
    activate_at,
    activate_block,
    sigmoid_at,
    tanh_at,
)
from .layout import layout
from .span_hidden import (
    combine_activate,
    first_layer_sum,
    tile_loss_logistic,
    tile_loss_mse,
    tile_loss_softmax_ce,
)
from .span_points import point_tails


@jit()
def tile_hidden(act, nq, idx, val, Ff, base, nz, nz4, zf, af, hbits):
    """The first layer ``sum_t val[t] Ff[idx[t], base:base + nz]`` of one point on one tile
    and its activation into ``af[:nz]``, then zeros up to ``nz4`` (the padding samples): the
    one-hidden-layer path's pieces (``span_hidden.combine_activate`` for 1 to 3 terms, else
    ``first_layer_sum`` and ``elementwise.activate_block``) behind a runtime activation code.
    """
    if 1 <= nq <= 3:
        k0 = idx[0]
        k1 = idx[1] if nq >= 2 else k0
        k2 = idx[2] if nq >= 3 else k0
        combine_activate(
            act, nq,
            Ff[k0, base : base + nz], val[0],
            Ff[k1, base : base + nz], val[1] if nq >= 2 else 0.0,
            Ff[k2, base : base + nz], val[2] if nq >= 3 else 0.0,
            af[:nz], hbits[:nz],
        )  # fmt: skip
    else:
        first_layer_sum(nq, idx, val, Ff, base, nz, zf)
        activate_block(act, zf[:nz], af[:nz], hbits[:nz])
    pad = af[nz:nz4]
    for j in range(nz4 - nz):
        pad[j] = 0.0


@jit()
def tile_loss(loss_kind, zo, YT, labels, s0, ns, ns4, dexp, eexp, mx, arg, se, lse, sy, yz,
              hbits, lossv):  # fmt: skip
    """Per-sample losses of a tile into ``lossv[:ns]`` (the one-hidden-layer path's
    ``span_hidden.tile_loss_*`` behind a runtime loss code); returns the tile's hits."""
    if loss_kind == SOFTMAX_CE:
        return tile_loss_softmax_ce(zo, YT, labels, s0, ns, ns4, dexp, eexp, mx, arg, se, lse,
                                    sy, yz, hbits, lossv)  # fmt: skip
    if loss_kind == LOGISTIC:
        return tile_loss_logistic(zo, YT, s0, ns, ns4, eexp, hbits, lossv)
    tile_loss_mse(zo, YT, s0, ns, lossv)
    return 0


@jit()
def bias_activate(act, Z, b, A, bits):
    """``A[s, j] = f(Z[s, j] + b[j])`` for a tile, one vectorised pass per row.

    The bias is added inside the activation's loop (the vectorisable forms of
    ``kernels.elementwise``: :func:`tanh_at`, :func:`sigmoid_at`, else :func:`activate_at`),
    which saves a pass over the tile; the values are those of adding the bias first and then
    calling ``activate_block``.

    Parameters
    ----------
    act : int
    Z : (S, h) float64 or float32
        Products of the tile (not written).
    b : (h,) float64 or float32
    A : (S, h), Z's dtype, written (must not be Z)
    bits : (h,) int64 or longer, scratch
    """
    S, h = Z.shape
    scale = bits.view(np.float64)
    if act == TANH:
        for s in range(S):
            zr = Z[s]
            ar = A[s]
            for j in range(h):
                ar[j] = tanh_at(zr[j] + b[j], bits, scale, j)
    elif act == SIGMOID:
        for s in range(S):
            zr = Z[s]
            ar = A[s]
            for j in range(h):
                ar[j] = sigmoid_at(zr[j] + b[j], bits, scale, j)
    elif act == RELU:
        for s in range(S):
            zr = Z[s]
            ar = A[s]
            for j in range(h):
                ar[j] = max(zr[j] + b[j], 0.0)
    else:
        for s in range(S):
            zr = Z[s]
            ar = A[s]
            for j in range(h):
                ar[j] = activate_at(act, zr[j] + b[j], bits, scale, j)


@jit()
def add_bias_rows(Zo, b):
    """``Zo[o, :] += b[o]`` (the output layer's bias on a (out, S) tile)."""
    for o in range(Zo.shape[0]):
        bo = b[o]
        zr = Zo[o]
        for s in range(zr.shape[0]):
            zr[s] += bo


@jit()
def tile_forward(act, n_layers, sizes, tw_off, tb_off, nq, idx, val, th, Ff, s0, ns, S, zf,
                 a_buf, b_buf, z_buf, zo, hbits):  # fmt: skip
    """Steps 1-3 of :func:`span_block_deep` for one point and one tile: the logits of the
    tile's samples into ``zo`` (out, S) (columns ns .. S - 1 from zero padding rows).

    Parameters
    ----------
    act, n_layers : int
    sizes : (L+1,) int64
    tw_off, tb_off : (L,) int64
        ``layout(sizes[1:])``: the later layers' offsets in th.
    nq : int
    idx : (K,) int64, val : (K,) float64
        The point's non-zero coefficients (nq of them).
    th : (P_tail,)
        The point's parameters of layers 2..L, in the working precision.
    Ff : (K, B h1)
        First-layer products of the block, flat per basis row.
    s0, ns, S : int
        First sample of the tile, its samples, the tile length.
    zf : (S h1,), a_buf, b_buf, z_buf : (S hmax,), zo : (out, S), hbits : (S max(hmax, out),)
        Scratch (zo written).
    """
    h1 = sizes[1]
    n_out = zo.shape[0]
    first_act = act if n_layers > 1 else IDENTITY
    # 1. first layer (padding rows up to S zeroed: every product has S rows)
    tile_hidden(first_act, nq, idx, val, Ff, s0 * h1, ns * h1, S * h1, zf, a_buf, hbits)
    A = a_buf[: S * h1].reshape((S, h1))
    if n_layers == 1:
        for o in range(n_out):
            for s in range(S):
                zo[o, s] = A[s, o]
        return
    cur = 0  # A lives in a_buf (0) or b_buf (1)
    # 2. later hidden layers, (S, h_out) each
    for l in range(1, n_layers - 1):
        h_in = sizes[l]
        h_out = sizes[l + 1]
        w0 = tw_off[l - 1]
        W = th[w0 : w0 + h_out * h_in].reshape((h_out, h_in))
        bl = th[tb_off[l - 1] : tb_off[l - 1] + h_out]
        Z = z_buf[: S * h_out].reshape((S, h_out))
        np.dot(A, W.T, Z)
        nxt = b_buf if cur == 0 else a_buf
        A = nxt[: S * h_out].reshape((S, h_out))
        bias_activate(act, Z, bl, A, hbits)
        cur = 1 - cur
    # 3. output layer, (out, S)
    h_in = sizes[n_layers - 1]
    w0 = tw_off[n_layers - 2]
    W = th[w0 : w0 + n_out * h_in].reshape((n_out, h_in))
    np.dot(W, A.T, zo)
    add_bias_rows(zo, th[tb_off[n_layers - 2] : tb_off[n_layers - 2] + n_out])


@jit(parallel=True)
def span_block_deep(coef, F, tail, sizes, act, loss_kind, YT, labels, point_chunk, S, loss_out,
                    hits_out):  # fmt: skip
    """Per-point loss and accuracy sums over one block of samples, any MLP, on sample tiles.

    Parameters
    ----------
    coef : (m, K) float64
    F : (K, B, h1) float64 or float32
        ``F[k] = X_blk W1_k^T + b1_k``; rows of unused k may hold junk. Its dtype is the
        working precision of the products.
    tail : (K, P_tail) float64
        The basis restricted to layers 2..L (``P_tail = 0`` without hidden layer).
    sizes : (L+1,) int64
    act, loss_kind : int
    YT : (out, B) float64
        Targets of the block, transposed.
    labels : (B,) int64
        Class of each sample (read for softmax-CE only).
    point_chunk : int
        Points per parallel task.
    S : int
        Samples per tile, a multiple of 4 (the bits depend on it).
    loss_out, hits_out : (m,) float64, written
        Sum over the block of each point's per-sample loss and of its correct predictions.
    """
    m, K = coef.shape
    B = F.shape[1]
    h1 = F.shape[2]
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    tw_off, tb_off, _ = layout(sizes[1:])
    P_tail = tail.shape[1]
    hmax = 1
    for l in range(1, n_layers + 1):
        hmax = max(hmax, sizes[l])
    Ff = F.reshape((K, B * h1))
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        lo = task * point_chunk
        npts = min(m, lo + point_chunk) - lo
        idx = np.empty((npts, K), np.int64)
        val = np.empty((npts, K))
        cnt = np.empty(npts, np.int64)
        theta_t = np.zeros((npts, P_tail))
        point_tails(coef, tail, lo, idx, val, cnt, theta_t)
        th = np.empty((npts, P_tail), F.dtype)  # the parameters in the working precision
        for q in range(npts):
            for p in range(P_tail):
                th[q, p] = theta_t[q, p]
        lsum = np.empty((npts, B))
        hits = np.zeros(npts)
        zf = np.empty(S * h1, F.dtype)
        a_buf = np.empty(S * hmax, F.dtype)
        b_buf = np.empty(S * hmax, F.dtype)
        z_buf = np.empty(S * hmax, F.dtype)
        zo = np.empty((n_out, S), F.dtype)
        zo64 = np.empty((n_out, S))
        hbits = np.empty(S * max(hmax, n_out), np.int64)
        dexp = np.empty(n_out * S)
        eexp = np.empty(n_out * S)
        mx = np.empty(S)
        arg = np.empty(S, np.int64)
        se = np.empty(S)
        lse = np.empty(S)
        sy = np.empty(S)
        yz = np.empty(S)
        lossv = np.empty(S)
        for s0 in range(0, B, S):
            ns = min(S, B - s0)
            ns4 = ((ns + 3) // 4) * 4
            for q in range(npts):
                tile_forward(act, n_layers, sizes, tw_off, tb_off, cnt[q], idx[q], val[q], th[q],
                             Ff, s0, ns, S, zf, a_buf, b_buf, z_buf, zo, hbits)  # fmt: skip
                # 4. loss, float64
                for o in range(n_out):
                    for s in range(ns4):
                        zo64[o, s] = zo[o, s]
                nh = tile_loss(loss_kind, zo64, YT, labels, s0, ns, ns4, dexp, eexp, mx, arg, se,
                               lse, sy, yz, hbits, lossv)  # fmt: skip
                lrow = lsum[q, s0 : s0 + ns]
                for s in range(ns):
                    lrow[s] = lossv[s]
                hits[q] += nh
        for q in range(npts):
            total = 0.0
            row = lsum[q]
            for i in range(B):
                total += row[i]
            loss_out[lo + q] = total
            hits_out[lo + q] = hits[q]
