"""The span engine: loss (and accuracy) at m points in the span of K fixed vectors.

Every landscape query is a batch of points ``theta_j = sum_k C[j, k] basis[k]``: a 2D grid
has basis (theta*, d1, d2) and coefficients (1, alpha, beta), a linear path (theta_a, theta_b)
and (1 - t, t), a Bezier curve the Bernstein weights, a sharpness probe (theta*, e_1 .. e_K)
and sparse coefficients.

The first layer is linear in its parameters::

    X W1(c)^T + b1(c) = sum_k c_k (X W1_k^T + b1_k)

so for every block of samples the driver :func:`span_eval` forms the K products
``F[k] = X_blk W1_k^T + b1_k`` once with BLAS (one GEMM per basis row, outside any parallel
region), and each point then pays ``O(block * h1 * K_j)`` for its first layer, where ``K_j`` is
the number of its non-zero coefficients (zero coefficients are skipped), plus a forward pass
through the later (small) layers whose parameters it forms itself. A model with no hidden layer
costs ``O(block * K_j)`` per point, independent of the input dimension.

Memory is ``O(K * block * h1 + m)`` (plus, per running task, ``O(point_chunk * block)`` for
the per-sample losses of the tiled paths and ``O(deep_tile * max_l h_l)`` for the general
path's tiles; a model with no hidden layer (float64, one output) keeps its
``K * n`` first-layer values and ``2 * rows * block`` exponential tables): never ``O(n * m)``
or ``O(m * P)``.

Determinism: samples are processed in fixed blocks (a partition depending on n and ``block``
only), serially; inside a block the points are split into fixed chunks of ``point_chunk``
points run in parallel, each point computed serially by one thread into its own output slot.
The per-block sums are added to the running totals serially, in block order. Inside a block,
a point's sum over its samples is formed by code that depends only on the block length and on
the point's number of non-zero coefficients (1-3 terms take fused paths): the one-hidden-layer
path (``span_hidden.span_block_hidden``) writes each sample's loss into a per-point row and sums the
row in one loop, so its sample tiles (``sub_block``) change no bit. The general path
(``span_deep.span_block_deep``: two or more hidden layers, and every model in float32) runs the
later layers as single-threaded BLAS products of one fixed shape per layer (tiles of
``deep_tile`` samples, the last one zero-padded), so its bits depend on ``deep_tile`` as on
``block``. Results are therefore bitwise identical for any number of Numba threads,
``point_chunk`` and ``sub_block``, and a point's value does not depend on which other points
share the call (tiles and resumed runs give the same bits).

float32 (``dtype``): the products in single precision, every sum over samples in float64
(``span_deep``); float64 is the default and its paths are unchanged.

Speed (issue 6, ``bench/NOTES.md``): there is no vector libm, so exp, log1p and tanh are
written as branch-free arithmetic in single-pass loops that LLVM vectorises; on the benchmark
machine LLVM emits 256-bit (ymm) code by default (``prefer-256-bit`` tuning of Ice Lake).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._blas import matmul, serial_blas
from ._jit import jit
from .elementwise import LOGISTIC, MSE, SOFTMAX_CE, output_loss
from .functions import analytic
from .penalty import span_l2
from .span_deep import span_block_deep
from .span_hidden import span_block_hidden
from .span_logistic import exp_tables, product_order, shared_factors, span_block_scalar
from .span_points import combine, nonzero_coefficients


@jit()
def correct(loss_kind, z, y):
    """1.0 when one sample is classified correctly, else 0.0 (0.0 for MSE).

    Logistic: ``(z > 0) == (y > 0.5)``; softmax-CE: ``argmax z == argmax y`` (first maximum,
    as ``numpy.argmax``).
    """
    if loss_kind == LOGISTIC:
        return 1.0 if (z[0] > 0.0) == (y[0] > 0.5) else 0.0
    if loss_kind == SOFTMAX_CE:
        bz = 0
        by = 0
        for o in range(1, z.shape[0]):
            if z[o] > z[bz]:
                bz = o
            if y[o] > y[by]:
                by = o
        return 1.0 if bz == by else 0.0
    return 0.0


# ----------------------------------------------------------------------------- block kernels
@jit(parallel=True)
def span_block(coef, F, loss_kind, Y, point_chunk, sub_block, loss_out, hits_out):
    """Per-point loss and accuracy sums over one block of samples, no hidden layer.

    The float64 path of models without hidden layer and several outputs (one output takes
    ``span_logistic.span_block_scalar``, hidden layers ``span_hidden.span_block_hidden`` or
    ``span_deep.span_block_deep``), one sample at a time.

    Parameters
    ----------
    coef : (m, K) float64
    F : (K, B, out) float64
        ``F[k] = X_blk W1_k^T + b1_k``; rows k whose coefficients are all zero may hold junk
        (they are never read).
    loss_kind : int
    Y : (B, out) float64
        Targets of the block.
    point_chunk : int
        Points per parallel task.
    sub_block : int
        Samples per cache tile (speed only: results do not depend on it).
    loss_out, hits_out : (m,) float64, written
        Sum over the block of each point's per-sample loss and of its correct predictions.
    """
    m, K = coef.shape
    B = F.shape[1]
    h1 = F.shape[2]
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        lo = task * point_chunk
        npts = min(m, lo + point_chunk) - lo
        idx = np.empty((npts, K), np.int64)
        val = np.empty((npts, K))
        cnt = np.empty(npts, np.int64)
        totals = np.zeros(npts)
        hits = np.zeros(npts)
        z1 = np.empty(h1)
        g = np.empty(h1)
        for q in range(npts):
            cnt[q] = nonzero_coefficients(coef[lo + q], idx[q], val[q])
        # Cache tiling: sub-blocks of samples outer, the chunk's points inside, then the
        # sub-block's samples. Each point still sums its samples in increasing order: the
        # tiling changes no bits.
        for s0 in range(0, B, sub_block):
            s1 = min(B, s0 + sub_block)
            for q in range(npts):
                for i in range(s0, s1):
                    yi = Y[i]
                    if cnt[q] == 0:
                        for u in range(h1):
                            z1[u] = 0.0
                    else:
                        k = idx[q, 0]
                        c = val[q, 0]
                        for u in range(h1):
                            z1[u] = c * F[k, i, u]
                    for t in range(1, cnt[q]):
                        k = idx[q, t]
                        c = val[q, t]
                        for u in range(h1):
                            z1[u] += c * F[k, i, u]
                    totals[q] += output_loss(loss_kind, z1, yi, g, False)
                    hits[q] += correct(loss_kind, z1, yi)
        for q in range(npts):
            loss_out[lo + q] = totals[q]
            hits_out[lo + q] = hits[q]


# ----------------------------------------------------------------------------- driver
def span_eval(
    basis, coef, sizes, act, loss_kind, X, Y, block, point_chunk, sub_block=32,
    table_bytes=64 * 2**20, penalty=None, dtype=np.float64, deep_tile=64,
):  # fmt: skip
    """Mean loss and accuracy of the model at the m points ``coef @ basis``.

    Plain Python driver around the parallel block kernels: it loops over fixed sample blocks,
    forms the first-layer products with one BLAS GEMM per basis row that some point uses, and
    adds the per-block sums serially. For logistic regression it also tabulates, per block,
    the factors ``exp(c F_k)`` that several points share (:func:`shared_factors`).

    The kernel of a block: in float64, ``span_logistic.span_block_scalar`` (no hidden layer,
    one output), :func:`span_block` (no hidden layer, several outputs),
    ``span_hidden.span_block_hidden`` (one hidden layer) and ``span_deep.span_block_deep``
    (two or more); in float32, ``span_block_deep`` for every model.

    Parameters
    ----------
    basis : (K, P) float64, C-contiguous
    coef : (m, K) float64, C-contiguous
    sizes : (L+1,) int64
    act, loss_kind : int
        Codes of ``kernels.mlp``.
    X : (n, d) float64 or float32, C-contiguous
        float64 data with ``dtype=float32`` is cast one block at a time (no copy of X).
    Y : (n, out) float64, C-contiguous
    block : int
        Samples per block.
    point_chunk : int
        Points per parallel task.
    sub_block : int
        Samples per cache tile inside a block (the float64 paths up to one hidden layer);
        speed only, the results do not depend on it.
    table_bytes : int
        Memory for the shared exponential factors of logistic regression (speed only).
    penalty : (P,) float64, optional
        Weights of the L2 term (``kernels.penalty.l2_vector``), added to each point's mean
        loss as ``½ cᵀ G c`` (``kernels.penalty.span_l2``: one Gram matrix per call, no
        per-point pass); None: no L2 term.
    dtype : numpy dtype, float64 or float32
        Precision of the products (first-layer GEMMs, the later layers, activations' inputs);
        every per-sample loss and every sum over samples is float64 either way. The float32
        loss agrees with float64 to about 1e-6 relative on realistic models
        (``tests/test_span_deep.py``, ``docs/``).
    deep_tile : int
        Samples per tile of ``span_deep.span_block_deep`` (rounded up to a multiple of 4);
        its results depend on it, as on ``block``.

    Returns
    -------
    loss : (m,) float64
        Mean loss at each point.
    accuracy : (m,) float64
        Fraction classified correctly (zeros for MSE).
    """
    n, d = X.shape
    K = basis.shape[0]
    m = coef.shape[0]
    h1 = int(sizes[1])
    n_layers = sizes.shape[0] - 1
    dt = np.dtype(dtype)
    single = dt == np.float32
    w1 = h1 * d
    first = basis[:, : w1 + h1].astype(dt) if single else basis
    W1 = first[:, :w1].reshape(K, h1, d)
    b1 = first[:, w1 : w1 + h1]
    tail = np.ascontiguousarray(basis[:, w1 + h1 :])
    used = np.flatnonzero((coef != 0.0).any(axis=0))
    scalar = n_layers == 1 and h1 == 1 and loss_kind in (LOGISTIC, MSE) and not single
    deep = single or n_layers >= 3
    if scalar and loss_kind == LOGISTIC:
        tix, rows, values = shared_factors(coef, table_bytes // (16 * min(n, block)))
        order = product_order(coef, tix)
    else:
        tix, rows, values = np.full((m, 3), -1, np.int64), np.empty(0, np.int64), np.empty(0)
        order = np.arange(m, dtype=np.int64)
    loss = np.zeros(m)
    hits = np.zeros(m)
    block_loss = np.empty(m)
    block_hits = np.empty(m)
    # Buffers for the largest block, made once: fresh multi-MB arrays per block cost a page
    # fault per 4 KiB on first touch.
    nb_max = min(n, block)
    if scalar:
        table_buf = np.empty(2 * rows.size * nb_max)
        # the first-layer values of all samples before the block loop: one matrix-vector
        # product per used basis row over the whole of X (cheaper than the same products per
        # block)
        F_all = np.empty((used.size, n))
        with serial_blas():  # reproducible for any thread count
            for i, k in enumerate(used):
                np.matmul(X, W1[k, 0], out=F_all[i])
                F_all[i] += b1[k, 0]
    else:
        f_buf = np.empty(K * nb_max * h1, dt)
    deep_S = max(4, ((deep_tile + 3) // 4) * 4)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        Xb = X[lo:hi]
        if single and Xb.dtype != dt:
            Xb = Xb.astype(dt)
        nb = hi - lo
        if scalar:
            F = np.empty((K, hi - lo))  # rows no point uses stay unread
            F[used] = F_all[:, lo:hi]
            Fmax = np.zeros(K)
            Fmax[used] = np.abs(F[used]).max(axis=1)
            T = table_buf[: rows.size * nb].reshape(rows.size, nb)
            N = table_buf[rows.size * nb : 2 * rows.size * nb].reshape(rows.size, nb)
            if rows.size:
                exp_tables(F, rows, values, T, N)
            yv = Y[lo:hi, 0].copy()
            G = np.empty_like(F)  # g F, g = +-1: exact (rows no point uses stay unread)
            G[used] = F[used] * (1.0 - 2.0 * yv)
            tv = np.where(yv > 0.5, 0.0, 5e-324)  # 5e-324: the smallest subnormal
            span_block_scalar(
                coef, F, yv, loss_kind, point_chunk, block_loss, block_hits, tix, T, N, Fmax, G,
                tv, order,
            )  # fmt: skip
        else:
            F = f_buf[: K * nb * h1].reshape(K, nb, h1)  # rows no point uses stay unread
            for k in used:
                matmul(Xb, W1[k].T, out=F[k])
                F[k] += b1[k]
        if deep or n_layers == 2:
            Yb = Y[lo:hi]
            YT = np.ascontiguousarray(Yb.T, dtype=np.float64)
            labels = (
                np.argmax(Yb, axis=1) if loss_kind == SOFTMAX_CE else np.zeros(hi - lo, np.int64)
            )
        if deep:
            with serial_blas():  # one BLAS thread per task: bits independent of thread counts
                span_block_deep(
                    coef, F, tail, sizes, act, loss_kind, YT, labels, point_chunk, deep_S,
                    block_loss, block_hits,
                )  # fmt: skip
        elif n_layers == 2:
            span_block_hidden(
                coef, F, tail, act, loss_kind, YT, labels, point_chunk, sub_block, block_loss,
                block_hits,
            )  # fmt: skip
        elif not scalar:
            span_block(coef, F, loss_kind, Y[lo:hi], point_chunk, sub_block, block_loss,
                       block_hits)  # fmt: skip
        loss += block_loss
        hits += block_hits
    if penalty is not None:
        return loss / n + span_l2(basis, coef, penalty), hits / n
    return loss / n, hits / n


# ----------------------------------------------------------------------------- functions
@jit(parallel=True)
def span_analytic(code, basis, coef, point_chunk):
    """The analytic function ``code`` (``kernels.functions``) at the m points ``coef @ basis``.

    Parameters
    ----------
    code : int
    basis : (K, 2) float64
    coef : (m, K) float64
    point_chunk : int

    Returns
    -------
    (m,) float64
    """
    m, K = coef.shape
    P = basis.shape[1]
    out = np.empty(m)
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        idx = np.empty(K, np.int64)
        val = np.empty(K)
        theta = np.empty(P)
        for j in range(task * point_chunk, min(m, (task + 1) * point_chunk)):
            cnt = nonzero_coefficients(coef[j], idx, val)
            combine(basis, idx, val, cnt, theta)
            out[j] = analytic(code, theta)
    return out


@jit(parallel=True, cache=False)
def span_function(f, basis, coef, point_chunk):
    """``f(theta_j)`` at the m points ``theta_j = coef[j] @ basis``, parallel over points.

    Not cached on disk: the compiled code is specialised on the function object ``f``.

    Parameters
    ----------
    f : a Numba-jitted function of a (P,) float64 array returning a float
    basis : (K, P) float64
    coef : (m, K) float64
    point_chunk : int
        Points per parallel task; each task owns one theta buffer.

    Returns
    -------
    (m,) float64
    """
    m, K = coef.shape
    P = basis.shape[1]
    out = np.empty(m)
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        idx = np.empty(K, np.int64)
        val = np.empty(K)
        theta = np.empty(P)
        for j in range(task * point_chunk, min(m, (task + 1) * point_chunk)):
            cnt = nonzero_coefficients(coef[j], idx, val)
            combine(basis, idx, val, cnt, theta)
            out[j] = f(theta)
    return out
