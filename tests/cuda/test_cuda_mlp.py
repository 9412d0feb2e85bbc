"""CUDA MLP kernels (kernels/cuda/mlp.py) against the CPU kernels and the NumPy twins.

Runs on a GPU or on Numba's simulator (see conftest.py); n = 20 samples, blocks of 7.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from numpy.testing import assert_allclose, assert_array_equal

from fastscape import _device, config
from fastscape import reference as ref

N = 20


def _problem(case, seed=0, K=3):
    model, theta, X, y = make_problem(case, n=N, seed=seed)
    data = model.batch(X, y)
    V = np.random.default_rng(seed + 1).normal(size=(K, model.n_params))
    return model, theta, data, V


def _ref(model, data):
    return model.sizes, model.activation, model.loss_name, data.X, data.Y


def _close(got, want, rtol=1e-10):
    assert_allclose(got, want, rtol=rtol, atol=1e-13 * np.abs(want).max())


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_loss_matches_cpu_and_reference(case):
    model, theta, data, _ = _problem(case)
    got = _device.mlp_loss(model, theta, data, "cuda")
    assert isinstance(got, float)
    assert_allclose(got, model.loss(theta, data), rtol=1e-10)
    assert_allclose(got, ref.mlp_loss(theta, *_ref(model, data)), rtol=1e-10)


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_loss_grad_matches_cpu_and_reference(case):
    model, theta, data, _ = _problem(case, seed=1)
    value, g = _device.mlp_loss_grad(model, theta, data, "cuda")
    cvalue, cg = model.grad(theta, data)
    rvalue, rg = ref.mlp_loss_grad(theta, *_ref(model, data))
    assert g.shape == (model.n_params,)
    assert_allclose(value, cvalue, rtol=1e-10)
    assert_allclose(value, rvalue, rtol=1e-10)
    _close(g, cg)
    _close(g, rg)


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_hvp_matches_cpu_and_reference(case):
    model, theta, data, V = _problem(case, seed=2)
    HV = _device.mlp_hvp(model, theta, V, data, "cuda")
    assert HV.shape == V.shape
    _close(HV, model.hvp(theta, V, data))
    for k in range(V.shape[0]):
        _close(HV[k], ref.block_hvp(theta, V[k], *_ref(model, data)))


def test_cpu_dispatch_is_the_cpu_kernel():
    """device="cpu" gives exactly the model API's (CPU kernel's) bits."""
    model, theta, data, V = _problem(MODEL_CASES[7], seed=3)
    assert _device.mlp_loss(model, theta, data, "cpu") == model.loss(theta, data)
    value, g = _device.mlp_loss_grad(model, theta, data, "cpu")
    assert value == model.grad(theta, data)[0]
    assert_array_equal(g, model.grad(theta, data)[1])
    assert_array_equal(_device.mlp_hvp(model, theta, V, data, "cpu"), model.hvp(theta, V, data))


@pytest.mark.parametrize("case", [MODEL_CASES[4], MODEL_CASES[7]], ids=case_id)
def test_two_runs_give_identical_bits(case):
    model, theta, data, V = _problem(case, seed=4)
    runs = [
        (
            _device.mlp_loss(model, theta, data, "cuda"),
            *_device.mlp_loss_grad(model, theta, data, "cuda"),
            _device.mlp_hvp(model, theta, V, data, "cuda"),
        )
        for _ in range(2)
    ]
    (l1, v1, g1, h1), (l2, v2, g2, h2) = runs
    assert l1 == l2
    assert v1 == v2
    assert_array_equal(g1, g2)
    assert_array_equal(h1, h2)


def test_grad_and_hvp_bits_do_not_depend_on_threads_per_block(monkeypatch):
    """Each output element is summed by one thread in sample order: the launch shape cannot
    change the result."""
    model, theta, data, V = _problem(MODEL_CASES[9], seed=5)
    value, g = _device.mlp_loss_grad(model, theta, data, "cuda")
    HV = _device.mlp_hvp(model, theta, V, data, "cuda")
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 3)
    value2, g2 = _device.mlp_loss_grad(model, theta, data, "cuda")
    assert value == value2
    assert_array_equal(g, g2)
    assert_array_equal(HV, _device.mlp_hvp(model, theta, V, data, "cuda"))


def test_batched_hvp_rows_equal_single_vector_calls():
    model, theta, data, V = _problem(MODEL_CASES[5], seed=6)
    HV = _device.mlp_hvp(model, theta, V, data, "cuda")
    for k in range(V.shape[0]):
        assert_array_equal(HV[k], _device.mlp_hvp(model, theta, V[k : k + 1], data, "cuda")[0])


def test_block_sizes_agree(monkeypatch):
    """One block holding every sample and blocks of one sample give the same numbers."""
    model, theta, data, V = _problem(MODEL_CASES[10], seed=7)
    value, g = _device.mlp_loss_grad(model, theta, data, "cuda")
    HV = _device.mlp_hvp(model, theta, V, data, "cuda")
    for block in (1, N):
        monkeypatch.setattr(config, "CUDA_BLOCK", block)
        v2, g2 = _device.mlp_loss_grad(model, theta, data, "cuda")
        assert_allclose(v2, value, rtol=1e-12)
        _close(g2, g, rtol=1e-12)
        _close(_device.mlp_hvp(model, theta, V, data, "cuda"), HV, rtol=1e-12)


def test_hvp_block_shrinks_to_the_memory_budget():
    from fastscape.kernels.cuda import mlp as kcuda

    assert kcuda.hvp_block_for(K=4, n_units=10, block=1000, scratch_bytes=8 * 10 * 16 * 50) == 50
    assert kcuda.hvp_block_for(K=4, n_units=10, block=30, scratch_bytes=2**30) == 30
    assert kcuda.hvp_block_for(K=4, n_units=10, block=30, scratch_bytes=1) == 1


def test_device_batch_is_reused_and_gives_the_same_bits():
    model, theta, data, V = _problem(MODEL_CASES[2], seed=8)
    dev = _device.to_device(data)
    assert _device.to_device(dev) is dev
    assert model.batch(dev, None) is dev  # still a Batch: the model's checks accept it
    assert_array_equal(dev.device_X.copy_to_host(), data.X)
    assert _device.mlp_loss(model, theta, dev, "cuda") == _device.mlp_loss(
        model, theta, data, "cuda"
    )
    assert_array_equal(
        _device.mlp_loss_grad(model, theta, dev, "cuda")[1],
        _device.mlp_loss_grad(model, theta, data, "cuda")[1],
    )
    assert_array_equal(
        _device.mlp_hvp(model, theta, V, dev, "cuda"),
        _device.mlp_hvp(model, theta, V, data, "cuda"),
    )
    # the CPU path reads the host arrays of a DeviceBatch
    assert _device.mlp_loss(model, theta, dev, "cpu") == model.loss(theta, data)


def test_loss_is_finite_and_exact_for_huge_logits():
    """Saturated logistic and softmax outputs: no overflow, the same values as the CPU."""
    for case in (MODEL_CASES[0], MODEL_CASES[2]):
        model, theta, data, _ = _problem(case, seed=9)
        theta = theta * 400.0
        got = _device.mlp_loss(model, theta, data, "cuda")
        assert np.isfinite(got)
        assert_allclose(got, model.loss(theta, data), rtol=1e-10)
        _close(_device.mlp_loss_grad(model, theta, data, "cuda")[1], model.grad(theta, data)[1])


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[5], MODEL_CASES[7]], ids=case_id)
def test_float32_path_agrees_with_float64(case):
    """float32 storage and per-sample arithmetic, float64 sums: a float32 forward pass's error.

    (The simulator evaluates math functions in double, so this bounds the plumbing; on a GPU
    the same tolerance holds for these well-scaled problems.)"""
    model, theta, data, V = _problem(case, seed=10)
    value = _device.mlp_loss(model, theta, data, "cuda", "float32")
    assert isinstance(value, float)
    assert_allclose(value, model.loss(theta, data), rtol=1e-5)
    v32, g32 = _device.mlp_loss_grad(model, theta, data, "cuda", "float32")
    v64, g64 = model.grad(theta, data)
    assert g32.dtype == np.float64
    assert_allclose(v32, v64, rtol=1e-5)
    assert_allclose(g32, g64, rtol=1e-4, atol=1e-5 * np.abs(g64).max())
    HV32 = _device.mlp_hvp(model, theta, V, data, "cuda", "float32")
    HV64 = model.hvp(theta, V, data)
    assert HV32.dtype == np.float64
    assert_allclose(HV32, HV64, rtol=1e-4, atol=1e-5 * np.abs(HV64).max())
    # float32 really rounds: the results are not the float64 bits
    assert not np.array_equal(g32, _device.mlp_loss_grad(model, theta, data, "cuda")[1])


def test_device_batch_keeps_one_copy_per_precision():
    model, theta, data, _ = _problem(MODEL_CASES[4], seed=11)
    dev = _device.to_device(data, "float32")
    x32, _y32 = dev.device_arrays("float32")
    assert x32.dtype == np.float32
    assert dev.device_arrays("float32")[0] is x32
    assert dev.device_X.dtype == np.float64  # float64 copy made on request
    assert _device.mlp_loss(model, theta, dev, "cuda", "float32") == _device.mlp_loss(
        model, theta, data, "cuda", "float32"
    )


def test_configure_silences_only_the_low_occupancy_warning():
    """numba-cuda's warning text for grids under 128 blocks (dispatcher.py) is filtered; any
    other warning of a launch still gets through."""
    import warnings

    from fastscape.kernels.cuda.mlp import configure

    class Kernel:
        def __init__(self, message):
            self.message = message

        def __getitem__(self, launch):
            warnings.warn(self.message, RuntimeWarning, stacklevel=2)
            return launch

    quiet = Kernel("Grid size 2 will likely result in GPU under-utilization due to low occupancy.")
    assert configure(quiet, 2, 8) == (2, 8)
    with pytest.warns(RuntimeWarning, match="something else"):
        configure(Kernel("something else"), 2, 8)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[7]], ids=case_id)
def test_public_api_device_cuda(case):
    """MLP.loss / grad / hvp with device="cuda" validate as on the CPU and agree with it."""
    model, theta, data, V = _problem(case, seed=3, K=2)
    X, Y = data
    _close(model.loss(theta, X, Y, device="cuda"), model.loss(theta, data))
    value, g = model.grad(theta, data, device="cuda")
    _close(value, model.loss(theta, data))
    _close(g, model.grad(theta, data)[1])
    _close(model.hvp(theta, V, data, device="cuda"), model.hvp(theta, V, data))
    with pytest.raises(ValueError, match="theta has length"):
        model.loss(theta[:-1], data, device="cuda")


# new activations and the L2 term: the device twins of kernels/elementwise.py and penalty.py
NEW_CASES = [
    ([4, 5, 3], "leaky_relu", "softmax_ce", 0.0),
    ([3, 4, 1], "gelu", "logistic", 0.2),
    ([3, 4, 3, 2], "gelu_tanh", "mse", 0.0),
    ([4, 3, 2], "gelu", "mse", 0.3),
    ([3, 2], "identity", "mse", 0.4),
]


@pytest.mark.parametrize("case", NEW_CASES, ids=lambda c: f"{case_id(c[:3])}-l2={c[3]}")
def test_new_activations_and_l2_match_cpu_and_reference(case):
    import fastscape

    sizes, act, loss, l2 = case
    _, theta, data, V = _problem((sizes, act, loss), seed=3)
    model = fastscape.MLP(sizes, activation=act, loss=loss, l2=l2, l2_bias=True)
    kw = {"l2": l2, "l2_bias": True}
    r = _ref(model, data)
    value = _device.mlp_loss(model, theta, data, "cuda")
    assert_allclose(value, model.loss(theta, data), rtol=1e-10)
    assert_allclose(value, ref.mlp_loss(theta, *r, **kw), rtol=1e-10)
    gv, g = _device.mlp_loss_grad(model, theta, data, "cuda")
    assert_allclose(gv, value, rtol=1e-10)
    _close(g, model.grad(theta, data)[1])
    _close(g, ref.mlp_loss_grad(theta, *r, **kw)[1])
    HV = _device.mlp_hvp(model, theta, V, data, "cuda")
    _close(HV, model.hvp(theta, V, data))
    _close(HV, np.stack([ref.block_hvp(theta, v, *r, **kw) for v in V]))
