"""fastscape: fast loss-landscape analysis with Numba kernels on NumPy arrays."""

import os

# Numba's OpenMP threading layer spin-waits between parallel regions by default, which slows
# short kernel calls badly on a machine whose cores are busy with other work; passive waiting
# costs little (bench/NOTES.md). Must be set before the OpenMP runtime starts (the first
# parallel kernel call); a value the user has set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Names are imported on first use (PEP 562): ``import fastscape`` stays cheap (NumPy, Numba and
# the kernels load with the first function that needs them), so the command line talks at once.
_SUBMODULES = (
    "alignment", "config", "critical", "curvature", "data", "datasets", "directions",
    "distributed", "eos", "functions", "io", "landscape", "models", "paths", "plot", "reference",
    "report", "sharpness", "training",
)  # fmt: skip
_NAMES = {
    "cuda_available": "._device",
    "threads": "._threads",
    "classify": ".critical",
    "classify_point": ".critical",
    "escape_saddle": ".critical",
    "hessian_trace": ".curvature",
    "spectral_density": ".curvature",
    "top_eigen": ".curvature",
    "Batch": ".data",
    "edge_of_stability": ".eos",
    "CurvatureMap": ".landscape",
    "Evaluation": ".landscape",
    "Slice": ".landscape",
    "Surface": ".landscape",
    "curvature_map": ".landscape",
    "evaluate": ".landscape",
    "slice_1d": ".landscape",
    "surface_2d": ".landscape",
    "MLP": ".models",
    "LayerLayout": ".models",
    "LinearRegression": ".models",
    "Logistic": ".models",
    "box_sharpness": ".sharpness",
    "compare_minima": ".sharpness",
    "epsilon_sharpness": ".sharpness",
    "FitResult": ".training",
    "fit": ".training",
}


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    else:
        raise AttributeError(f"module 'fastscape' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
