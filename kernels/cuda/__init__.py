"""CUDA twins of the CPU kernels (installed as ``fastscape.kernels.cuda``; needs ``numba-cuda``).

One file per CPU twin, with the same names: :mod:`.mlp` (loss, loss + gradient, batched
Hessian-vector products) and :mod:`.span` (loss and accuracy at many points in the span of a
few vectors). Each file holds ``@cuda.jit`` kernels and a plain-Python host driver with the
CPU kernel's name and arguments, plus the launch shape.

Like the CPU kernels they trust their inputs: validation happens once in the API
(``fastscape._device`` dispatches there after the model has checked everything).

Determinism: no floating-point atomics anywhere. Every sum is owned by one thread that adds in
a fixed order (samples of a block in order, blocks in order), or written as per-thread partials
that the host adds in a fixed order. Two runs with the same launch shape give identical bits.

Importing this package imports ``numba.cuda`` (from the ``numba-cuda`` package). Set
``NUMBA_ENABLE_CUDASIM=1`` before numba is first imported to run the kernels on Numba's
simulator (no GPU needed; one Python thread per CUDA thread, so only for tiny problems).
"""
