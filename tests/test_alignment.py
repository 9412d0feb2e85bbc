"""Permutation alignment (fastscape.alignment, exposed as paths.align): the aligned network is
the same function, a permuted copy is recovered exactly, the assignments are optimal against
brute force, and on digits the barrier after alignment is far below the barrier before."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastscape import datasets, fit, paths
from fastscape.alignment import Alignment, align, permute
from fastscape.models import MLP

SIZES = {1: [5, 7, 3], 2: [5, 8, 6, 3], 3: [5, 9, 7, 6, 3]}


def _net(depth, activation="tanh", seed=0, **kw):
    model = MLP(SIZES[depth], activation=activation, **kw)
    rng = np.random.default_rng(100 + seed)
    theta = model.init(seed) + 0.2 * rng.standard_normal(model.n_params)
    return model, theta


def _data(model, n=60, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, model.n_inputs))
    y = rng.integers(0, model.n_outputs, n)
    return X, y


@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_aligned_network_is_the_same_function(method, depth, activation):
    model, a = _net(depth, activation, seed=0, l2=0.01)
    _, b = _net(depth, activation, seed=1)
    X, y = _data(model)
    res = align(model, a, b, method, X if method == "activations" else None)
    assert isinstance(res, Alignment)
    assert not np.array_equal(res.theta, b)  # something was permuted
    np.testing.assert_allclose(model.logits(res.theta, X), model.logits(b, X), rtol=0, atol=1e-12)
    assert model.loss(res.theta, X, y) == pytest.approx(model.loss(b, X, y), rel=1e-13)
    # the parameters are θb's, rearranged
    np.testing.assert_array_equal(np.sort(res.theta), np.sort(b))
    np.testing.assert_array_equal(res.theta, permute(model, b, res.permutations))
    assert res.distance[0] == pytest.approx(np.linalg.norm(a - b), rel=1e-14)
    assert res.distance[1] == pytest.approx(np.linalg.norm(a - res.theta), rel=1e-14)
    assert res.distance[1] <= res.distance[0]


@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permuted_copy_is_recovered_exactly(method, depth, seed):
    model, a = _net(depth, seed=seed)
    rng = np.random.default_rng(seed)
    pi = [rng.permutation(k) for k in model.sizes[1:-1]]
    b = permute(model, a, pi)
    assert not np.array_equal(a, b)
    X, _ = _data(model)
    res = align(model, a, b, method, X if method == "activations" else None, seed=seed)
    np.testing.assert_array_equal(res.theta, a)
    for p, sigma in zip(pi, res.permutations):
        np.testing.assert_array_equal(sigma, np.argsort(p))  # π ∘ σ = identity
    assert res.distance[1] == 0.0
    assert res.converged


@pytest.mark.parametrize("init", ["forward", "identity"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_weight_matching_objective_never_decreases(init, depth, seed):
    model, a = _net(depth, seed=2 * seed)
    _, b = _net(depth, seed=2 * seed + 1)
    res = align(model, a, b, "weights", seed=seed, init=init)
    assert res.converged
    assert np.all(np.diff(res.objective) >= 0.0), res.objective
    if init == "identity":
        assert res.objective[0] == pytest.approx(a @ b, rel=1e-14)
    else:  # the forward start is taken only when it beats the identity
        assert res.objective[0] >= a @ b
    assert res.objective[-1] == pytest.approx(a @ res.theta, rel=1e-14)
    # |θa - π θb|² = |θa|² + |θb|² - 2 <θa, π θb>: the distance falls as the objective rises
    expected = np.sqrt(a @ a + b @ b - 2 * np.array([a @ b, res.objective[-1]]))
    np.testing.assert_allclose(res.distance, expected, rtol=1e-10)


def test_weight_matching_stops_at_a_coordinate_optimum():
    """After convergence no single layer's permutation can be improved (brute force)."""
    model = MLP([3, 4, 5, 2])
    a = model.init(0) + 0.3 * np.random.default_rng(0).standard_normal(model.n_params)
    b = model.init(1) + 0.3 * np.random.default_rng(1).standard_normal(model.n_params)
    res = align(model, a, b, "weights")
    best = a @ res.theta
    for h, k in enumerate(model.sizes[1:-1]):
        for q in itertools.permutations(range(k)):
            perms = list(res.permutations)
            perms[h] = np.asarray(q)
            assert a @ permute(model, b, perms) <= best + 1e-12


def test_weight_matching_one_hidden_layer_is_the_global_optimum():
    model = MLP([4, 6, 3])
    a = model.init(3) + 0.3 * np.random.default_rng(3).standard_normal(model.n_params)
    b = model.init(4) + 0.3 * np.random.default_rng(4).standard_normal(model.n_params)
    res = align(model, a, b, "weights")
    brute = max(a @ permute(model, b, [np.asarray(q)]) for q in itertools.permutations(range(6)))
    assert a @ res.theta == pytest.approx(brute, rel=1e-14)


def test_activation_matching_maximizes_the_summed_correlation():
    """Against np.corrcoef of the hidden activations and a brute-force search."""
    model = MLP([4, 6, 3], activation="tanh")
    a = model.init(5) + 0.3 * np.random.default_rng(5).standard_normal(model.n_params)
    b = model.init(6) + 0.3 * np.random.default_rng(6).standard_normal(model.n_params)
    X, _ = _data(model, n=80)

    def hidden(theta):
        (W, c), _ = model.unflatten(theta)
        return np.tanh(X @ W.T + c)

    C = np.corrcoef(hidden(a).T, hidden(b).T)[:6, 6:]
    res = align(model, a, b, "activations", X)
    rows = np.arange(6)
    brute = max(C[rows, list(q)].sum() for q in itertools.permutations(range(6)))
    assert C[rows, res.permutations[0]].sum() == pytest.approx(brute, rel=1e-12)
    np.testing.assert_allclose(res.objective, [np.trace(C), brute], rtol=1e-12)


def test_activation_matching_takes_a_batch_and_dead_units():
    model = MLP([3, 5, 2], activation="relu")
    a = model.init(0)
    # unit 0 of θb never fires on X: constant activations correlate 0 with everything
    W = model.unflatten(a)[0][0]
    b = a.copy()
    lay = model.layout[0]
    b[lay.weight] = np.concatenate([np.zeros(3), W[1:].ravel()])
    b[lay.bias.start] = -1.0
    X, y = _data(model)
    res = align(model, a, b, "activations", model.batch(X, y))
    assert np.isfinite(res.objective).all()
    np.testing.assert_allclose(model.logits(res.theta, X), model.logits(b, X), atol=1e-12)


def test_model_without_hidden_layer_is_returned_unchanged():
    model = MLP([4, 3])
    a, b = model.init(0), model.init(1)
    X, _ = _data(model)
    for method, data in (("weights", None), ("activations", X)):
        res = align(model, a, b, method, data)
        np.testing.assert_array_equal(res.theta, b)
        assert res.permutations == ()
        assert "no hidden layer" in res.settings["note"]
        assert res.n_iterations == 0


def test_paths_exposes_align():
    assert paths.align is align and paths.permute is permute


def test_bad_input_is_refused_early():
    model, a = _net(2)
    X, _ = _data(model)
    with pytest.raises(TypeError, match="model"):
        align("mlp", a, a)
    with pytest.raises(ValueError, match="theta_a"):
        align(model, a[:-1], a)
    with pytest.raises(ValueError, match="theta_b"):
        align(model, a, np.full_like(a, np.nan))
    with pytest.raises(ValueError, match="method"):
        align(model, a, a, "bias")
    with pytest.raises(ValueError, match="X is required"):
        align(model, a, a, "activations")
    with pytest.raises(ValueError, match="X is used by method='activations' only"):
        align(model, a, a, "weights", X)
    with pytest.raises(ValueError, match="X has 4 columns"):
        align(model, a, a, "activations", X[:, :4])
    with pytest.raises(ValueError, match="at least 2 samples"):
        align(model, a, a, "activations", X[:1])
    with pytest.raises(ValueError, match="seed"):
        align(model, a, a, seed=-1)
    with pytest.raises(ValueError, match="max_iter"):
        align(model, a, a, max_iter=0)
    with pytest.raises(ValueError, match="init"):
        align(model, a, a, init="random")
    with pytest.raises(ValueError, match="permutations has 1 entries"):
        permute(model, a, [np.arange(8)])
    with pytest.raises(ValueError, match=r"permutations\[1\] is not a permutation"):
        permute(model, a, [np.arange(8), np.zeros(6, dtype=int)])
    with pytest.raises(ValueError, match=r"permutations\[0\] must be 8 integers"):
        permute(model, a, [np.arange(7), np.arange(6)])


@pytest.fixture(scope="module")
def digits_pair():
    X, y = datasets.load("digits", standardize_features=True)
    model = MLP([64, 32, 10], activation="tanh")
    a = fit(model, X, y, "adam", lr=0.01, steps=300, seed=0).theta
    b = fit(model, X, y, "adam", lr=0.01, steps=300, seed=1).theta
    return model, X, y, a, b


@pytest.mark.slow
@pytest.mark.parametrize("method", ["weights", "activations"])
def test_alignment_lowers_the_barrier_between_digits_minima(digits_pair, method):
    """Two 64-32-10 tanh nets trained from seeds 0 and 1: the straight segment between them
    crosses a barrier of about 0.31 (nats); after alignment it is below 0.04 (docs/paths.md)."""
    model, X, y, a, b = digits_pair
    assert model.accuracy(a, X, y) > 0.99 and model.accuracy(b, X, y) > 0.99
    before = paths.linear_path(model, a, b, X, y, ts=21, progress=False).barrier
    res = align(model, a, b, method, X if method == "activations" else None)
    after = paths.linear_path(model, a, res.theta, X, y, ts=21, progress=False).barrier
    assert model.loss(res.theta, X, y) == pytest.approx(model.loss(b, X, y), rel=1e-12)
    assert before > 0.1
    assert after < 0.25 * before, (before, after)


@pytest.mark.slow
def test_cli_connect_align(tmp_path, capsys):
    import json

    from fastscape.cli import main

    out = tmp_path / "c"
    code = main(["connect", "--hidden", "8", "--steps", "150", "--bezier-steps", "40",
                 "--points", "11", "--align", "weights", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "linear barrier" in printed and "after alignment" in printed
    rep = json.loads((out / "connect.json").read_text())
    al = rep["alignment"]
    assert al["method"] == "weights" and al["converged"]
    assert al["distance_after"] <= al["distance_before"]
    assert np.all(np.diff(al["objective"]) >= 0)
    # θb and its permutation are the same function: the paths end at the same losses
    for kind in ("linear", "curve"):
        before, after = rep[kind]["loss"], al[kind]["loss"]
        assert len(after) == 11
        np.testing.assert_allclose([after[0], after[-1]], [before[0], before[-1]], rtol=1e-12)
    assert al["linear_barrier"] == pytest.approx(
        max(al["linear"]["loss"]) - max(al["linear"]["loss"][0], al["linear"]["loss"][-1]),
        abs=1e-12,
    )
    assert sorted(len(p) for p in al["permutations"]) == [8]
    # no hidden layer: nothing to permute, said so, the paths unchanged
    code = main(["connect", "--model", "logistic", "--steps", "100", "--bezier-steps", "20",
                 "--points", "5", "--align", "activations", "--out", str(tmp_path / "l"),
                 "--quiet"])  # fmt: skip
    assert code == 0
    rep = json.loads((tmp_path / "l" / "connect.json").read_text())
    assert rep["alignment"]["permutations"] == []
    assert "nothing to permute" in rep["alignment"]["note"]
    assert rep["alignment"]["linear_barrier"] == rep["linear_barrier"]
    assert any("nothing to permute" in w for w in rep["warnings"])
