"""Eigenvalues, trace and spectral density against dense linear algebra on the exact Hessian."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_problem
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from fastscape import curvature as C

CASES = [
    ([4, 6, 3], "tanh", "softmax_ce"),
    ([3, 5, 2], "sigmoid", "mse"),
    ([5, 4, 1], "tanh", "logistic"),
]


def _planted(n=30, seed=3, spectrum=None):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = spectrum if spectrum is not None else rng.uniform(-1, 1, n)
    return (Q * lam) @ Q.T, lam, Q


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def model_case(request):
    model, theta, X, y = make_problem(request.param, n=50, seed=7)
    H = model.hessian(theta, X, y)
    return model, theta, X, y, np.linalg.eigh(H)


def test_power_top_eigen_matches_eigvalsh(model_case):
    model, theta, X, y, (vals, vecs) = model_case
    res = C.top_eigen(model, theta, X, y, k=2, method="power", tol=1e-9, maxiter=5000)
    want = vals[np.argsort(-np.abs(vals))][:2]
    assert res.converged.all()
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-7)
    # the vectors are eigenvectors of the exact Hessian
    H = (vecs * vals) @ vecs.T
    resid = res.eigenvectors @ H - res.eigenvalues[:, None] * res.eigenvectors
    assert np.abs(resid).max() < 1e-6 * np.abs(vals).max()
    np.testing.assert_allclose(np.linalg.norm(res.eigenvectors, axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_lanczos_both_ends_match_eigvalsh(model_case, which):
    model, theta, X, y, (vals, _) = model_case
    res = C.top_eigen(model, theta, X, y, k=3, method="lanczos", which=which, tol=1e-10)
    order = {"LA": np.argsort(-vals), "SA": np.argsort(vals), "LM": np.argsort(-np.abs(vals))}
    np.testing.assert_allclose(res.eigenvalues, vals[order[which]][:3], rtol=1e-9, atol=1e-12)
    assert res.converged.all() and (res.residuals < 1e-8).all()
    # the default tolerance (1e-6 relative residual): eigenvalues second order in it
    dft = C.top_eigen(model, theta, X, y, k=3, method="lanczos", which=which)
    assert dft.status == "converged" and dft.converged.all(), dft.message
    assert (dft.residuals <= 10 * C.DEFAULT_TOL).all() and dft.n_hvps <= res.n_hvps
    np.testing.assert_allclose(dft.eigenvalues, res.eigenvalues, rtol=1e-9, atol=1e-12)


def test_exact_method_matches_eigh(model_case):
    model, theta, X, y, (vals, _) = model_case
    res = C.top_eigen(model, theta, X, y, k=2, method="exact", which="SA")
    np.testing.assert_allclose(res.eigenvalues, vals[:2], rtol=1e-12)


def test_planted_spectrum_recovered():
    spectrum = np.concatenate([[9.0, -7.0, 4.0], np.linspace(-1.0, 1.0, 27)])
    A, _lam, Q = _planted(30, seed=11, spectrum=spectrum)
    res = C.power_iteration(A, k=3, tol=1e-10, seed=2)
    np.testing.assert_allclose(res.eigenvalues, [9.0, -7.0, 4.0], rtol=1e-9)
    # eigenvectors equal the planted columns up to sign
    overlaps = np.abs(res.eigenvectors @ Q[:, :3])
    np.testing.assert_allclose(np.diag(overlaps), 1.0, atol=1e-6)
    for which, want in [("LA", [9.0, 4.0]), ("SA", [-7.0, -1.0])]:
        r = C.lanczos(A, k=2, which=which)
        np.testing.assert_allclose(r.eigenvalues, want, rtol=1e-10)


def _op(n, f):
    """An n x n LinearOperator from a one-vector function."""
    return LinearOperator((n, n), matvec=f, dtype=np.float64)


_ORDERS = {
    "LA": lambda lam: np.sort(lam)[::-1],
    "SA": lambda lam: np.sort(lam),
    "LM": lambda lam: lam[np.argsort(-np.abs(lam), kind="stable")],
}


def _counted(A):
    """A LinearOperator of A that counts its products (vectors)."""
    count = [0]

    def matmat(X):
        count[0] += X.shape[1]
        return A @ X

    op = LinearOperator(A.shape, matvec=lambda x: matmat(x.reshape(-1, 1)), matmat=matmat,
                        dtype=np.float64)  # fmt: skip
    return op, count


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("k", [1, 4])
def test_lanczos_matches_eigh_on_known_spectra(which, k):
    rng = np.random.default_rng(17)
    lam = np.concatenate([[5.0, -4.5, 3.0, -2.0, 1.8], rng.uniform(-1.5, 1.5, 75)])
    A, _, _ = _planted(80, seed=21, spectrum=lam)
    mv, count = _counted(A)
    res = C.lanczos(mv, k, which, tol=1e-10, seed=1)
    want = _ORDERS[which](lam)[:k]
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-9)
    assert res.converged.all() and (res.residuals <= 1e-9).all()
    assert res.n_matvecs == count[0] and (res.iterations == count[0]).all()
    # the residuals reported are those of the returned pairs
    true = np.linalg.norm(res.eigenvectors @ A - want[:, None] * res.eigenvectors, axis=1)
    np.testing.assert_allclose(res.residuals, true / np.abs(want), rtol=1e-3, atol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(res.eigenvectors, axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-10])
def test_lanczos_honours_tol_and_stops_early(tol):
    rng = np.random.default_rng(5)
    lam = np.concatenate([[2.0, 1.9, 1.8], rng.uniform(-1.0, 1.7, 197)])
    A, _, _ = _planted(200, seed=4, spectrum=lam)
    res = C.lanczos(A, 3, "LA", tol=tol, seed=0)
    assert res.converged.all()
    assert (res.residuals <= 3 * tol).all(), res.residuals
    # eigenvalue errors are second order in the residual
    assert np.abs(res.eigenvalues - [2.0, 1.9, 1.8]).max() <= max(10 * tol**2 * 2.0 / 0.1, 1e-12)
    # a looser tolerance never needs more operator applications
    if tol < 1e-3:
        loose = C.lanczos(A, 3, "LA", tol=1e-3, seed=0)
        assert loose.n_matvecs < res.n_matvecs


def test_lanczos_thick_restart_with_small_basis():
    rng = np.random.default_rng(8)
    lam = np.concatenate([[3.0, 2.5, -2.8, 2.2], rng.uniform(-2.0, 2.0, 296)])
    A, _, _ = _planted(300, seed=6, spectrum=lam)
    mv, count = _counted(A)
    res = C.lanczos(mv, 3, "LM", tol=1e-9, ncv=8, seed=2)
    np.testing.assert_allclose(res.eigenvalues, [3.0, -2.8, 2.5], rtol=1e-9)
    assert res.converged.all() and (res.residuals <= 3e-9).all()
    assert res.n_matvecs == count[0] > 8  # the basis of 8 vectors was restarted
    full = C.lanczos(A, 3, "LM", tol=1e-9, ncv=120, seed=2)
    np.testing.assert_allclose(full.eigenvalues, res.eigenvalues, rtol=1e-9)
    # too few restarts: reported, not hidden
    short = C.lanczos(A, 3, "LM", tol=1e-12, ncv=6, maxiter=2, seed=2)
    assert not short.converged.all() and short.n_matvecs <= 6 + 2 * 2


def test_lanczos_clustered_and_repeated_eigenvalues():
    rng = np.random.default_rng(3)
    clustered = np.concatenate([[3.0, 3.0 - 1e-4, 3.0 - 2e-4], rng.uniform(-1, 1, 57)])
    A, _, _ = _planted(60, seed=9, spectrum=clustered)
    res = C.lanczos(A, 3, "LA", tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues, clustered[:3], rtol=1e-12)
    assert res.converged.all()
    # a triple top eigenvalue: the eigenvalue and a vector of its eigenspace
    repeated = np.concatenate([[4.0, 4.0, 4.0], rng.uniform(-1, 1, 57)])
    A, _, Q = _planted(60, seed=10, spectrum=repeated)
    res = C.lanczos(A, 1, "LA", tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues, [4.0], rtol=1e-12)
    inside = np.linalg.norm(res.eigenvectors[0] @ Q[:, :3])
    np.testing.assert_allclose(inside, 1.0, atol=1e-10)


def test_lanczos_small_space_and_zero_operator():
    A, lam, _ = _planted(6, seed=12)
    res = C.lanczos(A, 5, "LA", tol=0.0)  # the whole space
    np.testing.assert_allclose(res.eigenvalues, np.sort(lam)[::-1][:5], rtol=1e-12)
    assert res.converged.all()
    zero = C.lanczos(np.zeros((6, 6)), 2, "LM", tol=1e-8)
    np.testing.assert_array_equal(zero.eigenvalues, 0.0)
    assert zero.converged.all()


def test_lanczos_seed_and_warm_start(model_case):
    model, theta, X, y, (vals, _) = model_case
    a = C.top_eigen(model, theta, X, y, k=2, method="lanczos", which="LA", tol=1e-8, seed=3)
    b = C.top_eigen(model, theta, X, y, k=2, method="lanczos", which="LA", tol=1e-8, seed=3)
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    np.testing.assert_array_equal(a.eigenvectors, b.eigenvectors)
    np.testing.assert_allclose(a.eigenvalues, np.sort(vals)[::-1][:2], rtol=1e-9)
    cold = C.top_eigen(model, theta, X, y, k=1, method="lanczos", which="LA", tol=1e-8)
    warm = C.top_eigen(
        model, theta, X, y, k=1, method="lanczos", which="LA", tol=1e-8, v0=cold.eigenvectors
    )
    assert warm.converged.all() and warm.n_matvecs < cold.n_matvecs
    np.testing.assert_allclose(warm.eigenvalues, cold.eigenvalues, rtol=1e-10)


def test_lanczos_bad_inputs():
    A, _, _ = _planted(10, seed=1)
    mv = aslinearoperator(A)
    with pytest.raises(ValueError, match="ncv must satisfy"):
        C.lanczos(mv, 3, ncv=3)
    with pytest.raises(ValueError, match="ncv must satisfy"):
        C.lanczos(mv, 3, ncv=11)
    with pytest.raises(ValueError, match="tol must be finite"):
        C.lanczos(mv, 1, tol=-1e-3)
    with pytest.raises(ValueError, match="maxiter must be >= 1"):
        C.lanczos(mv, 1, maxiter=0)
    with pytest.raises(ValueError, match="v0 has length"):
        C.lanczos(mv, 1, v0=np.ones(9))
    with pytest.raises(ValueError, match="shape"):
        C.lanczos(_op(10, lambda v: np.ones(9)), 1)
    with pytest.raises(FloatingPointError, match="non-finite"):
        C.lanczos(_op(10, lambda v: np.full(10, np.inf)), 1)
    with pytest.raises(TypeError, match="LinearOperator"):
        C.lanczos(lambda v: A @ v, 1)
    with pytest.raises(ValueError, match="square"):
        C.lanczos(np.ones((3, 4)), 1)


def test_power_iteration_stopping_rule_and_counts():
    A, _lam, _ = _planted(25, seed=5, spectrum=np.concatenate([[3.0], np.linspace(0, 1, 24)]))
    res = C.power_iteration(A, tol=1e-8, seed=0)
    assert res.converged[0] and res.residuals[0] <= 1e-8
    # rate |λ2/λ1| = 1/3: the residual needs ~log(1e-8)/log(1/3) ≈ 17 iterations, not hundreds
    assert 5 <= res.iterations[0] <= 40
    # the iterations, then the verification restart in the complement of the pair found
    assert res.verified and res.n_matvecs == res.iterations[0] + res.n_verify_hvps
    # a budget too small to converge is reported, not hidden
    short = C.power_iteration(A, tol=1e-12, maxiter=3, seed=0)
    assert not short.converged[0] and short.iterations[0] == 3


def test_power_iteration_seeded_and_one_vector_operator_equivalent():
    A, _, _ = _planted(20, seed=8)
    a = C.power_iteration(A, k=2, tol=1e-6, seed=4)
    b = C.power_iteration(A, k=2, tol=1e-6, seed=4)
    c = C.power_iteration(_op(20, lambda v: A @ v), k=2, tol=1e-6, seed=4)  # one vector a call
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    np.testing.assert_array_equal(a.eigenvectors, b.eigenvectors)
    np.testing.assert_allclose(a.eigenvalues, c.eigenvalues, rtol=1e-12)


def test_warm_start_saves_iterations(model_case):
    model, theta, X, y, (_vals, _) = model_case
    cold = C.top_eigen(model, theta, X, y, method="power", tol=1e-8, maxiter=5000)
    warm = C.top_eigen(model, theta, X, y, method="power", tol=1e-8, v0=cold.eigenvectors)
    assert warm.converged.all()
    assert warm.iterations[0] <= 3 < cold.iterations[0]
    np.testing.assert_allclose(warm.eigenvalues, cold.eigenvalues, rtol=1e-7)


def test_zero_operator_converges_to_zero():
    res = C.power_iteration(np.zeros((6, 6)), k=2, tol=1e-8)
    assert res.converged.all()
    np.testing.assert_array_equal(res.eigenvalues, 0.0)


def test_bad_inputs_raise_clear_errors():
    A, _, _ = _planted(6, seed=1)
    with pytest.raises(ValueError, match="k must be smaller than n"):
        C.power_iteration(A, k=6)
    with pytest.raises(ValueError, match="k must be smaller than n"):
        C.lanczos(A, k=7)
    with pytest.raises(ValueError, match="unknown which"):
        C.lanczos(A, k=1, which="XX")
    with pytest.raises(FloatingPointError, match="non-finite"):
        C.power_iteration(_op(6, lambda v: np.full(6, np.nan)))
    with pytest.raises(ValueError, match="shape"):
        C.power_iteration(_op(6, lambda v: np.ones(5)))
    with pytest.raises(ValueError, match="v0 has length"):
        C.power_iteration(A, v0=np.ones(4))
    model, theta, X, y = make_problem(CASES[0], n=20)
    with pytest.raises(ValueError, match="unknown method"):
        C.top_eigen(model, theta, X, y, method="arnoldi")
    with pytest.raises(ValueError, match="which='LM'"):
        C.top_eigen(model, theta, X, y, method="power", which="SA")
    with pytest.raises(ValueError, match="unknown method"):
        C.hessian_trace(model, theta, X, y, method="girard")
    with pytest.raises(ValueError, match="theta contains non-finite"):
        C.top_eigen(model, np.full(model.n_params, np.inf), X, y)


# ----------------------------------------------------------------------------- trace
def test_hutchinson_and_hutchpp_within_four_standard_errors(model_case):
    model, theta, X, y, (vals, _) = model_case
    exact = C.hessian_trace(model, theta, X, y, method="exact")
    np.testing.assert_allclose(exact.estimate, vals.sum(), rtol=1e-10, atol=1e-12)
    for method in ("hutchinson", "hutch++"):
        est = C.hessian_trace(model, theta, X, y, method=method, n_samples=60, seed=1)
        assert est.std_error > 0
        assert abs(est.estimate - exact.estimate) <= 4 * est.std_error, method


def test_hutchinson_standard_error_matches_theory():
    A, _, _ = _planted(40, seed=2)
    est = C.hutchinson(A, 4000, seed=0)
    var = 2.0 * ((A**2).sum() - (np.diag(A) ** 2).sum())  # variance of one Rademacher probe
    np.testing.assert_allclose(est.std_error, np.sqrt(var / 4000), rtol=0.1)
    assert abs(est.estimate - np.trace(A)) <= 4 * est.std_error


def test_hutchpp_exact_when_sketch_spans_space():
    A, _, _ = _planted(8, seed=4)
    est = C.hutchpp(A, 30, seed=0)
    np.testing.assert_allclose(est.estimate, np.trace(A), rtol=1e-10, atol=1e-12)
    assert est.std_error == 0.0


# ----------------------------------------------------------------------------- density
def test_slq_integrates_to_one_and_matches_exact_moments(model_case):
    model, theta, X, y, (vals, _) = model_case
    d = C.spectral_density(model, theta, X, y, n_runs=12, n_iter=30, seed=0)
    ex = C.spectral_density(model, theta, X, y, method="exact")
    assert abs(d.integral() - 1.0) < 1e-6 and abs(ex.integral() - 1.0) < 1e-6
    np.testing.assert_allclose(d.weights.sum(axis=1), 1.0, rtol=1e-12)
    # the exact measure's moments are those of the eigenvalues
    np.testing.assert_allclose(ex.moment(1), vals.mean(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ex.moment(2), (vals**2).mean(), rtol=1e-12)
    # SLQ moments are unbiased estimates of tr(H^p)/P: within 4 standard errors over runs
    for p in (1, 2):
        se = d.moment_std_error(p)
        assert 0 < se and abs(d.moment(p) - ex.moment(p)) <= 4 * se, p
    # the broadened density has the same mean, and variance widened by sigma^2
    for res in (d, ex):
        g, f = res.grid, res.density
        np.testing.assert_allclose(np.trapezoid(g * f, g), res.moment(1), atol=1e-6 * np.ptp(vals))
        np.testing.assert_allclose(
            np.trapezoid(g**2 * f, g), res.moment(2) + res.sigma**2, rtol=1e-6
        )
    assert ex.hist is not None
    np.testing.assert_allclose((ex.hist * np.diff(ex.hist_edges)).sum(), 1.0, rtol=1e-12)


def test_slq_full_krylov_nodes_are_eigenvalues():
    A, lam, _ = _planted(12, seed=9)
    d = C.slq(A, n_runs=3, n_iter=12, seed=1)
    used = d.nodes[d.weights > 1e-10]
    assert np.abs(used[:, None] - lam[None, :]).min(axis=1).max() < 1e-8


def test_slq_user_sigma_and_grid():
    A, _, _ = _planted(20, seed=6)
    grid = np.linspace(-3, 3, 3001)
    d = C.slq(A, n_runs=2, n_iter=10, sigma=0.05, grid=grid)
    assert d.sigma == 0.05 and d.grid is not None and d.grid.shape == (3001,)
    assert abs(d.integral() - 1.0) < 1e-6
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        C.slq(A, sigma=-1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        C.slq(A, grid=[1.0, 0.0])


def test_plot_spectrum_log_axis(model_case):
    from fastscape import _plot_curvature as pc

    model, theta, X, y, _ = model_case
    ex = C.spectral_density(model, theta, X, y, method="exact")
    fig = pc.plot_spectrum(ex)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), ex.grid)
    assert ax.get_ylim()[0] == pytest.approx(ex.density.max() * 1e-7)
    fig.savefig(__import__("io").BytesIO(), format="png")
    with pytest.raises(TypeError, match="DensityResult"):
        pc.plot_spectrum(ex.density)


def test_results_do_not_depend_on_thread_count(model_case):
    import fastscape

    model, theta, X, y, _ = model_case
    out = []
    for n in (1, 2):
        with fastscape.threads(n):
            out.append((
                C.top_eigen(model, theta, X, y, k=2, method="power", maxiter=50).eigenvalues,
                C.top_eigen(model, theta, X, y, k=2, method="lanczos", tol=1e-6).eigenvectors,
                C.hessian_trace(model, theta, X, y, n_samples=10).estimate,
                C.spectral_density(model, theta, X, y, n_runs=2, n_iter=10).density,
            ))  # fmt: skip
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- the operator
def _small_mlp(sizes=(5, 7, 3), n=40, seed=2):
    model, theta, X, y = make_problem((list(sizes), "tanh", "softmax_ce"), n=n, seed=seed)
    return model, theta, X, y, model.hessian(theta, X, y)


def test_hessian_operator_is_a_linear_operator():
    from scipy.sparse.linalg import LinearOperator as LO

    model, theta, X, y, H = _small_mlp()
    P = model.n_params
    op = C.HessianOperator(model, theta, X, y)
    assert isinstance(op, LO) and op.shape == (P, P) and op.dtype == np.float64
    assert op.T is op and op.H is op  # symmetric
    rng = np.random.default_rng(0)
    x, Xc = rng.normal(size=P), rng.normal(size=(P, 4))
    np.testing.assert_allclose(op @ x, H @ x, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(op.matvec(x[:, None]), (H @ x)[:, None], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(op @ Xc, H @ Xc, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(op.rmatvec(x), H @ x, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(op.T @ Xc, H @ Xc, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(op.H @ x, H @ x, rtol=1e-10, atol=1e-13)
    # the batched product is one pass: the same bits as the rows one by one
    np.testing.assert_array_equal(op.rows(Xc.T), op.matmat(Xc).T)
    # it counts its products (vectors)
    assert op.n_hvps == 1 + 1 + 4 + 1 + 4 + 1 + 4 + 4
    # the compatibility function is its row product
    np.testing.assert_array_equal(C.hessian_matvec(model, theta, X, y)(Xc.T), op.rows(Xc.T))
    with pytest.raises(ValueError, match="rows of length"):
        op.rows(np.ones((2, P + 1)))


def test_solvers_count_the_operators_products():
    model, theta, X, y, _ = _small_mlp()
    op = C.HessianOperator(model, theta, X, y)
    res = C.lanczos(op, 2, "LA", tol=1e-8)
    assert op.n_hvps == res.n_hvps == res.iterations[0]
    op.n_hvps = 0
    tr = C.hutchinson(op, 10, block=4)
    assert op.n_hvps == tr.n_hvps == 10


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_thick_restart_lanczos_matches_eigsh_on_the_hessian_operator(which):
    from scipy.sparse.linalg import eigsh

    model, theta, X, y, H = _small_mlp(sizes=(6, 9, 4), n=60, seed=4)
    op = C.HessianOperator(model, theta, X, y)
    ours = C.lanczos(op, 4, which, tol=1e-12, ncv=12)
    vals = eigsh(op, k=4, which=which, tol=1e-13, v0=np.ones(op.shape[0]))[0]
    want = vals[C._common.order(vals, which)]
    assert ours.converged.all(), ours.message
    np.testing.assert_allclose(ours.eigenvalues, want, rtol=1e-8, atol=1e-12)
    # and both agree with the dense spectrum of the exact Hessian
    dense = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(want, dense[C._common.order(dense, which)][:4], rtol=1e-8)


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_thick_restart_lanczos_matches_eigsh_on_a_diagonal_operator(which):
    from scipy.sparse.linalg import eigsh

    rng = np.random.default_rng(9)
    lam = np.concatenate([[7.0, -6.5, 6.0, -5.0, 4.5], rng.uniform(-4.0, 4.0, 395)])
    D = LinearOperator((400, 400), matvec=lambda x: lam * x.ravel(),
                       matmat=lambda Xm: lam[:, None] * Xm, dtype=np.float64)  # fmt: skip
    ours = C.lanczos(D, 3, which, tol=1e-12)
    vals = eigsh(D, k=3, which=which, tol=1e-13, v0=np.ones(400))[0]
    assert ours.converged.all(), ours.message
    np.testing.assert_allclose(ours.eigenvalues, vals[C._common.order(vals, which)], rtol=1e-8)
    np.testing.assert_allclose(ours.eigenvalues, _ORDERS[which](lam)[:3], rtol=1e-8)
    # the eigenvectors of a diagonal operator are coordinate vectors, sign fixed positive
    idx = [int(np.abs(lam - v).argmin()) for v in ours.eigenvalues]
    np.testing.assert_allclose(ours.eigenvectors[np.arange(3), idx], 1.0, rtol=1e-10)


def test_one_sign_convention():
    V = np.array([[0.1, -0.9, 0.3], [0.5, 0.5, -0.2], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(C.row_signs(V), [-1.0, 1.0, 1.0])
    fixed = C.fix_signs(V)
    np.testing.assert_array_equal(fixed[0], -V[0])
    assert (fixed[np.arange(3), np.abs(fixed).argmax(axis=1)] >= 0).all()
    np.testing.assert_array_equal(C.fix_signs(V[0]), -V[0])  # one vector
    # every solver follows it
    A, _, _ = _planted(30, seed=11)
    for res in (C.lanczos(A, 3, "LM", tol=1e-10), C.power_iteration(A, 2, tol=1e-8)):
        np.testing.assert_array_equal(res.eigenvectors, C.fix_signs(res.eigenvectors))


# ----------------------------------------------------------------------------- budgets
def test_lanczos_budget_is_hard_and_honest():
    rng = np.random.default_rng(5)
    lam = np.concatenate([[2.0, 1.99, 1.98], rng.uniform(-1.0, 1.97, 497)])
    A, _, _ = _planted(500, seed=4, spectrum=lam)
    mv, count = _counted(A)
    short = C.lanczos(mv, 3, "LA", tol=1e-10, max_hvps=30)
    assert count[0] == short.n_hvps == 30
    assert short.status == "budget" and not short.converged.all()
    assert short.message.startswith("not converged after 30 HVPs (budget max_hvps=30)")
    # never a wrong value flagged converged: a pair flagged converged is accurate
    for v, ok, r in zip(short.eigenvalues, short.converged, short.residuals):
        if ok:
            assert r <= 10 * 1e-10 and np.abs(lam - v).min() <= 1e-8
    full = C.lanczos(A, 3, "LA", tol=1e-10)
    assert full.status == "converged" and full.converged.all(), full.message
    assert full.verified and full.message.startswith(
        f"converged: 3 eigenpair(s) to tol 1e-10 after {full.n_hvps} HVPs; ranks verified in"
    )
    np.testing.assert_allclose(full.eigenvalues, [2.0, 1.99, 1.98], rtol=1e-10)
    # the default budget: min(10 n, MAX_HVPS_CAP)
    unreachable = C.lanczos(A, 3, "LA", tol=0.0, ncv=6)
    assert unreachable.n_hvps <= min(10 * 500, C.MAX_HVPS_CAP)
    with pytest.raises(ValueError, match="max_hvps must be >= 3"):
        C.lanczos(A, 3, max_hvps=2)


def test_power_iteration_budget_is_hard_and_honest():
    A, _, _ = _planted(40, seed=5, spectrum=np.concatenate([[3.0, 2.9], np.linspace(0, 1, 38)]))
    mv, count = _counted(A)
    short = C.power_iteration(mv, 2, tol=1e-12, max_hvps=9)
    assert count[0] == short.n_hvps == 8  # blocks of 2 within 9
    assert short.status == "budget" and not short.converged.any()
    assert "not converged after 8 HVPs (budget max_hvps=9)" in short.message
    ok = C.power_iteration(A, 2, tol=1e-8)
    assert ok.status == "converged" and ok.converged.all()
    capped = C.power_iteration(A, 1, tol=1e-14, maxiter=5)
    assert capped.status == "maxiter" and "maxiter=5" in capped.message


def test_trace_and_density_budgets():
    A, _, _ = _planted(40, seed=2)
    full = C.hutchinson(A, 100, seed=0)
    assert full.converged and full.n_hvps == 100 and full.status == "converged"
    cut = C.hutchinson(A, 100, max_hvps=40, seed=0)
    assert not cut.converged and cut.status == "budget" and cut.n_hvps == 40
    assert cut.message.startswith("not converged after 40 HVPs (budget max_hvps=40)")
    # the probes used are the first ones of the full run
    np.testing.assert_allclose(cut.samples, full.samples[:40], rtol=1e-13)
    # a relative tolerance stops early once it is met
    easy = C.hutchinson(A + 50 * np.eye(40), 1000, tol=0.05, block=10, seed=0)
    assert easy.converged and easy.n_hvps < 1000
    assert easy.std_error <= 0.05 * abs(easy.estimate)
    pp = C.hutchpp(A, 60, max_hvps=30, seed=0)
    assert not pp.converged and pp.n_hvps <= 30 and pp.status == "budget"
    d = C.slq(A, n_runs=4, n_iter=20, max_hvps=40, seed=0)
    assert not d.converged and d.n_hvps == 40 and d.nodes.shape == (4, 10)
    assert "runs of 10 of n_iter=20" in d.message
    assert C.slq(A, n_runs=4, n_iter=20, seed=0).converged


def test_progress_bar_changes_nothing(capsys):
    A, _, _ = _planted(30, seed=3)
    quiet = C.lanczos(A, 2, "LA", tol=1e-10)
    shown = C.lanczos(A, 2, "LA", tol=1e-10, progress=True)
    np.testing.assert_array_equal(quiet.eigenvectors, shown.eigenvectors)
    assert "Lanczos LA" in capsys.readouterr().err
    for f in (
        lambda p: C.power_iteration(A, 1, progress=p).eigenvalues,
        lambda p: C.hutchinson(A, 10, progress=p).estimate,
        lambda p: C.hutchpp(A, 12, progress=p).estimate,
        lambda p: C.slq(A, n_runs=2, n_iter=5, progress=p).density,
    ):
        np.testing.assert_array_equal(f(False), f(True))
    assert "HVP" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress must be True or False"):
        C.lanczos(A, 1, progress="yes")


def test_defaults_finish_on_digits_mlp_64_64_10():
    """The default tolerance and budget on MLP 64-64-10 (P = 4 810) on the digits: top-5 at
    both ends converge well within the default budget."""
    from sklearn.datasets import load_digits

    import fastscape

    d = load_digits()
    X = fastscape.datasets.standardize(d.data)
    model = fastscape.MLP([64, 64, 10], activation="tanh", loss="softmax_ce")
    theta = model.init(0)
    assert model.n_params == 4810
    for which in ("LA", "SA"):
        res = C.top_eigen(model, theta, X, d.target, k=5, method="lanczos", which=which)
        assert res.status == "converged" and res.converged.all(), res.message
        assert res.n_hvps < 1000 and (res.residuals <= 10 * C.DEFAULT_TOL).all()
