"""CUDA tests: skipped unless numba-cuda is installed and a GPU (or Numba's simulator) is there.

Run them without a GPU on the simulator (set before numba is imported, hence in the shell)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda -q

and on a GPU machine without the variable. The simulator runs one Python thread per CUDA
thread, so every test here uses tiny data and tiny launch shapes (:func:`small_launch`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numba
import pytest

from fastscape import config

# pytest imports every conftest.py outside a package as the module "conftest", replacing
# tests/conftest.py in sys.modules once this one is loaded; the test modules of tests/ import
# their helpers with ``from conftest import ...``, so this file re-exports those helpers (a
# separate copy of tests/conftest.py, loaded under another name; its fixtures stay registered
# from the original).
_spec = importlib.util.spec_from_file_location(
    "_fastscape_tests_conftest", Path(__file__).resolve().parent.parent / "conftest.py"
)
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
MODEL_CASES = _shared.MODEL_CASES
case_id = _shared.case_id
make_problem = _shared.make_problem


def _skip_reason() -> str | None:
    if importlib.util.find_spec("numba_cuda") is None:
        return 'numba-cuda is not installed (pip install "fastscape[cuda]")'
    if numba.config.ENABLE_CUDASIM:
        return None
    from numba import cuda

    if not cuda.is_available():
        return "no CUDA GPU visible; set NUMBA_ENABLE_CUDASIM=1 to run these on the simulator"
    return None


_REASON = _skip_reason()
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Skip every test of this directory when CUDA cannot run (the test modules import no CUDA
    code at module level, so collecting them is always safe)."""
    if _REASON is None:
        return
    mark = pytest.mark.skip(reason=_REASON)
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(mark)


@pytest.fixture(autouse=True)
def small_launch(monkeypatch):
    """Tiny launch shapes: 8 threads per block, 12 loss threads, blocks of 7 samples (so that
    20 samples make 3 blocks, the last one partial)."""
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(config, "CUDA_LOSS_THREADS", 12)
    monkeypatch.setattr(config, "CUDA_BLOCK", 7)
    monkeypatch.setattr(config, "CUDA_SPAN_SLOTS", 3)
    monkeypatch.setattr(config, "CUDA_SPAN_BLOCK", 7)
