"""The argument parser: option types, option groups and the subcommands' parsers."""

from __future__ import annotations

import argparse

import numpy as np

from .. import __version__
from ._commands import cmd_connect, cmd_eos, cmd_hessian, cmd_plot
from ._common import FIGURE_FORMATS, LOSSES, MAX_INFERRED_CLASSES, SURFACE_FORMATS, show
from ._landscape import cmd_landscape
from ._matrices import add_matrix_options

#: The model family's activations (``fastscape.models.ACTIVATIONS``, checked by a test): named
#: here so that the parser does not import the models and their kernels before the CLI talks.
ACTIVATION_NAMES = ("identity", "tanh", "relu", "sigmoid", "leaky_relu", "gelu", "gelu_tanh")

EPILOG = """\
examples:
  fastscape landscape             # two blobs, a small tanh MLP, results in ./fastscape-out
  fastscape landscape --data digits --model mlp --hidden 32 --points 41 --out digits-out
  fastscape landscape --data breast_cancer --model logistic --test-fraction 0.3
  fastscape landscape --data prices.csv --loss mse --hidden 32
  fastscape landscape --torch net.pt --data train.npz --loss softmax_ce
  fastscape hessian --data iris --model mlp --hidden 8 --top 5
  fastscape hessian --theta fastscape-out/theta.npz
  fastscape hessian --theta fastscape-out/theta.npz --ggn --fisher --blocks --diagonal
  fastscape connect --data digits --hidden 32 --align weights
  fastscape eos --lr 0.05 --steps 600
  fastscape plot fastscape-out/surface.npz --format png,pdf
  fastscape plot fastscape-out/slices.csv --log

Every subcommand exits with status 2 and a one-line message on bad arguments, unreadable
files or non-finite data. Set FASTSCAPE_DEBUG=1 to see the full traceback instead.
"""


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


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def _beta(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _betas(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2 in [0, 1), got {text!r}")
    return _beta(parts[0]), _beta(parts[1])


def _add_eos_optimizer_options(p: argparse.ArgumentParser) -> None:
    """eos: the optimiser whose edge of stability is tracked, and the MSE convention."""
    g = p.add_argument_group("optimizer")
    g.add_argument(
        "--optimizer", choices=("gd", "momentum", "adam"), default="gd",
        help="gd: threshold 2/η; momentum: heavy ball v ← βv + ∇L, θ ← θ − ηv, threshold "
        "(2+2β)/η; adam: the preconditioned sharpness λmax(P⁻¹H) against (2+2β1)/((1−β1)η) "
        "(Cohen et al. 2022) [default: gd]",
    )  # fmt: skip
    g.add_argument(
        "--momentum", type=_beta, default=None, metavar="BETA",
        help="heavy-ball β, with --optimizer momentum only [default: 0.9]",
    )  # fmt: skip
    g.add_argument(
        "--betas", type=_betas, default=None, metavar="B1,B2",
        help="Adam's β1,β2, with --optimizer adam only [default: 0.9,0.999]",
    )  # fmt: skip
    g.add_argument(
        "--adam-eps", type=_positive_float, default=None, metavar="EPS",
        help="Adam's ε, with --optimizer adam only [default: 1e-8]",
    )  # fmt: skip
    g.add_argument(
        "--mse-convention", choices=("sum", "half_sum"), default=None,
        help="MSE losses only: sum (fastscape's mean Σ(f−y)²) or half_sum (Cohen et al.'s "
        "mean ½Σ(f−y)², which halves λmax at the same iterate) [default: sum]",
    )  # fmt: skip


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


def _format_list(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(v.strip().lower().lstrip(".") for v in text.split(",")))
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {', '.join(allowed)}, got {text!r}"
            )
        return names

    return parse


_formats = _format_list(FIGURE_FORMATS)
_surface_formats = _format_list(FIGURE_FORMATS + SURFACE_FORMATS)
_FORMAT_HELP = "figure formats, a comma list of png, pdf, svg [default: png]"
_SURFACE_FORMAT_HELP = (
    "output formats, a comma list of the figure formats png, pdf, svg and vtk (the surface "
    "as a VTK file for ParaView, needs meshio: pip install 'fastscape[vtk]') [default: png]"
)


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
        help=f"hidden layer sizes of the MLP, e.g. 32,32 [default: {show(hidden)}]",
    )  # fmt: skip
    g.add_argument(
        "--activation", choices=ACTIVATION_NAMES, default=None,
        help="hidden activation, PyTorch's definitions [default: tanh]",
    )  # fmt: skip
    g.add_argument(
        "--l2", type=_nonnegative_float, default=None, metavar="LAMBDA",
        help="L2 term ½·λ·‖w‖² on the weights, added to the loss everywhere (gives separable "
        "data a minimum) [default: 0, or what a --theta file stores]",
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


def _add_output_options(
    p: argparse.ArgumentParser,
    default_out: str,
    figures: bool = True,
    html: bool = False,
    surfaces: bool = False,
) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--out", default=default_out, help="output directory")
    o.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier result in --out (the old one stays until this run succeeds)",
    )  # fmt: skip
    if figures:
        o.add_argument(
            "--format", type=_surface_formats if surfaces else _formats, default=("png",),
            help=_SURFACE_FORMAT_HELP if surfaces else _FORMAT_HELP,
        )  # fmt: skip
        o.add_argument("--dpi", type=_positive_int, default=150, help="figure resolution")
    if html:
        o.add_argument(
            "--html", action=argparse.BooleanOptionalAction, default=None,
            help="write report.html, an interactive page of the figures and numbers that opens "
            "offline (needs the report extra: pip install 'fastscape[report]') "
            "[default: when Plotly is installed]",
        )  # fmt: skip


def _add_cluster_options(p: argparse.ArgumentParser, what: str) -> None:
    k = p.add_argument_group(
        f'Dask cluster (pip install "fastscape[dask]"): {what}'
    ).add_mutually_exclusive_group()
    k.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (tcp://host:8786)")  # fmt: skip
    k.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="start a local Dask cluster of N worker processes on 127.0.0.1 "
                   "(one thread each)")  # fmt: skip


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
    _add_cluster_options(
        p,
        "the grid, the slices and ε-sharpness run as tiles on its workers, bitwise equal to "
        "a local run; the rest runs here",
    )
    c = p.add_argument_group("curvature and sharpness")
    c.add_argument("--top", type=_positive_int, default=3, help="top Hessian eigenvalues")
    c.add_argument(
        "--epsilon", type=_positive_float, default=0.05, help="radius of ε-sharpness and SAM's ρ"
    )
    c.add_argument(
        "--sharpness-directions", type=_positive_int, default=256,
        help="random directions probed for ε-sharpness",
    )  # fmt: skip
    c.add_argument(
        "--curvature-map", action="store_true",
        help="λmax and λmin of the Hessian at every point of a grid on the surface's plane and "
        "ranges, and |λmin/λmax| (Li et al. 2018): curvature_map.npz/.csv/.png",
    )  # fmt: skip
    c.add_argument(
        "--curvature-map-points", type=_positive_int, default=None, metavar="N",
        help="points per axis of the curvature map [default: the surface's grid, at most 21 "
        "per axis; the same grid when it is no larger]",
    )  # fmt: skip
    _add_curvature_budget(p)
    _add_output_options(p, "fastscape-out", html=True, surfaces=True)
    scale = p.add_argument_group("figure scale").add_mutually_exclusive_group()
    scale.add_argument(
        "--log", dest="log", action="store_true", default=None,
        help="log-spaced contour levels, log loss axes on the slices and log10(loss) on the 3D "
        "plot (default: when the loss on the grid spans more than two decades)",
    )  # fmt: skip
    scale.add_argument("--linear", dest="log", action="store_false", help="linear scales even then")
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
    add_matrix_options(p, _positive_int)
    _add_output_options(p, "fastscape-hessian", html=True)
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
    p.add_argument(
        "--align", choices=("weights", "activations"), default=None,
        help="also permute the hidden units of the second solution to match the first (Git "
        "Re-Basin: weight matching, or activation matching on the data) and measure both "
        "paths again; the barriers before and after are reported",
    )  # fmt: skip
    _add_output_options(p, "fastscape-connect", html=True)
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
    _add_eos_optimizer_options(p)
    _add_cluster_options(
        p,
        "the samples sharded across its workers, the gradient of every step and the HVPs "
        "of every sharpness measurement there (equal to a local run to about 1e-15 per step); "
        "the update here",
    )
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
        "--format", type=_surface_formats, default=None, help=_SURFACE_FORMAT_HELP,
    )  # fmt: skip
    p.add_argument("--dpi", type=_positive_int, default=150, help="figure resolution")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=cmd_plot)
    return parser
