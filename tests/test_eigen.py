"""The eigensolvers are right or say they are not: planted spectra with multiplicities,
clusters, ± pairs and dense bulks, and symmetric MLP points, against numpy's eigh and scipy's
eigsh. The property tested on every seed: every value flagged converged is within its tolerance
of a true eigenvalue, and when all are flagged, they are the k wanted eigenvalues with their
multiplicity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator, aslinearoperator, eigsh

import fastscape
from fastscape import curvature as C

TOL = 1e-8


def _spectrum(family: str, n: int, rng) -> np.ndarray:
    bulk = rng.uniform(-1.0, 1.0, n)
    if family == "multiplicity":  # the extreme values at both ends repeated
        m = int(rng.integers(2, 5))
        bulk[:m] = 3.0
        bulk[m : 2 * m] = -2.5
    elif family == "cluster":  # gaps of 1e-8 at both ends
        bulk[:4] = 2.0 - 1e-8 * np.arange(4)
        bulk[4:8] = -2.0 + 1e-8 * np.arange(4)
    elif family == "pm_pairs":  # equal magnitudes, opposite signs, repeated
        bulk[:6] = [2.0, -2.0, 2.0, -2.0, 1.5, -1.5]
    elif family == "dense_bulk":  # a few outliers above a bulk with tiny gaps
        bulk = np.concatenate([[4.0, 3.5], np.linspace(-1.0, 1.0, n - 2)])
    else:
        raise ValueError(family)
    return bulk


def _operator(lam, kind: str, rng):
    if kind == "diagonal":
        return LinearOperator(
            (lam.size, lam.size), matvec=lambda x: lam * np.ravel(x), dtype=np.float64
        )
    Q, _ = np.linalg.qr(rng.normal(size=(lam.size, lam.size)))
    return aslinearoperator((Q * lam) @ Q.T)


def _wanted(lam, which, k):
    return C._common.order(lam, which)[:k]


def _check_honest(res, lam, which, k, tol):
    """Every flagged value is near a true eigenvalue; when all are flagged, they are the k
    wanted ones with multiplicity (magnitudes for "LM", where ±λ tie)."""
    scale = max(1.0, np.abs(lam).max())
    slack = 10 * tol * scale
    for v, ok in zip(res.eigenvalues, res.converged):
        if ok:
            assert np.abs(lam - v).min() <= slack, (v, res.message)
    if res.converged.all():
        want = lam[_wanted(lam, which, k)]
        got = res.eigenvalues
        if which == "LM":
            want, got = np.abs(want), np.abs(got)
        np.testing.assert_allclose(np.sort(got), np.sort(want), atol=slack, err_msg=res.message)
        # and the vectors are orthonormal eigenvectors
        V = res.eigenvectors
        np.testing.assert_allclose(V @ V.T, np.eye(k), atol=1e-8)


FAMILIES = ["multiplicity", "cluster", "pm_pairs", "dense_bulk"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["diagonal", "rotated"])
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_flags_only_the_true_extreme_values(family, kind, which):
    n_flagged = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        lam = _spectrum(family, 60, rng)
        A = _operator(lam, kind, rng)
        for k in (1, 3, 5):
            res = C.lanczos(A, k, which, tol=TOL, seed=seed)
            _check_honest(res, lam, which, k, TOL)
            n_flagged += res.converged.all()
    # the default budget suffices: not honest by giving up
    assert n_flagged == 18


def test_multiplicity_up_to_k_found_with_multiplicity():
    rng = np.random.default_rng(1)
    for m in range(1, 7):
        lam = np.concatenate([np.full(m, 5.0), rng.uniform(-1.0, 1.0, 80 - m)])
        A = _operator(lam, "rotated", rng)
        for seed in range(3):
            res = C.lanczos(A, 6, "LA", tol=TOL, seed=seed)
            assert res.all_converged and res.verified, res.message
            np.testing.assert_allclose(res.eigenvalues[:m], 5.0, rtol=1e-10)
            want = np.sort(lam)[::-1][:6]
            np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-9, atol=1e-9)


def test_agrees_with_eigh_and_eigsh_on_a_rotated_bulk():
    rng = np.random.default_rng(4)
    lam = _spectrum("dense_bulk", 120, rng)
    A = _operator(lam, "rotated", rng)
    exact = np.linalg.eigvalsh(A @ np.eye(120))
    ref = np.sort(eigsh(A, k=4, which="LA", tol=1e-12, v0=np.ones(120))[0])[::-1]
    res = C.lanczos(A, 4, "LA", tol=TOL, seed=0)
    assert res.all_converged
    np.testing.assert_allclose(res.eigenvalues, exact[::-1][:4], atol=1e-10)
    np.testing.assert_allclose(res.eigenvalues, ref, atol=1e-10)


@pytest.mark.parametrize("family", ["multiplicity", "pm_pairs", "dense_bulk"])
def test_power_iteration_flags_only_the_true_extreme_values(family):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        lam = _spectrum(family, 50, rng)
        A = _operator(lam, "rotated", rng)
        for k in (1, 3):
            res = C.power_iteration(A, k, tol=TOL, seed=seed, maxiter=3000)
            _check_honest(res, lam, "LM", k, TOL)


def test_power_iteration_single_vector_misses_a_copy_and_the_verification_finds_it():
    # ±2 tie in magnitude: with k=1 any is right; with a repeated top value and k=2, one
    # block vector per copy; the verification restart must agree
    lam = np.concatenate([[3.0, 3.0, 3.0], np.linspace(-1.0, 1.0, 37)])
    A = _operator(lam, "rotated", np.random.default_rng(2))
    res = C.power_iteration(A, 2, tol=TOL, seed=0)
    assert res.all_converged and res.verified, res.message
    np.testing.assert_allclose(res.eigenvalues, [3.0, 3.0], rtol=1e-9)


def _reproducer():
    rng = np.random.default_rng(0)
    m = fastscape.MLP([3, 4, 1], "tanh", "mse")
    X = rng.normal(size=(100, 3))
    y = 1.5 * X[:, 0] + X[:, 1]
    y -= y.mean()
    return m, np.zeros(m.n_params), X, y


@pytest.mark.parametrize("seed", range(6))
def test_issue_17_reproducer_gives_the_repeated_value_or_says_not(seed):
    m, theta, X, y = _reproducer()
    lam = np.linalg.eigvalsh(m.hessian(theta, X, y))
    np.testing.assert_allclose(lam[:4], lam[0], rtol=1e-12)  # -4.170, four times
    res = C.top_eigen(m, theta, X, y, k=3, method="lanczos", which="SA", seed=seed)
    _check_honest(res, lam, "SA", 3, C.DEFAULT_TOL)
    assert res.all_converged, res.message
    np.testing.assert_allclose(res.eigenvalues, lam[0], rtol=1e-9)
    # all four copies with k=5, and the next value
    res5 = C.top_eigen(m, theta, X, y, k=5, method="lanczos", which="SA", seed=seed)
    assert res5.all_converged, res5.message
    np.testing.assert_allclose(res5.eigenvalues, lam[:5], atol=1e-9)
    # ARPACK on the same operator, from a start of the same seed
    H = C.HessianOperator(m, theta, X, y)
    v0 = np.random.default_rng(seed).normal(size=m.n_params)
    ref = np.sort(eigsh(H, k=5, which="SA", v0=v0)[0])
    np.testing.assert_allclose(res5.eigenvalues, ref, atol=1e-9)


def test_symmetric_mlp_points_with_permuted_hidden_units():
    # θ = 0 of a wider net and a tanh net at a point with two identical hidden units
    rng = np.random.default_rng(3)
    m = fastscape.MLP([4, 6, 2], "tanh", "mse")
    X = rng.normal(size=(80, 4))
    y = rng.normal(size=(80, 2))
    y -= y.mean(axis=0)
    th0 = np.zeros(m.n_params)
    lam = np.linalg.eigvalsh(m.hessian(th0, X, y))
    for seed in range(4):
        for which in ("SA", "LA", "LM"):
            res = C.top_eigen(m, th0, X, y, k=4, method="lanczos", which=which, seed=seed)
            _check_honest(res, lam, which, 4, C.DEFAULT_TOL)
            assert res.all_converged, res.message


def test_verification_out_of_budget_is_reported_not_flagged():
    m, theta, X, y = _reproducer()
    free = C.top_eigen(m, theta, X, y, k=3, method="lanczos", which="SA", seed=0, verify=False)
    first = free.n_hvps
    assert free.residual_converged.all() and not free.converged.any() and not free.verified
    assert "ranks not verified (verify=False)" in free.message
    short = C.top_eigen(m, theta, X, y, k=3, method="lanczos", which="SA", seed=0,
                        max_hvps=first + 1)  # fmt: skip
    assert short.n_hvps <= first + 1 and short.status == "budget"
    assert not short.converged.any() and not short.verified
    assert f"could not verify multiplicity within {first + 1} HVPs" in short.message


def test_exact_results_are_verified():
    m, theta, X, y = _reproducer()
    res = C.top_eigen(m, theta, X, y, k=3, method="exact", which="SA")
    assert res.verified and res.residual_converged.all() and res.n_verify_hvps == 0
    with pytest.raises(TypeError, match="verify"):
        C.lanczos(np.eye(4), 1, verify=1)
