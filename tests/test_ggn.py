"""Gauss-Newton, empirical Fisher and the residual term against exact torch.func constructions.

The references are built independently of fastscape's kernels: the network's outputs as a
function of the flat parameters (torch), ``J = jacrev(outputs)`` (n, out, P), the per-sample
loss's Hessian in the outputs by ``vmap(hessian(loss))`` (n, out, out), ``G = (1/n) Σ J_iᵀ H_i
J_i + diag(r)``; the Fisher from per-sample gradients ``vmap(grad(loss_i))``; the Hessian by
``torch.func.hessian`` of the objective.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from numpy.testing import assert_allclose

import fastscape
from fastscape import curvature
from fastscape.curvature.ggn import exact_matrix

torch = pytest.importorskip("torch")
from curvature_refs import references  # noqa: E402  (needs torch)

# torch.func.hessian (forward over reverse) loads its jvp decompositions through torch.jit.script
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

CASES = [*MODEL_CASES, ([4, 5, 3], "gelu", "softmax_ce"), ([3, 4, 2], "leaky_relu", "mse")]


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_ggn_fisher_residual_agree_with_torch(case, l2):
    _, theta, X, y = make_problem(case, n=23, seed=5, scale=0.8)
    sizes, act, loss = case
    model = fastscape.MLP(sizes, activation=act, loss=loss, l2=l2, l2_bias=l2 > 0 and loss == "mse")
    H, G, F = references(model, theta, X, y)
    P = model.n_params
    V = np.random.default_rng(1).normal(size=(5, P))
    ggn = curvature.ggn_operator(model, theta, X, y)
    fisher = curvature.fisher_operator(model, theta, X, y)
    resid = curvature.residual_operator(model, theta, X, y)
    scale = max(1.0, np.abs(H).max())
    assert_allclose(ggn.rows(V), V @ G, rtol=1e-10, atol=1e-12 * scale)
    assert_allclose(fisher.rows(V), V @ F, rtol=1e-10, atol=1e-12 * scale)
    assert_allclose(resid.rows(V), V @ (H - G), rtol=1e-10, atol=1e-11 * scale)
    assert_allclose(exact_matrix(model, theta, X, y, "ggn"), G, rtol=1e-10, atol=1e-12 * scale)
    assert_allclose(exact_matrix(model, theta, X, y, "fisher"), F, rtol=1e-10, atol=1e-12 * scale)
    # the counters count vectors; a single vector gives a vector
    assert ggn.n_hvps == 5 + 0 and fisher.n_hvps == 5 and resid.n_hvps == 5
    assert_allclose(ggn @ V[0], V[0] @ G, rtol=1e-10, atol=1e-12 * scale)
    if len(sizes) == 2:  # no hidden layer: the Hessian is the GGN
        assert_allclose(resid.rows(V), 0.0, atol=1e-13 * scale)


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_ggn_and_fisher_are_symmetric_psd(case):
    model, theta, X, y = make_problem(case, n=30, seed=9, scale=1.2)
    for matrix in ("ggn", "fisher"):
        M = exact_matrix(model, theta, X, y, matrix)
        A = curvature.curvature_operator(model, theta, X, y, matrix)
        E = np.eye(model.n_params)
        raw = A.rows(E)
        assert_allclose(raw, raw.T, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(raw).max()))
        w = np.linalg.eigvalsh(M)
        assert w.min() >= -1e-12 * max(1.0, w.max()), (matrix, w.min())
    # the Fisher has rank at most n
    small = make_problem(case, n=2, seed=9)[2:]
    if model.n_params > 2:
        w = np.linalg.eigvalsh(exact_matrix(model, theta, *small, "fisher"))
        assert (w > 1e-12 * max(1.0, w.max())).sum() <= 2


def test_products_do_not_depend_on_threads_blocks_or_other_rows(monkeypatch):
    import numba

    from fastscape import config

    model, theta, X, y = make_problem(([4, 5, 4, 3], "tanh", "softmax_ce"), n=61, seed=2)
    V = np.random.default_rng(3).normal(size=(6, model.n_params))
    for matrix in ("ggn", "fisher"):
        one_block = curvature.curvature_operator(model, theta, X, y, matrix).rows(V)
        monkeypatch.setattr(config, "HVP_SAMPLE_BLOCK", 16)  # 4 sample blocks
        want = curvature.curvature_operator(model, theta, X, y, matrix).rows(V)
        one = curvature.curvature_operator(model, theta, X, y, matrix).rows(V[2])
        assert np.array_equal(one, want[2])
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            serial = curvature.curvature_operator(model, theta, X, y, matrix).rows(V)
        finally:
            numba.set_num_threads(previous)
        assert np.array_equal(serial, want)
        monkeypatch.undo()
        # another sample partition changes the summation order only
        assert_allclose(one_block, want, rtol=1e-12, atol=1e-15)


def test_solvers_take_the_new_operators():
    model, theta, X, y = make_problem(([4, 6, 3], "relu", "softmax_ce"), n=40, seed=4)
    for matrix in ("ggn", "fisher", "residual"):
        M = exact_matrix(model, theta, X, y, matrix)
        A = curvature.curvature_operator(model, theta, X, y, matrix)
        res = curvature.lanczos(A, 2, "LA", tol=1e-10)
        assert_allclose(res.eigenvalues, np.linalg.eigvalsh(M)[::-1][:2], rtol=1e-8)
        assert res.all_converged


def test_bad_input_is_refused_naming_the_argument(monkeypatch):
    from fastscape import _device

    model, theta, X, y = make_problem(([3, 4, 2], "tanh", "mse"), n=10)
    with pytest.raises(ValueError, match="matrix"):
        curvature.curvature_operator(model, theta, X, y, "hessien")
    with pytest.raises(ValueError, match="theta"):
        curvature.ggn_operator(model, theta[:-1], X, y)
    with pytest.raises(ValueError, match="V has rows"):
        curvature.fisher_operator(model, theta, X, y).rows(np.ones(3))
    with pytest.raises(ValueError, match="V has rows"):
        curvature.residual_operator(model, theta, X, y).rows(np.ones(3))
    # on a machine with a GPU the CUDA backend has no GGN: refused naming the device
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", lambda: True)
    for make in (curvature.ggn_operator, curvature.fisher_operator):
        with pytest.raises(ValueError, match="device='cuda'"):
            make(model, theta, X, y, device="cuda")
    with pytest.raises(ValueError, match="max_params"):
        exact_matrix(model, theta, X, y, "ggn", max_params=5)


def test_nan_and_inf_propagate_through_the_kernels_row_by_row():
    """The kernels keep NaN/Inf (no ``nnan``/``ninf`` fastmath): fed directly through the seam
    (the API refuses them first, naming the argument)."""
    from fastscape import _device

    model, theta, X, y = make_problem(([3, 5, 2], "tanh", "softmax_ce"), n=20, seed=6)
    data = model.batch(X, y)
    V = np.random.default_rng(7).normal(size=(3, model.n_params))
    for make in (_device.ggn_operator, _device.fisher_operator):
        clean = make(model, theta, data)(V)
        for value in (np.nan, np.inf):
            bad = V.copy()
            bad[1, 4] = value
            out = make(model, theta, data)(bad)
            assert not np.isfinite(out[1]).all()
            assert np.array_equal(out[[0, 2]], clean[[0, 2]])
        bad_theta = theta.copy()
        bad_theta[0] = np.nan
        assert np.isnan(make(model, bad_theta, data)(V)).any()
    for matrix in ("ggn", "fisher", "residual"):
        A = curvature.curvature_operator(model, theta, X, y, matrix)
        bad = V.copy()
        bad[1, 4] = np.nan
        with pytest.raises(ValueError, match="V contains non-finite"):
            A.rows(bad)
        with pytest.raises(ValueError, match="theta"):
            curvature.curvature_operator(model, np.full_like(theta, np.inf), X, y, matrix)


def test_the_backend_refuses_float32():
    from fastscape import _device

    model, theta, X, y = make_problem(([3, 4, 2], "tanh", "mse"), n=10)
    be = _device.BACKENDS["cpu"]
    for op in (be.ggn_operator, be.fisher_operator):
        with pytest.raises(ValueError, match="float64 only"):
            op(model.spec, theta, model.batch(X, y), "float32")


def test_the_benchmark_constructions_agree_on_a_small_problem():
    """bench/bench_ggn.py's torch constructions (checked there before every timing) on a tiny
    tanh / softmax-CE model."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_ggn.py"
    spec = importlib.util.spec_from_file_location("fastscape_bench_ggn", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, theta, X, y = make_problem(([4, 5, 3], "tanh", "softmax_ce"), n=17, seed=8)
    data = model.batch(X, y)
    V = np.random.default_rng(9).normal(size=(3, model.n_params))
    for matrix in ("ggn", "fisher"):
        bench._check_agreement(matrix, model, data, theta, V)
