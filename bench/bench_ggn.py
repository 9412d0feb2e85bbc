"""Gauss-Newton and empirical-Fisher products: fastscape's kernels (``kernels/ggn.py``) against
the torch constructions that curvlinops-style libraries use.

Problem: MLP 64-32-10 (tanh, softmax cross-entropy, P = 2 410) on scikit-learn's digits (all
1 797 samples, standardised), at its Glorot initialisation (seed 0); K = 10 random vectors.

- ``GGN K=10``: fastscape's :class:`~fastscape.curvature.GGNOperator` (pass at theta done
  once, outside the timing) against the torch.func construction ``Jᵀ (H_ℓ (J v))`` per vector:
  ``jvp`` of the network's outputs, the loss's Hessian-vector product in the outputs by
  ``jvp`` of its ``grad``, and the ``vjp`` closure of the outputs (linearised once, outside
  the timing), as curvlinops' GGN operator does it, one vector after the other
  (``torch_jvp_vjp``), and the same under ``vmap`` over the K vectors
  (``torch_vmap_jvp_vjp``).
- ``GGN build+K=10``: the same including what each builds at theta (fastscape's pass at theta;
  torch's forward pass and vjp closure).
- ``Fisher K=10``: fastscape's :class:`~fastscape.curvature.FisherOperator` against
  ``Gᵀ (G V) / n`` with the per-sample gradients G (n, P) from ``vmap(grad)`` formed once,
  outside the timing (two GEMMs: the fastest torch route once G is held, at ``8 n P`` bytes).
- ``Fisher build+K=10``: the same including the per-sample gradients (torch) and the pass at
  theta (fastscape).

Before any timing both implementations' products are checked to agree (rtol 1e-10). Torch runs
in float64 with as many threads as Numba.

Run: ``python -m pytest bench/bench_ggn.py --benchmark-only`` (one command; ratios in
``bench/NOTES.md``).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastscape
from fastscape import curvature

torch = pytest.importorskip("torch")
func = torch.func
# torch.func's jvp loads its decompositions through torch.jit.script
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)
K = 10


@pytest.fixture(scope="module")
def digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    d = sklearn_datasets.load_digits()
    model = fastscape.MLP([64, 32, 10], activation="tanh", loss="softmax_ce")
    data = model.batch(fastscape.datasets.standardize(d.data), d.target)
    torch.set_num_threads(numba.get_num_threads())
    V = np.random.default_rng(1).normal(size=(K, model.n_params))
    return model, data, model.init(0), V


def _outputs(model, X):
    layout = model.layout

    def f(flat):
        h = X
        for l, lay in enumerate(layout):
            h = h @ flat[lay.weight].reshape(lay.shape).T + flat[lay.bias]
            if l < len(layout) - 1:
                h = torch.tanh(h)
        return h

    return f


def _mean_ce(Y):
    return lambda z: -(Y * torch.log_softmax(z, dim=1)).sum() / Y.shape[0]


def torch_ggn(model, data, theta, batched=False):
    """``V (K, P) -> (K, P)`` GGN products by jvp / loss HVP / vjp, one vector at a time (or
    the K vectors together under ``vmap`` with ``batched``)."""
    X, Y = torch.as_tensor(data.X), torch.as_tensor(data.Y)
    f = _outputs(model, X)
    th = torch.as_tensor(theta)
    z, vjp_fn = func.vjp(f, th)
    grad_loss = func.grad(_mean_ce(Y))

    def one(v):
        _, Jv = func.jvp(f, (th,), (v,))
        _, HJv = func.jvp(grad_loss, (z,), (Jv,))
        return vjp_fn(HJv)[0]

    if batched:
        return lambda V: func.vmap(one)(torch.as_tensor(V)).numpy()
    return lambda V: torch.stack([one(v) for v in torch.as_tensor(V)]).numpy()


def torch_fisher(model, data, theta):
    """``V (K, P) -> (K, P)`` empirical-Fisher products from per-sample gradients (vmap)."""
    X, Y = torch.as_tensor(data.X), torch.as_tensor(data.Y)

    def loss_i(flat, x, y):
        z = _outputs(model, x[None])(flat)[0]
        return -(y * torch.log_softmax(z, dim=0)).sum()

    G = func.vmap(func.grad(loss_i), in_dims=(None, 0, 0))(torch.as_tensor(theta), X, Y)
    n = X.shape[0]
    return lambda V: ((torch.as_tensor(V) @ G.T) @ G / n).numpy()


BUILD = {
    ("ggn", "fastscape"): lambda m, d, t: curvature.GGNOperator(m, t, d).rows,
    ("ggn", "torch_jvp_vjp"): torch_ggn,
    ("ggn", "torch_vmap_jvp_vjp"): lambda m, d, t: torch_ggn(m, d, t, batched=True),
    ("fisher", "fastscape"): lambda m, d, t: curvature.FisherOperator(m, t, d).rows,
    ("fisher", "torch_vmap_grad"): torch_fisher,
}
IMPLS = {
    "ggn": ["fastscape", "torch_jvp_vjp", "torch_vmap_jvp_vjp"],
    "fisher": ["fastscape", "torch_vmap_grad"],
}


def _check_agreement(matrix, model, data, theta, V):
    ours, *others = (BUILD[matrix, impl](model, data, theta)(V) for impl in IMPLS[matrix])
    for other in others:
        np.testing.assert_allclose(ours, other, rtol=1e-10, atol=1e-12 * np.abs(other).max())


@pytest.mark.parametrize("build", [False, True], ids=["K=10", "build+K=10"])
@pytest.mark.parametrize(("matrix", "impl"), [(m, i) for m in ("ggn", "fisher") for i in IMPLS[m]])
def bench_curvature_products(benchmark, record_env, digits, matrix, impl, build):
    model, data, theta, V = digits
    _check_agreement(matrix, model, data, theta, V)  # also compiles / warms up both
    make = BUILD[matrix, impl]
    name = {"ggn": "GGN", "fisher": "Fisher"}[matrix]
    benchmark.group = f"{name} {'build+' if build else ''}K={K} mlp-64-32-10 digits-1797"
    record_env(n=data.X.shape[0], P=model.n_params, K=K, torch_threads=torch.get_num_threads())
    if build:
        benchmark(lambda: make(model, data, theta)(V))
    else:
        rows = make(model, data, theta)
        benchmark(rows, V)
