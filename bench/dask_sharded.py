"""Samples sharded across Dask workers: B2's surface and its Hessian-vector products.

Usage (about 2-3 minutes on 2 cores)::

    python bench/dask_sharded.py [--repeats 3]

Locally (2 Numba threads) against a 2-worker ``LocalCluster`` (1 thread each) on the same
machine, with the samples in 2 row chunks persisted on the workers:

- the surface of B2 (2601 points): tiles of points (bitwise equal to local) and sharded
  samples (equal to 1e-12 relative; no first-layer product is formed twice);
- one Hessian-vector product (K = 1, a Lanczos step) and a block of 8, and the fixed cost
  of a sharded product (a 3-5-3 model on 60 samples: the round trip and the client's sum);
- the pass at theta (building the operator).

Prints one line per configuration (median and min of the repeats, seconds), and checks
every distributed result against the local one. Figures and their reading: bench/NOTES.md
("Dask: sharded samples").
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fastscape
from fastscape.curvature import HessianOperator
from fastscape.landscape import evaluate


def _time(fn, repeats):
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def _line(name, times, extra=""):
    med, low = statistics.median(times), min(times)
    print(f"{name:<56} median {med:8.4f} s  min {low:8.4f} s  {extra}", flush=True)
    return med


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main() -> None:
    import dask.array as da
    from dask.distributed import Client, LocalCluster
    from peers import span_problem

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    r = ap.parse_args().repeats

    p = span_problem([784, 128, 10], "tanh", "softmax_ce", 5000, 51)
    n = p.data.X.shape[0]
    where = f"{platform.processor()}, {os.cpu_count()} CPUs; load average {os.getloadavg()}"
    print(f"B2: m = {p.C.shape[0]} points, n = {n}, P = {p.model.n_params}; {where}")
    rng = np.random.default_rng(0)
    v1 = rng.normal(size=(1, p.model.n_params))
    v8 = rng.normal(size=(8, p.model.n_params))

    def local_surface():
        return evaluate(p.model, p.basis, p.C, p.data, n_threads=2, progress=False)

    local_surface()  # compile / load
    ref, t = _time(local_surface, r)
    t_surf = _line("surface, local, 2 Numba threads", t)
    H, t = _time(lambda: HessianOperator(p.model, p.theta, p.data), r)
    _line("pass at theta, local", t)
    from fastscape._threads import threads

    with threads(2):
        H.rows(v1)
        hv1, t = _time(lambda: H.rows(v1), max(r, 5))
        t_hv1 = _line("HVP K=1, local, 2 Numba threads", t)
        hv8, t = _time(lambda: H.rows(v8), r)
        t_hv8 = _line("HVP K=8, local, 2 Numba threads", t)

    cluster = LocalCluster(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=":0")  # fmt: skip
    client = Client(cluster)
    try:
        X = client.persist(da.from_array(p.data.X, chunks=(-(-n // 2), -1)))
        Y = client.persist(da.from_array(p.data.Y, chunks=(-(-n // 2), -1)))

        def tiles():
            return evaluate(p.model, p.basis, p.C, p.data, progress=False, client=client)

        def sharded():
            return evaluate(p.model, p.basis, p.C, X, Y, progress=False, client=client)

        tiles()
        out, t = _time(tiles, r)
        assert np.array_equal(out.loss, ref.loss)
        _line("surface, 2 workers, tiles of points (default)", t,
              f"{statistics.median(t) / t_surf:.2f}x local")  # fmt: skip
        sharded()
        out, t = _time(sharded, r)
        assert _rel(out.loss, ref.loss) < 1e-12 and np.array_equal(out.accuracy, ref.accuracy)
        _line("surface, 2 workers, samples in 2 chunks", t,
              f"{statistics.median(t) / t_surf:.2f}x local")  # fmt: skip

        Hd, t = _time(lambda: HessianOperator(p.model, p.theta, X, Y, client=client), r)
        _line("pass at theta, 2 workers (chunks already there)", t)
        Hd.rows(v1)
        out, t = _time(lambda: Hd.rows(v1), max(r, 5))
        assert _rel(out, hv1) < 1e-12
        _line("HVP K=1, 2 workers", t, f"{statistics.median(t) / t_hv1:.2f}x local")
        out, t = _time(lambda: Hd.rows(v8), r)
        assert _rel(out, hv8) < 1e-12
        _line("HVP K=8, 2 workers", t, f"{statistics.median(t) / t_hv8:.2f}x local")

        small = fastscape.MLP([3, 5, 3], "tanh", "softmax_ce")
        Xs = rng.normal(size=(60, 3))
        ys = rng.integers(0, 3, 60)
        Hs = HessianOperator(small, small.init(0), Xs, ys, client=client)
        vs = np.ones(small.n_params)
        Hs.rows(vs)
        _, t = _time(lambda: Hs.rows(vs), 20)
        _line("HVP of a 3-5-3 model on 60 samples, 2 workers", t, "the fixed cost per product")
    finally:
        client.close()
        cluster.close()
    print(f"fastscape {fastscape.__version__}; load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
