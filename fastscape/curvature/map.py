"""λmax and λmin of the Hessian along a chain of points: the worker of the curvature maps.

:func:`fastscape.landscape.curvature_map` (Li et al. 2018's convexity maps) validates the grid,
orders its points along a serpentine scan, cuts the scan into tiles and hands each tile to
:func:`solve_chain`. Within a chain every point's solves start from the eigenvectors of the
point before it (neighbours on the grid, so a few products suffice); the first point of a
chain starts cold, from the random vector of ``seed``. A chain's results therefore depend only
on its own points and settings, never on which chains ran before: that is what makes a
checkpointed map resume with the same bits.

Methods per point:

- ``"exact"``: ``numpy.linalg.eigvalsh`` of the exact Hessian (small models);
- ``"lanczos"``: one thick-restart Lanczos basis for both ends (every product serves λmax and
  λmin; a restart keeps Ritz vectors of both ends), warm-started from the sum of the previous
  point's two eigenvectors, then the verification restart of
  :func:`fastscape.curvature.lanczos` for each end (the rank of each value established);
- ``"power"``: power iteration for the eigenvalue of largest magnitude λ₁, then power
  iteration on the shifted operator ``H - λ₁ I`` for the other end (what loss-landscape does
  with ARPACK); slower to converge where the spectrum's ends are close in magnitude.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator

from ..kernels._blas import serial_blas
from ..models import MLP, Batch
from ._common import Progress, apply_rows, check_budget, krylov_budget, row_signs
from .eigen import _verify_ranks, power_iteration
from .operator import HessianOperator

__all__ = ["METHODS", "ChainResult", "ShiftedOperator", "solve_chain"]

#: The per-point methods of :func:`solve_chain`.
METHODS = ("exact", "lanczos", "power")

_EPS = np.finfo(np.float64).eps
_EPS23 = _EPS ** (2.0 / 3.0)
#: Largest basis of the two-ended Lanczos solve (``ncv // 4`` Ritz vectors kept at each end).
NCV = 24


class ChainResult(NamedTuple):
    """The two ends of the spectrum at each point of a chain (m points).

    Attributes
    ----------
    lambda_max, lambda_min : (m,) float64 arrays
        Largest and smallest eigenvalue (for an unconverged solve: the solver's last Ritz
        value, an inner bound of the true one).
    converged_max, converged_min : (m,) bool arrays
        The solver's ``converged`` flag of each end (True for ``"exact"``).
    hvps_max, hvps_min : (m,) int64 arrays
        Hessian-vector products spent on each end (0 for ``"exact"``; with ``"lanczos"`` the
        shared two-ended solve is counted at λmax, each end's verification at its own end;
        with ``"power"`` the first solve is counted at the end it found, the shifted one at
        the other).
    """

    lambda_max: np.ndarray
    lambda_min: np.ndarray
    converged_max: np.ndarray
    converged_min: np.ndarray
    hvps_max: np.ndarray
    hvps_min: np.ndarray


class ShiftedOperator(LinearOperator):
    """``H - shift I`` for a symmetric operator H, keeping H's batched row product.

    Parameters
    ----------
    H : LinearOperator (n, n)
        With a ``rows`` method (a :class:`HessianOperator`) or without.
    shift : float
    """

    def __init__(self, H: LinearOperator, shift: float):
        self.base = H
        self.shift = float(shift)
        super().__init__(dtype=np.dtype(np.float64), shape=H.shape)

    def rows(self, V) -> np.ndarray:
        """``(H - shift I) V[i]`` for the rows of V (b, n)."""
        V = np.asarray(V, dtype=np.float64)
        rows = getattr(self.base, "rows", None)
        HV = rows(V) if rows is not None else np.asarray(self.base.matmat(V.T)).T
        return HV - self.shift * V

    def _matvec(self, x):
        return self.rows(np.reshape(x, (1, -1)))[0]

    def _matmat(self, X):
        return self.rows(np.asarray(X).T).T

    def _rmatvec(self, x):
        return self._matvec(x)

    def _adjoint(self) -> ShiftedOperator:
        return self


class _Ends(NamedTuple):
    """The two ends of one point's spectrum from one Krylov space (before verification)."""

    vals: np.ndarray  # (2,) [λmax, λmin] Ritz values
    V: np.ndarray  # (2, n) their unit Ritz vectors (signs fixed)
    HV: np.ndarray  # (2, n) the operator's outputs for them
    abs_res: np.ndarray  # (2,) ||H v - θ v|| recomputed from HV
    ok: np.ndarray  # (2,) bool: Ritz estimate met the tolerance and abs_res agrees with it
    anorm: float  # max |θ| seen
    status: str  # "converged" or "budget"
    n_mv: int
    nxt: tuple  # the Ritz vector after each wanted one ((n,) arrays or None): verification starts


def _both_ends(H, start, tol_eff, max_hvps, ncv, rng) -> _Ends:
    """λmax and λmin of a symmetric operator from one thick-restart Lanczos basis.

    Lanczos with full re-orthogonalisation (classical Gram-Schmidt, always twice) keeps the
    whole projected matrix ``T = Q^T H Q`` (column j from the coefficients of ``H q_j``), so a
    thick restart may keep Ritz vectors from both ends: ``ncv // 4`` of the largest and as many
    of the smallest. Every product serves both ends; the solve stops when both extreme Ritz
    pairs meet ``β |s[last]| <= tol * max(|θ|, eps**(2/3) max|θ|)`` (the criterion of
    :func:`fastscape.curvature.lanczos`), or when ``max_hvps`` products are spent. As there,
    the residuals are recomputed from the operator's kept outputs ``H Q`` and a pair is flagged
    only when they agree with the estimate.
    """
    n = H.shape[0]
    ncv = min(ncv, n)
    half = max(1, ncv // 4)
    Q = np.empty((ncv + 1, n))
    HQ = np.empty((ncv, n))
    T = np.zeros((ncv, ncv))
    Q[0] = start / np.linalg.norm(start)
    m = n_mv = 0
    status = "converged"
    while True:
        w = apply_rows(H, Q[m : m + 1])[0]
        n_mv += 1
        HQ[m] = w
        B = Q[: m + 1]
        c = B @ w
        w = w - c @ B
        c2 = B @ w
        w -= c2 @ B
        c += c2
        T[: m + 1, m] = c
        T[m, : m + 1] = c
        beta = float(np.linalg.norm(w))
        m += 1
        theta, S = np.linalg.eigh(T[:m, :m])
        anorm = float(np.abs(theta).max())
        ends = np.array([m - 1, 0])
        denom = np.maximum(np.abs(theta[ends]), _EPS23 * anorm)
        breakdown = beta <= _EPS * max(anorm, 1e-300) * np.sqrt(n)
        est = np.zeros(2) if breakdown else beta * np.abs(S[m - 1, ends])
        if (est <= tol_eff * denom).all() or m == n:
            break
        if n_mv >= max_hvps:
            status = "budget"
            break
        if breakdown:  # continue with a random direction orthogonal to the basis
            w = rng.standard_normal(n)
            for _ in range(2):
                w -= (Q[:m] @ w) @ Q[:m]
            beta = float(np.linalg.norm(w))
        Q[m] = w / beta
        if m == ncv:  # thick restart: keep `half` Ritz vectors at each end
            kept = np.r_[np.arange(half), np.arange(m - half, m)]
            Sk = S[:, kept]
            k2 = kept.size
            nxt_dir = Q[m].copy()
            Q[:k2] = Sk.T @ Q[:m]
            HQ[:k2] = Sk.T @ HQ[:m]
            Q[k2] = nxt_dir
            T[:] = 0.0
            T[np.arange(k2), np.arange(k2)] = theta[kept]
            m = k2
    ends = np.array([m - 1, 0])
    vals = theta[ends]
    denom = np.maximum(np.abs(vals), _EPS23 * anorm)
    ok = est <= tol_eff * denom
    Sw = S[:, ends]
    V = Sw.T @ Q[:m]
    HV = Sw.T @ HQ[:m]
    norms = np.linalg.norm(V, axis=1)
    V /= norms[:, None]
    HV /= norms[:, None]
    signs = row_signs(V)
    V *= signs[:, None]
    HV *= signs[:, None]
    true = np.linalg.norm(HV - vals[:, None] * V, axis=1)
    ok &= true <= np.maximum(10.0 * tol_eff * denom, 1e3 * _EPS * anorm)
    if status == "converged" and not ok.all():
        status = "not_converged"
    nxt = (None, None)
    if m > 2:
        a, b = S[:, m - 2] @ Q[:m], S[:, 1] @ Q[:m]
        nxt = (a / np.linalg.norm(a), b / np.linalg.norm(b))
    return _Ends(vals, V, HV, true, ok, anorm, status, n_mv, nxt)


def _verified_end(H, ends, i, which, tol_eff, budget, rng, verify):
    """(value, vector, flag, verification HVPs) of end i (0: λmax, "LA"; 1: λmin, "SA") of a
    two-ended solve, after the verification restart of :func:`fastscape.curvature.lanczos`
    (run only where the end met its residual test)."""
    val, vec, ok = float(ends.vals[i]), ends.V[i], bool(ends.ok[i])
    if not verify:
        return val, vec, ok, 0
    if not ok:
        return val, vec, False, 0
    chk = _verify_ranks(
        H, H.shape[0], 1, which, ends.vals[i : i + 1], ends.V[i : i + 1], ends.HV[i : i + 1],
        ends.abs_res[i : i + 1], ends.ok[i : i + 1], ends.anorm, tol_eff, budget, 20,
        rng, Progress(False, None, ""), ends.nxt[i],
    )  # fmt: skip
    return float(chk.vals[0]), chk.V[0], bool(chk.ok[0] and chk.verified), int(chk.n_mv)


def _two_ended_point(H, start_vecs, tol, max_hvps, seed, verify):
    """λmax, λmin, flags, HVP counts and vectors at one point (method ``"lanczos"``)."""
    n = H.shape[0]
    budget = check_budget(max_hvps, krylov_budget(n), minimum=1)
    rng = np.random.default_rng(seed)
    start = rng.standard_normal(n)
    if start_vecs is not None:
        s = start_vecs[0] + start_vecs[1]
        if np.linalg.norm(s) > 0:
            start = s / np.linalg.norm(s) + 1e-6 * start / np.sqrt(n)
    tol_eff = tol if tol > 0 else 4.0 * _EPS
    with serial_blas():
        ends = _both_ends(H, start, tol_eff, budget, NCV, rng)
        left = budget - ends.n_mv
        hi = _verified_end(H, ends, 0, "LA", tol_eff, left, rng, verify)
        lo = _verified_end(H, ends, 1, "SA", tol_eff, left, rng, verify)
    return hi, lo, ends.n_mv


def _warm(result):
    """The start of the next point's solve: this point's eigenvector (converged or not)."""
    return None if result is None else result.eigenvectors


def _flag(result, verify: bool) -> bool:
    """A pair's flag: converged and verified, or (``verify=False``) its residual test."""
    return bool((result.converged if verify else result.residual_converged)[0])


def solve_chain(
    model: MLP,
    data: Batch,
    thetas: np.ndarray,
    method: str,
    tol: float,
    max_hvps: int | None,
    seed: int,
    max_params: int | None = None,
    verify: bool = True,
) -> ChainResult:
    """λmax and λmin at each point of a chain, each solve warm-started from the previous point.

    The caller validates everything (model, data, parameter vectors, method, tolerance).

    Parameters
    ----------
    model : MLP
    data : Batch
        The validated data (on the host).
    thetas : (m, P) array
        The points, in chain order (neighbours next to each other).
    method : {"exact", "lanczos", "power"}
    tol : float
        Relative tolerance of each iterative solve.
    max_hvps : int or None
        Budget of each solve (None: the solver's default).
    seed : int
        Seed of every solve's random start (the whole start at the chain's first point, a tiny
        perturbation of the warm start after it).
    max_params : int, optional
        Size limit of the exact Hessian (``"exact"``).
    verify : bool
        The solvers' verification restart (the rank of each value established). With False
        a point's flag is the residual test alone (``EigenResult.residual_converged``), the
        guarantee ARPACK gives.

    Returns
    -------
    ChainResult
    """
    m = thetas.shape[0]
    lmax, lmin = np.empty(m), np.empty(m)
    cmax, cmin = np.zeros(m, dtype=bool), np.zeros(m, dtype=bool)
    hmax, hmin = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    prev_a = prev_b = None  # the last results at the two ends (or of the two power solves)
    for j in range(m):
        theta = thetas[j]
        if method == "exact":
            H = model.hessian(theta, data, max_params=max_params)
            vals = np.linalg.eigvalsh(0.5 * (H + H.T))
            lmax[j], lmin[j] = vals[-1], vals[0]
            cmax[j] = cmin[j] = True
            continue
        H = HessianOperator(model, theta, data)
        if method == "lanczos":
            hi, lo, shared = _two_ended_point(H, prev_a, tol, max_hvps, seed, verify)
            lmax[j], lmin[j] = hi[0], lo[0]
            cmax[j], cmin[j] = hi[2], lo[2]
            hmax[j], hmin[j] = shared + hi[3], lo[3]
            prev_a = (hi[1], lo[1])
            continue
        kw = {"tol": tol, "max_hvps": max_hvps, "seed": seed, "verify": verify}
        first = power_iteration(H, 1, v0=_warm(prev_a), **kw)
        lam1 = float(first.eigenvalues[0])
        second = power_iteration(ShiftedOperator(H, lam1), 1, v0=_warm(prev_b), **kw)
        lam2 = float(second.eigenvalues[0]) + lam1
        ok1, ok2 = _flag(first, verify), _flag(second, verify)
        if lam1 >= lam2:
            lmax[j], lmin[j], cmax[j], cmin[j] = lam1, lam2, ok1, ok2
            hmax[j], hmin[j] = first.n_hvps, second.n_hvps
        else:
            lmax[j], lmin[j], cmax[j], cmin[j] = lam2, lam1, ok2, ok1
            hmax[j], hmin[j] = second.n_hvps, first.n_hvps
        prev_a, prev_b = first, second
    return ChainResult(lmax, lmin, cmax, cmin, hmax, hmin)
