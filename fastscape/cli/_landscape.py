"""``fastscape landscape``: the main job."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ._common import (
    CLIError,
    Talk,
    check_html,
    human_bytes,
    human_seconds,
    preload_writers,
    save_figures,
    settings,
    start_cluster,
    summary,
    versions,
    write_html,
    write_json,
)
from ._compute import (
    check_grid_budget,
    check_training,
    curvature_job,
    curvature_report,
    describe_point,
    fit_model,
    grid_axis,
    run_curvature,
    warm_up,
)  # fmt: skip
from ._model import prepare
from ._output import OutputDir


# ----------------------------------------------------------------------------- landscape
def cmd_landscape(args) -> int:
    t_start = time.perf_counter()
    talk = Talk(args.quiet)
    timings: dict[str, float] = {}
    if args.device != "cpu":  # fail before any work when CUDA cannot run here
        from .._device import resolve_device

        resolve_device(args.device)
    check_html(args)
    loaded = bool(args.theta or args.torch)
    if loaded and args.directions == "pca":
        raise CLIError("--directions pca needs a training trajectory: not with --theta/--torch")
    output = OutputDir(args.out, args.overwrite)
    with output as out, contextlib.ExitStack() as stack:
        t = time.perf_counter()
        model, train, test, classes, theta, source, d = prepare(args, talk, split=True)
        timings["data_s"] = time.perf_counter() - t
        # imported after the first words (the package loads its kernels lazily)
        from .. import directions as dirs
        from ..curvature import top_eigen
        from ..landscape import slice_1d, surface_2d
        from ..sharpness import epsilon_sharpness, sam_sharpness

        alphas_n = args.points_x or args.points
        betas_n = args.points_y or args.points
        est_s, est_b = check_grid_budget(args, model, train.X.shape[0],
                                          0 if test is None else test.X.shape[0],
                                          alphas_n, betas_n)  # fmt: skip
        jobs = ["landscape", curvature_job(model)]
        if args.directions == "hessian":
            jobs.insert(0, "hvp")
        warm = stack.enter_context(warm_up(model, jobs, talk))  # closed on any exit

        client = start_cluster(args, talk, stack)

        t = time.perf_counter()
        res = None
        if theta is None:
            res = fit_model(args, model, train, talk)
            theta = res.theta
            check_training(res, model, train, talk, classes)
        timings["train_s"] = time.perf_counter() - t

        t = time.perf_counter()
        trajectory_xy = None
        talk(f"directions: {args.directions}")
        if args.directions == "random":
            d1, d2 = dirs.pair(model, theta, seed=args.seed, norm=args.norm,
                               ignore_bias=args.ignore_bias)  # fmt: skip
            direction_info = {"kind": "random", "norm": args.norm,
                              "ignore_bias": args.ignore_bias, "seed": args.seed}  # fmt: skip
        elif args.directions == "pca":
            if res.trajectory is None or len(res.trajectory) < 3:
                raise CLIError("--directions pca needs a training trajectory of at least 3 points")
            pca = dirs.pca(res.trajectory, theta, k=2)
            d1, d2 = pca.directions
            trajectory_xy = pca.projection
            direction_info = {"kind": "pca",
                              "explained_variance_ratio": pca.explained_variance_ratio}  # fmt: skip
        else:
            warm.wait("hvp")
            eig = top_eigen(model, theta, train, k=2, method="lanczos" if model.n_params > 3 else
                            "exact", which="LA", seed=args.seed, device=args.device)  # fmt: skip
            d1, d2 = (dirs.Direction(np.asarray(v, dtype=np.float64), "hessian", "unit")
                      for v in eig.eigenvectors[:2])  # fmt: skip
            direction_info = {"kind": "hessian", "eigenvalues": eig.eigenvalues}
        if trajectory_xy is None and res is not None and res.trajectory is not None:
            # project the training path onto the plane of (d1, d2) for the overlay
            D = np.stack([np.asarray(d1), np.asarray(d2)])
            G = D @ D.T
            trajectory_xy = np.linalg.solve(G, D @ (res.trajectory - theta).T).T
        timings["directions_s"] = time.perf_counter() - t

        auto = trajectory_xy if args.directions == "pca" else None
        alphas = grid_axis(args, "x", None if auto is None else auto[:, 0])
        betas = grid_axis(args, "y", None if auto is None else auto[:, 1])
        talk(f"grid: {alphas.size}×{betas.size} points and two slices "
             f"(estimated {human_seconds(est_s)}, {human_bytes(est_b)})"
             + (f", checkpoints in {args.checkpoint}" if args.checkpoint else ""))  # fmt: skip
        t = time.perf_counter()

        def engine(name: str) -> dict:
            kw = {"progress": None if not args.quiet else False, "device": args.device,
                  "client": client}  # fmt: skip
            if args.checkpoint:
                kw["checkpoint_dir"] = Path(args.checkpoint) / name
            return kw

        warm.wait("landscape", meanwhile=lambda: preload_writers(args))
        # both slices on one coordinate vector (they share slices.csv): the grid's own when
        # its axes agree, else the union of both axes (each slice keeps its axis's points)
        same = alphas.shape == betas.shape and np.array_equal(alphas, betas)
        coords = alphas if same else np.union1d(alphas, betas)
        s1 = slice_1d(model, theta, d1, train, None, coords, **engine("slice_d1"))
        s2 = slice_1d(model, theta, d2, train, None, coords, **engine("slice_d2"))
        surf = surface_2d(model, theta, d1, d2, train, None, alphas, betas, **engine("surface"))
        surf_test = (surface_2d(model, theta, d1, d2, test, None, alphas, betas,
                                **engine("surface_test"))
                     if test is not None else None)  # fmt: skip
        timings["landscape_s"] = time.perf_counter() - t

        t = time.perf_counter()
        curv = run_curvature(args, model, theta, train, talk, args.top, warm)
        timings["curvature_s"] = time.perf_counter() - t

        cmap = None
        if args.curvature_map:
            t = time.perf_counter()
            cmap = _run_curvature_map(args, model, theta, d1, d2, train, alphas, betas, talk)
            timings["curvature_map_s"] = time.perf_counter() - t

        t = time.perf_counter()
        talk(f"sharpness: ε = {args.epsilon:g} over {args.sharpness_directions} directions, SAM")
        lam_max = float(curv["top"][0])
        eps_sharp = epsilon_sharpness(model, theta, train, None, eps=args.epsilon,
                                      n_directions=args.sharpness_directions, seed=args.seed,
                                      lambda_max=lam_max, device=args.device,
                                      client=client)  # fmt: skip
        sam = sam_sharpness(model, theta, train, None, rho=args.epsilon, device=args.device)
        timings["sharpness_s"] = time.perf_counter() - t

        t = time.perf_counter()
        talk(f"writing {args.out}")
        files = _export_landscape(args, out, model, theta, surf, surf_test, s1, s2, curv,
                                  trajectory_xy)  # fmt: skip
        if cmap is not None:
            files += _export_curvature_map(args, out, cmap, _log_scale(args, surf))
        timings["export_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_start

        training = {"source": source} if res is None else {
            "method": res.method, "steps": res.n_steps, "stop_reason": res.stop_reason,
            "gtol": res.settings.get("gtol"), "initial_loss": float(res.loss_history[0]),
            "final_loss": res.final_loss}  # fmt: skip
        training |= {
            "grad_norm": float(np.linalg.norm(model.grad(theta, train)[1])),
            "train_accuracy": model.accuracy(theta, train) if model.is_classifier else None,
            "test_loss": model.loss(theta, test) if test is not None else None,
            "test_accuracy": model.accuracy(theta, test)
            if test is not None and model.is_classifier else None,
        }  # fmt: skip
        report = {
            "command": "landscape",
            "settings": settings(args),
            "versions": versions(),
            "seed": args.seed,
            "data": {"name": str(args.data), "n_train": int(train.X.shape[0]),
                     "n_test": int(test.X.shape[0]) if test is not None else 0,
                     "n_features": int(d), "standardized_on": "training split"
                     if args.standardize else None,
                     "classes": classes.tolist() if classes is not None else None},
            "model": model.to_dict() | {"n_params": model.n_params},
            "training": training,
            "directions": direction_info,
            "grid": {"alphas": [float(alphas[0]), float(alphas[-1]), int(alphas.size)],
                     "betas": [float(betas[0]), float(betas[-1]), int(betas.size)],
                     "estimated_s": est_s, "estimated_bytes": est_b},
            "surface": {"loss_at_theta": model.loss(theta, train),
                        "min": float(surf.loss.min()), "max": float(surf.loss.max()),
                        "test_loss_at_theta": model.loss(theta, test)
                        if surf_test is not None else None},
            "curvature": curvature_report(curv, args),
            "sharpness": {"epsilon": args.epsilon,
                          "max_increase": eps_sharp.max_increase,
                          "mean_increase": eps_sharp.mean_increase,
                          "quadratic_prediction": eps_sharp.quadratic_prediction,
                          "sam_rho": args.epsilon, "sam_sharpness": sam},
            "curvature_map": None if cmap is None else _curvature_map_report(cmap),
            "warnings": talk.warnings,
            "files": sorted([*files, "report.json", *(["report.html"] if args.html else [])]),
            "timings": timings,
        }  # fmt: skip
        write_json(out / "report.json", report)
        write_html(args, out, report, surface=surf, surface_test=surf_test,
                   slices={"d1": s1, "d2": s2}, density=curv["density"],
                   top_eigenvalues=curv["top"], curvature_map=cmap,
                   log=_log_scale(args, surf))  # fmt: skip
        output.commit()

    if not args.quiet:
        if res is None:
            train_row = ("parameters", str(args.theta or args.torch))
        else:
            train_row = ("training", f"{res.method}, {res.n_steps} steps ({res.stop_reason})")
        rows = [
            ("model", f"{model!r} ({model.n_params} params)"),
            ("data", f"{args.data}: {train.X.shape[0]} train"
                     + (f", {test.X.shape[0]} test" if test is not None else "")),
            train_row,
            ("loss at θ*", f"{report['surface']['loss_at_theta']:.6g}"
                           + (f" (test {report['surface']['test_loss_at_theta']:.6g})"
                              if surf_test is not None else "")),
            ("λmax", f"{lam_max:.6g}"),
            ("trace", f"{curv['trace']:.6g}"),
            ("point", describe_point(curv)),
            ("curvature", curv["message"]),
            *((("curvature map", cmap.message),) if cmap is not None else ()),
            (f"ε-sharpness (ε={args.epsilon:g})", f"max {eps_sharp.max_increase:.4g}, "
                                                  f"½ε²λmax {eps_sharp.quadratic_prediction:.4g}"),
            *(("warning", w) for w in talk.warnings if w != curv["message"]),
            ("output", str(args.out)),
            ("wall time", f"{timings['total_s']:.2f} s"),
        ]  # fmt: skip
        print(summary(rows))
    return 0


def _export_landscape(args, out: Path, model, theta, surf, surf_test, s1, s2, curv, trajectory_xy):
    from .. import io, plot

    files = ["surface.csv", "surface.npz", "slices.csv", "surface.gp", "theta.npz"]
    io.write_gnuplot(surf, out / "surface.gp", data_path=out / "surface.csv",
                     output="surface_gp.png")  # fmt: skip
    io.save_npz(surf, out / "surface.npz")
    io.save_slices({"d1": s1, "d2": s2}, out / "slices.csv")
    io.save_theta(out / "theta.npz", model, theta)
    try:
        io.save_hdf5(surf, out / "surface.h5")
        files.append("surface.h5")
    except ImportError:
        pass
    if surf_test is not None:
        io.save_csv(surf_test, out / "surface_test.csv")
        io.save_npz(surf_test, out / "surface_test.npz")
        files += ["surface_test.csv", "surface_test.npz"]
    log = _log_scale(args, surf)
    if "vtk" in args.format:  # the surface for ParaView, height log10(loss) with the log scale
        io.save_vtk(surf, out / "surface.vtk", log=log)
        files.append("surface.vtk")
        if surf_test is not None:
            io.save_vtk(surf_test, out / "surface_test.vtk", log=log)
            files.append("surface_test.vtk")
    if trajectory_xy is not None:
        fig = plot.trajectory(surf, trajectory_xy, log=log)
    else:
        fig = plot.contour(surf, log=log)
    files += save_figures(fig, out, "contour", args)
    files += save_figures(plot.surface3d(surf, log=log), out, "surface3d", args)
    files += save_figures(plot.slices(s1, s2, log=log), out, "slices", args)
    files += save_figures(plot.spectrum(curv["density"]), out, "spectrum", args)
    return files


def _log_scale(args, surf) -> bool:
    """--log / --linear, else log when the loss spans over two decades on the grid."""
    if args.log is not None:
        if args.log and not surf.loss.min() > 0:
            raise CLIError(
                f"--log needs a positive loss on the grid (its minimum is {surf.loss.min():.3g})"
            )
        return args.log
    return bool(surf.loss.min() > 0 and surf.loss.max() > 100 * surf.loss.min())


# ----------------------------------------------------------------------------- curvature map
def _map_axis(coords: np.ndarray, n: int | None) -> np.ndarray:
    """The curvature map's axis: the surface's own when it has at most ``n`` points (default
    21), else ``n`` points over the same range."""
    from .. import config

    n = n or min(coords.size, config.CURVATURE_MAP_POINTS)
    return coords if n == coords.size else np.linspace(coords[0], coords[-1], n)


def _run_curvature_map(args, model, theta, d1, d2, train, alphas, betas, talk: Talk):
    from ..landscape import curvature_map

    a = _map_axis(alphas, args.curvature_map_points)
    b = _map_axis(betas, args.curvature_map_points)
    where = "" if args.device == "cpu" else " (on the CPU: the maps have no GPU path yet)"
    talk(f"curvature map: λmax and λmin at {a.size}×{b.size} points (tol {args.tol:g}, at most "
         f"{args.max_hvps} HVPs per end){where}")  # fmt: skip
    kw = {} if not args.checkpoint else {"checkpoint_dir": Path(args.checkpoint) / "curvature_map"}
    cmap = curvature_map(model, theta, d1, d2, train, None, a, b, tol=args.tol,
                         max_hvps=args.max_hvps, seed=args.seed, progress=not args.quiet,
                         **kw)  # fmt: skip
    if cmap.n_unconverged:
        talk.warn(f"curvature map: {cmap.message}")
    return cmap


def _export_curvature_map(args, out: Path, cmap, log: bool) -> list[str]:
    from .. import plot
    from .._files import atomic_write

    arrays = {
        "alphas": cmap.alphas, "betas": cmap.betas, "lambda_max": cmap.lambda_max,
        "lambda_min": cmap.lambda_min, "ratio": cmap.ratio, "converged_max": cmap.converged_max,
        "converged_min": cmap.converged_min, "hvps_max": cmap.hvps_max,
        "hvps_min": cmap.hvps_min,
    }  # fmt: skip
    if cmap.loss is not None:
        arrays["loss"] = cmap.loss

    def npz(path):
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(out / "curvature_map.npz", npz, suffix=".npz")
    A, B = np.meshgrid(cmap.alphas, cmap.betas, indexing="ij")
    cols = {"alpha": A, "beta": B, **{k: v for k, v in arrays.items() if v.ndim == 2}}
    lines = [",".join(cols)]
    for idx in np.ndindex(cmap.shape):
        lines.append(",".join(_csv_value(v[idx]) for v in cols.values()))
    text = "\n".join(lines) + "\n"
    atomic_write(out / "curvature_map.csv", lambda p: Path(p).write_text(text))
    files = ["curvature_map.npz", "curvature_map.csv"]
    fig = plot.curvature_maps(cmap, log=log)
    return files + save_figures(fig, out, "curvature_map", args)


def _csv_value(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(int(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return repr(float(x))


def _curvature_map_report(cmap) -> dict:
    """The report.json fields of a curvature map (converged points only in the ranges)."""
    ok = cmap.converged
    ratio = cmap.ratio[ok & np.isfinite(cmap.ratio)]

    def span(x):
        return [float(x.min()), float(x.max())] if x.size else None

    return {
        "grid": [int(cmap.alphas.size), int(cmap.betas.size)],
        "alphas": [float(cmap.alphas[0]), float(cmap.alphas[-1])],
        "betas": [float(cmap.betas[0]), float(cmap.betas[-1])],
        "method": cmap.settings["method"], "tol": cmap.settings["tol"],
        "max_hvps": cmap.settings["max_hvps"], "tile_size": cmap.settings["tile_size"],
        "n_points": int(ok.size), "n_unconverged": cmap.n_unconverged,
        "lambda_max_range": span(cmap.lambda_max[cmap.converged_max]),
        "lambda_min_range": span(cmap.lambda_min[cmap.converged_min]),
        "ratio_median": float(np.median(ratio)) if ratio.size else None,
        "ratio_max": float(ratio.max()) if ratio.size else None,
        # λmin below the solves' resolution (tol |λmax|): negative curvature for certain
        "fraction_negative_curvature": float(
            (cmap.lambda_min[ok] < -cmap.settings["tol"] * np.abs(cmap.lambda_max[ok])).mean()
        ) if ok.any() else None,
        "n_hvps": int(cmap.n_hvps.sum()),
        "message": cmap.message,
    }  # fmt: skip
