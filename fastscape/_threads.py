"""Thread-count control for the parallel kernels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba


@contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Run the enclosed kernels on ``n`` threads, restoring the caller's count afterwards.

    ``None`` keeps the current count. Results do not depend on the count (fixed chunking);
    only the speed does.
    """
    previous = numba.get_num_threads()
    if n is None:
        yield previous
        return
    if (
        isinstance(n, bool)
        or not isinstance(n, int)
        or not 1 <= n <= numba.config.NUMBA_NUM_THREADS
    ):
        raise ValueError(
            f"n_threads must be an integer in [1, {numba.config.NUMBA_NUM_THREADS}], got {n!r}"
        )
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)
