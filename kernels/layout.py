"""The one layout computation: where each layer's weights and biases live in ``theta``.

``theta`` (P,) holds, layer after layer, ``W_l`` of shape ``(sizes[l+1], sizes[l])`` (rows =
output units) stored row-major, followed by ``b_l`` of shape ``(sizes[l+1],)``. Every kernel
(CPU and CUDA) and the model's own description (``fastscape.models.MLP.layout``) take the
offsets from :func:`layout`.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit


@jit()
def layout(sizes):
    """Offsets of W_l and b_l in theta and of layer l's units in a per-sample buffer.

    Parameters
    ----------
    sizes : (L+1,) int64
        Units per layer, input first.

    Returns
    -------
    w_off, b_off : (L,) int64
    u_off : (L+1,) int64
        Units of layer l+1 (l = 0 .. L-1) occupy ``u_off[l]:u_off[l+1]``.
    """
    n_layers = sizes.shape[0] - 1
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    u_off = np.empty(n_layers + 1, np.int64)
    o = 0
    u = 0
    for l in range(n_layers):
        w_off[l] = o
        o += sizes[l + 1] * sizes[l]
        b_off[l] = o
        o += sizes[l + 1]
        u_off[l] = u
        u += sizes[l + 1]
    u_off[n_layers] = u
    return w_off, b_off, u_off


def as_sizes(sizes) -> np.ndarray:
    """``sizes`` as a C-contiguous int64 array (the kernels' form)."""
    return np.ascontiguousarray(sizes, dtype=np.int64)


def n_params(sizes) -> int:
    """Length P of theta."""
    s = as_sizes(sizes)
    return int(np.sum(s[1:] * (s[:-1] + 1)))


def layer_views(theta, sizes):
    """Views ``(W_l (out, in), b_l (out,))`` of every layer of theta (or of any (P,) array)."""
    s = as_sizes(sizes)
    w_off, b_off, _ = layout(s)
    out = []
    for l in range(s.shape[0] - 1):
        n_in, n_out = int(s[l]), int(s[l + 1])
        W = theta[w_off[l] : w_off[l] + n_out * n_in].reshape(n_out, n_in)
        out.append((W, theta[b_off[l] : b_off[l] + n_out]))
    return out
