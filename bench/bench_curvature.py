"""Curvature solvers on a real model: top Hessian eigenvalue on the kernels' HVPs vs the NumPy
twins', and the thick-restart Lanczos against ARPACK.

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

The HVPs are in ``bench_hvp.py``, the exact Hessian in ``bench_hessian.py``.

Run: ``python -m pytest bench/bench_curvature.py --benchmark-only``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator

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


class _RowsOperator(LinearOperator):
    """A LinearOperator on a row-block product ``V (K, P) -> (K, P)`` (the solvers use ``rows``
    directly, as they do for ``curvature.HessianOperator``)."""

    def __init__(self, rows, P):
        self.rows = rows
        super().__init__(dtype=np.dtype(np.float64), shape=(P, P))

    def _matvec(self, x):
        return self.rows(np.reshape(x, (1, -1)))[0]

    def _matmat(self, X):
        return self.rows(np.ascontiguousarray(X.T)).T


def _matvec(impl, model, data, theta):
    """The HVP operator of an implementation: ``model.hvp`` (per-sample kernel, batched) or the
    NumPy twin (one vector at a time)."""
    if impl == "fastscape":
        rows = lambda V: model.hvp(theta, V, data)  # noqa: E731
    else:
        args = (model.sizes, model.activation, model.loss_name, data.X, data.Y)
        rows = lambda V: ref.block_hvp(theta, np.atleast_2d(V), *args)  # noqa: E731
    return _RowsOperator(rows, model.n_params)


SOLVERS = {
    "top-eigen power": lambda A: curvature.power_iteration(A, 1, tol=0.0, maxiter=20, seed=0),
    "top-eigen power k=4": lambda A: curvature.power_iteration(A, 4, tol=0.0, maxiter=20, seed=0),
    "top-eigen lanczos": lambda A: curvature.lanczos(A, 1, "LA", tol=1e-8, ncv=20, seed=0),
}


@pytest.mark.parametrize("impl", ["reference", "fastscape"])
@pytest.mark.parametrize("problem", list(SOLVERS))
def bench_top_eigen(benchmark, record_env, digits, problem, impl):
    model, data, theta = digits
    solve = SOLVERS[problem]
    mv = _matvec(impl, model, data, theta)
    t0 = time.perf_counter()
    res = solve(mv)  # warm-up: compiles the kernel (or loads it from cache)
    first = time.perf_counter() - t0
    other = solve(_matvec("fastscape" if impl == "reference" else "reference", model, data,
                          theta))  # fmt: skip
    np.testing.assert_allclose(res.eigenvalues, other.eigenvalues, rtol=1e-8)
    benchmark.group = f"{problem} mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params,
               hvps=int(res.n_matvecs), eigenvalue=float(res.eigenvalues[0]),
               first_call_s=first)  # fmt: skip
    benchmark(solve, mv)


# ----------------------------------------------------------------------------- B3's eigensolver
def _arpack(H, k, seed):
    """ARPACK (``eigsh``) on the same HessianOperator; the HVPs counted by the operator."""
    from scipy.sparse.linalg import eigsh

    P = H.shape[0]
    H.n_hvps = 0
    v0 = np.random.default_rng(seed).standard_normal(P)
    vals = eigsh(H, k=k, which="LM", tol=1e-4, ncv=max(2 * k + 1, 20), v0=v0,
                 return_eigenvectors=False)  # fmt: skip
    return vals[np.argsort(-np.abs(vals))], H.n_hvps


@pytest.mark.parametrize("impl", ["thick_restart_lanczos", "arpack_eigsh"])
@pytest.mark.parametrize("k", [1, 5])
def bench_b3_solver(benchmark, record_env, digits, k, impl):
    """The eigensolver of B3 alone: same operator (built once, outside the timing), same
    tolerance and start vector; only the Krylov method differs."""
    model, data, theta = digits
    H = curvature.HessianOperator(model, theta, data)
    P = model.n_params
    if impl == "arpack_eigsh":
        solve = lambda: _arpack(H, k, 0)  # noqa: E731
    else:

        def solve():
            r = curvature.lanczos(H, k, "LM", tol=1e-4, seed=0)
            return r.eigenvalues, r.n_matvecs

    vals, hvps = solve()
    dense = model.hessian(theta, data)
    exact = np.linalg.eigvalsh(0.5 * (dense + dense.T))
    np.testing.assert_allclose(vals, exact[np.argsort(-np.abs(exact))][:k], rtol=1e-6)
    benchmark.group = f"B3 solver k={k} mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], P=P, k=k, hvps=int(hvps))
    benchmark(solve)
