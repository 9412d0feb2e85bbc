"""Export: CSV (numpy.loadtxt, gnuplot pm3d), NPZ and HDF5 round trips, atomic writes."""

from __future__ import annotations

import shutil
import subprocess
import sys

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


def _one_line_error(path, match, call):
    """The reader raises one FileFormatError whose single-line message starts with the path."""
    with pytest.raises(io.FileFormatError, match=match) as info:
        call()
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert info.value.path == path
    return msg


def test_damaged_npz_files_end_in_one_line_errors(results, tmp_path):
    surf = results[0]
    good = io.save_npz(surf, tmp_path / "good.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    _one_line_error(truncated, "truncated or corrupt archive", lambda: io.load(truncated))
    # flip bytes inside the stored loss array: the zip's CRC check fails
    corrupt = tmp_path / "corrupt.npz"
    raw = bytearray(good)
    start = raw.index(surf.loss.tobytes()[:16])
    raw[start : start + 16] = b"\xff" * 16
    corrupt.write_bytes(bytes(raw))
    _one_line_error(corrupt, "truncated or corrupt archive", lambda: io.load(corrupt))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _one_line_error(empty, "cannot read it as a fastscape NPZ", lambda: io.load(empty))
    missing = tmp_path / "missing.npz"
    np.savez(missing, alphas=surf.alphas, meta=np.array('{"type": "surface"}'))
    _one_line_error(missing, "missing 'loss'", lambda: io.load(missing))
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, alphas=surf.alphas, betas=surf.betas, loss=surf.loss[:, :2],
             meta=np.array('{"type": "surface"}'))  # fmt: skip
    _one_line_error(shapes, r"loss has shape \(5, 2\)", lambda: io.load(shapes))
    theta = io.save_theta(tmp_path / "theta.npz", fastscape.Logistic(2), [1.0, 2.0, 3.0])
    _one_line_error(theta, "not a landscape; read it with load_theta", lambda: io.load(theta))


def test_damaged_csv_and_foreign_hdf5_end_in_one_line_errors(results, tmp_path):
    surf = results[0]
    p = io.save_csv(surf, tmp_path / "s.csv")
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:-4]) + "\n")  # the last rows lost
    _one_line_error(p, "truncated or edited", lambda: io.load(p))
    bare = tmp_path / "bare.csv"
    bare.write_text("1 2 3\n4 5 6\n")
    _one_line_error(bare, "no '# meta:' line", lambda: io.load(bare))
    h5py = pytest.importorskip("h5py")
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:  # a loss-landscape layout with a transposed loss
        f["xcoordinates"] = np.linspace(-1, 1, 5)
        f["ycoordinates"] = np.linspace(-1, 1, 3)
        f["train_loss"] = np.ones((5, 3))
    _one_line_error(wrong, r"train_loss has shape \(5, 3\), expected", lambda: io.load(wrong))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["weights"] = np.ones(4)
    _one_line_error(other, "no dataset 'xcoordinates'", lambda: io.load(other))
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    _one_line_error(text, "cannot read it as a loss-landscape HDF5", lambda: io.load(text))


def test_theta_files_carry_their_model(tmp_path):
    model = fastscape.MLP([3, 5, 2], activation="relu", loss="softmax_ce")
    theta = model.init(4)
    p = io.save_theta(tmp_path / "theta.npz", model, theta)
    with np.load(p) as z:  # plain arrays, no pickle
        assert_array_equal(z["theta"], theta)
    back, th = io.load_theta(p)
    assert back == model and back.activation == "relu"
    assert_array_equal(th, theta)
    _, th2 = io.load_theta(p, fastscape.MLP([3, 5, 2], "relu", "softmax_ce"))
    assert_array_equal(th2, theta)
    msg = _one_line_error(p, "another model", lambda: io.load_theta(p, fastscape.MLP([3, 8, 2])))
    assert "sizes [3, 5, 2] in the file, [3, 8, 2] in the model (layer 1: 5 vs 8)" in msg
    assert "activation 'relu' in the file, 'tanh' given" in msg
    deeper = fastscape.MLP([3, 5, 5, 2], "relu")
    msg = _one_line_error(p, "another model", lambda: io.load_theta(p, deeper))
    assert "4 vs 3 layers" not in msg and "3 vs 4 layers" in msg


def test_old_theta_files_load_with_a_model(tmp_path):
    model = fastscape.MLP([2, 4, 2])
    theta = model.init(1)
    bare = tmp_path / "bare.npz"
    np.savez(bare, theta=theta)
    assert_array_equal(io.load_theta(bare, model)[1], theta)
    _one_line_error(bare, "without a model description; pass the model",
                    lambda: io.load_theta(bare))  # fmt: skip
    _one_line_error(
        bare, "parameters do not fit", lambda: io.load_theta(bare, fastscape.MLP([2, 5, 2]))
    )
    layers = tmp_path / "layers.npz"
    np.savez(layers, **{f"{k}{i}": a for i, wb in enumerate(model.unflatten(theta))
                        for k, a in zip("Wb", wb)})  # fmt: skip
    assert_array_equal(io.load_theta(layers, model)[1], theta)
    cli = tmp_path / "cli.npz"  # the command line's earlier layout
    np.savez(cli, theta=theta, sizes=np.array(model.sizes), activation="tanh", loss="softmax_ce")
    assert io.load_theta(cli)[0] == model
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(io.save_theta(tmp_path / "t.npz", model, theta).read_bytes()[:100])
    _one_line_error(truncated, "truncated or corrupt", lambda: io.load_theta(truncated))
    surf = tmp_path / "surf.npz"
    np.savez(surf, meta=np.array("{}"), loss=np.ones(3))
    _one_line_error(surf, "holds a landscape", lambda: io.load_theta(surf))
    with pytest.raises(FileNotFoundError):
        io.load_theta(tmp_path / "nope.npz", model)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_both_slices_in_one_file(suffix, tmp_path):
    rng = np.random.default_rng(3)
    model = fastscape.MLP([3, 4, 2], "tanh", "softmax_ce")
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
    theta = model.init(0)
    d1, d2 = D.pair(model, theta, seed=1)
    s1 = slice_1d(model, theta, d1, X, y, alphas=7)
    s2 = slice_1d(model, theta, d2, X, y, alphas=7)
    p = io.save_slices({"d1": s1, "d2": s2}, tmp_path / f"slices{suffix}")
    back = io.load_slices(p)
    assert list(back) == ["d1", "d2"]
    for a, b in ((s1, back["d1"]), (s2, back["d2"])):
        _same(a, b)
        assert b.direction["kind"] == a.direction["kind"]
    assert back["d2"].direction["kind"] == "pair"
    if suffix == ".csv":
        data = np.loadtxt(p)  # alpha, loss_d1, accuracy_d1, loss_d2, accuracy_d2
        assert data.shape == (7, 5)
        assert_array_equal(data[:, 3], s2.loss)
        _one_line_error(p, "read it with load_slices", lambda: io.load(p))
        p.write_text("\n".join(p.read_text().splitlines()[:-2]) + "\n1.0 2.0\n")
        _one_line_error(p, "cannot read it as a fastscape slices file", lambda: io.load_slices(p))
    assert list(io.load_slices(io.save_slices([s1, s2], tmp_path / f"seq{suffix}"))) == ["d1", "d2"]
    other = slice_1d(model, theta, d2, X, y, alphas=5)
    with pytest.raises(ValueError, match="other coordinates"):
        io.save_slices({"d1": s1, "d2": other}, tmp_path / f"bad{suffix}")


# ----------------------------------------------------------------------------- VTK
def _grid_points(surf, z):
    A, B = np.meshgrid(surf.alphas, surf.betas, indexing="ij")
    return np.column_stack([A.ravel(), B.ravel(), z.ravel()])


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("suffix", [".vtk", ".vtu"])
def test_vtk_read_back_by_meshio(results, tmp_path, suffix, log):
    meshio = pytest.importorskip("meshio")
    for k, surf in enumerate((results[0], results[2])):
        p = io.save_vtk(surf, tmp_path / f"s{k}{suffix}", log=log)
        mesh = meshio.read(p)
        z = np.log10(surf.loss) if log else surf.loss
        assert_allclose(mesh.points, _grid_points(surf, z), rtol=1e-15, atol=0)
        assert_array_equal(mesh.point_data["loss"], surf.loss.ravel())
        if surf.accuracy is None:
            assert "accuracy" not in mesh.point_data
        else:
            assert_array_equal(mesh.point_data["accuracy"], surf.accuracy.ravel())
        if log:
            assert_allclose(mesh.point_data["log10_loss"], z.ravel(), rtol=1e-15)
        a, b = surf.loss.shape
        (block,) = mesh.cells
        assert block.type == "quad" and block.data.shape == ((a - 1) * (b - 1), 4)
        # every cell is one grid square: its corners differ by one step in alpha and/or beta
        i, j = np.divmod(block.data, b)
        assert_array_equal(i - i[:, :1], np.tile([0, 1, 1, 0], (len(i), 1)))
        assert_array_equal(j - j[:, :1], np.tile([0, 0, 1, 1], (len(j), 1)))
        assert sorted(map(tuple, np.column_stack([i[:, 0], j[:, 0]]))) == [
            (r, c) for r in range(a - 1) for c in range(b - 1)
        ]


@pytest.mark.parametrize("suffix", [".vtk", ".vtu"])
def test_vtk_read_back_by_vtk_itself(results, tmp_path, suffix):
    """VTK's own readers (ParaView's): skipped where the ``vtk`` wheel (about 140 MB, not in
    the test extra) is absent."""
    pytest.importorskip("meshio")
    pytest.importorskip("vtk")
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOLegacy import vtkUnstructuredGridReader
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridReader

    surf = results[0]
    reader = vtkUnstructuredGridReader() if suffix == ".vtk" else vtkXMLUnstructuredGridReader()
    reader.SetFileName(str(io.save_vtk(surf, tmp_path / f"s{suffix}")))
    reader.Update()
    grid = reader.GetOutput()
    a, b = surf.loss.shape
    assert grid.GetNumberOfCells() == (a - 1) * (b - 1)
    assert {grid.GetCellType(c) for c in range(grid.GetNumberOfCells())} == {9}  # VTK_QUAD
    assert_array_equal(vtk_to_numpy(grid.GetPoints().GetData()), _grid_points(surf, surf.loss))
    data = grid.GetPointData()
    assert_array_equal(vtk_to_numpy(data.GetArray("loss")), surf.loss.ravel())
    assert_array_equal(vtk_to_numpy(data.GetArray("accuracy")), surf.accuracy.ravel())


def test_vtk_legacy_points_read_without_meshio(results, tmp_path):
    """The legacy file's POINTS block, parsed by hand: big-endian doubles in grid order."""
    pytest.importorskip("meshio")
    surf = results[0]
    raw = io.save_vtk(surf, tmp_path / "s.vtk").read_bytes()
    assert raw.startswith(b"# vtk DataFile Version")
    n = surf.loss.size
    head = f"POINTS {n} double\n".encode()
    start = raw.index(head) + len(head)
    points = np.frombuffer(raw[start : start + 24 * n], dtype=">f8").reshape(n, 3)
    assert_array_equal(points, _grid_points(surf, surf.loss))


def test_vtk_non_finite_and_bad_input(results, tmp_path, monkeypatch):
    meshio = pytest.importorskip("meshio")
    surf, sl, _ = results
    loss = surf.loss.copy()
    loss[1, 2] = np.inf
    loss[0, 0] = 0.0
    bad = Surface(surf.alphas, surf.betas, loss, None)
    mesh = meshio.read(io.save_vtk(bad, tmp_path / "inf.vtu", log=True))
    finite = np.isfinite(loss) & (loss > 0)
    z = mesh.points[:, 2].reshape(loss.shape)
    assert z[1, 2] == np.log10(loss[finite]).max()  # drawn at the top of the finite points
    assert z[0, 0] == np.log10(loss[finite]).min()  # a zero loss at the lowest positive one
    assert mesh.point_data["loss"][1 * 3 + 2] == np.inf
    with pytest.raises(TypeError, match="surface must be a Surface"):
        io.save_vtk(sl, tmp_path / "s.vtk")
    with pytest.raises(ValueError, match=r"\.vtk or \.vtu"):
        io.save_vtk(surf, tmp_path / "s.vtp")
    with pytest.raises(ValueError, match="at least 2 x 2"):
        io.save_vtk(Surface(surf.alphas, surf.betas[:1], surf.loss[:, :1]), tmp_path / "s.vtk")
    with pytest.raises(ValueError, match="log needs a positive loss"):
        io.save_vtk(Surface(surf.alphas, surf.betas, 0 * surf.loss), tmp_path / "s.vtk", log=True)
    # atomic: a failing writer leaves the old file and no temporary
    p = io.save_vtk(surf, tmp_path / "keep.vtk")
    before = p.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(meshio, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_vtk(surf, p)
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["inf.vtu", "keep.vtk"]
    monkeypatch.setitem(sys.modules, "meshio", None)
    with pytest.raises(ImportError, match=r"fastscape\[vtk\]"):
        io.save_vtk(surf, tmp_path / "s.vtk")


@pytest.mark.slow
def test_cli_format_vtk(tmp_path, capsys):
    """landscape --format png,vtk writes surface.vtk beside the figures; plot converts a saved
    surface; vtk is refused for slices and by commands without a surface."""
    meshio = pytest.importorskip("meshio")
    from fastscape.cli import main

    out = tmp_path / "run"
    argv = ["landscape", "--hidden", "4", "--points", "5", "--steps", "30",
            "--sharpness-directions", "8", "--quiet", "--format", "png,vtk", "--log",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    surf = io.load(out / "surface.npz")
    mesh = meshio.read(out / "surface.vtk")
    assert_allclose(mesh.points, _grid_points(surf, np.log10(surf.loss)), rtol=1e-15)
    assert_array_equal(mesh.point_data["loss"], surf.loss.ravel())
    assert (out / "contour.png").is_file()
    assert "surface.vtk" in _report_files(out)
    # plot: a saved surface to VTK, by --format or by the suffix of --out
    assert main(["plot", str(out / "surface.npz"), "--format", "vtk", "--out",
                 str(tmp_path / "p"), "--quiet"]) == 0  # fmt: skip
    assert not (tmp_path / "p.png").exists()
    assert_array_equal(meshio.read(tmp_path / "p.vtk").points[:, 2], surf.loss.ravel())
    assert main(["plot", str(out / "surface.npz"), "--out", str(tmp_path / "q.vtk")]) == 0
    assert "q.vtk" in capsys.readouterr().out
    # slices have no VTK form; the other commands have no surface
    assert main(["plot", str(out / "slices.csv"), "--format", "vtk", "--quiet"]) == 2
    assert "--format vtk writes surfaces" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["hessian", "--format", "vtk"])
    assert "expected a comma list of png, pdf, svg" in capsys.readouterr().err


def _report_files(out):
    import json

    return json.loads((out / "report.json").read_text())["files"]
