"""Closed-form exact Hessians of the no-hidden-layer members of the MLP family, through BLAS.

Layout as in ``kernels.mlp``: ``theta = [W (out, d) row-major, b (out,)]``.
"""

from __future__ import annotations

import numpy as np

from ._blas import matmul, serial_blas


def _augmented(X):
    """[X, 1]: (n, d+1)."""
    n, d = X.shape
    Xa = np.empty((n, d + 1))
    Xa[:, :d] = X
    Xa[:, d] = 1.0
    return Xa


def logistic_hessian(theta, X):
    """Hessian of the mean logistic loss: [X 1]^T diag(p(1-p)) [X 1] / n, (d+1, d+1).

    p(1-p) is computed as e / (1 + e)^2 with e = exp(-|z|), exact for any finite logit z.
    """
    d = X.shape[1]
    with serial_blas():
        z = X @ theta[:d] + theta[d]
    e = np.exp(-np.abs(z))
    s = e / (1.0 + e) ** 2
    Xa = _augmented(X)
    H = matmul((Xa * s[:, None]).T, Xa)
    H /= X.shape[0]
    return H


def mse_hessian(X, n_out):
    """Hessian of the mean (over samples) summed squared error, (P, P) with P = n_out (d+1).

    It does not depend on theta: 2 [X 1]^T [X 1] / n repeated for each output unit, with the
    entries placed at that unit's row of W and its bias.
    """
    n, d = X.shape
    Xa = _augmented(X)
    G = matmul(Xa.T, Xa)
    G *= 2.0 / n
    P = n_out * (d + 1)
    H = np.zeros((P, P))
    bias0 = n_out * d
    for o in range(n_out):
        idx = np.concatenate([np.arange(o * d, (o + 1) * d), [bias0 + o]])
        H[np.ix_(idx, idx)] = G
    return H
