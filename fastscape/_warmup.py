"""Compile kernels in background processes while the main job does other work.

A cold start (no compiled kernels in the on-disk cache, e.g. the first run after an install) is
dominated by Numba compiling the kernels one after another: Numba holds one compiler lock per
process, so threads cannot compile in parallel. Other processes can: :func:`start` launches one
process per job that runs that job's kernels on a tiny problem of the same model, which
compiles them into the shared on-disk cache; the main process trains meanwhile (compiling its
own kernels) and, before it needs a job's kernels, calls :meth:`Warmup.wait`, after which they
load from the cache. Where the cache is warm nothing is started.

On Linux the processes are forks of the main one when it is still single-threaded: they start
with NumPy, Numba and fastscape already imported (a new interpreter spends about half a second
importing them before it compiles anything, on the critical path of a cold run). Elsewhere, or
once the main process runs threads (a fork copies only the calling thread, and a lock another
thread holds would stay held in the child), they are new interpreters
(``python -m fastscape._warmup JSON``).

The tiny problem goes through the same public functions as the real job, so the compiled
signatures (dtypes, array layouts, integer widths) are the ones the real job asks for. Any
failure in a warm-up process only costs the main process its own compile, as without warm-up.

Run as ``python -m fastscape._warmup JSON`` (what :func:`start` does).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

#: The jobs: "landscape" (slices, surfaces, ε-sharpness: the span engine), "hessian" (the exact
#: Hessian) and "hvp" (Hessian-vector products and the Lanczos steps).
JOBS = ("landscape", "hessian", "hvp")

#: The niceness of the jobs after the first (:func:`start`): on a machine with fewer cores than
#: processes, the job the main process waits on first gets the larger share.
NICE = 5


def kernels(job: str, model) -> tuple[tuple, ...]:
    """The entry kernels that ``job`` compiles for ``model``: the path the kernels pick for its
    shape and loss (a job the model does not compile anything for has none). Each is
    ``(module, name)``, or ``(module, factory, *args)`` for a kernel made per activation and
    loss (``span_hidden.task_kernel``)."""
    spec = model.spec
    closed_form = spec.is_linear and model.loss_name in ("logistic", "mse")
    if job == "landscape":
        if closed_form and spec.n_outputs == 1:  # one output, no hidden layer: product path
            return (("span_logistic", "span_block_scalar"),)
        if len(spec.sizes) == 3:
            return (("span_hidden", "task_kernel", spec.activation, spec.loss),)
        if len(spec.sizes) >= 4:  # two or more hidden layers: the general path on tiles
            return (("span_deep", "span_block_deep"),)
        return (("span", "span_block"),)
    if job == "hessian":  # logistic and linear regression: closed forms through BLAS
        return () if closed_form else (("hessian", "scatter_diagonal"),)
    return (("hvp", "r_blocks"), ("lanczos", "orthogonalize"))


def _is_cached(module: str, name: str, *args) -> bool | None:
    """Whether a kernel has entries in the on-disk cache for its current source (None when the
    kernel does not exist under that name or the cache cannot be inspected). ``args``: the
    arguments of a kernel factory; its kernels share one index, where the entries of this one
    carry the hash of its closure's values."""
    import importlib

    try:
        kernel = getattr(importlib.import_module(f"fastscape.kernels.{module}"), name)
        if args:
            kernel = kernel(*args)
        cache = kernel._cache
        index = cache._cache_file._load_index()
        # the index key is (signature, codegen magic, (code hash, closure hash))
        mine = cache._index_key(None, kernel.targetctx.codegen())[2]
        return any(key[2] == mine for key in index)
    except Exception:  # another Numba's internals, a renamed kernel: no opinion
        return None


def is_cold(job: str, model) -> bool:
    """True when a kernel that ``job`` compiles for ``model`` is not in the on-disk cache."""
    return any(_is_cached(*entry) is False for entry in kernels(job, model))


class _Forked:
    """A forked warm-up process, with the part of :class:`subprocess.Popen`'s interface that
    :class:`Warmup` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"fork {self.pid}", timeout)
            time.sleep(delay)
            delay = min(2 * delay, 0.02)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # already gone; wait() reaps it
                pass


class Warmup:
    """Background compile processes, by job."""

    def __init__(self, procs: dict, helpers: list | None = None) -> None:
        self._procs = procs
        self._helpers = helpers or []  # processes a job's own process waits for
        #: The exit status of each job waited for (0: compiled; else the main process compiles
        #: that job's kernels itself when it first calls them).
        self.returncodes: dict[str, int] = {}

    @property
    def jobs(self) -> tuple[str, ...]:
        """The jobs being compiled in the background."""
        return tuple(self._procs)

    def wait(
        self, *jobs: str, timeout: float = 600.0, meanwhile: Callable[[], object] | None = None
    ) -> None:
        """Block until the given jobs' processes (all when none given) have finished.

        ``meanwhile``, when given, is called once before blocking if one of them is still
        running: work of the caller's own that would otherwise come after the wait (imports for
        the next stage, say) and now overlaps the compile.
        """
        jobs = jobs or tuple(self._procs)
        if meanwhile is not None and any(
            job in self._procs and self._procs[job].poll() is None for job in jobs
        ):
            meanwhile()
        for job in jobs:
            proc = self._procs.pop(job, None)
            if proc is None:
                continue
            try:
                self.returncodes[job] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.returncodes[job] = proc.wait()
        for helper in self._helpers:
            helper.poll()  # reap the finished ones

    def close(self) -> None:
        """Stop every process still running (the main process then compiles what it needs)."""
        for proc in [*self._procs.values(), *self._helpers]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self._procs.clear()
        self._helpers.clear()

    def __enter__(self) -> Warmup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _can_fork() -> bool:
    """Whether a fork is safe here: Linux, a single thread, and Numba's parallel threading
    layer not yet started (its worker threads would not exist in the child)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    if os.environ.get("FASTSCAPE_WARMUP_SPAWN"):  # force new interpreters (tests, debugging)
        return False
    if threading.active_count() != 1:
        return False
    try:
        from numba.np.ufunc import parallel

        return not parallel._is_initialized
    except Exception:  # another Numba's internals: be safe
        return False


def _fork(name: str, body: Callable[[], object], nice: int, keep: tuple[int, ...] = ()) -> _Forked:
    """Fork a process that runs ``body`` (the child never returns: it leaves with ``os._exit``,
    so none of the parent's cleanup, locks or buffered output runs there). Of the parent's
    files the child keeps only the descriptors in ``keep``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing to lose
            pass
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        # no file of the parent's stays open here (its --out lock above all)
        for fd in os.listdir("/proc/self/fd"):
            if int(fd) > 2 and int(fd) not in keep:
                try:
                    os.close(int(fd))
                except OSError:
                    pass
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        sys.stdin = sys.stdout = sys.stderr = open(os.devnull, "r+")
        if nice:
            os.nice(nice)
        try:
            with open("/proc/self/comm", "w") as fh:  # what ps and top show
                fh.write(f"fastscape-{name}"[:15])
        except OSError:
            pass
        body()
        code = 0
    except BaseException:  # a failure only costs the parent its own compile
        pass
    finally:
        os._exit(code)


def _split(model) -> bool:
    """Whether the landscape job is compiled by two processes: the one-hidden-layer path
    (``span_hidden``), whose kernel's callees fall into two halves of similar compile time."""
    entries = kernels("landscape", model)
    return bool(entries) and entries[0][0] == "span_hidden"


def _compile_steps(model_spec: dict, part: str) -> None:
    import fastscape
    from fastscape._device import compile_span_steps

    compile_span_steps(fastscape.MLP(**model_spec).spec, part)


def _fork_split(model_spec: dict, nice: int, helpers: list) -> _Forked:
    """The landscape job of the one-hidden-layer path in two processes: a helper compiles the
    kernel's late steps (output layer, loss) while the job's process compiles the early ones
    (first layer, activation), waits for the helper (end of file on a pipe: the helper's exit,
    whatever its status) and compiles the kernel, which loads both halves from the cache. The
    critical path of a cold run is this job's compile: about two fifths shorter."""
    read_end, write_end = os.pipe()
    try:
        helpers.append(
            _fork("late", functools.partial(_compile_steps, model_spec, "late"), nice,
                  keep=(write_end,))
        )  # fmt: skip

        def body() -> None:
            os.close(write_end)
            _compile_steps(model_spec, "early")
            while os.read(read_end, 1):  # the helper writes nothing: wait for its exit
                pass
            run("landscape", model_spec)

        return _fork("landscape", body, nice, keep=(read_end, write_end))
    finally:
        os.close(read_end)
        os.close(write_end)


def start(model, jobs: Iterable[str], *, only_if_cold: bool = True) -> Warmup:
    """Start one background process per job that compiles its kernels for ``model``.

    Parameters
    ----------
    model : MLP
        The model of the real job (its sizes, activation and loss pick the kernels).
    jobs : iterable of {"landscape", "hessian", "hvp"}
        "landscape": slices, surfaces and ε-sharpness (the span engine); "hessian": the exact
        Hessian; "hvp": Hessian-vector products and the Lanczos steps. In the order the caller
        will wait on them: where the processes are forks, those after the first run at a
        lower priority (:data:`NICE`).
    only_if_cold : bool
        Start a job only when its kernels are not in the on-disk cache.

    Returns
    -------
    Warmup
        Call :meth:`Warmup.wait` before the job's first kernel call, and :meth:`Warmup.close`
        (or use it as a context manager) when done.
    """
    jobs = list(jobs)
    for job in jobs:
        if job not in JOBS:
            raise ValueError(f"unknown warm-up job {job!r}; expected one of {list(JOBS)}")
    procs: dict = {}
    helpers: list = []
    fork = _can_fork()
    for job in jobs:
        if only_if_cold and not is_cold(job, model):
            continue
        if fork:
            # the first job is waited on first: the later ones yield the CPU to it
            nice = NICE if procs else 0
            spec = model.to_dict()
            if job == "landscape" and _split(model):
                procs[job] = _fork_split(spec, nice, helpers)
            else:
                procs[job] = _fork(job, functools.partial(run, job, spec), nice)
            continue
        spec = json.dumps({"job": job, "model": model.to_dict()})
        procs[job] = subprocess.Popen(
            [sys.executable, "-m", "fastscape._warmup", spec],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")},
        )
    return Warmup(procs, helpers)


def _tiny_problem(model, n: int = 16):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, model.n_inputs))
    if model.loss_name == "mse":
        y = rng.normal(size=(n, model.n_outputs)) if model.n_outputs > 1 else rng.normal(size=n)
    else:
        y = np.arange(n) % max(2, model.n_outputs)
    return model.batch(X, y), model.init(0)


def run(job: str, model_spec: dict) -> None:
    """Compile one job's kernels by running it on a tiny problem (the body of the process)."""
    import numpy as np

    import fastscape
    from fastscape import directions
    from fastscape.curvature import hessian_trace, top_eigen
    from fastscape.landscape import evaluate

    model = fastscape.MLP(**model_spec)
    data, theta = _tiny_problem(model)
    if job == "landscape":
        # the span engine alone, as slices, surfaces and the sharpness probes call it (the
        # loss at theta, compiled by the main process for training, is not compiled here too)
        d1, d2 = directions.pair(model, theta, seed=0)
        basis = np.stack([theta, np.asarray(d1), np.asarray(d2)])
        coefficients = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, -0.5, 0.25]])
        evaluate(model, basis, coefficients, data, progress=False)
    elif job == "hessian":
        fastscape.classify(model.hessian(theta, data))
    elif job == "hvp":
        k = min(2, model.n_params - 1)
        top_eigen(model, theta, data, k=k, method="lanczos", which="LA", seed=0)
        hessian_trace(model, theta, data, method="hutch++", n_samples=6, seed=0)


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    run(request["job"], request["model"])
