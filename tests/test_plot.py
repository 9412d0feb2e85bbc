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
    assert fig.axes[0].get_xlabel() == "α"


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
    proj = np.column_stack([np.linspace(-1, 0, 5), np.linspace(0.5, 0, 5)])
    fig = plot.trajectory(surf, proj, levels=6)
    _render(fig)
    assert_array_equal(fig.axes[0].lines[0].get_xydata(), proj)


def test_bad_inputs(surf):
    with pytest.raises(ValueError, match="log=True needs"):
        plot.contour(Surface(surf.alphas, surf.betas, surf.loss - 1.0), log=True)
    with pytest.raises(ValueError, match="no accuracy"):
        plot.heatmap(surf, metric="accuracy")
    with pytest.raises(ValueError, match="2 columns"):
        plot.trajectory(surf, np.zeros((4, 3)))
    with pytest.raises(TypeError, match="must be a Surface"):
        plot.contour(np.zeros((3, 3)))
