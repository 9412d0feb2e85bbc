"""Issue 6: fastscape against its peers, problems B1-B6, side by side in one run.

Run (see bench/README.md)::

    python -m pytest bench/bench_peers.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds --benchmark-json=bench/results/peers.json

One ``benchmark.group`` per problem, the implementation is the ``impl`` parameter. Before
anything is timed, every implementation is built, warmed up (Numba compile or cache load, JAX
tracing and XLA compilation, PyTorch's first-call overheads) and checked against fastscape with
``assert_allclose``. Threads: every implementation gets ``peers.THREADS`` (Numba, PyTorch,
NumPy's BLAS set explicitly; XLA as far as it can be, see ``peers``), recorded in extra_info.
A peer whose library is missing is skipped with a message.

Rounds: ``benchmark.pedantic`` with the rounds of :data:`ROUNDS` (1 round for the slow peers,
which take tens of seconds per call); the median of 1 round is that round.
"""

from __future__ import annotations

import time

import numpy as np
import peers
import pytest
from numpy.testing import assert_allclose

import fastscape

RTOL = 1e-8  # agreement of deterministic quantities in float64

# rounds per (group, impl); the default is FAST_ROUNDS
FAST_ROUNDS = 5
ROUNDS = {
    ("B1", "seed_loop"): 1,
    ("B1", "numpy_vectorized"): 3,
    ("B1", "torch_batched"): 3,
    ("B1", "torch_span"): 3,
    ("B1", "jax_vmap"): 2,
    ("B2", "fastscape"): 3,
    ("B2", "numpy_vectorized"): 1,
    ("B2", "torch_func_vmap"): 1,
    ("B2", "jax_vmap"): 1,
    ("B2", "loss_landscapes_planar"): 1,
    ("B2", "loss_landscapes_random_plane"): 1,
    ("B3", "pyhessian"): 3,
    ("B3", "fastscape_power"): 1,
    ("B4", "torch_func_hessian"): 1,
    ("B4", "jax_hessian"): 1,
    ("B5", "pyhessian"): 3,
    ("B6", "torch_loop"): 1,
    ("B6", "loss_landscapes"): 1,
}


@pytest.fixture(scope="module", autouse=True)
def fixed_threads():
    return peers.set_threads(peers.THREADS)


def _record(benchmark, problem, impl, fixed_threads, first_call_s, **info):
    rounds = ROUNDS.get((problem, impl), FAST_ROUNDS)
    benchmark.extra_info.update(
        problem=problem, impl=impl, threads=peers.THREADS, thread_settings=fixed_threads,
        first_call_s=first_call_s, rounds=rounds, **info,
    )  # fmt: skip
    return rounds


def _time(benchmark, fn, rounds):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def _build(impl, make, p):
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)
    return make(p)


# ----------------------------------------------------------------------------- B1, B2
@pytest.fixture(scope="module")
def b1():
    return peers.span_problem([100, 1], "identity", "logistic", 10_000, 101)


@pytest.fixture(scope="module")
def b2():
    return peers.span_problem([784, 128, 10], "tanh", "softmax_ce", 5_000, 51)


def _check_points(p):
    """A few points spread over the grid, among them the corners and the centre."""
    m = p.C.shape[0]
    return p.C[np.unique([0, m // 7, m // 3, m // 2, (5 * m) // 7, m - 1])]


def _span_bench(benchmark, fixed_threads, problem, p, impl, make):
    run = _build(impl, make, p)
    few = _check_points(p)
    expected = fastscape.evaluate(p.model, p.basis, few, p.data).loss
    t0 = time.perf_counter()
    if impl.startswith("loss_landscapes"):
        # no subset interface: warm up and check on a 3 x 3 grid of the same spacing
        small = peers.with_coords(p, p.coords[0][:3])
        got = _build(impl, make, small)()
        if impl == "loss_landscapes_planar":
            C_ll = peers.ll_planar_coefficients(small)
            assert_allclose(got, fastscape.evaluate(p.model, p.basis, C_ll, p.data).loss, rtol=RTOL)
        else:  # random_plane: its own random plane, nothing to compare with
            assert got.shape == (9,) and np.all(np.isfinite(got))
    else:
        assert_allclose(run(few), expected, rtol=RTOL)  # also the warm-up (compile, trace)
    first = time.perf_counter() - t0
    benchmark.group = {
        "B1": "B1 logistic d=100 n=10000 grid 101x101",
        "B2": "B2 MLP 784-128-10 tanh n=5000 grid 51x51",
    }[problem]
    rounds = _record(
        benchmark, problem, impl, fixed_threads, first, n=p.X.shape[0], sizes=list(p.model.sizes),
        P=p.model.n_params, points=int(p.C.shape[0]),
        note="computes a different (random) plane, timed only" if "random_plane" in impl else "",
    )  # fmt: skip
    out = _time(benchmark, run, rounds)
    assert np.asarray(out).shape == (p.C.shape[0],)


@pytest.mark.parametrize("impl", list(peers.SPAN_B1))
def bench_b1_logistic_grid(benchmark, fixed_threads, b1, impl):
    _span_bench(benchmark, fixed_threads, "B1", b1, impl, peers.SPAN_B1[impl])


@pytest.mark.parametrize("impl", list(peers.SPAN_B2))
def bench_b2_mlp_grid(benchmark, fixed_threads, b2, impl):
    _span_bench(benchmark, fixed_threads, "B2", b2, impl, peers.SPAN_B2[impl])


# ----------------------------------------------------------------------------- B3, B4, B5
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn.datasets")
    q = peers.digits_problem()
    H = q.model.hessian(q.theta, q.data)
    eig = np.linalg.eigvalsh(0.5 * (H + H.T))
    return q, H, eig[np.argsort(-np.abs(eig))], float(np.trace(H))


# PyHessian stops when the Rayleigh quotient changes by less than tol between two iterations;
# at tol = 1e-4 its eigenvalues are within ~2e-3 of the exact ones (measured), the others'
# (residual or ARPACK criteria) within 1e-6.
EIGEN_RTOL = {"pyhessian": 5e-3}


@pytest.mark.parametrize("impl", peers.EIGEN_B3)
@pytest.mark.parametrize("k", [1, 5])
def bench_b3_top_eigen(benchmark, fixed_threads, digits, k, impl):
    q, _, exact, _ = digits
    if impl == "fastscape_power" and k == 5:
        rounds_note = "block power iteration: the 5th/6th eigenvalue ratio is 0.976, ~1800 HVPs"
    else:
        rounds_note = ""
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)
    run = peers.make_eigen(impl, q, k, tol=1e-4)
    t0 = time.perf_counter()
    vals = np.asarray(run())
    first = time.perf_counter() - t0
    assert_allclose(vals, exact[:k], rtol=EIGEN_RTOL.get(impl, 1e-6))
    benchmark.group = f"B3 top-{k} Hessian eigenvalues MLP 64-32-10 digits tol 1e-4"
    rounds = _record(
        benchmark, "B3", impl, fixed_threads, first, k=k, n=q.X.shape[0], P=q.model.n_params,
        eigenvalues=vals.tolist(), exact=exact[:k].tolist(), note=rounds_note,
    )  # fmt: skip
    _time(benchmark, run, rounds)


# torch.func.hessian loads jvp decompositions through torch.jit.script, on which torch warns
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("impl", peers.HESSIAN_B4)
def bench_b4_exact_hessian(benchmark, fixed_threads, digits, impl):
    q, H, _, _ = digits
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)
    run = peers.make_hessian(impl, q)
    t0 = time.perf_counter()
    got = run()
    first = time.perf_counter() - t0
    assert_allclose(got, H, rtol=RTOL, atol=1e-12 * np.abs(H).max())
    benchmark.group = "B4 exact Hessian MLP 64-32-10 digits P=2410"
    rounds = _record(benchmark, "B4", impl, fixed_threads, first, n=q.X.shape[0],
                     P=q.model.n_params)  # fmt: skip
    _time(benchmark, run, rounds)


@pytest.mark.parametrize("impl", peers.TRACE_B5)
def bench_b5_hutchinson_trace(benchmark, fixed_threads, digits, impl):
    q, _, _, trace = digits
    fam = peers.family(impl)
    if fam is not None:
        peers.require(fam)
    run = peers.make_trace(impl, q, n_probes=100)
    t0 = time.perf_counter()
    est, se = run()
    first = time.perf_counter() - t0
    # statistical agreement: each estimate within 4 of its own standard errors of the exact trace
    assert abs(est - trace) < 4.0 * se, (est, se, trace)
    benchmark.group = "B5 Hutchinson trace 100 Rademacher probes MLP 64-32-10 digits"
    rounds = _record(benchmark, "B5", impl, fixed_threads, first, estimate=est, std_error=se,
                     exact_trace=trace, probes=100)  # fmt: skip
    _time(benchmark, run, rounds)


# ----------------------------------------------------------------------------- B6
@pytest.fixture(scope="module")
def b6():
    line = peers.span_problem([784, 128, 10], "tanh", "softmax_ce", 5_000, 401, dims=1)
    return {"slice": line, "path": peers.path_problem(line, 401)}


@pytest.mark.parametrize("impl", list(peers.LINE_B6))
@pytest.mark.parametrize("kind", ["slice", "path"])
def bench_b6_line(benchmark, fixed_threads, b6, kind, impl):
    p = b6[kind]
    if impl == "fastscape":
        make = peers.make_fastscape_slice if kind == "slice" else peers.make_fastscape_path
    else:
        make = peers.LINE_B6[impl]
    run = _build(impl, make, p)
    t0 = time.perf_counter()
    if impl == "loss_landscapes":  # no subset interface: check on 5 points of the same spacing
        coords = p.coords[0][:5]
        small = peers.with_coords(p, coords)
        got = _build(impl, make, small)()
        assert_allclose(got, fastscape.evaluate(p.model, p.basis, small.C, p.data).loss,
                        rtol=RTOL)  # fmt: skip
    else:
        few = _check_points(p)
        assert_allclose(run(few), fastscape.evaluate(p.model, p.basis, few, p.data).loss,
                        rtol=RTOL)  # fmt: skip
    first = time.perf_counter() - t0
    benchmark.group = f"B6 {kind} 401 points MLP 784-128-10 n=5000"
    rounds = _record(benchmark, "B6", impl, fixed_threads, first, kind=kind, n=p.X.shape[0],
                     points=int(p.C.shape[0]))  # fmt: skip
    out = _time(benchmark, run, rounds)
    assert np.asarray(out).shape == (p.C.shape[0],)
