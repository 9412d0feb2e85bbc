"""Compiled kernels of fastscape (installed as ``fastscape.kernels``).

Kernels take arrays and sizes and trust them: every check happens once, in the Python API,
before a kernel runs. Nothing here imports the API or the reference twins.
"""

if __name__ != "fastscape.kernels":
    # Imported as a top-level ``kernels`` (e.g. with the repository root on sys.path): refuse,
    # since Numba's on-disk cache would record the wrong module name for every kernel.
    raise ImportError(
        f"the kernels package must be imported as 'fastscape.kernels', not {__name__!r}; "
        "install fastscape (pip install -e .) and import fastscape.kernels"
    )
