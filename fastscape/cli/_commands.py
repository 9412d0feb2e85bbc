"""``fastscape hessian``, ``connect``, ``eos`` and ``plot``."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from ._common import (
    FIGURE_FORMATS,
    SURFACE_FORMATS,
    CLIError,
    Talk,
    check_html,
    save_figures,
    settings,
    start_cluster,
    summary,
    versions,
    write_html,
    write_json,
)  # fmt: skip
from ._compute import (
    announce_compile,
    check_training,
    curvature_job,
    curvature_report,
    describe_point,
    fit_model,
    run_curvature,
    warm_up,
)  # fmt: skip
from ._data import refuse
from ._matrices import compute_matrices, wanted
from ._model import prepare, spec_model
from ._output import OutputDir, umask


# ----------------------------------------------------------------------------- hessian
def cmd_hessian(args) -> int:
    from .._device import resolve_device

    t_start = time.perf_counter()
    talk = Talk(args.quiet)
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    check_html(args)
    output = OutputDir(args.out, args.overwrite)
    with output as out, contextlib.ExitStack() as stack:
        model, data, _, classes, theta, source, _ = prepare(args, talk)
        warm = stack.enter_context(warm_up(model, [curvature_job(model)], talk))
        if theta is None:
            res = fit_model(args, model, data, talk)
            theta = res.theta
            check_training(res, model, data, talk, classes)
            source = {"trained": res.method, "steps": res.n_steps, "stop_reason": res.stop_reason}
        curv = run_curvature(args, model, theta, data, talk, args.top, warm)
        extra, extra_rows, arrays = ({}, [], {})
        if wanted(args):
            extra, extra_rows, arrays = compute_matrices(args, model, theta, data, talk)
        density = curv["density"]
        k = len(curv["top"])
        report = {
            "command": "hessian",
            "settings": settings(args),
            "versions": versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "parameters": source,
            "loss": model.loss(theta, data),
            "grad_norm": curv["grad_norm"],
            "density": {"grid": density.grid, "density": density.density, "sigma": density.sigma},
            **curvature_report(curv, args),
            **extra,
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        from .. import io, plot

        talk(f"writing {args.out}")
        files = ["hessian.json", "theta.npz"]
        io.save_theta(out / "theta.npz", model, theta)
        files += save_figures(plot.spectrum(density), out, "spectrum", args)
        for name, payload in arrays.items():
            np.savez(out / f"{name}.npz", **payload)
            files.append(f"{name}.npz")
        report["files"] = sorted([*files, *(["report.html"] if args.html else [])])
        write_json(out / "hessian.json", report)
        write_html(args, out, report, density=density, top_eigenvalues=curv["top"])
        output.commit()
    if not args.quiet:
        fmt = ", ".join
        print(summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("loss", f"{report['loss']:.6g}  (‖∇L‖ {report['grad_norm']:.2e})"),
            (f"top {k}", fmt(f"{v:.5g}" for v in curv["top"])),
            (f"bottom {k}", fmt(f"{v:.5g}" for v in curv["bottom"])),
            ("trace", f"{curv['trace']:.6g} ± {curv['trace_std_error']:.2g} ({curv['method']})"),
            ("point", describe_point(curv)),
            ("curvature", curv["message"]),
            *extra_rows,
            *(("warning", w) for w in talk.warnings if w != curv["message"]),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- connect
_MATCHING = {"weights": "weight matching", "activations": "activation matching"}


def _connect_paths(mc) -> dict:
    """The barriers, flags and loss profiles of one ``mode_connectivity`` result."""
    return {
        "linear_barrier": mc.linear_barrier, "curve_barrier": mc.curve_barrier,
        "linear_interpolated_barrier": mc.linear_interpolated_barrier,
        "curve_interpolated_barrier": mc.curve_interpolated_barrier,
        "linear_connected": mc.linear_connected, "curve_connected": mc.curve_connected,
        "linear": {"t": mc.linear.ts, "loss": mc.linear.loss},
        "curve": {"t": mc.curve.ts, "loss": mc.curve.loss} if mc.curve is not None else None,
    }  # fmt: skip


def _align_report(result, mc) -> dict:
    """``connect.json``'s ``alignment`` entry: how θb was permuted, and the paths after."""
    return {
        "method": result.method,
        "converged": result.converged,
        "iterations": result.n_iterations,
        "objective": result.objective,
        "distance_before": float(result.distance[0]),
        "distance_after": float(result.distance[1]),
        "permutations": [p.tolist() for p in result.permutations],
        **({"note": result.settings["note"]} if "note" in result.settings else {}),
        **_connect_paths(mc),
    }


def cmd_connect(args) -> int:
    from .. import plot
    from .._device import resolve_device
    from ..paths import align, mode_connectivity

    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    check_html(args)
    t_start = time.perf_counter()
    talk = Talk(args.quiet)
    output = OutputDir(args.out, args.overwrite)
    with output as out, contextlib.ExitStack() as stack:
        model, data, _, classes, _, _, _ = prepare(args, talk)
        # the paths are evaluated by the span engine, like the grids of landscape
        warm = stack.enter_context(warm_up(model, ["landscape"], talk))
        res_a = fit_model(args, model, data, talk)
        check_training(res_a, model, data, talk, classes)
        res_b = fit_model(args, model, data, talk, seed=args.seed + 1)
        check_training(res_b, model, data, talk, classes)
        talk(f"paths: the straight segment and a Bézier curve ({args.bezier_steps} steps), "
             f"{args.points} points each")  # fmt: skip
        warm.wait("landscape")

        def connect(theta_b):
            return mode_connectivity(model, res_a.theta, theta_b, data, None, ts=args.points,
                                     fit=True, steps=args.bezier_steps, seed=args.seed,
                                     progress=None if not args.quiet else False,
                                     device=args.device)  # fmt: skip

        mc = connect(res_b.theta)
        aligned = mc_aligned = None
        if args.align is not None:
            talk(f"aligning the second solution to the first ({_MATCHING[args.align]}), "
                 "then the same paths again")  # fmt: skip
            aligned = align(model, res_a.theta, res_b.theta, args.align,
                            data.X if args.align == "activations" else None,
                            seed=args.seed)  # fmt: skip
            if not aligned.permutations:
                talk.warn(f"--align: {aligned.settings['note']}; the paths are unchanged")
                mc_aligned = mc
            else:
                mc_aligned = connect(aligned.theta)
        report = {
            "command": "connect",
            "settings": settings(args),
            "versions": versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "training": [{"seed": s, "stop_reason": r.stop_reason, "steps": r.n_steps}
                         for s, r in ((args.seed, res_a), (args.seed + 1, res_b))],
            "endpoint_loss": mc.linear.endpoint_loss,
            **_connect_paths(mc),
            "threshold": mc.threshold, "atol": mc.atol,
            "alignment": _align_report(aligned, mc_aligned) if aligned is not None else None,
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        talk(f"writing {args.out}")
        paths, labels = [], []
        for result, tag in ((mc, ""), (mc_aligned, ", aligned")):
            if result is None or (tag and result is mc):
                continue
            for name, p in (("linear", result.linear), ("Bézier", result.curve)):
                if p is not None:
                    p.settings["label"] = f"{name}{tag}"  # the legends of report.html
                    paths.append(p)
                    labels.append(f"{name}{tag} (barrier {p.barrier:.3g})")
        files = save_figures(plot.path_profile(paths, labels), out, "paths", args)
        report["files"] = sorted([*files, "connect.json", *(["report.html"] if args.html else [])])
        write_json(out / "connect.json", report)
        write_html(args, out, report, paths=paths)
        output.commit()
    if not args.quiet:
        rows = [
            ("model", f"{model!r} ({model.n_params} params)"),
            ("endpoints", f"loss {mc.linear.endpoint_loss[0]:.5g} (seed {args.seed}), "
                          f"{mc.linear.endpoint_loss[1]:.5g} (seed {args.seed + 1})"),
        ]  # fmt: skip
        if mc_aligned is None:
            rows += [
                ("linear barrier", f"{mc.linear_barrier:.5g}"),
                ("Bézier barrier", f"{mc.curve_barrier:.5g}"),
            ]
        else:
            rows += [
                ("alignment", f"{_MATCHING[args.align]}, ‖θa − θb‖ {aligned.distance[0]:.4g} → "
                              f"{aligned.distance[1]:.4g}"),
                ("linear barrier", f"{mc.linear_barrier:.5g} → {mc_aligned.linear_barrier:.5g} "
                                   "after alignment"),
                ("Bézier barrier", f"{mc.curve_barrier:.5g} → {mc_aligned.curve_barrier:.5g} "
                                   "after alignment"),
            ]  # fmt: skip
        print(summary([
            *rows,
            *(("warning", w) for w in talk.warnings),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- eos
def cmd_eos(args) -> int:
    from .. import plot
    from .._device import resolve_device
    from ..eos import edge_of_stability

    t_start = time.perf_counter()
    talk = Talk(args.quiet)
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
    if args.optimizer != "momentum":
        refuse(args, ("--momentum",), f"with --optimizer {args.optimizer}")
    if args.optimizer != "adam":
        refuse(args, ("--betas", "--adam-eps"), f"with --optimizer {args.optimizer}")
    output = OutputDir(args.out, args.overwrite)
    with output as out:
        if args.data == "eos-default":
            refuse(
                args,
                ("--loss", "--model", "--header"),
                "with the default eos data (an MSE regression)",
            )
            talk("data: the default regression y = sin(2 x0) cos(x1), 60 samples")
            # a regression a small tanh MLP cannot fit at once: y = sin(2 x0) cos(x1), standardized
            rng = np.random.default_rng(args.seed)
            X = rng.normal(size=(60, 4))
            y = np.sin(2 * X[:, 0]) * np.cos(X[:, 1])
            y = (y - y.mean()) / y.std()
            hidden = args.hidden if args.hidden is not None else args.hidden_default
            model = spec_model([4, *hidden, 1], args.activation or "tanh", "mse")
            data = model.batch(X, y)
        else:
            model, data, _, _, _, _, _ = prepare(args, talk)
        if model.loss_name != "mse":
            refuse(args, ("--mse-convention",), f"with the {model.loss_name} loss (MSE only)")
        # λmax is measured from the first step on: no training to overlap a compilation with
        announce_compile(talk, "hvp", model)
        lr = args.lr or (0.01 if args.optimizer == "adam" else 0.1)
        steps = args.steps or 800
        with contextlib.ExitStack() as stack:
            client = start_cluster(args, talk, stack)
            talk(f"full-batch {args.optimizer}: η = {lr:g}, {steps} steps, sharpness every "
                 f"{args.every}")  # fmt: skip
            res = edge_of_stability(model, data, None, lr=lr, steps=steps, every=args.every,
                                    optimizer=args.optimizer, momentum=args.momentum,
                                    betas=args.betas, adam_eps=args.adam_eps,
                                    mse_convention=args.mse_convention, seed=args.seed,
                                    device=args.device, client=client)  # fmt: skip
        if res.stop_reason in ("diverged", "nonfinite"):
            talk.warn(f"GD diverged (stop reason {res.stop_reason!r}): lower --lr")
        report = {
            "command": "eos",
            "settings": settings(args),
            "versions": versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "optimizer": res.optimizer, "momentum": res.momentum, "betas": res.betas,
            "adam_eps": res.adam_eps, "mse_convention": res.mse_convention,
            "sharpness": res.sharpness, "threshold_formula": res.threshold_formula,
            "lr": res.lr, "threshold": res.threshold, "steps": res.steps, "loss": res.loss,
            "lambda_max": res.lambda_max, "stop_reason": res.stop_reason,
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        talk(f"writing {args.out}")
        files = save_figures(plot.eos(res), out, "eos", args)
        report["files"] = sorted([*files, "eos.json"])
        write_json(out / "eos.json", report)
        output.commit()
    if not args.quiet:
        print(summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("optimizer", res.optimizer + (f" (MSE convention {res.mse_convention})"
                                           if res.mse_convention else "")),
            (res.threshold_formula, f"{res.threshold:.5g}"),
            (f"{res.sharpness_label} first → last",
             f"{res.lambda_max[0]:.5g} → {res.lambda_max[-1]:.5g}"),
            ("loss first → last", f"{res.loss[0]:.5g} → {res.loss[-1]:.5g}"),
            ("stop", res.stop_reason),
            *(("warning", w) for w in talk.warnings),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- plot
def cmd_plot(args) -> int:
    from .. import io, plot
    from ..landscape import Slice, Surface

    path = Path(args.file)
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    try:
        result = io.load(path)
    except io.FileFormatError as exc:
        if "load_theta" in exc.problem:  # io's words for a parameter file
            raise CLIError(
                f"{path}: holds model parameters, not a landscape; map them with "
                f"fastscape landscape --theta {path}"
            ) from None
        if "load_slices" not in exc.problem:  # io's words for a file of several slices
            raise
        result = io.load_slices(path)
        if len(result) != 2:
            raise CLIError(f"{path}: holds {len(result)} slices; plot draws one or two") from None
    target = Path(args.out) if args.out else path.with_suffix("")
    formats = args.format
    if target.suffix.lower().lstrip(".") in FIGURE_FORMATS + SURFACE_FORMATS:
        if args.format_given:
            raise CLIError("give the figure format either as --out's suffix or with --format")
        formats = (target.suffix.lower().lstrip("."),)
        target = target.with_suffix("")
    if "vtk" in formats and not isinstance(result, Surface):
        raise CLIError(f"{path}: holds slices; --format vtk writes surfaces")
    outputs = [target.with_name(f"{target.name}.{fmt}") for fmt in formats]
    existing = [str(o) for o in outputs if o.exists()]
    if existing and not args.overwrite:
        raise CLIError(
            f"{existing[0]} exists; pass --overwrite to replace it or choose another --out"
        )
    figure_formats = [f for f in formats if f in FIGURE_FORMATS]
    if not figure_formats:
        fig = None
    elif isinstance(result, dict):
        fig = plot.slices(*result.values(), log=args.log)
    elif isinstance(result, Slice):
        fig = plot.slice_plot(result, log=args.log)
    elif args.kind == "3d":
        fig = plot.surface3d(result, log=args.log)
    elif args.kind == "heatmap":
        fig = plot.heatmap(result, log=args.log)
    else:
        fig = plot.contour(result, log=args.log)
    mask = umask()
    written = [] if fig is None else plot.save(fig, target, figure_formats, args.dpi)
    if "vtk" in formats:
        written.append(io.save_vtk(result, target.with_name(f"{target.name}.vtk"), log=args.log))
    for dest in written:
        os.chmod(dest, 0o666 & ~mask)  # the temporary file was private
    if not args.quiet:
        for dest in written:
            print(f"wrote {dest}")
    return 0
