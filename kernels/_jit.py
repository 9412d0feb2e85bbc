"""The one decorator factory for every CPU kernel.

All compile options live here: ``cache=True`` (a second process loads the machine code from
``__pycache__`` instead of recompiling), ``error_model="numpy"`` (division by zero gives inf/nan
as in NumPy, no exception checks in loops) and an explicit fastmath flag set.

The flag set deliberately leaves out ``nnan`` and ``ninf`` (which would let LLVM delete NaN
checks and hide overflow) and ``afn`` (approximate libm calls). ``reassoc`` is kept: it lets
LLVM vectorise dot products and reductions. The reassociation is fixed at compile time, so
results stay bitwise reproducible run to run; tests check agreement with the NumPy reference
to 1e-10 and that NaN/Inf still propagate.
"""

from __future__ import annotations

import numba

FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "reassoc"})


def jit(parallel: bool = False, cache: bool = True, **options):
    """Return a ``numba.njit`` decorator with the project's compile options.

    ``cache=False`` only for kernels that take a user's jitted function as an argument: their
    compiled code is keyed on that function object, so an on-disk cache would never be hit and
    would only grow.
    """
    return numba.njit(
        cache=cache,
        fastmath=set(FASTMATH_FLAGS),
        error_model="numpy",
        parallel=parallel,
        nogil=True,
        **options,
    )
