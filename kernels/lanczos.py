"""The per-step linear algebra of thick-restart Lanczos (``fastscape.curvature.lanczos``).

A Lanczos step does little arithmetic (two or four matrix-vector products with the basis, an
eigendecomposition of the small projected matrix) but many small operations; run as separate
NumPy calls they cost ~0.13 ms per step on the benchmark machine, a tenth of an HVP of MLP
64-32-10 on 1 797 samples. Here each step is two compiled calls:

- :func:`orthogonalize`: classical Gram-Schmidt of the operator's output against the basis,
  repeated once when it cancels (the DGKS test), the coefficients written into the projected
  matrix and the new direction (not yet normalised) into the next row of the basis. Plain
  vectorised loops, not ``np.dot``: Numba's BLAS bindings cost ~5 s of cold compile here, and
  these products (at most ``ncv`` rows of n) are bound by memory, not by arithmetic;
- :func:`ritz_test`: the Ritz pairs of the projected matrix (LAPACK ``dsyevd`` through
  ``np.linalg.eigh``), ordered as ``which`` asks, and the Ritz residual test of the wanted ones.

Restarts and breakdowns are rare and stay in the API.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit

#: Codes of ``which``.
LA, SA, LM = 0, 1, 2
WHICH_CODES = {"LA": LA, "SA": SA, "LM": LM}

_EPS = float(np.finfo(np.float64).eps)


@jit()
def sum_squares(x):
    """``x @ x``, vectorised."""
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j] * x[j]
    return acc


@jit()
def basis_dots(Q, rows, w):
    """``Q[:rows] @ w``: one vectorised dot product per basis row."""
    n = w.shape[0]
    c = np.empty(rows)
    for i in range(rows):
        q = Q[i]
        acc = 0.0
        for j in range(n):
            acc += q[j] * w[j]
        c[i] = acc
    return c


@jit()
def subtract_combination(Q, rows, c, w, out):
    """``out = w - c @ Q[:rows]`` (out may be w), one pass over the rows per basis vector."""
    n = w.shape[0]
    for j in range(n):
        out[j] = w[j]
    for i in range(rows):
        q = Q[i]
        ci = c[i]
        for j in range(n):
            out[j] -= ci * q[j]


@jit()
def orthogonalize(Q, m, w, T, dgks):
    """Orthogonalise ``w`` against the basis rows ``Q[:m + 1]``.

    Parameters
    ----------
    Q : (ncv + 1, n) array
        Orthonormal rows ``0 .. m``; row ``m + 1`` receives the new direction, unnormalised.
    m : int
        Index of the basis vector whose image ``w`` is, ``m + 1 <= ncv``.
    w : (n,) array
        ``H Q[m]``.
    T : (ncv, ncv) array
        Projected matrix: column and row ``m`` (entries ``0 .. m``) receive the coefficients.
    dgks : float
        Gram-Schmidt is repeated once when the new direction's norm falls below
        ``dgks * ||w||``.

    Returns
    -------
    float
        Norm ``beta`` of the new direction.
    """
    r = Q[m + 1]
    c = basis_dots(Q, m + 1, w)
    subtract_combination(Q, m + 1, c, w, r)
    beta = math.sqrt(sum_squares(r))
    if beta < dgks * math.sqrt(sum_squares(w)):
        c2 = basis_dots(Q, m + 1, r)
        subtract_combination(Q, m + 1, c2, r, r)
        c += c2
        beta = math.sqrt(sum_squares(r))
    for i in range(m + 1):
        T[i, m] = c[i]
        T[m, i] = c[i]
    return beta


@jit()
def ritz_order(theta, which):
    """Indices of ``theta`` in the order of ``which`` (stable: ties keep ascending order).

    An insertion sort: m is at most ``ncv`` (tens), and it compiles in a fraction of the
    time of ``np.argsort(kind="mergesort")``.
    """
    m = theta.shape[0]
    key = np.empty(m)
    for i in range(m):
        if which == LA:
            key[i] = -theta[i]
        elif which == SA:
            key[i] = theta[i]
        else:
            key[i] = -abs(theta[i])
    order = np.empty(m, np.int64)
    for i in range(m):
        j = i
        while j > 0 and key[order[j - 1]] > key[i]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = i
    return order


@jit()
def ritz_test(T, m, tridiagonal, which, k, beta, tol, floor_rel):
    """Ritz pairs of the projected matrix ``T[:m, :m]`` and the residual test of the wanted k.

    Parameters
    ----------
    T : (ncv, ncv) array
    m : int
        Basis size.
    tridiagonal : bool
        Use only the diagonal and first off-diagonal of T (before the first restart, where the
        other Gram-Schmidt coefficients are rounding errors).
    which : int
        ``LA``, ``SA`` or ``LM``.
    k : int
        Wanted pairs.
    beta : float
        Norm of the new Krylov direction.
    tol : float
        Relative tolerance of the Ritz residuals ``beta * |S[m - 1, i]|``.
    floor_rel : float
        ``|theta_i|`` in the test is floored at ``floor_rel * max|theta|``.

    Returns
    -------
    theta : (m,) array
        Ritz values, ascending.
    S : (m, m) array
        Their eigenvectors (columns).
    order : (m,) int array
        Indices of ``theta`` in the order of ``which``.
    done : bool
        Whether all k wanted pairs pass (m >= k).
    breakdown : bool
        Whether ``beta`` is rounding-level (an invariant subspace: every Ritz pair is exact).
    anorm : float
        ``max |theta|`` (at least 1e-300).
    """
    A = np.zeros((m, m))
    if tridiagonal:
        for i in range(m):
            A[i, i] = T[i, i]
        for i in range(m - 1):
            A[i + 1, i] = T[i + 1, i]
            A[i, i + 1] = T[i + 1, i]
    else:
        for i in range(m):
            for j in range(m):
                A[i, j] = T[i, j]
    theta, S = np.linalg.eigh(A)
    order = ritz_order(theta, which)
    anorm = max(abs(theta[0]), abs(theta[m - 1]), 1e-300)
    breakdown = beta <= 64.0 * _EPS * anorm * math.sqrt(m)
    floor = floor_rel * anorm
    done = m >= k
    if not breakdown:
        for j in range(min(k, m)):
            i = order[j]
            if beta * abs(S[m - 1, i]) > tol * max(abs(theta[i]), floor):
                done = False
                break
    return theta, S, order, done, breakdown, anorm
