"""Curvature of the loss: Hessian eigenvalues, trace and spectral density, matrix-free.

Everything here is built on an *operator* in SciPy's convention
(``scipy.sparse.linalg.LinearOperator``). On a model it is the :class:`HessianOperator`: exact
Hessian-vector products (Pearlmutter's R-operator) that take K vectors in one pass over the
data; the solvers work on blocks of vectors whenever they can. Any other ``LinearOperator``
(``aslinearoperator(array)``, a sparse matrix, an operator of your own) works with every solver.
The Hessian itself is formed only by the ``"exact"`` methods, for small models.

- :mod:`.operator`: :class:`HessianOperator` (and :func:`hessian_matvec`, its row product);
- :mod:`.ggn`: the Gauss-Newton matrix, the empirical Fisher and the residual ``H - GGN`` as
  operators (:func:`ggn_operator`, :func:`fisher_operator`, :func:`residual_operator`,
  :func:`curvature_operator`; :func:`exact_matrix` forms any of them for small models);
- :mod:`.blocks`: each layer's diagonal block as an operator (:func:`layer_block`), the
  blocks' top eigenvalues and traces and the layer couplings (:func:`layer_blocks`);
- :mod:`.diagonal`: the diagonal, exact or by Hutchinson with per-entry standard errors
  (:func:`hessian_diagonal`, :func:`hutchinson_diagonal`, :func:`operator_diagonal`);
- :mod:`.eigen`: :func:`power_iteration`, :func:`lanczos` (thick restart), :func:`top_eigen`;
- :mod:`.trace`: :func:`hutchinson`, :func:`hutchpp`, :func:`hessian_trace`;
- :mod:`.density`: :func:`slq`, :func:`exact_density`, :func:`spectral_density`.

Every iterative solver takes ``max_hvps`` (a hard budget of operator products) and
``progress`` (a tqdm bar), and its result says whether it converged (``converged``,
``status``, ``message``, ``n_hvps``). Eigenvectors are returned as **rows** (``(k, n)``), like
every direction in fastscape, with the sign convention of :func:`fix_signs`.

References: Pearlmutter (1994) for the HVP; Hutchinson (1989) and Meyer, Musco, Musco &
Woodruff (2021, "Hutch++") for the trace; Golub & Meurant (2009), Lin, Saad & Yang (2016) and
Ghorbani, Krishnan & Xiao (2019) for stochastic Lanczos quadrature. See ``docs/curvature.md``.
"""

from __future__ import annotations

from ._common import MAX_HVPS_CAP, fix_signs, row_signs
from .blocks import BlockOperator, LayerBlocksResult, layer_block, layer_blocks
from .density import exact_density, slq, spectral_density
from .diagonal import DiagonalResult, hessian_diagonal, hutchinson_diagonal, operator_diagonal
from .eigen import DEFAULT_TOL, lanczos, power_iteration, top_eigen
from .ggn import (
    MATRICES,
    FisherOperator,
    GGNOperator,
    ResidualOperator,
    curvature_operator,
    exact_matrix,
    fisher_operator,
    ggn_operator,
    residual_operator,
)
from .operator import HessianOperator, hessian_matvec
from .results import DensityResult, EigenResult, TraceResult
from .trace import hessian_trace, hutchinson, hutchpp

__all__ = [
    "DEFAULT_TOL",
    "MATRICES",
    "MAX_HVPS_CAP",
    "BlockOperator",
    "DensityResult",
    "DiagonalResult",
    "EigenResult",
    "FisherOperator",
    "GGNOperator",
    "HessianOperator",
    "LayerBlocksResult",
    "ResidualOperator",
    "TraceResult",
    "curvature_operator",
    "exact_density",
    "exact_matrix",
    "fisher_operator",
    "fix_signs",
    "ggn_operator",
    "hessian_diagonal",
    "hessian_matvec",
    "hessian_trace",
    "hutchinson",
    "hutchinson_diagonal",
    "hutchpp",
    "lanczos",
    "layer_block",
    "layer_blocks",
    "operator_diagonal",
    "power_iteration",
    "residual_operator",
    "row_signs",
    "slq",
    "spectral_density",
    "top_eigen",
]
