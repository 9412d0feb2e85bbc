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
- ``"lanczos"``: two thick-restart Lanczos solves, ``which="LA"`` (λmax) and ``"SA"`` (λmin),
  with the verification restart (:func:`fastscape.curvature.lanczos`);
- ``"power"``: power iteration for the eigenvalue of largest magnitude λ₁, then power
  iteration on the shifted operator ``H - λ₁ I`` for the other end (what loss-landscape does
  with ARPACK); slower to converge where the spectrum's ends are close in magnitude.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator

from ..models import MLP, Batch
from .eigen import lanczos, power_iteration
from .operator import HessianOperator

__all__ = ["METHODS", "ChainResult", "ShiftedOperator", "solve_chain"]

#: The per-point methods of :func:`solve_chain`.
METHODS = ("exact", "lanczos", "power")


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
        Hessian-vector products spent on each end (0 for ``"exact"``; with ``"power"`` the
        first solve is counted at the end it found, the shifted one at the other).
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
        kw = {"tol": tol, "max_hvps": max_hvps, "seed": seed, "verify": verify}
        if method == "lanczos":
            hi = lanczos(H, 1, "LA", v0=_warm(prev_a), **kw)
            lo = lanczos(H, 1, "SA", v0=_warm(prev_b), **kw)
            lmax[j], lmin[j] = hi.eigenvalues[0], lo.eigenvalues[0]
            cmax[j], cmin[j] = _flag(hi, verify), _flag(lo, verify)
            hmax[j], hmin[j] = hi.n_hvps, lo.n_hvps
            prev_a, prev_b = hi, lo
            continue
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
