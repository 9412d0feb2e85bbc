"""Issue 16, B8: MNIST-sized curvature and landscape, fastscape against its peers in one run.

Run (the full size takes tens of minutes on 2 cores; set ``FASTSCAPE_B8_N`` for a quick run)::

    python -m pytest bench/bench_mnist.py --benchmark-only -p no:randomly \
        --benchmark-columns=median,min,max,rounds --benchmark-json=bench/results/b8.json
    FASTSCAPE_B8_N=2000 python -m pytest bench/bench_mnist.py --benchmark-only -p no:randomly

The problem: synthetic data of MNIST's shape (n = 60 000 x 784, env ``FASTSCAPE_B8_N``; MNIST
itself cannot be installed from a package here): pixel-like features from a 20-dimensional
latent code (``tanh`` of a random linear map, plus noise), labels from a random linear teacher
on the code; MLP 784-256-256-10 tanh, softmax cross-entropy (P = 269 322), Glorot parameters
(seed 0). Groups (one ``benchmark.group`` each, the implementation is the ``impl`` parameter):

- ``B8 HVP``: one Hessian-vector product (the operator, or the peer's gradient graph, built
  before the timing; fastscape's build time in extra_info);
- ``B8 top-1`` / ``B8 top-5``: the top Hessian eigenvalues by magnitude, tol 1e-4 (fastscape's
  Lanczos, ARPACK's ``eigsh`` on the torch and JAX HVPs, PyHessian's power iteration);
- ``B8 trace``: Hutchinson, 100 Rademacher probes (fastscape, PyHessian);
- ``B8 surface``: the loss on a ``FASTSCAPE_B8_GRID`` x ``FASTSCAPE_B8_GRID`` grid (default 21)
  of filter-normalised directions (``surface_2d`` against ``torch.func.vmap``);
- ``B8 resources``: peak memory of loss, gradient, HVP and top-1 in a fresh process, and the
  log-log slopes of the HVP's time against n and against P (reported, not compared).

Every float64 row has a float32 row beside it (``*_f32``; fastscape with ``dtype="float32"``,
torch with float32 tensors). Agreement is checked before anything is timed: HVPs to 1e-8
(float64) and 1e-4 (float32) of the largest entry, eigenvalues to 1e-6 (float64; the residual
tolerance 1e-4 bounds the eigenvalue error by about its square over the gap) and 1e-5 (float32)
relative, PyHessian's power iteration (whose test is the change of the eigenvalue, not a
residual, and which stops 2e-3 to 2e-2 short here: ``rel_err`` in extra_info) to 5e-2, traces within
four combined standard errors, surfaces to 1e-8 (float64) and 1e-5 (float32) relative. The
flop count of the HVP and the DGEMM/SGEMM rates of the machine, measured in the same run, are
in extra_info.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import peers
import pytest

import fastscape
from fastscape import curvature

N = int(os.environ.get("FASTSCAPE_B8_N", 60_000))
GRID = int(os.environ.get("FASTSCAPE_B8_GRID", 21))
SIZES = [784, 256, 256, 10]
TOL = 1e-4
N_PROBES = 100
#: rounds per implementation (1 for the calls that take minutes at full size)
ROUNDS = {"B8 HVP": 3}


@pytest.fixture(scope="module", autouse=True)
def fixed_threads():
    return peers.set_threads(peers.THREADS)


# ----------------------------------------------------------------------------- the problem
def mnist_like(n: int, sizes=SIZES, seed: int = 0) -> peers.CurvatureProblem:
    """Synthetic data of MNIST's shape (module docstring) and the model at its Glorot init."""
    rng = np.random.default_rng(seed)
    d, out = sizes[0], sizes[-1]
    code = rng.normal(size=(n, 20))
    X = np.tanh(code @ rng.normal(size=(20, d)) / np.sqrt(20))
    X += 0.1 * rng.normal(size=X.shape)
    y = np.argmax(code @ rng.normal(size=(20, out)), axis=1)
    model = fastscape.MLP(list(sizes), activation="tanh", loss="softmax_ce")
    return peers.CurvatureProblem(model, X, y, model.batch(X, y), model.init(0))


def hvp_flops(sizes, n: int) -> float:
    """Flops of one R-pass at a cached theta (``kernels.hvp``): per sample
    ``sum_l 2 h_l h_{l+1} (2 + 4 [l > 0])``."""
    return float(n) * sum(
        2 * sizes[l] * sizes[l + 1] * (2 + 4 * (l > 0)) for l in range(len(sizes) - 1)
    )


def gemm_rate(dtype, size: int = 1500, rounds: int = 3) -> float:
    """GFLOP/s of NumPy's BLAS on a square product, best of ``rounds``."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(size, size)).astype(dtype)
    B = rng.normal(size=(size, size)).astype(dtype)
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best / 1e9


@pytest.fixture(scope="module")
def b8():
    return mnist_like(N)


@pytest.fixture(scope="module")
def rates():
    return {"dgemm_gflops": gemm_rate(np.float64), "sgemm_gflops": gemm_rate(np.float32)}


# ----------------------------------------------------------------------------- float32 torch
def torch_hvp32(q: peers.CurvatureProblem):
    """:func:`peers.torch_hvp` in float32 tensors (double backprop through one gradient graph)."""
    import torch

    F = torch.nn.functional
    Xt = torch.as_tensor(q.X, dtype=torch.float32)
    yt = torch.as_tensor(q.y)
    lay = [(lo.weight.start, lo.weight.stop, lo.bias.stop, lo.shape) for lo in q.model.layout]
    th = torch.tensor(q.theta, dtype=torch.float32, requires_grad=True)
    h = Xt
    for l, (w0, w1, b1, shape) in enumerate(lay):
        h = h @ th[w0:w1].reshape(shape).T + th[w1:b1]
        if l < len(lay) - 1:
            h = torch.tanh(h)
    (g,) = torch.autograd.grad(F.cross_entropy(h, yt), th, create_graph=True)

    def hvp(v):
        gv = torch.as_tensor(np.asarray(v, dtype=np.float32))
        (hv,) = torch.autograd.grad(g, th, grad_outputs=gv, retain_graph=True)
        return hv.numpy().astype(np.float64)

    return hvp


def _torch_surface32(p):
    """``torch.func.vmap`` surface (:func:`peers.make_torch_func_vmap`) in float32."""
    import torch
    from torch.func import functional_call, vmap

    net = p.model.to_torch(p.theta).float()
    names = [name for name, _ in net.named_parameters()]
    slices = []
    for lay in p.model.layout:
        slices += [(lay.weight, lay.shape), (lay.bias, (lay.shape[0],))]
    Xt = torch.as_tensor(p.X, dtype=torch.float32)
    yt = torch.as_tensor(p.y)
    basis = torch.as_tensor(p.basis, dtype=torch.float32)
    Call = torch.as_tensor(p.C, dtype=torch.float32)
    batched = vmap(
        lambda params: torch.nn.functional.cross_entropy(functional_call(net, params, (Xt,)), yt)
    )

    def run(C=None):
        Ct = Call if C is None else torch.as_tensor(C, dtype=torch.float32)
        out = np.empty(Ct.shape[0])
        with torch.no_grad():
            for s in range(0, Ct.shape[0], 4):
                T = Ct[s : s + 4] @ basis
                params = {
                    name: T[:, sl].reshape(T.shape[0], *shape)
                    for name, (sl, shape) in zip(names, slices)
                }
                out[s : s + 4] = batched(params).double().numpy()
        return out

    return run


# ----------------------------------------------------------------------------- helpers
def _time(benchmark, group, fn):
    return benchmark.pedantic(fn, rounds=ROUNDS.get(group, 1), iterations=1, warmup_rounds=0)


def _record(benchmark, group, impl, fixed_threads, **info):
    benchmark.group = group
    benchmark.extra_info.update(
        impl=impl, threads=fixed_threads, n=N, sizes=SIZES, P=int(sum(
            SIZES[l] * SIZES[l + 1] + SIZES[l + 1] for l in range(len(SIZES) - 1))), **info
    )  # fmt: skip


def _family(impl: str) -> str | None:
    if impl.startswith("torch"):
        return "torch"
    if impl.startswith("jax"):
        return "jax"
    if impl.startswith("pyhessian"):
        return "pyhessian"
    return None


def _require(impl):
    fam = _family(impl)
    if fam is not None:
        peers.require(fam)


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def vector(b8):
    return np.random.default_rng(11).normal(size=b8.model.n_params)


@pytest.fixture(scope="module")
def hvp_ref(b8, vector):
    """fastscape's float64 HVP of the benchmark's vector."""
    return curvature.HessianOperator(b8.model, b8.theta, b8.data).rows(vector)


@pytest.fixture(scope="module")
def top_ref(b8):
    """fastscape's float64 top-5 eigenvalues at a tight tolerance (the agreement reference)."""
    r = curvature.top_eigen(b8.model, b8.theta, b8.data, k=5, method="lanczos", tol=1e-8)
    assert r.converged.all(), r.message
    return r.eigenvalues


# ----------------------------------------------------------------------------- B8 HVP
HVP_IMPLS = ["fastscape", "fastscape_f32", "torch", "torch_f32", "jax", "pyhessian"]


def _make_hvp(impl, q, vector):
    if impl.startswith("fastscape"):
        dtype = "float32" if impl.endswith("f32") else "float64"
        t = time.perf_counter()
        H = curvature.HessianOperator(q.model, q.theta, q.data, dtype=dtype)
        build = time.perf_counter() - t
        return (lambda: H.rows(vector)), build
    if impl == "torch":
        f = peers.torch_hvp(q.model, q.X, q.y, q.theta)
        return (lambda: f(vector)), None
    if impl == "torch_f32":
        f = torch_hvp32(q)
        return (lambda: f(vector)), None
    if impl == "jax":
        import jax.numpy as jnp

        f, _ = peers.jax_hvp(q.model, q.X, q.y, q.theta)
        v = jnp.asarray(vector)
        return (lambda: np.asarray(f(v))), None
    if impl == "pyhessian":
        f = peers.make_pyhessian_hvp(q)
        return (lambda: f(vector)), None
    raise ValueError(impl)


@pytest.mark.parametrize("impl", HVP_IMPLS)
def bench_b8_hvp(benchmark, fixed_threads, b8, vector, hvp_ref, rates, impl):
    _require(impl)
    run, build = _make_hvp(impl, b8, vector)
    t = time.perf_counter()
    got = run()  # warm-up (compile, tracing), then the agreement check
    first = time.perf_counter() - t
    err = _rel(got, hvp_ref)
    assert err <= (1e-4 if impl.endswith("f32") else 1e-8), (impl, err)
    _record(benchmark, "B8 HVP", impl, fixed_threads, first_call_s=first, rel_err=err,
            operator_build_s=build, gflop=hvp_flops(SIZES, N) / 1e9, **rates)  # fmt: skip
    _time(benchmark, "B8 HVP", run)


# ----------------------------------------------------------------------------- B8 top-k
EIGEN_IMPLS = [
    "fastscape_lanczos", "fastscape_lanczos_f32", "torch_eigsh", "torch_eigsh_f32", "jax_eigsh",
    "pyhessian",
]  # fmt: skip


def _make_eigen(impl, q, k):
    if impl.startswith("fastscape"):
        dtype = "float32" if impl.endswith("f32") else "float64"
        count = {}

        def run():
            r = curvature.top_eigen(
                q.model, q.theta, q.data, k=k, method="lanczos", which="LM", tol=TOL, dtype=dtype
            )
            count["hvps"] = r.n_hvps
            assert r.converged.all(), r.message
            return r.eigenvalues

        return run, count
    if impl == "torch_eigsh_f32":
        hvp = torch_hvp32(q)
        count = {"hvps": 0}

        def matvec(v):
            count["hvps"] += 1
            return hvp(np.ascontiguousarray(v.ravel()))

        def run():
            count["hvps"] = 0
            return peers._eigsh(matvec, q.model.n_params, k, TOL)

        return run, count
    return peers.make_eigen(impl, q, k, tol=TOL), {}


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("impl", EIGEN_IMPLS)
def bench_b8_top_eigen(benchmark, fixed_threads, b8, top_ref, k, impl):
    _require(impl)
    run, count = _make_eigen(impl, b8, k)
    t = time.perf_counter()
    got = np.asarray(run())
    first = time.perf_counter() - t
    want = top_ref[:k]
    err = float(np.max(np.abs(got - want) / np.abs(want)))
    # PyHessian stops on the relative change of the eigenvalue, not on a residual: it stops
    # 2e-3 (n = 1 000) to 2e-2 (n = 10 000) short of the top eigenvalue here (rel_err); it is
    # run as the issue asks (tol 1e-4) and checked only to that level
    limit = 5e-2 if impl == "pyhessian" else (1e-5 if impl.endswith("f32") else 1e-6)
    assert err <= limit, (impl, got, want)
    group = f"B8 top-{k}"
    _record(benchmark, group, impl, fixed_threads, first_call_s=first, rel_err=err, tol=TOL,
            **({"hvps": count["hvps"]} if "hvps" in count else {}))  # fmt: skip
    _time(benchmark, group, run)


# ----------------------------------------------------------------------------- B8 trace
TRACE_IMPLS = ["fastscape", "fastscape_f32", "pyhessian"]


@pytest.fixture(scope="module")
def trace_ref(b8):
    r = curvature.hessian_trace(b8.model, b8.theta, b8.data, n_samples=N_PROBES, seed=0)
    return r.estimate, r.std_error


@pytest.mark.parametrize("impl", TRACE_IMPLS)
def bench_b8_trace(benchmark, fixed_threads, b8, trace_ref, impl):
    _require(impl)
    if impl.startswith("fastscape"):
        dtype = "float32" if impl.endswith("f32") else "float64"

        def run():
            H = curvature.HessianOperator(b8.model, b8.theta, b8.data, dtype=dtype)
            r = curvature.hutchinson(H, n_samples=N_PROBES, seed=0)
            return r.estimate, r.std_error
    else:
        run = peers.make_trace(impl, b8, n_probes=N_PROBES)
    est, se = run()
    want, want_se = trace_ref
    assert abs(est - want) <= 4.0 * np.hypot(se, want_se) + 1e-5 * abs(want), (impl, est, want)
    _record(benchmark, "B8 trace", impl, fixed_threads, estimate=est, std_error=se,
            probes=N_PROBES)  # fmt: skip
    _time(benchmark, "B8 trace", run)


# ----------------------------------------------------------------------------- B8 surface
SURFACE_IMPLS = ["fastscape", "fastscape_f32", "torch_func_vmap", "torch_func_vmap_f32"]


@pytest.fixture(scope="module")
def b8_plane(b8):
    """The grid of the surface: theta plus filter-normalised directions (seed 2)."""
    d1, d2 = fastscape.directions.pair(b8.model, b8.theta, seed=2)
    a = np.linspace(-1.0, 1.0, GRID)
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    basis = np.stack([b8.theta, d1.vector, d2.vector])
    return peers.SpanProblem(b8.model, b8.X, b8.y, b8.data, b8.theta, (d1.vector, d2.vector),
                             (a, a), basis, C)  # fmt: skip


def _make_surface(impl, p):
    if impl.startswith("fastscape"):
        dtype = "float32" if impl.endswith("f32") else "float64"

        def run(C=None):
            if C is not None:
                return fastscape.evaluate(p.model, p.basis, C, p.data, dtype=dtype).loss
            s = fastscape.surface_2d(
                p.model, p.theta, p.dirs[0], p.dirs[1], p.data, alphas=p.coords[0],
                betas=p.coords[1], progress=False, dtype=dtype,
            )  # fmt: skip
            return s.loss.ravel()

        return run
    if impl == "torch_func_vmap":
        return peers.make_torch_func_vmap(p, chunk=4)
    return _torch_surface32(p)


@pytest.mark.parametrize("impl", SURFACE_IMPLS)
def bench_b8_surface(benchmark, fixed_threads, b8_plane, impl):
    _require(impl)
    run = _make_surface(impl, b8_plane)
    idx = np.array([0, GRID * GRID // 2, GRID * GRID - 1])
    C = b8_plane.C[idx]
    t = time.perf_counter()
    got = run(C)
    first = time.perf_counter() - t
    want = fastscape.evaluate(b8_plane.model, b8_plane.basis, C, b8_plane.data).loss
    np.testing.assert_allclose(got, want, rtol=1e-5 if impl.endswith("f32") else 1e-8)
    _record(benchmark, "B8 surface", impl, fixed_threads, first_call_s=first, grid=GRID)
    _time(benchmark, "B8 surface", run)


# ----------------------------------------------------------------------------- resources
_MEMORY_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import numpy as np
from fastscape import curvature
import bench_mnist
q = bench_mnist.mnist_like({n})
out = {{"X_bytes": q.X.nbytes}}
for dtype in {dtypes!r}:
    t = time.perf_counter()
    q.model.loss(q.theta, q.data, dtype=dtype)
    q.model.grad(q.theta, q.data, dtype=dtype)
    H = curvature.HessianOperator(q.model, q.theta, q.data, dtype=dtype)
    H.rows(np.ones(q.model.n_params))
    r = curvature.lanczos(H, 1, "LM", tol={tol})
    out[dtype] = {{"seconds": time.perf_counter() - t, "hvps": r.n_hvps,
                  "lambda": float(r.eigenvalues[0]),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}
    del H
print(json.dumps(out))
"""


def _peak_memory(dtype):
    code = _MEMORY_SCRIPT.format(
        bench=str(Path(__file__).parent), n=N, dtypes=(dtype,), tol=TOL
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _slope(xs, ts) -> float:
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def _hvp_time(q, rounds=3) -> float:
    H = curvature.HessianOperator(q.model, q.theta, q.data)
    v = np.ones(q.model.n_params)
    H.rows(v)
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        H.rows(v)
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("what", ["peak_memory", "peak_memory_f32", "slope_n", "slope_P"])
def bench_b8_resources(benchmark, fixed_threads, what):
    benchmark.group = "B8 resources"
    benchmark.extra_info.update(what=what, n=N, sizes=SIZES, threads=fixed_threads)
    if what.startswith("peak_memory"):
        dtype = "float32" if what.endswith("f32") else "float64"
        out = benchmark.pedantic(lambda: _peak_memory(dtype), rounds=1, iterations=1)
        benchmark.extra_info.update(out)
        assert out[dtype]["peak_rss_bytes"] < 16 * 2**30
        return
    if what == "slope_n":
        ns = [max(256, N // 4), max(512, N // 2), N]
        xs, probs = ns, [mnist_like(n) for n in ns]
    else:
        widths = [64, 128, 256]
        probs = [mnist_like(N, sizes=[784, h, h, 10]) for h in widths]
        xs = [q.model.n_params for q in probs]
    ts = benchmark.pedantic(lambda: [_hvp_time(q) for q in probs], rounds=1, iterations=1)
    benchmark.extra_info.update(x=xs, hvp_seconds=ts, loglog_slope=_slope(xs, ts))
