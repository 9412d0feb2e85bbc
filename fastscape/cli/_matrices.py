"""The hessian command's optional curvature: the Gauss-Newton split, the empirical Fisher, the
per-layer blocks and the Hessian diagonal (``--ggn``, ``--fisher``, ``--blocks``,
``--diagonal``).

Every value is exact when the model has at most ``EXACT_MAX_PARAMS`` parameters (the matrix
formed), estimated otherwise; the report says which (``"exact": true/false``) and gives each
estimate its standard error or its solver's convergence flags.
"""

from __future__ import annotations

import argparse

import numpy as np

from ._common import EXACT_MAX_PARAMS, Talk

#: What the L2 term does in each matrix (written into the report).
L2_CONVENTION = (
    "the GGN includes the L2 term's Hessian (λ on the penalised entries), so H = GGN + "
    "residual and the residual carries none of it; the empirical Fisher is that of the "
    "per-sample data-loss gradients, without the L2 term"
)


def add_matrix_options(p: argparse.ArgumentParser, positive_int) -> None:
    """The options of the optional curvature quantities (on the hessian command)."""
    g = p.add_argument_group(
        "more curvature (exact up to 2000 parameters, estimated with error bars above)"
    )
    g.add_argument(
        "--ggn", action="store_true",
        help="the Gauss-Newton split H = GGN + residual: top eigenvalues and trace of the GGN, "
        "both ends and trace of the residual",
    )  # fmt: skip
    g.add_argument(
        "--fisher", action="store_true",
        help="the empirical Fisher (mean of per-sample gradient outer products): top "
        "eigenvalues and trace",
    )  # fmt: skip
    g.add_argument(
        "--blocks", action="store_true",
        help="per-layer Hessian blocks: top eigenvalues and trace of each layer's block, "
        "layer-to-layer coupling norms (Frobenius)",
    )  # fmt: skip
    g.add_argument(
        "--diagonal", action="store_true",
        help="the Hessian diagonal (hessian_diagonal.npz: values and standard errors)",
    )  # fmt: skip
    g.add_argument(
        "--probes", type=positive_int, default=100,
        help="Rademacher probes of the estimated traces, couplings and diagonal (large models)",
    )  # fmt: skip


def wanted(args) -> bool:
    """Whether any of the optional quantities was asked for."""
    return any(getattr(args, a, False) for a in ("ggn", "fisher", "blocks", "diagonal"))


def _spectrum(model, theta, data, matrix, args, k, ends, exact) -> dict:
    """Eigenvalues at ``ends`` and the trace of one matrix, exact or estimated."""
    from ..curvature import curvature_operator, hutchinson, lanczos
    from ..curvature.ggn import exact_matrix

    if exact:
        M = exact_matrix(model, theta, data, None, matrix, max_params=EXACT_MAX_PARAMS)
        w = np.linalg.eigvalsh(M)
        out = {"exact": True, "trace": float(w.sum()), "trace_std_error": 0.0,
               "n_products": 0 if matrix == "hessian" else model.n_params}  # fmt: skip
        if "LA" in ends:
            out["top_eigenvalues"] = w[::-1][:k]
        if "SA" in ends:
            out["bottom_eigenvalues"] = w[:k]
        out["message"] = f"exact: the {model.n_params} x {model.n_params} {matrix}"
        return out
    A = curvature_operator(model, theta, data, matrix=matrix)
    out = {"exact": False}
    messages = []
    used = 0
    for which, key in (("LA", "top"), ("SA", "bottom")):
        if which not in ends:
            continue
        res = lanczos(A, k, which, tol=args.tol, max_hvps=args.max_hvps, seed=args.seed)
        out[f"{key}_eigenvalues"] = res.eigenvalues
        out[f"{key}_converged"] = res.converged
        used += res.n_matvecs
        if not res.all_converged:
            messages.append(f"{key} eigenvalues {res.message}")
    tr = hutchinson(A, args.probes, seed=args.seed)
    used += tr.n_matvecs
    out |= {"trace": tr.estimate, "trace_std_error": tr.std_error, "n_products": used}
    out["message"] = "; ".join(messages) or (
        f"estimated: Lanczos (tol {args.tol:g}) and Hutchinson ({args.probes} probes), "
        f"{used} products"
    )
    return out


def compute_matrices(args, model, theta, data, talk: Talk):
    """The optional quantities asked for.

    Returns
    -------
    report : dict
        The report's sections (``gauss_newton``, ``fisher``, ``layer_blocks``, ``diagonal``).
    rows : list of (str, str)
        Lines for the summary table.
    arrays : dict
        Arrays to save (``hessian_diagonal``: values and standard errors).
    """
    from ..curvature import hessian_diagonal, layer_blocks

    exact = model.n_params <= EXACT_MAX_PARAMS
    how = "exact" if exact else "estimated"
    k = min(args.top, model.n_params - 1)
    report, rows, arrays = {}, [], {}
    fmt = ", ".join
    if args.ggn:
        talk(f"Gauss-Newton split ({how})")
        ggn = _spectrum(model, theta, data, "ggn", args, k, ("LA",), exact)
        resid = _spectrum(model, theta, data, "residual", args, k, ("LA", "SA"), exact)
        report["gauss_newton"] = {"ggn": ggn, "residual": resid, "l2": L2_CONVENTION}
        rows.append((f"GGN top {k}", fmt(f"{v:.5g}" for v in ggn["top_eigenvalues"])))
        rows.append(("GGN trace", _pm(ggn)))
        rows.append(("residual ends", f"{resid['bottom_eigenvalues'][0]:.4g} … "
                                      f"{resid['top_eigenvalues'][0]:.4g}"))  # fmt: skip
        rows.append(("residual trace", _pm(resid)))
        for name, part in (("GGN", ggn), ("residual", resid)):
            if not exact and not all(np.all(part.get(f"{e}_converged", True))
                                     for e in ("top", "bottom")):  # fmt: skip
                talk.warn(f"{name}: {part['message']}")
    if args.fisher:
        talk(f"empirical Fisher ({how})")
        fis = _spectrum(model, theta, data, "fisher", args, k, ("LA",), exact)
        fis["convention"] = "(1/n) Σ_i g_i g_iᵀ, g_i the gradient of sample i's loss"
        report["fisher"] = fis
        rows.append((f"Fisher top {k}", fmt(f"{v:.5g}" for v in fis["top_eigenvalues"])))
        rows.append(("Fisher trace", _pm(fis)))
        if not exact and not np.all(fis["top_converged"]):
            talk.warn(f"Fisher: {fis['message']}")
    if args.blocks:
        talk(f"per-layer Hessian blocks ({how})")
        res = layer_blocks(model, theta, data, None, "exact" if exact else "estimate", k=k,
                           n_samples=max(2, args.probes), tol=args.tol, max_hvps=args.max_hvps,
                           seed=args.seed, max_params=EXACT_MAX_PARAMS,
                           device=args.device)  # fmt: skip
        layers = []
        for l, name in enumerate(res.layers):
            a, b = (int(v) for v in res.ranges[l])
            layers.append({"name": name, "n_params": b - a,
                           "top_eigenvalues": res.eigenvalues[l],
                           "converged": res.eigen_converged[l], "trace": res.trace[l],
                           "trace_std_error": res.trace_std_error[l]})  # fmt: skip
            rows.append((f"block {l} top", f"{res.eigenvalues[l][0]:.5g}; trace "
                         + _pm({"trace": res.trace[l], "trace_std_error":
                                res.trace_std_error[l], "exact": res.exact})))  # fmt: skip
        report["layer_blocks"] = {
            "exact": res.exact, "method": res.method, "layers": layers,
            "coupling_frobenius": res.coupling, "coupling_std_error": res.coupling_std_error,
            "coupling_spectral": res.coupling_spectral,
            "relative_coupling": res.relative_coupling, "n_probes": res.n_samples,
            "n_products": res.n_matvecs, "message": res.message,
        }  # fmt: skip
        rel = res.relative_coupling
        off = rel[~np.eye(rel.shape[0], dtype=bool)]
        if off.size:
            rows.append(("layer coupling", f"largest ‖H_lm‖_F / √(‖H_ll‖_F ‖H_mm‖_F) "
                                           f"{np.nanmax(off):.3g}"))  # fmt: skip
    if args.diagonal:
        talk(f"Hessian diagonal ({how})")
        res = hessian_diagonal(model, theta, data, None, "exact" if exact else "hutchinson",
                               n_samples=max(2, args.probes), seed=args.seed,
                               max_params=EXACT_MAX_PARAMS, device=args.device)  # fmt: skip
        arrays["hessian_diagonal"] = {"diagonal": res.diagonal, "std_error": res.std_error}
        d = res.diagonal
        per_layer = [float(d[lay.weight.start : lay.bias.stop].mean()) for lay in model.layout]
        report["diagonal"] = {
            "exact": res.exact, "method": res.method, "file": "hessian_diagonal.npz",
            "n_probes": res.n_samples, "n_products": res.n_matvecs, "sum": float(d.sum()),
            "min": float(d.min()), "max": float(d.max()), "layer_means": per_layer,
            "max_std_error": float(res.std_error.max()), "message": res.message,
        }  # fmt: skip
        rows.append(("diagonal", f"{d.min():.4g} … {d.max():.4g}"
                     + ("" if res.exact else f" (± up to {res.std_error.max():.2g})")))  # fmt: skip
    return report, rows, arrays


def _pm(part: dict) -> str:
    if part["exact"]:
        return f"{part['trace']:.6g} (exact)"
    return f"{part['trace']:.6g} ± {part['trace_std_error']:.2g} (estimated)"
