"""``report.html``: one self-contained page to explore a run in the browser.

The page embeds Plotly's JavaScript (no network is needed to open it), the interactive 3D surface
and its contours, the slices, the spectrum, the curvature map and the paths when they were
computed, and the numbers of ``report.json`` as tables, with the settings and versions last. The
report itself is embedded verbatim as JSON (``<script type="application/json"
id="report-json">``), so what the tables show can be checked against the file.

Plotly is an optional dependency: ``pip install "fastscape[report]"``.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._files import atomic_write

if TYPE_CHECKING:
    from .landscape import Slice, Surface

__all__ = ["available", "write_html"]

# the page's sections, in order; each a (id, heading)
_FIGURES = {
    "surface": "Loss surface",
    "slices": "1D slices",
    "spectrum": "Hessian spectrum",
    "curvature-map": "Curvature map",
    "paths": "Paths between minima",
}
_LAST = ("settings", "versions")  # tables shown after the others


def available() -> bool:
    """Whether Plotly is installed (the ``report`` extra), so that :func:`write_html` can run."""
    return importlib.util.find_spec("plotly") is not None


def _plotly():
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
        import plotly.offline
    except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
        raise ImportError('report.html needs Plotly: pip install "fastscape[report]"') from exc
    return go, pio, plotly.offline


# ----------------------------------------------------------------------------- figures
def _z(values: np.ndarray, log: bool) -> np.ndarray:
    return np.log10(values) if log else values


def _hover(what: str) -> str:
    return "α %{x:.4g}<br>β %{y:.4g}<br>" + what + " %{z:.6g}<extra></extra>"


def _surface_figures(go, surface: Surface, log: bool, test: Surface | None):
    """The 3D surface and the contour map (and the test split's contours)."""
    label = "log₁₀ loss" if log else "loss"
    # loss[i, j] is at (alphas[i], betas[j]): Plotly's z is indexed [y, x]
    z = _z(surface.loss, log).T
    fig3d = go.Figure(
        go.Surface(x=surface.alphas, y=surface.betas, z=z, colorscale="Viridis",
                   colorbar={"title": {"text": label}}, name="train", hovertemplate=_hover(label))
    )  # fmt: skip
    fig3d.update_layout(
        title="loss surface (drag to turn it)",
        scene={"xaxis_title": "α (d1)", "yaxis_title": "β (d2)", "zaxis_title": label,
               "aspectratio": {"x": 1.0, "y": 1.0, "z": 0.7},
               "camera": {"eye": {"x": 1.6, "y": 1.6, "z": 1.1}}},
        height=560, margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )  # fmt: skip
    contour = go.Figure(
        go.Contour(x=surface.alphas, y=surface.betas, z=z, colorscale="Viridis", name="train",
                   colorbar={"title": {"text": label}}, contours={"showlabels": True},
                   hovertemplate=_hover(label))
    )  # fmt: skip
    contour.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="θ* (α = β = 0)",
                                 marker={"symbol": "star", "size": 14, "color": "white",
                                         "line": {"color": "black", "width": 1}}))  # fmt: skip
    contour.update_layout(title="contours", xaxis_title="α (d1)", yaxis_title="β (d2)",
                          height=480, legend={"orientation": "h", "y": -0.2})  # fmt: skip
    figs = [("surface-3d", fig3d), ("surface-contour", contour)]
    if test is not None:
        zt = _z(test.loss, log).T
        ctest = go.Figure(go.Contour(x=test.alphas, y=test.betas, z=zt, colorscale="Viridis",
                                     colorbar={"title": {"text": label}},
                                     contours={"showlabels": True}))  # fmt: skip
        ctest.update_layout(title="contours on the test split", xaxis_title="α (d1)",
                            yaxis_title="β (d2)", height=480)  # fmt: skip
        figs.append(("surface-test-contour", ctest))
    return figs


def _slices_figure(go, slices: Mapping[str, Slice], log: bool):
    fig = go.Figure()
    for name, s in slices.items():
        order = np.argsort(s.alphas, kind="stable")
        fig.add_trace(go.Scatter(x=s.alphas[order], y=s.loss[order], mode="lines+markers",
                                 name=f"along {name}"))  # fmt: skip
    fig.update_layout(title="loss along each direction", xaxis_title="step along the direction",
                      yaxis_title="loss", yaxis_type="log" if log else "linear",
                      height=420)  # fmt: skip
    return [("slices", fig)]


def _spectrum_figure(go, density, top: Sequence[float] | None):
    fig = go.Figure(go.Scatter(x=density.grid, y=density.density, mode="lines",
                               name=f"density ({density.method})"))  # fmt: skip
    if getattr(density, "hist", None) is not None and density.hist_edges is not None:
        mid = 0.5 * (density.hist_edges[1:] + density.hist_edges[:-1])
        fig.add_trace(go.Bar(x=mid, y=density.hist, name="eigenvalue histogram", opacity=0.4))
    if top is not None and len(top):
        fig.add_trace(go.Scatter(x=list(top), y=[0.0] * len(top), mode="markers",
                                 name="top eigenvalues",
                                 marker={"symbol": "line-ns-open", "size": 16}))  # fmt: skip
    fig.update_layout(title="Hessian eigenvalue density", xaxis_title="eigenvalue",
                      yaxis_title="density", height=420)  # fmt: skip
    return [("spectrum", fig)]


def _curvature_map_figures(go, cmap):
    alphas, betas = np.asarray(cmap.alphas), np.asarray(cmap.betas)
    lmax, lmin = np.asarray(cmap.lambda_max, float), np.asarray(cmap.lambda_min, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(lmin / lmax)
    # a landscape.CurvatureMap flags unconverged points: blank (NaN) there, never shown
    if hasattr(cmap, "converged_max"):
        lmax = np.where(cmap.converged_max, lmax, np.nan)
        lmin = np.where(cmap.converged_min, lmin, np.nan)
        ratio = np.asarray(cmap.ratio, float)
    figs = []
    for key, title, z, scale in (
        ("cmap-max", "λmax", lmax, "Viridis"),
        ("cmap-min", "λmin", lmin, "RdBu"),
        ("cmap-ratio", "|λmin / λmax| (convexity map)", ratio, "Magma"),
    ):
        fig = go.Figure(go.Heatmap(x=alphas, y=betas, z=z.T, colorscale=scale,
                                   hovertemplate=_hover(title)))  # fmt: skip
        fig.update_layout(title=title, xaxis_title="α (d1)", yaxis_title="β (d2)", height=420)
        figs.append((key, fig))
    return figs


def _paths_figure(go, paths, log: bool):
    fig = go.Figure()
    for p in paths:
        fig.add_trace(go.Scatter(x=p.ts, y=p.loss, mode="lines+markers",
                                 name=f"{p.settings.get('label', p.kind)} "
                                      f"(barrier {p.barrier:.4g})"))  # fmt: skip
    fig.update_layout(title="loss along the paths", xaxis_title="t", yaxis_title="loss",
                      yaxis_type="log" if log else "linear", height=420)  # fmt: skip
    return [("paths", fig)]


# ----------------------------------------------------------------------------- tables
def _rows(value, prefix: str = ""):
    """(key path, JSON text) for every leaf of a JSON value; lists of numbers stay one leaf."""
    if isinstance(value, dict):
        if not value:
            yield prefix, "{}"
        for k, v in value.items():
            yield from _rows(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            yield from _rows(v, f"{prefix}[{i}]")
    else:
        yield prefix, json.dumps(value, ensure_ascii=False)


def _table(name: str, value) -> str:
    body = "\n".join(
        f'<tr><th scope="row">{html.escape(key)}</th>'
        f'<td data-key="{html.escape(name + "." + key if key else name)}">'
        f"{html.escape(text)}</td></tr>"
        for key, text in _rows(value)
    )
    return (
        f'<section class="numbers" id="numbers-{html.escape(name)}"><h3>{html.escape(name)}</h3>'
        f"<table><tbody>\n{body}\n</tbody></table></section>"
    )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1rem; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { font-weight: normal; color: #555; } td { font-family: ui-monospace, monospace;
  word-break: break-all; max-width: 700px; }
nav a { margin-right: 1rem; } .figure { margin: 1rem 0; }
"""


def write_html(
    path: str | os.PathLike,
    report: Mapping,
    *,
    surface: Surface | None = None,
    surface_test: Surface | None = None,
    slices: Mapping[str, Slice] | None = None,
    density=None,
    top_eigenvalues: Sequence[float] | None = None,
    curvature_map=None,
    paths: Sequence | None = None,
    log: bool = False,
    title: str | None = None,
) -> Path:
    """Write ``report.html``: the run's figures (interactive) and numbers in one file.

    Parameters
    ----------
    path : path-like
        The page to write (atomically: a reader never sees half a page).
    report : mapping
        The run's report, as written to ``report.json`` (JSON values only: dicts, lists, str,
        finite floats, ints, bools, None); shown as tables and embedded verbatim.
    surface, surface_test : Surface, optional
        The loss surface (a, b) on the training (and test) split: a 3D plot and contours.
    slices : mapping of str to Slice, optional
        1D slices by name, e.g. ``{"d1": s1, "d2": s2}``.
    density : DensityResult, optional
        The Hessian spectral density.
    top_eigenvalues : sequence of float, optional
        Marked on the density.
    curvature_map : object with ``alphas`` (a,), ``betas`` (b,), ``lambda_max`` and
        ``lambda_min`` (a, b), optional
        Shown as λmax, λmin and |λmin/λmax| maps.
    paths : sequence of PathProfile, optional
        Loss along paths between minima.
    log : bool
        Loss axes on a log scale (the surface as log₁₀ loss).
    title : str, optional

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImportError
        Plotly is not installed.
    ValueError
        ``report`` holds a value JSON cannot represent (NaN, an array), or ``log`` with a loss
        that is not positive.
    """
    if not isinstance(report, Mapping):
        raise TypeError(f"report must be a mapping (the report.json payload), not {type(report)}")
    try:
        report_text = json.dumps(report, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"report must hold JSON values only: {exc}") from exc
    if log:
        for name, loss in (
            ("surface", None if surface is None else surface.loss),
            ("surface_test", None if surface_test is None else surface_test.loss),
        ):
            if loss is not None and not np.all(loss > 0):
                raise ValueError(f"log=True needs a positive loss on {name}")  # fmt: skip
    go, pio, offline = _plotly()

    sections: dict[str, list] = {}
    if surface is not None:
        sections["surface"] = _surface_figures(go, surface, log, surface_test)
    if slices:
        sections["slices"] = _slices_figure(go, slices, log)
    if density is not None:
        sections["spectrum"] = _spectrum_figure(go, density, top_eigenvalues)
    if curvature_map is not None:
        sections["curvature-map"] = _curvature_map_figures(go, curvature_map)
    if paths:
        sections["paths"] = _paths_figure(go, paths, log)

    config = {"displaylogo": False, "responsive": True}
    parts = []
    nav = []
    for key, heading in _FIGURES.items():
        if key not in sections:
            continue
        nav.append(f'<a href="#{key}">{heading}</a>')
        divs = "\n".join(
            f'<div class="figure" id="fig-{fid}">'
            + pio.to_html(
                fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{fid}", config=config
            )
            + "</div>"
            for fid, fig in sections[key]
        )
        parts.append(f'<section id="{key}"><h2>{heading}</h2>\n{divs}\n</section>')
    first = [k for k in report if k not in _LAST]
    tables = [_table(k, report[k]) for k in first] + [_table(k, report[k]) for k in _LAST
                                                      if k in report]  # fmt: skip
    nav.append('<a href="#numbers">Numbers</a>')
    heading = title or f"fastscape {report.get('command', 'run')}"
    embedded = report_text.replace("</", "<\\/")  # no "</script>" inside the JSON
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(heading)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{offline.get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(heading)}</h1>
<nav>{" ".join(nav)}</nav>
{"".join(parts)}
<section id="numbers"><h2>Numbers (report.json)</h2>
{"".join(tables)}
</section>
<script type="application/json" id="report-json">{embedded}</script>
</body></html>
"""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
