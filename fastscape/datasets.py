"""Small data sets: the seeds' synthetic ones, files, and scikit-learn's bundled ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._validation import as_float_array, check_positive_int

SKLEARN_DATASETS = ("digits", "breast_cancer", "iris", "wine")


def blobs(n: int = 200, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian clusters: label 1 around (2, 2), label 0 around (-2, -2).

    Parameters
    ----------
    n : int
        Number of samples (n // 2 in the first cluster).
    seed : int
        Seed of the draw.
    spread : float
        Standard deviation of each cluster.

    Returns
    -------
    X : (n, 2) float64
    y : (n,) int64 in {0, 1}; the first n // 2 samples have label 1.
    """
    n = check_positive_int(n, "n", minimum=2)
    rng = np.random.default_rng(seed)
    n1 = n // 2
    X = np.concatenate(
        [rng.normal(2.0, spread, size=(n1, 2)), rng.normal(-2.0, spread, size=(n - n1, 2))]
    )
    y = np.concatenate([np.ones(n1, np.int64), np.zeros(n - n1, np.int64)])
    return X, y


def line(n: int = 100, seed: int = 0, noise: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Noisy line y = 3x + 2 + N(0, noise²) with x uniform on [-2, 2].

    Parameters
    ----------
    n : int
        Number of samples.
    seed : int
        Seed of the draw.
    noise : float
        Standard deviation of the noise.

    Returns
    -------
    X : (n, 1) float64
    y : (n,) float64
    """
    n = check_positive_int(n, "n", minimum=2)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=n)
    y = 3.0 * x + 2.0 + rng.normal(0.0, noise, size=n)
    return x[:, None], y


def standardize(X, reference=None) -> np.ndarray:
    """Columns shifted to mean 0 and scaled to standard deviation 1 (constant columns: 0).

    Parameters
    ----------
    X : (n, d) array
    reference : (m, d) array, optional
        Rows whose column means and standard deviations are used (e.g. the training split, so
        that held-out rows are scaled with the training statistics only). Default: X itself.

    Returns
    -------
    (n, d) float64 array
    """
    X = as_float_array(X, "X", 2)
    R = X if reference is None else as_float_array(reference, "reference", 2)
    if R.shape[1] != X.shape[1]:
        raise ValueError(f"reference has {R.shape[1]} columns, X has {X.shape[1]}")
    std = R.std(axis=0)
    std[std == 0] = 1.0
    return (X - R.mean(axis=0)) / std


def _load_sklearn(name: str):
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise ImportError(
            f"data set {name!r} comes from scikit-learn, which is not installed: "
            "pip install scikit-learn (or fastscape[test])"
        ) from None
    bunch = getattr(skd, f"load_{name}")()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, header: bool | None = None):
    """Numeric CSV, last column = target. ``header=None``: the first row is a header when any
    of its fields is not a number (an all-numeric first row is data); True/False force it."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the CSV file ({exc})") from None
    fields = [v.strip() for v in first.strip().split(",")]
    if header is None:
        header = not all(_is_number(v) for v in fields)
        values = [float(v) for v in fields] if not header else []
        if len(values) >= 3 and values in (
            list(range(len(values))),
            list(range(1, len(values) + 1)),
        ):
            raise ValueError(
                f"{path}: the first row ({first.strip()}) may be a header of column numbers or "
                "data; pass --header or --no-header (header=True/False)"
            )
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2)
    except ValueError as exc:
        hint = "" if header else " (if the first row is a header, pass --header)"
        raise ValueError(f"{path}: not a numeric CSV ({exc}){hint}") from None
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no data rows")
    if data.shape[1] < 2:
        raise ValueError(f"{path}: a CSV data set needs feature columns and a last target column")
    return data[:, :-1], data[:, -1]


def _load_npz(path: Path):
    import zipfile
    import zlib

    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            if "X" not in f or "y" not in f:
                raise ValueError(
                    f"{path}: an .npz data set needs arrays 'X' and 'y', has {list(f)}"
                )
            return np.asarray(f["X"]), np.asarray(f["y"])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise ValueError(
            f"{path}: not a readable .npz file (truncated or corrupt: {type(exc).__name__})"
        ) from None
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None


def load(
    name_or_path: str | os.PathLike, standardize_features: bool = False, header: bool | None = None
):
    """Load a data set by name or path.

    Parameters
    ----------
    name_or_path : str or path
        ``"blobs"``, ``"line"``, one of scikit-learn's bundled ``"digits"``,
        ``"breast_cancer"``, ``"iris"``, ``"wine"``, or a ``.csv`` file (numeric, optional
        header line, last column = target) or ``.npz`` file (arrays ``X`` and ``y``).
    standardize_features : bool
        Standardize the columns of X (see :func:`standardize`).
    header : bool, optional
        CSV files: whether the first row is a header. Default: it is when any of its fields
        is not a number; an all-numeric first row is read as data.

    Returns
    -------
    X : (n, d) float64
    y : (n,) targets; integer labels when they are all integers
    """
    if header is not None and not str(name_or_path).lower().endswith(".csv"):
        raise ValueError(f"header applies to .csv files, not to {str(name_or_path)!r}")
    key = str(name_or_path)
    if key == "blobs":
        X, y = blobs()
    elif key == "line":
        X, y = line()
    elif key in SKLEARN_DATASETS:
        X, y = _load_sklearn(key)
    else:
        path = Path(key)
        if path.suffix.lower() not in (".csv", ".npz"):
            names = ", ".join(("blobs", "line", *SKLEARN_DATASETS))
            raise ValueError(f"unknown data set {key!r}: give one of {names} or a .csv/.npz path")
        if not path.is_file():
            raise FileNotFoundError(f"data file {key!r} does not exist")
        X, y = _load_csv(path, header) if path.suffix.lower() == ".csv" else _load_npz(path)
    X = as_float_array(X, "X", 2)
    y = np.asarray(y)
    if y.shape[:1] != (X.shape[0],):
        raise ValueError(f"y has {y.shape[0] if y.ndim else 0} entries, X has {X.shape[0]} rows")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if standardize_features:
        X = standardize(X)
    return X, y
