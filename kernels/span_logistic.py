"""The span engine's path for one output and no hidden layer: logistic and linear regression.

:func:`span_block_scalar` is the fast path of ``kernels.span.span_block`` for ``sizes = (d, 1)``
with the logistic loss or MSE; the driver ``kernels.span.span_eval`` forms the first-layer
values ``F[k] = X_blk w_k + b_k`` of each basis row and, for logistic regression, the tables of
shared factors (:func:`shared_factors`, :func:`exp_tables`) and the order of the points
(:func:`product_order`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import jit
from .elementwise import LN2_HI, LN2_LO, LOGISTIC, exp_bounded, softplus_at
from .span_points import first_layer, nonzero_coefficients


@jit()
def logistic_sample(z, y, bits, scale, i):
    """Logistic loss ``softplus(z) - y z`` of one sample (:func:`softplus_at`) and whether it is
    classified correctly, ``(z > 0) == (y > 0.5)``, as (loss, 1.0 or 0.0)."""
    loss = softplus_at(z, bits, scale, i) - y * z
    return loss, 1.0 if (z > 0.0) == (y > 0.5) else 0.0


@jit()
def logistic_block_sums(z, y, bits):
    """Sum over a block of the logistic loss ``softplus(z) - y z`` and of correct predictions,
    in one vectorised pass (:func:`logistic_sample`). Returns (loss sum, hits)."""
    n = z.shape[0]
    scale = bits.view(np.float64)
    total = 0.0
    hits = 0.0
    for i in range(n):
        loss, hit = logistic_sample(z[i], y[i], bits, scale, i)
        total += loss
        hits += hit
    return total, hits


@jit()
def scalar_sums3(loss_kind, cnt, F0, c0, F1, c1, F2, c2, y, bits):
    """Loss and hit sums of one point of :func:`span_block_scalar` with 1 <= cnt <= 3 terms.

    The output ``z = sum_t c_t F_t`` (:func:`first_layer`) and the loss (:func:`logistic_sample`,
    or the squared error) in one fused, vectorised pass: no output buffer is written or re-read.
    Returns (loss sum, hits).
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
                loss, hit = logistic_sample(zi, y[i], bits, scale, i)
                total += loss
                hits += hit
        elif two:
            for i in range(n):
                zi = first_layer(F0, c0, F1, c1, F2, c2, True, False, i)
                loss, hit = logistic_sample(zi, y[i], bits, scale, i)
                total += loss
                hits += hit
        else:
            for i in range(n):
                zi = first_layer(F0, c0, F1, c1, F2, c2, False, False, i)
                loss, hit = logistic_sample(zi, y[i], bits, scale, i)
                total += loss
                hits += hit
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
TINY_U = 1e-4
#: Largest sum_t |c_t| max|F_t| (a bound on |z|) at which every u = exp(-|z|) >= 1e-4, so the
#: product path needs no Taylor split (:func:`logistic_product_group`).
PLAIN_REACH = 9.21
#: Largest sum_t |c_t| max|F_t| of the product path: exp of any partial sum stays a normal
#: double (exp(709.8) overflows; exp(-708) is the smallest normal).
EXP_PRODUCT_RANGE = 700.0


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
    return math.log(2.0 * m) + (k * LN2_HI + k * LN2_LO)


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
        us = u * (u < TINY_U)
        small += us * (1.0 - us * (0.5 - us * (1.0 / 3.0 - 0.25 * us)))
        # not 1 + (u - us): with reassociation allowed LLVM may form (1 + u) - us
        prod *= 0.5 + 0.5 * (u * (u >= TINY_U))
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
    """Fast path of ``kernels.span.span_block`` for one output and no hidden layer (logistic
    and linear regression).

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
            total, hits = logistic_block_sums(z, y, bits)
        else:
            total = 0.0
            hits = 0.0
            for i in range(B):
                r = z[i] - y[i]
                total += r * r
        loss_out[j] = total
        hits_out[j] = hits


# ----------------------------------------------------------------------------- driver helpers
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
