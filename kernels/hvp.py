"""Hessian-vector products as an operator at a fixed theta: forward pass cached, GEMM-shaped.

A curvature solve (Lanczos, power iteration, Hutchinson, SLQ) multiplies the Hessian at ONE
theta by many vectors. Everything that depends on theta only is computed once by
:func:`forward_cache`:

- the layer inputs ``a_l`` (``a_0 = X``), ``f'(z_l)`` of every hidden layer,
- the back-propagated deltas ``delta_l`` of the MEAN loss (they carry the 1/n),
- ``t_l = f''(z_{l-1}) * (delta_l W_l)``, the second-derivative factor of the R-backward pass,
- the output curvature: softmax probabilities ``p`` and ``s/n`` (``s`` = row sums of the
  targets), ``p (1 - p) / n`` for logistic, ``2 / n`` for MSE.

:func:`block_hvp` then applies Pearlmutter's R-operator to K vectors at once, the vectors being
extra GEMM columns. With ``V_l`` / ``v_l`` the weight / bias parts of a vector at layer l and the
per-layer arrays laid out sample-major, ``(nb, K * h)`` (row i holds the K vectors' values of
sample i side by side)::

    R z_l      = a_l [V_l^(1) .. V_l^(K)]^T          one GEMM (nb, h_l) @ (h_l, K h_{l+1})
               + (R a_l) W_l^T                         one GEMM (nb K, h_l) @ (h_l, h_{l+1})
               + v_l
    R a_{l+1}  = f'(z_l) R z_l
    R delta_L  = (d2 loss / dz2) R z_L / n             per sample and vector
    R dW_l     = (R delta_l)^T a_l                     one GEMM (K h_{l+1}, nb) @ (nb, h_l)
               + delta_l^T R a_l                        one GEMM (h_{l+1}, nb) @ (nb, K h_l)
    R db_l     = sum_i R delta_l
    R delta_{l-1} = t_l R z_{l-1} + f'(z_{l-1}) (delta_l [V_l^(1) .. V_l^(K)]
                                                   + R delta_l W_l)   two GEMMs

The GEMMs are NumPy's (OpenBLAS) on 2-D C-contiguous float64 arrays, called from the thin Python
driver :func:`block_hvp`; the elementwise work (about 130 light operations per sample and vector
for MLP 64-32-10, memory-bound) is in the serial ``@jit()`` kernels below. Per vector this is
``sum_l 2 h_l h_{l+1} (2 + 4 [l > 0])`` flops per sample (softmax: plus ``s p (r - p.r)`` at the
output): 21.6 MFLOP per vector for MLP 64-32-10 on 1 797 samples, against 47 MFLOP for the
per-sample R-operator kernel it replaced, which also redid the forward pass every call.

Threads. Samples are processed in fixed blocks (``n_blocks`` of them, ``(c n) // n_blocks``
boundaries: a partition that depends only on n and ``sample_block``); the blocks of a pass run
concurrently on a small thread pool (``workers`` threads; NumPy's GEMMs and the ``nogil``
kernels release the GIL) with BLAS **single-threaded** for the duration of the call, and their
results are added in block order. Two reasons: (1) OpenBLAS's rounding depends on its own thread
count (measured here: a (1797, 64) @ (64, 300) product differs in the last bit between 1 and 2
OpenBLAS threads); (2) ten-odd multithreaded GEMM calls per HVP, each ending in a barrier,
are ruinous when the cores are shared: with two other busy processes on the 2-core machine a
single HVP took 140 ms instead of 1-2 ms. The elementwise kernels are serial for the same
reason (a Numba ``prange`` region between OpenBLAS calls made the two pools fight for the cores).

Memory: vectors go through in chunks of ``vec_chunk`` (:func:`vec_chunk_for` bounds the
scratch); each sample block keeps its scratch (:class:`_Workspace`) between calls, because fresh
large arrays cost a page fault per 4 KiB on first touch.

Determinism. For fixed ``sample_block`` and ``vec_chunk`` the result is the same bit for bit
for any ``workers`` (Numba thread count) and any OpenBLAS thread count. Changing ``vec_chunk``
(the scratch limit) changes the GEMM shapes, and OpenBLAS's rounding depends on the shapes (a
column's bits can change with the number of columns): results then agree to rounding (about
1e-16 relative), not bitwise; the tests check that to 1e-13.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ._blas import serial_blas, thread_pool
from ._jit import jit
from .mlp import LOGISTIC, MSE, activate, activate_d1, activate_d2, sigmoid


# ----------------------------------------------------------------------------- elementwise
@jit()
def activation_cache(Z, act, A, D1, D2):
    """A = f(Z), D1 = f'(Z), D2 = f''(Z), elementwise; all (n, h)."""
    n, h = Z.shape
    for i in range(n):
        for j in range(h):
            z = Z[i, j]
            a = activate(act, z)
            A[i, j] = a
            D1[i, j] = activate_d1(act, z, a)
            D2[i, j] = activate_d2(act, z, a)


@jit()
def output_cache(loss_kind, Z, Y, inv_n, delta, C, s):
    """Output layer at theta, per sample.

    Parameters
    ----------
    Z, Y : (n, out)
        Logits and target matrix.
    inv_n : float
        1 / (total number of samples): the mean loss's factor.

    Writes ``delta`` (n, out) = d(mean loss)/dz, and the curvature data: softmax-CE ``C = p``
    (probabilities) and ``s = sum(y) / n``; logistic ``C = p (1 - p) / n``; MSE ``C = 2 / n``
    (``s`` unused, 0).
    """
    n, n_out = Z.shape
    for i in range(n):
        if loss_kind == LOGISTIC:
            p = sigmoid(Z[i, 0])
            delta[i, 0] = (p - Y[i, 0]) * inv_n
            C[i, 0] = p * (1.0 - p) * inv_n
            s[i] = 0.0
        elif loss_kind == MSE:
            for o in range(n_out):
                delta[i, o] = 2.0 * (Z[i, o] - Y[i, o]) * inv_n
                C[i, o] = 2.0 * inv_n
            s[i] = 0.0
        else:
            m = Z[i, 0]
            for o in range(1, n_out):
                if Z[i, o] > m:
                    m = Z[i, o]
            se = 0.0
            for o in range(n_out):
                se += math.exp(Z[i, o] - m)
            lse = m + math.log(se)
            sy = 0.0
            for o in range(n_out):
                sy += Y[i, o]
            for o in range(n_out):
                p = math.exp(Z[i, o] - lse)
                C[i, o] = p
                delta[i, o] = (sy * p - Y[i, o]) * inv_n
            s[i] = sy * inv_n


@jit()
def backward_cache(B, D1, D2, delta, T):
    """delta = B * D1 and T = B * D2 with B = delta_next W (the signal before f'); all (n, h)."""
    n, h = B.shape
    for i in range(n):
        for j in range(h):
            b = B[i, j]
            delta[i, j] = b * D1[i, j]
            T[i, j] = b * D2[i, j]


@jit()
def r_forward_layer(Rz, T2, has_t2, vb, D1, want_ra, RA):
    """Finish R z of one layer for K vectors and, for a hidden layer, R a = f'(z) R z.

    Parameters
    ----------
    Rz : (nb, K * h)
        On entry ``a V^T`` for the K vectors (sample-major); on exit R z.
    T2 : (nb, K * h)
        ``(R a_prev) W^T``, added when ``has_t2``.
    vb : (K, h)
        Bias parts of the vectors.
    D1 : (nb, h)
        f'(z) at theta (ignored unless ``want_ra``).
    RA : (nb, K * h)
        Written with f'(z) R z when ``want_ra``.
    """
    nb = Rz.shape[0]
    K, h = vb.shape
    for i in range(nb):
        for k in range(K):
            q0 = k * h
            for j in range(h):
                r = Rz[i, q0 + j] + vb[k, j]
                if has_t2:
                    r += T2[i, q0 + j]
                Rz[i, q0 + j] = r
                if want_ra:
                    RA[i, q0 + j] = D1[i, j] * r


@jit()
def r_output(loss_kind, Rz, C, s, Rd, gb):
    """R delta of the output layer: (d2 mean loss / dz2) R z per sample and vector.

    ``Rz``, ``Rd`` (nb, K * out); ``C`` (nb, out), ``s`` (nb,) from :func:`output_cache`.
    ``gb`` (K * out,) receives the column sums of Rd (the bias part), samples added in order.
    """
    nb, n_out = C.shape
    K = Rz.shape[1] // n_out
    for q in range(K * n_out):
        gb[q] = 0.0
    for i in range(nb):
        for k in range(K):
            q0 = k * n_out
            if loss_kind == LOGISTIC or loss_kind == MSE:
                for o in range(n_out):
                    r = C[i, o] * Rz[i, q0 + o]
                    Rd[i, q0 + o] = r
                    gb[q0 + o] += r
            else:
                pr = 0.0
                for o in range(n_out):
                    pr += C[i, o] * Rz[i, q0 + o]
                for o in range(n_out):
                    r = s[i] * C[i, o] * (Rz[i, q0 + o] - pr)
                    Rd[i, q0 + o] = r
                    gb[q0 + o] += r


@jit()
def r_backward_layer(T, Rz, D1, T1, T2, Rd, gb):
    """R delta of a hidden layer: ``Rd = T * Rz + D1 * (T1 + T2)``.

    ``T``, ``D1`` (nb, h) at theta; ``Rz``, ``T1`` (= delta_next [V]), ``T2`` (= R delta_next W),
    ``Rd`` (nb, K * h). ``gb`` (K * h,) receives the column sums of Rd, samples added in order.
    """
    nb, h = T.shape
    m = Rz.shape[1]
    K = m // h
    for q in range(m):
        gb[q] = 0.0
    for i in range(nb):
        for k in range(K):
            q0 = k * h
            for j in range(h):
                q = q0 + j
                r = T[i, j] * Rz[i, q] + D1[i, j] * (T1[i, q] + T2[i, q])
                Rd[i, q] = r
                gb[q] += r


# ----------------------------------------------------------------------------- driver
class HVPCache(NamedTuple):
    """Everything of the R-operator that depends on theta only (see the module docstring).

    Attributes
    ----------
    sizes : tuple of int
        ``(d, h_1, ..., out)``.
    w_off, b_off : tuple of int
        Offsets of ``W_l`` and ``b_l`` in theta.
    W : list of (h_{l+1}, h_l) arrays
    A : list of (n, h_l) arrays
        Layer inputs at theta; ``A[0]`` is X.
    D1 : list of (n, h_{l+1}) arrays
        f'(z_l) of the hidden layers (L - 1 of them).
    T : list of (n, h_l) arrays
        ``T[l - 1] = f''(z_{l-1}) * (delta_l W_l)`` for l = 1 .. L-1.
    delta : list of (n, h_{l+1}) arrays
        Deltas of the mean loss.
    C : (n, out) array
    s : (n,) array
        Output curvature data (:func:`output_cache`).
    loss_kind : int
    n_blocks : int
        Fixed sample blocks.
    work : list of _Workspace
        Scratch of each sample block, reused by later calls.
    lock : threading.Lock
        Held by :func:`block_hvp` (the scratch is shared): one call at a time per cache.
    """

    sizes: tuple
    w_off: tuple
    b_off: tuple
    W: list
    A: list
    D1: list
    T: list
    delta: list
    C: np.ndarray
    s: np.ndarray
    loss_kind: int
    n_blocks: int
    work: list
    lock: object


def _offsets(sizes):
    w_off, b_off = [], []
    o = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w_off.append(o)
        o += n_in * n_out
        b_off.append(o)
        o += n_out
    return tuple(w_off), tuple(b_off), o


def forward_cache(theta, sizes, act, loss_kind, X, Y, sample_block) -> HVPCache:
    """Forward and backward pass at theta, kept for :func:`block_hvp` (BLAS single-threaded).

    Parameters
    ----------
    theta : (P,) float64
    sizes : (L+1,) int64
    act, loss_kind : int
        Codes of ``kernels.mlp``.
    X : (n, d) C-contiguous float64
    Y : (n, out) C-contiguous float64
    sample_block : int
        Largest sample block; the blocks are ``ceil(n / sample_block)`` fixed slices.

    Returns
    -------
    HVPCache
    """
    with serial_blas():
        return _forward_cache(theta, sizes, act, loss_kind, X, Y, sample_block)


def _forward_cache(theta, sizes, act, loss_kind, X, Y, sample_block) -> HVPCache:
    sizes = tuple(int(s) for s in sizes)
    n = X.shape[0]
    L = len(sizes) - 1
    w_off, b_off, _ = _offsets(sizes)
    W = [
        np.ascontiguousarray(theta[w_off[l] : b_off[l]].reshape(sizes[l + 1], sizes[l]))
        for l in range(L)
    ]
    bias = [theta[b_off[l] : b_off[l] + sizes[l + 1]] for l in range(L)]
    A, D1, D2 = [X], [], []
    for l in range(L - 1):
        Z = A[l] @ W[l].T
        Z += bias[l]
        a, d1, d2 = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z)
        activation_cache(Z, act, a, d1, d2)
        A.append(a)
        D1.append(d1)
        D2.append(d2)
    Z = A[L - 1] @ W[L - 1].T
    Z += bias[L - 1]
    n_out = sizes[-1]
    delta = [None] * L
    delta[L - 1] = np.empty((n, n_out))
    C = np.empty((n, n_out))
    s = np.empty(n)
    output_cache(loss_kind, Z, Y, 1.0 / n, delta[L - 1], C, s)
    T = [None] * (L - 1)
    for l in range(L - 1, 0, -1):
        B = delta[l] @ W[l]
        delta[l - 1] = np.empty_like(B)
        T[l - 1] = np.empty_like(B)
        backward_cache(B, D1[l - 1], D2[l - 1], delta[l - 1], T[l - 1])
    n_blocks = max(1, -(-n // max(1, int(sample_block))))
    work = [_Workspace() for _ in range(n_blocks)]
    return HVPCache(
        sizes, w_off, b_off, W, A, D1, T, delta, C, s, int(loss_kind), n_blocks, work,
        threading.Lock(),
    )  # fmt: skip


def _buffers(sizes, nb: int) -> dict:
    """Doubles per vector of each scratch buffer of a block of nb samples, by (name, layer)."""
    L = len(sizes) - 1
    need = {}
    for l in range(L):
        h_in, h = sizes[l], sizes[l + 1]
        need["rz", l] = need["rd", l] = nb * h
        need["G", l] = h * h_in
        need["gb", l] = h
        if l < L - 1:
            need["ra", l] = nb * h
        if l > 0:
            need["t2f", l] = nb * h
            need["t1b", l] = need["t2b", l] = nb * h_in
            need["G2", l] = h * h_in
    need["part", 0] = _offsets(sizes)[2]
    return need


def scratch_per_vector(sizes, nb: int) -> int:
    """Bytes of scratch one vector needs in one block of nb samples (R z, R a, R delta, the GEMM
    products of every layer and the block's (P,) result)."""
    return 8 * sum(_buffers(tuple(int(s) for s in sizes), nb).values())


def vec_chunk_for(cache: HVPCache, scratch_bytes: int) -> int:
    """Vectors per pass of :func:`block_hvp` whose scratch fits in ``scratch_bytes`` (at least 1).

    Every sample block keeps its scratch between calls, so the scratch of all blocks counts.

    Parameters
    ----------
    cache : HVPCache
    scratch_bytes : int

    Returns
    -------
    int
    """
    n = cache.A[0].shape[0]
    nbk = cache.n_blocks
    per = sum(
        scratch_per_vector(cache.sizes, ((c + 1) * n) // nbk - (c * n) // nbk) for c in range(nbk)
    )
    return max(1, int(scratch_bytes) // per)


def block_hvp(cache: HVPCache, V, vec_chunk: int, workers: int = 1) -> np.ndarray:
    """Hessian-vector products ``H @ V[k]`` of the mean loss at the cached theta.

    Parameters
    ----------
    cache : HVPCache
        From :func:`forward_cache`.
    V : (K, P) C-contiguous float64
    vec_chunk : int
        Vectors per pass (bounds the scratch: :func:`scratch_per_vector`).
    workers : int
        Threads that run the sample blocks of a pass concurrently (each with single-threaded
        BLAS). Speed only: the blocks and the order in which their results are added are fixed.
        A single vector runs on the calling thread: handing its blocks to the pool costs more
        than it saves (MLP 64-32-10 on 1 797 samples: 1.86 ms on one thread, 2.77 ms on two;
        from two vectors on, two threads win: 3.17 vs 3.64 ms).

    Returns
    -------
    (K, P) float64
    """
    K = V.shape[0]
    out = np.empty_like(V)
    step = max(1, int(vec_chunk))
    workers = 1 if K == 1 else max(1, min(int(workers), cache.n_blocks))
    with cache.lock, serial_blas():
        for k0 in range(0, K, step):
            k1 = min(K, k0 + step)
            _chunk(cache, V[k0:k1], out[k0:k1], workers)
    return out


def _chunk(cache: HVPCache, V, out, workers):
    """Fill out (Kc, P) with H V for one chunk of vectors, adding the fixed sample blocks'
    results in block order."""
    sizes, w_off, b_off = cache.sizes, cache.w_off, cache.b_off
    L = len(sizes) - 1
    Kc = V.shape[0]
    n = cache.A[0].shape[0]
    # vector parts, stacked for the GEMMs
    Vw = []  # (Kc * h_{l+1}, h_l): row k*h + j is row j of V_l^(k)
    Vcat = []  # (h_{l+1}, Kc * h_l): the V_l^(k) side by side
    vb = []  # (Kc, h_{l+1})
    for l in range(L):
        h_in, h = sizes[l], sizes[l + 1]
        stacked = np.ascontiguousarray(V[:, w_off[l] : b_off[l]]).reshape(Kc * h, h_in)
        Vw.append(stacked)
        Vcat.append(
            np.ascontiguousarray(stacked.reshape(Kc, h, h_in).transpose(1, 0, 2)).reshape(
                h, Kc * h_in
            )
        )
        vb.append(np.ascontiguousarray(V[:, b_off[l] : b_off[l] + h]))
    nbk = cache.n_blocks

    P = out.shape[1]

    def run(c):
        lo, hi = (c * n) // nbk, ((c + 1) * n) // nbk
        ws = cache.work[c]
        ws.ensure(sizes, hi - lo, Kc)
        part = out if c == 0 else ws.get("part", 0, (Kc, P))
        _block(cache, Vw, Vcat, vb, lo, hi, part, ws)
        return part

    parts = map(run, range(nbk)) if workers == 1 else _pool(workers).map(run, range(nbk))
    for c, part in enumerate(parts):
        if c > 0:
            out += part


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of its own (not ``_blas.matmul``'s): a block task never waits on the pool it
    runs in."""
    return thread_pool(workers, "hvp")


class _Workspace:
    """Scratch of one sample block, kept between calls (fresh large arrays cost a page fault
    per 4 KiB on first touch, which measured as much as the GEMMs themselves). Flat buffers
    sized for ``cap`` vectors; a pass with Kc <= cap vectors uses their leading part."""

    def __init__(self):
        self.cap = 0
        self.buf = {}
        self.views = {}  # (name, layer, shape) -> view of buf, made once

    def ensure(self, sizes, nb, Kc):
        if Kc <= self.cap:
            return
        self.buf = {key: np.empty(size * Kc) for key, size in _buffers(sizes, nb).items()}
        self.views = {}
        self.cap = Kc

    def get(self, name, l, shape):
        key = (name, l, shape)
        view = self.views.get(key)
        if view is None:
            size = 1
            for d in shape:
                size *= d
            view = self.views[key] = self.buf[name, l][:size].reshape(shape)
        return view


def _block(cache: HVPCache, Vw, Vcat, vb, lo, hi, out, ws):
    sizes, w_off, b_off, W = cache.sizes, cache.w_off, cache.b_off, cache.W
    L = len(sizes) - 1
    Kc = vb[0].shape[0]
    nb = hi - lo
    A = [a[lo:hi] for a in cache.A]
    # R-forward
    Rz, RA = [None] * L, [None] * L
    for l in range(L):
        h_in, h = sizes[l], sizes[l + 1]
        rz = ws.get("rz", l, (nb, Kc * h))
        np.matmul(A[l], Vw[l].T, out=rz)
        has_t2 = l > 0
        t2 = rz
        if has_t2:
            t2 = ws.get("t2f", l, (nb, Kc * h))
            np.matmul(RA[l - 1].reshape(nb * Kc, h_in), W[l].T, out=t2.reshape(nb * Kc, h))
        hidden = l < L - 1
        ra = ws.get("ra", l, (nb, Kc * h)) if hidden else rz
        d1 = cache.D1[l][lo:hi] if hidden else cache.C[lo:hi]
        r_forward_layer(rz, t2, has_t2, vb[l], d1, hidden, ra)
        Rz[l], RA[l] = rz, ra
    # R-backward
    rd = ws.get("rd", L - 1, Rz[L - 1].shape)
    gb = ws.get("gb", L - 1, (Kc * sizes[L],))
    r_output(cache.loss_kind, Rz[L - 1], cache.C[lo:hi], cache.s[lo:hi], rd, gb)
    for l in range(L - 1, -1, -1):
        h_in, h = sizes[l], sizes[l + 1]
        G = ws.get("G", l, (Kc * h, h_in))
        np.matmul(rd.T, A[l], out=G)  # (R delta)^T a, vectors stacked in the rows
        G = G.reshape(Kc, h, h_in)
        if l > 0:
            delta = cache.delta[l][lo:hi]
            G2 = ws.get("G2", l, (h, Kc * h_in))
            np.matmul(delta.T, RA[l - 1], out=G2)
            G += G2.reshape(h, Kc, h_in).transpose(1, 0, 2)
        out[:, w_off[l] : b_off[l]] = G.reshape(Kc, h * h_in)
        out[:, b_off[l] : b_off[l] + h] = gb.reshape(Kc, h)
        if l > 0:
            t1 = ws.get("t1b", l, (nb, Kc * h_in))
            np.matmul(delta, Vcat[l], out=t1)
            t2 = ws.get("t2b", l, (nb, Kc * h_in))
            np.matmul(rd.reshape(nb * Kc, h), W[l], out=t2.reshape(nb * Kc, h_in))
            rd_prev = ws.get("rd", l - 1, (nb, Kc * h_in))
            gb = ws.get("gb", l - 1, (Kc * h_in,))
            r_backward_layer(cache.T[l - 1][lo:hi], Rz[l - 1], cache.D1[l - 1][lo:hi], t1, t2,
                             rd_prev, gb)  # fmt: skip
            rd = rd_prev
