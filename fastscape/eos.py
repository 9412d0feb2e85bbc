"""Edge of stability (Cohen et al. 2021, 2022), with GD, heavy-ball momentum and Adam.

Full-batch gradient descent with step η is stable on a quadratic only while the top Hessian
eigenvalue λmax stays below ``2/η``. Cohen, Kaur, Li, Kolter & Talwalkar (2021, "Gradient
Descent on Neural Networks Typically Occurs at the Edge of Stability") observed that during
GD on neural networks λmax first grows ("progressive sharpening") until it reaches ``2/η``,
then hovers just above it while the loss keeps decreasing non-monotonically ("edge of
stability"). Heavy-ball momentum β (``v ← β v + ∇L``, ``θ ← θ − η v``, PyTorch's SGD with
dampening 0) is stable on a quadratic while ``λmax < (2 + 2β)/η``. For Adam, Cohen et al.
(2022, "Adaptive Gradient Methods at the Edge of Stability") write the step as
preconditioned EMA momentum, ``θ ← θ − η P⁻¹ m`` with ``m ← β1 m + (1 − β1) ∇L`` and
``P = (1 − β1^t) diag(√v̂ + ε)`` (v̂ the bias-corrected second moment, t the step count),
and track the preconditioned sharpness ``λmax(P⁻¹ H)`` against ``(2 + 2β1)/((1 − β1) η)``
(38/η at β1 = 0.9).

:func:`edge_of_stability` runs one of the three and records the sharpness every few steps
with a warm-started eigensolver (the previous top eigenvector starts the next solve, so a few
HVPs usually do).

The MSE convention. fastscape's MSE is ``mean_i Σ_k (f_ik − y_ik)²``; Cohen et al. use
``mean_i ½ Σ_k (f_ik − y_ik)²``, half of it, so the same η means a different run and λmax is
halved. ``mse_convention="half_sum"`` runs and measures the halved loss (an L2 term is not
halved); the default ``"sum"`` is fastscape's loss, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _device, curvature, distributed
from ._validation import check_choice, check_positive_float, check_positive_int
from .curvature.operator import SymmetricRowOperator
from .models import MLP

OPTIMIZERS = ("gd", "momentum", "adam")
MSE_CONVENTIONS = ("sum", "half_sum")

__all__ = ["EoSResult", "edge_of_stability"]


@dataclass
class EoSResult:
    """An optimiser run with its sharpness.

    Attributes
    ----------
    lr : float
        Step size η.
    threshold : float
        The optimiser's stability threshold: ``2/η`` (GD), ``(2 + 2β)/η`` (heavy-ball
        momentum), ``(2 + 2β1)/((1 − β1) η)`` (Adam).
    loss : (n_steps + 1,) array
        Loss at every iterate (in ``mse_convention``).
    grad_norm : (n_steps + 1,) array
        ‖∇L‖ at every iterate.
    steps : (T,) int array
        Steps at which the sharpness was measured (every ``every`` steps, and the last).
    lambda_max : (T,) array
        The sharpness at those steps: the top Hessian eigenvalue (GD, momentum), the top
        eigenvalue of the preconditioned Hessian ``P⁻¹ H`` (Adam; see ``sharpness``).
    eig_iterations : (T,) int array
        Eigensolver iterations (power) or operator applications (Lanczos) per measurement.
    eig_converged : (T,) bool array
    theta : (P,) array
        Final parameters.
    n_steps : int
        Optimiser steps taken.
    stop_reason : {"max_steps", "nonfinite"}
    method : str
        Eigensolver.
    optimizer : {"gd", "momentum", "adam"}
    momentum : float or None
        Heavy-ball β (``optimizer="momentum"``), else None.
    betas : (float, float) or None
        Adam's (β1, β2), else None.
    adam_eps : float or None
        Adam's ε, else None.
    mse_convention : {"sum", "half_sum"} or None
        The MSE loss run and measured: ``mean Σ_k (f − y)²`` or Cohen et al.'s
        ``mean ½ Σ_k (f − y)²``; None for other losses.
    sharpness : str
        What ``lambda_max`` is: ``"hessian"`` (λmax(H)) or ``"preconditioned"``
        (λmax(P⁻¹ H) = λmax(P^{-1/2} H P^{-1/2}), Adam's P at that step).
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
    optimizer: str = "gd"
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    adam_eps: float | None = None
    mse_convention: str | None = None
    sharpness: str = "hessian"

    @property
    def normalized_sharpness(self) -> np.ndarray:
        """``lambda_max / threshold``: 1 at the edge of stability, (T,)."""
        return self.lambda_max / self.threshold

    @property
    def threshold_formula(self) -> str:
        """The threshold as a formula: ``"2/η"``, ``"(2+2β)/η"`` or ``"(2+2β1)/((1−β1)η)"``."""
        return {"gd": "2/η", "momentum": "(2+2β)/η", "adam": "(2+2β1)/((1−β1)η)"}[self.optimizer]

    @property
    def sharpness_label(self) -> str:
        """``"λmax"`` or ``"λmax(P⁻¹H)"``."""
        return "λmax(P⁻¹H)" if self.sharpness == "preconditioned" else "λmax"

    def first_crossing(self, fraction: float = 1.0) -> int | None:
        """First recorded step with ``lambda_max >= fraction * threshold`` (None if never)."""
        hit = np.flatnonzero(self.lambda_max >= fraction * self.threshold)
        return int(self.steps[hit[0]]) if hit.size else None


class _ScaledOperator(SymmetricRowOperator):
    """``D (c H + (1 − c) diag(r)) D`` on rows, for a Hessian operator H.

    c scales the data term (the MSE convention), r holds the L2 term's weights (the part of
    H that c must not scale), D = diag(d) is the symmetric preconditioning ``P^{-1/2}``
    (None: the identity). Symmetric, so every solver takes it.
    """

    def __init__(self, H, c: float, r: np.ndarray | None, d: np.ndarray | None):
        self.hess, self.c, self.r, self.d = H, c, r, d
        super().__init__(dtype=np.dtype(np.float64), shape=H.shape)

    def rows(self, V) -> np.ndarray:
        V = np.atleast_2d(np.asarray(V, dtype=np.float64))
        W = V if self.d is None else V * self.d
        out = self.hess.rows(W)
        if self.c != 1.0:
            out = self.c * out if self.r is None else self.c * out + (1.0 - self.c) * self.r * W
        return out if self.d is None else out * self.d


def edge_of_stability(
    model: MLP,
    X,
    y=None,
    lr: float = 0.01,
    steps: int = 1000,
    every: int = 10,
    *,
    optimizer: str = "gd",
    momentum: float | None = None,
    betas: tuple[float, float] | None = None,
    adam_eps: float | None = None,
    mse_convention: str | None = None,
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
    """Full-batch GD, heavy-ball momentum or Adam, recording the loss and the sharpness.

    The updates, with ``g = ∇L(θ_t)`` and t counted from 1 at the first step:

    - ``gd``: ``θ ← θ − η g``; sharpness λmax(H), threshold ``2/η``;
    - ``momentum``: ``v ← β v + g``, ``θ ← θ − η v`` (v starts at 0; PyTorch's
      ``SGD(momentum=β, dampening=0)``); sharpness λmax(H), threshold ``(2 + 2β)/η``;
    - ``adam``: ``m ← β1 m + (1 − β1) g``, ``v ← β2 v + (1 − β2) g²``,
      ``θ ← θ − η m̂ / (√v̂ + ε)`` with ``m̂ = m/(1 − β1^t)``, ``v̂ = v/(1 − β2^t)`` (PyTorch's
      ``Adam``). Written as Cohen et al. (2022) do, ``θ ← θ − η P⁻¹ m`` with
      ``P = (1 − β1^t) diag(√v̂ + ε)``; the sharpness recorded at θ_t is
      ``λmax(P⁻¹ H(θ_t))`` with the P of the step taken from θ_t (its v includes g_t),
      computed as the top eigenvalue of the symmetric ``P^{-1/2} H P^{-1/2}`` (same
      eigenvalues); threshold ``(2 + 2β1)/((1 − β1) η)``.

    Parameters
    ----------
    model : MLP
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    lr : float
        Step size η.
    steps : int
        Optimiser steps.
    every : int
        Measure the sharpness every this many steps (and at the last step).
    optimizer : {"gd", "momentum", "adam"}
    momentum : float, optional
        Heavy-ball β in [0, 1) (default 0.9); only with ``optimizer="momentum"``.
    betas : (float, float), optional
        Adam's (β1, β2), each in [0, 1) (default (0.9, 0.999)); only with ``"adam"``.
    adam_eps : float, optional
        Adam's ε > 0 (default 1e-8); only with ``"adam"``.
    mse_convention : {"sum", "half_sum"}, optional
        MSE models only (default ``"sum"``, fastscape's loss): ``"half_sum"`` runs and
        measures Cohen et al.'s ``mean ½ Σ_k (f − y)²`` (the L2 term, if any, unchanged).
    theta0 : (P,) array, optional
        Start; default ``model.init(seed)``.
    seed : int
        Seed of the initialisation and of the first eigensolver start.
    method : {"lanczos", "power"}
        ``lanczos``: thick-restart Lanczos (:func:`curvature.lanczos`) on exact HVPs, largest
        algebraic eigenvalue (default: near the edge of stability the top eigenvalues crowd
        together and power iteration slows down);
        ``power``: power iteration on batched exact HVPs (the top eigenvalue by magnitude,
        which is λmax along these runs). Both are warm-started from the previous top
        eigenvector.
    tol : float
        Relative tolerance of the eigensolver (power: change of λ and residual; Lanczos: Ritz
        residual, ARPACK's criterion).
    maxiter : int
        Eigensolver iterations per measurement (power).
    max_hvps : int, optional
        HVP budget of each measurement (default: ``maxiter`` for power, ``min(10 P,
        5000)`` for Lanczos); a measurement that runs out is recorded with
        ``eig_converged`` False.
    progress : bool
        Show a tqdm bar of the steps.
    device : {"cpu", "cuda"}
        Where the gradient of every step and the HVPs of every measurement run. The data
        are copied to the GPU once for the whole run; the update and the eigensolver's small
        dense algebra stay on the CPU (one P-vector each way per step).
    client : dask.distributed.Client, optional
        Run the gradient of every step and the HVPs of every measurement on this Dask
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
    optimizer = check_choice(optimizer, "optimizer", OPTIMIZERS)
    tol = check_positive_float(tol, "tol", allow_zero=True)
    maxiter = check_positive_int(maxiter, "maxiter")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if model.n_params < 2:
        raise ValueError("edge_of_stability needs a model with at least 2 parameters")
    beta, b1, b2, aeps = _optimizer_settings(optimizer, momentum, betas, adam_eps)
    is_mse = model.loss_name == "mse"
    if mse_convention is not None:
        mse_convention = check_choice(mse_convention, "mse_convention", MSE_CONVENTIONS)
        if not is_mse:
            raise ValueError(f"mse_convention applies to the mse loss only; this model's loss "
                             f"is {model.loss_name!r}")  # fmt: skip
    elif is_mse:
        mse_convention = "sum"
    c = 0.5 if mse_convention == "half_sum" else 1.0
    r = model.spec.penalty if c != 1.0 else None  # the L2 weights, which c does not scale

    def objective(theta):
        value, g = model.grad(theta, data, device=device)
        if c != 1.0:
            if r is None:
                value, g = c * value, c * g
            else:
                value = c * value + (1.0 - c) * 0.5 * float(r @ (theta * theta))
                g = c * g + (1.0 - c) * r * theta
        return value, g

    theta = model.init(seed) if theta0 is None else th["theta0"].copy()
    losses, gnorms = [], []
    rec_steps, lams, iters, conv = [], [], [], []
    v = None
    buf = np.zeros_like(theta)  # momentum buffer, Adam's first moment
    sq = np.zeros_like(theta)  # Adam's second moment
    stop = "max_steps"
    t = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="edge of stability", unit="step", leave=False)
    while True:
        value, g = objective(theta)
        with np.errstate(over="ignore", invalid="ignore"):
            gn = float(np.linalg.norm(g))
        if not (np.isfinite(value) and np.isfinite(gn)):
            stop = "nonfinite"
            break
        losses.append(value)
        gnorms.append(gn)
        if optimizer == "adam":  # the moments of the step from θ_t (t + 1 counts it)
            buf = b1 * buf + (1.0 - b1) * g
            sq = b2 * sq + (1.0 - b2) * g * g
            denom = np.sqrt(sq / (1.0 - b2 ** (t + 1))) + aeps
        if t % every == 0 or t == steps:
            H = curvature.HessianOperator(model, theta, data, device=device)
            d = None
            if optimizer == "adam":
                d = 1.0 / np.sqrt((1.0 - b1 ** (t + 1)) * denom)  # P^{-1/2}
            if c != 1.0 or d is not None:
                H = _ScaledOperator(H, c, r, d)
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
        if optimizer == "gd":
            theta = theta - lr * g
        elif optimizer == "momentum":
            buf = beta * buf + g
            theta = theta - lr * buf
        else:
            theta = theta - lr * (buf / (1.0 - b1 ** (t + 1))) / denom
        t += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if optimizer == "gd":
        threshold = 2.0 / lr
    elif optimizer == "momentum":
        threshold = (2.0 + 2.0 * beta) / lr
    else:
        threshold = (2.0 + 2.0 * b1) / ((1.0 - b1) * lr)
    return EoSResult(
        lr=lr,
        threshold=threshold,
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
        optimizer=optimizer,
        momentum=beta,
        betas=None if optimizer != "adam" else (b1, b2),
        adam_eps=aeps,
        mse_convention=mse_convention,
        sharpness="preconditioned" if optimizer == "adam" else "hessian",
    )


def _unit_interval(value, name: str) -> float:
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _optimizer_settings(optimizer, momentum, betas, adam_eps):
    """(β, β1, β2, ε) of the optimiser, None where it has none; options that do not apply
    to it are refused."""
    if momentum is not None and optimizer != "momentum":
        raise ValueError(f"momentum applies to optimizer='momentum' only, not {optimizer!r}")
    for name, value in (("betas", betas), ("adam_eps", adam_eps)):
        if value is not None and optimizer != "adam":
            raise ValueError(f"{name} applies to optimizer='adam' only, not {optimizer!r}")
    if optimizer == "momentum":
        return _unit_interval(0.9 if momentum is None else momentum, "momentum"), None, None, None
    if optimizer == "adam":
        betas = (0.9, 0.999) if betas is None else betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (β1, β2), got {betas!r}")
        b1 = _unit_interval(betas[0], "betas[0]")
        b2 = _unit_interval(betas[1], "betas[1]")
        eps = check_positive_float(1e-8 if adam_eps is None else adam_eps, "adam_eps")
        return None, b1, b2, eps
    return None, None, None, None
