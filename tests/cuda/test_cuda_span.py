"""CUDA span engine (kernels/cuda/span.py) against the CPU engine and the NumPy twin.

Runs on a GPU or on Numba's simulator (see conftest.py): n = 20 samples in blocks of 7,
3 slots per point, 8 threads per CUDA block.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_CASES, case_id, make_problem
from numpy.testing import assert_allclose, assert_array_equal

from fastscape import _device, config
from fastscape import reference as ref


def _span_problem(case, K=3, m=7, n=20, seed=0):
    model, theta, X, y = make_problem(case, n=n, seed=seed)
    rng = np.random.default_rng(seed + 100 * K)
    basis = np.vstack([theta, rng.normal(size=(K - 1, model.n_params))])
    C = rng.normal(size=(m, K))
    C[0] = 0.0  # the zero vector
    C[1, 0] = 0.0  # one skipped row
    return model, basis, C, model.batch(X, y)


def _twin(model, basis, C, data):
    return ref.span_eval(basis, C, model.sizes, model.activation, model.loss_name, data.X, data.Y)


@pytest.mark.parametrize("case", MODEL_CASES, ids=case_id)
def test_span_matches_cpu_engine_and_reference(case):
    model, basis, C, data = _span_problem(case, seed=1)
    loss, acc = _device.span_eval(model, basis, C, data, "cuda")
    cpu_loss, cpu_acc = _device.span_eval(model, basis, C, data, "cpu")
    want_loss, want_acc = _twin(model, basis, C, data)
    assert loss.shape == acc.shape == (C.shape[0],)
    assert_allclose(loss, cpu_loss, rtol=1e-10)
    assert_allclose(loss, want_loss, rtol=1e-10)
    assert_array_equal(acc, cpu_acc)
    if model.is_classifier:
        assert_array_equal(acc, want_acc)
    else:
        assert not acc.any()


@pytest.mark.parametrize("K", [1, 2, 4])
def test_any_number_of_basis_vectors(K):
    model, basis, C, data = _span_problem(MODEL_CASES[7], K=K, m=5, seed=2)
    loss, acc = _device.span_eval(model, basis, C, data, "cuda")
    want_loss, want_acc = _twin(model, basis, C, data)
    assert_allclose(loss, want_loss, rtol=1e-10)
    assert_array_equal(acc, want_acc)


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[7]], ids=case_id)
def test_zero_coefficients_are_skipped_exactly(case):
    """A point using 2 of K rows gives the same bits as the K = 2 problem of those rows."""
    model, basis, C, data = _span_problem(case, K=4, m=5, seed=3)
    C[:, [1, 3]] = 0.0
    loss, acc = _device.span_eval(model, basis, C, data, "cuda")
    loss2, acc2 = _device.span_eval(
        model, np.ascontiguousarray(basis[[0, 2]]), np.ascontiguousarray(C[:, [0, 2]]), data, "cuda"
    )
    assert_array_equal(loss, loss2)
    assert_array_equal(acc, acc2)


def test_a_point_does_not_depend_on_the_other_points():
    """Tiles of points give the bits of the whole call (needed by resumable evaluations)."""
    model, basis, C, data = _span_problem(MODEL_CASES[5], m=7, seed=4)
    loss, acc = _device.span_eval(model, basis, C, data, "cuda")
    for lo, hi in ((0, 3), (3, 7), (5, 6)):
        tl, ta = _device.span_eval(model, basis, np.ascontiguousarray(C[lo:hi]), data, "cuda")
        assert_array_equal(tl, loss[lo:hi])
        assert_array_equal(ta, acc[lo:hi])


def test_two_runs_and_launch_shapes_give_identical_bits(monkeypatch):
    model, basis, C, data = _span_problem(MODEL_CASES[9], seed=5)
    loss, acc = _device.span_eval(model, basis, C, data, "cuda")
    loss2, acc2 = _device.span_eval(model, basis, C, data, "cuda")
    assert_array_equal(loss, loss2)
    assert_array_equal(acc, acc2)
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 5)
    assert_array_equal(_device.span_eval(model, basis, C, data, "cuda")[0], loss)


@pytest.mark.parametrize(("block", "slots"), [(1, 1), (20, 1), (20, 20), (6, 4)])
def test_blocks_and_slots_change_only_rounding(monkeypatch, block, slots):
    model, basis, C, data = _span_problem(MODEL_CASES[10], m=4, seed=6)
    want_loss, _ = _twin(model, basis, C, data)
    monkeypatch.setattr(config, "CUDA_SPAN_BLOCK", block)
    monkeypatch.setattr(config, "CUDA_SPAN_SLOTS", slots)
    loss, _ = _device.span_eval(model, basis, C, data, "cuda")
    assert_allclose(loss, want_loss, rtol=1e-10)


def test_all_coefficients_zero():
    """Every point is theta = 0: the loss of the zero model on every point."""
    model, basis, C, data = _span_problem(MODEL_CASES[2], m=3, seed=7)
    C[:] = 0.0
    loss, acc = _device.span_eval(model, basis, C, data, "cuda")
    want = ref.mlp_loss(np.zeros(model.n_params), *_args(model, data))
    assert_allclose(loss, np.full(3, want), rtol=1e-12)
    assert_array_equal(acc, _device.span_eval(model, basis, C, data, "cpu")[1])


def test_device_batch_gives_the_same_bits():
    model, basis, C, data = _span_problem(MODEL_CASES[4], seed=8)
    dev = _device.to_device(data)
    assert_array_equal(
        _device.span_eval(model, basis, C, dev, "cuda")[0],
        _device.span_eval(model, basis, C, data, "cuda")[0],
    )


def _args(model, data):
    return model.sizes, model.activation, model.loss_name, data.X, data.Y


@pytest.mark.parametrize("case", [MODEL_CASES[0], MODEL_CASES[6], MODEL_CASES[7]], ids=case_id)
def test_float32_span_agrees_with_float64(case):
    """float32 basis, coefficients, data and per-sample arithmetic; float64 sums."""
    model, basis, C, data = _span_problem(case, seed=9)
    loss, acc = _device.span_eval(model, basis, C, data, "cuda", "float32")
    want_loss, want_acc = _device.span_eval(model, basis, C, data, "cpu")
    assert loss.dtype == np.float64
    assert_allclose(loss, want_loss, rtol=1e-5)
    # a prediction may flip only where the float64 margin is within float32 rounding
    assert np.mean(acc != want_acc) <= 0.15


def test_public_landscape_api_on_cuda():
    """evaluate / surface_2d / linear_path with device="cuda" agree with the CPU."""
    from fastscape.landscape import surface_2d
    from fastscape.paths import linear_path

    model, theta, X, y = make_problem(MODEL_CASES[7], n=20, seed=5)
    rng = np.random.default_rng(6)
    d1, d2 = rng.normal(size=(2, model.n_params))
    kw = dict(alphas=3, betas=2, progress=False)
    gpu = surface_2d(model, theta, d1, d2, X, y, device="cuda", **kw)
    cpu = surface_2d(model, theta, d1, d2, X, y, **kw)
    assert gpu.loss.shape == (3, 2)
    assert_allclose(gpu.loss, cpu.loss, rtol=1e-10)
    assert_array_equal(gpu.accuracy, cpu.accuracy)
    other = theta + d1
    path_gpu = linear_path(model, theta, other, X, y, ts=4, progress=False, device="cuda")
    path_cpu = linear_path(model, theta, other, X, y, ts=4, progress=False)
    assert_allclose(path_gpu.loss, path_cpu.loss, rtol=1e-10)
    with pytest.raises(ValueError, match="device='cuda' evaluates MLPs"):
        from fastscape.functions import rosenbrock
        from fastscape.landscape import evaluate

        evaluate(rosenbrock, np.eye(2), np.ones((1, 2)), device="cuda")


def test_public_landscape_api_in_float32():
    """dtype="float32" through surface_2d / linear_path: the float32 engine's accuracy."""
    from fastscape.landscape import surface_2d
    from fastscape.paths import linear_path

    model, theta, X, y = make_problem(MODEL_CASES[7], n=20, seed=7)
    rng = np.random.default_rng(8)
    d1, d2 = rng.normal(size=(2, model.n_params))
    kw = dict(alphas=3, betas=2, progress=False)
    f32 = surface_2d(model, theta, d1, d2, X, y, device="cuda", dtype="float32", **kw)
    f64 = surface_2d(model, theta, d1, d2, X, y, **kw)
    assert f32.loss.dtype == np.float64
    assert_allclose(f32.loss, f64.loss, rtol=1e-5)
    assert not np.array_equal(f32.loss, f64.loss)  # float32 arithmetic really ran
    path = linear_path(model, theta, theta + d1, X, y, ts=4, progress=False, device="cuda",
                       dtype="float32")  # fmt: skip
    assert_allclose(path.loss, linear_path(model, theta, theta + d1, X, y, ts=4).loss, rtol=1e-5)


@pytest.mark.parametrize(
    "case",
    [
        ([4, 5, 3], "leaky_relu", "softmax_ce", 0.0),
        ([3, 4, 1], "gelu", "logistic", 0.25),
        ([3, 4, 3, 2], "gelu_tanh", "mse", 0.1),
        ([3, 1], "identity", "logistic", 0.5),
    ],
    ids=lambda c: f"{case_id(c[:3])}-l2={c[3]}",
)
def test_new_activations_and_l2_match_cpu_engine_and_reference(case):
    import fastscape

    sizes, act, loss, l2 = case
    _, basis, C, data = _span_problem((sizes, act, loss), seed=9)
    model = fastscape.MLP(sizes, activation=act, loss=loss, l2=l2)
    got, acc = _device.span_eval(model, basis, C, data, "cuda")
    cpu, cpu_acc = _device.span_eval(model, basis, C, data, "cpu")
    want, _ = ref.span_eval(basis, C, model.sizes, act, loss, data.X, data.Y, l2=l2, l2_bias=False)
    assert_allclose(got, cpu, rtol=1e-10)
    assert_allclose(got, want, rtol=1e-10)
    assert_array_equal(acc, cpu_acc)
