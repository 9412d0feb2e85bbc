"""Data sets: the seeds' synthetic ones, files and scikit-learn's bundled ones."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastscape import datasets


def test_blobs_and_line():
    X, y = datasets.blobs(200, seed=0)
    assert X.shape == (200, 2) and set(np.unique(y)) == {0, 1}
    assert_allclose(X[y == 1].mean(axis=0), [2, 2], atol=0.3)
    assert_allclose(X[y == 0].mean(axis=0), [-2, -2], atol=0.3)
    assert_array_equal(datasets.blobs(50, seed=3)[0], datasets.blobs(50, seed=3)[0])
    X, y = datasets.line(2000, seed=1)
    slope, intercept = np.polyfit(X[:, 0], y, 1)
    assert slope == pytest.approx(3, abs=0.05) and intercept == pytest.approx(2, abs=0.05)
    assert np.std(y - 3 * X[:, 0] - 2) == pytest.approx(0.4, rel=0.1)


def test_load_csv_with_header_and_npz(tmp_path):
    X, y = datasets.blobs(30)
    csv = tmp_path / "d.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,label", comments="")
    X2, y2 = datasets.load(csv)
    assert_allclose(X2, X, rtol=1e-15)
    assert_array_equal(y2, y) and y2.dtype.kind == "i"
    npz = tmp_path / "d.npz"
    np.savez(npz, X=X, y=y)
    X3, y3 = datasets.load(str(npz), standardize_features=True)
    assert_allclose(X3.mean(axis=0), 0, atol=1e-12)
    assert_allclose(X3.std(axis=0), 1, rtol=1e-12)
    assert_array_equal(y3, y)


def test_load_sklearn_datasets():
    pytest.importorskip("sklearn")
    X, y = datasets.load("digits")
    assert X.shape == (1797, 64) and y.max() == 9
    X, y = datasets.load("iris")
    assert X.shape == (150, 4)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        datasets.load("mnist")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load(tmp_path / "missing.csv")
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="needs arrays 'X' and 'y'"):
        datasets.load(bad)
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2,0\nnan,3,1\n")
    with pytest.raises(ValueError, match="X contains non-finite"):
        datasets.load(nan)
