"""Smoke test of the peer benchmarks (bench/peers.py): on tiny sizes, every installed peer
computes the same numbers as fastscape.

Deterministic quantities (losses on grids, lines and paths, Hessians, HVPs, Hutchinson
estimates on the same probes, Lanczos/ARPACK eigenvalues) agree to rtol 1e-8 in float64.
Two peers are checked differently, for stated reasons:

- PyHessian normalises its power-iteration vectors by ``norm + 1e-6``, which biases its
  eigenvalue estimates by about 1e-6 (absolute): checked to 1e-5 relative. Its trace uses its
  own (torch) probes: checked statistically, within 4 standard errors of the exact trace.
- loss-landscapes' ``planar_interpolation`` visits a zig-zag of points (even rows one d2 step
  further, see ``peers.ll_planar_coefficients``): compared with fastscape on those points.

A peer whose library is not installed is skipped.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastscape

RTOL = 1e-8
_BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load_peers():
    spec = importlib.util.spec_from_file_location("fastscape_bench_peers", _BENCH / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


peers = _load_peers()


def _need(impl):
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)


@pytest.fixture(scope="module")
def span_problems():
    return {
        "B1": peers.span_problem([5, 1], "identity", "logistic", 60, 5, seed=4),
        "B2": peers.span_problem([7, 6, 3], "tanh", "softmax_ce", 50, 4, seed=5),
    }


@pytest.mark.parametrize(
    "problem, impl",
    [("B1", impl) for impl in peers.SPAN_B1] + [("B2", impl) for impl in peers.SPAN_B2],
)
def test_grid_peers_agree_with_fastscape(span_problems, problem, impl):
    p = span_problems[problem]
    _need(impl)
    expected = fastscape.surface_2d(
        p.model, p.theta, p.dirs[0], p.dirs[1], p.data, alphas=p.coords[0], betas=p.coords[1],
        progress=False,
    ).loss.ravel()  # fmt: skip
    registry = peers.SPAN_B1 if problem == "B1" else peers.SPAN_B2
    got = registry[impl](p)()
    if impl == "loss_landscapes_random_plane":  # its own random plane: same size, finite
        assert got.shape == expected.shape and np.all(np.isfinite(got))
        return
    if impl == "loss_landscapes_planar":
        C = peers.ll_planar_coefficients(p)
        expected = fastscape.evaluate(p.model, p.basis, C, p.data).loss
    assert_allclose(got, expected, rtol=RTOL)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("impl", list(peers.SPAN_B7))
def test_b7_peers_agree_with_fastscape(impl, dtype):
    """B7's peers on a tiny two-hidden-layer model, in float64 (rtol 1e-8) and float32 (each
    in its own precision: rtol 1e-4 against fastscape's float64)."""
    _need(impl)
    p = peers.span_problem([7, 6, 5, 3], "tanh", "softmax_ce", 50, 4, seed=9)
    C = peers.ll_planar_coefficients(p) if impl == "loss_landscapes_planar" else p.C
    expected = fastscape.evaluate(p.model, p.basis, C, p.data).loss
    got = peers.SPAN_B7[impl](p, dtype)()
    assert_allclose(got, expected, rtol=RTOL if dtype == "float64" else 1e-4)


def test_seed_loop_is_an_independent_loss():
    # the seeds' NumPy loss, computed by hand for one logistic point
    p = peers.span_problem([3, 1], "identity", "logistic", 20, 3, seed=6)
    w, b = p.theta[:3], p.theta[3]
    z = p.X @ w + b
    by_hand = np.mean(np.log1p(np.exp(z)) - p.y * z)
    assert_allclose(peers.make_seed_loop(p)(p.C[4:5])[0], by_hand, rtol=1e-12)
    assert p.C[4, 1] == 0.0 and p.C[4, 2] == 0.0  # the centre of the 3 x 3 grid is theta


@pytest.mark.parametrize("kind", ["slice", "path"])
@pytest.mark.parametrize("impl", ["torch_loop", "loss_landscapes"])
def test_line_peers_agree_with_fastscape(kind, impl):
    _need(impl)
    line = peers.span_problem([7, 6, 3], "tanh", "softmax_ce", 40, 9, seed=8, dims=1)
    p = line if kind == "slice" else peers.path_problem(line, 9)
    fast = (peers.make_fastscape_slice if kind == "slice" else peers.make_fastscape_path)(p)()
    assert fast.shape == (9,)
    assert_allclose(peers.LINE_B6[impl](p)(), fast, rtol=RTOL)


@pytest.fixture(scope="module")
def curv():
    q = peers.small_curvature_problem((6, 5, 3), n=40, seed=3)
    H = q.model.hessian(q.theta, q.data)
    eig = np.linalg.eigvalsh(0.5 * (H + H.T))
    return q, H, eig[np.argsort(-np.abs(eig))]


# torch.func.hessian (forward over reverse) loads jvp decompositions through torch.jit.script,
# on which torch 2.13 itself warns
TORCH_JIT_DEPRECATION = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(TORCH_JIT_DEPRECATION)
@pytest.mark.parametrize("impl", [i for i in peers.HESSIAN_B4 if i != "fastscape"])
def test_hessian_peers_agree(curv, impl):
    q, H, _ = curv
    _need(impl)
    assert_allclose(peers.make_hessian(impl, q)(), H, rtol=RTOL, atol=1e-14 * np.abs(H).max())


@pytest.mark.parametrize("impl", ["jax", "torch", "pyhessian"])
def test_hvp_peers_agree(curv, impl):
    q, _, _ = curv
    peers.require(impl)
    v = np.random.default_rng(1).normal(size=q.model.n_params)
    want = q.model.hvp(q.theta, v, q.data)
    if impl == "jax":
        import jax.numpy as jnp

        one, batch = peers.jax_hvp(q.model, q.X, q.y, q.theta)
        got = np.asarray(one(jnp.asarray(v)))
        V = np.stack([v, -2.0 * v])
        assert_allclose(np.asarray(batch(jnp.asarray(V))), np.stack([want, -2.0 * want]),
                        rtol=RTOL, atol=1e-14)  # fmt: skip
    elif impl == "torch":
        got = peers.torch_hvp(q.model, q.X, q.y, q.theta)(v)
    else:
        got = peers.make_pyhessian_hvp(q)(v)
    assert_allclose(got, want, rtol=RTOL, atol=1e-14 * np.abs(want).max())


@pytest.mark.parametrize("impl", peers.EIGEN_B3)
@pytest.mark.parametrize("k", [1, 3])
def test_eigen_peers_agree(curv, impl, k):
    q, _, exact = curv
    _need(impl)
    # tight tolerance so that every method converges to machine-level accuracy
    vals = np.asarray(peers.make_eigen(impl, q, k, tol=1e-12)())
    assert vals.shape == (k,)
    assert_allclose(vals, exact[:k], rtol=1e-5 if impl == "pyhessian" else RTOL)


@pytest.mark.parametrize("impl", peers.TRACE_B5)
def test_trace_peers_agree(curv, impl):
    q, H, _ = curv
    _need(impl)
    est, se = peers.make_trace(impl, q, n_probes=100)()
    trace = float(np.trace(H))
    assert se > 0.0 and abs(est - trace) < 4.0 * se, (est, se, trace)
    if impl in ("jax_hutchinson", "torch_hutchinson"):  # the same probes as fastscape
        ref = fastscape.curvature.hessian_trace(q.model, q.theta, q.data, n_samples=100, seed=0)
        assert_allclose([est, se], [ref.estimate, ref.std_error], rtol=RTOL)


def test_missing_peer_is_skipped_not_faked():
    assert peers.family("jax_vmap") == "jax"
    assert peers.family("loss_landscapes_planar") == "loss_landscapes"
    assert peers.family("numpy_vectorized") is None
    assert not peers.available("no_such_peer_library_xyz")
    with pytest.raises(pytest.skip.Exception):
        peers.require("no_such_peer_library_xyz")


def _load_b8():
    """``bench/bench_mnist.py`` (it imports ``peers`` from its own folder)."""
    sys.path.insert(0, str(_BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            "fastscape_bench_mnist", _BENCH / "bench_mnist.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(_BENCH))


def test_b8_float32_peers_and_counts():
    """B8's own pieces on a tiny MNIST-shaped problem: the float32 torch HVP and surface agree
    with fastscape's float32 to float32 rounding; the flop count and the slope are exact."""
    pytest.importorskip("torch")
    b8 = _load_b8()
    sizes = [784, 6, 5, 10]
    q = b8.mnist_like(60, sizes=sizes)
    assert q.X.shape == (60, 784) and set(np.unique(q.y)) <= set(range(10))
    v = np.random.default_rng(0).normal(size=q.model.n_params)
    want = q.model.hvp(q.theta, v, q.data)
    got = b8.torch_hvp32(q)(v)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    f32 = q.model.hvp(q.theta, v, q.data, dtype="float32")
    assert np.abs(f32 - want).max() <= 1e-4 * np.abs(want).max()
    per_sample = 2 * 784 * 6 * 2 + 2 * 6 * 5 * 6 + 2 * 5 * 10 * 6
    assert b8.hvp_flops(sizes, 60) == 60 * per_sample
    assert b8._slope([1.0, 2.0, 4.0], [3.0, 12.0, 48.0]) == pytest.approx(2.0)
    d1, d2 = fastscape.directions.pair(q.model, q.theta, seed=2)
    basis = np.stack([q.theta, d1.vector, d2.vector])
    C = np.array([[1.0, 0.0, 0.0], [1.0, 0.5, -0.5], [1.0, -1.0, 1.0]])
    plane = b8.peers.SpanProblem(q.model, q.X, q.y, q.data, q.theta, (d1.vector, d2.vector),
                                 (None, None), basis, C)  # fmt: skip
    want_loss = fastscape.evaluate(q.model, basis, C, q.data).loss
    assert_allclose(b8._torch_surface32(plane)(), want_loss, rtol=1e-5)
