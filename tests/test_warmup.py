"""Background compilation (fastscape._warmup) into the on-disk cache, in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CODE = """
    import json
    import numpy as np
    import fastscape
    from fastscape import _warmup
    from fastscape.kernels import hessian

    model = fastscape.MLP([3, 4, 2], activation="tanh", loss="softmax_ce")
    cold_before = _warmup.is_cold("hessian", model)
    fork = _warmup._can_fork()
    warm = _warmup.start(model, ["hessian"])
    jobs = warm.jobs
    warm.wait()
    again = _warmup.start(model, ["hessian"])  # warm now: nothing to start
    X = np.random.default_rng(1).normal(size=(30, 3)); y = np.arange(30) % 2
    model.hessian(model.init(1), X, y)
    print(json.dumps({
        "cold_before": cold_before, "jobs": list(jobs), "fork": fork,
        "returncodes": warm.returncodes,
        "cold_after": _warmup.is_cold("hessian", model),
        "second_start": list(again.jobs),
        "misses": sum(sum(k.stats.cache_misses.values()) for k in
                      (hessian.scatter_diagonal, hessian.scatter_offdiagonal)),
        "hits": sum(sum(k.stats.cache_hits.values()) for k in
                    (hessian.scatter_diagonal, hessian.scatter_offdiagonal)),
    }))
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_background_compile_fills_the_cache_the_main_process_loads(how, tmp_path):
    """Forks of the main process (Linux) or new interpreters (elsewhere, or with threads
    running): either way the kernels land in the cache and the main process loads them."""
    if how == "fork" and not sys.platform.startswith("linux"):
        pytest.skip("forks are used on Linux only")
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    if how == "spawn":
        env["FASTSCAPE_WARMUP_SPAWN"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CODE)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    facts = json.loads(out.stdout)
    assert facts["fork"] is (how == "fork")
    assert facts["cold_before"] is True
    assert facts["jobs"] == ["hessian"]
    assert facts["returncodes"] == {"hessian": 0}
    assert facts["cold_after"] is False
    assert facts["second_start"] == []
    # the main process compiled none of the Hessian kernels itself: it loaded them
    assert facts["misses"] == 0 and facts["hits"] >= 2


def test_unknown_job_is_refused():
    import fastscape
    from fastscape import _warmup

    with pytest.raises(ValueError, match="unknown warm-up job 'grid'"):
        _warmup.start(fastscape.MLP([2, 3, 2]), ["grid"])


@pytest.mark.slow
def test_landscape_job_compiles_no_hvp_kernels(tmp_path):
    """The span engine's job leaves Lanczos and the HVPs to the "hvp" job (the CLI gives
    ε-sharpness its λmax): compiling them there made a cold CLI run slower, not faster. Nor
    does it compile the loss at θ, which the main process compiles for training; and the
    span kernel of another activation stays cold (one kernel per activation and loss)."""
    code = """
        import json
        import fastscape
        from fastscape import _warmup

        model = fastscape.MLP([2, 3, 2])
        warm = _warmup.start(model, ["landscape"])
        warm.wait()
        relu = fastscape.MLP([2, 3, 2], activation="relu")
        print(json.dumps({"landscape": _warmup.is_cold("landscape", model),
                          "hvp": _warmup.is_cold("hvp", model),
                          "loss": _warmup._is_cached("mlp", "chunk_loss"),
                          "relu": _warmup.is_cold("landscape", relu)}))
    """
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    assert json.loads(out.stdout) == {"landscape": False, "hvp": True, "loss": False, "relu": True}


@pytest.mark.slow
def test_the_cold_check_follows_the_model(tmp_path):
    """Logistic regression takes the span engine's product path and a closed-form Hessian: once
    its landscape job ran, nothing is cold for it (a check on another path's kernels called
    every later run cold and started a background process each time)."""
    code = """
        import json
        import fastscape
        from fastscape import _warmup

        model = fastscape.Logistic(5)
        before = {j: _warmup.is_cold(j, model) for j in ("landscape", "hessian")}
        warm = _warmup.start(model, ["landscape", "hessian"])
        started = list(warm.jobs)
        warm.wait()
        again = _warmup.start(model, ["landscape", "hessian"])
        print(json.dumps({"before": before, "started": started, "again": list(again.jobs)}))
    """
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    facts = json.loads(out.stdout)
    assert facts["before"] == {"landscape": True, "hessian": False}
    assert facts["started"] == ["landscape"]
    assert facts["again"] == []


@pytest.mark.parametrize(
    "sizes, act, loss, path",
    [
        ([5, 1], "identity", "logistic", "span_logistic"),
        ([4, 3], "identity", "softmax_ce", "span"),
        ([4, 5, 3], "tanh", "softmax_ce", "span_hidden"),
        ([4, 5, 4, 3], "tanh", "softmax_ce", "span_deep"),
        ([4, 5, 4, 3, 2], "relu", "mse", "span_deep"),
    ],
)
def test_the_landscape_job_names_the_path_the_engine_takes(sizes, act, loss, path):
    """The cold check looks at the kernel of the span engine's path for the model's shape, and
    that kernel exists under that name."""
    import importlib

    import fastscape
    from fastscape import _warmup

    model = fastscape.MLP(sizes, activation=act, loss=loss)
    ((module, name, *args),) = _warmup.kernels("landscape", model)
    assert module == path
    kernel = getattr(importlib.import_module(f"fastscape.kernels.{module}"), name)
    assert callable(kernel(*args) if args else kernel)


@pytest.mark.slow
@pytest.mark.parametrize("job", ["landscape", "hessian", "hvp"])
def test_every_job_runs_to_completion(job, tmp_path):
    """A job that fails in its process only costs the main process its own compile, silently:
    so each job is run here and must exit 0 and leave its kernels cached (the hvp job once
    asked Hutch++ for fewer probes than it accepts and failed on every cold run)."""
    code = f"""
        import json
        import fastscape
        from fastscape import _warmup

        model = fastscape.MLP([3, 5, 4, 2], activation="tanh", loss="softmax_ce")
        warm = _warmup.start(model, [{job!r}])
        warm.wait()
        print(json.dumps({{"codes": warm.returncodes, "cold": _warmup.is_cold({job!r}, model)}}))
    """
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    assert json.loads(out.stdout) == {"codes": {job: 0}, "cold": False}


_STEPS_CODE = """
    import json, sys
    from numba.core import event

    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            fn = getattr(ev.data["dispatcher"], "py_func", None)
            compiled.append(fn.__name__ if fn is not None else "?")

    event.register("numba:compile", Listener())
    import fastscape
    from fastscape import _warmup
    from fastscape.kernels import span_hidden

    part, spec = sys.argv[1], json.loads(sys.argv[2])
    model = fastscape.MLP(**spec)
    if part == "kernel":
        _warmup.run("landscape", spec)
    else:
        span_hidden.compile_steps(model.spec.activation, model.spec.loss, model.sizes[1],
                                  model.sizes[2], part)
    print(json.dumps(sorted(set(compiled))))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "act, loss, out",
    [("tanh", "softmax_ce", 3), ("relu", "logistic", 1), ("sigmoid", "mse", 2)],
)
def test_the_split_steps_are_the_ones_the_kernel_loads(act, loss, out, tmp_path):
    """The landscape job of the one-hidden-layer path compiles the kernel's callees in two
    processes (``span_hidden.compile_steps``, called from Python): they are only of use if
    their argument types are the ones the kernel passes. After both parts, compiling the
    kernel compiles none of them again (it loads them from the cache)."""
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    spec = json.dumps({"sizes": [4, 6, out], "activation": act, "loss": loss})
    runs = {}
    for part in ("early", "late", "kernel"):
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_STEPS_CODE), part, spec],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        runs[part] = set(json.loads(res.stdout))
    steps = {"point_tails", "first_layer_sum", f"combine_{act}", "tile_outputs",
             f"tile_loss_{loss}"}  # fmt: skip
    assert steps <= runs["early"] | runs["late"]
    assert "span_task" in runs["kernel"]
    assert not steps & runs["kernel"], runs["kernel"]


@pytest.mark.slow
def test_a_split_compile_gives_the_same_surface(tmp_path):
    """The kernel compiled over callees loaded from the cache computes the same bits as the
    kernel compiled with its callees in one process (a fresh cache each)."""
    code = """
        import hashlib, sys
        import numpy as np
        import fastscape
        from fastscape import _warmup, directions
        from fastscape.landscape import evaluate

        model = fastscape.MLP([5, 9, 3], activation="tanh", loss="softmax_ce")
        if sys.argv[1] == "split":
            _warmup.start(model, ["landscape"]).wait()
        rng = np.random.default_rng(1)
        data = model.batch(rng.normal(size=(301, 5)), np.arange(301) % 3)
        theta = model.init(2)
        d1, d2 = directions.pair(model, theta, seed=3)
        basis = np.stack([theta, np.asarray(d1), np.asarray(d2)])
        grid = np.linspace(-1, 1, 9)
        coef = np.array([[1.0, a, b] for a in grid for b in grid])
        res = evaluate(model, basis, coef, data, progress=False)
        print(hashlib.sha256(np.asarray(res.loss).tobytes()).hexdigest())
    """
    digests = []
    for how in ("split", "in-process"):
        env = {**os.environ, "FASTSCAPE_CACHE_DIR": str(tmp_path / how), "NUMBA_CACHE_DIR": ""}
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), how],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        digests.append(res.stdout.strip())
    assert digests[0] == digests[1] and len(digests[0]) == 64
