"""Points of a span: their non-zero coefficients, their first layer and their parameters.

Shared by the three paths of the span engine (``kernels.span``, ``kernels.span_hidden``,
``kernels.span_logistic``): a point ``theta_j = sum_k C[j, k] basis[k]`` is handled through
its non-zero coefficients only.
"""

from __future__ import annotations

from ._jit import jit


@jit()
def nonzero_coefficients(coef_row, idx, val):
    """Indices and values of the non-zero entries of one coefficient row; returns their count."""
    cnt = 0
    for k in range(coef_row.shape[0]):
        c = coef_row[k]
        if c != 0.0:
            idx[cnt] = k
            val[cnt] = c
            cnt += 1
    return cnt


@jit()
def first_layer(F0, c0, F1, c1, F2, c2, two, three, j):
    """``c0 F0[j] (+ c1 F1[j] if two) (+ c2 F2[j] if three)``: one first-layer unit of a point
    with at most three non-zero coefficients, as selects (branch-free, vectorisable in the
    caller's loop over j; the unused rows may be any readable row)."""
    z = c0 * F0[j]
    z2 = z + c1 * F1[j]
    z = z2 if two else z
    z3 = z + c2 * F2[j]
    return z3 if three else z


@jit()
def combine(basis, idx, val, cnt, theta):
    """theta = sum_t val[t] * basis[idx[t]] over the cnt non-zero coefficients of a point."""
    for p in range(theta.shape[0]):
        theta[p] = 0.0
    for t in range(cnt):
        row = basis[idx[t]]
        c = val[t]
        for p in range(theta.shape[0]):
            theta[p] += c * row[p]


@jit()
def point_tails(coef, tail, lo, idx, val, cnt, theta_t):
    """Non-zero coefficients and later-layer parameters of the points ``lo .. lo + npts - 1``.

    For each point q: ``cnt[q]`` non-zero coefficients in ``idx[q]``, ``val[q]``
    (:func:`nonzero_coefficients`), and ``theta_t[q] += sum_t val[q, t] tail[idx[q, t]]``.

    Parameters
    ----------
    coef : (m, K) float64
    tail : (K, P_tail) float64
    lo : int
    idx : (npts, K) int64, val : (npts, K) float64, cnt : (npts,) int64, written
    theta_t : (npts, P_tail) float64, zeros on entry
    """
    P_tail = tail.shape[1]
    for q in range(cnt.shape[0]):
        cnt[q] = nonzero_coefficients(coef[lo + q], idx[q], val[q])
        th = theta_t[q]
        for t in range(cnt[q]):
            row = tail[idx[q, t]]
            c = val[q, t]
            for p in range(P_tail):
                th[p] += c * row[p]
