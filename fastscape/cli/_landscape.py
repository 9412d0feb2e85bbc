"""``fastscape landscape``: the main job."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ._common import (
    CLIError,
    Talk,
    human_bytes,
    human_seconds,
    save_figures,
    settings,
    summary,
    versions,
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
            kw = {"progress": None if not args.quiet else False, "device": args.device}
            if args.checkpoint:
                kw["checkpoint_dir"] = Path(args.checkpoint) / name
            return kw

        warm.wait("landscape")
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

        t = time.perf_counter()
        talk(f"sharpness: ε = {args.epsilon:g} over {args.sharpness_directions} directions, SAM")
        lam_max = float(curv["top"][0])
        eps_sharp = epsilon_sharpness(model, theta, train, None, eps=args.epsilon,
                                      n_directions=args.sharpness_directions, seed=args.seed,
                                      lambda_max=lam_max, device=args.device)  # fmt: skip
        sam = sam_sharpness(model, theta, train, None, rho=args.epsilon, device=args.device)
        timings["sharpness_s"] = time.perf_counter() - t

        t = time.perf_counter()
        talk(f"writing {args.out}")
        files = _export_landscape(args, out, model, theta, surf, surf_test, s1, s2, curv,
                                  trajectory_xy)  # fmt: skip
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
            "warnings": talk.warnings,
            "files": sorted([*files, "report.json"]),
            "timings": timings,
        }  # fmt: skip
        write_json(out / "report.json", report)
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
