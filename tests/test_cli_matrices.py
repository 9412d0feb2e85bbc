"""``fastscape hessian --ggn --fisher --blocks --diagonal``: the report's values against the
library's exact ones, and what it says is exact and what estimated."""

from __future__ import annotations

import json

import numpy as np
from numpy.testing import assert_allclose

import fastscape
from fastscape import curvature, datasets
from fastscape.cli import main
from fastscape.curvature.ggn import exact_matrix

ALL = ["--ggn", "--fisher", "--blocks", "--diagonal"]


def test_small_model_reports_exact_values(tmp_path, capsys):
    out = tmp_path / "h"
    code = main(["hessian", "--hidden", "5", "--steps", "40", "--top", "2", *ALL,
                 "--out", str(out)])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((out / "hessian.json").read_text())
    with np.load(out / "theta.npz") as f:
        theta = f["theta"]
    X, y = datasets.load("blobs", standardize_features=True)
    model = fastscape.MLP([2, 5, 2])
    H = model.hessian(theta, X, y)
    G = exact_matrix(model, theta, X, y, "ggn")
    F = exact_matrix(model, theta, X, y, "fisher")
    gn = rep["gauss_newton"]
    assert gn["ggn"]["exact"] and gn["residual"]["exact"] and rep["fisher"]["exact"]
    assert_allclose(gn["ggn"]["top_eigenvalues"], np.linalg.eigvalsh(G)[::-1][:2], rtol=1e-10)
    assert_allclose(gn["ggn"]["trace"] + gn["residual"]["trace"], np.trace(H), rtol=1e-10)
    assert_allclose(gn["residual"]["bottom_eigenvalues"][0], np.linalg.eigvalsh(H - G)[0],
                    rtol=1e-8, atol=1e-14)  # fmt: skip
    assert_allclose(rep["fisher"]["top_eigenvalues"], np.linalg.eigvalsh(F)[::-1][:2], rtol=1e-10)
    assert gn["ggn"]["trace_std_error"] == 0.0 and "L2" in gn["l2"]
    blocks = rep["layer_blocks"]
    assert blocks["exact"] and blocks["method"] == "exact"
    want = curvature.layer_blocks(model, theta, X, y, k=2)
    assert_allclose([b["trace"] for b in blocks["layers"]], want.trace, rtol=1e-12)
    assert_allclose(blocks["coupling_frobenius"], want.coupling, rtol=1e-12)
    assert blocks["coupling_spectral"] is not None
    diag = rep["diagonal"]
    assert diag["exact"] and diag["file"] in rep["files"]
    with np.load(out / diag["file"]) as f:
        assert_allclose(f["diagonal"], np.diag(H), rtol=1e-12)
        assert np.all(f["std_error"] == 0)
    for words in ("GGN top 2", "residual trace", "Fisher trace", "block 1 top", "diagonal"):
        assert words in stdout


def test_large_model_reports_estimates_with_uncertainty(tmp_path, capsys):
    out = tmp_path / "h"
    code = main(["hessian", "--hidden", "48,40", "--steps", "2", "--top", "1", *ALL,
                 "--probes", "6", "--max-hvps", "30", "--quiet", "--out", str(out)])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((out / "hessian.json").read_text())
    assert rep["model"]["n_params"] > 2000
    gn = rep["gauss_newton"]
    for part in (gn["ggn"], gn["residual"], rep["fisher"]):
        assert part["exact"] is False and part["trace_std_error"] > 0
        assert isinstance(part["top_converged"][0], bool) and part["n_products"] > 0
    blocks = rep["layer_blocks"]
    assert blocks["exact"] is False and blocks["coupling_spectral"] is None
    assert blocks["n_probes"] == 6 and len(blocks["layers"]) == 3
    assert all(b["trace_std_error"] > 0 for b in blocks["layers"])
    assert np.all(np.array(blocks["coupling_std_error"]) > 0)
    diag = rep["diagonal"]
    assert diag["exact"] is False and diag["method"] == "hutchinson" and diag["n_probes"] == 6
    with np.load(out / "hessian_diagonal.npz") as f:
        assert f["diagonal"].shape == (rep["model"]["n_params"],)
        assert np.all(f["std_error"] > 0) and diag["max_std_error"] == f["std_error"].max()
