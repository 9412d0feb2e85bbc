"""Critical points: the second-order test on closed-form Hessians and on models."""

from __future__ import annotations

import numpy as np
import pytest

import fastscape
from fastscape import critical


def _saddle_problem(hidden=1, d=1, n=40, seed=0):
    """tanh MLP with MSE at theta = 0 and centred targets: a critical point that is a saddle.

    At theta = 0 every gradient entry vanishes (tanh(0) = 0, the output weights are 0 and
    mean(y) = 0), and the Hessian couples first- and second-layer weights through
    -2 mean(x y): an indefinite block.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    y -= y.mean()
    model = fastscape.MLP([d, hidden, 1], activation="tanh", loss="mse")
    return model, np.zeros(model.n_params), X, y


def test_x2_minus_y2_is_index_one_saddle_escaping_along_e2():
    # f(x, y) = x^2 - y^2: Hessian diag(2, -2) everywhere, critical at the origin
    res = critical.classify(np.array([[2.0, 0.0], [0.0, -2.0]]))
    assert res.kind == "saddle" and res.saddle_index == 1
    assert (res.n_positive, res.n_negative, res.n_zero) == (1, 1, 0)
    np.testing.assert_allclose(np.abs(res.escape_direction), [0.0, 1.0], atol=1e-15)
    assert res.det_sign == -1 and res.condition_number == 1.0
    assert res.fraction_negative == 0.5 and res.trace == 0.0 and res.mean == 0.0


def test_rosenbrock_minimum():
    # f = (1 - x)^2 + 100 (y - x^2)^2 at (1, 1): H = [[2 + 1200x^2 - 400y, -400x], [-400x, 200]]
    H = np.array([[802.0, -400.0], [-400.0, 200.0]])
    res = critical.classify(H)
    vals = np.linalg.eigvalsh(H)
    assert res.kind == "local_minimum" and res.saddle_index == 0
    assert res.escape_direction is None
    np.testing.assert_allclose(res.condition_number, vals[1] / vals[0], rtol=1e-12)
    np.testing.assert_allclose([res.min, res.max], vals, rtol=1e-12)
    assert res.det_sign == 1
    np.testing.assert_allclose(res.log_abs_det, np.log(np.linalg.det(H)), rtol=1e-12)


def test_maximum_degenerate_and_summary():
    assert critical.classify(-np.diag([1.0, 2.0, 3.0])).kind == "local_maximum"
    deg = critical.classify(np.diag([1.0, 0.0, 2.0]))
    assert deg.kind == "degenerate" and deg.n_zero == 1
    assert deg.condition_number == np.inf and deg.condition_number_nonzero == 2.0
    assert deg.det_sign == 0 and deg.log_abs_det == -np.inf
    # indefinite beats zero eigenvalues: still a saddle
    assert critical.classify(np.array([-1.0, 0.0, 1.0])).kind == "saddle"
    vals = np.array([-3.0, -1.0, 0.5, 2.0, 4.0])
    s = critical.classify(vals).spectral_summary()
    np.testing.assert_allclose(
        [s["min"], s["max"], s["mean"], s["median"], s["std"], s["trace"]],
        [-3.0, 4.0, vals.mean(), 0.5, vals.std(), vals.sum()],
    )
    assert s["fraction_negative"] == 0.4 and s["det_sign"] == 1
    np.testing.assert_allclose(s["condition_number"], 8.0)


def test_determinant_sign_does_not_overflow():
    vals = np.concatenate([np.full(400, 1e200), [-1.0, -2.0, -3.0]])
    res = critical.classify(vals, tol=1e-12)
    assert res.det_sign == -1  # the plain product would be inf (or nan)
    np.testing.assert_allclose(res.log_abs_det, 400 * 200 * np.log(10) + np.log(6), rtol=1e-12)


def test_tolerance_counts_small_eigenvalues_as_zero():
    vals = np.array([1.0, 1e-10, -1e-10, 2.0])
    assert critical.classify(vals).kind == "degenerate"
    assert critical.classify(vals, tol=0.0).kind == "saddle"


def test_planted_spectrum_classified_with_escape_direction():
    rng = np.random.default_rng(5)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    lam = np.array([-5.0, -0.5, *np.linspace(0.1, 3.0, 10)])
    H = (Q * lam) @ Q.T
    res = critical.classify(H)
    assert res.kind == "saddle" and res.saddle_index == 2
    np.testing.assert_allclose(abs(res.escape_direction @ Q[:, 0]), 1.0, atol=1e-10)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="must be square"):
        critical.classify(np.ones((2, 3)))
    with pytest.raises(ValueError, match="not symmetric"):
        critical.classify(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        critical.classify(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        critical.classify(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="tol must be finite"):
        critical.classify(np.eye(2), tol=-1.0)


# ----------------------------------------------------------------------------- on models
def test_model_saddle_exact_and_lanczos_agree():
    model, theta, X, y = _saddle_problem(hidden=3, d=2)
    ex = critical.classify_point(model, theta, X, y, method="exact")
    assert ex.grad_norm < 1e-12 and ex.kind == "saddle" and ex.saddle_index >= 1
    vals = np.linalg.eigvalsh(model.hessian(theta, X, y))
    np.testing.assert_allclose(ex.eigenvalues, vals, atol=1e-12)
    lz = critical.classify_point(model, theta, X, y, method="lanczos", k=2)
    assert lz.kind == "saddle" and not lz.complete and lz.trace is None
    np.testing.assert_allclose([lz.min, lz.max], [vals[0], vals[-1]], rtol=1e-8)
    # at theta = 0 the hidden units are interchangeable, so the most negative eigenvalue is
    # repeated: both escape directions are unit eigenvectors of it, not necessarily equal
    H = model.hessian(theta, X, y)
    for v in (lz.escape_direction, ex.escape_direction):
        np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-12)
        np.testing.assert_allclose(H @ v, vals[0] * v, atol=1e-8)


def test_classify_point_passes_the_budget_through():
    model, theta, X, y = _saddle_problem(hidden=3, d=2)
    ok = critical.classify_point(model, theta, X, y, method="lanczos", k=2)
    assert ok.converged and ok.n_hvps > 0 and "converged: 2 eigenpair(s)" in ok.message
    assert critical.classify_point(model, theta, X, y, method="exact").converged
    short = critical.classify_point(model, theta, X, y, method="lanczos", k=2, eig_tol=1e-14,
                                    max_hvps=3)  # fmt: skip
    assert not short.converged and short.n_hvps == 6
    assert "not converged after 3 HVPs (budget max_hvps=3)" in short.message


def test_model_minimum():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + rng.normal(size=60) > 0).astype(int)
    model = fastscape.Logistic(3)
    fit = fastscape.fit(model, X, y, method="newton", steps=50, gtol=1e-12)
    res = critical.classify_point(model, fit.theta, X, y, grad_tol=1e-8)
    assert res.kind == "local_minimum" and res.escape_direction is None
    assert res.loss == pytest.approx(model.loss(fit.theta, X, y))
    with pytest.raises(ValueError, match="no negative curvature"):
        critical.escape_saddle(model, fit.theta, X, y)


def test_non_critical_point_refused_with_configurable_tolerance():
    model, theta, X, y = _saddle_problem(hidden=2)
    theta = theta + 0.3
    gnorm = np.linalg.norm(model.grad(theta, X, y)[1])
    with pytest.raises(critical.NotCriticalError, match="not a critical point"):
        critical.classify_point(model, theta, X, y)
    res = critical.classify_point(model, theta, X, y, grad_tol=2 * gnorm)
    assert res.grad_norm == pytest.approx(gnorm)
    with pytest.raises(ValueError, match="unknown method"):
        critical.classify_point(model, theta, X, y, method="newton")


def test_escape_saddle_lowers_the_loss():
    model, theta, X, y = _saddle_problem(hidden=2, d=2)
    out = critical.escape_saddle(model, theta, X, y, step=0.5)
    H = model.hessian(theta, X, y)
    lam_min = np.linalg.eigvalsh(H)[0]
    assert out.eigenvalue == pytest.approx(lam_min, rel=1e-10) and lam_min < 0
    assert out.loss_after < out.loss_before and out.predicted_change < 0
    assert out.loss_after == pytest.approx(model.loss(out.theta, X, y), rel=1e-14)
    np.testing.assert_allclose(H @ out.direction, lam_min * out.direction, atol=1e-10)
    np.testing.assert_allclose(out.theta, theta + out.step * out.direction)
    # at a saddle the gradient vanishes, so the quadratic model predicts the drop for small steps
    small = critical.escape_saddle(model, theta, X, y, step=1e-3)
    assert small.decrease == pytest.approx(-small.predicted_change, rel=1e-2)


def test_escape_in_plane():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(2, 7))
    np.testing.assert_allclose(critical.escape_in_plane(0.3 * B[0] - 2 * B[1], B), [0.3, -2.0])
    with pytest.raises(ValueError, match="2 rows"):
        critical.escape_in_plane(np.ones(7), np.ones((3, 7)))


def test_plot_escape_direction_on_x2_minus_y2_surface():
    from fastscape import _plot_curvature as pc

    a, b = np.linspace(-1, 1, 21), np.linspace(-2, 2, 31)
    Z = a[:, None] ** 2 - b[None, :] ** 2  # loss[i, j] at (alphas[i], betas[j])
    res = critical.classify(np.diag([2.0, -2.0]))
    fig = pc.plot_escape_direction(a, b, Z, res.escape_direction)
    ax = fig.axes[0]
    arrows = [t for t in ax.texts]
    assert len(arrows) == 2
    # the arrows point along ±e2 (the beta axis), from the origin
    tips = sorted(t.xy for t in arrows)
    np.testing.assert_allclose(tips, [(0.0, -2 / 3), (0.0, 2 / 3)], atol=1e-12)
    with pytest.raises(ValueError, match="expected \\(len\\(alphas\\), len\\(betas\\)\\)"):
        pc.plot_escape_direction(a, b, Z.T, res.escape_direction)


def test_escape_saddle_with_lanczos_matches_exact():
    model, theta, X, y = _saddle_problem(hidden=2, d=2)
    ex = critical.escape_saddle(model, theta, X, y, step=0.5, method="exact")
    lz = critical.escape_saddle(model, theta, X, y, step=0.5, method="lanczos")
    assert lz.eigenvalue == pytest.approx(ex.eigenvalue, rel=1e-10)
    assert lz.loss_after < lz.loss_before


# ----------------------------------------------------------------------------- what is known
def _symmetric_saddle():
    """The issue-17 point: MLP 3-4-1 at θ = 0, a critical point whose Hessian has the
    eigenvalue -4.170 four times (the hidden units are interchangeable)."""
    rng = np.random.default_rng(0)
    m = fastscape.MLP([3, 4, 1], "tanh", "mse")
    X = rng.normal(size=(100, 3))
    y = 1.5 * X[:, 0] + X[:, 1]
    y -= y.mean()
    return m, np.zeros(m.n_params), X, y


@pytest.mark.parametrize("seed", range(4))
def test_saddle_index_is_a_bound_unless_all_negatives_were_found(seed):
    m, theta, X, y = _symmetric_saddle()
    vals = np.linalg.eigvalsh(m.hessian(theta, X, y))
    ex = critical.classify_point(m, theta, X, y, method="exact")
    assert ex.saddle_index == 4 == ex.saddle_index_lower_bound and ex.saddle_index_exact
    assert int((vals < -ex.tol).sum()) == 4
    # k = 3: three copies of -4.17 found, all negative: at least 3, the index is not known
    lz = critical.classify_point(m, theta, X, y, method="lanczos", k=3, seed=seed)
    assert lz.converged and lz.kind == "saddle", lz.message
    assert lz.saddle_index is None and not lz.saddle_index_exact
    assert lz.saddle_index_lower_bound == 3
    # k = 5: the fifth smallest is ~0, so every negative one was found: exact, and right
    lz5 = critical.classify_point(m, theta, X, y, method="lanczos", k=5, seed=seed)
    assert lz5.converged and lz5.saddle_index_exact, lz5.message
    assert lz5.saddle_index == 4 == lz5.saddle_index_lower_bound


def test_lanczos_lower_bound_holds_even_unconverged():
    m, theta, X, y = _symmetric_saddle()
    vals = np.linalg.eigvalsh(m.hessian(theta, X, y))
    for budget in (5, 7, 10, 14):
        r = critical.classify_point(m, theta, X, y, method="lanczos", k=5, max_hvps=budget)
        assert r.saddle_index_lower_bound <= int((vals < -r.tol).sum())
        if not r.converged:
            assert r.saddle_index is None and r.condition_number is None


def test_no_condition_number_from_the_two_ends():
    # issue 17: exact 1467, but the 2k extreme values gave 3.29
    model = fastscape.MLP([4, 6, 1], "tanh", "mse")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    y = rng.normal(size=50)
    theta = model.init(0)
    kw = dict(grad_tol=1e9)
    ex = critical.classify_point(model, theta, X, y, method="exact", **kw)
    a = np.abs(np.linalg.eigvalsh(model.hessian(theta, X, y)))
    np.testing.assert_allclose(ex.condition_number, a.max() / a.min(), rtol=1e-10)
    lz = critical.classify_point(model, theta, X, y, method="lanczos", k=3, **kw)
    assert lz.converged and not lz.complete, lz.message
    assert lz.condition_number is None and lz.condition_number_nonzero is None
    assert lz.trace is None and lz.det_sign is None
    # the ends themselves are exact: min and max agree with eigh
    vals = np.linalg.eigvalsh(model.hessian(theta, X, y))
    np.testing.assert_allclose([lz.min, lz.max], [vals[0], vals[-1]], rtol=1e-9)
    # when the two ends cover the spectrum, everything is known again
    P = model.n_params
    full = critical.classify_point(model, theta, X, y, method="lanczos", k=(P + 1) // 2, **kw)
    assert full.complete and full.saddle_index_exact, full.message
    np.testing.assert_allclose(full.condition_number, ex.condition_number, rtol=1e-6)
    assert full.saddle_index == ex.saddle_index


def test_slq_count_bracket_is_the_chebyshev_markov_stieltjes_inequality():
    # one run of plain Lanczos (NumPy, full re-orthogonalisation) from a known vector: the
    # distribution function of the measure sum_i (v.u_i)^2 delta(t - lam_i) at every t lies
    # within the quadrature's sum minus / plus the weight of the adjacent nodes
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    n, m = 60, 8
    lam = np.concatenate([rng.normal(0, 0.01, 30), rng.uniform(-2, 3, 30)])
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (U * lam) @ U.T
    v = rng.choice([-1.0, 1.0], n) / np.sqrt(n)
    Q = np.zeros((m, n))
    Q[0] = v
    T = np.zeros((m, m))
    for j in range(m):
        w = A @ Q[j]
        for _ in range(2):
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        T[j, j] = Q[j] @ A @ Q[j]
        if j + 1 < m:
            T[j, j + 1] = T[j + 1, j] = np.linalg.norm(w)
            Q[j + 1] = w / T[j + 1, j]
    th, S = np.linalg.eigh(T)
    dens = SimpleNamespace(nodes=th[None], weights=(S[0] ** 2)[None])
    c2 = (U.T @ v) ** 2
    for t in np.linspace(-2.5, 3.5, 241):
        est, _, quad = critical._slq_negative_count(dens, 1, t, m)
        F = c2[lam < t].sum()
        assert abs(F - est) <= quad + 1e-12, t


def _random_point():
    rng = np.random.default_rng(11)
    model = fastscape.MLP([5, 10, 2], activation="tanh", loss="mse")
    X, y = rng.normal(size=(80, 5)), rng.normal(size=(80, 2))
    return model, model.init(3), X, y


@pytest.mark.parametrize("case", ["symmetric_saddle", "random_point"])
def test_negative_count_estimate_within_its_error_bars(case):
    # the symmetric saddle has 4 distinct eigenvalues (the runs become invariant: exact
    # quadrature); the random point (not critical: grad_tol waived) a spread spectrum, P = 82
    if case == "symmetric_saddle":
        model, theta, X, y = _saddle_problem(hidden=12, d=3, n=60)
    else:
        model, theta, X, y = _random_point()
    vals = np.linalg.eigvalsh(model.hessian(theta, X, y))
    misses = 0
    for seed in range(8):
        r = critical.classify_point(model, theta, X, y, method="lanczos", k=2, seed=seed,
                                    grad_tol=1e9, estimate_negatives=True, slq_runs=10,
                                    slq_iter=20)  # fmt: skip
        true = int((vals < -r.tol).sum())
        assert r.n_negative_std_error > 0 and r.n_negative_quadrature_error >= 0
        err = abs(r.n_negative_estimate - true)
        misses += err > 3 * r.n_negative_std_error + r.n_negative_quadrature_error
        assert "SLQ:" in r.message
    assert misses <= 1  # 3 standard errors: a miss is a rare event, two would be a bug
    ex = critical.classify_point(model, theta, X, y, method="exact", grad_tol=1e9)
    assert ex.n_negative_estimate is None and ex.saddle_index == int((vals < -ex.tol).sum())
    with pytest.raises(TypeError, match="estimate_negatives"):
        critical.classify_point(model, theta, X, y, method="lanczos", estimate_negatives=1)
