"""Directions in parameter space: random (filter/layer/model-normalized), PCA, between solutions.

A direction is one flat float64 vector of the model's length P with its normalization recorded
beside it (:class:`Direction`). Every function of the library that takes a direction also takes
a plain array; a :class:`Direction` only adds the metadata that result objects record.

Normalizations of :func:`random` (Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets"), for a Gaussian draw ``g``:

- ``"filter"``: every row of every weight matrix (the incoming weights of one unit, a
  "filter") is rescaled to the norm of the same row of theta: ``d_row = g_row ‖θ_row‖ / ‖g_row‖``;
- ``"layer"``: every weight matrix is rescaled to the Frobenius norm of theta's matrix;
- ``"model"``: the whole direction is rescaled to the norm of theta (over the same coordinates);
- ``None``: the raw Gaussian draw.

Biases: set to zero when ``ignore_bias`` (the default, as in Li et al.), otherwise each layer's
bias block is rescaled once to ‖b‖ of theta's bias (zero where theta's bias is zero). The bias
is never replaced by theta's own values and never rescaled a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ._validation import as_float_array, as_vector, check_choice, check_positive_int
from .curvature import fix_signs
from .models import MLP

NORMS = ("filter", "layer", "model")


@dataclass(frozen=True, eq=False)
class Direction:
    """A direction: a flat vector plus how it was made.

    Attributes
    ----------
    vector : (P,) float64
    kind : str
        ``"random"``, ``"pca"``, ``"between"``, ``"orthonormalized"``, ``"pair"``.
    norm : str or None
        Normalization applied (``"filter"``, ``"layer"``, ``"model"``, ``"unit"`` or None).
    seed : int or None
        Seed of the Gaussian draw (random directions).
    ignore_bias : bool or None
    extra : dict
        Anything else worth recording (explained-variance ratio of a PCA direction, ...).

    ``numpy.asarray(direction)`` gives the vector, so a Direction can be used as an array.
    """

    vector: np.ndarray
    kind: str = "given"
    norm: str | None = None
    seed: int | None = None
    ignore_bias: bool | None = None
    extra: dict = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        if dtype is None or np.dtype(dtype) == self.vector.dtype:
            return self.vector.copy() if copy else self.vector
        return self.vector.astype(dtype)

    def __len__(self) -> int:
        return self.vector.shape[0]

    @property
    def meta(self) -> dict:
        """The metadata without the vector (what result objects and files record)."""
        out = {"kind": self.kind, "norm": self.norm, "seed": self.seed}
        out["ignore_bias"] = self.ignore_bias
        out.update(self.extra)
        return out


def meta_of(d) -> dict:
    """Metadata of a Direction, or ``{"kind": "given", "norm": None, ...}`` for an array."""
    if isinstance(d, Direction):
        return d.meta
    return {"kind": "given", "norm": None, "seed": None, "ignore_bias": None}


def _normalize(model: MLP, theta: np.ndarray, g: np.ndarray, norm, ignore_bias: bool):
    """Apply a normalization to the raw vector g (modified in place and returned)."""
    for lay in model.layout:
        W = g[lay.weight].reshape(lay.shape)
        TW = theta[lay.weight].reshape(lay.shape)
        if norm == "filter":
            tn = np.linalg.norm(TW, axis=1)
            gn = np.linalg.norm(W, axis=1)
            scale = np.divide(tn, gn, out=np.zeros_like(tn), where=gn > 0)
            W *= scale[:, None]
        elif norm == "layer":
            gn = np.linalg.norm(W)
            W *= np.linalg.norm(TW) / gn if gn > 0 else 0.0
        if ignore_bias:
            g[lay.bias] = 0.0
        elif norm in ("filter", "layer"):
            b = g[lay.bias]
            bn = np.linalg.norm(b)
            b *= np.linalg.norm(theta[lay.bias]) / bn if bn > 0 else 0.0
    if norm == "model":
        mask = np.ones(g.shape[0], bool)
        if ignore_bias:
            for lay in model.layout:
                mask[lay.bias] = False
        gn = np.linalg.norm(g[mask])
        g *= np.linalg.norm(theta[mask]) / gn if gn > 0 else 0.0
    return g


def _check_model(model) -> MLP:
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    return model


def random(
    model: MLP | int,
    theta=None,
    seed: int = 0,
    norm: str | None = "filter",
    ignore_bias: bool = True,
) -> Direction:
    """A Gaussian random direction, normalized to theta's scale.

    Parameters
    ----------
    model : MLP or int
        The model (its layout defines filters and layers), or the length P of a plain parameter
        vector (analytic functions; then only ``norm="model"`` or None apply and there are no
        biases).
    theta : (P,) array
        The point the direction is used at (its norms set the direction's scale). Not needed
        when ``norm`` is None.
    seed : int
        Seed of ``numpy.random.default_rng``.
    norm : {"filter", "layer", "model", None}
        See the module docstring.
    ignore_bias : bool
        Zero the bias entries (default), or scale each layer's bias block to theta's ‖b‖.

    Returns
    -------
    Direction
        ``vector`` (P,). With ``"filter"`` each row of each W has the norm of theta's row.
    """
    if norm is not None:
        check_choice(norm, "norm", NORMS)
    seed = check_positive_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    if isinstance(model, MLP):
        P = model.n_params
    else:
        P = check_positive_int(model, "model (a parameter count)")
        if norm in ("filter", "layer"):
            raise ValueError(
                f"norm {norm!r} needs a model's layer layout; with a parameter count use "
                "'model' or None"
            )
    if theta is None:
        if norm is not None:
            raise ValueError(f"theta is required for norm {norm!r}")
        theta = np.zeros(P)
    else:
        theta = as_vector(theta, "theta", P)
    g = rng.standard_normal(P)
    if isinstance(model, MLP):
        g = _normalize(model, theta, g, norm, ignore_bias)
    elif norm == "model":
        g *= np.linalg.norm(theta) / np.linalg.norm(g)
    if not np.any(g):
        raise ValueError(
            f"the {norm}-normalized direction is zero because theta's weights are zero; "
            "use norm=None or a non-zero theta"
        )
    return Direction(g, "random", norm, seed, ignore_bias if isinstance(model, MLP) else None)


def orthonormalize(d1, d2) -> tuple[Direction, Direction]:
    """Gram-Schmidt: two orthonormal vectors spanning the plane of d1 and d2.

    ``e1 = d1 / ‖d1‖``, ``e2 = (d2 - (d2·e1) e1) / ‖…‖``. The result has unit norms, so any
    filter/layer normalization of the inputs is lost (use :func:`pair` to keep it).

    Parameters
    ----------
    d1, d2 : (P,) arrays or Directions

    Returns
    -------
    (Direction, Direction), each (P,)

    Raises
    ------
    ValueError
        When either has zero norm or they are (numerically) linearly dependent.
    """
    a = as_float_array(d1, "d1", 1)
    b = as_vector(d2, "d2", a.shape[0])
    na = np.linalg.norm(a)
    if na == 0:
        raise ValueError("d1 has zero norm")
    nb = np.linalg.norm(b)
    if nb == 0:
        raise ValueError("d2 has zero norm")
    e1 = a / na
    r = b - (b @ e1) * e1
    r -= (r @ e1) * e1  # second pass: orthogonal to rounding
    nr = np.linalg.norm(r)
    if nr <= 1e-10 * nb:
        raise ValueError(
            "d1 and d2 are not linearly independent (d2 is parallel to d1 up to 1e-10): "
            "they span a line, not a plane"
        )
    return (
        Direction(e1, "orthonormalized", "unit", extra={"from": meta_of(d1)}),
        Direction(r / nr, "orthonormalized", "unit", extra={"from": meta_of(d2)}),
    )


def _blocks(model: MLP, norm: str | None, ignore_bias: bool):
    """Index blocks inside which a normalization rescales (filters, layers, or all)."""
    if norm == "model" or norm is None:
        idx = np.arange(model.n_params)
        if ignore_bias:
            keep = np.ones(model.n_params, bool)
            for lay in model.layout:
                keep[lay.bias] = False
            idx = idx[keep]
        return [idx]
    blocks = []
    for lay in model.layout:
        n_out, n_in = lay.shape
        start = lay.weight.start
        if norm == "filter":
            blocks += [np.arange(start + j * n_in, start + (j + 1) * n_in) for j in range(n_out)]
        else:
            blocks.append(np.arange(lay.weight.start, lay.weight.stop))
        if not ignore_bias:
            blocks.append(np.arange(lay.bias.start, lay.bias.stop))
    return blocks


def pair(
    model: MLP,
    theta,
    seed: int = 0,
    norm: str | None = "filter",
    ignore_bias: bool = True,
) -> tuple[Direction, Direction]:
    """Two random directions, exactly orthogonal, each with the requested normalization.

    Gram-Schmidt is applied block by block inside the blocks the normalization works on (each
    filter for ``"filter"``, each weight matrix for ``"layer"``, each bias block when biases are
    kept, the whole vector for ``"model"``), then each block of the second direction is
    rescaled to theta's norm of that block.

    What is preserved: both directions have exactly the normalization of :func:`random` (every
    filter of d2 has the norm of theta's filter), and d1·d2 = 0 (every block is orthogonal, so
    the whole vectors are). d1 is exactly ``random(model, theta, seed, norm, ignore_bias)``.
    What is not: the directions are not unit vectors (their norms are theta's norm over the
    included coordinates), and d2 is no longer an independent Gaussian draw (it is conditioned
    on being orthogonal to d1). Blocks of a single entry (a unit with one input, a bias of one
    unit) cannot hold two orthogonal non-zero values: d2 is zero there. With ``norm=None``
    both are raw draws and d2 is only orthogonalized.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    seed : int
        d1 uses ``seed``, d2's draw ``seed + 1``.
    norm : {"filter", "layer", "model", None}
    ignore_bias : bool

    Returns
    -------
    (Direction, Direction), each (P,)
    """
    model = _check_model(model)
    d1 = random(model, theta, seed, norm, ignore_bias)
    theta = as_vector(theta, "theta", model.n_params)
    g = np.random.default_rng(seed + 1).standard_normal(model.n_params)
    v2 = np.zeros(model.n_params)
    a = d1.vector
    for blk in _blocks(model, norm, ignore_bias):
        x = g[blk]
        ab = a[blk]
        na2 = ab @ ab
        if na2 > 0:
            x = x - (x @ ab) / na2 * ab
            x = x - (x @ ab) / na2 * ab
        nx = np.linalg.norm(x)
        if norm is None:
            v2[blk] = x
        elif nx > 1e-12 * np.sqrt(len(blk)):
            v2[blk] = x * (np.linalg.norm(theta[blk]) / nx)
    return d1, Direction(v2, "pair", norm, seed + 1, ignore_bias, {"orthogonal_to_seed": seed})


class PCAResult(NamedTuple):
    """Principal directions of a training trajectory.

    Attributes
    ----------
    directions : tuple of Direction
        k unit vectors (P,), orthonormal.
    explained_variance_ratio : (k,) array
        Share of the trajectory's variance along each direction.
    projection : (T, k) array
        Coordinates of each iterate relative to ``theta_final``: ``(θ_t - θ_final) · d_i``
        (``theta_final`` is at the origin), ready to draw on a surface centred at it.
    """

    directions: tuple
    explained_variance_ratio: np.ndarray
    projection: np.ndarray


def pca(trajectory, theta_final=None, k: int = 2) -> PCAResult:
    """PCA directions of a training trajectory (Li et al. 2018, section 7).

    The matrix ``M`` of rows ``θ_t - θ_final`` is centred over t and decomposed by SVD; the
    first k right singular vectors are the directions (sign fixed so the largest entry is
    positive), their squared singular values over the total give the explained-variance ratios.

    Parameters
    ----------
    trajectory : (T, P) array
        Iterates, e.g. ``fit(..., record_every=...).trajectory``.
    theta_final : (P,) array, optional
        Centre of the landscape; default the last iterate.
    k : int
        Number of directions, at most T - 1.

    Returns
    -------
    PCAResult
    """
    T = as_float_array(trajectory, "trajectory", 2)
    n_t, P = T.shape
    k = check_positive_int(k, "k")
    if n_t < 2:
        raise ValueError(f"trajectory needs at least 2 iterates, got {n_t}")
    if k > n_t - 1:
        raise ValueError(f"k={k} exceeds T - 1 = {n_t - 1} for a trajectory of {n_t} iterates")
    centre = T[-1] if theta_final is None else as_vector(theta_final, "theta_final", P)
    M = T - centre
    Mc = M - M.mean(axis=0)
    _, s, Vt = np.linalg.svd(Mc, full_matrices=False)
    total = float(s @ s)
    if total == 0 or s[k - 1] <= 1e-12 * s[0]:
        raise ValueError(
            f"the trajectory spans fewer than k={k} dimensions (it does not move enough)"
        )
    dirs = list(fix_signs(Vt[:k]))  # the one sign convention of eigenvectors and directions
    ratios = s[:k] ** 2 / total
    proj = M @ np.array(dirs).T
    out = tuple(
        Direction(v, "pca", "unit", extra={"explained_variance_ratio": float(r), "component": i})
        for i, (v, r) in enumerate(zip(dirs, ratios))
    )
    return PCAResult(out, ratios, proj)


def between(theta_a, theta_b) -> Direction:
    """The direction from one solution to another, ``θ_b - θ_a`` (unnormalized).

    Along it, coefficient 0 is θ_a and coefficient 1 is θ_b.

    Parameters
    ----------
    theta_a, theta_b : (P,) arrays

    Returns
    -------
    Direction (P,)
    """
    a = as_float_array(theta_a, "theta_a", 1)
    b = as_vector(theta_b, "theta_b", a.shape[0])
    d = b - a
    if not np.any(d):
        raise ValueError("theta_a and theta_b are equal: the direction between them is zero")
    return Direction(d, "between", None, extra={"norm_value": float(np.linalg.norm(d))})
