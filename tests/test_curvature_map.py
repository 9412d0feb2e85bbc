"""Curvature maps (``landscape.curvature_map``): λmax and λmin at every grid point.

Every path is compared with ``numpy.linalg.eigh`` of the reference Hessian (pure NumPy,
``fastscape.reference.mlp_hessian``) at every point of small grids: the exact path to
round-off, the iterative paths to their tolerance (a converged pair has relative residual at
most ``tol``, so its eigenvalue is within ``tol * |λ|`` of a true one). Then the flags and the
ratio, the scan, the checkpoints (resume with the same bits, tiles in any order) and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

import fastscape
from fastscape import config, landscape
from fastscape import reference as ref
from fastscape.curvature import map as cmap
from fastscape.curvature.map import ShiftedOperator, solve_chain
from fastscape.landscape import curvature_map, serpentine


def _problem(seed=0, sizes=(4, 5, 3), n=60):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    model = fastscape.MLP(list(sizes), activation="tanh", loss="softmax_ce")
    theta = model.init(seed)
    d1 = rng.normal(size=model.n_params)
    d2 = rng.normal(size=model.n_params)
    return model, theta, d1, d2, X, y


def _reference_ends(model, theta, d1, d2, X, y, alphas, betas):
    """(λmax, λmin) of eigh of the NumPy reference Hessian at every grid point, (a, b) each."""
    data = model.batch(X, y)
    hi = np.empty((len(alphas), len(betas)))
    lo = np.empty_like(hi)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            p = theta + a * d1 + b * d2
            H = ref.mlp_hessian(p, model.sizes, model.activation, model.loss_name, data.X, data.Y)
            w = np.linalg.eigh(0.5 * (H + H.T))[0]
            hi[i, j], lo[i, j] = w[-1], w[0]
    return hi, lo


ALPHAS = np.linspace(-1.0, 1.0, 4)
BETAS = np.linspace(-0.5, 1.0, 3)  # non-square on purpose


@pytest.fixture(scope="module")
def problem():
    model, theta, d1, d2, X, y = _problem()
    hi, lo = _reference_ends(model, theta, d1, d2, X, y, ALPHAS, BETAS)
    return model, theta, d1, d2, X, y, hi, lo


def test_exact_path_equals_eigh_at_every_point(problem):
    model, theta, d1, d2, X, y, hi, lo = problem
    cm = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS)
    assert model.n_params <= config.CURVATURE_MAP_EXACT_MAX_PARAMS
    assert cm.settings["method"] == "exact"
    assert cm.shape == (4, 3) and cm.lambda_min.shape == (4, 3)
    scale = np.abs(hi).max()
    np.testing.assert_allclose(cm.lambda_max, hi, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(cm.lambda_min, lo, rtol=0, atol=1e-10 * scale)
    assert cm.converged.all() and not cm.n_hvps.any()
    # the loss contour beside it is the surface's loss on the same grid
    s = landscape.surface_2d(model, theta, d1, d2, X, y, ALPHAS, BETAS, progress=False)
    np.testing.assert_array_equal(cm.loss, s.loss)


@pytest.mark.parametrize("tile_size", [1, 5, 64])
def test_lanczos_path_equals_eigh_to_tolerance(problem, tile_size):
    """``exact_max_params`` forced below P: ``auto`` takes the iterative path."""
    model, theta, d1, d2, X, y, hi, lo = problem
    tol = 1e-6
    cm = curvature_map(
        model, theta, d1, d2, X, y, ALPHAS, BETAS, exact_max_params=2, tol=tol,
        tile_size=tile_size,
    )  # fmt: skip
    assert cm.settings["method"] == "lanczos" and cm.settings["tile_size"] == tile_size
    assert cm.converged.all(), cm.message
    assert (cm.hvps_max > 0).all() and (cm.hvps_min > 0).all()
    np.testing.assert_array_less(np.abs(cm.lambda_max - hi), tol * np.abs(hi) + 1e-13)
    np.testing.assert_array_less(np.abs(cm.lambda_min - lo), tol * np.abs(lo) + 1e-13)


def test_unverified_flags_are_the_residual_test(problem):
    """verify=False: fewer HVPs, flags from the residual test alone, values still within tol."""
    model, theta, d1, d2, X, y, hi, lo = problem
    kw = {"method": "lanczos", "tol": 1e-6, "with_loss": False}
    full = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS, **kw)
    fast = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS, verify=False, **kw)
    assert fast.settings["verify"] is False and full.settings["verify"] is True
    assert fast.converged.all(), fast.message
    assert (fast.n_hvps < full.n_hvps).all()
    np.testing.assert_array_less(np.abs(fast.lambda_max - hi), 1e-6 * np.abs(hi) + 1e-13)
    np.testing.assert_array_less(np.abs(fast.lambda_min - lo), 1e-6 * np.abs(lo) + 1e-13)


def test_power_path_converged_points_within_tolerance(problem):
    model, theta, d1, d2, X, y, hi, lo = problem
    tol = 1e-6
    cm = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS, method="power", tol=tol)
    assert cm.settings["method"] == "power"
    assert cm.converged.sum() >= cm.converged.size // 2, cm.message  # most points converge
    # the shifted solve's residual is relative to |λmin - λ1|, at most twice max|λ|
    bound = 2 * tol * np.abs(hi).max() + 1e-12
    ok_hi, ok_lo = cm.converged_max, cm.converged_min
    np.testing.assert_array_less(np.abs(cm.lambda_max - hi)[ok_hi], bound)
    np.testing.assert_array_less(np.abs(cm.lambda_min - lo)[ok_lo], bound)
    # unconverged values are Ritz values: never outside the spectrum
    assert (cm.lambda_max <= hi + bound).all() and (cm.lambda_min >= lo - bound).all()


def test_ratio_flags_and_counts_are_consistent(problem):
    model, theta, d1, d2, X, y, *_ = problem
    cm = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS, method="lanczos", max_hvps=40)
    both = cm.converged_max & cm.converged_min
    np.testing.assert_array_equal(cm.converged, both)
    np.testing.assert_array_equal(cm.n_hvps, cm.hvps_max + cm.hvps_min)
    assert (cm.hvps_max <= 40).all() and (cm.hvps_min <= 40).all()
    assert (cm.lambda_min <= cm.lambda_max).all()
    r = cm.ratio
    np.testing.assert_array_equal(np.isnan(r), ~both | (cm.lambda_max == 0))
    np.testing.assert_allclose(r[both], np.abs(cm.lambda_min / cm.lambda_max)[both], rtol=1e-15)
    assert cm.n_unconverged == int((~both).sum())


def test_budget_too_small_flags_every_point(problem):
    model, theta, d1, d2, X, y, hi, lo = problem
    cm = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS, method="lanczos", max_hvps=2)
    assert not cm.converged.any()
    assert np.isnan(cm.ratio).all()
    assert cm.n_unconverged == cm.lambda_max.size
    assert "not converged" in cm.message and "12 points" in cm.message
    assert (cm.n_hvps <= 4).all()
    # Ritz values from 2 products still lie inside the spectrum
    scale = np.abs(hi).max()
    assert (cm.lambda_max <= hi + 1e-12 * scale).all()
    assert (cm.lambda_min >= lo - 1e-12 * scale).all()


def test_settings_recorded(problem):
    model, theta, d1, d2, X, y, *_ = problem
    cm = curvature_map(
        model, theta, d1, d2, X, y, 3, 2, method="lanczos", tol=1e-5, max_hvps=300, seed=7,
        tile_size=4, with_loss=False,
    )  # fmt: skip
    s = cm.settings
    assert (s["method"], s["tol"], s["max_hvps"], s["seed"], s["tile_size"], s["scan"]) == (
        "lanczos", 1e-5, 300, 7, 4, "serpentine",
    )  # fmt: skip
    assert s["n_samples"] == 60 and s["model"] == model.to_dict()
    assert cm.loss is None
    np.testing.assert_array_equal(cm.alphas, np.linspace(-1, 1, 3))


def test_default_grid_size(problem):
    model, theta, d1, d2, X, y, *_ = problem
    cm = curvature_map(model, theta, d1, d2, X, y, betas=2, with_loss=False)
    assert cm.shape == (config.CURVATURE_MAP_POINTS, 2)


# ----------------------------------------------------------------------------- scan and chains
@pytest.mark.parametrize("a,b", [(1, 1), (1, 5), (4, 1), (3, 4), (5, 5)])
def test_serpentine_visits_every_point_through_neighbours(a, b):
    order = serpentine(a, b)
    np.testing.assert_array_equal(np.sort(order), np.arange(a * b))
    i, j = np.divmod(order, b)
    steps = np.abs(np.diff(i)) + np.abs(np.diff(j))
    assert (steps == 1).all()


def test_warm_start_saves_products():
    """Along a chain of close points the warm-started solves cost fewer HVPs than cold ones."""
    model, theta, d1, *_rest, X, y = _problem(sizes=(6, 10, 3), n=80)
    data = model.batch(X, y)
    thetas = theta + np.linspace(0, 0.05, 6)[:, None] * d1
    chain = solve_chain(model, data, thetas, "lanczos", 1e-6, None, 0)
    cold = [solve_chain(model, data, t[None], "lanczos", 1e-6, None, 0) for t in thetas]
    np.testing.assert_array_equal(chain.hvps_max[0], cold[0].hvps_max[0])  # same cold start
    warm_cost = (chain.hvps_max + chain.hvps_min)[1:].sum()
    cold_cost = sum(int(c.hvps_max[0] + c.hvps_min[0]) for c in cold[1:])
    assert warm_cost < cold_cost
    for j, c in enumerate(cold):
        assert abs(chain.lambda_max[j] - c.lambda_max[0]) <= 1e-6 * abs(c.lambda_max[0])
        assert abs(chain.lambda_min[j] - c.lambda_min[0]) <= 1e-6 * abs(c.lambda_min[0])


@pytest.mark.parametrize("verify", [True, False])
def test_two_ended_solve_equals_eigh_through_restarts(verify):
    """One Krylov basis for both ends, on a matrix large enough for thick restarts (n = 300 >
    ncv): both extreme eigenvalues to tolerance, residuals recomputed and small."""
    rng = np.random.default_rng(5)
    n = 300
    Qm = np.linalg.qr(rng.normal(size=(n, n)))[0]
    w = np.sort(rng.normal(size=n))
    A = (Qm * w) @ Qm.T
    A = 0.5 * (A + A.T)
    op = aslinearoperator(A)
    hi, lo, shared = cmap._two_ended_point(op, None, 1e-8, None, 0, verify)
    assert hi[2] and lo[2] and shared > cmap.NCV  # converged, after at least one restart
    ref_hi, ref_lo = np.linalg.eigvalsh(A)[[-1, 0]]
    assert abs(hi[0] - ref_hi) <= 1e-8 * abs(ref_hi)
    assert abs(lo[0] - ref_lo) <= 1e-8 * abs(ref_lo)
    for val, vec, *_ in (hi, lo):
        assert np.linalg.norm(A @ vec - val * vec) <= 1e-8 * abs(val)


def test_two_ended_budget_is_per_point():
    """The two-ended solve, its joint verification and any per-end one share ``max_hvps``:
    never more products at a point, and a flagged value is within tol of eigh's."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(80, 80))
    A = A + A.T
    w = np.linalg.eigvalsh(A)
    op = aslinearoperator(A)
    flagged = 0
    for budget in range(2, 130, 7):
        hi, lo, shared = cmap._two_ended_point(op, None, 1e-8, budget, 0, True)
        assert shared + hi[3] + lo[3] <= budget
        for (val, _, ok, _), ref_val in ((hi, w[-1]), (lo, w[0])):
            if ok:
                flagged += 1
                assert abs(val - ref_val) <= 1e-8 * abs(ref_val)
    assert flagged > 0  # the larger budgets suffice


def test_verification_corrects_a_wrong_warm_start():
    """A warm start spanning two interior eigenvectors (plus the 1e-6 random share) lets the
    two-ended solve converge to the wrong values; the joint verification sees Ritz values
    beyond them and the per-end verification adds the true ends. Without verification the
    wrong values pass the residual test, as they would with ARPACK."""
    n = 120
    w = np.arange(1.0, n + 1.0)
    op = aslinearoperator(np.diag(w))
    e = np.eye(n)
    start = (e[99], e[49])
    hi, lo, _ = cmap._two_ended_point(op, start, 1e-4, None, 0, False)
    assert hi[2] and lo[2] and abs(hi[0] - 100.0) < 1e-2 and abs(lo[0] - 50.0) < 1e-2
    hi, lo, _ = cmap._two_ended_point(op, start, 1e-4, None, 0, True)
    assert hi[2] and lo[2] and hi[3] > 0 and lo[3] > 0  # the per-end verification ran
    assert abs(hi[0] - n) <= 1e-4 * n and abs(lo[0] - 1.0) <= 1e-4


def test_shifted_operator():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6))
    A = A + A.T
    S = ShiftedOperator(aslinearoperator(A), 2.5)
    V = rng.normal(size=(3, 6))
    np.testing.assert_allclose(S.rows(V), V @ A - 2.5 * V, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(S @ V[0], A @ V[0] - 2.5 * V[0], rtol=1e-14, atol=1e-14)


# ----------------------------------------------------------------------------- checkpoints
def _small_lanczos(problem, **kw):
    model, theta, d1, d2, X, y, *_ = problem
    return curvature_map(
        model, theta, d1, d2, X, y, ALPHAS, BETAS, method="lanczos", tile_size=5, **kw
    )


def _assert_same_bits(a, b):
    for name in ("lambda_max", "lambda_min", "converged_max", "converged_min", "hvps_max",
                 "hvps_min", "loss"):  # fmt: skip
        x, z = getattr(a, name), getattr(b, name)
        assert x.dtype == z.dtype
        assert x.tobytes() == z.tobytes(), name


def test_checkpoint_resume_is_bitwise(problem, tmp_path):
    full = _small_lanczos(problem)

    class Stop(Exception):
        pass

    def stop_after_first(t, n):
        assert n == 3  # 12 points in tiles of 5
        raise Stop

    with pytest.raises(Stop):
        _small_lanczos(problem, checkpoint_dir=tmp_path, on_tile=stop_after_first)
    assert sorted(p.name for p in tmp_path.glob("tile_*.npz")) == ["tile_000000.npz"]
    ran = []
    resumed = _small_lanczos(problem, checkpoint_dir=tmp_path, on_tile=lambda t, n: ran.append(t))
    assert ran == [1, 2]  # the finished tile was reused
    _assert_same_bits(resumed, full)
    # tiles in any order: drop the first tile, the others are reused, the bits stay
    (tmp_path / "tile_000000.npz").unlink()
    ran.clear()
    again = _small_lanczos(problem, checkpoint_dir=tmp_path, on_tile=lambda t, n: ran.append(t))
    assert ran == [0]
    _assert_same_bits(again, full)
    # a damaged tile is recomputed
    (tmp_path / "tile_000002.npz").write_bytes(b"not a zip")
    ran.clear()
    _assert_same_bits(
        _small_lanczos(problem, checkpoint_dir=tmp_path, on_tile=lambda t, n: ran.append(t)),
        full,
    )
    assert ran == [2]


def test_checkpoint_of_another_map_is_refused(problem, tmp_path):
    _small_lanczos(problem, checkpoint_dir=tmp_path, with_loss=False)
    with pytest.raises(ValueError, match=r"checkpoint_dir .* different evaluation"):
        _small_lanczos(problem, checkpoint_dir=tmp_path, tol=1e-5, with_loss=False)
    with pytest.raises(ValueError, match=r"checkpoint_dir .* different evaluation"):
        _small_lanczos(problem, checkpoint_dir=tmp_path, seed=1, with_loss=False)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, err, match",
    [
        ({"method": "eigsh"}, ValueError, "method"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"max_hvps": 0}, ValueError, "max_hvps"),
        ({"exact_max_params": 0}, ValueError, "exact_max_params"),
        ({"tile_size": 0}, ValueError, "tile_size"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"verify": 1}, TypeError, "verify"),
        ({"n_threads": 0}, ValueError, "n_threads"),
        ({"alphas": [0.0, np.nan]}, ValueError, "alphas"),
        ({"betas": 0}, ValueError, "betas"),
    ],
)
def test_bad_arguments_are_named(problem, kw, err, match):
    model, theta, d1, d2, X, y, *_ = problem
    with pytest.raises(err, match=match):
        curvature_map(model, theta, d1, d2, X, y, **{"alphas": 2, "betas": 2, **kw})


def test_bad_model_theta_and_directions(problem):
    model, theta, d1, d2, X, y, *_ = problem
    with pytest.raises(TypeError, match="model must be an MLP"):
        curvature_map(fastscape.functions.rosenbrock, np.zeros(2), [1, 0], [0, 1], X, y)
    with pytest.raises(ValueError, match="theta"):
        curvature_map(model, theta[:-1], d1, d2, X, y, 2, 2)
    with pytest.raises(ValueError, match="d2 has zero norm"):
        curvature_map(model, theta, d1, np.zeros_like(d1), X, y, 2, 2)
    with pytest.raises(ValueError, match="parallel"):
        curvature_map(model, theta, d1, -3 * d1, X, y, 2, 2)
    with pytest.raises(ValueError, match="X is required"):
        curvature_map(model, theta, d1, d2, None, None, 2, 2)


# ----------------------------------------------------------------------------- on a cluster
def test_client_equals_local_and_resumes_locally(problem, tmp_path):
    """Tiles on Dask workers give the local bits; a map checkpointed there resumes here."""
    distributed = pytest.importorskip("distributed")
    local = _small_lanczos(problem)
    cluster = distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=":0",  # a free port: None means 8787, which another run may hold
    )  # fmt: skip
    try:
        with distributed.Client(cluster) as client:
            remote = _small_lanczos(problem, client=client, checkpoint_dir=tmp_path)
    finally:
        cluster.close()
    _assert_same_bits(remote, local)
    ran = []
    resumed = _small_lanczos(problem, checkpoint_dir=tmp_path, on_tile=lambda t, n: ran.append(t))
    assert ran == []
    _assert_same_bits(resumed, local)


# ----------------------------------------------------------------------------- the figure
def test_figure_panels_and_unconverged_points(problem):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fastscape import plot

    model, theta, d1, d2, X, y, *_ = problem
    cm = curvature_map(model, theta, d1, d2, X, y, ALPHAS, BETAS, method="lanczos", max_hvps=12)
    bad = cm.n_unconverged
    assert 0 < bad  # 12 products per solve leave some points unconverged here
    fig = plot.curvature_maps(cm)
    FigureCanvasAgg(fig).draw()
    loss_ax, max_ax, min_ax, ratio_ax = fig.axes[:4]
    assert loss_ax.get_title() == "loss"
    assert ratio_ax.get_title() == f"|λmin / λmax| ({bad} unconverged, grey)"
    mesh = ratio_ax.collections[0]
    arr = mesh.get_array()  # cells in (b, a) order: the transpose of the map
    np.testing.assert_array_equal(np.ma.getmaskarray(arr).reshape(3, 4), ~cm.converged.T)
    np.testing.assert_array_equal(arr.compressed(), cm.ratio.T[cm.converged.T])
    assert min_ax.get_xlabel().startswith("α") and max_ax.get_ylabel().startswith("β")
    cm.loss = None
    assert len([a for a in plot.curvature_maps(cm).axes if a.get_label() != "<colorbar>"]) == 3
    with pytest.raises(TypeError, match="CurvatureMap"):
        plot.curvature_maps(cm.lambda_max)


# ----------------------------------------------------------------------------- the CLI
def test_cli_landscape_curvature_map(tmp_path, capsys):
    import json

    from fastscape import datasets, io
    from fastscape.cli import main

    out = tmp_path / "run"
    fast = ["--hidden", "4", "--points", "5", "--steps", "30", "--sharpness-directions", "8"]
    assert main(["landscape", *fast, "--curvature-map", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for name in ("curvature_map.npz", "curvature_map.csv", "curvature_map.png"):
        assert name in report["files"] and (out / name).stat().st_size > 0
    with np.load(out / "curvature_map.npz") as z:
        cm = {k: z[k] for k in z.files}
    surf = io.load(out / "surface.npz")
    # no --curvature-map-points: the surface's own 5 x 5 grid
    np.testing.assert_array_equal(cm["alphas"], surf.alphas)
    np.testing.assert_allclose(cm["loss"], surf.loss, rtol=1e-12)
    # at the centre of the grid (θ itself) the ends are those of eigh of the exact Hessian
    X, y = datasets.load("blobs", standardize_features=True)
    model, theta = io.load_theta(out / "theta.npz")
    w = np.linalg.eigvalsh(model.hessian(theta, X, y))
    assert abs(cm["lambda_max"][2, 2] - w[-1]) <= 1e-10 * abs(w).max()
    assert abs(cm["lambda_min"][2, 2] - w[0]) <= 1e-10 * abs(w).max()
    rep = report["curvature_map"]
    assert rep["grid"] == [5, 5] and rep["method"] == "exact" and rep["n_unconverged"] == 0
    assert rep["lambda_max_range"] == [cm["lambda_max"].min(), cm["lambda_max"].max()]
    assert rep["ratio_max"] == np.nanmax(cm["ratio"])
    table = np.loadtxt(out / "curvature_map.csv", delimiter=",", skiprows=1)
    header = (out / "curvature_map.csv").read_text().splitlines()[0].split(",")
    assert table.shape == (25, len(header))
    np.testing.assert_array_equal(table[:, header.index("lambda_min")], cm["lambda_min"].ravel())
    # a smaller map on the same ranges
    out2 = tmp_path / "run2"
    argv = ["landscape", *fast, "--curvature-map", "--curvature-map-points", "3", "--quiet"]
    assert main([*argv, "--out", str(out2)]) == 0
    with np.load(out2 / "curvature_map.npz") as z:
        assert z["lambda_max"].shape == (3, 3)
        np.testing.assert_array_equal(z["alphas"], [-1.0, 0.0, 1.0])
    capsys.readouterr()


# ----------------------------------------------------------------------------- the benchmark
def test_benchmark_peer_agrees_with_eigh(problem):
    """bench/bench_curvature_map.py's loss-landscape scheme (both HVPs) gives eigh's ends where
    its shift can reach λmin, and the map agrees with it."""
    import importlib.util
    import sys
    from pathlib import Path

    pytest.importorskip("torch")
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        path = bench / "bench_curvature_map.py"
        spec = importlib.util.spec_from_file_location("bench_cmap", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(bench))
    model, theta, d1, d2, X, y, hi, lo = problem
    checked = 0
    for i, j in [(0, 0), (3, 2), (1, 1)]:
        p = theta + ALPHAS[i] * d1 + BETAS[j] * d2
        for cached in (False, True):
            top, low, n = mod.loss_landscape_point(model, X, y, p, 1e-10, cached)
            assert n > 0
            assert abs(top - hi[i, j]) <= 1e-8 * abs(hi[i, j])
            if lo[i, j] < -0.02 * hi[i, j]:
                assert abs(low - lo[i, j]) <= 1e-8 * abs(hi[i, j])
                checked += 1
    assert checked >= 2
