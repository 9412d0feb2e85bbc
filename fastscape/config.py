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

#: Memory budget (bytes) of one block of samples in the loss, gradient and logits kernels (the
#: pre-activations, activations and deltas of every layer); the block size is a fixed function of
#: the layer sizes (``mlp_block_for``), so results do not depend on the thread count.
MLP_SCRATCH_BYTES = 32 * 2**20


def mlp_block_for(sizes) -> int:
    """Samples per block of the loss/gradient kernels for layer ``sizes`` (input first)."""
    per_sample = 8 * 3 * sum(int(s) for s in sizes[1:])
    return max(256, MLP_SCRATCH_BYTES // per_sample)


#: Blocks whose logits have fewer entries than this compute their loss on one thread (same
#: chunks, same bits): waking the thread team costs more than the work below ~40k entries.
MLP_SERIAL_BELOW = 40000

#: Memory budget (bytes) of the scratch space of one batched HVP call.
HVP_SCRATCH_BYTES = 256 * 2**20

#: Largest sample block of the cached HVP operator (``kernels.hvp``, behind
#: ``curvature.hessian_matvec``): the samples are split into ``ceil(n / HVP_SAMPLE_BLOCK)``
#: fixed blocks (a partition depending on n only) whose results are added in order. Its vectors
#: go through in chunks whose scratch stays under ``HVP_SCRATCH_BYTES``.
HVP_SAMPLE_BLOCK = 1024

#: Sample blocks per wave of the HVP operator: the partial rows kept per vector (at most
#: ``HVP_WAVE * P`` doubles, whatever n). The results do not depend on it.
HVP_WAVE = 8

#: float32 on the CPU (``dtype="float32"``): the largest number of samples whose sum a
#: single-precision BLAS product takes in float32 (the sample blocks of the loss, gradient and
#: HVP kernels); the block totals are added in float64. Its relative rounding error grows like
#: the square root of this count times float32's epsilon (6e-8).
F32_SAMPLE_BLOCK = 256

#: Memory budget (bytes) of one per-sample factor matrix of the exact Hessian (samples are
#: processed in blocks so that the widest factor fits; the Hessian itself is extra).
HESSIAN_SCRATCH_BYTES = 64 * 2**20


def n_chunks_for(n: int) -> int:
    """Number of chunks used for n samples: depends only on n."""
    return max(1, min(N_CHUNKS, n // MIN_CHUNK))


# ----------------------------------------------------------------------------- span engine
#: Samples per block of the span engine (``kernels.span``): the block partition depends only on
#: n and this number, so results do not depend on the thread count or on how points are tiled.
SPAN_BLOCK = 2048

#: Memory budget (bytes) of the first-layer products F (K, block, h1) of one block; the block
#: shrinks (never below SPAN_MIN_BLOCK) when K * h1 is large.
SPAN_SCRATCH_BYTES = 64 * 2**20

#: Smallest block the span engine uses.
SPAN_MIN_BLOCK = 64

#: Points per parallel task inside the span engine.
SPAN_POINT_CHUNK = 8

#: Samples per cache tile inside a block of the span engine (models with hidden layers). Speed
#: only: each point sums its samples in the same order whatever this is.
SPAN_SUB_BLOCK = 32

#: Samples per tile of the span engine's general path (``kernels.span_deep``: two or more hidden
#: layers, and every model in float32), a multiple of 4. Each tile's later layers are BLAS
#: products of this many rows, so a point's bits depend on it (as on the block length); changing
#: it changes the rounding.
SPAN_DEEP_TILE = 64

#: Points per tile of a landscape evaluation (progress and checkpoint granularity).
SPAN_TILE = 2048

#: Points per tile of a curvature map (``landscape.curvature_map``): each tile is one chain of
#: warm-started eigensolves along the serpentine scan, started cold at its first point, so the
#: map's bits depend on this number (recorded in its settings and checkpoints), its values only
#: to within the solver tolerance. Smaller tiles: more cold starts, more parallel tasks.
CURVATURE_MAP_TILE = 64

#: ``curvature_map(method="auto")`` takes ``eigvalsh`` of the exact Hessian at every point up to
#: this many parameters, Lanczos above: forming the Hessian costs about ``2 n P**2`` flops in
#: large GEMMs and ``eigvalsh`` about ``(4/3) P**3``, against about 60-100 HVPs of ``~5 n P``
#: flops each (two warm-started, verified Lanczos solves), so the exact path stops paying off
#: at a few hundred parameters.
CURVATURE_MAP_EXACT_MAX_PARAMS = 400

#: Grid points per axis of a curvature map when none are given.
CURVATURE_MAP_POINTS = 21

#: A progress bar is shown (progress=None) when the estimated work, in multiply-adds, exceeds
#: this (about a second of compute).
PROGRESS_MIN_WORK = 2e9


def span_block_for(K: int, h1: int) -> int:
    """Samples per block of the span engine for K basis vectors and h1 first-layer units."""
    fit = SPAN_SCRATCH_BYTES // max(1, 8 * K * h1)
    return int(max(SPAN_MIN_BLOCK, min(SPAN_BLOCK, fit)))


# ----------------------------------------------------------------------------- CUDA kernels
#: Threads per CUDA block of every kernel in ``kernels/cuda`` (a multiple of the warp size, 32).
CUDA_THREADS_PER_BLOCK = 128

#: Total threads of the CUDA loss kernel: thread t sums samples t, t + T, ... into its own
#: partial, and the host adds the partials in order (the bits depend on this number).
CUDA_LOSS_THREADS = 16384

#: Samples per block of the CUDA gradient and HVP kernels (per-sample rows of activations and
#: deltas are kept for one block at a time; the bits depend on n and this number only).
CUDA_BLOCK = 8192

#: Memory budget (bytes) of the per-sample R-pass rows of one batched CUDA HVP block; the block
#: shrinks (never below 1 sample) when K vectors would not fit.
CUDA_SCRATCH_BYTES = 512 * 2**20

#: Threads per point of the CUDA span engine: slot s sums samples s, s + S, ... of each block
#: (32: one warp per point; the bits depend on this number and CUDA_SPAN_BLOCK, not on the
#: launch shape).
CUDA_SPAN_SLOTS = 32

#: Samples per block of the CUDA span engine (memory K * block * h1 floats for the first-layer
#: products; it shrinks like ``span_block_for`` when K * h1 is large).
CUDA_SPAN_BLOCK = 4096


def cuda_span_block_for(K: int, h1: int) -> int:
    """Samples per block of the CUDA span engine for K basis vectors and h1 first-layer units."""
    fit = SPAN_SCRATCH_BYTES // max(1, 8 * K * h1)
    return int(max(1, min(CUDA_SPAN_BLOCK, fit)))
