"""Eigenpairs of a symmetric operator: block power iteration, thick-restart Lanczos, and
``top_eigen`` on a model's Hessian.

Every solver takes a ``scipy.sparse.linalg.LinearOperator`` (a :class:`HessianOperator`, or
``aslinearoperator(array)``, or any other), a hard budget ``max_hvps`` of operator products, and
returns an :class:`EigenResult` that says per pair whether it converged and, as a whole, why it
stopped. Eigenvectors are returned as **rows** (``(k, n)``), like every direction in fastscape,
with the sign convention of :func:`fix_signs`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validation import as_float_array, check_choice, check_positive_float, check_positive_int
from ..kernels import lanczos as _lz
from ..kernels._blas import serial_blas
from ..models import MLP, Batch
from ._common import (
    Progress,
    apply_rows,
    as_operator,
    check_budget,
    check_n_k,
    fix_signs,
    krylov_budget,
    order,
    orth_rows,
    row_signs,
)
from .operator import HessianOperator, prepare_inputs
from .results import EigenResult

__all__ = ["lanczos", "power_iteration", "top_eigen"]

#: Default relative tolerance of both eigensolvers.
DEFAULT_TOL = 1e-6
#: Default iteration limit of power iteration.
DEFAULT_POWER_MAXITER = 1000


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
    return orth_rows(V)


def _message(ok: np.ndarray, status: str, n_mv: int, tol: float, limit: str, note: str) -> str:
    k = ok.size
    if status == "converged":
        return f"converged: {k} eigenpair(s) to tol {tol:.3g} after {n_mv} HVPs; {note}"
    why = {"budget": f"(budget {limit})", "maxiter": f"({limit})", "not_converged": ""}[status]
    return (
        f"not converged after {n_mv} HVPs {why}: {int(ok.sum())} of {k} pair(s) met "
        f"tol {tol:.3g}; {note}"
    ).replace("  ", " ")


# ----------------------------------------------------------------------------- power iteration
def power_iteration(
    A,
    k: int = 1,
    *,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_POWER_MAXITER,
    max_hvps: int | None = None,
    seed: int = 0,
    v0=None,
    progress: bool = False,
    verify: bool = True,
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
    A : LinearOperator (n, n)
        Symmetric; a :class:`HessianOperator` applies the k vectors of a block in one pass.
        Arrays are wrapped with ``aslinearoperator``.
    k : int
        Number of pairs, ``1 <= k < n``.
    tol : float
        Relative tolerance of the stopping rule. The denominator |λ| is floored at
        ``1e-12 * max|λ|`` of the block (and a tiny absolute value) so that zero eigenvalues
        of a non-zero operator (and a zero operator) can converge.
    maxiter : int
        Maximum number of iterations (block applications).
    max_hvps : int, optional
        Hard budget of operator products (vectors; one iteration costs k), at least k.
        Default ``k * maxiter``.
    seed : int
        Seed of the random start: same seed, same result.
    v0 : (n,) or (b, n) array, optional
        Warm start (e.g. the eigenvectors of a previous call at a nearby point); missing rows
        are random.
    progress : bool
        Show a tqdm bar of the products spent.
    verify : bool
        After convergence, run the verification restart of :func:`lanczos` (one Lanczos solve
        for one pair, ``which="LM"``, in the orthogonal complement of the k vectors; its HVPs
        count against ``max_hvps``): the block holds up to k copies of a repeated eigenvalue,
        but a stopping rule met by a block that never saw a larger eigenvalue (a start block
        without a component along it, or a slow gap) would otherwise go unnoticed. With
        False, ``converged`` stays False and ``residual_converged`` holds the stopping rule.

    Returns
    -------
    EigenResult
        ``which="LM"``; pairs ordered by decreasing |λ|; ``status`` says why it stopped;
        ``iterations`` counts block iterations only (``n_verify_hvps`` the verification).
    """
    A = as_operator(A)
    n = A.shape[0]
    k = check_n_k(n, k)
    tol = check_positive_float(tol, "tol", allow_zero=True)
    maxiter = check_positive_int(maxiter, "maxiter")
    max_hvps = check_budget(max_hvps, k * maxiter, minimum=k)
    verify = _check_verify(verify)
    V = _start_block(n, k, seed, v0)
    with Progress(progress, max_hvps, "power iteration") as bar:
        W = apply_rows(A, V)
        n_mv = k
        bar.update(k)
        prev = np.full(k, np.nan)
        iterations = np.full(k, maxiter, dtype=np.int64)
        done = np.zeros(k, dtype=bool)
        status = "maxiter"
        for it in range(1, maxiter + 1):
            T = V @ W.T
            vals, S = np.linalg.eigh(0.5 * (T + T.T))
            idx = order(vals, "LM")
            vals, S = vals[idx], S[:, idx]
            V, W = S.T @ V, S.T @ W
            scale = max(np.abs(vals).max() * 1e-12, 1e-300)
            denom = np.maximum(np.abs(vals), scale)
            res = np.linalg.norm(W - vals[:, None] * V, axis=1) / denom
            change = np.abs(vals - prev) / denom
            ok = (res <= tol) & (change <= tol)
            newly = ok & ~done
            iterations[newly] = it
            iterations[~ok] = it
            done = ok
            if done.all():
                status = "converged"
                break
            if it == maxiter:
                break
            if n_mv + k > max_hvps:
                status = "budget"
                break
            prev = vals
            V = orth_rows(W)
            W = apply_rows(A, V)
            n_mv += k
            bar.update(k)
        limit = f"max_hvps={max_hvps}" if status == "budget" else f"maxiter={maxiter} iterations"
        signs = row_signs(V)
        V, W = V * signs[:, None], W * signs[:, None]
        run = _Run(vals, V, W, res * denom, done.copy(), float(np.abs(vals).max()), status, n_mv)
        tol_eff = tol if tol > 0 else 4.0 * _EPS
        rng = np.random.default_rng([seed, 1])  # the verification's own stream
        with serial_blas():
            return _eigen_result(
                A, n, k, "LM", run, verify, tol_eff, max_hvps, min(n, max(2 * k + 1, 20)),
                rng, bar, "power", iterations, limit,
            )  # fmt: skip


# ----------------------------------------------------------------------------- Lanczos
_EPS = float(np.finfo(np.float64).eps)
_EPS23 = _EPS ** (2.0 / 3.0)
_DGKS = 1.0 / np.sqrt(2.0)  # re-orthogonalise when ||r|| < ||w|| / sqrt(2) (Daniel et al. 1976)


def lanczos(
    A,
    k: int = 1,
    which: str = "LA",
    *,
    tol: float = DEFAULT_TOL,
    max_hvps: int | None = None,
    maxiter: int | None = None,
    ncv: int | None = None,
    seed: int = 0,
    v0=None,
    progress: bool = False,
    verify: bool = True,
) -> EigenResult:
    """k eigenpairs of a symmetric operator by thick-restart Lanczos.

    Lanczos with full re-orthogonalisation (classical Gram-Schmidt, repeated once when it
    cancels: the DGKS test, :func:`fastscape.kernels.lanczos.orthogonalize`) builds an
    orthonormal Krylov basis Q and the projected matrix ``T = Q^T H Q`` from the Gram-Schmidt
    coefficients. After every operator application the Ritz pairs ``(θ_i, y_i = Q s_i)`` of T
    are formed and the k wanted ones tested with the Ritz residual
    ``||H y_i - θ_i y_i|| = β |s_i[last]|`` (β the norm of the new Krylov direction); the solve
    stops as soon as all k have ``β |s_i[last]| <= tol * |θ_i|`` (ARPACK's criterion, with
    |θ_i| floored at ``eps**(2/3) * max|θ|``), or when ``max_hvps`` products are spent. When
    the basis holds ``ncv`` vectors it is restarted thickly (Wu & Simon 2000): it keeps the k
    wanted Ritz vectors and ``(ncv - k) // 2`` more (the next ones in the order of ``which``)
    and goes on from the last Krylov direction, so the solve works for any k, either end or
    both, and any n with a basis of ``ncv`` vectors. Unlike power iteration it reaches the
    smallest algebraic eigenvalues (negative curvature) directly with ``which="SA"``. The
    solver's own products run with single-threaded BLAS (results do not depend on the BLAS
    thread count); so do the operator's.

    The residuals returned are recomputed from the operator's own outputs: the products
    ``H q_j`` of all basis vectors are kept (and combined at each restart), so that
    ``H y_i = (H Q) s_i`` is known without further operator applications. A pair is flagged
    converged only when this recomputed residual agrees with the Ritz estimate.

    A single-vector Krylov space holds one copy of a repeated eigenvalue (in exact
    arithmetic), so the k Ritz pairs that pass the residual test may miss further copies (or,
    rarely, an eigenvalue the start vector barely touched). Hence the **verification
    restart** (``verify=True``): once the k pairs converge, Lanczos is run again for one pair
    from a random vector in the orthogonal complement of the pairs found (every product
    projected out of them); if the complement's first eigenvalue comes before the k-th found
    one by more than their residual norms, its pair is added and the test repeated, else the
    ranks are established. Only then are pairs flagged converged. A copy is missed only if
    the random start has no component along it (probability zero) — the same assumption
    every Krylov solver (ARPACK too) makes about the wanted end of the spectrum.

    Parameters
    ----------
    A : LinearOperator (n, n)
        Symmetric (arrays are wrapped with ``aslinearoperator``).
    k : int
        ``1 <= k < n``.
    which : {"LA", "SA", "LM"}
        Largest algebraic, smallest algebraic or largest magnitude.
    tol : float
        Relative accuracy of the Ritz residuals (default 1e-6); 0 means machine precision
        (4 eps), which may not be reachable within the budget.
    max_hvps : int, optional
        Hard budget of operator products, at least k. Default ``min(10 n, 5000)``
        (``MAX_HVPS_CAP``).
    maxiter : int, optional
        Restarts allowed (default: no limit but the budget).
    ncv : int, optional
        Largest basis (default ``min(n, max(2k + 1, 20))``); ``k < ncv <= n``.
    seed : int
        Seed of the random starting vector (and of the random direction that continues the
        basis after an invariant subspace was found), for reproducibility.
    v0 : (n,) or (b, n) array, optional
        Warm start; several rows are summed into one starting vector.
    progress : bool
        Show a tqdm bar of the products spent.
    verify : bool
        Run the verification restart (default). Its HVPs count against ``max_hvps``. With
        False, ``converged`` stays False (the ranks are not established) and
        ``residual_converged`` says which pairs met the tolerance.

    Returns
    -------
    EigenResult
        Pairs ordered as ``which`` says; ``iterations`` holds the operator applications (the
        same for all pairs, verification included); ``converged`` is True for a pair whose
        residual met the tolerance (recomputed, agreeing with the Ritz estimate) **and** whose
        rank the verification established; ``verified``, ``residual_converged`` and
        ``n_verify_hvps`` give the parts; ``status`` is "converged", "budget" (also when the
        verification ran out of budget: "could not verify multiplicity within N HVPs"),
        "maxiter" or "not_converged".
    """
    A = as_operator(A)
    n = A.shape[0]
    k = check_n_k(n, k)
    which = check_choice(which, "which", ("LA", "SA", "LM"))
    tol = check_positive_float(tol, "tol", allow_zero=True)
    maxiter = None if maxiter is None else check_positive_int(maxiter, "maxiter")
    max_hvps = check_budget(max_hvps, krylov_budget(n), minimum=k)
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
    verify = _check_verify(verify)
    tol_eff = tol if tol > 0 else 4.0 * _EPS
    with serial_blas(), Progress(progress, max_hvps, f"Lanczos {which}") as bar:
        run = _thick_restart_lanczos(
            A, n, k, which, tol_eff, max_hvps, maxiter, ncv, rng, start, bar
        )  # fmt: skip
        return _eigen_result(
            A, n, k, which, run, verify, tol_eff, max_hvps, ncv, rng, bar, "lanczos",
            np.full(k, run.n_mv, dtype=np.int64),
            f"max_hvps={max_hvps}" if run.status == "budget" else f"maxiter={maxiter} restarts",
        )  # fmt: skip


def _check_verify(verify) -> bool:
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    return verify


def _eigen_result(A, n, k, which, run, verify, tol_eff, max_hvps, ncv, rng, bar, method,
                  iterations, limit) -> EigenResult:  # fmt: skip
    """The :class:`EigenResult` of a solve (``run``), after the verification restart."""
    vals, V, abs_res, ok = run.vals, run.V, run.abs_res, run.ok
    status, n_mv = run.status, run.n_mv
    verified, n_verify, note = False, 0, ""
    if not verify:
        note = "ranks not verified (verify=False)"
    elif status != "converged":
        note = "ranks not verified (the solve did not converge)"
    else:
        chk = _verify_ranks(
            A, n, k, which, run.vals, run.V, run.HV, run.abs_res, run.ok, run.anorm, tol_eff,
            max_hvps - n_mv, ncv, rng, bar, run.next_V,
        )  # fmt: skip
        vals, V, abs_res, ok = chk.vals, chk.V, chk.abs_res, chk.ok
        n_verify = chk.n_mv
        n_mv += n_verify
        verified = chk.verified
        if method == "lanczos":
            iterations = np.full(k, n_mv, dtype=np.int64)
        found = f"; it found {chk.added} more pair(s) the first solve had missed" * (chk.added > 0)
        if verified:
            note = f"ranks verified in {chk.rounds} restart(s), {n_verify} HVPs{found}"
        elif chk.stop == "budget":
            status = "budget"
            limit = f"max_hvps={max_hvps}"
            note = (f"could not verify multiplicity within {max_hvps} HVPs (verification "
                    f"restart {chk.rounds} cut short{found})")  # fmt: skip
        else:
            status = "not_converged"
            note = (f"could not verify multiplicity: verification restart {chk.rounds} did "
                    f"not converge{found}")  # fmt: skip
        if verified and not ok.all():
            status = "not_converged"
    scale = max(np.abs(vals).max() * 1e-12, 1e-300)
    converged = ok & verified
    return EigenResult(
        eigenvalues=vals,
        eigenvectors=V,
        iterations=iterations,
        converged=converged,
        residuals=abs_res / np.maximum(np.abs(vals), scale),
        n_matvecs=n_mv,
        method=method,
        which=which,
        status=status,
        message=_message(ok, status, n_mv, tol_eff, limit, note),
        residual_converged=ok.copy(),
        verified=verified,
        n_verify_hvps=n_verify,
    )


def _project_out(L, w):
    """``w`` minus its components along the orthonormal rows of L (twice: classical
    Gram-Schmidt repeated, so that rounding leaves nothing of L), in place."""
    for _ in range(2):
        w -= (L @ w) @ L
    return w


class _Run(NamedTuple):
    """One thick-restart Lanczos solve, before it becomes an :class:`EigenResult`."""

    vals: np.ndarray  # (k,) wanted Ritz values, in the order of ``which``
    V: np.ndarray  # (k, n) unit Ritz vectors (signs fixed)
    HV: np.ndarray  # (k, n) the operator's outputs for them
    abs_res: np.ndarray  # (k,) ||H v - θ v|| recomputed from HV
    ok: np.ndarray  # (k,) bool: Ritz estimate met the tolerance and abs_res agrees with it
    anorm: float  # max |θ| seen
    status: str  # "converged", "budget", "maxiter" or "not_converged"
    n_mv: int
    next_V: np.ndarray | None = None  # (n,) the first Ritz vector after the wanted ones


def _thick_restart_lanczos(A, n, k, which, tol_eff, max_hvps, maxiter, ncv, rng, start, bar,
                           locked=None, bound=None) -> _Run:  # fmt: skip
    """Thick-restart Lanczos; with ``locked`` (L, n) orthonormal rows, in their orthogonal
    complement: every product and every new direction is projected out of them, so the
    solve sees the operator restricted to the complement (deflation by explicit
    orthogonalisation). With ``bound = (value, margin)`` it also stops, with status
    ``"separated"``, as soon as the first Ritz pair has converged to ``sqrt(tol_eff)`` and its
    interval ``θ ± β|s[last]|`` lies after ``value`` in the order of ``which`` by more than
    ``margin``: the complement's first eigenvalue has been located, and it is not wanted."""
    n_eff = n if locked is None else n - locked.shape[0]
    keep = k + (ncv - k) // 2  # Ritz vectors kept at a restart (k <= keep < ncv)
    Q = np.empty((ncv + 1, n))  # orthonormal basis (rows); row m is the next direction
    HQ = np.empty((ncv, n))  # the operator's outputs H q_j
    T = np.zeros((ncv, ncv))  # Q^T H Q
    if locked is not None:
        start = _project_out(locked, start.copy())
    Q[0] = start / np.linalg.norm(start)
    m = 0
    n_mv = 0
    restarts = 0
    tridiagonal = True
    which_code = _lz.WHICH_CODES[which]
    status = "converged"
    while True:
        w = apply_rows(A, Q[m : m + 1])[0]
        n_mv += 1
        bar.update(1)
        if locked is not None:
            _project_out(locked, w)
        HQ[m] = w
        beta = _lz.orthogonalize(Q, m, w, T, _DGKS)  # the new direction into Q[m + 1]
        if locked is not None:
            _project_out(locked, Q[m + 1])
            beta = float(np.linalg.norm(Q[m + 1]))
        m += 1
        theta, S, order_, done, breakdown, anorm = _lz.ritz_test(
            T, m, tridiagonal, which_code, k, beta, tol_eff, _EPS23
        )
        if done or (m >= k and m == n_eff):
            break
        if bound is not None and not breakdown:
            first = order_[0]
            spread = beta * abs(S[m - 1, first])
            loose = np.sqrt(tol_eff) * max(abs(theta[first]), _EPS23 * anorm)
            if spread <= loose and _better(bound[0], theta[first], which, bound[1] + spread):
                status = "separated"
                break
        if m >= k and maxiter is not None and restarts >= maxiter:
            status = "maxiter"
            break
        if m >= k and n_mv >= max_hvps:
            status = "budget"
            break
        if breakdown:  # continue with a random direction orthogonal to the basis
            r = rng.standard_normal(n)
            for _ in range(2):  # the step's own projection, twice
                _lz.subtract_combination(Q, m, _lz.basis_dots(Q, m, r), r, r)
                if locked is not None:
                    _project_out(locked, r)
            beta = float(np.linalg.norm(r))
            Q[m] = r
        if m == ncv:  # thick restart: keep the wanted Ritz vectors and a few more
            tridiagonal = False
            kept = order_[:keep]
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
    want = order_[:k]
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
    signs = row_signs(V)
    V *= signs[:, None]
    HV *= signs[:, None]
    true = np.linalg.norm(HV - vals[:, None] * V, axis=1)
    # honest flags: the estimate met the tolerance and the recomputed residual agrees with it
    # up to rounding
    agrees = true <= np.maximum(10.0 * tol_eff * denom, 1e3 * _EPS * anorm)
    ok = np.asarray(ok & agrees, dtype=bool).reshape(k)
    if status == "converged" and not ok.all():
        status = "not_converged"
    if status == "separated":
        ok[:] = False
    nxt = None
    if m > k:
        nxt = S[:, order_[k]] @ Q[:m]
        nxt /= np.linalg.norm(nxt)
    return _Run(vals, V, HV, true, ok, float(anorm), status, n_mv, nxt)


# ----------------------------------------------------------------------------- verification
def _better(a, b, which: str, margin):
    """Whether eigenvalue ``a`` comes before ``b`` in the order of ``which`` by more than
    ``margin``."""
    if which == "LA":
        return a - b > margin
    if which == "SA":
        return b - a > margin
    return abs(a) - abs(b) > margin


class _Verified(NamedTuple):
    vals: np.ndarray
    V: np.ndarray
    HV: np.ndarray
    abs_res: np.ndarray
    ok: np.ndarray
    verified: bool
    n_mv: int
    rounds: int
    added: int
    stop: str  # why an unverified check stopped: "budget" or "not_converged"


def _verify_ranks(A, n, k, which, vals, V, HV, abs_res, ok, anorm, tol_eff, budget, ncv, rng,
                  bar, guess=None) -> _Verified:  # fmt: skip
    """The verification restart: are the k pairs found really the k wanted ones?

    Lanczos is run again, for one pair (the first in the order of ``which``), from a random
    vector in the orthogonal complement of every pair found so far (:func:`_thick_restart_
    lanczos` with ``locked``). If the complement holds an eigenvalue that comes before the
    k-th wanted one by more than the two residual norms (a further copy of a repeated
    eigenvalue, or one the first solve missed), its pair is added and the test repeated;
    when the complement's first eigenvalue comes no earlier, the ranks are established.
    The HVPs count against ``budget``; when it runs out, ``verified`` is False.
    """
    vals, V, HV, abs_res, ok = vals.copy(), V.copy(), HV.copy(), abs_res.copy(), ok.copy()
    spent, rounds, added = 0, 0, 0
    verified, stop = False, "budget"
    while True:
        n_eff = n - V.shape[0]
        if n_eff <= 0:  # the pairs span the whole space: nothing can be missing
            verified = True
            break
        if spent >= budget:
            break
        wanted = order(vals, which)[:k]
        worst = wanted[-1]
        floor = 1e3 * _EPS * anorm
        # a random start (every eigenvector of the complement has a share of it, so a missing
        # copy cannot hide), plus the first Ritz vector after the wanted ones when there is
        # one (the complement's first eigenvalue then converges sooner)
        start = rng.standard_normal(n)
        if guess is not None:
            start = start / np.linalg.norm(start) + guess
        sub = _thick_restart_lanczos(
            A, n, 1, which, tol_eff, budget - spent, None, min(ncv, n_eff), rng, start, bar,
            locked=V, bound=(vals[worst], abs_res[worst] + floor),
        )  # fmt: skip
        guess = sub.next_V
        spent += sub.n_mv
        rounds += 1
        if sub.status == "separated":  # the complement's first value comes after the k-th
            verified = True
            break
        if not sub.ok[0]:
            stop = "budget" if sub.status == "budget" else "not_converged"
            break
        anorm = max(anorm, sub.anorm)
        margin = abs_res[worst] + sub.abs_res[0] + 1e3 * _EPS * anorm
        if not _better(sub.vals[0], vals[worst], which, margin):
            verified = True
            break
        vals = np.append(vals, sub.vals)
        V = np.vstack([V, sub.V])
        HV = np.vstack([HV, sub.HV])
        abs_res = np.append(abs_res, sub.abs_res)
        ok = np.append(ok, sub.ok)
        added += 1
    keep = order(vals, which)[:k]
    vals, V, HV, abs_res, ok = vals[keep], V[keep], HV[keep], abs_res[keep], ok[keep]
    if added:  # one Rayleigh-Ritz on the pairs kept (no HVP: their products are known)
        Tk = V @ HV.T
        theta, S = np.linalg.eigh(0.5 * (Tk + Tk.T))
        idx = order(theta, which)
        vals, S = theta[idx], S[:, idx]
        V, HV = S.T @ V, S.T @ HV
        signs = row_signs(V)
        V *= signs[:, None]
        HV *= signs[:, None]
        abs_res = np.linalg.norm(HV - vals[:, None] * V, axis=1)
        denom = np.maximum(np.abs(vals), _EPS23 * anorm)
        ok = ok.all() & (abs_res <= np.maximum(tol_eff * denom, 1e3 * _EPS * anorm))
    return _Verified(vals, V, HV, abs_res, ok, verified, spent, rounds, added, stop)


# ----------------------------------------------------------------------------- on a model
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
    max_hvps: int | None = None,
    maxiter: int | None = None,
    seed: int = 0,
    v0=None,
    max_params: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    verify: bool = True,
    client=None,
    dtype: str = "float64",
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
        Relative tolerance; default 1e-6 for both iterative methods (0: machine precision).
    max_hvps : int, optional
        Hard budget of HVPs. Default ``min(10 P, 5000)`` (Lanczos) / ``k * maxiter`` (power).
    maxiter : int, optional
        Default 1000 iterations (power) / no restart limit but the budget (Lanczos).
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
    progress : bool
        Show a tqdm bar of the HVPs spent (iterative methods).
    verify : bool
        The verification restart of the iterative methods (see :func:`lanczos`).
    client : dask.distributed.Client, optional
        Run the HVPs on this Dask cluster with the samples sharded across its workers
        (``X`` and ``y`` may be dask arrays; :func:`fastscape.distributed.shard`); the
        solver's small dense algebra stays here. Equal to the local result to about 1e-15
        relative per product (``docs/cluster.md``).
    dtype : {"float64", "float32"}
        Working precision of the HVPs (:class:`HessianOperator`); the solver's own algebra is
        float64. In float32 the HVPs carry a relative error of about 1e-6, so ask for
        ``tol >= 1e-5`` (``docs/curvature.md``, "float32"); ``exact`` is float64 only.

    Returns
    -------
    EigenResult
        With ``converged``, ``residuals``, ``n_hvps``, ``status`` and ``message``.
    """
    method = check_choice(method, "method", ("power", "lanczos", "exact"))
    which = check_choice(which, "which", ("LM", "LA", "SA"))
    theta, data, device = prepare_inputs(model, theta, X, y, device, client, dtype=dtype)
    P = model.n_params
    check_n_k(P, k)
    if method == "exact":
        if dtype != "float64":
            raise ValueError(
                "method='exact' forms the Hessian in float64 only; use dtype='float64'"
            )
        vals, vecs = _exact_eigh(model, theta, data, max_params)
        idx = order(vals, which)[:k]
        return EigenResult(
            eigenvalues=vals[idx],
            eigenvectors=fix_signs(np.ascontiguousarray(vecs[:, idx].T)),
            iterations=np.zeros(k, dtype=np.int64),
            converged=np.ones(k, dtype=bool),
            residuals=np.zeros(k),
            n_matvecs=0,
            method="exact",
            which=which,
            message=f"exact: {k} eigenpair(s) of the {P} x {P} Hessian",
        )
    H = HessianOperator(model, theta, data, device=device, dtype=dtype)
    tol = DEFAULT_TOL if tol is None else tol
    if method == "power":
        if which != "LM":
            raise ValueError(
                f"power iteration finds the largest-magnitude eigenvalues only (which='LM'), "
                f"got which={which!r}; use method='lanczos' for 'LA' or 'SA'"
            )
        return power_iteration(
            H, k, tol=tol, maxiter=maxiter or DEFAULT_POWER_MAXITER, max_hvps=max_hvps,
            seed=seed, v0=v0, progress=progress, verify=verify,
        )  # fmt: skip
    return lanczos(
        H, k, which, tol=tol, max_hvps=max_hvps, maxiter=maxiter, seed=seed, v0=v0,
        progress=progress, verify=verify,
    )  # fmt: skip


def verify_pair(A, which: str, pair, anorm: float, tol: float, budget: int, rng, guess=None):
    """The verification restart of :func:`lanczos` for one converged pair found elsewhere.

    For solvers built on this module's (the curvature maps' two-ended solve,
    ``fastscape.curvature.map``): Lanczos is run from a random vector (plus ``guess``) in the
    orthogonal complement of the pair, and a pair the complement holds beyond it is added (a
    Rayleigh-Ritz on the pairs kept), as :func:`lanczos` does with ``verify=True``.

    Parameters
    ----------
    A : LinearOperator (n, n)
        Symmetric.
    which : {"LA", "SA", "LM"}
        The end the pair belongs to.
    pair : tuple (value, vector (n,), H vector (n,), residual norm)
        The pair, its operator output and its recomputed residual ``||H v - value v||``.
    anorm : float
        The largest |Ritz value| seen by the solve that found the pair.
    tol : float
        The solve's relative tolerance (> 0).
    budget : int
        Products allowed (the verification stops unverified when they run out).
    rng : numpy.random.Generator
        Source of the random start.
    guess : (n,) array, optional
        The solve's next Ritz vector after the pair (speeds the complement's solve).

    Returns
    -------
    tuple (value, vector (n,), flag, HVPs)
        The pair after verification (replaced where the complement held a better one), True
        when it met the tolerance and its rank was established, and the products spent.
    """
    val, vec, hvec, res = pair
    n = A.shape[0]
    chk = _verify_ranks(
        A, n, 1, which, np.array([float(val)]), np.asarray(vec)[None], np.asarray(hvec)[None],
        np.array([float(res)]), np.array([True]), float(anorm), float(tol), int(budget), 20,
        rng, Progress(False, None, ""), guess,
    )  # fmt: skip
    return float(chk.vals[0]), chk.V[0], bool(chk.ok[0] and chk.verified), int(chk.n_mv)
