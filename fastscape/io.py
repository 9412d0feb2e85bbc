"""Export and import of landscapes: CSV for gnuplot, NPZ, HDF5 (loss-landscape layout).

Every write is atomic: the file is written to a temporary name in the same directory and then
renamed over the destination (``os.replace``), so an interrupted export never leaves a half
file in place of a good one.

Formats
-------
CSV (``save_csv``)
    ``#`` comment lines first: a title, ``# meta: {json}`` with the coordinates' counts, the
    directions and the settings, and the column names. Then one row per point: ``alpha beta
    loss [accuracy]`` for a surface, ``alpha loss [accuracy]`` for a slice. The surface is
    written in scan lines of constant alpha separated by one blank line, the layout gnuplot's
    ``splot 'file' using 1:2:3 with pm3d`` reads as is. ``numpy.loadtxt`` reads it too (comments
    and blank lines skipped): a surface gives an (a * b, 3 or 4) array, rows alpha-major.
NPZ (``save_npz``)
    Plain arrays (``alphas``, ``betas``, ``loss``, ``accuracy``) and the metadata as a JSON
    string array: ``numpy.load(path)`` reads it with the default ``allow_pickle=False``.
HDF5 (``save_hdf5``, needs the ``hdf5`` extra: ``pip install fastscape[hdf5]``)
    The layout of loss-landscape's surface files (Li et al.): ``xcoordinates`` (a,),
    ``ycoordinates`` (b,), ``train_loss`` and ``train_acc``. For a surface, ``train_loss`` is
    stored as (b, a) with ``train_loss[j, i]`` at ``(xcoordinates[i], ycoordinates[j])``: the
    orientation their ``plot_2D`` expects (``X, Y = meshgrid(x, y)``; ``contour(X, Y, Z)``), on
    non-square grids too. Accuracy is stored in percent as they do; missing accuracy (MSE) is
    simply absent. Our metadata is kept in the ``fastscape_meta`` attribute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .landscape import Slice, Surface, atomic_write

_VERSION = 1


def _meta(obj) -> dict:
    if isinstance(obj, Surface):
        return {
            "type": "surface", "version": _VERSION, "shape": list(obj.loss.shape),
            "directions": list(obj.directions), "settings": obj.settings,
            "has_accuracy": obj.accuracy is not None,
        }  # fmt: skip
    if isinstance(obj, Slice):
        return {
            "type": "slice", "version": _VERSION, "shape": list(obj.loss.shape),
            "directions": [obj.direction], "settings": obj.settings,
            "has_accuracy": obj.accuracy is not None,
        }  # fmt: skip
    raise TypeError(f"expected a Surface or a Slice, got {type(obj).__name__}")


def _json(meta: dict) -> str:
    return json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def _from_meta(meta: dict, alphas, betas, loss, acc):
    dirs = meta.get("directions") or [{}]
    settings = meta.get("settings", {})
    if meta["type"] == "surface":
        return Surface(alphas, betas, loss, acc, tuple(dirs), settings)
    return Slice(alphas, loss, acc, dirs[0], settings)


# ----------------------------------------------------------------------------- CSV
def save_csv(result: Surface | Slice, path: str | os.PathLike) -> Path:
    """Write a surface or slice as CSV in the format gnuplot's pm3d reads (see module doc).

    Parameters
    ----------
    result : Surface or Slice
    path : str or PathLike

    Returns
    -------
    Path
        The written file.
    """
    meta = _meta(result)
    acc = result.accuracy
    lines = [
        f"# fastscape {meta['type']}",
        f"# meta: {_json(meta)}",
    ]
    if isinstance(result, Surface):
        cols = "alpha beta loss" + (" accuracy" if acc is not None else "")
        lines.append(f"# columns: {cols}")
        for i, a in enumerate(result.alphas):
            for j, b in enumerate(result.betas):
                row = [a, b, result.loss[i, j]] + ([acc[i, j]] if acc is not None else [])
                lines.append(" ".join(repr(float(v)) for v in row))
            lines.append("")
    else:
        cols = "alpha loss" + (" accuracy" if acc is not None else "")
        lines.append(f"# columns: {cols}")
        for i, a in enumerate(result.alphas):
            row = [a, result.loss[i]] + ([acc[i]] if acc is not None else [])
            lines.append(" ".join(repr(float(v)) for v in row))
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda p: Path(p).write_text(text), suffix=".csv")


def _load_csv(path: Path):
    meta = None
    with open(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            if line.startswith("# meta: "):
                meta = json.loads(line[len("# meta: ") :])
    if meta is None:
        raise ValueError(f"{path} has no '# meta:' line: not a fastscape CSV")
    data = np.loadtxt(path, ndmin=2)
    acc = None
    if meta["type"] == "surface":
        na, nb = meta["shape"]
        alphas = data[::nb, 0].copy()
        betas = data[:nb, 1].copy()
        loss = data[:, 2].reshape(na, nb)
        if meta["has_accuracy"]:
            acc = data[:, 3].reshape(na, nb)
        return _from_meta(meta, alphas, betas, loss, acc)
    alphas = data[:, 0].copy()
    if meta["has_accuracy"]:
        acc = data[:, 2].copy()
    return _from_meta(meta, alphas, None, data[:, 1].copy(), acc)


# ----------------------------------------------------------------------------- NPZ
def save_npz(result: Surface | Slice, path: str | os.PathLike) -> Path:
    """Write a surface or slice as ``.npz`` (plain arrays; loading needs no pickle).

    Parameters
    ----------
    result : Surface or Slice
    path : str or PathLike

    Returns
    -------
    Path
    """
    meta = _meta(result)
    arrays = {"alphas": result.alphas, "loss": result.loss, "meta": np.array(_json(meta))}
    if isinstance(result, Surface):
        arrays["betas"] = result.betas
    if result.accuracy is not None:
        arrays["accuracy"] = result.accuracy

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, write, suffix=".npz")


def _load_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        betas = z["betas"] if "betas" in z.files else None
        acc = z["accuracy"] if "accuracy" in z.files else None
        return _from_meta(meta, z["alphas"], betas, z["loss"], acc)


# ----------------------------------------------------------------------------- HDF5
def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "HDF5 export needs h5py: pip install 'fastscape[hdf5]' (or pip install h5py)"
        ) from None
    return h5py


def save_hdf5(result: Surface | Slice, path: str | os.PathLike) -> Path:
    """Write a surface or slice in loss-landscape's HDF5 layout (see module doc).

    Parameters
    ----------
    result : Surface or Slice
    path : str or PathLike

    Returns
    -------
    Path
    """
    h5py = _h5py()
    meta = _meta(result)

    def write(p):
        with h5py.File(p, "w") as f:
            f["xcoordinates"] = result.alphas
            if isinstance(result, Surface):
                f["ycoordinates"] = result.betas
                f["train_loss"] = result.loss.T
                if result.accuracy is not None:
                    f["train_acc"] = 100.0 * result.accuracy.T
            else:
                f["train_loss"] = result.loss
                if result.accuracy is not None:
                    f["train_acc"] = 100.0 * result.accuracy
            f.attrs["fastscape_meta"] = _json(meta)

    return atomic_write(path, write, suffix=".h5")


def _load_hdf5(path: Path):
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        x = np.array(f["xcoordinates"][:])
        y = np.array(f["ycoordinates"][:]) if "ycoordinates" in f else None
        loss = np.array(f["train_loss"][:])
        acc = np.array(f["train_acc"][:]) / 100.0 if "train_acc" in f else None
        if "fastscape_meta" in f.attrs:
            meta = json.loads(f.attrs["fastscape_meta"])
        else:  # a file written by loss-landscape itself
            meta = {"type": "surface" if y is not None else "slice"}
    if y is not None:
        loss = loss.T
        acc = None if acc is None else acc.T
    return _from_meta(meta, x, y, loss, acc)


# ----------------------------------------------------------------------------- load / gnuplot
def load(path: str | os.PathLike) -> Surface | Slice:
    """Read a file written by :func:`save_csv`, :func:`save_npz` or :func:`save_hdf5`.

    The format is chosen by the suffix (``.csv``/``.dat``/``.txt``, ``.npz``,
    ``.h5``/``.hdf5``).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    Surface or Slice
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".dat", ".txt"):
        return _load_csv(path)
    if suffix == ".npz":
        return _load_npz(path)
    if suffix in (".h5", ".hdf5"):
        return _load_hdf5(path)
    raise ValueError(f"unknown landscape file suffix {suffix!r}; expected .csv, .npz or .h5")


def write_gnuplot(
    surface: Surface,
    path: str | os.PathLike,
    *,
    data_path: str | os.PathLike | None = None,
    output: str | None = None,
    terminal: str = "pngcairo size 900,700",
    log: bool = False,
) -> Path:
    """Write a ready gnuplot script drawing a surface with pm3d (and its CSV beside it).

    Run it with ``gnuplot path``.

    Parameters
    ----------
    surface : Surface
    path : str or PathLike
        The ``.gp`` script.
    data_path : str or PathLike, optional
        Where the CSV is written (default: the script's name with ``.csv``). Referenced
        relative to the script's directory when it is inside it.
    output : str, optional
        Image file the script writes (default: the script's name with ``.png``); None with
        ``terminal="dumb"`` prints to the terminal instead.
    terminal : str
        gnuplot terminal line (``"pngcairo size 900,700"``, ``"png"``, ``"svg"``, ``"dumb"``).
    log : bool
        Logarithmic z axis and colour scale.

    Returns
    -------
    Path
        The script.
    """
    if not isinstance(surface, Surface):
        raise TypeError(f"surface must be a Surface, got {type(surface).__name__}")
    path = Path(path)
    data = Path(data_path) if data_path is not None else path.with_suffix(".csv")
    save_csv(surface, data)
    try:
        ref = data.resolve().relative_to(path.resolve().parent)
    except ValueError:
        ref = data.resolve()
    if output is None and not terminal.startswith("dumb"):
        output = path.with_suffix(".png").name
    d1 = surface.directions[0] if surface.directions else {}
    lines = [
        "# gnuplot script written by fastscape: gnuplot " + path.name,
        f"set terminal {terminal}",
    ]
    if output is not None:
        lines.append(f"set output '{output}'")
    lines += [
        f"set title 'loss landscape ({d1.get('norm') or 'unnormalized'} directions)'",
        "set xlabel 'alpha'",
        "set ylabel 'beta'",
        "set zlabel 'loss' rotate",
        "set pm3d at s",
        "set palette rgb 33,13,10",
        "set view 60,30",
        "set key off",
    ]
    if log:
        lines += ["set logscale z", "set logscale cb"]
    lines.append(f"splot '{ref}' using 1:2:3 with pm3d")
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda p: Path(p).write_text(text), suffix=".gp")
