"""Tiles of work on a Dask cluster: what ``client=`` does in :func:`fastscape.landscape.evaluate`.

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

Threads: each task runs its kernel on ``n_threads`` Numba threads (default 1), set in the
worker thread that runs it (Numba's thread count is per calling thread). Dask runs
``threads_per_worker`` tasks at once in a worker, so a worker uses ``threads_per_worker x
n_threads`` cores; keep that at or below the cores it has (Dask itself starts its worker
processes with ``OMP_NUM_THREADS=1`` for the same reason). ``docs/cluster.md`` gives the
recommended settings.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

#: How to get Dask.
INSTALL_HINT = 'pip install "fastscape[dask]"'

#: Tiles per Dask worker thread when the caller does not choose a tile size (a few per thread
#: let a fast worker take over the tiles of a slow one; each tile re-forms the first-layer
#: products, so more tiles cost more work: bench/NOTES.md).
TILES_PER_THREAD = 2


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
        for fut, result in as_completed(list(futures), with_results=True):
            t = futures.pop(fut)
            yield t, result
    finally:
        if futures:
            client.cancel(list(futures))
        futures.clear()
        for ref in refs:
            ref.release()
