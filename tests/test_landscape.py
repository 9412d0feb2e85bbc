"""Slices and surfaces: closed forms, grid shapes, tiles and resume, progress, bad inputs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import directions as D
from fastscape.landscape import Slice, Surface, evaluate, slice_1d, surface_2d


def _mlp_problem(n=60, seed=0):
    rng = np.random.default_rng(seed)
    model = fastscape.MLP([3, 5, 3], "tanh", "softmax_ce")
    X = rng.normal(size=(n, 3))
    y = rng.integers(0, 3, n)
    theta = model.init(seed)
    return model, theta, X, y


def test_mse_linear_surface_is_the_exact_quadratic():
    rng = np.random.default_rng(1)
    n, d = 80, 4
    model = fastscape.LinearRegression(d)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    theta = rng.normal(size=d + 1)
    d1, d2 = rng.normal(size=(2, d + 1))
    a = np.linspace(-2, 3, 11)
    b = np.linspace(-1, 1, 7)
    s = surface_2d(model, theta, d1, d2, X, y, a, b)
    Xt = np.column_stack([X, np.ones(n)])  # theta = (w, b)
    r0, u, v = Xt @ theta - y, Xt @ d1, Xt @ d2
    A, B = np.meshgrid(a, b, indexing="ij")
    closed = (
        np.mean(r0 * r0)
        + 2 * A * np.mean(r0 * u)
        + 2 * B * np.mean(r0 * v)
        + A**2 * np.mean(u * u)
        + 2 * A * B * np.mean(u * v)
        + B**2 * np.mean(v * v)
    )
    assert_allclose(s.loss, closed, rtol=1e-10)
    assert s.accuracy is None


def test_non_square_grid_orientation():
    model, theta, X, y = _mlp_problem()
    d1, d2 = D.pair(model, theta, seed=2)
    a = np.array([-0.5, 0.0, 0.25, 1.0])
    b = np.array([-1.0, 0.5])
    s = surface_2d(model, theta, d1, d2, X, y, a, b)
    assert isinstance(s, Surface)
    assert s.loss.shape == (4, 2) and s.accuracy.shape == (4, 2)
    for i, j in [(0, 1), (3, 0), (2, 1)]:
        point = theta + a[i] * d1.vector + b[j] * d2.vector
        assert_allclose(s.loss[i, j], model.loss(point, X, y), rtol=1e-10)
        assert s.accuracy[i, j] == model.accuracy(point, X, y)
    assert s.directions[0]["norm"] == "filter" and s.directions[1]["kind"] == "pair"
    assert s.settings["n_samples"] == 60


def test_defaults_and_slice():
    model, theta, X, y = _mlp_problem()
    d = D.random(model, theta, seed=1)
    sl = slice_1d(model, theta, d, X, y)
    assert isinstance(sl, Slice)
    assert_array_equal(sl.alphas, np.linspace(-1, 1, 51))
    assert_allclose(sl.loss[25], model.loss(theta, X, y), rtol=1e-10)  # alpha = 0
    assert_allclose(sl.loss[-1], model.loss(theta + d.vector, X, y), rtol=1e-10)
    s = surface_2d(model, theta, d, D.random(model, theta, seed=2), X, y, betas=5)
    assert s.loss.shape == (51, 5)


def test_interrupted_tiled_grid_resumes_identically(tmp_path):
    model, theta, X, y = _mlp_problem(n=50)
    d1, d2 = D.pair(model, theta, seed=3)
    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-1, 1, 7))
    whole = surface_2d(model, theta, d1, d2, X, y, **grid, tile_size=10)

    class Stop(Exception):
        pass

    calls = []

    def interrupt(t, n_tiles):
        calls.append(t)
        if len(calls) == 3:
            raise Stop

    ckpt = tmp_path / "tiles"
    with pytest.raises(Stop):
        surface_2d(
            model, theta, d1, d2, X, y, **grid, tile_size=10, checkpoint_dir=ckpt, on_tile=interrupt
        )
    assert sorted(p.name for p in ckpt.glob("tile_*.npz")) == [
        f"tile_{t:06d}.npz" for t in range(3)
    ]
    resumed_tiles = []
    again = surface_2d(
        model, theta, d1, d2, X, y, **grid, tile_size=10, checkpoint_dir=ckpt,
        on_tile=lambda t, n: resumed_tiles.append(t),
    )  # fmt: skip
    assert resumed_tiles == list(range(3, 7))  # 63 points in tiles of 10: only 4 recomputed
    assert_array_equal(again.loss, whole.loss)
    assert_array_equal(again.accuracy, whole.accuracy)
    assert not list(ckpt.glob("*.tmp"))  # atomic writes leave no temporary files
    # the directory is bound to its evaluation
    with pytest.raises(ValueError, match="different evaluation"):
        surface_2d(model, theta, d1, d2, X, y, alphas=3, betas=3, tile_size=10, checkpoint_dir=ckpt)


def _tiled(ckpt, grid, seed=3, **kw):
    model, theta, X, y = _mlp_problem(n=50)
    d1, d2 = D.pair(model, theta, seed=seed)
    computed = []
    s = surface_2d(model, theta, d1, d2, X, y, **grid, tile_size=10, checkpoint_dir=ckpt,
                   on_tile=lambda t, n: computed.append(t), progress=False, **kw)  # fmt: skip
    return s, computed


def test_lost_manifest_never_makes_stale_tiles_count(tmp_path):
    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-1, 1, 7))
    ckpt = tmp_path / "tiles"
    _, computed = _tiled(ckpt, grid, seed=3)
    assert computed == list(range(7))
    (ckpt / "manifest.json").unlink()
    # another evaluation (other directions) into the same directory: every tile recomputed
    other, computed = _tiled(ckpt, grid, seed=4)
    fresh, _ = _tiled(tmp_path / "fresh", grid, seed=4)
    assert computed == list(range(7))
    assert_array_equal(other.loss, fresh.loss)
    assert_array_equal(other.accuracy, fresh.accuracy)
    # the same evaluation without its manifest: its own tiles are still recognised
    (ckpt / "manifest.json").unlink()
    again, computed = _tiled(ckpt, grid, seed=4)
    assert computed == []
    assert_array_equal(again.loss, fresh.loss)


def test_truncated_tile_is_recomputed_and_corrupt_manifest_refused(tmp_path):
    from fastscape.io import FileFormatError

    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-1, 1, 7))
    ckpt = tmp_path / "tiles"
    whole, _ = _tiled(ckpt, grid)
    tile = ckpt / "tile_000002.npz"
    tile.write_bytes(tile.read_bytes()[:100])
    (ckpt / "tile_000004.npz").write_bytes(b"")
    again, computed = _tiled(ckpt, grid)
    assert computed == [2, 4]
    assert_array_equal(again.loss, whole.loss)
    assert_array_equal(again.accuracy, whole.accuracy)
    manifest = ckpt / "manifest.json"
    manifest.write_text(manifest.read_text()[:20])
    with pytest.raises(FileFormatError, match="corrupt checkpoint manifest") as info:
        _tiled(ckpt, grid)
    assert str(info.value).startswith(f"{manifest}: ") and "\n" not in str(info.value)


def test_default_single_tile_equals_tiled_evaluation():
    """Without checkpoint, callback or bar the CPU evaluates all points in one tile: the same
    bits as any tiling."""
    model, theta, X, y = _mlp_problem(n=50)
    d1, d2 = D.pair(model, theta, seed=4)
    grid = dict(alphas=np.linspace(-1, 1, 9), betas=np.linspace(-1, 1, 7), progress=False)
    one = surface_2d(model, theta, d1, d2, X, y, **grid)
    tiles = []
    tiled = surface_2d(model, theta, d1, d2, X, y, **grid, on_tile=lambda t, n: tiles.append(n))
    assert tiles == [1]  # 63 points <= config.SPAN_TILE: one tile with a callback too
    for size in (1, 10, 62):
        other = surface_2d(model, theta, d1, d2, X, y, **grid, tile_size=size)
        assert_array_equal(other.loss, one.loss)
        assert_array_equal(other.accuracy, one.accuracy)
    assert_array_equal(tiled.loss, one.loss)


def test_progress_bar_with_and_without_tqdm(monkeypatch, capsys):
    model, theta, X, y = _mlp_problem(n=20)
    d = D.random(model, theta, seed=1)
    base = slice_1d(model, theta, d, X, y, alphas=11, progress=False)
    shown = slice_1d(model, theta, d, X, y, alphas=11, progress=True, tile_size=4)
    assert_array_equal(shown.loss, base.loss)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed: no bar, no error
    quiet = slice_1d(model, theta, d, X, y, alphas=11, progress=True)
    assert_array_equal(quiet.loss, base.loss)


def test_evaluate_returns_named_fields():
    model, theta, X, y = _mlp_problem(n=20)
    res = evaluate(model, theta[None, :], np.array([[1.0], [0.0]]), X, y)
    assert_allclose(res.loss[0], model.loss(theta, X, y), rtol=1e-10)
    assert_allclose(res.loss[1], np.log(3.0), rtol=1e-12)  # theta = 0: uniform softmax
    assert res.accuracy.shape == (2,)


def test_bad_inputs():
    model, theta, X, y = _mlp_problem(n=20)
    d = D.random(model, theta, seed=1).vector
    with pytest.raises(ValueError, match="d has length"):
        slice_1d(model, theta, d[:-1], X, y)
    with pytest.raises(ValueError, match="d1 has zero norm"):
        surface_2d(model, theta, np.zeros_like(d), d, X, y)
    with pytest.raises(ValueError, match="alphas is empty"):
        slice_1d(model, theta, d, X, y, alphas=[])
    with pytest.raises(ValueError, match="betas contains non-finite"):
        surface_2d(model, theta, d, 2 * d + 1, X, y, betas=[0.0, np.inf])
    with pytest.raises(ValueError, match="parallel"):
        surface_2d(model, theta, d, -2 * d, X, y)
    with pytest.raises(ValueError, match="coefficients have 2 columns"):
        evaluate(model, np.stack([theta, d, d]), np.ones((4, 2)), X, y)
    with pytest.raises(ValueError, match="basis rows have length"):
        evaluate(model, np.ones((2, 5)), np.ones((4, 2)), X, y)
    with pytest.raises(ValueError, match="coefficients contains non-finite"):
        evaluate(model, np.stack([theta, d]), np.array([[1.0, np.nan]]), X, y)
    with pytest.raises(ValueError, match="X is required"):
        evaluate(model, np.stack([theta, d]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="alphas must be >= 1"):
        slice_1d(model, theta, d, X, y, alphas=0)


def test_as_target_validates_once_and_refuses_functions_off_the_cpu(monkeypatch):
    from fastscape import _device, _files, landscape
    from fastscape.functions import get

    assert landscape.atomic_write is _files.atomic_write  # still importable from landscape
    model, _, X, y = _mlp_problem(n=10)
    t = landscape.as_target(model, X, y)
    assert (t.kind, t.fn, t.P) == ("mlp", model, model.n_params)
    assert landscape.as_target(model, t.data).data is t.data
    with pytest.raises(ValueError, match="X is required when model is an MLP"):
        landscape.as_target(model)
    f = get("quadratic")
    assert landscape.as_target(f).kind == "analytic"
    with pytest.raises(ValueError, match="X and y must be None"):
        landscape.as_target(f, X)
    monkeypatch.setattr(_device, "BACKENDS", dict(_device.BACKENDS))
    _device.register_backend("other", _device.BACKENDS["cpu"])
    with pytest.raises(ValueError, match="device='other' evaluates MLPs; functions f"):
        landscape.as_target(f, device="other")
