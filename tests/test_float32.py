"""float32 on the CPU (``dtype="float32"``): loss, gradient, HVPs, the operator and the
eigensolvers against float64, and the memory the data take.

The convention (``docs/models.md``, "float32"): X and the parameters in float32, products and
activations in float32, sums over samples accumulated in float64, results float64. The
tolerances asserted are the ones the docs state: the loss to 1e-6 relative and the top Hessian
eigenvalue to 1e-5 relative on realistic small models (about 1e-8 is measured for both);
gradients and HVPs to 1e-5 of their largest entry (about 3e-7 is measured).
"""

from __future__ import annotations

import tracemalloc

import numba
import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from fastscape.kernels import hvp as kh

import fastscape
from fastscape import _device, curvature
from fastscape._threads import threads

#: Realistic small models: two hidden layers of tens of units, a few hundred samples,
#: inputs standardised, Glorot-initialised parameters (the scale of a real training run).
REALISTIC = [
    ([20, 32, 16, 5], "tanh", "softmax_ce", 0.0),
    ([12, 24, 1], "relu", "logistic", 0.0),
    ([10, 16, 16, 3], "gelu", "mse", 0.0),
    ([16, 24, 24, 4], "sigmoid", "softmax_ce", 1e-3),
]


def _realistic(case, n=600, seed=0):
    sizes, act, loss, l2 = case
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(sizes, activation=act, loss=loss, l2=l2)
    X = rng.normal(size=(n, sizes[0]))
    out = sizes[-1]
    if loss == "softmax_ce":
        y = rng.integers(0, out, n)
    elif loss == "logistic":
        y = rng.integers(0, 2, n)
    else:
        y = rng.normal(size=(n, out))
    return model, model.init(seed), model.batch(X, y)


def _rid(case):
    sizes, act, loss, l2 = case
    return f"{'-'.join(map(str, sizes))}-{act}-{loss}" + (f"-l2{l2:g}" if l2 else "")


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("case", REALISTIC, ids=_rid)
def test_loss_grad_hvp_agree_with_float64(case):
    model, theta, data = _realistic(case)
    l64, g64 = model.grad(theta, data)
    l32, g32 = model.grad(theta, data, dtype="float32")
    assert abs(l32 - l64) <= 1e-6 * abs(l64)
    assert model.loss(theta, data, dtype="float32") == l32  # one forward pass, the same sums
    assert g32.dtype == np.float64 and _rel(g32, g64) <= 1e-5
    V = np.random.default_rng(1).normal(size=(3, model.n_params))
    h32 = model.hvp(theta, V, data, dtype="float32")
    assert h32.dtype == np.float64 and _rel(h32, model.hvp(theta, V, data)) <= 1e-5


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_every_model_kind_runs_in_float32(case):
    """Every activation, loss and depth (random, unscaled parameters: looser than the
    realistic models, but the same kernels)."""
    model, theta, X, y = make_problem(case, n=45, seed=4)
    data = model.batch(X, y)
    l64, g64 = model.grad(theta, data)
    l32, g32 = model.grad(theta, data, dtype="float32")
    assert abs(l32 - l64) <= 1e-5 * max(abs(l64), 1.0)
    assert _rel(g32, g64) <= 1e-4
    V = np.random.default_rng(2).normal(size=(2, model.n_params))
    assert _rel(model.hvp(theta, V, data, dtype="float32"), model.hvp(theta, V, data)) <= 1e-4


@pytest.mark.parametrize("case", REALISTIC[:3], ids=_rid)
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalue_agrees_with_float64(case, method):
    model, theta, data = _realistic(case)
    e64 = curvature.top_eigen(model, theta, data, k=2, method=method, tol=1e-8, max_hvps=4000)
    e32 = curvature.top_eigen(
        model, theta, data, k=2, method=method, tol=1e-5, max_hvps=4000, dtype="float32"
    )
    assert e32.converged.all(), e32.message
    np.testing.assert_allclose(e32.eigenvalues[0], e64.eigenvalues[0], rtol=1e-5)


def test_operator_works_in_float32_and_says_so():
    model, theta, data = _realistic(REALISTIC[0], n=300)
    H = curvature.HessianOperator(model, theta, data, dtype="float32")
    assert H.precision == "float32" and H.dtype == np.float64
    V = np.random.default_rng(3).normal(size=(4, model.n_params))
    out = H.rows(V)
    assert out.dtype == np.float64
    assert _rel(out, curvature.HessianOperator(model, theta, data).rows(V)) <= 1e-5
    # a row does not depend on the other rows of the call
    np.testing.assert_array_equal(H.rows(V[2]), out[2])
    # the solvers take it as any operator: Hutchinson with the same probes
    t32 = curvature.hutchinson(H, n_samples=16, seed=0).estimate
    t64 = curvature.hutchinson(curvature.HessianOperator(model, theta, data), 16, seed=0)
    assert abs(t32 - t64.estimate) <= 1e-5 * abs(t64.estimate)
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        curvature.HessianOperator(model, theta, data, dtype="float16")
    with pytest.raises(ValueError, match="float64 only"):
        curvature.top_eigen(model, theta, data, method="exact", dtype="float32")


def test_float32_bits_do_not_depend_on_the_thread_count():
    model, theta, data = _realistic(REALISTIC[0], n=2100)  # several sample blocks
    V = np.random.default_rng(5).normal(size=(3, model.n_params))
    runs = []
    for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        with threads(t):
            g32 = model.grad(theta, data, dtype="float32")[1]
            runs.append((g32, model.hvp(theta, V, data, dtype="float32")))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_float32_operator_keeps_a_float32_cache():
    """The products run in float32: the pass at theta, the parameters and X are float32, in
    sample blocks of ``config.F32_SAMPLE_BLOCK``."""
    model, theta, data = _realistic(REALISTIC[0], n=700)
    prepared = _device.BACKENDS["cpu"].prepare_data(data, "float32")
    assert prepared.X.dtype == np.float32 and prepared.Y is data.Y
    cache = kh.forward_cache(theta, *model.spec.kernel_args, prepared.X, data.Y, 256)
    assert cache.cache.dtype == np.float32 and cache.theta.dtype == np.float32
    assert cache.n_blocks == 3


# ----------------------------------------------------------------------------- memory
def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_no_copy_of_x_per_call():
    """In float64 the kernels read the caller's X: a validated Batch holds X itself, the
    backend hands it on unchanged, the operator keeps it, and no call allocates anything of
    the size of X (the peak traced memory of a call stays below a quarter of ``X.nbytes``;
    a copy would be at least X.nbytes)."""
    rng = np.random.default_rng(0)
    n, d = 12_000, 784
    X = rng.normal(size=(n, d))  # 75 MB
    y = rng.integers(0, 10, n)
    model = fastscape.MLP([d, 16, 16, 10], activation="tanh", loss="softmax_ce")
    theta = model.init(0)
    data = model.batch(X, y)
    assert data.X is X
    assert _device.BACKENDS["cpu"].prepare_data(data, "float64") is data
    model.grad(theta, data)  # compile outside the traced calls
    H = curvature.HessianOperator(model, theta, data)
    v = rng.normal(size=model.n_params)
    H.rows(v)
    assert np.shares_memory(H.data.X, X)
    bound = X.nbytes // 4
    assert _peak(lambda: model.loss(theta, data)) < bound
    assert _peak(lambda: model.grad(theta, data)) < bound
    assert _peak(lambda: H.rows(v)) < bound
    assert _peak(lambda: curvature.HessianOperator(model, theta, data)) < bound
    # float32: one float32 copy (half of X) per call, no more
    peak32 = _peak(lambda: model.grad(theta, data, dtype="float32"))
    assert X.nbytes // 2 <= peak32 < X.nbytes // 2 + bound
