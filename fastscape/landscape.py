"""Loss landscapes: the span engine and the 1D slices and 2D surfaces built on it.

Every query is the loss at m points ``theta_j = sum_k C[j, k] basis[k]`` (see
``docs/landscape.md``): :func:`evaluate` takes the basis (K, P) and the coefficients (m, K)
and is the only function that runs the engine; :func:`slice_1d`, :func:`surface_2d` and the
paths of :mod:`fastscape.paths` only build coefficient matrices.

Long evaluations are split into tiles of points. With ``checkpoint_dir`` each finished tile is
written atomically to that directory; running the same call again skips the finished tiles and
returns the bitwise identical result (every point's value is independent of the tiling).

With ``client=`` (a ``dask.distributed.Client``) the tiles run on the workers of a Dask
cluster, each a task calling the same seam function as a local run (:mod:`fastscape.distributed`,
``docs/cluster.md``); the client alone writes the results, checkpoints included, so a run
interrupted on the cluster resumes locally, or the other way round, with the same bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

from . import _device, config
from . import distributed as _distributed
from ._files import FileFormatError, atomic_write
from ._threads import threads
from ._validation import (
    as_float_array,
    as_vector,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from .curvature import DEFAULT_TOL
from .curvature.map import METHODS as CHAIN_METHODS
from .curvature.map import solve_chain
from .directions import meta_of
from .functions import AnalyticFunction
from .models import MLP, Batch

DEFAULT_POINTS = 51
DEFAULT_RANGE = (-1.0, 1.0)


class Evaluation(NamedTuple):
    """Result of :func:`evaluate`.

    Attributes
    ----------
    loss : (m,) array
    accuracy : (m,) array or None
        None for MSE models and for functions.
    """

    loss: np.ndarray
    accuracy: np.ndarray | None


# ----------------------------------------------------------------------------- helpers
def coordinates(values, name: str) -> np.ndarray:
    """Grid coordinates from what a user passes.

    Parameters
    ----------
    values : None, int or 1-D array
        None: 51 points on [-1, 1]; an int n: n points on [-1, 1]; otherwise a finite,
        non-empty 1-D array (any order, any length).
    name : str
        Argument name for error messages.

    Returns
    -------
    (a,) float64 array
    """
    if values is None:
        return np.linspace(*DEFAULT_RANGE, DEFAULT_POINTS)
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        return np.linspace(*DEFAULT_RANGE, check_positive_int(values, name))
    return as_float_array(values, name, 1)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # optional extra: no bar, no error
        return None
    return tqdm(total=total, desc=desc, unit="pt", leave=False)


class Target(NamedTuple):
    """What :func:`evaluate` runs, from :func:`as_target`.

    Attributes
    ----------
    kind : {"mlp", "analytic", "jit", "python"}
    fn : MLP or callable
        The model, or the function f(theta) -> float.
    P : int or None
        Length of theta (None for a function that does not say).
    data : Batch or None
        The validated data of an MLP.
    """

    kind: str
    fn: object
    P: int | None
    data: Batch | None


def as_target(model, X=None, y=None, *, device="cpu", dtype="float64", upload=False) -> Target:
    """Validate what :func:`evaluate` is asked to run: an MLP with its data, or a function.

    Parameters
    ----------
    model : MLP, AnalyticFunction, Numba-jitted or Python callable f(theta) -> float
    X : (n, d) array or Batch
        Required with an MLP, None with a function.
    y : (n,) or (n, out) array
    device : {"cpu", "cuda"}
        Checked first; functions run on the CPU only.
    dtype : {"float64", "float32"}
    upload : bool
        Copy an MLP's data to the device now (once for the whole evaluation).

    Returns
    -------
    Target
    """
    device = _device.resolve_device(device)
    _device.check_dtype(dtype, device)
    if isinstance(model, MLP):
        if X is None:
            raise ValueError("X is required when model is an MLP")
        if _device.is_sharded(X):
            return Target("mlp", model, model.n_params, X)
        if _distributed.is_dask_array(X) or _distributed.is_dask_array(y):
            # samples sharded on a cluster: validated chunk by chunk on the workers by
            # evaluate(client=); kept unread here
            return Target("mlp", model, model.n_params, Batch(X, y))
        _, data, _ = _device.prepare(model, X, y, device=device, dtype=dtype, upload=upload)
        return Target("mlp", model, model.n_params, data)
    if X is not None or y is not None:
        raise ValueError("X and y must be None when model is a function f(theta) -> float")
    if device != "cpu":
        raise ValueError(f"device={device!r} evaluates MLPs; functions f(theta) run on the CPU")
    if isinstance(model, AnalyticFunction):
        return Target("analytic", model, model.dim, None)
    if isinstance(model, numba.core.registry.CPUDispatcher):
        return Target("jit", model, None, None)
    if callable(model):
        return Target("python", model, None, None)
    raise TypeError(
        f"model must be an MLP or a function f(theta) -> float, got {type(model).__name__}"
    )


def _check_basis(basis, P: int | None) -> np.ndarray:
    B = as_float_array(basis, "basis", 2)
    if P is not None and B.shape[1] != P:
        raise ValueError(f"basis rows have length {B.shape[1]}, the model has {P} parameters")
    return B


def _fingerprint(
    target: Target, basis, coef, tile: int, device: str = "cpu", dtype: str = "float64"
) -> str:
    h = hashlib.sha256()
    fn = getattr(target.fn, "py_func", target.fn)
    if target.kind in ("mlp", "analytic"):
        name = repr(fn)
    else:
        name = f"{fn.__module__}.{fn.__qualname__}"
    block = config.span_block_for(basis.shape[0], target.fn.sizes[1]) if target.data else 0
    key = (target.kind, name, tile, block)
    if device == "cuda":  # GPU tiles round differently: a checkpoint belongs to one device
        key += (device, dtype, config.CUDA_SPAN_BLOCK, config.CUDA_SPAN_SLOTS)
    h.update(repr(key).encode())
    if isinstance(target.data, _distributed.ShardedData):  # sharded samples: Dask's token
        h.update(repr(("sharded", target.data.X.shape, target.data.token)).encode())
    for arr in (basis, coef) + ((target.data.X, target.data.Y) if _in_memory(target) else ()):
        h.update(repr(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _in_memory(target: Target) -> bool:
    return target.data is not None and not isinstance(target.data, _distributed.ShardedData)


def _work(target: Target, K: int, m: int) -> float:
    if target.kind != "mlp":
        return float(m) * K * (target.P or 2) * 10
    sizes = target.fn.sizes
    n = target.data.X.shape[0]
    tail = sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    return float(m) * n * (K * sizes[1] + tail)


def _run_tile(target: Target, basis, coef, n_threads, device: str = "cpu", dtype="float64"):
    with threads(n_threads):
        if target.kind == "mlp":
            model = target.fn
            loss, acc = _device.span_eval(model, basis, coef, target.data, device, dtype)
            return loss, (acc if model.is_classifier else None)
        if target.kind == "analytic":
            return _device.span_analytic(target.fn.code, basis, coef), None
        if target.kind == "jit":
            return _device.span_function(target.fn, basis, coef), None
    out = np.empty(coef.shape[0])
    for j in range(coef.shape[0]):
        out[j] = float(target.fn(coef[j] @ basis))
    return out, None


def _tile_task(target: Target, basis, coef, n_threads: int):
    """One tile on a Dask worker: :func:`_run_tile` on the CPU with ``n_threads`` Numba threads
    (at most the worker's ``NUMBA_NUM_THREADS``; the result does not depend on the count).

    ``target`` and ``basis`` are the arguments scattered once per call; ``coef`` (tile, K) is
    the tile's own. A sample-shard variant takes a target without data and the tile's chunk
    of ``(X, Y)`` instead, and returns per-point sums (the next part of the Dask backend).
    """
    n = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    return _run_tile(target, basis, coef, n, "cpu", "float64")


# ----------------------------------------------------------------------------- engine
def evaluate(
    model,
    basis,
    coefficients,
    X=None,
    y=None,
    *,
    progress: bool | None = False,
    tile_size: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    n_threads: int | None = None,
    device: str = "cpu",
    dtype: str = "float64",
    client=None,
) -> Evaluation:
    """Loss (and accuracy) at the m points ``theta_j = coefficients[j] @ basis``.

    Parameters
    ----------
    model : MLP, AnalyticFunction, Numba-jitted or Python callable f(theta) -> float
        With an MLP, ``X`` and ``y`` are the data; with a function they must be None.
        Numba-jitted functions run inside the parallel kernel; Python callables run in a loop
        (the slow path, see :mod:`fastscape.functions`).
    basis : (K, P) array
        The K vectors spanning the points (e.g. theta*, d1, d2).
    coefficients : (m, K) array
        One row per point. Zero coefficients cost nothing: a point using 2 of K rows pays for 2.
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    progress : bool or None
        Show a tqdm bar (if tqdm is installed); None shows one when the evaluation is expected
        to take more than about a second.
    tile_size : int, optional
        Points per tile. Default: ``config.SPAN_TILE`` with a ``checkpoint_dir`` (so that a
        run checkpointed on a cluster resumes locally, and the other way round); else with a
        ``client``, a few tiles per worker thread
        (:func:`fastscape.distributed.default_tile`); else on the CPU all points in one tile
        when there is nothing to save or report between tiles (no ``on_tile`` or bar),
        ``config.SPAN_TILE`` otherwise, smaller with a progress bar so that it moves. The
        result does not depend on it.
    checkpoint_dir : path, optional
        Directory for finished tiles; a repeated call resumes, skipping them. The directory
        is bound to this exact evaluation (inputs are fingerprinted): a different one is
        refused. Each tile file carries the fingerprint and its index too, so tiles are
        reused only by the evaluation that wrote them, even when ``manifest.json`` is lost;
        a tile of another evaluation, or a truncated or unreadable one, is recomputed and
        overwritten. A corrupt manifest raises :class:`fastscape.io.FileFormatError`.
    on_tile : callable(tile_index, n_tiles), optional
        Called after each tile is computed (and saved); with a ``client``, in the order the
        tiles finish.
    n_threads : int, optional
        Numba threads for this call (the result does not depend on it). With a ``client``:
        the Numba threads of each task on a worker (default 1; at most the worker's
        ``NUMBA_NUM_THREADS``), see ``docs/cluster.md``.
    device : {"cpu", "cuda"}
        Where MLP points are evaluated (the data are copied to the GPU once per call);
        functions f(theta) run on the CPU. The CUDA engine agrees with the CPU to rtol 1e-10.
    dtype : {"float64", "float32"}
        Working precision of the MLP engine; ``"float32"`` with ``device="cuda"`` only (the
        forward pass in float32, sums in float64: about 1e-6 relative error on the loss, see
        ``docs/cuda.md``).
    client : dask.distributed.Client, optional
        Run the tiles on this Dask cluster (``pip install "fastscape[dask]"``): the model, its
        data and the basis are sent to every worker once per call, each tile is a task, and
        the results come back as tiles finish; the client writes the checkpoints. A worker
        lost mid-run has its tiles re-run by the scheduler. Requires ``device="cpu"``. The
        result is bitwise equal to the local one on workers with the same CPU and the same
        fastscape and Numba versions (``docs/cluster.md``).

    Returns
    -------
    Evaluation
        ``loss`` (m,) and ``accuracy`` (m,) or None.
    """
    if isinstance(X, Batch) and _distributed.is_dask_array(X.X) and y is None:
        X, y = X  # from as_target: dask arrays passed on by slice_1d, surface_2d, ...
    given = _device.is_sharded(X)  # ShardedData: its chunks are on its client's workers
    if given and client is None:
        client = X.client
    if client is not None:
        _distributed.check_client(client)
        if device != "cpu":
            raise ValueError(
                f"client= runs the CPU kernels on the Dask workers; device must be 'cpu', "
                f"got {device!r}"
            )
        task_threads = 1 if n_threads is None else check_positive_int(n_threads, "n_threads")
    sharded = given or _distributed.is_dask_array(X) or _distributed.is_dask_array(y)
    if sharded:
        if client is None:
            raise ValueError(
                "X or y is a dask array (samples sharded on a cluster); pass client= "
                "(a dask.distributed.Client), or np.asarray them for a local run"
            )
        _device.check_dtype(dtype, device)
        data = _distributed.shard(client, model, X, y)
        target = Target("mlp", model, model.n_params, data)
    else:
        target = as_target(model, X, y, device=device, dtype=dtype, upload=True)
    basis = _check_basis(basis, target.P)
    K = basis.shape[0]
    C = as_float_array(coefficients, "coefficients", 2)
    if C.shape[1] != K:
        raise ValueError(f"coefficients have {C.shape[1]} columns, basis has K = {K} rows")
    m = C.shape[0]
    if progress is None:
        progress = _work(target, K, m) > config.PROGRESS_MIN_WORK
    if tile_size is not None:
        tile = check_positive_int(tile_size, "tile_size")
    elif client is not None and checkpoint_dir is None and not sharded:
        tile = _distributed.default_tile(client, m, config.SPAN_TILE)
    elif progress and checkpoint_dir is None:
        # about 20 updates of the bar; results do not depend on the tiling
        tile = min(config.SPAN_TILE, max(64, -(-m // 20)))
    elif checkpoint_dir is None and on_tile is None and device == "cpu":
        # nothing to save or report between tiles: one pass over the data for all points
        # (each tile forms the first-layer products again; bench/NOTES.md). The CPU engine's
        # memory does not grow with the tile; the GPU's keeps per-point parameters, so it
        # stays tiled.
        tile = max(1, m)
    else:
        tile = config.SPAN_TILE
    starts = list(range(0, m, tile))
    loss = np.empty(m)
    acc = np.empty(m) if target.kind == "mlp" and target.fn.is_classifier else None
    done = [False] * len(starts)
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        ckpt.mkdir(parents=True, exist_ok=True)
        fp = _fingerprint(target, basis, C, tile, device, dtype)
        manifest = ckpt / "manifest.json"
        if manifest.exists():
            info = _read_manifest(manifest)
            if info.get("fingerprint") != fp:
                raise ValueError(
                    f"checkpoint_dir {str(ckpt)!r} holds tiles of a different evaluation "
                    "(other model, data, basis, coefficients or tile_size); use an empty directory"
                )
        else:
            text = json.dumps({"fingerprint": fp, "m": m, "K": K, "tile_size": tile})
            atomic_write(manifest, lambda p: Path(p).write_text(text))
        for t, s in enumerate(starts):
            saved = _read_tile(ckpt / f"tile_{t:06d}.npz", fp, t, min(tile, m - s), acc is not None)
            if saved is not None:
                loss[s : s + tile] = saved[0]
                if acc is not None:
                    acc[s : s + tile] = saved[1]
                done[t] = True
    todo = [(t, np.ascontiguousarray(C[s : s + tile])) for t, s in enumerate(starts) if not done[t]]
    if client is None or not todo:
        results = ((t, _run_tile(target, basis, c, n_threads, device, dtype)) for t, c in todo)
    elif sharded:
        # each chunk of samples returns per-point sums, added in chunk order on the client
        tasks = ((t, (c, task_threads)) for t, c in todo)
        results = _distributed.span_tiles(target.data, basis, tasks)
    else:
        # the model, its data and the basis go to every worker once; tiles come back as they
        # finish, and only this process writes
        tasks = ((t, (c, task_threads)) for t, c in todo)
        results = _distributed.map_tiles(client, _tile_task, (target, basis), tasks)
    bar = _progress(m, bool(progress), "landscape")
    try:
        if bar is not None:
            bar.update(sum(min(tile, m - s) for t, s in enumerate(starts) if done[t]))
        for t, (tl, ta) in results:
            s = starts[t]
            e = min(m, s + tile)
            loss[s:e] = tl
            if acc is not None:
                acc[s:e] = ta
            if ckpt is not None:
                arrays = {"loss": tl, "fingerprint": np.array(fp), "tile": np.array(t)}
                if acc is not None:
                    arrays["accuracy"] = ta
                atomic_write(
                    ckpt / f"tile_{t:06d}.npz", lambda p, a=arrays: _savez(p, a), suffix=".npz"
                )
            if bar is not None:
                bar.update(e - s)
            if on_tile is not None:
                on_tile(t, len(starts))
    finally:
        results.close()  # with a client: cancels the tiles not finished
        if bar is not None:
            bar.close()
        if sharded and not given:  # the chunks this call put on the workers
            target.data.close()
    return Evaluation(loss, acc)


def _savez(path: str, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _read_manifest(path: Path) -> dict:
    """The checkpoint manifest; a damaged one is a one-line FileFormatError naming it."""

    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            path, f"corrupt checkpoint manifest ({type(exc).__name__}: {exc}); delete the "
            "checkpoint directory to start over"
        ) from None  # fmt: skip
    if not isinstance(info, dict):
        raise FileFormatError(path, "corrupt checkpoint manifest (not a JSON object)")
    return info


def _read_tile(path: Path, fp: str, index: int, size: int, with_accuracy: bool):
    """``(loss, accuracy)`` of a finished tile of *this* evaluation, or None to recompute it.

    Every tile carries the fingerprint of its evaluation and its index: a tile of another
    evaluation (left by a lost manifest), a misplaced one, and a truncated or unreadable one
    are never reused; they are recomputed and overwritten.
    """
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp or int(z["tile"]) != index:
                return None
            loss = np.array(z["loss"])
            accuracy = np.array(z["accuracy"]) if with_accuracy else None
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, zlib.error):
        # any damage (truncation, CRC, missing arrays)
        return None
    if loss.shape != (size,) or (with_accuracy and accuracy.shape != (size,)):
        return None
    return loss, accuracy


# ----------------------------------------------------------------------------- results
@dataclass
class Slice:
    """A 1D slice ``theta + alpha d``.

    Attributes
    ----------
    alphas : (a,) array
    loss : (a,) array
        ``loss[i]`` at ``alphas[i]``.
    accuracy : (a,) array or None
    direction : dict
        Metadata of d (kind, norm, seed, ...).
    settings : dict
        Model, number of samples and anything else recorded.
    """

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    direction: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int]:
        return self.loss.shape


@dataclass
class Surface:
    """A 2D surface ``theta + alpha d1 + beta d2`` on the grid alphas x betas.

    Attributes
    ----------
    alphas : (a,) array
        Coordinates along d1 (first axis).
    betas : (b,) array
        Coordinates along d2 (second axis).
    loss : (a, b) array
        ``loss[i, j]`` at ``(alphas[i], betas[j])``, for any a and b (non-square grids too).
    accuracy : (a, b) array or None
    directions : tuple of dict
        Metadata of d1 and d2.
    settings : dict
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None = None
    directions: tuple = (dict(), dict())
    settings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.loss.shape


def _settings(target: Target, **extra) -> dict:
    out = {"model": target.fn.to_dict() if target.kind == "mlp" else repr(target.fn)}
    if target.data is not None:
        out["n_samples"] = int(target.data.X.shape[0])
    out.update(extra)
    return out


def _direction(d, name: str, P: int | None) -> np.ndarray:
    v = as_float_array(d, name, 1) if P is None else as_vector(d, name, P)
    if not np.any(v):
        raise ValueError(f"{name} has zero norm")
    return v


def slice_1d(
    model,
    theta,
    d,
    X=None,
    y=None,
    alphas=None,
    *,
    progress: bool | None = None,
    **engine,
) -> Slice:
    """Loss along the line ``theta + alpha d``.

    Parameters
    ----------
    model : MLP or function f(theta) -> float (then X, y are None)
    theta : (P,) array
    d : (P,) array or Direction
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    alphas : (a,) array, int or None
        Coordinates; an int n means n points on [-1, 1]; default 51 points on [-1, 1].
    progress : bool or None
        See :func:`evaluate` (None: a bar when it would take over a second).
    **engine
        ``tile_size``, ``checkpoint_dir``, ``on_tile``, ``n_threads``, ``device``, ``dtype``,
        ``client`` of :func:`evaluate` (``client``: the points on a Dask cluster).

    Returns
    -------
    Slice
    """
    target = as_target(model, X, y)
    theta = (
        as_float_array(theta, "theta", 1)
        if target.P is None
        else as_vector(theta, "theta", target.P)
    )
    v = _direction(d, "d", theta.shape[0])
    a = coordinates(alphas, "alphas")
    C = np.column_stack([np.ones_like(a), a])
    data = target.data if target.kind == "mlp" else None
    res = evaluate(target.fn, np.stack([theta, v]), C, data, progress=progress, **engine)
    return Slice(a, res.loss, res.accuracy, meta_of(d), _settings(target))


def surface_2d(
    model,
    theta,
    d1,
    d2,
    X=None,
    y=None,
    alphas=None,
    betas=None,
    *,
    progress: bool | None = None,
    **engine,
) -> Surface:
    """Loss on the grid ``theta + alpha_i d1 + beta_j d2``.

    Parameters
    ----------
    model : MLP or function f(theta) -> float (then X, y are None)
    theta : (P,) array
    d1, d2 : (P,) arrays or Directions
        Non-zero and not parallel.
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    alphas, betas : arrays, ints or None
        Coordinates along d1 and d2; an int n means n points on [-1, 1]; default 51 points on
        [-1, 1]. They may differ in length.
    progress : bool or None
        See :func:`evaluate`.
    **engine
        ``tile_size``, ``checkpoint_dir``, ``on_tile``, ``n_threads``, ``device``, ``dtype``,
        ``client`` of :func:`evaluate` (``client``: the points on a Dask cluster).

    Returns
    -------
    Surface
        ``loss[i, j]`` is the loss at ``(alphas[i], betas[j])``; shape (len(alphas),
        len(betas)).
    """
    target = as_target(model, X, y)
    theta = (
        as_float_array(theta, "theta", 1)
        if target.P is None
        else as_vector(theta, "theta", target.P)
    )
    v1 = _direction(d1, "d1", theta.shape[0])
    v2 = _direction(d2, "d2", theta.shape[0])
    cos = abs(v1 @ v2) / (np.linalg.norm(v1) * np.linalg.norm(v2))
    if cos > 1.0 - 1e-12:
        raise ValueError("d1 and d2 are parallel: they span a line, not a plane")
    a = coordinates(alphas, "alphas")
    b = coordinates(betas, "betas")
    A, Bm = np.meshgrid(a, b, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), Bm.ravel()])
    data = target.data if target.kind == "mlp" else None
    res = evaluate(target.fn, np.stack([theta, v1, v2]), C, data, progress=progress, **engine)
    shape = (a.size, b.size)
    acc = None if res.accuracy is None else res.accuracy.reshape(shape)
    return Surface(
        a, b, res.loss.reshape(shape), acc, (meta_of(d1), meta_of(d2)), _settings(target)
    )


# ----------------------------------------------------------------------------- curvature maps
#: Tile arrays of a curvature map: name -> dtype.
_CMAP_ARRAYS = {
    "lambda_max": np.float64,
    "lambda_min": np.float64,
    "converged_max": np.bool_,
    "converged_min": np.bool_,
    "hvps_max": np.int64,
    "hvps_min": np.int64,
}


@dataclass
class CurvatureMap:
    """The extreme Hessian eigenvalues on the grid ``theta + alpha d1 + beta d2``.

    Li et al. (2018) plot ``|λmin / λmax|`` over a 2D slice: near 0 where the loss is
    locally convex (λmin ≥ 0, or negative curvature tiny next to the positive), large where it
    is not. Every array below has the shape of :attr:`Surface.loss` on the same grid.

    Attributes
    ----------
    alphas : (a,) array
    betas : (b,) array
    lambda_max, lambda_min : (a, b) arrays
        Largest and smallest Hessian eigenvalue at ``(alphas[i], betas[j])``. Where a solve did
        not converge the value is the solver's last Ritz value (a lower bound of λmax, an upper
        bound of λmin) and its flag is False: read the flags, or :attr:`ratio`, which hides it.
    converged_max, converged_min : (a, b) bool arrays
        Whether each end's solve converged: its residual met ``tol`` and (with ``verify``, the
        default) its rank was verified; True everywhere for ``exact``.
    hvps_max, hvps_min : (a, b) int arrays
        Hessian-vector products spent on each end at each point (0 for ``exact``).
    loss : (a, b) array or None
        The loss at the same points (the span engine), for the contour beside the maps.
    directions : tuple of dict
        Metadata of d1 and d2.
    settings : dict
        ``method`` (the one used), ``tol``, ``max_hvps``, ``exact_max_params``, ``seed``,
        ``verify``, ``tile_size``, ``scan`` ("serpentine"), the model and number of samples.
    """

    alphas: np.ndarray
    betas: np.ndarray
    lambda_max: np.ndarray
    lambda_min: np.ndarray
    converged_max: np.ndarray
    converged_min: np.ndarray
    hvps_max: np.ndarray
    hvps_min: np.ndarray
    loss: np.ndarray | None = None
    directions: tuple = (dict(), dict())
    settings: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.lambda_max.shape

    @property
    def converged(self) -> np.ndarray:
        """(a, b) bool: both ends converged."""
        return self.converged_max & self.converged_min

    @property
    def n_hvps(self) -> np.ndarray:
        """(a, b) int: HVPs spent at each point (both ends)."""
        return self.hvps_max + self.hvps_min

    @property
    def ratio(self) -> np.ndarray:
        """(a, b): ``|λmin / λmax|``, NaN where a solve did not converge or λmax is 0."""
        ok = self.converged & (self.lambda_max != 0)
        out = np.full(self.shape, np.nan)
        np.divide(np.abs(self.lambda_min), np.abs(self.lambda_max), out=out, where=ok)
        return out

    @property
    def n_unconverged(self) -> int:
        """Points where at least one end did not converge."""
        return int((~self.converged).sum())

    @property
    def message(self) -> str:
        """One line: how many points, and how many were not converged."""
        n = self.lambda_max.size
        bad = self.n_unconverged
        if not bad:
            return f"{n} points, both ends converged everywhere ({self.settings.get('method')})"
        return (
            f"{n} points: {bad} not converged (λmax at {int((~self.converged_max).sum())}, "
            f"λmin at {int((~self.converged_min).sum())}); flagged, ratio NaN there"
        )


def serpentine(a: int, b: int) -> np.ndarray:
    """Flat indices (row-major, ``i * b + j``) of an a x b grid in serpentine order.

    Row 0 left to right, row 1 right to left, and so on: consecutive points are always grid
    neighbours, which is what the warm starts of :func:`curvature_map` need.

    Parameters
    ----------
    a, b : int
        The grid's shape (len(alphas), len(betas)).

    Returns
    -------
    (a * b,) int64 array
        A permutation of ``range(a * b)``.
    """
    idx = np.arange(a * b, dtype=np.int64).reshape(a, b)
    idx[1::2] = idx[1::2, ::-1]
    return idx.ravel()


#: The per-point solver of the curvature maps; bumped whenever its results change, so that a
#: checkpoint written by another solver is refused instead of being mixed with this one's tiles.
_CMAP_SOLVER = "two-ended-lanczos-1"


def _cmap_fingerprint(model: MLP, data: Batch, basis, coef, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(repr(("curvature_map", _CMAP_SOLVER, repr(model), sorted(settings.items()))).encode())
    for arr in (basis, coef, data.X, data.Y):
        h.update(repr(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _read_cmap_tile(path: Path, fp: str, index: int, size: int) -> dict | None:
    """The arrays of a finished curvature-map tile of *this* map, or None to recompute it."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp or int(z["tile"]) != index:
                return None
            out = {k: np.array(z[k]) for k in _CMAP_ARRAYS}
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, zlib.error):
        return None
    if any(v.shape != (size,) or v.dtype != _CMAP_ARRAYS[k] for k, v in out.items()):
        return None
    return out


def _chain_task(model: MLP, data: Batch, basis, coef, kw: dict, n_threads: int | None):
    """One tile of a curvature map: the chain of points ``coef @ basis`` (locally or on a Dask
    worker; ``n_threads`` Numba threads, the result does not depend on it)."""
    if n_threads is not None:
        n_threads = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    with threads(n_threads):
        res = solve_chain(model, data, coef @ basis, **kw)
    return res._asdict()


def curvature_map(
    model: MLP,
    theta,
    d1,
    d2,
    X,
    y=None,
    alphas=None,
    betas=None,
    *,
    method: str = "auto",
    tol: float | None = None,
    max_hvps: int | None = None,
    exact_max_params: int | None = None,
    seed: int = 0,
    verify: bool = True,
    with_loss: bool = True,
    tile_size: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    n_threads: int | None = None,
    progress: bool = False,
    client=None,
) -> CurvatureMap:
    """λmax and λmin of the Hessian at every point of ``theta + alpha_i d1 + beta_j d2``.

    The convexity maps of Li, Xu, Taylor, Studer & Goldstein (2018, *Visualizing the loss
    landscape of neural nets*): the two ends of the Hessian spectrum at each grid point, and
    their ratio ``|λmin / λmax|`` (:attr:`CurvatureMap.ratio`). The points are visited in
    serpentine order (:func:`serpentine`: consecutive points are grid neighbours) and cut into
    tiles of ``tile_size`` consecutive points; within a tile every solve starts from the
    eigenvector found at the previous point, and each tile starts cold at its first point.
    A tile's values therefore depend on its own points only: checkpointed tiles are reused
    with the same bits, and tiles may run in any order, on a Dask cluster too. Different tile
    sizes (more or fewer cold starts) give the same values to within the solver tolerance.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    d1, d2 : (P,) arrays or Directions
        Non-zero and not parallel.
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    alphas, betas : arrays, ints or None
        Coordinates along d1 and d2; an int n means n points on [-1, 1]; default 21 points
        (``config.CURVATURE_MAP_POINTS``) on [-1, 1].
    method : {"auto", "exact", "lanczos", "power"}
        Per point: ``"exact"`` is ``numpy.linalg.eigvalsh`` of the exact Hessian;
        ``"lanczos"`` one thick-restart Lanczos basis for both ends, verified
        (``fastscape.curvature.map``, ``docs/curvature_maps.md``); ``"power"`` power
        iteration for the eigenvalue of largest magnitude and again on ``H - λ₁ I`` for the
        other end (loss-landscape's scheme, slower). ``"auto"``: exact up to
        ``exact_max_params`` parameters, else Lanczos.
    tol : float, optional
        Relative tolerance of every iterative solve (default
        :data:`fastscape.curvature.DEFAULT_TOL`, 1e-6; see ``docs/curvature.md``).
    max_hvps : int, optional
        Hard budget per point for Lanczos (its two-ended solve and verifications share it),
        of each of the two solves for power iteration; default the solver's
        (``min(10 P, 5000)`` for Lanczos, 1000 for power iteration). A point whose solve
        runs out is flagged.
    exact_max_params : int, optional
        The threshold of ``method="auto"`` (default ``config.CURVATURE_MAP_EXACT_MAX_PARAMS``).
    seed : int
        Seed of the random start of every solve.
    verify : bool
        The verification restart of every iterative solve (default): a point is flagged
        converged only when its residual met ``tol`` **and** the value's rank was established
        (no larger λmax, no smaller λmin, left in the complement; ``docs/curvature.md``). With
        False the flag is the residual test alone — what ARPACK's ``eigsh`` guarantees — for
        fewer HVPs (the joint verification of both ends costs about 10 per point).
        Recorded in ``settings``.
    with_loss : bool
        Also evaluate the loss on the grid (one call of the span engine, :func:`evaluate`).
    tile_size : int, optional
        Points per tile, i.e. per warm-started chain (default ``config.CURVATURE_MAP_TILE``).
        Part of the result's identity: recorded in ``settings`` and in the checkpoints.
    checkpoint_dir : path, optional
        Directory for finished tiles, bound to this exact map (model, data, grid and every
        setting are fingerprinted; a different map is refused); a repeated call resumes and
        returns the bitwise identical result. Damaged or foreign tiles are recomputed.
    on_tile : callable(tile_index, n_tiles), optional
        Called after each tile is computed (and saved).
    n_threads : int, optional
        Numba threads of the HVPs (with a ``client``: per task on a worker, default 1). The
        result does not depend on it.
    progress : bool
        A tqdm bar of the points done.
    client : dask.distributed.Client, optional
        Run the tiles on a Dask cluster (:func:`fastscape.distributed.map_tiles`): model, data
        and basis are sent to each worker once, each tile is a task, and this process writes
        the checkpoints. Same bits as a local run on workers with the same CPU and versions.

    Returns
    -------
    CurvatureMap
        ``lambda_max``, ``lambda_min``, flags and HVP counts of shape (len(alphas),
        len(betas)); unconverged points are flagged (``converged``, ``message``) and their
        ``ratio`` is NaN.
    """
    if not isinstance(model, MLP):
        raise TypeError(
            f"model must be an MLP (curvature maps need its Hessian), got {type(model).__name__}"
        )
    if n_threads is not None:
        n_threads = check_positive_int(n_threads, "n_threads")
        if client is None and n_threads > numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"n_threads must be an integer in [1, {numba.config.NUMBA_NUM_THREADS}], "
                f"got {n_threads}"
            )
    if client is not None:
        _distributed.check_client(client)
        task_threads = 1 if n_threads is None else n_threads
    method = check_choice(method, "method", ("auto", *CHAIN_METHODS))
    tol = DEFAULT_TOL if tol is None else check_positive_float(tol, "tol", allow_zero=True)
    if max_hvps is not None:
        max_hvps = check_positive_int(max_hvps, "max_hvps")
    if exact_max_params is None:
        exact_max_params = config.CURVATURE_MAP_EXACT_MAX_PARAMS
    exact_max_params = check_positive_int(exact_max_params, "exact_max_params")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    tile = config.CURVATURE_MAP_TILE if tile_size is None else tile_size
    tile = check_positive_int(tile, "tile_size")
    target = as_target(model, X, y)
    data = target.data
    P = model.n_params
    if P < 2:
        raise ValueError("a curvature map needs a model with at least 2 parameters")
    theta = as_vector(theta, "theta", P)
    v1 = _direction(d1, "d1", P)
    v2 = _direction(d2, "d2", P)
    if abs(v1 @ v2) / (np.linalg.norm(v1) * np.linalg.norm(v2)) > 1.0 - 1e-12:
        raise ValueError("d1 and d2 are parallel: they span a line, not a plane")
    a = coordinates(config.CURVATURE_MAP_POINTS if alphas is None else alphas, "alphas")
    b = coordinates(config.CURVATURE_MAP_POINTS if betas is None else betas, "betas")
    if method == "auto":
        method = "exact" if P <= exact_max_params else "lanczos"
    settings = {
        "method": method,
        "tol": float(tol),
        "max_hvps": max_hvps,
        "exact_max_params": int(exact_max_params),
        "seed": int(seed),
        "verify": verify,
        "tile_size": int(tile),
        "scan": "serpentine",
    }
    kw = {"method": method, "tol": float(tol), "max_hvps": max_hvps, "seed": int(seed)}
    kw["verify"] = verify
    if method == "exact":
        kw["max_params"] = max(P, exact_max_params)

    basis = np.stack([theta, v1, v2])
    A, Bm = np.meshgrid(a, b, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), Bm.ravel()])  # row-major grid order
    order = serpentine(a.size, b.size)
    Cs = C[order]
    m = Cs.shape[0]
    starts = list(range(0, m, tile))
    out = {k: np.empty(m, dtype=dt) for k, dt in _CMAP_ARRAYS.items()}  # serpentine order
    done = [False] * len(starts)
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        ckpt.mkdir(parents=True, exist_ok=True)
        fp = _cmap_fingerprint(model, data, basis, Cs, settings)
        manifest = ckpt / "manifest.json"
        if manifest.exists():
            if _read_manifest(manifest).get("fingerprint") != fp:
                raise ValueError(
                    f"checkpoint_dir {str(ckpt)!r} holds tiles of a different evaluation "
                    "(other model, data, grid or settings); use an empty directory"
                )
        else:
            text = json.dumps(
                {"fingerprint": fp, "kind": "curvature_map", "m": m, "tile_size": tile}
            )
            atomic_write(manifest, lambda p: Path(p).write_text(text))
        for t, s in enumerate(starts):
            saved = _read_cmap_tile(ckpt / f"tile_{t:06d}.npz", fp, t, min(tile, m - s))
            if saved is not None:
                for k, v in saved.items():
                    out[k][s : s + tile] = v
                done[t] = True
    todo = [(t, np.ascontiguousarray(Cs[s : s + tile])) for t, s in enumerate(starts)]
    todo = [(t, c) for t, c in todo if not done[t]]
    if client is None or not todo:
        results = ((t, _chain_task(model, data, basis, c, kw, n_threads)) for t, c in todo)
    else:
        tasks = ((t, (c, kw, task_threads)) for t, c in todo)
        results = _distributed.map_tiles(
            client, _chain_task, (model, data, basis), tasks, name="fastscape-curvature-map"
        )
    bar = _progress(m, bool(progress), "curvature map")
    try:
        if bar is not None:
            bar.update(sum(min(tile, m - s) for t, s in enumerate(starts) if done[t]))
        for t, res in results:
            s = starts[t]
            e = min(m, s + tile)
            for k in _CMAP_ARRAYS:
                out[k][s:e] = res[k]
            if ckpt is not None:
                arrays = {k: np.asarray(res[k], dtype=_CMAP_ARRAYS[k]) for k in _CMAP_ARRAYS}
                arrays.update(fingerprint=np.array(fp), tile=np.array(t))
                atomic_write(
                    ckpt / f"tile_{t:06d}.npz", lambda p, x=arrays: _savez(p, x), suffix=".npz"
                )
            if bar is not None:
                bar.update(e - s)
            if on_tile is not None:
                on_tile(t, len(starts))
    finally:
        results.close()
        if bar is not None:
            bar.close()
    shape = (a.size, b.size)
    grid = {}
    for k, v in out.items():  # back from serpentine to row-major order
        g = np.empty_like(v)
        g[order] = v
        grid[k] = g.reshape(shape)
    loss = None
    if with_loss:
        engine = {"client": client} if client is not None else {}
        loss = evaluate(model, basis, C, data, n_threads=n_threads, **engine).loss.reshape(shape)
    return CurvatureMap(
        a, b, **grid, loss=loss, directions=(meta_of(d1), meta_of(d2)),
        settings=_settings(target, **settings),
    )  # fmt: skip
