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
from ._common import apply_rows, check_budget, krylov_budget, row_signs
from .eigen import power_iteration, verify_pair
from .operator import HessianOperator, SymmetricRowOperator

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
        products that serve both ends (the two-ended solve and the joint verification) are
        split evenly between them, the odd one to λmax, and a per-end verification counts at
        its own end;
        with ``"power"`` the first solve is counted at the end it found, the shifted one at
        the other).
    """

    lambda_max: np.ndarray
    lambda_min: np.ndarray
    converged_max: np.ndarray
    converged_min: np.ndarray
    hvps_max: np.ndarray
    hvps_min: np.ndarray


class ShiftedOperator(SymmetricRowOperator):
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


class _Basis(NamedTuple):
    """The state of a two-ended Lanczos run when it stopped."""

    Q: np.ndarray  # (m, n) orthonormal basis
    HQ: np.ndarray  # (m, n) the operator's outputs for it (projected out of ``locked``)
    theta: np.ndarray  # (m,) Ritz values, ascending
    S: np.ndarray  # (m, m) their vectors in the basis
    beta: float  # norm of the next Krylov direction (0 after a breakdown)
    anorm: float  # max |θ| seen
    status: str  # "stopped" (``stop`` said so, or the space is exhausted) or "budget"
    n_mv: int


def _lanczos_both(H, start, max_hvps, ncv, rng, stop, locked=None) -> _Basis:
    """Thick-restart Lanczos keeping Ritz vectors at both ends of the spectrum.

    Full re-orthogonalisation (classical Gram-Schmidt, always twice) gives the whole projected
    matrix ``T = Q^T H Q`` (column j from the coefficients of ``H q_j``), so a restart may keep
    Ritz vectors of both ends: ``ncv // 4`` of the largest and as many of the smallest, and
    every product serves both ends. With ``locked`` (L, n) orthonormal rows the run stays in
    their orthogonal complement (every product and direction projected out of them). After
    each product ``stop(theta, S, beta, anorm)`` (Ritz values ascending, their vectors, the
    norm of the next direction, 0 after a breakdown) decides whether to stop; the run also
    stops when the space is exhausted or ``max_hvps`` products are spent.
    """
    n = H.shape[0]
    n_eff = n if locked is None else n - locked.shape[0]
    ncv = min(ncv, n_eff)
    half = max(1, ncv // 4)
    Q = np.empty((ncv + 1, n))
    HQ = np.empty((ncv, n))
    T = np.zeros((ncv, ncv))
    if locked is not None:
        start = _project_out(locked, start.copy())
    Q[0] = start / np.linalg.norm(start)
    m = n_mv = 0
    status = "stopped"
    while True:
        w = apply_rows(H, Q[m : m + 1])[0]
        n_mv += 1
        if locked is not None:
            _project_out(locked, w)
        HQ[m] = w
        B = Q[: m + 1]
        c = B @ w
        w = w - c @ B
        c2 = B @ w
        w -= c2 @ B
        c += c2
        if locked is not None:
            _project_out(locked, w)
        T[: m + 1, m] = c
        T[m, : m + 1] = c
        beta = float(np.linalg.norm(w))
        m += 1
        theta, S = np.linalg.eigh(T[:m, :m])
        anorm = float(np.abs(theta).max())
        if beta <= _EPS * max(anorm, 1e-300) * np.sqrt(n):  # breakdown: an invariant subspace
            beta = 0.0
        if stop(theta, S, beta, anorm) or m == n_eff:
            break
        if n_mv >= max_hvps:
            status = "budget"
            break
        if beta == 0.0:  # continue with a random direction orthogonal to the basis
            w = rng.standard_normal(n)
            for _ in range(2):
                w -= (Q[:m] @ w) @ Q[:m]
                if locked is not None:
                    _project_out(locked, w)
            Q[m] = w / np.linalg.norm(w)
        else:
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
    return _Basis(Q[:m], HQ[:m], theta, S, beta, anorm, status, n_mv)


def _project_out(L, w):
    """``w`` minus its components along the orthonormal rows of L (twice), in place."""
    for _ in range(2):
        w -= (L @ w) @ L
    return w


def _end_estimates(theta, S, beta, anorm):
    """Ritz residual estimates ``β |s[last]|`` and denominators of the two extreme pairs
    ([largest, smallest])."""
    ends = np.array([theta.size - 1, 0])
    est = beta * np.abs(S[-1, ends])
    return est, np.maximum(np.abs(theta[ends]), _EPS23 * anorm)


def _both_ends(H, start, tol_eff, max_hvps, ncv, rng) -> _Ends:
    """λmax and λmin of a symmetric operator from one two-ended Lanczos run (:func:`_lanczos_
    both`) that stops when both extreme Ritz pairs meet ``β |s[last]| <= tol * max(|θ|,
    eps**(2/3) max|θ|)`` (the criterion of :func:`fastscape.curvature.lanczos`), or when
    ``max_hvps`` products are spent. As there, the residuals are recomputed from the operator's
    kept outputs ``H Q`` and a pair is flagged only when they agree with the estimate."""

    def stop(theta, S, beta, anorm):
        est, denom = _end_estimates(theta, S, beta, anorm)
        return bool((est <= tol_eff * denom).all())

    run = _lanczos_both(H, start, max_hvps, ncv, rng, stop)
    m = run.theta.size
    est, denom = _end_estimates(run.theta, run.S, run.beta, run.anorm)
    ends = np.array([m - 1, 0])
    vals = run.theta[ends]
    ok = est <= tol_eff * denom
    Sw = run.S[:, ends]
    V = Sw.T @ run.Q
    HV = Sw.T @ run.HQ
    norms = np.linalg.norm(V, axis=1)
    V /= norms[:, None]
    HV /= norms[:, None]
    signs = row_signs(V)
    V *= signs[:, None]
    HV *= signs[:, None]
    true = np.linalg.norm(HV - vals[:, None] * V, axis=1)
    ok &= true <= np.maximum(10.0 * tol_eff * denom, 1e3 * _EPS * run.anorm)
    status = "budget" if run.status == "budget" else "converged"
    nxt = (None, None)
    if m > 2:
        a, b = run.S[:, m - 2] @ run.Q, run.S[:, 1] @ run.Q
        nxt = (a / np.linalg.norm(a), b / np.linalg.norm(b))
    return _Ends(vals, V, HV, true, ok, run.anorm, status, run.n_mv, nxt)


def _verify_both(H, ends, tol_eff, budget, rng):
    """The verification restart of both ends at once: (verified λmax, verified λmin, HVPs).

    One two-ended Lanczos run (:func:`_lanczos_both`) from a random vector in the orthogonal
    complement of the two pairs found (plus the Ritz vectors after them, for speed), as
    :func:`fastscape.curvature.lanczos` runs one per end. An end is established when the
    complement's extreme Ritz pair at that end has converged to ``sqrt(tol)`` and its
    interval ``θ ± β|s[last]|`` lies inside the value found by more than the pair's residual
    norm, or when it has converged to ``tol`` without coming out beyond the value found by
    more than the two residual norms. It fails (False) when the complement's Ritz value comes
    out beyond the value found by more than the residual norms (a Ritz value is an inner
    bound, so the operator has an eigenvalue there: the main solve found the wrong one) or
    when the budget runs out first; the caller then runs the per-end verification, which
    adds the missing pair.
    """
    L = ends.V  # [v_max, v_min]: Ritz vectors of distinct values in one basis, orthonormal
    found = ends.vals
    start = rng.standard_normal(H.shape[0])
    start /= np.linalg.norm(start)
    for g in ends.nxt:
        if g is not None:
            start = start + g
    state = [None, None]  # per end: True (established), False (beyond), None (undecided)

    def stop(theta, S, beta, anorm):
        est, denom = _end_estimates(theta, S, beta, anorm)
        floor = 1e3 * _EPS * max(anorm, ends.anorm)
        vals = theta[[-1, 0]]
        for i, sign in ((0, 1.0), (1, -1.0)):  # how far beyond the found value, per end
            if state[i] is not None:
                continue
            beyond = sign * (vals[i] - found[i])
            if beyond > ends.abs_res[i] + floor:
                state[i] = False
            elif est[i] <= np.sqrt(tol_eff) * denom[i] and -beyond > (
                ends.abs_res[i] + floor + est[i]
            ):
                state[i] = True
            elif est[i] <= tol_eff * denom[i] and beyond <= ends.abs_res[i] + est[i] + floor:
                state[i] = True
        return state[0] is not None and state[1] is not None

    if H.shape[0] - 2 <= 0:
        return True, True, 0
    if budget <= 0:  # a run spends at least one product before it checks its budget
        return False, False, 0
    run = _lanczos_both(H, start, budget, NCV, rng, stop, locked=L)
    if run.status != "budget" and run.theta.size == H.shape[0] - 2:
        stop(run.theta, run.S, 0.0, run.anorm)  # the complement exhausted: its values are exact
    return state[0] is True, state[1] is True, run.n_mv


def _verified_end(H, ends, i, which, tol_eff, budget, rng):
    """(value, vector, flag, HVPs) of end i (0: λmax, "LA"; 1: λmin, "SA") of a two-ended
    solve after the verification restart of :func:`fastscape.curvature.lanczos` (which adds
    a pair the main solve missed)."""
    if budget <= 0:
        return float(ends.vals[i]), ends.V[i], False, 0
    pair = (ends.vals[i], ends.V[i], ends.HV[i], ends.abs_res[i])
    return verify_pair(H, which, pair, ends.anorm, tol_eff, budget, rng, ends.nxt[i])


def _two_ended_point(H, start_vecs, tol, max_hvps, seed, verify):
    """((λmax, v, flag, HVPs), (λmin, v, flag, HVPs), shared HVPs) at one point (method
    ``"lanczos"``): the two-ended solve, then (``verify``) the joint verification, and the
    per-end one for an end the joint one could not establish."""
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
        out = [(float(ends.vals[i]), ends.V[i], bool(ends.ok[i]), 0) for i in (0, 1)]
        shared = ends.n_mv
        if not verify:
            return out[0], out[1], shared
        out = [(v, x, False, 0) for v, x, _, _ in out]
        if not ends.ok.all():
            return out[0], out[1], shared
        left = budget - shared
        est_max, est_min, spent = _verify_both(H, ends, tol_eff, left, rng)
        shared += spent
        left -= spent
        for i, (which, done) in enumerate((("LA", est_max), ("SA", est_min))):
            if done:
                out[i] = (float(ends.vals[i]), ends.V[i], True, 0)
            else:
                out[i] = _verified_end(H, ends, i, which, tol_eff, left, rng)
    return out[0], out[1], shared


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
            hmax[j], hmin[j] = (shared + 1) // 2 + hi[3], shared // 2 + lo[3]
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
