"""kernels/_tasks.run_tasks: every task once, on Numba's thread count, errors raised."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numba
import pytest
from fastscape.kernels._tasks import run_tasks

import fastscape


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("n_tasks", [0, 1, 7, 50])
def test_every_task_runs_once_on_at_most_the_thread_count(n_threads, n_tasks):
    n_threads = min(n_threads, numba.config.NUMBA_NUM_THREADS)
    seen = []
    threads = set()
    lock = threading.Lock()

    def task(i):
        time.sleep(0.001)
        with lock:
            seen.append(i)
            threads.add(threading.get_ident())

    with fastscape.threads(n_threads):
        run_tasks(task, n_tasks)
    assert sorted(seen) == list(range(n_tasks))
    assert len(threads) <= n_threads
    if n_threads == 1 and n_tasks:
        assert threads == {threading.get_ident()}  # serial: in the calling thread


@pytest.mark.parametrize("failing", [0, 5])
def test_an_error_stops_the_hand_out_and_is_raised_after_the_running_tasks(failing):
    done = []
    running = []

    def task(i):
        running.append(i)
        if i == failing:
            raise ZeroDivisionError(f"task {i}")
        time.sleep(0.002)
        done.append(i)
        running.remove(i)

    with fastscape.threads(min(2, numba.config.NUMBA_NUM_THREADS)):
        with pytest.raises(ZeroDivisionError, match=f"task {failing}"):
            run_tasks(task, 200)
    assert running == [failing]  # nothing still running when the error arrives
    assert len(done) < 199  # the remaining tasks were not handed out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_tasks_on_a_pool_of_its_own():
    """The parent's pool threads do not exist in a forked child: it must not wait for them."""
    n = min(2, numba.config.NUMBA_NUM_THREADS)
    seen = []
    with fastscape.threads(n):
        run_tasks(seen.append, 4)  # the parent's pool exists now
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python >= 3.12 (and JAX's at-fork hook, when another
        warnings.simplefilter("ignore")  # test imported it) warn about fork with threads
        pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        try:
            signal.alarm(60)  # a child waiting for the parent's threads dies: the test fails
            got = []
            with fastscape.threads(n):
                run_tasks(got.append, 6)
            os.write(write, str(sorted(got)).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        assert fh.read() == str(list(range(6)))
    assert os.waitstatus_to_exitcode(status) == 0 and sorted(seen) == [0, 1, 2, 3]
