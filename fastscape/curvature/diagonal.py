"""The diagonal of a curvature matrix: exact for small models, Hutchinson's estimator with
per-entry standard errors for large ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import config
from .._validation import check_choice, check_positive_int
from ..models import MLP
from ._common import Progress, apply_rows, as_operator, check_budget, rademacher
from .ggn import MATRICES, curvature_operator, exact_matrix
from .operator import prepare_inputs

__all__ = ["DiagonalResult", "hessian_diagonal", "hutchinson_diagonal", "operator_diagonal"]


@dataclass
class DiagonalResult:
    """The diagonal of a symmetric matrix, exact or estimated.

    Attributes
    ----------
    diagonal : (n,) array
    std_error : (n,) array
        Per-entry standard error (zeros when ``exact``): the sample standard deviation of the
        probes' ``z_i (A z)_i`` over ``sqrt(m)``. An entry's estimate is a mean of m independent
        terms, so ``diagonal ± 2 std_error`` covers the truth about 95% of the time once m is a
        few tens.
    exact : bool
        True when the values are the matrix's own entries (up to rounding).
    method : {"exact", "hutchinson"}
    matrix : str
        ``"hessian"``, ``"ggn"``, ``"fisher"``, ``"residual"`` or ``"operator"``.
    n_matvecs : int
        Operator products used (0 when the exact Hessian was formed by its kernel).
    n_samples : int
        Probes used (0 when exact).
    converged : bool
        Whether all the probes asked for were used (False: ``max_hvps`` cut them short).
    status : {"converged", "budget"}
    message : str
    """

    diagonal: np.ndarray
    std_error: np.ndarray
    exact: bool
    method: str
    matrix: str
    n_matvecs: int
    n_samples: int
    converged: bool = True
    status: str = "converged"
    message: str = ""

    @property
    def n_hvps(self) -> int:
        """Operator products used (the same as ``n_matvecs``)."""
        return self.n_matvecs


def hutchinson_diagonal(
    A,
    n_samples: int = 100,
    *,
    max_hvps: int | None = None,
    seed: int = 0,
    block: int = 32,
    progress: bool = False,
) -> DiagonalResult:
    """Hutchinson's diagonal estimator (Bekas, Kokiopoulou & Saad 2007) with Rademacher probes.

    ``diag(A) ≈ (1/m) Σ_k z_k ⊙ (A z_k)``: unbiased, entry i with variance
    ``Σ_{j≠i} A_ij² / m`` (exact for a diagonal A). The per-entry standard error is the sample
    standard deviation of the ``z_k,i (A z_k)_i`` over ``sqrt(m)``.

    Parameters
    ----------
    A : LinearOperator (n, n)
    n_samples : int
        Probes m (>= 2).
    max_hvps : int, optional
        Hard budget of products (>= 2); fewer than ``n_samples`` leave ``converged=False``.
    seed : int
    block : int
        Probes per operator call.
    progress : bool
        Show a tqdm bar of the probes.

    Returns
    -------
    DiagonalResult
        ``exact=False``, ``method="hutchinson"``, ``matrix="operator"``.
    """
    A = as_operator(A)
    n = A.shape[0]
    m = check_positive_int(n_samples, "n_samples", minimum=2)
    block = check_positive_int(block, "block")
    max_hvps = check_budget(max_hvps, m, minimum=2)
    limit = min(m, max_hvps)
    rng = np.random.default_rng(seed)
    mean = np.zeros(n)
    m2 = np.zeros(n)  # sum of squared deviations, merged block by block (Chan et al.)
    with Progress(progress, limit, "diagonal") as bar:
        for s in range(0, limit, block):
            Z = rademacher(rng, (min(block, limit - s), n))
            T = Z * apply_rows(A, Z)
            b = T.shape[0]
            bmean = T.mean(axis=0)
            delta = bmean - mean
            mean += delta * (b / (s + b))
            m2 += ((T - bmean) ** 2).sum(axis=0) + delta**2 * (s * b / (s + b))
            bar.update(b)
    se = np.sqrt(m2 / (limit - 1) / limit)
    converged = limit == m
    if converged:
        message = f"Hutchinson diagonal: {limit} probes, largest standard error {se.max():.3g}"
    else:
        message = (
            f"not converged after {limit} products (budget max_hvps={max_hvps}): "
            f"{limit} of n_samples={m} probes"
        )
    return DiagonalResult(
        mean, se, False, "hutchinson", "operator", limit, limit, converged,
        "converged" if converged else "budget", message,
    )  # fmt: skip


def operator_diagonal(A, *, block: int = 256) -> DiagonalResult:
    """The exact diagonal of an operator from its products with the identity (n products,
    ``block`` at a time; memory ``block * n``).

    Parameters
    ----------
    A : LinearOperator (n, n)
    block : int

    Returns
    -------
    DiagonalResult
        ``exact=True``, zero standard errors.
    """
    A = as_operator(A)
    n = A.shape[0]
    block = check_positive_int(block, "block")
    d = np.empty(n)
    for s in range(0, n, block):
        b = min(block, n - s)
        E = np.zeros((b, n))
        E[np.arange(b), s + np.arange(b)] = 1.0
        d[s : s + b] = apply_rows(A, E)[np.arange(b), s + np.arange(b)]
    return DiagonalResult(
        d, np.zeros(n), True, "exact", "operator", n, 0,
        message=f"exact: the diagonal from {n} products with the identity",
    )  # fmt: skip


def hessian_diagonal(
    model: MLP,
    theta,
    X,
    y=None,
    method: str = "auto",
    *,
    matrix: str = "hessian",
    n_samples: int = 100,
    max_hvps: int | None = None,
    seed: int = 0,
    max_params: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> DiagonalResult:
    """The diagonal of the Hessian (or of another curvature matrix) of a model at ``theta``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"auto", "exact", "hutchinson"}
        ``exact``: the entries themselves (the Hessian from its exact kernel; the other
        matrices from P products with the identity); ``hutchinson``: the stochastic estimate
        with per-entry standard errors (:func:`hutchinson_diagonal`); ``auto``: exact when
        ``P <= max_params``.
    matrix : {"hessian", "ggn", "fisher", "residual"}
    n_samples : int
        Probes (``hutchinson``).
    max_hvps : int, optional
        Hard budget of products (``hutchinson``).
    seed : int
    max_params : int, optional
        Largest P for the exact method (default ``config.HESSIAN_MAX_PARAMS``).
    device : {"cpu", "cuda"}
        Where the products run (``"cuda"``: the Hessian's only).
    progress : bool

    Returns
    -------
    DiagonalResult
        (P,) ``diagonal`` and ``std_error``; ``exact`` says which it is.
    """
    method = check_choice(method, "method", ("auto", "exact", "hutchinson"))
    matrix = check_choice(matrix, "matrix", MATRICES)
    theta, data, device = prepare_inputs(model, theta, X, y, device)
    P = model.n_params
    limit = config.HESSIAN_MAX_PARAMS if max_params is None else max_params
    if method == "auto":
        method = "exact" if P <= limit else "hutchinson"
    if method == "exact":
        if matrix == "hessian":
            d = np.diag(exact_matrix(model, theta, data, None, matrix, max_params=limit)).copy()
            return DiagonalResult(
                d, np.zeros(P), True, "exact", matrix, 0, 0,
                message=f"exact: the diagonal of the {P} x {P} Hessian",
            )  # fmt: skip
        if P > limit:
            raise ValueError(
                f"the exact diagonal of the {matrix} needs {P} products, over the limit "
                f"max_params={limit}; raise max_params, or use method='hutchinson'"
            )
        res = operator_diagonal(curvature_operator(model, theta, data, matrix=matrix))
        res.matrix = matrix
        return res
    A = curvature_operator(model, theta, data, matrix=matrix, device=device)
    res = hutchinson_diagonal(A, n_samples, max_hvps=max_hvps, seed=seed, progress=progress)
    res.matrix = matrix
    return res
