"""Conversion between PyTorch modules (or their ``state_dict``) and the MLP family.

:meth:`fastscape.MLP.from_torch` and :meth:`fastscape.MLP.to_torch` are the public face; this
module holds the tables and the parsing so that models.py stays about the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: fastscape activation name -> (torch.nn class name, the constructor arguments that make it
#: the same function). Adding an activation to the model family is one line here; names that
#: the kernels do not provide yet are refused with a message.
ACTIVATION_MODULES: dict[str, tuple[str, dict]] = {
    "identity": ("Identity", {}),
    "tanh": ("Tanh", {}),
    "relu": ("ReLU", {}),
    "sigmoid": ("Sigmoid", {}),
    "leaky_relu": ("LeakyReLU", {"negative_slope": 0.01}),
    "gelu": ("GELU", {"approximate": "none"}),
    "gelu_tanh": ("GELU", {"approximate": "tanh"}),
}


def torch_or_error(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{what} needs PyTorch: pip install torch==2.13.0 (the CPU build)"
        ) from None
    return torch


def activation_module(name: str):
    """A new torch module computing the activation ``name``."""
    nn = torch_or_error("to_torch").nn
    cls, kwargs = ACTIVATION_MODULES[name]
    return getattr(nn, cls)(**kwargs)


def _activation_name(layer, where: str, available) -> str | None:
    """fastscape's name for an activation module, None if the layer is no activation."""
    cls = type(layer).__name__
    candidates = [(n, kw) for n, (c, kw) in ACTIVATION_MODULES.items() if c == cls]
    if not candidates:
        return None
    for name, kwargs in candidates:
        if all(getattr(layer, k, None) == v for k, v in kwargs.items()):
            if name not in available:
                raise ValueError(
                    f"{where} ({cls}): activation {name!r} is not available in this fastscape "
                    f"(available: {', '.join(available)})"
                )
            return name
    settings = ", ".join(f"{k}={getattr(layer, k, None)!r}" for k in candidates[0][1])
    known = "; ".join(
        f"{n}: " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) for n, kw in candidates
    )
    raise ValueError(f"{where} ({cls}) has {settings}; fastscape's are {known}")


def _leaves(module, prefix: str, nn):
    """(qualified name, module) of the layers of nested Sequentials, in order."""
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name, nn)
    else:
        yield prefix or "0", module


def parse_module(module, available) -> tuple[list[int], str, list]:
    """Sizes, activation and [(W, b)] of a Sequential (nested ones flattened).

    ``Flatten`` (over all but the batch dimension) and ``Dropout`` (identity in evaluation
    mode, which is what the conversion represents) are skipped.
    """
    nn = torch_or_error("from_torch").nn
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module must be a torch.nn.Module or a state_dict, got {type(module).__name__}"
        )
    linears: list = []
    activation = None
    pending = None  # activation seen since the last Linear
    for index, layer in _leaves(module, "", nn):
        where = f"layer {index}"
        kind = type(layer).__name__
        if isinstance(layer, nn.Dropout):
            continue
        if isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise ValueError(
                    f"{where} (Flatten) has start_dim={layer.start_dim}, end_dim={layer.end_dim}; "
                    "only Flatten() (all but the batch dimension, identity on (n, d) inputs) "
                    "is supported"
                )
            continue
        if isinstance(layer, nn.Linear):
            if layer.bias is None:
                raise ValueError(f"{where} (Linear) has no bias; fastscape's dense layers all do")
            if linears:
                act = pending or "identity"
                if activation is not None and act != activation:
                    raise ValueError(
                        f"{where}: mixed activations ({activation} then {act}); "
                        "fastscape's MLP uses one activation for all hidden layers"
                    )
                activation = act
            linears.append((where, layer))
            pending = None
            continue
        name = _activation_name(layer, where, available)
        if name is None:
            supported = sorted({c for c, _ in ACTIVATION_MODULES.values()})
            raise ValueError(
                f"{where} ({kind}) is not supported: use Linear layers with one of "
                f"{', '.join(supported)} between them (Flatten and Dropout are skipped)"
            )
        if not linears or pending is not None:
            raise ValueError(f"{where} ({kind}) must sit between two Linear layers")
        pending = name
    if not linears:
        raise ValueError("the module holds no Linear layer")
    if pending is not None:
        raise ValueError(
            f"the module ends with an activation ({pending}); the loss takes logits, so "
            "remove the final activation"
        )
    for (wa, a), (wb, b) in zip(linears[:-1], linears[1:]):
        if b.in_features != a.out_features:
            raise ValueError(
                f"{wa} and {wb} do not chain ({a.out_features} outputs, {b.in_features} inputs)"
            )
    sizes = [linears[0][1].in_features] + [lin.out_features for _, lin in linears]
    params = [(_array(lin.weight), _array(lin.bias)) for _, lin in linears]
    return sizes, activation or "identity", params


def _array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.array(value, dtype=np.float64)


def parse_state_dict(state: Mapping, sizes=None) -> tuple[list[int], list]:
    """Sizes and [(W, b)] of a state_dict of dense layers (``<prefix>.weight``/``.bias``).

    Layers are taken in the order of the dict (the order of the module that wrote it); the
    sizes are inferred from the weight shapes, and checked against ``sizes`` when given.
    """
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        prefix, _, leaf = str(key).rpartition(".")
        if leaf not in ("weight", "bias"):
            raise ValueError(
                f"state_dict entry {key!r} is not a dense layer's weight or bias (fastscape's "
                "MLP holds only Linear layers)"
            )
        layers.setdefault(prefix, {})[leaf] = _array(value)
    if not layers:
        raise ValueError("the state_dict is empty")
    params = []
    for prefix, entry in layers.items():
        name = f"layer {prefix!r}" if prefix else "the layer"
        if "weight" not in entry or "bias" not in entry:
            missing = "weight" if "weight" not in entry else "bias"
            raise ValueError(f"state_dict: {name} has no {missing}; fastscape's dense layers "
                             "all have a weight and a bias")  # fmt: skip
        W, b = entry["weight"], entry["bias"]
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(
                f"state_dict: {name} has weight {W.shape} and bias {b.shape}; a Linear layer "
                "has weight (out, in) and bias (out,)"
            )
        params.append((W, b))
    inferred = [params[0][0].shape[1]] + [W.shape[0] for W, _ in params]
    for k in range(1, len(params)):
        if params[k][0].shape[1] != params[k - 1][0].shape[0]:
            raise ValueError(
                f"state_dict: layers {k - 1} and {k} do not chain (weights "
                f"{params[k - 1][0].shape} then {params[k][0].shape})"
            )
    if sizes is not None:
        sizes = [int(s) for s in sizes]
        if sizes != inferred:
            raise ValueError(f"sizes={sizes} given, the state_dict's weights have sizes {inferred}")
    return inferred, params
