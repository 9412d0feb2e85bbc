"""The element-wise maths (kernels/elementwise.py): every form of every activation and loss
against NumPy/SciPy, finite differences and each other."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from fastscape.kernels import elementwise as kel
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from fastscape.models import ACTIVATIONS, LOSSES


def test_softplus_block_matches_logaddexp():
    z = np.concatenate(
        [np.linspace(-60, 60, 4001), [0.0, 1e-300, -1e-300, 1e-12, -1e-12, 700.0, -700.0]]
    )
    out = np.empty_like(z)
    kel.softplus_block(z, out, np.empty(z.size, np.int64))
    want = np.logaddexp(0.0, z)
    assert_allclose(out, want, rtol=1e-13, atol=0)
    # beyond |z| = 708 the small term is dropped: exact there
    far = np.array([-1000.0, -709.0, 709.0, 1e6])
    out = np.empty_like(far)
    kel.softplus_block(far, out, np.empty(far.size, np.int64))
    assert_array_equal(out, np.maximum(far, 0.0))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_activate_block_matches_numpy(act):
    z = np.concatenate([np.linspace(-40, 40, 8001), [0.0, 1e-300, -1e-12, 800.0, -800.0]])
    out = np.empty_like(z)
    kel.activate_block(ACTIVATIONS[act], z, out, np.empty(z.size, np.int64))
    want = {
        "tanh": np.tanh(z), "sigmoid": scipy.special.expit(z), "relu": np.maximum(z, 0.0),
        "identity": z, "leaky_relu": np.where(z > 0.0, z, 0.01 * z),
        "gelu": z * scipy.special.ndtr(z),
        # 0.5 z (1 + tanh u) = z sigmoid(2 u), free of the cancellation at z << 0
        "gelu_tanh": z * scipy.special.expit(2.0 * np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)),
    }[act]  # fmt: skip
    assert_allclose(out, want, rtol=1e-14, atol=3e-16)


def test_log_block_matches_numpy():
    x = np.concatenate(
        [np.linspace(1.0, 12.0, 5001), np.geomspace(1e-300, 1e300, 2001), [1.0, 2.0, 0.5]]
    )
    out = np.empty_like(x)
    kel.log_block(x, out, np.empty(x.size, np.int64))
    assert_allclose(out, np.log(x), rtol=4e-16, atol=4e-16)
    special = np.array([np.inf, np.nan])
    out = np.empty(2)
    kel.log_block(special, out, np.empty(2, np.int64))
    assert out[0] == np.inf and np.isnan(out[1])


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False))
def test_softplus_and_sigmoid_stable(z):
    sp = kel.softplus(z)
    assert np.isfinite(sp)
    assert_allclose(sp, np.logaddexp(0.0, z), rtol=1e-14, atol=1e-300)
    s = kel.sigmoid(z)
    assert 0.0 <= s <= 1.0
    assert_allclose(s, scipy.special.expit(z), rtol=1e-13, atol=1e-300)


# away from ReLU's kink, where its derivatives are defined
Z_SMOOTH = np.concatenate([np.linspace(-6.0, 6.0, 241) + 0.013, [-30.0, 30.0, 1e-3, -1e-3]])


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_scalar_activation_derivatives_match_finite_differences(act):
    code = ACTIVATIONS[act]
    h = 1e-5
    for z in Z_SMOOTH:
        a = kel.activate(code, z)
        ap, am = kel.activate(code, z + h), kel.activate(code, z - h)
        d1 = kel.activate_d1(code, z, a)
        d2 = kel.activate_d2(code, z, a)
        assert abs(d1 - (ap - am) / (2 * h)) <= 1e-8 * max(1.0, abs(d1))
        d1p = kel.activate_d1(code, z + h, ap)
        d1m = kel.activate_d1(code, z - h, am)
        assert abs(d2 - (d1p - d1m) / (2 * h)) <= 1e-7 * max(1.0, abs(d2))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_activation_forms_agree(act):
    """Scalar, NumPy-array and vector-block forms of f, f' and f'' give the same values."""
    code = ACTIVATIONS[act]
    Z = Z_SMOOTH.copy()
    A = kel.activation_array(code, Z)
    scalar_a = np.array([kel.activate(code, z) for z in Z])
    assert_allclose(A, scalar_a, rtol=1e-14, atol=1e-16)
    d1 = np.array([kel.activate_d1(code, z, a) for z, a in zip(Z, scalar_a)])
    d2 = np.array([kel.activate_d2(code, z, a) for z, a in zip(Z, scalar_a)])
    assert_allclose(kel.activation_d1_array(code, Z, A), d1, rtol=1e-13, atol=1e-15)
    assert_allclose(kel.activation_d2_array(code, Z, A), d2, rtol=1e-13, atol=1e-15)
    blk = np.empty_like(Z)
    kel.activate_block(code, Z, blk, np.empty(Z.size, np.int64))
    assert_allclose(blk, scalar_a, rtol=1e-14, atol=3e-16)
    Zm = np.vstack([Z, -Z])
    D1 = np.empty_like(Zm)
    D2 = np.empty_like(Zm)
    Am = Zm.copy()
    kel.activate_derivatives(code, Am, D1, D2, np.empty(Z.size, np.int64))
    assert_allclose(Am[0], scalar_a, rtol=1e-14, atol=3e-16)
    assert_allclose(D1[0], d1, rtol=1e-13, atol=1e-15)
    assert_allclose(D2[0], d2, rtol=1e-13, atol=1e-15)


def _targets(loss, rng, n, c):
    if loss == "softmax_ce":
        return np.eye(c)[rng.integers(0, c, size=n)]
    if loss == "logistic":
        return rng.integers(0, 2, size=(n, 1)).astype(float)
    return rng.normal(size=(n, c))


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loss_forms_agree(loss):
    """Scalar output_loss (value, gradient), the NumPy derivatives and the block derivatives."""
    rng = np.random.default_rng(0)
    n, c = 37, (1 if loss == "logistic" else 4)
    code = LOSSES[loss]
    Z = 3.0 * rng.normal(size=(n, c))
    Y = _targets(loss, rng, n, c)
    g_np, H_np = kel.loss_derivatives_array(code, Z, Y)
    g = np.empty(c)
    h = 1e-6
    for i in range(n):
        value = kel.output_loss(code, Z[i], Y[i], g, True)
        assert_allclose(g, g_np[i], rtol=1e-13, atol=1e-15)
        for o in range(c):  # the gradient is the derivative of the value
            zp, zm = Z[i].copy(), Z[i].copy()
            zp[o] += h
            zm[o] -= h
            fd = kel.output_loss(code, zp, Y[i], g, False) - kel.output_loss(
                code, zm, Y[i], g, False
            )
            assert abs(fd / (2 * h) - g_np[i, o]) <= 1e-7
        assert np.isfinite(value)
    delta = np.empty((c, n))
    C = np.empty((c, n))
    S = np.empty((1, n))
    kel.output_derivatives(code, Z.T.copy(), Y, 1.0, delta, C, S, np.empty(n, np.int64))
    assert_allclose(delta.T, g_np, rtol=1e-13, atol=1e-15)
    # the block form keeps what the R-operator needs to rebuild H r: check on a random r
    r = rng.normal(size=(n, c))
    Hr = np.einsum("ijk,ik->ij", H_np, r)
    if loss == "softmax_ce":
        got = S[0][:, None] * C.T * (r - (C.T * r).sum(axis=1, keepdims=True))
    else:
        got = C.T * r
    assert_allclose(got, Hr, rtol=1e-12, atol=1e-15)
