"""Parallel tasks on a Python thread pool, for serial ``nogil`` kernels.

A ``parallel=True`` kernel costs Numba seconds of compile time per call level (the parfor's
gufunc and its caller each link and optimise the whole inlined body again); a serial ``nogil``
kernel called once per task from a few Python threads runs the same machine code in parallel
and compiles once. The thread count is Numba's (``numba.get_num_threads()`` of the calling
thread, which ``fastscape.threads`` sets), so the two kinds of kernels follow the same setting.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there; start a new pool."""
    global _pool, _pool_size, _pool_lock
    _pool = None
    _pool_size = 0
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastscape-task")
            _pool_size = n
        return _pool


def run_tasks(task: Callable[[int], None], n_tasks: int) -> None:
    """Call ``task(i)`` for ``i`` in ``range(n_tasks)`` on ``numba.get_num_threads()`` threads
    (the calling thread among them), each thread taking the next task as it becomes free.

    ``task`` must release the GIL for its work (a ``nogil`` kernel) and tasks must write
    disjoint outputs. The first exception stops the hand-out of further tasks and is raised
    once every running task has returned.
    """
    workers = min(numba.get_num_threads(), n_tasks)
    if workers <= 1:
        for i in range(n_tasks):
            task(i)
        return
    todo = iter(range(n_tasks))  # next() on it is atomic under the GIL
    stop = threading.Event()

    def drain() -> None:
        try:
            for i in todo:
                if stop.is_set():
                    return
                task(i)
        except BaseException:
            stop.set()
            raise

    futures = [_executor(workers - 1).submit(drain) for _ in range(workers - 1)]
    try:
        drain()
    finally:  # wait for every worker: no task may still write after we return
        errors = [fut.exception() for fut in futures]
    for exc in errors:
        if exc is not None:
            raise exc


def run_ranges(kernel: Callable, n: int, *args) -> None:
    """Call ``kernel(*args, lo, hi)`` over a partition of ``range(n)`` into contiguous chunks,
    on :func:`run_tasks`' threads: for serial ``nogil`` kernels whose rows are independent (the
    result must not depend on the partition, which follows the thread count)."""
    if n <= 0:
        return
    workers = max(1, numba.get_num_threads())
    chunks = min(n, 4 * workers) if workers > 1 else 1
    step = -(-n // chunks)

    def task(i: int) -> None:
        kernel(*args, i * step, min(n, (i + 1) * step))

    run_tasks(task, -(-n // step))
