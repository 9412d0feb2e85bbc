"""The Hessian of a model's loss as a SciPy ``LinearOperator``, with a batched product.

Every curvature solver in :mod:`fastscape.curvature` takes an operator in SciPy's convention
(``scipy.sparse.linalg.LinearOperator``): a :class:`HessianOperator`, or any other one
(``aslinearoperator(array)``, a sparse matrix, an operator of your own). SciPy's solvers
(``eigsh``, ``cg``, ``minres``) take a :class:`HessianOperator` as they are.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .. import _device
from .._validation import as_float_array
from ..models import MLP, Batch

__all__ = ["HessianOperator", "SymmetricRowOperator", "hessian_matvec"]


class SymmetricRowOperator(LinearOperator):
    """A symmetric ``LinearOperator`` whose products come from one batched method,
    ``rows(V)``: ``A @ V[i]`` for every row of V (K, n), returned as (K, n).

    SciPy's single and block products, their adjoints and the transpose are all that one
    method (A is symmetric). Subclasses define ``rows`` and call
    ``LinearOperator.__init__`` with their dtype and shape.
    """

    def rows(self, V) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _matvec(self, x):
        return self.rows(np.reshape(x, (1, -1)))[0]

    def _matmat(self, X):
        return self.rows(np.asarray(X).T).T

    def _rmatvec(self, x):
        return self._matvec(x)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self

    def _transpose(self):
        return self


class HessianOperator(SymmetricRowOperator):
    """The exact Hessian of the mean loss of ``model`` at a fixed ``theta``, matrix-free.

    Data, parameters and ``device`` are validated once, here, and the operator keeps
    ``theta`` and the data as they were at construction. The products are exact
    Hessian-vector products (Pearlmutter's R-operator) from the dispatch seam
    (:func:`fastscape._device.hvp_operator`): on the CPU the forward and backward passes at
    ``theta`` are computed once, here, and each product is one compiled pass over the data
    for all the vectors of a block (``fastscape.kernels.hvp``); on the GPU the data are copied
    to the device once, here, and each product runs the CUDA HVP kernel.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array, Batch, DeviceBatch (from ``fastscape._device.to_device``) or ShardedData
        (from :func:`fastscape.distributed.shard`)
    y : (n,) or (n, out) array
        None when ``X`` is a Batch or ShardedData.
    device : {"cpu", "cuda"}
        Where the products run.
    client : dask.distributed.Client, optional
        Run the products on this Dask cluster, the samples sharded across its workers
        (``X`` and ``y`` may be dask arrays, rows chunked alike; in-memory data are cut into
        one chunk per worker thread): the pass at theta is made once per chunk on its worker,
        each product is one task per chunk, and the partial sums are added in chunk order
        here. Equal to the local operator to about 1e-15 relative (``docs/cluster.md``).
    n_threads : int, optional
        With a ``client``: Numba threads per task (default 1).
    dtype : {"float64", "float32"}
        Working precision of the products (float32: single-precision products, sums over
        samples in float64; the data are cast once, here). The operator's ``dtype`` attribute
        (SciPy's: the type of its outputs) is float64 either way; ``precision`` holds this one.

    Attributes
    ----------
    shape : (P, P)
    dtype : float64
    precision : str
        The working precision of the products.
    n_hvps : int
        Hessian-vector products computed so far (vectors, not calls). Reset it to 0 to count
        a new solve.
    model, theta, data, device
        What the operator was built from.

    Notes
    -----
    SciPy's convention holds vectors in columns: ``H @ x`` for x (P,), ``H @ X`` / ``H.matmat(X)``
    for X (P, K). fastscape holds directions in rows; :meth:`rows` is the product on rows
    ``V (K, P) -> (K, P)`` (row i is ``H @ V[i]``), which the solvers use. Both are one pass
    for all K vectors. H is symmetric: ``H.T``, ``H.H`` and ``rmatvec`` are the same products.
    """

    def __init__(
        self,
        model: MLP,
        theta,
        X,
        y=None,
        device: str = "cpu",
        dtype: str = "float64",
        *,
        client=None,
        n_threads=None,
    ):
        if client is not None:  # the samples sharded on the workers (fastscape.distributed)
            from .. import distributed

            X, y = distributed.shard(client, model, X, y, n_threads=n_threads or 1), None
        theta, data, device = prepare_inputs(model, theta, X, y, device, dtype=dtype)
        theta = theta.copy()
        P = model.n_params
        self.model = model
        self.theta = theta
        self.data: Batch = data
        self.device = device
        self.precision = dtype
        self.n_hvps = 0
        self._apply = self._product(model, theta, data, device)
        super().__init__(dtype=np.dtype(np.float64), shape=(P, P))

    def _product(self, model: MLP, theta: np.ndarray, data: Batch, device: str):
        """The row-block product ``V (K, P) -> (K, P)`` from the dispatch seam (subclasses
        for other curvature matrices return theirs: ``fastscape.curvature.ggn``)."""
        return _device.hvp_operator(model, theta, data, device, self.precision)

    def rows(self, V) -> np.ndarray:
        """``H @ V[i]`` for every row of V (K, P); a single vector (P,) gives (P,).

        Parameters
        ----------
        V : (K, P) or (P,) array

        Returns
        -------
        (K, P) or (P,) float64 array
        """
        V = as_float_array(V, "V", (1, 2))
        P = self.shape[0]
        if V.shape[-1] != P:
            raise ValueError(f"V has rows of length {V.shape[-1]}, expected {P}")
        out = self._apply(np.ascontiguousarray(np.atleast_2d(V)))
        self.n_hvps += 1 if V.ndim == 1 else V.shape[0]
        return out[0] if V.ndim == 1 else out


def hessian_matvec(model: MLP, theta, X, y=None, *, device: str = "cpu", client=None):
    """The row-block product of a :class:`HessianOperator` (kept for existing code).

    ``hessian_matvec(model, theta, X, y)(V)`` is ``HessianOperator(model, theta, X, y).rows(V)``:
    row i of the result is ``H @ V[i]`` for V (b, P), and a single vector (P,) gives (P,). The
    solvers take the operator itself; new code builds a :class:`HessianOperator`.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array, Batch, or DeviceBatch
    y : (n,) or (n, out) array
    device : {"cpu", "cuda"}
    client : dask.distributed.Client, optional
        The products on a Dask cluster, samples sharded (see :class:`HessianOperator`).

    Returns
    -------
    callable
        ``V (b, P) -> (b, P)`` (a bound :meth:`HessianOperator.rows`; its operator is
        ``.__self__``).
    """
    return HessianOperator(model, theta, X, y, device=device, client=client).rows


def prepare_inputs(
    model, theta, X, y, device, client=None, dtype: str = "float64"
) -> tuple[np.ndarray, Batch, str]:
    """The opening checks of the model-level functions (:func:`fastscape._device.prepare`: the
    device and ``dtype`` first, then model, theta and data); the data stay on the host (the HVP
    operator copies them to the device, or casts them, once). With a ``client``, the samples
    are first sharded on its workers (:func:`fastscape.distributed.shard`)."""
    if client is not None:
        from .. import distributed

        X, y = distributed.shard(client, model, X, y), None
    prepared = _device.prepare(model, X, y, device=device, dtype=dtype, upload=False, theta=theta)
    return prepared.thetas["theta"], prepared.data, prepared.device
