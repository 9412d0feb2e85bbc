"""The L2 penalty ``½ λ ‖w‖²`` on the weights (the biases too when asked), in every form.

One (P,) vector ``r`` carries it (:func:`l2_vector`): ``r_p = λ`` on the penalised entries of
theta, 0 elsewhere. The penalty is then ``½ Σ_p r_p θ_p²`` (:func:`l2_value`), its gradient
``r ⊙ θ`` (:func:`add_l2_grad`), its Hessian ``diag(r)`` (:func:`add_l2_hvp`,
:func:`add_l2_diagonal`). At the points of a span, ``θ = Σ_k c_k v_k``, it is the quadratic
``½ cᵀ G c`` with ``G = V diag(r) Vᵀ`` the (K, K) Gram matrix of the basis restricted to the
penalised entries: G is formed once per call and each point pays O(K²), with no pass over its
P parameters (:func:`span_l2`).

Every sum runs in a fixed order in compiled loops (no BLAS), so the results do not depend on
the thread count, and a point's value does not depend on the other points of the call.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .layout import as_sizes, layout, n_params


def l2_vector(sizes, lam: float, include_bias: bool) -> np.ndarray:
    """The (P,) penalty weights: ``lam`` on every weight (and bias, with include_bias), else 0.

    Parameters
    ----------
    sizes : (L+1,) int
    lam : float
        λ >= 0.
    include_bias : bool

    Returns
    -------
    (P,) float64
    """
    s = as_sizes(sizes)
    w_off, b_off, _ = layout(s)
    r = np.zeros(n_params(s))
    for l in range(s.shape[0] - 1):
        r[w_off[l] : b_off[l]] = lam
        if include_bias:
            r[b_off[l] : b_off[l] + s[l + 1]] = lam
    return r


@jit()
def l2_value(theta, r):
    """``½ Σ_p r_p θ_p²``, a float."""
    total = 0.0
    for p in range(theta.shape[0]):
        total += r[p] * theta[p] * theta[p]
    return 0.5 * total


@jit()
def add_l2_grad(grad, theta, r):
    """In place: ``grad += r ⊙ θ``, (P,)."""
    for p in range(theta.shape[0]):
        grad[p] += r[p] * theta[p]


@jit()
def add_l2_hvp(out, V, r):
    """In place: ``out[k] += r ⊙ V[k]`` for the K rows, (K, P)."""
    for k in range(V.shape[0]):
        for p in range(V.shape[1]):
            out[k, p] += r[p] * V[k, p]


@jit()
def add_l2_diagonal(H, r):
    """In place: ``H[p, p] += r_p``, (P, P)."""
    for p in range(r.shape[0]):
        H[p, p] += r[p]


@jit()
def l2_gram(basis, r):
    """``G = V diag(r) Vᵀ``, (K, K), from the basis V (K, P); symmetric by construction."""
    K, P = basis.shape
    G = np.empty((K, K))
    for k in range(K):
        for q in range(k, K):
            s = 0.0
            for p in range(P):
                s += r[p] * basis[k, p] * basis[q, p]
            G[k, q] = s
            G[q, k] = s
    return G


@jit()
def span_l2(basis, coef, r):
    """The penalty ``½ c_jᵀ G c_j`` at each of the m points ``coef @ basis``, (m,).

    Parameters
    ----------
    basis : (K, P) float64
    coef : (m, K) float64
    r : (P,) float64
        From :func:`l2_vector`.

    Returns
    -------
    (m,) float64
    """
    G = l2_gram(basis, r)
    m, K = coef.shape
    out = np.empty(m)
    for j in range(m):
        total = 0.0
        for k in range(K):
            ck = coef[j, k]
            if ck != 0.0:
                s = 0.0
                for q in range(K):
                    cq = coef[j, q]
                    if cq != 0.0:
                        s += G[k, q] * cq
                total += ck * s
        out[j] = 0.5 * total
    return out
