"""The model family: dense networks (MLPs) held as one flat float64 parameter vector.

Logistic and linear regression are the members with no hidden layer (``Logistic(d)`` is
``MLP([d, 1], loss="logistic")``, ``LinearRegression(d)`` is ``MLP([d, 1], loss="mse")``), so
every tool of the library works on all of them through the same kernels; the closed-form
Hessians of the no-hidden-layer members are a fast path inside ``MLP.hessian``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _device, config
from ._validation import (
    as_float_array,
    as_vector,
    check_choice,
    check_finite,
    check_positive_float,
    check_positive_int,
)
from .data import Batch, DeviceBatch, ModelSpec
from .kernels import elementwise as _el
from .kernels import layout as _layout

ACTIVATIONS = {
    "identity": _el.IDENTITY,
    "tanh": _el.TANH,
    "relu": _el.RELU,
    "sigmoid": _el.SIGMOID,
    "leaky_relu": _el.LEAKY_RELU,
    "gelu": _el.GELU,
    "gelu_tanh": _el.GELU_TANH,
}
LOSSES = {"softmax_ce": _el.SOFTMAX_CE, "logistic": _el.LOGISTIC, "mse": _el.MSE}


@dataclass(frozen=True)
class LayerLayout:
    """Where one dense layer lives in ``theta``.

    Attributes
    ----------
    weight : slice
        Slice of theta holding W, stored row-major.
    bias : slice
        Slice of theta holding b.
    shape : tuple of int
        Shape of W: (output units, input units). Row j of W is the "filter" of unit j.
    """

    weight: slice
    bias: slice
    shape: tuple[int, int]


class MLP:
    """A dense network with biases; parameters in one flat float64 vector ``theta``.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first: ``[d, h1, ..., out]``. ``[d, out]`` is a model with no
        hidden layer (logistic or linear regression).
    activation : {"tanh", "relu", "sigmoid", "identity", "leaky_relu", "gelu", "gelu_tanh"}
        Activation of the hidden layers, as PyTorch defines them: ``leaky_relu`` has negative
        slope 0.01, ``gelu`` is the exact ``0.5 z (1 + erf(z / sqrt 2))`` and ``gelu_tanh``
        its tanh approximation (``nn.GELU(approximate="tanh")``). The output layer is affine;
        the loss applies the link.
    loss : {"softmax_ce", "logistic", "mse"}
        Loss per sample, averaged over samples:

        - ``softmax_ce``: cross-entropy of softmax(z); labels are integer classes in
          ``[0, out)`` (or rows of class probabilities, shape (n, out)); needs ``out >= 2``.
        - ``logistic``: ``softplus(z) - y z`` (binary cross-entropy of sigmoid(z)); labels in
          {0, 1}; needs ``out == 1``.
        - ``mse``: the squared error summed over outputs, ``sum_o (z_o - y_o)**2``, averaged
          over samples (no 1/2 and no division by ``out``). Targets (n,) or (n, out).
    l2 : float, optional
        λ >= 0 of the L2 term ``½ λ ‖w‖²`` added to the mean loss (default 0: none). It is
        carried through the loss, gradient, HVP, Hessian and the landscapes.
    l2_bias : bool, optional
        Whether the L2 term covers the biases too (default False: weights only).

    Attributes
    ----------
    sizes : tuple of int
    activation, loss : str
    layout : tuple of LayerLayout
        Per layer, the slices of W and b in theta and W's shape.
    n_params : int
        Length P of theta.
    spec : ModelSpec
        What the kernels are told about the model (sizes, activation and loss codes); the
        dispatch seam ``fastscape._device`` reads nothing else of it.
    """

    def __init__(
        self,
        sizes,
        activation: str = "tanh",
        loss: str = "softmax_ce",
        l2: float = 0.0,
        l2_bias: bool = False,
    ) -> None:
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output size, got {sizes}")
        for s in sizes:
            check_positive_int(s, "sizes entry")
        check_choice(activation, "activation", ACTIVATIONS)
        check_choice(loss, "loss", LOSSES)
        if loss == "logistic" and sizes[-1] != 1:
            raise ValueError(f"loss 'logistic' needs 1 output unit, got sizes[-1] = {sizes[-1]}")
        if loss == "softmax_ce" and sizes[-1] < 2:
            raise ValueError(f"loss 'softmax_ce' needs >= 2 output units, got {sizes[-1]}")
        if isinstance(l2, (bool, str)):
            raise TypeError(f"l2 must be a number, got {type(l2).__name__}")
        l2 = check_positive_float(l2, "l2", allow_zero=True)
        if not isinstance(l2_bias, (bool, np.bool_)):
            raise TypeError(f"l2_bias must be a bool, got {type(l2_bias).__name__}")
        self.sizes = tuple(int(s) for s in sizes)
        self.activation = activation
        self.loss_name = loss
        self.l2 = l2
        self.l2_bias = bool(l2_bias)
        self.spec = ModelSpec(
            self.sizes, ACTIVATIONS[activation], LOSSES[loss], float(l2), self.l2_bias
        )
        w_off, b_off, _ = _layout.layout(self.spec.sizes_array)
        self.layout = tuple(
            LayerLayout(
                slice(int(w_off[l]), int(b_off[l])),
                slice(int(b_off[l]), int(b_off[l]) + n_out),
                (n_out, n_in),
            )
            for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))
        )
        self.n_params = _layout.n_params(self.spec.sizes_array)

    # ------------------------------------------------------------------ description
    @property
    def n_inputs(self) -> int:
        """Input dimension d."""
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        """Number of output units."""
        return self.sizes[-1]

    @property
    def is_linear(self) -> bool:
        """True for the no-hidden-layer members (logistic / linear / softmax regression)."""
        return len(self.sizes) == 2

    @property
    def is_classifier(self) -> bool:
        """True for the classification losses (accuracy is defined)."""
        return self.loss_name != "mse"

    def __repr__(self) -> str:
        extra = f", l2={self.l2!r}" if self.l2 > 0.0 else ""
        extra += ", l2_bias=True" if self.l2_bias and self.l2 > 0.0 else ""
        return (
            f"MLP(sizes={list(self.sizes)}, activation={self.activation!r}, "
            f"loss={self.loss_name!r}{extra})"
        )

    def _key(self):
        # the activation means nothing without a hidden layer, l2_bias nothing without l2
        return (
            self.sizes,
            None if self.is_linear else self.activation,
            self.loss_name,
            self.l2,
            self.l2_bias and self.l2 > 0.0,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MLP) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_dict(self) -> dict:
        """The constructor's arguments (for saving a model beside its parameters)."""
        return {
            "sizes": list(self.sizes),
            "activation": self.activation,
            "loss": self.loss_name,
            "l2": self.l2,
            "l2_bias": self.l2_bias,
        }

    # ------------------------------------------------------------------ PyTorch
    @classmethod
    def from_torch(
        cls,
        module,
        loss: str | None = None,
        *,
        activation: str | None = None,
        sizes=None,
        l2: float = 0.0,
        l2_bias: bool = False,
    ) -> tuple[MLP, np.ndarray]:
        """Convert a PyTorch network, or a ``state_dict`` with its spec.

        Parameters
        ----------
        module : torch.nn.Module or state_dict (a mapping of names to tensors)
            A module: an ``nn.Sequential`` (nested ones are flattened) or a ``Linear``, made of
            ``Linear`` layers with biases separated by one activation module each (all the
            same; see ``fastscape._torch.ACTIVATION_MODULES`` for the modules of each
            activation), ending with a ``Linear`` (the loss takes logits: no final
            ``Softmax``/``Sigmoid``). A missing activation between two ``Linear`` layers means
            identity. ``Flatten()`` (identity on (n, d) inputs) and ``Dropout`` (identity in
            evaluation mode, which the conversion represents) are skipped.
            A ``state_dict`` (``net.state_dict()``): ``<layer>.weight`` (out, in) and
            ``<layer>.bias`` (out,) entries in the order of the layers; the sizes are read
            from the weight shapes. It does not say the activation: pass ``activation``.
        loss : {"softmax_ce", "logistic", "mse"}, optional
            Default: ``softmax_ce`` for several outputs, ``logistic`` for one.
        activation : str, optional
            The hidden activation of a ``state_dict`` (required when it has a hidden layer;
            a module says its own, so it is refused there).
        sizes : sequence of int, optional
            With a ``state_dict``: the expected sizes, checked against the weights.
        l2, l2_bias : optional
            The model's L2 term (see :class:`MLP`); a module does not carry one.

        Returns
        -------
        model : MLP
        theta : (P,) float64 array
            The parameters in fastscape's layout (W is (out, in) in both).
        """
        from collections.abc import Mapping

        from . import _torch

        available = tuple(ACTIVATIONS)
        if isinstance(module, Mapping):
            sizes, params = _torch.parse_state_dict(module, sizes)
            if activation is None:
                if len(sizes) > 2:
                    raise ValueError(
                        "a state_dict does not record the activation: pass activation= "
                        f"(one of {', '.join(available)})"
                    )
                activation = "identity"
        else:
            if activation is not None or sizes is not None:
                raise ValueError(
                    "activation= and sizes= are for a state_dict; a module states its own"
                )
            sizes, activation, params = _torch.parse_module(module, available)
        if loss is None:
            loss = "softmax_ce" if sizes[-1] > 1 else "logistic"
        model = cls(sizes, activation=activation, loss=loss, l2=l2, l2_bias=l2_bias)
        return model, model.flatten(params)

    def to_torch(self, theta, dtype=None):
        """The same network as a PyTorch ``nn.Sequential`` holding ``theta``.

        Parameters
        ----------
        theta : (P,) array
        dtype : torch.dtype, optional
            Parameter dtype (default float64, which reproduces fastscape's numbers).

        Returns
        -------
        torch.nn.Sequential
            ``Linear`` layers with the activation module between them; it outputs logits.
        """
        from . import _torch

        torch = _torch.torch_or_error("to_torch")
        nn = torch.nn
        dtype = torch.float64 if dtype is None else dtype
        modules: list = []
        for l, (W, b) in enumerate(self.unflatten(theta)):
            if l > 0:
                modules.append(_torch.activation_module(self.activation))
            lin = nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.as_tensor(W, dtype=dtype))
                lin.bias.copy_(torch.as_tensor(b, dtype=dtype))
            modules.append(lin)
        return nn.Sequential(*modules)

    # ------------------------------------------------------------------ parameters
    def init(self, seed: int = 0) -> np.ndarray:
        """Glorot-uniform weights, zero biases: theta (P,). Same seed, same theta."""
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params)
        for lay in self.layout:
            n_out, n_in = lay.shape
            limit = np.sqrt(6.0 / (n_in + n_out))
            theta[lay.weight] = rng.uniform(-limit, limit, size=n_out * n_in)
        return theta

    def check_theta(self, theta, name: str = "theta") -> np.ndarray:
        """Validated float64 copy-or-view of a parameter vector of length P."""
        return as_vector(theta, name, self.n_params)

    def unflatten(self, theta) -> list[tuple[np.ndarray, np.ndarray]]:
        """List of (W (out, in), b (out,)) per layer; views of theta when it is float64."""
        theta = self.check_theta(theta)
        return [(theta[lay.weight].reshape(lay.shape), theta[lay.bias]) for lay in self.layout]

    def flatten(self, params) -> np.ndarray:
        """Inverse of :meth:`unflatten`: theta (P,) from a list of (W, b)."""
        params = list(params)
        if len(params) != len(self.layout):
            raise ValueError(f"params has {len(params)} layers, expected {len(self.layout)}")
        theta = np.empty(self.n_params)
        for l, ((W, b), lay) in enumerate(zip(params, self.layout)):
            W = as_float_array(W, f"params[{l}] W", 2)
            b = as_float_array(b, f"params[{l}] b", 1)
            if W.shape != lay.shape:
                raise ValueError(f"params[{l}] W has shape {W.shape}, expected {lay.shape}")
            if b.shape != (lay.shape[0],):
                raise ValueError(f"params[{l}] b has shape {b.shape}, expected ({lay.shape[0]},)")
            theta[lay.weight] = W.ravel()
            theta[lay.bias] = b
        return theta

    # ------------------------------------------------------------------ data
    def check_X(self, X, name: str = "X") -> np.ndarray:
        """Validated float64 C-contiguous inputs (n, d)."""
        X = as_float_array(X, name, 2)
        if X.shape[1] != self.n_inputs:
            raise ValueError(f"{name} has {X.shape[1]} columns, the model expects {self.n_inputs}")
        return X

    def targets(self, y, n: int, name: str = "y") -> np.ndarray:
        """The target matrix Y (n, out) float64 for this model's loss, validated."""
        arr = np.asarray(y)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
        if arr.shape[:1] != (n,):
            raise ValueError(f"{name} has {arr.shape[0] if arr.ndim else 0} rows, X has {n}")
        out = self.n_outputs
        if self.loss_name == "mse":
            Y = as_float_array(arr, name, (1, 2))
            if Y.ndim == 1:
                if out != 1:
                    raise ValueError(f"{name} must have shape ({n}, {out}) for {out} outputs")
                Y = Y[:, None]
            if Y.shape[1] != out:
                raise ValueError(f"{name} has {Y.shape[1]} columns, the model has {out} outputs")
            return np.ascontiguousarray(Y)
        if self.loss_name == "logistic":
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise ValueError(f"{name} must be 1-D labels in {{0, 1}}, got shape {arr.shape}")
            Y = as_float_array(arr, name, 1)
            if not np.isin(Y, (0.0, 1.0)).all():
                bad = Y[~np.isin(Y, (0.0, 1.0))][0]
                raise ValueError(f"{name} must hold labels 0 or 1 for loss 'logistic', found {bad}")
            return Y[:, None].copy()
        # softmax_ce
        if arr.ndim == 2:
            Y = as_float_array(arr, name, 2)
            if Y.shape[1] != out:
                raise ValueError(f"{name} has {Y.shape[1]} columns, the model has {out} classes")
            if (Y < 0).any() or not np.allclose(Y.sum(axis=1), 1.0, rtol=0, atol=1e-9):
                raise ValueError(f"{name} rows must be class probabilities (>= 0, summing to 1)")
            return Y
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D class labels, got shape {arr.shape}")
        if arr.dtype.kind == "f":
            check_finite(arr, name)
            if not (arr == np.round(arr)).all():
                raise ValueError(
                    f"{name} must hold integer class labels, found {arr[arr != np.round(arr)][0]}"
                )
        labels = arr.astype(np.int64)
        if labels.min() < 0 or labels.max() >= out:
            bad = labels[(labels < 0) | (labels >= out)][0]
            raise ValueError(f"{name} holds label {bad}, outside [0, {out}) for {out} classes")
        Y = np.zeros((n, out))
        Y[np.arange(n), labels] = 1.0
        return Y

    def batch(self, X, y) -> Batch:
        """Validate (X, y) once; the result can be passed as ``X`` with ``y=None`` afterwards."""
        if isinstance(X, Batch) or _device.is_sharded(X):  # validated already
            if y is not None:
                raise ValueError("y must be None when X is already a Batch")
            return X
        X = self.check_X(X)
        if y is None:
            raise ValueError("y is required")
        return Batch(X, self.targets(y, X.shape[0]))

    # ------------------------------------------------------------------ evaluation
    def loss(self, theta, X, y=None, device: str = "cpu", dtype: str = "float64") -> float:
        """Mean loss over the samples.

        Parameters
        ----------
        theta : (P,) array
        X : (n, d) array, or a :class:`Batch` from :meth:`batch` (then ``y`` is None)
        y : (n,) or (n, out) array
        device : {"cpu", "cuda"}
            Where the kernel runs (``fastscape.cuda_available()`` tells whether CUDA can).
            Both give the same numbers to rtol 1e-10; each is bitwise reproducible.
        dtype : {"float64", "float32"}
            Working precision (float32: products in single precision, sums over samples in
            float64, result float64; ``docs/models.md``, "float32").

        Returns
        -------
        float
        """
        device, data, th = _device.prepare(
            self, X, y, device=device, dtype=dtype, upload=False, theta=theta
        )
        return _device.mlp_loss(self, th["theta"], data, device, dtype)

    def grad(
        self, theta, X, y=None, device: str = "cpu", dtype: str = "float64"
    ) -> tuple[float, np.ndarray]:
        """Mean loss and its gradient by backpropagation.

        Parameters
        ----------
        theta : (P,) array
        X : (n, d) array or Batch
        y : (n,) or (n, out) array
        device : {"cpu", "cuda"}
            Where the kernel runs (see :meth:`loss`).
        dtype : {"float64", "float32"}
            Working precision (float32: products in single precision, sums over samples in
            float64, result float64; ``docs/models.md``, "float32").

        Returns
        -------
        loss : float
        grad : (P,) array
        """
        device, data, th = _device.prepare(
            self, X, y, device=device, dtype=dtype, upload=False, theta=theta
        )
        return _device.mlp_loss_grad(self, th["theta"], data, device, dtype)

    def hvp(self, theta, v, X, y=None, device: str = "cpu", dtype: str = "float64") -> np.ndarray:
        """Exact Hessian-vector product(s) by Pearlmutter's R-operator.

        Parameters
        ----------
        theta : (P,) array
        v : (P,) or (K, P) array
            One vector, or K vectors sharing one pass over the data.
        X : (n, d) array or Batch
        y : (n,) or (n, out) array
        device : {"cpu", "cuda"}
            Where the kernel runs.
        dtype : {"float64", "float32"}
            Working precision (float32: products in single precision, sums over samples in
            float64, result float64; ``docs/models.md``, "float32").

        Returns
        -------
        (P,) or (K, P) array
        """
        device, data, th = _device.prepare(
            self, X, y, device=device, dtype=dtype, upload=False, theta=theta
        )
        V = as_float_array(v, "v", (1, 2))
        if V.shape[-1] != self.n_params:
            raise ValueError(f"v has length {V.shape[-1]}, expected {self.n_params}")
        out = _device.mlp_hvp(self, th["theta"], np.atleast_2d(V), data, device, dtype)
        return out[0] if V.ndim == 1 else out

    def hessian(self, theta, X, y=None, max_params: int | None = None) -> np.ndarray:
        """Exact Hessian of the mean loss.

        Closed forms through BLAS for logistic and linear regression; for other models it is
        built from its block structure: every block is a sum over samples of products of small
        per-sample factors (activations, deltas, the loss's curvature back-propagated), formed
        as weighted Gram matrices by BLAS, ``2 n`` flops per entry and symmetric by
        construction (see ``fastscape.kernels.hessian``).

        Parameters
        ----------
        theta : (P,) array
        X : (n, d) array or Batch
        y : (n,) or (n, out) array
        max_params : int, optional
            Refuse models with more parameters (default ``config.HESSIAN_MAX_PARAMS`` = 5000);
            the error says how much memory the Hessian would take.

        Returns
        -------
        (P, P) array
        """
        theta = self.check_theta(theta)
        limit = config.HESSIAN_MAX_PARAMS if max_params is None else max_params
        P = self.n_params
        if P > limit:
            gib = P * P * 8 / 2**30
            raise ValueError(
                f"the Hessian of this model is {P} x {P} ({gib:.2f} GiB in float64), above the "
                f"limit max_params={limit}; raise max_params to build it, or use matrix-free "
                "tools (hvp, Lanczos) instead"
            )
        data = self.batch(X, y)
        return _device.mlp_hessian(self, theta, data)

    def logits(self, theta, X) -> np.ndarray:
        """Outputs of the last (affine) layer, (n, out)."""
        theta = self.check_theta(theta)
        X = X.X if isinstance(X, Batch) else self.check_X(X)
        return _device.mlp_logits(self, theta, X)

    def predict(self, theta, X) -> np.ndarray:
        """Predictions of the model.

        Parameters
        ----------
        theta : (P,) array
        X : (n, d) array or Batch

        Returns
        -------
        array
            P(y=1), shape (n,), for logistic; class probabilities (n, C) for softmax-CE;
            outputs (n,) or (n, out) for MSE.
        """
        z = self.logits(theta, X)
        if self.loss_name == "logistic":
            return 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))
        if self.loss_name == "softmax_ce":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return z[:, 0] if self.n_outputs == 1 else z

    def accuracy(self, theta, X, y=None) -> float:
        """Fraction of samples classified correctly (classification losses only)."""
        if not self.is_classifier:
            raise ValueError("accuracy is defined for the classification losses, not 'mse'")
        data = self.batch(X, y)
        z = self.logits(theta, data)
        if self.loss_name == "logistic":
            return float(np.mean((z[:, 0] > 0) == (data.Y[:, 0] > 0.5)))
        return float(np.mean(z.argmax(axis=1) == data.Y.argmax(axis=1)))


def Logistic(d: int) -> MLP:
    """Logistic regression on d features: ``MLP([d, 1], loss="logistic")``."""
    return MLP([d, 1], activation="identity", loss="logistic")


def LinearRegression(d: int, n_outputs: int = 1) -> MLP:
    """Least-squares regression: ``MLP([d, n_outputs], loss="mse")``."""
    return MLP([d, n_outputs], activation="identity", loss="mse")


__all__ = [
    "MLP",
    "Batch",
    "DeviceBatch",
    "LayerLayout",
    "LinearRegression",
    "Logistic",
    "ModelSpec",
]
