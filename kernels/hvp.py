"""Hessian-vector products as an operator at a fixed theta: the pass at theta cached, every
product a BLAS call, the sample blocks in parallel.

A curvature solve (Lanczos, power iteration, Hutchinson, SLQ) multiplies the Hessian at ONE
theta by many vectors. Everything that depends on theta only is computed once by
:func:`forward_cache` (one compiled pass per sample block, :func:`forward_blocks`, writing its
block's slots directly, faster than NumPy on all samples plus the copies into the block layout;
the blocks run in a Numba ``prange``, each on single-threaded BLAS: on the digits MLP (two
blocks) this gained nothing measurable, on MLP 784-256-256-10 with n = 10 000 it is 1.5x
faster on 2 threads, with the same bits: ``bench/NOTES.md``):

- the layer inputs ``a_l`` of the hidden layers (twice: feature-major ``(h, n)`` for the R-forward
  products, sample-major ``(n, h)`` for the weight-gradient products; ``a_0 = X`` is not copied),
- ``f'(z_l)`` of every hidden layer,
- the back-propagated deltas ``delta_l`` of the MEAN loss (they carry the 1/n), l >= 1,
- ``T_l = f''(z_l) * (W_{l+1}^T delta_{l+1})``, the second-derivative factor of the R-backward
  pass,
- the output curvature: softmax probabilities ``p`` and ``s/n`` (``s`` = row sums of the
  targets), ``p (1 - p) / n`` for logistic, ``2 / n`` for MSE.

:func:`block_hvp` then applies Pearlmutter's R-operator to each vector (kernel
:func:`r_blocks`). With ``V_l`` / ``v_l`` the weight / bias parts of the vector at layer l and
the per-sample quantities as columns (feature-major, one column per sample of the block)::

    R z_l         = V_l a_l + W_l R a_l + v_l              two GEMMs (h_{l+1}, h_l) @ (h_l, nb)
    R a_{l+1}     = f'(z_l) * R z_l
    R delta_L     = (d2 loss / dz2) R z_L / n               per sample
    R dW_l        = R delta_l a_l^T + delta_l (R a_l)^T     two GEMMs (h_{l+1}, nb) @ (nb, h_l)
    R db_l        = sum over samples of R delta_l
    R delta_{l-1} = T_{l-1} * R z_{l-1} + f'(z_{l-1}) * (V_l^T delta_l + W_l^T R delta_l)

(the terms with ``R a_0`` and ``delta_0`` vanish). Per vector this is
``sum_l 2 h_l h_{l+1} (2 + 4 [l > 0])`` flops per sample: 21.6 MFLOP for MLP 64-32-10 on 1 797
samples. The whole pass of one (sample block, vector) task is ONE compiled function
(:func:`r_block`): the products are ``np.dot`` calls into BLAS from Numba (no Python between
them, no GIL), the elementwise work is fused into loops over the contiguous sample axis.
Feature-major arrays make the products short-and-wide, which OpenBLAS runs faster than the
sample-major ``(nb, 64) @ (64, 32)`` and ``(nb, 32) @ (32, 10)`` shapes of the previous
(Python-driven, sample-major) version of this module (``bench/NOTES.md``).

Threads. Samples are split into fixed blocks (``bounds``: ``(c n) // n_blocks`` with
``n_blocks = ceil(n / sample_block)``, a partition that depends only on n and ``sample_block``).
The tasks (block, vector) run in a Numba ``prange``, each on single-threaded BLAS, each with the
scratch row of the thread that runs it (fully overwritten before it is read); block 0 writes the
result, every other block its own partial row, and the partial rows are added in block order
after the parallel loop. Two reasons for single-threaded BLAS: (1) OpenBLAS's rounding depends
on its own thread count (a product can differ in the last bit between 1 and 2 OpenBLAS
threads); (2) a multithreaded BLAS call inside a parallel region oversubscribes the cores.

Determinism. Each vector is computed alone (its products do not share GEMM columns with other
vectors), so a row of the result is the same bit for bit whatever the other rows, the vector
chunking (``vec_chunk``), the Numba thread count and the BLAS thread count; only
``sample_block`` (which changes the sums over samples) changes the last bits.

float32. The working precision is the dtype of X (cast once by the backend): with a float32 X
the theta copy, the cache, the scratch and each pass's vectors are float32, so every product is
a single-precision BLAS call and the elementwise work runs in float32; the sums over samples
are accumulated in float64 across sample blocks (the partial rows, the result and the bias sums
``R db`` are float64), and a weight product sums the samples of one block in float32 (the
backend uses blocks of ``config.F32_SAMPLE_BLOCK`` samples). The product of a block goes to the
scratch ``GW`` and from there into the float64 row (in float64 too: the same bits as a product
written in place).

Memory: the blocks run in waves of ``WAVE`` (8) blocks, and a wave's partial rows are added to
the result before the next wave starts (in block order: the same sums, the same bits as one row
per block), so a vector needs at most ``WAVE * P`` doubles of partial rows whatever n (it was
``(n_blocks - 1) * P``: 125 MB per vector for the 269k-parameter MLP on 60 000 samples). They
bound the vectors per pass (``vec_chunk``, :func:`vec_chunk_for`); the per-thread scratch (R z, R a,
R delta and the products of one block: ``scratch_doubles``) and the partial rows are kept in
the cache between calls, because fresh large arrays cost a page fault per 4 KiB on first touch.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls this BLAS: load it first)
from numba import prange

from ._blas import serial_blas
from ._jit import jit
from .elementwise import SOFTMAX_CE, activate_derivatives, output_derivatives
from .layout import layout, n_params
from .penalty import add_l2_hvp

# ----------------------------------------------------------------------------- layout
# Kinds of the per-sample arrays kept at theta (``cache``, table ``coff[kind, layer]``), all
# stored block after block: block c of an array with s rows starts at ``off + s * lo_c``.
AT, AS, D1, TT, DT, CC, SS = range(7)
N_CACHE_KINDS = 7
# Kinds of a thread's scratch (``scratch[thread]``, table ``soff[kind, layer]``).
RZ, RA, RD, TF, TB1, TB2, G2, PR, GW = range(9)
N_SCRATCH_KINDS = 9


@jit()
def fm_view(buf, off, lo, s, nb):
    """Block of samples lo .. lo + nb of a per-sample array with s rows, feature-major (s, nb)."""
    return buf[off + s * lo : off + s * (lo + nb)].reshape((s, nb))


@jit()
def sm_view(buf, off, lo, s, nb):
    """The same block of a sample-major array: (nb, s)."""
    return buf[off + s * lo : off + s * (lo + nb)].reshape((nb, s))


@jit()
def layer_affine(theta, sizes, w_off, b_off, l, Xb, cache, a_off, lo, out):
    """``out = W_l a_l + b_l``, feature-major (s_{l+1}, nb), for a block of nb samples:
    ``a_0`` is the block's inputs ``Xb`` (nb, d), a later ``a_l`` is read from ``cache`` at
    offset ``a_off`` (feature-major, from sample ``lo``). The pass at theta of the HVP and of
    the GGN products."""
    s0, s1 = sizes[l], sizes[l + 1]
    nb = Xb.shape[0]
    W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
    b = theta[b_off[l] : b_off[l] + s1]
    if l == 0:
        np.dot(W, Xb.T, out)
    else:
        np.dot(W, fm_view(cache, a_off, lo, s0, nb), out)
    for j in range(s1):
        bj = b[j]
        oj = out[j]
        for i in range(nb):
            oj[i] += bj


# ----------------------------------------------------------------------------- R-operator
@jit(reassoc=False)
def finish_rz(Rz, Tf, has_tf, vb, Fd1, hidden, Ra):
    """R z += v_b (+ Tf), and for a hidden layer R a = f'(z) R z; all (h, nb) but vb (h,)."""
    h, nb = Rz.shape
    for j in range(h):
        bj = vb[j]
        if has_tf:
            for i in range(nb):
                Rz[j, i] += bj + Tf[j, i]
        else:
            for i in range(nb):
                Rz[j, i] += bj
        if hidden:
            for i in range(nb):
                Ra[j, i] = Fd1[j, i] * Rz[j, i]


@jit(reassoc=False)
def r_block(v, theta, sizes, w_off, b_off, loss_kind, Xb, lo, cache, coff, scr, soff, dst):
    """H v restricted to one block of samples (their share of the mean loss), into dst (P,).

    Feature-major R-forward and R-backward passes (module docstring); every product is one
    BLAS call (``np.dot``), the elementwise work is fused into short loops over the samples.
    """
    L = sizes.size - 1
    nb = Xb.shape[0]
    # R-forward: R z_l = V_l a_l + W_l R a_l + v_l ; R a_{l+1} = f'(z_l) R z_l
    for l in range(L):
        s0, s1 = sizes[l], sizes[l + 1]
        Vl = v[w_off[l] : b_off[l]].reshape((s1, s0))
        vb = v[b_off[l] : b_off[l] + s1]
        Rz = fm_view(scr, soff[RZ, l], 0, s1, nb)
        Tf = Rz  # unused for l = 0
        if l == 0:
            np.dot(Vl, Xb.T, Rz)
        else:
            np.dot(Vl, fm_view(cache, coff[AT, l], lo, s0, nb), Rz)
            Tf = fm_view(scr, soff[TF, l], 0, s1, nb)
            W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
            np.dot(W, fm_view(scr, soff[RA, l - 1], 0, s0, nb), Tf)
        hidden = l < L - 1
        Fd1 = Rz  # unused for the output layer
        Ra = Rz
        if hidden:
            Fd1 = fm_view(cache, coff[D1, l], lo, s1, nb)
            Ra = fm_view(scr, soff[RA, l], 0, s1, nb)
        finish_rz(Rz, Tf, l > 0, vb, Fd1, hidden, Ra)
    # output: R delta = (d2 mean loss / dz2) R z
    s1 = sizes[L]
    Rz = fm_view(scr, soff[RZ, L - 1], 0, s1, nb)
    Rd = fm_view(scr, soff[RD, L - 1], 0, s1, nb)
    Cf = fm_view(cache, coff[CC, 0], lo, s1, nb)
    if loss_kind == SOFTMAX_CE:
        Sf = fm_view(cache, coff[SS, 0], lo, 1, nb)
        pr = fm_view(scr, soff[PR, 0], 0, 1, nb)
        for i in range(nb):
            pr[0, i] = 0.0
        for o in range(s1):
            for i in range(nb):
                pr[0, i] += Cf[o, i] * Rz[o, i]
        for o in range(s1):
            acc = 0.0
            for i in range(nb):
                r = Sf[0, i] * Cf[o, i] * (Rz[o, i] - pr[0, i])
                Rd[o, i] = r
                acc += r
            dst[b_off[L - 1] + o] = acc
    else:
        for o in range(s1):
            acc = 0.0
            for i in range(nb):
                r = Cf[o, i] * Rz[o, i]
                Rd[o, i] = r
                acc += r
            dst[b_off[L - 1] + o] = acc
    # R-backward: R dW_l = R delta_l a_l^T + delta_l (R a_l)^T ; R db_l = sum_i R delta_l
    # (the sums R db_l are taken where R delta_l is formed)
    # R delta_{l-1} = T R z_{l-1} + f'(z_{l-1}) (V_l^T delta_l + W_l^T R delta_l)
    for l in range(L - 1, -1, -1):
        s0, s1 = sizes[l], sizes[l + 1]
        Rd = fm_view(scr, soff[RD, l], 0, s1, nb)
        # the products in the working precision (scratch Gs), their sum into dst (float64)
        G = dst[w_off[l] : b_off[l]].reshape((s1, s0))
        Gs = fm_view(scr, soff[GW, 0], 0, s1, s0)
        if l == 0:
            np.dot(Rd, Xb, Gs)
            for j in range(s1):
                for q in range(s0):
                    G[j, q] = Gs[j, q]
        else:
            np.dot(Rd, sm_view(cache, coff[AS, l], lo, s0, nb), Gs)
            Df = fm_view(cache, coff[DT, l], lo, s1, nb)
            G2m = fm_view(scr, soff[G2, l], 0, s1, s0)
            np.dot(Df, fm_view(scr, soff[RA, l - 1], 0, s0, nb).T, G2m)
            for j in range(s1):
                for q in range(s0):
                    G[j, q] = Gs[j, q] + G2m[j, q]
        if l > 0:
            Vl = v[w_off[l] : b_off[l]].reshape((s1, s0))
            W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
            Df = fm_view(cache, coff[DT, l], lo, s1, nb)
            Tb1 = fm_view(scr, soff[TB1, l], 0, s0, nb)
            Tb2 = fm_view(scr, soff[TB2, l], 0, s0, nb)
            np.dot(Vl.T, Df, Tb1)
            np.dot(W.T, Rd, Tb2)
            T = fm_view(cache, coff[TT, l - 1], lo, s0, nb)
            Fd1 = fm_view(cache, coff[D1, l - 1], lo, s0, nb)
            Rzp = fm_view(scr, soff[RZ, l - 1], 0, s0, nb)
            Rdp = fm_view(scr, soff[RD, l - 1], 0, s0, nb)
            for j in range(s0):
                acc = 0.0
                for i in range(nb):
                    r = T[j, i] * Rzp[j, i] + Fd1[j, i] * (Tb1[j, i] + Tb2[j, i])
                    Rdp[j, i] = r
                    acc += r
                dst[b_off[l - 1] + j] = acc  # R db_{l-1}


@jit(parallel=True, reassoc=False)
def r_blocks(V, theta, sizes, w_off, b_off, loss_kind, X, bounds, cache, coff, scratch, soff,
             out, part, wave):  # fmt: skip
    """H V[k] for the K rows of V: one task per (sample block, vector), in parallel, ``wave``
    blocks at a time; block 0 writes ``out``, every other block of a wave a slot of ``part``
    (``part[cc - 1]`` in the first wave, ``part[cc]`` in the others, cc the block's place in
    its wave), and after each wave its slots are added to ``out`` in block order: ``out`` gets
    the blocks' rows added one after the other in block order, the same sums as with one slot
    per block, with ``min(wave, n_blocks - 1)`` slots per vector whatever n.

    ``scratch`` has one row per thread (``numba.get_num_threads()`` rows); a task uses the row
    of the thread that runs it, which it overwrites before reading, so who runs a task does not
    change its result.
    """
    K = V.shape[0]
    nbk = bounds.size - 1
    P = out.shape[1]
    for w0 in range(0, nbk, wave):
        nw = min(nbk, w0 + wave) - w0
        shift = 1 if w0 == 0 else 0  # block 0 writes out: the first wave's slots start at 1
        for t in prange(nw * K):
            cc = t // K
            k = t - cc * K
            c = w0 + cc
            lo, hi = bounds[c], bounds[c + 1]
            dst = out[k] if c == 0 else part[cc - shift, k]
            r_block(V[k], theta, sizes, w_off, b_off, loss_kind, X[lo:hi], lo, cache, coff,
                    scratch[numba.get_thread_id()], soff, dst)  # fmt: skip
        for cc in range(shift, nw):
            for k in range(K):
                for p in range(P):
                    out[k, p] += part[cc - shift, k, p]


# ----------------------------------------------------------------------------- driver
class HVPCache(NamedTuple):
    """The pass at theta and the tables of :func:`r_blocks` (see the module docstring).

    Attributes
    ----------
    theta : (P,) array
        A private copy, in the working precision (the dtype of X).
    sizes, w_off, b_off : (L+1,), (L,), (L,) int64 arrays
        Layer sizes and the offsets of ``W_l`` and ``b_l`` in theta.
    X : (n, d) array
    loss_kind : int
    bounds : (n_blocks + 1,) int64 array
        Fixed sample blocks.
    cache : (m,) array
        The per-sample arrays at theta, block after block (table ``coff``), in the working
        precision.
    coff : (7, L) int64 array
    soff : (8, L) int64 array
        Offsets in a thread's scratch row (sized for the largest block).
    scratch_doubles : int
        Length of a thread's scratch row.
    n_blocks : int
    work : dict
        Scratch kept between calls: ``"scratch"`` (threads, scratch_doubles) and ``"part"``
        (flat partial rows).
    lock : threading.Lock
        Held by :func:`block_hvp` (the scratch is shared): one call at a time per cache.
    penalty : (P,) array or None
        Weights of the L2 term (``kernels.penalty.l2_vector``): ``H v`` gains ``penalty * v``.
    """

    theta: np.ndarray
    sizes: np.ndarray
    w_off: np.ndarray
    b_off: np.ndarray
    X: np.ndarray
    loss_kind: int
    bounds: np.ndarray
    cache: np.ndarray
    coff: np.ndarray
    soff: np.ndarray
    scratch_doubles: int
    n_blocks: int
    work: dict
    lock: object
    penalty: np.ndarray | None = None


def _offset_table(n_kinds, L, entries):
    """Consecutive offsets in one flat buffer: ``entries`` is (kind, layer, length) in buffer
    order; returns the (n_kinds, L) offset table (-1 where absent) and the total length."""
    table = np.full((n_kinds, L), -1, dtype=np.int64)
    o = 0
    for kind, l, length in entries:
        table[kind, l] = o
        o += length
    return table, o


def _cache_table(sizes, n):
    """Offsets (7, L) of the per-sample arrays at theta, and the total length."""
    L = len(sizes) - 1
    entries = []
    for l in range(1, L):
        entries += [(AT, l, sizes[l] * n), (AS, l, sizes[l] * n), (DT, l, sizes[l + 1] * n)]
    for l in range(L - 1):
        entries += [(D1, l, sizes[l + 1] * n), (TT, l, sizes[l + 1] * n)]
    entries += [(CC, 0, sizes[L] * n), (SS, 0, n)]
    return _offset_table(N_CACHE_KINDS, L, entries)


def _scratch_table(sizes, nb):
    """Offsets (8, L) of a thread's scratch arrays for blocks of at most nb samples, and its
    length."""
    L = len(sizes) - 1
    entries = []
    for l in range(L):
        h_in, h = sizes[l], sizes[l + 1]
        entries += [(RZ, l, h * nb), (RD, l, h * nb)]
        if l < L - 1:
            entries.append((RA, l, h * nb))
        if l > 0:
            entries += [(TF, l, h * nb), (TB1, l, h_in * nb), (TB2, l, h_in * nb)]
            entries.append((G2, l, h * h_in))
    entries.append((PR, 0, nb))
    entries.append((GW, 0, max(sizes[l] * sizes[l + 1] for l in range(L))))
    return _offset_table(N_SCRATCH_KINDS, L, entries)


def sample_bounds(n: int, sample_block: int) -> np.ndarray:
    """The fixed sample blocks: ``(c n) // n_blocks`` for c = 0 .. n_blocks, with
    ``n_blocks = ceil(n / sample_block)`` (at most n)."""
    nbk = min(n, max(1, -(-n // max(1, int(sample_block)))))
    return np.array([(c * n) // nbk for c in range(nbk + 1)], dtype=np.int64)


@jit(parallel=True)
def forward_blocks(theta, sizes, w_off, b_off, act, loss_kind, X, Y, bounds, cache, coff):
    """The pass at theta, written block by block into ``cache`` (the layout of
    :func:`forward_cache`); the blocks in parallel (each writes its own slots only, so the
    result does not depend on the thread count), products by single-threaded BLAS.

    Hidden layer l: ``z = W_l a_l + b_l`` is formed in the slot of ``a_{l+1}`` (feature-major)
    and activated there, f' goes to ``D1`` and f'' to ``TT`` (which the backward pass then
    multiplies by ``W_{l+1}^T delta_{l+1}``). The output deltas carry the 1/n of the mean loss.
    """
    L = sizes.size - 1
    n = X.shape[0]
    inv_n = 1.0 / n
    for c in prange(bounds.size - 1):
        lo, hi = bounds[c], bounds[c + 1]
        nb = hi - lo
        Xb = X[lo:hi]
        bits = np.empty(nb, np.int64)
        for l in range(L - 1):
            s1 = sizes[l + 1]
            Z = fm_view(cache, coff[AT, l + 1], lo, s1, nb)
            layer_affine(theta, sizes, w_off, b_off, l, Xb, cache, coff[AT, l], lo, Z)
            Fd1 = fm_view(cache, coff[D1, l], lo, s1, nb)
            Fd2 = fm_view(cache, coff[TT, l], lo, s1, nb)
            activate_derivatives(act, Z, Fd1, Fd2, bits)
            AS_ = sm_view(cache, coff[AS, l + 1], lo, s1, nb)
            for i in range(nb):
                for j in range(s1):
                    AS_[i, j] = Z[j, i]
        s1 = sizes[L]
        Zo = np.empty((s1, nb), cache.dtype)
        layer_affine(theta, sizes, w_off, b_off, L - 1, Xb, cache, coff[AT, L - 1], lo, Zo)
        if L == 1:
            delta = np.empty((s1, nb), cache.dtype)
        else:
            delta = fm_view(cache, coff[DT, L - 1], lo, s1, nb)
        output_derivatives(loss_kind, Zo, Y[lo:hi], inv_n, delta,
                           fm_view(cache, coff[CC, 0], lo, s1, nb),
                           fm_view(cache, coff[SS, 0], lo, 1, nb), bits)  # fmt: skip
        for l in range(L - 1, 0, -1):
            s0, s1 = sizes[l], sizes[l + 1]
            W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
            Bk = np.empty((s0, nb), cache.dtype)
            np.dot(W.T, fm_view(cache, coff[DT, l], lo, s1, nb), Bk)
            Fd1 = fm_view(cache, coff[D1, l - 1], lo, s0, nb)
            T = fm_view(cache, coff[TT, l - 1], lo, s0, nb)
            has_delta = l - 1 >= 1
            Dp = fm_view(cache, coff[DT, l - 1], lo, s0, nb) if has_delta else Bk
            for j in range(s0):
                for i in range(nb):
                    bv = Bk[j, i]
                    T[j, i] *= bv
                    if has_delta:
                        Dp[j, i] = bv * Fd1[j, i]


def forward_cache(theta, sizes, act, loss_kind, X, Y, sample_block, penalty=None) -> HVPCache:
    """The pass at theta, kept for :func:`block_hvp` (BLAS single-threaded).

    Parameters
    ----------
    theta : (P,) float64
    sizes : (L+1,) int64
    act, loss_kind : int
        Codes of ``kernels.mlp``.
    X : (n, d) C-contiguous float64 or float32
        Its dtype is the working precision (module docstring, "float32").
    Y : (n, out) C-contiguous float64
    sample_block : int
        Largest sample block; the blocks are ``ceil(n / sample_block)`` fixed slices.
    penalty : (P,) float64, optional
        Weights of the L2 term (``kernels.penalty.l2_vector``); None: no L2 term.

    Returns
    -------
    HVPCache
    """
    sizes_t = tuple(int(s) for s in sizes)
    sizes = np.asarray(sizes_t, dtype=np.int64)
    n = X.shape[0]
    w_off, b_off, _ = layout(sizes)
    theta = np.array(theta, dtype=X.dtype)  # a private copy, in the working precision
    bounds = sample_bounds(n, sample_block)
    coff, total = _cache_table(sizes_t, n)
    soff, per_thread = _scratch_table(sizes_t, int(np.diff(bounds).max()))
    cache = np.empty(total, X.dtype)
    with serial_blas():
        forward_blocks(theta, sizes, w_off, b_off, int(act), int(loss_kind), X, Y, bounds, cache,
                       coff)  # fmt: skip
    return HVPCache(
        theta, sizes, w_off, b_off, X, int(loss_kind), bounds, cache, coff, soff, per_thread,
        bounds.size - 1, {}, threading.Lock(), penalty,
    )  # fmt: skip


#: Sample blocks per wave of :func:`r_blocks` (the partial rows kept per vector); the result
#: does not depend on it.
WAVE = 8


def partial_slots(n_blocks: int, wave: int = WAVE) -> int:
    """Partial rows per vector of a pass: ``n_blocks - 1`` up to one wave, ``wave`` beyond."""
    n_blocks, wave = int(n_blocks), max(1, int(wave))
    return n_blocks - 1 if n_blocks <= wave else wave


def scratch_per_vector(sizes, n_blocks: int, wave: int = WAVE) -> int:
    """Bytes one vector of a pass needs beyond the fixed scratch: its partial rows,
    ``8 P partial_slots(n_blocks, wave)`` (bounded by ``8 P wave`` whatever n)."""
    P = n_params(sizes)
    return 8 * P * partial_slots(n_blocks, wave)


def vec_chunk_for(cache: HVPCache, scratch_bytes: int, wave: int = WAVE) -> int:
    """Vectors per pass of :func:`block_hvp` whose partial rows fit in ``scratch_bytes`` (at
    least 1; with one sample block there are none and every vector goes in one pass).

    Parameters
    ----------
    cache : HVPCache
    scratch_bytes : int
    wave : int
        Sample blocks per wave (:func:`r_blocks`).

    Returns
    -------
    int
    """
    per = scratch_per_vector(cache.sizes, cache.n_blocks, wave)
    if per == 0:
        return 1 << 30
    return max(1, int(scratch_bytes) // per)


def block_hvp(cache: HVPCache, V, vec_chunk: int, workers: int = 1, wave: int = WAVE) -> np.ndarray:
    """Hessian-vector products ``H @ V[k]`` of the mean loss at the cached theta.

    Parameters
    ----------
    cache : HVPCache
        From :func:`forward_cache`.
    V : (K, P) C-contiguous float64
        Cast to the working precision (the cache's) pass by pass.
    vec_chunk : int
        Vectors per pass (bounds the partial rows: :func:`vec_chunk_for`).
    workers : int
        Numba threads that run the (sample block, vector) tasks (at most Numba's thread pool).
        Speed only: the result is the same bit for bit for any value.
    wave : int
        Sample blocks per wave (:func:`r_blocks`): memory and speed only, the same bits for any
        value.

    Returns
    -------
    (K, P) float64
    """
    K, P = V.shape
    out = np.empty((K, P))
    wdt = cache.cache.dtype
    step = max(1, min(int(vec_chunk), K))
    workers = max(1, min(int(workers), numba.config.NUMBA_NUM_THREADS))
    nbk = cache.n_blocks
    wave = max(1, int(wave))
    slots = partial_slots(nbk, wave)
    with cache.lock, serial_blas():
        scratch = cache.work.get("scratch")
        if scratch is None or scratch.shape[0] < workers:
            scratch = cache.work["scratch"] = np.empty((workers, cache.scratch_doubles), wdt)
        need = slots * step * P
        part = cache.work.get("part")
        if part is None or part.size < need:
            part = cache.work["part"] = np.empty(max(need, 1))
        previous = numba.get_num_threads()
        if previous != workers:
            numba.set_num_threads(workers)
        try:
            for k0 in range(0, K, step):
                k1 = min(K, k0 + step)
                Vw = V[k0:k1] if V.dtype == wdt else V[k0:k1].astype(wdt)
                r_blocks(
                    Vw, cache.theta, cache.sizes, cache.w_off, cache.b_off,
                    cache.loss_kind, cache.X, cache.bounds, cache.cache, cache.coff, scratch,
                    cache.soff, out[k0:k1], part[: slots * (k1 - k0) * P].reshape(
                        slots, k1 - k0, P), wave,
                )  # fmt: skip
        finally:
            if previous != workers:
                numba.set_num_threads(previous)
    if cache.penalty is not None:
        add_l2_hvp(out, V, cache.penalty)
    return out
