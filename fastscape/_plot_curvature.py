"""Pictures of curvature: spectral densities, edge-of-stability runs, escape directions.

Like :mod:`fastscape.plot` (which re-exports these), every function builds a
``matplotlib.figure.Figure`` directly (no pyplot, no GUI backend), so it is safe headless
(Agg) and in threads, and returns the Figure; pass ``ax`` to draw into an existing Axes.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._validation import as_float_array
from .curvature import DensityResult
from .eos import EoSResult

__all__ = ["plot_eos", "plot_escape_direction", "plot_spectrum"]


def _readable(*axes) -> None:
    """At most 6 labelled x ticks: labels that never collide (as in :mod:`fastscape.plot`)."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))


def _axes(ax, figsize=(6.0, 4.5)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_spectrum(
    density: DensityResult,
    *,
    log: bool = True,
    floor: float = 1e-7,
    show_hist: bool = True,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Hessian eigenvalue density (log y by default), with the exact histogram when known.

    Parameters
    ----------
    density : DensityResult
        From :func:`fastscape.curvature.spectral_density` (SLQ or exact).
    log : bool
        Logarithmic density axis: the outliers of a Hessian spectrum are orders of magnitude
        rarer than its bulk.
    floor : float
        Lower limit of the log axis, relative to the density's maximum.
    show_hist : bool
        Draw the histogram of the exact eigenvalues (``method="exact"`` results).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    if not isinstance(density, DensityResult):
        raise TypeError(f"density must be a DensityResult, got {type(density).__name__}")
    fig, ax = _axes(ax)
    top = float(density.density.max())
    shown = np.maximum(density.density, top * floor) if log else density.density
    ax.plot(density.grid, shown, color="C0", label=f"{density.method} (σ = {density.sigma:.3g})")
    if show_hist and density.hist is not None:
        ax.stairs(np.maximum(density.hist, top * floor) if log else density.hist,
                  density.hist_edges, color="C1", alpha=0.6, label="exact histogram")  # fmt: skip
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=top * floor)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density")
    _readable(ax)
    ax.set_title(title or "Hessian spectral density")
    ax.legend(loc="upper right")
    return fig


def plot_eos(result: EoSResult, *, title: str | None = None) -> Figure:
    """Edge of stability: the sharpness against the optimiser's threshold (2/η for GD; top)
    and the loss (bottom, log).

    Parameters
    ----------
    result : EoSResult
        From :func:`fastscape.eos.edge_of_stability`.
    title : str, optional

    Returns
    -------
    Figure
        Two Axes sharing the step axis.
    """
    if not isinstance(result, EoSResult):
        raise TypeError(f"result must be an EoSResult, got {type(result).__name__}")
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    name, formula = result.sharpness_label, result.threshold_formula
    ax1.plot(result.steps, result.lambda_max, "o-", ms=3, color="C0", label=name)
    ax1.axhline(result.threshold, color="C3", ls="--", label=f"{formula} = {result.threshold:.3g}")
    ax1.set_ylabel(f"sharpness {name}")
    ax1.legend(loc="lower right")
    ax1.set_title(title or f"edge of stability ({result.optimizer}, η = {result.lr:g})")
    steps = np.arange(result.loss.size)
    positive = bool((result.loss > 0).all())
    ax2.plot(steps, result.loss, color="C2")
    if positive:
        ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss")
    _readable(ax1, ax2)
    return fig


def plot_escape_direction(
    alphas,
    betas,
    loss,
    direction,
    *,
    origin=(0.0, 0.0),
    length: float | None = None,
    levels: int = 30,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Contours of a 2D loss surface with the escape direction drawn from the saddle.

    Parameters
    ----------
    alphas : (a,) array
    betas : (b,) array
    loss : (a, b) array
        ``loss[i, j]`` at ``(alphas[i], betas[j])`` (as :class:`fastscape.landscape.Surface`).
    direction : (2,) array
        The escape direction in the plane's coordinates, e.g.
        :func:`fastscape.critical.escape_in_plane` of ``result.escape_direction``. Drawn both
        ways (±v are both escape directions).
    origin : (2,) array
        Where the critical point sits in the plane.
    length : float, optional
        Arrow length (default a third of the smaller axis range).
    levels : int
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    A = as_float_array(alphas, "alphas", 1)
    B = as_float_array(betas, "betas", 1)
    Z = as_float_array(loss, "loss", 2)
    if Z.shape != (A.size, B.size):
        raise ValueError(f"loss has shape {Z.shape}, expected (len(alphas), len(betas)) = "
                         f"({A.size}, {B.size})")  # fmt: skip
    v = as_float_array(direction, "direction", 1)
    o = as_float_array(origin, "origin", 1)
    if v.shape != (2,) or o.shape != (2,):
        raise ValueError("direction and origin must have 2 entries (plane coordinates)")
    if np.linalg.norm(v) == 0:
        raise ValueError("direction is zero in this plane (orthogonal to both directions)")
    fig, ax = _axes(ax, figsize=(6.0, 5.0))
    cs = ax.contourf(A, B, Z.T, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="loss")
    L = length if length is not None else min(np.ptp(A), np.ptp(B)) / 3.0
    u = v / np.linalg.norm(v) * L
    for s in (1.0, -1.0):
        ax.annotate("", xy=(o[0] + s * u[0], o[1] + s * u[1]), xytext=(o[0], o[1]),
                    arrowprops={"arrowstyle": "->", "color": "red", "lw": 2})  # fmt: skip
    ax.plot([o[0]], [o[1]], "o", color="red", label="critical point")
    ax.plot([], [], color="red", label="escape direction ±v")
    ax.set_xlabel("α (d1)")
    ax.set_ylabel("β (d2)")
    _readable(ax)
    ax.legend(loc="upper right")
    ax.set_title(title or "escape direction")
    return fig
