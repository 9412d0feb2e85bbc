"""2D loss surfaces: the span engine against the seeds' loop and a vectorized NumPy version.

Run: ``python -m pytest bench/bench_span.py --benchmark-only`` (add
``--benchmark-columns=min,median,max,rounds`` for a compact table, ``--benchmark-autosave`` to
keep the JSON).

Implementations (one ``benchmark.group`` per problem):

``seed_loop``
    The seeds' ``visualize_loss_landscape_2d``: for every grid point form θ* + α d1 + β d2 and
    call the NumPy reference loss (``reference.mlp_loss``). Loss only (the engine computes
    accuracy as well, so the comparison favours the loop).
``numpy_vectorized``
    The same span identity in NumPy: the first-layer products X W_kᵀ + b_k once, then all
    points of a chunk at once with array operations (chunks bound the memory to ~64 MB).
``fastscape``
    ``fastscape.evaluate`` (loss and accuracy), progress bar off.

The seed loop is slow on the MLP problem (one 5000 x 784 x 128 GEMM per point); it is timed
with ``benchmark.pedantic`` and a single round on the full grid, as recorded in
``extra_info["rounds_note"]``.
"""

from __future__ import annotations

import time

import numba
import numpy as np
import pytest

import fastscape
from fastscape import reference as ref

PROBLEMS = {
    # name: (sizes, activation, loss, n, grid points per axis)
    "logistic-d100-n10000-grid101x101": ([100, 1], "identity", "logistic", 10_000, 101),
    "mlp-784-128-10-tanh-n5000-grid51x51": ([784, 128, 10], "tanh", "softmax_ce", 5_000, 51),
}
ROUNDS = {"seed_loop": 1, "numpy_vectorized": 3, "fastscape": 5}
CHUNK_BYTES = 64 * 2**20


def _problem(name):
    sizes, act, loss, n, g = PROBLEMS[name]
    rng = np.random.default_rng(0)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0])) / np.sqrt(sizes[0])
    y = rng.integers(0, max(2, sizes[-1]), size=n)
    data = model.batch(X, y)
    theta = model.init(1)
    d1, d2 = fastscape.directions.pair(model, theta, seed=2)
    basis = np.stack([theta, d1.vector, d2.vector])
    a = np.linspace(-1.0, 1.0, g)
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    return model, data, basis, C


def seed_loop(model, data, basis, C):
    out = np.empty(C.shape[0])
    for j, c in enumerate(C):
        theta = basis[0] + c[1] * basis[1] + c[2] * basis[2]
        out[j] = ref.mlp_loss(theta, model.sizes, model.activation, model.loss_name, data.X, data.Y)
    return out


def numpy_vectorized(model, data, basis, C):
    X, Y = data.X, data.Y
    n, d = X.shape
    K = basis.shape[0]
    h1 = model.sizes[1]
    W1 = basis[:, : h1 * d].reshape(K, h1, d)
    b1 = basis[:, h1 * d : h1 * d + h1]
    F = np.einsum("nd,khd->knh", X, W1) + b1[:, None, :]  # (K, n, h1)
    out = np.empty(C.shape[0])
    chunk = max(1, CHUNK_BYTES // (8 * n * h1 * 2))
    for s in range(0, C.shape[0], chunk):
        c = C[s : s + chunk]
        Z = np.einsum("mk,knh->mnh", c, F)  # first layer of every point in the chunk
        if len(model.sizes) == 2:
            if model.loss_name == "logistic":
                z = Z[:, :, 0]
                out[s : s + chunk] = np.mean(np.logaddexp(0.0, z) - Y[:, 0] * z, axis=1)
                continue
            logits = Z
        else:  # one hidden layer (the benchmark's MLP)
            H = np.tanh(Z) if model.activation == "tanh" else Z
            tail = c @ basis[:, h1 * d + h1 :]  # (m, P_tail): later layers of each point
            out_n = model.sizes[2]
            W2 = tail[:, : out_n * h1].reshape(-1, out_n, h1)
            b2 = tail[:, out_n * h1 :]
            logits = np.einsum("mnh,moh->mno", H, W2) + b2[:, None, :]
        mx = logits.max(axis=2, keepdims=True)
        lse = (mx + np.log(np.exp(logits - mx).sum(axis=2, keepdims=True)))[:, :, 0]
        out[s : s + chunk] = np.mean(lse - np.einsum("mno,no->mn", logits, Y), axis=1)
    return out


def _fastscape(model, data, basis, C):
    return fastscape.evaluate(model, basis, C, data, progress=False).loss


IMPLS = {"seed_loop": seed_loop, "numpy_vectorized": numpy_vectorized, "fastscape": _fastscape}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name", list(PROBLEMS))
def bench_surface(benchmark, record_env, name, impl):
    model, data, basis, C = _problem(name)
    fn = IMPLS[impl]
    # correctness on a few points, and warm-up (compiles or loads the kernels)
    few = C[[0, C.shape[0] // 3, C.shape[0] - 1]]
    t0 = time.perf_counter()
    got = fn(model, data, basis, few)
    first_call = time.perf_counter() - t0
    np.testing.assert_allclose(got, seed_loop(model, data, basis, few), rtol=1e-9)
    benchmark.group = name
    record_env(
        impl=impl, n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params,
        grid_points=C.shape[0], K=basis.shape[0], first_call_s=first_call,
        blas_note="NumPy's BLAS threads are not limited; numba threads as recorded",
        rounds_note=f"pedantic, {ROUNDS[impl]} round(s) on the full grid",
        numba_threads=numba.get_num_threads(),
    )  # fmt: skip
    benchmark.pedantic(fn, args=(model, data, basis, C), rounds=ROUNDS[impl], iterations=1)
