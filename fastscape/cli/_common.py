"""Shared by the commands: errors, stage messages, summaries, report.json."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import __version__

BUILTIN_TASKS = {
    "blobs": "softmax_ce", "line": "mse", "digits": "softmax_ce",
    "breast_cancer": "softmax_ce", "iris": "softmax_ce", "wine": "softmax_ce",
}  # fmt: skip
LOSSES = ("softmax_ce", "logistic", "mse")
FIGURE_FORMATS = ("png", "pdf", "svg")
SURFACE_FORMATS = ("vtk",)  # --format values written from the surface's data, not a figure
MAX_INFERRED_CLASSES = 50  # integer targets with more distinct values: ask for --loss
NEAR_CRITICAL = 1e-3  # ‖∇L‖ below this (and above the critical tolerance): "near-critical"
EXACT_MAX_PARAMS = 2000  # curvature from the exact Hessian up to this many parameters
CRITICAL = 1e-5  # ‖∇L‖ at or below this: a critical point
# Grid budget: refuse (unless --force) beyond these. The time constant is calibrated on the span
# engine (see _grid_estimate); the limits are deliberately generous: only jobs far beyond the
# machine are refused, the others are announced with their estimate.
MAX_GRID_SECONDS = 3600.0
MAX_GRID_MEMORY_FRACTION = 0.5


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- messages
class Talk:
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


# ----------------------------------------------------------------------------- reports
def show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def versions() -> dict:
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


def settings(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "hidden_default")}


def write_json(path: Path, payload: dict) -> None:
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False)
    path.write_text(text + "\n", encoding="utf-8")


def check_html(args) -> None:
    """Settle ``--html`` before any work: on by default where Plotly (the ``report`` extra) is
    installed; asked for explicitly without it, a clear error."""
    from .. import report

    if args.html is None:
        args.html = report.available()
    elif args.html and not report.available():
        raise CLIError('--html needs Plotly: pip install "fastscape[report]" (or pass --no-html)')


def write_html(args, out: Path, payload: dict, **figures) -> list[str]:
    """``report.html`` beside the JSON report when ``--html`` is on (see :func:`check_html`);
    the page shows ``payload`` exactly as the JSON file holds it. Returns the file names."""
    if not args.html:
        return []
    from .. import report

    report.write_html(out / "report.html", _jsonable(payload), **figures)
    return ["report.html"]


def preload_writers(args) -> None:
    """Import what writing the results needs (Matplotlib and its 3D axes, h5py, Plotly where
    ``--html`` is on): called while the main process waits on a background compile, so that
    these imports overlap it instead of following it. Anything missing is left to the writer
    itself, which reports it."""
    import importlib

    names = ["fastscape.io", "fastscape.plot", "mpl_toolkits.mplot3d", "h5py"]
    if getattr(args, "html", False):
        names += ["plotly.graph_objects", "plotly.io", "plotly.offline"]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def summary(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    # the rule spans the table, up to 100 columns (a long value may run past it)
    line = "-" * min(100, width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k.ljust(width)}   {v}" for k, v in rows), line])


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s" if s >= 1 else "under a second"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def human_bytes(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return ""


def save_figures(fig, out: Path, stem: str, args) -> list[str]:
    """Save ``fig`` as ``out/stem.<format>`` for each figure format of --format at --dpi
    (with :func:`fastscape.plot.save`); returns the file names."""
    from .. import plot

    formats = [f for f in args.format if f in FIGURE_FORMATS]
    if not formats:  # --format vtk alone: no figure
        return []
    return [p.name for p in plot.save(fig, out / stem, formats, args.dpi)]


def start_cluster(args, talk, stack):
    """The Dask client of ``--scheduler`` / ``--workers`` (None without them), closed by
    ``stack``; says where the cluster and its dashboard are. Workers with another fastscape
    are a one-line CLIError."""
    if not (getattr(args, "scheduler", None) or getattr(args, "workers", None)):
        return None
    from ..distributed import WorkerMismatchError, cluster_client, dashboard

    try:
        client = stack.enter_context(cluster_client(args.scheduler, args.workers))
    except WorkerMismatchError as exc:  # one line, like every input error
        raise CLIError(str(exc)) from None
    link = dashboard(client)
    where = f"{len(client.nthreads())} workers at {client.scheduler.address}"
    board = f"dashboard {link}" if link else "no dashboard: pip install bokeh"
    talk(f"Dask cluster: {where}, {board}")
    return client
