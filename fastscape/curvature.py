"""Curvature of the loss: Hessian eigenvalues, trace and spectral density, matrix-free.

Everything here is built on a *matvec*: a callable that multiplies the (symmetric) Hessian by
vectors. On a model the matvec is the exact Hessian-vector product of the kernels
(Pearlmutter's R-operator, :meth:`fastscape.MLP.hvp`), which takes K vectors in one pass over
the data; the functions below therefore work on blocks of vectors whenever they can
(``batched=True``: ``matvec(V)`` maps rows ``V (b, n)`` to rows ``H V^T`` of shape ``(b, n)``).
The Hessian itself is formed only by the ``"exact"`` methods, for small models.

Eigenvectors are returned as **rows** (``(k, n)``), like every direction in fastscape.

References: Pearlmutter (1994) for the HVP; Hutchinson (1989) and Meyer, Musco, Musco &
Woodruff (2021, "Hutch++") for the trace; Golub & Meurant (2009), Lin, Saad & Yang (2016) and
Ghorbani, Krishnan & Xiao (2019) for stochastic Lanczos quadrature. See ``docs/curvature.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _device
from ._validation import as_float_array, check_choice, check_positive_float, check_positive_int
from .kernels import lanczos as _lz
from .kernels._blas import serial_blas
from .models import MLP, Batch

__all__ = [
    "DensityResult",
    "EigenResult",
    "TraceResult",
    "hessian_matvec",
    "hessian_trace",
    "hutchinson",
    "hutchpp",
    "lanczos",
    "power_iteration",
    "slq",
    "spectral_density",
    "top_eigen",
]

Matvec = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- results
@dataclass
class EigenResult:
    """Eigenpairs of a symmetric operator.

    Attributes
    ----------
    eigenvalues : (k,) array
        Ordered as asked: by decreasing magnitude ("LM"), decreasing value ("LA") or increasing
        value ("SA").
    eigenvectors : (k, n) array
        Unit eigenvectors as rows; the sign is fixed so that the largest entry is positive.
    iterations : (k,) int array
        Power iteration: the iteration at which each pair met the stopping rule (``maxiter``
        when it never did). Lanczos: the number of operator applications (same for all pairs).
        Exact: zeros.
    converged : (k,) bool array
        Whether each pair met the tolerance.
    residuals : (k,) array
        Relative residuals ``||H v - λ v|| / |λ|`` of the returned pairs.
    n_matvecs : int
        Operator applications (vectors, not calls).
    method : str
    which : str
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    residuals: np.ndarray
    n_matvecs: int
    method: str
    which: str

    @property
    def eigenvalue(self) -> float:
        """The first eigenvalue (e.g. λmax for ``k=1``)."""
        return float(self.eigenvalues[0])


@dataclass
class TraceResult:
    """A trace estimate.

    Attributes
    ----------
    estimate : float
    std_error : float
        Standard error of the estimate (0 for ``exact``). For Hutch++ it is the error of the
        Hutchinson part given the sketched subspace, whose contribution is exact.
    n_matvecs : int
        Operator applications used.
    method : {"hutchinson", "hutch++", "exact"}
    samples : (m,) array
        Per-probe values ``z^T A z`` of the Hutchinson part (empty for ``exact``).
    """

    estimate: float
    std_error: float
    n_matvecs: int
    method: str
    samples: np.ndarray


@dataclass
class DensityResult:
    """A spectral density on a grid.

    Attributes
    ----------
    grid : (g,) array
        Eigenvalue axis, equally spaced.
    density : (g,) array
        Gaussian-broadened density; integrates to 1 over ``grid`` (trapezoid rule) when the
        grid covers the nodes by 6σ with spacing at most σ/3, which the default grid does.
    sigma : float
        Standard deviation of the Gaussian placed on every node.
    nodes : (r, m) array
        Quadrature nodes of each run (Ritz values; the eigenvalues for ``exact``); unused
        entries (a run that stopped early) are NaN.
    weights : (r, m) array
        Quadrature weights of each run (each row sums to 1); 0 where unused.
    method : {"slq", "exact"}
    eigenvalues : (n,) array or None
        The exact eigenvalues (``exact`` only).
    hist : (bins,) array or None
        Normalised histogram of the exact eigenvalues (``exact`` only).
    hist_edges : (bins + 1,) array or None
    """

    grid: np.ndarray
    density: np.ndarray
    sigma: float
    nodes: np.ndarray
    weights: np.ndarray
    method: str
    eigenvalues: np.ndarray | None = None
    hist: np.ndarray | None = None
    hist_edges: np.ndarray | None = None

    def run_moments(self, p: int) -> np.ndarray:
        """The p-th moment ``sum_j w_j θ_j**p`` of each run's quadrature.

        Each is an unbiased estimate of ``tr(H**p) / n`` (exact for ``exact``).

        Parameters
        ----------
        p : int
            Order of the moment.

        Returns
        -------
        (r,) array
            One value per run.
        """
        nodes = np.where(self.weights > 0, self.nodes, 0.0)
        return (self.weights * nodes**p).sum(axis=1)

    def moment(self, p: int) -> float:
        """p-th moment of the (unbroadened) spectral measure: mean over runs."""
        return float(self.run_moments(p).mean())

    def moment_std_error(self, p: int) -> float:
        """Standard error of :meth:`moment` over the runs (0 for a single run or ``exact``)."""
        m = self.run_moments(p)
        if self.method == "exact" or m.size < 2:
            return 0.0
        return float(m.std(ddof=1) / np.sqrt(m.size))

    def integral(self) -> float:
        """Trapezoid integral of ``density`` over ``grid`` (1 up to discretisation)."""
        return float(np.trapezoid(self.density, self.grid))


# ----------------------------------------------------------------------------- helpers
def _check_n_k(n, k) -> tuple[int, int]:
    n = check_positive_int(n, "n")
    k = check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k must be smaller than n: got k={k} >= n={n}")
    return n, k


def _apply(matvec: Matvec, V: np.ndarray, n: int, batched: bool) -> np.ndarray:
    """Rows H v for the rows v of V (b, n), checked for shape and finiteness."""
    if batched:
        out = np.asarray(matvec(V), dtype=np.float64)
        if out.shape != V.shape:
            raise ValueError(f"matvec returned shape {out.shape} for input rows {V.shape}")
    else:
        out = np.empty_like(V)
        for i in range(V.shape[0]):
            r = np.asarray(matvec(V[i]), dtype=np.float64)
            if r.shape != (n,):
                raise ValueError(f"matvec returned shape {r.shape} for a vector of length {n}")
            out[i] = r
    if not np.isfinite(out).all():
        raise FloatingPointError("matvec returned non-finite values (NaN or infinity)")
    return out


def _fix_signs(V: np.ndarray) -> np.ndarray:
    """Flip rows so that the entry of largest magnitude is positive (reproducible signs)."""
    idx = np.abs(V).argmax(axis=1)
    s = np.sign(V[np.arange(V.shape[0]), idx])
    s[s == 0] = 1.0
    return V * s[:, None]


def _orth_rows(V: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the rows of V (b, n) (QR; b <= n)."""
    Q, R = np.linalg.qr(V.T)
    # keep the orientation of the inputs (QR may flip signs)
    d = np.sign(np.diag(R))
    d[d == 0] = 1.0
    return np.ascontiguousarray((Q * d).T)


def _start_block(n: int, k: int, seed, v0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((k, n))
    if v0 is not None:
        W = as_float_array(v0, "v0", (1, 2))
        W = np.atleast_2d(W)
        if W.shape[1] != n:
            raise ValueError(f"v0 has length {W.shape[1]}, expected {n}")
        b = min(k, W.shape[0])
        if np.any(np.linalg.norm(W[:b], axis=1) == 0):
            raise ValueError("v0 holds a zero vector")
        # warm start: previous vectors first, tiny random part keeps the block full rank
        V[:b] = W[:b] / np.linalg.norm(W[:b], axis=1, keepdims=True) + 1e-8 * V[:b] / np.sqrt(n)
    return _orth_rows(V)


def _order(vals: np.ndarray, which: str) -> np.ndarray:
    """Indices of vals in the order of ``which`` (stable). The same rule as the Lanczos step's
    ``kernels.lanczos.ritz_order``, which sorts at most ``ncv`` values by insertion; here any
    number (the exact method's full spectrum)."""
    if which == "LA":
        return np.argsort(-vals, kind="stable")
    if which == "SA":
        return np.argsort(vals, kind="stable")
    return np.argsort(-np.abs(vals), kind="stable")


# ----------------------------------------------------------------------------- eigenvalues
def power_iteration(
    matvec: Matvec,
    n: int,
    k: int = 1,
    *,
    tol: float = 1e-6,
    maxiter: int = 1000,
    seed: int = 0,
    v0=None,
    batched: bool = False,
) -> EigenResult:
    """Top-k eigenpairs by magnitude of a symmetric operator, by block power iteration.

    The k vectors are iterated together (orthogonal / subspace iteration): each iteration
    applies the operator to the block, re-orthonormalises it (QR) — which deflates the pairs
    already found from the others — and takes Ritz pairs from the k x k projected matrix. A
    pair is converged when both its relative eigenvalue change between iterations and its
    relative residual ``||H v - λ v|| / |λ|`` are at most ``tol``; iteration stops when all
    pairs are. Pair i converges like ``|λ_{k+1} / λ_i|**t``.

    Parameters
    ----------
    matvec : callable
        ``matvec(v)`` with v (n,) returns H v (n,); with ``batched=True``, ``matvec(V)`` with
        V (b, n) returns the rows (H V^T)^T, shape (b, n) (e.g. ``model.hvp`` on a block).
    n : int
        Dimension.
    k : int
        Number of pairs, ``1 <= k < n``.
    tol : float
        Relative tolerance of the stopping rule. The denominator |λ| is floored at
        ``1e-12 * max|λ|`` of the block (and a tiny absolute value) so that zero eigenvalues
        of a non-zero operator (and a zero operator) can converge.
    maxiter : int
        Maximum number of iterations (block applications).
    seed : int
        Seed of the random start: same seed, same result.
    v0 : (n,) or (b, n) array, optional
        Warm start (e.g. the eigenvectors of a previous call at a nearby point); missing rows
        are random.
    batched : bool
        Whether ``matvec`` takes blocks of rows.

    Returns
    -------
    EigenResult
        ``which="LM"``; pairs ordered by decreasing |λ|.
    """
    n, k = _check_n_k(n, k)
    tol = check_positive_float(tol, "tol", allow_zero=True)
    maxiter = check_positive_int(maxiter, "maxiter")
    V = _start_block(n, k, seed, v0)
    W = _apply(matvec, V, n, batched)
    n_mv = k
    prev = np.full(k, np.nan)
    iterations = np.full(k, maxiter, dtype=np.int64)
    done = np.zeros(k, dtype=bool)
    for it in range(1, maxiter + 1):
        T = V @ W.T
        vals, S = np.linalg.eigh(0.5 * (T + T.T))
        order = _order(vals, "LM")
        vals, S = vals[order], S[:, order]
        V, W = S.T @ V, S.T @ W
        scale = max(np.abs(vals).max() * 1e-12, 1e-300)
        denom = np.maximum(np.abs(vals), scale)
        res = np.linalg.norm(W - vals[:, None] * V, axis=1) / denom
        change = np.abs(vals - prev) / denom
        ok = (res <= tol) & (change <= tol)
        newly = ok & ~done
        iterations[newly] = it
        iterations[~ok] = maxiter
        done = ok
        if done.all() or it == maxiter:
            break
        prev = vals
        V = _orth_rows(W)
        W = _apply(matvec, V, n, batched)
        n_mv += k
    signs = np.sign(V[np.arange(k), np.abs(V).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return EigenResult(
        eigenvalues=vals,
        eigenvectors=V * signs[:, None],
        iterations=iterations,
        converged=done.copy(),
        residuals=res,
        n_matvecs=n_mv,
        method="power",
        which="LM",
    )


def lanczos(
    matvec: Matvec,
    n: int,
    k: int = 1,
    which: str = "LA",
    *,
    tol: float = 0.0,
    maxiter: int | None = None,
    ncv: int | None = None,
    seed: int = 0,
    v0=None,
    batched: bool = False,
) -> EigenResult:
    """k eigenpairs of a symmetric operator by thick-restart Lanczos.

    Lanczos with full re-orthogonalisation (classical Gram-Schmidt, repeated once when it
    cancels: the DGKS test) builds an orthonormal Krylov basis Q and the projected matrix
    ``T = Q^T H Q`` from the Gram-Schmidt coefficients.
    After every operator application the Ritz pairs ``(θ_i, y_i = Q s_i)`` of T are formed and
    the k wanted ones tested with the Ritz residual ``||H y_i - θ_i y_i|| = β |s_i[last]|``
    (β the norm of the new Krylov direction); the solve stops as soon as all k have
    ``β |s_i[last]| <= tol * |θ_i|`` (ARPACK's criterion, with |θ_i| floored at
    ``eps**(2/3) * max|θ|``). When the basis holds ``ncv`` vectors it is restarted thickly
    (Wu & Simon 2000): it keeps the k wanted Ritz vectors and ``(ncv - k) // 2`` more (the next
    ones in the order of ``which``) and goes on from the last Krylov direction, so the solve
    works for any k, either end or both, and any n with a basis of ``ncv`` vectors. Unlike power
    iteration it reaches the smallest algebraic eigenvalues (negative curvature) directly with
    ``which="SA"``. The solver's own products run with single-threaded BLAS (results do not
    depend on the BLAS thread count); so does ``matvec``.

    The residuals returned are recomputed from the operator's own outputs: the products
    ``H q_j`` of all basis vectors are kept (and combined at each restart), so that
    ``H y_i = (H Q) s_i`` is known without further operator applications.

    Like every single-vector Krylov method it sees one copy of a repeated eigenvalue in exact
    arithmetic; further copies appear through rounding, usually after more iterations. Use
    ``v0`` or a larger k (or block power iteration) when multiplicities matter.

    Parameters
    ----------
    matvec : callable
        As in :func:`power_iteration`.
    n : int
    k : int
        ``1 <= k < n``.
    which : {"LA", "SA", "LM"}
        Largest algebraic, smallest algebraic or largest magnitude.
    tol : float
        Relative accuracy of the Ritz residuals; 0 means machine precision (4 eps).
    maxiter : int, optional
        Restarts allowed (default ``10 * n``).
    ncv : int, optional
        Largest basis (default ``min(n, max(2k + 1, 20))``); ``k < ncv <= n``.
    seed : int
        Seed of the random starting vector (and of the random direction that continues the
        basis after an invariant subspace was found), for reproducibility.
    v0 : (n,) or (b, n) array, optional
        Warm start; several rows are summed into one starting vector.
    batched : bool
        Whether ``matvec`` takes blocks of rows.

    Returns
    -------
    EigenResult
        Pairs ordered as ``which`` says; ``iterations`` holds the operator applications (the
        same for all pairs); ``converged`` is False for the pairs that missed the tolerance
        within ``maxiter`` restarts (or whose recomputed residual disagrees with the Ritz
        estimate beyond rounding).
    """
    n, k = _check_n_k(n, k)
    which = check_choice(which, "which", ("LA", "SA", "LM"))
    tol = check_positive_float(tol, "tol", allow_zero=True)
    maxiter = 10 * n if maxiter is None else check_positive_int(maxiter, "maxiter")
    if ncv is None:
        ncv = min(n, max(2 * k + 1, 20))
    else:
        ncv = check_positive_int(ncv, "ncv")
        if not k < ncv <= n:
            raise ValueError(f"ncv must satisfy k < ncv <= n, got ncv={ncv}, k={k}, n={n}")
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(n)
    if v0 is not None:
        W = np.atleast_2d(as_float_array(v0, "v0", (1, 2)))
        if W.shape[1] != n:
            raise ValueError(f"v0 has length {W.shape[1]}, expected {n}")
        s = W.sum(axis=0)
        if np.linalg.norm(s) > 0:
            start = s / np.linalg.norm(s) + 1e-6 * start / np.sqrt(n)
    with serial_blas():
        return _thick_restart_lanczos(matvec, n, k, which, tol, maxiter, ncv, rng, start, batched)


_EPS = float(np.finfo(np.float64).eps)
_EPS23 = _EPS ** (2.0 / 3.0)
_DGKS = 1.0 / np.sqrt(2.0)  # re-orthogonalise when ||r|| < ||w|| / sqrt(2) (Daniel et al. 1976)


def _thick_restart_lanczos(matvec, n, k, which, tol, maxiter, ncv, rng, start, batched):
    tol_eff = tol if tol > 0 else 4.0 * _EPS
    keep = k + (ncv - k) // 2  # Ritz vectors kept at a restart (k <= keep < ncv)
    Q = np.empty((ncv + 1, n))  # orthonormal basis (rows); row m is the next direction
    HQ = np.empty((ncv, n))  # the operator's outputs H q_j
    T = np.zeros((ncv, ncv))  # Q^T H Q
    Q[0] = start / np.linalg.norm(start)
    m = 0
    n_mv = 0
    restarts = 0
    tridiagonal = True
    which_code = _lz.WHICH_CODES[which]
    while True:
        w = _apply(matvec, Q[m : m + 1], n, batched)[0]
        n_mv += 1
        HQ[m] = w
        beta = _lz.orthogonalize(Q, m, w, T, _DGKS)  # the new direction into Q[m + 1]
        m += 1
        theta, S, order, done, breakdown, anorm = _lz.ritz_test(
            T, m, tridiagonal, which_code, k, beta, tol_eff, _EPS23
        )
        if done or (m >= k and m == n):
            break
        if m >= k and restarts >= maxiter:
            break
        if breakdown:  # continue with a random direction orthogonal to the basis
            r = rng.standard_normal(n)
            for _ in range(2):  # the step's own projection, twice
                _lz.subtract_combination(Q, m, _lz.basis_dots(Q, m, r), r, r)
            beta = float(np.linalg.norm(r))
            Q[m] = r
        if m == ncv:  # thick restart: keep the wanted Ritz vectors and a few more
            tridiagonal = False
            kept = order[:keep]
            Sk = S[:, kept]
            kept_rows = Sk.T @ Q[:m]
            Q[keep] = Q[m]  # the next direction
            Q[:keep] = kept_rows
            HQ[:keep] = Sk.T @ HQ[:m]
            T[:] = 0.0
            T[np.arange(keep), np.arange(keep)] = theta[kept]
            m = keep
            restarts += 1
        Q[m] /= beta
    want = order[:k]
    vals = theta[want]
    denom = np.maximum(np.abs(vals), _EPS23 * anorm)
    est = np.zeros(k) if breakdown else beta * np.abs(S[m - 1, want])
    ok = est <= tol_eff * denom
    Sw = S[:, want]
    V = Sw.T @ Q[:m]
    HV = Sw.T @ HQ[:m]
    norms = np.linalg.norm(V, axis=1)
    V /= norms[:, None]
    HV /= norms[:, None]
    signs = np.sign(V[np.arange(k), np.abs(V).argmax(axis=1)])
    signs[signs == 0] = 1.0
    V *= signs[:, None]
    HV *= signs[:, None]
    true = np.linalg.norm(HV - vals[:, None] * V, axis=1)
    scale = max(np.abs(vals).max() * 1e-12, 1e-300)
    res = true / np.maximum(np.abs(vals), scale)
    # honest flags: the estimate met the tolerance and the recomputed residual agrees with it
    # up to rounding
    agrees = true <= np.maximum(10.0 * tol_eff * denom, 1e3 * _EPS * anorm)
    return EigenResult(
        eigenvalues=vals,
        eigenvectors=V,
        iterations=np.full(k, n_mv, dtype=np.int64),
        converged=np.asarray(ok & agrees, dtype=bool).reshape(k),
        residuals=res,
        n_matvecs=n_mv,
        method="lanczos",
        which=which,
    )


def hessian_matvec(model: MLP, theta, X, y=None, *, device: str = "cpu") -> Matvec:
    """The exact-HVP operator of ``model`` at a fixed ``theta``, for many products.

    Data, parameters and ``device`` are validated once, here. On the CPU the forward and
    backward passes at ``theta`` (activations, f', f'', deltas, softmax probabilities) are
    computed once, here, and every call applies Pearlmutter's R-operator to each of its vectors,
    one compiled pass per (sample block, vector) on Numba's threads, every product a BLAS call
    (``fastscape.kernels.hvp``); the partial results of the sample blocks stay under
    ``config.HVP_SCRATCH_BYTES`` (vectors go through in chunks). On the GPU each call
    runs the CUDA HVP kernel on a device copy of the data made once, here.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array, Batch, or DeviceBatch (from ``fastscape._device.to_device``)
    y : (n,) or (n, out) array
        None when ``X`` is a Batch.
    device : {"cpu", "cuda"}
        Where the products run.

    Returns
    -------
    callable
        ``V (b, P) -> (b, P)``: row i is ``H @ V[i]`` (H the Hessian of the mean loss at
        ``theta``); a single vector ``(P,)`` gives ``(P,)``. The operator keeps ``theta`` and the
        data as they were at this call.
    """
    device = _device.resolve_device(device)
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    theta = model.check_theta(theta).copy()
    data = model.batch(X, y)
    P = model.n_params

    def check(V) -> np.ndarray:
        V = as_float_array(V, "V", (1, 2))
        if V.shape[-1] != P:
            raise ValueError(f"V has rows of length {V.shape[-1]}, expected {P}")
        return V

    if device == "cuda":
        on_device = _device.to_device(data)

        def matvec_cuda(V):
            V = check(V)
            out = _device.mlp_hvp(model, theta, np.atleast_2d(V), on_device, "cuda")
            return out[0] if V.ndim == 1 else out

        return matvec_cuda

    apply = _device.cpu_hvp_operator(model, theta, data)

    def matvec(V):
        V = check(V)
        out = apply(np.ascontiguousarray(np.atleast_2d(V)))
        return out[0] if V.ndim == 1 else out

    return matvec


def _prepare(model, theta, X, y, device) -> tuple[np.ndarray, Batch, str]:
    """Shared checks of the model-level functions, the device first (``device="cuda"`` that
    cannot run here fails before any work); theta and data are checked as on the CPU."""
    device = _device.resolve_device(device)
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    theta = model.check_theta(theta)
    data = model.batch(X, y)
    return theta, data, device


def _exact_eigh(model: MLP, theta, data: Batch, max_params):
    H = model.hessian(theta, data, max_params=max_params)
    return np.linalg.eigh(0.5 * (H + H.T))


def top_eigen(
    model: MLP,
    theta,
    X,
    y=None,
    k: int = 1,
    method: str = "power",
    *,
    which: str = "LM",
    tol: float | None = None,
    maxiter: int | None = None,
    seed: int = 0,
    v0=None,
    max_params: int | None = None,
    device: str = "cpu",
) -> EigenResult:
    """Top-k Hessian eigenpairs of a model at ``theta``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    k : int
        ``1 <= k < P``.
    method : {"power", "lanczos", "exact"}
        ``power``: block power iteration on batched exact HVPs (k vectors per data pass);
        ``lanczos``: thick-restart Lanczos on exact HVPs (:func:`lanczos`, one HVP per step);
        ``exact``: ``numpy.linalg.eigh`` of the exact
        Hessian (small models: at most ``max_params`` parameters).
    which : {"LM", "LA", "SA"}
        Which end: largest magnitude (the "top" eigenvalue, λmax at a minimum), largest or
        smallest algebraic. Power iteration finds only ``"LM"``.
    tol : float, optional
        Default 1e-6 for power iteration, 0 (machine precision) for Lanczos.
    maxiter : int, optional
        Default 1000 iterations (power) / ``10 P`` restarts (Lanczos).
    seed : int
    v0 : (P,) or (b, P) array, optional
        Warm start, e.g. ``previous.eigenvectors``.
    max_params : int, optional
        Size limit of the exact Hessian (see :meth:`MLP.hessian`).
    device : {"cpu", "cuda"}
        Where the HVPs run (``power``, ``lanczos``): with ``"cuda"`` the data are copied to
        the GPU once and every HVP of the solve runs there; the eigensolver's own small dense
        algebra stays on the CPU. ``exact`` forms the Hessian on the CPU whatever the device
        (it is meant for small models, where a GPU would not help).

    Returns
    -------
    EigenResult
    """
    method = check_choice(method, "method", ("power", "lanczos", "exact"))
    which = check_choice(which, "which", ("LM", "LA", "SA"))
    theta, data, device = _prepare(model, theta, X, y, device)
    P = model.n_params
    _check_n_k(P, k)
    if method == "exact":
        vals, vecs = _exact_eigh(model, theta, data, max_params)
        order = _order(vals, which)[:k]
        V = _fix_signs(np.ascontiguousarray(vecs[:, order].T))
        return EigenResult(
            eigenvalues=vals[order],
            eigenvectors=V,
            iterations=np.zeros(k, dtype=np.int64),
            converged=np.ones(k, dtype=bool),
            residuals=np.zeros(k),
            n_matvecs=0,
            method="exact",
            which=which,
        )
    mv = hessian_matvec(model, theta, data, device=device)
    if method == "power":
        if which != "LM":
            raise ValueError(
                f"power iteration finds the largest-magnitude eigenvalues only (which='LM'), "
                f"got which={which!r}; use method='lanczos' for 'LA' or 'SA'"
            )
        return power_iteration(
            mv, P, k, tol=1e-6 if tol is None else tol, maxiter=maxiter or 1000, seed=seed,
            v0=v0, batched=True,
        )  # fmt: skip
    return lanczos(
        mv, P, k, which, tol=0.0 if tol is None else tol, maxiter=maxiter, seed=seed, v0=v0,
        batched=True,
    )  # fmt: skip


# ----------------------------------------------------------------------------- trace
def _rademacher(rng, shape) -> np.ndarray:
    return rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0


def hutchinson(
    matvec: Matvec,
    n: int,
    n_samples: int = 100,
    *,
    seed: int = 0,
    block: int = 32,
    batched: bool = False,
) -> TraceResult:
    """Hutchinson's trace estimator with Rademacher probes.

    ``tr(A) ≈ (1/m) sum_i z_i^T A z_i`` with ``z_i`` uniform on {-1, +1}^n; unbiased, with
    variance ``2 (||A||_F^2 - sum_i A_ii^2) / m``. The standard error is the sample standard
    deviation of the ``z_i^T A z_i`` over ``sqrt(m)``.

    Parameters
    ----------
    matvec : callable
        As in :func:`power_iteration`.
    n : int
    n_samples : int
        Number of probes m (>= 2).
    seed : int
    block : int
        Probes per (batched) operator call.
    batched : bool

    Returns
    -------
    TraceResult
    """
    n = check_positive_int(n, "n")
    m = check_positive_int(n_samples, "n_samples", minimum=2)
    block = check_positive_int(block, "block")
    rng = np.random.default_rng(seed)
    vals = np.empty(m)
    for s in range(0, m, block):
        Z = _rademacher(rng, (min(block, m - s), n))
        vals[s : s + Z.shape[0]] = np.einsum("ij,ij->i", Z, _apply(matvec, Z, n, batched))
    return TraceResult(
        estimate=float(vals.mean()),
        std_error=float(vals.std(ddof=1) / np.sqrt(m)),
        n_matvecs=m,
        method="hutchinson",
        samples=vals,
    )


def hutchpp(
    matvec: Matvec,
    n: int,
    n_samples: int = 99,
    *,
    seed: int = 0,
    batched: bool = False,
) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): low-rank sketch plus Hutchinson.

    With m = ``n_samples`` operator applications split in three: S (n, m/3) Rademacher,
    Q = orth(A S); then ``tr(A) = tr(Q^T A Q) + tr((I - QQ^T) A (I - QQ^T))`` and the second
    term is estimated by Hutchinson with m/3 probes G: ``(3/m) tr(G^T (I-QQ^T) A (I-QQ^T) G)``.
    Its error falls like 1/m instead of 1/sqrt(m) when the spectrum decays. The standard error
    reported is that of the Hutchinson part given Q (the first term is exact given Q).

    Parameters
    ----------
    matvec : callable
    n : int
    n_samples : int
        Total operator applications (>= 6; rounded down to a multiple of 3).
    seed : int
    batched : bool

    Returns
    -------
    TraceResult
    """
    n = check_positive_int(n, "n")
    m = check_positive_int(n_samples, "n_samples", minimum=6)
    rng = np.random.default_rng(seed)
    b = m // 3
    r = min(b, n)
    S = _rademacher(rng, (r, n))
    G = _rademacher(rng, (b, n))
    Q = _orth_rows(_apply(matvec, S, n, batched))  # (r, n) orthonormal rows
    head = float(np.einsum("ij,ij->i", Q, _apply(matvec, Q, n, batched)).sum())
    Gp = G - (G @ Q.T) @ Q
    vals = np.einsum("ij,ij->i", Gp, _apply(matvec, Gp, n, batched))
    if r == n:  # the sketch spans everything: the head term is the trace
        vals = np.zeros(b)
    return TraceResult(
        estimate=head + float(vals.mean()),
        std_error=float(vals.std(ddof=1) / np.sqrt(b)),
        n_matvecs=2 * r + b,
        method="hutch++",
        samples=vals,
    )


def hessian_trace(
    model: MLP,
    theta,
    X,
    y=None,
    method: str = "hutchinson",
    *,
    n_samples: int = 100,
    seed: int = 0,
    max_params: int | None = None,
    device: str = "cpu",
) -> TraceResult:
    """Trace of the Hessian of a model at ``theta``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"hutchinson", "hutch++", "exact"}
        Stochastic estimates on batched exact HVPs (see :func:`hutchinson`, :func:`hutchpp`),
        or the sum of the diagonal of the exact Hessian (small models).
    n_samples : int
        Probes (Hutchinson) or total HVPs (Hutch++).
    seed : int
    max_params : int, optional
        Size limit of the exact Hessian.
    device : {"cpu", "cuda"}
        Where the HVPs of the probes run (the data are copied to the GPU once per call);
        ``exact`` forms the Hessian on the CPU whatever the device.

    Returns
    -------
    TraceResult
    """
    method = check_choice(method, "method", ("hutchinson", "hutch++", "exact"))
    theta, data, device = _prepare(model, theta, X, y, device)
    if method == "exact":
        H = model.hessian(theta, data, max_params=max_params)
        return TraceResult(float(np.trace(H)), 0.0, 0, "exact", np.empty(0))
    mv = hessian_matvec(model, theta, data, device=device)
    if method == "hutchinson":
        return hutchinson(mv, model.n_params, n_samples, seed=seed, batched=True)
    return hutchpp(mv, model.n_params, n_samples, seed=seed, batched=True)


# ----------------------------------------------------------------------------- spectral density
def _lanczos_runs(matvec, n, n_runs, m, rng, batched):
    """n_runs Lanczos recurrences of m steps in lockstep (one block matvec per step), with full
    re-orthogonalisation (classical Gram-Schmidt, twice). Returns alpha, beta (r, m), steps."""
    Q = np.zeros((n_runs, m, n))
    alpha = np.zeros((n_runs, m))
    beta = np.zeros((n_runs, m))
    steps = np.full(n_runs, m, dtype=np.int64)
    Z = _rademacher(rng, (n_runs, n))
    Q[:, 0] = Z / np.sqrt(n)
    active = np.ones(n_runs, dtype=bool)
    for j in range(m):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        W = _apply(matvec, np.ascontiguousarray(Q[idx, j]), n, batched)
        for a, w in zip(idx, W):
            q = Q[a, j]
            alpha[a, j] = q @ w
            w = w - alpha[a, j] * q
            if j > 0:
                w -= beta[a, j - 1] * Q[a, j - 1]
            B = Q[a, : j + 1]
            for _ in range(2):
                w -= B.T @ (B @ w)
            b = float(np.linalg.norm(w))
            if j + 1 >= m:
                continue
            scale = max(np.abs(alpha[a, : j + 1]).max(), beta[a, :j].max(initial=0.0), 1e-300)
            if b <= 1e-10 * scale:  # invariant subspace: the quadrature is exact
                steps[a] = j + 1
                active[a] = False
            else:
                beta[a, j] = b
                Q[a, j + 1] = w / b
    return alpha, beta, steps


def _gaussian_density(nodes, weights, sigma, grid) -> np.ndarray:
    dens = np.zeros_like(grid)
    mask = weights > 0
    for t, w in zip(nodes[mask], weights[mask]):
        dens += w * np.exp(-0.5 * ((grid - t) / sigma) ** 2)
    return dens / (sigma * np.sqrt(2.0 * np.pi) * nodes.shape[0])


def _grid_and_sigma(nodes, weights, sigma, grid, n_grid):
    used = nodes[weights > 0]
    lo, hi = float(used.min()), float(used.max())
    if sigma is None:
        width = hi - lo
        sigma = 0.01 * width if width > 0 else 0.01 * max(abs(hi), 1.0)
    sigma = check_positive_float(sigma, "sigma")
    if grid is None:
        n_grid = check_positive_int(n_grid, "n_grid", minimum=2)
        a, b = lo - 6.0 * sigma, hi + 6.0 * sigma
        n_grid = int(min(max(n_grid, np.ceil(3.0 * (b - a) / sigma) + 1), 2_000_000))
        grid = np.linspace(a, b, n_grid)
    else:
        grid = as_float_array(grid, "grid", 1)
        if grid.size < 2 or not (np.diff(grid) > 0).all():
            raise ValueError("grid must be strictly increasing with at least 2 points")
    return grid, sigma


def slq(
    matvec: Matvec,
    n: int,
    *,
    n_runs: int = 10,
    n_iter: int = 80,
    sigma: float | None = None,
    grid=None,
    n_grid: int = 1000,
    seed: int = 0,
    batched: bool = False,
) -> DensityResult:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Each run starts Lanczos from a normalised Rademacher vector v and takes m = ``n_iter``
    steps with full re-orthogonalisation; the eigenpairs (θ_j, u_j) of the tridiagonal matrix
    give the Gauss quadrature ``v^T f(H) v ≈ sum_j u_j[0]^2 f(θ_j)``, so the measure
    ``sum_j u_j[0]^2 δ(t - θ_j)`` estimates the spectral density ``(1/n) sum_i δ(t - λ_i)``.
    The runs are averaged and each node is broadened into a Gaussian of standard deviation σ.
    All runs advance together: one block HVP per Lanczos step.

    Parameters
    ----------
    matvec : callable
    n : int
    n_runs : int
        Independent starting vectors (the runs' spread gives the error bars of the moments).
    n_iter : int
        Lanczos steps per run (capped at n; with n steps the nodes are the exact eigenvalues).
    sigma : float, optional
        Broadening. Default: 1% of the spread of the nodes, ``0.01 (max θ - min θ)``.
    grid : (g,) array, optional
        Where to evaluate the density. Default: ``n_grid`` points (more if needed for a spacing
        of at most σ/3) from ``min θ - 6σ`` to ``max θ + 6σ``.
    n_grid : int
    seed : int
    batched : bool

    Returns
    -------
    DensityResult
    """
    n = check_positive_int(n, "n")
    n_runs = check_positive_int(n_runs, "n_runs")
    m = min(check_positive_int(n_iter, "n_iter"), n)
    rng = np.random.default_rng(seed)
    alpha, beta, steps = _lanczos_runs(matvec, n, n_runs, m, rng, batched)
    nodes = np.full((n_runs, m), np.nan)
    weights = np.zeros((n_runs, m))
    for r in range(n_runs):
        s = steps[r]
        T = np.diag(alpha[r, :s]) + np.diag(beta[r, : s - 1], 1) + np.diag(beta[r, : s - 1], -1)
        th, U = np.linalg.eigh(T)
        nodes[r, :s] = th
        weights[r, :s] = U[0] ** 2
    grid, sigma = _grid_and_sigma(nodes, weights, sigma, grid, n_grid)
    return DensityResult(
        grid=grid,
        density=_gaussian_density(nodes, weights, sigma, grid),
        sigma=sigma,
        nodes=nodes,
        weights=weights,
        method="slq",
    )


def spectral_density(
    model: MLP,
    theta,
    X,
    y=None,
    method: str = "slq",
    *,
    n_runs: int = 10,
    n_iter: int = 80,
    sigma: float | None = None,
    grid=None,
    n_grid: int = 1000,
    bins: int = 50,
    seed: int = 0,
    max_params: int | None = None,
    device: str = "cpu",
) -> DensityResult:
    """Hessian eigenvalue density of a model at ``theta``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"slq", "exact"}
        ``slq``: stochastic Lanczos quadrature on batched exact HVPs (see :func:`slq`);
        ``exact``: all eigenvalues of the exact Hessian (small models), broadened the same way
        (weights 1/P), with their histogram in ``hist`` / ``hist_edges``.
    n_runs, n_iter, sigma, grid, n_grid, seed
        See :func:`slq` (``sigma`` and ``grid`` apply to both methods).
    bins : int
        Histogram bins (``exact``).
    max_params : int, optional
        Size limit of the exact Hessian.
    device : {"cpu", "cuda"}
        Where the HVPs of the Lanczos runs (``slq``) run (the data are copied to the GPU once
        per call); ``exact`` forms the Hessian on the CPU whatever the device.

    Returns
    -------
    DensityResult
    """
    method = check_choice(method, "method", ("slq", "exact"))
    theta, data, device = _prepare(model, theta, X, y, device)
    if method == "slq":
        mv = hessian_matvec(model, theta, data, device=device)
        return slq(
            mv, model.n_params, n_runs=n_runs, n_iter=n_iter,
            sigma=sigma, grid=grid, n_grid=n_grid, seed=seed, batched=True,
        )  # fmt: skip
    vals = np.linalg.eigvalsh(model.hessian(theta, data, max_params=max_params))
    return exact_density(vals, sigma=sigma, grid=grid, n_grid=n_grid, bins=bins)


def exact_density(
    eigenvalues, *, sigma: float | None = None, grid=None, n_grid: int = 1000, bins: int = 50
) -> DensityResult:
    """Broadened density and histogram of a known spectrum (all P eigenvalues, weights 1/P).

    Parameters
    ----------
    eigenvalues : (P,) array
    sigma, grid, n_grid
        Broadening width and evaluation grid, as in :func:`slq`.
    bins : int
        Bins of the histogram.

    Returns
    -------
    DensityResult
    """
    bins = check_positive_int(bins, "bins")
    vals = np.sort(as_float_array(eigenvalues, "eigenvalues", 1))
    nodes = vals[None, :]
    weights = np.full((1, vals.size), 1.0 / vals.size)
    grid, sigma = _grid_and_sigma(nodes, weights, sigma, grid, n_grid)
    hist, edges = np.histogram(vals, bins=bins, density=True)
    return DensityResult(
        grid=grid,
        density=_gaussian_density(nodes, weights, sigma, grid),
        sigma=sigma,
        nodes=nodes,
        weights=weights,
        method="exact",
        eigenvalues=vals,
        hist=hist,
        hist_edges=edges,
    )
