"""Device selection (fastscape/_device.py): checks and error messages, without any GPU.

The CUDA kernels themselves are tested in tests/cuda (GPU or simulator). Here the probes are
monkeypatched to play the machines without numba-cuda or without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, make_problem

from fastscape import _device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "", "cuda:0"])
def test_unknown_device_strings_are_refused(device):
    with pytest.raises(ValueError, match=r"unknown device .*expected 'cpu' or 'cuda'"):
        _device.resolve_device(device)


@pytest.mark.parametrize("device", [None, 0, b"cpu"])
def test_device_must_be_a_string(device):
    with pytest.raises(TypeError, match="device must be 'cpu' or 'cuda'"):
        _device.resolve_device(device)


def test_cpu_always_resolves(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    assert _device.resolve_device("cpu") == "cpu"


def test_missing_numba_cuda_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    assert _device.cuda_available() is False
    with pytest.raises(_device.DeviceUnavailableError, match="numba-cuda") as err:
        _device.resolve_device("cuda")
    assert 'pip install "fastscape[cuda]"' in str(err.value)
    assert "GPU" not in str(err.value)


def test_no_gpu_says_so_and_names_the_simulator(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", lambda: False)
    assert _device.cuda_available() is False
    with pytest.raises(_device.DeviceUnavailableError, match="no CUDA GPU is visible") as err:
        _device.resolve_device("cuda")
    assert "NUMBA_ENABLE_CUDASIM=1" in str(err.value)
    assert "not installed" not in str(err.value)


def test_broken_driver_counts_as_unavailable(monkeypatch):
    def boom():
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", boom)
    assert _device.cuda_available() is False


def test_available_when_both_probes_pass(monkeypatch):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: True)
    monkeypatch.setattr(_device, "_gpu_visible", lambda: True)
    assert _device.cuda_available() is True
    assert _device.resolve_device("cuda") == "cuda"


@pytest.mark.parametrize("fn", ["mlp_loss", "mlp_loss_grad", "mlp_hvp", "span_eval", "to_device"])
def test_dispatchers_refuse_cuda_before_any_kernel_runs(monkeypatch, fn):
    monkeypatch.setattr(_device, "_numba_cuda_installed", lambda: False)
    model, theta, X, y = make_problem(MODEL_CASES[4], n=10)
    data = model.batch(X, y)
    args = {
        "mlp_loss": (model, theta, data, "cuda"),
        "mlp_loss_grad": (model, theta, data, "cuda"),
        "mlp_hvp": (model, theta, np.ones((1, model.n_params)), data, "cuda"),
        "span_eval": (model, theta[None, :], np.ones((2, 1)), data, "cuda"),
        "to_device": (data,),
    }[fn]
    with pytest.raises(_device.DeviceUnavailableError, match="numba-cuda"):
        getattr(_device, fn)(*args)


def test_dispatchers_refuse_bad_device_strings():
    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        _device.mlp_loss(model, theta, model.batch(X, y), "gpu")


def test_to_device_needs_a_batch():
    with pytest.raises(TypeError, match="data must be a Batch"):
        _device.to_device((np.ones((2, 2)), np.ones((2, 1))))


def test_cpu_dispatch_matches_the_model_api():
    model, theta, X, y = make_problem(MODEL_CASES[7], n=30)
    data = model.batch(X, y)
    V = np.random.default_rng(0).normal(size=(2, model.n_params))
    assert _device.mlp_loss(model, theta, data) == model.loss(theta, data)
    value, g = _device.mlp_loss_grad(model, theta, data)
    assert value == model.grad(theta, data)[0]
    np.testing.assert_array_equal(g, model.grad(theta, data)[1])
    np.testing.assert_array_equal(_device.mlp_hvp(model, theta, V, data), model.hvp(theta, V, data))


def test_cpu_span_dispatch_is_the_cpu_engine():
    from fastscape.kernels import span as kspan

    from fastscape import config

    model, theta, X, y = make_problem(MODEL_CASES[5], n=30)
    data = model.batch(X, y)
    basis = np.vstack([theta, np.random.default_rng(1).normal(size=model.n_params)])
    C = np.random.default_rng(2).normal(size=(4, 2))
    loss, acc = _device.span_eval(model, basis, C, data)
    want = kspan.span_eval(
        basis, C, model._sizes_arr, model._act, model._loss, data.X, data.Y,
        config.span_block_for(2, model.sizes[1]), config.SPAN_POINT_CHUNK,
    )  # fmt: skip
    np.testing.assert_array_equal(loss, want[0])
    np.testing.assert_array_equal(acc, want[1])


@pytest.mark.parametrize("dtype", ["float16", "f4", None, np.float32])
def test_unknown_dtypes_are_refused(dtype):
    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    with pytest.raises(ValueError, match="unknown dtype"):
        _device.mlp_loss(model, theta, model.batch(X, y), "cpu", dtype)


def test_float32_needs_the_gpu():
    model, theta, X, y = make_problem(MODEL_CASES[0], n=10)
    with pytest.raises(ValueError, match="dtype='float32' is available with device='cuda' only"):
        _device.mlp_loss(model, theta, model.batch(X, y), "cpu", "float32")
