"""What the kernels are given: validated data (:class:`Batch`, :class:`DeviceBatch`) and the
model's description (:class:`ModelSpec`).

This module sits below both :mod:`fastscape.models` (which builds these objects from what a
user passes) and the dispatch seam :mod:`fastscape._device` (which hands them to a backend),
so neither has to import the other. The CUDA copies of a :class:`DeviceBatch` are made by
``fastscape.kernels.cuda``, imported only when a copy is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """Validated data in kernel form: X (n, d) and the target matrix Y (n, out), both float64."""

    X: np.ndarray
    Y: np.ndarray


class DeviceBatch(Batch):
    """A :class:`Batch` whose arrays also live on the GPU.

    ``X`` and ``Y`` are the host arrays (so the CPU path and every check work unchanged);
    :meth:`device_arrays` returns their device copies in a given precision, made once (by
    :func:`fastscape._device.to_device`, or at the first call that needs another precision)
    and kept. Do not modify ``X`` or ``Y`` in place afterwards: the device copies would not
    follow.
    """

    def device_arrays(self, dtype: str = "float64"):
        """Device copies (X, Y) in ``dtype``, copied at the first request."""
        cache = self.__dict__.setdefault("_copies", {})
        if dtype not in cache:
            cache[dtype] = _copy(self, dtype)
        return cache[dtype]

    @property
    def device_X(self):
        """Device copy of X in float64."""
        return self.device_arrays()[0]


def copy_to_device(data: Batch, dtype: str):
    """Device copies (X, Y) of ``data`` in ``dtype``: those a DeviceBatch keeps (made at the
    first request), else copied now for this one call."""
    if isinstance(data, DeviceBatch):
        return data.device_arrays(dtype)
    return _copy(data, dtype)


def _copy(data: Batch, dtype: str):
    from .kernels.cuda import mlp

    return mlp.to_device(data.X, dtype), mlp.to_device(data.Y, dtype)


@dataclass(frozen=True)
class ModelSpec:
    """What a kernel needs to know about a model: its sizes and its element-wise codes.

    Built by :class:`fastscape.models.MLP` (``model.spec``) and read by the backends of
    :mod:`fastscape._device`; nothing else of the model reaches a kernel.

    Attributes
    ----------
    sizes : tuple of int
        Units per layer, input first: ``(d, h1, ..., out)``.
    activation : int
        Code of the hidden layers' activation (``fastscape.kernels.mlp.TANH``, ...).
    loss : int
        Code of the per-sample loss (``fastscape.kernels.mlp.SOFTMAX_CE``, ...).
    l2 : float
        Coefficient λ of the L2 term ``½ λ ‖w‖²`` (0: none).
    l2_bias : bool
        Whether the L2 term covers the biases too.
    sizes_array : (L+1,) int64 array
        ``sizes`` as the kernels take it (do not modify it).
    penalty : (P,) float64 array or None
        The L2 term's per-parameter weights as the kernels take them (``λ`` on the penalised
        entries, 0 elsewhere); None without an L2 term.
    """

    sizes: tuple[int, ...]
    activation: int
    loss: int
    l2: float = 0.0
    l2_bias: bool = False
    sizes_array: np.ndarray = field(init=False, repr=False, compare=False)
    penalty: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .kernels import penalty

        # made once per model: the kernels take them on every call
        sizes = np.array(self.sizes, dtype=np.int64)
        object.__setattr__(self, "sizes_array", sizes)
        weights = penalty.l2_vector(sizes, self.l2, self.l2_bias) if self.l2 > 0.0 else None
        object.__setattr__(self, "penalty", weights)

    @property
    def kernel_args(self) -> tuple:
        """The leading model arguments of every kernel: ``(sizes_array, activation, loss)``."""
        return self.sizes_array, self.activation, self.loss

    @property
    def n_params(self) -> int:
        """Length P of the flat parameter vector."""
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def n_outputs(self) -> int:
        """Units of the output layer."""
        return self.sizes[-1]

    @property
    def is_linear(self) -> bool:
        """True without a hidden layer (logistic, linear and softmax regression)."""
        return len(self.sizes) == 2
