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
the per-sample losses of the one-hidden-layer path; a model with no hidden layer keeps its
``K * n`` first-layer values and ``2 * rows * block`` exponential tables): never ``O(n * m)``
or ``O(m * P)``.

Determinism: samples are processed in fixed blocks (a partition depending on n and ``block``
only), serially; inside a block the points are split into fixed chunks of ``point_chunk``
points run in parallel, each point computed serially by one thread into its own output slot.
The per-block sums are added to the running totals serially, in block order. Inside a block,
a point's sum over its samples is formed by code that depends only on the block length and on
the point's number of non-zero coefficients (1-3 terms take fused paths): the one-hidden-layer
path (:func:`span_block_hidden`) writes each sample's loss into a per-point row and sums the
row in one loop, so its sample tiles (``sub_block``) change no bit. Results are therefore
bitwise identical for any number of Numba threads, ``point_chunk`` and ``sub_block``, and a
point's value does not depend on which other points share the call (tiles and resumed runs
give the same bits).

Speed (issue 6, ``bench/NOTES.md``): there is no vector libm, so exp, log1p and tanh are
written as branch-free arithmetic in single-pass loops that LLVM vectorises; on the benchmark
machine LLVM emits 256-bit (ymm) code by default (``prefer-256-bit`` tuning of Ice Lake).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._blas import matmul, serial_blas
from ._jit import jit
from .functions import analytic
from .mlp import LOGISTIC, MSE, RELU, SIGMOID, SOFTMAX_CE, TANH, forward, layout, output_loss

# Cody-Waite split of ln 2 (fdlibm's constants) and 1 / ln 2, for softplus_block.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
# 2**-k and 2**k from an integer-valued double k without a float-to-int conversion (AVX2 has
# no vector instruction for it: LLVM made four scalar conversions and reinsertions of every
# 4-double vector, a third of the tanh loop): the bits of k + 1.5 * 2**52 are those of the
# shifter plus k (|k| < 2**51), so the exponent field is an integer subtraction and a shift.
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52
_SHIFTER_BITS = 0x4338000000000000  # its bits
_EXP_NEG_BIAS = 1023 + _SHIFTER_BITS  # bits of 2**-k: (_EXP_NEG_BIAS - bits(k + S)) << 52
_EXP_POS_BIAS = _SHIFTER_BITS - 1023  # bits of 2**k: (bits(k + S) - _EXP_POS_BIAS) << 52


# ----------------------------------------------------------------------------- helpers
# Vectorisable elementwise functions. There is no vector libm here: the scalar math.exp,
# math.log1p and math.tanh cost 10-20 ns per call and dominate a landscape (one softplus per
# sample per point for logistic regression, h1 tanh per sample per point for an MLP). The loops
# below are branch-free arithmetic that LLVM turns into SIMD code.
@jit()
def exp_neg(a, bits, scale, i):
    """exp(-a) for a >= 0 (nan gives nan), branch-free: the body of a vectorisable loop over i.

    ``a = k ln2 + r``, ``|r| <= ln2 / 2`` (Cody-Waite), ``exp(-r)`` by its degree-11 Chebyshev
    interpolant on [-ln2/2, ln2/2] (error 3e-18, coefficients computed with mpmath.chebyfit)
    and ``2**-k`` assembled from its exponent bits in ``bits[i]`` (int64 scratch) and read back
    through ``scale = bits.view(np.float64)``: LLVM forwards the store to the load, so the loop
    needs no second pass. exp(-a) is taken as 0 beyond a = 708 (where it is below 3.3e-308).
    Relative error a few ulp plus about ``a`` ulp from the reduction (the condition number of
    exp at -a). A plain function that LLVM inlines: inlined at Numba IR level instead
    (``inline="always"``), the store-to-load forwarding does not happen and the caller's loop
    stays scalar.
    """
    x = min(a, 708.0)
    k = np.floor(x * _INV_LN2 + 0.5)
    scale[i] = k + _SHIFTER
    bits[i] = (_EXP_NEG_BIAS - bits[i]) << 52 if a <= 708.0 else 0  # bits 0 are +0.0
    r = (x - k * _LN2_HI) - k * _LN2_LO
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
    return p * scale[i]


@jit()
def exp_neg_twice(y, bits, scale, i):
    """exp(-2 y) for y >= 0 (nan gives nan): :func:`exp_neg` specialised for tanh.

    The factor 2 is folded into the reduction (``2y = k ln2 + 2r'`` with the Cody-Waite halves
    of ln2, exact) and into the polynomial (coefficients times ``2**j``, exact), and the cap
    keeps ``2y <= 708`` without the select that makes exp(-a) exactly 0 beyond it: tanh needs
    only ``1 - e`` and ``1 + e``, where 3e-308 and 0 give the same bits. Two vector
    instructions fewer per element than ``exp_neg(2 |z|)``.
    """
    x = min(y, 354.0)
    k = np.floor(x * (2.0 * _INV_LN2) + 0.5)
    scale[i] = k + _SHIFTER
    bits[i] = (_EXP_NEG_BIAS - bits[i]) << 52
    r = (x - k * (0.5 * _LN2_HI)) - k * (0.5 * _LN2_LO)
    p = -5.1425357017013815e-05
    p = p * r + 0.00028295822990378013
    p = p * r - 0.0014109307350312432
    p = p * r + 0.0063491802834760944
    p = p * r - 0.025396825459260305
    p = p * r + 0.08888888929481456
    p = p * r - 0.26666666666622724
    p = p * r + 0.6666666666638096
    p = p * r - 1.3333333333333344
    p = p * r + 2.0000000000000075
    p = p * r - 2.0
    p = p * r + 1.0
    return p * scale[i]


@jit()
def exp_neg_abs_block(z, factor, shift, out, bits):
    """out[i] = exp(-factor * |z[i] - shift|), vectorisable (:func:`exp_neg`), one pass.

    ``out`` must not be ``z``: LLVM vectorises a loop only when its input and output arrays do
    not overlap.

    Parameters
    ----------
    z : (B,) float64
    factor, shift : float
    out : (B,) float64, written
    bits : (B,) int64, scratch
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    for i in range(n):
        out[i] = exp_neg(factor * abs(z[i] - shift), bits, scale, i)


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

    ``u = exp(-|z|)`` by :func:`exp_neg`; ``log1p(u)`` for u in (0, 1] as ``2 atanh(s)``
    with ``s = u / (2 + u)``, or, for u > sqrt(2) - 1, as ``ln(sqrt 2) + 2 atanh(s')`` with
    ``s' = (u - (sqrt 2 - 1)) / (u + 1 + sqrt 2)`` (the same thing for ``(1 + u) / sqrt 2``), so
    that ``|s| <= 0.1716``; ``atanh(s) / s`` is a degree-7 Chebyshev interpolant in s² on
    [0, 0.0295] (error 1.2e-18; the odd series would need 11 terms).
    Unlike ``log(1 + u)`` this keeps full relative accuracy for tiny u. One fused pass.

    Agrees with ``numpy.logaddexp(0, z)`` to a relative 1e-13 (tested); for z -> -inf the error
    grows like |z| ulp, the condition number of softplus there.

    Parameters
    ----------
    z : (B,) float64
    out : (B,) float64, written (must not be z)
    bits : (B,) int64, scratch
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    for i in range(n):
        zi = z[i]
        out[i] = max(zi, 0.0) + log1p_unit(exp_neg(abs(zi), bits, scale, i))


@jit()
def activate_block(act, z, out, bits):
    """out = f(z) elementwise for a hidden activation, vectorisable, one fused pass.

    tanh as ``copysign((1 - e) / (1 + e), z)`` with ``e = exp(-2|z|)`` (:func:`exp_neg_twice`)
    and the logistic sigmoid as ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|z|)``
    (:func:`exp_neg`), each in one loop with its division; ReLU and identity directly.
    Absolute error below 2e-16 (relative error for tanh grows like 1e-16 / |z| as z -> 0, where
    tanh z ~ z: harmless for a loss, which depends on activations through absolute changes).

    Parameters
    ----------
    act : int
    z : (h,) float64
    out : (h,) float64, written (must not be z)
    bits : (h,) int64, scratch
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    if act == TANH:
        for i in range(n):
            zi = z[i]
            e = exp_neg_twice(abs(zi), bits, scale, i)
            out[i] = math.copysign((1.0 - e) / (1.0 + e), zi)
    elif act == SIGMOID:
        for i in range(n):
            zi = z[i]
            e = exp_neg(abs(zi), bits, scale, i)
            out[i] = (1.0 if zi >= 0.0 else e) / (1.0 + e)
    elif act == RELU:
        for i in range(n):
            out[i] = max(z[i], 0.0)
    else:
        for i in range(n):
            out[i] = z[i]


@jit()
def first_layer(F0, c0, F1, c1, F2, c2, two, three, j):
    """``c0 F0[j] (+ c1 F1[j] if two) (+ c2 F2[j] if three)``: one first-layer unit of a point
    with at most three non-zero coefficients, as selects (branch-free, vectorisable in the
    caller's loop over j; the unused rows may be any readable row)."""
    z = c0 * F0[j]
    z2 = z + c1 * F1[j]
    z = z2 if two else z
    z3 = z + c2 * F2[j]
    return z3 if three else z


@jit()
def combine_activate(act, cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = f(sum_t c_t F_t) for 1 <= cnt <= 3 terms, fused into one vectorised pass.

    The first layer of :func:`span_block_hidden` for points with at most three non-zero
    coefficients (2D grids, slices, paths): forming the pre-activations in the activation's own
    loop saves writing and re-reading them, and the loads of F overlap the arithmetic of the
    activation. Same activation formulas as :func:`activate_block`.

    Parameters
    ----------
    act, cnt : int
    F0, F1, F2 : (h,) float64
        Rows of F; F1 (F2) is read but unused when cnt < 2 (cnt < 3).
    c0, c1, c2 : float
    out : (h,) float64, written
    bits : (h,) int64, scratch
    """
    n = out.shape[0]
    two = cnt >= 2
    three = cnt >= 3
    scale = bits.view(np.float64)
    if act == TANH:
        # one loop per term count: constant selects fold away (no tests in the loop body)
        if three:
            for j in range(n):
                z = first_layer(F0, c0, F1, c1, F2, c2, True, True, j)
                e = exp_neg_twice(abs(z), bits, scale, j)
                out[j] = math.copysign((1.0 - e) / (1.0 + e), z)
        elif two:
            for j in range(n):
                z = first_layer(F0, c0, F1, c1, F2, c2, True, False, j)
                e = exp_neg_twice(abs(z), bits, scale, j)
                out[j] = math.copysign((1.0 - e) / (1.0 + e), z)
        else:
            for j in range(n):
                z = first_layer(F0, c0, F1, c1, F2, c2, False, False, j)
                e = exp_neg_twice(abs(z), bits, scale, j)
                out[j] = math.copysign((1.0 - e) / (1.0 + e), z)
    elif act == SIGMOID:
        for j in range(n):
            z = first_layer(F0, c0, F1, c1, F2, c2, two, three, j)
            e = exp_neg(abs(z), bits, scale, j)
            out[j] = (1.0 if z >= 0.0 else e) / (1.0 + e)
    elif act == RELU:
        for j in range(n):
            out[j] = max(first_layer(F0, c0, F1, c1, F2, c2, two, three, j), 0.0)
    else:
        for j in range(n):
            out[j] = first_layer(F0, c0, F1, c1, F2, c2, two, three, j)


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

    Used for models without hidden layer and several outputs and for two or more hidden
    layers, one sample at a time; one hidden layer takes :func:`span_block_hidden`, one output
    without hidden layer :func:`span_block_scalar`.

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
def log_block(x, out, bits):
    """out[i] = log(x[i]) for positive normal x, vectorisable; inf and nan pass through.

    ``x = m 2**e`` with m in [1, 2) taken from the bits, ``log x = e ln2 + log1p(m - 1)`` with
    :func:`log1p_unit` (``m - 1`` is exact) and ln2 split as in :func:`exp_neg_abs_block` so
    that ``e ln2`` carries no rounding. Relative error a few ulp (tested against ``numpy.log``).
    Zero, negative and subnormal inputs give meaningless results (the span engine calls it on
    softmax normalisers, which are >= 1 or not finite).

    Parameters
    ----------
    x : (B,) float64
    out : (B,) float64, written (must not be x)
    bits : (B,) int64, scratch
    """
    n = x.shape[0]
    xb = x.view(np.int64)
    mant = bits.view(np.float64)
    for i in range(n):
        bits[i] = (xb[i] & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
        biased = (xb[i] >> 52) & 0x7FF
        e = np.float64(biased - 1023)
        r = e * _LN2_HI + (e * _LN2_LO + log1p_unit(mant[i] - 1.0))
        out[i] = x[i] if biased == 0x7FF else r


@jit(parallel=True)
def span_block_hidden(
    coef, F, tail, act, loss_kind, YT, labels, point_chunk, tile, loss_out, hits_out
):
    """Per-point loss and accuracy sums over one block of samples, one hidden layer.

    The fast path of :func:`span_block` for ``sizes = (d, h1, out)``. Samples are processed in
    tiles of ``S`` (``tile`` rounded up to a multiple of 4) and each point of a chunk runs
    through the whole tile with array-wide, vectorised steps:

    1. first layer: ``Z[s, :] = sum_t c_t F[k_t, s, :]`` over the tile, one flat axpy per
       non-zero coefficient (``F[k, s0:s0 + S]`` is contiguous);
    2. activation of the whole tile in one :func:`activate_block` call;
    3. output layer: four samples and five outputs at a time (then two, then one), twenty dot
       products over the hidden units in one loop (independent accumulators, each
       LLVM-vectorised over the hidden units: a weight is loaded once per four samples, an
       activation once per five outputs). Padding samples up to a multiple of 4 are zero rows
       whose results are dropped;
    4. the loss with the sample index as the vector lane: max over outputs, the outputs' exps in
       one :func:`exp_neg_abs_block` call, the log of the normaliser by :func:`log_block`
       (softmax-CE); :func:`exp_neg_abs_block` and :func:`log1p_unit` (logistic); squares (MSE).

    Determinism: a sample's logits and loss are computed by the same code whatever its tile
    (the four-sample groups start at multiples of 4 from the block's start); the per-sample
    losses of the block are written into a (points, B) buffer and each point sums its row with
    one loop over the B samples, so the summation order depends on B only: not on ``tile``,
    ``point_chunk`` or the thread count. Hits are integer counts (exact in any order).

    Parameters
    ----------
    coef : (m, K) float64
    F : (K, B, h1) float64
        ``F[k] = X_blk W1_k^T + b1_k``; rows of unused k may hold junk.
    tail : (K, out * h1 + out) float64
        The basis restricted to the output layer (W2 row-major, then b2).
    act, loss_kind : int
    YT : (out, B) float64
        Targets of the block, transposed.
    labels : (B,) int64
        Class of each sample (first maximum of its target row; read for softmax-CE only).
    point_chunk : int
        Points per parallel task.
    tile : int
        Samples per tile (speed only).
    loss_out, hits_out : (m,) float64, written
    """
    m, K = coef.shape
    B = F.shape[1]
    h1 = F.shape[2]
    n_out = YT.shape[0]
    P_tail = tail.shape[1]
    bias_off = n_out * h1
    S = max(4, ((tile + 3) // 4) * 4)
    Ff = F.reshape((K, B * h1))
    n_tasks = (m + point_chunk - 1) // point_chunk
    for task in prange(n_tasks):
        lo = task * point_chunk
        npts = min(m, lo + point_chunk) - lo
        idx = np.empty((npts, K), np.int64)
        val = np.empty((npts, K))
        cnt = np.empty(npts, np.int64)
        theta_t = np.zeros((npts, P_tail))
        lsum = np.empty((npts, B))
        hits = np.zeros(npts)
        zf = np.empty(S * h1)
        af = np.empty(S * h1)
        a2 = af.reshape((S, h1))
        hbits = np.empty(S * max(h1, n_out), np.int64)
        zo = np.empty((n_out, S))
        dexp = np.empty(n_out * S)
        eexp = np.empty(n_out * S)
        mx = np.empty(S)
        arg = np.empty(S, np.int64)
        se = np.empty(S)
        lse = np.empty(S)
        lossv = np.empty(S)
        sy = np.empty(S)
        yz = np.empty(S)
        for q in range(npts):
            cnt[q] = nonzero_coefficients(coef[lo + q], idx[q], val[q])
            th = theta_t[q]
            for t in range(cnt[q]):
                row = tail[idx[q, t]]
                c = val[q, t]
                for p in range(P_tail):
                    th[p] += c * row[p]
        for s0 in range(0, B, S):
            ns = min(S, B - s0)
            ns4 = ((ns + 3) // 4) * 4
            nz = ns * h1
            nz4 = ns4 * h1
            base = s0 * h1
            for q in range(npts):
                th = theta_t[q]
                # 1.-2. first layer and activation of the tile (padding rows zero). Slices, so
                # that the loop index is the array index: no wraparound handling (gathers).
                nq = cnt[q]
                if 1 <= nq <= 3:
                    k0 = idx[q, 0]
                    k1 = idx[q, 1] if nq >= 2 else k0
                    k2 = idx[q, 2] if nq >= 3 else k0
                    combine_activate(
                        act,
                        nq,
                        Ff[k0, base : base + nz],
                        val[q, 0],
                        Ff[k1, base : base + nz],
                        val[q, 1] if nq >= 2 else 0.0,
                        Ff[k2, base : base + nz],
                        val[q, 2] if nq >= 3 else 0.0,
                        af[:nz],
                        hbits[:nz],
                    )
                else:
                    if nq == 0:
                        for j in range(nz):
                            zf[j] = 0.0
                    else:
                        Fk = Ff[idx[q, 0], base : base + nz]
                        c = val[q, 0]
                        for j in range(nz):
                            zf[j] = c * Fk[j]
                    for t in range(1, nq):
                        Fk = Ff[idx[q, t], base : base + nz]
                        c = val[q, t]
                        for j in range(nz):
                            zf[j] += c * Fk[j]
                    activate_block(act, zf[:nz], af[:nz], hbits[:nz])
                pad = af[nz:nz4]
                for j in range(nz4 - nz):
                    pad[j] = 0.0
                # 3. output layer, 4 samples x 5 (then 2, then 1) outputs per pass over the units
                for g in range(0, ns4, 4):
                    r0 = a2[g]
                    r1 = a2[g + 1]
                    r2 = a2[g + 2]
                    r3 = a2[g + 3]
                    o = 0
                    while o + 4 < n_out:
                        w0 = th[o * h1 : (o + 1) * h1]
                        w1 = th[(o + 1) * h1 : (o + 2) * h1]
                        w2 = th[(o + 2) * h1 : (o + 3) * h1]
                        w3 = th[(o + 3) * h1 : (o + 4) * h1]
                        w4 = th[(o + 4) * h1 : (o + 5) * h1]
                        b0 = th[bias_off + o]
                        b1 = th[bias_off + o + 1]
                        b2 = th[bias_off + o + 2]
                        b3 = th[bias_off + o + 3]
                        b4 = th[bias_off + o + 4]
                        c00, c01, c02, c03 = b0, b0, b0, b0
                        c10, c11, c12, c13 = b1, b1, b1, b1
                        c20, c21, c22, c23 = b2, b2, b2, b2
                        c30, c31, c32, c33 = b3, b3, b3, b3
                        c40, c41, c42, c43 = b4, b4, b4, b4
                        for u in range(h1):
                            x0 = r0[u]
                            x1 = r1[u]
                            x2 = r2[u]
                            x3 = r3[u]
                            v = w0[u]
                            c00 += v * x0
                            c01 += v * x1
                            c02 += v * x2
                            c03 += v * x3
                            v = w1[u]
                            c10 += v * x0
                            c11 += v * x1
                            c12 += v * x2
                            c13 += v * x3
                            v = w2[u]
                            c20 += v * x0
                            c21 += v * x1
                            c22 += v * x2
                            c23 += v * x3
                            v = w3[u]
                            c30 += v * x0
                            c31 += v * x1
                            c32 += v * x2
                            c33 += v * x3
                            v = w4[u]
                            c40 += v * x0
                            c41 += v * x1
                            c42 += v * x2
                            c43 += v * x3
                        zo[o, g] = c00
                        zo[o, g + 1] = c01
                        zo[o, g + 2] = c02
                        zo[o, g + 3] = c03
                        zo[o + 1, g] = c10
                        zo[o + 1, g + 1] = c11
                        zo[o + 1, g + 2] = c12
                        zo[o + 1, g + 3] = c13
                        zo[o + 2, g] = c20
                        zo[o + 2, g + 1] = c21
                        zo[o + 2, g + 2] = c22
                        zo[o + 2, g + 3] = c23
                        zo[o + 3, g] = c30
                        zo[o + 3, g + 1] = c31
                        zo[o + 3, g + 2] = c32
                        zo[o + 3, g + 3] = c33
                        zo[o + 4, g] = c40
                        zo[o + 4, g + 1] = c41
                        zo[o + 4, g + 2] = c42
                        zo[o + 4, g + 3] = c43
                        o += 5
                    while o + 1 < n_out:
                        w0 = th[o * h1 : (o + 1) * h1]
                        w1 = th[(o + 1) * h1 : (o + 2) * h1]
                        b0 = th[bias_off + o]
                        b1 = th[bias_off + o + 1]
                        c00 = b0
                        c01 = b0
                        c02 = b0
                        c03 = b0
                        c10 = b1
                        c11 = b1
                        c12 = b1
                        c13 = b1
                        for u in range(h1):
                            x0 = r0[u]
                            x1 = r1[u]
                            x2 = r2[u]
                            x3 = r3[u]
                            v0 = w0[u]
                            v1 = w1[u]
                            c00 += v0 * x0
                            c01 += v0 * x1
                            c02 += v0 * x2
                            c03 += v0 * x3
                            c10 += v1 * x0
                            c11 += v1 * x1
                            c12 += v1 * x2
                            c13 += v1 * x3
                        zo[o, g] = c00
                        zo[o, g + 1] = c01
                        zo[o, g + 2] = c02
                        zo[o, g + 3] = c03
                        zo[o + 1, g] = c10
                        zo[o + 1, g + 1] = c11
                        zo[o + 1, g + 2] = c12
                        zo[o + 1, g + 3] = c13
                        o += 2
                    if o < n_out:
                        w0 = th[o * h1 : (o + 1) * h1]
                        b0 = th[bias_off + o]
                        c00 = b0
                        c01 = b0
                        c02 = b0
                        c03 = b0
                        for u in range(h1):
                            v0 = w0[u]
                            c00 += v0 * r0[u]
                            c01 += v0 * r1[u]
                            c02 += v0 * r2[u]
                            c03 += v0 * r3[u]
                        zo[o, g] = c00
                        zo[o, g + 1] = c01
                        zo[o, g + 2] = c02
                        zo[o, g + 3] = c03
                # 4. loss and hits of the tile, the sample index as the vector lane
                nh = 0
                if loss_kind == SOFTMAX_CE:
                    for s in range(ns4):
                        mx[s] = zo[0, s]
                        arg[s] = 0
                    for o in range(1, n_out):
                        for s in range(ns4):
                            v = zo[o, s]
                            big = v > mx[s]
                            mx[s] = v if big else mx[s]
                            arg[s] = o if big else arg[s]
                    for o in range(n_out):
                        zrow = zo[o]
                        drow = dexp[o * ns4 : (o + 1) * ns4]
                        for s in range(ns4):
                            drow[s] = zrow[s] - mx[s]
                    ne = n_out * ns4
                    exp_neg_abs_block(dexp[:ne], 1.0, 0.0, eexp[:ne], hbits[:ne])
                    for s in range(ns4):
                        se[s] = eexp[s]
                        sy[s] = 0.0
                        yz[s] = 0.0
                    for o in range(1, n_out):
                        erow = eexp[o * ns4 : (o + 1) * ns4]
                        for s in range(ns4):
                            se[s] += erow[s]
                    log_block(se[:ns4], lse[:ns4], hbits[:ns4])
                    for o in range(n_out):
                        zrow = zo[o]
                        yrow = YT[o, s0 : s0 + ns]
                        for s in range(ns):
                            y = yrow[s]
                            sy[s] += y
                            yz[s] += y * zrow[s]
                    lab = labels[s0 : s0 + ns]
                    for s in range(ns):
                        lossv[s] = sy[s] * (mx[s] + lse[s]) - yz[s]
                        nh += 1 if arg[s] == lab[s] else 0
                elif loss_kind == LOGISTIC:
                    exp_neg_abs_block(zo[0, :ns4], 1.0, 0.0, eexp[:ns4], hbits[:ns4])
                    yrow = YT[0, s0 : s0 + ns]
                    for s in range(ns):
                        z = zo[0, s]
                        y = yrow[s]
                        lossv[s] = (max(z, 0.0) + log1p_unit(eexp[s])) - y * z
                        nh += 1 if (z > 0.0) == (y > 0.5) else 0
                else:
                    for s in range(ns):
                        lossv[s] = 0.0
                    for o in range(n_out):
                        zrow = zo[o]
                        yrow = YT[o, s0 : s0 + ns]
                        for s in range(ns):
                            r = zrow[s] - yrow[s]
                            lossv[s] += r * r
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


@jit()
def logistic_block_sums(z, y, sp, bits):
    """Sum over a block of the logistic loss ``softplus(z) - y z`` and of correct predictions.

    The softplus of :func:`softplus_block` with the loss and accuracy sums in the same loop (one
    pass over the block). ``sp`` (B,) is unused (kept for the signature). Returns (loss sum,
    hits).
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    total = 0.0
    hits = 0.0
    for i in range(n):
        zi = z[i]
        u = exp_neg(abs(zi), bits, scale, i)
        total += (max(zi, 0.0) + log1p_unit(u)) - y[i] * zi
        hits += 1.0 if (zi > 0.0) == (y[i] > 0.5) else 0.0
    return total, hits


@jit()
def scalar_sums3(loss_kind, cnt, F0, c0, F1, c1, F2, c2, y, bits):
    """Loss and hit sums of one point of :func:`span_block_scalar` with 1 <= cnt <= 3 terms.

    The output ``z = sum_t c_t F_t`` (:func:`first_layer`) and the loss (the softplus of
    :func:`logistic_block_sums`, or the squared error) in one fused, vectorised pass: no
    output buffer is written or re-read. Returns (loss sum, hits).
    """
    n = y.shape[0]
    two = cnt >= 2
    three = cnt >= 3
    total = 0.0
    hits = 0.0
    if loss_kind == LOGISTIC:
        scale = bits.view(np.float64)
        # one loop per term count: constant selects fold away (no tests in the loop body)
        if three:
            for i in range(n):
                zi = first_layer(F0, c0, F1, c1, F2, c2, True, True, i)
                u = exp_neg(abs(zi), bits, scale, i)
                total += (max(zi, 0.0) + log1p_unit(u)) - y[i] * zi
                hits += 1.0 if (zi > 0.0) == (y[i] > 0.5) else 0.0
        elif two:
            for i in range(n):
                zi = first_layer(F0, c0, F1, c1, F2, c2, True, False, i)
                u = exp_neg(abs(zi), bits, scale, i)
                total += (max(zi, 0.0) + log1p_unit(u)) - y[i] * zi
                hits += 1.0 if (zi > 0.0) == (y[i] > 0.5) else 0.0
        else:
            for i in range(n):
                zi = first_layer(F0, c0, F1, c1, F2, c2, False, False, i)
                u = exp_neg(abs(zi), bits, scale, i)
                total += (max(zi, 0.0) + log1p_unit(u)) - y[i] * zi
                hits += 1.0 if (zi > 0.0) == (y[i] > 0.5) else 0.0
    else:
        for i in range(n):
            r = first_layer(F0, c0, F1, c1, F2, c2, two, three, i) - y[i]
            total += r * r
    return total, hits


# Logistic loss without a transcendental per sample and point (issue 6, B1). With
# z = sum_t c_t F_t, exp(z) = prod_t exp(c_t F_t) and exp(-z) = prod_t exp(-c_t F_t), so
#   softplus(z) - y z = max((1 - 2y) z, 0) + log1p(u),   u = min(exp(z), exp(-z)),
# and a sum of log1p is the log of a product: a (point, sample) pays a few multiplies, a min
# and a max, and each (point, chunk of PRODUCT_CHUNK samples) one log. The factors
# exp(+-c F_k[i]) depend on a coefficient magnitude, not on a point: a 101 x 101 grid on
# [-1, 1]^2 has 1 + 2 * 50 of them for its 10 201 points (tables of exp(|c| F_k) and of the
# reciprocal, built once per block, see factor_rows). Points sharing their leading terms (a
# grid row) go four at a time through one loop that loads the shared rows once.
#: Samples per product in :func:`logistic_product_group`: the factors are 0.5 (1 + u) in
#: [0.5, 1], so a product of 1024 stays in [2**-1024, 1] (2**-1024 and its neighbours are
#: subnormal with 50 significant bits left), and a block of 2048 is two chunks.
PRODUCT_CHUNK = 1024
#: Below this u, log1p(u) is summed as its degree-4 Taylor polynomial (relative error
#: u**4 / 5 < 2e-17) instead of entering the product, where the rounding of 1 + u would lose
#: the relative accuracy of a small loss.
_TINY_U = 1e-4
#: Largest sum_t |c_t| max|F_t| (a bound on |z|) at which every u = exp(-|z|) >= 1e-4, so the
#: product path needs no Taylor split (:func:`logistic_product_group`).
PLAIN_REACH = 9.21
#: Largest sum_t |c_t| max|F_t| of the product path: exp of any partial sum stays a normal
#: double (exp(709.8) overflows; exp(-708) is the smallest normal).
EXP_PRODUCT_RANGE = 700.0


@jit()
def exp_bounded(x, bits, scale, i):
    """exp(x) for |x| <= 708, branch-free: the body of a vectorisable loop over i.

    ``x = k ln2 + r`` with k = round(x / ln2) (Cody-Waite halves of ln2), ``exp(r)`` by the
    Chebyshev polynomial of :func:`exp_neg` evaluated at ``-r``, and ``2**k`` from its exponent
    bits in ``bits[i]`` (int64 scratch, read back through ``scale = bits.view(np.float64)``).
    Relative error a few ulp plus about |x| ulp from the reduction.
    """
    k = np.floor(x * _INV_LN2 + 0.5)
    scale[i] = k + _SHIFTER
    bits[i] = (bits[i] - _EXP_POS_BIAS) << 52
    r = (k * _LN2_HI - x) + k * _LN2_LO  # -(x - k ln2)
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
    return p * scale[i]


@jit()
def exp_row(F, c, out, bits):
    """out[i] = exp(c F[i]) (:func:`exp_bounded`), one vectorised pass; |c F[i]| <= 708."""
    scale = bits.view(np.float64)
    for i in range(F.shape[0]):
        out[i] = exp_bounded(c * F[i], bits, scale, i)


@jit()
def exp_pair_row(F, c, T, N, bits):
    """T = exp(c F) (:func:`exp_row`) and N = 1 / T = exp(-c F) (a division is cheaper than a
    second exponential); |c F[i]| <= 708 keeps both normal."""
    exp_row(F, c, T, bits)
    for i in range(F.shape[0]):
        N[i] = 1.0 / T[i]


@jit(parallel=True)
def exp_tables(F, rows, values, T, N):
    """T[r] = exp(values[r] F[rows[r]]) and N[r] = 1 / T[r] for the R shared factors of one
    block (:func:`exp_pair_row`; the values are coefficient magnitudes, see
    :func:`factor_rows`).

    Parameters
    ----------
    F : (K, B) float64
    rows : (R,) int64
    values : (R,) float64
    T, N : (R, B) float64, written
    """
    R, B = T.shape
    for r in prange(R):
        bits = np.empty(B, np.int64)
        exp_pair_row(F[rows[r]], values[r], T[r], N[r], bits)


@jit()
def log_product(prod, n):
    """``log(prod * 2**n)`` for a product of n factors ``0.5 (1 + u)``: the sum of their
    ``log1p(u)``. With ``prod = m 2**e`` (frexp), ``log(2m) + (e + n - 1) ln2``, the integer
    times ln2 by its Cody-Waite halves (exact high part): when every u is tiny, 2m = 1 and the
    integer is 0, so the result is exactly 0 (no cancellation between two logs)."""
    m, e = math.frexp(prod)
    k = e + n - 1
    return math.log(2.0 * m) + (k * _LN2_HI + k * _LN2_LO)


@jit()
def product_chunk4(gz, gF, bT, bN, tv, c0, T0, N0, c1, T1, N1, c2, T2, N2, c3, T3, N3):
    """Sums of four points over one chunk of samples (at most :data:`PRODUCT_CHUNK`), one
    vectorised pass that loads the shared rows once.

    The four points share the base arrays (:func:`product_base`) and the column F of their
    last term; point p has ``z = bz + c_p F``, ``exp(z) = bT T_p``, ``exp(-z) = bN N_p``. The
    loop reads ``gz = g bz`` and ``gF = g F`` with ``g = 1 - 2 y`` = +-1 (exact), so that
    ``w = g z = gz + c_p gF`` (the same bits as g times the fma of z). Per sample
    ``softplus(z) - y z = max(w, 0) + log1p(u)`` (exact for 0/1 targets) with
    ``u = min(exp(z), exp(-z))``; the log1p terms enter the product of the ``0.5 (1 + u)``
    (the plain path: every u >= 1e-4, see :func:`logistic_product_group`; :func:`log_product`
    takes the 0.5 out again). A sample is a hit, ``(z > 0) == (y == 1)``, exactly when
    ``w < tv`` with ``tv = 0`` for y = 1 (``w = -z < 0``) and the smallest subnormal for
    y = 0 (``w = z <= 0``): one comparison, signed zeros included.

    Returns
    -------
    tuple of 12
        (exact-part sum, product of the 0.5 (1 + u), hits) of points 0 to 3.
    """
    l0 = 0.0
    l1 = 0.0
    l2 = 0.0
    l3 = 0.0
    p0 = 1.0
    p1 = 1.0
    p2 = 1.0
    p3 = 1.0
    h0 = 0
    h1 = 0
    h2 = 0
    h3 = 0
    for i in range(tv.shape[0]):
        b = gz[i]
        f = gF[i]
        et = bT[i]
        en = bN[i]
        t = tv[i]
        w = b + c0 * f
        p0 *= 0.5 + 0.5 * min(et * T0[i], en * N0[i])
        l0 += max(w, 0.0)
        h0 += w < t
        w = b + c1 * f
        p1 *= 0.5 + 0.5 * min(et * T1[i], en * N1[i])
        l1 += max(w, 0.0)
        h1 += w < t
        w = b + c2 * f
        p2 *= 0.5 + 0.5 * min(et * T2[i], en * N2[i])
        l2 += max(w, 0.0)
        h2 += w < t
        w = b + c3 * f
        p3 *= 0.5 + 0.5 * min(et * T3[i], en * N3[i])
        l3 += max(w, 0.0)
        h3 += w < t
    return l0, p0, h0, l1, p1, h1, l2, p2, h2, l3, p3, h3


@jit()
def product_chunk_split(gz, gF, c, bT, T, bN, N, tv):
    """One point over one chunk as :func:`product_chunk4`, with u below 1e-4 (where the
    rounding of 1 + u and of the product would be large against log1p(u)) summed instead as
    its degree-4 Taylor polynomial (relative error < 2e-17), by arithmetic selects (a
    conditional expression would stop LLVM from vectorising the loop).

    Returns
    -------
    (exact-part sum, sum of the Taylor terms, product of 0.5 (1 + u) or 0.5 for the tiny u,
    hits)
    """
    lin = 0.0
    small = 0.0
    prod = 1.0
    hits = 0
    for i in range(tv.shape[0]):
        w = gz[i] + c * gF[i]
        u = min(bT[i] * T[i], bN[i] * N[i])
        us = u * (u < _TINY_U)
        small += us * (1.0 - us * (0.5 - us * (1.0 / 3.0 - 0.25 * us)))
        # not 1 + (u - us): with reassociation allowed LLVM may form (1 + u) - us
        prod *= 0.5 + 0.5 * (u * (u >= _TINY_U))
        lin += max(w, 0.0)
        hits += w < tv[i]
    return lin, small, prod, hits


@jit()
def product_base(cnt, F0, c0, T0, N0, F1, c1, T1, N1, bz, bT, bN):
    """The leading ``cnt - 1`` terms of a product-path point, summed once for its run of
    points (consecutive points that differ only in their last term, as along a grid row):
    ``bz = sum_t c_t F_t``, ``bT = prod_t T_t``, ``bN = prod_t N_t``; (0, 1, 1) for cnt = 1.
    :func:`scalar_points` passes the rows of ``G = g F``, so that bz holds ``g`` times the sum.
    Rows of unused terms may be any readable rows."""
    B = bz.shape[0]
    if cnt == 1:
        for i in range(B):
            bz[i] = 0.0
            bT[i] = 1.0
            bN[i] = 1.0
    elif cnt == 2:
        for i in range(B):
            bz[i] = c0 * F0[i]
            bT[i] = T0[i]
            bN[i] = N0[i]
    else:
        for i in range(B):
            bz[i] = c0 * F0[i] + c1 * F1[i]
            bT[i] = T0[i] * T1[i]
            bN[i] = N0[i] * N1[i]


@jit()
def logistic_product_split(gF, c, T, N, gz, bT, bN, tv):
    """Logistic loss and hit sums of one point over one block by the split product
    (:func:`product_chunk_split`), one log per chunk. Returns (loss sum, hits)."""
    B = tv.shape[0]
    lin = 0.0
    small = 0.0
    logs = 0.0
    hits = 0.0
    for lo in range(0, B, PRODUCT_CHUNK):
        hi = min(B, lo + PRODUCT_CHUNK)
        # a separate function per chunk: LLVM leaves an inner loop with these reductions
        # scalar when it is nested in the chunk loop
        a, b, prod, h = product_chunk_split(
            gz[lo:hi], gF[lo:hi], c, bT[lo:hi], T[lo:hi], bN[lo:hi], N[lo:hi], tv[lo:hi]
        )
        lin += a
        small += b
        logs += log_product(prod, hi - lo)
        hits += h
    return lin + small + logs, hits


@jit()
def factor_rows(T, N, own_T, own_N, r, c):
    """The rows ``exp(c F)`` and ``exp(-c F)`` of a term with coefficient c: row r of the tables
    (or the term's own rows when r < 0) holds ``exp(|c| F)`` and its reciprocal, swapped for a
    negative c (a grid's c and -c share one row)."""
    E = T[r] if r >= 0 else own_T
    R = N[r] if r >= 0 else own_N
    return (E, R) if c > 0.0 else (R, E)


@jit()
def logistic_product_group(
    gF, gz, bT, bN, tv, cs, rows, T, N, ownT, ownN, js, loss_out, hits_out
):  # fmt: skip
    """Logistic loss and hit sums over one block of up to four plain-path points that share
    their base arrays and last column (:func:`product_chunk4`), one log per point and chunk.

    The rounding of the products (of each 0.5 (1 + u) and of each multiply, 2**-53 each) is an
    absolute error of at most ~2.2e-16 per sample, against a log1p(u) of at least 1e-4 per
    sample on the plain path: at most ~2.2e-12 relative. Slots with ``js[p] < 0`` are padding
    (computed, not written): every point goes through the same four-point loop, so its bits
    do not depend on its group.

    Parameters
    ----------
    gF, gz, bT, bN, tv : (B,) float64
        Shared rows of :func:`product_chunk4`.
    cs : (4,) float64
        Last coefficient of each point.
    rows : (4,) int64
        Row of T and N for point p (:func:`factor_rows`), or -1: row p of ownT and ownN.
    T, N : (R, B) float64
    ownT, ownN : (4, B) float64
    js : (4,) int64
        Output slot of each point, or -1.
    loss_out, hits_out : (m,) float64, written at js
    """
    B = tv.shape[0]
    tot = np.zeros(4)
    hit = np.zeros(4)
    T0, N0 = factor_rows(T, N, ownT[0], ownN[0], rows[0], cs[0])
    T1, N1 = factor_rows(T, N, ownT[1], ownN[1], rows[1], cs[1])
    T2, N2 = factor_rows(T, N, ownT[2], ownN[2], rows[2], cs[2])
    T3, N3 = factor_rows(T, N, ownT[3], ownN[3], rows[3], cs[3])
    for lo in range(0, B, PRODUCT_CHUNK):
        hi = min(B, lo + PRODUCT_CHUNK)
        r = product_chunk4(
            gz[lo:hi], gF[lo:hi], bT[lo:hi], bN[lo:hi], tv[lo:hi],
            cs[0], T0[lo:hi], N0[lo:hi], cs[1], T1[lo:hi], N1[lo:hi],
            cs[2], T2[lo:hi], N2[lo:hi], cs[3], T3[lo:hi], N3[lo:hi],
        )  # fmt: skip
        nc = hi - lo
        tot[0] += r[0] + log_product(r[1], nc)
        hit[0] += r[2]
        tot[1] += r[3] + log_product(r[4], nc)
        hit[1] += r[5]
        tot[2] += r[6] + log_product(r[7], nc)
        hit[2] += r[8]
        tot[3] += r[9] + log_product(r[10], nc)
        hit[3] += r[11]
    for p in range(4):
        if js[p] >= 0:
            loss_out[js[p]] = tot[p]
            hits_out[js[p]] = hit[p]


@jit()
def flush_group(gF, gz, bT, bN, tv, n_pend, cs, rows, js, T, N, ownT, ownN, loss_out, hits_out):
    """Run the pending plain-path points (1 to 4) of a task as one four-point group; empty
    slots repeat point 0's coefficient and row (own rows: whatever finite factors the slot
    holds) and are not written (:func:`logistic_product_group`)."""
    for p in range(n_pend, 4):
        cs[p] = cs[0]
        rows[p] = rows[0]
        js[p] = -1
    logistic_product_group(gF, gz, bT, bN, tv, cs, rows, T, N, ownT, ownN, js, loss_out,
                           hits_out)  # fmt: skip


@jit(parallel=True)
def span_block_scalar(
    coef, F, y, loss_kind, point_chunk, loss_out, hits_out, tix, T, N, Fmax, G, tv, order
):  # fmt: skip
    """Fast path of :func:`span_block` for one output and no hidden layer (logistic, linear).

    ``F`` is (K, B): ``F[k] = X_blk w_k + b_k``; ``y`` (B,) the block's targets. A logistic
    point with 1 to 3 non-zero coefficients whose ``reach = sum_t |c_t| Fmax[k_t]`` (a bound
    on |z|) is at most :data:`EXP_PRODUCT_RANGE` takes the product path: its factors
    ``exp(+-c_t F_t)`` come from rows ``tix[j, t]`` of T and N when shared (``tix >= 0``,
    :func:`factor_rows`) or are formed by :func:`exp_pair_row` (the same bits either way); the
    sums of its leading terms
    (:func:`product_base`) are formed once per run of consecutive points of a task that share
    them, and such points with ``reach <= PLAIN_REACH`` go four at a time through
    :func:`logistic_product_group` (the same bits either way), the others one at a time
    through :func:`logistic_product_split`. Other points with 1 to 3 non-zero coefficients
    form their outputs and their loss in one fused pass (:func:`scalar_sums3`); the rest form
    their B outputs with K_j vectorised axpys, then the loss in one vectorised pass
    (:func:`logistic_block_sums` for logistic). Each point's sums are formed in an order fixed
    by B, its coefficients and Fmax: none depends on the other points or on the threads.

    Parameters
    ----------
    coef : (m, K) float64
    F : (K, B) float64
    y : (B,) float64
    loss_kind, point_chunk : int
    loss_out, hits_out : (m,) float64, written
    tix : (m, 3) int64
        Row of T and N holding ``exp(|c_t| F_t)`` and its reciprocal for the t-th non-zero
        coefficient of each point (:func:`factor_rows`), or -1 (formed per point).
    T, N : (R, B) float64
    Fmax : (K,) float64
        ``max |F[k]|`` over the block (rows no point uses: anything).
    G : (K, B) float64
        ``g F`` with ``g = 1 - 2 y`` (logistic; anything for MSE), see :func:`product_chunk4`.
    tv : (B,) float64
        The hit thresholds of :func:`product_chunk4`: 0 where y = 1, the smallest subnormal
        where y = 0.
    order : (m,) int64
        The order in which tasks take the points (:func:`product_order`; speed only).
    """
    m = coef.shape[0]
    # tasks of at least 64 points: each allocates its scratch rows once, and a grid row's
    # points share their leading terms. No bit depends on the tasks.
    chunk = max(point_chunk, 64)
    n_tasks = (m + chunk - 1) // chunk
    for task in prange(n_tasks):
        scalar_points(
            coef, F, y, loss_kind, order[task * chunk : min(m, (task + 1) * chunk)], loss_out,
            hits_out, tix, T, N, Fmax, G, tv,
        )  # fmt: skip


@jit()
def scalar_points(coef, F, y, loss_kind, points, loss_out, hits_out, tix, T, N, Fmax, G, tv):
    """The points ``points`` of one task of :func:`span_block_scalar`, in that order.

    Pending plain-path points are flushed in one place (a single call site keeps the compiled
    code small): before a point that needs other base arrays, when four are pending, and after
    the last point.
    """
    K = coef.shape[1]
    B = F.shape[1]
    idx = np.empty(K, np.int64)
    val = np.empty(K)
    z = np.empty(B)
    sp = np.empty(B)
    bits = np.empty(B, np.int64)
    leadT = np.ones((2, B))  # own factors of leading terms
    leadN = np.ones((2, B))
    ownT = np.ones((4, B))  # own last-term factors of the pending points
    ownN = np.ones((4, B))
    oneT = np.ones((1, B))  # own last-term factors of a split-path point
    oneN = np.ones((1, B))
    bz = np.empty(B)
    bT = np.empty(B)
    bN = np.empty(B)
    base_cnt = 0  # cnt of the run whose leading terms bz, bT, bN hold (0: none)
    base_idx = np.zeros(3, np.int64)
    base_val = np.zeros(2)
    cs = np.zeros(4)
    rows = np.zeros(4, np.int64)
    js = np.zeros(4, np.int64)
    n_pend = 0
    n = points.shape[0]
    for jj in range(n + 1):
        product = False
        same = False
        j = 0
        cnt = 0
        reach = 0.0
        if jj < n:
            j = points[jj]
            cnt = nonzero_coefficients(coef[j], idx, val)
            for t in range(cnt):
                reach += abs(val[t]) * Fmax[idx[t]]
            product = loss_kind == LOGISTIC and 1 <= cnt <= 3 and reach <= EXP_PRODUCT_RANGE
            if product:
                same = cnt == base_cnt and idx[cnt - 1] == base_idx[cnt - 1]
                for t in range(cnt - 1):
                    same = same and idx[t] == base_idx[t] and val[t] == base_val[t]
        if n_pend > 0 and (jj == n or n_pend == 4 or (product and not same)):
            flush_group(G[base_idx[base_cnt - 1]], bz, bT, bN, tv, n_pend, cs, rows, js, T, N,
                        ownT, ownN, loss_out, hits_out)  # fmt: skip
            n_pend = 0
        if jj == n:
            break
        if product:
            last = cnt - 1
            if not same:
                for t in range(last):
                    if tix[j, t] < 0:
                        exp_pair_row(F[idx[t]], abs(val[t]), leadT[t], leadN[t], bits)
                T0, N0 = factor_rows(T, N, leadT[0], leadN[0], tix[j, 0], val[0])
                T1, N1 = leadT[1], leadN[1]  # unused unless cnt == 3
                if cnt == 3:
                    T1, N1 = factor_rows(T, N, leadT[1], leadN[1], tix[j, 1], val[1])
                k1 = idx[1] if cnt == 3 else idx[0]
                product_base(  # on the rows of G: bz holds g times the leading sum
                    cnt, G[idx[0]], val[0], T0, N0, G[k1], val[1] if cnt == 3 else 0.0, T1, N1,
                    bz, bT, bN,
                )  # fmt: skip
                base_cnt = cnt
                for t in range(cnt):
                    base_idx[t] = idx[t]
                for t in range(last):
                    base_val[t] = val[t]
            r = tix[j, last]
            if reach > PLAIN_REACH:
                if r < 0:
                    exp_pair_row(F[idx[last]], abs(val[last]), oneT[0], oneN[0], bits)
                Tl, Nl = factor_rows(T, N, oneT[0], oneN[0], r, val[last])
                total, hits = logistic_product_split(
                    G[idx[last]], val[last], Tl, Nl, bz, bT, bN, tv
                )
                loss_out[j] = total
                hits_out[j] = hits
                continue
            if r < 0:
                exp_pair_row(F[idx[last]], abs(val[last]), ownT[n_pend], ownN[n_pend], bits)
            cs[n_pend] = val[last]
            rows[n_pend] = r
            js[n_pend] = j
            n_pend += 1
            continue
        if 1 <= cnt <= 3:
            k0 = idx[0]
            k1 = idx[1] if cnt >= 2 else k0
            k2 = idx[2] if cnt >= 3 else k0
            total, hits = scalar_sums3(
                loss_kind, cnt, F[k0], val[0], F[k1], val[1] if cnt >= 2 else 0.0, F[k2],
                val[2] if cnt >= 3 else 0.0, y, bits,
            )  # fmt: skip
            loss_out[j] = total
            hits_out[j] = hits
            continue
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
def shared_factors(coef, max_rows):
    """Which factors ``exp(|c| F_k)`` of the logistic product path are tabulated per block.

    A coefficient magnitude of column k shared by two or more points with 1 to 3 non-zero
    coefficients (a grid's alphas and betas, +-alpha together, the 1 of its theta) gets a table
    row, most shared first, at most ``max_rows``. Speed only: a point's bits do not depend on
    whether its factors come from a table (:func:`span_block_scalar`).

    Parameters
    ----------
    coef : (m, K) float64
    max_rows : int

    Returns
    -------
    tix : (m, 3) int64
        Table row of the t-th non-zero coefficient of each point, or -1.
    rows : (R,) int64
        Column k of each table row.
    values : (R,) float64
        Coefficient magnitude of each table row.
    """
    m, K = coef.shape
    nz = coef != 0.0
    cnt = nz.sum(axis=1)
    ok = (cnt >= 1) & (cnt <= 3)
    pos = np.cumsum(nz, axis=1) - 1  # position of column k among a point's non-zeros
    cands = []  # (-count, k, index into that column's magnitudes), one per shared magnitude
    per_k = []
    for k in range(K):
        sel = np.flatnonzero(ok & nz[:, k])
        vals, inv, counts = np.unique(np.abs(coef[sel, k]), return_inverse=True, return_counts=True)
        per_k.append((sel, vals, inv))
        for u in np.flatnonzero(counts >= 2):
            cands.append((-int(counts[u]), k, int(u)))
    cands.sort()
    cands = cands[: max(0, int(max_rows))]
    tix = np.full((m, 3), -1, np.int64)
    rows = np.empty(len(cands), np.int64)
    values = np.empty(len(cands))
    rowmaps = [np.full(v.size, -1, np.int64) for _, v, _ in per_k]
    for r, (_, k, u) in enumerate(cands):
        rows[r] = k
        values[r] = per_k[k][1][u]
        rowmaps[k][u] = r
    for k, (sel, _, inv) in enumerate(per_k):
        if sel.size:
            tix[sel, pos[sel, k]] = rowmaps[k][inv]
    return tix, rows, values


def product_order(coef, tix, tile_rows=16):
    """An order of the points for :func:`span_block_scalar` that keeps shared factors in
    cache: points whose last factor lies in the same tile of ``tile_rows`` table rows come
    together (those rows stay in L2 while every run of leading terms passes over them), and
    inside a tile the points of one run of leading terms are consecutive. Speed only: no
    point's bits depend on the order.

    Returns
    -------
    (m,) int64
    """
    m = coef.shape[0]
    nz = coef != 0.0
    cnt = np.count_nonzero(nz, axis=1)
    pos = np.clip(cnt - 1, 0, 2)
    ar = np.arange(m)
    last = tix[ar, pos]
    # the leading terms' signs too: c and -c share a table row but not a run
    first = np.argmax(nz, axis=1)  # column of the first / second non-zero coefficient
    second = np.argmax(np.cumsum(nz, axis=1) > 1, axis=1)
    neg0 = coef[ar, first] < 0
    neg1 = coef[ar, second] < 0
    lead0 = np.where(cnt >= 2, 2 * tix[:, 0] + neg0, -1)
    lead1 = np.where(cnt >= 3, 2 * tix[:, 1] + neg1, -1)
    tile = np.where((cnt >= 1) & (cnt <= 3) & (last >= 0), last // tile_rows, -1)
    tile = np.where((cnt >= 1) & (cnt <= 3), tile, np.iinfo(np.int64).max)  # general: last
    return np.lexsort((last, lead1, lead0, cnt, tile)).astype(np.int64)


def span_eval(
    basis, coef, sizes, act, loss_kind, X, Y, block, point_chunk, sub_block=32,
    table_bytes=64 * 2**20,
):  # fmt: skip
    """Mean loss and accuracy of the model at the m points ``coef @ basis``.

    Plain Python driver around the parallel block kernels: it loops over fixed sample blocks,
    forms the first-layer products with one BLAS GEMM per basis row that some point uses, and
    adds the per-block sums serially. For logistic regression it also tabulates, per block,
    the factors ``exp(c F_k)`` that several points share (:func:`shared_factors`).

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
    table_bytes : int
        Memory for the shared exponential factors of logistic regression (speed only).

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
    # fault per 4 KiB on first touch (2.7 ms per block for B1's tables, measured).
    nb_max = min(n, block)
    if scalar:
        table_buf = np.empty(2 * rows.size * nb_max)
        # the first-layer values of all samples before the block loop: one matrix-vector
        # product per used basis row over the whole of X (the same products per block cost 3x:
        # 3.2 against 1.1 ms on B1)
        F_all = np.empty((used.size, n))
        with serial_blas():  # reproducible for any thread count
            for i, k in enumerate(used):
                np.matmul(X, W1[k, 0], out=F_all[i])
                F_all[i] += b1[k, 0]
    else:
        f_buf = np.empty(K * nb_max * h1)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        Xb = X[lo:hi]
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
        if n_layers == 2:
            Yb = Y[lo:hi]
            labels = (
                np.argmax(Yb, axis=1) if loss_kind == SOFTMAX_CE else np.zeros(hi - lo, np.int64)
            )
            span_block_hidden(
                coef,
                F,
                tail,
                act,
                loss_kind,
                np.ascontiguousarray(Yb.T),
                labels,
                point_chunk,
                sub_block,
                block_loss,
                block_hits,
            )
        elif not scalar:
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
