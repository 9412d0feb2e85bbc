"""Reading the data, telling the task (the loss) from the targets, coding the targets, splitting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._common import BUILTIN_TASKS, MAX_INFERRED_CLASSES, CLIError, Talk


# ----------------------------------------------------------------------------- data
def refuse(args, names: Sequence[str], reason: str) -> None:
    """Refuse options the run cannot use (they would be recorded but ignored)."""
    given = [n for n in names if getattr(args, n.lstrip("-").replace("-", "_"), None) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} cannot be used {reason}")


def _load(args, talk: Talk) -> tuple[np.ndarray, np.ndarray]:
    from .. import datasets

    talk(f"loading data {args.data}")
    return datasets.load(args.data, standardize_features=False, header=args.header)


def _integer_valued(y: np.ndarray) -> bool:
    return y.dtype.kind in "iub" or bool(np.all(y == np.round(y)))


def _first_fraction(y: np.ndarray) -> tuple[int, float]:
    i = int(np.flatnonzero(y != np.round(y))[0])
    return i, float(y[i])


def task(args, y: np.ndarray, loaded_loss: str | None = None) -> str:
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


def targets(args, y: np.ndarray, loss: str, n_outputs: int | None = None):
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


def split_data(X, y, fraction: float | None, seed: int):
    if not fraction:
        return X, y, None, None
    n = X.shape[0]
    n_test = round(fraction * n)
    if n_test < 1 or n - n_test < 2:
        raise CLIError(f"--test-fraction {fraction} leaves no test or no training samples")
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], y[tr], X[te], y[te]
