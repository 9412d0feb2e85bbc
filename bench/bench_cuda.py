"""GPU benchmarks of issue 7: the CUDA kernels against PyTorch CUDA doing the same work.

Run on a machine with an NVIDIA GPU, numba-cuda and torch (skipped everywhere else, and under
Numba's simulator)::

    python -m pytest bench/bench_cuda.py --benchmark-only \
        --benchmark-columns=min,median,max,rounds --benchmark-autosave

Problems (one ``benchmark.group`` per problem and dtype):

``logistic-d100-n1e6-grid201x201``
    Loss and accuracy of logistic regression (d = 100, n = 1 000 000) on a 201 x 201 grid
    ``theta* + a d1 + b d2``.
``mlp-784-256-10-tanh-n60000-grid101x101``
    The same for an MLP 784-256-10, tanh, softmax cross-entropy, n = 60 000, 101 x 101 grid.
``mlp-784-256-10-tanh-n60000-hvp100``
    100 Hessian-vector products of that MLP (batched in one pass over the data).

Implementations:

``fastscape-cuda``
    ``fastscape._device.span_eval`` / ``mlp_hvp`` with ``device="cuda"``; the data are copied
    to the GPU once, outside the timing (``_device.to_device``).
``torch-cuda``
    PyTorch on the same GPU, as fast as it is easily written: the grids use the same span
    identity (first-layer products ``X W_k^T + b_k`` once, then every chunk of points with
    batched matmuls, ``tanh`` and a log-softmax), the HVPs double backpropagation
    (``torch.autograd.grad`` of ``grad . v``, one vector at a time, graph kept).

float32: both run in float64 and float32 (fastscape's float32 path keeps its sums over samples
in float64, see docs/cuda.md).

Recorded in ``extra_info``: GPU name, sizes, first-call (compile) time, the operation count of
the problem (``flops``, counted as below) and, for fastscape in float64, the achieved fraction
of the GPU's float64 peak (FMA units x 2 x SMs x clock; known for compute capability 6.0, 7.0,
8.0 and 9.0). Operation count, multiply-add = 2, every exp/log/tanh = 1:

- grid: ``2 K n d h1`` (first layer, once) ``+ m n (2 K h1 + h1 + 2 h1 out + 3 out)``;
- HVPs: per sample ``2 Pw + 2 Pw'`` (forward, backprop) plus per vector and sample
  ``4 Pw + 4 Pw' + 4 Pw'`` (R-forward, R-backward, parameter sums), where ``Pw`` counts all
  weights and ``Pw'`` those of layers after the first.

Correctness is checked on every problem before timing against the CPU kernels: the loss at a
few grid points to rtol 1e-9 in float64 (1e-4 in float32), two HVPs to 1e-8 (1e-4)
relative to their largest entry.
"""

from __future__ import annotations

import functools
import importlib.util
import time

import numba
import numpy as np
import pytest

import fastscape
from fastscape import _device

if numba.config.ENABLE_CUDASIM or not _device.cuda_available():
    pytest.skip(
        "GPU benchmarks need a real CUDA GPU and numba-cuda (not the simulator)",
        allow_module_level=True,
    )

from numba import cuda

HAVE_TORCH = importlib.util.find_spec("torch") is not None

GRIDS = {
    # name: (sizes, activation, loss, n, points per axis)
    "logistic-d100-n1e6-grid201x201": ([100, 1], "identity", "logistic", 1_000_000, 201),
    "mlp-784-256-10-tanh-n60000-grid101x101": ([784, 256, 10], "tanh", "softmax_ce", 60_000, 101),
}
HVP = ("mlp-784-256-10-tanh-n60000-hvp100", [784, 256, 10], "tanh", "softmax_ce", 60_000, 100)
IMPLS = ["fastscape-cuda", "torch-cuda"]
DTYPES = ["float64", "float32"]
FP64_FMA_PER_SM = {(6, 0): 32, (7, 0): 32, (8, 0): 32, (9, 0): 64}


# ----------------------------------------------------------------------------- problems
@functools.lru_cache(maxsize=1)
def _grid_problem(name):
    sizes, act, loss, n, g = GRIDS[name]
    rng = np.random.default_rng(0)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0])) / np.sqrt(sizes[0])
    y = rng.integers(0, max(2, sizes[-1]), size=n)
    data = model.batch(X, y)
    theta = model.init(1)
    d1, d2 = rng.normal(size=(2, model.n_params)) * 0.1
    a = np.linspace(-1.0, 1.0, g)
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    return model, data, np.stack([theta, d1, d2]), C


@functools.lru_cache(maxsize=1)
def _hvp_problem():
    _, sizes, act, loss, n, K = HVP
    rng = np.random.default_rng(0)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0])) / np.sqrt(sizes[0])
    y = rng.integers(0, sizes[-1], size=n)
    return model, model.batch(X, y), model.init(1), rng.normal(size=(K, model.n_params))


def _grid_flops(model, n, K, m):
    d, h1, out = model.sizes[0], model.sizes[1], model.sizes[-1]
    if model.is_linear:
        return 2.0 * K * n * d * h1 + float(m) * n * (2 * K * h1 + 3 * out)
    return 2.0 * K * n * d * h1 + float(m) * n * (2 * K * h1 + h1 + 2 * h1 * out + 3 * out)


def _hvp_flops(model, n, K):
    pw = sum(a * b for a, b in zip(model.sizes[:-1], model.sizes[1:]))
    pw_later = pw - model.sizes[0] * model.sizes[1]
    return float(n) * (2 * pw + 2 * pw_later + K * (4 * pw + 8 * pw_later))


def _fp64_peak():
    dev = cuda.get_current_device()
    cc = dev.compute_capability
    fma = FP64_FMA_PER_SM.get(tuple(cc))
    if fma is None:
        return None
    return 2.0 * fma * dev.MULTIPROCESSOR_COUNT * dev.CLOCK_RATE * 1e3


def _gpu_name():
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


# ----------------------------------------------------------------------------- torch versions
def _torch_grid(model, data, basis, C, dtype, device="cuda", chunk_bytes=2**30):
    import torch

    dt = getattr(torch, dtype)
    dev = torch.device(device)
    X = torch.as_tensor(data.X, dtype=dt, device=dev)
    Y = torch.as_tensor(data.Y, dtype=dt, device=dev)
    Bs = torch.as_tensor(basis, dtype=dt, device=dev)
    Cs = torch.as_tensor(C, dtype=dt, device=dev)
    d, h1, out = model.sizes[0], model.sizes[1], model.sizes[-1]
    n, K = X.shape[0], Bs.shape[0]
    W1 = Bs[:, : h1 * d].reshape(K, h1, d)
    b1 = Bs[:, h1 * d : h1 * d + h1]
    F = torch.einsum("nd,khd->knh", X, W1) + b1[:, None, :]  # (K, n, h1)
    tail = Bs[:, h1 * d + h1 :]

    def run():
        losses, hits = [], []
        per_point = n * max(h1, out) * 8 * 3
        step = max(1, chunk_bytes // per_point)
        for s in range(0, Cs.shape[0], step):
            c = Cs[s : s + step]
            z1 = torch.einsum("mk,knh->mnh", c, F)
            if model.is_linear:
                z = z1
            else:
                t = c @ tail
                W2 = t[:, : out * h1].reshape(-1, out, h1)
                b2 = t[:, out * h1 :]
                z = torch.baddbmm(b2[:, None, :], torch.tanh(z1), W2.transpose(1, 2))
            if model.loss_name == "logistic":
                zz = z[..., 0]
                losses.append((torch.nn.functional.softplus(zz) - Y[:, 0] * zz).mean(dim=1))
                hits.append(((zz > 0) == (Y[:, 0] > 0.5)).to(dt).mean(dim=1))
            else:
                lse = torch.logsumexp(z, dim=2)
                losses.append((lse - (z * Y).sum(dim=2)).mean(dim=1))
                hits.append((z.argmax(dim=2) == Y.argmax(dim=1)).to(dt).mean(dim=1))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return torch.cat(losses).cpu().numpy(), torch.cat(hits).cpu().numpy()

    return run


def _torch_hvp(model, data, theta, V, dtype, device="cuda"):
    import torch

    dt = getattr(torch, dtype)
    dev = torch.device(device)
    X = torch.as_tensor(data.X, dtype=dt, device=dev)
    labels = torch.as_tensor(data.Y.argmax(axis=1), device=dev)
    th = torch.as_tensor(theta, dtype=dt, device=dev).requires_grad_(True)
    Vs = torch.as_tensor(V, dtype=dt, device=dev)
    d, h, out = model.sizes

    def loss_fn(t):
        W1 = t[: h * d].reshape(h, d)
        b1 = t[h * d : h * d + h]
        o = h * d + h
        W2 = t[o : o + out * h].reshape(out, h)
        b2 = t[o + out * h :]
        z = torch.tanh(X @ W1.T + b1) @ W2.T + b2
        return torch.nn.functional.cross_entropy(z, labels)

    def run():
        (g,) = torch.autograd.grad(loss_fn(th), th, create_graph=True)
        rows = [torch.autograd.grad(g @ v, th, retain_graph=True)[0] for v in Vs]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return torch.stack(rows).detach().cpu().numpy()

    return run


# ----------------------------------------------------------------------------- benchmarks
def _skip_unsupported(impl, dtype):
    if impl == "torch-cuda":
        if not HAVE_TORCH:
            pytest.skip("torch is not installed")
        import torch

        if not torch.cuda.is_available():
            pytest.skip("torch has no CUDA here")


def _record(benchmark, impl, dtype, flops, first_call, **sizes):
    benchmark.extra_info.update(
        gpu=_gpu_name(), impl=impl, dtype=dtype, flops=flops, first_call_s=first_call, **sizes
    )


def _finish(benchmark, impl, dtype, flops, fn):
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    peak = _fp64_peak()
    if impl == "fastscape-cuda" and dtype == "float64" and peak is not None:
        best = benchmark.stats.stats.min
        benchmark.extra_info["fp64_peak_flops"] = peak
        benchmark.extra_info["fp64_fraction"] = flops / best / peak


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(GRIDS))
def bench_grid(benchmark, name, dtype, impl):
    _skip_unsupported(impl, dtype)
    model, data, basis, C = _grid_problem(name)
    if impl == "fastscape-cuda":
        dev = _device.to_device(data, dtype)

        def fn():
            return _device.span_eval(model, basis, C, dev, "cuda", dtype)

    else:
        fn = _torch_grid(model, data, basis, C, dtype)
    t0 = time.perf_counter()
    loss, acc = fn()  # warm-up: compiles the kernels
    first_call = time.perf_counter() - t0
    # check a few points against the CPU engine
    step = max(1, C.shape[0] // 7)
    want, want_acc = _device.span_eval(model, basis, np.ascontiguousarray(C[::step]), data, "cpu")
    np.testing.assert_allclose(loss[::step], want, rtol=1e-9 if dtype == "float64" else 1e-4)
    if dtype == "float64":
        np.testing.assert_array_equal(acc[::step], want_acc)
    assert np.all((acc >= 0) & (acc <= 1))
    flops = _grid_flops(model, data.X.shape[0], basis.shape[0], C.shape[0])
    benchmark.group = f"grid {name} {dtype}"
    _record(benchmark, impl, dtype, flops, first_call, n=data.X.shape[0], points=C.shape[0],
            sizes=list(model.sizes))  # fmt: skip
    _finish(benchmark, impl, dtype, flops, fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def bench_hvp(benchmark, dtype, impl):
    _skip_unsupported(impl, dtype)
    name, *_ = HVP
    model, data, theta, V = _hvp_problem()
    if impl == "fastscape-cuda":
        dev = _device.to_device(data, dtype)

        def fn():
            return _device.mlp_hvp(model, theta, V, dev, "cuda", dtype)

    else:
        fn = _torch_hvp(model, data, theta, V, dtype)
    t0 = time.perf_counter()
    HV = fn()
    first_call = time.perf_counter() - t0
    want = model.hvp(theta, V[:2], data)  # the CPU kernel on two vectors
    tol = 1e-8 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(HV[:2], want, rtol=tol, atol=tol * np.abs(want).max())
    flops = _hvp_flops(model, data.X.shape[0], V.shape[0])
    benchmark.group = f"hvp {name} {dtype}"
    _record(benchmark, impl, dtype, flops, first_call, n=data.X.shape[0], K=V.shape[0],
            P=model.n_params)  # fmt: skip
    _finish(benchmark, impl, dtype, flops, fn)
