"""The L2 term (kernels/penalty.py) through loss, gradient, HVP, Hessian and the span engine,
against the NumPy twins, closed forms and its invariances."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import case_id, make_problem
from fastscape.kernels import penalty as kp
from numpy.testing import assert_allclose, assert_array_equal

import fastscape
from fastscape import reference as ref

CASES = [
    ([3, 1], "identity", "logistic"),
    ([3, 2], "identity", "mse"),
    ([4, 5, 3], "tanh", "softmax_ce"),
    ([3, 5, 4, 1], "gelu", "logistic"),
    ([4, 3, 4, 2], "leaky_relu", "mse"),
    ([4, 6, 3], "gelu_tanh", "softmax_ce"),
]


def _problem(case, l2, l2_bias, n=40, seed=0):
    sizes, act, loss = case
    _, theta, X, y = make_problem(case, n=n, seed=seed, scale=0.7)
    model = fastscape.MLP(sizes, activation=act, loss=loss, l2=l2, l2_bias=l2_bias)
    return model, theta, model.batch(X, y)


def _ref(model):
    return (model.sizes, model.activation, model.loss_name)


@pytest.mark.parametrize("l2_bias", [False, True])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_l2_matches_twin(case, l2_bias):
    model, theta, data = _problem(case, 0.25, l2_bias)
    s, a, lo = _ref(model)
    kw = {"l2": 0.25, "l2_bias": l2_bias}
    want_v, want_g = ref.mlp_loss_grad(theta, s, a, lo, data.X, data.Y, **kw)
    assert_allclose(model.loss(theta, data), want_v, rtol=1e-12)
    v, g = model.grad(theta, data)
    assert_allclose(v, want_v, rtol=1e-12)
    assert_allclose(g, want_g, rtol=1e-10, atol=1e-13)
    V = np.random.default_rng(1).normal(size=(3, model.n_params))
    want_hv = np.stack([ref.block_hvp(theta, x, s, a, lo, data.X, data.Y, **kw) for x in V])
    assert_allclose(model.hvp(theta, V, data), want_hv, rtol=1e-10, atol=1e-12)
    want_H = ref.mlp_hessian(theta, s, a, lo, data.X, data.Y, **kw)
    assert_allclose(model.hessian(theta, data), want_H, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(2)
    basis = np.stack([theta, rng.normal(size=model.n_params), rng.normal(size=model.n_params)])
    C = rng.normal(size=(9, 3))
    C[2, 1:] = 0.0
    got = fastscape.evaluate(model, basis, C, data).loss
    want, _ = ref.span_eval(basis, C, s, a, lo, data.X, data.Y, **kw)
    assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("case", CASES[:3], ids=case_id)
def test_l2_adds_the_closed_form(case):
    """With l2, every quantity is the unpenalised one plus the penalty's closed form."""
    lam = 0.7
    model, theta, data = _problem(case, lam, False)
    plain = fastscape.MLP(model.sizes, model.activation, model.loss_name)
    r = kp.l2_vector(model.sizes, lam, False)
    weights = np.concatenate([np.ones(lay.weight.stop - lay.weight.start) for lay in model.layout])
    assert r.sum() == lam * weights.size  # the weights, not the biases
    for lay in model.layout:
        assert (r[lay.weight] == lam).all() and (r[lay.bias] == 0.0).all()
    assert_allclose(
        model.loss(theta, data), plain.loss(theta, data) + 0.5 * lam * np.sum(r / lam * theta**2)
    )
    assert_allclose(model.grad(theta, data)[1], plain.grad(theta, data)[1] + r * theta)
    V = np.random.default_rng(3).normal(size=(2, model.n_params))
    assert_allclose(model.hvp(theta, V, data), plain.hvp(theta, V, data) + r * V)
    H = plain.hessian(theta, data)
    H[np.diag_indices_from(H)] += r
    assert_array_equal(model.hessian(theta, data), H)


def test_zero_l2_is_the_plain_model_bit_for_bit():
    case = CASES[2]
    model, theta, data = _problem(case, 0.0, True)
    plain = fastscape.MLP(*case)
    assert model == plain and model.spec.penalty is None
    assert model.loss(theta, data) == plain.loss(theta, data)
    assert_array_equal(model.grad(theta, data)[1], plain.grad(theta, data)[1])


def test_span_l2_is_the_quadratic_of_the_points():
    rng = np.random.default_rng(4)
    basis = rng.normal(size=(4, 30))
    C = rng.normal(size=(12, 4))
    C[3, 1:] = 0.0
    r = np.where(rng.random(30) < 0.6, 0.4, 0.0)
    got = kp.span_l2(basis, C, r)
    want = 0.5 * np.array([np.sum(r * (c @ basis) ** 2) for c in C])
    assert_allclose(got, want, rtol=1e-13)
    G = kp.l2_gram(basis, r)
    assert_array_equal(G, G.T)
    # a point's value does not depend on the others of the call
    for j in (0, 3, 11):
        assert_array_equal(kp.span_l2(basis, C[j : j + 1], r), got[j : j + 1])


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=case_id)
def test_l2_span_bits_independent_of_tiles_and_threads(case):
    model, theta, data = _problem(case, 0.3, True, n=60)
    rng = np.random.default_rng(5)
    basis = np.stack([theta, rng.normal(size=model.n_params), rng.normal(size=model.n_params)])
    C = rng.normal(size=(17, 3))
    whole = fastscape.evaluate(model, basis, C, data)
    tiled = fastscape.evaluate(model, basis, C, data, tile_size=4)
    assert_array_equal(whole.loss, tiled.loss)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fastscape.evaluate(model, basis, C, data).loss
        g1 = model.grad(theta, data)[1]
        h1 = model.hvp(theta, C @ basis, data)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = fastscape.evaluate(model, basis, C, data).loss
        g2 = model.grad(theta, data)[1]
        h2 = model.hvp(theta, C @ basis, data)
    finally:
        numba.set_num_threads(previous)
    assert_array_equal(one, two)
    assert_array_equal(g1, g2)
    assert_array_equal(h1, h2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"l2": -0.1}, ValueError, "l2 must be finite and >= 0"),
        ({"l2": float("nan")}, ValueError, "l2 must be finite"),
        ({"l2": float("inf")}, ValueError, "l2 must be finite"),
        ({"l2": "0.1"}, TypeError, "l2 must be a number"),
        ({"l2": None}, TypeError, "l2 must be a number"),
        ({"l2": True}, TypeError, "l2 must be a number"),
        ({"l2": 0.1, "l2_bias": 1}, TypeError, "l2_bias must be a bool"),
    ],
)
def test_l2_is_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastscape.MLP([3, 4, 2], **kwargs)


def test_l2_in_identity_of_the_model():
    a = fastscape.MLP([3, 4, 2], l2=0.1)
    assert a == fastscape.MLP([3, 4, 2], l2=0.1)
    assert hash(a) == hash(fastscape.MLP([3, 4, 2], l2=0.1))
    assert a != fastscape.MLP([3, 4, 2]) and a != fastscape.MLP([3, 4, 2], l2=0.1, l2_bias=True)
    assert fastscape.MLP([3, 4, 2], l2_bias=True) == fastscape.MLP([3, 4, 2])  # no term
    assert "l2=0.1" in repr(a) and "l2" not in repr(fastscape.MLP([3, 4, 2]))
    d = a.to_dict()
    assert d["l2"] == 0.1 and d["l2_bias"] is False
    assert fastscape.MLP(**d) == a
