"""fastscape: fast loss-landscape analysis with Numba kernels on NumPy arrays."""

from . import datasets, reference
from ._threads import threads
from .models import MLP, Batch, LayerLayout, LinearRegression, Logistic
from .training import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Batch",
    "FitResult",
    "LayerLayout",
    "LinearRegression",
    "Logistic",
    "datasets",
    "fit",
    "reference",
    "threads",
]
