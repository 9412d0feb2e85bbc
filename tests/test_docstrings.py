"""Every public function of the API has a numpydoc docstring with its Parameters and Returns."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

MODULES = [
    "fastscape.models", "fastscape.training", "fastscape.datasets", "fastscape.landscape",
    "fastscape.directions", "fastscape.paths", "fastscape.functions", "fastscape.io",
    "fastscape.plot", "fastscape.curvature", "fastscape.critical", "fastscape.sharpness",
    "fastscape.eos", "fastscape.distributed", "fastscape.alignment",
]  # fmt: skip


def _public_functions():
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj):
                yield pytest.param(obj, id=f"{name}.{attr}")
            elif inspect.isclass(obj):
                for meth_name, meth in vars(obj).items():
                    if inspect.isfunction(meth) and not meth_name.startswith("_"):
                        yield pytest.param(meth, id=f"{name}.{attr}.{meth_name}")


def _section(doc: str, title: str) -> bool:
    return re.search(rf"^\s*{title}\n\s*-{{{len(title)}}}\s*$", doc, re.M) is not None


@pytest.mark.parametrize("fn", list(_public_functions()))
def test_public_function_is_documented(fn):
    doc = inspect.getdoc(fn)
    assert doc, f"{fn.__qualname__} has no docstring"
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters if p not in ("self", "cls")]
    # one-line docstrings are fine for small methods whose parameters are the model's own
    # (theta, X, y) and documented on the class; everything else spells them out
    if len(params) > 3 or (params and "\n" in doc.strip()):
        assert _section(doc, "Parameters"), f"{fn.__qualname__}: no Parameters section"
    returns = sig.return_annotation
    if "\n" in doc.strip() and returns not in (None, "None", inspect.Signature.empty):
        assert _section(doc, "Returns") or _section(doc, "Yields"), (
            f"{fn.__qualname__}: no Returns section"
        )
