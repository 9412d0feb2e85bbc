"""Loss, gradient and HVP: compiled kernels against their NumPy twins.

Run: ``python -m pytest bench/bench_mlp.py --benchmark-only`` (add ``--benchmark-autosave``
to keep the JSON, ``--benchmark-compare-fail=min:5%`` to catch regressions).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastscape
from fastscape import reference as ref

PROBLEMS = {
    # name: (sizes, activation, loss, n)
    "logistic-d100-n10000": ([100, 1], "identity", "logistic", 10_000),
    "mlp-64-32-10-n1797": ([64, 32, 10], "tanh", "softmax_ce", 1_797),
    "mlp-784-128-10-n5000": ([784, 128, 10], "tanh", "softmax_ce", 5_000),
}


def _problem(name):
    sizes, act, loss, n = PROBLEMS[name]
    rng = np.random.default_rng(0)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, max(2, sizes[-1]), size=n)
    data = model.batch(X, y)
    theta = model.init(1)
    v = rng.normal(size=model.n_params)
    return model, data, theta, v


def _callable(op, impl, model, data, theta, v):
    args = (model.sizes, model.activation, model.loss_name, data.X, data.Y)
    if impl == "reference":
        return {
            "loss": lambda: ref.mlp_loss(theta, *args),
            "grad": lambda: ref.mlp_loss_grad(theta, *args),
            "hvp": lambda: ref.block_hvp(theta, v, *args),
        }[op]
    return {
        "loss": lambda: model.loss(theta, data),
        "grad": lambda: model.grad(theta, data),
        "hvp": lambda: model.hvp(theta, v, data),
    }[op]


@pytest.mark.parametrize("impl", ["reference", "fastscape"])
@pytest.mark.parametrize("op", ["loss", "grad", "hvp"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def bench_kernel(benchmark, record_env, name, op, impl):
    model, data, theta, v = _problem(name)
    fn = _callable(op, impl, model, data, theta, v)
    t0 = time.perf_counter()
    expected = _callable(op, "reference", model, data, theta, v)()
    result = fn()  # warm-up: compiles the kernel (or loads it from the cache)
    first_call = time.perf_counter() - t0
    got, want = (
        np.atleast_1d(np.asarray(result[-1] if op == "grad" else result)),
        np.atleast_1d(np.asarray(expected[-1] if op == "grad" else expected)),
    )
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12 * np.abs(want).max())
    benchmark.group = f"{op} {name}"
    record_env(n=data.X.shape[0], sizes=list(model.sizes), P=model.n_params,
               first_call_s=first_call)  # fmt: skip
    benchmark(fn)
