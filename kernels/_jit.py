"""The one decorator factory for every CPU kernel.

All compile options live here: ``cache=True`` (a second process loads the machine code from
the on-disk cache instead of recompiling), ``error_model="numpy"`` (division by zero gives inf/nan
as in NumPy, no exception checks in loops) and an explicit fastmath flag set.

The flag set deliberately leaves out ``nnan`` and ``ninf`` (which would let LLVM delete NaN
checks and hide overflow) and ``afn`` (approximate libm calls). ``reassoc`` is kept: it lets
LLVM vectorise dot products and reductions. The reassociation is fixed at compile time, so
results stay bitwise reproducible run to run; tests check agreement with the NumPy reference
to 1e-10 and that NaN/Inf still propagate.

The on-disk cache lives in a per-user directory (:func:`cache_dir`), never beside the installed
sources: a cache written into ``site-packages/fastscape/kernels/__pycache__`` survives
``pip uninstall`` (pip removes only the files it installed) and the leftover folder then shadows
a later editable install as a namespace package. ``NUMBA_CACHE_DIR``, when set, is honoured as
Numba always does; ``FASTSCAPE_CACHE_DIR`` moves fastscape's kernels alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numba
from numba.core import config as _numba_config

FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "reassoc"})


def cache_dir() -> Path:
    """Where fastscape's compiled kernels are cached when ``NUMBA_CACHE_DIR`` is not set.

    ``FASTSCAPE_CACHE_DIR`` if set; else ``%LOCALAPPDATA%\\fastscape\\numba`` on Windows,
    ``~/Library/Caches/fastscape/numba`` on macOS and ``$XDG_CACHE_HOME/fastscape/numba``
    (default ``~/.cache/fastscape/numba``) elsewhere. Numba keeps one subfolder per source
    folder, so installs in different places never share entries. Where the folder cannot be
    created or written, Numba falls back to its default location beside the sources.
    """
    env = os.environ.get("FASTSCAPE_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fastscape" / "numba"


def _cached(decorate, fn):
    """Apply a caching Numba decorator with the per-user cache folder (Numba picks a
    function's cache folder when the decorator runs, from ``numba.config.CACHE_DIR``; the
    setting is restored at once, so the user's own Numba functions are not affected)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return decorate(fn)
    saved = _numba_config.CACHE_DIR
    _numba_config.CACHE_DIR = str(cache_dir())
    try:
        return decorate(fn)
    finally:
        _numba_config.CACHE_DIR = saved


def jit(parallel: bool = False, cache: bool = True, reassoc: bool = True, **options):
    """Return a ``numba.njit`` decorator with the project's compile options.

    ``cache=False`` only for kernels that take a user's jitted function as an argument: their
    compiled code is keyed on that function object, so an on-disk cache would never be hit and
    would only grow.

    ``reassoc=False`` drops ``reassoc`` from the fastmath flags, for kernels whose sums must
    come out the same in the process that compiled them and in every process that loads them
    from the cache. With ``reassoc``, the code LLVM generates for a kernel that calls other
    kernels differs between the two (measured on the HVP's R-passes: a last-bit difference in
    H v between a cold-compiling process and a cached one), which broke bitwise comparisons
    across processes (Dask workers against the client).
    """
    flags = set(FASTMATH_FLAGS) if reassoc else set(FASTMATH_FLAGS) - {"reassoc"}
    decorate = numba.njit(
        cache=cache,
        fastmath=flags,
        error_model="numpy",
        parallel=parallel,
        nogil=True,
        **options,
    )
    if not cache:
        return decorate
    return lambda fn: _cached(decorate, fn)
