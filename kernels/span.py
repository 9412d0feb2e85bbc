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

Memory is ``O(K * block * h1 + m)``: never ``O(n * m)`` or ``O(m * P)``.

Determinism: samples are processed in fixed blocks (a partition depending on n and ``block``
only), serially; inside a block the points are split into fixed chunks of ``point_chunk``
points run in parallel, each point computed serially by one thread into its own output slot.
The per-block sums are added to the running totals serially, in block order. Results are
therefore bitwise identical for any number of Numba threads, and a point's value does not
depend on which other points share the call (tiles and resumed runs give the same bits).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit
from .functions import analytic
from .mlp import LOGISTIC, MSE, RELU, SIGMOID, SOFTMAX_CE, TANH, forward, layout, output_loss

# Cody-Waite split of ln 2 (fdlibm's constants) and 1 / ln 2, for softplus_block.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00


# ----------------------------------------------------------------------------- helpers
# Vectorisable elementwise functions. There is no vector libm here: the scalar math.exp,
# math.log1p and math.tanh cost 10-20 ns per call and dominate a landscape (one softplus per
# sample per point for logistic regression, h1 tanh per sample per point for an MLP). The loops
# below are branch-free arithmetic that LLVM turns into SIMD code.
@jit()
def exp_neg_abs_block(z, factor, shift, out, bits):
    """out[i] = exp(-factor * |z[i] - shift|), vectorisable. ``out`` must not be ``z``.

    With ``a = factor * |z - shift|``: ``a = k ln2 + r``, ``|r| <= ln2 / 2`` (Cody-Waite),
    ``exp(-r)`` by its degree-11 Chebyshev interpolant on [-ln2/2, ln2/2] (error 3e-18,
    coefficients computed with mpmath.chebyfit) and ``2**-k`` assembled from its exponent
    bits; exp(-a) is taken as 0 beyond a = 708 (where it is below 3.3e-308). Relative error a
    few ulp plus about ``a`` ulp from the reduction (the condition number of exp at -a). The
    input is read directly (not copied into ``out`` first) because LLVM vectorises a loop only
    when its input and output arrays do not overlap.

    Parameters
    ----------
    z : (B,) float64
    factor, shift : float
    out : (B,) float64, written
    bits : (B,) int64, scratch
    """
    n = z.shape[0]
    for i in range(n):
        a = factor * abs(z[i] - shift)
        x = min(a, 708.0)
        k = np.int64(x * _INV_LN2 + 0.5)
        bits[i] = (1023 - k) << 52 if a <= 708.0 else 0  # bits 0 are +0.0
        out[i] = (x - k * _LN2_HI) - k * _LN2_LO
    scale = bits.view(np.float64)
    for i in range(n):
        r = out[i]
        p = -2.5110037605963777e-08
        p = p * r + 2.763263963904103e-07
        p = p * r - 2.755724091857897e-06
        p = p * r + 2.4801485482328494e-05
        p = p * r - 0.00019841269890047113
        p = p * r + 0.0013888888952314775
        p = p * r - 0.008333333333319601
        p = p * r + 0.0416666666664881
        p = p * r - 0.1666666666666668
        p = p * r + 0.5000000000000019
        p = p * r - 1.0
        p = p * r + 1.0
        out[i] = p * scale[i]


@jit(inline="always")
def log1p_unit(u):
    """log1p(u) for u in [0, 1], branch-free and vectorisable (see :func:`softplus_block`).

    Inlined into its callers' loops at Numba IR level, so LLVM vectorises them as before.
    """
    big = u > 0.41421356237309503
    c = 0.41421356237309503 if big else 0.0
    s = (u - c) / (2.0 + u + c)
    s2 = s * s
    q = 0.07404933786156531
    q = q * s2 + 0.0765625655736915
    q = q * s2 + 0.09091816120808513
    q = q * s2 + 0.11111098523202137
    q = q * s2 + 0.1428571438036914
    q = q * s2 + 0.19999999999650955
    q = q * s2 + 0.33333333333333826
    q = q * s2 + 1.0
    off = 0.34657359027997264 if big else 0.0
    return off + 2.0 * s * q


@jit()
def softplus_block(z, out, bits):
    """out[i] = softplus(z[i]) = max(z, 0) + log1p(exp(-|z|)) for a whole buffer, vectorisable.

    ``u = exp(-|z|)`` by :func:`exp_neg_abs_block`; ``log1p(u)`` for u in (0, 1] as ``2 atanh(s)``
    with ``s = u / (2 + u)``, or, for u > sqrt(2) - 1, as ``ln(sqrt 2) + 2 atanh(s')`` with
    ``s' = (u - (sqrt 2 - 1)) / (u + 1 + sqrt 2)`` (the same thing for ``(1 + u) / sqrt 2``), so
    that ``|s| <= 0.1716``; ``atanh(s) / s`` is a degree-7 Chebyshev interpolant in s² on
    [0, 0.0295] (error 1.2e-18; the odd series would need 11 terms).
    Unlike ``log(1 + u)`` this keeps full relative accuracy for tiny u.

    Agrees with ``numpy.logaddexp(0, z)`` to a relative 1e-13 (tested); for z -> -inf the error
    grows like |z| ulp, the condition number of softplus there.

    Parameters
    ----------
    z : (B,) float64
    out : (B,) float64, written
    bits : (B,) int64, scratch
    """
    n = z.shape[0]
    exp_neg_abs_block(z, 1.0, 0.0, out, bits)
    for i in range(n):
        out[i] = max(z[i], 0.0) + log1p_unit(out[i])


@jit()
def activate_block(act, z, out, bits):
    """out = f(z) elementwise for a hidden activation, vectorisable.

    tanh as ``sign(z) (1 - e) / (1 + e)`` with ``e = exp(-2|z|)`` and the logistic sigmoid as
    ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|z|)`` (:func:`exp_neg_abs_block`); ReLU and
    identity directly. Absolute error below 2e-16 (relative error for tanh grows like
    1e-16 / |z| as z -> 0, where tanh z ~ z: harmless for a loss, which depends on activations
    through absolute changes).

    Parameters
    ----------
    act : int
    z : (h,) float64
    out : (h,) float64, written (must not be z)
    bits : (h,) int64, scratch
    """
    n = z.shape[0]
    if act == TANH:
        exp_neg_abs_block(z, 2.0, 0.0, out, bits)
        for i in range(n):
            e = out[i]
            t = (1.0 - e) / (1.0 + e)
            out[i] = t if z[i] >= 0.0 else -t
    elif act == SIGMOID:
        exp_neg_abs_block(z, 1.0, 0.0, out, bits)
        for i in range(n):
            e = out[i]
            out[i] = (1.0 if z[i] >= 0.0 else e) / (1.0 + e)
    elif act == RELU:
        for i in range(n):
            out[i] = max(z[i], 0.0)
    else:
        for i in range(n):
            out[i] = z[i]


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


@jit()
def sample_loss(loss_kind, z, y, g, buf, bits):
    """Loss of one sample from its logits z, without gradient (``mlp.output_loss``).

    ``g``, ``buf`` (out,) float64 and ``bits`` (out,) int64 are scratch. (A vectorised
    softmax through :func:`exp_neg_abs_block` was tried: for ~10 outputs the scalar code is
    faster.)
    """
    return output_loss(loss_kind, z, y, g, False)


@jit()
def nonzero_coefficients(coef_row, idx, val):
    """Indices and values of the non-zero entries of one coefficient row; returns their count."""
    cnt = 0
    for k in range(coef_row.shape[0]):
        c = coef_row[k]
        if c != 0.0:
            idx[cnt] = k
            val[cnt] = c
            cnt += 1
    return cnt


# ----------------------------------------------------------------------------- block kernels
@jit(parallel=True)
def span_block(coef, F, tail, sizes, act, loss_kind, Y, point_chunk, sub_block, loss_out, hits_out):
    """Per-point loss and accuracy sums over one block of samples (general MLP).

    Parameters
    ----------
    coef : (m, K) float64
    F : (K, B, h1) float64
        ``F[k] = X_blk W1_k^T + b1_k``; rows k whose coefficients are all zero may hold junk
        (they are never read).
    tail : (K, P_tail) float64
        The basis restricted to layers 2..L (``P_tail = 0`` without hidden layer).
    sizes : (L+1,) int64
    act, loss_kind : int
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
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    tail_sizes = sizes[1:]
    tw_off, tb_off, tu_off = layout(tail_sizes)
    n_tail_units = tu_off[tu_off.shape[0] - 1]
    P_tail = tail.shape[1]
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        lo = task * point_chunk
        npts = min(m, lo + point_chunk) - lo
        idx = np.empty((npts, K), np.int64)
        val = np.empty((npts, K))
        cnt = np.empty(npts, np.int64)
        theta_t = np.zeros((npts, P_tail))
        totals = np.zeros(npts)
        hits = np.zeros(npts)
        z1 = np.empty(h1)
        a1 = np.empty(h1)
        bits = np.empty(h1, np.int64)
        Z = np.empty(max(n_tail_units, 1))
        A = np.empty(max(n_tail_units, 1))
        g = np.empty(n_out)
        zout = np.empty(n_out)
        obuf = np.empty(n_out)
        obits = np.empty(n_out, np.int64)
        for q in range(npts):
            cnt[q] = nonzero_coefficients(coef[lo + q], idx[q], val[q])
            th = theta_t[q]
            for t in range(cnt[q]):
                row = tail[idx[q, t]]
                c = val[q, t]
                for p in range(P_tail):
                    th[p] += c * row[p]
        # Cache tiling: sub-blocks of samples outer, the chunk's points inside, then the
        # sub-block's samples. A point's later-layer parameters stay in L1 while it runs through
        # the sub-block, and the sub-block's rows of F stay in L2 for all points of the chunk.
        # Each point still sums its samples in increasing order: the tiling changes no bits.
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
                    if n_layers == 1:
                        totals[q] += sample_loss(loss_kind, z1, yi, g, obuf, obits)
                        hits[q] += correct(loss_kind, z1, yi)
                    elif n_layers == 2:
                        # one hidden layer (the common case): the output layer written out
                        # with 2-D indexing, no array views per sample
                        activate_block(act, z1, a1, bits)
                        for o in range(n_out):
                            sacc = theta_t[q, n_out * h1 + o]
                            for u in range(h1):
                                sacc += theta_t[q, o * h1 + u] * a1[u]
                            zout[o] = sacc
                        totals[q] += sample_loss(loss_kind, zout, yi, g, obuf, obits)
                        hits[q] += correct(loss_kind, zout, yi)
                    else:
                        activate_block(act, z1, a1, bits)
                        forward(theta_t[q], tail_sizes, tw_off, tb_off, tu_off, act, a1, Z, A)
                        zo = Z[n_tail_units - n_out : n_tail_units]
                        totals[q] += sample_loss(loss_kind, zo, yi, g, obuf, obits)
                        hits[q] += correct(loss_kind, zo, yi)
        for q in range(npts):
            loss_out[lo + q] = totals[q]
            hits_out[lo + q] = hits[q]


@jit()
def logistic_block_sums(z, y, sp, bits):
    """Sum over a block of the logistic loss ``softplus(z) - y z`` and of correct predictions.

    The softplus of :func:`softplus_block`, with the loss and accuracy sums fused into its last
    loop (one pass fewer over the block). Returns (loss sum, hits).
    """
    n = z.shape[0]
    exp_neg_abs_block(z, 1.0, 0.0, sp, bits)
    total = 0.0
    hits = 0.0
    for i in range(n):
        zi = z[i]
        total += (max(zi, 0.0) + log1p_unit(sp[i])) - y[i] * zi
        hits += 1.0 if (zi > 0.0) == (y[i] > 0.5) else 0.0
    return total, hits


@jit(parallel=True)
def span_block_scalar(coef, F, y, loss_kind, point_chunk, loss_out, hits_out):
    """Fast path of :func:`span_block` for one output and no hidden layer (logistic, linear).

    ``F`` is (K, B): ``F[k] = X_blk w_k + b_k``; ``y`` (B,) the block's targets. Each point
    forms its B outputs with K_j vectorised axpys, then the loss in one vectorised pass
    (:func:`logistic_block_sums` for logistic).
    """
    m, K = coef.shape
    B = F.shape[1]
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        idx = np.empty(K, np.int64)
        val = np.empty(K)
        z = np.empty(B)
        sp = np.empty(B)
        bits = np.empty(B, np.int64)
        stop = min(m, (task + 1) * point_chunk)
        for j in range(task * point_chunk, stop):
            cnt = nonzero_coefficients(coef[j], idx, val)
            if cnt == 0:
                for i in range(B):
                    z[i] = 0.0
            else:
                row = F[idx[0]]
                c = val[0]
                for i in range(B):
                    z[i] = c * row[i]
            for t in range(1, cnt):
                row = F[idx[t]]
                c = val[t]
                for i in range(B):
                    z[i] += c * row[i]
            if loss_kind == LOGISTIC:
                total, hits = logistic_block_sums(z, y, sp, bits)
            else:
                total = 0.0
                hits = 0.0
                for i in range(B):
                    r = z[i] - y[i]
                    total += r * r
            loss_out[j] = total
            hits_out[j] = hits


# ----------------------------------------------------------------------------- driver
def span_eval(basis, coef, sizes, act, loss_kind, X, Y, block, point_chunk, sub_block=32):
    """Mean loss and accuracy of the model at the m points ``coef @ basis``.

    Plain Python driver around the parallel block kernels: it loops over fixed sample blocks,
    forms the first-layer products with one BLAS GEMM per basis row that some point uses, and
    adds the per-block sums serially.

    Parameters
    ----------
    basis : (K, P) float64, C-contiguous
    coef : (m, K) float64, C-contiguous
    sizes : (L+1,) int64
    act, loss_kind : int
        Codes of ``kernels.mlp``.
    X : (n, d) float64, C-contiguous
    Y : (n, out) float64, C-contiguous
    block : int
        Samples per block.
    point_chunk : int
        Points per parallel task.
    sub_block : int
        Samples per cache tile inside a block (models with hidden layers); speed only, the
        results do not depend on it.

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
    w1 = h1 * d
    W1 = basis[:, :w1].reshape(K, h1, d)
    b1 = basis[:, w1 : w1 + h1]
    tail = np.ascontiguousarray(basis[:, w1 + h1 :])
    used = np.flatnonzero((coef != 0.0).any(axis=0))
    scalar = n_layers == 1 and h1 == 1 and loss_kind in (LOGISTIC, MSE)
    loss = np.zeros(m)
    hits = np.zeros(m)
    block_loss = np.empty(m)
    block_hits = np.empty(m)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        Xb = X[lo:hi]
        if scalar:
            F = np.empty((K, hi - lo))  # rows no point uses stay unread
            for k in used:
                np.matmul(Xb, W1[k, 0], out=F[k])
                F[k] += b1[k, 0]
            span_block_scalar(
                coef, F, Y[lo:hi, 0].copy(), loss_kind, point_chunk, block_loss, block_hits
            )
        else:
            F = np.empty((K, hi - lo, h1))
            for k in used:
                np.matmul(Xb, W1[k].T, out=F[k])
                F[k] += b1[k]
            span_block(
                coef,
                F,
                tail,
                sizes,
                act,
                loss_kind,
                Y[lo:hi],
                point_chunk,
                sub_block,
                block_loss,
                block_hits,
            )
        loss += block_loss
        hits += block_hits
    return loss / n, hits / n


# ----------------------------------------------------------------------------- functions
@jit()
def combine(basis, idx, val, cnt, theta):
    """theta = sum_t val[t] * basis[idx[t]] over the cnt non-zero coefficients of a point."""
    for p in range(theta.shape[0]):
        theta[p] = 0.0
    for t in range(cnt):
        row = basis[idx[t]]
        c = val[t]
        for p in range(theta.shape[0]):
            theta[p] += c * row[p]


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
