"""The ``fastscape`` command: a complete picture of a model's loss landscape in one command.

Subcommands: ``landscape`` (the main job), ``hessian``, ``connect``, ``eos`` and ``plot``.
Run ``fastscape SUBCOMMAND --help`` for the options of each.

Stage messages go to stderr (``--quiet`` silences them and the progress bars), the summary to
stdout. Every command writes its results into a temporary sibling of ``--out`` and moves it
into place when it has finished; a lock beside ``--out`` refuses a second writer.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__

EPILOG = """\
examples:
  fastscape landscape             # two blobs, a small tanh MLP, results in ./fastscape-out
  fastscape landscape --data digits --model mlp --hidden 32 --points 41 --out digits-out
  fastscape landscape --data breast_cancer --model logistic --test-fraction 0.3
  fastscape landscape --data prices.csv --loss mse --hidden 32
  fastscape landscape --torch net.pt --data train.npz --loss softmax_ce
  fastscape hessian --data iris --model mlp --hidden 8 --top 5
  fastscape hessian --theta fastscape-out/theta.npz
  fastscape connect --data blobs --hidden 16
  fastscape eos --lr 0.05 --steps 600
  fastscape plot fastscape-out/surface.npz --format png,pdf

Every subcommand exits with status 2 and a one-line message on bad arguments, unreadable
files or non-finite data. Set FASTSCAPE_DEBUG=1 to see the full traceback instead.
"""

BUILTIN_TASKS = {
    "blobs": "softmax_ce", "line": "mse", "digits": "softmax_ce",
    "breast_cancer": "softmax_ce", "iris": "softmax_ce", "wine": "softmax_ce",
}  # fmt: skip
LOSSES = ("softmax_ce", "logistic", "mse")
FIGURE_FORMATS = ("png", "pdf", "svg")
MAX_INFERRED_CLASSES = 50  # integer targets with more distinct values: ask for --loss
NEAR_CRITICAL = 1e-3  # ‖∇L‖ below this (and above the critical tolerance): "near-critical"
CRITICAL = 1e-5  # ‖∇L‖ at or below this: a critical point
# Grid budget: refuse (unless --force) beyond these. The time constant is calibrated on the span
# engine (see _grid_estimate); the limits are deliberately generous: only jobs far beyond the
# machine are refused, the others are announced with their estimate.
MAX_GRID_SECONDS = 3600.0
MAX_GRID_MEMORY_FRACTION = 0.5
# Files the commands write: --overwrite replaces a directory only when it holds nothing else.
_OUR_FILES = re.compile(
    r"^(surface|surface_test|slice_d1|slice_d2|slice|theta|report|hessian|connect|eos|contour"
    r"|surface3d|slices|spectrum|paths|surface_gp)\.(csv|npz|h5|gp|json|png|pdf|svg)$"
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default once: unless its help already says it, it is unset, or the
    option is a switch (a switch's default is stated in words in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        switch = isinstance(
            action,
            (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction),
        )
        unset = action.default is None or action.default is False
        said = "[default" in text or "(default" in text
        if said or switch or unset or action.default == argparse.SUPPRESS:
            return text
        return text + " [default: %(default)s]"


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- messages
class _Talk:
    """Stage messages and warnings on stderr (silent with --quiet); warnings are also kept
    for the report."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.warnings: list[str] = []

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"fastscape: {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if not self.quiet:
            print(f"fastscape: warning: {message}", file=sys.stderr, flush=True)


# kernels whose cache index tells whether this machine has compiled the CPU kernels before
_KEY_KERNELS = {"mlp": ("chunk_loss", "output_loss_serial"), "span": ("span_block_hidden",)}


def _kernel_index_files() -> tuple[list[str], list[str]]:
    """Cache index files of the key kernels, and of every cached kernel of their modules."""
    import importlib

    key: list[str] = []
    every: list[str] = []
    for module, names in _KEY_KERNELS.items():
        try:
            mod = importlib.import_module(f"fastscape.kernels.{module}")
        except ImportError:
            continue
        for name in dir(mod):
            cache = getattr(getattr(mod, name), "_cache", None)
            index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
            if isinstance(index, str):
                every.append(index)
                if name in names:
                    key.append(index)
    return key, every


def kernels_cold() -> bool:
    """True when the compiled CPU kernels are not in Numba's on-disk cache yet (first run).

    Cheap: it checks whether the cache index files of a few key kernels exist where Numba
    looks for them at run time (``NUMBA_CACHE_DIR`` when set, else ``__pycache__`` beside the
    kernels); it compiles nothing. When none of the key kernels is found (renamed), any
    cached kernel of their modules counts.
    """
    key, every = _kernel_index_files()
    if key:
        return not all(os.path.exists(p) for p in key)
    return bool(every) and not any(os.path.exists(p) for p in every)


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


def _formats(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().lower().lstrip(".") for v in text.split(",")))
    bad = [n for n in names if n not in FIGURE_FORMATS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(FIGURE_FORMATS)}, got {text!r}"
        )
    return names


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


# ----------------------------------------------------------------------------- options
def _add_data_model_options(
    p: argparse.ArgumentParser, *, data: str = "blobs", hidden=(16,), training: bool = True
) -> None:
    """Data, model and (with ``training``) optimizer options; the defaults shown are this
    subcommand's own."""
    p.set_defaults(hidden_default=hidden)
    g = p.add_argument_group("data and model")
    g.add_argument(
        "--data", default=data,
        help=("eos-default (the regression described above), " if data == "eos-default" else "")
        + "blobs, line, digits, breast_cancer, iris, wine, or a .csv/.npz file "
        "(CSV: last column = target; NPZ: arrays X and y)",
    )  # fmt: skip
    header = g.add_mutually_exclusive_group()
    header.add_argument(
        "--header", dest="header", action="store_true", default=None,
        help="the CSV's first row is a header (default: it is when a field is not a number)",
    )  # fmt: skip
    header.add_argument(
        "--no-header", dest="header", action="store_false", help="the CSV's first row is data"
    )
    g.add_argument(
        "--no-standardize", dest="standardize", action="store_false",
        help="keep the features as they are (default: standardize each column with the "
        "training split's mean and standard deviation)",
    )  # fmt: skip
    g.add_argument(
        "--loss", choices=LOSSES, default=None,
        help="softmax_ce (class labels), logistic (two classes, one output) or mse "
        "(regression) [default: from the data when unambiguous: integer labels with at most "
        f"{MAX_INFERRED_CLASSES} values are classes; otherwise pass --loss]",
    )  # fmt: skip
    g.add_argument(
        "--model", choices=("mlp", "logistic", "linear"), default=None,
        help="mlp, logistic (logistic regression) or linear (no hidden layer; least squares "
        "unless --loss says otherwise) [default: mlp]",
    )  # fmt: skip
    g.add_argument(
        "--hidden", type=_hidden, default=None,
        help=f"hidden layer sizes of the MLP, e.g. 32,32 [default: {_show(hidden)}]",
    )  # fmt: skip
    g.add_argument(
        "--activation", choices=("tanh", "relu", "sigmoid", "identity"), default=None,
        help="hidden activation [default: tanh]",
    )  # fmt: skip
    t = p.add_argument_group("training")
    if training:
        t.add_argument(
            "--method", choices=("gd", "momentum", "adam", "newton", "sam"), default=None,
            help="optimizer [default: newton for models without a hidden layer, else adam]",
        )  # fmt: skip
    t.add_argument(
        "--lr", type=_positive_float, default=None,
        help="learning rate [default: 0.05 adam, 0.5 gd/momentum/sam]"
        if training else "learning rate η of full-batch GD [default: 0.1]",
    )  # fmt: skip
    t.add_argument(
        "--steps", type=_positive_int, default=None,
        help="most training steps [default: 3000, 50 for newton]"
        if training else "GD steps [default: 800]",
    )  # fmt: skip
    if training:
        t.add_argument(
            "--gtol", type=_positive_float, default=None,
            help="stop training when ‖∇L‖ falls below this [default: 1e-4, 1e-8 for newton]",
        )  # fmt: skip
        t.add_argument(
            "--batch-size", type=_positive_int, default=None,
            help="minibatch size [default: full batch]",
        )  # fmt: skip
    t.add_argument("--seed", type=int, default=0, help="seed of everything random")
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="Numba threads [default: all cores]"
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="where the model is evaluated: the grids of landscape, the gradients and "
        "Hessian-vector products of hessian and eos (training and exact Hessians of small "
        "models stay on the CPU)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no messages, progress bars or summary")


def _add_curvature_budget(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("curvature budget (models above 2000 parameters)")
    c.add_argument(
        "--tol", type=_positive_float, default=1e-6,
        help="relative residual ‖Hv − λv‖/|λ| at which an eigenvalue counts as converged",
    )  # fmt: skip
    c.add_argument(
        "--max-hvps", type=_positive_int, default=1000,
        help="most Hessian-vector products per end of the spectrum; an unconverged solve "
        "is reported as such",
    )  # fmt: skip


def _add_output_options(p: argparse.ArgumentParser, default_out: str, figures: bool = True) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--out", default=default_out, help="output directory")
    o.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier result in --out (the old one stays until this run succeeds)",
    )  # fmt: skip
    if figures:
        o.add_argument(
            "--format", type=_formats, default=("png",),
            help="figure formats, a comma list of png, pdf, svg [default: png]",
        )  # fmt: skip
        o.add_argument("--dpi", type=_positive_int, default=150, help="figure resolution")


# ----------------------------------------------------------------------------- output directory
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(root: Path) -> None:
    """Give the files under ``root`` the modes the umask asks for (temporary files are 0600)."""
    mask = _umask()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)


class OutputDir:
    """A command's output directory, written whole or not at all.

    :meth:`open` (before any work) checks the destination, takes the lock ``<out>.lock`` beside
    it (``fcntl.flock``; a second writer is refused) and creates the temporary sibling
    ``<out>.tmp-<pid>`` that the command writes into. :meth:`commit` moves it into place (the
    previous result, with ``--overwrite``, is replaced whole only then). :meth:`close` removes
    what an interrupted run left and releases the lock.
    """

    def __init__(self, path, overwrite: bool) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self._lock_fd: int | None = None
        self._lock_path = self.path.parent / f"{self.path.name}.lock"

    def _check_replaceable(self) -> None:
        path = self.path
        if not path.exists():
            return
        if not path.is_dir():
            raise CLIError(f"--out {path} exists and is not a directory")
        entries = sorted(e.name for e in path.iterdir())
        if not entries:
            return
        if not self.overwrite:
            shown = ", ".join(entries[:3]) + ("..." if len(entries) > 3 else "")
            raise CLIError(
                f"{path} already holds results ({shown}); "
                "pass --overwrite to replace them or choose another --out"
            )
        resolved = path.resolve()
        for protected in (Path.cwd().resolve(), Path.home().resolve()):
            if resolved == protected or resolved in protected.parents:
                raise CLIError(f"--out {path} is the working or home directory; choose a new one")
        foreign = [e for e in entries if not _OUR_FILES.match(e)]
        if foreign:
            raise CLIError(
                f"--out {path} holds files fastscape did not write ({', '.join(foreign[:3])}); "
                "it is not replaced: choose another --out"
            )

    def _lock(self) -> None:
        import fcntl

        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise CLIError(
                    f"--out {self.path}: cannot create {self._lock_path} ({exc.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise CLIError(
                    f"another fastscape run is writing to {self.path} (it holds "
                    f"{self._lock_path}); wait for it to finish or choose another --out"
                ) from None
            # the lock file is removed on release: make sure we locked the file on disk now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._lock_path))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)

    def open(self) -> Path:
        """Check, lock and create the temporary directory; returns it."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"--out {self.path}: cannot create {parent} ({exc.strerror})") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CLIError(f"--out {self.path}: {parent} is not writable")
        self._check_replaceable()
        self._lock()
        try:
            self._check_replaceable()  # again, now that no one else can write
            for stale in parent.glob(f"{self.path.name}.tmp-*"):  # killed runs (SIGKILL)
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            self.tmp = parent / f"{self.path.name}.tmp-{os.getpid()}"
            self.tmp.mkdir()
        except OSError as exc:
            self.close()
            raise CLIError(f"--out {self.path}: cannot write beside it ({exc.strerror})") from None
        except BaseException:
            self.close()
            raise
        return self.tmp

    def commit(self) -> Path:
        """Move the finished result into place (SIGINT is held back while it moves)."""
        assert self.tmp is not None
        _apply_umask(self.tmp)
        held = hasattr(signal, "pthread_sigmask")
        if held:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if self.path.exists():
                old = self.path.parent / f"{self.path.name}.old-{os.getpid()}"
                os.rename(self.path, old)
                try:
                    os.rename(self.tmp, self.path)
                except BaseException:
                    os.rename(old, self.path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.tmp, self.path)
            self.tmp = None
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return self.path

    def close(self) -> None:
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- data and model
def _refuse(args, names: Sequence[str], reason: str) -> None:
    """Refuse options the run cannot use (they would be recorded but ignored)."""
    given = [n for n in names if getattr(args, n.lstrip("-").replace("-", "_"), None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} cannot be used {reason}")


def _load(args, talk: _Talk) -> tuple[np.ndarray, np.ndarray]:
    from . import datasets

    talk(f"loading data {args.data}")
    return datasets.load(args.data, standardize_features=False, header=args.header)


def _integer_valued(y: np.ndarray) -> bool:
    return y.dtype.kind in "iub" or bool(np.all(y == np.round(y)))


def _first_fraction(y: np.ndarray) -> tuple[int, float]:
    i = int(np.flatnonzero(y != np.round(y))[0])
    return i, float(y[i])


def _task(args, y: np.ndarray, loaded_loss: str | None = None) -> str:
    """The loss: --loss, the loaded model's, the model kind's, a built-in data set's, or
    inferred from integer labels with few values; anything else asks for --loss."""
    if args.loss is not None:
        if loaded_loss is not None and args.loss != loaded_loss:
            raise CLIError(f"--loss {args.loss} differs from the loaded model's loss {loaded_loss}")
        return args.loss
    if loaded_loss is not None:
        return loaded_loss
    if args.model == "logistic":
        return "logistic"
    if args.model == "linear":
        return "mse"
    if str(args.data) in BUILTIN_TASKS:
        return BUILTIN_TASKS[str(args.data)]
    if y.ndim != 1:
        raise CLIError(f"{args.data}: targets of shape {y.shape}: pass --loss")
    if not _integer_valued(y):
        i, value = _first_fraction(y)
        raise CLIError(
            f"{args.data}: cannot tell the task, the targets are not all integer labels "
            f"({value:g} in row {i}); pass --loss mse for a regression, or fix the labels "
            "for a classification"
        )
    n_values = np.unique(y).size
    if n_values > MAX_INFERRED_CLASSES:
        raise CLIError(
            f"{args.data}: cannot tell the task, the integer targets take {n_values} values "
            f"(more than {MAX_INFERRED_CLASSES} classes); pass --loss mse for a regression "
            "or --loss softmax_ce for a classification"
        )
    return "softmax_ce"


def _targets(args, y: np.ndarray, loss: str, n_outputs: int | None = None):
    """Targets coded for ``loss`` and the class values (None for mse)."""
    if loss == "mse":
        return y.astype(np.float64), None
    if y.ndim != 1:
        raise CLIError(f"--loss {loss} needs 1-D class labels, {args.data} has shape {y.shape}")
    if not _integer_valued(y):
        i, value = _first_fraction(y)
        raise CLIError(
            f"--loss {loss} needs integer class labels; {args.data} has {value:g} in row {i} "
            "(use --loss mse for a regression)"
        )
    labels = y.astype(np.int64)
    classes, codes = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise CLIError(f"the data {args.data!r} has a single class: nothing to classify")
    if loss == "logistic" and classes.size != 2:
        raise CLIError(
            f"--loss logistic needs 2 classes, {args.data!r} has {classes.size} "
            "(use --loss softmax_ce)"
        )
    if n_outputs is not None and loss == "softmax_ce":
        if labels.min() >= 0 and labels.max() < n_outputs:
            return labels, np.arange(n_outputs)  # a loaded model: labels are class indices
        if classes.size > n_outputs:
            raise CLIError(
                f"{args.data!r} has {classes.size} classes, the loaded model has "
                f"{n_outputs} outputs"
            )
    return codes, classes


def _spec_model(sizes, activation: str, loss: str):
    from .models import MLP

    return MLP(list(sizes), activation=activation, loss=loss)


def _build_model(args, d: int, loss: str, n_classes: int | None):
    """The model the options ask for (sizes from the data and the loss)."""
    kind = args.model or "mlp"
    out = n_classes if loss == "softmax_ce" else 1
    if kind == "logistic":
        if loss != "logistic":
            raise CLIError(f"--model logistic trains the logistic loss, not --loss {loss}")
        return _spec_model([d, 1], "identity", "logistic")
    if kind == "linear":
        return _spec_model([d, out], "identity", loss)
    hidden = args.hidden if args.hidden is not None else args.hidden_default
    return _spec_model([d, *hidden, out], args.activation or "tanh", loss)


def _npz_error(path: Path, exc: BaseException) -> CLIError:
    return CLIError(
        f"{path}: not a readable .npz file (truncated or corrupt: {type(exc).__name__})"
    )


def read_theta_file(path) -> tuple[dict | None, np.ndarray | list]:
    """``(spec, theta)`` from a theta file; ``spec`` holds sizes/activation/loss when the file
    carries them (files written by fastscape do), else None; ``theta`` is the array 'theta' or
    the list of layers (W0, b0), (W1, b1), ..."""
    import zipfile
    import zlib

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--theta {path}: no such file")
    try:
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            names = set(f.files)
            spec = None
            if {"sizes", "activation", "loss"} <= names:
                spec = {"sizes": [int(s) for s in f["sizes"]], "activation": str(f["activation"]),
                        "loss": str(f["loss"])}  # fmt: skip
            if "theta" in names:
                return spec, np.asarray(f["theta"], dtype=np.float64)
            layers = []
            while f"W{len(layers)}" in names and f"b{len(layers)}" in names:
                i = len(layers)
                layers.append((np.asarray(f[f"W{i}"]), np.asarray(f[f"b{i}"])))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, ValueError) as exc:
        raise _npz_error(p, exc) from None
    if not layers:
        raise CLIError(
            f"--theta {path}: holds no array 'theta' nor layers W0, b0, ... (has {sorted(names)})"
        )
    return spec, layers


def _theta_for(model, theta, path) -> np.ndarray:
    if isinstance(theta, list):
        try:
            return model.flatten(theta)
        except ValueError as exc:
            raise CLIError(f"--theta {path}: {exc}") from None
    if theta.shape != (model.n_params,):
        raise CLIError(
            f"--theta {path}: {theta.size} parameters, the model {list(model.sizes)} has "
            f"{model.n_params}"
        )
    if not np.isfinite(theta).all():
        raise CLIError(f"--theta {path}: the parameters contain non-finite values")
    return theta


def _size_difference(a: Sequence[int], b: Sequence[int]) -> str:
    if len(a) != len(b):
        return f"{len(a) - 2} vs {len(b) - 2} hidden layers"
    parts = [f"{'input' if i == 0 else 'output' if i == len(a) - 1 else f'hidden {i}'}: {x} vs {y}"
             for i, (x, y) in enumerate(zip(a, b)) if x != y]  # fmt: skip
    return ", ".join(parts)


def _check_fits_data(model, d: int, source: str) -> None:
    if model.n_inputs != d:
        raise CLIError(
            f"{source}: the model takes {model.n_inputs} inputs, the data have {d} features"
        )


def _check_spec_against_options(args, sizes: Sequence[int], activation: str, source: str) -> None:
    """A loaded model's sizes against an explicit --hidden (which sizes differ)."""
    if args.hidden is not None:
        wanted = [sizes[0], *args.hidden, sizes[-1]]
        if list(wanted) != list(sizes):
            raise CLIError(
                f"{source} holds a {list(sizes)} model; --hidden {_show(args.hidden)} asks for "
                f"{wanted} ({_size_difference(sizes, wanted)})"
            )
    if args.activation is not None and len(sizes) > 2 and args.activation != activation:
        raise CLIError(f"{source} holds a {activation} model; --activation says {args.activation}")


def _model_from_state_dict(state: dict, args, loss: str, path) -> tuple:
    tensors = [(k, v) for k, v in state.items() if hasattr(v, "ndim")]
    layers = []
    i = 0
    while i < len(tensors):
        name, W = tensors[i]
        if W.ndim != 2:
            raise CLIError(f"--torch {path}: tensor {name} of shape {tuple(W.shape)} is not a "
                           "Linear weight (expected weight, bias pairs)")  # fmt: skip
        if i + 1 >= len(tensors) or tensors[i + 1][1].ndim != 1:
            raise CLIError(f"--torch {path}: the weight {name} has no bias after it")
        b = tensors[i + 1][1]
        layers.append((W.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()))
        i += 2
    if not layers:
        raise CLIError(f"--torch {path}: the state_dict holds no Linear layers")
    sizes = [layers[0][0].shape[1]] + [W.shape[0] for W, _ in layers]
    for j in range(1, len(layers)):
        if layers[j][0].shape[1] != layers[j - 1][0].shape[0]:
            raise CLIError(f"--torch {path}: layers {j - 1} and {j} do not chain")
    if len(sizes) > 2 and args.activation is None:
        raise CLIError(
            f"--torch {path} is a state_dict, which holds no activation: pass --activation"
        )
    _check_spec_against_options(args, sizes, args.activation or "identity", f"--torch {path}")
    try:
        model = _spec_model(sizes, args.activation or "identity", loss)
        return model, model.flatten(layers)
    except ValueError as exc:
        raise CLIError(f"--torch {path}: {exc}") from None


def _load_torch(path: str, args, y: np.ndarray):
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--torch {path}: no such file")
    try:
        import torch
    except ImportError:
        raise CLIError("--torch needs PyTorch: pip install torch") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle, zip and torch errors alike
        raise CLIError(
            f"--torch {path}: cannot load it ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    from .models import MLP

    if isinstance(obj, torch.nn.Module):
        _refuse(args, ("--hidden", "--activation"), "with a saved module (its layers say them)")
        try:
            model, theta = MLP.from_torch(obj, loss=_task(args, y))
        except ValueError as exc:
            raise CLIError(f"--torch {path}: {exc}") from None
        return model, theta
    if isinstance(obj, dict):
        return _model_from_state_dict(obj, args, _task(args, y), path)
    raise CLIError(
        f"--torch {path}: holds a {type(obj).__name__}, not an nn.Module or a state_dict"
    )


def _prepare(args, talk: _Talk, *, split: bool = False):
    """Data, model and (for loaded models) parameters.

    Returns ``(model, train, test, classes, theta, source, n_features)``; ``theta`` is None
    when the model is to be trained. Features are standardized with the training split's
    statistics only.
    """
    from . import datasets

    X, y = _load(args, talk)
    theta = None
    source: dict = {}
    theta_path = getattr(args, "theta", None)
    torch_path = getattr(args, "torch", None)
    if theta_path and torch_path:
        raise CLIError("--theta and --torch both give the parameters: pass one")
    if theta_path or torch_path:
        _refuse(args, ("--method", "--lr", "--steps", "--gtol", "--batch-size"),
                "with loaded parameters (nothing is trained)")  # fmt: skip
    if theta_path:
        spec, raw = read_theta_file(theta_path)
        if spec is not None:
            _refuse(args, ("--model",), f"with {theta_path}: its stored spec gives the model")
            _check_spec_against_options(args, spec["sizes"], spec["activation"], str(theta_path))
            loss = _task(args, y, loaded_loss=spec["loss"])
            model = _spec_model(spec["sizes"], spec["activation"], loss)
        else:  # a bare parameter vector: the options describe the model
            loss = _task(args, y)
            _, classes = _targets(args, y, loss)
            model = _build_model(args, X.shape[1], loss, None if classes is None else classes.size)
        _check_fits_data(model, X.shape[1], str(theta_path))
        theta = _theta_for(model, raw, theta_path)
        source = {"theta_file": str(theta_path)}
    elif torch_path:
        _refuse(args, ("--model",), "with --torch: the file gives the model")
        model, theta = _load_torch(torch_path, args, y)
        _check_fits_data(model, X.shape[1], str(torch_path))
        source = {"torch_file": str(torch_path)}
    else:
        loss = _task(args, y)
        _, classes = _targets(args, y, loss)
        model = _build_model(args, X.shape[1], loss, None if classes is None else classes.size)
    loaded = theta is not None
    yt, classes = _targets(args, y, model.loss_name, model.n_outputs if loaded else None)
    fraction = getattr(args, "test_fraction", None) if split else None
    Xtr, ytr, Xte, yte = _split(X, yt, fraction, args.seed)
    if args.standardize:
        Xte = None if Xte is None else datasets.standardize(Xte, reference=Xtr)
        Xtr = datasets.standardize(Xtr)
    try:
        train = model.batch(Xtr, ytr)
        test = model.batch(Xte, yte) if Xte is not None else None
    except ValueError as exc:
        raise CLIError(f"{args.data}: {exc}") from None
    return model, train, test, classes, theta, source, X.shape[1]


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


# ----------------------------------------------------------------------------- training
def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _fit(args, model, data, talk: _Talk, seed: int | None = None):
    from .training import fit

    method = args.method or ("newton" if model.is_linear else "adam")
    lr = args.lr or (0.05 if method == "adam" else 0.5)
    steps = args.steps or (50 if method == "newton" else 3000)
    gtol = args.gtol or (1e-8 if method == "newton" else 1e-4)
    seed = args.seed if seed is None else seed
    extra = {}
    if _accepts(fit, "progress"):
        extra["progress"] = None if not args.quiet else False
    talk(f"training {model!r}: {method}, lr {lr:g}, up to {steps} steps or ‖∇L‖ ≤ {gtol:g}"
         + (f" (seed {seed})" if seed != args.seed else ""))  # fmt: skip
    return fit(model, data, None, method=method, lr=lr, steps=steps, seed=seed, gtol=gtol,
               batch_size=args.batch_size, record_every=max(1, steps // 50), **extra)  # fmt: skip


def _check_training(res, model, train, talk: _Talk, classes) -> None:
    """Warn when the model did not train: divergence, no loss decrease, chance accuracy."""
    stop = res.stop_reason
    losses = res.loss_history
    if stop in ("diverged", "nonfinite"):
        talk.warn(
            f"training diverged (stop reason {stop!r}; the loss reached {np.max(losses):.3g}); "
            "the parameters are the last finite iterate: lower --lr"
        )
    elif losses.size >= 2 and not losses[-1] < losses[0]:
        talk.warn(
            f"the model did not train: the loss went {losses[0]:.4g} → {losses[-1]:.4g}; "
            "try another --lr or more --steps"
        )
    if model.is_classifier and classes is not None:
        labels = np.argmax(train.Y, axis=1) if train.Y.shape[1] > 1 else train.Y[:, 0]
        chance = np.bincount(labels.astype(np.int64)).max() / labels.size
        acc = model.accuracy(res.theta, train)
        if acc <= chance + 0.02 and chance < 1:
            talk.warn(
                f"training accuracy {acc:.3f} is at chance level (the largest class holds "
                f"{chance:.3f} of the samples): the model did not learn the task"
            )


# ----------------------------------------------------------------------------- reporting helpers
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


def _settings(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "hidden_default")}


def _write_json(path: Path, payload: dict) -> None:
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False)
    path.write_text(text + "\n", encoding="utf-8")


def _save_theta(path: Path, model, theta: np.ndarray) -> None:
    """Parameters and model spec, loadable by ``--theta`` (the spec builds the model)."""
    with open(path, "wb") as fh:
        np.savez(fh, theta=theta, sizes=np.array(model.sizes),
                 activation=model.activation, loss=model.loss_name)  # fmt: skip


def save_figure(fig, directory: Path, stem: str, formats: Sequence[str], dpi: int) -> list[str]:
    """Save ``fig`` as ``directory/stem.<format>`` for each format; returns the file names."""
    import matplotlib.pyplot as plt

    names = []
    try:
        for fmt in formats:
            name = f"{stem}.{fmt}"
            fig.savefig(directory / name, dpi=dpi, format=fmt, bbox_inches="tight")
            names.append(name)
    finally:
        plt.close(fig)
    return names


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


# Span engine cost: seconds per unit of n_samples * (K * h1 + sum h_l h_{l+1}) per point.
# Measured 1.1e-9 to 1.5e-9 on a busy 2-core machine (301x301 and 601x601 grids of the default
# [2, 16, 2] model on 200 samples; the issue's --points 10000 run, 27 min, gives 1.0e-9). The
# constant errs on the fast side, so that only jobs far beyond the machine are refused.
_SPAN_SECONDS_PER_UNIT = 1e-9
_BYTES_PER_SURFACE_POINT = 96  # coefficients (3), meshgrids and copies (5), loss, accuracy (8 B)


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def grid_estimate(model, n_train: int, n_test: int, n_x: int, n_y: int) -> tuple[float, int]:
    """Estimated seconds and bytes of the slices and surfaces of a landscape run."""
    sizes = model.sizes
    tail = sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    per_point = lambda K: K * sizes[1] + tail  # noqa: E731
    units = (n_train + n_test) * n_x * n_y * per_point(3) + n_train * 2 * n_x * per_point(2)
    seconds = units * _SPAN_SECONDS_PER_UNIT
    surfaces = 2 if n_test else 1
    memory = surfaces * n_x * n_y * _BYTES_PER_SURFACE_POINT + 4 * n_x * 8
    return seconds, memory


def _human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s" if s >= 1 else "under a second"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _human_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return ""


def _check_grid_budget(args, model, n_train, n_test, n_x, n_y) -> tuple[float, int]:
    seconds, memory = grid_estimate(model, n_train, n_test, n_x, n_y)
    ram = _physical_memory()
    problems = []
    if seconds > MAX_GRID_SECONDS:
        problems.append(f"about {_human_seconds(seconds)} of grid evaluation")
    if ram is not None and memory > MAX_GRID_MEMORY_FRACTION * ram:
        problems.append(
            f"about {_human_bytes(memory)} of memory (this machine has {_human_bytes(ram)})"
        )
    if problems and not args.force:
        raise CLIError(
            f"a {n_x}×{n_y} grid needs {' and '.join(problems)}; use fewer --points, "
            "or pass --force to run it anyway"
        )
    return seconds, memory


# ----------------------------------------------------------------------------- curvature
def _solver_budget(fn: Callable, tol: float, max_hvps: int, k: int, n: int, progress) -> dict:
    """Keyword arguments that bound an eigensolver: ``tol`` and ``max_hvps`` when ``fn`` takes
    them; else ``maxiter`` (thick-restart Lanczos restarts) that spends about ``max_hvps``."""
    kw: dict = {"tol": tol}
    if _accepts(fn, "max_hvps"):
        kw["max_hvps"] = max_hvps
    else:
        ncv = min(n, max(2 * k + 1, 20))
        keep = k + (ncv - k) // 2
        kw["maxiter"] = max(1, math.ceil((max_hvps - ncv) / max(1, ncv - keep)))
    if _accepts(fn, "progress"):
        kw["progress"] = progress
    return kw


def _curvature(
    model, theta, data, k: int, seed: int, grad_tol: float = CRITICAL, *,
    exact_max_params: int = 2000, device: str = "cpu", tol: float = 1e-6,
    max_hvps: int = 1000, progress: bool | None = False,
) -> dict:  # fmt: skip
    """Top/bottom eigenvalues, trace, density and classification.

    Small models (P <= ``exact_max_params``): one exact Hessian serves everything (formed on
    the CPU whatever the device). Larger ones: Lanczos at both ends of the spectrum (each at
    most ``max_hvps`` Hessian-vector products, tolerance ``tol``), Hutch++ for the trace,
    stochastic Lanczos quadrature, their HVPs on ``device``. The result says whether both
    ends converged (``converged``, ``n_hvps``, ``message``).
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
               "classification": classify(H), "converged": True, "n_hvps": 0,
               "message": "exact eigendecomposition"}  # fmt: skip
    else:
        kw = {"seed": seed, "device": device}
        budget = _solver_budget(top_eigen, tol, max_hvps, k, model.n_params, progress)
        top = top_eigen(model, theta, data, k=k, method="lanczos", which="LA", **kw, **budget)
        bottom = top_eigen(model, theta, data, k=k, method="lanczos", which="SA", **kw, **budget)
        bar = lambda fn: {"progress": progress} if _accepts(fn, "progress") else {}  # noqa: E731
        trace = hessian_trace(model, theta, data, method="hutch++", **kw, **bar(hessian_trace))
        density = spectral_density(model, theta, data, method="slq", **kw, **bar(spectral_density))
        ends = np.concatenate([bottom.eigenvalues, top.eigenvalues])
        ends_res = {"top": top, "bottom": bottom}
        hvps = {e: int(getattr(r, "n_hvps", r.n_matvecs)) for e, r in ends_res.items()}
        n_hvps = hvps["top"] + hvps["bottom"]
        converged = bool(np.all(top.converged) and np.all(bottom.converged))
        parts = []
        for name, res in ends_res.items():
            if not np.all(res.converged):
                said = getattr(res, "message", None)  # the solver's own words, when it has them
                parts.append(f"{name} eigenvalues not converged after {hvps[name]} HVPs "
                             f"(tol {tol:g}, --max-hvps {max_hvps})"
                             + (f": {said}" if said else ""))  # fmt: skip
        budget_text = f"tol {tol:g}, budget {max_hvps} HVPs per end"
        message = "; ".join(parts) if parts else f"converged in {n_hvps} HVPs ({budget_text})"
        out = {"top": np.sort(top.eigenvalues)[::-1], "bottom": np.sort(bottom.eigenvalues),
               "trace": trace.estimate, "trace_std_error": trace.std_error, "method": "lanczos",
               "density": density,
               "classification": classify(ends), "converged": converged, "n_hvps": n_hvps,
               "message": message}  # fmt: skip
    # never call a point that is not critical a minimum: report both facts
    out["classification"].grad_norm = grad_norm
    out["critical"] = grad_norm <= grad_tol
    out["grad_norm"] = grad_norm
    return out


def describe_point(curv: dict) -> str:
    """Words for the point: its kind when critical, else near-critical / not critical with the
    gradient norm, and what the Hessian looks like (tiny negative eigenvalues next to a large
    positive one are flat directions, not a saddle)."""
    cls = curv["classification"]
    g = curv["grad_norm"]
    lmax = float(np.max(curv["top"]))
    lmin = float(np.min(curv["bottom"]))
    if cls.kind == "saddle" and lmax > 0 and -lmin <= max(1e-3 * lmax, g):
        # negative eigenvalues this small are within what the remaining gradient can shift
        hessian = (
            "positive semidefinite up to small negative eigenvalues "
            f"(λmin = {lmin:.2g}, λmax = {lmax:.3g})"
        )
    elif cls.kind == "saddle":
        hessian = f"saddle (λmin = {lmin:.3g})"
    else:
        hessian = cls.kind.replace("_", " ")
    if curv["critical"]:
        return f"critical point (‖∇L‖ = {g:.1e}); Hessian: {hessian}"
    if g <= NEAR_CRITICAL:
        return f"near-critical (‖∇L‖ = {g:.1e}); Hessian: {hessian}"
    return f"not a critical point (‖∇L‖ = {g:.1e}); Hessian: {hessian}"


def _curvature_report(curv: dict, args) -> dict:
    cls = curv["classification"]
    return {"top_eigenvalues": curv["top"], "bottom_eigenvalues": curv["bottom"],
            "method": curv["method"], "trace": curv["trace"],
            "trace_std_error": curv["trace_std_error"],
            "converged": curv["converged"], "n_hvps": curv["n_hvps"], "message": curv["message"],
            "tol": args.tol, "max_hvps": args.max_hvps,
            "kind": cls.kind if curv["critical"] else "not_critical",
            "hessian_kind": cls.kind, "description": describe_point(curv),
            "saddle_index": cls.saddle_index,
            "n_positive": cls.n_positive, "n_negative": cls.n_negative,
            "n_zero": cls.n_zero, "condition_number": cls.condition_number,
            "grad_norm": curv["grad_norm"], "is_critical": curv["critical"],
            "is_near_critical": curv["grad_norm"] <= NEAR_CRITICAL}  # fmt: skip


def _run_curvature(args, model, theta, data, talk: _Talk, k: int) -> dict:
    if model.n_params <= 2000:
        talk(f"curvature: exact Hessian ({model.n_params} parameters)")
    else:
        talk(f"curvature: Lanczos at both ends of the spectrum ({model.n_params} parameters, "
             f"at most {args.max_hvps} HVPs per end, tol {args.tol:g})")  # fmt: skip
    progress = None if not args.quiet else False
    curv = _curvature(model, theta, data, k, args.seed, device=args.device, tol=args.tol,
                      max_hvps=args.max_hvps, progress=progress)  # fmt: skip
    if not curv["converged"]:
        talk.warn(curv["message"])
    return curv


def _announce_compile(talk: _Talk) -> None:
    if kernels_cold():
        talk("compiling kernels for this machine (first run only, ~1 min)")


# ----------------------------------------------------------------------------- landscape
def cmd_landscape(args) -> int:
    from . import directions as dirs
    from ._device import resolve_device
    from .curvature import top_eigen
    from .landscape import slice_1d, surface_2d
    from .sharpness import epsilon_sharpness, sam_sharpness

    t_start = time.perf_counter()
    talk = _Talk(args.quiet)
    timings: dict[str, float] = {}
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    loaded = bool(args.theta or args.torch)
    if loaded and args.directions == "pca":
        raise CLIError("--directions pca needs a training trajectory: not with --theta/--torch")
    output = OutputDir(args.out, args.overwrite)
    with output as out:
        t = time.perf_counter()
        model, train, test, classes, theta, source, d = _prepare(args, talk, split=True)
        timings["data_s"] = time.perf_counter() - t
        alphas_n = args.points_x or args.points
        betas_n = args.points_y or args.points
        est_s, est_b = _check_grid_budget(args, model, train.X.shape[0],
                                          0 if test is None else test.X.shape[0],
                                          alphas_n, betas_n)  # fmt: skip
        _announce_compile(talk)

        t = time.perf_counter()
        res = None
        if theta is None:
            res = _fit(args, model, train, talk)
            theta = res.theta
            _check_training(res, model, train, talk, classes)
        timings["train_s"] = time.perf_counter() - t

        t = time.perf_counter()
        trajectory_xy = None
        talk(f"directions: {args.directions}")
        if args.directions == "random":
            d1, d2 = dirs.pair(model, theta, seed=args.seed, norm=args.norm,
                               ignore_bias=args.ignore_bias)  # fmt: skip
            direction_info = {"kind": "random", "norm": args.norm,
                              "ignore_bias": args.ignore_bias, "seed": args.seed}  # fmt: skip
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
        if trajectory_xy is None and res is not None and res.trajectory is not None:
            # project the training path onto the plane of (d1, d2) for the overlay
            D = np.stack([np.asarray(d1), np.asarray(d2)])
            G = D @ D.T
            trajectory_xy = np.linalg.solve(G, D @ (res.trajectory - theta).T).T
        timings["directions_s"] = time.perf_counter() - t

        auto = trajectory_xy if args.directions == "pca" else None
        alphas = _grid(args, "x", None if auto is None else auto[:, 0])
        betas = _grid(args, "y", None if auto is None else auto[:, 1])
        talk(f"grid: {alphas.size}×{betas.size} points and two slices "
             f"(estimated {_human_seconds(est_s)}, {_human_bytes(est_b)})"
             + (f", checkpoints in {args.checkpoint}" if args.checkpoint else ""))  # fmt: skip
        t = time.perf_counter()

        def engine(name: str) -> dict:
            kw = {"progress": None if not args.quiet else False, "device": args.device}
            if args.checkpoint:
                kw["checkpoint_dir"] = Path(args.checkpoint) / name
            return kw

        s1 = slice_1d(model, theta, d1, train, None, alphas, **engine("slice_d1"))
        s2 = slice_1d(model, theta, d2, train, None, betas, **engine("slice_d2"))
        surf = surface_2d(model, theta, d1, d2, train, None, alphas, betas, **engine("surface"))
        surf_test = (surface_2d(model, theta, d1, d2, test, None, alphas, betas,
                                **engine("surface_test"))
                     if test is not None else None)  # fmt: skip
        timings["landscape_s"] = time.perf_counter() - t

        t = time.perf_counter()
        curv = _run_curvature(args, model, theta, train, talk, args.top)
        timings["curvature_s"] = time.perf_counter() - t

        t = time.perf_counter()
        talk(f"sharpness: ε = {args.epsilon:g} over {args.sharpness_directions} directions, SAM")
        lam_max = float(curv["top"][0])
        eps_sharp = epsilon_sharpness(model, theta, train, None, eps=args.epsilon,
                                      n_directions=args.sharpness_directions, seed=args.seed,
                                      lambda_max=lam_max, device=args.device)  # fmt: skip
        sam = sam_sharpness(model, theta, train, None, rho=args.epsilon, device=args.device)
        timings["sharpness_s"] = time.perf_counter() - t

        t = time.perf_counter()
        talk(f"writing {args.out}")
        files = _export_landscape(args, out, model, theta, surf, surf_test, s1, s2, curv,
                                  trajectory_xy)  # fmt: skip
        timings["export_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_start

        training = {"source": source} if res is None else {
            "method": res.method, "steps": res.n_steps, "stop_reason": res.stop_reason,
            "gtol": res.settings.get("gtol"), "initial_loss": float(res.loss_history[0]),
            "final_loss": res.final_loss}  # fmt: skip
        training |= {
            "grad_norm": float(np.linalg.norm(model.grad(theta, train)[1])),
            "train_accuracy": model.accuracy(theta, train) if model.is_classifier else None,
            "test_loss": model.loss(theta, test) if test is not None else None,
            "test_accuracy": model.accuracy(theta, test)
            if test is not None and model.is_classifier else None,
        }  # fmt: skip
        report = {
            "command": "landscape",
            "settings": _settings(args),
            "versions": _versions(),
            "seed": args.seed,
            "data": {"name": str(args.data), "n_train": int(train.X.shape[0]),
                     "n_test": int(test.X.shape[0]) if test is not None else 0,
                     "n_features": int(d), "standardized_on": "training split"
                     if args.standardize else None,
                     "classes": classes.tolist() if classes is not None else None},
            "model": model.to_dict() | {"n_params": model.n_params},
            "training": training,
            "directions": direction_info,
            "grid": {"alphas": [float(alphas[0]), float(alphas[-1]), int(alphas.size)],
                     "betas": [float(betas[0]), float(betas[-1]), int(betas.size)],
                     "estimated_s": est_s, "estimated_bytes": est_b},
            "surface": {"loss_at_theta": model.loss(theta, train),
                        "min": float(surf.loss.min()), "max": float(surf.loss.max()),
                        "test_loss_at_theta": model.loss(theta, test)
                        if surf_test is not None else None},
            "curvature": _curvature_report(curv, args),
            "sharpness": {"epsilon": args.epsilon,
                          "max_increase": eps_sharp.max_increase,
                          "mean_increase": eps_sharp.mean_increase,
                          "quadratic_prediction": eps_sharp.quadratic_prediction,
                          "sam_rho": args.epsilon, "sam_sharpness": sam},
            "warnings": talk.warnings,
            "files": sorted([*files, "report.json"]),
            "timings": timings,
        }  # fmt: skip
        _write_json(out / "report.json", report)
        output.commit()

    if not args.quiet:
        if res is None:
            train_row = ("parameters", str(args.theta or args.torch))
        else:
            train_row = ("training", f"{res.method}, {res.n_steps} steps ({res.stop_reason})")
        rows = [
            ("model", f"{model!r} ({model.n_params} params)"),
            ("data", f"{args.data}: {train.X.shape[0]} train"
                     + (f", {test.X.shape[0]} test" if test is not None else "")),
            train_row,
            ("loss at θ*", f"{report['surface']['loss_at_theta']:.6g}"
                           + (f" (test {report['surface']['test_loss_at_theta']:.6g})"
                              if surf_test is not None else "")),
            ("λmax", f"{lam_max:.6g}"),
            ("trace", f"{curv['trace']:.6g}"),
            ("point", describe_point(curv)),
            ("curvature", curv["message"]),
            (f"ε-sharpness (ε={args.epsilon:g})", f"max {eps_sharp.max_increase:.4g}, "
                                                  f"½ε²λmax {eps_sharp.quadratic_prediction:.4g}"),
            *(("warning", w) for w in talk.warnings if w != curv["message"]),
            ("output", str(args.out)),
            ("wall time", f"{timings['total_s']:.2f} s"),
        ]  # fmt: skip
        print(_summary(rows))
    return 0


def _export_landscape(args, out: Path, model, theta, surf, surf_test, s1, s2, curv, trajectory_xy):
    import matplotlib.pyplot as plt

    from . import io, plot

    files = ["surface.csv", "surface.npz", "slice_d1.csv", "slice_d2.csv", "surface.gp",
             "theta.npz"]  # fmt: skip
    io.write_gnuplot(surf, out / "surface.gp", data_path=out / "surface.csv",
                     output="surface_gp.png")  # fmt: skip
    io.save_npz(surf, out / "surface.npz")
    io.save_csv(s1, out / "slice_d1.csv")
    io.save_csv(s2, out / "slice_d2.csv")
    _save_theta(out / "theta.npz", model, theta)
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
    fig_kw = {"formats": args.format, "dpi": args.dpi}
    if trajectory_xy is not None:
        fig = plot.trajectory(surf, trajectory_xy, log=log)
    else:
        fig = plot.contour(surf, log=log)
    files += save_figure(fig, out, "contour", **fig_kw)
    files += save_figure(plot.surface3d(surf, log=log), out, "surface3d", **fig_kw)
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
    plot.slice_plot(s1, ax=axes[0], title="along d1")
    plot.slice_plot(s2, ax=axes[1], title="along d2")
    axes[1].set_xlabel("β")
    fig.tight_layout()
    files += save_figure(fig, out, "slices", **fig_kw)
    files += save_figure(plot.spectrum(curv["density"]), out, "spectrum", **fig_kw)
    return files


# ----------------------------------------------------------------------------- hessian
def cmd_hessian(args) -> int:
    from ._device import resolve_device

    t_start = time.perf_counter()
    talk = _Talk(args.quiet)
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    output = OutputDir(args.out, args.overwrite)
    with output as out:
        model, data, _, classes, theta, source, _ = _prepare(args, talk)
        _announce_compile(talk)
        if theta is None:
            res = _fit(args, model, data, talk)
            theta = res.theta
            _check_training(res, model, data, talk, classes)
            source = {"trained": res.method, "steps": res.n_steps, "stop_reason": res.stop_reason}
        curv = _run_curvature(args, model, theta, data, talk, args.top)
        density = curv["density"]
        k = len(curv["top"])
        report = {
            "command": "hessian",
            "settings": _settings(args),
            "versions": _versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "parameters": source,
            "loss": model.loss(theta, data),
            "grad_norm": curv["grad_norm"],
            "density": {"grid": density.grid, "density": density.density, "sigma": density.sigma},
            **_curvature_report(curv, args),
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        from . import plot

        talk(f"writing {args.out}")
        files = ["hessian.json", "theta.npz"]
        _save_theta(out / "theta.npz", model, theta)
        files += save_figure(plot.spectrum(density), out, "spectrum", args.format, args.dpi)
        report["files"] = sorted(files)
        _write_json(out / "hessian.json", report)
        output.commit()
    if not args.quiet:
        fmt = ", ".join
        print(_summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("loss", f"{report['loss']:.6g}  (‖∇L‖ {report['grad_norm']:.2e})"),
            (f"top {k}", fmt(f"{v:.5g}" for v in curv["top"])),
            (f"bottom {k}", fmt(f"{v:.5g}" for v in curv["bottom"])),
            ("trace", f"{curv['trace']:.6g} ± {curv['trace_std_error']:.2g} ({curv['method']})"),
            ("point", describe_point(curv)),
            ("curvature", curv["message"]),
            *(("warning", w) for w in talk.warnings if w != curv["message"]),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- connect
def cmd_connect(args) -> int:
    from . import plot
    from ._device import resolve_device
    from .paths import mode_connectivity

    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    t_start = time.perf_counter()
    talk = _Talk(args.quiet)
    output = OutputDir(args.out, args.overwrite)
    with output as out:
        model, data, _, classes, _, _, _ = _prepare(args, talk)
        _announce_compile(talk)
        res_a = _fit(args, model, data, talk)
        _check_training(res_a, model, data, talk, classes)
        res_b = _fit(args, model, data, talk, seed=args.seed + 1)
        _check_training(res_b, model, data, talk, classes)
        talk(f"paths: the straight segment and a Bézier curve ({args.bezier_steps} steps), "
             f"{args.points} points each")  # fmt: skip
        mc = mode_connectivity(model, res_a.theta, res_b.theta, data, None, ts=args.points,
                               fit=True, steps=args.bezier_steps, seed=args.seed,
                               progress=None if not args.quiet else False,
                               device=args.device)  # fmt: skip
        report = {
            "command": "connect",
            "settings": _settings(args),
            "versions": _versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "training": [{"seed": s, "stop_reason": r.stop_reason, "steps": r.n_steps}
                         for s, r in ((args.seed, res_a), (args.seed + 1, res_b))],
            "endpoint_loss": mc.linear.endpoint_loss,
            "linear_barrier": mc.linear_barrier, "curve_barrier": mc.curve_barrier,
            "linear_connected": mc.linear_connected, "curve_connected": mc.curve_connected,
            "threshold": mc.threshold,
            "linear": {"t": mc.linear.ts, "loss": mc.linear.loss},
            "curve": {"t": mc.curve.ts, "loss": mc.curve.loss} if mc.curve is not None else None,
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        talk(f"writing {args.out}")
        paths = [mc.linear] + ([mc.curve] if mc.curve is not None else [])
        files = save_figure(plot.path_profile(paths), out, "paths", args.format, args.dpi)
        report["files"] = sorted([*files, "connect.json"])
        _write_json(out / "connect.json", report)
        output.commit()
    if not args.quiet:
        print(_summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("endpoints", f"loss {mc.linear.endpoint_loss[0]:.5g} (seed {args.seed}), "
                          f"{mc.linear.endpoint_loss[1]:.5g} (seed {args.seed + 1})"),
            ("linear barrier", f"{mc.linear_barrier:.5g}"),
            ("Bézier barrier", f"{mc.curve_barrier:.5g}"),
            *(("warning", w) for w in talk.warnings),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- eos
def cmd_eos(args) -> int:
    from . import plot
    from ._device import resolve_device
    from .eos import edge_of_stability

    t_start = time.perf_counter()
    talk = _Talk(args.quiet)
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    output = OutputDir(args.out, args.overwrite)
    with output as out:
        if args.data == "eos-default":
            _refuse(
                args,
                ("--loss", "--model", "--header"),
                "with the default eos data (an MSE regression)",
            )
            talk("data: the default regression y = sin(2 x0) cos(x1), 60 samples")
            # a regression a small tanh MLP cannot fit at once: y = sin(2 x0) cos(x1), standardized
            rng = np.random.default_rng(args.seed)
            X = rng.normal(size=(60, 4))
            y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1])
            y = (y - y.mean()) / y.std()
            hidden = args.hidden if args.hidden is not None else args.hidden_default
            model = _spec_model([4, *hidden, 1], args.activation or "tanh", "mse")
            data = model.batch(X, y)
        else:
            model, data, _, _, _, _, _ = _prepare(args, talk)
        _announce_compile(talk)
        lr, steps = args.lr or 0.1, args.steps or 800
        talk(f"full-batch GD: η = {lr:g}, {steps} steps, λmax every {args.every}")
        res = edge_of_stability(model, data, None, lr=lr, steps=steps, every=args.every,
                                seed=args.seed, device=args.device)  # fmt: skip
        if res.stop_reason in ("diverged", "nonfinite"):
            talk.warn(f"GD diverged (stop reason {res.stop_reason!r}): lower --lr")
        report = {
            "command": "eos",
            "settings": _settings(args),
            "versions": _versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "lr": res.lr, "threshold": res.threshold, "steps": res.steps, "loss": res.loss,
            "lambda_max": res.lambda_max, "stop_reason": res.stop_reason,
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        talk(f"writing {args.out}")
        files = save_figure(plot.eos(res), out, "eos", args.format, args.dpi)
        report["files"] = sorted([*files, "eos.json"])
        _write_json(out / "eos.json", report)
        output.commit()
    if not args.quiet:
        print(_summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("2/η", f"{res.threshold:.5g}"),
            ("λmax first → last", f"{res.lambda_max[0]:.5g} → {res.lambda_max[-1]:.5g}"),
            ("loss first → last", f"{res.loss[0]:.5g} → {res.loss[-1]:.5g}"),
            ("stop", res.stop_reason),
            *(("warning", w) for w in talk.warnings),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- plot
def cmd_plot(args) -> int:
    from . import io, plot
    from .landscape import Slice

    path = Path(args.file)
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    try:
        result = io.load(path)
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise CLIError(f"{path}: not a surface or slice saved by fastscape ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None  # fmt: skip
    except Exception as exc:  # zip/HDF5 errors of corrupt files
        raise CLIError(f"{path}: cannot read it ({type(exc).__name__})") from None
    target = Path(args.out) if args.out else path.with_suffix("")
    formats = args.format
    if target.suffix.lower().lstrip(".") in FIGURE_FORMATS:
        if args.format_given:
            raise CLIError("give the figure format either as --out's suffix or with --format")
        formats = (target.suffix.lower().lstrip("."),)
        target = target.with_suffix("")
    outputs = [target.with_name(f"{target.name}.{fmt}") for fmt in formats]
    existing = [str(o) for o in outputs if o.exists()]
    if existing and not args.overwrite:
        raise CLIError(
            f"{existing[0]} exists; pass --overwrite to replace it or choose another --out"
        )
    if isinstance(result, Slice):
        fig = plot.slice_plot(result, log=args.log)
    elif args.kind == "3d":
        fig = plot.surface3d(result, log=args.log)
    elif args.kind == "heatmap":
        fig = plot.heatmap(result, log=args.log)
    else:
        fig = plot.contour(result, log=args.log)
    import matplotlib.pyplot as plt

    from .landscape import atomic_write

    mask = _umask()
    try:
        for fmt, dest in zip(formats, outputs):
            atomic_write(dest, lambda tmp, f=fmt: fig.savefig(tmp, dpi=args.dpi, format=f,
                                                               bbox_inches="tight"),
                         suffix=f".{fmt}")  # fmt: skip
            os.chmod(dest, 0o666 & ~mask)
    finally:
        plt.close(fig)
    if not args.quiet:
        for dest in outputs:
            print(f"wrote {dest}")
    return 0


# ----------------------------------------------------------------------------- parser
def _landscape_parser(sub) -> None:
    p = sub.add_parser(
        "landscape", help="train a model and map its loss landscape (the main job)",
        description="Fit a model (or load one: --theta, --torch), then compute 1D slices and a "
        "2D surface of the loss around the solution, the top Hessian eigenvalues, the "
        "critical-point classification and sharpness; write CSV/NPZ/HDF5, a gnuplot script, "
        "report.json and figures into --out.",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p)
    m = p.add_argument_group("bring your own model (nothing is trained)")
    m.add_argument(
        "--theta", default=None, help="parameters saved by fastscape (theta.npz, with its spec)"
    )
    m.add_argument("--torch", default=None,
                   help="a torch.save'd nn.Sequential, or a state_dict (with --activation; "
                   "--hidden, when given, is checked against its shapes)")  # fmt: skip
    g = p.add_argument_group("directions and grid")
    g.add_argument(
        "--directions", choices=("random", "pca", "hessian"), default="random",
        help="random (normalized, Li et al. 2018), pca of the training trajectory, "
        "or the top-2 Hessian eigenvectors",
    )  # fmt: skip
    g.add_argument(
        "--norm", choices=("filter", "layer", "model", "none"), default="filter",
        help="normalization of random directions",
    )  # fmt: skip
    g.add_argument(
        "--ignore-bias", dest="ignore_bias", action="store_true", default=True,
        help="zero the bias part of random directions (the default)",
    )  # fmt: skip
    g.add_argument(
        "--keep-bias", dest="ignore_bias", action="store_false",
        help="perturb biases too, scaled per layer to |b| (default: biases are not perturbed)",
    )  # fmt: skip
    g.add_argument(
        "--range", type=_range, default=None,
        help="grid range LO:HI [default: -1:1; for pca, the span of the training "
        "trajectory with a margin]",
    )  # fmt: skip
    g.add_argument("--points", type=_positive_int, default=51, help="grid points per axis")
    g.add_argument("--range-x", type=_range, default=None, help="range along d1 (overrides)")
    g.add_argument("--range-y", type=_range, default=None, help="range along d2 (overrides)")
    g.add_argument("--points-x", type=_positive_int, default=None, help="points along d1")
    g.add_argument("--points-y", type=_positive_int, default=None, help="points along d2")
    g.add_argument(
        "--test-fraction", type=_fraction, default=None,
        help="hold out this fraction and map the held-out loss too",
    )  # fmt: skip
    g.add_argument(
        "--checkpoint", default=None,
        help="directory of finished grid tiles: an interrupted run resumes from it",
    )  # fmt: skip
    g.add_argument(
        "--force", action="store_true",
        help="run a grid whose estimated time or memory is far beyond this machine "
        "(default: refused, with the estimate)",
    )  # fmt: skip
    c = p.add_argument_group("curvature and sharpness")
    c.add_argument("--top", type=_positive_int, default=3, help="top Hessian eigenvalues")
    c.add_argument(
        "--epsilon", type=_positive_float, default=0.05, help="radius of ε-sharpness and SAM's ρ"
    )
    c.add_argument(
        "--sharpness-directions", type=_positive_int, default=256,
        help="random directions probed for ε-sharpness",
    )  # fmt: skip
    _add_curvature_budget(p)
    _add_output_options(p, "fastscape-out")
    p.set_defaults(func=cmd_landscape)


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
    _landscape_parser(sub)

    p = sub.add_parser(
        "hessian", help="Hessian eigenvalues, trace, density and classification",
        description="Curvature of a model at trained parameters (--theta FILE.npz written by "
        "fastscape, whose stored spec builds the model, or trained on the spot): top and "
        "bottom eigenvalues, trace, spectral density and the critical-point classification.",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p)
    p.add_argument("--theta", default=None, help="parameters (theta.npz written by fastscape)")
    p.add_argument("--top", type=_positive_int, default=5, help="eigenvalues at each end")
    _add_curvature_budget(p)
    _add_output_options(p, "fastscape-hessian")
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
    _add_output_options(p, "fastscape-connect")
    p.set_defaults(func=cmd_connect)

    p = sub.add_parser(
        "eos", help="edge of stability: λmax during full-batch GD against 2/η",
        description="Full-batch gradient descent recording the loss and the top Hessian "
        "eigenvalue (Cohen et al. 2021). The default data is a small regression problem "
        "(60 samples, MSE, a 4-16-16-1 tanh MLP, η = 0.1) on which progressive sharpening "
        "and the edge of stability show in seconds.",
        formatter_class=_Formatter,
    )  # fmt: skip
    _add_data_model_options(p, data="eos-default", hidden=(16, 16), training=False)
    p.add_argument("--every", type=_positive_int, default=20, help="steps between λmax")
    _add_output_options(p, "fastscape-eos")
    p.set_defaults(func=cmd_eos)

    p = sub.add_parser(
        "plot", help="re-plot a saved .npz/.h5/.csv result", formatter_class=_Formatter
    )
    p.add_argument("file", help="a surface or slice saved by fastscape")
    p.add_argument(
        "--kind", choices=("contour", "heatmap", "3d"), default="contour",
        help="picture of a surface (slices are always drawn as curves)",
    )  # fmt: skip
    p.add_argument("--log", action="store_true", help="log scale (log-spaced contour levels)")
    p.add_argument("--out", default=None, help="figure path without or with suffix [default: FILE "
                   "without its suffix]")  # fmt: skip
    p.add_argument(
        "--format", type=_formats, default=None,
        help="figure formats, a comma list of png, pdf, svg [default: png]",
    )  # fmt: skip
    p.add_argument("--dpi", type=_positive_int, default=150, help="figure resolution")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
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
    import zipfile

    from ._device import DeviceUnavailableError

    parser = build_parser()
    args = parser.parse_args(_join_ranges(sys.argv[1:] if argv is None else list(argv)))
    if args.command == "plot":
        args.format_given = args.format is not None
        args.format = args.format or ("png",)
    from ._threads import threads

    previous = None
    if argv is None and hasattr(signal, "SIGTERM"):
        # the console script: a termination cleans up like Ctrl-C (the old result stays)
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with threads(getattr(args, "threads", None)):
            return args.func(args)
    except (CLIError, ValueError, TypeError, OSError, ImportError, DeviceUnavailableError,
            zipfile.BadZipFile, EOFError) as exc:  # fmt: skip
        if os.environ.get("FASTSCAPE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastscape: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastscape: interrupted; the previous result, if any, is untouched", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
