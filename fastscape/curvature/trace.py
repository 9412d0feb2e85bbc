"""The trace of a symmetric operator: Hutchinson, Hutch++, and ``hessian_trace`` on a model."""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, check_positive_float, check_positive_int
from ..models import MLP
from ._common import Progress, apply_rows, as_operator, check_budget, orth_rows, rademacher
from .operator import HessianOperator, prepare_inputs
from .results import TraceResult

__all__ = ["hessian_trace", "hutchinson", "hutchpp"]


def hutchinson(
    A,
    n_samples: int = 100,
    *,
    tol: float | None = None,
    max_hvps: int | None = None,
    seed: int = 0,
    block: int = 32,
    progress: bool = False,
) -> TraceResult:
    """Hutchinson's trace estimator with Rademacher probes.

    ``tr(A) ≈ (1/m) sum_i z_i^T A z_i`` with ``z_i`` uniform on {-1, +1}^n; unbiased, with
    variance ``2 (||A||_F^2 - sum_i A_ii^2) / m``. The standard error is the sample standard
    deviation of the ``z_i^T A z_i`` over ``sqrt(m)``. The probes are applied ``block`` at a
    time (one pass over the data each for a :class:`HessianOperator`).

    Parameters
    ----------
    A : LinearOperator (n, n)
        Arrays are wrapped with ``aslinearoperator``.
    n_samples : int
        Number of probes m (>= 2).
    tol : float, optional
        Stop early, after a block, once the standard error is at most ``tol * |estimate|``
        (relative accuracy). Default: use all ``n_samples`` probes.
    max_hvps : int, optional
        Hard budget of operator products (>= 2); fewer than ``n_samples`` probes leave the
        result flagged ``converged=False`` unless ``tol`` was met first. Default ``n_samples``.
    seed : int
    block : int
        Probes per operator call.
    progress : bool
        Show a tqdm bar of the probes.

    Returns
    -------
    TraceResult
    """
    A = as_operator(A)
    n = A.shape[0]
    m = check_positive_int(n_samples, "n_samples", minimum=2)
    block = check_positive_int(block, "block")
    if tol is not None:
        tol = check_positive_float(tol, "tol", allow_zero=True)
    max_hvps = check_budget(max_hvps, m, minimum=2)
    limit = min(m, max_hvps)
    rng = np.random.default_rng(seed)
    vals = np.empty(limit)
    used = 0
    met = False
    with Progress(progress, limit, "Hutchinson") as bar:
        for s in range(0, limit, block):
            Z = rademacher(rng, (min(block, limit - s), n))
            vals[s : s + Z.shape[0]] = np.einsum("ij,ij->i", Z, apply_rows(A, Z))
            used = s + Z.shape[0]
            bar.update(Z.shape[0])
            if tol is not None and used >= 2 and used < limit:
                v = vals[:used]
                if v.std(ddof=1) / np.sqrt(used) <= tol * abs(v.mean()):
                    met = True
                    break
    vals = vals[:used]
    est, se = float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(used))
    if tol is not None and not met:
        met = se <= tol * abs(est)
    converged = met or (tol is None and used == m)
    if converged:
        status = "converged"
        rel = se / max(abs(est), 1e-300)
        message = f"Hutchinson: {used} probes, relative standard error {rel:.3g}"
    else:
        status = "budget" if used < m else "not_converged"
        what = f"tol {tol:.3g} not met" if tol is not None else f"{used} of {m} probes"
        message = f"not converged after {used} HVPs (budget max_hvps={max_hvps}): {what}"
        if used == m:
            message = f"not converged after {used} HVPs (all n_samples={m} probes): {what}"
    return TraceResult(
        estimate=est,
        std_error=se,
        n_matvecs=used,
        method="hutchinson",
        samples=vals,
        converged=bool(converged),
        status=status,
        message=message,
    )


def hutchpp(
    A,
    n_samples: int = 99,
    *,
    max_hvps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): low-rank sketch plus Hutchinson.

    With m = ``n_samples`` operator applications split in three: S (n, m/3) Rademacher,
    Q = orth(A S); then ``tr(A) = tr(Q^T A Q) + tr((I - QQ^T) A (I - QQ^T))`` and the second
    term is estimated by Hutchinson with m/3 probes G: ``(3/m) tr(G^T (I-QQ^T) A (I-QQ^T) G)``.
    Its error falls like 1/m instead of 1/sqrt(m) when the spectrum decays. The standard error
    reported is that of the Hutchinson part given Q (the first term is exact given Q).

    Parameters
    ----------
    A : LinearOperator (n, n)
    n_samples : int
        Total operator applications (>= 6; rounded down to a multiple of 3).
    max_hvps : int, optional
        Hard budget (>= 6): with fewer than ``n_samples`` the estimate uses ``max_hvps``
        products and is flagged ``converged=False``. Default ``n_samples``.
    seed : int
    progress : bool
        Show a tqdm bar of the products.

    Returns
    -------
    TraceResult
    """
    A = as_operator(A)
    n = A.shape[0]
    asked = check_positive_int(n_samples, "n_samples", minimum=6)
    max_hvps = check_budget(max_hvps, asked, minimum=6)
    m = min(asked, max_hvps)
    rng = np.random.default_rng(seed)
    b = m // 3
    r = min(b, n)
    S = rademacher(rng, (r, n))
    G = rademacher(rng, (b, n))
    with Progress(progress, 2 * r + b, "Hutch++") as bar:
        Q = orth_rows(apply_rows(A, S))  # (r, n) orthonormal rows
        bar.update(r)
        head = float(np.einsum("ij,ij->i", Q, apply_rows(A, Q)).sum())
        bar.update(r)
        Gp = G - (G @ Q.T) @ Q
        vals = np.einsum("ij,ij->i", Gp, apply_rows(A, Gp))
        bar.update(b)
    if r == n:  # the sketch spans everything: the head term is the trace
        vals = np.zeros(b)
    used = 2 * r + b
    converged = m == asked
    if converged:
        message = f"Hutch++: {used} HVPs (sketch {r}, probes {b})"
    else:
        message = (
            f"not converged after {used} HVPs (budget max_hvps={max_hvps}): "
            f"{m} of n_samples={asked} products"
        )
    return TraceResult(
        estimate=head + float(vals.mean()),
        std_error=float(vals.std(ddof=1) / np.sqrt(b)),
        n_matvecs=used,
        method="hutch++",
        samples=vals,
        converged=converged,
        status="converged" if converged else "budget",
        message=message,
    )


def hessian_trace(
    model: MLP,
    theta,
    X,
    y=None,
    method: str = "hutchinson",
    *,
    n_samples: int = 100,
    tol: float | None = None,
    max_hvps: int | None = None,
    seed: int = 0,
    max_params: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    client=None,
) -> TraceResult:
    """Trace of the Hessian of a model at ``theta``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"hutchinson", "hutch++", "exact"}
        Stochastic estimates on batched exact HVPs (see :func:`hutchinson`, :func:`hutchpp`),
        or the sum of the diagonal of the exact Hessian (small models).
    n_samples : int
        Probes (Hutchinson) or total HVPs (Hutch++).
    tol : float, optional
        Relative standard error at which Hutchinson stops early (see :func:`hutchinson`).
    max_hvps : int, optional
        Hard budget of HVPs (default ``n_samples``).
    seed : int
    max_params : int, optional
        Size limit of the exact Hessian.
    device : {"cpu", "cuda"}
        Where the HVPs of the probes run (the data are copied to the GPU once per call);
        ``exact`` forms the Hessian on the CPU whatever the device.
    progress : bool
        Show a tqdm bar of the HVPs.
    client : dask.distributed.Client, optional
        Run the HVPs on this Dask cluster with the samples sharded across its workers
        (``X`` and ``y`` may be dask arrays; :func:`fastscape.distributed.shard`); the
        solver's small dense algebra stays here. Equal to the local result to about 1e-15
        relative per product (``docs/cluster.md``).

    Returns
    -------
    TraceResult
    """
    method = check_choice(method, "method", ("hutchinson", "hutch++", "exact"))
    theta, data, device = prepare_inputs(model, theta, X, y, device, client)
    if method == "exact":
        H = model.hessian(theta, data, max_params=max_params)
        return TraceResult(
            float(np.trace(H)), 0.0, 0, "exact", np.empty(0),
            message=f"exact: the trace of the {H.shape[0]} x {H.shape[0]} Hessian",
        )  # fmt: skip
    H = HessianOperator(model, theta, data, device=device)
    if method == "hutchinson":
        return hutchinson(H, n_samples, tol=tol, max_hvps=max_hvps, seed=seed, progress=progress)
    if tol is not None:
        raise ValueError("tol applies to method='hutchinson' only (Hutch++ has a fixed budget)")
    return hutchpp(H, n_samples, max_hvps=max_hvps, seed=seed, progress=progress)
