"""The span engine's path for one hidden layer: sample tiles, fused first layer and activation.

:func:`span_block_hidden` is the fast path of ``kernels.span.span_block`` for
``sizes = (d, h1, out)``; the driver ``kernels.span.span_eval`` forms the first-layer products
``F[k] = X_blk W1_k^T + b1_k`` of each basis row. Each tile of samples goes through three
vectorised steps per point: the first layer and activation (``combine_<activation>``, after
:func:`first_layer_sum` beyond three terms), :func:`tile_outputs`
(output layer) and ``tile_loss_<loss>`` (loss and hits).

Compile time: the kernel is compiled per (activation, loss) (:func:`task_kernel`), with the
code of that activation and loss only, and runs serially per task on a thread pool
(``kernels._tasks``): a ``prange`` kernel cost Numba seconds more to compile for no speed.
"""

from __future__ import annotations

import functools

import numpy as np

from ._jit import jit
from ._tasks import run_tasks
from .elementwise import (
    GELU,
    GELU_TANH,
    IDENTITY,
    LEAKY_RELU,
    LOGISTIC,
    RELU,
    SIGMOID,
    SOFTMAX_CE,
    TANH,
    activate_at,
    exp_neg_abs_block,
    log1p_unit,
    log_block,
    sigmoid_at,
    tanh_at,
)
from .span_points import first_layer, point_tails


@jit()
def combine_tanh(cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = tanh(sum_t c_t F_t) for 1 <= cnt <= 3 terms (see :func:`combine_activate`)."""
    n = out.shape[0]
    scale = bits.view(np.float64)
    # one loop per term count: constant selects fold away (no tests in the loop body)
    if cnt >= 3:
        for j in range(n):
            z = first_layer(F0, c0, F1, c1, F2, c2, True, True, j)
            out[j] = tanh_at(z, bits, scale, j)
    elif cnt >= 2:
        for j in range(n):
            z = first_layer(F0, c0, F1, c1, F2, c2, True, False, j)
            out[j] = tanh_at(z, bits, scale, j)
    else:
        for j in range(n):
            z = first_layer(F0, c0, F1, c1, F2, c2, False, False, j)
            out[j] = tanh_at(z, bits, scale, j)


@jit()
def combine_sigmoid(cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = sigmoid(sum_t c_t F_t) for 1 <= cnt <= 3 terms (see :func:`combine_activate`)."""
    two = cnt >= 2
    three = cnt >= 3
    scale = bits.view(np.float64)
    for j in range(out.shape[0]):
        z = first_layer(F0, c0, F1, c1, F2, c2, two, three, j)
        out[j] = sigmoid_at(z, bits, scale, j)


@jit()
def combine_relu(cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = relu(sum_t c_t F_t) for 1 <= cnt <= 3 terms (see :func:`combine_activate`)."""
    two = cnt >= 2
    three = cnt >= 3
    for j in range(out.shape[0]):
        out[j] = max(first_layer(F0, c0, F1, c1, F2, c2, two, three, j), 0.0)


@jit()
def combine_identity(cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = sum_t c_t F_t for 1 <= cnt <= 3 terms (see :func:`combine_activate`)."""
    two = cnt >= 2
    three = cnt >= 3
    for j in range(out.shape[0]):
        out[j] = first_layer(F0, c0, F1, c1, F2, c2, two, three, j)


@jit()
def combine_at(act, cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = f(sum_t c_t F_t) through ``elementwise.activate_at`` (leaky ReLU and the GELUs;
    ``act`` a compile-time constant in the fast path, so the dispatch folds away)."""
    two = cnt >= 2
    three = cnt >= 3
    scale = bits.view(np.float64)
    for j in range(out.shape[0]):
        z = first_layer(F0, c0, F1, c1, F2, c2, two, three, j)
        out[j] = activate_at(act, z, bits, scale, j)


@jit()
def combine_activate(act, cnt, F0, c0, F1, c1, F2, c2, out, bits):
    """out = f(sum_t c_t F_t) for 1 <= cnt <= 3 terms, fused into one vectorised pass.

    The first layer of :func:`span_block_hidden` for points with at most three non-zero
    coefficients (2D grids, slices, paths): forming the pre-activations in the activation's own
    loop saves writing and re-reading them, and the loads of F overlap the arithmetic of the
    activation. Same activation formulas as ``elementwise.activate_block``. One function per
    activation (``combine_tanh``, ...): the span kernel of one activation
    (:func:`task_kernel`) compiles only its own; this dispatcher calls the one for ``act``.

    Parameters
    ----------
    act, cnt : int
    F0, F1, F2 : (h,) float64
        Rows of F; F1 (F2) is read but unused when cnt < 2 (cnt < 3).
    c0, c1, c2 : float
    out : (h,) float64, written
    bits : (h,) int64, scratch
    """
    if act == TANH:
        combine_tanh(cnt, F0, c0, F1, c1, F2, c2, out, bits)
    elif act == SIGMOID:
        combine_sigmoid(cnt, F0, c0, F1, c1, F2, c2, out, bits)
    elif act == RELU:
        combine_relu(cnt, F0, c0, F1, c1, F2, c2, out, bits)
    elif act == LEAKY_RELU:
        combine_at(LEAKY_RELU, cnt, F0, c0, F1, c1, F2, c2, out, bits)
    elif act == GELU:
        combine_at(GELU, cnt, F0, c0, F1, c1, F2, c2, out, bits)
    elif act == GELU_TANH:
        combine_at(GELU_TANH, cnt, F0, c0, F1, c1, F2, c2, out, bits)
    else:
        combine_identity(cnt, F0, c0, F1, c1, F2, c2, out, bits)


@jit()
def first_layer_sum(nq, idx, val, Ff, base, nz, zf):
    """Step 1 of :func:`span_block_hidden` for points with 0 or more than 3 non-zero
    coefficients: ``zf[:nz] = sum_t val[t] Ff[idx[t], base:base + nz]``, one flat axpy per
    term. Slices, so that the loop index is the array index: no wraparound handling (gathers).
    """
    if nq == 0:
        for j in range(nz):
            zf[j] = 0.0
    else:
        Fk = Ff[idx[0], base : base + nz]
        c = val[0]
        for j in range(nz):
            zf[j] = c * Fk[j]
    for t in range(1, nq):
        Fk = Ff[idx[t], base : base + nz]
        c = val[t]
        for j in range(nz):
            zf[j] += c * Fk[j]


@jit()
def tile_outputs(th, a2, h1, n_out, ns4, zo):
    """Step 3 of :func:`span_block_hidden`: ``zo[o, s] = b_o + w_o . a2[s]`` for the ns4 samples
    of a tile (a multiple of 4), four samples and five outputs at a time (then two, then one):
    twenty independent dot products over the hidden units in one loop, each LLVM-vectorised
    (a weight is loaded once per four samples, an activation once per five outputs).

    Parameters
    ----------
    th : (n_out * h1 + n_out,) float64
        The point's output layer (W2 row-major, then b2).
    a2 : (S, h1) float64
        Activations of the tile's samples.
    h1, n_out, ns4 : int
    zo : (n_out, S) float64, written in columns 0 .. ns4 - 1
    """
    bias_off = n_out * h1
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


@jit()
def tile_loss_softmax_ce(zo, YT, labels, s0, ns, ns4, dexp, eexp, mx, arg, se, lse, sy, yz,
                         hbits, lossv):  # fmt: skip
    """Step 4 of :func:`span_block_hidden` for softmax-CE: per-sample losses of a tile into
    ``lossv[:ns]``, the sample index as the vector lane; returns the tile's hits.

    Max over outputs, the outputs' exps in one ``exp_neg_abs_block`` call, the log of the
    normaliser by ``log_block``. (One function per loss: the span kernel of one loss
    (:func:`task_kernel`) compiles only its own.)

    Parameters
    ----------
    zo : (n_out, S) float64
        Logits of the tile (columns 0 .. ns4 - 1).
    YT : (n_out, B) float64
        Targets of the block, transposed.
    labels : (B,) int64
    s0, ns, ns4 : int
        First sample of the tile in the block, its samples, rounded up to a multiple of 4.
    dexp, eexp : (n_out S,) float64, scratch
    mx, se, lse, sy, yz : (S,) float64, scratch
    arg : (S,) int64, scratch
    hbits : (n_out S,) int64, scratch
    lossv : (S,) float64, written
    """
    n_out = zo.shape[0]
    nh = 0
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
    return nh


@jit()
def tile_loss_logistic(zo, YT, s0, ns, ns4, eexp, hbits, lossv):
    """Step 4 of :func:`span_block_hidden` for the logistic loss (one output): per-sample
    losses by ``exp_neg_abs_block`` and ``log1p_unit``; returns the tile's hits (arguments as
    :func:`tile_loss_softmax_ce`)."""
    nh = 0
    exp_neg_abs_block(zo[0, :ns4], 1.0, 0.0, eexp[:ns4], hbits[:ns4])
    yrow = YT[0, s0 : s0 + ns]
    for s in range(ns):
        z = zo[0, s]
        y = yrow[s]
        lossv[s] = (max(z, 0.0) + log1p_unit(eexp[s])) - y * z
        nh += 1 if (z > 0.0) == (y > 0.5) else 0
    return nh


@jit()
def tile_loss_mse(zo, YT, s0, ns, lossv):
    """Step 4 of :func:`span_block_hidden` for MSE: per-sample sums of squared residuals
    (arguments as :func:`tile_loss_softmax_ce`)."""
    n_out = zo.shape[0]
    for s in range(ns):
        lossv[s] = 0.0
    for o in range(n_out):
        zrow = zo[o]
        yrow = YT[o, s0 : s0 + ns]
        for s in range(ns):
            r = zrow[s] - yrow[s]
            lossv[s] += r * r


@functools.cache
def task_kernel(act: int, loss_kind: int):
    """The compiled task of :func:`span_block_hidden` for one activation and one loss.

    ``act`` and ``loss_kind`` are constants of the returned kernel (closure cells: Numba
    prunes the branches of the other activations and losses before typing them, so a job
    compiles the code of its own model only; Numba's on-disk cache keys each kernel on their
    values). The kernel, ``span_task(coef, Ff, tail, YT, labels, lo, npts, S, h1, loss_out,
    hits_out)``, runs the points ``lo .. lo + npts - 1`` over every tile of the block and
    writes their sums into ``loss_out``/``hits_out`` (serial, its own scratch; ``Ff`` is F
    flattened to (K, B h1), ``S`` the tile, a multiple of 4).
    """
    act = int(act)
    loss_kind = int(loss_kind)

    @jit()
    def span_task(coef, Ff, tail, YT, labels, lo, npts, S, h1, loss_out, hits_out):
        K = coef.shape[1]
        B = Ff.shape[1] // h1
        n_out = YT.shape[0]
        P_tail = tail.shape[1]
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
        sy = np.empty(S)
        yz = np.empty(S)
        lossv = np.empty(S)
        point_tails(coef, tail, lo, idx, val, cnt, theta_t)
        for s0 in range(0, B, S):
            ns = min(S, B - s0)
            ns4 = ((ns + 3) // 4) * 4
            nz = ns * h1
            nz4 = ns4 * h1
            base = s0 * h1
            for q in range(npts):
                # steps 1-2: first layer and activation into af[:nz], zeros up to nz4; up
                # to three terms fused into the activation's loop, more summed into zf first
                # (then the activation of 1.0 * zf: the same formulas as activate_block)
                nq = cnt[q]
                if 1 <= nq <= 3:
                    iq = idx[q]
                    vq = val[q]
                    k0 = iq[0]
                    k1 = iq[1] if nq >= 2 else k0
                    k2 = iq[2] if nq >= 3 else k0
                    F0 = Ff[k0, base : base + nz]
                    F1 = Ff[k1, base : base + nz]
                    F2 = Ff[k2, base : base + nz]
                    c0 = vq[0]
                    c1 = vq[1] if nq >= 2 else 0.0
                    c2 = vq[2] if nq >= 3 else 0.0
                    nt = nq
                else:
                    first_layer_sum(nq, idx[q], val[q], Ff, base, nz, zf)
                    F0 = zf[:nz]
                    F1 = F0
                    F2 = F0
                    c0 = 1.0
                    c1 = 0.0
                    c2 = 0.0
                    nt = 1
                out = af[:nz]
                hb = hbits[:nz]
                if act == TANH:
                    combine_tanh(nt, F0, c0, F1, c1, F2, c2, out, hb)
                elif act == SIGMOID:
                    combine_sigmoid(nt, F0, c0, F1, c1, F2, c2, out, hb)
                elif act == RELU:
                    combine_relu(nt, F0, c0, F1, c1, F2, c2, out, hb)
                elif act == IDENTITY:
                    combine_identity(nt, F0, c0, F1, c1, F2, c2, out, hb)
                else:
                    combine_at(act, nt, F0, c0, F1, c1, F2, c2, out, hb)
                pad = af[nz:nz4]
                for j in range(nz4 - nz):
                    pad[j] = 0.0
                # step 3: output layer; step 4: the loss
                tile_outputs(theta_t[q], a2, h1, n_out, ns4, zo)
                if loss_kind == SOFTMAX_CE:
                    nh = tile_loss_softmax_ce(zo, YT, labels, s0, ns, ns4, dexp, eexp, mx, arg,
                                              se, lse, sy, yz, hbits, lossv)  # fmt: skip
                elif loss_kind == LOGISTIC:
                    nh = tile_loss_logistic(zo, YT, s0, ns, ns4, eexp, hbits, lossv)
                else:
                    tile_loss_mse(zo, YT, s0, ns, lossv)
                    nh = 0
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

    return span_task


def compile_steps(act: int, loss_kind: int, h1: int, n_out: int, part: str) -> None:
    """Compile part of :func:`task_kernel`'s callees, with the argument types its kernel
    passes them, by calling them on one 4-sample tile (for ``fastscape._warmup``).

    ``part="early"``: steps 1-2 (:func:`point_tails`, :func:`first_layer_sum`,
    ``combine_<act>``); ``part="late"``: steps 3-4 (:func:`tile_outputs`, ``tile_loss_<loss>``).
    Two processes compile one part each into the on-disk cache at the same time; the kernel,
    compiled after both, loads them from there (Numba compiles one function at a time per
    process). The surfaces are the same bits whichever process compiled a callee.
    """
    S = 4
    if part == "early":
        K = 3
        coef = np.ones((1, K))
        tail = np.zeros((K, n_out * h1 + n_out))
        idx = np.zeros((1, K), np.int64)
        val = np.zeros((1, K))
        cnt = np.zeros(1, np.int64)
        theta_t = np.zeros((1, tail.shape[1]))
        point_tails(coef, tail, 0, idx, val, cnt, theta_t)
        Ff = np.zeros((K, S * h1))
        zf = np.zeros(S * h1)
        first_layer_sum(K, idx[0], val[0], Ff, 0, S * h1, zf)
        hb = np.zeros(S * max(h1, n_out), np.int64)[: S * h1]
        F0 = Ff[0, : S * h1]
        # (the kernel calls combine_at with its activation as a constant, a type no call from
        # Python has: the other activations' combine is compiled with the kernel)
        combine = {TANH: combine_tanh, SIGMOID: combine_sigmoid, RELU: combine_relu,
                   IDENTITY: combine_identity}.get(act)  # fmt: skip
        if combine is not None:
            combine(1, F0, 1.0, F0, 0.0, F0, 0.0, zf, hb)
        return
    if part != "late":
        raise ValueError(f"part must be 'early' or 'late', got {part!r}")
    theta_t = np.zeros((1, n_out * h1 + n_out))
    a2 = np.zeros(S * h1).reshape((S, h1))
    zo = np.zeros((n_out, S))
    tile_outputs(theta_t[0], a2, h1, n_out, S, zo)
    YT = np.zeros((n_out, S))
    hbits = np.zeros(S * max(h1, n_out), np.int64)
    lossv = np.zeros(S)
    if loss_kind == SOFTMAX_CE:
        tile_loss_softmax_ce(zo, YT, np.zeros(S, np.int64), 0, S, S, np.zeros(n_out * S),
                             np.zeros(n_out * S), np.zeros(S), np.zeros(S, np.int64),
                             np.zeros(S), np.zeros(S), np.zeros(S), np.zeros(S), hbits,
                             lossv)  # fmt: skip
    elif loss_kind == LOGISTIC:
        tile_loss_logistic(zo, YT, 0, S, S, np.zeros(n_out * S), hbits, lossv)
    else:
        tile_loss_mse(zo, YT, 0, S, lossv)


def span_block_hidden(
    coef, F, tail, act, loss_kind, YT, labels, point_chunk, tile, loss_out, hits_out
):
    """Per-point loss and accuracy sums over one block of samples, one hidden layer.

    The fast path of ``kernels.span.span_block`` for ``sizes = (d, h1, out)``. Samples are
    processed in tiles of ``S`` (``tile`` rounded up to a multiple of 4) and each point of a
    chunk runs through the whole tile with array-wide, vectorised steps:

    1. first layer: ``Z[s, :] = sum_t c_t F[k_t, s, :]`` over the tile, one flat axpy per
       non-zero coefficient (``F[k, s0:s0 + S]`` is contiguous), and
    2. activation of the whole tile (:func:`tile_hidden`);
    3. output layer (:func:`tile_outputs`); padding samples up to a multiple of 4 are zero
       rows whose results are dropped;
    4. the loss with the sample index as the vector lane (:func:`tile_loss`).

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
    S = max(4, ((tile + 3) // 4) * 4)
    Ff = F.reshape((K, B * h1))

    span_task = task_kernel(act, loss_kind)

    def task(i: int) -> None:
        lo = i * point_chunk
        span_task(coef, Ff, tail, YT, labels, lo, min(m, lo + point_chunk) - lo, S, h1,
                  loss_out, hits_out)  # fmt: skip

    run_tasks(task, (m + point_chunk - 1) // point_chunk)
