"""Issue 6, measured and reported (not compared): peak memory of B1/B2, first-call compile time
(cold cache and warm cache, each in a fresh process), and the scaling of B1 in n and grid size.

Run::

    python -m pytest bench/bench_peers_resources.py --benchmark-only \
        --benchmark-columns=median,rounds --benchmark-json=bench/results/resources.json

The numbers are in each benchmark's ``extra_info`` (and in bench/README.md). Memory and compile
times are measured in child processes:

- peak memory: after set-up and a warm-up on 4 points, the child resets its peak resident set
  size (``echo 5 > /proc/self/clear_refs``, Linux), evaluates the whole grid and reads
  ``VmHWM``; ``extra_peak_MB`` is the peak minus the resident size before the evaluation (what
  the evaluation itself needs on top of the data and the libraries);
- compile time: ``NUMBA_CACHE_DIR`` points to a fresh empty folder (cold: every kernel is
  compiled), then a second child with the same folder (cached: kernels are loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import peers
import pytest

BENCH = Path(__file__).resolve().parent

PROBLEMS = {
    "B1": (([100, 1], "identity", "logistic", 10_000, 101), peers.SPAN_B1),
    "B2": (([784, 128, 10], "tanh", "softmax_ce", 5_000, 51), peers.SPAN_B2),
}

_MEMORY_CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
import peers
peers.set_threads(peers.THREADS)
sizes, act, loss, n, g = {args!r}
p = peers.span_problem(sizes, act, loss, n, g)
registry = peers.SPAN_B1 if {problem!r} == "B1" else peers.SPAN_B2
run = registry[{impl!r}](p)
run(p.C[:4])  # warm-up: compile or load, first calls


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
print(json.dumps(dict(rss_before=before, peak=peak, seconds=seconds, data_bytes=p.X.nbytes
      + p.data.Y.nbytes, basis_bytes=p.basis.nbytes, points=int(p.C.shape[0]))))
"""


def _child(code: str, env: dict | None = None) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        env={**os.environ, **(env or {})}, timeout=1200,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


MEMORY_CASES = [("B1", i) for i in ("fastscape", "numpy_vectorized", "torch_span", "jax_vmap")] + [
    ("B2", "fastscape")
]


@pytest.mark.parametrize("problem, impl", MEMORY_CASES)
def bench_peak_memory(benchmark, problem, impl):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak-memory reset needs Linux /proc/self/clear_refs")
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)
    args, _ = PROBLEMS[problem]
    code = _MEMORY_CHILD.format(bench=str(BENCH), args=args, problem=problem, impl=impl)
    info = {}

    def measure():
        info.update(_child(code))

    benchmark.group = f"peak memory {problem} (time: one child process)"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    mb = 2.0**20
    benchmark.extra_info.update(
        problem=problem, impl=impl, threads=peers.THREADS, data_MB=info["data_bytes"] / mb,
        rss_before_MB=info["rss_before"] / mb, peak_MB=info["peak"] / mb,
        extra_peak_MB=(info["peak"] - info["rss_before"]) / mb, eval_seconds=info["seconds"],
        points=info["points"],
    )  # fmt: skip


_COMPILE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastscape
from fastscape import curvature
times = {"import": time.perf_counter() - t0}
rng = np.random.default_rng(0)


def first(name, fn):
    t = time.perf_counter()
    fn()
    times[name] = time.perf_counter() - t


lg = fastscape.Logistic(5)
X = rng.normal(size=(40, 5)); y = rng.integers(0, 2, 40)
th = lg.init(1)
d1, d2 = rng.normal(size=(2, lg.n_params))
first("surface_2d logistic", lambda: fastscape.surface_2d(lg, th, d1, d2, X, y, alphas=3,
      betas=3, progress=False))
m = fastscape.MLP([6, 5, 3], activation="tanh", loss="softmax_ce")
X = rng.normal(size=(40, 6)); y = rng.integers(0, 3, 40)
th = m.init(1)
d1, d2 = rng.normal(size=(2, m.n_params))
first("surface_2d mlp", lambda: fastscape.surface_2d(m, th, d1, d2, X, y, alphas=3, betas=3,
      progress=False))
first("hvp", lambda: m.hvp(th, d1, X, y))
first("hessian", lambda: m.hessian(th, X, y))
first("top_eigen lanczos k=2", lambda: curvature.top_eigen(m, th, X, y, k=2, method="lanczos"))
first("hessian_trace", lambda: curvature.hessian_trace(m, th, X, y, n_samples=10))
times["total"] = time.perf_counter() - t0
print(json.dumps(times))
"""


def bench_first_call_compile(benchmark):
    info = {}
    with tempfile.TemporaryDirectory(prefix="fastscape-numba-cache-") as cache:
        env = {"NUMBA_CACHE_DIR": cache, "NUMBA_NUM_THREADS": str(peers.THREADS)}

        def measure():
            info["cold"] = _child(_COMPILE_CHILD, env)
            info["cached"] = _child(_COMPILE_CHILD, env)

        benchmark.group = "first-call compile time (time: both child processes)"
        benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(cold_s=info["cold"], cached_s=info["cached"],
                                threads=peers.THREADS)  # fmt: skip


SCALING = {"base n=10000 grid 101x101": (10_000, 101), "n x10": (100_000, 101),
           "grid x4 (202x202)": (10_000, 202)}  # fmt: skip


@pytest.mark.parametrize("case", list(SCALING))
def bench_b1_scaling(benchmark, case):
    peers.set_threads(peers.THREADS)
    n, g = SCALING[case]
    p = peers.span_problem([100, 1], "identity", "logistic", n, g)
    run = peers.make_fastscape_surface(p)
    t0 = time.perf_counter()
    run(p.C[:4])
    first = time.perf_counter() - t0
    benchmark.group = "B1 scaling, fastscape (linear: time / (n x points) constant)"
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out.shape == (g * g,) and np.all(np.isfinite(out))
    benchmark.extra_info.update(n=n, points=g * g, threads=peers.THREADS, first_call_s=first)
