"""The Gauss-Newton matrix, the empirical Fisher and the Hessian's residual term, as operators.

For the mean loss ``L(θ) = (1/n) Σ_i ℓ_i(f(x_i; θ)) + ½ Σ_p r_p θ_p²`` (f the network's
outputs, the logits; r the L2 term's weights), with ``J_i = ∂f(x_i)/∂θ`` (out, P),
``H_i = ∂²ℓ_i/∂f²`` (out, out) and ``g_i = J_iᵀ ∂ℓ_i/∂f`` (P,):

- generalized Gauss-Newton ``G = (1/n) Σ_i J_iᵀ H_i J_i + diag(r)``: the Hessian of the loss
  with the network linearised at θ. It includes the L2 term's Hessian ``diag(r)`` (λ on the
  penalised entries), so that the Hessian splits as ``H = G + R``;
- residual ``R = H − G = (1/n) Σ_i Σ_o (∂ℓ_i/∂f_o) ∇²_θ f_o(x_i)``: the part carried by the
  network's own second derivatives (zero for the no-hidden-layer members);
- empirical Fisher ``F = (1/n) Σ_i g_i g_iᵀ`` of the per-sample gradients of the **data** loss
  (the L2 term is excluded: it is no per-sample quantity; add ``diag(r)`` yourself for a damped
  Fisher). Not the "true" Fisher, which samples the targets from the model.

All three are :class:`~fastscape.curvature.HessianOperator` s in every respect a solver uses
(SciPy ``LinearOperator`` (P, P), ``rows`` for a block of vectors in one pass, ``n_hvps``
counting products), so :func:`~fastscape.curvature.lanczos`, :func:`hutchinson`,
:func:`slq` and the rest take them as they are. G and F are positive semi-definite for the
convex per-sample losses of the model family (MSE, logistic, softmax cross-entropy).
Products run on the CPU only (``kernels/ggn.py``): ``device="cuda"`` is refused with an error
naming the device.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .. import _device
from .._validation import as_float_array, check_choice
from ..models import MLP, Batch
from .operator import HessianOperator, SymmetricRowOperator, prepare_inputs

__all__ = [
    "MATRICES",
    "FisherOperator",
    "GGNOperator",
    "ResidualOperator",
    "curvature_operator",
    "exact_matrix",
    "fisher_operator",
    "ggn_operator",
    "residual_operator",
]

#: The curvature matrices of a model that :func:`curvature_operator` builds.
MATRICES = ("hessian", "ggn", "fisher", "residual")


class GGNOperator(HessianOperator):
    """The generalized Gauss-Newton matrix ``G = (1/n) Σ_i J_iᵀ H_i J_i + diag(r)`` at a fixed
    ``theta``, matrix-free (module docstring; CPU only).

    Parameters and attributes as :class:`~fastscape.curvature.HessianOperator`; ``n_hvps``
    counts G-vector products.
    """

    def _product(self, model: MLP, theta: np.ndarray, data: Batch, device: str):
        return _device.ggn_operator(model, theta, data, device)


class FisherOperator(HessianOperator):
    """The empirical Fisher ``F = (1/n) Σ_i g_i g_iᵀ`` (per-sample data-loss gradients, no L2
    term) at a fixed ``theta``, matrix-free (module docstring; CPU only).

    Parameters and attributes as :class:`~fastscape.curvature.HessianOperator`; ``n_hvps``
    counts F-vector products.
    """

    def _product(self, model: MLP, theta: np.ndarray, data: Batch, device: str):
        return _device.fisher_operator(model, theta, data, device)


class ResidualOperator(SymmetricRowOperator):
    """The residual ``R = H − G`` of the Gauss-Newton split, matrix-free.

    Each product is one Hessian product and one GGN product of the same vectors (the L2 term
    cancels). ``hessian`` and ``ggn`` are the two operators, built at the same point; their
    own counters count their products.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    device : {"cpu"}

    Attributes
    ----------
    shape : (P, P)
    n_hvps : int
        R-vector products so far (each costs one HVP and one GGN product).
    hessian : HessianOperator
    ggn : GGNOperator
    """

    def __init__(self, model: MLP, theta, X, y=None, device: str = "cpu"):
        self.ggn = GGNOperator(model, theta, X, y, device=device)
        self.hessian = HessianOperator(model, self.ggn.theta, self.ggn.data, device=device)
        self.model, self.theta, self.data = model, self.ggn.theta, self.ggn.data
        self.device = self.ggn.device
        self.n_hvps = 0
        P = model.n_params
        super().__init__(dtype=np.dtype(np.float64), shape=(P, P))

    def rows(self, V) -> np.ndarray:
        """``R @ V[i]`` for every row of V (K, P); a single vector (P,) gives (P,).

        Parameters
        ----------
        V : (K, P) or (P,) array

        Returns
        -------
        (K, P) or (P,) float64 array
        """
        V = as_float_array(V, "V", (1, 2))
        if V.shape[-1] != self.shape[0]:
            raise ValueError(f"V has rows of length {V.shape[-1]}, expected {self.shape[0]}")
        out = self.hessian.rows(V) - self.ggn.rows(V)
        self.n_hvps += 1 if V.ndim == 1 else V.shape[0]
        return out


def ggn_operator(model: MLP, theta, X, y=None, *, device: str = "cpu") -> GGNOperator:
    """The generalized Gauss-Newton matrix of a model at ``theta``, as an operator.

    ``G = (1/n) Σ_i J_iᵀ H_i J_i + diag(r)`` (module docstring): J_i the Jacobian (out, P) of
    sample i's outputs, H_i the per-sample loss's Hessian in the outputs, r the L2 term.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
        None when ``X`` is a Batch.
    device : {"cpu"}
        The products run on the CPU; ``"cuda"`` is refused with an error naming it.

    Returns
    -------
    GGNOperator
        (P, P), positive semi-definite.
    """
    return GGNOperator(model, theta, X, y, device=device)


def fisher_operator(model: MLP, theta, X, y=None, *, device: str = "cpu") -> FisherOperator:
    """The empirical Fisher ``(1/n) Σ_i g_i g_iᵀ`` of a model at ``theta``, as an operator.

    ``g_i`` (P,) is sample i's gradient of its loss ``ℓ_i`` (the data loss, without the L2
    term: module docstring).

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    device : {"cpu"}

    Returns
    -------
    FisherOperator
        (P, P), positive semi-definite, rank at most n.
    """
    return FisherOperator(model, theta, X, y, device=device)


def residual_operator(model: MLP, theta, X, y=None, *, device: str = "cpu") -> ResidualOperator:
    """The residual ``H − G`` of the Gauss-Newton split of the Hessian, as an operator.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    device : {"cpu"}

    Returns
    -------
    ResidualOperator
        (P, P), symmetric, indefinite in general; zero without hidden layers.
    """
    return ResidualOperator(model, theta, X, y, device=device)


def curvature_operator(
    model: MLP, theta, X, y=None, matrix: str = "hessian", *, device: str = "cpu"
) -> LinearOperator:
    """The operator of one of the curvature matrices of a model (:data:`MATRICES`).

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    matrix : {"hessian", "ggn", "fisher", "residual"}
    device : {"cpu", "cuda"}
        ``"cuda"`` for the Hessian only.

    Returns
    -------
    LinearOperator
        A :class:`~fastscape.curvature.HessianOperator`, :class:`GGNOperator`,
        :class:`FisherOperator` or :class:`ResidualOperator`.
    """
    matrix = check_choice(matrix, "matrix", MATRICES)
    cls = {
        "hessian": HessianOperator,
        "ggn": GGNOperator,
        "fisher": FisherOperator,
        "residual": ResidualOperator,
    }[matrix]
    return cls(model, theta, X, y, device=device)


def exact_matrix(
    model: MLP, theta, X, y=None, matrix: str = "hessian", max_params: int | None = None
) -> np.ndarray:
    """One of the curvature matrices of a model formed exactly, for small models.

    The Hessian by its exact kernel (``MLP.hessian``); the GGN, Fisher and residual from their
    products with the identity (P products, 256 at a time), symmetrised.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    matrix : {"hessian", "ggn", "fisher", "residual"}
    max_params : int, optional
        Largest P accepted (default ``config.HESSIAN_MAX_PARAMS``).

    Returns
    -------
    (P, P) float64 array
    """
    from .. import config

    matrix = check_choice(matrix, "matrix", MATRICES)
    theta, data, _ = prepare_inputs(model, theta, X, y, "cpu")
    P = model.n_params
    limit = config.HESSIAN_MAX_PARAMS if max_params is None else max_params
    if P > limit:
        raise ValueError(
            f"the exact {matrix} of this model would be {P} x {P}, over the limit "
            f"max_params={limit}; raise max_params to build it, or use the estimated methods"
        )
    if matrix == "hessian":
        return model.hessian(theta, data, max_params=limit)
    A = curvature_operator(model, theta, data, matrix=matrix)
    out = np.empty((P, P))
    step = 256
    for s in range(0, P, step):
        E = np.zeros((min(step, P - s), P))
        E[np.arange(E.shape[0]), s + np.arange(E.shape[0])] = 1.0
        out[s : s + E.shape[0]] = A.rows(E)
    return 0.5 * (out + out.T)
