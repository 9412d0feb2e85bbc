"""Overhead of ``client=``: B2 locally against a 2-worker LocalCluster on the same machine.

Usage (about 2-3 minutes on 2 cores)::

    python bench/dask_overhead.py [--repeats 3]

Prints one line per configuration (median and min of the repeats, seconds) and checks that
every distributed result is bitwise equal to the local one. The figures and their reading are
in bench/NOTES.md ("Dask: overhead of client=").
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
from fastscape import config, distributed, functions
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
    print(f"{name:<52} median {med:7.3f} s  min {low:7.3f} s  {extra}", flush=True)
    return med


def main() -> None:
    from dask.distributed import Client, LocalCluster
    from peers import span_problem

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    r = ap.parse_args().repeats

    p = span_problem([784, 128, 10], "tanh", "softmax_ce", 5000, 51)
    m = p.C.shape[0]
    print(f"B2: m = {m} points, n = 5000, P = {p.model.n_params}; {platform.processor()}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()}")  # fmt: skip

    def local(n_threads, tile_size=None):
        return evaluate(p.model, p.basis, p.C, p.data, n_threads=n_threads, tile_size=tile_size,
                        progress=False)  # fmt: skip

    local(2)  # compile / load
    ref, t = _time(lambda: local(1), r)
    t_local1 = _line("local, 1 Numba thread, 1 tile", t)
    _, t = _time(lambda: local(2), r)
    t_local2 = _line("local, 2 Numba threads, 1 tile", t)
    for tile in (651, 131):
        out, t = _time(lambda tile=tile: local(2, tile), r)
        assert np.array_equal(out.loss, ref.loss)
        _line(f"local, 2 Numba threads, tiles of {tile} ({-(-m // tile)} tiles)", t)

    cluster = LocalCluster(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=":0")  # fmt: skip
    client = Client(cluster)
    try:

        def dist(tile_size=None, C=p.C):
            return evaluate(p.model, p.basis, C, p.data, tile_size=tile_size, progress=False,
                            client=client)  # fmt: skip

        dist(C=p.C[:2])  # workers load the kernels
        _, t = _time(lambda: dist(C=p.C[:2]), r)
        _line("2 workers x 1 thread, 2 points (per-call cost)", t, "scatter X, Y, basis")
        default = distributed.default_tile(client, m, config.SPAN_TILE)
        for tile, label in ((default, "(the default)"), (1301, "(1 per worker)"), (131, "")):
            out, t = _time(lambda tile=tile: dist(tile), r)
            assert np.array_equal(out.loss, ref.loss)
            assert np.array_equal(out.accuracy, ref.accuracy)
            ratios = f"{_ratio(t, t_local2)} local 2 threads, {_ratio(t, t_local1)} 1 thread"
            _line(f"2 workers x 1 thread, {-(-m // tile)} tiles of {tile} {label}", t, ratios)

        # the round trip of one tile, without work: 400 one-point tiles of a 2-D function
        B = np.eye(2)
        C = np.random.default_rng(0).normal(size=(400, 2))
        evaluate(functions.rosenbrock, B, C[:4], tile_size=1, progress=False, client=client)
        _, t = _time(lambda: evaluate(functions.rosenbrock, B, C, tile_size=1, progress=False,
                                      client=client), r)  # fmt: skip
        _line("2 workers, 400 empty tiles (Dask's cost per tile)", t,
              f"{1e3 * statistics.median(t) / 400:.2f} ms per tile")  # fmt: skip
    finally:
        client.close()
        cluster.close()
    print(f"fastscape {fastscape.__version__}; load average after {os.getloadavg()}")


def _ratio(t, base) -> str:
    return f"{statistics.median(t) / base:.2f}x"


if __name__ == "__main__":
    main()
