"""Packaging facts: kernels ship as fastscape.kernels only, and compiled code is cached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def test_installed_layout(tmp_path):
    """From outside the source tree: fastscape.kernels imports, a top-level kernels does not."""
    out = _run(
        """
        import importlib.util, json
        import fastscape.kernels, fastscape.kernels.mlp
        print(json.dumps({
            "top_level_kernels": importlib.util.find_spec("kernels") is not None,
            "kernels_file": fastscape.kernels.mlp.__file__,
            "name": fastscape.kernels.mlp.__name__,
        }))
        """,
        cwd=tmp_path,
    )
    facts = json.loads(out)
    assert facts["top_level_kernels"] is False
    assert facts["name"] == "fastscape.kernels.mlp"
    path = Path(facts["kernels_file"])
    # editable install: the source file in kernels/; regular install: fastscape/kernels/
    assert path.parent.name == "kernels"
    assert path.parent.parent.name in ("fastscape", ROOT.name)


@pytest.mark.slow
def test_wheel_maps_kernels_into_the_package(tmp_path):
    """A built wheel holds fastscape/kernels/*.py and no top-level kernels package.

    Built from a copy of the sources without build leftovers: an ``*.egg-info`` or ``build/``
    from an earlier install would feed setuptools the files of a subpackage that pyproject's
    package list forgets, and hide the mistake that a fresh clone shows.
    """
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src,
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv",
                                      "fastscape-out", ".pytest_cache", ".benchmarks"),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("fastscape-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastscape/kernels/mlp.py" in names
    assert "fastscape/kernels/_jit.py" in names
    # every module of the source tree ships (a subpackage missing from pyproject's list would
    # install and then fail at import)
    for root, prefix in (
        (ROOT / "fastscape", "fastscape"),
        (ROOT / "kernels", "fastscape/kernels"),
    ):
        for path in root.rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"{prefix}/{path.relative_to(root).as_posix()}" in names, path
    assert not [n for n in names if n.startswith("kernels/")]
    top = [n for n in names if n.endswith("top_level.txt")]
    if top:
        assert zipfile.ZipFile(wheel).read(top[0]).decode().split() == ["fastscape"]


@pytest.mark.slow
def test_second_process_does_not_recompile(tmp_path):
    """cache=True: a second process loads every kernel it calls from the cache."""
    code = """
        import json
        import numpy as np
        import fastscape
        from fastscape.kernels import mlp
        model = fastscape.MLP([3, 4, 2], activation="tanh", loss="softmax_ce")
        X = np.random.default_rng(0).normal(size=(20, 3)); y = np.arange(20) % 2
        theta = model.init(0)
        model.loss(theta, X, y); model.grad(theta, X, y); model.hvp(theta, theta, X, y)
        model.logits(theta, X)
        from fastscape.kernels import hvp
        # the kernels called from Python (their jitted callees are compiled into them)
        kernels = [mlp.output_loss_serial, mlp.output_loss_block, hvp.r_blocks]
        print(json.dumps({
            "hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
            "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
        }))
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = json.loads(_run(code, tmp_path, env))
    second = json.loads(_run(code, tmp_path, env))
    assert first["misses"] >= 2  # every kernel the calls use, compiled once or more
    assert second == {"hits": first["misses"], "misses": 0}


def test_top_level_kernels_import_is_refused():
    """With the repository root on sys.path, `import kernels` must fail loudly."""
    out = subprocess.run(
        [sys.executable, "-c", "import kernels"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "must be imported as 'fastscape.kernels'" in out.stderr


def test_kernels_cache_in_the_user_cache_dir(tmp_path):
    """Without NUMBA_CACHE_DIR the compiled kernels go to $XDG_CACHE_HOME/fastscape/numba and
    nothing is written beside the kernels' sources (a cache there survives pip uninstall and
    shadows a later install); a user's own cached Numba function keeps Numba's default place."""
    (tmp_path / "user_funcs.py").write_text(
        "import numba\n\n@numba.njit(cache=True)\ndef double(x):\n    return 2 * x\n"
    )
    env = {  # an empty NUMBA_CACHE_DIR is "not set" for Numba and for fastscape
        "NUMBA_CACHE_DIR": "",
        "FASTSCAPE_CACHE_DIR": "",
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(tmp_path),
    }
    src = Path(_run("import fastscape.kernels.mlp as m; print(m.__file__)", tmp_path, env).strip())
    src = src.parent / "__pycache__"

    def beside_sources() -> set:
        return {(p.name, p.stat().st_mtime_ns) for p in src.glob("*.nb[ic]")}

    before = beside_sources()
    _run(
        """
        import numpy as np
        import fastscape
        import user_funcs
        model = fastscape.MLP([3, 4, 2], activation="tanh", loss="softmax_ce")
        X = np.random.default_rng(0).normal(size=(20, 3)); y = np.arange(20) % 2
        model.loss(model.init(0), X, y)
        user_funcs.double(2.0)
        """,
        tmp_path,
        env,
    )
    ours = list((tmp_path / "xdg" / "fastscape" / "numba").rglob("*.nbi"))
    assert any(p.name.startswith("mlp.") for p in ours)
    assert not [p for p in ours if p.name.startswith("user_funcs.")]
    assert list((tmp_path / "__pycache__").glob("user_funcs.double-*.nbi"))
    assert beside_sources() <= before  # nothing new or rewritten beside the sources
