"""The compiled Lanczos step (``fastscape.kernels.lanczos``) against plain NumPy formulas."""

from __future__ import annotations

import numpy as np
import pytest
from fastscape.kernels import lanczos as lz
from numpy.testing import assert_allclose
from scipy.linalg import eigh_tridiagonal


def _basis(rng, n, rows):
    Q = np.zeros((rows + 1, n))
    Q[:rows] = np.linalg.qr(rng.normal(size=(n, rows)))[0].T
    return Q


@pytest.mark.parametrize("m", [0, 3, 11])
def test_orthogonalize_is_gram_schmidt(m):
    rng = np.random.default_rng(m)
    n, ncv = 300, 12
    Q = _basis(rng, n, m + 1)
    w = rng.normal(size=n)
    T = np.zeros((ncv, ncv))
    beta = lz.orthogonalize(Q, m, w, T, 1 / np.sqrt(2))
    c = Q[: m + 1] @ w
    r = w - c @ Q[: m + 1]
    assert_allclose(T[: m + 1, m], c, rtol=1e-12, atol=1e-13)
    assert_allclose(T[m, : m + 1], c, rtol=1e-12, atol=1e-13)
    assert_allclose(Q[m + 1], r, rtol=1e-10, atol=1e-12)
    assert beta == pytest.approx(np.linalg.norm(r), rel=1e-12)
    assert np.abs(Q[: m + 1] @ Q[m + 1]).max() < 1e-12 * beta


def test_orthogonalize_repeats_when_it_cancels():
    """w almost in the span of the basis: one Gram-Schmidt pass leaves a direction that is far
    from orthogonal; the second (DGKS) pass restores orthogonality to rounding."""
    rng = np.random.default_rng(5)
    n, m = 400, 4
    Q = _basis(rng, n, m + 1)
    w = rng.normal(size=m + 1) @ Q[: m + 1] * 1e8 + rng.normal(size=n) * 1e-4
    T = np.zeros((8, 8))
    beta = lz.orthogonalize(Q, m, w, T, 1 / np.sqrt(2))
    assert np.abs(Q[: m + 1] @ Q[m + 1]).max() < 1e-13 * np.linalg.norm(w)
    assert beta == pytest.approx(np.linalg.norm(Q[m + 1]), rel=1e-14)
    assert_allclose(T[: m + 1, m], Q[: m + 1] @ w, rtol=1e-10)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("tridiagonal", [True, False])
def test_ritz_test_matches_eigh_and_the_residual_rule(which, tridiagonal):
    rng = np.random.default_rng(7)
    ncv, m, k = 10, 8, 3
    T = np.zeros((ncv, ncv))
    A = rng.normal(size=(m, m))
    A = A + A.T
    T[:m, :m] = A
    if tridiagonal:
        want_vals, want_vecs = eigh_tridiagonal(np.diag(A), np.diag(A, -1))
    else:
        want_vals, want_vecs = np.linalg.eigh(A)
    code = lz.WHICH_CODES[which]
    theta, S, order, _, breakdown, anorm = lz.ritz_test(
        T, m, tridiagonal, code, k, 0.3, 1e-2, 1e-10
    )
    assert_allclose(theta, want_vals, rtol=1e-12, atol=1e-12)
    assert_allclose(np.abs(S), np.abs(want_vecs), atol=1e-10)
    key = {"LA": -want_vals, "SA": want_vals, "LM": -np.abs(want_vals)}[which]
    assert list(order) == list(np.argsort(key, kind="stable"))
    assert anorm == pytest.approx(np.abs(want_vals).max())
    assert not breakdown
    # the rule: beta |S[m-1, i]| <= tol |theta_i| for the k wanted
    for beta, tol in [(0.3, 1e-2), (1e-9, 1e-4), (0.0, 1e-4)]:
        res = lz.ritz_test(T, m, tridiagonal, code, k, beta, tol, 1e-10)
        wanted = order[:k]
        expect = bool(np.all(beta * np.abs(S[m - 1, wanted]) <= tol * np.abs(theta[wanted])))
        assert res[3] == expect
        assert res[4] == (beta <= 64 * np.finfo(float).eps * anorm * np.sqrt(m))
    # fewer basis vectors than wanted pairs: never done
    assert not lz.ritz_test(T, 2, tridiagonal, code, k, 0.0, 1.0, 1e-10)[3]


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_ritz_order_is_a_stable_sort_with_ties(which):
    rng = np.random.default_rng(11)
    for _ in range(50):
        theta = rng.integers(-3, 4, size=rng.integers(1, 25)).astype(float)  # many ties, +-
        key = {"LA": -theta, "SA": theta, "LM": -np.abs(theta)}[which]
        got = lz.ritz_order(theta, lz.WHICH_CODES[which])
        assert list(got) == list(np.argsort(key, kind="stable"))
