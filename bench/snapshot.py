"""Arrays of the benchmark problems, saved before and compared after a refactor.

A behaviour-preserving change must leave every number of B1-B6 (and of a few deeper and
other-activation problems the peers' set does not cover) bit-identical. Run it on the old
commit, then on the new one::

    python bench/snapshot.py save before.npz      # on the old commit
    python bench/snapshot.py compare before.npz   # on the new commit

``compare`` prints, per array, ``identical`` or the largest relative difference, and exits 1
if any array differs by more than ``--rtol`` (default 0: bitwise). Threads are fixed at 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers

import fastscape
from fastscape import curvature


def _span(out: dict, name: str, p) -> None:
    r = fastscape.evaluate(p.model, p.basis, p.C, p.data)
    out[f"{name}.loss"] = r.loss
    if r.accuracy is not None:
        out[f"{name}.accuracy"] = r.accuracy


def _model_arrays(out: dict, name: str, sizes, act, loss, n=300, seed=5) -> None:
    """Loss, gradient, 3 HVPs, a small surface and (when small) the exact Hessian."""
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0]))
    if loss == "mse":
        y = rng.normal(size=(n, sizes[-1]))
    else:
        y = rng.integers(0, max(2, sizes[-1]), size=n)
    data = model.batch(X, y)
    theta = model.init(seed) + 0.1 * rng.normal(size=model.n_params)
    loss_v, g = model.grad(theta, data)
    out[f"{name}.loss"] = np.array([model.loss(theta, data), loss_v])
    out[f"{name}.grad"] = g
    V = rng.normal(size=(3, model.n_params))
    out[f"{name}.hvp"] = model.hvp(theta, V, data)
    if model.n_params <= 3000:
        out[f"{name}.hessian"] = model.hessian(theta, data)
    d1, d2 = fastscape.directions.pair(model, theta, seed=2)
    basis = np.stack([theta, d1.vector, d2.vector])
    a = np.linspace(-1.0, 1.0, 9)
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    out[f"{name}.span"] = fastscape.evaluate(model, basis, C, data).loss


def collect() -> dict:
    peers.set_threads(2)
    out: dict = {}
    _span(out, "B1", peers.span_problem([100, 1], "identity", "logistic", 10_000, 101))
    _span(out, "B2", peers.span_problem([784, 128, 10], "tanh", "softmax_ce", 5_000, 51))
    line = peers.span_problem([784, 128, 10], "tanh", "softmax_ce", 5_000, 401, dims=1)
    out["B6.slice"] = fastscape.slice_1d(
        line.model, line.theta, line.dirs[0], line.data, alphas=line.coords[0], progress=False
    ).loss
    path = peers.path_problem(line, 401)
    out["B6.path"] = fastscape.evaluate(path.model, path.basis, path.C, path.data).loss
    q = peers.digits_problem()
    for k in (1, 5):
        r = curvature.top_eigen(q.model, q.theta, q.data, k=k, method="lanczos", tol=1e-4)
        out[f"B3.lanczos{k}.values"] = np.asarray(r.eigenvalues)
        out[f"B3.lanczos{k}.vectors"] = np.asarray(r.eigenvectors)
    r = curvature.top_eigen(q.model, q.theta, q.data, k=1, method="power", tol=1e-4)
    out["B3.power1.values"] = np.asarray(r.eigenvalues)
    out["B4.hessian"] = q.model.hessian(q.theta, q.data)
    t = curvature.hessian_trace(q.model, q.theta, q.data, n_samples=100, seed=0)
    out["B5.trace"] = np.array([t.estimate, t.std_error])
    for sizes, act, loss in [
        ((20, 16, 12, 3), "tanh", "softmax_ce"),
        ((20, 16, 12, 1), "relu", "logistic"),
        ((20, 16, 12, 2), "sigmoid", "mse"),
        ((20, 16, 3), "relu", "softmax_ce"),
        ((20, 16, 1), "sigmoid", "logistic"),
        ((20, 16, 2), "tanh", "mse"),
        ((20, 3), "identity", "softmax_ce"),
        ((20, 1), "identity", "logistic"),
        ((20, 2), "identity", "mse"),
    ]:
        _model_arrays(out, f"{'-'.join(map(str, sizes))}-{act}-{loss}", sizes, act, loss)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "compare"])
    parser.add_argument("file")
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args(argv)
    arrays = collect()
    if args.action == "save":
        np.savez(args.file, **arrays)
        print(f"saved {len(arrays)} arrays to {args.file}")
        return 0
    with np.load(args.file) as old:
        failed = False
        for key in sorted(set(old.files) | set(arrays)):
            if key not in arrays or key not in old.files:
                print(f"{key}: missing on one side")
                failed = True
                continue
            a, b = old[key], arrays[key]
            if a.shape != b.shape:
                print(f"{key}: shape {a.shape} -> {b.shape}")
                failed = True
            elif np.array_equal(a, b, equal_nan=True):
                print(f"{key}: identical")
            else:
                rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))
                print(f"{key}: max relative difference {rel:.3g}")
                failed = failed or rel > args.rtol
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
