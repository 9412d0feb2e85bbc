"""The span engine's one-hidden-layer path (kernels/span_hidden.py) against its NumPy twin."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import MODEL_CASES, case_id
from fastscape.kernels import elementwise as kel
from fastscape.kernels import span as kspan
from fastscape.kernels import span_hidden as kh
from numpy.testing import assert_allclose, assert_array_equal
from span_helpers import span_problem

from fastscape import reference as ref
from fastscape.landscape import evaluate
from fastscape.models import ACTIVATIONS

# ----------------------------------------------------------------------------- one hidden layer
# span_block_hidden: sample tiles, fused first layer + activation (<= 3 non-zero coefficients),
# output layer 4 samples x 2 outputs at a time, the loss vectorised over the tile.
# (output groups of 5, 2 and 1: n_out = 5 and 8 cover every group kind)
HIDDEN1 = [c for c in MODEL_CASES if len(c[0]) == 3] + [
    ([6, 7, 5], "tanh", "softmax_ce"),
    ([4, 9, 8], "sigmoid", "softmax_ce"),
    ([5, 6, 3], "leaky_relu", "softmax_ce"),
    ([4, 7, 1], "gelu", "logistic"),
    ([3, 5, 2], "gelu_tanh", "mse"),
]


def _hidden_args(case, K, m=11, n=150, seed=0):
    model, basis, C, data = span_problem(case, K, m=m, n=n, seed=seed)
    C[2, 1:] = 0.0  # one term
    if K > 2:
        C[3, 2:] = 0.0  # two terms
    return model, basis, C, data


@pytest.mark.parametrize("K", [1, 2, 3, 5])
@pytest.mark.parametrize("case", HIDDEN1, ids=case_id)
def test_hidden_path_matches_twin(case, K):
    """1 to 5 non-zero coefficients (fused and general first layer), n not a multiple of 4."""
    model, basis, C, data = _hidden_args(case, K, n=103, seed=K)
    loss, acc = kspan.span_eval(basis, C, *model.spec.kernel_args, data.X, data.Y, 40, 3, 7)
    want_loss, want_acc = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert_allclose(loss, want_loss, rtol=1e-12)
    if model.is_classifier:
        assert_array_equal(acc, want_acc)


@pytest.mark.parametrize("K", [3, 5])
@pytest.mark.parametrize("case", HIDDEN1, ids=case_id)
def test_hidden_path_bits_independent_of_tiles_chunks_threads(case, K):
    """Sample tile (any size, rounded up to a multiple of 4), points per task and thread count
    change no bit: each point sums its per-sample losses in an order fixed by the block."""
    model, basis, C, data = _hidden_args(case, K)
    args = (basis, C, *model.spec.kernel_args, data.X, data.Y, 64)
    ref_loss, ref_acc = kspan.span_eval(*args, 8, sub_block=32)
    previous = numba.get_num_threads()
    try:
        for threads, chunk, sub in [(1, 8, 32), (2, 1, 1), (2, 3, 7), (1, 64, 1000), (2, 5, 4)]:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            loss, acc = kspan.span_eval(*args, chunk, sub_block=sub)
            assert_array_equal(loss, ref_loss)
            assert_array_equal(acc, ref_acc)
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("cnt", [1, 2, 3])
def test_combine_activate_matches_activate_block(act, cnt):
    rng = np.random.default_rng(cnt)
    F = rng.normal(size=(3, 997)) * 6.0
    F[:, :5] = [[0.0, 1e-300, 400.0, -400.0, 1e-12]] * 3
    c = np.array([0.7, -1.3, 0.4])
    code = ACTIVATIONS[act]
    bits = np.empty(F.shape[1], np.int64)
    out = np.empty(F.shape[1])
    kh.combine_activate(code, cnt, F[0], c[0], F[1], c[1], F[2], c[2], out, bits)
    z = c[:cnt] @ F[:cnt]
    want = np.empty_like(z)
    kel.activate_block(code, z, want, bits)
    assert_allclose(out, want, rtol=1e-14, atol=1e-15)


def test_hidden_path_saturated_units_stay_finite():
    """Huge first-layer pre-activations (tanh saturates): finite loss, as in the twin."""
    case = ([3, 4, 3], "tanh", "softmax_ce")
    model, basis, C, data = span_problem(case, 2, m=3)
    w1 = model.layout[0].weight
    basis[1, w1] = 1e300
    C[:] = [[1.0, 0.5], [1.0, -0.5], [1.0, 0.0]]
    got = evaluate(model, basis, C, data).loss
    want, _ = ref.span_eval(
        basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y
    )
    assert np.isfinite(got).all()
    assert_allclose(got, want, rtol=1e-10)
