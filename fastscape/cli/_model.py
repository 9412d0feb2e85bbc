"""The model of a run: built from the options, or loaded from a theta file or a PyTorch file;
and :func:`prepare`, which gives a command its model, data splits and parameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _data
from ._common import CLIError, Talk, show
from ._data import refuse, split_data, targets, task


def spec_model(sizes, activation: str, loss: str, l2: float | None = None):
    from ..models import MLP

    return MLP(list(sizes), activation=activation, loss=loss, l2=l2 or 0.0)


def _build_model(args, d: int, loss: str, n_classes: int | None):
    """The model the options ask for (sizes from the data and the loss)."""
    kind = args.model or "mlp"
    out = n_classes if loss == "softmax_ce" else 1
    if kind == "logistic":
        if loss != "logistic":
            raise CLIError(f"--model logistic trains the logistic loss, not --loss {loss}")
        return spec_model([d, 1], "identity", "logistic", args.l2)
    if kind == "linear":
        return spec_model([d, out], "identity", loss, args.l2)
    hidden = args.hidden if args.hidden is not None else args.hidden_default
    return spec_model([d, *hidden, out], args.activation or "tanh", loss, args.l2)


def _load_theta(path, args, X: np.ndarray, y: np.ndarray):
    """Model and parameters from a theta file (:func:`fastscape.io.load_theta`).

    A file with its model's description builds the model (checked against --hidden,
    --activation and --loss); a bare parameter vector (or W0, b0, ... layers) is read into the
    model the options describe.
    """
    from .. import io

    if not Path(path).is_file():
        raise CLIError(f"--theta {path}: no such file")
    try:
        model, theta = io.load_theta(path)
    except io.FileFormatError as exc:
        # io says so in these words when the file holds parameters and no model description;
        # any other problem (a damaged file, no parameters) is reported as it is
        if "without a model description" not in exc.problem:
            raise
        loss = task(args, y)
        _, classes = targets(args, y, loss)
        model = _build_model(args, X.shape[1], loss, None if classes is None else classes.size)
        _check_fits_data(model, X.shape[1], str(path))
        model, theta = io.load_theta(path, model)
    else:
        refuse(args, ("--model",), f"with {path}: its stored spec gives the model")
        _check_spec_against_options(args, model.sizes, model.activation, str(path), model.l2)
        loss = task(args, y, loaded_loss=model.loss_name)
    if not np.isfinite(theta).all():
        raise CLIError(f"--theta {path}: the parameters contain non-finite values")
    return model, theta


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


def _check_spec_against_options(
    args, sizes: Sequence[int], activation: str, source: str, l2: float | None = None
) -> None:
    """A loaded model's sizes against an explicit --hidden (which sizes differ)."""
    if args.hidden is not None:
        wanted = [sizes[0], *args.hidden, sizes[-1]]
        if list(wanted) != list(sizes):
            raise CLIError(
                f"{source} holds a {list(sizes)} model; --hidden {show(args.hidden)} asks for "
                f"{wanted} ({_size_difference(sizes, wanted)})"
            )
    if args.activation is not None and len(sizes) > 2 and args.activation != activation:
        raise CLIError(f"{source} holds a {activation} model; --activation says {args.activation}")
    if args.l2 is not None and l2 is not None and args.l2 != l2:
        raise CLIError(f"{source} holds a model with l2 = {l2:g}; --l2 says {args.l2:g}")


def _torch_load(path: Path):
    """What ``torch.save`` wrote: a state_dict loads with ``weights_only=True``; a whole module
    needs the full unpickler (``weights_only=False``, which runs the file's pickled code: load
    only files you trust, as with ``torch.load``)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler refuses modules
        pass
    except Exception as exc:  # zip and torch errors of a damaged or foreign file
        raise CLIError(
            f"--torch {path}: cannot load it ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CLIError(
            f"--torch {path}: cannot load it ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None


def _load_torch(path: str, args, y: np.ndarray):
    """Model and parameters from a ``torch.save``'d module or state_dict
    (:meth:`fastscape.MLP.from_torch`)."""
    from collections.abc import Mapping

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--torch {path}: no such file")
    try:
        import torch
    except ImportError:
        raise CLIError("--torch needs PyTorch: pip install torch") from None
    from ..models import MLP

    obj = _torch_load(p)
    loss = task(args, y)
    if isinstance(obj, torch.nn.Module):
        refuse(args, ("--hidden", "--activation"), "with a saved module (its layers say them)")
        kw = {"l2": args.l2 or 0.0}
    elif isinstance(obj, Mapping):
        weights = [v for v in obj.values() if getattr(v, "ndim", None) == 2]
        if len(weights) > 1 and args.activation is None:
            raise CLIError(
                f"--torch {path} is a state_dict, which holds no activation: pass --activation"
            )
        kw = {"activation": args.activation, "l2": args.l2 or 0.0}
    else:
        raise CLIError(
            f"--torch {path}: holds a {type(obj).__name__}, not an nn.Module or a state_dict"
        )
    try:
        model, theta = MLP.from_torch(obj, loss=loss, **kw)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"--torch {path}: {exc}") from None
    if "activation" in kw:
        _check_spec_against_options(args, model.sizes, model.activation, f"--torch {path}")
    return model, theta


def prepare(args, talk: Talk, *, split: bool = False):
    """Data, model and (for loaded models) parameters.

    Returns ``(model, train, test, classes, theta, source, n_features)``; ``theta`` is None
    when the model is to be trained. Features are standardized with the training split's
    statistics only.
    """
    from .. import datasets

    X, y = _data._load(args, talk)
    theta = None
    source: dict = {}
    theta_path = getattr(args, "theta", None)
    torch_path = getattr(args, "torch", None)
    if theta_path and torch_path:
        raise CLIError("--theta and --torch both give the parameters: pass one")
    if theta_path or torch_path:
        refuse(args, ("--method", "--lr", "--steps", "--gtol", "--batch-size"),
                "with loaded parameters (nothing is trained)")  # fmt: skip
    if theta_path:
        model, theta = _load_theta(theta_path, args, X, y)
        _check_fits_data(model, X.shape[1], str(theta_path))
        source = {"theta_file": str(theta_path)}
    elif torch_path:
        refuse(args, ("--model",), "with --torch: the file gives the model")
        model, theta = _load_torch(torch_path, args, y)
        _check_fits_data(model, X.shape[1], str(torch_path))
        source = {"torch_file": str(torch_path)}
    else:
        loss = task(args, y)
        _, classes = targets(args, y, loss)
        model = _build_model(args, X.shape[1], loss, None if classes is None else classes.size)
    loaded = theta is not None
    yt, classes = targets(args, y, model.loss_name, model.n_outputs if loaded else None)
    fraction = getattr(args, "test_fraction", None) if split else None
    Xtr, ytr, Xte, yte = split_data(X, yt, fraction, args.seed)
    if args.standardize:
        Xte = None if Xte is None else datasets.standardize(Xte, reference=Xtr)
        Xtr = datasets.standardize(Xtr)
    try:
        train = model.batch(Xtr, ytr)
        test = model.batch(Xte, yte) if Xte is not None else None
    except ValueError as exc:
        raise CLIError(f"{args.data}: {exc}") from None
    return model, train, test, classes, theta, source, X.shape[1]
