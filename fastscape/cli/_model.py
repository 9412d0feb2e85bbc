"""The model of a run: built from the options, or loaded from a theta file or a PyTorch file;
and :func:`_prepare`, which gives a command its model, data splits and parameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _data
from ._common import CLIError, _show, _Talk
from ._data import _refuse, _split, _targets, _task


def _spec_model(sizes, activation: str, loss: str):
    from ..models import MLP

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
    from ..models import MLP

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
    from .. import datasets

    X, y = _data._load(args, talk)
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
