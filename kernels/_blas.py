"""Matrix products by BLAS whose bits do not depend on any thread count.

A multithreaded OpenBLAS GEMM partitions the product differently for 1 and 2 threads, and the
edge micro-kernels round differently, so ``A @ B`` can change in its last bit when the BLAS
thread count changes (the gradient of MLP 64-32-10 was seen to differ between 1 and 2 OpenBLAS
threads). Here BLAS always runs single-threaded, on a partition of the product into parts that
depends only on the shapes; the parts run concurrently on a pool of ``numba.get_num_threads()``
threads (BLAS releases the GIL). The thread count therefore decides who computes a part, never
how it is computed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

#: Parts a large product is split into (along its longer output side); at least MIN_SIDE rows or
#: columns per part. Fixed: changing them changes the rounding of the products.
PARTS = 8
MIN_SIDE = 32
#: Products below this many multiply-adds run as one single-threaded call.
SERIAL_MADDS = 8_000_000

_lock = threading.Lock()
_nesting = threading.local()  # depth of serial_blas contexts on this thread
_controller: ThreadpoolController | None = None
_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}


def _get_controller() -> ThreadpoolController:
    global _controller
    with _lock:
        if _controller is None:
            _controller = ThreadpoolController()
        return _controller


@contextlib.contextmanager
def serial_blas() -> Iterator[None]:
    """Run the enclosed BLAS calls single-threaded (every BLAS library NumPy/SciPy loaded).

    The previous thread counts are restored on exit. Nested on one thread (a solver's loop
    around an operator that also asks for it), the inner contexts cost nothing: querying and
    setting the counts through threadpoolctl takes ~13 us, paid once by the outermost.
    """
    depth = getattr(_nesting, "depth", 0)
    if depth:
        _nesting.depth = depth + 1
        try:
            yield
        finally:
            _nesting.depth = depth
        return
    libs = [lib for lib in _get_controller().lib_controllers if lib.user_api == "blas"]
    previous = [lib.get_num_threads() for lib in libs]
    for lib, n in zip(libs, previous):
        if n != 1:
            lib.set_num_threads(1)
    _nesting.depth = 1
    try:
        yield
    finally:
        _nesting.depth = 0
        for lib, n in zip(libs, previous):
            if n != 1:
                lib.set_num_threads(n)


def thread_pool(workers: int, name: str = "blas") -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads named ``name`` (made once, then reused).

    Separate names give separate pools: a task running in one pool may wait on another.
    """
    with _lock:
        key = (name, workers)
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix=f"fastscape-{name}")
        return _pools[key]


def parts(length: int) -> list[tuple[int, int]]:
    """The fixed partition of ``range(length)`` used to split a product."""
    k = max(1, min(PARTS, length // MIN_SIDE))
    return [((i * length) // k, ((i + 1) * length) // k) for i in range(k)]


def matmul(A: np.ndarray, B: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A @ B`` for 2-D float arrays (views and transposes allowed), reproducible bit for bit.

    Parameters
    ----------
    A : (m, k) array
    B : (k, n) array
    out : (m, n) array, optional
        Written in place (rows with unit stride, e.g. a C-contiguous array or a row block of
        one); a new C-contiguous array of the inputs' common dtype otherwise (float32 for two
        float32 inputs: single-precision BLAS).

    Returns
    -------
    (m, n) array
    """
    m, k = A.shape
    n = B.shape[1]
    if out is None:
        out = np.empty((m, n), np.result_type(A, B))
    with serial_blas():
        if m * k * n < SERIAL_MADDS:
            np.matmul(A, B, out=out)
            return out
        if m >= n:
            jobs = [(A[lo:hi], B, out[lo:hi]) for lo, hi in parts(m)]
        else:
            jobs = [(A, B[:, lo:hi], out[:, lo:hi]) for lo, hi in parts(n)]
        workers = min(len(jobs), numba.get_num_threads())
        if workers <= 1:
            for a, b, o in jobs:
                np.matmul(a, b, out=o)
        else:
            list(thread_pool(workers).map(lambda j: np.matmul(j[0], j[1], out=j[2]), jobs))
    return out
