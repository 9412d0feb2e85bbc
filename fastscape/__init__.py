"""fastscape: fast loss-landscape analysis with Numba kernels on NumPy arrays."""

from . import datasets, directions, functions, io, paths, reference
from ._threads import threads
from .landscape import Evaluation, Slice, Surface, evaluate, slice_1d, surface_2d
from .models import MLP, Batch, LayerLayout, LinearRegression, Logistic
from .training import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Batch",
    "Evaluation",
    "FitResult",
    "LayerLayout",
    "LinearRegression",
    "Logistic",
    "Slice",
    "Surface",
    "datasets",
    "directions",
    "evaluate",
    "fit",
    "functions",
    "io",
    "paths",
    "reference",
    "slice_1d",
    "surface_2d",
    "threads",
]
