"""CUDA element-wise device functions (kernels/cuda/elementwise.py) against the CPU's scalar
forms in kernels/elementwise.py, for every activation, on a GPU or Numba's simulator."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fastscape.models import ACTIVATIONS

Z = np.array([-40.0, -6.0, -1.5, -0.3, -1e-8, 0.0, 1e-8, 0.4, 2.0, 7.5, 40.0])


# a module global, as the simulator needs (it swaps a kernel's global ``cuda`` for its own)
cuda = pytest.importorskip("numba.cuda")


def _on_device(act: int, z: np.ndarray) -> np.ndarray:
    from fastscape.kernels.cuda import elementwise as ce

    @cuda.jit
    def kernel(act, z, out):
        i = cuda.grid(1)
        if i < z.shape[0]:
            a = ce.activate(act, z[i])
            out[0, i] = a
            out[1, i] = ce.activate_d1(act, z[i], a)
            out[2, i] = ce.activate_d2(act, z[i], a)

    out = np.zeros((3, z.size))
    kernel[1, 16](act, z, out)
    return out


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_and_derivatives_match_the_cpu(name):
    from fastscape.kernels import elementwise as el

    act = ACTIVATIONS[name]
    got = _on_device(act, Z)
    a = np.array([el.activate(act, z) for z in Z])
    want = np.stack(
        [a, [el.activate_d1(act, z, ai) for z, ai in zip(Z, a)],
         [el.activate_d2(act, z, ai) for z, ai in zip(Z, a)]]
    )  # fmt: skip
    # tanh' = 1 - a² cancels where |a| -> 1: one ulp of a between the two tanh implementations
    # is an absolute error of ~2 eps there, hence the absolute tolerance of 4 eps
    assert_allclose(got, want, rtol=1e-13, atol=4 * np.finfo(float).eps)
