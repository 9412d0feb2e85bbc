"""The ``fastscape`` command: a complete picture of a model's loss landscape in one command.

Subcommands: ``landscape`` (the main job), ``hessian``, ``connect``, ``eos`` and ``plot``.
Run ``fastscape SUBCOMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__

EPILOG = """\
examples:
  fastscape landscape             # two blobs, a small tanh MLP, results in ./fastscape-out
  fastscape landscape --data digits --model mlp --hidden 32 --points 41 --out digits-out
  fastscape landscape --data breast_cancer --model logistic --test-fraction 0.3
  fastscape hessian --data iris --model mlp --hidden 8 --top 5
  fastscape connect --data blobs --hidden 16
  fastscape eos --lr 0.05 --steps 600
  fastscape plot fastscape-out/surface.npz

Every subcommand exits with status 2 and a one-line message on bad arguments, unreadable
files or non-finite data. Set FASTSCAPE_DEBUG=1 to see the full traceback instead.
"""

OUTPUTS = (
    "surface.csv", "surface.npz", "surface.h5", "slice.csv", "surface.gp", "report.json",
    "contour.png", "surface3d.png", "slices.png", "spectrum.png", "surface_test.csv",
    "surface_test.npz", "theta.npz",
)  # fmt: skip


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default once: unless its help already says it, or it is unset."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " [default: %(default)s]"


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- argument types
def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI (e.g. -1:1), got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"need finite LO < HI, got {text!r}")
    return lo, hi


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "0", "none"):
        return ()
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 32,32, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, got {text!r}")
    return sizes


# ----------------------------------------------------------------------------- shared steps
def _add_data_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument(
        "--data", default="blobs",
        help="blobs, line, digits, breast_cancer, iris, wine, or a .csv/.npz file "
        "(CSV: last column = target; NPZ: arrays X and y) [default: blobs]",
    )  # fmt: skip
    g.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="keep the features as they are (default: standardize each column)",
    )
    g.add_argument(
        "--model",
        choices=("mlp", "logistic", "linear"),
        default="mlp",
        help="mlp (softmax-CE for labels, MSE for real targets), logistic "
        "(binary labels) or linear (least squares) [default: mlp]",
    )
    g.add_argument(
        "--hidden",
        type=_hidden,
        default=(16,),
        help="hidden layer sizes of the MLP, e.g. 32,32 [default: 16]",
    )
    g.add_argument(
        "--activation",
        choices=("tanh", "relu", "sigmoid", "identity"),
        default="tanh",
        help="hidden activation [default: tanh]",
    )
    t = p.add_argument_group("training")
    t.add_argument(
        "--method",
        choices=("gd", "momentum", "adam", "newton", "sam"),
        default=None,
        help="optimizer [default: newton for logistic/linear, adam for mlp]",
    )
    t.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate [default: 0.05 adam, 0.5 gd/momentum/sam]",
    )
    t.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="training steps [default: 300, 50 for newton]",
    )
    t.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="minibatch size [default: full batch]",
    )
    t.add_argument("--seed", type=int, default=0, help="seed of everything random [default: 0]")
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="Numba threads [default: all cores]"
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the model is evaluated: the grids of landscape, the gradients and "
        "Hessian-vector products of hessian and eos (training and exact Hessians of small "
        "models stay on the CPU) [default: cpu]",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars, no summary")


def _load(args) -> tuple[np.ndarray, np.ndarray]:
    from . import datasets

    X, y = datasets.load(args.data, standardize_features=args.standardize)
    return X, y


def _build_model(args, X: np.ndarray, y: np.ndarray):
    """The model the options ask for, and the targets recoded for its loss."""
    from .models import MLP, LinearRegression, Logistic

    d = X.shape[1]
    integer_labels = y.dtype.kind in "iub"
    if args.model == "linear":
        return LinearRegression(d), y.astype(np.float64), None
    if not integer_labels:
        if args.model == "logistic":
            raise CLIError(f"--model logistic needs integer class labels; {args.data} has real "
                           "targets (use --model linear or mlp)")  # fmt: skip
        return MLP([d, *args.hidden, 1], activation=args.activation, loss="mse"), y, None
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise CLIError(f"the data {args.data!r} has a single class: nothing to classify")
    if args.model == "logistic":
        if classes.size != 2:
            raise CLIError(f"--model logistic needs 2 classes, {args.data!r} has {classes.size} "
                           "(use --model mlp)")  # fmt: skip
        return Logistic(d), codes, classes
    return MLP([d, *args.hidden, classes.size], activation=args.activation), codes, classes


def _fit(args, model, X, y):
    from .training import fit

    method = args.method or ("newton" if model.is_linear and model.loss_name != "softmax_ce"
                             else "adam")  # fmt: skip
    lr = args.lr or (0.05 if method == "adam" else 0.5)
    steps = args.steps or (50 if method == "newton" else 300)
    return fit(model, X, y, method=method, lr=lr, steps=steps, seed=args.seed,
               batch_size=args.batch_size, record_every=max(1, steps // 50), gtol=1e-8)  # fmt: skip


def _split(X, y, fraction: float | None, seed: int):
    if not fraction:
        return X, y, None, None
    n = X.shape[0]
    n_test = round(fraction * n)
    if n_test < 1 or n - n_test < 2:
        raise CLIError(f"--test-fraction {fraction} leaves no test or no training samples")
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]


def _prepare_out(path: Path, overwrite: bool, names: Sequence[str]) -> Path:
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {path} exists and is not a directory")
    existing = [n for n in names if (path / n).exists()]
    if existing and not overwrite:
        raise CLIError(
            f"{path} already holds results ({', '.join(existing[:3])}"
            f"{'...' if len(existing) > 3 else ''}); "
            "pass --overwrite to replace them or choose another --out"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _versions() -> dict:
    import numba
    import scipy

    return {
        "fastscape": __version__, "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "platform": platform.platform(),
    }  # fmt: skip


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else str(value)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_json(path: Path, payload: dict) -> None:
    from .landscape import atomic_write

    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _save_theta(path: Path, model, theta: np.ndarray) -> None:
    """Parameters and model description, loadable by ``fastscape hessian --theta``."""
    from .landscape import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, theta=theta, sizes=np.array(model.sizes),
                     activation=model.activation, loss=model.loss_name)  # fmt: skip

    atomic_write(path, write, suffix=".npz")


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from .landscape import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), suffix=".png")
    plt.close(fig)


def _summary(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k.ljust(width)}   {v}" for k, v in rows), line])


def _grid(args, axis: str, auto: np.ndarray | None = None) -> np.ndarray:
    """Grid coordinates of one axis: its own range, else --range, else ``auto`` (the span of
    the trajectory's projection with a margin, for PCA directions), else [-1, 1]."""
    rng = getattr(args, f"range_{axis}") or args.range
    if rng is None and auto is not None and np.ptp(auto) > 0:
        lo, hi = min(auto.min(), 0.0), max(auto.max(), 0.0)
        pad = 0.25 * (hi - lo)
        rng = (lo - pad, hi + pad)
    lo, hi = rng or (-1.0, 1.0)
    n = getattr(args, f"points_{axis}") or args.points
    return np.linspace(lo, hi, n)


# ----------------------------------------------------------------------------- landscape
def _curvature(
    model, theta, data, k: int, seed: int, grad_tol: float = 1e-5, *,
    exact_max_params: int = 2000, device: str = "cpu",
) -> dict:  # fmt: skip
    """Top/bottom eigenvalues, trace, density and classification.

    Small models (P <= ``exact_max_params``): one exact Hessian serves everything (formed on
    the CPU whatever the device). Larger ones: Lanczos at both ends of the spectrum, Hutch++
    for the trace, stochastic Lanczos quadrature, their HVPs on ``device`` (with "cuda" the
    data are copied to the GPU once for all of them).
    """
    from . import _device
    from .critical import classify
    from .curvature import exact_density, hessian_trace, spectral_density, top_eigen

    if _device.resolve_device(device) == "cuda":
        data = _device.to_device(data)
    grad_norm = float(np.linalg.norm(model.grad(theta, data, device=device)[1]))
    k = min(k, model.n_params - 1)
    if model.n_params <= exact_max_params:
        H = model.hessian(theta, data)
        vals = np.linalg.eigvalsh(H)
        out = {"top": vals[::-1][:k], "bottom": vals[:k], "trace": float(vals.sum()),
               "trace_std_error": 0.0, "method": "exact", "density": exact_density(vals),
               "classification": classify(H)}  # fmt: skip
    else:
        kw = {"seed": seed, "device": device}
        top = top_eigen(model, theta, data, k=k, method="lanczos", which="LA", **kw)
        bottom = top_eigen(model, theta, data, k=k, method="lanczos", which="SA", **kw)
        trace = hessian_trace(model, theta, data, method="hutch++", **kw)
        ends = np.concatenate([bottom.eigenvalues, top.eigenvalues])
        out = {"top": np.sort(top.eigenvalues)[::-1], "bottom": np.sort(bottom.eigenvalues),
               "trace": trace.estimate, "trace_std_error": trace.std_error, "method": "lanczos",
               "density": spectral_density(model, theta, data, method="slq", **kw),
               "classification": classify(ends)}  # fmt: skip
    # never call a point that is not critical a minimum: report both facts
    out["classification"].grad_norm = grad_norm
    out["critical"] = grad_norm <= grad_tol
    out["grad_norm"] = grad_norm
    return out


def cmd_landscape(args) -> int:
    import matplotlib.pyplot as plt

    from . import directions as dirs
    from . import io, plot
    from ._device import resolve_device
    from .curvature import top_eigen
    from .landscape import slice_1d, surface_2d
    from .sharpness import epsilon_sharpness, sam_sharpness

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    out = _prepare_out(Path(args.out), args.overwrite, OUTPUTS)
    progress = None if not args.quiet else False

    t = time.perf_counter()
    X, y = _load(args)
    model, y, classes = _build_model(args, X, y)
    Xtr, ytr, Xte, yte = _split(X, y, args.test_fraction, args.seed)
    train = model.batch(Xtr, ytr)
    test = model.batch(Xte, yte) if Xte is not None else None
    timings["data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    res = _fit(args, model, train, None)
    theta = res.theta
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    trajectory_xy = None
    if args.directions == "random":
        d1, d2 = dirs.pair(model, theta, seed=args.seed, norm=args.norm,
                           ignore_bias=args.ignore_bias)  # fmt: skip
        direction_info = {"kind": "random", "norm": args.norm, "ignore_bias": args.ignore_bias,
                          "seed": args.seed}  # fmt: skip
    elif args.directions == "pca":
        if res.trajectory is None or len(res.trajectory) < 3:
            raise CLIError("--directions pca needs a training trajectory of at least 3 points")
        pca = dirs.pca(res.trajectory, theta, k=2)
        d1, d2 = pca.directions
        trajectory_xy = pca.projection
        direction_info = {"kind": "pca",
                          "explained_variance_ratio": pca.explained_variance_ratio}  # fmt: skip
    else:
        eig = top_eigen(model, theta, train, k=2, method="lanczos" if model.n_params > 3 else
                        "exact", which="LA", seed=args.seed, device=args.device)  # fmt: skip
        d1, d2 = eig.eigenvectors[0], eig.eigenvectors[1]
        direction_info = {"kind": "hessian", "eigenvalues": eig.eigenvalues}
    if trajectory_xy is None and res.trajectory is not None:
        # project the training path onto the plane of (d1, d2) for the overlay
        D = np.stack([np.asarray(d1), np.asarray(d2)])
        G = D @ D.T
        trajectory_xy = np.linalg.solve(G, D @ (res.trajectory - theta).T).T
    timings["directions_s"] = time.perf_counter() - t

    auto = trajectory_xy if args.directions == "pca" else None
    alphas = _grid(args, "x", None if auto is None else auto[:, 0])
    betas = _grid(args, "y", None if auto is None else auto[:, 1])
    t = time.perf_counter()
    dev = {"progress": progress, "device": args.device}
    s1 = slice_1d(model, theta, d1, train, None, alphas, **dev)
    s2 = slice_1d(model, theta, d2, train, None, alphas, **dev)
    surf = surface_2d(model, theta, d1, d2, train, None, alphas, betas, **dev)
    surf_test = (surface_2d(model, theta, d1, d2, test, None, alphas, betas, **dev)
                 if test is not None else None)  # fmt: skip
    timings["landscape_s"] = time.perf_counter() - t

    t = time.perf_counter()
    curv = _curvature(model, theta, train, args.top, args.seed, device=args.device)
    timings["curvature_s"] = time.perf_counter() - t

    t = time.perf_counter()
    lam_max = float(curv["top"][0])
    eps_sharp = epsilon_sharpness(model, theta, train, None, eps=args.epsilon,
                                  n_directions=args.sharpness_directions, seed=args.seed,
                                  lambda_max=lam_max, device=args.device)  # fmt: skip
    sam = sam_sharpness(model, theta, train, None, rho=args.epsilon, device=args.device)
    timings["sharpness_s"] = time.perf_counter() - t

    t = time.perf_counter()
    files = ["surface.csv", "surface.npz", "slice.csv", "surface.gp", "report.json"]
    io.write_gnuplot(
        surf, out / "surface.gp", data_path=out / "surface.csv", output="surface_gp.png"
    )
    io.save_npz(surf, out / "surface.npz")
    io.save_csv(s1, out / "slice.csv")
    _save_theta(out / "theta.npz", model, theta)
    files.append("theta.npz")
    try:
        io.save_hdf5(surf, out / "surface.h5")
        files.append("surface.h5")
    except ImportError:
        pass
    if surf_test is not None:
        io.save_csv(surf_test, out / "surface_test.csv")
        io.save_npz(surf_test, out / "surface_test.npz")
        files += ["surface_test.csv", "surface_test.npz"]
    # log-spaced levels when the loss spans over two decades on the grid
    log = bool(surf.loss.min() > 0 and surf.loss.max() > 100 * surf.loss.min())
    if trajectory_xy is not None:
        fig = plot.trajectory(surf, trajectory_xy, log=log)
    else:
        fig = plot.contour(surf, log=log)
    _save_figure(fig, out / "contour.png")
    _save_figure(plot.surface3d(surf), out / "surface3d.png")
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
    plot.slice_plot(s1, ax=axes[0], title="along d1")
    plot.slice_plot(s2, ax=axes[1], title="along d2")
    fig.tight_layout()
    _save_figure(fig, out / "slices.png")
    _save_figure(plot.spectrum(curv["density"]), out / "spectrum.png")
    files += ["contour.png", "surface3d.png", "slices.png", "spectrum.png"]
    timings["export_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start

    cls = curv["classification"]
    report = {
        "command": "landscape",
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
        "versions": _versions(),
        "seed": args.seed,
        "data": {"name": str(args.data), "n_train": int(train.X.shape[0]),
                 "n_test": int(test.X.shape[0]) if test is not None else 0,
                 "n_features": int(X.shape[1]),
                 "classes": classes.tolist() if classes is not None else None},
        "model": model.to_dict() | {"n_params": model.n_params},
        "training": {"method": res.method, "steps": res.n_steps, "stop_reason": res.stop_reason,
                     "final_loss": res.final_loss,
                     "grad_norm": float(np.linalg.norm(model.grad(theta, train)[1])),
                     "train_accuracy": model.accuracy(theta, train) if model.is_classifier
                     else None,
                     "test_loss": model.loss(theta, test) if test is not None else None,
                     "test_accuracy": model.accuracy(theta, test)
                     if test is not None and model.is_classifier else None},
        "directions": direction_info,
        "grid": {"alphas": [float(alphas[0]), float(alphas[-1]), int(alphas.size)],
                 "betas": [float(betas[0]), float(betas[-1]), int(betas.size)]},
        "surface": {"loss_at_theta": model.loss(theta, train),
                    "min": float(surf.loss.min()), "max": float(surf.loss.max()),
                    "test_loss_at_theta": model.loss(theta, test)
                    if surf_test is not None else None},
        "curvature": {"top_eigenvalues": curv["top"], "bottom_eigenvalues": curv["bottom"],
                      "method": curv["method"],
                      "trace": curv["trace"],
                      "trace_std_error": curv["trace_std_error"],
                      "kind": cls.kind, "saddle_index": cls.saddle_index,
                      "n_positive": cls.n_positive, "n_negative": cls.n_negative,
                      "n_zero": cls.n_zero, "condition_number": cls.condition_number,
                      "grad_norm": cls.grad_norm, "is_critical": curv["critical"]},
        "sharpness": {"epsilon": args.epsilon,
                      "max_increase": eps_sharp.max_increase,
                      "mean_increase": eps_sharp.mean_increase,
                      "quadratic_prediction": eps_sharp.quadratic_prediction,
                      "sam_rho": args.epsilon, "sam_sharpness": sam},
        "files": sorted(files),
        "timings": timings,
    }  # fmt: skip
    _write_json(out / "report.json", report)

    if not args.quiet:
        rows = [
            ("model", f"{model!r} ({model.n_params} params)"),
            ("data", f"{args.data}: {train.X.shape[0]} train"
                     + (f", {test.X.shape[0]} test" if test is not None else "")),
            ("training", f"{res.method}, {res.n_steps} steps ({res.stop_reason})"),
            ("loss at θ*", f"{report['surface']['loss_at_theta']:.6g}"
                           + (f" (test {report['surface']['test_loss_at_theta']:.6g})"
                              if surf_test is not None else "")),
            ("λmax", f"{lam_max:.6g}"),
            ("trace", f"{curv['trace']:.6g}"),
            ("kind", cls.kind if curv["critical"]
             else f"not a critical point (‖∇L‖ = {cls.grad_norm:.2e}); Hessian looks {cls.kind}"),
            (f"ε-sharpness (ε={args.epsilon:g})", f"max {eps_sharp.max_increase:.4g}, "
                                                  f"½ε²λmax {eps_sharp.quadratic_prediction:.4g}"),
            ("output", str(out)),
            ("wall time", f"{timings['total_s']:.2f} s"),
        ]  # fmt: skip
        print(_summary(rows))
    return 0


def _theta_from_file(path: str, model) -> np.ndarray:
    """Parameters from an .npz file (array ``theta``, or the model's layers as W0, b0, ...)."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--theta {path}: no such file")
    try:
        with np.load(p, allow_pickle=False) as f:
            if "theta" in f:
                return model.check_theta(f["theta"], "theta in " + p.name)
            layers = [(f[f"W{i}"], f[f"b{i}"]) for i in range(len(model.layout))]
    except (OSError, ValueError, KeyError) as exc:
        raise CLIError(f"--theta {path}: cannot read parameters ({exc})") from None
    return model.flatten(layers)


def _setup(args):
    """Data, model and trained (or loaded) parameters shared by hessian/connect/eos."""
    X, y = _load(args)
    model, y, classes = _build_model(args, X, y)
    data = model.batch(X, y)
    return model, data, classes


def cmd_hessian(args) -> int:
    from ._device import resolve_device

    t_start = time.perf_counter()
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    model, data, _ = _setup(args)
    if args.theta:
        theta = _theta_from_file(args.theta, model)
        source = {"theta_file": str(args.theta)}
    else:
        res = _fit(args, model, data, None)
        theta = res.theta
        source = {"trained": res.method, "steps": res.n_steps, "stop_reason": res.stop_reason}
    curv = _curvature(model, theta, data, args.top, args.seed, device=args.device)
    cls, density = curv["classification"], curv["density"]
    k = len(curv["top"])
    report = {
        "command": "hessian",
        "settings": {k_: v for k_, v in vars(args).items() if k_ != "func"},
        "versions": _versions(),
        "model": model.to_dict() | {"n_params": model.n_params},
        "parameters": source,
        "loss": model.loss(theta, data),
        "grad_norm": curv["grad_norm"],
        "top_eigenvalues": curv["top"], "bottom_eigenvalues": curv["bottom"],
        "method": curv["method"], "trace": curv["trace"],
        "trace_std_error": curv["trace_std_error"],
        "density": {"grid": density.grid, "density": density.density, "sigma": density.sigma},
        "kind": cls.kind if curv["critical"] else "not_critical",
        "hessian_kind": cls.kind, "saddle_index": cls.saddle_index,
        "condition_number": cls.condition_number,
        "wall_time_s": time.perf_counter() - t_start,
    }  # fmt: skip
    if args.out:
        out = _prepare_out(Path(args.out), args.overwrite, ("hessian.json", "spectrum.png"))
        from . import plot

        _write_json(out / "hessian.json", report)
        _save_figure(plot.spectrum(density), out / "spectrum.png")
    if not args.quiet:
        fmt = ", ".join
        print(_summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("loss", f"{report['loss']:.6g}  (‖∇L‖ {report['grad_norm']:.2e})"),
            (f"top {k}", fmt(f"{v:.5g}" for v in curv["top"])),
            (f"bottom {k}", fmt(f"{v:.5g}" for v in curv["bottom"])),
            ("trace", f"{curv['trace']:.6g} ± {curv['trace_std_error']:.2g} ({curv['method']})"),
            ("kind", report["kind"] + ("" if curv["critical"] else f" (Hessian: {cls.kind})")),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


def cmd_connect(args) -> int:
    from . import plot
    from ._device import resolve_device
    from .paths import mode_connectivity

    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    t_start = time.perf_counter()
    model, data, _ = _setup(args)
    res_a = _fit(args, model, data, None)
    args_b = argparse.Namespace(**{**vars(args), "seed": args.seed + 1})
    res_b = _fit(args_b, model, data, None)
    mc = mode_connectivity(model, res_a.theta, res_b.theta, data, None, ts=args.points,
                           fit=True, steps=args.bezier_steps, seed=args.seed,
                           progress=None if not args.quiet else False,
                           device=args.device)  # fmt: skip
    report = {
        "command": "connect",
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
        "versions": _versions(),
        "model": model.to_dict() | {"n_params": model.n_params},
        "endpoint_loss": mc.linear.endpoint_loss,
        "linear_barrier": mc.linear_barrier, "curve_barrier": mc.curve_barrier,
        "linear_connected": mc.linear_connected, "curve_connected": mc.curve_connected,
        "threshold": mc.threshold,
        "linear": {"t": mc.linear.ts, "loss": mc.linear.loss},
        "curve": {"t": mc.curve.ts, "loss": mc.curve.loss} if mc.curve is not None else None,
        "wall_time_s": time.perf_counter() - t_start,
    }  # fmt: skip
    if args.out:
        out = _prepare_out(Path(args.out), args.overwrite, ("connect.json", "paths.png"))
        _write_json(out / "connect.json", report)
        paths = [mc.linear] + ([mc.curve] if mc.curve is not None else [])
        _save_figure(plot.path_profile(paths), out / "paths.png")
    if not args.quiet:
        print(_summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("endpoints", f"loss {mc.linear.endpoint_loss[0]:.5g} (seed {args.seed}), "
                          f"{mc.linear.endpoint_loss[1]:.5g} (seed {args.seed + 1})"),
            ("linear barrier", f"{mc.linear_barrier:.5g}"),
            ("Bézier barrier", f"{mc.curve_barrier:.5g}"),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


def cmd_eos(args) -> int:
    from . import plot
    from ._device import resolve_device
    from .eos import edge_of_stability

    t_start = time.perf_counter()
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    if args.data == "eos-default":
        # a regression a small tanh MLP cannot fit at once: y = sin(2 x0) cos(x1), standardized
        rng = np.random.default_rng(args.seed)
        X = rng.normal(size=(60, 4))
        y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1])
        y = (y - y.mean()) / y.std()
        from .models import MLP

        model = MLP([4, *args.hidden, 1], activation=args.activation, loss="mse")
        data = model.batch(X, y)
    else:
        model, data, _ = _setup(args)
    res = edge_of_stability(model, data, None, lr=args.lr or 0.1, steps=args.steps or 800,
                            every=args.every, seed=args.seed, device=args.device)  # fmt: skip
    report = {
        "command": "eos",
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
        "versions": _versions(),
        "model": model.to_dict() | {"n_params": model.n_params},
        "lr": res.lr, "threshold": res.threshold, "steps": res.steps, "loss": res.loss,
        "lambda_max": res.lambda_max, "stop_reason": res.stop_reason,
        "wall_time_s": time.perf_counter() - t_start,
    }  # fmt: skip
    if args.out:
        out = _prepare_out(Path(args.out), args.overwrite, ("eos.json", "eos.png"))
        _write_json(out / "eos.json", report)
        _save_figure(plot.eos(res), out / "eos.png")
    if not args.quiet:
        print(_summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("2/η", f"{res.threshold:.5g}"),
            ("λmax first → last", f"{res.lambda_max[0]:.5g} → {res.lambda_max[-1]:.5g}"),
            ("loss first → last", f"{res.loss[0]:.5g} → {res.loss[-1]:.5g}"),
            ("stop", res.stop_reason),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


def cmd_plot(args) -> int:
    from . import io, plot
    from .landscape import Slice

    path = Path(args.file)
    result = io.load(path)
    out = Path(args.out) if args.out else path.with_suffix(".png")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    if isinstance(result, Slice):
        fig = plot.slice_plot(result, log=args.log)
    elif args.kind == "3d":
        fig = plot.surface3d(result, log=args.log)
    elif args.kind == "heatmap":
        fig = plot.heatmap(result, log=args.log)
    else:
        fig = plot.contour(result, log=args.log)
    _save_figure(fig, out)
    if not args.quiet:
        print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastscape",
        description="Loss landscapes, curvature and sharpness of ML models, computed fast.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastscape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "landscape", help="train a model and map its loss landscape (the main job)",
        description="Fit a model, then compute 1D slices and a 2D surface of the loss around "
        "the solution, the top Hessian eigenvalues, the critical-point classification and "
        "sharpness; write CSV/NPZ/HDF5, a gnuplot script, report.json and PNGs into --out.",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p)
    g = p.add_argument_group("directions and grid")
    g.add_argument(
        "--directions",
        choices=("random", "pca", "hessian"),
        default="random",
        help="random (normalized, Li et al. 2018), pca of the training trajectory, "
        "or the top-2 Hessian eigenvectors",
    )
    g.add_argument(
        "--norm",
        choices=("filter", "layer", "model", "none"),
        default="filter",
        help="normalization of random directions",
    )
    g.add_argument(
        "--ignore-bias",
        dest="ignore_bias",
        action="store_true",
        default=True,
        help="zero the bias part of random directions",
    )
    g.add_argument(
        "--keep-bias",
        dest="ignore_bias",
        action="store_false",
        help="perturb biases too (scaled per layer to |b|)",
    )
    g.add_argument(
        "--range",
        type=_range,
        default=None,
        help="grid range LO:HI [default: -1:1; for pca, the span of the training "
        "trajectory with a margin]",
    )
    g.add_argument("--points", type=_positive_int, default=51, help="grid points per axis")
    g.add_argument("--range-x", type=_range, default=None, help="range along d1 (overrides)")
    g.add_argument("--range-y", type=_range, default=None, help="range along d2 (overrides)")
    g.add_argument("--points-x", type=_positive_int, default=None, help="points along d1")
    g.add_argument("--points-y", type=_positive_int, default=None, help="points along d2")
    g.add_argument(
        "--test-fraction",
        type=_fraction,
        default=None,
        help="hold out this fraction and map the held-out loss too",
    )
    c = p.add_argument_group("curvature and sharpness")
    c.add_argument("--top", type=_positive_int, default=3, help="top Hessian eigenvalues")
    c.add_argument(
        "--epsilon", type=_positive_float, default=0.05, help="radius of ε-sharpness and SAM's ρ"
    )
    c.add_argument(
        "--sharpness-directions",
        type=_positive_int,
        default=256,
        help="random directions probed for ε-sharpness",
    )
    p.add_argument("--out", default="fastscape-out", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.set_defaults(func=cmd_landscape)

    p = sub.add_parser(
        "hessian", help="Hessian eigenvalues, trace, density and classification",
        description="Curvature of a model at trained parameters (--theta FILE.npz with an "
        "array 'theta', or trained on the spot): top and bottom eigenvalues, trace, spectral "
        "density and the critical-point classification.",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p)
    p.add_argument("--theta", default=None, help="parameters (.npz with array 'theta')")
    p.add_argument("--top", type=_positive_int, default=5, help="eigenvalues at each end")
    p.add_argument("--out", default=None, help="directory for hessian.json and spectrum.png")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.set_defaults(func=cmd_hessian)

    p = sub.add_parser(
        "connect", help="mode connectivity of two minima (linear and Bézier paths)",
        description="Train the model from two seeds, then measure the loss barrier on the "
        "straight segment between the solutions and on a trained quadratic Bézier curve "
        "(Garipov et al. 2018).",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p)
    p.add_argument("--points", type=_positive_int, default=51, help="points on each path")
    p.add_argument(
        "--bezier-steps", type=_positive_int, default=300, help="training steps of the bend"
    )
    p.add_argument("--out", default=None, help="directory for connect.json and paths.png")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.set_defaults(func=cmd_connect)

    p = sub.add_parser(
        "eos", help="edge of stability: λmax during full-batch GD against 2/η",
        description="Full-batch gradient descent recording the loss and the top Hessian "
        "eigenvalue (Cohen et al. 2021). The default data is a small regression problem "
        "(60 samples, MSE, a 4-16-16-1 tanh MLP, η = 0.1) on which progressive sharpening "
        "and the edge of stability show in seconds.",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p)
    p.set_defaults(data="eos-default", hidden=(16, 16))
    p.add_argument("--every", type=_positive_int, default=20, help="steps between λmax")
    p.add_argument("--out", default=None, help="directory for eos.json and eos.png")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.set_defaults(func=cmd_eos)

    p = sub.add_parser(
        "plot",
        help="re-plot a saved .npz/.h5/.csv result",
        formatter_class=_Formatter,
    )
    p.add_argument("file", help="a surface or slice saved by fastscape")
    p.add_argument(
        "--kind",
        choices=("contour", "heatmap", "3d"),
        default="contour",
        help="picture of a surface (slices are always drawn as curves)",
    )
    p.add_argument("--log", action="store_true", help="log-spaced contour levels")
    p.add_argument("--out", default=None, help="PNG path [default: FILE with .png]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=cmd_plot)
    return parser


_RANGE_OPTIONS = ("--range", "--range-x", "--range-y")


def _join_ranges(argv: list[str]) -> list[str]:
    """Let ``--range -2:2`` through: argparse takes '-2:2' for an option otherwise."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _RANGE_OPTIONS and i + 1 < len(argv) and ":" in argv[i + 1]:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastscape`` console script."""
    from ._device import DeviceUnavailableError

    parser = build_parser()
    args = parser.parse_args(_join_ranges(sys.argv[1:] if argv is None else list(argv)))
    from ._threads import threads

    try:
        with threads(getattr(args, "threads", None)):
            return args.func(args)
    except (CLIError, ValueError, TypeError, OSError, ImportError, DeviceUnavailableError) as exc:
        if os.environ.get("FASTSCAPE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastscape: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastscape: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
