"""Export and import of landscapes: CSV for gnuplot, NPZ, HDF5 (loss-landscape layout), VTK.

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
VTK (``save_vtk``, needs the ``vtk`` extra: ``pip install fastscape[vtk]``, i.e. meshio)
    For ParaView: the grid as quadrilaterals with points ``(alpha, beta, loss)`` (or
    ``log10(loss)``) and the loss and accuracy as point data; ``.vtk`` (legacy, binary) or
    ``.vtu`` (XML). Write-only here: meshio (or VTK itself) reads it back.
Parameters (``save_theta`` / ``load_theta``)
    An NPZ with ``theta`` (P,) and ``model``, the JSON of ``MLP.to_dict()`` (sizes, activation,
    loss), so a file says which model it belongs to. Files holding only ``theta`` (or the
    layers as ``W0, b0, W1, ...``) load when a model is given.

Reading errors
    Every reader ends in one :class:`FileFormatError` (a ``ValueError``) whose one-line
    message starts with the file's path and says what is wrong: a truncated or corrupt
    archive, a missing array, arrays of inconsistent shapes, a file of another kind.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._files import FileFormatError, atomic_write
from .landscape import Slice, Surface
from .models import MLP

_VERSION = 1


# what the readers of NumPy, zip, zlib, JSON and h5py raise on a damaged or foreign file
_READ_ERRORS = (
    OSError, EOFError, KeyError, IndexError, ValueError, TypeError, zipfile.BadZipFile,
    zlib.error, UnicodeDecodeError,
)  # fmt: skip


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        # numpy's NpzFile says "'name is not a file in the archive'"
        key = str(exc.args[0]).removesuffix(" is not a file in the archive") if exc.args else ""
        return f"missing {key!r}" if key else "a missing entry"
    if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError)):
        return f"truncated or corrupt archive ({exc})"
    if isinstance(exc, json.JSONDecodeError):
        return f"corrupt JSON ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _guarded(path: Path, what: str, read: Callable[[], object]):
    """Run ``read()``; any reading error becomes one FileFormatError naming the file."""
    try:
        return read()
    except FileFormatError:
        raise
    except _READ_ERRORS as exc:
        raise FileFormatError(path, f"cannot read it as {what}: {_describe(exc)}") from None


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
    if isinstance(meta, dict) and meta.get("type") == "slices":
        raise ValueError("it holds several slices: read it with load_slices")
    if not isinstance(meta, dict) or meta.get("type") not in ("surface", "slice"):
        raise ValueError("its metadata names no surface or slice")
    dirs = meta.get("directions") or [{}]
    settings = meta.get("settings", {})
    if meta["type"] == "surface":
        if betas is None:
            raise ValueError("a surface without beta coordinates")
        return Surface(np.asarray(alphas, float), np.asarray(betas, float),
                       np.asarray(loss, float), acc, tuple(dirs), settings)  # fmt: skip
    return Slice(np.asarray(alphas, float), np.asarray(loss, float), acc, dirs[0], settings)


def _check_shapes(path: Path, result: Surface | Slice) -> Surface | Slice:
    """The arrays of a loaded result must agree with each other."""
    if isinstance(result, Surface):
        want = (result.alphas.size, result.betas.size)
        axes = "(alphas, betas)"
        if result.alphas.ndim != 1 or result.betas.ndim != 1:
            raise FileFormatError(path, "coordinates are not 1-D arrays")
    else:
        want = (result.alphas.size,)
        axes = "(alphas,)"
        if result.alphas.ndim != 1:
            raise FileFormatError(path, "coordinates are not a 1-D array")
    if result.loss.shape != want:
        raise FileFormatError(
            path, f"loss has shape {result.loss.shape}, the coordinates {axes} give {want}"
        )
    if result.accuracy is not None and np.shape(result.accuracy) != want:
        raise FileFormatError(
            path, f"accuracy has shape {np.shape(result.accuracy)}, the loss has {want}"
        )
    return result


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
        raise FileFormatError(path, "no '# meta:' line: not a fastscape CSV")
    if meta.get("type") == "slices":
        raise FileFormatError(path, "it holds several slices: read it with load_slices")
    data = np.loadtxt(path, ndmin=2)
    acc = None
    expected = int(np.prod(meta["shape"])) if "shape" in meta else -1
    width = 2 + (meta["type"] == "surface") + bool(meta.get("has_accuracy"))
    if data.shape != (expected, width):
        raise FileFormatError(
            path,
            f"{data.shape[0]} rows of {data.shape[1]} columns, its metadata says "
            f"{expected} rows of {width} (truncated or edited?)",
        )
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
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
        if "meta" not in z.files and "theta" in z.files:
            raise FileFormatError(
                path, "holds model parameters (theta), not a landscape; read it with load_theta"
            )
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
        for key in ("xcoordinates", "train_loss"):
            if key not in f:
                raise FileFormatError(path, f"no dataset {key!r}: not a loss-landscape file")
        x = np.array(f["xcoordinates"][:])
        y = np.array(f["ycoordinates"][:]) if "ycoordinates" in f else None
        loss = np.array(f["train_loss"][:])
        acc = np.array(f["train_acc"][:]) / 100.0 if "train_acc" in f else None
        if "fastscape_meta" in f.attrs:
            meta = json.loads(f.attrs["fastscape_meta"])
        else:  # a file written by loss-landscape itself
            meta = {"type": "surface" if y is not None else "slice"}
    if y is not None:
        if loss.shape != (y.size, x.size):
            raise FileFormatError(
                path,
                f"train_loss has shape {loss.shape}, expected (len(ycoordinates), "
                f"len(xcoordinates)) = ({y.size}, {x.size})",
            )
        loss = loss.T
        acc = None if acc is None else acc.T
    return _from_meta(meta, x, y, loss, acc)


# ----------------------------------------------------------------------------- VTK
VTK_SUFFIXES = {".vtk": "vtk", ".vtu": "vtu"}


def _meshio():
    try:
        import meshio
    except ImportError:
        raise ImportError(
            "VTK export needs meshio: pip install 'fastscape[vtk]' (or pip install meshio)"
        ) from None
    return meshio


def vtk_mesh(surface: Surface, log: bool = False):
    """The surface as a quadrilateral mesh with its values on the points (see :func:`save_vtk`).

    Parameters
    ----------
    surface : Surface
        At least 2 coordinates on each axis.
    log : bool
        Height z = log10(loss) instead of the loss.

    Returns
    -------
    points : (a * b, 3) array
        ``(alphas[i], betas[j], z[i, j])`` at row ``i * b + j``.
    quads : ((a - 1) * (b - 1), 4) int64 array
        The grid cells, corners counter-clockwise in the (alpha, beta) plane.
    point_data : dict of str to (a * b,) arrays
        ``loss``, ``accuracy`` (when the surface has it) and, with ``log``, ``log10_loss``.
    """
    if not isinstance(surface, Surface):
        raise TypeError(f"surface must be a Surface, got {type(surface).__name__}")
    a, b = surface.loss.shape
    if a < 2 or b < 2:
        raise ValueError(f"surface needs at least 2 x 2 points for VTK cells, got {a} x {b}")
    loss = np.asarray(surface.loss, dtype=np.float64)
    finite = np.isfinite(loss)
    if not finite.any():
        raise ValueError("surface has no finite loss value to draw")
    data = {"loss": loss.ravel()}
    if surface.accuracy is not None:
        data["accuracy"] = np.asarray(surface.accuracy, dtype=np.float64).ravel()
    z = loss.copy()
    if log:
        positive = finite & (loss > 0)
        if not positive.any():
            raise ValueError("log needs a positive loss somewhere on the surface")
        # a zero loss sits at the lowest positive one: log10(0) has no place on the axis
        z = np.log10(np.where(positive, loss, loss[positive].min()))
        data["log10_loss"] = np.where(finite, z, np.nan).ravel()
    # a non-finite loss (a diverging point) is drawn at the top of the finite ones; the point
    # data keep the true value
    z = np.where(finite, z, z[finite].max())
    A, B = np.meshgrid(surface.alphas, surface.betas, indexing="ij")
    points = np.column_stack([A.ravel(), B.ravel(), z.ravel()])
    idx = np.arange(a * b, dtype=np.int64).reshape(a, b)
    quads = np.column_stack([
        idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    ])  # fmt: skip
    return points, quads, data


def save_vtk(surface: Surface, path: str | os.PathLike, *, log: bool = False) -> Path:
    """Write a surface for ParaView (or any VTK reader), through meshio (the ``vtk`` extra).

    The grid becomes a mesh of quadrilaterals whose points are ``(alpha, beta, z)``, z the
    loss (or log10 of it), carrying the loss and the accuracy as point data. Colour the
    surface by ``loss`` in ParaView; "Warp By Scalar" is not needed, the height is already z.

    Parameters
    ----------
    surface : Surface
        At least 2 coordinates on each axis. A non-finite loss is drawn at the height of the
        largest finite one (its point data keep the true value).
    path : str or PathLike
        ``.vtk``: legacy VTK file, binary (file version 5.1, which ParaView 5.9 and later
        read); ``.vtu``: VTK XML unstructured grid, binary and compressed (any ParaView).
    log : bool
        Height z = log10(loss) (zero losses at the lowest positive one), and a
        ``log10_loss`` point array.

    Returns
    -------
    Path
    """
    suffix = Path(path).suffix.lower()
    if suffix not in VTK_SUFFIXES:
        raise ValueError(f"path must end in .vtk or .vtu, got {str(path)!r}")
    points, quads, data = vtk_mesh(surface, log=log)
    meshio = _meshio()
    mesh = meshio.Mesh(points, [("quad", quads)], point_data=data)
    fmt = VTK_SUFFIXES[suffix]

    def write(p):
        meshio.write(p, mesh, file_format=fmt, binary=True)

    return atomic_write(path, write, suffix=suffix)


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

    Raises
    ------
    FileNotFoundError
        No such file.
    FileFormatError
        The file cannot be read as a landscape: the one-line message starts with its path
        and says what is wrong (truncated or corrupt archive, missing arrays, inconsistent
        shapes, parameters instead of a landscape, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".dat", ".txt"):
        reader, what = _load_csv, "a fastscape CSV"
    elif suffix == ".npz":
        reader, what = _load_npz, "a fastscape NPZ"
    elif suffix in (".h5", ".hdf5"):
        _h5py()  # a missing h5py is an ImportError, not a damaged file
        reader, what = _load_hdf5, "a loss-landscape HDF5 file"
    else:
        raise FileFormatError(
            path, f"unknown landscape file suffix {suffix!r}; expected .csv, .npz or .h5"
        )
    return _check_shapes(path, _guarded(path, what, lambda: reader(path)))


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


# ----------------------------------------------------------------------------- parameters
def save_theta(path: str | os.PathLike, model: MLP, theta) -> Path:
    """Write parameters with their model's description, atomically.

    Parameters
    ----------
    path : str or PathLike
        The ``.npz`` file.
    model : MLP
    theta : (P,) array
        Parameters of ``model``.

    Returns
    -------
    Path
        The written file: arrays ``theta`` (P,) and ``model`` (the JSON of
        ``model.to_dict()``), readable with ``numpy.load`` without pickle.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    theta = model.check_theta(theta)
    spec = np.array(json.dumps(model.to_dict()))

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, theta=theta, model=spec)

    return atomic_write(path, write, suffix=".npz")


def _spec_from_file(z) -> dict | None:
    """The model description stored in a theta file: ours, the CLI's older layout, or none."""
    if "model" in z.files:
        spec = json.loads(str(z["model"]))
        if not isinstance(spec, dict) or "sizes" not in spec:
            raise ValueError("its 'model' entry is not a model description")
        return spec
    if "sizes" in z.files:  # written by earlier versions of the command line
        spec = {"sizes": [int(s) for s in np.asarray(z["sizes"]).ravel()]}
        for key in ("activation", "loss"):
            if key in z.files:
                spec[key] = str(z[key])
        return spec
    return None


def _mismatch(path: Path, stored: MLP, given: MLP) -> FileFormatError:
    parts = []
    if stored.sizes != given.sizes:
        diff = (
            [f"layer {k}: {a} vs {b}"
             for k, (a, b) in enumerate(zip(stored.sizes, given.sizes)) if a != b]
            if len(stored.sizes) == len(given.sizes)
            else [f"{len(stored.sizes)} vs {len(given.sizes)} layers"]
        )  # fmt: skip
        parts.append(
            f"sizes {list(stored.sizes)} in the file, {list(given.sizes)} in the model "
            f"({'; '.join(diff)})"
        )
    if not stored.is_linear and stored.activation != given.activation:
        parts.append(f"activation {stored.activation!r} in the file, {given.activation!r} given")
    if stored.loss_name != given.loss_name:
        parts.append(f"loss {stored.loss_name!r} in the file, {given.loss_name!r} given")
    return FileFormatError(path, "the parameters belong to another model: " + ", ".join(parts))


def load_theta(path: str | os.PathLike, model: MLP | None = None) -> tuple[MLP, np.ndarray]:
    """Read parameters written by :func:`save_theta` (or an older parameter file).

    Parameters
    ----------
    path : str or PathLike
        An ``.npz`` with ``theta`` (and, from :func:`save_theta`, the model's description), or
        with the layers as ``W0, b0, W1, b1, ...`` (then ``model`` is needed).
    model : MLP, optional
        The model the parameters are for. With a description in the file, the two must agree
        (the error says which sizes, activation or loss differ); without one, ``model`` is
        required and the length of theta is checked against it.

    Returns
    -------
    model : MLP
        The given model, or the one the file describes.
    theta : (P,) float64 array

    Raises
    ------
    FileNotFoundError
    FileFormatError
        Unreadable file, no parameters, no model description and no ``model``, a model that
        differs from the file's, or parameters of the wrong length; one line naming the file.
    """
    if model is not None and not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP or None, got {type(model).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")

    def read():
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            spec = _spec_from_file(z)
            if "theta" in z.files:
                return spec, np.array(z["theta"]), None
            if "W0" in z.files:
                n = sum(1 for k in z.files if k.startswith("W"))
                return spec, None, [(np.array(z[f"W{i}"]), np.array(z[f"b{i}"])) for i in range(n)]
            if "meta" in z.files and "loss" in z.files:
                raise FileFormatError(path, "holds a landscape, not parameters; read it with load")
            names = ", ".join(z.files) or "none"
            raise FileFormatError(path, f"no array 'theta' (arrays: {names})")

    spec, theta, layers = _guarded(path, "a parameter file (.npz)", read)
    stored = None
    if spec is not None:
        try:
            stored = MLP(**spec)
        except (TypeError, ValueError) as exc:
            raise FileFormatError(path, f"its model description is invalid ({exc})") from None
    if model is None:
        if stored is None:
            raise FileFormatError(
                path, "holds parameters without a model description; pass the model "
                "(e.g. load_theta(path, MLP(sizes, activation, loss)))"
            )  # fmt: skip
        model = stored
    elif stored is not None and stored != model:
        raise _mismatch(path, stored, model)
    try:
        if layers is not None:
            return model, model.flatten(layers)
        return model, model.check_theta(theta, "theta").copy()
    except ValueError as exc:
        raise FileFormatError(path, f"parameters do not fit {model!r}: {exc}") from None


# ----------------------------------------------------------------------------- several slices
def save_slices(slices, path: str | os.PathLike) -> Path:
    """Write several slices sharing their coordinates (e.g. along d1 and d2) in one file.

    Parameters
    ----------
    slices : mapping of str to Slice, or sequence of Slice
        Named slices (a sequence is named ``d1, d2, ...``), all on the same ``alphas``.
    path : str or PathLike
        ``.csv``: comment lines (title, ``# meta: {json}``, column names) then one row per
        coordinate, ``alpha loss_<name> [accuracy_<name>] ...``; gnuplot plots the second
        slice with ``plot 'file' using 1:4`` when there is accuracy, ``1:3`` without.
        ``.npz``: ``alphas``, ``loss_<name>``, ``accuracy_<name>`` and ``meta``.

    Returns
    -------
    Path
    """
    if isinstance(slices, Slice):
        raise TypeError("slices must be several slices (a mapping or a sequence); use save_csv")
    items = dict(slices) if hasattr(slices, "keys") else {
        f"d{k + 1}": s for k, s in enumerate(slices)
    }  # fmt: skip
    if not items:
        raise ValueError("slices is empty")
    for name, sl in items.items():
        if not isinstance(sl, Slice):
            raise TypeError(f"slices[{name!r}] must be a Slice, got {type(sl).__name__}")
        if not str(name).isidentifier():
            raise ValueError(f"slice name {name!r} must be a word (letters, digits, _)")
    first = next(iter(items.values()))
    for name, sl in items.items():
        if not np.array_equal(sl.alphas, first.alphas):
            raise ValueError(f"slices[{name!r}] has other coordinates than the first slice")
    meta = {
        "type": "slices", "version": _VERSION, "names": list(items),
        "directions": [sl.direction for sl in items.values()],
        "settings": [sl.settings for sl in items.values()],
        "has_accuracy": [sl.accuracy is not None for sl in items.values()],
    }  # fmt: skip
    columns = {"alphas": first.alphas}
    for name, sl in items.items():
        columns[f"loss_{name}"] = sl.loss
        if sl.accuracy is not None:
            columns[f"accuracy_{name}"] = sl.accuracy
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":

        def write(p):
            with open(p, "wb") as fh:
                np.savez(fh, meta=np.array(_json(meta)), **columns)

        return atomic_write(path, write, suffix=".npz")
    if suffix not in (".csv", ".dat", ".txt"):
        raise ValueError(f"path must end in .csv or .npz, got {suffix!r}")
    names = ["alpha", *list(columns)[1:]]
    table = np.column_stack(list(columns.values()))
    lines = ["# fastscape slices", f"# meta: {_json(meta)}", f"# columns: {' '.join(names)}"]
    lines += [" ".join(repr(float(v)) for v in row) for row in table]
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda p: Path(p).write_text(text), suffix=".csv")


def load_slices(path: str | os.PathLike) -> dict[str, Slice]:
    """Read a file written by :func:`save_slices`.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    dict of str to Slice
        The slices by name, in the saved order.

    Raises
    ------
    FileNotFoundError
    FileFormatError
        One line naming the file and what is wrong.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")

    def read():
        if path.suffix.lower() == ".npz":
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                columns = {k: np.array(z[k]) for k in z.files if k != "meta"}
        else:
            meta = None
            with open(path) as fh:
                for line in fh:
                    if not line.startswith("#"):
                        break
                    if line.startswith("# meta: "):
                        meta = json.loads(line[len("# meta: ") :])
            if meta is None:
                raise FileFormatError(path, "no '# meta:' line: not a fastscape slices file")
            data = np.loadtxt(path, ndmin=2)
            keys = ["alphas"]
            for name, has_acc in zip(meta["names"], meta["has_accuracy"]):
                keys += [f"loss_{name}"] + ([f"accuracy_{name}"] if has_acc else [])
            if data.shape[1] != len(keys):
                raise FileFormatError(
                    path, f"{data.shape[1]} columns, its metadata names {len(keys)}"
                )
            columns = {k: data[:, i].copy() for i, k in enumerate(keys)}
        if meta.get("type") != "slices":
            raise FileFormatError(path, "not a slices file (read a single result with load)")
        alphas = columns["alphas"]
        out = {}
        for k, name in enumerate(meta["names"]):
            acc = columns[f"accuracy_{name}"] if meta["has_accuracy"][k] else None
            sl = Slice(alphas, columns[f"loss_{name}"], acc, meta["directions"][k],
                       meta["settings"][k])  # fmt: skip
            out[name] = _check_shapes(path, sl)
        return out

    return _guarded(path, "a fastscape slices file", read)
