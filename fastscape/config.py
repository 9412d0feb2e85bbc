"""Tunables of fastscape, in one place.

They are read by the Python API and passed to kernels as arguments: kernels never read module
globals (Numba would freeze them into cached machine code).
"""

from __future__ import annotations

#: Samples are split into this many fixed chunks for parallel reductions. The partition depends
#: only on n and this number, never on the thread count, so results are thread-count invariant.
N_CHUNKS = 32

#: Smallest chunk worth a task of its own (fewer chunks are used for small n).
MIN_CHUNK = 16

#: ``hessian`` refuses models with more parameters than this unless ``max_params`` is raised.
HESSIAN_MAX_PARAMS = 5000

#: Memory budget (bytes) of the scratch space of one batched HVP call while building a Hessian.
HVP_SCRATCH_BYTES = 256 * 2**20


def n_chunks_for(n: int) -> int:
    """Number of chunks used for n samples: depends only on n."""
    return max(1, min(N_CHUNKS, n // MIN_CHUNK))
