"""Problems and checks shared by the span engine's tests (test_span*.py)."""

from __future__ import annotations

import numba
import numpy as np
from conftest import make_problem
from fastscape.kernels import span as kspan
from numpy.testing import assert_array_equal


def span_problem(case, K, m=7, n=45, seed=0):
    model, theta, X, y = make_problem(case, n=n, seed=seed)
    rng = np.random.default_rng(seed + 100 * K)
    basis = np.vstack([theta, rng.normal(size=(K - 1, model.n_params))])
    C = rng.normal(size=(m, K))
    C[0] = 0.0  # the zero vector
    C[1, 0] = 0.0  # one skipped row
    return model, basis, C, model.batch(X, y)


def assert_same_bits_on_one_and_two_threads(args):
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = kspan.span_eval(*args)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = kspan.span_eval(*args)
    finally:
        numba.set_num_threads(previous)
    assert_array_equal(one[0], two[0])
    assert_array_equal(one[1], two[1])
