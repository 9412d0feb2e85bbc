"""Per-layer blocks and the diagonal of the curvature matrices: exact values against torch.func
references (1e-10), estimated values inside their stated error bars over repeated seeds."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import case_id, make_problem
from numpy.testing import assert_allclose

from fastscape import curvature

torch = pytest.importorskip("torch")
from curvature_refs import references  # noqa: E402  (needs torch)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

CASES = [
    ([4, 5, 3], "tanh", "softmax_ce"),
    ([3, 4, 3, 2], "sigmoid", "mse"),
    ([4, 3, 5, 1], "gelu", "logistic"),
]


def _reference(case, matrix, seed=3):
    model, theta, X, y = make_problem(case, n=27, seed=seed, scale=0.9)
    H, G, F = references(model, theta, X, y)
    M = {"hessian": H, "ggn": G, "fisher": F, "residual": H - G}[matrix]
    return model, theta, X, y, M


def _blocks(model):
    return [(lay.weight.start, lay.bias.stop) for lay in model.layout]


@pytest.mark.parametrize("matrix", ["hessian", "ggn", "fisher", "residual"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_exact_layer_blocks_agree_with_torch(case, matrix):
    model, theta, X, y, M = _reference(case, matrix)
    res = curvature.layer_blocks(model, theta, X, y, matrix=matrix, k=2, which="LA")
    assert res.exact and res.method == "exact" and res.matrix == matrix
    scale = max(1.0, np.abs(M).max())
    for l, (a, b) in enumerate(_blocks(model)):
        assert tuple(res.ranges[l]) == (a, b)
        w = np.linalg.eigvalsh(M[a:b, a:b])[::-1]
        assert_allclose(res.eigenvalues[l], w[:2], rtol=1e-10, atol=1e-12 * scale)
        assert res.eigen_converged[l].all()
        assert_allclose(res.trace[l], np.trace(M[a:b, a:b]), rtol=1e-10, atol=1e-12 * scale)
        for m, (c, d) in enumerate(_blocks(model)):
            B = M[a:b, c:d]
            assert_allclose(res.coupling[l, m], np.linalg.norm(B), rtol=1e-10, atol=1e-12 * scale)
            assert_allclose(
                res.coupling_spectral[l, m], np.linalg.norm(B, 2), rtol=1e-9, atol=1e-12 * scale
            )
    assert np.all(res.trace_std_error == 0) and np.all(res.coupling_std_error == 0)
    assert_allclose(np.diag(res.relative_coupling), 1.0, rtol=1e-12)


def test_layer_block_operator_is_the_diagonal_block():
    case = ([4, 5, 4, 3], "tanh", "softmax_ce")
    model, theta, X, y, M = _reference(case, "hessian")
    H = curvature.HessianOperator(model, theta, X, y)
    for layer, (a, b) in zip([0, 1, -1], [_blocks(model)[0], _blocks(model)[1], _blocks(model)[2]]):
        B = curvature.layer_block(H, model, layer)
        assert B.shape == (b - a, b - a)
        V = np.random.default_rng(layer + 5).normal(size=(3, b - a))
        assert_allclose(B.rows(V), V @ M[a:b, a:b], rtol=1e-10, atol=1e-12)
        assert_allclose(B @ V[0], M[a:b, a:b] @ V[0], rtol=1e-10, atol=1e-12)
        assert B.n_hvps == 4
    with pytest.raises(ValueError, match="layer"):
        curvature.layer_block(H, model, 3)
    with pytest.raises(TypeError, match="layer"):
        curvature.layer_block(H, model, 1.0)
    with pytest.raises(ValueError, match="A is"):
        curvature.layer_block(np.eye(4), model, 0)


def test_estimated_layer_blocks_lie_within_their_error_bars():
    case = ([4, 6, 5, 3], "tanh", "softmax_ce")
    model, theta, X, y = make_problem(case, n=27, seed=3, scale=0.9)
    # the exact method is checked against torch above
    exact = curvature.layer_blocks(model, theta, X, y, method="exact", k=2)
    z = []
    for seed in range(8):
        est = curvature.layer_blocks(
            model, theta, X, y, method="estimate", k=2, n_samples=150, seed=seed, tol=1e-10
        )
        assert not est.exact and est.method == "estimate" and est.coupling_spectral is None
        assert est.n_matvecs >= 3 * 150
        for l in range(3):
            assert est.eigen_converged[l].all()
            assert_allclose(est.eigenvalues[l], exact.eigenvalues[l], rtol=1e-7, atol=1e-9)
        assert np.all(est.trace_std_error > 0) and np.all(est.coupling_std_error > 0)
        z += list((est.trace - exact.trace) / est.trace_std_error)
        iu = np.triu_indices(3)
        z += list((est.coupling[iu] - exact.coupling[iu]) / est.coupling_std_error[iu])
    z = np.abs(np.array(z))
    # 72 standardised errors: about 0.3% beyond 3 sigma for well-estimated bars
    assert (z > 3).sum() <= 2, z
    assert 0.4 < np.mean(z**2) < 2.0, np.mean(z**2)


@pytest.mark.parametrize("matrix", ["hessian", "ggn", "fisher", "residual"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_exact_diagonal_agrees_with_torch(case, matrix):
    model, theta, X, y, M = _reference(case, matrix)
    res = curvature.hessian_diagonal(model, theta, X, y, matrix=matrix)
    assert res.exact and res.method == "exact" and res.matrix == matrix
    assert_allclose(res.diagonal, np.diag(M), rtol=1e-10, atol=1e-12 * max(1, np.abs(M).max()))
    assert np.all(res.std_error == 0)
    exact_rows = curvature.operator_diagonal(curvature.curvature_operator(model, theta, X, y))
    assert_allclose(exact_rows.diagonal, curvature.hessian_diagonal(model, theta, X, y).diagonal,
                    rtol=1e-10, atol=1e-13)  # fmt: skip


@pytest.mark.parametrize("matrix", ["hessian", "ggn"])
def test_hutchinson_diagonal_lies_within_its_error_bars(matrix):
    case = ([4, 6, 3], "tanh", "softmax_ce")
    model, theta, X, y, M = _reference(case, matrix)
    truth = np.diag(M)
    z = []
    for seed in range(10):
        res = curvature.hessian_diagonal(
            model, theta, X, y, "hutchinson", matrix=matrix, n_samples=200, seed=seed
        )
        assert not res.exact and res.method == "hutchinson" and res.n_matvecs == 200
        assert res.converged and res.std_error.shape == truth.shape
        assert np.all(res.std_error > 0)
        z.append((res.diagonal - truth) / res.std_error)
    z = np.abs(np.concatenate(z))
    # 510 standardised errors: about 1.4 expected beyond 3 sigma
    assert (z > 3).sum() <= 6, np.sort(z)[-8:]
    assert 0.7 < np.mean(z**2) < 1.4, np.mean(z**2)


def test_hutchinson_diagonal_of_a_diagonal_matrix_is_exact_and_budgeted():
    d = np.linspace(-2.0, 3.0, 7)
    res = curvature.hutchinson_diagonal(np.diag(d), 10, seed=1)
    assert_allclose(res.diagonal, d, rtol=1e-15)
    assert_allclose(res.std_error, 0.0, atol=1e-15)
    short = curvature.hutchinson_diagonal(np.diag(d), 10, max_hvps=4)
    assert not short.converged and short.status == "budget" and short.n_matvecs == 4
    assert "max_hvps=4" in short.message


def test_bad_input_is_refused_naming_the_argument():
    model, theta, X, y = make_problem(([3, 4, 2], "tanh", "mse"), n=10)
    with pytest.raises(ValueError, match="method"):
        curvature.hessian_diagonal(model, theta, X, y, "stochastic")
    with pytest.raises(ValueError, match="matrix"):
        curvature.hessian_diagonal(model, theta, X, y, matrix="gauss")
    with pytest.raises(ValueError, match="n_samples"):
        curvature.hutchinson_diagonal(np.eye(3), 1)
    with pytest.raises(ValueError, match="max_params"):
        curvature.hessian_diagonal(model, theta, X, y, "exact", matrix="ggn", max_params=3)
    with pytest.raises(ValueError, match="method"):
        curvature.layer_blocks(model, theta, X, y, "sampled")
    with pytest.raises(ValueError, match="which"):
        curvature.layer_blocks(model, theta, X, y, which="BE")
    with pytest.raises(ValueError, match="k"):
        curvature.layer_blocks(model, theta, X, y, k=0)
    with pytest.raises(ValueError, match="n_samples"):
        curvature.layer_blocks(model, theta, X, y, "estimate", n_samples=1)
