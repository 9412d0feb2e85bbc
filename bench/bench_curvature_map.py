"""Curvature maps (λmax, λmin at every grid point): fastscape against loss-landscape's method.

Problem: MLP 64-32-10 (tanh, softmax cross-entropy, P = 2 410) on scikit-learn's digits (all
1 797 samples, standardised), trained by 300 Adam steps (lr 0.01) from its Glorot
initialisation (seed 0); the plane of two filter-normalised random directions
(``directions.pair``, seed 0), a 21 x 21 grid on [-1, 1]^2 (env ``FASTSCAPE_CMAP_GRID`` for
another size, e.g. 5 for a quick run).

Implementations:

- ``fastscape``: ``landscape.curvature_map(method="lanczos")`` — per point one thick-restart
  Lanczos basis for both ends (every product serves λmax and λmin), warm-started along the
  serpentine scan, then one joint verification restart for both ends, on the compiled HVP
  kernel.
- ``fastscape, two solves (before)``: the per-point scheme the maps used before (two
  thick-restart Lanczos solves, ``LA`` then ``SA``, each with its own verification restart,
  each warm-started from the previous point's vector), one chain along the serpentine scan:
  the side-by-side measure of what the two-ended solve saves.
- ``loss-landscape``: the scheme of tomgoldstein/loss-landscape's ``plot_hessian_eigen.py``
  (``hess_vec_prod.min_max_hessian_eigs``), written here from its description: at every point
  ``scipy.sparse.linalg.eigsh(k=1)`` (largest magnitude, ARPACK's own random start) on a
  PyTorch HVP by double back-propagation for λmax, then ``eigsh`` again on ``H - 0.51 λmax I``
  for λmin. As written there, every product runs the forward pass, the gradient with
  ``create_graph=True`` and the backward pass of ``g·v`` (one batch: all 1 797 samples).
  All parameters are included (it skips biases) and everything is float64, so the agreement
  check is meaningful.
- ``fastscape, verify=False``: the same without the verification restart: a point's flag is
  the residual test alone, the guarantee ``eigsh`` gives the peers (the default verifies the
  rank of each value too, at about twice the HVPs where λmin lies in the bulk near zero).
- ``loss-landscape, cached graph``: the same scheme with a stronger HVP: the gradient graph is
  built once per point and each product is one backward pass through it
  (``peers.torch_hvp``, PyHessian's way).

Both peers run at fastscape's tolerance (``FASTSCAPE_CMAP_TOL``, default 1e-6: fastscape's
relative Ritz residual, ARPACK's relative accuracy); ``--shipped`` also times the as-written
peer at loss-landscape's own ``tol=1e-2`` (less accurate: its largest relative error against
fastscape is printed).

The agreement check: at three points (the grid's centre and two corners) fastscape and the
peers are compared with ``numpy.linalg.eigvalsh`` of the exact Hessian, then with each other
at every point. The shifted solve finds λmin only where ``λmin < -0.02 λmax`` (elsewhere the
shifted operator's largest magnitude is at its top end, and the scheme returns about λmax
again): such points are counted and left out of the λmin comparison, a limit of the method,
not a disagreement.

Run (one command, about 5-15 minutes at 21 x 21 on two cores)::

    python bench/bench_curvature_map.py            # 21 x 21
    FASTSCAPE_CMAP_GRID=5 python bench/bench_curvature_map.py   # quick

fastscape's two variants run twice each, alternating, and the faster run is kept (the previous
scheme and the peers, slower, run once). Prints one table and writes
``bench/results/curvature_map.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402  (bench/peers.py: the problems and the torch HVP)

import fastscape  # noqa: E402
from fastscape import directions  # noqa: E402
from fastscape.landscape import curvature_map  # noqa: E402

#: loss-landscape's shift for the λmin solve: a fraction of λmax.
SHIFT = 0.51


def problem(grid: int):
    """(model, data, X, y, theta, d1, d2, alphas, betas) of the benchmark."""
    q = peers.digits_problem()
    fit = fastscape.fit(q.model, q.X, q.y, method="adam", lr=0.01, steps=300)
    d1, d2 = directions.pair(q.model, fit.theta, seed=0)
    a = np.linspace(-1.0, 1.0, grid)
    return q.model, q.data, q.X, q.y, fit.theta, np.asarray(d1), np.asarray(d2), a, a


def torch_hvp_as_written(model, X, y, theta):
    """loss-landscape's product: forward, gradient with ``create_graph``, backward of ``g·v``,
    all again for every vector."""
    torch = peers._torch()
    loss = peers.torch_flat_loss(model, X, y)

    def hvp(v):
        th = torch.tensor(theta, requires_grad=True)
        (g,) = torch.autograd.grad(loss(th), th, create_graph=True)
        (g @ torch.as_tensor(v)).backward()
        return th.grad.numpy()

    return hvp


def loss_landscape_point(model, X, y, theta, tol: float, cached: bool = False):
    """(λmax, λmin, HVPs) at one point by loss-landscape's scheme (see the module docstring)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    P = theta.size
    hvp = (peers.torch_hvp if cached else torch_hvp_as_written)(model, X, y, theta)
    count = [0]

    def mv(v):
        count[0] += 1
        return hvp(np.ascontiguousarray(np.ravel(v)))

    top = eigsh(LinearOperator((P, P), matvec=mv, dtype=np.float64), k=1, tol=tol,
                return_eigenvectors=False)[0]  # fmt: skip
    shift = SHIFT * top

    def shifted(v):
        return mv(v) - shift * np.ravel(v)

    low = eigsh(LinearOperator((P, P), matvec=shifted, dtype=np.float64), k=1, tol=tol,
                return_eigenvectors=False)[0] + shift  # fmt: skip
    if top <= 0 and low > 0:  # the top solve found the negative end
        top, low = low, top
    return float(top), float(low), count[0]


def two_solve_map(model, data, theta, d1, d2, alphas, betas, tol: float):
    """(λmax, λmin, HVPs), each (a, b), and the seconds: the maps' previous per-point scheme
    (two verified Lanczos solves, warm-started along one serpentine chain)."""
    from fastscape.curvature import HessianOperator, lanczos
    from fastscape.landscape import serpentine

    t = time.perf_counter()
    a, b = alphas.size, betas.size
    hi, lo, n = np.empty(a * b), np.empty(a * b), np.zeros(a * b, dtype=np.int64)
    top = bottom = None
    for flat in serpentine(a, b):
        H = HessianOperator(model, theta + alphas[flat // b] * d1 + betas[flat % b] * d2, data)
        top = lanczos(H, 1, "LA", tol=tol, v0=None if top is None else top.eigenvectors)
        bottom = lanczos(H, 1, "SA", tol=tol, v0=None if bottom is None else bottom.eigenvectors)
        hi[flat], lo[flat] = top.eigenvalues[0], bottom.eigenvalues[0]
        n[flat] = top.n_hvps + bottom.n_hvps
    shape = (a, b)
    return hi.reshape(shape), lo.reshape(shape), n.reshape(shape), time.perf_counter() - t


def loss_landscape_map(model, X, y, theta, d1, d2, alphas, betas, tol: float, cached=False):
    """(λmax, λmin, HVPs), each (a, b), and the seconds spent."""
    t = time.perf_counter()
    hi = np.empty((alphas.size, betas.size))
    lo, n = np.empty_like(hi), np.zeros(hi.shape, dtype=np.int64)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            hi[i, j], lo[i, j], n[i, j] = loss_landscape_point(
                model, X, y, theta + a * d1 + b * d2, tol, cached
            )
    return hi, lo, n, time.perf_counter() - t


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    grid = int(os.environ.get("FASTSCAPE_CMAP_GRID", "21"))
    tol = float(os.environ.get("FASTSCAPE_CMAP_TOL", "1e-6"))
    threads = peers.set_threads()
    model, data, X, y, theta, d1, d2, alphas, betas = problem(grid)
    print(f"digits MLP 64-32-10, P = {model.n_params}, grid {grid} x {grid}, tol {tol:g}, "
          f"threads {threads}", flush=True)  # fmt: skip

    # warm-up (compile) outside the timings, on a 2 x 1 grid
    curvature_map(model, theta, d1, d2, data, None, [0.0, 0.1], [0.0], method="lanczos",
                  tol=tol, with_loss=False)  # fmt: skip
    loss_landscape_point(model, X, y, theta, 1e-2)

    # --- agreement with eigvalsh of the exact Hessian at three points
    c = grid // 2
    spots = [(c, c), (0, 0), (grid - 1, grid - 1)]
    exact = {}
    for i, j in spots:
        w = np.linalg.eigvalsh(model.hessian(theta + alphas[i] * d1 + betas[j] * d2, data))
        exact[(i, j)] = (w[-1], w[0])

    # fastscape's two variants alternate, twice each; the faster of the two runs is kept (the
    # maps are bitwise equal between runs: asserted)
    times, maps = {True: [], False: []}, {}
    for verify in (True, False, True, False):
        t = time.perf_counter()
        cm = curvature_map(model, theta, d1, d2, data, None, alphas, betas, method="lanczos",
                           tol=tol, with_loss=False, verify=verify)  # fmt: skip
        times[verify].append(time.perf_counter() - t)
        if verify in maps:
            assert np.array_equal(maps[verify].lambda_min, cm.lambda_min)
        maps[verify] = cm
    fs, fs_nv = maps[True], maps[False]
    t_fs, t_nv = min(times[True]), min(times[False])
    before = two_solve_map(model, data, theta, d1, d2, alphas, betas, tol)
    runs = {"loss-landscape": (False, tol), "loss-landscape, cached graph": (True, tol)}
    if "--shipped" in argv:
        runs["loss-landscape, tol 1e-2"] = (False, 1e-2)
    peer = {name: loss_landscape_map(model, X, y, theta, d1, d2, alphas, betas, t_, cached)
            for name, (cached, t_) in runs.items()}  # fmt: skip

    ok = fs.converged
    scale = float(np.abs(fs.lambda_max).max())
    result = {
        "grid": grid, "tol": tol, "P": model.n_params, "threads": threads,
        "fastscape": {"seconds": t_fs, "runs_s": times[True], "hvps": int(fs.n_hvps.sum()),
                      "unconverged": fs.n_unconverged},
        "fastscape, verify=False": {
            "seconds": t_nv, "runs_s": times[False], "hvps": int(fs_nv.n_hvps.sum()),
            "unconverged": fs_nv.n_unconverged,
            "max_abs_diff_lambda_max": float(np.abs(fs_nv.lambda_max - fs.lambda_max).max()),
            "max_abs_diff_lambda_min": float(np.abs(fs_nv.lambda_min - fs.lambda_min).max()),
        },
        "lambda_scale": scale, "exact_checks": [],
    }  # fmt: skip
    for i, j in spots:
        hi, lo = exact[(i, j)]
        row = {"point": [float(alphas[i]), float(betas[j])], "eigh": [float(hi), float(lo)],
               "fastscape": [float(fs.lambda_max[i, j]), float(fs.lambda_min[i, j])]}  # fmt: skip
        for name, (p_hi, p_lo, _, _) in peer.items():
            row[name] = [float(p_hi[i, j]), float(p_lo[i, j])]
        result["exact_checks"].append(row)
        sc = max(abs(hi), abs(lo))
        if fs.converged[i, j]:  # a converged pair is within tol |λ| of a true eigenvalue
            assert abs(fs.lambda_max[i, j] - hi) <= tol * sc, row
            assert abs(fs.lambda_min[i, j] - lo) <= tol * sc, row
    result["fastscape, two solves (before)"] = {
        "seconds": before[3], "hvps": int(before[2].sum()), "speedup": before[3] / t_fs,
        "max_abs_diff_lambda_max": float(np.abs(before[0] - fs.lambda_max).max()),
        "max_abs_diff_lambda_min": float(np.abs(before[1] - fs.lambda_min).max()),
    }  # fmt: skip
    for name, (p_hi, p_lo, p_n, secs) in peer.items():
        valid = p_lo < -0.02 * p_hi  # where the shifted solve can reach λmin
        d_hi = np.abs(fs.lambda_max - p_hi)[ok]
        d_lo = np.abs(fs.lambda_min - p_lo)[ok & valid]
        result[name] = {
            "seconds": secs, "hvps": int(p_n.sum()), "speedup": secs / t_fs,
            "speedup_vs_unverified": secs / t_nv,
            "lambda_min_out_of_reach": int((~valid).sum()),
            "max_abs_diff_lambda_max": float(d_hi.max()) if d_hi.size else None,
            "max_abs_diff_lambda_min": float(d_lo.max()) if d_lo.size else None,
        }  # fmt: skip
    n = grid * grid
    print(f"{'implementation':<32}{'seconds':>9}{'HVPs':>8}{'s/point':>9}{'vs fastscape':>14}"
          f"{'max|Δλmax|':>12}{'max|Δλmin|':>12}{'λmin missed':>12}")  # fmt: skip
    print(f"{'fastscape':<32}{t_fs:>9.2f}{result['fastscape']['hvps']:>8}{t_fs / n:>9.4f}"
          f"{'1.0x':>14}")  # fmt: skip
    r = result["fastscape, verify=False"]
    print(f"{'fastscape, verify=False':<32}{t_nv:>9.2f}{r['hvps']:>8}{t_nv / n:>9.4f}"
          f"{t_nv / t_fs:>13.2f}x{_e(r['max_abs_diff_lambda_max']):>12}"
          f"{_e(r['max_abs_diff_lambda_min']):>12}")  # fmt: skip
    r = result["fastscape, two solves (before)"]
    print(f"{'fastscape, two solves (before)':<32}{r['seconds']:>9.2f}{r['hvps']:>8}"
          f"{r['seconds'] / n:>9.4f}{r['speedup']:>13.1f}x{_e(r['max_abs_diff_lambda_max']):>12}"
          f"{_e(r['max_abs_diff_lambda_min']):>12}")  # fmt: skip
    for name in peer:
        r = result[name]
        print(f"{name:<32}{r['seconds']:>9.2f}{r['hvps']:>8}{r['seconds'] / n:>9.4f}"
              f"{r['speedup']:>13.1f}x{_e(r['max_abs_diff_lambda_max']):>12}"
              f"{_e(r['max_abs_diff_lambda_min']):>12}"
              f"{r['lambda_min_out_of_reach']:>12}")  # fmt: skip
    print(f"λ scale (max λmax) {scale:.3g}; fastscape unconverged points: {fs.n_unconverged} "
          f"(verify=False: {fs_nv.n_unconverged}); checks against eigvalsh at {len(spots)} "
          f"points passed; peers' speed-up over fastscape verify=False: "
          + ", ".join(f"{k} {result[k]['speedup_vs_unverified']:.1f}x" for k in peer))  # fmt: skip
    out = HERE / "results" / "curvature_map.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def _e(x) -> str:
    return "-" if x is None else f"{x:.1e}"


if __name__ == "__main__":
    main()
