"""A first look at a loss landscape: train a small MLP on two blobs and probe its curvature.

Run: ``python examples/quickstart.py`` (a few seconds). Output goes to the terminal.
"""

from __future__ import annotations

import time

import numpy as np

import fastscape
from fastscape import datasets


def main() -> None:
    t0 = time.perf_counter()
    X, y = datasets.blobs(n=400, seed=0)
    model = fastscape.MLP([2, 16, 2], activation="tanh", loss="softmax_ce")
    result = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=300, seed=0, record_every=50)
    theta = result.theta
    loss, grad = model.grad(theta, X, y)
    H = model.hessian(theta, X, y)
    eig = np.linalg.eigvalsh(H)

    # the loss along a random direction through the minimum, 11 points on [-1, 1]
    d = np.random.default_rng(1).normal(size=model.n_params)
    d *= np.linalg.norm(theta) / np.linalg.norm(d)
    alphas = np.linspace(-1, 1, 11)
    profile = [model.loss(theta + a * d, X, y) for a in alphas]

    print(f"model        {model}  ({model.n_params} parameters)")
    print(f"training     {result.method}, {result.n_steps} steps, stop: {result.stop_reason}")
    print(f"loss         {loss:.6f}   accuracy {model.accuracy(theta, X, y):.3f}")
    print(f"|grad|       {np.linalg.norm(grad):.3e}")
    print(f"Hessian      λmax {eig[-1]:.4f}   λmin {eig[0]:.4e}   trace {eig.sum():.4f}")
    print("1D slice     " + " ".join(f"{v:.3f}" for v in profile))
    print(f"wall time    {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
