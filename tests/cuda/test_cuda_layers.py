"""device="cuda" on the per-layer blocks and the diagonal (the Hessian's products on the GPU),
and the GGN / Fisher refused there, naming the device.

The estimates take the same probes with the same seed on both devices, so the CUDA results
agree with the CPU ones to the HVPs' 1e-10. Tiny model and 20 samples (the simulator runs one
Python thread per CUDA thread).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_problem
from numpy.testing import assert_allclose

from fastscape import config, curvature

N = 20


@pytest.fixture(autouse=True)
def one_sample_block(monkeypatch):
    monkeypatch.setattr(config, "CUDA_BLOCK", N)


def _problem():
    model, theta, X, y = make_problem(([2, 3, 2], "tanh", "softmax_ce"), n=N, seed=1)
    return model, theta, model.batch(X, y)


def test_hutchinson_diagonal_matches_cpu():
    model, theta, data = _problem()
    kw = {"n_samples": 6, "seed": 2}
    got = curvature.hessian_diagonal(model, theta, data, None, "hutchinson", device="cuda", **kw)
    want = curvature.hessian_diagonal(model, theta, data, None, "hutchinson", **kw)
    assert_allclose(got.diagonal, want.diagonal, rtol=1e-10, atol=1e-13)
    assert_allclose(got.std_error, want.std_error, rtol=1e-8, atol=1e-13)


def test_estimated_layer_blocks_match_cpu():
    model, theta, data = _problem()
    kw = {"k": 1, "n_samples": 4, "seed": 3, "tol": 1e-8}
    got = curvature.layer_blocks(model, theta, data, None, "estimate", device="cuda", **kw)
    want = curvature.layer_blocks(model, theta, data, None, "estimate", **kw)
    assert_allclose(got.trace, want.trace, rtol=1e-9, atol=1e-13)
    assert_allclose(got.coupling, want.coupling, rtol=1e-9, atol=1e-13)
    for g, w in zip(got.eigenvalues, want.eigenvalues):
        assert_allclose(g, w, rtol=1e-8)


def test_ggn_and_fisher_are_refused_on_cuda_naming_the_device():
    model, theta, data = _problem()
    for matrix in ("ggn", "fisher", "residual"):
        with pytest.raises(ValueError, match="device='cuda'"):
            curvature.curvature_operator(model, theta, data, None, matrix, device="cuda")
    assert np.isfinite(
        curvature.curvature_operator(model, theta, data, None, "ggn").rows(theta)
    ).all()
