"""Gauss-Newton (GGN) and empirical-Fisher products at a fixed theta.

Two curvature matrices of the mean loss ``(1/n) Σ_i ℓ_i(f(x_i; θ))`` besides the Hessian, with
``J_i = ∂f(x_i)/∂θ`` (out, P) the Jacobian of sample i's outputs (logits), ``H_i = ∂²ℓ_i/∂f²``
(out, out) the loss's curvature in the outputs and ``g_i = J_iᵀ ∂ℓ_i/∂f`` its gradient:

- GGN ``G = (1/n) Σ_i J_iᵀ H_i J_i`` (+ ``diag(r)``, the L2 term's Hessian, added by the
  driver: ``H = G + R`` with R the part of the Hessian that carries the network's own second
  derivatives);
- empirical Fisher ``F = (1/n) Σ_i g_i g_iᵀ`` of the per-sample data-loss gradients (no L2
  term: the penalty is no per-sample quantity).

:func:`forward_cache` computes, once per theta, sample block after sample block (the fixed
blocks of :func:`fastscape.kernels.hvp.sample_bounds`), every layer input ``a_l`` (l >= 1,
feature-major), ``f'(z_l)`` of the hidden layers, the output curvature of the per-sample loss
(softmax-CE: the probabilities p and ``s = Σ_o y_o``; logistic: ``p (1 - p)``; MSE: 2) from
:func:`fastscape.kernels.elementwise.output_derivatives`, and, for the Fisher, the per-sample
deltas ``δ_l = ∂ℓ_i/∂z_l`` of every layer. Feature-major (one column per sample), block after
block, as in ``kernels/hvp.py`` (whose views :func:`fm_view` and helpers this module imports).

Per vector v (weight part ``V_l``, bias part ``v_l`` of layer l) and sample block::

    GGN:    R z_l = V_l a_l + W_l R a_l + v_l,  R a_{l+1} = f'(z_l) R z_l     (J v)
            u     = H_i R z_L                                                  (H_ℓ J v)
            u_{l-1} = f'(z_{l-1}) (W_lᵀ u_l),  G_W_l += u_l a_lᵀ,  G_b_l += Σ_i u_l   (Jᵀ u)
    Fisher: s_i   = Σ_l δ_lᵀ (V_l a_l + v_l)                                   (g_iᵀ v)
            F_W_l += (δ_l s) a_lᵀ,  F_b_l += Σ_i δ_l s_i

so a GGN product has no second-order terms (per layer l > 0 four matrix products against the
Hessian-vector product's six) and a Fisher product one GEMM pair per layer. The result is
multiplied by 1/n at the end.

Threads, determinism and memory follow ``kernels/hvp.py``: one task per (sample block,
vector) in a ``prange``, single-threaded BLAS, a per-thread scratch row overwritten before it is
read, block 0 writing the result and the other blocks partial rows added in block order; a
row of the result does not depend on the thread count, the other rows or the vector chunking.
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
from .hvp import fm_view, layer_affine, sample_bounds
from .layout import layout, n_params
from .penalty import add_l2_hvp

GGN, FISHER = 0, 1

# Kinds of the per-sample arrays kept at theta (table ``coff[kind, layer]``), block after block.
AT, D1, CC, SS, DL = range(5)
N_CACHE_KINDS = 5
# Kinds of a thread's scratch (table ``soff[kind, layer]``).
RZ, RA, RD, PR = range(4)
N_SCRATCH_KINDS = 4


def _table(n_kinds, L, entries):
    """Offsets (n_kinds, L) of consecutive (kind, layer, length) entries; -1 where absent."""
    table = np.full((n_kinds, L), -1, dtype=np.int64)
    o = 0
    for kind, l, length in entries:
        table[kind, l] = o
        o += length
    return table, o


def cache_table(sizes, n, deltas):
    """Offsets (5, L) of the per-sample arrays at theta and their total length."""
    L = len(sizes) - 1
    entries = [(AT, l, sizes[l] * n) for l in range(1, L)]
    entries += [(D1, l, sizes[l + 1] * n) for l in range(L - 1)]
    entries += [(CC, 0, sizes[L] * n), (SS, 0, n)]
    if deltas:
        entries += [(DL, l, sizes[l + 1] * n) for l in range(L)]
    return _table(N_CACHE_KINDS, L, entries)


def scratch_table(sizes, nb):
    """Offsets (4, L) of a thread's scratch for blocks of at most nb samples, and its length."""
    L = len(sizes) - 1
    entries = []
    for l in range(L):
        h = sizes[l + 1]
        entries += [(RZ, l, h * nb), (RD, l, h * nb)]
        if l < L - 1:
            entries.append((RA, l, h * nb))
    entries.append((PR, 0, nb))
    return _table(N_SCRATCH_KINDS, L, entries)


@jit()
def forward_blocks(theta, sizes, w_off, b_off, act, loss_kind, X, Y, bounds, cache, coff,
                   deltas):  # fmt: skip
    """The pass at theta, block after block, into ``cache`` (per-sample loss: no 1/n).

    Hidden layer l: ``z = W_l a_l + b_l`` is formed in the slot of ``a_{l+1}`` and activated
    there, f' goes to ``D1``. The output layer's derivatives go to ``CC``/``SS`` and, with
    ``deltas``, the per-sample deltas of every layer to ``DL`` (back-propagated through
    ``W_lᵀ`` and f').
    """
    L = sizes.size - 1
    for c in range(bounds.size - 1):
        lo, hi = bounds[c], bounds[c + 1]
        nb = hi - lo
        Xb = X[lo:hi]
        bits = np.empty(nb, np.int64)
        for l in range(L - 1):
            s1 = sizes[l + 1]
            Z = fm_view(cache, coff[AT, l + 1], lo, s1, nb)
            layer_affine(theta, sizes, w_off, b_off, l, Xb, cache, coff[AT, l], lo, Z)
            F2 = np.empty((s1, nb))
            activate_derivatives(act, Z, fm_view(cache, coff[D1, l], lo, s1, nb), F2, bits)
        s1 = sizes[L]
        Zo = np.empty((s1, nb))
        layer_affine(theta, sizes, w_off, b_off, L - 1, Xb, cache, coff[AT, L - 1], lo, Zo)
        delta = fm_view(cache, coff[DL, L - 1], lo, s1, nb) if deltas else np.empty((s1, nb))
        output_derivatives(loss_kind, Zo, Y[lo:hi], 1.0, delta,
                           fm_view(cache, coff[CC, 0], lo, s1, nb),
                           fm_view(cache, coff[SS, 0], lo, 1, nb), bits)  # fmt: skip
        if deltas:
            for l in range(L - 1, 0, -1):
                s0, s1 = sizes[l], sizes[l + 1]
                W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
                Dp = fm_view(cache, coff[DL, l - 1], lo, s0, nb)
                np.dot(W.T, fm_view(cache, coff[DL, l], lo, s1, nb), Dp)
                Fd1 = fm_view(cache, coff[D1, l - 1], lo, s0, nb)
                for j in range(s0):
                    for i in range(nb):
                        Dp[j, i] *= Fd1[j, i]


@jit()
def ggn_block(v, theta, sizes, w_off, b_off, loss_kind, Xb, lo, cache, coff, scr, soff, dst):
    """``Σ_i J_iᵀ H_i J_i v`` over one block of samples, into dst (P,) (module docstring)."""
    L = sizes.size - 1
    nb = Xb.shape[0]
    for l in range(L):
        s0, s1 = sizes[l], sizes[l + 1]
        Vl = v[w_off[l] : b_off[l]].reshape((s1, s0))
        vb = v[b_off[l] : b_off[l] + s1]
        Rz = fm_view(scr, soff[RZ, l], 0, s1, nb)
        if l == 0:
            np.dot(Vl, Xb.T, Rz)
        else:
            np.dot(Vl, fm_view(cache, coff[AT, l], lo, s0, nb), Rz)
            Tb = fm_view(scr, soff[RD, l], 0, s1, nb)  # free until the backward pass
            W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
            np.dot(W, fm_view(scr, soff[RA, l - 1], 0, s0, nb), Tb)
            for j in range(s1):
                for i in range(nb):
                    Rz[j, i] += Tb[j, i]
        for j in range(s1):
            bj = vb[j]
            for i in range(nb):
                Rz[j, i] += bj
        if l < L - 1:
            Fd1 = fm_view(cache, coff[D1, l], lo, s1, nb)
            Ra = fm_view(scr, soff[RA, l], 0, s1, nb)
            for j in range(s1):
                for i in range(nb):
                    Ra[j, i] = Fd1[j, i] * Rz[j, i]
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
            for i in range(nb):
                Rd[o, i] = Sf[0, i] * Cf[o, i] * (Rz[o, i] - pr[0, i])
    else:
        for o in range(s1):
            for i in range(nb):
                Rd[o, i] = Cf[o, i] * Rz[o, i]
    for l in range(L - 1, -1, -1):
        s0, s1 = sizes[l], sizes[l + 1]
        Rd = fm_view(scr, soff[RD, l], 0, s1, nb)
        G = dst[w_off[l] : b_off[l]].reshape((s1, s0))
        if l == 0:
            np.dot(Rd, Xb, G)
        else:
            np.dot(Rd, fm_view(cache, coff[AT, l], lo, s0, nb).T, G)
        for j in range(s1):
            acc = 0.0
            for i in range(nb):
                acc += Rd[j, i]
            dst[b_off[l] + j] = acc
        if l > 0:
            W = theta[w_off[l] : b_off[l]].reshape((s1, s0))
            Rdp = fm_view(scr, soff[RD, l - 1], 0, s0, nb)
            np.dot(W.T, Rd, Rdp)
            Fd1 = fm_view(cache, coff[D1, l - 1], lo, s0, nb)
            for j in range(s0):
                for i in range(nb):
                    Rdp[j, i] *= Fd1[j, i]


@jit()
def fisher_block(v, theta, sizes, w_off, b_off, loss_kind, Xb, lo, cache, coff, scr, soff, dst):
    """``Σ_i g_i (g_iᵀ v)`` over one block of samples, into dst (P,) (module docstring)."""
    L = sizes.size - 1
    nb = Xb.shape[0]
    s = fm_view(scr, soff[PR, 0], 0, 1, nb)[0]
    for i in range(nb):
        s[i] = 0.0
    for l in range(L):
        s0, s1 = sizes[l], sizes[l + 1]
        Vl = v[w_off[l] : b_off[l]].reshape((s1, s0))
        vb = v[b_off[l] : b_off[l] + s1]
        U = fm_view(scr, soff[RZ, l], 0, s1, nb)
        if l == 0:
            np.dot(Vl, Xb.T, U)
        else:
            np.dot(Vl, fm_view(cache, coff[AT, l], lo, s0, nb), U)
        D = fm_view(cache, coff[DL, l], lo, s1, nb)
        for j in range(s1):
            bj = vb[j]
            for i in range(nb):
                s[i] += D[j, i] * (U[j, i] + bj)
    for l in range(L):
        s0, s1 = sizes[l], sizes[l + 1]
        D = fm_view(cache, coff[DL, l], lo, s1, nb)
        Ds = fm_view(scr, soff[RD, l], 0, s1, nb)
        for j in range(s1):
            acc = 0.0
            for i in range(nb):
                r = D[j, i] * s[i]
                Ds[j, i] = r
                acc += r
            dst[b_off[l] + j] = acc
        G = dst[w_off[l] : b_off[l]].reshape((s1, s0))
        if l == 0:
            np.dot(Ds, Xb, G)
        else:
            np.dot(Ds, fm_view(cache, coff[AT, l], lo, s0, nb).T, G)


@jit(parallel=True)
def products(kind, V, theta, sizes, w_off, b_off, loss_kind, X, bounds, cache, coff, scratch,
             soff, out, part):  # fmt: skip
    """GGN (``kind`` = GGN) or Fisher (FISHER) products of the K rows of V, summed over the
    samples (no 1/n): one task per (sample block, vector), block 0 into ``out``, block c > 0
    into ``part[c - 1]``, then the blocks added in order."""
    K = V.shape[0]
    nbk = bounds.size - 1
    for t in prange(nbk * K):
        c = t // K
        k = t - c * K
        lo, hi = bounds[c], bounds[c + 1]
        dst = out[k] if c == 0 else part[c - 1, k]
        scr = scratch[numba.get_thread_id()]
        if kind == GGN:
            ggn_block(V[k], theta, sizes, w_off, b_off, loss_kind, X[lo:hi], lo, cache, coff,
                      scr, soff, dst)  # fmt: skip
        else:
            fisher_block(V[k], theta, sizes, w_off, b_off, loss_kind, X[lo:hi], lo, cache,
                         coff, scr, soff, dst)  # fmt: skip
    P = out.shape[1]
    for c in range(1, nbk):
        for k in range(K):
            for p in range(P):
                out[k, p] += part[c - 1, k, p]


# ----------------------------------------------------------------------------- driver
class CurvatureCache(NamedTuple):
    """The pass at theta for :func:`block_products` (module docstring).

    Attributes
    ----------
    kind : int
        GGN or FISHER.
    theta : (P,) array
        A private copy.
    sizes, w_off, b_off : (L+1,), (L,), (L,) int64 arrays
    X : (n, d) array
    loss_kind : int
    bounds : (n_blocks + 1,) int64 array
    cache : (m,) array
        Per-sample arrays at theta (table ``coff``).
    coff, soff : (5, L), (4, L) int64 arrays
    scratch_doubles : int
    work : dict
        Scratch kept between calls (``"scratch"``, ``"part"``).
    lock : threading.Lock
        One call at a time per cache (the scratch is shared).
    penalty : (P,) array or None
        Added as ``diag(penalty)`` to the GGN; ignored by the Fisher.
    """

    kind: int
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
    work: dict
    lock: object
    penalty: np.ndarray | None


def forward_cache(kind, theta, sizes, act, loss_kind, X, Y, sample_block, penalty=None):
    """The pass at theta for GGN (``kind`` = GGN) or Fisher (FISHER) products.

    Parameters
    ----------
    kind : int
        GGN or FISHER.
    theta : (P,) float64
    sizes : (L+1,) int64
    act, loss_kind : int
        Codes of ``kernels.mlp``.
    X : (n, d) C-contiguous float64
    Y : (n, out) C-contiguous float64
    sample_block : int
        Largest sample block (``sample_bounds``).
    penalty : (P,) float64, optional
        The L2 term's weights; the GGN gains ``diag(penalty)``, the Fisher ignores it.

    Returns
    -------
    CurvatureCache
    """
    if kind not in (GGN, FISHER):
        raise ValueError(f"kind must be GGN ({GGN}) or FISHER ({FISHER}), got {kind!r}")
    sizes_t = tuple(int(s) for s in sizes)
    sizes = np.asarray(sizes_t, dtype=np.int64)
    w_off, b_off, _ = layout(sizes)
    theta = np.array(theta, dtype=np.float64)
    bounds = sample_bounds(X.shape[0], sample_block)
    coff, total = cache_table(sizes_t, X.shape[0], kind == FISHER)
    soff, per_thread = scratch_table(sizes_t, int(np.diff(bounds).max()))
    cache = np.empty(total)
    with serial_blas():
        forward_blocks(theta, sizes, w_off, b_off, int(act), int(loss_kind), X, Y, bounds, cache,
                       coff, kind == FISHER)  # fmt: skip
    return CurvatureCache(
        int(kind), theta, sizes, w_off, b_off, X, int(loss_kind), bounds, cache, coff, soff,
        per_thread, {}, threading.Lock(), penalty if kind == GGN else None,
    )  # fmt: skip


def vec_chunk_for(cache: CurvatureCache, scratch_bytes: int) -> int:
    """Vectors per pass whose partial rows (``8 P (n_blocks - 1)`` bytes each) fit in
    ``scratch_bytes`` (at least 1)."""
    per = 8 * n_params(cache.sizes) * (cache.bounds.size - 2)
    return 1 << 30 if per == 0 else max(1, int(scratch_bytes) // per)


def block_products(cache: CurvatureCache, V, vec_chunk: int, workers: int = 1) -> np.ndarray:
    """GGN or Fisher products (by ``cache.kind``) of the mean loss: row k is ``M @ V[k]``.

    Parameters
    ----------
    cache : CurvatureCache
    V : (K, P) C-contiguous float64
    vec_chunk : int
        Vectors per pass (:func:`vec_chunk_for`).
    workers : int
        Numba threads (speed only: the result is the same bit for bit for any value).

    Returns
    -------
    (K, P) float64
    """
    K, P = V.shape
    out = np.empty((K, P))
    step = max(1, min(int(vec_chunk), K))
    workers = max(1, min(int(workers), numba.config.NUMBA_NUM_THREADS))
    nbk = cache.bounds.size - 1
    with cache.lock, serial_blas():
        scratch = cache.work.get("scratch")
        if scratch is None or scratch.shape[0] < workers:
            scratch = cache.work["scratch"] = np.empty((workers, cache.scratch_doubles))
        need = (nbk - 1) * step * P
        part = cache.work.get("part")
        if part is None or part.size < need:
            part = cache.work["part"] = np.empty(max(need, 1))
        previous = numba.get_num_threads()
        if previous != workers:
            numba.set_num_threads(workers)
        try:
            for k0 in range(0, K, step):
                k1 = min(K, k0 + step)
                products(
                    cache.kind, V[k0:k1], cache.theta, cache.sizes, cache.w_off, cache.b_off,
                    cache.loss_kind, cache.X, cache.bounds, cache.cache, cache.coff, scratch,
                    cache.soff, out[k0:k1],
                    part[: (nbk - 1) * (k1 - k0) * P].reshape(nbk - 1, k1 - k0, P),
                )  # fmt: skip
        finally:
            if previous != workers:
                numba.set_num_threads(previous)
    out *= 1.0 / cache.X.shape[0]
    if cache.penalty is not None:
        add_l2_hvp(out, V, cache.penalty)
    return out
