"""device="cuda" on the curvature, sharpness, critical-point and edge-of-stability functions.

Each CUDA path is compared with the same call on the CPU: the HVPs, gradients and losses agree
to rtol 1e-10 in float64, and the iterative solvers, fed the same seed, take the same steps, so
their results agree to ~1e-10 too. A spy on the host-to-device copy (the real transfer, the
simulator's kernels still run) checks that one call moves the data once, however many HVPs it
makes. Tiny models and 20 samples: the simulator runs one Python thread per CUDA thread.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import make_problem
from numpy.testing import assert_allclose, assert_array_equal

from fastscape import config, critical, curvature, eos, sharpness
from fastscape.models import MLP

N = 20
#: A softmax-CE MLP with P = 17 parameters, and a logistic-regression model (P = 4).
TANH = ([2, 3, 2], "tanh", "softmax_ce")
LOGISTIC = ([3, 1], "identity", "logistic")


@pytest.fixture(autouse=True)
def one_sample_block(monkeypatch):
    """Each HVP here is a few kernel launches: one block of samples (the partial blocks of the
    kernels are tested in test_cuda_mlp.py); this file tests what is built on them."""
    monkeypatch.setattr(config, "CUDA_BLOCK", N)


def _problem(case=TANH, seed=0):
    model, theta, X, y = make_problem(case, n=N, seed=seed)
    return model, theta, model.batch(X, y)


def _same_up_to_sign(got, want, atol=1e-9):
    """Rows equal up to their sign: the sign convention (largest entry positive) is ambiguous
    when two entries tie in magnitude, as the two output units of a 2-class softmax do."""
    signs = np.sign(np.einsum("ij,ij->i", np.atleast_2d(got), np.atleast_2d(want)))
    assert_allclose(signs[:, None] * np.atleast_2d(got), np.atleast_2d(want), rtol=0, atol=atol)


def _eig_close(got, want):
    assert_array_equal(got.n_matvecs, want.n_matvecs)  # the same iterations
    assert_allclose(got.eigenvalues, want.eigenvalues, rtol=1e-10)
    _same_up_to_sign(got.eigenvectors, want.eigenvectors)
    assert_array_equal(got.converged, want.converged)


@pytest.fixture
def transfers(monkeypatch):
    """Record every host-to-device copy (``numba.cuda.to_device``, which the real transfer
    goes through); ``count(a)`` says how many of them copied an array equal to ``a``."""
    from fastscape.kernels.cuda import mlp as km

    real = km.cuda.to_device
    copied: list[np.ndarray] = []

    def spy(arr, *args, **kwargs):
        copied.append(np.array(arr, copy=True))
        return real(arr, *args, **kwargs)

    monkeypatch.setattr(km.cuda, "to_device", spy)

    class Counter:
        @staticmethod
        def count(a) -> int:
            return sum(c.shape == a.shape and np.array_equal(c, a) for c in copied)

        @staticmethod
        def clear():
            copied.clear()

    return Counter


# ----------------------------------------------------------------------------- eigenvalues
@pytest.mark.parametrize(
    ("case", "method", "which", "k"),
    [(TANH, "lanczos", "LA", 2), (TANH, "lanczos", "SA", 1), (LOGISTIC, "power", "LM", 2)],
)
def test_top_eigen_matches_cpu(case, method, which, k, transfers):
    model, theta, data = _problem(case, seed=1)
    kw = dict(k=k, method=method, which=which, seed=3)
    got = curvature.top_eigen(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1  # one copy for the whole solve
    want = curvature.top_eigen(model, theta, data, **kw)
    assert got.n_matvecs > 2 * k
    _eig_close(got, want)
    # and the answer is right: the exact Hessian's eigenvalues
    vals = np.linalg.eigvalsh(model.hessian(theta, data))
    ends = {"LA": vals[::-1], "SA": vals, "LM": vals[np.argsort(-np.abs(vals))]}[which]
    assert_allclose(got.eigenvalues, ends[:k], rtol=1e-6)


def test_top_eigen_warm_start_matches_cpu():
    model, theta, data = _problem(seed=2)
    v0 = np.random.default_rng(0).normal(size=model.n_params)
    kw = dict(k=1, method="lanczos", which="LA", seed=5, v0=v0)
    _eig_close(
        curvature.top_eigen(model, theta, data, device="cuda", **kw),
        curvature.top_eigen(model, theta, data, **kw),
    )


def test_exact_methods_run_on_the_cpu_with_the_same_bits():
    """method="exact" forms the Hessian on the CPU whatever the device (documented)."""
    model, theta, data = _problem(LOGISTIC, seed=3)
    got = curvature.top_eigen(model, theta, data, k=2, method="exact", device="cuda")
    want = curvature.top_eigen(model, theta, data, k=2, method="exact")
    assert_array_equal(got.eigenvalues, want.eigenvalues)
    assert_array_equal(got.eigenvectors, want.eigenvectors)
    tr = curvature.hessian_trace(model, theta, data, method="exact", device="cuda")
    assert tr.estimate == curvature.hessian_trace(model, theta, data, method="exact").estimate
    dens = curvature.spectral_density(model, theta, data, method="exact", device="cuda")
    want = curvature.spectral_density(model, theta, data, method="exact")
    assert_array_equal(dens.eigenvalues, want.eigenvalues)


# ----------------------------------------------------------------------------- trace, density
@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_hessian_trace_matches_cpu(method, transfers):
    model, theta, data = _problem(seed=4)
    kw = dict(method=method, n_samples=24, seed=7)
    got = curvature.hessian_trace(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1
    want = curvature.hessian_trace(model, theta, data, **kw)
    assert got.n_matvecs == want.n_matvecs
    assert_allclose(got.estimate, want.estimate, rtol=1e-10)
    assert_allclose(got.samples, want.samples, rtol=1e-10, atol=1e-12)
    assert_allclose(got.std_error, want.std_error, rtol=1e-8)


def test_spectral_density_matches_cpu(transfers):
    model, theta, data = _problem(seed=5)
    kw = dict(n_runs=3, n_iter=8, seed=2)
    got = curvature.spectral_density(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1
    want = curvature.spectral_density(model, theta, data, **kw)
    assert_allclose(got.nodes, want.nodes, rtol=1e-9, atol=1e-12)
    assert_allclose(got.weights, want.weights, rtol=1e-8, atol=1e-12)
    assert_allclose(got.sigma, want.sigma, rtol=1e-9)
    assert_allclose(got.density, want.density, rtol=1e-7, atol=1e-10 * want.density.max())


# ----------------------------------------------------------------------------- one copy per call
def test_hessian_operator_on_the_gpu_matches_cpu_and_copies_once(transfers):
    from scipy.sparse.linalg import eigsh

    model, theta, data = _problem(seed=4)
    gpu = curvature.HessianOperator(model, theta, data, device="cuda")
    cpu = curvature.HessianOperator(model, theta, data)
    V = np.random.default_rng(1).normal(size=(3, model.n_params))
    assert_allclose(gpu.rows(V), cpu.rows(V), rtol=1e-10, atol=1e-13)
    assert_allclose(gpu @ V.T, cpu @ V.T, rtol=1e-10, atol=1e-13)
    assert gpu.n_hvps == cpu.n_hvps == 6
    # SciPy's own solver on the GPU operator: the same spectrum end
    want = np.linalg.eigvalsh(model.hessian(theta, data))[-2:]
    got = np.sort(eigsh(gpu, k=2, which="LA", v0=np.ones(model.n_params))[0])
    assert_allclose(got, want, rtol=1e-8)
    assert transfers.count(data.X) == 1  # the data went to the device once, at construction


def test_a_lanczos_solve_copies_the_data_once(transfers):
    model, theta, data = _problem(seed=6)
    eig = curvature.top_eigen(model, theta, data, k=1, method="lanczos", which="LA",
                              device="cuda")  # fmt: skip
    assert eig.n_matvecs > 5  # many HVPs ...
    assert transfers.count(data.X) == 1  # ... one copy of X
    assert transfers.count(data.Y) == 1
    # the spy does see per-call copies: three HVPs on a plain Batch copy X three times
    transfers.clear()
    V = np.ones((1, model.n_params))
    for _ in range(3):
        model.hvp(theta, V, data, device="cuda")
    assert transfers.count(data.X) == 3


def test_a_device_batch_is_not_copied_again(transfers):
    from fastscape import _device

    model, theta, data = _problem(seed=8)
    dev = _device.to_device(data)
    assert transfers.count(data.X) == 1
    curvature.hessian_trace(model, theta, dev, n_samples=8, device="cuda")
    curvature.top_eigen(model, theta, dev, method="lanczos", which="SA", device="cuda")
    assert transfers.count(data.X) == 1


# ----------------------------------------------------------------------------- sharpness
def test_epsilon_sharpness_matches_cpu(transfers):
    """Probes (landscape engine), gradient and the λmax solve: one copy of the data."""
    model, theta, data = _problem(seed=9)
    kw = dict(eps=0.1, n_directions=6, seed=4)
    got = sharpness.epsilon_sharpness(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1
    want = sharpness.epsilon_sharpness(model, theta, data, **kw)
    assert_allclose(got.base_loss, want.base_loss, rtol=1e-10)
    # increases are differences of losses: compare them at the losses' precision
    assert_allclose(got.increases, want.increases, rtol=0, atol=1e-10 * want.base_loss)
    assert_allclose(got.lambda_max, want.lambda_max, rtol=1e-10)
    assert_allclose(got.grad_norm, want.grad_norm, rtol=1e-10)


def test_box_sharpness_matches_cpu(transfers):
    """L-BFGS-B on GPU losses and gradients: one copy of the data, the CPU's maximum."""
    model, theta, data = _problem(seed=9)
    kw = dict(eps=0.05, maxiter=5, seed=2)
    got = sharpness.box_sharpness(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1
    want = sharpness.box_sharpness(model, theta, data, **kw)
    assert_allclose(got.base_loss, want.base_loss, rtol=1e-10)
    assert_allclose(got.max_loss, want.max_loss, rtol=1e-9)
    assert_allclose(got.z, want.z, rtol=0, atol=1e-8)
    assert np.all(np.abs(got.z) <= got.half_widths)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_functions_match_cpu(adaptive, transfers):
    model, theta, data = _problem(seed=10)
    kw = dict(rho=0.2, adaptive=adaptive)
    e_gpu = sharpness.sam_perturbation(model, theta, data, device="cuda", **kw)
    e_cpu = sharpness.sam_perturbation(model, theta, data, **kw)
    assert_allclose(e_gpu, e_cpu, rtol=1e-10, atol=1e-13)
    transfers.clear()
    s_gpu = sharpness.sam_sharpness(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1  # a gradient and two losses, one copy
    s_cpu = sharpness.sam_sharpness(model, theta, data, **kw)
    base = model.loss(theta, data)
    assert_allclose(s_gpu, s_cpu, rtol=0, atol=1e-10 * base)
    g_gpu = sharpness.sam_gradient(model, theta, data, device="cuda", **kw)
    g_cpu = sharpness.sam_gradient(model, theta, data, **kw)
    assert_allclose(g_gpu, g_cpu, rtol=1e-10, atol=1e-13 * np.abs(g_cpu).max())


def test_compare_minima_matches_cpu(transfers):
    model, theta, data = _problem(seed=11)
    thetas = {"a": theta, "b": 0.5 * theta}
    kw = dict(n_directions=3, trace_method="hutchinson", trace_samples=6, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sharpness.SharpnessWarning)
        got = sharpness.compare_minima(model, thetas, data, device="cuda", **kw)
        assert transfers.count(data.X) == 1  # one copy for the whole table
        want = sharpness.compare_minima(model, thetas, data, **kw)
    for g, w in zip(got.rows, want.rows):
        assert g["name"] == w["name"]
        assert g["accuracy"] == w["accuracy"]
        for key in ("loss", "grad_norm", "lambda_max", "trace", "quadratic_prediction"):
            assert_allclose(g[key], w[key], rtol=1e-10, err_msg=key)
        for key in ("eps_sharpness_max", "eps_sharpness_mean", "sam_sharpness"):
            assert_allclose(g[key], w[key], rtol=0, atol=1e-10 * w["loss"], err_msg=key)


# ----------------------------------------------------------------------------- critical points
def test_classify_point_with_lanczos_matches_cpu(transfers):
    model, theta, data = _problem(seed=12)
    kw = dict(grad_tol=1e3, method="lanczos", k=2, seed=3)
    got = critical.classify_point(model, theta, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1  # gradient and both Lanczos solves
    want = critical.classify_point(model, theta, data, **kw)
    assert got.kind == want.kind
    assert got.saddle_index == want.saddle_index
    assert_allclose(got.eigenvalues, want.eigenvalues, rtol=1e-10, atol=1e-13)
    assert_allclose(got.grad_norm, want.grad_norm, rtol=1e-10)
    assert_allclose(got.loss, want.loss, rtol=1e-10)


def test_not_critical_is_refused_on_the_gpu_too():
    model, theta, data = _problem(seed=12)
    with pytest.raises(critical.NotCriticalError, match="not a critical point"):
        critical.classify_point(model, theta, data, grad_tol=1e-12, device="cuda")


def test_escape_saddle_matches_cpu():
    model, theta, data = _problem(seed=13)
    kw = dict(method="lanczos", seed=2)
    got = critical.escape_saddle(model, theta, data, device="cuda", **kw)
    want = critical.escape_saddle(model, theta, data, **kw)
    assert got.halvings == want.halvings and got.step == want.step
    assert_allclose(got.eigenvalue, want.eigenvalue, rtol=1e-10)
    assert_allclose(got.direction, want.direction, rtol=0, atol=1e-9)  # oriented downhill
    assert_allclose(got.loss_after, want.loss_after, rtol=1e-10)


# ----------------------------------------------------------------------------- edge of stability
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_edge_of_stability_matches_cpu(method, transfers):
    model = MLP([2, 3, 1], activation="tanh", loss="mse")
    rng = np.random.default_rng(14)
    X = rng.normal(size=(N, 2))
    data = model.batch(X, np.sin(X[:, 0]))
    kw = dict(lr=0.3, steps=1, every=1, seed=1, method=method, tol=1e-6, maxiter=10)
    got = eos.edge_of_stability(model, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1  # one copy for the whole run
    want = eos.edge_of_stability(model, data, **kw)
    assert_array_equal(got.steps, want.steps)
    assert_array_equal(got.eig_iterations, want.eig_iterations)
    assert_allclose(got.loss, want.loss, rtol=1e-10)
    assert_allclose(got.lambda_max, want.lambda_max, rtol=1e-9)
    assert_allclose(got.theta, want.theta, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    "options",
    [{"optimizer": "momentum", "momentum": 0.5, "mse_convention": "half_sum"},
     {"optimizer": "adam", "lr": 0.01}],
    ids=["momentum-half_sum", "adam"],
)  # fmt: skip
def test_edge_of_stability_optimizers_match_cpu(options, transfers):
    model = MLP([2, 3, 1], activation="tanh", loss="mse")
    rng = np.random.default_rng(14)
    X = rng.normal(size=(N, 2))
    data = model.batch(X, np.sin(X[:, 0]))
    kw = dict(lr=0.3, steps=2, every=1, seed=1, tol=1e-6) | options
    got = eos.edge_of_stability(model, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1
    want = eos.edge_of_stability(model, data, **kw)
    assert_allclose(got.loss, want.loss, rtol=1e-10)
    assert_allclose(got.lambda_max, want.lambda_max, rtol=1e-9)
    assert got.threshold == want.threshold and got.sharpness == want.sharpness


# ----------------------------------------------------------------------------- CLI
def _write_csv(path, n=N, seed=15):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt=["%.17g", "%.17g", "%d"])


def test_cli_hessian_device_cuda_matches_cpu(tmp_path, capsys):
    from fastscape.cli import main

    csv = tmp_path / "d.csv"
    _write_csv(csv)
    model = MLP([2, 3, 2], activation="tanh", loss="softmax_ce")
    theta_file = tmp_path / "t.npz"
    np.savez(theta_file, theta=model.init(0))
    reports = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        argv = ["hessian", "--data", str(csv), "--hidden", "3", "--theta", str(theta_file),
                "--top", "2", "--device", device, "--out", str(out), "--quiet"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        reports[device] = json.loads((tmp_path / device / "hessian.json").read_text())
    gpu, cpu = reports["cuda"], reports["cpu"]
    assert gpu["settings"]["device"] == "cuda"
    assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-10)
    assert_allclose(gpu["grad_norm"], cpu["grad_norm"], rtol=1e-10)
    assert_array_equal(gpu["top_eigenvalues"], cpu["top_eigenvalues"])  # exact: on the CPU


def test_cli_curvature_iterative_branch_on_cuda():
    """The Lanczos / Hutch++ / SLQ branch of the CLI's curvature step (large models) with its
    HVPs on the GPU gives the CPU's numbers."""
    from fastscape.cli import compute_curvature

    model, theta, data = _problem(LOGISTIC, seed=16)
    got = compute_curvature(model, theta, data, 2, 0, exact_max_params=0, device="cuda")
    want = compute_curvature(model, theta, data, 2, 0, exact_max_params=0)
    assert got["method"] == want["method"] == "lanczos"
    assert_allclose(got["top"], want["top"], rtol=1e-10)
    assert_allclose(got["bottom"], want["bottom"], rtol=1e-10)
    assert_allclose(got["trace"], want["trace"], rtol=1e-10)
    assert_allclose(got["density"].nodes, want["density"].nodes, rtol=1e-9, atol=1e-12)
    assert got["classification"].kind == want["classification"].kind


def test_cli_eos_device_cuda(tmp_path, capsys):
    from fastscape.cli import main

    csv = tmp_path / "d.csv"
    _write_csv(csv)
    reports = {}
    for device in ("cpu", "cuda"):
        argv = ["eos", "--data", str(csv), "--hidden", "2", "--steps", "2", "--every", "1",
                "--device", device, "--out", str(tmp_path / device), "--quiet"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        reports[device] = json.loads((tmp_path / device / "eos.json").read_text())
    assert_allclose(reports["cuda"]["loss"], reports["cpu"]["loss"], rtol=1e-10)
    assert_allclose(reports["cuda"]["lambda_max"], reports["cpu"]["lambda_max"], rtol=1e-9)


# ----------------------------------------------------------------------------- mode connectivity
def test_mode_connectivity_matches_cpu(transfers):
    """Linear path, Bézier training (gradients) and the curve: one copy of the data."""
    from fastscape import paths

    model, theta_a, data = _problem(seed=12)
    theta_b = theta_a + 0.3 * np.random.default_rng(13).normal(size=theta_a.shape)
    kw = dict(ts=5, steps=3, lr=0.05, seed=1, progress=False)
    got = paths.mode_connectivity(model, theta_a, theta_b, data, device="cuda", **kw)
    assert transfers.count(data.X) == 1
    want = paths.mode_connectivity(model, theta_a, theta_b, data, **kw)
    assert_allclose(got.bend, want.bend, rtol=1e-10, atol=1e-12)
    assert_allclose(got.linear.loss, want.linear.loss, rtol=1e-10)
    assert_allclose(got.curve.loss, want.curve.loss, rtol=1e-10)
    fitted = paths.fit_bezier(model, theta_a, theta_b, data, steps=2, device="cuda")
    assert_allclose(fitted.bend, paths.fit_bezier(model, theta_a, theta_b, data, steps=2).bend,
                    rtol=1e-10, atol=1e-12)  # fmt: skip
