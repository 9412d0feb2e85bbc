"""The spectral density of a symmetric operator: stochastic Lanczos quadrature (SLQ), the
broadened density of a known spectrum, and ``spectral_density`` on a model."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_choice, check_positive_float, check_positive_int
from ..kernels import lanczos as _lz
from ..kernels._blas import serial_blas
from ..models import MLP
from ._common import Progress, apply_rows, as_operator, check_budget, rademacher
from .operator import HessianOperator, prepare_inputs
from .results import DensityResult

__all__ = ["exact_density", "slq", "spectral_density"]

_DGKS = 1.0 / np.sqrt(2.0)  # the re-orthogonalisation test of the thick-restart Lanczos too


def _lanczos_runs(A, n, n_runs, m, rng, bar):
    """n_runs Lanczos recurrences of m steps in lockstep (one block product per step), each
    re-orthogonalised fully against its basis by the thick-restart Lanczos' own step
    (:func:`fastscape.kernels.lanczos.orthogonalize`: classical Gram-Schmidt, repeated when it
    cancels). Returns alpha, beta (r, m) and the steps of each run."""
    Q = np.zeros((n_runs, m + 1, n))
    T = np.zeros((n_runs, m, m))
    alpha = np.zeros((n_runs, m))
    beta = np.zeros((n_runs, m))
    steps = np.full(n_runs, m, dtype=np.int64)
    Z = rademacher(rng, (n_runs, n))
    Q[:, 0] = Z / np.sqrt(n)
    active = np.ones(n_runs, dtype=bool)
    for j in range(m):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        W = apply_rows(A, np.ascontiguousarray(Q[idx, j]))
        bar.update(idx.size)
        for a, w in zip(idx, W):
            b = _lz.orthogonalize(Q[a], j, np.ascontiguousarray(w), T[a], _DGKS)
            alpha[a, j] = T[a, j, j]
            if j + 1 >= m:
                continue
            scale = max(np.abs(alpha[a, : j + 1]).max(), beta[a, :j].max(initial=0.0), 1e-300)
            if b <= 1e-10 * scale:  # invariant subspace: the quadrature is exact
                steps[a] = j + 1
                active[a] = False
            else:
                beta[a, j] = b
                Q[a, j + 1] /= b
    return alpha, beta, steps


def _gaussian_density(nodes, weights, sigma, grid) -> np.ndarray:
    dens = np.zeros_like(grid)
    mask = weights > 0
    for t, w in zip(nodes[mask], weights[mask]):
        dens += w * np.exp(-0.5 * ((grid - t) / sigma) ** 2)
    return dens / (sigma * np.sqrt(2.0 * np.pi) * nodes.shape[0])


def _grid_and_sigma(nodes, weights, sigma, grid, n_grid):
    used = nodes[weights > 0]
    lo, hi = float(used.min()), float(used.max())
    if sigma is None:
        width = hi - lo
        sigma = 0.01 * width if width > 0 else 0.01 * max(abs(hi), 1.0)
    sigma = check_positive_float(sigma, "sigma")
    if grid is None:
        n_grid = check_positive_int(n_grid, "n_grid", minimum=2)
        a, b = lo - 6.0 * sigma, hi + 6.0 * sigma
        n_grid = int(min(max(n_grid, np.ceil(3.0 * (b - a) / sigma) + 1), 2_000_000))
        grid = np.linspace(a, b, n_grid)
    else:
        grid = as_float_array(grid, "grid", 1)
        if grid.size < 2 or not (np.diff(grid) > 0).all():
            raise ValueError("grid must be strictly increasing with at least 2 points")
    return grid, sigma


def slq(
    A,
    *,
    n_runs: int = 10,
    n_iter: int = 80,
    max_hvps: int | None = None,
    sigma: float | None = None,
    grid=None,
    n_grid: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> DensityResult:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Each run starts Lanczos from a normalised Rademacher vector v and takes m = ``n_iter``
    steps with full re-orthogonalisation; the eigenpairs (θ_j, u_j) of the tridiagonal matrix
    give the Gauss quadrature ``v^T f(H) v ≈ sum_j u_j[0]^2 f(θ_j)``, so the measure
    ``sum_j u_j[0]^2 δ(t - θ_j)`` estimates the spectral density ``(1/n) sum_i δ(t - λ_i)``.
    The runs are averaged and each node is broadened into a Gaussian of standard deviation σ.
    All runs advance together: one block product per Lanczos step.

    Parameters
    ----------
    A : LinearOperator (n, n)
        Symmetric (arrays are wrapped with ``aslinearoperator``).
    n_runs : int
        Independent starting vectors (the runs' spread gives the error bars of the moments).
    n_iter : int
        Lanczos steps per run (capped at n; with n steps the nodes are the exact eigenvalues).
    max_hvps : int, optional
        Hard budget of operator products (>= n_runs). With fewer than ``n_runs * n_iter``
        every run takes ``max_hvps // n_runs`` steps and the result is flagged
        ``converged=False``. Default ``n_runs * n_iter``.
    sigma : float, optional
        Broadening. Default: 1% of the spread of the nodes, ``0.01 (max θ - min θ)``.
    grid : (g,) array, optional
        Where to evaluate the density. Default: ``n_grid`` points (more if needed for a spacing
        of at most σ/3) from ``min θ - 6σ`` to ``max θ + 6σ``.
    n_grid : int
    seed : int
    progress : bool
        Show a tqdm bar of the products.

    Returns
    -------
    DensityResult
    """
    A = as_operator(A)
    n = A.shape[0]
    n_runs = check_positive_int(n_runs, "n_runs")
    asked = min(check_positive_int(n_iter, "n_iter"), n)
    max_hvps = check_budget(max_hvps, n_runs * asked, minimum=n_runs)
    m = min(asked, max_hvps // n_runs)
    rng = np.random.default_rng(seed)
    with serial_blas(), Progress(progress, n_runs * m, "SLQ") as bar:
        alpha, beta, steps = _lanczos_runs(A, n, n_runs, m, rng, bar)
    nodes = np.full((n_runs, m), np.nan)
    weights = np.zeros((n_runs, m))
    for r in range(n_runs):
        s = steps[r]
        T = np.diag(alpha[r, :s]) + np.diag(beta[r, : s - 1], 1) + np.diag(beta[r, : s - 1], -1)
        th, U = np.linalg.eigh(T)
        nodes[r, :s] = th
        weights[r, :s] = U[0] ** 2
    grid, sigma = _grid_and_sigma(nodes, weights, sigma, grid, n_grid)
    used = int(steps.sum())
    converged = m == asked or bool((steps < m).all())
    if converged:
        message = f"SLQ: {n_runs} runs of up to {m} Lanczos steps, {used} HVPs"
    else:
        message = (
            f"not converged after {used} HVPs (budget max_hvps={max_hvps}): runs of {m} of "
            f"n_iter={asked} Lanczos steps"
        )
    return DensityResult(
        grid=grid,
        density=_gaussian_density(nodes, weights, sigma, grid),
        sigma=sigma,
        nodes=nodes,
        weights=weights,
        method="slq",
        n_matvecs=used,
        converged=converged,
        status="converged" if converged else "budget",
        message=message,
    )


def spectral_density(
    model: MLP,
    theta,
    X,
    y=None,
    method: str = "slq",
    *,
    n_runs: int = 10,
    n_iter: int = 80,
    max_hvps: int | None = None,
    sigma: float | None = None,
    grid=None,
    n_grid: int = 1000,
    bins: int = 50,
    seed: int = 0,
    max_params: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    client=None,
) -> DensityResult:
    """Hessian eigenvalue density of a model at ``theta``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"slq", "exact"}
        ``slq``: stochastic Lanczos quadrature on batched exact HVPs (see :func:`slq`);
        ``exact``: all eigenvalues of the exact Hessian (small models), broadened the same way
        (weights 1/P), with their histogram in ``hist`` / ``hist_edges``.
    n_runs, n_iter, max_hvps, sigma, grid, n_grid, seed, progress
        See :func:`slq` (``sigma`` and ``grid`` apply to both methods).
    bins : int
        Histogram bins (``exact``).
    max_params : int, optional
        Size limit of the exact Hessian.
    device : {"cpu", "cuda"}
        Where the HVPs of the Lanczos runs (``slq``) run (the data are copied to the GPU once
        per call); ``exact`` forms the Hessian on the CPU whatever the device.
    client : dask.distributed.Client, optional
        Run the HVPs on this Dask cluster with the samples sharded across its workers
        (``X`` and ``y`` may be dask arrays; :func:`fastscape.distributed.shard`); the
        solver's small dense algebra stays here. Equal to the local result to about 1e-15
        relative per product (``docs/cluster.md``).

    Returns
    -------
    DensityResult
    """
    method = check_choice(method, "method", ("slq", "exact"))
    theta, data, device = prepare_inputs(model, theta, X, y, device, client)
    if method == "slq":
        H = HessianOperator(model, theta, data, device=device)
        return slq(
            H, n_runs=n_runs, n_iter=n_iter, max_hvps=max_hvps, sigma=sigma, grid=grid,
            n_grid=n_grid, seed=seed, progress=progress,
        )  # fmt: skip
    vals = np.linalg.eigvalsh(model.hessian(theta, data, max_params=max_params))
    return exact_density(vals, sigma=sigma, grid=grid, n_grid=n_grid, bins=bins)


def exact_density(
    eigenvalues, *, sigma: float | None = None, grid=None, n_grid: int = 1000, bins: int = 50
) -> DensityResult:
    """Broadened density and histogram of a known spectrum (all P eigenvalues, weights 1/P).

    Parameters
    ----------
    eigenvalues : (P,) array
    sigma, grid, n_grid
        Broadening width and evaluation grid, as in :func:`slq`.
    bins : int
        Bins of the histogram.

    Returns
    -------
    DensityResult
    """
    bins = check_positive_int(bins, "bins")
    vals = np.sort(as_float_array(eigenvalues, "eigenvalues", 1))
    nodes = vals[None, :]
    weights = np.full((1, vals.size), 1.0 / vals.size)
    grid, sigma = _grid_and_sigma(nodes, weights, sigma, grid, n_grid)
    hist, edges = np.histogram(vals, bins=bins, density=True)
    return DensityResult(
        grid=grid,
        density=_gaussian_density(nodes, weights, sigma, grid),
        sigma=sigma,
        nodes=nodes,
        weights=weights,
        method="exact",
        eigenvalues=vals,
        hist=hist,
        hist_edges=edges,
        message=f"exact: all {vals.size} eigenvalues",
    )
