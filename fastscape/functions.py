"""Analytic landscapes with exact gradients and Hessians, and user functions f(theta) -> float.

Every landscape function of the library (:func:`fastscape.landscape.evaluate`, ``slice_1d``,
``surface_2d``, the paths) accepts, in place of ``(model, X, y)``, a function of the parameter
vector:

- an :class:`AnalyticFunction` below: evaluated by a compiled, disk-cached parallel kernel;
- any Numba-jitted function ``f(theta) -> float`` (e.g. made with ``numba.njit``): it is
  called inside the parallel span kernel, one point per iteration, at compiled speed. That
  kernel is specialised on the function, so it is compiled (about a second or two) the first
  time each function is used in a process, and not cached on disk;
- a plain Python callable ``f(theta) -> float``: it is called in a Python loop, one point at a
  time. This is the documented slow path (about a microsecond of overhead per point plus the
  function itself); jit the function with Numba to get the fast path.

The analytic functions are the ones the seeds draw (theta = (x, y)):

- ``quadratic``: ½(x² + 10y²), convex, minimum 0 at the origin, Hessian diag(1, 10);
- ``multimodal``: (x² + y²)(1 + ½ sin 5x sin 5y), global minimum 0 at the origin, many local
  minima;
- ``saddle``: x² − y², a saddle at the origin (Hessian diag(2, −2));
- ``rosenbrock``: (1 − x)² + 100 (y − x²)², minimum 0 at (1, 1) in a curved valley.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._validation import as_vector
from .kernels import functions as _kf


def _quadratic_grad(t):
    return np.array([t[0], 10.0 * t[1]])


def _quadratic_hess(t):
    return np.diag([1.0, 10.0])


def _mm_parts(t):
    x, y = t
    sx, cx, sy, cy = np.sin(5 * x), np.cos(5 * x), np.sin(5 * y), np.cos(5 * y)
    r = x * x + y * y
    g = 1.0 + 0.5 * sx * sy
    return x, y, r, g, 2.5 * cx * sy, 2.5 * sx * cy, -12.5 * sx * sy, 12.5 * cx * cy


def _multimodal_grad(t):
    x, y, r, g, gx, gy, _, _ = _mm_parts(t)
    return np.array([2 * x * g + r * gx, 2 * y * g + r * gy])


def _multimodal_hess(t):
    x, y, r, g, gx, gy, gxx, gxy = _mm_parts(t)
    hxx = 2 * g + 4 * x * gx + r * gxx
    hyy = 2 * g + 4 * y * gy + r * gxx  # g_yy == g_xx == -12.5 sin5x sin5y
    hxy = 2 * x * gy + 2 * y * gx + r * gxy
    return np.array([[hxx, hxy], [hxy, hyy]])


def _saddle_grad(t):
    return np.array([2.0 * t[0], -2.0 * t[1]])


def _saddle_hess(t):
    return np.diag([2.0, -2.0])


def _rosenbrock_grad(t):
    x, y = t
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


def _rosenbrock_hess(t):
    x, y = t
    return np.array([[2.0 - 400.0 * (y - x * x) + 800.0 * x * x, -400.0 * x], [-400.0 * x, 200.0]])


@dataclass(frozen=True, eq=False)
class AnalyticFunction:
    """A function of a parameter vector with exact derivatives.

    Attributes
    ----------
    name : str
    dim : int
        Length of theta.
    code : int
        Its code in ``kernels.functions`` (the cached span kernel dispatches on it).
    jitted : callable
        Numba-jitted ``f(theta (dim,)) -> float``.
    minimum : (dim,) array or None
        A global minimizer (None for the saddle, which has none).
    """

    name: str
    dim: int
    code: int
    jitted: Callable
    _grad: Callable
    _hess: Callable
    minimum: np.ndarray | None = None

    def _check(self, theta) -> np.ndarray:
        return as_vector(theta, "theta", self.dim)

    def __call__(self, theta) -> float:
        """f(theta) -> float for theta (dim,)."""
        return float(self.jitted(self._check(theta)))

    def grad(self, theta) -> np.ndarray:
        """Exact gradient (dim,)."""
        return self._grad(self._check(theta))

    def hessian(self, theta) -> np.ndarray:
        """Exact Hessian (dim, dim)."""
        return self._hess(self._check(theta))

    def __repr__(self) -> str:
        return f"AnalyticFunction({self.name!r})"


quadratic = AnalyticFunction(
    "quadratic", 2, _kf.QUADRATIC, _kf.quadratic, _quadratic_grad, _quadratic_hess, np.zeros(2)
)
multimodal = AnalyticFunction(
    "multimodal", 2, _kf.MULTIMODAL, _kf.multimodal, _multimodal_grad, _multimodal_hess,
    np.zeros(2),
)  # fmt: skip
saddle = AnalyticFunction("saddle", 2, _kf.SADDLE, _kf.saddle, _saddle_grad, _saddle_hess, None)
rosenbrock = AnalyticFunction(
    "rosenbrock", 2, _kf.ROSENBROCK, _kf.rosenbrock, _rosenbrock_grad, _rosenbrock_hess,
    np.ones(2),
)  # fmt: skip

FUNCTIONS = {f.name: f for f in (quadratic, multimodal, saddle, rosenbrock)}


def get(name: str) -> AnalyticFunction:
    """The analytic function called ``name`` (one of ``FUNCTIONS``)."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function {name!r}; expected one of {', '.join(FUNCTIONS)}")
    return FUNCTIONS[name]
