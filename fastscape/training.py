"""Training: full-batch or minibatch first-order methods and damped Newton, with trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from ._validation import check_choice, check_positive_float, check_positive_int
from .models import MLP, Batch
from .sharpness import sam_epsilon, weight_mask

METHODS = ("gd", "momentum", "adam", "newton", "sam", "asam")

#: Divergence limit: a full-batch loss above ``BLOWUP_FACTOR * max(L(theta0), L(0))`` stops
#: training as ``"diverged"`` (see :func:`fit`).
BLOWUP_FACTOR = 1e3


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    theta : (P,) array
        Final parameters.
    loss_history : (n_steps + 1,) array
        Full-batch training: the loss at every iterate, the final one included. Minibatch
        training: the loss of the minibatch used at each step, then the full-batch loss of the
        final iterate.
    grad_norm_history : array
        ‖∇L‖ of the full-batch loss at each check (every step full-batch, every epoch minibatch).
    trajectory : (T, P) array or None
        Parameters every ``record_every`` steps (step 0 and the final iterate included).
    trajectory_steps : (T,) int array
        Step index of each trajectory row.
    n_steps : int
        Parameter updates performed.
    stop_reason : {"gtol", "max_steps", "diverged"}
        Why training stopped: gradient norm below ``gtol``, step budget spent, or the run
        diverged (the loss or gradient became non-finite, or the full-batch loss rose above
        the blow-up limit, see :func:`fit`). A diverged run returns its last healthy iterate
        and is never reported as ``gtol`` or ``max_steps``.
    method : str
    settings : dict
    """

    theta: np.ndarray
    loss_history: np.ndarray
    grad_norm_history: np.ndarray
    trajectory: np.ndarray | None
    trajectory_steps: np.ndarray
    n_steps: int
    stop_reason: str
    method: str
    settings: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """True when the gradient-norm tolerance was reached."""
        return self.stop_reason == "gtol"

    @property
    def final_loss(self) -> float:
        """Full-batch loss of the final parameters."""
        return float(self.loss_history[-1])


def _norm(g: np.ndarray) -> float:
    """Euclidean norm; inf (not a warning) when a diverging run overflows it."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.linalg.norm(g))


def _newton_direction(H: np.ndarray, g: np.ndarray, damping: float) -> np.ndarray:
    """Solve (H + λ I) p = g with the smallest λ >= damping that makes it positive definite."""
    lam = damping
    scale = max(1.0, float(np.abs(np.diag(H)).max()))
    eye = np.eye(H.shape[0])
    while True:
        try:
            c = scipy.linalg.cho_factor(H + lam * eye, check_finite=False)
            return scipy.linalg.cho_solve(c, g, check_finite=False)
        except np.linalg.LinAlgError:
            lam = max(10.0 * lam, 1e-10 * scale)


def fit(
    model: MLP,
    X,
    y=None,
    method: str = "gd",
    *,
    lr: float = 0.1,
    steps: int = 1000,
    gtol: float = 1e-6,
    batch_size: int | None = None,
    seed: int = 0,
    theta0=None,
    record_every: int | None = None,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    damping: float = 0.0,
    rho: float = 0.05,
    asam_eta: float = 0.01,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` on (X, y).

    Parameters
    ----------
    model : MLP
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    method : {"gd", "momentum", "adam", "newton", "sam", "asam"}
        ``gd``: θ ← θ − lr ∇L. ``momentum``: heavy ball, v ← μ v + ∇L, θ ← θ − lr v.
        ``adam``: Kingma & Ba with bias correction. ``newton``: damped Newton with the exact
        Hessian, (H + λI) p = ∇L with λ >= ``damping`` raised until H + λI is positive
        definite, then a backtracking (Armijo) line search; meant for the convex models.
        ``sam``: sharpness-aware minimisation (Foret et al. 2021), θ ← θ − lr ∇L(θ + ε*) with
        ε* = ρ ∇L/‖∇L‖ computed on the same (mini)batch; ``asam``: adaptive SAM (Kwon et al.
        2021), ε* = ρ T²∇L/‖T∇L‖ with T = |w| + η on weights, 1 on biases (see
        :mod:`fastscape.sharpness`). Each step costs two gradients; the recorded loss is the
        unperturbed L(θ).
    lr : float
        Learning rate (first-order methods).
    steps : int
        Step budget.
    gtol : float
        Stop when the full-batch gradient norm falls below this.
    batch_size : int, optional
        Minibatch size (first-order methods). ``None``: full batch. Minibatches come from a
        reshuffle of the data every epoch, seeded by ``seed``.
    seed : int
        Seed of the initial parameters (when ``theta0`` is None) and of the shuffling.
    theta0 : (P,) array, optional
        Initial parameters; default ``model.init(seed)``.
    record_every : int, optional
        Keep the parameters every this many steps in ``trajectory``.
    rho : float
        SAM / ASAM radius ρ.
    asam_eta : float
        ASAM's η (added to |w| in the scaling).
    progress : bool
        Show a tqdm progress bar of the steps (with the current loss) on stderr.

    Returns
    -------
    FitResult

    Notes
    -----
    Divergence. Training stops with ``stop_reason="diverged"`` when the loss or its gradient
    is non-finite, or when the full-batch loss exceeds ``BLOWUP_FACTOR`` (1e3) times the larger
    of the initial loss ``L(theta0)`` and the loss of the zero parameters ``L(0)`` (the
    constant predictor: log C for softmax, log 2 for logistic, mean ‖y‖² for MSE). A run that
    is making progress never leaves that band: its loss starts at ``L(theta0)``, and a loss a
    thousand times above both the start and the trivial model means the iterates have left
    every region a fit lives in (a saturated network can then even reach ‖∇L‖ = 0, which
    must not read as convergence). Full-batch runs check every step; minibatch runs check
    the full-batch loss at every epoch boundary and, every step, non-finite values and a
    minibatch loss above ``limit * n / batch_size`` (per-sample losses are non-negative, so
    that bound proves the full-batch loss is above the limit). The returned ``theta`` is the
    last iterate known to be healthy: the one before the failing step (full batch), or the
    one of the last passing epoch check, ``theta0`` in the first epoch (minibatch);
    ``loss_history`` ends with its full-batch loss and ``trajectory`` with it.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    check_choice(method, "method", METHODS)
    lr = check_positive_float(lr, "lr")
    steps = check_positive_int(steps, "steps", minimum=0)
    gtol = check_positive_float(gtol, "gtol", allow_zero=True)
    damping = check_positive_float(damping, "damping", allow_zero=True)
    rho = check_positive_float(rho, "rho")
    asam_eta = check_positive_float(asam_eta, "asam_eta", allow_zero=True)
    if record_every is not None:
        record_every = check_positive_int(record_every, "record_every")
    data = model.batch(X, y)
    n = data.X.shape[0]
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
        if method == "newton":
            raise ValueError("batch_size is not supported with method 'newton' (full batch only)")
        if batch_size >= n:
            batch_size = None
    theta = model.init(seed) if theta0 is None else model.check_theta(theta0, "theta0").copy()
    settings = {
        "lr": lr, "steps": steps, "gtol": gtol, "batch_size": batch_size, "seed": seed,
        "momentum": momentum, "betas": tuple(betas), "eps": eps, "damping": damping,
        "record_every": record_every, "rho": rho, "asam_eta": asam_eta,
    }  # fmt: skip

    wmask = weight_mask(model)  # ASAM scales weights, not biases
    rng = np.random.default_rng(seed)
    # blow-up limit (see Notes): the start and the constant predictor set the scale
    with np.errstate(over="ignore", invalid="ignore"):
        scale = max(model.loss(theta, data), model.loss(np.zeros_like(theta), data))
    limit = BLOWUP_FACTOR * scale if np.isfinite(scale) else np.inf
    mb_limit = limit * n / batch_size if batch_size is not None else limit
    losses: list[float] = []
    gnorms: list[float] = []
    traj: list[np.ndarray] = []
    traj_steps: list[int] = []
    vel = np.zeros_like(theta)
    m1 = np.zeros_like(theta)
    m2 = np.zeros_like(theta)
    order = np.arange(n)
    pos = n  # forces a shuffle at the first minibatch step
    stop = "max_steps"
    step = 0

    def record(k: int) -> None:
        if record_every is not None and (not traj_steps or traj_steps[-1] != k):
            traj.append(theta.copy())
            traj_steps.append(k)

    def healthy(value: float, gnorm: float) -> bool:
        return bool(np.isfinite(value) and np.isfinite(gnorm) and value <= limit)

    bar = None
    if progress:
        from tqdm import tqdm  # core dependency; imported here to keep `import fastscape` light

        bar = tqdm(total=steps, desc=f"training ({method})", unit="step", leave=False)
    previous = theta
    checked, checked_step = theta, 0  # minibatch: iterate of the last passing epoch check
    try:
        while True:
            if record_every is not None and step % record_every == 0:
                record(step)
            if batch_size is None:
                current = data
                value, g = model.grad(theta, data)
                gnorm = _norm(g)
                if not healthy(value, gnorm):
                    stop = "diverged"
                    theta, step = previous, max(step - 1, 0)
                    break
            else:
                if pos + batch_size > n:
                    if step > 0:  # epoch boundary: check the full batch
                        full_value, full_g = model.grad(theta, data)
                        gnorm = _norm(full_g)
                        if not healthy(full_value, gnorm):
                            stop = "diverged"
                            theta, step = checked, checked_step
                            del losses[step + 1 :]
                            break
                        gnorms.append(gnorm)
                        checked, checked_step = theta, step
                        if gnorm <= gtol:
                            stop = "gtol"
                            break
                    order = rng.permutation(n)
                    pos = 0
                idx = np.sort(order[pos : pos + batch_size])
                pos += batch_size
                current = Batch(data.X[idx], data.Y[idx])
                value, g = model.grad(theta, current)
                gnorm = _norm(g)
                # per-sample losses are >= 0, so a minibatch mean above limit * n / b proves
                # the full-batch loss is above the limit
                if not (np.isfinite(value) and np.isfinite(gnorm) and value <= mb_limit):
                    stop = "diverged"
                    theta, step = checked, checked_step
                    del losses[step + 1 :]
                    break
            losses.append(value)
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            if batch_size is None:
                gnorms.append(gnorm)
                if gnorm <= gtol:
                    stop = "gtol"
                    break
            if step >= steps:
                break

            previous = theta
            if method == "gd":
                theta = theta - lr * g
            elif method == "momentum":
                vel = momentum * vel + g
                theta = theta - lr * vel
            elif method == "adam":
                b1, b2 = betas
                m1 = b1 * m1 + (1 - b1) * g
                m2 = b2 * m2 + (1 - b2) * g * g
                t = step + 1
                theta = theta - lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
            elif method in ("sam", "asam"):
                e = sam_epsilon(theta, g, rho, method == "asam", asam_eta, wmask)
                theta = theta - lr * model.grad(theta + e, current)[1]
            else:  # newton
                p = _newton_direction(model.hessian(theta, data), g, damping)
                t, slope = 1.0, float(g @ p)
                while t > 1e-12 and not model.loss(theta - t * p, data) <= value - 1e-4 * t * slope:
                    t *= 0.5
                theta = theta - t * p
            step += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    if batch_size is not None:
        # close the history with the full-batch loss (and gradient norm) of the result
        final_value, final_g = model.grad(theta, data)
        if np.isfinite(final_value):
            losses.append(final_value)
            if stop != "gtol":
                gnorms.append(_norm(final_g))
    if record_every is not None:
        # a diverged run returns an earlier iterate: drop the rows recorded after it
        keep = [k for k, s in enumerate(traj_steps) if s < step]
        traj[:] = [traj[k] for k in keep]
        traj_steps[:] = [traj_steps[k] for k in keep]
        record(step)
    return FitResult(
        theta=theta,
        loss_history=np.asarray(losses),
        grad_norm_history=np.asarray(gnorms),
        trajectory=np.asarray(traj) if record_every is not None else None,
        trajectory_steps=np.asarray(traj_steps, dtype=np.int64),
        n_steps=step,
        stop_reason=stop,
        method=method,
        settings=settings,
    )
