"""Input checks shared by the whole API. Each raises with the argument's name and the problem."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def as_float_array(value, name: str, ndim: int | Iterable[int]) -> np.ndarray:
    """Convert to a C-contiguous float64 array of the given dimensionality, finite and non-empty.

    Integer, boolean and float32 inputs are converted explicitly (exactly, since float64 holds
    them all); complex, object and string inputs are refused.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise if arr holds NaN or infinity, saying where the first one is."""
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"{name} contains non-finite values (first at index {where})")


def as_vector(value, name: str, length: int) -> np.ndarray:
    """A finite float64 vector of exactly ``length`` entries."""
    v = as_float_array(value, name, 1)
    if v.shape[0] != length:
        raise ValueError(f"{name} has length {v.shape[0]}, expected {length}")
    return v


def check_choice(value: str, name: str, choices: Iterable[str]) -> str:
    """Raise unless value is one of choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """An int >= minimum (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    """A finite float > 0 (or >= 0 with allow_zero)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not np.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return x
