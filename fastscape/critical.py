"""Critical points: classify a point from its Hessian spectrum, and escape saddles.

The second-order test: at a critical point (∇L = 0) a positive definite Hessian means a strict
local minimum, a negative definite one a strict local maximum, an indefinite one a saddle (of
index = number of negative eigenvalues, the Morse index). When some eigenvalues are (near)
zero and the others share a sign, the test is inconclusive: ``"degenerate"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _device, curvature, distributed
from ._validation import as_float_array, check_choice, check_positive_float, check_positive_int
from .models import MLP

__all__ = [
    "CriticalPointResult",
    "EscapeResult",
    "NotCriticalError",
    "classify",
    "classify_ends",
    "classify_point",
    "escape_in_plane",
    "escape_saddle",
]

KINDS = ("local_minimum", "local_maximum", "saddle", "degenerate")


class NotCriticalError(ValueError):
    """Raised when a point asked to be classified is not critical (its gradient is too large)."""


@dataclass
class CriticalPointResult:
    """Classification of a point by the eigenvalues of its Hessian.

    Attributes
    ----------
    kind : {"local_minimum", "local_maximum", "saddle", "degenerate"}
    n_positive, n_negative, n_zero : int
        Eigenvalues above ``tol``, below ``-tol``, and within ``tol`` of 0 (among the computed
        ones when ``complete`` is False).
    saddle_index : int or None
        Number of negative eigenvalues (below ``-tol``: the Morse index); 0 at a minimum.
        None when it is not known exactly (``saddle_index_exact`` False): then only
        ``saddle_index_lower_bound`` is known.
    saddle_index_lower_bound : int
        A lower bound on the number of negative eigenvalues: for ``lanczos`` the number of
        values of the smallest-end solve below ``-tol``. It holds even when that solve did not
        converge: its values are Ritz values of one orthonormal set, and they interlace the
        spectrum (Cauchy): the i-th smallest Ritz value is at least the i-th smallest
        eigenvalue. Equal to ``saddle_index`` when that is exact.
    saddle_index_exact : bool
        Whether all negative eigenvalues were found: always for ``exact``; for ``lanczos`` when
        the smallest-end solve converged (ranks verified) and found a value ``>= -tol``, or
        when the two ends together covered the whole spectrum.
    n_negative_estimate : float or None
        ``lanczos`` with ``estimate_negatives=True``: a stochastic Lanczos quadrature (SLQ)
        estimate of the number of eigenvalues below ``-tol``, ``P · mean_r Σ_j w_rj [θ_rj <
        -tol]`` over the runs r (nodes θ, weights w), unbiased but for the quadrature error.
        None otherwise (``exact`` knows the count: ``saddle_index``).
    n_negative_std_error : float or None
        Its standard error over the runs (the spread of the random start vectors).
    n_negative_quadrature_error : float or None
        A bound on the Gauss quadrature's error in the estimate (Chebyshev-Markov-Stieltjes
        inequalities: the distribution function of each run's measure at ``-tol`` lies between
        the quadrature's sum minus the weight of the node just below and plus the weight of
        the node just above; 0 for a run whose Krylov space became invariant, whose nodes are
        eigenvalues), averaged over the runs and times P. The count lies within
        ``n_negative_quadrature_error`` of the expected estimate; the estimate scatters around
        that by ``n_negative_std_error``.
    condition_number : float or None
        ``max|λ| / min|λ|`` over all eigenvalues: ``inf`` as soon as one is zero (|λ| <= tol),
        as for a singular matrix. Using |λ| makes it meaningful at saddles and maxima too.
        None unless the whole spectrum is known (``complete``): min|λ| may lie anywhere in the
        spectrum, not at its ends.
    condition_number_nonzero : float or None
        The same ratio over the non-zero eigenvalues only (the conditioning of the Hessian on
        its range); ``nan`` when all are zero; None unless ``complete``.
    escape_direction : (n,) array or None
        Unit eigenvector of the most negative eigenvalue (None when no eigenvalue is below
        ``-tol`` or when only eigenvalues were given); sign fixed so its largest entry is
        positive (-v is an escape direction as well).
    min, max : float
        Extreme computed eigenvalues.
    mean, median, std, trace, fraction_negative : float or None
        Statistics of the spectrum (None when ``complete`` is False).
    det_sign : int or None
        Sign of det H = product of the signs of the eigenvalues (0 if one is zero), computed
        without forming the product, so it cannot overflow. None when incomplete.
    log_abs_det : float or None
        ``sum log|λ|`` (``-inf`` if one is zero), as ``numpy.linalg.slogdet``.
    eigenvalues : (m,) array
        The eigenvalues used, ascending.
    tol : float
        Zero threshold used.
    complete : bool
        True when all eigenvalues are known: exact, or Lanczos whose two converged ends cover
        the whole spectrum (``2k >= P``); False otherwise.
    grad_norm : float or None
        ‖∇L‖ at the point (:func:`classify_point` only).
    loss : float or None
    method : str
    converged : bool
        Whether the eigenvalues used are converged: always True for ``exact``; for
        ``lanczos``, whether both ends met the solver's tolerance within ``max_hvps``. A
        classification from unconverged eigenvalues is an estimate (``message`` says so).
    n_hvps : int
        HVPs spent by the eigensolvers (0 for ``exact``).
    message : str
        The eigensolvers' messages (empty for ``exact``).
    """

    kind: str
    n_positive: int
    n_negative: int
    n_zero: int
    saddle_index: int | None
    condition_number: float | None
    condition_number_nonzero: float | None
    escape_direction: np.ndarray | None
    min: float
    max: float
    mean: float | None
    median: float | None
    std: float | None
    trace: float | None
    fraction_negative: float | None
    det_sign: int | None
    log_abs_det: float | None
    eigenvalues: np.ndarray
    tol: float
    complete: bool = True
    grad_norm: float | None = None
    loss: float | None = None
    method: str = "exact"
    extra: dict = field(default_factory=dict)
    converged: bool = True
    n_hvps: int = 0
    message: str = ""
    saddle_index_lower_bound: int = 0
    saddle_index_exact: bool = True
    n_negative_estimate: float | None = None
    n_negative_std_error: float | None = None
    n_negative_quadrature_error: float | None = None

    def spectral_summary(self) -> dict:
        """The spectral statistics as a dict (min, max, mean, median, std, trace, ...)."""
        keys = ("min", "max", "mean", "median", "std", "trace", "fraction_negative", "det_sign",
                "log_abs_det", "condition_number", "condition_number_nonzero")  # fmt: skip
        return {k: getattr(self, k) for k in keys}


def _default_tol(vals: np.ndarray) -> float:
    """sqrt(machine epsilon) relative to the largest |λ| (absolute when all are tiny)."""
    return float(np.sqrt(np.finfo(np.float64).eps) * max(np.abs(vals).max(), 1.0))


def _kind(n_neg: int, n_pos: int, n_zero: int) -> str:
    if n_neg and n_pos:
        return "saddle"
    if n_zero:
        return "degenerate"
    return "local_minimum" if n_pos else "local_maximum"


def _check_hessian(H: np.ndarray) -> np.ndarray:
    if H.shape[0] != H.shape[1]:
        raise ValueError(f"hessian must be square, got shape {H.shape}")
    scale = max(float(np.abs(H).max()), 1e-300)
    asym = float(np.abs(H - H.T).max())
    if asym > 1e-8 * scale:
        raise ValueError(
            f"hessian is not symmetric: max |H - H.T| = {asym:.3g} (relative {asym / scale:.3g})"
        )
    return 0.5 * (H + H.T)


def _result(
    vals, tol, escape, complete, method, index_exact=None, lower=None
) -> CriticalPointResult:
    vals = np.sort(vals)
    a = np.abs(vals)
    neg, pos = vals < -tol, vals > tol
    zero = ~(neg | pos)
    n_neg, n_pos, n_zero = int(neg.sum()), int(pos.sum()), int(zero.sum())
    full = complete
    index_exact = full if index_exact is None else (full or index_exact)
    cond = cond_nz = None
    if full:
        cond = float(a.max() / a.min()) if n_zero == 0 else float("inf")
        nz = a[~zero]
        cond_nz = float(nz.max() / nz.min()) if nz.size else float("nan")
    with np.errstate(divide="ignore"):
        logdet = float(np.log(a).sum()) if full else None
    return CriticalPointResult(
        kind=_kind(n_neg, n_pos, n_zero),
        n_positive=n_pos,
        n_negative=n_neg,
        n_zero=n_zero,
        saddle_index=(n_neg if full else lower) if index_exact else None,
        saddle_index_lower_bound=n_neg if full or lower is None else lower,
        saddle_index_exact=bool(index_exact),
        condition_number=cond,
        condition_number_nonzero=cond_nz,
        escape_direction=escape if n_neg else None,
        min=float(vals[0]),
        max=float(vals[-1]),
        mean=float(vals.mean()) if full else None,
        median=float(np.median(vals)) if full else None,
        std=float(a.max() * (vals / a.max()).std())
        if full and a.max() > 0
        else (0.0 if full else None),
        trace=float(a.max() * (vals / a.max()).sum())
        if full and a.max() > 0
        else (0.0 if full else None),
        fraction_negative=n_neg / vals.size if full else None,
        det_sign=(0 if n_zero else (-1) ** n_neg) if full else None,
        log_abs_det=logdet,
        eigenvalues=vals,
        tol=tol,
        complete=complete,
        method=method,
    )


def _slq_negative_count(dens, n: int, t: float, steps: int) -> tuple[float, float, float]:
    """(estimate, standard error, quadrature error bound) of #{λ < t} from SLQ runs of
    ``steps`` Lanczos steps each (a run with fewer nodes found an invariant subspace: its
    quadrature is exact)."""
    est, err = [], []
    for nodes, w in zip(dens.nodes, dens.weights):
        used = ~np.isnan(nodes)
        th, ww = nodes[used], w[used]  # ascending nodes of one run
        if th.size < steps:  # the Krylov space is invariant: the nodes are eigenvalues
            est.append(float(ww[th < t].sum()))
            err.append(0.0)
            continue
        below = th < t
        f = float(ww[below].sum())
        # Chebyshev-Markov-Stieltjes: the true value lies within the weight of the node just
        # below t or the one just above it
        w_lo = float(ww[below][-1]) if below.any() else 0.0
        w_hi = float(ww[~below][0]) if (~below).any() else 0.0
        est.append(f)
        err.append(max(w_lo, w_hi))
    est_a = np.asarray(est)
    se = float(est_a.std(ddof=1) / np.sqrt(est_a.size)) if est_a.size > 1 else float("inf")
    return float(n * est_a.mean()), n * se, float(n * np.mean(err))


def classify(hessian_or_eigenvalues, tol: float | None = None) -> CriticalPointResult:
    """Classify a critical point from its Hessian (n, n) or its eigenvalues (n,).

    Parameters
    ----------
    hessian_or_eigenvalues : (n, n) or (n,) array
        A symmetric Hessian (checked: square, symmetric to a relative 1e-8, finite), or its
        eigenvalues. With eigenvalues only, no escape direction can be given.
    tol : float, optional
        Eigenvalues with ``|λ| <= tol`` count as zero. Default ``sqrt(eps) * max(1, max|λ|)``
        (about 1.5e-8 relative).

    Returns
    -------
    CriticalPointResult
        The point is assumed critical; :func:`classify_point` checks the gradient.
    """
    A = as_float_array(hessian_or_eigenvalues, "hessian_or_eigenvalues", (1, 2))
    escape = None
    if A.ndim == 2:
        vals, vecs = np.linalg.eigh(_check_hessian(A))
        escape = curvature.fix_signs(vecs[:, 0])
    else:
        vals = A
    tol = _default_tol(vals) if tol is None else check_positive_float(tol, "tol", allow_zero=True)
    return _result(vals, tol, escape, True, "exact")


def classify_ends(lo, hi, n: int, tol: float | None = None) -> CriticalPointResult:
    """Classify from the two ends of the spectrum, claiming only what they establish.

    Parameters
    ----------
    lo, hi : EigenResult
        The k smallest (``which="SA"``) and k largest (``which="LA"``) eigenpairs of the same
        (n, n) Hessian, from :func:`fastscape.curvature.top_eigen`.
    n : int
        Order of the Hessian (the model's P).
    tol : float, optional
        Eigenvalues with ``|λ| <= tol`` count as zero (default: relative to the largest).

    Returns
    -------
    CriticalPointResult
        ``saddle_index`` only when every negative eigenvalue was found (the verified smallest
        end reached a value ``>= -tol``), else None with ``saddle_index_lower_bound``; the
        whole-spectrum statistics (condition number, mean, ...) only when the two ends cover
        the spectrum (``2k >= n``, both converged). ``converged``, ``n_hvps`` and ``message``
        come from the two solves; the escape direction is the smallest end's first vector.
    """
    k = lo.eigenvalues.size
    if 2 * k >= n:  # the two ends overlap: keep distinct eigenvalues only
        vals = np.concatenate([lo.eigenvalues, hi.eigenvalues[: n - k]])
    else:
        vals = np.concatenate([lo.eigenvalues, hi.eigenvalues])
    tol = _default_tol(vals) if tol is None else check_positive_float(tol, "tol", True)
    converged = bool(lo.converged.all() and hi.converged.all())
    # all negative eigenvalues found: the smallest end, established, reached a value >= -tol
    index_exact = bool(lo.converged.all() and lo.eigenvalues.max() >= -tol)
    # Ritz values of one solve interlace the spectrum, those of two solves may repeat
    # one eigenvalue: the bound counts the smallest end's values only
    lower = int((lo.eigenvalues < -tol).sum())
    res = _result(vals, tol, lo.eigenvectors[0].copy(), 2 * k >= n and converged,
                  "lanczos", index_exact, lower)  # fmt: skip
    res.converged = converged
    res.n_hvps = lo.n_hvps + hi.n_hvps
    res.message = f"smallest end: {lo.message}; largest end: {hi.message}"
    return res


def classify_point(
    model: MLP,
    theta,
    X,
    y=None,
    *,
    grad_tol: float = 1e-5,
    tol: float | None = None,
    method: str = "auto",
    k: int = 6,
    max_params: int = 2000,
    seed: int = 0,
    device: str = "cpu",
    eig_tol: float | None = None,
    max_hvps: int | None = None,
    progress: bool = False,
    estimate_negatives: bool = False,
    slq_runs: int = 10,
    slq_iter: int = 80,
    client=None,
) -> CriticalPointResult:
    """Classify ``theta`` for a model's loss, refusing points that are not critical.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    grad_tol : float
        The point counts as critical when ``‖∇L(θ)‖ <= grad_tol``; otherwise
        :class:`NotCriticalError` (a ValueError) is raised, quoting the gradient norm.
    tol : float, optional
        Zero threshold of the eigenvalues (see :func:`classify`).
    method : {"auto", "exact", "lanczos"}
        ``exact``: all eigenvalues of the exact Hessian. ``lanczos``: the k smallest and k
        largest eigenvalues by Lanczos on exact HVPs (both ends of the spectrum decide the
        kind; counts and the saddle index are then among these 2k eigenvalues, and the
        whole-spectrum statistics are None). ``auto``: exact when P <= ``max_params``.
    k : int
        Eigenvalues per end for ``lanczos``.
    max_params : int
        Threshold of ``auto`` (and the size limit of ``exact``).
    seed : int
    device : {"cpu", "cuda"}
        Where the gradient and the HVPs of ``lanczos`` run (the data are copied to the GPU
        once per call). ``exact`` (and ``auto`` for P <= ``max_params``) forms the Hessian on
        the CPU whatever the device, so the classification does not depend on the device.
    eig_tol : float, optional
        Relative tolerance of the Lanczos solves (default ``curvature.DEFAULT_TOL``, 1e-6).
    max_hvps : int, optional
        HVP budget of each Lanczos solve (one per end; default ``min(10 P, 5000)``).
    progress : bool
        Show a tqdm bar of the HVPs of each Lanczos solve.
    estimate_negatives : bool
        ``lanczos`` only: also estimate the number of negative eigenvalues by stochastic
        Lanczos quadrature (``n_negative_estimate`` with its standard error and quadrature
        error bound), for when the saddle index is only bounded. Costs ``slq_runs * slq_iter``
        more HVPs.
    slq_runs, slq_iter : int
        Runs and Lanczos steps per run of that estimate (:func:`fastscape.curvature.slq`).
    client : dask.distributed.Client, optional
        Run the gradient and the HVPs on this Dask cluster with the samples sharded across
        its workers (``X`` and ``y`` may be dask arrays; :func:`fastscape.distributed.shard`);
        ``auto`` then means ``lanczos`` (the exact Hessian is formed on one machine only).

    Returns
    -------
    CriticalPointResult
        With ``grad_norm`` and ``loss`` filled in, and ``converged`` / ``n_hvps`` /
        ``message`` from the eigensolvers.
    """
    if client is not None:  # the samples sharded on the workers
        X, y = distributed.shard(client, model, X, y), None
    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    method = check_choice(method, "method", ("auto", "exact", "lanczos"))
    grad_tol = check_positive_float(grad_tol, "grad_tol", allow_zero=True)
    k = check_positive_int(k, "k")
    if not isinstance(estimate_negatives, bool):
        raise TypeError(f"estimate_negatives must be True or False, got {estimate_negatives!r}")
    slq_runs = check_positive_int(slq_runs, "slq_runs", minimum=2)
    slq_iter = check_positive_int(slq_iter, "slq_iter")
    loss, g = model.grad(theta, data, device=device)
    gnorm = float(np.linalg.norm(g))
    if gnorm > grad_tol:
        raise NotCriticalError(
            f"theta is not a critical point: ‖∇L‖ = {gnorm:.3g} > grad_tol = {grad_tol:.3g}; "
            "train further (e.g. method='newton') or pass a larger grad_tol"
        )
    P = model.n_params
    if method == "auto":
        method = "exact" if P <= max_params and not _device.is_sharded(data) else "lanczos"
    if method == "exact":
        res = classify(model.hessian(theta, data, max_params=max(max_params, P)), tol)
    else:
        k = min(k, P - 1)
        kw = dict(k=k, method="lanczos", seed=seed, device=device, tol=eig_tol,
                  max_hvps=max_hvps, progress=progress)  # fmt: skip
        lo = curvature.top_eigen(model, theta, data, which="SA", **kw)
        hi = curvature.top_eigen(model, theta, data, which="LA", **kw)
        res = classify_ends(lo, hi, P, tol)
        tol = res.tol
        if estimate_negatives:
            H = curvature.HessianOperator(model, theta, data, device=device)
            dens = curvature.slq(H, n_runs=slq_runs, n_iter=slq_iter, seed=seed)
            est, se, quad = _slq_negative_count(dens, P, -tol, min(slq_iter, P))
            res.n_negative_estimate = est
            res.n_negative_std_error = se
            res.n_negative_quadrature_error = quad
            res.n_hvps += dens.n_hvps
            res.message += (f"; SLQ: {est:.1f} ± {se:.1f} negative eigenvalues (quadrature "
                            f"error <= {quad:.1f}), {dens.n_hvps} HVPs")  # fmt: skip
    res.grad_norm = gnorm
    res.loss = float(loss)
    return res


@dataclass
class EscapeResult:
    """A verified step out of a saddle along negative curvature.

    Attributes
    ----------
    theta : (P,) array
        The new point ``theta0 + step * direction``.
    direction : (P,) array
        Unit escape direction (eigenvector of the most negative eigenvalue, oriented downhill:
        ``∇L · direction <= 0``).
    eigenvalue : float
        Its (negative) eigenvalue.
    step : float
        Step length taken.
    loss_before, loss_after : float
    predicted_change : float
        Second-order prediction ``step ∇L·d + ½ step² λ`` (< 0).
    halvings : int
        Step halvings needed before the loss decreased.
    """

    theta: np.ndarray
    direction: np.ndarray
    eigenvalue: float
    step: float
    loss_before: float
    loss_after: float
    predicted_change: float
    halvings: int

    @property
    def decrease(self) -> float:
        """loss_before - loss_after (> 0)."""
        return self.loss_before - self.loss_after


def escape_saddle(
    model: MLP,
    theta,
    X,
    y=None,
    *,
    step: float = 1.0,
    method: str = "auto",
    max_halvings: int = 40,
    max_params: int = 2000,
    seed: int = 0,
    device: str = "cpu",
) -> EscapeResult:
    """Step from ``theta`` along the direction of most negative curvature, verifying descent.

    The direction v is the eigenvector of the smallest Hessian eigenvalue λ < 0 (exact or
    Lanczos ``which="SA"``), oriented so that ``∇L·v <= 0``; then along θ + t v the loss changes
    by ``t ∇L·v + ½ t² λ + O(t³) < 0``. Starting at ``t = step`` the step is halved until the
    loss actually decreases.

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    step : float
        First step length tried (in parameter space).
    method : {"auto", "exact", "lanczos"}
        How the smallest eigenpair is found (``auto``: exact when P <= ``max_params``).
    max_halvings : int
    max_params : int
    seed : int
    device : {"cpu", "cuda"}
        Where the losses, the gradient and the HVPs of ``lanczos`` run (the data are copied to
        the GPU once per call); ``exact`` forms the Hessian on the CPU whatever the device.

    Returns
    -------
    EscapeResult

    Raises
    ------
    ValueError
        When the Hessian has no negative eigenvalue (no escape direction).
    RuntimeError
        When no step length in ``step * 2**-j``, ``j <= max_halvings``, lowers the loss.
    """
    device, data, th = _device.prepare(model, X, y, device=device, theta=theta)
    theta = th["theta"]
    method = check_choice(method, "method", ("auto", "exact", "lanczos"))
    step = check_positive_float(step, "step")
    max_halvings = check_positive_int(max_halvings, "max_halvings", minimum=0)
    if method == "auto":
        method = "exact" if model.n_params <= max_params else "lanczos"
    eig = curvature.top_eigen(
        model, theta, data, k=1, method=method, which="SA", seed=seed,
        max_params=max(max_params, model.n_params), device=device,
    )  # fmt: skip
    lam = float(eig.eigenvalues[0])
    scale = max(float(np.abs(eig.eigenvalues).max()), 1.0)
    if lam >= -_default_tol(np.array([scale])):
        raise ValueError(
            f"no negative curvature at theta (smallest Hessian eigenvalue {lam:.3g}): "
            "not a saddle, nothing to escape along"
        )
    loss0, g = model.grad(theta, data, device=device)
    v = eig.eigenvectors[0]
    slope = float(g @ v)
    if slope > 0:
        v, slope = -v, -slope
    t = step
    for j in range(max_halvings + 1):
        new = theta + t * v
        loss1 = model.loss(new, data, device=device)
        if loss1 < loss0:
            return EscapeResult(
                theta=new,
                direction=v,
                eigenvalue=lam,
                step=t,
                loss_before=float(loss0),
                loss_after=float(loss1),
                predicted_change=t * slope + 0.5 * t * t * lam,
                halvings=j,
            )
        t *= 0.5
    raise RuntimeError(
        f"no step along the escape direction lowered the loss (tried {step:g} down to "
        f"{step * 2.0**-max_halvings:.3g})"
    )


def escape_in_plane(direction, basis) -> np.ndarray:
    """Coordinates (a, b) of a direction in the plane of two directions, for plotting.

    Least squares ``direction ≈ a d1 + b d2``: the projection of the escape direction onto the
    plane of a 2D surface with directions ``basis = (d1, d2)``.

    Parameters
    ----------
    direction : (P,) array
    basis : (2, P) array

    Returns
    -------
    (2,) array
    """
    B = as_float_array(basis, "basis", 2)
    if B.shape[0] != 2:
        raise ValueError(f"basis must have 2 rows (d1, d2), got shape {B.shape}")
    d = as_float_array(direction, "direction", 1)
    if d.shape[0] != B.shape[1]:
        raise ValueError(f"direction has length {d.shape[0]}, basis rows have {B.shape[1]}")
    return np.linalg.lstsq(B.T, d, rcond=None)[0]
