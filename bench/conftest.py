"""Benchmark helpers: threads fixed and recorded, compile kept out of the timings."""

from __future__ import annotations

import numba
import pytest


@pytest.fixture
def record_env(benchmark):
    """Store the thread count and the sizes of the problem in the benchmark's extra_info."""

    def record(**sizes):
        benchmark.extra_info["threads"] = numba.get_num_threads()
        benchmark.extra_info.update(sizes)

    return record
