"""``fastscape hessian``, ``connect``, ``eos`` and ``plot``."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from ._common import (
    FIGURE_FORMATS,
    CLIError,
    Talk,
    save_figures,
    settings,
    start_cluster,
    summary,
    versions,
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
from ._model import prepare, spec_model
from ._output import OutputDir, umask


# ----------------------------------------------------------------------------- hessian
def cmd_hessian(args) -> int:
    from .._device import resolve_device

    t_start = time.perf_counter()
    talk = Talk(args.quiet)
    resolve_device(args.device)  # fail before any work when CUDA cannot run here
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
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        from .. import io, plot

        talk(f"writing {args.out}")
        files = ["hessian.json", "theta.npz"]
        io.save_theta(out / "theta.npz", model, theta)
        files += save_figures(plot.spectrum(density), out, "spectrum", args)
        report["files"] = sorted(files)
        write_json(out / "hessian.json", report)
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
            *(("warning", w) for w in talk.warnings if w != curv["message"]),
            ("output", str(args.out)),
            ("wall time", f"{report['wall_time_s']:.2f} s"),
        ]))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- connect
def cmd_connect(args) -> int:
    from .. import plot
    from .._device import resolve_device
    from ..paths import mode_connectivity

    resolve_device(args.device)  # fail before any work when CUDA cannot run here
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
        mc = mode_connectivity(model, res_a.theta, res_b.theta, data, None, ts=args.points,
                               fit=True, steps=args.bezier_steps, seed=args.seed,
                               progress=None if not args.quiet else False,
                               device=args.device)  # fmt: skip
        report = {
            "command": "connect",
            "settings": settings(args),
            "versions": versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
            "training": [{"seed": s, "stop_reason": r.stop_reason, "steps": r.n_steps}
                         for s, r in ((args.seed, res_a), (args.seed + 1, res_b))],
            "endpoint_loss": mc.linear.endpoint_loss,
            "linear_barrier": mc.linear_barrier, "curve_barrier": mc.curve_barrier,
            "linear_connected": mc.linear_connected, "curve_connected": mc.curve_connected,
            "threshold": mc.threshold,
            "linear": {"t": mc.linear.ts, "loss": mc.linear.loss},
            "curve": {"t": mc.curve.ts, "loss": mc.curve.loss} if mc.curve is not None else None,
            "warnings": talk.warnings,
            "wall_time_s": time.perf_counter() - t_start,
        }  # fmt: skip
        talk(f"writing {args.out}")
        paths = [mc.linear] + ([mc.curve] if mc.curve is not None else [])
        files = save_figures(plot.path_profile(paths), out, "paths", args)
        report["files"] = sorted([*files, "connect.json"])
        write_json(out / "connect.json", report)
        output.commit()
    if not args.quiet:
        print(summary([
            ("model", f"{model!r} ({model.n_params} params)"),
            ("endpoints", f"loss {mc.linear.endpoint_loss[0]:.5g} (seed {args.seed}), "
                          f"{mc.linear.endpoint_loss[1]:.5g} (seed {args.seed + 1})"),
            ("linear barrier", f"{mc.linear_barrier:.5g}"),
            ("Bézier barrier", f"{mc.curve_barrier:.5g}"),
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
        # λmax is measured from the first step on: no training to overlap a compilation with
        announce_compile(talk, "hvp", model)
        lr, steps = args.lr or 0.1, args.steps or 800
        with contextlib.ExitStack() as stack:
            client = start_cluster(args, talk, stack)
            talk(f"full-batch GD: η = {lr:g}, {steps} steps, λmax every {args.every}")
            res = edge_of_stability(model, data, None, lr=lr, steps=steps, every=args.every,
                                    seed=args.seed, device=args.device, client=client)  # fmt: skip
        if res.stop_reason in ("diverged", "nonfinite"):
            talk.warn(f"GD diverged (stop reason {res.stop_reason!r}): lower --lr")
        report = {
            "command": "eos",
            "settings": settings(args),
            "versions": versions(),
            "model": model.to_dict() | {"n_params": model.n_params},
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
            ("2/η", f"{res.threshold:.5g}"),
            ("λmax first → last", f"{res.lambda_max[0]:.5g} → {res.lambda_max[-1]:.5g}"),
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
    from ..landscape import Slice

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
    if target.suffix.lower().lstrip(".") in FIGURE_FORMATS:
        if args.format_given:
            raise CLIError("give the figure format either as --out's suffix or with --format")
        formats = (target.suffix.lower().lstrip("."),)
        target = target.with_suffix("")
    outputs = [target.with_name(f"{target.name}.{fmt}") for fmt in formats]
    existing = [str(o) for o in outputs if o.exists()]
    if existing and not args.overwrite:
        raise CLIError(
            f"{existing[0]} exists; pass --overwrite to replace it or choose another --out"
        )
    if isinstance(result, dict):
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
    written = plot.save(fig, target, formats, args.dpi)
    for dest in written:
        os.chmod(dest, 0o666 & ~mask)  # the temporary file was private
    if not args.quiet:
        for dest in written:
            print(f"wrote {dest}")
    return 0
