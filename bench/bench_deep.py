"""Issue 16, B7: the loss surface of a two-hidden-layer MLP, fastscape against its peers.

MLP 784-128-128-10 tanh, softmax-CE, n = 5 000, a 51 x 51 grid of filter-normalised directions
(``FASTSCAPE_B7_GRID`` sets a smaller grid for quick runs), float64 and float32 side by side.
Run (see bench/README.md)::

    python -m pytest bench/bench_deep.py --benchmark-only -p no:randomly \
        --benchmark-columns=median,min,max,rounds --benchmark-json=bench/results/deep.json
    python bench/peers.py table bench/results/deep.json

Implementations: ``fastscape`` (``surface_2d``; float32 through the CPU backend's span engine),
``numpy_vectorized`` (the span identity in NumPy, the later layers as batched products),
``torch_func_vmap``, ``jax_vmap``, ``loss_landscapes_planar``. Before anything is timed, each
is built, warmed up and checked against fastscape's float64 values on a few grid points
(rtol 1e-8 in float64, 1e-4 for the float32 peers, 1e-6 for fastscape's float32).

The GEMM floor: fastscape's work per point and sample is the first-layer combination
(``2 K_j h1`` flops, ``K_j`` the point's non-zero coefficients) and the later layers
(``2 sum_l h_{l-1} h_l``); ``floor_s`` is that count over the grid divided by the machine's
GEMM rate, measured in the same run (``bench_b7_gemm_rate``: DGEMM and SGEMM of (4096, 784) x
(784, 128) and (4096, 128) x (128, 128) on ``peers.THREADS`` threads, the fastest of 15
calls: on a busy machine a median measures the other processes), and ``fraction_of_floor`` is
``floor_s / median``.

Resources (reported, not compared): ``bench_b7_peak_memory`` (a child process, as
``bench_peers_resources``) and ``bench_b7_scaling`` (time against n and against the number of
points, with the log-log slopes in ``extra_info``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import peers
import pytest
from bench_peers_resources import _child
from numpy.testing import assert_allclose

import fastscape

BENCH = Path(__file__).resolve().parent
SIZES = [784, 128, 128, 10]
N = 5_000
GRID = int(os.environ.get("FASTSCAPE_B7_GRID", "51"))
RTOL = {"float64": 1e-8, "float32": 1e-4}
RTOL_FASTSCAPE32 = 1e-6
ROUNDS = {"fastscape": 3}  # every peer: 1 round (tens of seconds per call)
GROUP = f"B7 MLP 784-128-128-10 tanh n={N} grid {GRID}x{GRID}"


IMPLS = peers.SPAN_B7
make_fastscape = peers.make_fastscape_dtype


def work_flops(p: peers.SpanProblem) -> float:
    """fastscape's multiply-adds x 2 over the grid: first-layer combination and layers 2..L."""
    s = p.model.sizes
    later = sum(s[l - 1] * s[l] for l in range(2, len(s)))
    nnz = float(np.count_nonzero(p.C))
    n = p.X.shape[0]
    return 2.0 * n * (nnz * s[1] + p.C.shape[0] * later)


@pytest.fixture(scope="module", autouse=True)
def fixed_threads():
    return peers.set_threads(peers.THREADS)


@pytest.fixture(scope="module")
def b7():
    return peers.span_problem(SIZES, "tanh", "softmax_ce", N, GRID)


_RATES: dict = {}


def _gemm_rate(dtype: str) -> float:
    """Flop/s of NumPy's BLAS on the engine's shapes, at the benchmark's thread count."""
    if dtype not in _RATES:
        rng = np.random.default_rng(0)
        rates = []
        for k in (784, 128):
            A = rng.normal(size=(4096, k)).astype(dtype)
            B = rng.normal(size=(k, 128)).astype(dtype)
            out = np.empty((4096, 128), dtype)
            np.matmul(A, B, out=out)
            ts = []
            for _ in range(15):
                t0 = time.perf_counter()
                np.matmul(A, B, out=out)
                ts.append(time.perf_counter() - t0)
            # the fastest call: on a busy machine the median measures the other processes
            rates.append(2.0 * 4096 * k * 128 / min(ts))
        _RATES[dtype] = max(rates)
    return _RATES[dtype]


def _check_points(p):
    m = p.C.shape[0]
    return p.C[np.unique([0, m // 7, m // 3, m // 2, (5 * m) // 7, m - 1])]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def bench_b7_gemm_rate(benchmark, fixed_threads, dtype):
    """The machine's GEMM rate on the engine's shapes (the floor's denominator)."""
    rate = _gemm_rate(dtype)
    A = np.ones((4096, 128), dtype)
    B = np.ones((128, 128), dtype)
    benchmark.group = f"B7 GEMM rate (the floor's denominator), {peers.THREADS} threads"
    benchmark.extra_info.update(dtype=dtype, gflops=rate / 1e9, threads=peers.THREADS)
    benchmark.pedantic(lambda: A @ B, rounds=7, iterations=1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("impl", list(IMPLS))
def bench_b7_deep_grid(benchmark, fixed_threads, b7, impl, dtype):
    p = b7
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)
    few = _check_points(p)
    expected = fastscape.evaluate(p.model, p.basis, few, p.data).loss
    rtol = RTOL_FASTSCAPE32 if (impl, dtype) == ("fastscape", "float32") else RTOL[dtype]
    t0 = time.perf_counter()
    if impl == "loss_landscapes_planar":
        # no subset interface: warm up and check on a 3 x 3 grid of the same spacing
        small = peers.with_coords(p, p.coords[0][:3])
        got = IMPLS[impl](small, dtype)()
        C_ll = peers.ll_planar_coefficients(small)
        assert_allclose(got, fastscape.evaluate(p.model, p.basis, C_ll, p.data).loss, rtol=rtol)
        run = IMPLS[impl](p, dtype)
    else:
        run = IMPLS[impl](p, dtype)
        assert_allclose(run(few), expected, rtol=rtol)  # also the warm-up (compile, trace)
    first = time.perf_counter() - t0
    benchmark.group = f"{GROUP} {dtype}"
    rounds = ROUNDS.get(impl, 1)
    flops = work_flops(p)
    floor = flops / _gemm_rate(dtype)
    benchmark.extra_info.update(
        problem="B7", impl=impl, dtype=dtype, threads=peers.THREADS, thread_settings=fixed_threads,
        first_call_s=first, rounds=rounds, n=N, sizes=SIZES, P=p.model.n_params,
        points=int(p.C.shape[0]), engine_flops=flops, gemm_gflops=_gemm_rate(dtype) / 1e9,
        floor_s=floor,
    )  # fmt: skip
    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    assert np.asarray(out).shape == (p.C.shape[0],)
    if impl == "fastscape":
        benchmark.extra_info["fraction_of_floor"] = floor / benchmark.stats.stats.median


# ----------------------------------------------------------------------------- resources
_MEMORY_CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
import peers
import bench_deep
peers.set_threads(peers.THREADS)
p = peers.span_problem({sizes!r}, "tanh", "softmax_ce", {n!r}, {grid!r})
run = bench_deep.IMPLS["fastscape"](p, {dtype!r})
run(p.C[:4])  # warm-up: compile or load


def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024


before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
t0 = time.perf_counter()
out = run()
seconds = time.perf_counter() - t0
peak = status("VmHWM:")
print(json.dumps(dict(rss_before=before, peak=peak, seconds=seconds, data_bytes=p.X.nbytes,
                      points=int(p.C.shape[0]))))
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def bench_b7_peak_memory(benchmark, dtype):
    """Peak resident memory of fastscape's B7 surface above the set-up (a child process)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak-memory reset needs Linux /proc/self/clear_refs")
    code = _MEMORY_CHILD.format(bench=str(BENCH), sizes=SIZES, n=N, grid=GRID, dtype=dtype)
    info = {}
    benchmark.group = f"B7 peak memory, fastscape (time: one child process), grid {GRID}x{GRID}"
    benchmark.pedantic(lambda: info.update(_child(code)), rounds=1, iterations=1)
    mb = 2.0**20
    benchmark.extra_info.update(
        dtype=dtype, threads=peers.THREADS, data_MB=info["data_bytes"] / mb,
        rss_before_MB=info["rss_before"] / mb, peak_MB=info["peak"] / mb,
        extra_peak_MB=(info["peak"] - info["rss_before"]) / mb, eval_seconds=info["seconds"],
        points=info["points"],
    )  # fmt: skip


def _slope(xs, ts):
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


@pytest.mark.parametrize("axis", ["n", "points"])
def bench_b7_scaling(benchmark, fixed_threads, axis):
    """fastscape's time against n (1 250 .. 5 000 samples, the grid fixed) and against the
    number of points (grids of g/4 + 1, g/2 + 1, g per side, n fixed); the log-log slopes of
    the medians are in extra_info (1: linear; below 1 where the fixed cost, the first-layer
    GEMMs, still shows), with the linear fit ``fixed_s + per_unit_s x``."""
    if axis == "n":
        g = max(4, GRID // 2)
        sizes = [(N // 4, g), (N // 2, g), (N, g)]
    else:
        sizes = [(N, GRID // 4 + 1), (N, GRID // 2 + 1), (N, GRID)]
    xs, ts = [], []
    for n, grid in sizes:
        p = peers.span_problem(SIZES, "tanh", "softmax_ce", n, grid)
        run = make_fastscape(p)
        run(p.C[:4])
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            runs.append(time.perf_counter() - t0)
        xs.append(n if axis == "n" else grid * grid)
        ts.append(float(np.median(runs)))
    per_unit, fixed = (float(v) for v in np.polyfit(xs, ts, 1))  # t = fixed + per_unit x
    benchmark.group = f"B7 scaling, fastscape float64 (slopes: 1 is linear), grid {GRID}"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(
        axis=axis, sizes=json.dumps(sizes), x=xs, seconds=ts, slope=_slope(xs, ts),
        fixed_s=fixed, per_unit_s=per_unit, threads=peers.THREADS,
    )  # fmt: skip
