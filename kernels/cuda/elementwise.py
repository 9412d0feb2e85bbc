"""CUDA twins of ``kernels/elementwise.py``: activations, their derivatives, per-sample losses.

Device functions cannot call the CPU's compiled functions, so the element-wise maths of the GPU
kernels lives here, in one place. The leaves without calls to other compiled functions
(``sigmoid``, ``leaky_relu``, the GELU functions) are the CPU functions' own Python source
compiled for the device; the dispatchers (``activate``, ``activate_d1``, ``activate_d2``) and
the losses are twins written here (the losses index-based: device code takes buffers and row
numbers instead of slices).
"""

from __future__ import annotations

import math

from numba import cuda

from .. import elementwise as _cpu
from ..elementwise import GELU, GELU_TANH, LEAKY_RELU, LOGISTIC, MSE, RELU, SIGMOID, TANH

# leaves: the CPU functions' own source (math only, no calls to compiled functions)
sigmoid = cuda.jit(device=True)(_cpu.sigmoid.py_func)
leaky_relu = cuda.jit(device=True)(_cpu.leaky_relu.py_func)
gelu = cuda.jit(device=True)(_cpu.gelu.py_func)
gelu_d1 = cuda.jit(device=True)(_cpu.gelu_d1.py_func)
gelu_d2 = cuda.jit(device=True)(_cpu.gelu_d2.py_func)
gelu_tanh = cuda.jit(device=True)(_cpu.gelu_tanh.py_func)
gelu_tanh_d1 = cuda.jit(device=True)(_cpu.gelu_tanh_d1.py_func)
gelu_tanh_d2 = cuda.jit(device=True)(_cpu.gelu_tanh_d2.py_func)


@cuda.jit(device=True)
def activate(act, z):
    """Hidden activation f(z) (twin of ``kernels.elementwise.activate``)."""
    if act == TANH:
        return math.tanh(z)
    if act == RELU:
        return z if z > 0.0 else 0.0
    if act == SIGMOID:
        return sigmoid(z)
    if act == LEAKY_RELU:
        return leaky_relu(z)
    if act == GELU:
        return gelu(z)
    if act == GELU_TANH:
        return gelu_tanh(z)
    return z


@cuda.jit(device=True)
def activate_d1(act, z, a):
    """f'(z), given z and a = f(z) (twin of ``kernels.elementwise.activate_d1``)."""
    if act == TANH:
        return 1.0 - a * a
    if act == RELU:
        return 1.0 if z > 0.0 else 0.0
    if act == SIGMOID:
        return a * (1.0 - a)
    if act == LEAKY_RELU:
        return 1.0 if z > 0.0 else _cpu.LEAKY_SLOPE
    if act == GELU:
        return gelu_d1(z)
    if act == GELU_TANH:
        return gelu_tanh_d1(z)
    return 1.0


@cuda.jit(device=True)
def activate_d2(act, z, a):
    """f''(z), given z and a = f(z) (twin of ``kernels.elementwise.activate_d2``)."""
    if act == TANH:
        return -2.0 * a * (1.0 - a * a)
    if act == SIGMOID:
        return a * (1.0 - a) * (1.0 - 2.0 * a)
    if act == GELU:
        return gelu_d2(z)
    if act == GELU_TANH:
        return gelu_tanh_d2(z)
    return 0.0


@cuda.jit(device=True)
def output_loss(loss_kind, n_out, Z, r, z0, Y, i, G, g_row, g0, want_grad):
    """Loss of one sample from its logits ``Z[r, z0:z0+n_out]`` and targets ``Y[i]``.

    With ``want_grad``, writes dloss/dz into ``G[g_row, g0:g0+n_out]``.
    """
    if loss_kind == LOGISTIC:
        zz = Z[r, z0]
        e = math.exp(-abs(zz))
        if want_grad:
            G[g_row, g0] = (1.0 / (1.0 + e) if zz >= 0.0 else e / (1.0 + e)) - Y[i, 0]
        return max(zz, 0.0) + math.log1p(e) - Y[i, 0] * zz
    if loss_kind == MSE:
        total = 0.0
        for o in range(n_out):
            res = Z[r, z0 + o] - Y[i, o]
            total += res * res
            if want_grad:
                G[g_row, g0 + o] = 2.0 * res
        return total
    m = Z[r, z0]
    for o in range(1, n_out):
        if Z[r, z0 + o] > m:
            m = Z[r, z0 + o]
    se = 0.0
    for o in range(n_out):
        se += math.exp(Z[r, z0 + o] - m)
    lse = m + math.log(se)
    s = 0.0
    yz = 0.0
    for o in range(n_out):
        s += Y[i, o]
        yz += Y[i, o] * Z[r, z0 + o]
    if want_grad:
        for o in range(n_out):
            G[g_row, g0 + o] = s * math.exp(Z[r, z0 + o] - lse) - Y[i, o]
    return s * lse - yz


@cuda.jit(device=True)
def output_hvp(loss_kind, n_out, Z, r, z0, Y, i, RZ, RD, rr):
    """``RD[rr, z0:] = (d2 loss / dz2) RZ[rr, z0:]`` for the logits ``Z[r, z0:]``."""
    if loss_kind == LOGISTIC:
        p = sigmoid(Z[r, z0])
        RD[rr, z0] = p * (1.0 - p) * RZ[rr, z0]
        return
    if loss_kind == MSE:
        for o in range(n_out):
            RD[rr, z0 + o] = 2.0 * RZ[rr, z0 + o]
        return
    m = Z[r, z0]
    for o in range(1, n_out):
        if Z[r, z0 + o] > m:
            m = Z[r, z0 + o]
    se = 0.0
    for o in range(n_out):
        se += math.exp(Z[r, z0 + o] - m)
    lse = m + math.log(se)
    s = 0.0
    pr = 0.0
    for o in range(n_out):
        s += Y[i, o]
        pr += math.exp(Z[r, z0 + o] - lse) * RZ[rr, z0 + o]
    for o in range(n_out):
        p = math.exp(Z[r, z0 + o] - lse)
        RD[rr, z0 + o] = s * p * (RZ[rr, z0 + o] - pr)
