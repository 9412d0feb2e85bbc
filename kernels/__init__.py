"""Compiled kernels of fastscape (installed as ``fastscape.kernels``).

Kernels take arrays and sizes and trust them: every check happens once, in the Python API,
before a kernel runs. Nothing here imports the API or the reference twins.
"""
