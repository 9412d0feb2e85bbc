"""Plots: each returns a Figure that renders headless, with the data in the right orientation."""

from __future__ import annotations

import io as _io

import numpy as np
import pytest
from matplotlib.figure import Figure
from numpy.testing import assert_array_equal

from fastscape import functions as F
from fastscape import paths, plot
from fastscape.landscape import Slice, Surface, slice_1d, surface_2d


@pytest.fixture(scope="module")
def surf():
    # non-square on purpose: loss[i, j] at (alphas[i], betas[j])
    return surface_2d(
        F.quadratic, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], alphas=np.linspace(-1, 1, 7), betas=4
    )


def _render(fig):
    assert isinstance(fig, Figure)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_heatmap_orientation(surf):
    fig = plot.heatmap(surf)
    _render(fig)
    mesh = fig.axes[0].collections[0]
    assert_array_equal(np.asarray(mesh.get_array()).reshape(4, 7), surf.loss.T)
    assert fig.axes[0].get_xlabel() == "α (d1)"
    assert fig.axes[0].get_ylabel() == "β (d2)"


@pytest.mark.parametrize("log", [False, True])
def test_contour_and_3d(surf, log):
    shifted = Surface(surf.alphas, surf.betas, surf.loss + 0.1, None)
    _render(plot.contour(shifted, levels=8, log=log))
    _render(plot.contour(shifted, levels=8, log=log, filled=False))
    _render(plot.surface3d(shifted, log=log))


def test_slice_twin_axes():
    import fastscape

    rng = np.random.default_rng(0)
    model = fastscape.Logistic(2)
    X, y = rng.normal(size=(20, 2)), rng.integers(0, 2, 20)
    sl = slice_1d(model, [1.0, -1.0, 0.0], [0.5, 0.5, 0.1], X, y, alphas=9)
    fig = plot.slice_plot(sl)
    _render(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "accuracy"
    assert_array_equal(fig.axes[0].lines[0].get_ydata(), sl.loss)
    no_acc = plot.slice_plot(Slice(sl.alphas, sl.loss, None))
    assert len(no_acc.axes) == 1


def test_path_profile_and_trajectory(surf):
    lin = paths.linear_path(F.saddle, [-1.0, 0.5], [1.0, -0.5], ts=11)
    fig = plot.path_profile([lin, lin], labels=["a", "b"])
    _render(fig)
    assert len(fig.axes[0].lines) == 2
    bez = paths.bezier_path(F.saddle, [-1.0, 0.5], [0.0, 1.0], [1.0, -0.5], ts=11)
    legend = plot.path_profile([lin, bez]).axes[0].get_legend_handles_labels()[1]
    assert legend[0].startswith("linear (barrier") and legend[1].startswith("Bézier (barrier")
    proj = np.column_stack([np.linspace(-1, 0, 5), np.linspace(0.5, 0, 5)])
    fig = plot.trajectory(surf, proj, levels=6)
    _render(fig)
    (path,) = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("training path")]
    assert_array_equal(path.get_xydata(), proj)
    # a path that leaves the grid does not widen the picture beyond it
    far = np.column_stack([np.linspace(3, 0, 5), np.linspace(-4, 0, 5)])
    ax = plot.trajectory(surf, far, levels=6).axes[0]
    assert ax.get_xlim() == (surf.alphas.min(), surf.alphas.max())
    assert ax.get_ylim() == (surf.betas.min(), surf.betas.max())


def test_bad_inputs(surf):
    with pytest.raises(ValueError, match="log=True needs"):
        plot.contour(Surface(surf.alphas, surf.betas, surf.loss - 1.0), log=True)
    with pytest.raises(ValueError, match="no accuracy"):
        plot.heatmap(surf, metric="accuracy")
    with pytest.raises(ValueError, match="2 columns"):
        plot.trajectory(surf, np.zeros((4, 3)))
    with pytest.raises(TypeError, match="must be a Surface"):
        plot.contour(np.zeros((3, 3)))


# ----------------------------------------------------------------------------- paper figures
@pytest.fixture(scope="module")
def trained():
    import fastscape
    from fastscape import datasets
    from fastscape import directions as D

    X, y = datasets.blobs(80, seed=0)
    model = fastscape.MLP([2, 6, 2], activation="tanh")
    res = fastscape.fit(model, X, y, method="adam", lr=0.05, steps=60, record_every=5)
    theta = res.theta
    d1, d2 = D.pair(model, theta, seed=0)
    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-1, 1, 7))
    rand = surface_2d(model, theta, d1, d2, X, y, **grid)
    pca = D.pca(res.trajectory, theta, k=2)
    by_pca = surface_2d(model, theta, *pca.directions, X, y, **grid)
    s1 = slice_1d(model, theta, d1, X, y, alphas=9)
    s2 = slice_1d(model, theta, d2, X, y, alphas=9)
    return {"random": rand, "pca": by_pca, "projection": pca.projection, "s1": s1, "s2": s2}


def _legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def test_describe_directions_from_their_records():
    assert plot.describe_directions([{"kind": "random", "norm": "filter"},
                                     {"kind": "pair", "norm": "filter"}]) == (
        "filter-normalised random directions")  # fmt: skip
    assert plot.describe_directions({"kind": "random", "norm": None}) == "random direction"
    assert plot.describe_directions([{"kind": "pca"}] * 2) == "PCA of the training trajectory"
    assert plot.describe_directions([{"kind": "hessian"}] * 2) == "top Hessian eigenvectors"
    assert plot.describe_directions([{"kind": "given"}, {"kind": "given"}]) == "given directions"
    mixed = plot.describe_directions([{"kind": "random", "norm": "layer"}, {"kind": "given"}])
    assert mixed == "layer-normalised random direction / given direction"


def test_titles_say_the_direction_kind_and_legends_explain_the_marks(trained):
    rand, by_pca = trained["random"], trained["pca"]
    ax = plot.contour(rand).axes[0]
    assert ax.get_title() == "loss contours: filter-normalised random directions"
    texts = _legend_texts(ax)
    assert texts[0] == "θ (origin of the plane)"
    i, j = np.unravel_index(np.argmin(rand.loss), rand.loss.shape)
    assert texts[1] == f"grid minimum (loss {rand.loss[i, j]:.3g})"
    star, cross = ax.lines[0], ax.lines[1]
    assert star.get_marker() == "*" and list(star.get_xydata()[0]) == [0.0, 0.0]
    assert list(cross.get_xydata()[0]) == [rand.alphas[i], rand.betas[j]]
    # a trajectory on random directions is not called the training trajectory
    fig = plot.trajectory(rand, trained["projection"] * 0.1)
    ax = fig.axes[0]
    assert "training trajectory" not in ax.get_title()
    assert "training path (projection)" in _legend_texts(ax) and "start θ₀" in _legend_texts(ax)
    fig = plot.trajectory(by_pca, trained["projection"])
    ax = fig.axes[0]
    assert ax.get_title() == "loss contours: PCA of the training trajectory"
    assert "training path" in _legend_texts(ax)
    assert ax.get_xlabel() == "α (d1, unit)" and ax.get_ylabel() == "β (d2, unit)"
    hm = plot.heatmap(rand, metric="accuracy").axes[0]
    assert hm.get_title() == "accuracy: filter-normalised random directions"
    assert _legend_texts(hm)[1].startswith("grid maximum (accuracy ")
    plain = plot.contour(rand, mark_theta=False, mark_min=False).axes[0]
    assert plain.get_legend() is None and not plain.lines


def _no_collisions(fig, axis):
    """Rendered tick labels of one axis do not overlap."""
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in axis.get_ticklabels() if t.get_visible()
             and t.get_text()]  # fmt: skip
    assert 3 <= len(boxes) <= 7  # a handful of labels (MaxNLocator), not one per 0.25
    boxes.sort(key=lambda b: b.x0)
    for a, b in zip(boxes[:-1], boxes[1:]):
        assert b.x0 - a.x1 >= 0.5 * a.height, f"tick labels touch: {a} and {b}"


def test_x_ticks_never_collide(trained):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    wide = Surface(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41), np.ones((41, 41)) + 0.1)
    for fig in (plot.contour(wide), plot.contour(trained["random"], log=True),
                plot.slices(trained["s1"], trained["s2"])):  # fmt: skip
        FigureCanvasAgg(fig)
        for ax in fig.axes[:1] + fig.axes[2:3]:
            _no_collisions(fig, ax.xaxis)


def test_slices_figure_labels_beta_on_the_right(trained):
    fig = plot.slices(trained["s1"], trained["s2"])
    _render(fig)
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_xlabel() == "α (d1, filter)"
    assert right.get_xlabel() == "β (d2, filter)"
    assert left.get_title() == "along d1" and right.get_title() == "along d2"
    assert fig.get_suptitle() == "1D slices: filter-normalised random directions"
    assert _legend_texts(left) == ["loss", "θ (origin)", "accuracy"]
    assert_array_equal(right.lines[0].get_ydata(), trained["s2"].loss)


def test_log_loss_axes_keep_their_decade_ticks(trained):
    from matplotlib.ticker import LogLocator, MaxNLocator

    fig = plot.slices(trained["s1"], trained["s2"], log=True)
    _render(fig)
    for ax in fig.axes[:2]:
        assert ax.get_yscale() == "log"
        assert isinstance(ax.yaxis.get_major_locator(), LogLocator)
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
    lin = plot.slices(trained["s1"], trained["s2"])
    assert isinstance(lin.axes[0].yaxis.get_major_locator(), MaxNLocator)


def test_surface3d_log_scale_has_a_labelled_colour_bar(trained):
    rand = trained["random"]
    fig = plot.surface3d(rand, log=True)
    _render(fig)
    ax3d, cbar_ax = fig.axes
    assert ax3d.get_zlabel() == "log10(loss)"
    assert cbar_ax.get_ylabel() == "log10(loss)"
    values = np.asarray(ax3d.collections[0].get_array())
    assert values.min() >= np.log10(rand.loss.min()) - 1e-12
    assert values.max() <= np.log10(rand.loss.max()) + 1e-12
    lin = plot.surface3d(rand)
    assert lin.axes[0].get_zlabel() == "loss" and lin.axes[1].get_ylabel() == "loss"
    assert lin.axes[0].get_title() == "loss surface: filter-normalised random directions"


def test_save_writes_every_format_atomically(trained, tmp_path):
    import struct
    import xml.etree.ElementTree as ET

    fig = plot.contour(trained["random"])
    paths = plot.save(fig, tmp_path / "contour", formats=("png", "pdf", "svg"), dpi=72)
    assert paths == [tmp_path / f"contour.{e}" for e in ("png", "pdf", "svg")]
    png = paths[0].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR: the figure's size at 72 dpi
    assert (width, height) == (round(6.0 * 72), round(5.0 * 72))
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert ET.parse(paths[2]).getroot().tag.endswith("svg")
    big = plot.save(fig, tmp_path / "contour.png", formats="png", dpi=144)
    assert big == [tmp_path / "contour.png"]
    assert struct.unpack(">II", big[0].read_bytes()[16:24]) == (864, 720)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "contour.pdf", "contour.png", "contour.svg"]  # fmt: skip
    with pytest.raises(ValueError, match="'bmpx' not supported"):
        plot.save(fig, tmp_path / "x", formats=("png", "bmpx"))
    with pytest.raises(ValueError, match="dpi must be"):
        plot.save(fig, tmp_path / "x", dpi=0)
    assert not (tmp_path / "x.png").exists()


def test_escape_direction_axes_name_the_directions():
    a = np.linspace(-1, 1, 41)
    Z = a[:, None] ** 2 - a[None, :] ** 2
    fig = plot.escape_direction(a, a, Z, [0.0, 1.0])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "α (d1)" and ax.get_ylabel() == "β (d2)"
    _no_collisions(fig, ax.xaxis)
