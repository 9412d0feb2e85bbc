"""Edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar 2021).

Full-batch gradient descent with step η is stable on a quadratic only while the top Hessian
eigenvalue λmax stays below ``2/η``. Cohen et al. observed that during GD on neural networks
λmax first grows ("progressive sharpening") until it reaches ``2/η``, then hovers just above
it while the loss keeps decreasing non-monotonically ("edge of stability").
:func:`edge_of_stability` runs GD and records λmax every few steps with a warm-started
eigensolver (the previous top eigenvector starts the next solve, so a few HVPs usually do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _device, curvature, distributed
from ._validation import check_choice, check_positive_float, check_positive_int
from .models import MLP

__all__ = ["EoSResult", "edge_of_stability"]


@dataclass
class EoSResult:
    """A gradient-descent run with its sharpness.

    Attributes
    ----------
    lr : float
        Step size η.
    threshold : float
        ``2 / η``.
    loss : (n_steps + 1,) array
        Loss at every iterate.
    grad_norm : (n_steps + 1,) array
        ‖∇L‖ at every iterate.
    steps : (T,) int array
        Steps at which λmax was measured (every ``every`` steps, and the last).
    lambda_max : (T,) array
        Top Hessian eigenvalue at those steps.
    eig_iterations : (T,) int array
        Eigensolver iterations (power) or operator applications (Lanczos) per measurement.
    eig_converged : (T,) bool array
    theta : (P,) array
        Final parameters.
    n_steps : int
        GD steps taken.
    stop_reason : {"max_steps", "nonfinite"}
    method : str
        Eigensolver.
    """

    lr: float
    threshold: float
    loss: np.ndarray
    grad_norm: np.ndarray
    steps: np.ndarray
    lambda_max: np.ndarray
    eig_iterations: np.ndarray
    eig_converged: np.ndarray
    theta: np.ndarray
    n_steps: int
    stop_reason: str
    method: str

    @property
    def normalized_sharpness(self) -> np.ndarray:
        """``λmax η / 2``: 1 at the edge of stability, (T,)."""
        return self.lambda_max / self.threshold

    def first_crossing(self, fraction: float = 1.0) -> int | None:
        """First recorded step with ``λmax >= fraction * 2/η`` (None if never)."""
        hit = np.flatnonzero(self.lambda_max >= fraction * self.threshold)
        return int(self.steps[hit[0]]) if hit.size else None


def edge_of_stability(
    model: MLP,
    X,
    y=None,
    lr: float = 0.01,
    steps: int = 1000,
    every: int = 10,
    *,
    theta0=None,
    seed: int = 0,
    method: str = "lanczos",
    tol: float = 1e-4,
    maxiter: int = 500,
    device: str = "cpu",
    max_hvps: int | None = None,
    progress: bool = False,
    client=None,
) -> EoSResult:
    """Full-batch GD ``θ ← θ − η ∇L(θ)`` recording the loss and λmax.

    Parameters
    ----------
    model : MLP
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    lr : float
        Step size η; the stability threshold is ``2/η``.
    steps : int
        GD steps.
    every : int
        Measure λmax every this many steps (and at the last step).
    theta0 : (P,) array, optional
        Start; default ``model.init(seed)``.
    seed : int
        Seed of the initialisation and of the first eigensolver start.
    method : {"lanczos", "power"}
        ``lanczos``: thick-restart Lanczos (:func:`curvature.lanczos`) on exact HVPs, largest
        algebraic eigenvalue (default: near the edge of stability the top eigenvalues crowd
        together and power iteration slows down);
        ``power``: power iteration on batched exact HVPs (the top eigenvalue by magnitude,
        which is λmax along GD on these losses). Both are warm-started from the previous top
        eigenvector.
    tol : float
        Relative tolerance of the eigensolver (power: change of λ and residual; Lanczos: Ritz
        residual, ARPACK's criterion).
    maxiter : int
        Eigensolver iterations per measurement (power).
    max_hvps : int, optional
        HVP budget of each λmax measurement (default: ``maxiter`` for power, ``min(10 P,
        5000)`` for Lanczos); a measurement that runs out is recorded with
        ``eig_converged`` False.
    progress : bool
        Show a tqdm bar of the GD steps.
    device : {"cpu", "cuda"}
        Where the gradient of every step and the HVPs of every λmax measurement run. The data
        are copied to the GPU once for the whole run; the update ``θ − η ∇L`` and the
        eigensolver's small dense algebra stay on the CPU (one P-vector each way per step).
    client : dask.distributed.Client, optional
        Run the gradient of every step and the HVPs of every λmax measurement on this Dask
        cluster with the samples sharded across its workers (``X`` and ``y`` may be dask
        arrays; :func:`fastscape.distributed.shard`); the update and the eigensolver's small
        dense algebra stay here (``docs/cluster.md``).

    Returns
    -------
    EoSResult
    """
    if client is not None:  # the samples sharded on the workers
        X, y = distributed.shard(client, model, X, y), None
    device, data, th = _device.prepare(model, X, y, device=device, theta0=theta0)
    lr = check_positive_float(lr, "lr")
    steps = check_positive_int(steps, "steps", minimum=0)
    every = check_positive_int(every, "every")
    method = check_choice(method, "method", ("lanczos", "power"))
    tol = check_positive_float(tol, "tol", allow_zero=True)
    maxiter = check_positive_int(maxiter, "maxiter")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if model.n_params < 2:
        raise ValueError("edge_of_stability needs a model with at least 2 parameters")
    theta = model.init(seed) if theta0 is None else th["theta0"].copy()

    losses, gnorms = [], []
    rec_steps, lams, iters, conv = [], [], [], []
    v = None
    stop = "max_steps"
    t = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="edge of stability", unit="step", leave=False)
    while True:
        value, g = model.grad(theta, data, device=device)
        with np.errstate(over="ignore", invalid="ignore"):
            gn = float(np.linalg.norm(g))
        if not (np.isfinite(value) and np.isfinite(gn)):
            stop = "nonfinite"
            break
        losses.append(value)
        gnorms.append(gn)
        if t % every == 0 or t == steps:
            H = curvature.HessianOperator(model, theta, data, device=device)
            if method == "power":
                eig = curvature.power_iteration(H, 1, tol=tol, maxiter=maxiter,
                                                max_hvps=max_hvps, seed=seed, v0=v)  # fmt: skip
            else:
                eig = curvature.lanczos(H, 1, "LA", tol=tol, max_hvps=max_hvps, seed=seed,
                                        v0=v)  # fmt: skip
            v = eig.eigenvectors
            rec_steps.append(t)
            lams.append(float(eig.eigenvalues[0]))
            iters.append(int(eig.iterations[0]))
            conv.append(bool(eig.converged[0]))
        if t >= steps:
            break
        theta = theta - lr * g
        t += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return EoSResult(
        lr=lr,
        threshold=2.0 / lr,
        loss=np.asarray(losses),
        grad_norm=np.asarray(gnorms),
        steps=np.asarray(rec_steps, dtype=np.int64),
        lambda_max=np.asarray(lams),
        eig_iterations=np.asarray(iters, dtype=np.int64),
        eig_converged=np.asarray(conv, dtype=bool),
        theta=theta,
        n_steps=t,
        stop_reason=stop,
        method=method,
    )
