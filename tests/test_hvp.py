"""The cached HVP operator (``kernels.hvp`` behind ``curvature.hessian_matvec``) against the
NumPy twin ``reference.block_hvp``, for every model kind.

Tolerances: the operator and the twin compute the same sums in different orders (GEMMs in
OpenBLAS's blocking, the 1/n folded into the deltas instead of applied at the end), so they
agree to rounding: 1e-10 relative to the largest entry is asserted (about 1e-15 is measured).
Splitting the samples differently changes the order of the sums over samples and hence the last
bits; that is checked to 1e-13. Each vector is computed alone, so the vector chunking, the other
vectors of a call and the thread counts (Numba's, which runs the tasks, and OpenBLAS's, which the
operator pins to 1) do not enter: bitwise.
"""

from __future__ import annotations

import zlib

import numba
import numpy as np
import pytest
from conftest import make_problem
from fastscape.kernels import hvp as kh

from fastscape import _device, config
from fastscape import reference as ref
from fastscape._threads import threads
from fastscape.curvature import hessian_matvec

ACTIVATIONS = ["identity", "tanh", "relu", "sigmoid"]
LOSSES = ["softmax_ce", "logistic", "mse"]
DEPTHS = {0: [4], 1: [4, 5], 2: [3, 5, 4]}  # input and hidden sizes; the output is appended


def _case(depth, act, loss):
    out = {"softmax_ce": 3, "logistic": 1, "mse": 2}[loss]
    return (DEPTHS[depth] + [out], act, loss)


CASES = [
    _case(depth, act, loss)
    for depth in DEPTHS
    for act in (ACTIVATIONS if depth else ["identity"])
    for loss in LOSSES
]


def _id(case):
    sizes, act, loss = case
    return f"{'-'.join(map(str, sizes))}-{act}-{loss}"


def _problem(case, n=37):
    model, theta, X, y = make_problem(case, n=n, seed=zlib.crc32(_id(case).encode()))
    return model, theta, model.batch(X, y)


def _twin(model, theta, data, V):
    args = (model.sizes, model.activation, model.loss_name, data.X, data.Y)
    return ref.block_hvp(theta, np.atleast_2d(V), *args)


def _close(got, want, rtol):
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rtol * scale, np.abs(got - want).max() / scale


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_twin_every_model_kind(case):
    model, theta, data = _problem(case)
    rng = np.random.default_rng(zlib.crc32(b"V" + _id(case).encode()))
    mv = hessian_matvec(model, theta, data)
    v = rng.normal(size=model.n_params)
    hv = mv(v)
    assert hv.shape == (model.n_params,)
    _close(hv, _twin(model, theta, data, v)[0], 1e-10)
    V = rng.normal(size=(5, model.n_params))
    HV = mv(V)
    assert HV.shape == V.shape
    _close(HV, _twin(model, theta, data, V), 1e-10)
    # and the per-sample kernel behind model.hvp
    _close(HV, model.hvp(theta, V, data), 1e-10)


@pytest.mark.parametrize("case", CASES[-6:], ids=_id)
def test_several_sample_blocks_and_tiny_chunks(case):
    model, theta, data = _problem(case, n=41)
    V = np.random.default_rng(5).normal(size=(7, model.n_params))
    args = (theta, *model.spec.kernel_args, data.X, data.Y)
    whole = kh.forward_cache(*args, 4096)
    blocks = kh.forward_cache(*args, 9)  # 5 sample blocks of 8-9 samples
    assert whole.n_blocks == 1 and blocks.n_blocks == 5
    np.testing.assert_array_equal(blocks.bounds, [0, 8, 16, 24, 32, 41])
    want = _twin(model, theta, data, V)
    full = kh.block_hvp(whole, V, 7)
    _close(full, want, 1e-10)
    for cache in (whole, blocks):
        ref_bits = kh.block_hvp(cache, V, 7)
        _close(ref_bits, want, 1e-10)
        _close(ref_bits, full, 1e-13)
        # chunking and the other vectors of a call do not change a vector's bits
        for chunk in (1, 3):
            np.testing.assert_array_equal(kh.block_hvp(cache, V, chunk), ref_bits)
        np.testing.assert_array_equal(kh.block_hvp(cache, V[3:4], 7), ref_bits[3:4])


def test_scratch_limit_sets_the_chunk(monkeypatch):
    model, theta, data = _problem(_case(2, "tanh", "softmax_ce"), n=50)
    args = (theta, *model.spec.kernel_args, data.X, data.Y)
    whole = kh.forward_cache(*args, 4096)
    assert kh.scratch_per_vector(model.sizes, 1) == 0  # one block: no partial rows
    assert kh.vec_chunk_for(whole, 1) >= 10**6
    blocks = kh.forward_cache(*args, 17)  # 3 sample blocks: 2 partial rows per vector
    per = kh.scratch_per_vector(model.sizes, blocks.n_blocks)
    assert per == 8 * 2 * model.n_params
    assert kh.vec_chunk_for(blocks, 3 * per + per // 2) == 3
    assert kh.vec_chunk_for(blocks, 1) == 1  # never below one vector
    V = np.random.default_rng(2).normal(size=(6, model.n_params))
    big = kh.block_hvp(blocks, V, 6)
    np.testing.assert_array_equal(kh.block_hvp(blocks, V, kh.vec_chunk_for(blocks, 2 * per)), big)
    assert blocks.work["part"].nbytes <= 6 * per  # the largest pass so far: 6 vectors
    small = kh.forward_cache(*args, 17)
    kh.block_hvp(small, V, kh.vec_chunk_for(small, 2 * per))
    assert small.work["part"].nbytes <= 2 * per
    # through the operator, with the limit of config
    monkeypatch.setattr(config, "HVP_SAMPLE_BLOCK", 17)
    monkeypatch.setattr(config, "HVP_SCRATCH_BYTES", 2 * per)
    np.testing.assert_array_equal(hessian_matvec(model, theta, data)(V), big)
    _close(big, _twin(model, theta, data, V), 1e-10)


def test_numba_thread_count_does_not_change_bits():
    # n = 2100 > config.HVP_SAMPLE_BLOCK: several sample blocks, run by 1 or 2 workers
    model, theta, data = _problem(_case(2, "sigmoid", "softmax_ce"), n=2100)
    V = np.random.default_rng(3).normal(size=(4, model.n_params))
    with threads(1):
        one = hessian_matvec(model, theta, data)(V)
    with threads(min(2, numba.config.NUMBA_NUM_THREADS)):
        mv = hessian_matvec(model, theta, data)
        two = mv(V)
        again = mv(V)  # run to run, scratch reused
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, again)
    _close(one, _twin(model, theta, data, V), 1e-10)


def test_workers_do_not_change_bits():
    model, theta, data = _problem(_case(1, "tanh", "mse"), n=50)
    cache = kh.forward_cache(theta, *model.spec.kernel_args, data.X, data.Y, 7)
    V = np.random.default_rng(9).normal(size=(5, model.n_params))
    ref_bits = kh.block_hvp(cache, V, 2, 1)
    for workers in (2, 3, 8):
        np.testing.assert_array_equal(kh.block_hvp(cache, V, 2, workers), ref_bits)


def test_blas_thread_count_does_not_change_bits():
    # the operator runs BLAS single-threaded whatever the caller's setting
    threadpoolctl = pytest.importorskip("threadpoolctl")
    model, theta, data = _problem(_case(1, "tanh", "softmax_ce"), n=600)
    V = np.random.default_rng(4).normal(size=(9, model.n_params))
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        one = hessian_matvec(model, theta, data)(V)

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]  # fmt: skip

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        two = hessian_matvec(model, theta, data)(V)
        after = blas_threads()
    np.testing.assert_array_equal(one, two)
    assert after == before  # the caller's setting is restored


@pytest.mark.parametrize("case", [_case(1, "relu", "mse"), _case(2, "tanh", "logistic")], ids=_id)
def test_symmetric(case):
    model, theta, data = _problem(case)
    rng = np.random.default_rng(6)
    U = rng.normal(size=(3, model.n_params))
    mv = hessian_matvec(model, theta, data)
    HU = mv(U)
    G = U @ HU.T  # G[i, j] = u_i . H u_j
    np.testing.assert_allclose(G, G.T, rtol=1e-12, atol=1e-12 * np.abs(G).max())


def test_closed_form_linear_regression():
    # mean of sum_o (z_o - y_o)^2 with z = W x + b: H = (2/n) kron(I_out, [x, 1][x, 1]^T)
    # in the layout W (out, d) row-major then b
    model, theta, data = _problem(_case(0, "identity", "mse"))
    n, d = data.X.shape
    out = model.n_outputs
    Xa = np.hstack([data.X, np.ones((n, 1))])
    G = 2.0 / n * Xa.T @ Xa
    H = np.zeros((model.n_params, model.n_params))
    for o in range(out):
        idx = [*range(o * d, (o + 1) * d), out * d + o]
        H[np.ix_(idx, idx)] = G
    E = np.eye(model.n_params)
    np.testing.assert_allclose(hessian_matvec(model, theta, data)(E), H, atol=1e-13)


def test_operator_keeps_theta_and_data():
    model, theta, data = _problem(_case(1, "tanh", "softmax_ce"))
    V = np.random.default_rng(8).normal(size=(2, model.n_params))
    mv = hessian_matvec(model, theta, data)
    before = mv(V)
    theta += 1.0
    np.testing.assert_array_equal(mv(V), before)


def test_bad_input_errors():
    model, theta, data = _problem(_case(1, "tanh", "softmax_ce"))
    mv = hessian_matvec(model, theta, data)
    with pytest.raises(ValueError, match="V has rows of length"):
        mv(np.ones((2, model.n_params + 1)))
    with pytest.raises(ValueError, match="V must be 1-D or 2-D"):
        mv(np.ones((1, 1, model.n_params)))
    bad = np.ones(model.n_params)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="V contains non-finite"):
        mv(bad)
    with pytest.raises(TypeError, match="model must be an MLP"):
        hessian_matvec("mlp", theta, data)
    with pytest.raises(ValueError, match="unknown device"):
        hessian_matvec(model, theta, data, device="gpu")
    with pytest.raises(ValueError, match="theta"):
        hessian_matvec(model, theta[:-1], data)


def test_cuda_unavailable_is_a_clear_error():
    if _device.cuda_available():
        pytest.skip("a CUDA device is available here (tests/cuda covers that path)")
    model, theta, data = _problem(_case(1, "tanh", "softmax_ce"))
    with pytest.raises(_device.DeviceUnavailableError):
        hessian_matvec(model, theta, data, device="cuda")


def test_matches_exact_hessian_of_mlp():
    model, theta, data = _problem(_case(2, "tanh", "softmax_ce"), n=60)
    H = model.hessian(theta, data)
    E = np.eye(model.n_params)
    _close(hessian_matvec(model, theta, data)(E), H, 1e-10)


def test_waves_bound_the_partial_rows_and_keep_the_bits():
    """The sample blocks run in waves; the partial rows are added in block order after each
    wave: any wave size gives the same bits, and a vector keeps at most ``wave`` partial
    rows whatever the number of blocks."""
    model, theta, data = _problem(_case(2, "tanh", "softmax_ce"), n=61)
    cache = kh.forward_cache(theta, *model.spec.kernel_args, data.X, data.Y, 5)
    assert cache.n_blocks == 13
    V = np.random.default_rng(4).normal(size=(3, model.n_params))
    want = kh.block_hvp(cache, V, 3, wave=13)  # one wave: one partial row per block
    assert kh.partial_slots(13, 13) == 12 and kh.partial_slots(13, 4) == 4
    for wave in (1, 2, 4, 12, 100):
        fresh = kh.forward_cache(theta, *model.spec.kernel_args, data.X, data.Y, 5)
        np.testing.assert_array_equal(kh.block_hvp(fresh, V, 3, wave=wave), want)
        assert fresh.work["part"].size <= min(wave, 12) * 3 * model.n_params
    assert kh.scratch_per_vector(model.sizes, 13, 4) == 8 * 4 * model.n_params
    _close(want, _twin(model, theta, data, V), 1e-10)
