"""Peer implementations of the issue-6 problems (B1-B6), shared by benchmarks and smoke test.

Every peer is written the way a competent user of that library would write it, in float64, and
returns NumPy arrays in fastscape's conventions, so that ``assert_allclose`` can compare it with
fastscape. Each ``make_*`` function takes a problem and returns a zero-argument callable: the
set-up (tensor conversion, tracing, ``jax.jit`` compilation on the first call) stays outside the
callable or in its first (warm-up) call, and the callable does the work that is timed.

Peers import lazily: a missing library raises ``ImportError`` only when its peer is built, and
:func:`require` turns that into a pytest skip with a message.

Threads: :func:`set_threads` fixes Numba, PyTorch (intra-op) and NumPy's BLAS (threadpoolctl) to
the same count. XLA's CPU thread pool has no runtime setter: ``XLA_FLAGS`` is set here, before
jax is imported, to ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N``; XLA
accepts it, but measured, it does not limit the pool (JAX uses all cores with or without it), so
:data:`THREADS` defaults to all cores, which makes every implementation use the same count.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import numpy as np

import fastscape
from fastscape import curvature

#: Threads given to every implementation (env ``FASTSCAPE_BENCH_THREADS``, default: all cores).
THREADS = int(os.environ.get("FASTSCAPE_BENCH_THREADS", os.cpu_count() or 1))

os.environ.setdefault(
    "XLA_FLAGS",
    f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={THREADS}",
)


# ----------------------------------------------------------------------------- environment
def set_threads(n: int = THREADS) -> dict:
    """Fix the thread count of every library that is importable; returns what was set."""
    import numba

    numba.set_num_threads(n)
    done = {"numba": numba.get_num_threads()}
    try:
        import torch

        torch.set_num_threads(n)
        done["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        done["blas"] = n
    except ImportError:
        pass
    done["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return done


def _torch():
    import torch

    return torch


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def available(peer: str) -> bool:
    """Whether the library behind a peer family imports ("torch", "jax", ...)."""
    mods = {
        "torch": ["torch"],
        "jax": ["jax"],
        "loss_landscapes": ["torch", "loss_landscapes"],
        "pyhessian": ["torch", "pyhessian"],
    }
    try:
        for m in mods.get(peer, [peer]):
            __import__(m)
    except ImportError:
        return False
    return True


def require(peer: str) -> None:
    """pytest.skip with a message when the peer's library is not installed."""
    import pytest

    if not available(peer):
        pytest.skip(f"peer {peer!r} is not installed (pip install '.[bench]', see bench/README.md)")


def family(impl: str) -> str | None:
    """The library an implementation name needs (None: NumPy / fastscape only)."""
    for fam in ("loss_landscapes", "pyhessian", "torch", "jax"):
        if impl.startswith(fam):
            return fam
    return None


# ----------------------------------------------------------------------------- problems
@dataclass
class SpanProblem:
    """Loss at the points ``basis.T @ C[j]``; basis = (theta, d1[, d2])."""

    model: fastscape.MLP
    X: np.ndarray  # (n, d)
    y: np.ndarray  # (n,) int labels
    data: fastscape.models.Batch
    theta: np.ndarray  # (P,)
    dirs: tuple  # (P,) arrays
    coords: tuple  # 1-D coordinate arrays, one per direction
    basis: np.ndarray  # (K, P)
    C: np.ndarray  # (m, K)
    kind: str = "plane"  # "plane", "line" or "path"


def span_problem(sizes, act, loss, n, grid, seed=0, dims=2) -> SpanProblem:
    """Random data (X ~ N(0, 1/d)), Glorot theta (seed 1), filter-normalised directions (seed 2).

    ``dims=2``: the grid ``grid x grid`` on [-1, 1]^2 (alpha-major, as ``surface_2d``);
    ``dims=1``: ``grid`` points on [-1, 1] along d1 (as ``slice_1d``).
    """
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(sizes, activation=act, loss=loss)
    X = rng.normal(size=(n, sizes[0])) / np.sqrt(sizes[0])
    y = rng.integers(0, max(2, sizes[-1]), size=n)
    data = model.batch(X, y)
    theta = model.init(1)
    d1, d2 = fastscape.directions.pair(model, theta, seed=2)
    a = np.linspace(-1.0, 1.0, grid)
    if dims == 1:
        basis = np.stack([theta, d1.vector])
        C = np.column_stack([np.ones(grid), a])
        return SpanProblem(model, X, y, data, theta, (d1.vector,), (a,), basis, C, "line")
    A, B = np.meshgrid(a, a, indexing="ij")
    C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
    basis = np.stack([theta, d1.vector, d2.vector])
    return SpanProblem(model, X, y, data, theta, (d1.vector, d2.vector), (a, a), basis, C)


@dataclass
class CurvatureProblem:
    model: fastscape.MLP
    X: np.ndarray
    y: np.ndarray
    data: fastscape.models.Batch
    theta: np.ndarray


def digits_problem() -> CurvatureProblem:
    """MLP 64-32-10 tanh softmax-CE on scikit-learn's digits (n = 1797, standardised), Glorot
    initialisation seed 0 (P = 2410)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = fastscape.datasets.standardize(d.data)
    y = d.target.astype(np.int64)
    model = fastscape.MLP([64, 32, 10], activation="tanh", loss="softmax_ce")
    return CurvatureProblem(model, X, y, model.batch(X, y), model.init(0))


def small_curvature_problem(sizes=(6, 5, 3), n=40, seed=3) -> CurvatureProblem:
    """A tiny random problem of the same kind (for the smoke test)."""
    rng = np.random.default_rng(seed)
    model = fastscape.MLP(list(sizes), activation="tanh", loss="softmax_ce")
    X = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    return CurvatureProblem(model, X, y, model.batch(X, y), model.init(seed))


# ----------------------------------------------------------------------------- plain NumPy
def _np_loss(model, theta, X, y):
    """Seed-style NumPy loss of one parameter vector (the seeds' per-point evaluation)."""
    h = X
    L = len(model.layout)
    for l, lay in enumerate(model.layout):
        W = theta[lay.weight].reshape(lay.shape)
        h = h @ W.T + theta[lay.bias]
        if l < L - 1:
            h = _np_act(model.activation, h)
    if model.loss_name == "logistic":
        z = h[:, 0]
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    mx = h.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(h - mx).sum(axis=1))
    return float(np.mean(lse - h[np.arange(h.shape[0]), y]))


def _np_act(name, h):
    if name == "tanh":
        return np.tanh(h)
    if name == "relu":
        return np.maximum(h, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-h))
    return h


def with_coords(p: SpanProblem, coords) -> SpanProblem:
    """The same model, data, theta and directions on other coordinates (the grid's axis for a
    plane, alphas for a line, ts for a path)."""
    a = np.asarray(coords, dtype=float)
    if p.kind == "plane":
        A, B = np.meshgrid(a, a, indexing="ij")
        C = np.column_stack([np.ones(A.size), A.ravel(), B.ravel()])
        coords = (a, a)
    else:
        C = np.column_stack([1.0 - a if p.kind == "path" else np.ones(a.size), a])
        coords = (a,)
    return SpanProblem(p.model, p.X, p.y, p.data, p.theta, p.dirs, coords, p.basis, C, p.kind)


def make_seed_loop(p: SpanProblem):
    """For every point: theta_j = basis.T C[j], then the NumPy loss (one pass over the data)."""

    def run(C=None):
        C = p.C if C is None else C
        out = np.empty(C.shape[0])
        for j, c in enumerate(C):
            out[j] = _np_loss(p.model, c @ p.basis, p.X, p.y)
        return out

    return run


def make_numpy_vectorized(p: SpanProblem, chunk_bytes: int = 64 * 2**20, dtype: str = "float64"):
    """The span identity in NumPy: first-layer products of the K basis vectors once, then all
    points of a chunk with array operations (chunks bound the memory); any number of hidden
    layers (the later ones as batched products over the chunk's points). ``dtype="float32"``:
    data, basis and coefficients in float32, every operation in float32."""
    model, y = p.model, p.y
    dt = np.dtype(dtype)
    X = p.X.astype(dt, copy=False)
    basis = p.basis.astype(dt, copy=False)
    n, d = X.shape
    K = basis.shape[0]
    lay0 = model.layout[0]
    h1 = lay0.shape[0]
    W1 = basis[:, lay0.weight].reshape(K, h1, d)
    b1 = basis[:, lay0.bias]
    hmax = max(lay.shape[0] for lay in model.layout)

    def run(C=None):
        C = (p.C if C is None else C).astype(dt, copy=False)
        F = np.einsum("nd,khd->knh", X, W1, optimize=True) + b1[:, None, :]  # (K, n, h1)
        out = np.empty(C.shape[0])
        chunk = max(1, chunk_bytes // (dt.itemsize * n * hmax * 2))
        for s in range(0, C.shape[0], chunk):
            c = C[s : s + chunk]
            Z = np.einsum("mk,knh->mnh", c, F, optimize=True)
            if model.is_linear:
                z = Z[:, :, 0]
                if model.loss_name == "logistic":
                    out[s : s + chunk] = np.mean(np.logaddexp(0.0, z) - y * z, axis=1)
                    continue
                logits = Z
            else:
                H = _np_act(model.activation, Z)
                for l, lay in enumerate(model.layout[1:], start=1):
                    o, h = lay.shape
                    W = (c @ basis[:, lay.weight]).reshape(-1, o, h)
                    b = c @ basis[:, lay.bias]
                    logits = np.einsum("mnh,moh->mno", H, W, optimize=True) + b[:, None, :]
                    if l < len(model.layout) - 1:
                        H = _np_act(model.activation, logits)
            mx = logits.max(axis=2, keepdims=True)
            lse = (mx + np.log(np.exp(logits - mx).sum(axis=2, keepdims=True)))[:, :, 0]
            picked = np.take_along_axis(logits, y[None, :, None], axis=2)[:, :, 0]
            out[s : s + chunk] = np.mean(lse - picked, axis=1)
        return out

    return run


def make_fastscape_surface(p: SpanProblem):
    """``fastscape.surface_2d`` (loss and accuracy; progress bar off)."""

    def run(C=None):
        if C is not None:  # a subset of the points (agreement checks): the same engine
            return fastscape.evaluate(p.model, p.basis, C, p.data).loss
        s = fastscape.surface_2d(
            p.model, p.theta, p.dirs[0], p.dirs[1], p.data, alphas=p.coords[0],
            betas=p.coords[1], progress=False,
        )  # fmt: skip
        return s.loss.ravel()

    return run


def make_fastscape_dtype(p: SpanProblem, dtype: str = "float64"):
    """B7's fastscape: ``surface_2d`` in float64; in float32 ``evaluate(dtype="float32")``
    where the CPU backend accepts it, else the CPU backend's span engine directly (the same
    kernels, without the API's tiles)."""
    if dtype == "float64":
        return make_fastscape_surface(p)
    from fastscape._device import BACKENDS

    cpu = BACKENDS["cpu"]

    def run(C=None):
        C = p.C if C is None else C
        if dtype in cpu.dtypes:
            return fastscape.evaluate(p.model, p.basis, C, p.data, dtype=dtype).loss
        return cpu.span_eval(p.model.spec, p.basis, C, p.data, dtype)[0]

    return run


def path_problem(p: SpanProblem, points: int, seed: int = 7) -> SpanProblem:
    """The segment from p's theta to another Glorot point (``model.init(seed)``), ``points``
    values of t on [0, 1]: basis (theta_a, theta_b), coefficients (1 - t, t)."""
    theta_b = p.model.init(seed)
    t = np.linspace(0.0, 1.0, points)
    basis = np.stack([p.theta, theta_b])
    C = np.column_stack([1.0 - t, t])
    return SpanProblem(p.model, p.X, p.y, p.data, p.theta, (theta_b,), (t,), basis, C, "path")


def make_fastscape_path(p: SpanProblem):
    """``fastscape.paths.linear_path`` from theta to dirs[0] (a path problem)."""
    from fastscape.paths import linear_path

    def run(C=None):
        if C is not None:
            return fastscape.evaluate(p.model, p.basis, C, p.data).loss
        return linear_path(p.model, p.theta, p.dirs[0], p.data, ts=p.coords[0], progress=False).loss

    return run


def make_fastscape_slice(p: SpanProblem):
    """``fastscape.slice_1d`` along d1."""

    def run(C=None):
        if C is not None:
            return fastscape.evaluate(p.model, p.basis, C, p.data).loss
        return fastscape.slice_1d(
            p.model, p.theta, p.dirs[0], p.data, alphas=p.coords[0], progress=False
        ).loss

    return run


# ----------------------------------------------------------------------------- PyTorch
def _torch_act(torch, name):
    return {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "identity": lambda h: h,
    }[name]


def torch_flat_loss(model, X, y):
    """A PyTorch function of the flat float64 parameter vector (fastscape's layout)."""
    torch = _torch()
    F = torch.nn.functional
    act = _torch_act(torch, model.activation)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y)
    yf = yt.to(torch.float64)
    L = len(model.layout)
    lay = [(lo.weight.start, lo.weight.stop, lo.bias.stop, lo.shape) for lo in model.layout]

    def loss(theta):
        h = Xt
        for l, (w0, w1, b1, shape) in enumerate(lay):
            h = h @ theta[w0:w1].reshape(shape).T + theta[w1:b1]
            if l < L - 1:
                h = act(h)
        if model.loss_name == "logistic":
            return F.binary_cross_entropy_with_logits(h[:, 0], yf)
        return F.cross_entropy(h, yt)

    return loss


def make_torch_batched(p: SpanProblem, chunk: int = 256):
    """B1 in PyTorch: the parameters of a chunk of points as one (m, P) tensor, the logits of
    all points with one GEMM, BCE-with-logits per point (logistic models only)."""
    torch = _torch()
    assert p.model.is_linear and p.model.loss_name == "logistic"
    Xt = torch.as_tensor(p.X)
    yf = torch.as_tensor(p.y, dtype=torch.float64)[:, None]
    basis = torch.as_tensor(p.basis)
    Call = torch.as_tensor(p.C)
    d = p.X.shape[1]

    def run(C=None):
        Ct = Call if C is None else torch.as_tensor(C)
        out = torch.empty(Ct.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for s in range(0, Ct.shape[0], chunk):
                W = Ct[s : s + chunk] @ basis  # (m, P)
                Z = torch.addmm(W[:, d], Xt, W[:, :d].T)  # (n, m)
                ell = torch.nn.functional.binary_cross_entropy_with_logits(
                    Z, yf.expand_as(Z), reduction="none"
                )
                out[s : s + chunk] = ell.mean(dim=0)
        return out.numpy()

    return run


def make_torch_span(p: SpanProblem, chunk: int = 256):
    """B1 in PyTorch with the span identity: X @ basis once, then (n, K) @ (K, m) per chunk."""
    torch = _torch()
    assert p.model.is_linear and p.model.loss_name == "logistic"
    Xt = torch.as_tensor(p.X)
    yf = torch.as_tensor(p.y, dtype=torch.float64)[:, None]
    basis = torch.as_tensor(p.basis)
    Call = torch.as_tensor(p.C)
    d = p.X.shape[1]

    def run(C=None):
        Ct = Call if C is None else torch.as_tensor(C)
        out = torch.empty(Ct.shape[0], dtype=torch.float64)
        with torch.no_grad():
            F = torch.addmm(basis[:, d], Xt, basis[:, :d].T)  # (n, K)
            for s in range(0, Ct.shape[0], chunk):
                Z = F @ Ct[s : s + chunk].T  # (n, m)
                ell = torch.nn.functional.binary_cross_entropy_with_logits(
                    Z, yf.expand_as(Z), reduction="none"
                )
                out[s : s + chunk] = ell.mean(dim=0)
        return out.numpy()

    return run


def make_torch_func_vmap(p: SpanProblem, chunk: int = 16, dtype: str = "float64"):
    """B2 with ``torch.func.vmap`` over ``functional_call`` of the ``nn.Sequential``: the
    parameters of a chunk of points stacked, one full forward pass per point (``dtype``: the
    precision of the network, the data and the parameters)."""
    torch = _torch()
    from torch.func import functional_call, vmap

    tdt = getattr(torch, dtype)
    net = p.model.to_torch(p.theta, dtype=tdt)
    names = [name for name, _ in net.named_parameters()]
    slices = []
    for lay in p.model.layout:
        slices += [(lay.weight, lay.shape), (lay.bias, (lay.shape[0],))]
    Xt = torch.as_tensor(p.X).to(tdt)
    yt = torch.as_tensor(p.y)
    basis = torch.as_tensor(p.basis).to(tdt)
    Call = torch.as_tensor(p.C).to(tdt)
    F = torch.nn.functional

    def point_loss(params):
        return F.cross_entropy(functional_call(net, params, (Xt,)), yt)

    batched = vmap(point_loss)

    def run(C=None):
        Ct = Call if C is None else torch.as_tensor(C).to(tdt)
        out = torch.empty(Ct.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for s in range(0, Ct.shape[0], chunk):
                T = Ct[s : s + chunk] @ basis  # (m, P)
                params = {
                    name: T[:, sl].reshape(T.shape[0], *shape)
                    for name, (sl, shape) in zip(names, slices)
                }
                out[s : s + chunk] = batched(params)
        return out.numpy()

    return run


def make_torch_loop(p: SpanProblem):
    """B6: one ``nn.Module`` whose parameters are overwritten for every point, forward under
    ``no_grad`` (the common PyTorch loop)."""
    torch = _torch()
    from torch.nn.utils import vector_to_parameters

    net = p.model.to_torch(p.theta)
    Xt = torch.as_tensor(p.X)
    yt = torch.as_tensor(p.y)
    # fastscape's flat layout equals torch's parameters_to_vector order (W row-major, then b)
    basis = torch.as_tensor(p.basis)
    Call = torch.as_tensor(p.C)
    F = torch.nn.functional

    def run(C=None):
        Ct = Call if C is None else torch.as_tensor(C)
        out = np.empty(Ct.shape[0])
        with torch.no_grad():
            for j in range(Ct.shape[0]):
                vector_to_parameters(Ct[j] @ basis, net.parameters())
                out[j] = F.cross_entropy(net(Xt), yt).item()
        return out

    return run


# ----------------------------------------------------------------------------- loss-landscapes
def _ll_metric(p, dtype: str = "float64"):
    torch = _torch()
    from loss_landscapes.metrics import Loss

    X = torch.as_tensor(p.X).to(getattr(torch, dtype))
    return Loss(torch.nn.functional.cross_entropy, X, torch.as_tensor(p.y))


def ll_planar_coefficients(p: SpanProblem) -> np.ndarray:
    """The points that :func:`make_ll_planar` really visits, as coefficients over p.basis.

    ``planar_interpolation`` walks the grid in a zig-zag with in-place steps and, on rows of
    even index, adds a d2 step before its first evaluation while on odd rows it evaluates
    before stepping back: even rows sit one grid step further along d2 than odd rows. With the
    start chosen below, odd rows are exactly p's grid and even rows are shifted by +h in beta.
    """
    a = p.coords[0]
    g, h = a.size, a[1] - a[0]
    i, j = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    alpha = a[0] + h * i
    beta = a[0] + h * (j + (i % 2 == 0))
    return np.column_stack([np.ones(g * g), alpha.ravel(), beta.ravel()])


def make_ll_planar(p: SpanProblem, dtype: str = "float64"):
    """loss-landscapes ``planar_interpolation`` on fastscape's plane and grid spacing (start
    theta + a_0 d1 + a_0 d2, steps of h along d1 and d2), one forward pass per point. Because
    of its zig-zag walk the points are :func:`ll_planar_coefficients`, not exactly p's grid."""
    import loss_landscapes

    a = p.coords[0]
    g, h = a.size, a[1] - a[0]
    d1, d2 = p.dirs
    start = p.theta + a[0] * d1 + a[0] * d2
    end1 = start + g * h * d1
    end2 = start + g * h * d2
    metric = _ll_metric(p, dtype)
    tdt = getattr(_torch(), dtype)

    def run():
        m0, m1, m2 = (p.model.to_torch(t, dtype=tdt) for t in (start, end1, end2))
        return loss_landscapes.planar_interpolation(m0, m1, m2, metric, steps=g).ravel()

    return run


def make_ll_random_plane(p: SpanProblem):
    """loss-landscapes ``random_plane`` on the same grid size: it draws its OWN two directions
    (torch RNG), so it computes a different plane; timed only.

    Layer normalisation: its filter normalisation divides 0 by 0 (ZeroDivisionError) on the
    zero biases of a Glorot initialisation (it normalises each bias entry as a "filter"). The
    normalisation is done once and costs nothing next to the 51 x 51 forward passes.
    """
    torch = _torch()
    import loss_landscapes

    g = p.coords[0].size
    metric = _ll_metric(p)

    def run():
        torch.manual_seed(0)
        net = p.model.to_torch(p.theta)
        return loss_landscapes.random_plane(
            net, metric, distance=1, steps=g, normalization="layer"
        ).ravel()

    return run


def make_ll_line(p: SpanProblem, a_end=None):
    """loss-landscapes ``linear_interpolation`` walking fastscape's points on a line.

    It evaluates ``start + k (end - start) / steps`` for k = 1..steps: the start is put one step
    before the first point so that the points are exactly p's.
    """
    import loss_landscapes

    m = p.C.shape[0]
    first = p.C[0] @ p.basis
    last = p.C[-1] @ p.basis
    step = (last - first) / (m - 1)
    start = first - step
    metric = _ll_metric(p)

    def run():
        m0, m1 = p.model.to_torch(start), p.model.to_torch(last)
        return loss_landscapes.linear_interpolation(m0, m1, metric, steps=m)

    return run


# ----------------------------------------------------------------------------- JAX
def jax_flat_loss(model, X, y):
    """A JAX function of the flat parameter vector (fastscape's layout), in X's precision."""
    jax = _jax()
    jnp = jax.numpy
    acts = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid,
            "identity": lambda h: h}  # fmt: skip
    act = acts[model.activation]
    Xj = jnp.asarray(X)
    yj = jnp.asarray(y)
    yf = yj.astype(jnp.float64)
    L = len(model.layout)
    lay = [(lo.weight.start, lo.weight.stop, lo.bias.stop, lo.shape) for lo in model.layout]

    def loss(theta):
        h = Xj
        for l, (w0, w1, b1, shape) in enumerate(lay):
            h = h @ theta[w0:w1].reshape(shape).T + theta[w1:b1]
            if l < L - 1:
                h = act(h)
        if model.loss_name == "logistic":
            z = h[:, 0]
            return jnp.mean(jax.nn.softplus(z) - yf * z)
        lse = jax.nn.logsumexp(h, axis=1)
        return jnp.mean(lse - jnp.take_along_axis(h, yj[:, None], axis=1)[:, 0])

    return loss


def make_jax_vmap(p: SpanProblem, chunk: int = 256, dtype: str = "float64"):
    """``jax.jit(jax.vmap(loss))`` over the points of a chunk (thetas formed inside the jitted
    function); the last chunk is padded so that one compiled shape serves every chunk
    (``dtype``: the precision of the data, the basis and the coefficients)."""
    jax = _jax()
    jnp = jax.numpy
    loss = jax_flat_loss(p.model, p.X.astype(dtype), p.y)
    basis = jnp.asarray(p.basis.astype(dtype))

    @jax.jit
    def chunk_losses(c):
        return jax.vmap(loss)(c @ basis)

    chunk = min(chunk, p.C.shape[0])

    def run(C=None):
        C = p.C if C is None else C
        m = C.shape[0]
        Cp = np.vstack([C, np.repeat(C[-1:], (-m) % chunk, axis=0)])  # one compiled shape
        out = [np.asarray(chunk_losses(jnp.asarray(Cp[s : s + chunk].astype(dtype))))
               for s in range(0, Cp.shape[0], chunk)]  # fmt: skip
        return np.concatenate(out)[:m]

    return run


def jax_hvp(model, X, y, theta):
    """Jitted exact HVPs (forward-over-reverse): ``v -> H v`` and batched ``V -> (H V^T)^T``."""
    jax = _jax()
    jnp = jax.numpy
    loss = jax_flat_loss(model, X, y)
    th = jnp.asarray(theta)
    g = jax.grad(loss)

    def hvp(v):
        return jax.jvp(g, (th,), (v,))[1]

    return jax.jit(hvp), jax.jit(jax.vmap(hvp))


def torch_hvp(model, X, y, theta):
    """Double-backprop HVP (PyHessian's method without its model wrapper): the gradient graph is
    built once, every product is one backward pass through it."""
    torch = _torch()
    loss = torch_flat_loss(model, X, y)
    th = torch.tensor(theta, requires_grad=True)
    (g,) = torch.autograd.grad(loss(th), th, create_graph=True)

    def hvp(v):
        (hv,) = torch.autograd.grad(g, th, grad_outputs=torch.as_tensor(v), retain_graph=True)
        return hv.numpy()

    return hvp


# ----------------------------------------------------------------------------- curvature peers
def _eigsh(matvec, P, k, tol):
    from scipy.sparse.linalg import LinearOperator, eigsh

    v0 = np.random.default_rng(0).normal(size=P)
    op = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    vals = eigsh(op, k=k, which="LM", tol=tol, v0=v0, return_eigenvectors=False)
    return vals[np.argsort(-np.abs(vals))]


def make_eigen(impl: str, q: CurvatureProblem, k: int, tol: float = 1e-4):
    """Top-k Hessian eigenvalues by magnitude, (k,) ordered by decreasing |lambda|."""
    model, P = q.model, q.model.n_params
    if impl in ("fastscape_power", "fastscape_lanczos"):
        method = impl.split("_")[1]
        which = "LM"

        def run():
            return curvature.top_eigen(
                model, q.theta, q.data, k=k, method=method, which=which, tol=tol
            ).eigenvalues

        return run
    if impl == "jax_eigsh":
        jax = _jax()
        hvp, _ = jax_hvp(model, q.X, q.y, q.theta)
        jnp = jax.numpy

        def run():
            return _eigsh(lambda v: np.asarray(hvp(jnp.asarray(v.ravel()))), P, k, tol)

        return run
    if impl == "torch_eigsh":
        hvp = torch_hvp(model, q.X, q.y, q.theta)

        def run():
            return _eigsh(lambda v: hvp(np.ascontiguousarray(v.ravel())), P, k, tol)

        return run
    if impl == "pyhessian":
        return _pyhessian_run(q, lambda h: np.asarray(h.eigenvalues(maxIter=100, tol=tol,
                                                                     top_n=k)[0]))  # fmt: skip
    raise ValueError(impl)


@contextlib.contextmanager
def _torch_float64():
    """PyHessian draws its random vectors with ``torch.randn(size)``: the default dtype must be
    float64 for them to match float64 parameters."""
    torch = _torch()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield torch
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def _quiet_backward():
    """PyHessian calls ``loss.backward(create_graph=True)``, on which PyTorch warns about a
    reference cycle (the tests turn warnings into errors); the cycle is broken by resetting
    ``.grad`` to None before each use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        yield


def _pyhessian_run(q: CurvatureProblem, body):
    from pyhessian import hessian

    torch = _torch()
    net = q.model.to_torch(q.theta)
    data = (torch.as_tensor(q.X), torch.as_tensor(q.y))
    criterion = torch.nn.CrossEntropyLoss()

    def run():
        with _torch_float64():
            torch.manual_seed(0)
            for prm in net.parameters():
                prm.grad = None
            with _quiet_backward():
                h = hessian(net, criterion, data=data, cuda=False)  # builds the gradient graph
            return body(h)

    return run


def make_pyhessian_hvp(q: CurvatureProblem):
    """PyHessian's own HVP (``hessian_vector_product`` on its gradient graph), flat in/out."""
    from pyhessian import hessian
    from pyhessian.utils import hessian_vector_product

    torch = _torch()
    net = q.model.to_torch(q.theta)
    data = (torch.as_tensor(q.X), torch.as_tensor(q.y))
    with _torch_float64(), _quiet_backward():
        h = hessian(net, criterion=torch.nn.CrossEntropyLoss(), data=data, cuda=False)
    shapes = [prm.shape for prm in h.params]

    def hvp(v):
        parts, o = [], 0
        for s in shapes:
            size = int(np.prod(s))
            parts.append(torch.as_tensor(v[o : o + size]).reshape(s))
            o += size
        hv = hessian_vector_product(h.gradsH, h.params, parts)
        return torch.cat([t.reshape(-1) for t in hv]).detach().numpy()

    return hvp


def make_hessian(impl: str, q: CurvatureProblem):
    """The exact (P, P) Hessian."""
    model = q.model
    if impl == "fastscape":
        return lambda: model.hessian(q.theta, q.data)
    if impl == "torch_func_hessian":
        torch = _torch()
        loss = torch_flat_loss(model, q.X, q.y)
        th = torch.as_tensor(q.theta)
        hess = torch.func.hessian(loss)
        return lambda: hess(th).numpy()
    if impl == "jax_hessian":
        jax = _jax()
        loss = jax_flat_loss(model, q.X, q.y)
        hess = jax.jit(jax.hessian(loss))
        th = jax.numpy.asarray(q.theta)
        return lambda: np.asarray(hess(th))
    raise ValueError(impl)


def rademacher(P: int, m: int, seed: int = 0) -> np.ndarray:
    """(m, P) Rademacher probes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(m, P)).astype(np.float64) * 2.0 - 1.0


def make_trace(impl: str, q: CurvatureProblem, n_probes: int = 100):
    """Hutchinson trace estimate with ``n_probes`` Rademacher probes: returns (estimate,
    standard error)."""
    model, P = q.model, q.model.n_params

    def summary(vals):
        vals = np.asarray(vals, dtype=float)
        return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(vals.size))

    if impl == "fastscape":

        def run():
            r = curvature.hessian_trace(model, q.theta, q.data, n_samples=n_probes, seed=0)
            return r.estimate, r.std_error

        return run
    if impl == "pyhessian":
        # tol=0 disables PyHessian's early stop: exactly n_probes probes, like the others
        return _pyhessian_run(q, lambda h: summary(h.trace(maxIter=n_probes, tol=0.0)))
    if impl == "jax_hutchinson":
        jax = _jax()
        _, hvp_batch = jax_hvp(model, q.X, q.y, q.theta)

        def run():
            Z = rademacher(P, n_probes)
            HZ = np.asarray(hvp_batch(jax.numpy.asarray(Z)))
            return summary(np.einsum("ij,ij->i", Z, HZ))

        return run
    if impl == "torch_hutchinson":
        hvp = torch_hvp(model, q.X, q.y, q.theta)

        def run():
            Z = rademacher(P, n_probes)
            return summary([z @ hvp(z) for z in Z])

        return run
    raise ValueError(impl)


# ----------------------------------------------------------------------------- registries
SPAN_B1 = {
    "fastscape": make_fastscape_surface,
    "seed_loop": make_seed_loop,
    "numpy_vectorized": make_numpy_vectorized,
    "torch_batched": make_torch_batched,
    "torch_span": make_torch_span,
    "jax_vmap": make_jax_vmap,
}
SPAN_B2 = {
    "fastscape": make_fastscape_surface,
    "numpy_vectorized": make_numpy_vectorized,
    "torch_func_vmap": make_torch_func_vmap,
    "jax_vmap": lambda p: make_jax_vmap(p, chunk=16),
    "loss_landscapes_planar": make_ll_planar,
    "loss_landscapes_random_plane": make_ll_random_plane,
}
#: B7: makers taking (problem, dtype)
SPAN_B7 = {
    "fastscape": make_fastscape_dtype,
    "numpy_vectorized": lambda p, dt: make_numpy_vectorized(p, dtype=dt),
    "torch_func_vmap": lambda p, dt: make_torch_func_vmap(p, dtype=dt),
    "jax_vmap": lambda p, dt: make_jax_vmap(p, chunk=16, dtype=dt),
    "loss_landscapes_planar": lambda p, dt: make_ll_planar(p, dtype=dt),
}
LINE_B6 = {
    "fastscape": None,  # slice_1d / linear_path, chosen by the benchmark
    "torch_loop": make_torch_loop,
    "loss_landscapes": make_ll_line,
}
EIGEN_B3 = ["fastscape_power", "fastscape_lanczos", "pyhessian", "jax_eigsh", "torch_eigsh"]
HESSIAN_B4 = ["fastscape", "torch_func_hessian", "jax_hessian"]
TRACE_B5 = ["fastscape", "pyhessian", "jax_hutchinson", "torch_hutchinson"]


# ----------------------------------------------------------------------------- report
#: Targets of issue 6: (minimum speed-up over the fastest listed peer, over the seed loop)
TARGETS = {"B1": (10.0, 30.0), "B2": (10.0, None), "B3": (5.0, None), "B4": (3.0, None),
           "B5": (5.0, None), "B6": (10.0, None), "B7": (10.0, None)}  # fmt: skip

#: The peers the issue lists per problem (the others here are extra: the verdict is given
#: against both the listed peers and every peer)
LISTED = {
    "B1": {"numpy_vectorized", "torch_batched", "torch_span", "jax_vmap"},
    "B2": {"torch_func_vmap", "jax_vmap", "loss_landscapes_planar", "loss_landscapes_random_plane"},
    "B3": {"pyhessian", "jax_eigsh"},
    "B4": {"torch_func_hessian", "jax_hessian"},
    "B5": {"pyhessian"},
    "B6": {"loss_landscapes", "torch_loop"},
    "B7": {"torch_func_vmap", "jax_vmap", "loss_landscapes_planar", "numpy_vectorized"},
}


def table(paths) -> str:
    """Markdown table of pytest-benchmark JSON files written by bench_peers.py: per group, the
    median of each implementation and fastscape's speed-up over it (peer median divided by the
    best fastscape median of the group), then whether the target is met."""
    import json

    rows: dict = {}
    for path in paths:
        with open(path) as fh:
            for b in json.load(fh)["benchmarks"]:
                info = b["extra_info"]
                if "impl" not in info or not b["group"].startswith(str(info.get("problem"))):
                    continue  # not a B1-B6 comparison (memory, compile, scaling)
                rows.setdefault(b["group"], []).append(b)
    out = []
    for group in sorted(rows):
        bs = sorted(rows[group], key=lambda b: b["stats"]["median"])
        problem = bs[0]["extra_info"]["problem"]
        fast = [b for b in bs if b["extra_info"]["impl"].startswith("fastscape")]
        if not fast:
            continue
        best = min(b["stats"]["median"] for b in fast)
        out += [f"**{group}**", "", "| implementation | median (s) | min (s) | rounds | "
                "fastscape speed-up |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for b in bs:
            s, impl = b["stats"], b["extra_info"]["impl"]
            ratio = "" if impl.startswith("fastscape") else f"{s['median'] / best:.1f}x"
            out.append(f"| {impl} | {s['median']:.4g} | {s['min']:.4g} | {s['rounds']} | {ratio} |")
        peer = [b for b in bs if not b["extra_info"]["impl"].startswith("fastscape")
                and b["extra_info"]["impl"] != "seed_loop"]  # fmt: skip
        goal, loop_goal = TARGETS.get(problem, (None, None))
        listed = [b for b in peer if b["extra_info"]["impl"] in LISTED.get(problem, ())]
        if listed and goal:
            top = listed[0]
            r = top["stats"]["median"] / best
            verdict = "met" if r >= goal else "MISSED"
            line = (f"fastest listed peer {top['extra_info']['impl']}: {r:.2f}x, target >= "
                    f"{goal:g}x: {verdict}")  # fmt: skip
            if peer[0] is not top:
                r_all = peer[0]["stats"]["median"] / best
                line += (f"; fastest of all peers {peer[0]['extra_info']['impl']}: {r_all:.2f}x"
                         f" ({'met' if r_all >= goal else 'MISSED'})")  # fmt: skip
            loop = [b for b in bs if b["extra_info"]["impl"] == "seed_loop"]
            if loop and loop_goal:
                rl = loop[0]["stats"]["median"] / best
                line += f"; seed loop {rl:.0f}x, target >= {loop_goal:g}x: "
                line += "met" if rl >= loop_goal else "MISSED"
            out += ["", line]
        out.append("")
    return "\n".join(out)


def resources(path) -> str:
    """Markdown summary of bench_peers_resources.py's JSON: memory, compile times, scaling."""
    import json

    with open(path) as fh:
        bs = json.load(fh)["benchmarks"]
    out = ["| problem | implementation | data (MB) | extra peak (MB) | RSS before (MB) | "
           "evaluation (s) |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for b in bs:
        e = b["extra_info"]
        if "extra_peak_MB" in e:
            out.append(f"| {e['problem']} | {e['impl']} | {e['data_MB']:.1f} | "
                       f"{e['extra_peak_MB']:.1f} | {e['rss_before_MB']:.0f} | "
                       f"{e['eval_seconds']:.3f} |")  # fmt: skip
    for b in bs:
        e = b["extra_info"]
        if "cold_s" in e:
            out += ["", "| first call (s) | cold cache | cached |", "|---|---:|---:|"]
            out += [f"| {k} | {e['cold_s'][k]:.2f} | {e['cached_s'][k]:.2f} |" for k in e["cold_s"]]
    scal = [b for b in bs if b["name"].startswith("bench_b1_scaling")]
    if scal:
        base = next(b for b in scal if b["extra_info"]["n"] == 10_000
                    and b["extra_info"]["points"] == 10_201)  # fmt: skip
        out += ["", "| B1 scaling (fastscape) | n | points | median (s) | min (s) | time ratio | "
                "work ratio |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for b in scal:
            e, s = b["extra_info"], b["stats"]
            work = e["n"] * e["points"] / (10_000 * 10_201)
            out.append(f"| {b['param']} | {e['n']} | {e['points']} | {s['median']:.3f} | "
                       f"{s['min']:.3f} | {s['median'] / base['stats']['median']:.2f} | "
                       f"{work:.2f} |")  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    usage = "usage: python bench/peers.py table|resources RESULTS.json [MORE.json ...]"
    if len(sys.argv) < 3 or sys.argv[1] not in ("table", "resources"):
        raise SystemExit(usage)
    print(table(sys.argv[2:]) if sys.argv[1] == "table" else resources(sys.argv[2]))
