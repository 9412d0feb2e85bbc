"""Curvature on a real model: top Hessian eigenvalue and exact Hessian, kernels vs NumPy twins.

Problem: MLP 64-32-10 (tanh, softmax cross-entropy, P = 2 410) on scikit-learn's digits (all
1 797 samples, standardised), at its Glorot initialisation (seed 0).

- ``top-eigen power``: 20 power iterations, one HVP per iteration (tol=0, so both
  implementations do exactly the same work).
- ``top-eigen power k=4``: block power iteration on 4 vectors, 20 iterations; the kernel takes
  the 4 vectors in one pass over the data (batched HVP), the twin loops over them.
- ``top-eigen lanczos``: thick-restart Lanczos (k=1, "LA", ncv=20, tol=1e-8) on the HVP.
- ``B3 solver k=1`` / ``k=5``: the eigensolver alone, on the same cached HVP operator and
  B3's settings ("LM", tol 1e-4): fastscape's thick-restart Lanczos against ARPACK
  (``scipy.sparse.linalg.eigsh``, ncv 20, which the Lanczos method used before); the HVP counts
  are in extra_info.
- ``exact hessian``: the full 2 410 x 2 410 Hessian (the twin builds it column by column from
  2 410 HVPs; one round only).
- ``hvp K=1`` / ``hvp K=100``: K Hessian-vector products at one theta: the cached operator of
  ``curvature.hessian_matvec`` (forward pass at theta once, then one compiled R-pass per
  vector and sample block) against
  ``model.hvp`` (per-sample kernel) and the NumPy twin.

Run: ``python -m pytest bench/bench_curvature.py --benchmark-only``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastscape
from fastscape import curvature
from fastscape import reference as ref


@pytest.fixture(scope="module")
def digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    d = sklearn_datasets.load_digits()
    model = fastscape.MLP([64, 32, 10], activation="tanh", loss="softmax_ce")
    data = model.batch(fastscape.datasets.standardize(d.data), d.target)
    return model, data, model.init(0)


def _matvec(impl, model, data, theta):
    if impl == "fastscape":
        return lambda V: model.hvp(theta, V, data)
    args = (model.sizes, model.activation, model.loss_name, data.X, data.Y)
    return lambda V: ref.block_hvp(theta, np.atleast_2d(V), *args)


SOLVERS = {
    "top-eigen power": lambda mv, P: curvature.power_iteration(
        mv, P, 1, tol=0.0, maxiter=20, seed=0, batched=True
    ),
    "top-eigen power k=4": lambda mv, P: curvature.power_iteration(
        mv, P, 4, tol=0.0, maxiter=20, seed=0, batched=True
    ),
    "top-eigen lanczos": lambda mv, P: curvature.lanczos(
        mv, P, 1, "LA", tol=1e-8, ncv=20, seed=0, batched=True
    ),
}


@pytest.mark.parametrize("impl", ["reference", "fastscape"])
@pytest.mark.parametrize("problem", list(SOLVERS))
def bench_top_eigen(benchmark, record_env, digits, problem, impl):
    model, data, theta = digits
    solve = SOLVERS[problem]
    mv = _matvec(impl, model, data, theta)
    t0 = time.perf_counter()
    res = solve(mv, model.n_params)  # warm-up: compiles the kernel (or loads it from cache)
    first = time.perf_counter() - t0
    other = solve(_matvec("fastscape" if impl == "reference" else "reference", model, data,
                          theta), model.n_params)  # fmt: skip
    np.testing.assert_allclose(res.eigenvalues, other.eigenvalues, rtol=1e-8)
    benchmark.group = f"{problem} mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params,
               hvps=int(res.n_matvecs), eigenvalue=float(res.eigenvalues[0]),
               first_call_s=first)  # fmt: skip
    benchmark(solve, mv, model.n_params)


def _hessian_from_hvps(model, theta, data, block=256):
    """The exact Hessian assembled from batched HVPs of unit vectors (the HVP route)."""
    P = model.n_params
    H = np.empty((P, P))
    for start in range(0, P, block):
        stop = min(P, start + block)
        E = np.zeros((stop - start, P))
        E[np.arange(stop - start), np.arange(start, stop)] = 1.0
        H[start:stop] = model.hvp(theta, E, data)
    return H


@pytest.mark.parametrize("impl", ["reference", "fastscape_hvp_columns", "fastscape"])
def bench_exact_hessian(benchmark, record_env, digits, impl):
    model, data, theta = digits
    args = (model.sizes, model.activation, model.loss_name, data.X, data.Y)
    rounds = 1
    if impl.startswith("fastscape"):
        if impl == "fastscape":
            fn = lambda: model.hessian(theta, data)  # noqa: E731
            rounds = 5
        else:
            fn = lambda: _hessian_from_hvps(model, theta, data)  # noqa: E731
        t0 = time.perf_counter()
        fn()  # warm-up (compile / cache load)
        first = time.perf_counter() - t0
    else:
        fn = lambda: ref.mlp_hessian(theta, *args)  # noqa: E731
        t0 = time.perf_counter()
        ref.block_hvp(theta, np.ones(model.n_params), *args)  # warm-up: one column
        first = time.perf_counter() - t0
    benchmark.group = "exact hessian mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params, first_call_s=first)
    H = benchmark.pedantic(fn, rounds=rounds, iterations=1)
    # spot check against the other implementation on a few columns
    cols = [0, 1000, model.n_params - 1]
    for j in cols:
        e = np.zeros(model.n_params)
        e[j] = 1.0
        np.testing.assert_allclose(H[:, j], ref.block_hvp(theta, e, *args), rtol=1e-8,
                                   atol=1e-12 * np.abs(H).max())  # fmt: skip


# ----------------------------------------------------------------------------- HVP operator
HVP_IMPLS = ["operator", "model_hvp", "reference"]


@pytest.mark.parametrize("impl", HVP_IMPLS)
@pytest.mark.parametrize("k", [1, 100])
def bench_hvp_operator(benchmark, record_env, digits, k, impl):
    """K Hessian-vector products at one theta: the cached operator of
    ``curvature.hessian_matvec`` (forward pass at theta built once, outside the timing; its
    build time is in extra_info), ``model.hvp`` (per-sample kernel, forward pass redone every
    call) and the NumPy twin (one vector at a time)."""
    model, data, theta = digits
    V = np.random.default_rng(1).standard_normal((k, model.n_params))
    t0 = time.perf_counter()
    if impl == "operator":
        fn = curvature.hessian_matvec(model, theta, data)
    elif impl == "model_hvp":
        fn = lambda V: model.hvp(theta, V, data)  # noqa: E731
    else:
        fn = _matvec("reference", model, data, theta)
    build = time.perf_counter() - t0
    got = fn(V)  # warm-up (compile or cache load)
    first = time.perf_counter() - t0
    want = model.hvp(theta, V, data) if impl != "model_hvp" else _matvec(
        "reference", model, data, theta)(V)  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    benchmark.group = f"hvp K={k} mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params, K=k,
               build_s=build, first_call_s=first)  # fmt: skip
    if impl == "reference" and k > 1:
        benchmark.pedantic(fn, args=(V,), rounds=2, iterations=1)
    else:
        benchmark(fn, V)


# ----------------------------------------------------------------------------- B3's eigensolver
def _arpack(mv, P, k, seed):
    from scipy.sparse.linalg import LinearOperator, eigsh

    count = [0]

    def matmat(X):
        count[0] += X.shape[1]
        return mv(np.ascontiguousarray(X.T)).T

    op = LinearOperator((P, P), matvec=lambda x: matmat(x.reshape(P, 1)).ravel(),
                        matmat=matmat, dtype=np.float64)  # fmt: skip
    v0 = np.random.default_rng(seed).standard_normal(P)
    vals = eigsh(op, k=k, which="LM", tol=1e-4, ncv=max(2 * k + 1, 20), v0=v0,
                 return_eigenvectors=False)  # fmt: skip
    return vals[np.argsort(-np.abs(vals))], count[0]


@pytest.mark.parametrize("impl", ["thick_restart_lanczos", "arpack_eigsh"])
@pytest.mark.parametrize("k", [1, 5])
def bench_b3_solver(benchmark, record_env, digits, k, impl):
    """The eigensolver of B3 alone: same operator (built once, outside the timing), same
    tolerance and start vector; only the Krylov method differs."""
    model, data, theta = digits
    mv = curvature.hessian_matvec(model, theta, data)
    P = model.n_params
    if impl == "arpack_eigsh":
        solve = lambda: _arpack(mv, P, k, 0)  # noqa: E731
    else:

        def solve():
            r = curvature.lanczos(mv, P, k, "LM", tol=1e-4, seed=0, batched=True)
            return r.eigenvalues, r.n_matvecs

    vals, hvps = solve()
    H = model.hessian(theta, data)
    exact = np.linalg.eigvalsh(0.5 * (H + H.T))
    np.testing.assert_allclose(vals, exact[np.argsort(-np.abs(exact))][:k], rtol=1e-6)
    benchmark.group = f"B3 solver k={k} mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], P=P, k=k, hvps=int(hvps))
    benchmark(solve)
