"""Pictures of landscapes with Matplotlib.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, no GUI backend, no
global state), so it works headless and in threads; each returns the Figure (save it with
:func:`save`, in several formats at a chosen dpi, or ``fig.savefig(path)``). Pass ``ax`` to
draw into an existing Axes instead (its Figure is returned).

Titles say how the plane was chosen, from the directions' records (see
:func:`describe_directions`): "filter-normalised random directions", "PCA of the training
trajectory", ... The point θ (the origin of the plane, usually the trained parameters) is a
star and the grid's minimum a cross, both in a legend under the axes.

Orientation: ``surface.loss[i, j]`` is at ``(alphas[i], betas[j])``; alpha runs along the x axis
and beta along the y axis, for non-square grids too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# the curvature pictures (spectrum, EoS, escape direction) are written beside their
# computations and are part of this module's API
from ._plot_curvature import plot_eos as eos
from ._plot_curvature import plot_escape_direction as escape_direction
from ._plot_curvature import plot_spectrum as spectrum
from ._validation import as_float_array
from .landscape import CurvatureMap, Slice, Surface, atomic_write
from .paths import PathProfile

__all__ = [
    "contour",
    "curvature_maps",
    "describe_directions",
    "eos",
    "escape_direction",
    "heatmap",
    "path_profile",
    "save",
    "slice_plot",
    "slices",
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


_NORM_WORDS = {"filter": "filter-normalised", "layer": "layer-normalised",
               "model": "model-normalised", "unit": "unit"}  # fmt: skip


def _direction_words(d) -> str:
    """How one direction was made, in words, from its record (``Direction.meta``)."""
    d = d if isinstance(d, dict) else {}
    kind = d.get("kind")
    norm = _NORM_WORDS.get(d.get("norm"), "")
    if kind in ("random", "pair"):
        return f"{norm} random".strip()
    if kind == "pca":
        return "PCA of the training trajectory"
    if kind == "hessian":
        return "top Hessian eigenvector"
    if kind == "between":
        return "interpolation between two points"
    if kind == "orthonormalized":
        return "orthonormalised"
    return "given"


def describe_directions(directions) -> str:
    """The kind of a plane's (or a line's) directions, in words, for a title.

    Parameters
    ----------
    directions : dict or sequence of dict
        Direction records (``Surface.directions``, ``Slice.direction``, ``Direction.meta``):
        ``kind`` (``"random"``, ``"pair"``, ``"pca"``, ``"hessian"``, ``"between"``, ...) and
        ``norm``.

    Returns
    -------
    str
        E.g. "filter-normalised random directions", "PCA of the training trajectory",
        "top Hessian eigenvectors"; the directions' words joined by " / " when they differ.
        Only directions recorded as PCA of a trajectory are called "training trajectory".
    """
    items = [directions] if isinstance(directions, dict) else list(directions or [{}])
    words = [_direction_words(d) for d in items] or ["given"]
    if len(set(words)) == 1:
        w = words[0]
        if w.startswith("PCA"):
            return w
        if w == "top Hessian eigenvector":
            return w + ("s" if len(items) > 1 else "")
        if w == "interpolation between two points":
            return w
        return f"{w} direction" + ("s" if len(items) > 1 else "")
    return " / ".join(f"{w} direction" if not w.startswith(("PCA", "top", "interp")) else w
                      for w in words)  # fmt: skip


def _ticks(ax) -> None:
    """At most 6 labelled ticks on x (and y): labels that never collide."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    if ax.get_yscale() == "linear":  # a log axis keeps its decade ticks and labels
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))


def _labels(ax, surface: Surface, zlabel: str | None = None) -> None:
    d1, d2 = [*surface.directions, {}, {}][:2]

    def name(d, sym, index):
        norm = d.get("norm") if isinstance(d, dict) else None
        return f"{sym} (d{index}" + (f", {norm}" if norm else "") + ")"

    ax.set_xlabel(name(d1, "α", 1))
    ax.set_ylabel(name(d2, "β", 2))
    if zlabel is not None:
        ax.set_zlabel(zlabel)
    else:
        _ticks(ax)


def _title(surface: Surface, what: str) -> str:
    return f"{what}: {describe_directions(surface.directions)}"


def _mark_points(ax, surface: Surface, Z: np.ndarray, metric: str, center: bool, minimum: bool):
    """θ (the plane's origin) as a star and the grid's best point as a cross, in a legend."""
    if (
        center
        and surface.alphas.min() <= 0 <= surface.alphas.max()
        and (surface.betas.min() <= 0 <= surface.betas.max())
    ):
        ax.plot([0.0], [0.0], linestyle="none", marker="*", markersize=14, color="red",
                markeredgecolor="white", label="θ (origin of the plane)")  # fmt: skip
    if minimum:
        best = np.nanargmax(Z) if metric == "accuracy" else np.nanargmin(Z)
        i, j = np.unravel_index(best, Z.shape)
        word = "maximum" if metric == "accuracy" else "minimum"
        ax.plot([surface.alphas[i]], [surface.betas[j]], linestyle="none", marker="X",
                markersize=9, color="white", markeredgecolor="black",
                label=f"grid {word} ({metric} {Z[i, j]:.3g})")  # fmt: skip
    _legend_below(ax)


def _legend_below(ax, handles=None, labels=None) -> None:
    """The legend under the axes (never over the data), in columns."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                  fontsize=8, frameon=False)  # fmt: skip


def contour(
    surface: Surface,
    levels: int | np.ndarray = 30,
    *,
    log: bool = False,
    filled: bool = True,
    metric: str = "loss",
    ax=None,
    title: str | None = None,
    mark_theta: bool = True,
    mark_min: bool = True,
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
        Default: the metric and the directions' kind, e.g. "loss contours: filter-normalised
        random directions".
    mark_theta : bool
        Mark θ (the origin of the plane) with a star, in the legend.
    mark_min : bool
        Mark the grid's best point (minimum loss, maximum accuracy) with a cross, in the
        legend.

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
        cbar = fig.colorbar(cs, ax=ax, label=metric + (" (log scale)" if log else ""))
        if log:  # a few labelled ticks across the range (the default shows one or none)
            cbar.set_ticks(np.geomspace(lv[0], lv[-1], 5))
            cbar.set_ticklabels([f"{t:.3g}" for t in np.geomspace(lv[0], lv[-1], 5)])
        else:
            cbar.locator = MaxNLocator(nbins=6)
            cbar.update_ticks()
    else:
        cs = ax.contour(surface.alphas, surface.betas, Z.T, levels=lv, norm=norm, cmap="viridis")
        ax.clabel(cs, inline=True, fontsize=7)
    _labels(ax, surface)
    _mark_points(ax, surface, Z, metric, mark_theta, mark_min)
    ax.set_title(title or _title(surface, f"{metric} contours"))
    return fig


def heatmap(
    surface: Surface,
    *,
    log: bool = False,
    metric: str = "loss",
    ax=None,
    title: str | None = None,
    mark_theta: bool = True,
    mark_min: bool = True,
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
        Default: the metric and the directions' kind.
    mark_theta, mark_min : bool
        As in :func:`contour`.

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
    fig.colorbar(mesh, ax=ax, label=metric + (" (log scale)" if log else ""))
    _labels(ax, surface)
    _mark_points(ax, surface, Z, metric, mark_theta, mark_min)
    ax.set_title(title or _title(surface, metric))
    return fig


def curvature_maps(
    cmap: CurvatureMap,
    *,
    levels: int = 30,
    log: bool = False,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """λmax, λmin and the convexity map ``|λmin / λmax|`` beside the loss contour.

    The panels of Li et al. (2018): the loss contours of the plane, then the largest and the
    smallest Hessian eigenvalue (λmin on a diverging scale centred at 0 when it changes sign:
    negative curvature in red), then ``|λmin / λmax|`` (near 0: locally convex; large:
    strongly non-convex). Points where a solve did not converge are left blank (grey) in the
    map they concern, and their number is in the panel's title; the ratio is blank where
    either end did not converge (:attr:`CurvatureMap.ratio`).

    Parameters
    ----------
    cmap : CurvatureMap
        From :func:`fastscape.landscape.curvature_map`; arrays (a, b) with ``[i, j]`` at
        ``(alphas[i], betas[j])``. Without a loss (``with_loss=False``) the contour panel is
        left out.
    levels : int
        Number of loss contour levels.
    log : bool
        Logarithmic loss levels (the loss must be positive); the white loss contours drawn
        over the maps follow them.
    title : str, optional
        Figure title; default says the method and the directions' kind.
    figsize : (float, float), optional
        Default: 4.2 inches wide per panel in one row.

    Returns
    -------
    Figure
        Three or four panels in one row; α along x and β along y.
    """
    if not isinstance(cmap, CurvatureMap):
        raise TypeError(f"cmap must be a CurvatureMap, got {type(cmap).__name__}")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if cmap.loss is not None:
        _check_log(cmap.loss, log)
    panels = (["loss"] if cmap.loss is not None else []) + ["max", "min", "ratio"]
    fig = Figure(figsize=figsize or (4.2 * len(panels), 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    a, b = cmap.alphas, cmap.betas
    if cmap.loss is not None:
        lo, hi = float(cmap.loss.min()), float(cmap.loss.max())
        hi = max(hi, lo * (1 + 1e-9) + 1e-12)
        lv = np.geomspace(lo, hi, levels) if log else np.linspace(lo, hi, levels)
    origin = a.min() <= 0 <= a.max() and b.min() <= 0 <= b.max()
    for ax, kind in zip(axes, panels):
        ax.set_facecolor("0.75")  # what masked (unconverged) cells show
        if kind == "loss":
            cs = ax.contourf(a, b, cmap.loss.T, levels=lv, cmap="viridis",
                             norm=LogNorm(lv[0], lv[-1]) if log else None)  # fmt: skip
            cbar = fig.colorbar(cs, ax=ax, label="loss" + (" (log scale)" if log else ""))
            if log:  # a few labelled ticks across the range, as in contour()
                ticks = np.geomspace(lv[0], lv[-1], 5)
                cbar.set_ticks(ticks)
                cbar.set_ticklabels([f"{t:.3g}" for t in ticks])
            ax.set_title("loss")
        else:
            if kind == "max":
                Z, ok, label = cmap.lambda_max, cmap.converged_max, "λmax"
            elif kind == "min":
                Z, ok, label = cmap.lambda_min, cmap.converged_min, "λmin"
            else:
                Z, ok, label = cmap.ratio, cmap.converged, "|λmin / λmax|"
            M = np.ma.masked_where(~ok | ~np.isfinite(Z), Z)
            norm, colours = None, ("magma" if kind == "ratio" else "viridis")
            if kind == "min" and M.count() and M.min() < 0 < M.max():
                norm, colours = TwoSlopeNorm(0.0, float(M.min()), float(M.max())), "RdBu"
            mesh = ax.pcolormesh(a, b, M.T, shading="nearest", cmap=colours, norm=norm)
            fig.colorbar(mesh, ax=ax, label=label)
            bad = int((~ok).sum())
            ax.set_title(label + (f" ({bad} unconverged, grey)" if bad else ""))
            if cmap.loss is not None:
                ax.contour(a, b, cmap.loss.T, levels=lv[:: max(1, levels // 8)], colors="white",
                           linewidths=0.5, alpha=0.6)  # fmt: skip
        if origin:
            ax.plot([0.0], [0.0], linestyle="none", marker="*", markersize=11, color="red",
                    markeredgecolor="white")  # fmt: skip
        ax.set_xlabel("α (d1)")
        ax.set_ylabel("β (d2)")
        _ticks(ax)
    method = cmap.settings.get("method", "")
    fig.suptitle(title or f"Hessian curvature ({method}): {describe_directions(cmap.directions)}")
    return fig


def surface3d(
    surface: Surface, *, log: bool = False, metric: str = "loss", ax=None, title: str | None = None
) -> Figure:
    """3D surface plot with a colour bar.

    Parameters
    ----------
    surface : Surface
    log : bool
        Plot log10 of the values (Matplotlib's 3D axes have no true log scale); the z axis
        and the colour bar are labelled ``log10(loss)``.
    metric : {"loss", "accuracy"}
    ax : Axes3D, optional
    title : str, optional
        Default: the metric and the directions' kind.

    Returns
    -------
    Figure
    """
    Z = _values(surface, metric)
    _check_log(Z, log)
    fig, ax = _axes(ax, projection="3d", figsize=(7.0, 5.5))
    A, B = np.meshgrid(surface.alphas, surface.betas, indexing="ij")
    V = np.log10(Z) if log else Z
    label = f"log10({metric})" if log else metric
    surf = ax.plot_surface(A, B, V, cmap="viridis", linewidth=0, antialiased=True)
    fig.colorbar(surf, ax=ax, label=label, shrink=0.6, pad=0.1)
    _labels(ax, surface, zlabel=label)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_title(title or _title(surface, f"{metric} surface" + (" (log10)" if log else "")))
    return fig


def slice_plot(
    sl: Slice,
    *,
    log: bool = False,
    ax=None,
    title: str | None = None,
    symbol: str = "α",
    direction_name: str = "d1",
    mark_theta: bool = True,
) -> Figure:
    """A 1D slice: loss on the left axis and, when defined, accuracy on a twin right axis.

    Parameters
    ----------
    sl : Slice
    log : bool
        Logarithmic loss axis.
    ax : Axes, optional
    title : str, optional
        Default: "1D slice: " and the direction's kind.
    symbol : str
        The coordinate's symbol on the x axis (``"β"`` for a slice along d2).
    direction_name : str
        The direction's name on the x axis (``"d1"``, ``"d2"``).
    mark_theta : bool
        Mark θ (coordinate 0) with a star on the loss curve; the legend names the curves and
        the marks.

    Returns
    -------
    Figure
    """
    if not isinstance(sl, Slice):
        raise TypeError(f"sl must be a Slice, got {type(sl).__name__}")
    _check_log(sl.loss, log)
    fig, ax = _axes(ax, figsize=(6.5, 4.0))
    ax.plot(sl.alphas, sl.loss, color="C0", label="loss")
    norm = sl.direction.get("norm") if isinstance(sl.direction, dict) else None
    ax.set_xlabel(f"{symbol} ({direction_name}" + (f", {norm})" if norm else ")"))
    ax.set_ylabel("loss", color="C0")
    if log:
        ax.set_yscale("log")
    if mark_theta and sl.alphas.min() <= 0 <= sl.alphas.max():
        ax.plot([0.0], [np.interp(0.0, *_sorted(sl.alphas, sl.loss))], linestyle="none",
                marker="*", markersize=12, color="red", label="θ (origin)")  # fmt: skip
    _ticks(ax)
    handles, labels = ax.get_legend_handles_labels()
    if sl.accuracy is not None:
        twin = ax.twinx()
        twin.plot(sl.alphas, sl.accuracy, color="C1", linestyle="--", label="accuracy")
        twin.set_ylabel("accuracy", color="C1")
        twin.set_ylim(-0.02, 1.02)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    _legend_below(ax, handles, labels)
    ax.set_title(title or f"1D slice: {describe_directions(sl.direction)}")
    return fig


def _sorted(x: np.ndarray, v: np.ndarray):
    order = np.argsort(x)
    return x[order], v[order]


def slices(
    s1: Slice, s2: Slice, *, log: bool = False, title: str | None = None, figsize=(11.0, 4.2)
) -> Figure:
    """The two 1D slices of a plane side by side: along d1 (α, left) and d2 (β, right).

    Parameters
    ----------
    s1, s2 : Slice
        Slices along d1 and d2.
    log : bool
        Logarithmic loss axes.
    title : str, optional
        Figure title; default "1D slices: " and the directions' kind.
    figsize : (float, float)

    Returns
    -------
    Figure
        Two panels (and their accuracy twins when defined).
    """
    for name, sl in (("s1", s1), ("s2", s2)):
        if not isinstance(sl, Slice):
            raise TypeError(f"{name} must be a Slice, got {type(sl).__name__}")
    fig = Figure(figsize=figsize, layout="constrained")
    left, right = fig.subplots(1, 2)
    slice_plot(s1, log=log, ax=left, title="along d1", symbol="α", direction_name="d1")
    slice_plot(s2, log=log, ax=right, title="along d2", symbol="β", direction_name="d2")
    fig.suptitle(title or f"1D slices: {describe_directions([s1.direction, s2.direction])}")
    return fig


#: How the path kinds of fastscape.paths are written in legends.
_PATH_NAMES = {"linear": "linear", "bezier": "Bézier", "polychain": "polychain"}


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
        name = _PATH_NAMES.get(p.kind, p.kind)
        label = labels[k] if labels is not None else f"{name} (barrier {p.barrier:.3g})"
        ax.plot(p.ts, p.loss, marker=".", label=label)
    ax.set_xlabel("t")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    _ticks(ax)
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
    """Contours of a surface with a training path drawn on them.

    Parameters
    ----------
    surface : Surface
        Usually computed at the final point along PCA directions.
    projection : (T, 2) array
        Path coordinates in the surface's (alpha, beta) plane, e.g.
        ``directions.pca(...).projection``.
    levels, log, ax, title
        As in :func:`contour`. The default title names the directions' kind ("PCA of the
        training trajectory" only when they are); the path is labelled "training path", or
        "training path (projection)" on a plane it was not fitted to.

    Returns
    -------
    Figure
    """
    P = as_float_array(projection, "projection", 2)
    if P.shape[1] != 2:
        raise ValueError(f"projection must have 2 columns (alpha, beta), got shape {P.shape}")
    fig = contour(surface, levels, log=log, ax=ax, title=title)
    ax = ax if ax is not None else fig.axes[0]
    pca = all(isinstance(d, dict) and d.get("kind") == "pca" for d in surface.directions)
    # white with black-edged dots: visible on the dark contours and in the (white) legend
    ax.plot(P[:, 0], P[:, 1], color="white", marker="o", markersize=3.5, linewidth=1.5,
            markeredgecolor="black", markeredgewidth=0.5,
            label="training path" if pca else "training path (projection)")  # fmt: skip
    ax.plot(P[0, 0], P[0, 1], color="orange", marker="o", markersize=8, linestyle="none",
            markeredgecolor="black", label="start θ₀")  # fmt: skip
    # the picture is the grid: a path leaving it is cut at its edge, not drawn over white
    ax.set_xlim(surface.alphas.min(), surface.alphas.max())
    ax.set_ylim(surface.betas.min(), surface.betas.max())
    _legend_below(ax)
    return fig


# ----------------------------------------------------------------------------- files
def save(
    fig: Figure,
    path_stem: str | os.PathLike,
    formats: Sequence[str] = ("png",),
    dpi: float = 150,
) -> list[Path]:
    """Save a figure in several formats, each file written atomically.

    Parameters
    ----------
    fig : Figure
    path_stem : str or PathLike
        The path without extension (``out/contour`` gives ``out/contour.png``, ...); an
        extension that is one of ``formats`` is dropped (``contour.png`` works too).
    formats : sequence of str
        Any format Matplotlib writes (``"png"``, ``"pdf"``, ``"svg"``, ``"eps"``, ...);
        a comma-separated string (``"png,pdf"``) is accepted.
    dpi : float
        Resolution of raster formats (and of raster parts of vector ones).

    Returns
    -------
    list of Path
        The written files, in the order of ``formats``.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    formats = [str(f).strip().lower().lstrip(".") for f in formats]
    if not formats or any(not f for f in formats):
        raise ValueError("formats must name at least one format, e.g. ('png', 'pdf')")
    supported = fig.canvas.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise ValueError(
            f"formats: {', '.join(map(repr, bad))} not supported; choose from "
            f"{', '.join(sorted(supported))}"
        )
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats has duplicates: {formats}")
    if not (isinstance(dpi, (int, float, np.integer, np.floating)) and np.isfinite(dpi)
            and dpi > 0):  # fmt: skip
        raise ValueError(f"dpi must be a positive number, got {dpi!r}")
    stem = Path(path_stem)
    if stem.suffix.lower().lstrip(".") in formats:
        stem = stem.with_suffix("")
    written = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write(
            target,
            lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=float(dpi)),
            suffix=f".{fmt}",
        )
        written.append(target)
    return written
