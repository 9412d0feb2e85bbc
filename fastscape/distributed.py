"""Work on a Dask cluster: what ``client=`` does (tiles of points, shards of samples).

The span engine splits its points into tiles; with a ``dask.distributed.Client`` each tile is a
task that runs the same seam call on a worker as a local run does (the CPU kernels, see
:mod:`fastscape._device`), so a distributed result is bitwise equal to a local one on workers
with the same CPU and the same fastscape and Numba versions. This module is the only one that
talks to Dask, and it imports Dask only when a client is passed: users without the ``dask``
extra never import it.

What :func:`map_tiles` does per call:

- the arguments shared by every tile (the model with its data, the basis) are sent to every
  worker **once**, with ``client.scatter(..., broadcast=True)``; each task holds only a
  reference to them, plus its own small arguments (its rows of coefficients);
- results come back to the client as tiles finish (``as_completed``); only the client writes
  (checkpoints, progress);
- before anything is sent, every worker is asked for its fastscape version
  (:func:`check_workers`): a worker without fastscape, or with another version, is a one-line
  :class:`WorkerMismatchError`, not a task failing on the cluster;
- a task on a worker that dies is re-run elsewhere by the scheduler (Dask's own handling of lost
  workers, up to the ``distributed.scheduler.allowed-failures`` setting). Exceptions raised by
  the kernel are not retried: the kernels are deterministic, a second try would fail alike;
- when the caller stops early (an exception in a callback, Ctrl-C), the tasks not yet finished
  are cancelled and the shared data released.

**Shards of samples** (:func:`shard`, :class:`ShardedData`): ``X`` and ``y`` as dask arrays,
rows chunked alike (or in-memory data cut into chunks), validated and kept on the workers, one
Batch per chunk. The dispatch seam (:mod:`fastscape._device`) hands a ShardedData its calls
(loss, gradient, the HVP operator); the span engine runs tiles x chunks
(:func:`span_tiles`). Each task returns sums over its chunk's rows; the client adds them in
chunk order, divides by n and adds the L2 term once: reproducible, equal to local to about
1e-15 relative. The Hessian operator (:class:`ShardedHVP`) keeps its pass at theta on the
workers; each product sends only the vectors.

A lost scheduler, while waiting on the cluster, is a one-line :class:`SchedulerLostError`.
:func:`cluster_client` is the command line's client (``--scheduler`` / ``--workers``).

Threads: each task runs its kernel on ``n_threads`` Numba threads (default 1), set in the
worker thread that runs it (Numba's thread count is per calling thread). Dask runs
``threads_per_worker`` tasks at once in a worker, so a worker uses ``threads_per_worker x
n_threads`` cores; keep that at or below the cores it has (Dask itself starts its worker
processes with ``OMP_NUM_THREADS=1`` for the same reason). ``docs/cluster.md`` gives the
recommended settings.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

#: How to get Dask.
INSTALL_HINT = 'pip install "fastscape[dask]"'

#: Tiles per Dask worker thread when the caller does not choose a tile size (a few per thread
#: let a fast worker take over the tiles of a slow one; each tile re-forms the first-layer
#: products, so more tiles cost more work: bench/NOTES.md).
TILES_PER_THREAD = 2

#: Largest block of vectors sent inside the tasks of a sharded product (above: scattered once;
#: inline saves a round trip per product, bench/NOTES.md).
INLINE_BYTES = 1 << 20


def check_client(client):
    """Validate the ``client=`` argument: a running ``dask.distributed.Client``.

    Parameters
    ----------
    client : dask.distributed.Client

    Returns
    -------
    dask.distributed.Client
        ``client`` itself.

    Raises
    ------
    ImportError
        Dask's distributed scheduler is not installed (the message names the extra).
    TypeError
        ``client`` is not a Client.
    ValueError
        The client is closed.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ImportError(
            "client= runs the work on a Dask cluster, but dask.distributed is not installed; "
            f"install it with {INSTALL_HINT}"
        ) from None
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"client is {client.status!r}, not running; connect a new Client")
    return client


class WorkerMismatchError(RuntimeError):
    """A worker of the cluster cannot run fastscape's tasks: it lacks fastscape, or runs
    another version of it than the client."""


def _version() -> str:
    """The fastscape version this process imports (the package is loaded: this module is
    part of it; read from ``sys.modules`` so that no import cycle is written down)."""
    return sys.modules[__package__].__version__


def check_workers(client) -> None:
    """Every worker of the client's cluster imports the fastscape version this process runs.

    One round trip to the workers (``client.run``); the tasks call fastscape's functions by
    name, so a worker without fastscape could not run them, and one with another version might
    compute other bits.

    Parameters
    ----------
    client : dask.distributed.Client

    Raises
    ------
    WorkerMismatchError
        A worker lacks fastscape or runs another version (the message names one worker).
    """
    mine = _version()
    found = client.run(_version, on_error="return")
    for address, version in sorted(found.items()):
        if version != mine:
            what = (
                f"cannot import it ({type(version).__name__}: {version})"
                if isinstance(version, BaseException)
                else f"runs fastscape {version}"
            )
            raise WorkerMismatchError(
                f"the Dask worker {address} {what}, this process runs fastscape {mine}; "
                "install the same fastscape version on every worker"
            )


def total_threads(client) -> int:
    """Dask threads of the client's workers now: the tasks that can run at once.

    Parameters
    ----------
    client : dask.distributed.Client

    Returns
    -------
    int
        0 while the cluster has no workers.
    """
    return int(sum(client.nthreads().values()))


def default_tile(client, m: int, cap: int) -> int:
    """Points per tile for ``m`` points on the client's cluster when the caller does not say.

    Parameters
    ----------
    client : dask.distributed.Client
    m : int
        Number of points.
    cap : int
        Largest tile (``config.SPAN_TILE``).

    Returns
    -------
    int
        :data:`TILES_PER_THREAD` tiles per worker thread, at most ``cap`` points each
        (``min(cap, m)`` while the cluster has no workers yet: start them first, e.g.
        ``client.wait_for_workers(n)``).
    """
    n = total_threads(client)
    if n == 0:
        return max(1, min(cap, m))
    return max(1, min(cap, -(-m // (TILES_PER_THREAD * n))))


def map_tiles(
    client,
    fn: Callable,
    shared: Sequence,
    tiles: Iterable[tuple[int, tuple]],
    name: str = "fastscape-tile",
) -> Iterator[tuple[int, object]]:
    """Run ``fn(*shared, *args)`` for each tile ``(index, args)`` on the workers.

    Parameters
    ----------
    client : dask.distributed.Client
        Validated (:func:`check_client`).
    fn : callable
        A module-level function (pickled by reference: the workers import fastscape).
    shared : sequence
        Arguments common to every tile, sent once to every worker (scattered, broadcast).
    tiles : iterable of (int, tuple)
        Tile index and the tile's own arguments (small: they travel with each task).
    name : str
        Prefix of the task keys (what the Dask dashboard shows).

    Yields
    ------
    (int, object)
        Tile index and ``fn``'s result, in the order the tiles finish. Closing the generator
        early (``.close()``, or an exception in the caller's loop followed by ``.close()``)
        cancels the unfinished tasks.
    """
    from distributed import as_completed

    check_workers(client)
    token = uuid.uuid4().hex
    # hash=False: a fresh key per call, so concurrent calls never share (or release) each
    # other's data
    refs = client.scatter(list(shared), broadcast=True, hash=False)
    futures = {}
    try:
        for t, args in tiles:
            fut = client.submit(fn, *refs, *args, key=(f"{name}-{token}", t))
            futures[fut] = t
        try:
            for fut, result in as_completed(list(futures), with_results=True):
                _check_result(client, fut, result, "an evaluation")
                t = futures.pop(fut)
                yield t, result
        except SchedulerLostError:
            raise
        except Exception as exc:
            if _lost(client, exc):
                _raise_lost(client, exc, "an evaluation")
            raise
    finally:
        if futures and client.status == "running":
            client.cancel(list(futures))
        futures.clear()
        for ref in refs:
            ref.release()


# ----------------------------------------------------------------------------- lost scheduler
class SchedulerLostError(ConnectionError):
    """The connection to the Dask scheduler was lost during a call (the message says what
    was kept: checkpointed tiles are whole files, nothing is written half)."""


def _lost(client, exc: BaseException) -> bool:
    """Whether ``exc``, raised while waiting on the cluster, means the scheduler is gone."""
    from distributed.comm.core import CommClosedError

    if client.status in ("closed", "closing", "connecting", "failed"):
        return True
    return isinstance(exc, (CommClosedError, OSError))


def _raise_lost(client, exc: BaseException | None, what: str):
    del exc  # the cause is a cancelled future or a closed comm: nothing more to say
    address = getattr(client.scheduler, "address", None) or "?"
    raise SchedulerLostError(
        f"lost the connection to the Dask scheduler at {address} during {what}; start the "
        "scheduler again and re-run the call (with checkpoint_dir, the finished tiles are kept "
        "and the run resumes)"
    ) from None


def _check_result(client, fut, result, what: str) -> None:
    """A future that ``as_completed`` hands back cancelled (its result is the exception
    object, not raised): the scheduler was lost, or someone cancelled the task."""
    if fut.status == "cancelled" or isinstance(result, BaseException):
        exc = result if isinstance(result, BaseException) else RuntimeError("cancelled")
        if _lost(client, exc):
            _raise_lost(client, exc, what)
        raise RuntimeError(f"a task of {what} was cancelled on the cluster ({exc})")


# ----------------------------------------------------------------------------- sharded samples
def is_dask_array(x) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (checked without importing Dask)."""
    return type(x).__module__.startswith("dask.array") and hasattr(x, "to_delayed")


def _row_chunks(X, y):
    """``(X, y)`` as dask arrays with the same row chunks and one chunk across columns.

    One of them may be a NumPy array: it is cut like the other. Raises a ValueError naming the
    argument for unknown chunk sizes, different row counts or different row chunks.
    """
    import dask.array as da

    ref = X if is_dask_array(X) else y
    for name, a in (("X", X), ("y", y)):
        if is_dask_array(a) and any(np.isnan(c) for c in a.chunks[0]):
            raise ValueError(
                f"{name} has unknown chunk sizes (NaN rows per chunk); call "
                f"{name}.compute_chunk_sizes() first"
            )
    if y is None:
        raise ValueError("y is required")
    arrays = []
    for a in (X, y):
        if not is_dask_array(a):
            a = np.asarray(a)
            if a.ndim == 0 or a.shape[0] != ref.shape[0]:
                raise ValueError(
                    f"X has {X.shape[0]} rows and y has {np.shape(a)[:1] or 'no'} rows"
                )
            a = da.from_array(a, chunks=(ref.chunks[0], *(-1 for _ in a.shape[1:])))
        arrays.append(a)
    X, y = arrays
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n, d), got {X.ndim} dimensions")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows and y has {y.shape[0]} rows")
    if X.chunks[0] != y.chunks[0]:
        raise ValueError(
            f"X and y are chunked differently along the rows: X {X.chunks[0]}, y {y.chunks[0]}; "
            "give them the same row chunks, e.g. y = y.rechunk({0: X.chunks[0]})"
        )
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    if y.ndim == 2 and y.numblocks[1] > 1:
        y = y.rechunk({1: -1})
    return X, y


def _batch(model, X, y):
    """Task: one chunk's rows as a validated Batch (the checks of ``model.batch``)."""
    return model.batch(np.asarray(X), np.asarray(y))


class ShardedData:
    """The samples of a model held on the workers of a Dask cluster, one Batch per chunk.

    Built by :func:`shard`. Pass it wherever a function takes ``X`` (with ``y=None``): the
    model's ``loss``, ``grad`` and ``hvp``, :class:`fastscape.curvature.HessianOperator` and
    every solver built on it, :func:`fastscape.eos.edge_of_stability`,
    :func:`fastscape.critical.classify_point`, :func:`fastscape.landscape.evaluate`. The chunks
    stay in the workers' memory for as long as this object lives (or until :meth:`close`):
    each call sends only its small arguments (theta, the vectors, the basis).

    Every operation runs one task per chunk on the worker holding it; each returns the **sums**
    over its rows, and the client adds them in chunk order and divides by n, then adds the L2
    term once: reproducible, and equal to the local result to about 1e-15 relative (one more
    rounding per chunk; accuracies, sums of whole counts, are equal exactly).

    Attributes
    ----------
    client : dask.distributed.Client
    model : MLP
    parts : list of Future
        One validated :class:`fastscape.data.Batch` per chunk, in chunk order.
    rows : list of int
        Rows per chunk.
    n : int
        Rows in all.
    X, Y : dask.array.Array or (n, d) and (n, out) arrays
        The arrays the chunks came from: dask arrays, or the validated in-memory data.
    token : str or None
        Dask's token of dask-array inputs (what checkpoints fingerprint).
    n_threads : int
        Numba threads of each task.
    """

    #: what the dispatch seam (``fastscape._device``) looks for
    sharded = True

    def __init__(self, client, model, X, Y, parts, rows, token, n_threads=1):
        self.client = client
        self.model = model
        self.X = X
        self.Y = Y
        self.parts = parts
        self.rows = rows
        self.n = int(sum(rows))
        self.token = token
        self.n_threads = n_threads

    def __repr__(self) -> str:
        return f"ShardedData(n={self.n}, chunks={len(self.rows)})"

    def close(self) -> None:
        """Release the chunks from the workers' memory."""
        if self.parts and self.client.status == "running":
            self.client.cancel(self.parts)
        self.parts = []

    def combine(self, partial_sums: list) -> np.ndarray:
        """``Σ_c partial_c / n``, added in chunk order (reproducible)."""
        total = np.array(partial_sums[0], dtype=np.float64, copy=True)
        for s in partial_sums[1:]:
            total += s
        return total / self.n

    # the operations of a backend (called by fastscape._device's dispatchers)
    def loss_grad(self, spec, theta) -> tuple[float, np.ndarray]:
        """Mean loss and gradient (P,) at theta (validated)."""
        from ._device import add_penalty

        [(_, parts)] = list(
            map_sharded(self, _grad_part, (_no_penalty(spec), theta), [(0, (self.n_threads,))],
                        "fastscape-grad")
        )  # fmt: skip
        g = self.combine([p[1] for p in parts])
        value = float(self.combine([np.array([p[0]]) for p in parts])[0])
        return add_penalty(spec, theta, value, g), g

    def loss(self, spec, theta) -> float:
        """Mean loss at theta (validated)."""
        return self.loss_grad(spec, theta)[0]

    def hvp_operator(self, spec, theta):
        """``V (K, P) -> (K, P)``: a :class:`ShardedHVP` at theta (validated)."""
        return ShardedHVP(self, spec, theta)

    def hvp(self, spec, theta, V) -> np.ndarray:
        """Rows ``H @ V[k]`` at theta, (K, P)."""
        op = ShardedHVP(self, spec, theta)
        try:
            return op(V)
        finally:
            op.close()


def shard(client, model, X, y=None, n_shards: int | None = None, n_threads: int = 1) -> ShardedData:
    """Put the samples of ``model`` on the client's workers, one validated chunk per task.

    Parameters
    ----------
    client : dask.distributed.Client
    model : MLP
    X : (n, d) dask.array.Array or array
        A dask array keeps its row chunks (persist it first, ``X = X.persist()``, to read it
        once), and a chunk lost with a worker is read again from its source; an in-memory
        array (or Batch) is validated here, cut into ``n_shards`` row chunks and scattered to
        the workers (a chunk lost with a worker is lost: shard again).
    y : (n,) or (n, out) dask.array.Array or array
        With the same row chunks as ``X`` when both are dask arrays.
    n_shards : int, optional
        Chunks of in-memory data; default: one per worker thread.
    n_threads : int
        Numba threads of each task (at most the workers' ``NUMBA_NUM_THREADS``).

    Returns
    -------
    ShardedData

    Raises
    ------
    ValueError
        Mismatched rows or row chunks of ``X`` and ``y``, unknown chunk sizes, or what
        ``model.batch`` refuses in a chunk (raised here, before any product).
    """
    import dask
    from distributed import wait

    from .models import MLP, Batch

    check_client(client)
    if not isinstance(model, MLP):
        raise TypeError(f"sharded samples need an MLP model, got {type(model).__name__}")
    if isinstance(X, ShardedData):
        if y is not None:
            raise ValueError("y must be None when X is sharded data (it holds the targets)")
        return X
    if not (is_dask_array(X) or is_dask_array(y)):
        # in memory: validated here, cut into row chunks sent straight to the workers (no
        # graph through the scheduler; a worker lost takes its chunk with it)
        data = model.batch(X, y)
        n = data.X.shape[0]
        k = max(1, total_threads(client)) if n_shards is None else int(n_shards)
        bounds = [(c * n) // k for c in range(k + 1)]
        pieces = [Batch(data.X[a:b], data.Y[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
        check_workers(client)
        parts = client.scatter(pieces, hash=False)
        rows = [p.X.shape[0] for p in pieces]
        return ShardedData(client, model, data.X, data.Y, parts, rows, None, n_threads)
    X, y = _row_chunks(X, y)
    token = dask.base.tokenize(X, y)
    check_workers(client)
    xs = X.to_delayed().ravel()
    ys = y.to_delayed().ravel()
    rows = [int(r) for r in X.chunks[0]]
    keep = [i for i, r in enumerate(rows) if r > 0]
    tasks = [dask.delayed(_batch, pure=False)(model, xs[i], ys[i]) for i in keep]
    parts = client.compute(tasks)
    wait(parts)
    for i, f in zip(keep, parts):
        if f.status == "error":
            exc = f.exception()  # the chunk's validation error, raised here
            client.cancel(parts)
            start = sum(rows[:i])
            exc.add_note(f"(in rows {start}:{start + rows[i]}, chunk {i} of the sharded data)")
            raise exc
    return ShardedData(client, model, X, y, parts, [rows[i] for i in keep], token, n_threads)


def _no_penalty(spec):
    """The kernel spec without its L2 term (added once, on the client)."""
    import dataclasses

    return dataclasses.replace(spec, l2=0.0)


def _span_part(part, spec, basis, coef, n_threads):
    """Task: per-point sums of the losses and hits of one chunk."""
    from ._device import BACKENDS
    from ._threads import threads

    with threads(n_threads):
        loss, hits = BACKENDS["cpu"].span_eval(spec, basis, coef, part, "float64")
    n = part.X.shape[0]
    return loss * n, np.rint(hits * n)


def map_sharded(
    data: ShardedData,
    fn: Callable,
    shared: Sequence,
    tiles: Iterable[tuple[int, tuple]],
    name: str = "fastscape-shard",
) -> Iterator[tuple[int, list]]:
    """Run ``fn(part, *shared, *args)`` for every tile ``(index, args)`` and every chunk.

    Parameters
    ----------
    data : ShardedData
    fn : callable
        A module-level function taking a chunk's Batch first.
    shared : sequence
        Arguments common to every task, sent once to every worker (scattered, broadcast).
    tiles : iterable of (int, tuple)
        Tile index and the tile's own (small) arguments.
    name : str
        Prefix of the task keys (what the Dask dashboard shows).

    Yields
    ------
    (int, list)
        Tile index and the results of its chunks **in chunk order**, once all of them are
        back (tiles in the order they complete). Closing the generator cancels the rest.
    """
    from distributed import as_completed

    client = data.client
    token = uuid.uuid4().hex
    refs = client.scatter(list(shared), broadcast=True, hash=False)
    futures = {}
    got: dict[int, list] = {}
    C = len(data.parts)
    try:
        for t, args in tiles:
            got[t] = [None] * C
            for c, part in enumerate(data.parts):
                fut = client.submit(fn, part, *refs, *args, key=(f"{name}-{token}", t, c))
                futures[fut] = (t, c)
        try:
            for fut, result in as_completed(list(futures), with_results=True):
                _check_result(client, fut, result, "a sharded evaluation")
                t, c = futures.pop(fut)
                got[t][c] = result
                if all(r is not None for r in got[t]):
                    yield t, got.pop(t)
        except SchedulerLostError:
            raise
        except Exception as exc:
            if _lost(client, exc):
                _raise_lost(client, exc, "a sharded evaluation")
            raise
    finally:
        if futures and client.status == "running":
            client.cancel(list(futures))
        futures.clear()
        for ref in refs:
            ref.release()


def span_tiles(data: ShardedData, basis, tiles) -> Iterator[tuple[int, tuple]]:
    """The span engine on sharded samples, tile by tile.

    Each chunk returns per-point sums of the losses and hits; they are added in chunk order
    and divided by n on the client, which also adds the L2 term. Hits are whole counts, so the
    accuracy equals the local one exactly; the loss equals it to about 1e-15 relative (one
    more rounding per chunk).

    Parameters
    ----------
    data : ShardedData
    basis : (K, P) float64, validated
    tiles : iterable of (int, ((m_t, K) array, int))
        Tile index, its coefficients and the Numba threads of its tasks.

    Yields
    ------
    (int, ((m_t,) array, (m_t,) array or None))
        Tile index, mean loss and accuracy (None for MSE models), as tiles complete.
    """
    from ._device import span_penalty

    model = data.model
    coefs = {}

    def args():
        for t, (coef, n_threads) in tiles:
            coefs[t] = coef
            yield t, (coef, n_threads)

    gen = map_sharded(data, _span_part, (_no_penalty(model.spec), basis), args(), "fastscape-span")
    try:
        for t, parts in gen:
            loss = data.combine([p[0] for p in parts])
            coef = coefs.pop(t)
            if model.spec.penalty is not None:
                loss += span_penalty(model.spec, basis, coef)
            acc = data.combine([p[1] for p in parts]) if model.is_classifier else None
            yield t, (loss, acc)
    finally:
        gen.close()


def _grad_part(part, spec, theta, n_threads):
    """Task: the sums over one chunk of the losses and of their gradients."""
    from ._device import BACKENDS
    from ._threads import threads

    with threads(n_threads):
        value, g = BACKENDS["cpu"].loss_grad(spec, theta, part, "float64")
    n = part.X.shape[0]
    return value * n, g * n


class _HVPPart:
    """The pass at theta over one chunk, kept on the worker for the operator's products.

    Pickled as its inputs (the chunk, spec and theta): moved or spilled, it re-forms the pass
    where it lands rather than sending the cache."""

    def __init__(self, part, spec, theta):
        from ._device import BACKENDS

        self.args = (part, spec, theta)
        self.n = part.X.shape[0]
        self.apply = BACKENDS["cpu"].hvp_operator(spec, theta, part, "float64")

    def __reduce__(self):
        return (_HVPPart, self.args)


def _hvp_part(state: _HVPPart, V, n_threads):
    """Task: the sums over one chunk of the Hessian-vector products, (K, P)."""
    from ._threads import threads

    with threads(n_threads):
        return state.apply(V) * state.n


class ShardedHVP:
    """``V (K, P) -> (K, P)``, rows ``H @ V[k]``, with the samples sharded on the workers.

    The pass at theta is made once per chunk, on the worker that holds it, and kept there;
    each product sends V to the workers (inside the tasks up to :data:`INLINE_BYTES`, else
    scattered once), runs one task per chunk and adds the partial products in chunk order on
    the client (then the L2 term). Equal to the local operator to
    about 1e-15 relative.

    Parameters
    ----------
    data : ShardedData
    spec : ModelSpec
        The model's (``model.spec``).
    theta : (P,) float64, validated
    """

    def __init__(self, data: ShardedData, spec, theta):
        from distributed import wait

        self.data = data
        self.spec = spec
        self.theta = theta
        client = data.client
        self._token = uuid.uuid4().hex
        spec0 = _no_penalty(spec)
        name = f"fastscape-hvp-pass-{self._token}"
        self.states = [
            client.submit(_HVPPart, part, spec0, theta, key=(name, c))
            for c, part in enumerate(data.parts)
        ]
        try:
            wait(self.states)
        except SchedulerLostError:
            raise
        except Exception as exc:
            if _lost(client, exc):
                _raise_lost(client, exc, "the pass at theta")
            raise
        for f in self.states:
            if f.status == "error":
                f.result()
        self._step = 0

    def __call__(self, V) -> np.ndarray:
        from ._device import add_penalty

        data = self.data
        client = data.client
        self._step += 1
        if client.status != "running":  # reconnecting or closed: the chunks are gone too
            _raise_lost(client, None, "a Hessian-vector product")
        try:
            # small blocks travel inside the tasks (one message each); larger ones are
            # scattered once to the workers and the tasks hold a reference
            big = V.nbytes > INLINE_BYTES
            ref = client.scatter([V], broadcast=True, hash=False)[0] if big else V
            name = f"fastscape-hvp-{self._token}"
            futs = [
                client.submit(_hvp_part, s, ref, data.n_threads, key=(name, self._step, c))
                for c, s in enumerate(self.states)
            ]
            parts = client.gather(futs)
        except SchedulerLostError:
            raise
        except Exception as exc:
            if _lost(client, exc):
                _raise_lost(client, exc, "a Hessian-vector product")
            raise
        if big:
            ref.release()
        out = data.combine(parts)
        add_penalty(self.spec, self.theta, 0.0, None, V, out)
        return out

    def close(self) -> None:
        """Release the passes at theta from the workers."""
        if self.states and self.data.client.status == "running":
            self.data.client.cancel(self.states)
        self.states = []


# ----------------------------------------------------------------------------- the CLI's cluster
@contextlib.contextmanager
def cluster_client(
    scheduler: str | None = None, workers: int | None = None, timeout: float | None = None
) -> Iterator:
    """A Client for the command line, closed (with any cluster it started) on exit.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    workers : int, optional
        Worker processes of a ``LocalCluster`` on 127.0.0.1, one Dask thread each (give
        exactly one of ``scheduler`` and ``workers``).
    timeout : float, optional
        Seconds to wait for the scheduler and the workers; default Dask's
        ``distributed.comm.timeouts.connect`` setting (30 s unless configured), at least 60 s
        for a LocalCluster's workers to start.

    Yields
    ------
    dask.distributed.Client
        Its workers checked (:func:`check_workers`).

    Raises
    ------
    ImportError
        Dask's distributed scheduler is not installed.
    OSError
        The scheduler or its workers cannot be reached (one line naming the address).
    WorkerMismatchError
        A worker lacks fastscape or runs another version.
    """
    if (scheduler is None) == (workers is None):
        raise ValueError("give exactly one of scheduler and workers")
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "--scheduler and --workers run the grid on a Dask cluster, but dask.distributed "
            f"is not installed; install it with {INSTALL_HINT}"
        ) from None
    if timeout is None:
        import dask

        connect = dask.config.get("distributed.comm.timeouts.connect")
        timeout = dask.utils.parse_timedelta(connect, default="seconds")
    opened = []
    try:
        try:
            if workers is not None:
                cluster = distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=":0",
                )  # fmt: skip
                opened.append(cluster)
                client = distributed.Client(cluster, timeout=timeout)
            else:
                client = distributed.Client(scheduler, timeout=timeout)
            opened.insert(0, client)
            client.wait_for_workers(workers or 1, timeout=max(timeout, 60.0))
        except OSError as exc:  # TimeoutError included
            where = f"at {scheduler}" if scheduler else "of the local cluster"
            raise OSError(
                f"cannot reach the Dask scheduler {where} or its workers within {timeout:g} s "
                f"({type(exc).__name__}); check the address and that workers are attached"
            ) from None
        check_workers(client)
        yield client
    finally:
        for thing in opened:
            with contextlib.suppress(Exception):  # a lost scheduler: nothing left to close
                thing.close()


def dashboard(client) -> str | None:
    """The address of the cluster's dashboard, or None when it has none (Bokeh missing)."""
    services = client.scheduler_info().get("services", {})
    return client.dashboard_link if "dashboard" in services else None
