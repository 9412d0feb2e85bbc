"""Training, grid budgets and curvature, as the commands run them."""

from __future__ import annotations

import os

import numpy as np

from ._common import (
    CRITICAL,
    EXACT_MAX_PARAMS,
    MAX_GRID_MEMORY_FRACTION,
    MAX_GRID_SECONDS,
    NEAR_CRITICAL,
    CLIError,
    Talk,
    human_bytes,
    human_seconds,
)  # fmt: skip


# ----------------------------------------------------------------------------- training
def fit_model(args, model, data, talk: Talk, seed: int | None = None):
    from ..training import fit

    method = args.method or ("newton" if model.is_linear else "adam")
    lr = args.lr or (0.05 if method == "adam" else 0.5)
    steps = args.steps or (50 if method == "newton" else 3000)
    gtol = args.gtol or (1e-8 if method == "newton" else 1e-4)
    seed = args.seed if seed is None else seed
    talk(f"training {model!r}: {method}, lr {lr:g}, up to {steps} steps or ‖∇L‖ ≤ {gtol:g}"
         + (f" (seed {seed})" if seed != args.seed else ""))  # fmt: skip
    return fit(model, data, None, method=method, lr=lr, steps=steps, seed=seed, gtol=gtol,
               batch_size=args.batch_size, record_every=max(1, steps // 50),
               progress=not args.quiet)  # fmt: skip


def check_training(res, model, train, talk: Talk, classes) -> None:
    """Warn when the model did not train: divergence, no loss decrease, chance accuracy."""
    stop = res.stop_reason
    losses = res.loss_history
    if stop == "diverged":
        talk.warn(
            f"training diverged (the loss reached {np.nanmax(losses):.3g}); "
            "the parameters are the last finite iterate: lower --lr"
        )
    elif losses.size >= 2 and not losses[-1] < losses[0]:
        talk.warn(
            f"the model did not train: the loss went {losses[0]:.4g} → {losses[-1]:.4g}; "
            "try another --lr or more --steps"
        )
    if model.is_classifier and classes is not None:
        labels = np.argmax(train.Y, axis=1) if train.Y.shape[1] > 1 else train.Y[:, 0]
        chance = np.bincount(labels.astype(np.int64)).max() / labels.size
        acc = model.accuracy(res.theta, train)
        if acc <= chance + 0.02 and chance < 1:
            talk.warn(
                f"training accuracy {acc:.3f} is at chance level (the largest class holds "
                f"{chance:.3f} of the samples): the model did not learn the task"
            )


# ----------------------------------------------------------------------------- grid


def grid_axis(args, axis: str, auto: np.ndarray | None = None) -> np.ndarray:
    """Grid coordinates of one axis: its own range, else --range, else ``auto`` (the span of
    the trajectory's projection with a margin, for PCA directions), else [-1, 1]."""
    rng = getattr(args, f"range_{axis}") or args.range
    if rng is None and auto is not None and np.ptp(auto) > 0:
        lo, hi = min(auto.min(), 0.0), max(auto.max(), 0.0)
        pad = 0.25 * (hi - lo)
        rng = (lo - pad, hi + pad)
    lo, hi = rng or (-1.0, 1.0)
    n = getattr(args, f"points_{axis}") or args.points
    return np.linspace(lo, hi, n)


# Span engine cost: seconds per unit of n_samples * (K * h1 + sum h_l h_{l+1}) per point.
# Measured 1.1e-9 to 1.5e-9 on a busy 2-core machine (301x301 and 601x601 grids of the default
# [2, 16, 2] model on 200 samples; the issue's --points 10000 run, 27 min, gives 1.0e-9). The
# constant errs on the fast side, so that only jobs far beyond the machine are refused.
_SPAN_SECONDS_PER_UNIT = 1e-9
_BYTES_PER_SURFACE_POINT = 96  # coefficients (3), meshgrids and copies (5), loss, accuracy (8 B)


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def grid_estimate(model, n_train: int, n_test: int, n_x: int, n_y: int) -> tuple[float, int]:
    """Estimated seconds and bytes of the slices and surfaces of a landscape run."""
    sizes = model.sizes
    tail = sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    per_point = lambda K: K * sizes[1] + tail  # noqa: E731
    units = (n_train + n_test) * n_x * n_y * per_point(3) + n_train * 2 * n_x * per_point(2)
    seconds = units * _SPAN_SECONDS_PER_UNIT
    surfaces = 2 if n_test else 1
    memory = surfaces * n_x * n_y * _BYTES_PER_SURFACE_POINT + 4 * n_x * 8
    return seconds, memory


def check_grid_budget(args, model, n_train, n_test, n_x, n_y) -> tuple[float, int]:
    seconds, memory = grid_estimate(model, n_train, n_test, n_x, n_y)
    ram = _physical_memory()
    problems = []
    if seconds > MAX_GRID_SECONDS:
        problems.append(f"about {human_seconds(seconds)} of grid evaluation")
    if ram is not None and memory > MAX_GRID_MEMORY_FRACTION * ram:
        problems.append(
            f"about {human_bytes(memory)} of memory (this machine has {human_bytes(ram)})"
        )
    if problems and not args.force:
        raise CLIError(
            f"a {n_x}×{n_y} grid needs {' and '.join(problems)}; use fewer --points, "
            "or pass --force to run it anyway"
        )
    return seconds, memory


# ----------------------------------------------------------------------------- curvature
def compute_curvature(
    model, theta, data, k: int, seed: int, grad_tol: float = CRITICAL, *,
    exact_max_params: int = EXACT_MAX_PARAMS, device: str = "cpu", tol: float = 1e-6,
    max_hvps: int = 1000, progress: bool = False,
) -> dict:  # fmt: skip
    """Top/bottom eigenvalues, trace, density and classification.

    Small models (P <= ``exact_max_params``): one exact Hessian serves everything (formed on
    the CPU whatever the device). Larger ones: Lanczos at both ends of the spectrum (each at
    most ``max_hvps`` Hessian-vector products, tolerance ``tol``), Hutch++ for the trace,
    stochastic Lanczos quadrature, their HVPs on ``device``. The result says whether both
    ends converged (``converged``, ``n_hvps``, ``message``).
    """
    from .. import _device
    from ..critical import classify, classify_ends
    from ..curvature import exact_density, hessian_trace, spectral_density, top_eigen

    if _device.resolve_device(device) == "cuda":
        data = _device.to_device(data)
    grad_norm = float(np.linalg.norm(model.grad(theta, data, device=device)[1]))
    k = min(k, model.n_params - 1)
    if model.n_params <= exact_max_params:
        H = model.hessian(theta, data)
        vals = np.linalg.eigvalsh(H)
        out = {"top": vals[::-1][:k], "bottom": vals[:k], "trace": float(vals.sum()),
               "trace_std_error": 0.0, "method": "exact", "density": exact_density(vals),
               "classification": classify(H), "converged": True, "n_hvps": 0,
               "message": "exact eigendecomposition"}  # fmt: skip
    else:
        kw = {"seed": seed, "device": device, "progress": progress}
        budget = {"tol": tol, "max_hvps": max_hvps}
        top = top_eigen(model, theta, data, k=k, method="lanczos", which="LA", **kw, **budget)
        bottom = top_eigen(model, theta, data, k=k, method="lanczos", which="SA", **kw, **budget)
        trace = hessian_trace(model, theta, data, method="hutch++", **kw)
        density = spectral_density(model, theta, data, method="slq", **kw)
        ends_res = {"top": top, "bottom": bottom}
        n_hvps = top.n_hvps + bottom.n_hvps
        converged = top.all_converged and bottom.all_converged
        # the solver's own words (status, HVPs spent, pairs that met tol), and what to change
        parts = [f"{name} eigenvalues {res.message}"
                 for name, res in ends_res.items() if not res.all_converged]  # fmt: skip
        budget_text = f"tol {tol:g}, budget {max_hvps} HVPs per end"
        if parts:
            message = "; ".join(parts) + f" (raise --max-hvps {max_hvps} or loosen --tol {tol:g})"
        else:
            message = f"converged in {n_hvps} HVPs ({budget_text})"
        out = {"top": np.sort(top.eigenvalues)[::-1], "bottom": np.sort(bottom.eigenvalues),
               "trace": trace.estimate, "trace_std_error": trace.std_error, "method": "lanczos",
               "density": density,
               "classification": classify_ends(bottom, top, model.n_params),
               "converged": converged, "n_hvps": n_hvps,
               "message": message}  # fmt: skip
    # never call a point that is not critical a minimum: report both facts
    out["classification"].grad_norm = grad_norm
    out["critical"] = grad_norm <= grad_tol
    out["grad_norm"] = grad_norm
    return out


def describe_point(curv: dict) -> str:
    """Words for the point: its kind when critical, else near-critical / not critical with the
    gradient norm, and what the Hessian looks like (tiny negative eigenvalues next to a large
    positive one are flat directions, not a saddle)."""
    cls = curv["classification"]
    g = curv["grad_norm"]
    lmax = float(np.max(curv["top"]))
    lmin = float(np.min(curv["bottom"]))
    if cls.kind == "saddle" and lmax > 0 and -lmin <= max(1e-3 * lmax, g):
        # negative eigenvalues this small are within what the remaining gradient can shift
        hessian = (
            "positive semidefinite up to small negative eigenvalues "
            f"(λmin = {lmin:.2g}, λmax = {lmax:.3g})"
        )
    elif cls.kind == "saddle":
        hessian = f"saddle (λmin = {lmin:.3g})"
    else:
        hessian = cls.kind.replace("_", " ")
    if curv["critical"]:
        return f"critical point (‖∇L‖ = {g:.1e}); Hessian: {hessian}"
    if g <= NEAR_CRITICAL:
        return f"near-critical (‖∇L‖ = {g:.1e}); Hessian: {hessian}"
    return f"not a critical point (‖∇L‖ = {g:.1e}); Hessian: {hessian}"


def curvature_report(curv: dict, args) -> dict:
    cls = curv["classification"]
    return {"top_eigenvalues": curv["top"], "bottom_eigenvalues": curv["bottom"],
            "method": curv["method"], "trace": curv["trace"],
            "trace_std_error": curv["trace_std_error"],
            "converged": curv["converged"], "n_hvps": curv["n_hvps"], "message": curv["message"],
            "tol": args.tol, "max_hvps": args.max_hvps,
            "kind": cls.kind if curv["critical"] else "not_critical",
            "hessian_kind": cls.kind, "description": describe_point(curv),
            "saddle_index": cls.saddle_index,
            "saddle_index_lower_bound": cls.saddle_index_lower_bound,
            "saddle_index_exact": cls.saddle_index_exact,
            "spectrum_complete": cls.complete,
            "n_positive": cls.n_positive, "n_negative": cls.n_negative,
            "n_zero": cls.n_zero, "condition_number": cls.condition_number,
            "grad_norm": curv["grad_norm"], "is_critical": curv["critical"],
            "is_near_critical": curv["grad_norm"] <= NEAR_CRITICAL}  # fmt: skip


def run_curvature(args, model, theta, data, talk: Talk, k: int, warm=None) -> dict:
    if model.n_params <= EXACT_MAX_PARAMS:
        talk(f"curvature: exact Hessian ({model.n_params} parameters)")
    else:
        talk(f"curvature: Lanczos at both ends of the spectrum ({model.n_params} parameters, "
             f"at most {args.max_hvps} HVPs per end, tol {args.tol:g})")  # fmt: skip
    if warm is not None:
        warm.wait(curvature_job(model))
    progress = not args.quiet
    curv = compute_curvature(model, theta, data, k, args.seed, device=args.device, tol=args.tol,
                      max_hvps=args.max_hvps, progress=progress)  # fmt: skip
    if not curv["converged"]:
        talk.warn(curv["message"])
    return curv


# ----------------------------------------------------------------------------- compilation
def curvature_job(model) -> str:
    """The warm-up job of the curvature stage: the exact Hessian or Lanczos."""
    return "hessian" if model.n_params <= EXACT_MAX_PARAMS else "hvp"


def warm_up(model, jobs, talk: Talk):
    """Start compiling the kernels of ``jobs`` in background processes when the on-disk cache
    does not hold them (:mod:`fastscape._warmup`); returns the :class:`~fastscape._warmup.Warmup`
    to ``wait`` on before each stage and to ``close`` in a ``finally``."""
    from .. import _warmup

    warm = _warmup.start(model, dict.fromkeys(jobs))
    if warm.jobs:
        talk("compiling kernels for this machine in the background while it trains (first run "
             "only)")  # fmt: skip
    return warm


def announce_compile(talk: Talk, job: str, model) -> None:
    """Say that the kernels are compiled in this process (commands without warm-up)."""
    from .. import _warmup

    if _warmup.is_cold(job, model):
        talk("compiling kernels for this machine (first run only, seconds to a minute)")
