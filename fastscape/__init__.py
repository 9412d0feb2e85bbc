"""fastscape: fast loss-landscape analysis with Numba kernels on NumPy arrays."""

import os

# Numba's OpenMP threading layer spin-waits between parallel regions by default, which slows
# short kernel calls badly on a machine whose cores are busy with other work; passive waiting
# costs little (bench/NOTES.md). Must be set before the OpenMP runtime starts (the first
# parallel kernel call); a value the user has set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import (
    critical,
    curvature,
    datasets,
    directions,
    eos,
    functions,
    io,
    paths,
    reference,
    sharpness,
)
from ._device import cuda_available
from ._threads import threads
from .critical import classify, classify_point, escape_saddle
from .curvature import hessian_trace, spectral_density, top_eigen
from .data import Batch
from .eos import edge_of_stability
from .landscape import (
    CurvatureMap,
    Evaluation,
    Slice,
    Surface,
    curvature_map,
    evaluate,
    slice_1d,
    surface_2d,
)
from .models import MLP, LayerLayout, LinearRegression, Logistic
from .sharpness import box_sharpness, compare_minima, epsilon_sharpness
from .training import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Batch",
    "CurvatureMap",
    "Evaluation",
    "FitResult",
    "LayerLayout",
    "LinearRegression",
    "Logistic",
    "Slice",
    "Surface",
    "box_sharpness",
    "classify",
    "classify_point",
    "compare_minima",
    "critical",
    "cuda_available",
    "curvature",
    "curvature_map",
    "datasets",
    "directions",
    "edge_of_stability",
    "eos",
    "epsilon_sharpness",
    "escape_saddle",
    "evaluate",
    "fit",
    "functions",
    "hessian_trace",
    "io",
    "paths",
    "reference",
    "sharpness",
    "slice_1d",
    "spectral_density",
    "surface_2d",
    "threads",
    "top_eigen",
]
