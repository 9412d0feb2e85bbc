"""The one layout computation (kernels/layout.py) against the model's description and the
NumPy twin's unflatten."""

from __future__ import annotations

import numpy as np
import pytest
from fastscape.kernels import layout as kl
from numpy.testing import assert_array_equal

import fastscape
from fastscape import reference as ref

SIZES = [[3, 1], [4, 3], [5, 4, 1], [4, 5, 4, 3], [2, 7, 1, 6, 2]]


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_offsets_match_model_and_twin(sizes):
    s = kl.as_sizes(sizes)
    w_off, b_off, u_off = kl.layout(s)
    P = kl.n_params(sizes)
    assert P == sum(o * (i + 1) for i, o in zip(sizes[:-1], sizes[1:]))
    model = fastscape.MLP(sizes, loss="mse")
    assert model.n_params == P
    for l, lay in enumerate(model.layout):
        assert (lay.weight.start, lay.weight.stop) == (w_off[l], b_off[l])
        assert (lay.bias.start, lay.bias.stop) == (b_off[l], b_off[l] + sizes[l + 1])
    assert_array_equal(u_off, np.concatenate([[0], np.cumsum(sizes[1:])]))
    theta = np.arange(P, dtype=float)
    views = kl.layer_views(theta, sizes)
    for (W, b), (Wr, br) in zip(views, ref.unflatten(theta, sizes)):
        assert_array_equal(W, Wr)
        assert_array_equal(b, br)
        assert np.shares_memory(W, theta) and np.shares_memory(b, theta)
    # the layers tile theta exactly once, in order
    covered = np.concatenate([np.concatenate([W.ravel(), b]) for W, b in views])
    assert_array_equal(covered, theta)
