"""The fastscape command end to end, in temporary directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import matplotlib.image
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastscape
from fastscape import datasets, io
from fastscape.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# a landscape run that takes a second or two once compiled
FAST = ["--points", "5", "--steps", "30", "--sharpness-directions", "8", "--quiet"]


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
    # both slices in one file: gnuplot/loadtxt columns, and load_slices gives them back
    slices = io.load_slices(out / "slices.csv")
    s1, s2 = slices["d1"], slices["d2"]
    assert s1.loss.ndim == s2.loss.ndim == 1
    assert not np.array_equal(s1.loss, s2.loss)  # two different directions
    header = [ln for ln in (out / "slices.csv").read_text().splitlines() if ln.startswith("#")]
    columns = header[-1].lstrip("# ").removeprefix("columns:").split()
    table = np.loadtxt(out / "slices.csv", comments="#", ndmin=2)
    if s1.accuracy is not None:
        assert columns == ["alpha", "loss_d1", "accuracy_d1", "loss_d2", "accuracy_d2"]
        assert_allclose(table[:, 3], s2.loss, rtol=1e-12)
    else:
        assert columns == ["alpha", "loss_d1", "loss_d2"]
        assert_allclose(table[:, 2], s2.loss, rtol=1e-12)
    assert_allclose(table[:, 0], s1.alphas, rtol=1e-12)
    assert_allclose(table[:, 1], s1.loss, rtol=1e-12)
    assert not any(n.startswith("slice_d") for n in report["files"])


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


def test_hessian_from_saved_theta_uses_the_stored_spec(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["landscape", "--hidden", "4", "--out", str(run), *FAST]
    assert _run(argv, capsys)[0] == 0
    # no --hidden: the spec stored beside theta builds the [2, 4, 2] model
    code, _, err = _run(["hessian", "--theta", str(run / "theta.npz"), "--top", "3",
                         "--out", str(tmp_path / "h"), "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    rep = json.loads((tmp_path / "h" / "hessian.json").read_text())
    assert rep["model"]["sizes"] == [2, 4, 2]
    X, y = datasets.load("blobs", standardize_features=True)
    model = fastscape.MLP([2, 4, 2])
    lam = np.linalg.eigvalsh(model.hessian(_theta(run), X, y))
    assert_allclose(sorted(rep["top_eigenvalues"]), lam[-3:], rtol=1e-8)
    assert_allclose(sorted(rep["bottom_eigenvalues"]), lam[:3], rtol=1e-6, atol=1e-10)
    # another model size: refused, saying which sizes differ
    code, _, err = _run(["hessian", "--theta", str(run / "theta.npz"), "--hidden", "8",
                         "--out", str(tmp_path / "h2"), "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "[2, 4, 2]" in err and "hidden 1: 4 vs 8" in err
    assert not (tmp_path / "h2").exists()


@pytest.mark.slow
def test_connect_and_eos(tmp_path, capsys):
    code, out, _ = _run(["connect", "--hidden", "8", "--steps", "150", "--bezier-steps", "60",
                         "--points", "21", "--out", str(tmp_path / "c")], capsys)  # fmt: skip
    assert code == 0 and "barrier" in out
    rep = json.loads((tmp_path / "c" / "connect.json").read_text())
    assert rep["linear_barrier"] >= 0 and len(rep["linear"]["loss"]) == 21
    assert rep["linear_interpolated_barrier"] >= 0 and rep["atol"] == 1e-3
    code, out, _ = _run(["eos", "--steps", "200", "--out", str(tmp_path / "e"), "--quiet"], capsys)
    assert code == 0
    rep = json.loads((tmp_path / "e" / "eos.json").read_text())
    assert rep["threshold"] == pytest.approx(20.0) and len(rep["loss"]) == 201
    assert rep["optimizer"] == "gd" and rep["mse_convention"] == "sum"
    assert rep["threshold_formula"] == "2/η" and rep["sharpness"] == "hessian"
    code, out, _ = _run(["eos", "--steps", "20", "--every", "10", "--optimizer", "momentum",
                         "--momentum", "0.5", "--mse-convention", "half_sum",
                         "--out", str(tmp_path / "m")], capsys)  # fmt: skip
    assert code == 0 and "(2+2β)/η" in out
    rep = json.loads((tmp_path / "m" / "eos.json").read_text())
    assert rep["threshold"] == pytest.approx(30.0) and rep["momentum"] == 0.5
    assert rep["mse_convention"] == "half_sum" and rep["settings"]["optimizer"] == "momentum"
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
        (["eos", "--method", "adam"], "unrecognized arguments"),
        (["eos", "--batch-size", "8"], "unrecognized arguments"),
        (["landscape", "--format", "png,jpg"], "comma list"),
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
    from fastscape.cli import compute_curvature

    rng = np.random.default_rng(16)
    model = fastscape.MLP([4, 5, 3], activation="tanh", loss="softmax_ce")
    X = rng.normal(size=(60, 4))
    data = model.batch(X, rng.integers(0, 3, 60))
    theta = model.init(0)
    it = compute_curvature(model, theta, data, 2, 0, exact_max_params=0)
    ex = compute_curvature(model, theta, data, 2, 0)
    assert it["method"] == "lanczos" and ex["method"] != "lanczos"
    assert_allclose(it["top"], ex["top"], rtol=1e-6)
    assert_allclose(it["bottom"], ex["bottom"], rtol=1e-6, atol=1e-8)
    exact_trace = np.trace(model.hessian(theta, data))
    assert abs(it["trace"] - exact_trace) < 0.5 * abs(exact_trace) + 1e-6


# ----------------------------------------------------------------------------- issue 15
def _main(argv):
    """main() with argparse's own exits folded into the return code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line_error(err: str, *words: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("fastscape: error:"), err
    for w in words:
        assert w in lines[-1], (w, lines[-1])


def _cli(*argv, **kw):
    """The console script in a subprocess (real signals, real process boundaries)."""
    return subprocess.Popen([sys.executable, "-m", "fastscape", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def test_corrupt_and_truncated_files_end_in_one_line_naming_the_file(tmp_path, capsys):
    X, y = datasets.blobs(40)
    good = tmp_path / "data.npz"
    np.savez(good, X=X, y=y)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    for path in (cut, junk):
        code = _main(["landscape", "--data", str(path), "--out", str(tmp_path / "o"), *FAST])
        _, err = capsys.readouterr()
        assert code == 2
        _one_line_error(err, path.name)
    # theta files: truncated, a non-npz file, and the wrong arrays
    run = tmp_path / "run"
    assert _main(["landscape", "--out", str(run), *FAST]) == 0
    theta = run / "theta.npz"
    bad_theta = tmp_path / "theta_cut.npz"
    bad_theta.write_bytes(theta.read_bytes()[:-40])
    text = tmp_path / "theta_text.npz"
    text.write_text("not numbers")
    wrong = tmp_path / "theta_wrong.npz"
    np.savez(wrong, weights=np.zeros(3))
    for path, word in ((bad_theta, "truncated or corrupt"), (text, "cannot read it"),
                       (wrong, "no array 'theta'")):  # fmt: skip
        for cmd in ("hessian", "landscape"):
            code = _main([cmd, "--theta", str(path), "--out", str(tmp_path / f"o-{cmd}"),
                          "--quiet"])  # fmt: skip
            _, err = capsys.readouterr()
            assert code == 2
            _one_line_error(err, path.name, word)
            assert not (tmp_path / f"o-{cmd}").exists()
    # plot of a file that is not a surface, and of a damaged surface: io's FileFormatError,
    # its one line naming the file once
    code = _main(["plot", str(theta), "--out", str(tmp_path / "p.png")])
    _, err = capsys.readouterr()
    assert code == 2
    _one_line_error(err, f"{theta}: ", "parameters", f"fastscape landscape --theta {theta}")
    surf = tmp_path / "surface_cut.npz"
    surf.write_bytes((run / "surface.npz").read_bytes()[:200])
    code = _main(["plot", str(surf), "--out", str(tmp_path / "q.png")])
    _, err = capsys.readouterr()
    assert code == 2
    _one_line_error(err, f"{surf}: ")
    assert err.count("surface_cut.npz") == 1 and not (tmp_path / "q.png").exists()


def test_lock_refuses_a_second_writer(tmp_path):
    import fcntl

    out = tmp_path / "out"
    lock = tmp_path / "out.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a first writer holds the lock
        proc = _cli("landscape", "--out", str(out), *FAST)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        _one_line_error(err, "another fastscape run is writing to", "out.lock")
        assert "training" not in err and not out.exists()
        assert not list(tmp_path.glob("out.tmp-*"))
    # released: the same command now runs, and removes its lock file when done
    proc = _cli("landscape", "--out", str(out), *FAST)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (out / "report.json").is_file() and not lock.exists()


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupt_with_overwrite_leaves_the_old_result_intact(signame, tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    assert _main(["landscape", "--out", str(out), *FAST]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a run that trains for minutes unless interrupted
    proc = _cli("landscape", "--out", str(out), "--overwrite", "--steps", "10000000",
                "--gtol", "1e-300", "--points", "5")  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("out.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("out.tmp-*")), "the run never started writing"
    time.sleep(1.0)  # inside the work
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no tmp dir, no lock


def test_overwrite_replaces_the_whole_directory_and_files_follow_the_umask(tmp_path, capsys):
    import stat

    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        assert _main(["landscape", "--out", str(out), "--format", "png,svg", *FAST]) == 0
        assert (out / "contour.svg").is_file()
        for p in out.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o640, p.name
        assert stat.S_IMODE(out.stat().st_mode) == 0o750
        assert _main(["landscape", "--out", str(out), "--overwrite", "--format", "pdf",
                      "--dpi", "50", *FAST]) == 0  # fmt: skip
    finally:
        os.umask(old)
    names = {p.name for p in out.iterdir()}
    assert "contour.pdf" in names and not any(n.endswith((".svg", ".png")) for n in names)
    assert (out / "contour.pdf").read_bytes()[:5] == b"%PDF-"
    report = json.loads((out / "report.json").read_text())
    assert sorted(names) == report["files"]
    assert {"slices.csv", "slices.pdf", "surface3d.pdf", "contour.pdf", "spectrum.pdf"} <= names
    # a directory holding other files is never replaced
    (out / "notes.txt").write_text("mine")
    code = _main(["landscape", "--out", str(out), "--overwrite", *FAST])
    _, err = capsys.readouterr()
    assert code == 2
    _one_line_error(err, "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"


def test_output_problems_are_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for cmd in ("landscape", "hessian", "connect", "eos"):
        code = _main([cmd, "--out", str(blocker / "sub")])
        _, err = capsys.readouterr()
        assert code == 2
        _one_line_error(err, "file")
        assert "training" not in err and "loading" not in err
    existing = tmp_path / "h"
    existing.mkdir()
    (existing / "hessian.json").write_text("{}")
    code = _main(["hessian", "--out", str(existing)])
    _, err = capsys.readouterr()
    assert code == 2 and "--overwrite" in err and "loading" not in err


def test_default_outputs_of_the_other_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _main(["hessian", "--steps", "20", "--quiet"]) == 0
    assert (tmp_path / "fastscape-hessian" / "hessian.json").is_file()
    assert (tmp_path / "fastscape-hessian" / "spectrum.png").read_bytes()[:8] == PNG_MAGIC
    assert _main(["eos", "--steps", "20", "--every", "10", "--quiet", "--format", "svg"]) == 0
    svg = (tmp_path / "fastscape-eos" / "eos.svg").read_text()
    assert "<svg" in svg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastscape-eos", "fastscape-hessian"]


def test_grid_far_beyond_the_machine_is_refused_before_training(tmp_path, capsys):
    import time

    t = time.perf_counter()
    code = _main(["landscape", "--points", "100000", "--out", str(tmp_path / "o")])
    elapsed = time.perf_counter() - t
    _, err = capsys.readouterr()
    assert code == 2 and elapsed < 10
    _one_line_error(err, "100000×100000", "--force", "memory")
    assert "training" not in err and not (tmp_path / "o").exists()
    from fastscape.cli import grid_estimate

    model = fastscape.MLP([2, 16, 2])
    s1, b1 = grid_estimate(model, 200, 0, 51, 51)
    s2, b2 = grid_estimate(model, 200, 0, 510, 510)
    assert s2 / s1 == pytest.approx(100, rel=0.05) and b2 / b1 == pytest.approx(100, rel=0.05)


def test_labels_read_right_or_refused(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    labels = (X[:, 0] > 0).astype(float)
    frac = labels.copy()
    frac[7] = 0.5
    np.savez(tmp_path / "frac.npz", X=X, y=frac)
    np.savez(tmp_path / "ints.npz", X=X, y=rng.integers(0, 214, 300).astype(float) * 3)
    np.savez(tmp_path / "real.npz", X=X, y=X[:, 0] * 1.5 + 0.1)
    cases = [
        (["--data", "frac.npz"], "0.5 in row 7", "--loss"),
        (["--data", "frac.npz", "--loss", "softmax_ce"], "needs integer class labels", "0.5"),
        (["--data", "frac.npz", "--loss", "logistic"], "needs integer class labels", "row 7"),
        (["--data", "ints.npz"], "values", "--loss"),
        (["--data", "real.npz"], "not all integer labels", "--loss mse"),
    ]
    monkeypatch.chdir(tmp_path)
    for extra, *words in cases:
        code = _main(["landscape", *extra, "--out", str(tmp_path / "o"), *FAST])
        _, err = capsys.readouterr()
        assert code == 2, extra
        _one_line_error(err, *words)
    # --loss mse reads the same integer targets as a regression
    code = _main(["hessian", "--data", "ints.npz", "--loss", "mse", "--steps", "5",
                  "--out", str(tmp_path / "r"), "--quiet"])  # fmt: skip
    assert code == 0
    rep = json.loads((tmp_path / "r" / "hessian.json").read_text())
    assert rep["model"]["loss"] == "mse" and rep["model"]["sizes"][-1] == 1


def test_csv_header_detection(tmp_path, capsys):
    X, y = datasets.blobs(20)
    body = "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.c_[X, y])
    (tmp_path / "numbers.csv").write_text("0,1,2\n" + body + "\n")
    (tmp_path / "named.csv").write_text("a,b,label\n" + body + "\n")
    (tmp_path / "plain.csv").write_text(body + "\n")
    with pytest.raises(ValueError, match="--header or --no-header"):
        datasets.load(tmp_path / "numbers.csv")
    Xh, yh = datasets.load(tmp_path / "numbers.csv", header=True)
    assert Xh.shape == (20, 2) and set(np.unique(yh)) == {0, 1}
    Xd, _ = datasets.load(tmp_path / "numbers.csv", header=False)
    assert Xd.shape == (21, 2) and np.array_equal(Xd[0], [0.0, 1.0])
    assert datasets.load(tmp_path / "named.csv")[0].shape == (20, 2)
    assert_allclose(datasets.load(tmp_path / "plain.csv")[0], X, atol=1e-6)
    code = _main(["landscape", "--data", str(tmp_path / "numbers.csv"),
                  "--out", str(tmp_path / "o"), *FAST])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2
    _one_line_error(err, "numbers.csv", "--header")
    code = _main(["landscape", "--data", str(tmp_path / "numbers.csv"), "--header",
                  "--out", str(tmp_path / "o"), *FAST])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["data"]["n_train"] == 20


def test_features_are_standardized_on_the_training_split_only():
    from fastscape.cli import Talk, build_parser, prepare, split_data

    args = build_parser().parse_args(["landscape", "--test-fraction", "0.3", "--seed", "4"])
    _, train, test, *_ = prepare(args, Talk(True), split=True)
    X, y = datasets.blobs()
    Xtr, _, Xte, _ = split_data(X, y, 0.3, 4)
    assert_allclose(train.X.mean(axis=0), 0, atol=1e-12)
    assert_allclose(train.X.std(axis=0), 1, rtol=1e-12)
    assert_allclose(test.X, (Xte - Xtr.mean(axis=0)) / Xtr.std(axis=0), rtol=1e-12)
    assert np.abs(test.X.mean(axis=0)).max() > 1e-3  # not re-centred on its own statistics


def test_landscape_with_theta_and_torch_models(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    run = tmp_path / "run"
    assert _main(["landscape", "--hidden", "5", "--out", str(run), *FAST]) == 0
    theta = _theta(run)
    X, y = datasets.load("blobs", standardize_features=True)
    model = fastscape.MLP([2, 5, 2])
    loss = model.loss(theta, X, y)
    # --theta: nothing trained, the same point
    assert _main(["landscape", "--theta", str(run / "theta.npz"), "--out",
                  str(tmp_path / "t"), *FAST[:2], "--quiet"]) == 0  # fmt: skip
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    assert rep["training"]["source"] == {"theta_file": str(run / "theta.npz")}
    assert_allclose(rep["surface"]["loss_at_theta"], loss, rtol=1e-12)
    # training options with loaded parameters are refused
    code = _main(["landscape", "--theta", str(run / "theta.npz"), "--steps", "5",
                  "--out", str(tmp_path / "t2")])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and "--steps" in err
    # a saved nn.Sequential and a state_dict
    net = model.to_torch(theta)
    torch.save(net, tmp_path / "net.pt")
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    for extra, name in (([str(tmp_path / "net.pt")], "m"),
                        ([str(tmp_path / "sd.pt"), "--activation", "tanh"], "s")):  # fmt: skip
        code = _main(["landscape", "--torch", *extra, "--out", str(tmp_path / name),
                      "--points", "5", "--quiet"])  # fmt: skip
        _, err = capsys.readouterr()
        assert code == 0, err
        rep = json.loads((tmp_path / name / "report.json").read_text())
        assert rep["model"]["sizes"] == [2, 5, 2]
        assert_allclose(rep["surface"]["loss_at_theta"], loss, rtol=1e-12)
    code = _main(["landscape", "--torch", str(tmp_path / "sd.pt"), "--out", str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert code == 2 and "--activation" in err
    code = _main(["landscape", "--torch", str(tmp_path / "sd.pt"), "--activation", "tanh",
                  "--hidden", "7", "--out", str(tmp_path / "x")])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and "hidden 1: 5 vs 7" in err


def test_unconverged_curvature_is_reported(tmp_path, capsys):
    out = tmp_path / "h"
    code = _main(["hessian", "--hidden", "48,40", "--steps", "5", "--max-hvps", "25",
                  "--tol", "1e-12", "--top", "3", "--out", str(out)])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((out / "hessian.json").read_text())
    assert rep["model"]["n_params"] > 2000 and rep["method"] == "lanczos"
    assert rep["converged"] is False and "not converged after" in rep["message"]
    assert "not converged after" in stdout and rep["max_hvps"] == 25
    # the solver's words: the HVPs it spent within the budget, and what to change
    assert "budget max_hvps=25" in rep["message"] and "--max-hvps 25" in rep["message"]
    assert 0 < rep["n_hvps"] <= 2 * 25
    # two ends of a partial spectrum: no whole-spectrum statistic, no exact index unproved
    assert rep["spectrum_complete"] is False and rep["condition_number"] is None
    assert rep["saddle_index_exact"] is False and rep["saddle_index"] is None


def test_words_for_points_and_failed_training(tmp_path, capsys):
    from fastscape.cli import describe_point

    def curv(grad, vals):
        vals = np.asarray(vals, dtype=float)
        cls = fastscape.classify(vals)
        return {"classification": cls, "grad_norm": grad, "critical": grad <= 1e-5,
                "top": np.sort(vals)[::-1], "bottom": np.sort(vals)}  # fmt: skip

    assert describe_point(curv(1e-7, [1.0, 0.5])).startswith("critical point")
    text = describe_point(curv(4e-4, [1.0, 0.2, -1e-5]))
    assert text.startswith("near-critical (‖∇L‖ = 4.0e-04)") and "saddle" not in text
    assert "saddle (λmin = -0.3)" in describe_point(curv(4e-4, [1.0, -0.3]))
    assert describe_point(curv(0.5, [1.0])).startswith("not a critical point")
    # a diverging run is flagged, in the summary and in the report
    code = _main(["landscape", "--method", "gd", "--lr", "1e6", "--steps", "30", "--points",
                  "3", "--sharpness-directions", "4", "--out", str(tmp_path / "d")])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0
    rep = json.loads((tmp_path / "d" / "report.json").read_text())
    assert rep["warnings"] and "warning" in err and "warning" in stdout
    assert any(w in " ".join(rep["warnings"]) for w in ("diverged", "did not", "chance"))


def test_help_shows_each_subcommand_s_own_defaults():
    from fastscape.cli import build_parser

    parser = build_parser()
    helps = {}
    for cmd in ("landscape", "hessian", "connect", "eos", "plot"):
        sub = parser._subparsers._group_actions[0].choices[cmd]
        helps[cmd] = " ".join(sub.format_help().split())
    assert "[default: eos-default]" in helps["eos"] and "[default: 16,16]" in helps["eos"]
    assert "--method" not in helps["eos"] and "--batch-size" not in helps["eos"]
    assert "[default: blobs]" in helps["landscape"] and "[default: 16]" in helps["landscape"]
    assert "[default: True]" not in helps["landscape"]
    assert "seed of everything random [default: 0]" in helps["connect"]
    for cmd, out in (("landscape", "fastscape-out"), ("hessian", "fastscape-hessian"),
                     ("connect", "fastscape-connect"), ("eos", "fastscape-eos")):  # fmt: skip
        assert f"output directory [default: {out}]" in helps[cmd]
        assert "--format" in helps[cmd] and "--dpi" in helps[cmd]
    for cmd in ("landscape", "hessian"):
        assert "--tol" in helps[cmd] and "[default: 1000]" in helps[cmd]


def test_the_command_line_loads_no_kernels_before_it_talks():
    """``import fastscape`` and the parser import NumPy only: the first line does not wait for
    Numba, SciPy and the kernels (they load with the first function that needs them)."""
    code = """
        import sys
        import fastscape
        from fastscape.cli import build_parser
        build_parser().parse_args(["landscape"])
        print(sorted(m for m in ("numba", "scipy", "fastscape.models", "fastscape._device")
                     if m in sys.modules))
        print(fastscape.MLP.__name__, "numba" in sys.modules)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    assert out.stdout.split("\n")[:2] == ["[]", "MLP True"]


def test_the_parser_offers_every_activation_of_the_model_family():
    from fastscape.cli._parser import ACTIVATION_NAMES
    from fastscape.models import ACTIVATIONS

    assert ACTIVATION_NAMES == tuple(ACTIVATIONS)


def test_talks_on_stderr_within_two_seconds_and_quiet_is_silent(tmp_path):
    import time

    t = time.perf_counter()
    with _cli("landscape", "--out", str(tmp_path / "o"), *FAST[:-1]) as proc:
        first = proc.stderr.readline()
        elapsed = time.perf_counter() - t
        err = first + proc.stderr.read()
        rest = proc.stdout.read()
    assert proc.returncode == 0, err
    assert first.startswith("fastscape: loading data blobs") and elapsed < 2.0, (first, elapsed)
    for stage in ("training", "grid:", "curvature:", "writing"):
        assert stage in err
    assert "λmax" in rest and "fastscape:" not in rest  # the summary on stdout only
    proc = _cli("landscape", "--out", str(tmp_path / "q"), *FAST)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and stdout == "" and err == ""


def _warmup_processes(marker: str, parent: int | None = None) -> list[int]:
    """Ids of running warm-up processes whose environment holds ``marker``: children of
    ``parent`` (forks of the CLI, on Linux) or ``python -m fastscape._warmup`` processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        state, ppid = fields[0], int(fields[1])
        ours = b"fastscape._warmup" in cmdline or (parent is not None and ppid == parent)
        if ours and marker.encode() in environ and state != b"Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_cold_cache_compiles_in_the_background_and_ctrl_c_leaves_no_process(tmp_path):
    import signal
    import time

    cache = str(tmp_path / "cold-cache")
    env = {**os.environ, "FASTSCAPE_CACHE_DIR": cache, "NUMBA_CACHE_DIR": ""}
    # a training that runs for minutes unless interrupted
    proc = _cli("landscape", "--out", str(tmp_path / "o"), "--steps", "10000000", "--gtol",
                "1e-300", "--points", "5", env=env)  # fmt: skip
    lines = []
    while not any(ln.startswith("fastscape: training") for ln in lines):
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    assert any("compiling kernels for this machine in the background" in ln for ln in lines)
    deadline = time.monotonic() + 60
    while len(_warmup_processes(cache, proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = _warmup_processes(cache, proc.pid)
    # the grid's two (the span kernel's early and late steps) and the exact Hessian's
    assert len(started) == 3, (started, "".join(lines))
    time.sleep(0.5)  # training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + err
    assert "interrupted" in err and "Traceback" not in err, err
    assert _warmup_processes(cache, proc.pid) == []
    # nor orphans (a fork whose parent died is no longer its child)
    assert [pid for pid in started if _alive(pid)] == []
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.tmp-*"))


def test_checkpoint_resumes_the_grid(tmp_path):
    ckpt = tmp_path / "ckpt"
    argv = ["landscape", "--checkpoint", str(ckpt), *FAST]
    assert _main([*argv, "--out", str(tmp_path / "a")]) == 0
    tiles = sorted((ckpt / "surface").glob("tile_*.npz"))
    assert tiles and (ckpt / "slice_d1").is_dir() and (ckpt / "slice_d2").is_dir()
    # mark the saved tile: a resumed run takes it instead of computing it again
    with np.load(tiles[0]) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["loss"][:] = 123.0
    np.savez(tiles[0], **arrays)
    assert _main([*argv, "--out", str(tmp_path / "b")]) == 0
    surf = io.load(tmp_path / "b" / "surface.npz")
    assert np.all(surf.loss.ravel()[: arrays["loss"].size] == 123.0)


def test_warns_when_the_model_did_not_train(tmp_path, capsys):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 2))
    np.savez(tmp_path / "noise.npz", X=X, y=rng.integers(0, 2, 2000))  # labels carry no signal
    code = _main(["hessian", "--data", str(tmp_path / "noise.npz"), "--model", "logistic",
                  "--out", str(tmp_path / "n"), "--quiet"])  # fmt: skip
    assert code == 0
    warnings = json.loads((tmp_path / "n" / "hessian.json").read_text())["warnings"]
    assert any("chance level" in w for w in warnings), warnings
    # a step too small to move: the loss does not go down
    code = _main(["hessian", "--method", "gd", "--lr", "1e-300", "--steps", "3",
                  "--out", str(tmp_path / "s")])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0
    warnings = json.loads((tmp_path / "s" / "hessian.json").read_text())["warnings"]
    assert any("did not train" in w for w in warnings), warnings
    assert "did not train" in err and "did not train" in stdout


def test_hessian_directions_are_named_and_slices_replot(tmp_path, capsys):
    from fastscape import plot

    out = tmp_path / "h"
    assert _main(["landscape", "--directions", "hessian", "--out", str(out), *FAST]) == 0
    surf = io.load(out / "surface.npz")
    assert [d["kind"] for d in surf.directions] == ["hessian", "hessian"]
    assert plot.describe_directions(surf.directions) == "top Hessian eigenvectors"
    # the directions are the top two eigenvectors of the exact Hessian (up to sign)
    X, y = datasets.load("blobs", standardize_features=True)
    model = fastscape.MLP([2, 16, 2])
    _, V = np.linalg.eigh(model.hessian(_theta(out), X, y))
    slices = io.load_slices(out / "slices.csv")
    for name, k in (("d1", -1), ("d2", -2)):
        alphas = slices[name].alphas
        got = slices[name].loss
        plus, minus = ([model.loss(_theta(out) + a * sign * V[:, k], X, y) for a in alphas]
                       for sign in (1, -1))  # fmt: skip
        sign_free = min(np.max(np.abs(got - plus)), np.max(np.abs(got - minus)))
        assert sign_free <= 1e-6 * np.max(got), name  # Lanczos vectors, tol 1e-6
    # fastscape plot draws both slices of slices.csv in one figure
    code = _main(["plot", str(out / "slices.csv"), "--out", str(tmp_path / "s.png"), "--quiet"])
    assert code == 0 and (tmp_path / "s.png").read_bytes()[:8] == PNG_MAGIC


def test_log_scale_option():
    from types import SimpleNamespace

    from fastscape.cli import CLIError
    from fastscape.cli._landscape import _log_scale
    from fastscape.landscape import Surface

    axes = np.linspace(-1, 1, 3)
    narrow = Surface(axes, axes, np.full((3, 3), 2.0) + np.eye(3))  # 2..3: one decade or less
    wide = Surface(axes, axes, np.logspace(-3, 1, 9).reshape(3, 3))  # four decades
    zero = Surface(axes, axes, np.zeros((3, 3)) + np.eye(3))
    assert _log_scale(SimpleNamespace(log=None), narrow) is False
    assert _log_scale(SimpleNamespace(log=None), wide) is True
    assert _log_scale(SimpleNamespace(log=True), narrow) is True
    assert _log_scale(SimpleNamespace(log=False), wide) is False
    assert _log_scale(SimpleNamespace(log=None), zero) is False
    with pytest.raises(CLIError, match="--log needs a positive loss"):
        _log_scale(SimpleNamespace(log=True), zero)


def test_an_interrupt_wrapped_by_numba_counts_as_an_interrupt(monkeypatch, tmp_path, capsys):
    """Ctrl-C while Numba loads a cached kernel arrives as a SystemError caused by the
    KeyboardInterrupt: the command reports an interruption (exit 130), not a traceback."""
    from fastscape import cli

    def interrupted_inside_numba(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError(
                "<function _numba_unpickle> returned a result with an exception set"
            ) from exc

    monkeypatch.setattr(datasets, "load", interrupted_inside_numba)
    code = cli.main(["hessian", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and not (tmp_path / "h").exists()
    # any other SystemError is not swallowed
    monkeypatch.setattr(datasets, "load", lambda *a, **k: (_ for _ in ()).throw(SystemError("x")))
    with pytest.raises(SystemError):
        cli.main(["hessian", "--out", str(tmp_path / "h2")])


def test_new_activations_and_l2_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "g"
    code = _main(["landscape", "--activation", "gelu_tanh", "--l2", "1e-3", "--out", str(out),
                  *FAST])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"]["activation"] == "gelu_tanh" and rep["model"]["l2"] == 1e-3
    # the stored spec carries λ: the same model comes back, and a different --l2 is refused
    model, _ = fastscape.io.load_theta(out / "theta.npz")
    assert model == fastscape.MLP(rep["model"]["sizes"], "gelu_tanh", "softmax_ce", l2=1e-3)
    capsys.readouterr()
    code = _main(["landscape", "--theta", str(out / "theta.npz"), "--l2", "0.01",
                  "--out", str(tmp_path / "h"), "--points", "5", "--quiet"])  # fmt: skip
    assert code == 2
    assert "holds a model with l2 = 0.001; --l2 says 0.01" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
    assert _main(["landscape", "--l2", "-1", "--out", str(tmp_path / "i")]) == 2


def test_a_ctrl_c_dropped_in_a_finalizer_is_delivered_again():
    """Python drops a KeyboardInterrupt raised in a finalizer ("Exception ignored in ...");
    the CLI's hook delivers it again, so the job stops instead of running on."""
    code = textwrap.dedent(
        """
        import sys, time
        from fastscape import cli

        if sys.argv[1] == "hook":
            sys.unraisablehook = cli._unraisable

        class Finalized:
            def __del__(self):
                raise KeyboardInterrupt

        try:
            Finalized()
            for _ in range(300):
                time.sleep(0.01)
            print("ran on")
        except KeyboardInterrupt:
            print("interrupted")
        """
    )
    for hook, want in (("hook", "interrupted"), ("none", "ran on")):
        out = subprocess.run([sys.executable, "-c", code, hook], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        assert out.stdout.strip() == want, (hook, out.stdout, out.stderr)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--momentum", "0.5"], "--momentum cannot be used with --optimizer gd"),
        (["--optimizer", "momentum", "--betas", "0.9,0.99"],
         "--betas cannot be used with --optimizer momentum"),
        (["--optimizer", "gd", "--adam-eps", "1e-6"], "--adam-eps cannot be used"),
        (["--data", "iris", "--mse-convention", "sum"],
         "--mse-convention cannot be used with the softmax_ce loss"),
    ],
)  # fmt: skip
def test_eos_refuses_options_that_do_not_apply(tmp_path, capsys, argv, message):
    code, _, err = _run(["eos", *argv, "--steps", "2", "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "e").exists()
