"""The span engine's point helpers (kernels/span_points.py) against NumPy."""

from __future__ import annotations

import numpy as np
from fastscape.kernels import span_points as kp
from numpy.testing import assert_allclose, assert_array_equal


def test_nonzero_coefficients_and_point_tails():
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(6, 4))
    coef[0] = 0.0
    coef[2, [0, 2]] = 0.0
    tail = rng.normal(size=(4, 9))
    lo, npts = 1, 5
    idx = np.empty((npts, 4), np.int64)
    val = np.empty((npts, 4))
    cnt = np.empty(npts, np.int64)
    theta_t = np.zeros((npts, 9))
    kp.point_tails(coef, tail, lo, idx, val, cnt, theta_t)
    for q in range(npts):
        row = coef[lo + q]
        nz = np.flatnonzero(row)
        assert cnt[q] == nz.size
        assert_array_equal(idx[q, : cnt[q]], nz)
        assert_array_equal(val[q, : cnt[q]], row[nz])
        assert_allclose(theta_t[q], row @ tail, rtol=1e-14, atol=1e-15)
    theta = np.empty(9)
    kp.combine(tail, idx[1], val[1], cnt[1], theta)
    assert_allclose(theta, coef[2] @ tail, rtol=1e-14, atol=1e-15)


def test_first_layer_selects_its_terms():
    rng = np.random.default_rng(1)
    F = rng.normal(size=(3, 8))
    c = np.array([0.5, -1.5, 2.0])
    for two, three, k in [(False, False, 1), (True, False, 2), (True, True, 3)]:
        got = [kp.first_layer(F[0], c[0], F[1], c[1], F[2], c[2], two, three, j) for j in range(8)]
        assert_allclose(got, c[:k] @ F[:k], rtol=1e-14, atol=1e-15)
