"""Device selection and dispatch: the CPU kernels or their CUDA twins.

The one place that decides where a computation runs. The public functions validate their
inputs first (shared by both devices), then call the dispatchers here with a validated
:class:`~fastscape.models.Batch`:

- :func:`resolve_device` checks ``device`` and, for ``"cuda"``, that ``numba-cuda`` is
  installed and a GPU is visible (or Numba's simulator is on), with an error saying which is
  missing and how to fix it;
- :func:`mlp_loss`, :func:`mlp_loss_grad`, :func:`mlp_hvp` and :func:`span_eval` run the CPU
  kernel or the CUDA driver of the same name;
- :func:`to_device` copies a Batch to the GPU once, for reuse across calls; a plain Batch is
  copied once per call.

``fastscape.kernels.cuda`` (hence ``numba.cuda``) is imported only when a CUDA computation
is asked for, so the CPU path never imports it.
"""

from __future__ import annotations

import importlib.util

import numba
import numpy as np

from . import config
from .kernels import hvp as _hvp
from .kernels import mlp as _k
from .kernels import span as _span
from .models import Batch

DEVICES = ("cpu", "cuda")

#: How to get the CUDA target.
INSTALL_HINT = 'pip install "fastscape[cuda]"'


class DeviceUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for but cannot run here (the message says why)."""


# ----------------------------------------------------------------------------- probes
def _numba_cuda_installed() -> bool:
    """True when the ``numba-cuda`` package (the CUDA target of Numba) is importable."""
    return importlib.util.find_spec("numba_cuda") is not None


def _gpu_visible() -> bool:
    """True when Numba sees a usable CUDA GPU, or runs its CUDA simulator."""
    from numba import cuda

    return bool(cuda.is_available())


def cuda_available() -> bool:
    """Whether ``device="cuda"`` can run: numba-cuda installed and a GPU visible (or the
    simulator enabled with ``NUMBA_ENABLE_CUDASIM=1``). Never raises."""
    try:
        return _numba_cuda_installed() and _gpu_visible()
    except Exception:  # a broken driver install counts as "not available"
        return False


def resolve_device(device) -> str:
    """Validate ``device`` and check that it can run here.

    Parameters
    ----------
    device : {"cpu", "cuda"}

    Returns
    -------
    str
        ``device`` itself.

    Raises
    ------
    TypeError
        ``device`` is not a string.
    ValueError
        ``device`` is not "cpu" or "cuda".
    DeviceUnavailableError
        ``"cuda"`` without numba-cuda installed, or without a visible GPU.
    """
    if not isinstance(device, str):
        raise TypeError(f"device must be 'cpu' or 'cuda', got {type(device).__name__}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    if device == "cuda":
        if not _numba_cuda_installed():
            raise DeviceUnavailableError(
                "device='cuda' needs the numba-cuda package (Numba's CUDA target), which is "
                f"not installed; install it with {INSTALL_HINT}, or use device='cpu'"
            )
        if not _gpu_visible():
            raise DeviceUnavailableError(
                "device='cuda' was asked for, but no CUDA GPU is visible "
                "(numba.cuda.is_available() is False: no NVIDIA GPU or driver on this machine, "
                "or CUDA_VISIBLE_DEVICES hides it); use device='cpu', or set "
                "NUMBA_ENABLE_CUDASIM=1 before numba is imported to run the CUDA kernels on "
                "Numba's (slow) simulator"
            )
    return device


def _cuda_mlp():
    from .kernels.cuda import mlp

    return mlp


def _cuda_span():
    from .kernels.cuda import span

    return span


# ----------------------------------------------------------------------------- data movement
DTYPES = ("float64", "float32")


def check_dtype(dtype, device: str) -> np.dtype:
    """Validate the working precision: "float64" anywhere, "float32" on the GPU only."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'float64' or 'float32'")
    if dtype == "float32" and device != "cuda":
        raise ValueError("dtype='float32' is available with device='cuda' only")
    return np.dtype(dtype)


class DeviceBatch(Batch):
    """A :class:`~fastscape.models.Batch` whose arrays also live on the GPU.

    ``X`` and ``Y`` are the host arrays (so the CPU path and every check work unchanged);
    :meth:`device_arrays` returns their device copies in a given precision, made once (by
    :func:`to_device`, or at the first call that needs another precision) and kept.
    Do not modify ``X`` or ``Y`` in place afterwards: the device copies would not follow.
    """

    def device_arrays(self, dtype: str = "float64"):
        """Device copies (X, Y) in ``dtype``, copied at the first request."""
        cache = self.__dict__.setdefault("_copies", {})
        if dtype not in cache:
            km = _cuda_mlp()
            cache[dtype] = (km.to_device(self.X, dtype), km.to_device(self.Y, dtype))
        return cache[dtype]

    @property
    def device_X(self):
        """Device copy of X in float64."""
        return self.device_arrays()[0]

    @property
    def device_Y(self):
        """Device copy of Y in float64."""
        return self.device_arrays()[1]


def to_device(data: Batch, dtype: str = "float64") -> DeviceBatch:
    """Copy a validated Batch to the GPU once; pass the result as the data of later calls.

    Parameters
    ----------
    data : Batch
        From ``model.batch(X, y)``; X (n, d) and Y (n, out) float64.
    dtype : {"float64", "float32"}
        Precision of the copies (the one the later calls will use).

    Returns
    -------
    DeviceBatch
        The same host arrays plus their device copies (``data`` itself if it already is one).
    """
    if not isinstance(data, Batch):
        raise TypeError(f"data must be a Batch from model.batch(X, y), got {type(data).__name__}")
    resolve_device("cuda")
    check_dtype(dtype, "cuda")
    out = data if isinstance(data, DeviceBatch) else DeviceBatch(data.X, data.Y)
    out.device_arrays(dtype)
    return out


def _device_arrays(data: Batch, dtype: str):
    """Device copies of X and Y: the stored ones of a DeviceBatch, else copied now (once)."""
    if isinstance(data, DeviceBatch):
        return data.device_arrays(dtype)
    km = _cuda_mlp()
    return km.to_device(data.X, dtype), km.to_device(data.Y, dtype)


# ----------------------------------------------------------------------------- dispatch
def _cpu_args(model, data: Batch):
    return (
        model._sizes_arr,
        model._act,
        model._loss,
        data.X,
        data.Y,
        config.n_chunks_for(data.X.shape[0]),
    )


def _cuda_args(model, data: Batch, dtype: str):
    dX, dY = _device_arrays(data, dtype)
    return model._sizes_arr, model._act, model._loss, dX, dY


def mlp_loss(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
) -> float:
    """Mean loss of ``model`` at ``theta`` on ``data``, on the CPU or the GPU.

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision; float32 (GPU only) keeps the sums over samples in float64
        (``kernels.cuda.mlp.FLOAT32_NOTE``).

    Returns
    -------
    float
    """
    if resolve_device(device) == "cpu":
        check_dtype(dtype, device)
        return float(
            _k.mlp_loss(
                theta,
                *_cpu_args(model, data),
                config.mlp_block_for(model.sizes),
                config.MLP_SERIAL_BELOW,
                model._penalty,
            )
        )
    dt = check_dtype(dtype, device)
    return float(
        _cuda_mlp().mlp_loss(
            theta,
            *_cuda_args(model, data, dtype),
            config.CUDA_LOSS_THREADS,
            config.CUDA_THREADS_PER_BLOCK,
            dt,
            model._penalty,
        )
    )


def mlp_loss_grad(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient (P,), on the CPU or the GPU (arguments as :func:`mlp_loss`).

    Returns
    -------
    loss : float
    grad : (P,) float64
    """
    if resolve_device(device) == "cpu":
        check_dtype(dtype, device)
        value, g = _k.mlp_loss_grad(
            theta,
            *_cpu_args(model, data),
            config.mlp_block_for(model.sizes),
            config.MLP_SERIAL_BELOW,
            model._penalty,
        )
    else:
        dt = check_dtype(dtype, device)
        value, g = _cuda_mlp().mlp_loss_grad(
            theta,
            *_cuda_args(model, data, dtype),
            config.CUDA_BLOCK,
            config.CUDA_THREADS_PER_BLOCK,
            dt,
            model._penalty,
        )
    return float(value), g


def cpu_hvp_operator(model, theta: np.ndarray, data: Batch):
    """The CPU's HVP operator at ``theta``: the pass at theta computed once, here.

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    data : Batch, validated

    Returns
    -------
    callable
        ``V (K, P) -> (K, P)`` (C-contiguous float64, validated): rows ``H @ V[k]``, on
        ``numba.get_num_threads()`` threads at call time.
    """
    cache = _hvp.forward_cache(
        theta, model._sizes_arr, model._act, model._loss, data.X, data.Y,
        config.HVP_SAMPLE_BLOCK, model._penalty,
    )  # fmt: skip
    chunk = _hvp.vec_chunk_for(cache, config.HVP_SCRATCH_BYTES)
    return lambda V: _hvp.block_hvp(cache, V, chunk, numba.get_num_threads())


def mlp_hvp(
    model,
    theta: np.ndarray,
    V: np.ndarray,
    data: Batch,
    device: str = "cpu",
    dtype: str = "float64",
) -> np.ndarray:
    """Hessian-vector products ``H @ V[k]`` on the CPU or the GPU.

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    V : (K, P) float64, validated
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision (float32 on the GPU only).

    Returns
    -------
    (K, P) float64
    """
    if resolve_device(device) == "cpu":
        check_dtype(dtype, device)
        return cpu_hvp_operator(model, theta, data)(V)
    dt = check_dtype(dtype, device)
    km = _cuda_mlp()
    n_units = int(sum(model.sizes[1:]))
    block = km.hvp_block_for(V.shape[0], n_units, config.CUDA_BLOCK, config.CUDA_SCRATCH_BYTES)
    return km.mlp_hvp(
        theta, V, *_cuda_args(model, data, dtype), block, config.CUDA_THREADS_PER_BLOCK, dt,
        model._penalty,
    )  # fmt: skip


def span_eval(
    model,
    basis: np.ndarray,
    coef: np.ndarray,
    data: Batch,
    device: str = "cpu",
    dtype: str = "float64",
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy at the m points ``coef @ basis``, on the CPU or the GPU.

    The span engine of :func:`fastscape.landscape.evaluate` (one tile of points).

    Parameters
    ----------
    model : MLP
    basis : (K, P) float64, validated, C-contiguous
    coef : (m, K) float64, validated, C-contiguous
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision (float32 on the GPU only).

    Returns
    -------
    loss : (m,) float64
    accuracy : (m,) float64
        Zeros for MSE models.
    """
    K = basis.shape[0]
    h1 = model.sizes[1]
    if resolve_device(device) == "cpu":
        check_dtype(dtype, device)
        return _span.span_eval(
            basis, coef, model._sizes_arr, model._act, model._loss, data.X, data.Y,
            config.span_block_for(K, h1), config.SPAN_POINT_CHUNK, config.SPAN_SUB_BLOCK,
            config.SPAN_SCRATCH_BYTES, model._penalty,
        )  # fmt: skip
    dt = check_dtype(dtype, device)
    return _cuda_span().span_eval(
        basis, coef, *_cuda_args(model, data, dtype), config.cuda_span_block_for(K, h1),
        config.CUDA_SPAN_SLOTS, config.CUDA_THREADS_PER_BLOCK, dt, model._penalty,
    )  # fmt: skip


# ----------------------------------------------------------------------------- HVP operator
def hvp_operator(model, theta: np.ndarray, data: Batch, device: str = "cpu",
                 dtype: str = "float64"):  # fmt: skip
    """The HVP operator of ``model`` at a fixed ``theta``, on the CPU or the GPU.

    The work that does not depend on the vectors is done once, here: on the CPU the pass at
    ``theta`` (:func:`cpu_hvp_operator`); on the GPU the copy of the data to the device (a
    DeviceBatch's stored copies are reused).

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision (float32 on the GPU only).

    Returns
    -------
    callable
        ``V (K, P) -> (K, P)`` for C-contiguous float64 V (validated by the caller): rows
        ``H @ V[k]``.
    """
    if resolve_device(device) == "cpu":
        check_dtype(dtype, device)
        return cpu_hvp_operator(model, theta, data)
    check_dtype(dtype, device)
    on_device = to_device(data, dtype)
    return lambda V: mlp_hvp(model, theta, V, on_device, "cuda", dtype)
