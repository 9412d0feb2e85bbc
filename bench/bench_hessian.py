"""The exact Hessian of a real model: the kernel, the Hessian assembled from batched HVPs, and the
NumPy twin.

Problem: MLP 64-32-10 (tanh, softmax cross-entropy, P = 2 410) on scikit-learn's digits (all
1 797 samples, standardised), at its Glorot initialisation (seed 0).

- ``exact hessian``: the full 2 410 x 2 410 Hessian (the twin builds it column by column from
  2 410 HVPs; one round only).

Run: ``python -m pytest bench/bench_hessian.py --benchmark-only``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastscape
from fastscape import reference as ref


@pytest.fixture(scope="module")
def digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    d = sklearn_datasets.load_digits()
    model = fastscape.MLP([64, 32, 10], activation="tanh", loss="softmax_ce")
    data = model.batch(fastscape.datasets.standardize(d.data), d.target)
    return model, data, model.init(0)


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
        ref.block_hvp(theta, np.ones((1, model.n_params)), *args)  # warm-up: one column
        first = time.perf_counter() - t0
    benchmark.group = "exact hessian mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params, first_call_s=first)
    H = benchmark.pedantic(fn, rounds=rounds, iterations=1)
    # spot check against the other implementation on a few columns
    cols = [0, 1000, model.n_params - 1]
    for j in cols:
        e = np.zeros(model.n_params)
        e[j] = 1.0
        np.testing.assert_allclose(H[:, j], ref.block_hvp(theta, e[None], *args)[0], rtol=1e-8,
                                   atol=1e-12 * np.abs(H).max())  # fmt: skip
