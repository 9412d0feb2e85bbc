"""Compile kernels in background processes while the main job does other work.

A cold start (no compiled kernels in the on-disk cache, e.g. the first run after an install) is
dominated by Numba compiling the kernels one after another: Numba holds one compiler lock per
process, so threads cannot compile in parallel. Other processes can: :func:`start` launches one
process per job that runs that job's kernels on a tiny problem of the same model, which
compiles them into the shared on-disk cache; the main process trains meanwhile (compiling its
own kernels) and, before it needs a job's kernels, calls :meth:`Warmup.wait`, after which they
load from the cache. Where the cache is warm nothing is started.

The tiny problem goes through the same public functions as the real job, so the compiled
signatures (dtypes, array layouts, integer widths) are the ones the real job asks for. Any
failure in a warm-up process only costs the main process its own compile, as without warm-up.

Run as ``python -m fastscape._warmup JSON`` (what :func:`start` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable

#: The jobs: "landscape" (slices, surfaces, ε-sharpness: the span engine), "hessian" (the exact
#: Hessian) and "hvp" (Hessian-vector products and the Lanczos steps).
JOBS = ("landscape", "hessian", "hvp")


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


class Warmup:
    """Background compile processes, by job."""

    def __init__(self, procs: dict[str, subprocess.Popen]) -> None:
        self._procs = procs

    @property
    def jobs(self) -> tuple[str, ...]:
        """The jobs being compiled in the background."""
        return tuple(self._procs)

    def wait(self, *jobs: str, timeout: float = 600.0) -> None:
        """Block until the given jobs' processes (all when none given) have finished."""
        for job in jobs or tuple(self._procs):
            proc = self._procs.pop(job, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop every process still running (the main process then compiles what it needs)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def __enter__(self) -> Warmup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(model, jobs: Iterable[str], *, only_if_cold: bool = True) -> Warmup:
    """Start one background process per job that compiles its kernels for ``model``.

    Parameters
    ----------
    model : MLP
        The model of the real job (its sizes, activation and loss pick the kernels).
    jobs : iterable of {"landscape", "hessian", "hvp"}
        "landscape": slices, surfaces and ε-sharpness (the span engine); "hessian": the exact
        Hessian; "hvp": Hessian-vector products and the Lanczos steps.
    only_if_cold : bool
        Start a job only when its kernels are not in the on-disk cache.

    Returns
    -------
    Warmup
        Call :meth:`Warmup.wait` before the job's first kernel call, and :meth:`Warmup.close`
        (or use it as a context manager) when done.
    """
    procs = {}
    for job in jobs:
        if job not in JOBS:
            raise ValueError(f"unknown warm-up job {job!r}; expected one of {list(JOBS)}")
        if only_if_cold and not is_cold(job, model):
            continue
        spec = json.dumps({"job": job, "model": model.to_dict()})
        procs[job] = subprocess.Popen(
            [sys.executable, "-m", "fastscape._warmup", spec],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")},
        )
    return Warmup(procs)


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
        hessian_trace(model, theta, data, method="hutch++", n_samples=4, seed=0)


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    run(request["job"], request["model"])
