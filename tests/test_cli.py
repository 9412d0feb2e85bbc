"""The fastscape command end to end, in temporary directories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastscape
from fastscape import datasets, io
from fastscape.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _check_outputs(out, report):
    for name in report["files"]:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_MAGIC
            assert matplotlib.image.imread(path).ndim == 3
    # the CSV is what numpy and fastscape read back, and what the gnuplot script plots
    grid = np.loadtxt(out / "surface.csv", comments="#", delimiter=None, ndmin=2)
    surf = io.load(out / "surface.npz")
    assert grid.shape[0] == surf.loss.size
    assert_allclose(np.sort(grid[:, 2]), np.sort(surf.loss.ravel()), rtol=1e-12)
    gp = (out / "surface.gp").read_text()
    assert "surface.csv" in gp and "splot" in gp and "pm3d" in gp
    assert io.load(out / "slice.csv").loss.ndim == 1


def _theta(out):
    with np.load(out / "theta.npz") as f:
        return f["theta"]


@pytest.mark.slow
def test_landscape_default(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _run(["landscape", "--out", str(out), "--points", "21", "--quiet"], capsys)
    assert code == 0 and stdout == ""
    report = json.loads((out / "report.json").read_text())
    _check_outputs(out, report)
    # the report agrees with the library called directly
    X, y = datasets.load("blobs", standardize_features=True)
    spec = report["model"]
    model = fastscape.MLP(spec["sizes"], spec["activation"], spec["loss"])
    theta = _theta(out)
    assert_allclose(report["training"]["final_loss"], model.loss(theta, X, y), rtol=1e-12)
    assert_allclose(report["surface"]["loss_at_theta"], model.loss(theta, X, y), rtol=1e-10)
    lam = np.linalg.eigvalsh(model.hessian(theta, X, y))
    assert_allclose(max(report["curvature"]["top_eigenvalues"]), lam[-1], rtol=1e-8)
    assert_allclose(report["curvature"]["trace"], lam.sum(), rtol=1e-8)
    assert report["sharpness"]["max_increase"] >= report["sharpness"]["mean_increase"]
    surf = io.load(out / "surface.npz")
    assert surf.loss.shape == (21, 21)
    assert surf.alphas[10] == 0 and surf.betas[10] == 0
    assert_allclose(surf.loss[10, 10], model.loss(theta, X, y), rtol=1e-10)

    # running again into the same directory refuses, --overwrite replaces
    code, _, err = _run(["landscape", "--out", str(out), "--points", "5", "--quiet"], capsys)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert io.load(out / "surface.npz").loss.shape == (21, 21)


@pytest.mark.slow
def test_landscape_digits_with_test_split_and_summary(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits"
    argv = ["landscape", "--data", "digits", "--hidden", "4", "--steps", "60",
            "--points-x", "7", "--points-y", "5", "--test-fraction", "0.25",
            "--directions", "pca", "--out", str(out)]  # fmt: skip
    code, stdout, _ = _run(argv, capsys)
    assert code == 0
    for word in ("λmax", "trace", "loss at θ*", "wall time"):
        assert word in stdout
    report = json.loads((out / "report.json").read_text())
    _check_outputs(out, report)
    assert report["data"]["n_test"] == 449 and report["data"]["n_train"] == 1348
    surf, surf_test = io.load(out / "surface.npz"), io.load(out / "surface_test.npz")
    assert surf.loss.shape == surf_test.loss.shape == (7, 5)
    assert report["surface"]["test_loss_at_theta"] == pytest.approx(
        report["training"]["test_loss"], rel=1e-10
    )
    assert report["directions"]["kind"] == "pca"


@pytest.mark.slow
def test_hessian_from_saved_theta(tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(["landscape", "--out", str(run), "--points", "5", "--quiet"], capsys)[0] == 0
    code, _, _ = _run(["hessian", "--theta", str(run / "theta.npz"), "--top", "3",
                       "--out", str(tmp_path / "h"), "--quiet"], capsys)  # fmt: skip
    assert code == 0
    rep = json.loads((tmp_path / "h" / "hessian.json").read_text())
    X, y = datasets.load("blobs", standardize_features=True)
    model = fastscape.MLP([2, 16, 2])
    lam = np.linalg.eigvalsh(model.hessian(_theta(run), X, y))
    assert_allclose(sorted(rep["top_eigenvalues"]), lam[-3:], rtol=1e-8)
    assert_allclose(sorted(rep["bottom_eigenvalues"]), lam[:3], rtol=1e-6, atol=1e-10)


@pytest.mark.slow
def test_connect_and_eos(tmp_path, capsys):
    code, out, _ = _run(["connect", "--hidden", "8", "--steps", "150", "--bezier-steps", "60",
                         "--points", "21", "--out", str(tmp_path / "c")], capsys)  # fmt: skip
    assert code == 0 and "barrier" in out
    rep = json.loads((tmp_path / "c" / "connect.json").read_text())
    assert rep["linear_barrier"] >= 0 and len(rep["linear"]["loss"]) == 21
    code, out, _ = _run(["eos", "--steps", "200", "--out", str(tmp_path / "e"), "--quiet"], capsys)
    assert code == 0
    rep = json.loads((tmp_path / "e" / "eos.json").read_text())
    assert rep["threshold"] == pytest.approx(20.0) and len(rep["loss"]) == 201
    assert (tmp_path / "e" / "eos.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_replots_saved_results(tmp_path, capsys):
    X, y = datasets.line(30)
    model = fastscape.LinearRegression(1)
    theta = fastscape.fit(model, X, y, method="newton").theta
    from fastscape.landscape import surface_2d

    surf = surface_2d(model, theta, [1.0, 0.0], [0.0, 1.0], X, y, 5, 4, progress=False)
    io.save_npz(surf, tmp_path / "s.npz")
    for kind in ("contour", "heatmap", "3d"):
        png = tmp_path / f"{kind}.png"
        code, _, err = _run(["plot", str(tmp_path / "s.npz"), "--kind", kind, "--out", str(png),
                             "--quiet"], capsys)  # fmt: skip
        assert code == 0, err
        assert png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["landscape", "--points", "0"], "positive integer"),
        (["landscape", "--range", "1:-1"], "LO < HI"),
        (["landscape", "--norm", "unit"], "invalid choice"),
        (["landscape", "--data", "missing.csv"], "does not exist"),
        (["landscape", "--data", "nan.csv"], "non-finite"),
        (["landscape", "--data", "mnist"], "unknown data set"),
        (["landscape", "--model", "logistic", "--data", "iris"], "needs 2 classes"),
        (["landscape", "--test-fraction", "1.5"], "fraction"),
        (["plot", "nothing.npz"], "nothing.npz"),
        (["hessian", "--theta", "nothing.npz"], "no such file"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nan.csv").write_text("1,2,0\nnan,1,1\n3,4,1\n")
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(("fastscape: error:", "fastscape "))


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    if fastscape.cuda_available():
        pytest.skip("a CUDA device is available here")
    code, _, err = _run(["landscape", "--device", "cuda", "--points", "3", "--steps", "5",
                         "--out", str(tmp_path / "o"), "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "cuda" in err.lower() and "Traceback" not in err


def test_negative_ranges_parse():
    from fastscape.cli import _join_ranges, build_parser

    args = build_parser().parse_args(
        _join_ranges(["landscape", "--range", "-2:2", "--range-y", "-0.5:1.5"])
    )
    assert args.range == (-2.0, 2.0) and args.range_y == (-0.5, 1.5)


def test_help_teaches_and_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "fastscape", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    for sub in ("landscape", "hessian", "connect", "eos", "plot", "examples:"):
        assert sub in out
    exe = shutil.which("fastscape")
    assert exe is not None, "the fastscape console script is not installed"
    out = subprocess.run([exe, "landscape", "--help"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "--test-fraction" in out and "--directions" in out


def test_curvature_iterative_branch_agrees_with_the_exact_one():
    """The large-model branch of the curvature step (Lanczos at both ends, Hutch++ trace, SLQ)
    run on a small model gives the exact branch's extreme eigenvalues."""
    from fastscape.cli import _curvature

    rng = np.random.default_rng(16)
    model = fastscape.MLP([4, 5, 3], activation="tanh", loss="softmax_ce")
    X = rng.normal(size=(60, 4))
    data = model.batch(X, rng.integers(0, 3, 60))
    theta = model.init(0)
    it = _curvature(model, theta, data, 2, 0, exact_max_params=0)
    ex = _curvature(model, theta, data, 2, 0)
    assert it["method"] == "lanczos" and ex["method"] != "lanczos"
    assert_allclose(it["top"], ex["top"], rtol=1e-6)
    assert_allclose(it["bottom"], ex["bottom"], rtol=1e-6, atol=1e-8)
    exact_trace = np.trace(model.hessian(theta, data))
    assert abs(it["trace"] - exact_trace) < 0.5 * abs(exact_trace) + 1e-6
