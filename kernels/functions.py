"""Analytic test landscapes f(theta) -> float, compiled (theta = (x, y)).

Their exact gradients and Hessians, and the public objects, are in ``fastscape.functions``.
``analytic(code, theta)`` dispatches on an integer code so that the span kernel that evaluates
them (``kernels.span.span_analytic``) is compiled once and cached on disk.
"""

from __future__ import annotations

import math

from ._jit import jit

QUADRATIC, MULTIMODAL, SADDLE, ROSENBROCK = 0, 1, 2, 3


@jit()
def quadratic(t):
    """½(x² + 10y²)."""
    return 0.5 * (t[0] * t[0] + 10.0 * t[1] * t[1])


@jit()
def multimodal(t):
    """(x² + y²)(1 + ½ sin 5x sin 5y)."""
    x = t[0]
    y = t[1]
    return (x * x + y * y) * (1.0 + 0.5 * math.sin(5.0 * x) * math.sin(5.0 * y))


@jit()
def saddle(t):
    """x² − y²."""
    return t[0] * t[0] - t[1] * t[1]


@jit()
def rosenbrock(t):
    """(1 − x)² + 100 (y − x²)²."""
    x = t[0]
    y = t[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


@jit()
def analytic(code, t):
    """The analytic function with the given code at t."""
    if code == QUADRATIC:
        return quadratic(t)
    if code == MULTIMODAL:
        return multimodal(t)
    if code == SADDLE:
        return saddle(t)
    return rosenbrock(t)
