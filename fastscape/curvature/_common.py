"""What every curvature solver shares: the operator check, the product on rows, the sign
convention, the budget and the progress bar."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from .._validation import check_positive_int

#: Hard cap of the default HVP budget of the Krylov solvers (Lanczos): ``min(10 n, this)``.
#: A Lanczos solve at the default tolerance (1e-6) on the Hessians of the benchmark MLPs
#: converges in tens to a few hundred products; the cap bounds a solve whose spectrum
#: converges slowly at a few thousand HVPs (seconds on the digits MLPs, see bench/NOTES.md),
#: and it says so in the result instead of running on.
MAX_HVPS_CAP = 5000


def as_operator(A, name: str = "A") -> LinearOperator:
    """``A`` as a square float64 ``LinearOperator`` (arrays and sparse matrices are wrapped).

    Raises
    ------
    TypeError
        ``A`` is a plain callable (the old ``(matvec, n, batched)`` protocol) or not a matrix.
    ValueError
        ``A`` is not square.
    """
    if not isinstance(A, LinearOperator):
        if callable(A) and not hasattr(A, "shape"):
            raise TypeError(
                f"{name} must be a scipy.sparse.linalg.LinearOperator (or an array), got a "
                f"callable; wrap it: LinearOperator((n, n), matvec=f, matmat=g, dtype=float)"
            )
        try:
            A = aslinearoperator(A)
        except TypeError as err:
            raise TypeError(
                f"{name} must be a scipy.sparse.linalg.LinearOperator or an array, "
                f"got {type(A).__name__}"
            ) from err
    if len(A.shape) != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square, got shape {A.shape}")
    return A


def apply_rows(A: LinearOperator, V: np.ndarray) -> np.ndarray:
    """Rows ``A @ V[i]`` for the rows of V (b, n), checked for shape and finiteness.

    Uses the operator's native row-block product when it has one (``HessianOperator.rows``:
    one pass over the data for all b vectors), else ``A.matmat(V.T).T``.
    """
    rows = getattr(A, "rows", None)
    if rows is not None:
        out = np.asarray(rows(V), dtype=np.float64)
    else:
        out = np.ascontiguousarray(np.asarray(A.matmat(V.T), dtype=np.float64).T)
    if out.shape != V.shape:
        raise ValueError(f"the operator returned shape {out.shape} for input rows {V.shape}")
    if not np.isfinite(out).all():
        raise FloatingPointError("the operator returned non-finite values (NaN or infinity)")
    return out


def row_signs(V: np.ndarray) -> np.ndarray:
    """The sign convention of every eigenvector in fastscape: +1 or -1 per row of V (b, n),
    making the entry of largest magnitude (the first one on ties) positive; +1 for a zero row."""
    V = np.atleast_2d(V)
    s = np.sign(V[np.arange(V.shape[0]), np.abs(V).argmax(axis=1)])
    s[s == 0] = 1.0
    return s


def fix_signs(V: np.ndarray) -> np.ndarray:
    """``V`` with each row's sign fixed by :func:`row_signs` (a new array, same shape as V,
    (b, n) or (n,)): reproducible eigenvector signs."""
    V = np.asarray(V)
    s = row_signs(V)
    return V * (s[:, None] if V.ndim == 2 else s[0])


def orth_rows(V: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the rows of V (b, n) (QR; b <= n)."""
    Q, R = np.linalg.qr(V.T)
    # keep the orientation of the inputs (QR may flip signs)
    d = np.sign(np.diag(R))
    d[d == 0] = 1.0
    return np.ascontiguousarray((Q * d).T)


def order(vals: np.ndarray, which: str) -> np.ndarray:
    """Indices of vals in the order of ``which`` (stable). The same rule as the Lanczos step's
    ``kernels.lanczos.ritz_order``, which sorts at most ``ncv`` values by insertion; here any
    number (the exact method's full spectrum)."""
    if which == "LA":
        return np.argsort(-vals, kind="stable")
    if which == "SA":
        return np.argsort(vals, kind="stable")
    return np.argsort(-np.abs(vals), kind="stable")


def rademacher(rng, shape) -> np.ndarray:
    """Uniform ±1 entries (float64)."""
    return rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0


def check_n_k(n: int, k) -> int:
    """Validate ``1 <= k < n``."""
    k = check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k must be smaller than n: got k={k} >= n={n}")
    return k


def check_budget(max_hvps, default: int, minimum: int = 1) -> int:
    """``max_hvps`` validated (an int >= ``minimum``), or ``default`` when None."""
    if max_hvps is None:
        return max(int(default), minimum)
    return check_positive_int(max_hvps, "max_hvps", minimum=minimum)


def krylov_budget(n: int) -> int:
    """Default ``max_hvps`` of a Krylov solve on an n x n operator: ``min(10 n, MAX_HVPS_CAP)``."""
    return min(10 * n, MAX_HVPS_CAP)


class Progress:
    """A tqdm bar counting operator products, or nothing (``enabled=False``).

    tqdm is imported only when a bar is asked for.
    """

    def __init__(self, enabled: bool, total: int | None, desc: str):
        if not isinstance(enabled, bool):
            raise TypeError(f"progress must be True or False, got {enabled!r}")
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="HVP", leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
