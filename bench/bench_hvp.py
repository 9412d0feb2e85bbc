"""Hessian-vector products on a real model: the cached HVP operator, the per-sample kernel and
the NumPy twin.

Problem: MLP 64-32-10 (tanh, softmax cross-entropy, P = 2 410) on scikit-learn's digits (all
1 797 samples, standardised), at its Glorot initialisation (seed 0).

- ``hvp K=1`` / ``hvp K=100``: K Hessian-vector products at one theta: the cached operator
  (``curvature.HessianOperator``, row product; forward pass at theta once, then one compiled
  R-pass per vector and sample block) against ``model.hvp`` (per-sample kernel) and the NumPy
  twin.

Run: ``python -m pytest bench/bench_hvp.py --benchmark-only``.
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


HVP_IMPLS = ["operator", "model_hvp", "reference"]


@pytest.mark.parametrize("impl", HVP_IMPLS)
@pytest.mark.parametrize("k", [1, 100])
def bench_hvp_operator(benchmark, record_env, digits, k, impl):
    """K Hessian-vector products at one theta: the cached operator
    ``curvature.HessianOperator`` (forward pass at theta built once, outside the timing; its
    build time is in extra_info), ``model.hvp`` (per-sample kernel, forward pass redone every
    call) and the NumPy twin (one vector at a time)."""
    model, data, theta = digits
    V = np.random.default_rng(1).standard_normal((k, model.n_params))
    t0 = time.perf_counter()
    if impl == "operator":
        fn = curvature.HessianOperator(model, theta, data).rows
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
