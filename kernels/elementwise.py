"""The one home of the element-wise maths: activations, their derivatives, per-sample losses.

Every activation and every per-sample loss of the MLP family is written here once, in the forms
the kernels need:

- **codes**: the integer activation and loss codes every kernel dispatches on;
- **scalar** functions (one value; compiled into the callers' loops): :func:`activate`,
  :func:`activate_d1`, :func:`activate_d2`, :func:`output_loss` and their leaves;
- **NumPy array** functions for the layer-by-layer kernels whose products go through BLAS
  (``kernels.mlp``, ``kernels.hessian``): :func:`activation_array`, :func:`activation_d1_array`,
  :func:`activation_d2_array`, :func:`loss_derivatives_array`;
- **vector-block** functions: branch-free loops that LLVM vectorises (there is no vector libm:
  the scalar ``math.exp``, ``math.log1p`` and ``math.tanh`` cost 10-20 ns per call and would
  dominate a landscape): :func:`exp_neg`, :func:`exp_neg_twice`, :func:`exp_bounded`,
  :func:`log1p_unit`, :func:`exp_neg_abs_block`, :func:`softplus_block`, :func:`log_block`,
  :func:`activate_block`, :func:`activate_derivatives`, :func:`output_derivatives`.

The CUDA twins are in ``kernels/cuda/elementwise.py`` (device functions cannot call these), the
NumPy reference twins in ``fastscape/reference.py``.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit

# ----------------------------------------------------------------------------- codes
IDENTITY, TANH, RELU, SIGMOID, LEAKY_RELU, GELU, GELU_TANH = 0, 1, 2, 3, 4, 5, 6
SOFTMAX_CE, LOGISTIC, MSE = 0, 1, 2
#: Negative slope of ``LEAKY_RELU`` (PyTorch's default, ``nn.LeakyReLU(0.01)``).
LEAKY_SLOPE = 0.01
SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi), the tanh approximation's factor
GELU_CUBIC = 0.044715  # the tanh approximation's cubic coefficient

# Cody-Waite split of ln 2 (fdlibm's constants) and 1 / ln 2.
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
# 2**-k and 2**k from an integer-valued double k without a float-to-int conversion (AVX2 has
# no vector instruction for it: LLVM made four scalar conversions and reinsertions of every
# 4-double vector, a third of the tanh loop): the bits of k + 1.5 * 2**52 are those of the
# shifter plus k (|k| < 2**51), so the exponent field is an integer subtraction and a shift.
SHIFTER = 6755399441055744.0  # 1.5 * 2**52
SHIFTER_BITS = 0x4338000000000000  # its bits
EXP_NEG_BIAS = 1023 + SHIFTER_BITS  # bits of 2**-k: (EXP_NEG_BIAS - bits(k + S)) << 52
EXP_POS_BIAS = SHIFTER_BITS - 1023  # bits of 2**k: (bits(k + S) - EXP_POS_BIAS) << 52


# ----------------------------------------------------------------------------- scalar
@jit()
def softplus(z):
    """log(1 + exp(z)), finite for any finite z."""
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@jit()
def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@jit()
def sigmoid_from_exp(z, e):
    """The logistic sigmoid of z given ``e = exp(-|z|)``: ``1 / (1 + e)`` or ``e / (1 + e)``."""
    return (1.0 if z >= 0.0 else e) / (1.0 + e)


@jit()
def tanh_from_exp(z, e):
    """tanh z given ``e = exp(-2 |z|)``: ``copysign((1 - e) / (1 + e), z)``."""
    return math.copysign((1.0 - e) / (1.0 + e), z)


@jit()
def leaky_relu(z):
    """``z`` for z > 0, else ``LEAKY_SLOPE * z`` (PyTorch's ``LeakyReLU``)."""
    return z if z > 0.0 else LEAKY_SLOPE * z


@jit()
def gelu(z):
    """Exact GELU ``z Phi(z) = 0.5 z (1 + erf(z / sqrt 2))``, as ``0.5 z erfc(-z / sqrt 2)``
    (the same function; erfc keeps the relative accuracy of the tiny values at z << 0)."""
    return 0.5 * z * math.erfc(-z * SQRT1_2)


@jit()
def gelu_d1(z):
    """GELU'(z) = Phi(z) + z phi(z), with phi the standard normal density."""
    return 0.5 * math.erfc(-z * SQRT1_2) + z * (INV_SQRT_2PI * math.exp(-0.5 * z * z))


@jit()
def gelu_d2(z):
    """GELU''(z) = phi(z) (2 - z**2)."""
    return INV_SQRT_2PI * math.exp(-0.5 * z * z) * (2.0 - z * z)


@jit()
def gelu_tanh(z):
    """GELU's tanh approximation ``0.5 z (1 + tanh u)``, ``u = sqrt(2 / pi) (z + 0.044715 z**3)``
    (PyTorch's ``GELU(approximate="tanh")``), as ``z sigmoid(2 u)``: the same function
    (``0.5 (1 + tanh u) = sigmoid(2 u)``) without the cancellation of ``1 + tanh u`` at
    z << 0."""
    u = SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)
    e = math.exp(-2.0 * abs(u))
    return z * ((1.0 if u >= 0.0 else e) / (1.0 + e))


@jit()
def gelu_tanh_d1(z):
    """d/dz of :func:`gelu_tanh`: ``s + z s'`` with ``s = sigmoid(2 u)``,
    ``s' = 2 s (1 - s) u'``; ``s (1 - s) = e / (1 + e)**2``, ``e = exp(-2 |u|)``."""
    u = SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)
    du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * z * z)
    e = math.exp(-2.0 * abs(u))
    s = (1.0 if u >= 0.0 else e) / (1.0 + e)
    q = e / ((1.0 + e) * (1.0 + e))
    return s + z * (2.0 * q * du)


@jit()
def gelu_tanh_d2(z):
    """d²/dz² of :func:`gelu_tanh`: ``2 s' + z s''`` with
    ``s'' = 2 (s' (1 - 2 s) u' + s (1 - s) u'')``."""
    u = SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)
    du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * z * z)
    ddu = SQRT_2_OVER_PI * 6.0 * GELU_CUBIC * z
    e = math.exp(-2.0 * abs(u))
    s = (1.0 if u >= 0.0 else e) / (1.0 + e)
    q = e / ((1.0 + e) * (1.0 + e))
    ds = 2.0 * q * du
    return 2.0 * ds + z * (2.0 * (ds * (1.0 - 2.0 * s) * du + q * ddu))


@jit()
def activate(act, z):
    """Hidden activation f(z)."""
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


@jit()
def activate_d1(act, z, a):
    """f'(z), given z and a = f(z)."""
    if act == TANH:
        return 1.0 - a * a
    if act == RELU:
        return 1.0 if z > 0.0 else 0.0
    if act == SIGMOID:
        return a * (1.0 - a)
    if act == LEAKY_RELU:
        return 1.0 if z > 0.0 else LEAKY_SLOPE
    if act == GELU:
        return gelu_d1(z)
    if act == GELU_TANH:
        return gelu_tanh_d1(z)
    return 1.0


@jit()
def activate_d2(act, z, a):
    """f''(z), given z and a = f(z)."""
    if act == TANH:
        return -2.0 * a * (1.0 - a * a)
    if act == SIGMOID:
        return a * (1.0 - a) * (1.0 - 2.0 * a)
    if act == GELU:
        return gelu_d2(z)
    if act == GELU_TANH:
        return gelu_tanh_d2(z)
    return 0.0


@jit()
def logistic_from_exp(z, y, e):
    """Logistic loss ``softplus(z) - y z`` of one logit given ``e = exp(-|z|)``."""
    return max(z, 0.0) + math.log1p(e) - y * z


@jit()
def output_loss(loss_kind, z, y, g, want_grad):
    """Loss of one sample from its logits z (out,); with want_grad, writes dloss/dz into g.

    - softmax-CE: ``s * logsumexp(z) - y . z`` with ``s = sum(y)`` (= 1 for one-hot rows);
    - logistic: ``softplus(z) - y z``;
    - MSE: ``sum_o (z_o - y_o)**2``.
    """
    n_out = z.shape[0]
    if loss_kind == LOGISTIC:
        # one exp serves softplus and sigmoid: e = exp(-|z|)
        z0 = z[0]
        e = math.exp(-abs(z0))
        if want_grad:
            g[0] = sigmoid_from_exp(z0, e) - y[0]
        return logistic_from_exp(z0, y[0], e)
    if loss_kind == MSE:
        total = 0.0
        for o in range(n_out):
            r = z[o] - y[o]
            total += r * r
            if want_grad:
                g[o] = 2.0 * r
        return total
    m = z[0]
    for o in range(1, n_out):
        if z[o] > m:
            m = z[o]
    se = 0.0
    for o in range(n_out):
        se += math.exp(z[o] - m)
    lse = m + math.log(se)
    s = 0.0
    yz = 0.0
    for o in range(n_out):
        s += y[o]
        yz += y[o] * z[o]
    if want_grad:
        for o in range(n_out):
            g[o] = s * math.exp(z[o] - lse) - y[o]
    return s * lse - yz


# ----------------------------------------------------------------------------- NumPy arrays
@jit()
def activation_map(act, Z, A, which):
    """``which`` = 0: f(Z); 1: f'(Z); 2: f''(Z) (given A = f(Z)), elementwise from the scalar
    functions into a new array: the array form of the activations that have no NumPy
    formula of their own (one formula per activation)."""
    zf = Z.ravel()
    af = A.ravel()
    out = np.empty(zf.shape[0])
    for i in range(zf.shape[0]):
        if which == 0:
            out[i] = activate(act, zf[i])
        elif which == 1:
            out[i] = activate_d1(act, zf[i], af[i])
        else:
            out[i] = activate_d2(act, zf[i], af[i])
    return out.reshape(Z.shape)


def activation_array(act, Z):
    """f(Z) elementwise (NumPy's vector loops), a new array."""
    if act == TANH:
        return np.tanh(Z)
    if act == RELU:
        return np.maximum(Z, 0.0)
    if act == SIGMOID:
        # 1 / (1 + exp(-z)) = (1 + tanh(z / 2)) / 2, without overflow
        A = np.tanh(0.5 * Z)
        A += 1.0
        A *= 0.5
        return A
    if act != IDENTITY:
        return activation_map(act, np.ascontiguousarray(Z), np.ascontiguousarray(Z), 0)
    return Z.copy()


def activation_d1_array(act, Z, A):
    """f'(Z) given A = f(Z), a new array."""
    if act == TANH:
        return 1.0 - A * A
    if act == RELU:
        return (Z > 0.0).astype(np.float64)
    if act == SIGMOID:
        return A * (1.0 - A)
    if act != IDENTITY:
        return activation_map(act, np.ascontiguousarray(Z), np.ascontiguousarray(A), 1)
    return np.ones_like(Z)


def activation_d2_array(act, Z, A):
    """f''(Z) given A = f(Z), a new array."""
    if act == TANH:
        return -2.0 * A * (1.0 - A * A)
    if act == SIGMOID:
        d1 = A * (1.0 - A)
        return d1 * (1.0 - 2.0 * A)
    if act in (GELU, GELU_TANH):
        return activation_map(act, np.ascontiguousarray(Z), np.ascontiguousarray(A), 2)
    return np.zeros_like(Z)


def loss_derivatives_array(loss_kind, z, Y):
    """Per-sample dℓ/dz (B, c) and d²ℓ/dz² (B, c, c) from the logits z (B, c) and targets Y."""
    B, c = z.shape
    if loss_kind == LOGISTIC:
        e = np.exp(-np.abs(z))
        p = np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
        return p - Y, (e / (1.0 + e) ** 2)[:, :, None]
    if loss_kind == MSE:
        return 2.0 * (z - Y), np.broadcast_to(2.0 * np.eye(c), (B, c, c)).copy()
    s = Y.sum(axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    g = s[:, None] * p - Y
    Hout = -s[:, None, None] * (p[:, :, None] * p[:, None, :])
    Hout[:, np.arange(c), np.arange(c)] += s[:, None] * p
    return g, Hout


# ----------------------------------------------------------------------------- vector blocks
@jit()
def exp_neg(a, bits, scale, i):
    """exp(-a) for a >= 0 (nan gives nan), branch-free: the body of a vectorisable loop over i.

    ``a = k ln2 + r``, ``|r| <= ln2 / 2`` (Cody-Waite), ``exp(-r)`` by its degree-11 Chebyshev
    interpolant on [-ln2/2, ln2/2] (error 3e-18, coefficients computed with mpmath.chebyfit)
    and ``2**-k`` assembled from its exponent bits in ``bits[i]`` (int64 scratch) and read back
    through ``scale = bits.view(np.float64)``: LLVM forwards the store to the load, so the loop
    needs no second pass. exp(-a) is taken as 0 beyond a = 708 (where it is below 3.3e-308).
    Relative error a few ulp plus about ``a`` ulp from the reduction (the condition number of
    exp at -a). A plain function that LLVM inlines: inlined at Numba IR level instead
    (``inline="always"``), the store-to-load forwarding does not happen and the caller's loop
    stays scalar.
    """
    x = min(a, 708.0)
    k = np.floor(x * INV_LN2 + 0.5)
    scale[i] = k + SHIFTER
    bits[i] = (EXP_NEG_BIAS - bits[i]) << 52 if a <= 708.0 else 0  # bits 0 are +0.0
    r = (x - k * LN2_HI) - k * LN2_LO
    p = -2.5110037605963777e-08
    p = p * r + 2.763263963904103e-07
    p = p * r - 2.755724091857897e-06
    p = p * r + 2.4801485482328494e-05
    p = p * r - 0.00019841269890047113
    p = p * r + 0.0013888888952314775
    p = p * r - 0.008333333333319601
    p = p * r + 0.0416666666664881
    p = p * r - 0.1666666666666668
    p = p * r + 0.5000000000000019
    p = p * r - 1.0
    p = p * r + 1.0
    return p * scale[i]


@jit()
def exp_neg_twice(y, bits, scale, i):
    """exp(-2 y) for y >= 0 (nan gives nan): :func:`exp_neg` specialised for tanh.

    The factor 2 is folded into the reduction (``2y = k ln2 + 2r'`` with the Cody-Waite halves
    of ln2, exact) and into the polynomial (coefficients times ``2**j``, exact), and the cap
    keeps ``2y <= 708`` without the select that makes exp(-a) exactly 0 beyond it: tanh needs
    only ``1 - e`` and ``1 + e``, where 3e-308 and 0 give the same bits. Two vector
    instructions fewer per element than ``exp_neg(2 |z|)``.
    """
    x = min(y, 354.0)
    k = np.floor(x * (2.0 * INV_LN2) + 0.5)
    scale[i] = k + SHIFTER
    bits[i] = (EXP_NEG_BIAS - bits[i]) << 52
    r = (x - k * (0.5 * LN2_HI)) - k * (0.5 * LN2_LO)
    p = -5.1425357017013815e-05
    p = p * r + 0.00028295822990378013
    p = p * r - 0.0014109307350312432
    p = p * r + 0.0063491802834760944
    p = p * r - 0.025396825459260305
    p = p * r + 0.08888888929481456
    p = p * r - 0.26666666666622724
    p = p * r + 0.6666666666638096
    p = p * r - 1.3333333333333344
    p = p * r + 2.0000000000000075
    p = p * r - 2.0
    p = p * r + 1.0
    return p * scale[i]


@jit()
def exp_bounded(x, bits, scale, i):
    """exp(x) for |x| <= 708, branch-free: the body of a vectorisable loop over i.

    ``x = k ln2 + r`` with k = round(x / ln2) (Cody-Waite halves of ln2), ``exp(r)`` by the
    Chebyshev polynomial of :func:`exp_neg` evaluated at ``-r``, and ``2**k`` from its exponent
    bits in ``bits[i]`` (int64 scratch, read back through ``scale = bits.view(np.float64)``).
    Relative error a few ulp plus about |x| ulp from the reduction.
    """
    k = np.floor(x * INV_LN2 + 0.5)
    scale[i] = k + SHIFTER
    bits[i] = (bits[i] - EXP_POS_BIAS) << 52
    r = (k * LN2_HI - x) + k * LN2_LO  # -(x - k ln2)
    p = -2.5110037605963777e-08
    p = p * r + 2.763263963904103e-07
    p = p * r - 2.755724091857897e-06
    p = p * r + 2.4801485482328494e-05
    p = p * r - 0.00019841269890047113
    p = p * r + 0.0013888888952314775
    p = p * r - 0.008333333333319601
    p = p * r + 0.0416666666664881
    p = p * r - 0.1666666666666668
    p = p * r + 0.5000000000000019
    p = p * r - 1.0
    p = p * r + 1.0
    return p * scale[i]


@jit(inline="always")
def log1p_unit(u):
    """log1p(u) for u in [0, 1], branch-free and vectorisable (see :func:`softplus_block`).

    Inlined into its callers' loops at Numba IR level, so LLVM vectorises them as before.
    """
    big = u > 0.41421356237309503
    c = 0.41421356237309503 if big else 0.0
    s = (u - c) / (2.0 + u + c)
    s2 = s * s
    q = 0.07404933786156531
    q = q * s2 + 0.0765625655736915
    q = q * s2 + 0.09091816120808513
    q = q * s2 + 0.11111098523202137
    q = q * s2 + 0.1428571438036914
    q = q * s2 + 0.19999999999650955
    q = q * s2 + 0.33333333333333826
    q = q * s2 + 1.0
    off = 0.34657359027997264 if big else 0.0
    return off + 2.0 * s * q


@jit()
def tanh_at(z, bits, scale, i):
    """tanh z by :func:`exp_neg_twice` (the body of a vectorisable loop over i): absolute error
    below 2e-16 (relative error grows like 1e-16 / |z| as z -> 0, where tanh z ~ z: harmless
    for a loss, which depends on activations through absolute changes)."""
    return tanh_from_exp(z, exp_neg_twice(abs(z), bits, scale, i))


@jit()
def sigmoid_at(z, bits, scale, i):
    """The logistic sigmoid of z by :func:`exp_neg` (the body of a vectorisable loop over i)."""
    return sigmoid_from_exp(z, exp_neg(abs(z), bits, scale, i))


@jit()
def gelu_tanh_at(z, bits, scale, i):
    """GELU's tanh approximation ``z sigmoid(2 u)`` (:func:`gelu_tanh`) with the sigmoid by
    :func:`sigmoid_at` (the body of a vectorisable loop over i)."""
    u = SQRT_2_OVER_PI * (z + GELU_CUBIC * z * z * z)
    return z * sigmoid_at(2.0 * u, bits, scale, i)


@jit()
def activate_at(act, z, bits, scale, i):
    """f(z) as the body of a loop over i: the vectorisable forms (:func:`tanh_at`,
    :func:`sigmoid_at`, :func:`gelu_tanh_at`) where there is one, else the scalar function.
    For loops whose ``act`` is fixed (the dispatch folds away once inlined)."""
    if act == TANH:
        return tanh_at(z, bits, scale, i)
    if act == SIGMOID:
        return sigmoid_at(z, bits, scale, i)
    if act == GELU_TANH:
        return gelu_tanh_at(z, bits, scale, i)
    return activate(act, z)


@jit()
def softplus_at(z, bits, scale, i):
    """softplus(z) = max(z, 0) + log1p(exp(-|z|)) by :func:`exp_neg` and :func:`log1p_unit`
    (the body of a vectorisable loop over i)."""
    return max(z, 0.0) + log1p_unit(exp_neg(abs(z), bits, scale, i))


@jit()
def exp_neg_abs_block(z, factor, shift, out, bits):
    """out[i] = exp(-factor * |z[i] - shift|), vectorisable (:func:`exp_neg`), one pass.

    ``out`` must not be ``z``: LLVM vectorises a loop only when its input and output arrays do
    not overlap.

    Parameters
    ----------
    z : (B,) float64
    factor, shift : float
    out : (B,) float64, written
    bits : (B,) int64, scratch
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    for i in range(n):
        out[i] = exp_neg(factor * abs(z[i] - shift), bits, scale, i)


@jit()
def softplus_block(z, out, bits):
    """out[i] = softplus(z[i]) = max(z, 0) + log1p(exp(-|z|)) for a whole buffer, vectorisable.

    ``u = exp(-|z|)`` by :func:`exp_neg`; ``log1p(u)`` for u in (0, 1] as ``2 atanh(s)``
    with ``s = u / (2 + u)``, or, for u > sqrt(2) - 1, as ``ln(sqrt 2) + 2 atanh(s')`` with
    ``s' = (u - (sqrt 2 - 1)) / (u + 1 + sqrt 2)`` (the same thing for ``(1 + u) / sqrt 2``), so
    that ``|s| <= 0.1716``; ``atanh(s) / s`` is a degree-7 Chebyshev interpolant in s² on
    [0, 0.0295] (error 1.2e-18; the odd series would need 11 terms).
    Unlike ``log(1 + u)`` this keeps full relative accuracy for tiny u. One fused pass.

    Agrees with ``numpy.logaddexp(0, z)`` to a relative 1e-13 (tested); for z -> -inf the error
    grows like |z| ulp, the condition number of softplus there.

    Parameters
    ----------
    z : (B,) float64
    out : (B,) float64, written (must not be z)
    bits : (B,) int64, scratch
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    for i in range(n):
        out[i] = softplus_at(z[i], bits, scale, i)


@jit()
def log_block(x, out, bits):
    """out[i] = log(x[i]) for positive normal x, vectorisable; inf and nan pass through.

    ``x = m 2**e`` with m in [1, 2) taken from the bits, ``log x = e ln2 + log1p(m - 1)`` with
    :func:`log1p_unit` (``m - 1`` is exact) and ln2 split as in :func:`exp_neg` so that
    ``e ln2`` carries no rounding. Relative error a few ulp (tested against ``numpy.log``).
    Zero, negative and subnormal inputs give meaningless results (the span engine calls it on
    softmax normalisers, which are >= 1 or not finite).

    Parameters
    ----------
    x : (B,) float64
    out : (B,) float64, written (must not be x)
    bits : (B,) int64, scratch
    """
    n = x.shape[0]
    xb = x.view(np.int64)
    mant = bits.view(np.float64)
    for i in range(n):
        bits[i] = (xb[i] & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
        biased = (xb[i] >> 52) & 0x7FF
        e = np.float64(biased - 1023)
        r = e * LN2_HI + (e * LN2_LO + log1p_unit(mant[i] - 1.0))
        out[i] = x[i] if biased == 0x7FF else r


@jit()
def activate_block(act, z, out, bits):
    """out = f(z) elementwise for a hidden activation, vectorisable, one fused pass.

    tanh by :func:`tanh_at` and the logistic sigmoid by :func:`sigmoid_at`, each in one loop
    with its division; ReLU and identity directly; the others by :func:`activate_at`, one loop
    per activation.

    Parameters
    ----------
    act : int
    z : (h,) float64
    out : (h,) float64, written (must not be z)
    bits : (h,) int64, scratch
    """
    n = z.shape[0]
    scale = bits.view(np.float64)
    if act == TANH:
        for i in range(n):
            out[i] = tanh_at(z[i], bits, scale, i)
    elif act == SIGMOID:
        for i in range(n):
            out[i] = sigmoid_at(z[i], bits, scale, i)
    elif act == RELU:
        for i in range(n):
            out[i] = max(z[i], 0.0)
    elif act == LEAKY_RELU:
        for i in range(n):
            out[i] = activate_at(LEAKY_RELU, z[i], bits, scale, i)
    elif act == GELU:
        for i in range(n):
            out[i] = activate_at(GELU, z[i], bits, scale, i)
    elif act == GELU_TANH:
        for i in range(n):
            out[i] = activate_at(GELU_TANH, z[i], bits, scale, i)
    else:
        for i in range(n):
            out[i] = z[i]


@jit()
def activate_derivatives(act, Z, D1, D2, bits):
    """In place: ``Z <- f(Z)``; ``D1 = f'(z)``, ``D2 = f''(z)``, all (h, nb), one vectorised pass
    per row (tanh and the sigmoid by :func:`tanh_at` and :func:`sigmoid_at`)."""
    h, nb = Z.shape
    scale = bits.view(np.float64)
    for j in range(h):
        z = Z[j]
        d1 = D1[j]
        d2 = D2[j]
        if act == TANH:
            for i in range(nb):
                zi = z[i]
                a = tanh_at(zi, bits, scale, i)
                z[i] = a
                d1[i] = activate_d1(TANH, zi, a)
                d2[i] = activate_d2(TANH, zi, a)
        elif act == SIGMOID:
            for i in range(nb):
                zi = z[i]
                a = sigmoid_at(zi, bits, scale, i)
                z[i] = a
                d1[i] = activate_d1(SIGMOID, zi, a)
                d2[i] = activate_d2(SIGMOID, zi, a)
        elif act == RELU:
            for i in range(nb):
                zi = z[i]
                z[i] = max(zi, 0.0)
                d1[i] = activate_d1(RELU, zi, 0.0)
                d2[i] = 0.0
        elif act != IDENTITY:
            for i in range(nb):
                zi = z[i]
                a = activate_at(act, zi, bits, scale, i)
                z[i] = a
                d1[i] = activate_d1(act, zi, a)
                d2[i] = activate_d2(act, zi, a)
        else:
            for i in range(nb):
                d1[i] = 1.0
                d2[i] = 0.0


@jit()
def output_derivatives(loss_kind, Z, Yb, inv_n, delta, C, S, bits):
    """The output layer's loss derivatives for one block of samples, feature-major (out, nb).

    Parameters
    ----------
    loss_kind : int
    Z : (out, nb) array
        Logits (overwritten for softmax-CE).
    Yb : (nb, out) array
        Targets of the block, sample-major.
    inv_n : float
        1 / (total number of samples): the mean loss's factor.
    delta : (out, nb) array, written
        d(mean loss) / dz.
    C : (out, nb) array, written
        Softmax-CE: the probabilities p; logistic: ``p (1 - p) / n``; MSE: ``2 / n``.
    S : (1, nb) array, written
        Softmax-CE: ``sum(y) / n`` per sample; 0 otherwise.
    bits : (nb,) int64 scratch
    """
    n_out, nb = Z.shape
    scale = bits.view(np.float64)
    s = S[0]
    if loss_kind == SOFTMAX_CE:
        mx = Z[0].copy()
        for o in range(1, n_out):
            zo = Z[o]
            for i in range(nb):
                mx[i] = max(mx[i], zo[i])
        tot = np.zeros(nb)
        for o in range(n_out):
            zo = Z[o]
            co = C[o]
            for i in range(nb):
                e = exp_neg(mx[i] - zo[i], bits, scale, i)
                co[i] = e
                tot[i] += e
        for i in range(nb):
            tot[i] = 1.0 / tot[i]
            s[i] = 0.0
        for o in range(n_out):
            for i in range(nb):
                s[i] += Yb[i, o]
        for o in range(n_out):
            co = C[o]
            do = delta[o]
            for i in range(nb):
                p = co[i] * tot[i]
                co[i] = p
                do[i] = (s[i] * p - Yb[i, o]) * inv_n
        for i in range(nb):
            s[i] *= inv_n
    elif loss_kind == LOGISTIC:
        for o in range(n_out):
            zo = Z[o]
            co = C[o]
            do = delta[o]
            for i in range(nb):
                p = sigmoid_at(zo[i], bits, scale, i)
                do[i] = (p - Yb[i, o]) * inv_n
                co[i] = p * (1.0 - p) * inv_n
        for i in range(nb):
            s[i] = 0.0
    else:
        for o in range(n_out):
            zo = Z[o]
            co = C[o]
            do = delta[o]
            for i in range(nb):
                do[i] = 2.0 * inv_n * (zo[i] - Yb[i, o])
                co[i] = 2.0 * inv_n
        for i in range(nb):
            s[i] = 0.0
