"""Paths between solutions: linear, quadratic Bezier, polygonal chains; barriers; mode connectivity.

Each path is a coefficient matrix over a small basis handed to the span engine
(:func:`fastscape.landscape.evaluate`):

- linear: basis (θa, θb), coefficients (1 − t, t);
- quadratic Bézier: basis (θa, w, θb), Bernstein weights ((1 − t)², 2t(1 − t), t²);
- polygonal chain through Q points: basis (θ_0 .. θ_{Q-1}), hat functions of t on the knots
  t_i = i / (Q − 1).

:func:`align` (from :mod:`fastscape.alignment`) permutes the hidden units of θb to match θa
before the paths are measured (Git Re-Basin).

:func:`fit_bezier` trains the bend w as in Garipov et al. 2018 ("Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs"): endpoints fixed, at every step t ~ U(0, 1) and a
step of Adam (or SGD) on L(φ_w(t)), whose gradient in w is 2t(1 − t) ∇L(φ_w(t)) — an unbiased
estimate of the gradient of the expected loss along the curve, E_t L(φ_w(t)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _device
from ._validation import (
    as_float_array,
    as_vector,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from .alignment import Alignment, align, permute
from .landscape import as_target, evaluate
from .models import MLP

DEFAULT_PATH_POINTS = 51
#: Default absolute tolerance (loss units) of :func:`mode_connectivity`'s flags.
DEFAULT_BARRIER_ATOL = 1e-3


@dataclass
class PathProfile:
    """Loss along a path φ(t), t in [0, 1].

    Attributes
    ----------
    ts : (m,) array
        Path parameters.
    loss : (m,) array
        ``loss[i]`` at ``φ(ts[i])``.
    accuracy : (m,) array or None
    endpoint_loss : (2,) array
        Loss at t = 0 and t = 1 (evaluated even when ts does not contain them).
    kind : str
        ``"linear"``, ``"bezier"`` or ``"polychain"``.
    settings : dict
    """

    ts: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray | None
    endpoint_loss: np.ndarray
    kind: str
    settings: dict = field(default_factory=dict)

    @property
    def barrier(self) -> float:
        """See :func:`barrier`."""
        return barrier(self)


def barrier(path: PathProfile) -> float:
    """Height of the loss barrier on a path: max loss on it minus the larger endpoint loss.

    ``max(max_i loss[i], L(φ(0)), L(φ(1))) - max(L(φ(0)), L(φ(1)))``: zero when the loss never
    rises above the worse endpoint.

    Parameters
    ----------
    path : PathProfile

    Returns
    -------
    float, >= 0
    """
    if not isinstance(path, PathProfile):
        raise TypeError(f"path must be a PathProfile, got {type(path).__name__}")
    top = max(float(np.max(path.loss)), float(np.max(path.endpoint_loss)))
    return top - float(np.max(path.endpoint_loss))


def _ts(ts) -> np.ndarray:
    if ts is None:
        return np.linspace(0.0, 1.0, DEFAULT_PATH_POINTS)
    if isinstance(ts, (int, np.integer)) and not isinstance(ts, bool):
        return np.linspace(0.0, 1.0, check_positive_int(ts, "ts", minimum=2))
    t = as_float_array(ts, "ts", 1)
    if t.min() < 0.0 or t.max() > 1.0:
        raise ValueError(f"ts must lie in [0, 1], got values in [{t.min()}, {t.max()}]")
    return t


def bernstein(ts) -> np.ndarray:
    """Quadratic Bernstein weights ((1 − t)², 2t(1 − t), t²), shape (m, 3)."""
    t = _ts(ts)
    return np.column_stack([(1 - t) ** 2, 2 * t * (1 - t), t**2])


def hat_weights(ts, n_points: int) -> np.ndarray:
    """Piecewise-linear interpolation weights on ``n_points`` equally spaced knots, (m, Q)."""
    t = _ts(ts)
    Q = check_positive_int(n_points, "n_points", minimum=2)
    s = t * (Q - 1)
    i = np.minimum(np.floor(s).astype(np.int64), Q - 2)
    f = s - i
    W = np.zeros((t.size, Q))
    W[np.arange(t.size), i] = 1.0 - f
    W[np.arange(t.size), i + 1] += f
    return W


def _profile(model, basis, W, ends, X, y, kind, ts, progress, engine) -> PathProfile:
    target = as_target(model, X, y)
    data = target.data if target.kind == "mlp" else None
    C = np.vstack([W, ends])
    res = evaluate(target.fn, basis, C, data, progress=progress, **engine)
    m = W.shape[0]
    acc = None if res.accuracy is None else res.accuracy[:m]
    settings = {"n_points": int(basis.shape[0])}
    return PathProfile(ts, res.loss[:m], acc, res.loss[m:], kind, settings)


def _point(target, value, name):
    if target.P is None:
        return as_float_array(value, name, 1)
    return as_vector(value, name, target.P)


def linear_path(
    model, theta_a, theta_b, X=None, y=None, ts=None, *, progress=None, **engine
) -> PathProfile:
    """Loss on the segment φ(t) = (1 − t) θa + t θb.

    Parameters
    ----------
    model : MLP or function f(theta) -> float (then X, y are None)
    theta_a, theta_b : (P,) arrays
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    ts : (m,) array in [0, 1], int or None
        Default 51 points on [0, 1]; an int n means n points.
    progress : bool or None
    **engine
        ``tile_size``, ``checkpoint_dir``, ``on_tile``, ``n_threads``, ``device``, ``dtype``,
        ``client`` of :func:`fastscape.landscape.evaluate` (``client``: the points on a Dask
        cluster).

    Returns
    -------
    PathProfile
    """
    target = as_target(model, X, y)
    a = _point(target, theta_a, "theta_a")
    b = as_vector(theta_b, "theta_b", a.shape[0])
    t = _ts(ts)
    W = np.column_stack([1 - t, t])
    return _profile(model, np.stack([a, b]), W, np.eye(2), X, y, "linear", t, progress, engine)


def bezier_path(
    model, theta_a, bend, theta_b, X=None, y=None, ts=None, *, progress=None, **engine
) -> PathProfile:
    """Loss on the quadratic Bézier curve φ(t) = (1 − t)² θa + 2t(1 − t) w + t² θb.

    The curve passes through θa (t = 0) and θb (t = 1); w (``bend``) pulls it.

    Parameters
    ----------
    model : MLP or function f(theta) -> float
    theta_a, bend, theta_b : (P,) arrays
    X, y, ts, progress, **engine
        As in :func:`linear_path`.

    Returns
    -------
    PathProfile
    """
    target = as_target(model, X, y)
    a = _point(target, theta_a, "theta_a")
    w = as_vector(bend, "bend", a.shape[0])
    b = as_vector(theta_b, "theta_b", a.shape[0])
    t = _ts(ts)
    ends = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return _profile(
        model, np.stack([a, w, b]), bernstein(t), ends, X, y, "bezier", t, progress, engine
    )


def polychain_path(model, points, X=None, y=None, ts=None, *, progress=None, **engine):
    """Loss on the polygonal chain through Q points, equally spaced in t.

    Parameters
    ----------
    model : MLP or function f(theta) -> float
    points : (Q, P) array, Q >= 2
        θ_0 (t = 0) .. θ_{Q-1} (t = 1).
    X, y, ts, progress, **engine
        As in :func:`linear_path`.

    Returns
    -------
    PathProfile
    """
    target = as_target(model, X, y)
    pts = as_float_array(points, "points", 2)
    if pts.shape[0] < 2:
        raise ValueError(f"points needs at least 2 rows, got {pts.shape[0]}")
    if target.P is not None and pts.shape[1] != target.P:
        raise ValueError(f"points rows have length {pts.shape[1]}, expected {target.P}")
    Q = pts.shape[0]
    t = _ts(ts)
    ends = np.zeros((2, Q))
    ends[0, 0] = ends[1, -1] = 1.0
    return _profile(model, pts, hat_weights(t, Q), ends, X, y, "polychain", t, progress, engine)


@dataclass
class BezierFit:
    """Result of :func:`fit_bezier`.

    Attributes
    ----------
    bend : (P,) array
        The trained bend point w.
    loss_history : (steps,) array
        L(φ_w(t)) at the t sampled at each step (a noisy estimate of the expected loss).
    settings : dict
    """

    bend: np.ndarray
    loss_history: np.ndarray
    settings: dict = field(default_factory=dict)


def fit_bezier(
    model: MLP,
    theta_a,
    theta_b,
    X,
    y=None,
    *,
    bend0=None,
    steps: int = 200,
    lr: float = 0.01,
    method: str = "adam",
    ts_per_step: int = 1,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> BezierFit:
    """Train the bend of a quadratic Bézier curve between two solutions (Garipov et al. 2018).

    Minimizes E_{t ~ U(0,1)} L(φ_w(t)) over w with θa and θb fixed. Each step draws
    ``ts_per_step`` values of t (and a minibatch of ``batch_size`` samples when given) and
    moves w along the average of 2t(1 − t) ∇L(φ_w(t)) (gradients from the compiled kernels).

    Parameters
    ----------
    model : MLP
    theta_a, theta_b : (P,) arrays
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    bend0 : (P,) array, optional
        Initial bend; default the midpoint (θa + θb) / 2 (the straight segment).
    steps : int
    lr : float
    method : {"adam", "sgd"}
    ts_per_step : int
    batch_size : int, optional
    seed : int
        Seed of the t (and minibatch) draws.
    device : {"cpu", "cuda"}
        Where the gradients run; with "cuda" the data is copied to the GPU once (a minibatch
        per step when ``batch_size`` is given).

    Returns
    -------
    BezierFit
    """
    device, data, th = _device.prepare(
        model, X, y, device=device, upload=batch_size is None,
        theta_a=theta_a, theta_b=theta_b, bend0=bend0,
    )  # fmt: skip
    a, b = th["theta_a"], th["theta_b"]
    w = 0.5 * (a + b) if bend0 is None else th["bend0"].copy()
    steps = check_positive_int(steps, "steps")
    lr = check_positive_float(lr, "lr")
    check_choice(method, "method", ("adam", "sgd"))
    ts_per_step = check_positive_int(ts_per_step, "ts_per_step")
    n = data.X.shape[0]
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    rng = np.random.default_rng(seed)
    m1 = np.zeros_like(w)
    m2 = np.zeros_like(w)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    history = np.empty(steps)
    for step in range(1, steps + 1):
        if batch_size is not None and batch_size < n:
            rows = rng.choice(n, batch_size, replace=False)
            batch = type(data)(data.X[rows], data.Y[rows])
        else:
            batch = data
        g = np.zeros_like(w)
        value = 0.0
        for t in rng.uniform(0.0, 1.0, ts_per_step):
            phi = (1 - t) ** 2 * a + 2 * t * (1 - t) * w + t**2 * b
            lv, gv = model.grad(phi, batch, device=device)
            g += 2 * t * (1 - t) * gv
            value += lv
        g /= ts_per_step
        history[step - 1] = value / ts_per_step
        if method == "sgd":
            w -= lr * g
        else:
            m1 = beta1 * m1 + (1 - beta1) * g
            m2 = beta2 * m2 + (1 - beta2) * g * g
            w -= lr * (m1 / (1 - beta1**step)) / (np.sqrt(m2 / (1 - beta2**step)) + eps)
    settings = {"steps": steps, "lr": lr, "method": method, "ts_per_step": ts_per_step}
    settings.update({"batch_size": batch_size, "seed": seed, "device": device})
    return BezierFit(w, history, settings)


@dataclass
class ModeConnectivity:
    """Result of :func:`mode_connectivity`.

    Attributes
    ----------
    linear : PathProfile
    curve : PathProfile or None
        The trained Bézier curve (None with ``fit=False``).
    linear_barrier, curve_barrier : float
        Barriers above the worse endpoint (:func:`barrier`, Garipov et al.'s convention);
        ``curve_barrier`` is nan without a curve.
    linear_interpolated_barrier, curve_interpolated_barrier : float
        Frankle et al. 2020's barrier above the interpolated endpoint losses
        (:func:`interpolated_barrier`); ``curve_interpolated_barrier`` is nan without a curve.
    linear_connected, curve_connected : bool
        The largest loss on the path is at most ``max(threshold × the larger endpoint loss,
        the larger endpoint loss + atol)``: the barrier above the worse endpoint is within the
        relative tolerance ``threshold − 1`` or the absolute tolerance ``atol``.
    bend : (P,) array or None
    threshold : float
        Relative tolerance of the flags (the seeds' 1.1).
    atol : float
        Absolute tolerance of the flags on the barrier (loss units).
    """

    linear: PathProfile
    curve: PathProfile | None
    linear_barrier: float
    curve_barrier: float
    linear_connected: bool
    curve_connected: bool
    bend: np.ndarray | None
    threshold: float
    atol: float = 0.0
    linear_interpolated_barrier: float = float("nan")
    curve_interpolated_barrier: float = float("nan")


def _connected(p: PathProfile, threshold: float, atol: float = 0.0) -> bool:
    ends = float(np.max(p.endpoint_loss))
    return bool(max(float(np.max(p.loss)), ends) <= max(threshold * ends, ends + atol))


def interpolated_barrier(path: PathProfile) -> float:
    """Frankle et al. 2020's barrier: the loss above the line between the endpoint losses.

    ``max_t [L(φ(t)) − ((1 − t) L(φ(0)) + t L(φ(1)))]`` over the path's points and the two
    endpoints (where it is 0), so it is >= 0; it is 0 when the loss along the path never
    rises above the linear interpolation of the endpoint losses. Unlike :func:`barrier`
    (measured from the worse endpoint) it sees a bump on the better endpoint's side.
    Frankle et al. ("Linear Mode Connectivity and the Lottery Ticket Hypothesis") define it
    on the straight segment; here it applies to any path parameterised by t in [0, 1].

    Parameters
    ----------
    path : PathProfile

    Returns
    -------
    float, >= 0
    """
    if not isinstance(path, PathProfile):
        raise TypeError(f"path must be a PathProfile, got {type(path).__name__}")
    la, lb = (float(v) for v in path.endpoint_loss)
    excess = path.loss - ((1.0 - path.ts) * la + path.ts * lb)
    return max(0.0, float(np.max(excess)))


def mode_connectivity(
    model: MLP,
    theta_a,
    theta_b,
    X,
    y=None,
    *,
    ts=None,
    fit: bool = True,
    threshold: float = 1.1,
    atol: float = DEFAULT_BARRIER_ATOL,
    progress: bool | None = None,
    device: str = "cpu",
    client=None,
    **fit_options,
) -> ModeConnectivity:
    """Are two solutions connected by a low-loss path? Linear and curved barriers.

    The linear segment is evaluated; with ``fit`` a Bézier bend is trained
    (:func:`fit_bezier`, options passed through) and its curve evaluated. Two barriers per
    path: above the worse endpoint (:func:`barrier`) and above the interpolated endpoint
    losses (Frankle et al. 2020, :func:`interpolated_barrier`). A path is flagged connected
    when its largest loss is at most ``max(threshold × ends, ends + atol)``, ``ends`` the
    larger endpoint loss. The seeds' ``mode_connectivity_test`` (max loss on the segment <=
    1.1 x the larger endpoint loss) is the ``linear_connected`` flag with ``threshold=1.1``
    and ``atol=0``; the absolute tolerance keeps two solutions near zero loss (endpoints at
    6e-5, a bump of 2e-4 on the way) from being called unconnected by a relative rule that
    shrinks with the loss.

    Parameters
    ----------
    model : MLP
    theta_a, theta_b : (P,) arrays
    X : (n, d) array or Batch
    y : (n,) or (n, out) array
    ts : array, int or None
        Path parameters (default 51 points on [0, 1]).
    fit : bool
        Train a curve too.
    threshold : float
        Relative tolerance of the connectivity flags (>= 1).
    atol : float
        Absolute tolerance of the flags on the barrier above the worse endpoint, in loss
        units (default 1e-3; 0 gives the purely relative rule).
    progress : bool or None
    device : {"cpu", "cuda"}
        Where the paths are evaluated and the curve trained (the data is copied to the GPU
        once).
    client : dask.distributed.Client, optional
        Evaluate the two paths on this Dask cluster (:func:`fastscape.landscape.evaluate`);
        the curve is trained here.
    **fit_options
        Passed to :func:`fit_bezier` (steps, lr, method, seed, ...).

    Returns
    -------
    ModeConnectivity
    """
    data = as_target(model, X, y, device=device, upload=True).data
    threshold = check_positive_float(threshold, "threshold")
    if threshold < 1.0:
        raise ValueError(f"threshold must be >= 1 (a relative tolerance), got {threshold}")
    atol = check_positive_float(atol, "atol", allow_zero=True)
    kw = {"ts": ts, "progress": progress, "device": device, "client": client}
    lin = linear_path(model, theta_a, theta_b, data, **kw)
    curve = None
    bend = None
    if fit:
        bend = fit_bezier(model, theta_a, theta_b, data, device=device, **fit_options).bend
        curve = bezier_path(model, theta_a, bend, theta_b, data, **kw)
    nan = float("nan")
    return ModeConnectivity(
        linear=lin,
        curve=curve,
        linear_barrier=barrier(lin),
        curve_barrier=barrier(curve) if curve is not None else nan,
        linear_connected=_connected(lin, threshold, atol),
        curve_connected=_connected(curve, threshold, atol) if curve is not None else False,
        bend=bend,
        threshold=threshold,
        atol=atol,
        linear_interpolated_barrier=interpolated_barrier(lin),
        curve_interpolated_barrier=interpolated_barrier(curve) if curve is not None else nan,
    )


__all__ = [
    "Alignment",
    "BezierFit",
    "ModeConnectivity",
    "PathProfile",
    "align",
    "barrier",
    "bernstein",
    "bezier_path",
    "fit_bezier",
    "hat_weights",
    "interpolated_barrier",
    "linear_path",
    "mode_connectivity",
    "permute",
    "polychain_path",
]
