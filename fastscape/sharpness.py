"""Sharpness of a solution: ε-sharpness, SAM / ASAM perturbations, and comparisons of minima.

Two ε-sharpness definitions, named apart:

- box ε-sharpness (Keskar et al. 2017, "On Large-Batch Training for Deep Learning", their
  definition): the largest loss in the box ``|z_i| <= ε (|θ_i| + 1)`` around θ, found by
  L-BFGS-B (``scipy.optimize.minimize``) on the model's exact gradient, reported as
  ``(max L − L(θ)) / (1 + L(θ)) · 100``; optionally in a random p-dimensional subspace
  ``z = A y`` with the box on y (:func:`box_sharpness`);
- random-direction ε-sharpness (:func:`epsilon_sharpness`): the loss increase
  ``L(θ + ε d) - L(θ)`` over many random unit directions d, all evaluated in one batched call
  of the landscape engine (:func:`fastscape.landscape.evaluate`), next to the quadratic
  prediction ``½ ε² λmax`` (the largest increase a quadratic model allows on the sphere).
- SAM (Foret et al. 2021): ``ε* = ρ g / ||g||`` maximises the first-order loss on the ρ-ball;
  the SAM sharpness is ``L(θ + ε*) - L(θ)`` and the SAM gradient ``∇L(θ + ε*)``.
- ASAM (Kwon et al. 2021): the ball is measured after the scaling ``T = |w| + η`` of each
  weight (biases unscaled, as in the authors' code): ``ε* = ρ T² g / ||T g||``, invariant to
  rescalings of the weights that leave the network function unchanged.

Raw sharpness is not invariant to reparameterisation (Dinh et al. 2017): a ReLU network's
layers can be rescaled by α and 1/α without changing the function, while λmax and ε-sharpness
change arbitrarily. :func:`compare_minima` says so with a :class:`SharpnessWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _device, curvature, distributed, landscape
from ._validation import check_choice, check_positive_float, check_positive_int
from .models import MLP

__all__ = [
    "BoxSharpness",
    "EpsilonSharpness",
    "MinimaComparison",
    "SharpnessWarning",
    "box_sharpness",
    "compare_minima",
    "epsilon_sharpness",
    "sam_gradient",
    "sam_perturbation",
    "sam_sharpness",
]


class SharpnessWarning(UserWarning):
    """Raw sharpness compared across solutions: not reparameterisation-invariant."""


@dataclass
class EpsilonSharpness:
    """Random-direction ε-sharpness: loss increases on the sphere of radius ε around θ.

    Not Keskar et al.'s definition (that is :class:`BoxSharpness`): a sample of the sphere,
    so ``max_increase`` is a lower bound of the largest increase on the sphere, and random
    directions in high dimension rarely meet the sharp ones.

    Attributes
    ----------
    eps : float
    base_loss : float
        L(θ).
    increases : (r,) array
        ``L(θ + ε d_i) - L(θ)`` for the r random unit directions d_i.
    max_increase, mean_increase : float
    lambda_max : float
        Largest Hessian eigenvalue at θ.
    quadratic_prediction : float
        ``½ ε² λmax``: the largest increase of the quadratic model on the sphere at a critical
        point. Random directions in high dimension see mostly the bulk of the spectrum, so
        ``mean_increase`` is close to ``½ ε² tr(H) / P`` instead.
    grad_norm : float
        ‖∇L(θ)‖ (away from a critical point the first-order term ``ε ‖∇L‖`` adds to the
        prediction).
    seed : int
    """

    eps: float
    base_loss: float
    increases: np.ndarray
    max_increase: float
    mean_increase: float
    lambda_max: float
    quadratic_prediction: float
    grad_norm: float
    seed: int
    definition: str = "random-direction"


def _lambda_max(model, theta, data, seed, device="cpu") -> float:
    if model.n_params < 2:
        return float(model.hessian(theta, data)[0, 0])
    eig = curvature.top_eigen(
        model, theta, data, k=1, method="lanczos", which="LA", seed=seed, device=device
    )
    return float(eig.eigenvalues[0])


def epsilon_sharpness(
    model: MLP,
    theta,
    X,
    y=None,
    eps: float = 0.05,
    *,
    n_directions: int = 256,
    seed: int = 0,
    lambda_max: float | None = None,
    n_threads: int | None = None,
    device: str = "cpu",
    client=None,
) -> EpsilonSharpness:
    """Random-direction ε-sharpness: max and mean loss increase over random directions on
    the ε-sphere around θ (for Keskar et al.'s box definition see :func:`box_sharpness`).

    The r directions are Gaussian vectors normalised to unit length (uniform on the sphere).
    All ``r + 1`` points (θ itself and the ``θ + ε d_i``) are one call of the landscape engine
    with basis ``[θ, d_1, ..., d_r]`` and coefficient rows ``(1, 0, .., ε, .., 0)``; the engine
    skips zero coefficients, so each point costs about one forward pass. Memory: the basis,
    ``(r + 1) P`` floats.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    eps : float
        Radius ε (Euclidean, in parameter space).
    n_directions : int
        Number r of random directions.
    seed : int
        Seed of the directions.
    lambda_max : float, optional
        λmax if already known; otherwise computed by Lanczos on exact HVPs.
    n_threads : int, optional
        Numba threads for the evaluation (with a ``client``: per task on a worker).
    device : {"cpu", "cuda"}
        Where the probes (the landscape engine), the gradient and the HVPs of λmax run; the
        data are copied to the GPU once per call.
    client : dask.distributed.Client, optional
        Evaluate the ``r + 1`` probes on this Dask cluster
        (:func:`fastscape.landscape.evaluate`; bitwise equal to the local result); the
        gradient and λmax are computed here.

    Returns
    -------
    EpsilonSharpness
    """
    if client is not None and (distributed.is_dask_array(X) or distributed.is_dask_array(y)):
        X, y = distributed.shard(client, model, X, y), None  # samples sharded on the workers
    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    eps = check_positive_float(eps, "eps")
    r = check_positive_int(n_directions, "n_directions")
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((r, model.n_params))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    basis = np.vstack([theta[None, :], D])
    coef = np.zeros((r + 1, r + 1))
    coef[:, 0] = 1.0
    coef[np.arange(1, r + 1), np.arange(1, r + 1)] = eps
    out = landscape.evaluate(
        model, basis, coef, data, n_threads=n_threads, device=device, client=client
    )
    base = float(out.loss[0])
    inc = out.loss[1:] - base
    if lambda_max is None:
        lam = _lambda_max(model, theta, data, seed, device)
    else:
        lam = float(lambda_max)
        if not np.isfinite(lam):
            raise ValueError(f"lambda_max must be finite, got {lambda_max}")
    gnorm = float(np.linalg.norm(model.grad(theta, data, device=device)[1]))
    return EpsilonSharpness(
        eps=eps,
        base_loss=base,
        increases=inc,
        max_increase=float(inc.max()),
        mean_increase=float(inc.mean()),
        lambda_max=lam,
        quadratic_prediction=0.5 * eps * eps * lam,
        grad_norm=gnorm,
        seed=seed,
    )


# ----------------------------------------------------------------------------- box ε-sharpness
@dataclass
class BoxSharpness:
    """Keskar et al. 2017's ε-sharpness: the largest loss in an ε-box around θ.

    Attributes
    ----------
    eps : float
    sharpness : float
        ``(max_loss − base_loss) / (1 + base_loss) · 100``, the paper's number.
    base_loss : float
        L(θ).
    max_loss : float
        The largest loss the maximisation found, ``L(θ + z)`` (recomputed at ``z``).
    max_increase : float
        ``max_loss − base_loss`` (comparable with :attr:`EpsilonSharpness.max_increase`).
    z : (P,) array
        The maximising perturbation (``A y`` in a subspace).
    y : (p,) array or None
        Its subspace coordinates (None in the full space).
    half_widths : (P,) or (p,) array
        The box: ``|z_i| <= half_widths[i]`` (full space) or ``|y_i| <= half_widths[i]``.
    subspace_dim : int or None
        p, or None in the full space.
    converged : bool
        Every start's L-BFGS-B run ended with status 0 (its convergence test passed). A value
        from a run that did not converge is still a feasible loss (a lower bound of the box
        maximum) but not a local maximum.
    status : (n_starts,) int array
        ``scipy.optimize.minimize``'s status of each start (0 converged, 1 iteration or
        evaluation limit, 2 other stop; see ``message``).
    message : list of str
        L-BFGS-B's message of each start.
    n_iterations, n_evaluations : (n_starts,) int arrays
        Iterations and loss-and-gradient evaluations of each start.
    best_start : int
        The start whose run gave ``max_loss``.
    seed : int
    definition : str
        ``"box (Keskar et al. 2017)"``.
    """

    eps: float
    sharpness: float
    base_loss: float
    max_loss: float
    max_increase: float
    z: np.ndarray
    y: np.ndarray | None
    half_widths: np.ndarray
    subspace_dim: int | None
    converged: bool
    status: np.ndarray
    message: list
    n_iterations: np.ndarray
    n_evaluations: np.ndarray
    best_start: int
    seed: int
    definition: str = "box (Keskar et al. 2017)"

    def __str__(self) -> str:
        where = "full space" if self.subspace_dim is None else f"subspace p={self.subspace_dim}"
        state = "converged" if self.converged else "NOT converged: " + self.message[self.best_start]
        return (
            f"box ε-sharpness (Keskar et al. 2017), ε={self.eps:g}, {where}: "
            f"{self.sharpness:.6g} (max loss {self.max_loss:.6g}, L(θ) {self.base_loss:.6g}); "
            f"L-BFGS-B {state}, {int(self.n_iterations.sum())} iterations, "
            f"{int(self.n_evaluations.sum())} evaluations over {self.status.size} start(s)"
        )


def box_sharpness(
    model: MLP,
    theta,
    X,
    y=None,
    eps: float = 1e-3,
    *,
    subspace=None,
    n_starts: int = 1,
    maxiter: int = 100,
    ftol: float = 2.220446049250313e-09,
    gtol: float = 1e-5,
    seed: int = 0,
    device: str = "cpu",
) -> BoxSharpness:
    """Keskar et al. 2017's ε-sharpness, maximised by L-BFGS-B in the ε-box.

    Full space: ``C_ε = {z : |z_i| <= ε (|θ_i| + 1)}`` and

        φ(θ, ε) = (max_{z ∈ C_ε} L(θ + z) − L(θ)) / (1 + L(θ)) · 100.

    In a subspace (``subspace`` = p or a (P, p) matrix A): ``z = A y`` with the box on y,
    ``|y_i| <= ε (|(A⁺ θ)_i| + 1)`` (A⁺ the pseudo-inverse), as in the paper. An integer p draws
    A with orthonormal columns (a uniformly random p-dimensional subspace, so A⁺ = Aᵀ),
    seeded by ``seed``.

    The maximisation is ``scipy.optimize.minimize(-L(θ + A y), method="L-BFGS-B", jac=True)``
    with the box as bounds, the model's exact gradient (``−Aᵀ ∇L``) and the iterate started at
    a point drawn uniformly in the box (at a critical point θ the gradient vanishes at y = 0,
    where L-BFGS-B would stop at once). ``n_starts`` starts are run and the largest loss
    kept. Guarantees: the returned ``z`` lies in the box (L-BFGS-B keeps its iterates feasible;
    ``z`` is also clipped to it), so ``max_loss`` is an attained loss and a lower bound of the
    true box maximum; with ``converged`` it is a local maximum (projected gradient below
    ``gtol`` or relative change below ``ftol``), not necessarily the global one (maximising a
    non-concave function on a box is hard in general; more starts help). Keskar et al. ran a
    few L-BFGS-B iterations only; ``maxiter`` sets the budget, and a run that spends it is
    reported ``converged=False``.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    eps : float
        ε, relative half-width of the box (Keskar et al. used 1e-3 and 5e-4).
    subspace : int or (P, p) array, optional
        Maximise in a p-dimensional subspace; None: the full space (A = I).
    n_starts : int
        Random starts in the box.
    maxiter : int
        L-BFGS-B iterations per start.
    ftol, gtol : float
        L-BFGS-B's convergence tolerances (SciPy's defaults).
    seed : int
        Seed of the starts (and of A when ``subspace`` is an int).
    device : {"cpu", "cuda"}
        Where the losses and gradients are evaluated (the data are copied once).

    Returns
    -------
    BoxSharpness
    """
    from scipy.optimize import minimize  # scipy.optimize is heavy; imported on use

    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    eps = check_positive_float(eps, "eps")
    n_starts = check_positive_int(n_starts, "n_starts")
    maxiter = check_positive_int(maxiter, "maxiter")
    ftol = check_positive_float(ftol, "ftol", allow_zero=True)
    gtol = check_positive_float(gtol, "gtol", allow_zero=True)
    P = model.n_params
    rng = np.random.default_rng(seed)
    if subspace is None:
        A = None
        coords = theta
    elif isinstance(subspace, (int, np.integer)) and not isinstance(subspace, bool):
        p = check_positive_int(subspace, "subspace")
        if p > P:
            raise ValueError(f"subspace must be at most n_params={P}, got {p}")
        A = np.linalg.qr(rng.standard_normal((P, p)))[0]
        coords = A.T @ theta
    else:
        A = np.asarray(subspace, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != P or A.shape[1] < 1:
            raise ValueError(f"subspace must be an int or a (P={P}, p) matrix, got shape "
                             f"{A.shape}")  # fmt: skip
        if not np.all(np.isfinite(A)):
            raise ValueError("subspace contains non-finite values")
        coords = np.linalg.pinv(A) @ theta
    half = eps * (np.abs(coords) + 1.0)
    bounds = list(zip(-half, half))
    base = float(model.loss(theta, data, device=device))

    def lift(yv):
        return yv if A is None else A @ yv

    def negative(yv):
        value, g = model.grad(theta + lift(yv), data, device=device)
        return -value, -(g if A is None else A.T @ g)

    best, best_y, runs = -np.inf, None, []
    for k in range(n_starts):
        y0 = rng.uniform(-half, half)
        r = minimize(negative, y0, jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol})  # fmt: skip
        yk = np.clip(r.x, -half, half)
        runs.append(r)
        if -r.fun > best or best_y is None:
            best, best_y, best_k = -r.fun, yk, k
    z = lift(best_y)
    top = float(model.loss(theta + z, data, device=device))
    return BoxSharpness(
        eps=eps,
        sharpness=(top - base) / (1.0 + base) * 100.0,
        base_loss=base,
        max_loss=top,
        max_increase=top - base,
        z=z,
        y=None if A is None else best_y,
        half_widths=half,
        subspace_dim=None if A is None else int(A.shape[1]),
        converged=all(r.status == 0 for r in runs),
        status=np.array([r.status for r in runs], dtype=np.int64),
        message=[str(r.message) for r in runs],
        n_iterations=np.array([r.nit for r in runs], dtype=np.int64),
        n_evaluations=np.array([r.nfev for r in runs], dtype=np.int64),
        best_start=best_k,
        seed=seed,
    )


# ----------------------------------------------------------------------------- SAM / ASAM
def weight_mask(model: MLP) -> np.ndarray:
    """Boolean (P,) mask of the weight entries of theta (False for biases)."""
    mask = np.zeros(model.n_params, dtype=bool)
    for lay in model.layout:
        mask[lay.weight] = True
    return mask


def sam_epsilon(theta, g, rho: float, adaptive: bool, eta: float, mask) -> np.ndarray:
    """The SAM / ASAM ascent step from a gradient (no validation; used by ``fit``).

    SAM: ``ρ g / ||g||``. ASAM: ``ρ T² g / ||T g||`` with ``T = |w| + η`` on weights and 1 on
    biases. Zero when the (scaled) gradient is zero.

    Parameters
    ----------
    theta, g : (P,) arrays
        Parameters and the gradient there.
    rho : float
        Radius ρ.
    adaptive : bool
        ASAM instead of SAM.
    eta : float
        ASAM's η.
    mask : (P,) bool array
        True on weights (see :func:`weight_mask`).

    Returns
    -------
    (P,) array
    """
    if adaptive:
        t = np.where(mask, np.abs(theta) + eta, 1.0)
        tg = t * g
        norm = float(np.linalg.norm(tg))
        return np.zeros_like(g) if norm == 0 else (rho / norm) * (t * tg)
    norm = float(np.linalg.norm(g))
    return np.zeros_like(g) if norm == 0 else (rho / norm) * g


def sam_perturbation(
    model: MLP, theta, X, y=None, rho: float = 0.05, *, adaptive: bool = False,
    eta: float = 0.01, device: str = "cpu",
) -> np.ndarray:  # fmt: skip
    """SAM's worst-case perturbation ``ε*`` (P,) at θ.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    rho : float
        Radius ρ of the ball (‖ε*‖ = ρ for SAM; ‖T⁻¹ ε*‖ = ρ for ASAM).
    adaptive : bool
        ASAM's scaling ``T = |w| + η`` (weights only).
    eta : float
        ASAM's η.
    device : {"cpu", "cuda"}
        Where the gradient is evaluated.

    Returns
    -------
    (P,) array
    """
    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    rho = check_positive_float(rho, "rho")
    eta = check_positive_float(eta, "eta", allow_zero=True)
    g = model.grad(theta, data, device=device)[1]
    return sam_epsilon(theta, g, rho, adaptive, eta, weight_mask(model))


def sam_sharpness(
    model: MLP, theta, X, y=None, rho: float = 0.05, *, adaptive: bool = False,
    eta: float = 0.01, device: str = "cpu",
) -> float:  # fmt: skip
    """SAM sharpness ``L(θ + ε*) - L(θ)``.

    Parameters
    ----------
    model, theta, X, y, rho, adaptive, eta, device
        As in :func:`sam_perturbation` (``device``: where the gradient and the two losses
        are evaluated; the data are copied to the GPU once per call).

    Returns
    -------
    float
    """
    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    e = sam_perturbation(model, theta, data, rho=rho, adaptive=adaptive, eta=eta, device=device)
    return model.loss(theta + e, data, device=device) - model.loss(theta, data, device=device)


def sam_gradient(
    model: MLP, theta, X, y=None, rho: float = 0.05, *, adaptive: bool = False,
    eta: float = 0.01, device: str = "cpu",
) -> np.ndarray:  # fmt: skip
    """SAM's gradient ``∇L(θ + ε*)``, with ε* held fixed (Foret et al.'s approximation).

    Parameters
    ----------
    model, theta, X, y, rho, adaptive, eta, device
        As in :func:`sam_perturbation` (``device``: where the two gradients are evaluated;
        the data are copied to the GPU once per call).

    Returns
    -------
    (P,) array
    """
    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    e = sam_perturbation(model, theta, data, rho=rho, adaptive=adaptive, eta=eta, device=device)
    return model.grad(theta + e, data, device=device)[1]


# ----------------------------------------------------------------------------- comparison
COLUMNS = (
    "name", "loss", "accuracy", "grad_norm", "lambda_max", "trace", "trace_se",
    "eps_sharpness_max", "eps_sharpness_mean", "quadratic_prediction", "sam_sharpness",
)  # fmt: skip


@dataclass
class MinimaComparison:
    """Sharpness metrics of several solutions, one row (dict) per solution.

    Attributes
    ----------
    rows : list of dict
        Keys: name, loss, accuracy (None for MSE), grad_norm, lambda_max, trace, trace_se,
        eps_sharpness_max, eps_sharpness_mean, quadratic_prediction, sam_sharpness.
    settings : dict
        eps, rho, n_directions, trace_method, seed.
    """

    rows: list[dict]
    settings: dict

    def column(self, key: str) -> list:
        """The values of one column, in row order."""
        check_choice(key, "key", COLUMNS)
        return [r[key] for r in self.rows]

    def to_text(self) -> str:
        """A plain-text table."""

        def fmt(v):
            if v is None:
                return "-"
            if isinstance(v, str):
                return v
            return f"{v:.4g}"

        cells = [list(COLUMNS)] + [[fmt(r[c]) for c in COLUMNS] for r in self.rows]
        widths = [max(len(row[j]) for row in cells) for j in range(len(COLUMNS))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def compare_minima(
    model: MLP,
    thetas: dict,
    X,
    y=None,
    *,
    eps: float = 0.05,
    rho: float = 0.05,
    n_directions: int = 128,
    trace_method: str = "auto",
    trace_samples: int = 100,
    seed: int = 0,
    device: str = "cpu",
) -> MinimaComparison:
    """A table of sharpness metrics for several solutions of the same model and data.

    Warns (:class:`SharpnessWarning`) that these raw measures are not invariant under
    reparameterisations that leave the function unchanged (Dinh et al. 2017), so comparing
    them across solutions says little without a normalisation (e.g. ASAM's).

    Parameters
    ----------
    model : MLP
    thetas : dict of name -> (P,) array
        The solutions (e.g. ``{"small batch": θ1, "large batch": θ2}``).
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    eps : float
        Radius of the ε-sharpness.
    rho : float
        SAM radius.
    n_directions : int
        Random directions of the ε-sharpness.
    trace_method : {"auto", "exact", "hutchinson", "hutch++"}
        ``auto``: exact for P <= 500, Hutchinson otherwise.
    trace_samples : int
    seed : int
    device : {"cpu", "cuda"}
        Where losses, gradients, HVPs and the ε-probes run (the data are copied to the GPU
        once for the whole table). An exact trace (``trace_method="exact"``, or ``auto`` with
        P <= 500) is formed on the CPU whatever the device, and the accuracy column is
        computed on the CPU.

    Returns
    -------
    MinimaComparison
    """
    device, data, _ = _device.prepare(model, X, y, device=device)
    if not isinstance(thetas, dict) or not thetas:
        raise ValueError("thetas must be a non-empty dict mapping names to parameter vectors")
    trace_method = check_choice(trace_method, "trace_method", ("auto", "exact", "hutchinson",
                                                               "hutch++"))  # fmt: skip
    if trace_method == "auto":
        trace_method = "exact" if model.n_params <= 500 else "hutchinson"
    checked = {str(k): model.check_theta(v, f"thetas[{k!r}]") for k, v in thetas.items()}
    warnings.warn(
        "raw sharpness (λmax, trace, ε- and SAM sharpness) is not reparameterization-invariant "
        "(Dinh et al. 2017): equivalent networks can have any sharpness; compare with care",
        SharpnessWarning,
        stacklevel=2,
    )
    rows = []
    for name, theta in checked.items():
        lam = _lambda_max(model, theta, data, seed, device)
        es = epsilon_sharpness(model, theta, data, eps=eps, n_directions=n_directions, seed=seed,
                               lambda_max=lam, device=device)  # fmt: skip
        tr = curvature.hessian_trace(model, theta, data, method=trace_method,
                                     n_samples=trace_samples, seed=seed, device=device)  # fmt: skip
        rows.append({
            "name": name,
            "loss": es.base_loss,
            "accuracy": model.accuracy(theta, data) if model.is_classifier else None,
            "grad_norm": es.grad_norm,
            "lambda_max": lam,
            "trace": tr.estimate,
            "trace_se": tr.std_error,
            "eps_sharpness_max": es.max_increase,
            "eps_sharpness_mean": es.mean_increase,
            "quadratic_prediction": es.quadratic_prediction,
            "sam_sharpness": sam_sharpness(model, theta, data, rho=rho, device=device),
        })  # fmt: skip
    settings = {"eps": eps, "rho": rho, "n_directions": n_directions,
                "trace_method": trace_method, "seed": seed}  # fmt: skip
    return MinimaComparison(rows=rows, settings=settings)
