"""Shared test helpers: random models of every kind with matching data."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastscape

# (sizes, activation, loss): every activation and loss, with and without hidden layers
MODEL_CASES = [
    ([3, 1], "identity", "logistic"),
    ([3, 1], "identity", "mse"),
    ([4, 3], "identity", "softmax_ce"),
    ([3, 2], "identity", "mse"),
    ([5, 4, 1], "tanh", "logistic"),
    ([4, 6, 3], "relu", "softmax_ce"),
    ([3, 5, 2], "sigmoid", "mse"),
    ([4, 5, 4, 3], "tanh", "softmax_ce"),
    ([3, 4, 3, 2], "identity", "mse"),
    ([4, 3, 5, 1], "sigmoid", "logistic"),
    ([5, 6, 4, 3], "relu", "mse"),
]


def case_id(case) -> str:
    sizes, act, loss = case
    return f"{'-'.join(map(str, sizes))}-{act}-{loss}"


def make_problem(case, n: int = 40, seed: int = 0, scale: float = 1.0):
    """A random model, parameters and data (X, y) for it."""
    sizes, act, loss = case
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    theta = scale * rng.normal(size=model.n_params)
    X = rng.normal(size=(n, sizes[0]))
    out = sizes[-1]
    if loss == "logistic":
        y = rng.integers(0, 2, size=n)
    elif loss == "softmax_ce":
        y = rng.integers(0, out, size=n)
    else:
        y = rng.normal(size=(n, out)) if out > 1 else rng.normal(size=n)
    return model, theta, X, y


@pytest.fixture(params=MODEL_CASES, ids=case_id)
def problem(request):
    return make_problem(request.param, seed=zlib.crc32(case_id(request.param).encode()))
