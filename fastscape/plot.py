"""Pictures of landscapes with Matplotlib.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, no GUI backend, no
global state), so it works headless and in threads; each returns the Figure (save it with
``fig.savefig(path)``). Pass ``ax`` to draw into an existing Axes instead (its Figure is
returned).

Orientation: ``surface.loss[i, j]`` is at ``(alphas[i], betas[j])``; alpha runs along the x axis
and beta along the y axis, for non-square grids too.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

# the curvature pictures (spectrum, EoS, escape direction) are written beside their
# computations and are part of this module's API
from ._plot_curvature import plot_eos as eos
from ._plot_curvature import plot_escape_direction as escape_direction
from ._plot_curvature import plot_spectrum as spectrum
from ._validation import as_float_array
from .landscape import Slice, Surface
from .paths import PathProfile

__all__ = [
    "contour",
    "eos",
    "escape_direction",
    "heatmap",
    "path_profile",
    "slice_plot",
    "spectrum",
    "surface3d",
    "trajectory",
]  # fmt: skip


def _axes(ax, projection=None, figsize=(6.0, 5.0)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    if projection == "3d":
        import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

    return fig, fig.add_subplot(projection=projection)


def _values(surface: Surface, metric: str) -> np.ndarray:
    if not isinstance(surface, Surface):
        raise TypeError(f"surface must be a Surface, got {type(surface).__name__}")
    if metric == "loss":
        return surface.loss
    if metric == "accuracy":
        if surface.accuracy is None:
            raise ValueError("metric 'accuracy': this surface has no accuracy (MSE or function)")
        return surface.accuracy
    raise ValueError(f"unknown metric {metric!r}; expected 'loss' or 'accuracy'")


def _check_log(Z: np.ndarray, log: bool) -> None:
    if log and not (np.isfinite(Z).all() and (Z > 0).all()):
        raise ValueError("log=True needs finite, strictly positive values; use log=False")


def _labels(ax, surface: Surface, zlabel: str | None = None) -> None:
    d1, d2 = [*surface.directions, {}, {}][:2]

    def name(d, sym):
        norm = d.get("norm") if isinstance(d, dict) else None
        return f"{sym}" + (f" ({norm})" if norm else "")

    ax.set_xlabel(name(d1, "α"))
    ax.set_ylabel(name(d2, "β"))
    if zlabel is not None:
        ax.set_zlabel(zlabel)


def contour(
    surface: Surface,
    levels: int | np.ndarray = 30,
    *,
    log: bool = False,
    filled: bool = True,
    metric: str = "loss",
    ax=None,
    title: str | None = None,
) -> Figure:
    """Contour plot of a surface.

    Parameters
    ----------
    surface : Surface
    levels : int or array
        Number of levels (evenly spaced, or geometrically with ``log``) or the levels.
    log : bool
        Logarithmic levels and colour scale (values must be positive).
    filled : bool
        Filled contours with a colour bar, or lines with labels.
    metric : {"loss", "accuracy"}
    ax : Axes, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    Z = _values(surface, metric)
    _check_log(Z, log)
    fig, ax = _axes(ax)
    if isinstance(levels, (int, np.integer)):
        lo, hi = float(Z.min()), float(Z.max())
        if hi == lo:
            hi = lo + 1.0
        lv = np.geomspace(lo, hi, int(levels)) if log else np.linspace(lo, hi, int(levels))
    else:
        lv = as_float_array(levels, "levels", 1)
    norm = LogNorm(vmin=lv[0], vmax=lv[-1]) if log else None
    if filled:
        cs = ax.contourf(surface.alphas, surface.betas, Z.T, levels=lv, norm=norm, cmap="viridis")
        cbar = fig.colorbar(cs, ax=ax, label=metric)
        if log:  # a few labelled ticks across the range (the default shows one or none)
            cbar.set_ticks(np.geomspace(lv[0], lv[-1], 5))
            cbar.set_ticklabels([f"{t:.3g}" for t in np.geomspace(lv[0], lv[-1], 5)])
    else:
        cs = ax.contour(surface.alphas, surface.betas, Z.T, levels=lv, norm=norm, cmap="viridis")
        ax.clabel(cs, inline=True, fontsize=7)
    _labels(ax, surface)
    ax.set_title(title or f"{metric} contours")
    return fig


def heatmap(
    surface: Surface, *, log: bool = False, metric: str = "loss", ax=None, title: str | None = None
) -> Figure:
    """Heat map of a surface (one cell per grid point, centred on its coordinates).

    Parameters
    ----------
    surface : Surface
    log : bool
        Logarithmic colour scale.
    metric : {"loss", "accuracy"}
    ax : Axes, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    Z = _values(surface, metric)
    _check_log(Z, log)
    fig, ax = _axes(ax)
    mesh = ax.pcolormesh(
        surface.alphas, surface.betas, Z.T, shading="nearest", cmap="viridis",
        norm=LogNorm() if log else None,
    )  # fmt: skip
    fig.colorbar(mesh, ax=ax, label=metric)
    _labels(ax, surface)
    ax.set_title(title or metric)
    return fig


def surface3d(
    surface: Surface, *, log: bool = False, metric: str = "loss", ax=None, title: str | None = None
) -> Figure:
    """3D surface plot.

    Parameters
    ----------
    surface : Surface
    log : bool
        Plot log10 of the values (Matplotlib's 3D axes have no true log scale).
    metric : {"loss", "accuracy"}
    ax : Axes3D, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    Z = _values(surface, metric)
    _check_log(Z, log)
    fig, ax = _axes(ax, projection="3d", figsize=(7.0, 5.5))
    A, B = np.meshgrid(surface.alphas, surface.betas, indexing="ij")
    V = np.log10(Z) if log else Z
    ax.plot_surface(A, B, V, cmap="viridis", linewidth=0, antialiased=True)
    _labels(ax, surface, zlabel=f"log10 {metric}" if log else metric)
    ax.set_title(title or f"{metric} surface")
    return fig


def slice_plot(sl: Slice, *, log: bool = False, ax=None, title: str | None = None) -> Figure:
    """A 1D slice: loss on the left axis and, when defined, accuracy on a twin right axis.

    Parameters
    ----------
    sl : Slice
    log : bool
        Logarithmic loss axis.
    ax : Axes, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    if not isinstance(sl, Slice):
        raise TypeError(f"sl must be a Slice, got {type(sl).__name__}")
    _check_log(sl.loss, log)
    fig, ax = _axes(ax, figsize=(6.5, 4.0))
    ax.plot(sl.alphas, sl.loss, color="C0", label="loss")
    ax.set_xlabel("α" + (f" ({sl.direction.get('norm')})" if sl.direction.get("norm") else ""))
    ax.set_ylabel("loss", color="C0")
    if log:
        ax.set_yscale("log")
    if sl.accuracy is not None:
        twin = ax.twinx()
        twin.plot(sl.alphas, sl.accuracy, color="C1", linestyle="--", label="accuracy")
        twin.set_ylabel("accuracy", color="C1")
        twin.set_ylim(-0.02, 1.02)
    ax.set_title(title or "1D slice")
    return fig


def path_profile(
    paths, labels=None, *, log: bool = False, ax=None, title: str | None = None
) -> Figure:
    """Loss along one or more paths against t (e.g. the linear segment and a trained curve).

    Parameters
    ----------
    paths : PathProfile or sequence of PathProfile
    labels : sequence of str, optional
        Default: each path's kind with its barrier.
    log : bool
    ax : Axes, optional
    title : str, optional

    Returns
    -------
    Figure
    """
    items = [paths] if isinstance(paths, PathProfile) else list(paths)
    if not items or not all(isinstance(p, PathProfile) for p in items):
        raise TypeError("paths must be a PathProfile or a non-empty sequence of them")
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"labels has {len(labels)} entries for {len(items)} paths")
    fig, ax = _axes(ax, figsize=(6.5, 4.0))
    for k, p in enumerate(items):
        _check_log(p.loss, log)
        label = labels[k] if labels is not None else f"{p.kind} (barrier {p.barrier:.3g})"
        ax.plot(p.ts, p.loss, marker=".", label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    ax.legend()
    ax.set_title(title or "loss along the path")
    return fig


def trajectory(
    surface: Surface,
    projection,
    *,
    levels: int = 30,
    log: bool = False,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Contours of a surface with a training trajectory drawn on them.

    Parameters
    ----------
    surface : Surface
        Usually computed at the final point along PCA directions.
    projection : (T, 2) array
        Trajectory coordinates in the surface's (alpha, beta) plane, e.g.
        ``directions.pca(...).projection``.
    levels, log, ax, title
        As in :func:`contour`.

    Returns
    -------
    Figure
    """
    P = as_float_array(projection, "projection", 2)
    if P.shape[1] != 2:
        raise ValueError(f"projection must have 2 columns (alpha, beta), got shape {P.shape}")
    fig = contour(surface, levels, log=log, ax=ax, title=title or "training trajectory")
    ax = ax if ax is not None else fig.axes[0]
    ax.plot(P[:, 0], P[:, 1], color="white", marker="o", markersize=3, linewidth=1.5)
    ax.plot(P[-1, 0], P[-1, 1], color="red", marker="*", markersize=10, linestyle="none")
    return fig
