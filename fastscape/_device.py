"""The dispatch seam: every computation the API hands to a kernel goes through here.

The API validates what a user passes (:func:`prepare` does the opening checks that every
public function shares), then calls one of the dispatchers below with a validated model,
parameter vector and :class:`~fastscape.data.Batch`. A dispatcher picks the *backend* named by
``device`` and calls the backend's method of the same purpose; nothing else in the API decides
where a computation runs.

Dispatchers (the model is read through ``model.spec``, a :class:`~fastscape.data.ModelSpec`):

- :func:`mlp_loss`, :func:`mlp_loss_grad`: mean loss (and gradient);
- :func:`mlp_hvp`: Hessian-vector products; :func:`hvp_operator` the operator with
  the pass at theta computed once; :func:`ggn_operator` and :func:`fisher_operator` the same
  for the Gauss-Newton matrix and the empirical Fisher (CPU only);
- :func:`mlp_hessian`: the exact Hessian (closed forms for the no-hidden-layer members);
- :func:`mlp_logits`: the network's outputs;
- :func:`span_eval`: the span engine on one tile of points (MLPs), :func:`span_analytic` and
  :func:`span_function` the same for functions f(theta).

Backends
--------
A backend is an object registered under a device name in :data:`BACKENDS` (with
:func:`register_backend`). It has:

- ``dtypes``: the working precisions it accepts;
- ``check_available()``: raises :class:`DeviceUnavailableError` (saying why and how to fix it)
  when it cannot run here;
- ``prepare_data(data, dtype)``: the data in the form its kernels read, made once per call
  (the GPU's copies; the CPU returns ``data`` itself);
- the operations, each taking the :class:`~fastscape.data.ModelSpec` first: ``loss``,
  ``loss_grad``, ``hvp_operator``, ``hessian``, ``logits``, ``span_eval`` (and, on the CPU,
  ``ggn_operator``, ``fisher_operator``, ``span_analytic``, ``span_function``). An operation
  a backend lacks is refused by the dispatcher with an error naming the device.

Two are built in: ``"cpu"`` (the Numba kernels of ``fastscape.kernels``) and ``"cuda"`` (their
twins in ``fastscape.kernels.cuda``, imported only when a CUDA computation is asked for, so the
CPU path never imports ``numba.cuda``). A Dask backend plugs in the same way: an object with
these methods that maps tiles of points or shards of samples onto workers running the CPU
kernels, registered under its own device name.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple, Protocol

import numba
import numpy as np

from . import config
from .data import Batch, DeviceBatch, ModelSpec, copy_to_device
from .kernels import ggn as _ggn
from .kernels import hessian as _hessian
from .kernels import hvp as _hvp
from .kernels import linear as _linear
from .kernels import mlp as _k
from .kernels import penalty as _penalty
from .kernels import span as _span

#: How to get the CUDA target.
INSTALL_HINT = 'pip install "fastscape[cuda]"'

DTYPES = ("float64", "float32")


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


# ----------------------------------------------------------------------------- backends
class CPUBackend:
    """The Numba CPU kernels of ``fastscape.kernels``.

    float32 (``dtype="float32"``): X is cast to float32 once per call (:meth:`prepare_data`;
    an HVP operator keeps its copy for its whole life), the kernels cast the parameters once
    and run their products and activations in float32, every sum over samples is accumulated
    in float64 (blocks of at most ``config.F32_SAMPLE_BLOCK`` samples summed in float32 by BLAS,
    their totals in float64), and the results are float64. The targets Y stay float64.
    """

    name = "cpu"
    dtypes = DTYPES

    def check_available(self) -> None:
        """The CPU is always there."""

    def prepare_data(self, data: Batch, dtype: str) -> Batch:
        """The data the kernels read: ``data`` itself in float64 (no copy); in float32 a Batch
        with a float32 copy of X (and the same Y), made here, once per call."""
        if data.X.dtype == np.dtype(dtype):
            return data
        return Batch(np.ascontiguousarray(data.X, dtype=dtype), data.Y)

    @staticmethod
    def _block(spec: ModelSpec, dtype: str) -> int:
        """Samples per block of the loss and gradient kernels."""
        block = config.mlp_block_for(spec.sizes)
        return block if dtype == "float64" else min(block, config.F32_SAMPLE_BLOCK)

    def loss(self, spec: ModelSpec, theta, data: Batch, dtype: str) -> float:
        data = self.prepare_data(data, dtype)
        return float(
            _k.mlp_loss(
                theta, *spec.kernel_args, data.X, data.Y,
                config.n_chunks_for(data.X.shape[0]), self._block(spec, dtype),
                config.MLP_SERIAL_BELOW, spec.penalty,
            )
        )  # fmt: skip

    def loss_grad(self, spec: ModelSpec, theta, data: Batch, dtype: str):
        data = self.prepare_data(data, dtype)
        value, g = _k.mlp_loss_grad(
            theta, *spec.kernel_args, data.X, data.Y,
            config.n_chunks_for(data.X.shape[0]), self._block(spec, dtype),
            config.MLP_SERIAL_BELOW, spec.penalty,
        )  # fmt: skip
        return float(value), g

    def hvp_operator(self, spec: ModelSpec, theta, data: Batch, dtype: str):
        data = self.prepare_data(data, dtype)
        sample_block = config.HVP_SAMPLE_BLOCK if dtype == "float64" else config.F32_SAMPLE_BLOCK
        cache = _hvp.forward_cache(
            theta, *spec.kernel_args, data.X, data.Y, sample_block, spec.penalty,
        )  # fmt: skip
        chunk = _hvp.vec_chunk_for(cache, config.HVP_SCRATCH_BYTES, config.HVP_WAVE)
        return lambda V: _hvp.block_hvp(cache, V, chunk, numba.get_num_threads(), config.HVP_WAVE)

    def hvp(self, spec: ModelSpec, theta, V, data: Batch, dtype: str) -> np.ndarray:
        return self.hvp_operator(spec, theta, data, dtype)(V)

    def ggn_operator(self, spec: ModelSpec, theta, data: Batch, dtype: str):
        return self._curvature_operator(_ggn.GGN, spec, theta, data, dtype)

    def fisher_operator(self, spec: ModelSpec, theta, data: Batch, dtype: str):
        return self._curvature_operator(_ggn.FISHER, spec, theta, data, dtype)

    @staticmethod
    def _curvature_operator(kind: int, spec: ModelSpec, theta, data: Batch, dtype: str):
        if dtype != "float64":  # kernels/ggn.py computes in float64 only
            raise ValueError(f"the GGN and Fisher products run in float64 only, got {dtype=}")
        cache = _ggn.forward_cache(
            kind, theta, *spec.kernel_args, data.X, data.Y, config.HVP_SAMPLE_BLOCK, spec.penalty
        )
        chunk = _ggn.vec_chunk_for(cache, config.HVP_SCRATCH_BYTES)
        return lambda V: _ggn.block_products(cache, V, chunk, numba.get_num_threads())

    def hessian(self, spec: ModelSpec, theta, data: Batch) -> np.ndarray:
        if spec.is_linear and spec.loss == _k.LOGISTIC:
            H = _linear.logistic_hessian(theta, data.X)
        elif spec.is_linear and spec.loss == _k.MSE:
            H = _linear.mse_hessian(data.X, spec.n_outputs)
        else:
            sizes = spec.sizes_array
            block = _hessian.block_size(sizes, data.X.shape[0], config.HESSIAN_SCRATCH_BYTES)
            H = _hessian.mlp_hessian(
                theta, sizes, spec.activation, spec.loss, data.X, data.Y, block
            )
        if spec.penalty is not None:
            _penalty.add_l2_diagonal(H, spec.penalty)
        return H

    def logits(self, spec: ModelSpec, theta, X) -> np.ndarray:
        return _k.mlp_logits(
            theta, spec.sizes_array, spec.activation, X, config.mlp_block_for(spec.sizes)
        )

    def span_eval(self, spec: ModelSpec, basis, coef, data: Batch, dtype: str):
        data = self.prepare_data(data, dtype)  # (the span kernels read X's dtype)
        return _span.span_eval(
            basis, coef, *spec.kernel_args, data.X, data.Y,
            config.span_block_for(basis.shape[0], spec.sizes[1]), config.SPAN_POINT_CHUNK,
            config.SPAN_SUB_BLOCK, config.SPAN_SCRATCH_BYTES, spec.penalty, np.dtype(dtype),
            config.SPAN_DEEP_TILE,
        )  # fmt: skip

    def span_analytic(self, code: int, basis, coef) -> np.ndarray:
        return _span.span_analytic(code, basis, coef, config.SPAN_POINT_CHUNK)

    def span_function(self, fn, basis, coef) -> np.ndarray:
        return _span.span_function(fn, basis, coef, config.SPAN_POINT_CHUNK)


class CUDABackend:
    """The CUDA twins in ``fastscape.kernels.cuda`` (imported at the first use)."""

    name = "cuda"
    dtypes = DTYPES

    def check_available(self) -> None:
        # module globals, looked up at call time (tests replace them)
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

    def prepare_data(self, data: Batch, dtype: str) -> DeviceBatch:
        """Copy the data to the GPU once, in ``dtype`` (kept by the DeviceBatch)."""
        out = data if isinstance(data, DeviceBatch) else DeviceBatch(data.X, data.Y)
        out.device_arrays(dtype)
        return out

    @staticmethod
    def _mlp():
        from .kernels.cuda import mlp

        return mlp

    @staticmethod
    def _args(spec: ModelSpec, data: Batch, dtype: str):
        dX, dY = copy_to_device(data, dtype)
        return *spec.kernel_args, dX, dY

    def loss(self, spec: ModelSpec, theta, data: Batch, dtype: str) -> float:
        return float(
            self._mlp().mlp_loss(
                theta, *self._args(spec, data, dtype), config.CUDA_LOSS_THREADS,
                config.CUDA_THREADS_PER_BLOCK, np.dtype(dtype), spec.penalty,
            )
        )  # fmt: skip

    def loss_grad(self, spec: ModelSpec, theta, data: Batch, dtype: str):
        value, g = self._mlp().mlp_loss_grad(
            theta, *self._args(spec, data, dtype), config.CUDA_BLOCK,
            config.CUDA_THREADS_PER_BLOCK, np.dtype(dtype), spec.penalty,
        )  # fmt: skip
        return float(value), g

    def hvp(self, spec: ModelSpec, theta, V, data: Batch, dtype: str) -> np.ndarray:
        km = self._mlp()
        n_units = int(sum(spec.sizes[1:]))
        block = km.hvp_block_for(V.shape[0], n_units, config.CUDA_BLOCK, config.CUDA_SCRATCH_BYTES)
        return km.mlp_hvp(
            theta, V, *self._args(spec, data, dtype), block, config.CUDA_THREADS_PER_BLOCK,
            np.dtype(dtype), spec.penalty,
        )  # fmt: skip

    def hvp_operator(self, spec: ModelSpec, theta, data: Batch, dtype: str):
        data = self.prepare_data(data, dtype)
        return lambda V: self.hvp(spec, theta, V, data, dtype)

    def span_eval(self, spec: ModelSpec, basis, coef, data: Batch, dtype: str):
        from .kernels.cuda import span

        return span.span_eval(
            basis, coef, *self._args(spec, data, dtype),
            config.cuda_span_block_for(basis.shape[0], spec.sizes[1]), config.CUDA_SPAN_SLOTS,
            config.CUDA_THREADS_PER_BLOCK, np.dtype(dtype), spec.penalty,
        )  # fmt: skip


class Backend(Protocol):
    """What every backend has (the operations are optional: see the module docstring)."""

    dtypes: tuple[str, ...]

    def check_available(self) -> None: ...

    def prepare_data(self, data: Batch, dtype: str) -> Batch: ...


#: The backends by device name; :func:`register_backend` adds one.
BACKENDS: dict[str, Backend] = {"cpu": CPUBackend(), "cuda": CUDABackend()}


def register_backend(name: str, backend: Backend) -> None:
    """Make ``backend`` the one that runs ``device=name`` (see the module docstring).

    Parameters
    ----------
    name : str
        The device name users pass (``device=name``); an existing name is replaced.
    backend : Backend
        An object with ``dtypes``, ``check_available``, ``prepare_data`` and the operations it
        supports.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    missing = [a for a in ("dtypes", "check_available", "prepare_data") if not hasattr(backend, a)]
    if missing:
        raise TypeError(f"backend {name!r} lacks {', '.join(missing)}")
    BACKENDS[name] = backend


def devices() -> tuple[str, ...]:
    """The device names that have a backend, in registration order."""
    return tuple(BACKENDS)


def _names() -> str:
    quoted = [repr(d) for d in BACKENDS]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def resolve_device(device) -> str:
    """Validate ``device`` and check that it can run here.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Or the name of a backend added with :func:`register_backend`.

    Returns
    -------
    str
        ``device`` itself.

    Raises
    ------
    TypeError
        ``device`` is not a string.
    ValueError
        ``device`` names no backend.
    DeviceUnavailableError
        ``"cuda"`` without numba-cuda installed, or without a visible GPU.
    """
    if not isinstance(device, str):
        raise TypeError(f"device must be {_names()}, got {type(device).__name__}")
    if device not in BACKENDS:
        raise ValueError(f"unknown device {device!r}; expected {_names()}")
    BACKENDS[device].check_available()
    return device


def backend(device: str):
    """The backend that runs ``device`` (validated and available here)."""
    return BACKENDS[resolve_device(device)]


def check_dtype(dtype, device: str) -> np.dtype:
    """Validate the working precision for ``device``: "float64" anywhere, "float32" where the
    backend takes it (the CPU and the GPU)."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected 'float64' or 'float32'")
    if dtype not in BACKENDS[device].dtypes:
        where = " or ".join(f"device={d!r}" for d, b in BACKENDS.items() if dtype in b.dtypes)
        raise ValueError(f"dtype={dtype!r} is available with {where} only")
    return np.dtype(dtype)


def _backend_for(device: str, dtype: str, op: str):
    be = backend(device)
    check_dtype(dtype, device)
    if not hasattr(be, op):
        raise ValueError(f"{op} is not available with device={device!r}; use device='cpu'")
    return getattr(be, op)


# ----------------------------------------------------------------------------- opening checks
class Prepared(NamedTuple):
    """What :func:`prepare` returns."""

    device: str
    data: Batch | None
    thetas: dict


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
    return BACKENDS["cuda"].prepare_data(data, dtype)


def prepare(model, X, y=None, *, device="cpu", dtype="float64", upload=True, **thetas):
    """The opening checks of a public function, in their order, done once.

    1. ``device`` resolved (:func:`resolve_device`) and ``dtype`` checked for it: a bad device
       is refused before anything else is looked at;
    2. ``model`` is a model (it has a :class:`~fastscape.data.ModelSpec`);
    3. each parameter vector of ``thetas`` validated in the order given
       (``model.check_theta(value, name)``; a None value stays None);
    4. ``(X, y)`` validated once (``model.batch``; ``X=None`` means no data);
    5. with ``upload``, the data put in the form the device's kernels read (on the GPU: copied
       once, a DeviceBatch that every later call of the function reuses).

    Parameters
    ----------
    model : MLP
    X : (n, d) array, Batch, DeviceBatch or None
    y : (n,) or (n, out) array, optional
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
    upload : bool
        Copy the data to the device now.
    **thetas : (P,) arrays or None
        Named parameter vectors (the names appear in the error messages).

    Returns
    -------
    Prepared
        ``(device, data, thetas)``, ``thetas`` a dict of the validated vectors.
    """
    device = resolve_device(device)
    check_dtype(dtype, device)
    if not isinstance(getattr(model, "spec", None), ModelSpec):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    checked = {
        name: None if value is None else model.check_theta(value, name)
        for name, value in thetas.items()
    }
    if is_sharded(X):
        if y is not None:
            raise ValueError("y must be None when X is sharded data (it holds the targets)")
        if device != "cpu" or dtype != "float64":
            raise ValueError(
                "sharded data run on the CPUs of a Dask cluster in float64; got "
                f"device={device!r}, dtype={dtype!r}"
            )
        return Prepared(device, X, checked)
    data = None if X is None else model.batch(X, y)
    if upload and data is not None:
        data = BACKENDS[device].prepare_data(data, dtype)
    return Prepared(device, data, checked)


# ----------------------------------------------------------------------------- dispatchers
def is_sharded(data) -> bool:
    """Whether ``data`` are samples sharded on a Dask cluster
    (:class:`fastscape.distributed.ShardedData`, which carries its own operations: the
    dispatchers below hand it the call)."""
    return getattr(data, "sharded", False) is True


def _no_hessian(data) -> None:
    if is_sharded(data):
        raise ValueError(
            "the exact Hessian is formed on this machine, not from samples sharded on a Dask "
            "cluster; use an iterative method (method='lanczos', 'power', 'hutchinson', 'slq')"
        )


def _hessian_only(data, what: str) -> None:
    if is_sharded(data):
        raise ValueError(
            f"{what} products do not run on samples sharded on a Dask cluster (the Hessian's "
            "do); pass in-memory data"
        )


def span_penalty(spec: ModelSpec, basis, coef) -> np.ndarray:
    """The L2 term of the model at the points ``coef @ basis``, (m,) (the Dask backend adds it
    once on the client; zeros without an L2 term)."""
    if spec.penalty is None:
        return np.zeros(coef.shape[0])
    return _penalty.span_l2(basis, coef, spec.penalty)


def add_penalty(spec: ModelSpec, theta, value: float, grad, V=None, out=None) -> float:
    """The L2 term added once to a loss and its gradient (in place), and to the products
    ``out`` of the rows ``V`` (in place) when given; returns the loss."""
    if spec.penalty is None:
        return value
    if V is not None:
        _penalty.add_l2_hvp(out, V, spec.penalty)
    if grad is not None:
        _penalty.add_l2_grad(grad, theta, spec.penalty)
    return value + _penalty.l2_value(theta, spec.penalty)


def mlp_loss(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
) -> float:
    """Mean loss of ``model`` at ``theta`` on ``data``, on the device's backend.

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision; float32 keeps the sums over samples in float64
        (``kernels.cuda.mlp.FLOAT32_NOTE``).

    Returns
    -------
    float
    """
    if is_sharded(data):
        return data.loss(model.spec, theta)
    return _backend_for(device, dtype, "loss")(model.spec, theta, data, dtype)


def mlp_loss_grad(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient (P,) on the device's backend (arguments as :func:`mlp_loss`).

    Returns
    -------
    loss : float
    grad : (P,) float64
    """
    if is_sharded(data):
        return data.loss_grad(model.spec, theta)
    return _backend_for(device, dtype, "loss_grad")(model.spec, theta, data, dtype)


def hvp_operator(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
):
    """The HVP operator of ``model`` at a fixed ``theta`` on the device's backend.

    The work that does not depend on the vectors is done once, here: on the CPU the pass at
    ``theta``; on the GPU the copy of the data to the device (a DeviceBatch's copies are
    reused).

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    data : Batch (or DeviceBatch), validated
    device : str
    dtype : {"float64", "float32"}
        Working precision (float32 where the backend takes it).

    Returns
    -------
    callable
        ``V (K, P) -> (K, P)`` for C-contiguous float64 V (validated by the caller): rows
        ``H @ V[k]``.
    """
    if is_sharded(data):
        return data.hvp_operator(model.spec, theta)
    return _backend_for(device, dtype, "hvp_operator")(model.spec, theta, data, dtype)


def ggn_operator(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
):
    """The generalized Gauss-Newton operator of ``model`` at a fixed ``theta`` (the CPU's
    ``kernels.ggn``; the pass at theta computed once, here). Arguments as :func:`hvp_operator`.

    Returns
    -------
    callable
        ``V (K, P) -> (K, P)``: rows ``G @ V[k]``, G the GGN of the mean loss plus the L2
        term's Hessian.
    """
    _hessian_only(data, "Gauss-Newton")
    return _backend_for(device, dtype, "ggn_operator")(model.spec, theta, data, dtype)


def fisher_operator(
    model, theta: np.ndarray, data: Batch, device: str = "cpu", dtype: str = "float64"
):
    """The empirical Fisher operator ``(1/n) Σ_i g_i g_iᵀ`` (per-sample data-loss gradients,
    no L2 term) of ``model`` at a fixed ``theta``. Arguments as :func:`hvp_operator`.

    Returns
    -------
    callable
        ``V (K, P) -> (K, P)``: rows ``F @ V[k]``.
    """
    _hessian_only(data, "empirical Fisher")
    return _backend_for(device, dtype, "fisher_operator")(model.spec, theta, data, dtype)


def mlp_hvp(
    model,
    theta: np.ndarray,
    V: np.ndarray,
    data: Batch,
    device: str = "cpu",
    dtype: str = "float64",
) -> np.ndarray:
    """Hessian-vector products ``H @ V[k]`` on the device's backend.

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    V : (K, P) float64, validated
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision (results float64 in both).

    Returns
    -------
    (K, P) float64
    """
    if is_sharded(data):
        return data.hvp(model.spec, theta, V)
    return _backend_for(device, dtype, "hvp")(model.spec, theta, V, data, dtype)


def mlp_hessian(model, theta: np.ndarray, data: Batch, device: str = "cpu") -> np.ndarray:
    """Exact Hessian (P, P) of the mean loss on the device's backend (the CPU's: closed forms
    through BLAS for logistic and linear regression, the block-structured kernel otherwise).

    Parameters
    ----------
    model : MLP
    theta : (P,) float64, validated
    data : Batch, validated
    device : {"cpu"}

    Returns
    -------
    (P, P) float64
    """
    _no_hessian(data)
    return _backend_for(device, "float64", "hessian")(model.spec, theta, data)


def mlp_logits(model, theta: np.ndarray, X: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Outputs of the last (affine) layer, (n, out), for validated theta (P,) and X (n, d)."""
    return _backend_for(device, "float64", "logits")(model.spec, theta, X)


def span_eval(
    model,
    basis: np.ndarray,
    coef: np.ndarray,
    data: Batch,
    device: str = "cpu",
    dtype: str = "float64",
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy at the m points ``coef @ basis``, on the device's backend.

    The span engine of :func:`fastscape.landscape.evaluate` (one tile of points).

    Parameters
    ----------
    model : MLP
    basis : (K, P) float64, validated, C-contiguous
    coef : (m, K) float64, validated, C-contiguous
    data : Batch (or DeviceBatch), validated
    device : {"cpu", "cuda"}
    dtype : {"float64", "float32"}
        Working precision (results float64 in both).

    Returns
    -------
    loss : (m,) float64
    accuracy : (m,) float64
        Zeros for MSE models.
    """
    return _backend_for(device, dtype, "span_eval")(model.spec, basis, coef, data, dtype)


def compile_span_steps(spec: ModelSpec, part: str) -> None:
    """Compile one half ("early" or "late") of the callees of the one-hidden-layer span
    kernel for ``spec`` (``kernels.span_hidden.compile_steps``): the landscape warm-up of
    :mod:`fastscape._warmup` runs the two halves in two processes at once."""
    from .kernels import span_hidden

    span_hidden.compile_steps(spec.activation, spec.loss, spec.sizes[1], spec.sizes[2], part)


def span_analytic(code: int, basis: np.ndarray, coef: np.ndarray, device: str = "cpu"):
    """A built-in test function (``fastscape.functions``, by code) at the points
    ``coef @ basis``: (m,) float64."""
    return _backend_for(device, "float64", "span_analytic")(code, basis, coef)


def span_function(fn, basis: np.ndarray, coef: np.ndarray, device: str = "cpu"):
    """A Numba-jitted ``fn(theta) -> float`` at the points ``coef @ basis``: (m,) float64."""
    return _backend_for(device, "float64", "span_function")(fn, basis, coef)
