"""Analytic landscapes: exact derivatives, and user callables in the landscape functions."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastscape import functions as F
from fastscape import reference as ref
from fastscape.landscape import evaluate, slice_1d, surface_2d

POINTS = np.array([[0.3, -0.7], [1.1, 0.4], [-0.25, 0.9], [0.0, 0.0]])


def _fd_grad(f, t, h=1e-6):
    e = np.eye(t.size)
    return np.array([(f(t + h * e[i]) - f(t - h * e[i])) / (2 * h) for i in range(t.size)])


@pytest.mark.parametrize("name", list(F.FUNCTIONS))
def test_gradient_and_hessian_against_finite_differences(name):
    f = F.get(name)
    for t in POINTS:
        assert_allclose(f.grad(t), _fd_grad(f, t), rtol=1e-6, atol=1e-6)
        fd_h = np.array([_fd_grad(lambda s, i=i: f.grad(s)[i], t) for i in range(2)])
        assert_allclose(f.hessian(t), fd_h, rtol=1e-6, atol=1e-5)
        assert_allclose(f.hessian(t), f.hessian(t).T)


def test_known_values():
    assert F.quadratic([1.0, 1.0]) == 5.5
    assert_allclose(F.quadratic.hessian([3.0, 4.0]), np.diag([1.0, 10.0]))
    assert F.saddle([2.0, 1.0]) == 3.0
    assert np.linalg.eigvalsh(F.saddle.hessian([0.0, 0.0])).tolist() == [-2.0, 2.0]
    assert F.rosenbrock([1.0, 1.0]) == 0.0 and not F.rosenbrock.grad([1.0, 1.0]).any()
    # multimodal: (x^2+y^2)(1 + 1/2 sin5x sin5y) at a hand-computed point
    x, y = 0.3, -0.2
    assert_allclose(
        F.multimodal([x, y]), (x * x + y * y) * (1 + 0.5 * np.sin(5 * x) * np.sin(5 * y))
    )
    for f in F.FUNCTIONS.values():
        if f.minimum is not None:
            assert f(f.minimum) == 0.0


def test_surface_of_analytic_function_is_exact():
    a = np.linspace(-2, 2, 9)
    b = np.linspace(-1, 1, 5)
    s = surface_2d(F.quadratic, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], alphas=a, betas=b)
    A, B = np.meshgrid(a, b, indexing="ij")
    assert_allclose(s.loss, 0.5 * (A**2 + 10 * B**2), rtol=1e-15)
    assert s.accuracy is None and s.shape == (9, 5)


def test_jitted_user_function_runs_in_kernel_and_matches_python_loop():
    @numba.njit
    def bowl(t):
        return (t[0] - 1.0) ** 2 + abs(t[1]) + t[2] ** 4

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 3))
    C = rng.normal(size=(25, 3))
    fast = evaluate(bowl, basis, C)
    slow = evaluate(bowl.py_func, basis, C)  # plain Python callable: the slow loop
    assert_allclose(fast.loss, slow.loss, rtol=1e-13)
    assert_allclose(fast.loss, ref.span_function(bowl.py_func, basis, C), rtol=1e-13)
    assert fast.accuracy is None


def test_python_callable_slice():
    s = slice_1d(lambda t: float(np.sum(t**2)), np.ones(4), np.ones(4), alphas=[-1.0, 0.0, 1.0])
    assert_array_equal(s.loss, [0.0, 4.0, 16.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="theta has length"):
        F.quadratic([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="X and y must be None"):
        evaluate(F.quadratic, np.eye(2), np.ones((2, 2)), X=np.ones((3, 2)))
    with pytest.raises(ValueError, match="basis rows have length 3"):
        evaluate(F.quadratic, np.eye(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown function"):
        F.get("himmelblau")
    with pytest.raises(TypeError, match="model must be"):
        evaluate(42, np.eye(2), np.ones((2, 2)))
