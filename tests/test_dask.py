"""Tiles of points on a real Dask cluster (loopback only): bitwise equal to the local engine,
resumable from checkpoints across cluster and local runs, surviving a worker killed mid-grid,
with the shared data sent once per call."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numba
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastscape
from fastscape import directions as D
from fastscape import functions, landscape, paths
from fastscape.landscape import evaluate, slice_1d, surface_2d
from fastscape.sharpness import epsilon_sharpness

HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason='needs pip install "fastscape[dask]"')


def _problem(sizes=(3, 5, 3), n=60, seed=0):
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(list(sizes), "tanh", "softmax_ce")
    X = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    theta = model.init(seed)
    return model, theta, X, y


# ----------------------------------------------------------------------------- without Dask
def test_importing_fastscape_does_not_import_dask(tmp_path):
    code = """
        import sys
        import fastscape, fastscape.landscape, fastscape.paths, fastscape.sharpness
        import fastscape.distributed
        print(sorted(m for m in ("dask", "distributed") if m in sys.modules))
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_client_without_dask_names_the_extra(monkeypatch):
    model, theta, X, y = _problem()
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    with pytest.raises(ImportError, match=r'pip install "fastscape\[dask\]"'):
        slice_1d(model, theta, theta, X, y, alphas=3, client=object())


# ----------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=":0",  # a free port: None means 8787, which may be taken
    )  # fmt: skip
    cl = distributed.Client(cluster)
    # the workers load the kernels once (from the on-disk cache this process fills first)
    model, theta, X, y = _problem()
    d1, d2 = D.pair(model, theta, seed=1)
    for c in (None, cl):
        surface_2d(model, theta, d1, d2, X, y, alphas=2, betas=2, progress=False, client=c)
        evaluate(functions.rosenbrock, np.eye(2), np.ones((2, 2)), progress=False, client=c)
    try:
        yield cl
    finally:
        cl.close()
        cluster.close()


def _held_keys(client) -> list:
    def keys(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks]

    return client.run_on_scheduler(keys)


def _wait_released(client, timeout=10.0) -> list:
    """The keys (tiles and scattered data) the scheduler still holds once they are released,
    or at the timeout; the tests hold no futures of their own between calls."""
    end = time.monotonic() + timeout
    while (left := _held_keys(client)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


@needs_dask
@pytest.mark.parametrize("tile_size", [None, 7])
def test_surface_is_bitwise_equal_to_local(client, tile_size):
    model, theta, X, y = _problem()
    d1, d2 = D.pair(model, theta, seed=2)
    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-0.5, 2, 7), progress=False)
    local = surface_2d(model, theta, d1, d2, X, y, **grid)
    dist = surface_2d(model, theta, d1, d2, X, y, **grid, client=client, tile_size=tile_size)
    assert_array_equal(dist.loss, local.loss)
    assert_array_equal(dist.accuracy, local.accuracy)
    assert dist.loss.shape == (9, 7)
    assert not _wait_released(client)  # data and tiles released once the call returns


@needs_dask
def test_slice_and_paths_are_bitwise_equal_to_local(client):
    model, theta, X, y = _problem()
    rng = np.random.default_rng(4)
    d = D.random(model, theta, seed=3)
    local = slice_1d(model, theta, d, X, y, alphas=25, progress=False)
    dist = slice_1d(model, theta, d, X, y, alphas=25, progress=False, client=client)
    assert_array_equal(dist.loss, local.loss)
    assert_array_equal(dist.accuracy, local.accuracy)

    other = theta + rng.normal(size=model.n_params)
    bend = 0.5 * (theta + other) + 0.3 * rng.normal(size=model.n_params)
    chain = np.stack([theta, bend, other])
    for make in (
        lambda **kw: paths.linear_path(model, theta, other, X, y, ts=17, **kw),
        lambda **kw: paths.bezier_path(model, theta, bend, other, X, y, ts=17, **kw),
        lambda **kw: paths.polychain_path(model, chain, X, y, ts=17, **kw),
    ):
        a, b = make(progress=False), make(progress=False, client=client, tile_size=5)
        assert_array_equal(b.loss, a.loss)
        assert_array_equal(b.accuracy, a.accuracy)
        assert_array_equal(b.endpoint_loss, a.endpoint_loss)
    a = paths.mode_connectivity(model, theta, other, X, y, ts=9, fit=False)
    b = paths.mode_connectivity(model, theta, other, X, y, ts=9, fit=False, client=client)
    assert_array_equal(b.linear.loss, a.linear.loss)
    assert b.linear_barrier == a.linear_barrier


@needs_dask
def test_epsilon_sharpness_is_bitwise_equal_to_local(client):
    model, theta, X, y = _problem()
    local = epsilon_sharpness(model, theta, X, y, eps=0.1, n_directions=40, seed=5)
    dist = epsilon_sharpness(model, theta, X, y, eps=0.1, n_directions=40, seed=5, client=client)
    assert_array_equal(dist.increases, local.increases)
    assert dist.base_loss == local.base_loss
    assert dist.max_increase == local.max_increase


@needs_dask
def test_functions_of_theta_run_on_the_workers(client):
    """The other targets of the engine: an analytic function, a Python callable and a
    Numba-jitted one (sent by value: the workers cannot import this test module)."""
    rng = np.random.default_rng(6)
    basis = rng.normal(size=(3, 2))
    coef = rng.normal(size=(30, 3))
    local = evaluate(functions.rosenbrock, basis, coef, progress=False)
    dist = evaluate(functions.rosenbrock, basis, coef, progress=False, client=client, tile_size=4)
    assert_array_equal(dist.loss, local.loss)

    shift = rng.normal(size=2)

    def bowl(th):
        return float(np.sum((th - shift) ** 2))

    for fn in (bowl, numba.njit(lambda th: np.sum((th - 0.5) ** 2) + np.sin(th[0]))):
        local = evaluate(fn, basis, coef, progress=False)
        dist = evaluate(fn, basis, coef, progress=False, client=client, tile_size=4)
        assert_array_equal(dist.loss, local.loss)
        assert dist.accuracy is None


@needs_dask
def test_shared_data_are_scattered_once_and_tasks_carry_only_their_tiles(client, monkeypatch):
    model, theta, X, y = _problem()
    d1, d2 = D.pair(model, theta, seed=2)
    scattered, submitted = [], []
    scatter, submit = client.scatter, client.submit

    def spy_scatter(data, **kw):
        scattered.append((data, kw))
        return scatter(data, **kw)

    def spy_submit(fn, *args, **kw):
        submitted.append(args)
        return submit(fn, *args, **kw)

    monkeypatch.setattr(client, "scatter", spy_scatter)
    monkeypatch.setattr(client, "submit", spy_submit)
    s = surface_2d(model, theta, d1, d2, X, y, alphas=6, betas=5, progress=False, client=client,
                   tile_size=4)  # fmt: skip
    assert s.loss.shape == (6, 5)
    assert len(scattered) == 1
    (target, basis), kw = scattered[0]
    assert kw["broadcast"] is True
    assert target.data.X.shape == X.shape and basis.shape == (3, model.n_params)
    assert len(submitted) == 8  # 30 points in tiles of 4
    for args in submitted:
        refs, (coef, threads) = args[:2], args[2:]
        assert all(type(r).__name__ == "Future" for r in refs)
        assert coef.shape[1] == 3 and coef.shape[0] <= 4 and threads == 1


@needs_dask
def test_progress_advances_per_finished_tile(client, monkeypatch):
    updates = []

    class Bar:
        def update(self, k):
            updates.append(k)

        def close(self):
            pass

    monkeypatch.setattr(landscape, "_progress", lambda total, enabled, desc: Bar())
    model, theta, X, y = _problem()
    slice_1d(model, theta, theta, X, y, alphas=23, progress=True, client=client, tile_size=5)
    assert updates[0] == 0  # nothing resumed
    assert sorted(updates[1:]) == [3, 5, 5, 5, 5]


@needs_dask
def test_interrupted_cluster_run_resumes_locally_and_back(client, tmp_path):
    model, theta, X, y = _problem()
    d1, d2 = D.pair(model, theta, seed=7)
    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-1, 1, 7), progress=False)
    whole = surface_2d(model, theta, d1, d2, X, y, **grid)

    class Stop(Exception):
        pass

    def stop_after(k):
        seen = []

        def on_tile(t, n_tiles):
            seen.append(t)
            if len(seen) == k:
                raise Stop

        return on_tile, seen

    # on the cluster, stopped after 3 of 7 tiles; resumed locally
    ckpt = tmp_path / "a"
    on_tile, seen = stop_after(3)
    with pytest.raises(Stop):
        surface_2d(model, theta, d1, d2, X, y, **grid, tile_size=10, checkpoint_dir=ckpt,
                   on_tile=on_tile, client=client)  # fmt: skip
    assert sorted(p.name for p in ckpt.glob("tile_*.npz")) == [
        f"tile_{t:06d}.npz" for t in sorted(seen)
    ]
    assert not _wait_released(client)  # the unfinished tiles were cancelled
    again = []
    resumed = surface_2d(model, theta, d1, d2, X, y, **grid, tile_size=10, checkpoint_dir=ckpt,
                         on_tile=lambda t, n: again.append(t))  # fmt: skip
    assert sorted(again) == sorted(set(range(7)) - set(seen))
    assert_array_equal(resumed.loss, whole.loss)
    assert_array_equal(resumed.accuracy, whole.accuracy)

    # locally, stopped after 2 tiles (default tile size); resumed on the cluster
    ckpt = tmp_path / "b"
    on_tile, seen = stop_after(2)
    coords = dict(alphas=np.linspace(-1, 1, 41), betas=np.linspace(-1, 1, 101))
    with pytest.raises(Stop):
        surface_2d(model, theta, d1, d2, X, y, **coords, checkpoint_dir=ckpt, on_tile=on_tile)
    again = []
    resumed = surface_2d(model, theta, d1, d2, X, y, **coords, checkpoint_dir=ckpt,
                         on_tile=lambda t, n: again.append(t), client=client)  # fmt: skip
    assert seen == [0, 1] and sorted(again) == [2]  # 4141 points in tiles of 2048
    assert_array_equal(resumed.loss, surface_2d(model, theta, d1, d2, X, y, **coords).loss)


@needs_dask
def test_worker_killed_mid_grid_still_completes_identically(client):
    """A worker process ended with SIGKILL while it runs tiles: the scheduler re-runs them on
    the other worker (and on the one its nanny restarts); the grid is the local one."""
    model, theta, X, y = _problem(sizes=(3, 64, 3), n=6000, seed=8)
    d1, d2 = D.pair(model, theta, seed=9)
    grid = dict(alphas=np.linspace(-1, 1, 24), betas=np.linspace(-1, 1, 20), progress=False)
    local = surface_2d(model, theta, d1, d2, X, y, **grid)
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    killed = {}

    def on_tile(t, n_tiles):
        if killed:
            return
        busy = client.processing().get(victim, ())
        if busy:  # the victim holds tiles: end it now
            os.kill(pids[victim], signal.SIGKILL)
            killed["tiles"] = len(busy)

    dist = surface_2d(model, theta, d1, d2, X, y, **grid, tile_size=4, client=client,
                      on_tile=on_tile)  # fmt: skip
    assert killed, "the worker was never seen holding a tile"
    assert_array_equal(dist.loss, local.loss)
    assert_array_equal(dist.accuracy, local.accuracy)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
    assert pids[victim] not in client.run(os.getpid).values()


# ----------------------------------------------------------------------------- bad input
@needs_dask
def test_bad_client_arguments(client):
    model, theta, X, y = _problem()
    with pytest.raises(TypeError, match=r"client must be a dask\.distributed\.Client"):
        slice_1d(model, theta, theta, X, y, alphas=3, client="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="device must be 'cpu'"):
        slice_1d(model, theta, theta, X, y, alphas=3, client=client, device="cuda")
    with pytest.raises(ValueError, match="n_threads"):
        slice_1d(model, theta, theta, X, y, alphas=3, client=client, n_threads=0)
    import distributed

    closed = distributed.Client(client.cluster)
    closed.close()
    with pytest.raises(ValueError, match="not running"):
        slice_1d(model, theta, theta, X, y, alphas=3, client=closed)


@needs_dask
def test_workers_with_another_fastscape_are_refused_before_any_work(client, monkeypatch):
    from fastscape.distributed import WorkerMismatchError

    model, theta, X, y = _problem()
    workers = re.escape(fastscape.__version__)
    monkeypatch.setattr(fastscape, "__version__", "0.0.0+elsewhere")  # this process only
    with pytest.raises(WorkerMismatchError, match=rf"runs fastscape {workers}, this process "
                       r"runs fastscape 0\.0\.0\+elsewhere; install the same"):  # fmt: skip
        slice_1d(model, theta, theta, X, y, alphas=3, client=client)
    assert not _wait_released(client)  # nothing was scattered


@needs_dask
def test_task_threads_never_exceed_the_workers_numba_threads(client):
    """n_threads is the Numba thread count of each task, capped at the worker's maximum (the
    result does not depend on it)."""
    model, theta, X, y = _problem()
    local = slice_1d(model, theta, theta, X, y, alphas=9, progress=False)
    for n in (1, 2, numba.config.NUMBA_NUM_THREADS + 3):
        dist = slice_1d(model, theta, theta, X, y, alphas=9, progress=False, client=client,
                        n_threads=n)  # fmt: skip
        assert_array_equal(dist.loss, local.loss)


# ----------------------------------------------------------------------------- sharded samples
def _sharded(X, y, rows):
    da = pytest.importorskip("dask.array")
    return da.from_array(X, chunks=(rows, -1)), da.from_array(y, chunks=rows)


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@needs_dask
def test_sharded_surface_equals_local_to_1e12_and_accuracy_exactly(client, tmp_path):
    """X and y as dask arrays in uneven row chunks: each chunk returns per-point sums, added in
    chunk order; the L2 term is added once on the client."""
    model = fastscape.MLP([3, 6, 3], "tanh", "softmax_ce", l2=0.03)
    _, _, X, y = _problem(n=70, seed=3)
    theta = model.init(2)
    d1, d2 = D.pair(model, theta, seed=4)
    grid = dict(alphas=5, betas=4, progress=False)
    local = surface_2d(model, theta, d1, d2, X, y, **grid)
    Xd, yd = _sharded(X, y, (30, 25, 15))
    dist = surface_2d(model, theta, d1, d2, Xd, yd, **grid, client=client)
    assert _rel(dist.loss, local.loss) < 1e-12
    assert_array_equal(dist.accuracy, local.accuracy)  # sums of whole counts
    again = surface_2d(model, theta, d1, d2, Xd, yd, **grid, client=client)
    assert_array_equal(again.loss, dist.loss)  # fixed chunk order: reproducible
    # checkpointed: a tile is written when all its chunks are back; a re-run reads them all
    ckpt = tmp_path / "ckpt"
    first = surface_2d(model, theta, d1, d2, Xd, yd, **grid, client=client, tile_size=7,
                       checkpoint_dir=ckpt)  # fmt: skip
    assert_array_equal(first.loss, dist.loss)
    assert len(list(ckpt.glob("tile_*.npz"))) == 3
    seen = []
    resumed = surface_2d(model, theta, d1, d2, Xd, yd, **grid, client=client, tile_size=7,
                         checkpoint_dir=ckpt, on_tile=lambda t, n: seen.append(t))  # fmt: skip
    assert seen == [] and resumed.loss.tobytes() == dist.loss.tobytes()
    with pytest.raises(ValueError, match="different evaluation"):  # other data, same dir
        surface_2d(model, theta, d1, d2, *_sharded(X[::-1], y[::-1], 35), **grid,
                   client=client, tile_size=7, checkpoint_dir=ckpt)  # fmt: skip
    assert dist.settings["n_samples"] == 70
    assert not _wait_released(client)


@needs_dask
def test_sharded_gradient_hvp_and_eigenvalues_equal_local_to_1e12(client):
    from fastscape import curvature
    from fastscape.distributed import ShardedData, shard

    model = fastscape.MLP([3, 5, 2], "tanh", "softmax_ce", l2=0.01)
    _, _, X, y = _problem(sizes=(3, 5, 2), n=90, seed=5)
    theta = model.init(1)
    data = shard(client, model, *_sharded(X, y, 40))
    assert isinstance(data, ShardedData) and data.rows == [40, 40, 10]
    value, g = model.grad(theta, data)
    value0, g0 = model.grad(theta, X, y)
    assert abs(value - value0) <= 1e-12 * abs(value0) and _rel(g, g0) < 1e-12
    V = np.random.default_rng(0).normal(size=(3, model.n_params))
    local = curvature.HessianOperator(model, theta, X, y).rows(V)
    for H in (
        curvature.HessianOperator(model, theta, data),
        curvature.HessianOperator(model, theta, X, y, client=client),  # in memory: sharded
    ):
        assert _rel(H.rows(V), local) < 1e-12
        assert_array_equal(H.rows(V), H.rows(V))
    kw = dict(k=2, method="lanczos", which="LA", tol=1e-10)
    top0 = curvature.top_eigen(model, theta, X, y, **kw)
    top = curvature.top_eigen(model, theta, X, y, **kw, client=client)
    assert _rel(top.eigenvalues, top0.eigenvalues) < 1e-12
    tr0 = curvature.hessian_trace(model, theta, X, y, n_samples=8)
    tr = curvature.hessian_trace(model, theta, data, n_samples=8)
    assert abs(tr.estimate - tr0.estimate) <= 1e-12 * abs(tr0.estimate)
    dens0 = curvature.spectral_density(model, theta, X, y, n_runs=2, n_iter=6)
    dens = curvature.spectral_density(model, theta, X, y, n_runs=2, n_iter=6, client=client)
    assert _rel(dens.nodes, dens0.nodes) < 1e-10
    from fastscape.critical import classify_point

    kw = dict(grad_tol=10.0, k=2, eig_tol=1e-10)
    point0 = classify_point(model, theta, X, y, method="lanczos", **kw)
    point = classify_point(model, theta, data, **kw)  # auto: Lanczos on sharded data
    assert point.method == point0.method and point.kind == point0.kind
    assert _rel(point.eigenvalues, point0.eigenvalues) < 1e-10
    with pytest.raises(ValueError, match="exact Hessian is formed on this machine"):
        curvature.top_eigen(model, theta, data, method="exact")
    # a ShardedData goes where X goes, without client= (its own), and outlives the call
    d1 = D.random(model, theta, seed=2)
    line0 = slice_1d(model, theta, d1, X, y, alphas=5, progress=False)
    for _ in range(2):
        line = slice_1d(model, theta, d1, data, alphas=5, progress=False)
        assert _rel(line.loss, line0.loss) < 1e-12
    sharp0 = epsilon_sharpness(model, theta, X, y, eps=0.1, n_directions=6, seed=1)
    sharp = epsilon_sharpness(model, theta, *_sharded(X, y, 40), eps=0.1, n_directions=6,
                              seed=1, client=client)  # fmt: skip
    assert abs(sharp.max_increase - sharp0.max_increase) <= 1e-12 * sharp0.base_loss
    data.close()


@needs_dask
def test_sharded_edge_of_stability_follows_the_local_run(client):
    from fastscape.eos import edge_of_stability

    model, _, X, y = _problem(sizes=(2, 4, 2), n=40, seed=6)
    kw = dict(lr=0.5, steps=4, every=2, seed=3, tol=1e-10)
    local = edge_of_stability(model, X, y, **kw)
    dist = edge_of_stability(model, *_sharded(X, y, 15), **kw, client=client)
    assert _rel(dist.loss, local.loss) < 1e-12
    assert _rel(dist.lambda_max, local.lambda_max) < 1e-10


@needs_dask
def test_a_product_sends_only_its_vectors(client, monkeypatch):
    """The chunks and the pass at theta stay on the workers: every task of a product carries
    only references and V (inside it when small, else scattered once per product)."""
    from fastscape import curvature, distributed

    model, theta, X, y = _problem(n=200)
    H = curvature.HessianOperator(model, theta, X, y, client=client)
    sent = []
    real_submit, real_scatter = client.submit, client.scatter

    def submit(fn, *args, **kw):
        sent.extend(a for a in args if isinstance(a, np.ndarray))
        return real_submit(fn, *args, **kw)

    def scatter(data, **kw):
        sent.append(("scatter", [np.shape(d) for d in data]))
        return real_scatter(data, **kw)

    monkeypatch.setattr(client, "submit", submit)
    monkeypatch.setattr(client, "scatter", scatter)
    V = np.ones((2, model.n_params))
    for _ in range(3):
        H.rows(V)
    assert [a.shape for a in sent] == [V.shape] * (3 * len(H.data.parts))  # inside the tasks
    sent.clear()
    monkeypatch.setattr(distributed, "INLINE_BYTES", V.nbytes - 1)
    for _ in range(3):
        H.rows(V)
    assert sent == [("scatter", [V.shape])] * 3  # scattered once per product


@needs_dask
def test_sharded_inputs_with_mismatched_chunks_are_refused(client):
    da = pytest.importorskip("dask.array")
    model, theta, X, y = _problem(n=60)
    Xd = da.from_array(X, chunks=(20, 3))
    with pytest.raises(ValueError, match=r"X and y are chunked differently along the rows: "
                       r"X \(20, 20, 20\), y \(30, 30\); .*rechunk"):  # fmt: skip
        slice_1d(model, theta, theta, Xd, da.from_array(y, chunks=30), alphas=3, client=client)
    with pytest.raises(ValueError, match="X has 60 rows and y has 50 rows"):
        slice_1d(model, theta, theta, Xd, da.from_array(y[:50], chunks=25), alphas=3,
                 client=client)  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        slice_1d(model, theta, theta, Xd[Xd[:, 0] > 0], y[:30], alphas=3, client=client)
    with pytest.raises(ValueError, match="pass client="):
        slice_1d(model, theta, theta, Xd, y, alphas=3)
    bad = y.copy()
    bad[45] = 7  # a label out of range, in the third chunk: found on its worker, raised here
    with pytest.raises(ValueError, match="7"):
        slice_1d(model, theta, theta, Xd, bad, alphas=3, client=client)
    assert not _wait_released(client)


# ----------------------------------------------------------------------------- lost scheduler
@needs_dask
def test_a_lost_scheduler_is_one_line_and_leaves_whole_tiles(tmp_path):
    """The scheduler (its own process) killed mid-grid: a one-line SchedulerLostError; every
    tile written is whole, and a local run resumes from them to the local bits. A product of a
    sharded operator after the loss says the same."""
    import distributed

    from fastscape import curvature
    from fastscape.distributed import SchedulerLostError

    sfile = tmp_path / "scheduler.json"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sched = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sfile)], **quiet,
    )  # fmt: skip
    worker = None
    try:
        end = time.monotonic() + 60
        while not sfile.exists() and time.monotonic() < end:
            time.sleep(0.1)
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             str(sfile), "--nthreads", "1", "--no-dashboard"], **quiet,
        )  # fmt: skip
        cl = distributed.Client(scheduler_file=str(sfile), timeout=30)
        cl.wait_for_workers(1, timeout=60)
        model, theta, X, y = _problem()
        d1, d2 = D.pair(model, theta, seed=1)
        grid = dict(alphas=12, betas=10, progress=False, tile_size=4)
        H = curvature.HessianOperator(model, theta, X, y, client=cl)
        H.rows(np.ones(model.n_params))

        def on_tile(t, n):
            if sched.poll() is None:
                sched.kill()
                sched.wait()

        ckpt = tmp_path / "ckpt"
        with pytest.raises(SchedulerLostError) as info:
            surface_2d(model, theta, d1, d2, X, y, **grid, client=cl, checkpoint_dir=ckpt,
                       on_tile=on_tile)  # fmt: skip
        message = str(info.value)
        assert "\n" not in message and "lost the connection to the Dask scheduler" in message
        with pytest.raises(SchedulerLostError, match="during a Hessian-vector product"):
            H.rows(np.ones(model.n_params))
        written = sorted(ckpt.glob("tile_*.npz"))
        assert 1 <= len(written) < 30
        for path in written:  # whole files only
            with np.load(path) as z:
                assert z["loss"].shape == (4,)
        resumed = surface_2d(model, theta, d1, d2, X, y, **grid, checkpoint_dir=ckpt)
        local = surface_2d(model, theta, d1, d2, X, y, **grid)
        assert_array_equal(resumed.loss, local.loss)
        cl.close(timeout=5)
    finally:
        for proc in (worker, sched):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------- the CLI
@needs_dask
def test_cli_workers_give_the_local_grid_bitwise(tmp_path, capsys):
    """`fastscape landscape --workers 2`: a LocalCluster on loopback runs the grid and the
    slices; the surface and the slices are the local run's bits, and the dashboard line is
    printed (or says why there is none)."""
    from fastscape import io
    from fastscape.cli import main

    argv = ["landscape", "--points", "7", "--steps", "20", "--sharpness-directions", "4",
            "--top", "1"]  # fmt: skip
    assert main([*argv, "--quiet", "--out", str(tmp_path / "local")]) == 0
    assert main([*argv, "--workers", "2", "--out", str(tmp_path / "dask")]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert re.search(r"Dask cluster: 2 workers at tcp://127\.0\.0\.1:\d+", out)
    assert re.search(r", (dashboard http://\S+|no dashboard: pip install bokeh)\n", out)
    local, dist = (io.load(tmp_path / d / "surface.npz") for d in ("local", "dask"))
    assert_array_equal(dist.loss, local.loss)
    assert_array_equal(dist.accuracy, local.accuracy)
    slices = [(tmp_path / d / "slices.csv").read_text() for d in ("local", "dask")]
    assert slices[0] == slices[1]


@needs_dask
def test_cli_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, capsys):
    import socket

    import dask

    from fastscape.cli import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["landscape", "--points", "3", "--steps", "5", "--quiet", "--scheduler",
            f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "o")]  # fmt: skip
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err
    assert not (tmp_path / "o").exists()


@needs_dask
def test_cli_workers_with_another_fastscape_is_one_line(tmp_path, capsys, monkeypatch):
    from fastscape.cli import main

    monkeypatch.setattr(fastscape, "__version__", "0.0.0+elsewhere")  # this process only
    argv = ["landscape", "--points", "3", "--steps", "5", "--quiet", "--workers", "1",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "install the same fastscape version on every worker" in err
    assert not (tmp_path / "o").exists()


@needs_dask
def test_cli_eos_on_workers_follows_the_local_run(tmp_path):
    """`fastscape eos --workers 1`: the samples sharded on the worker, the gradient of every
    step and the HVPs there; the losses equal the local run's to 1e-12 (1e-15 per step)."""
    import json

    from fastscape.cli import main

    argv = ["eos", "--steps", "6", "--every", "3", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert main([*argv, "--workers", "1", "--out", str(tmp_path / "dask")]) == 0
    local, dist = (json.loads((tmp_path / d / "eos.json").read_text()) for d in ("local", "dask"))
    assert _rel(np.array(dist["loss"]), np.array(local["loss"])) < 1e-12
    assert _rel(np.array(dist["lambda_max"]), np.array(local["lambda_max"])) < 1e-10
    assert dist["settings"]["workers"] == 1 and local["settings"]["workers"] is None
