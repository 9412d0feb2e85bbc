"""The results of the curvature solvers: eigenpairs, traces, densities, with their budgets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DensityResult", "EigenResult", "TraceResult"]


@dataclass
class EigenResult:
    """Eigenpairs of a symmetric operator.

    Attributes
    ----------
    eigenvalues : (k,) array
        Ordered as asked: by decreasing magnitude ("LM"), decreasing value ("LA") or increasing
        value ("SA").
    eigenvectors : (k, n) array
        Unit eigenvectors as rows, signs fixed by :func:`fix_signs` (largest entry positive).
    iterations : (k,) int array
        Power iteration: the iteration at which each pair met the stopping rule (the last
        iteration run when it never did). Lanczos: the number of operator applications (same
        for all pairs). Exact: zeros.
    converged : (k,) bool array
        Whether each pair is established: its residual met the tolerance (recomputed from the
        operator's outputs, never on the strength of an estimate alone) **and** its rank among
        the wanted ones was verified (``verified``: no eigenvalue that should come before it,
        such as a further copy of a repeated one, was found in the complement of the pairs).
    residuals : (k,) array
        Relative residuals ``||H v - λ v|| / |λ|`` of the returned pairs.
    n_matvecs : int
        Operator applications (vectors, not calls): the HVPs of a Hessian.
    method : str
    which : str
    status : {"converged", "budget", "maxiter", "not_converged"}
        ``"budget"``: stopped when ``max_hvps`` products were spent; ``"maxiter"``: stopped by
        the iteration (power) or restart (Lanczos) limit; ``"not_converged"``: the solver
        stopped but a recomputed residual disagrees with its estimate.
    message : str
        One line for people, e.g. ``"not converged after 500 HVPs (budget max_hvps=500): 3 of 5
        pairs met tol 1e-06; ranks not verified (the solve did not converge)"``.
    residual_converged : (k,) bool array
        The residual test alone (what ``converged`` meant before the verification restart).
        Defaults to ``converged``.
    verified : bool
        Whether the verification restart established that the pairs are the k wanted ones
        (with multiplicity). True for ``exact``; False when it was skipped (``verify=False``,
        or the solve did not converge) or ran out of budget.
    n_verify_hvps : int
        Operator applications spent by the verification (included in ``n_matvecs``).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    residuals: np.ndarray
    n_matvecs: int
    method: str
    which: str
    status: str = "converged"
    message: str = ""
    residual_converged: np.ndarray | None = None
    verified: bool = True
    n_verify_hvps: int = 0

    def __post_init__(self) -> None:
        if self.residual_converged is None:
            self.residual_converged = np.asarray(self.converged, dtype=bool).copy()

    @property
    def eigenvalue(self) -> float:
        """The first eigenvalue (e.g. λmax for ``k=1``)."""
        return float(self.eigenvalues[0])

    @property
    def n_hvps(self) -> int:
        """Operator applications used (the same as ``n_matvecs``)."""
        return self.n_matvecs

    @property
    def all_converged(self) -> bool:
        """Whether every returned pair met the tolerance."""
        return bool(np.all(self.converged))


@dataclass
class TraceResult:
    """A trace estimate.

    Attributes
    ----------
    estimate : float
    std_error : float
        Standard error of the estimate (0 for ``exact``). For Hutch++ it is the error of the
        Hutchinson part given the sketched subspace, whose contribution is exact.
    n_matvecs : int
        Operator applications used.
    method : {"hutchinson", "hutch++", "exact"}
    samples : (m,) array
        Per-probe values ``z^T A z`` of the Hutchinson part (empty for ``exact``).
    converged : bool
        Whether the estimate is the one asked for: all ``n_samples`` probes were used (or, with
        a ``tol``, the relative standard error reached it). False when ``max_hvps`` cut it short.
    status : {"converged", "budget"}
    message : str
    """

    estimate: float
    std_error: float
    n_matvecs: int
    method: str
    samples: np.ndarray
    converged: bool = True
    status: str = "converged"
    message: str = ""

    @property
    def n_hvps(self) -> int:
        """Operator applications used (the same as ``n_matvecs``)."""
        return self.n_matvecs


@dataclass
class DensityResult:
    """A spectral density on a grid.

    Attributes
    ----------
    grid : (g,) array
        Eigenvalue axis, equally spaced.
    density : (g,) array
        Gaussian-broadened density; integrates to 1 over ``grid`` (trapezoid rule) when the
        grid covers the nodes by 6σ with spacing at most σ/3, which the default grid does.
    sigma : float
        Standard deviation of the Gaussian placed on every node.
    nodes : (r, m) array
        Quadrature nodes of each run (Ritz values; the eigenvalues for ``exact``); unused
        entries (a run that stopped early) are NaN.
    weights : (r, m) array
        Quadrature weights of each run (each row sums to 1); 0 where unused.
    method : {"slq", "exact"}
    eigenvalues : (n,) array or None
        The exact eigenvalues (``exact`` only).
    hist : (bins,) array or None
        Normalised histogram of the exact eigenvalues (``exact`` only).
    hist_edges : (bins + 1,) array or None
    n_matvecs : int
        Operator applications used (0 for ``exact``).
    converged : bool
        Whether every run took the ``n_iter`` Lanczos steps asked for (or found an invariant
        subspace first); False when ``max_hvps`` cut the runs short.
    status : {"converged", "budget"}
    message : str
    """

    grid: np.ndarray
    density: np.ndarray
    sigma: float
    nodes: np.ndarray
    weights: np.ndarray
    method: str
    eigenvalues: np.ndarray | None = None
    hist: np.ndarray | None = None
    hist_edges: np.ndarray | None = None
    n_matvecs: int = 0
    converged: bool = True
    status: str = "converged"
    message: str = ""

    @property
    def n_hvps(self) -> int:
        """Operator applications used (the same as ``n_matvecs``)."""
        return self.n_matvecs

    def run_moments(self, p: int) -> np.ndarray:
        """The p-th moment ``sum_j w_j θ_j**p`` of each run's quadrature.

        Each is an unbiased estimate of ``tr(H**p) / n`` (exact for ``exact``).

        Parameters
        ----------
        p : int
            Order of the moment.

        Returns
        -------
        (r,) array
            One value per run.
        """
        nodes = np.where(self.weights > 0, self.nodes, 0.0)
        return (self.weights * nodes**p).sum(axis=1)

    def moment(self, p: int) -> float:
        """p-th moment of the (unbroadened) spectral measure: mean over runs."""
        return float(self.run_moments(p).mean())

    def moment_std_error(self, p: int) -> float:
        """Standard error of :meth:`moment` over the runs (0 for a single run or ``exact``)."""
        m = self.run_moments(p)
        if self.method == "exact" or m.size < 2:
            return 0.0
        return float(m.std(ddof=1) / np.sqrt(m.size))

    def integral(self) -> float:
        """Trapezoid integral of ``density`` over ``grid`` (1 up to discretisation)."""
        return float(np.trapezoid(self.density, self.grid))
