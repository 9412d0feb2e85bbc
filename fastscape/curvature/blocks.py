"""Per-layer blocks of a curvature matrix: each layer's diagonal block as an operator, its top
eigenvalues and trace, and the layer-to-layer coupling norms.

Block ``(l, m)`` of a (P, P) curvature matrix A holds the rows of layer l's parameters
(``W_l`` and ``b_l``, contiguous in theta: ``model.layout[l]``) and the columns of layer m's.
The coupling of layers l and m is the Frobenius norm ``‖A_lm‖_F`` (``‖A_ll‖_F`` on the
diagonal): it is what a block-diagonal approximation (K-FAC, layer-wise methods) drops, and it
can be estimated matrix-free with error bars. With the matrix formed (small P) the spectral
norms ``‖A_lm‖_2`` are given too.

Estimated for large P from Rademacher probes z supported on layer m: one product ``A z``
gives ``A_lm z_m`` for every l at once, with ``E ‖A_lm z_m‖² = ‖A_lm‖_F²`` and
``E z_mᵀ A_mm z_m = tr(A_mm)``; ``s`` probes per layer cost ``s L`` products for all traces
and all couplings. ``‖A_lm‖_F² = ‖A_ml‖_F²`` is estimated twice (probes on l and on m) and the
two independent means are averaged. The standard error of the norm is the delta method's,
``se(‖·‖²) / (2 ‖·‖)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import config
from .._validation import as_float_array, check_choice, check_positive_int
from ..models import MLP
from ._common import Progress, apply_rows, as_operator, fix_signs, order, rademacher
from .eigen import DEFAULT_TOL, lanczos
from .ggn import MATRICES, curvature_operator, exact_matrix
from .operator import SymmetricRowOperator, prepare_inputs
from .results import EigenResult

__all__ = ["BlockOperator", "LayerBlocksResult", "layer_block", "layer_blocks"]


class BlockOperator(SymmetricRowOperator):
    """The diagonal block ``A[s, s]`` of an operator on a contiguous index range ``s``.

    Each product embeds the vectors in zeros of length n, applies A (one block product for
    all of them) and keeps the range. ``n_hvps`` counts the products of A.

    Parameters
    ----------
    A : LinearOperator (n, n)
    start, stop : int
        The range ``start:stop`` (0 <= start < stop <= n).

    Attributes
    ----------
    shape : (stop - start, stop - start)
    parent : LinearOperator
    start, stop : int
    n_hvps : int
    """

    def __init__(self, A, start: int, stop: int):
        A = as_operator(A)
        n = A.shape[0]
        if not (0 <= int(start) < int(stop) <= n):
            raise ValueError(f"the range {start}:{stop} is not inside 0:{n}")
        self.parent, self.start, self.stop = A, int(start), int(stop)
        self.n_hvps = 0
        p = self.stop - self.start
        super().__init__(dtype=np.dtype(np.float64), shape=(p, p))

    def rows(self, V) -> np.ndarray:
        """``A[s, s] @ V[i]`` for the rows of V (K, p); a single vector (p,) gives (p,).

        Parameters
        ----------
        V : (K, p) or (p,) array

        Returns
        -------
        (K, p) or (p,) float64 array
        """
        V = as_float_array(V, "V", (1, 2))
        p = self.shape[0]
        if V.shape[-1] != p:
            raise ValueError(f"V has rows of length {V.shape[-1]}, expected {p}")
        V2 = np.atleast_2d(V)
        E = np.zeros((V2.shape[0], self.parent.shape[0]))
        E[:, self.start : self.stop] = V2
        out = np.ascontiguousarray(apply_rows(self.parent, E)[:, self.start : self.stop])
        self.n_hvps += V2.shape[0]
        return out[0] if V.ndim == 1 else out


def _layer_range(model: MLP, layer) -> tuple[int, int]:
    L = len(model.layout)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not -L <= layer < L:
        raise ValueError(f"layer must be in [{-L}, {L}), got {layer} ({L} layers)")
    lay = model.layout[int(layer) % L]
    return lay.weight.start, lay.bias.stop


def layer_block(A, model: MLP, layer: int) -> BlockOperator:
    """The diagonal block of layer ``layer`` (its weights and bias) of a curvature operator.

    Parameters
    ----------
    A : LinearOperator (P, P)
        E.g. a :class:`~fastscape.curvature.HessianOperator` of ``model``.
    model : MLP
    layer : int
        0 for the first layer; negative counts from the output layer.

    Returns
    -------
    BlockOperator
        (p_l, p_l), ``p_l = out_l (in_l + 1)``; the parameters in the model's layout order
        (``W_l`` row-major, then ``b_l``).
    """
    A = as_operator(A)
    if A.shape[0] != model.n_params:
        raise ValueError(f"A is {A.shape[0]} x {A.shape[0]}, the model has {model.n_params}")
    return BlockOperator(A, *_layer_range(model, layer))


@dataclass
class LayerBlocksResult:
    """Per-layer curvature of a model.

    Attributes
    ----------
    layers : tuple of str
        One name per layer, e.g. ``"layer 0 (W 5x4, b 5)"``.
    ranges : (L, 2) int array
        Each layer's parameters ``start:stop`` in theta.
    eigenvalues : list of (k_l,) arrays
        The top eigenvalues of each diagonal block, in the order of ``which``
        (``k_l = min(k, p_l)``; ``min(k, p_l - 1)`` for the iterative solver).
    eigen_converged : list of (k_l,) bool arrays
        True for exact values; the Lanczos flag (residual and rank verified) otherwise.
    trace : (L,) array
        ``tr(A_ll)``.
    trace_std_error : (L,) array
        Zeros when exact.
    coupling : (L, L) array
        Frobenius norms ``‖A_lm‖_F`` (symmetric; the diagonal ``‖A_ll‖_F``).
    coupling_std_error : (L, L) array
        Zeros when exact.
    coupling_spectral : (L, L) array or None
        Spectral norms ``‖A_lm‖_2`` (exact method only).
    exact : bool
        Whether every value is exact (the matrix was formed).
    method : {"exact", "estimate"}
    matrix : str
    which : str
    n_matvecs : int
        Operator products used (probes and eigensolves; 0 when the Hessian was formed by its
        kernel).
    n_samples : int
        Probes per layer (``estimate``).
    eigen : list of EigenResult
        The eigensolves behind ``eigenvalues``.
    message : str
    """

    layers: tuple[str, ...]
    ranges: np.ndarray
    eigenvalues: list
    eigen_converged: list
    trace: np.ndarray
    trace_std_error: np.ndarray
    coupling: np.ndarray
    coupling_std_error: np.ndarray
    coupling_spectral: np.ndarray | None
    exact: bool
    method: str
    matrix: str
    which: str
    n_matvecs: int
    n_samples: int
    eigen: list
    message: str = ""

    @property
    def relative_coupling(self) -> np.ndarray:
        """``‖A_lm‖_F / sqrt(‖A_ll‖_F ‖A_mm‖_F)`` (L, L): how strongly layers l and m couple
        compared with their own blocks (1 on the diagonal; NaN where a block is zero)."""
        d = np.sqrt(np.diag(self.coupling))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.coupling / np.outer(d, d)


def _names(model: MLP) -> tuple[str, ...]:
    return tuple(
        f"layer {l} (W {lay.shape[0]}x{lay.shape[1]}, b {lay.shape[0]})"
        for l, lay in enumerate(model.layout)
    )


def layer_blocks(
    model: MLP,
    theta,
    X,
    y=None,
    method: str = "auto",
    *,
    matrix: str = "hessian",
    k: int = 1,
    which: str = "LA",
    n_samples: int = 100,
    tol: float | None = None,
    max_hvps: int | None = None,
    seed: int = 0,
    max_params: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> LayerBlocksResult:
    """Top eigenvalues and trace of each layer's diagonal block, and the layer couplings.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"auto", "exact", "estimate"}
        ``exact``: the matrix formed (the Hessian by its kernel, the others from P products),
        every value exact; ``estimate``: matrix-free, the eigenvalues by thick-restart Lanczos
        on each :class:`BlockOperator` (verified, with its convergence flags) and the traces
        and couplings from ``n_samples`` Rademacher probes per layer with standard errors
        (module docstring); ``auto``: exact when ``P <= max_params``.
    matrix : {"hessian", "ggn", "fisher", "residual"}
    k : int
        Eigenvalues per block.
    which : {"LA", "SA", "LM"}
        Which end of each block's spectrum.
    n_samples : int
        Probes per layer (``estimate``; >= 2).
    tol : float, optional
        Lanczos tolerance (default 1e-6).
    max_hvps : int, optional
        Budget of each block's Lanczos solve.
    seed : int
    max_params : int, optional
        Largest P for the exact method (default ``config.HESSIAN_MAX_PARAMS``).
    device : {"cpu", "cuda"}
        Where the products run (``"cuda"``: the Hessian's only).
    progress : bool

    Returns
    -------
    LayerBlocksResult
    """
    method = check_choice(method, "method", ("auto", "exact", "estimate"))
    matrix = check_choice(matrix, "matrix", MATRICES)
    which = check_choice(which, "which", ("LA", "SA", "LM"))
    k = check_positive_int(k, "k")
    theta, data, device = prepare_inputs(model, theta, X, y, device)
    P = model.n_params
    limit = config.HESSIAN_MAX_PARAMS if max_params is None else max_params
    if method == "auto":
        method = "exact" if P <= limit else "estimate"
    ranges = np.array([_layer_range(model, l) for l in range(len(model.layout))], np.int64)
    L = ranges.shape[0]
    if method == "exact":
        M = exact_matrix(model, theta, data, None, matrix, max_params=limit)
        used = 0 if matrix == "hessian" else P
        return _exact_blocks(model, M, ranges, matrix, which, k, used)
    n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
    A = curvature_operator(model, theta, data, matrix=matrix, device=device)
    rng = np.random.default_rng(seed)
    sq = np.zeros((L, L, n_samples))  # ‖A_lm z_m‖² of each probe on layer m
    tr = np.zeros((L, n_samples))
    with Progress(progress, L * n_samples, "layer probes") as bar:
        for m, (a, b) in enumerate(ranges):
            for s0 in range(0, n_samples, 32):
                s1 = min(n_samples, s0 + 32)
                Z = np.zeros((s1 - s0, P))
                Z[:, a:b] = rademacher(rng, (s1 - s0, b - a))
                Y = apply_rows(A, Z)
                tr[m, s0:s1] = np.einsum("ij,ij->i", Z[:, a:b], Y[:, a:b])
                for l, (c, d) in enumerate(ranges):
                    sq[l, m, s0:s1] = np.einsum("ij,ij->i", Y[:, c:d], Y[:, c:d])
                bar.update(s1 - s0)
    root_m = np.sqrt(n_samples)
    trace = tr.mean(axis=1)
    trace_se = tr.std(axis=1, ddof=1) / root_m
    mean_sq = sq.mean(axis=2)
    se_sq = sq.std(axis=2, ddof=1) / root_m
    mean_sq = 0.5 * (mean_sq + mean_sq.T)  # two independent estimates of each off-diagonal
    se_sq = np.where(np.eye(L, dtype=bool), se_sq, 0.5 * np.sqrt(se_sq**2 + se_sq.T**2))
    coupling = np.sqrt(mean_sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        coupling_se = np.where(coupling > 0, se_sq / (2.0 * coupling), np.sqrt(se_sq))
    eigen = []
    for a, b in ranges:
        block = BlockOperator(A, a, b)
        kk = min(k, int(b - a) - 1)  # a layer has at least 2 parameters
        tol_k = DEFAULT_TOL if tol is None else tol
        eigen.append(lanczos(block, kk, which, tol=tol_k, max_hvps=max_hvps, seed=seed))
    used = L * n_samples + sum(e.n_matvecs for e in eigen)
    n_conv = sum(int(e.converged.sum()) for e in eigen)
    n_eig = sum(e.eigenvalues.size for e in eigen)
    return LayerBlocksResult(
        _names(model), ranges, [e.eigenvalues for e in eigen], [e.converged for e in eigen],
        trace, trace_se, coupling, coupling_se, None, False, "estimate", matrix, which, used,
        n_samples, eigen,
        f"estimated: {n_samples} probes per layer, {n_conv} of {n_eig} block eigenvalues "
        f"converged and verified; {used} products",
    )  # fmt: skip


def _exact_blocks(model, M, ranges, matrix, which, k, used) -> LayerBlocksResult:
    L = ranges.shape[0]
    coupling = np.zeros((L, L))
    spectral = np.zeros((L, L))
    for l, (a, b) in enumerate(ranges):
        for m, (c, d) in enumerate(ranges):
            B = M[a:b, c:d]
            coupling[l, m] = np.linalg.norm(B, "fro")
            spectral[l, m] = np.linalg.norm(B, 2)
    eigen = []
    for a, b in ranges:
        vals, vecs = np.linalg.eigh(M[a:b, a:b])
        idx = order(vals, which)[: min(k, b - a)]
        kk = idx.size
        vectors = fix_signs(np.ascontiguousarray(vecs[:, idx].T))
        flags = np.ones(kk, bool)
        res = EigenResult(vals[idx], vectors, np.zeros(kk, np.int64), flags, np.zeros(kk), 0,
                          "exact", which)  # fmt: skip
        eigen.append(res)
    trace = np.array([np.trace(M[a:b, a:b]) for a, b in ranges])
    return LayerBlocksResult(
        _names(model), ranges, [e.eigenvalues for e in eigen], [e.converged for e in eigen],
        trace, np.zeros(L), coupling, np.zeros((L, L)), spectral, True, "exact", matrix, which,
        used, 0, eigen, f"exact: the blocks of the {M.shape[0]} x {M.shape[0]} {matrix}",
    )  # fmt: skip
