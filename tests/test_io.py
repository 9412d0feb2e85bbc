"""Export: CSV (numpy.loadtxt, gnuplot pm3d), NPZ and HDF5 round trips, atomic writes."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import directions as D
from fastscape import io
from fastscape.landscape import Slice, Surface, slice_1d, surface_2d


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    model = fastscape.MLP([3, 4, 2], "tanh", "softmax_ce")
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    theta = model.init(0)
    d1, d2 = D.pair(model, theta, seed=1)
    surf = surface_2d(model, theta, d1, d2, X, y, alphas=5, betas=np.linspace(-2, 2, 3))
    sl = slice_1d(model, theta, d1, X, y, alphas=7)
    reg = fastscape.LinearRegression(3)
    mse = surface_2d(reg, reg.init(0) + 0.1, *rng.normal(size=(2, 4)), X, rng.normal(size=30),
                     alphas=4, betas=6)  # fmt: skip
    return surf, sl, mse


def _same(a, b, acc_rtol=0.0):
    assert type(a) is type(b)
    assert_array_equal(a.alphas, b.alphas)
    assert_array_equal(a.loss, b.loss)
    if a.accuracy is None:
        assert b.accuracy is None
    else:
        assert_allclose(a.accuracy, b.accuracy, rtol=acc_rtol, atol=0)
    if isinstance(a, Surface):
        assert_array_equal(a.betas, b.betas)
        assert a.directions[0]["norm"] == b.directions[0]["norm"]


def test_csv_read_by_loadtxt_and_load(results, tmp_path):
    surf, sl, mse = results
    p = io.save_csv(surf, tmp_path / "s.csv")
    data = np.loadtxt(p)
    assert data.shape == (5 * 3, 4)
    A, B = np.meshgrid(surf.alphas, surf.betas, indexing="ij")
    assert_array_equal(data[:, 0], A.ravel())
    assert_array_equal(data[:, 1], B.ravel())
    assert_array_equal(data[:, 2], surf.loss.ravel())
    text = p.read_text().split("\n")
    assert text[0].startswith("#") and text.count("") == 5 + 1  # blank line after each scan
    _same(surf, io.load(p))
    _same(sl, io.load(io.save_csv(sl, tmp_path / "l.csv")))
    _same(mse, io.load(io.save_csv(mse, tmp_path / "m.csv")))
    assert np.loadtxt(tmp_path / "m.csv").shape == (24, 3)  # no accuracy column for MSE


def test_npz_round_trip_without_pickle(results, tmp_path):
    for k, r in enumerate(results):
        p = io.save_npz(r, tmp_path / f"r{k}.npz")
        with np.load(p) as z:  # allow_pickle=False is numpy's default
            assert_array_equal(z["loss"], r.loss)
        _same(r, io.load(p))


def test_hdf5_round_trip_in_loss_landscape_layout(results, tmp_path):
    h5py = pytest.importorskip("h5py")
    surf = results[0]
    p = io.save_hdf5(surf, tmp_path / "s.h5")
    with h5py.File(p) as f:
        x, y = f["xcoordinates"][:], f["ycoordinates"][:]
        Z = f["train_loss"][:]
        assert Z.shape == (y.size, x.size)  # as their meshgrid(x, y) / contour expect
        assert Z[2, 4] == surf.loss[4, 2]
        assert_array_equal(f["train_acc"][:], 100 * surf.accuracy.T)
    for k, r in enumerate(results):
        # accuracy is stored in percent, as loss-landscape does: equal to rounding
        _same(r, io.load(io.save_hdf5(r, tmp_path / f"r{k}.h5")), acc_rtol=1e-15)


def test_atomic_write_keeps_the_old_file_on_failure(results, tmp_path, monkeypatch):
    surf, _, _ = results
    p = io.save_npz(surf, tmp_path / "keep.npz")
    before = p.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_npz(surf, p)
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["keep.npz"]  # no temporary left behind


@pytest.mark.skipif(shutil.which("gnuplot") is None, reason="gnuplot is not installed")
@pytest.mark.parametrize("terminal", ["dumb", "png"])
def test_gnuplot_reads_the_csv_with_pm3d(results, tmp_path, terminal):
    surf, _, _ = results
    script = io.write_gnuplot(surf, tmp_path / "surf.gp", terminal=terminal)
    out = subprocess.run(
        ["gnuplot", script.name], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr.lower(), out.stderr
    if terminal == "png":
        png = (tmp_path / "surf.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    else:
        assert len(out.stdout.splitlines()) > 10  # the ascii-art plot


def test_bad_inputs(tmp_path, results):
    with pytest.raises(TypeError, match="Surface or a Slice"):
        io.save_csv(np.zeros(3), tmp_path / "x.csv")
    with pytest.raises(ValueError, match="unknown landscape file suffix"):
        (tmp_path / "x.json").write_text("{}")
        io.load(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="must be a Surface"):
        io.write_gnuplot(results[1], tmp_path / "x.gp")
    assert isinstance(results[1], Slice)
