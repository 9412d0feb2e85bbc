"""The layering of ``docs/kernels.md`` and the naming rules, checked on the source files.

- kernels import no API module (nothing of ``fastscape`` outside ``fastscape.kernels``);
- the NumPy reference imports no kernel (a twin that calls the kernel checks nothing);
- no import cycle among the modules of ``fastscape`` (lazy imports inside functions count: they
  are the usual way a cycle is hidden);
- no private name (``_x``) imported from another module;
- every kernel module ``kernels/<x>.py`` has its test ``tests/test_<x>.py`` (or a test file
  listed in :data:`GROUPED` with the reason), and every CUDA twin ``kernels/cuda/<x>.py`` has a
  CPU module of the same name and its test ``tests/cuda/test_cuda_<x>.py`` (or one listed in
  :data:`CUDA_GROUPED`).

Imports are read with :mod:`ast`, so nothing is imported to check them; every rule iterates
over the files present, so new modules are held to it without editing this file.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

#: Kernel modules tested in a file not named after them: module -> (test file, why).
GROUPED = {
    "_jit": ("test_mlp.py", "the compile options: NaN/Inf propagate through every kernel"),
    "linear": ("test_hessian.py", "closed-form Hessians, checked with the other exact Hessians"),
}

#: CUDA twins tested in a file of tests/cuda not named after them: module -> (file, why).
CUDA_GROUPED: dict[str, tuple[str, str]] = {}

#: Where each package's sources live (``fastscape.kernels`` is the top-level ``kernels/``);
#: subpackages (folders with an ``__init__.py``) are found below them.
PACKAGES = {"fastscape": ROOT / "fastscape", "fastscape.kernels": ROOT / "kernels"}


# ----------------------------------------------------------------------------- import graph
def modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Module name -> source file, for every ``.py`` file of each package and its subpackages."""
    out = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if not all(
                (folder.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(len(parts))
            ):
                continue  # not inside a package (e.g. a stray script folder)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def _source(package: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from, inside ``package``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` (module ``name``) imports, anywhere in the file.

    ``from . import x`` counts as importing the submodule ``x`` when it is a known module, else
    the package itself; ``from .m import f`` counts as importing ``m``.
    """
    is_package = path.stem == "__init__"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _source(package, node)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            # `from pkg import sub` imports sub; `from mod import f` imports mod only
            targets = [t for t in targets[:-1] if t in known] or [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a.b.c -> the longest known prefix
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    mods = modules(packages)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


GRAPH = import_graph(PACKAGES)
KERNELS = sorted(m for m in GRAPH if m.startswith("fastscape.kernels"))


# ----------------------------------------------------------------------------- the checker works
def _package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    pkg = root / "pkg"
    pkg.mkdir()
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    return {"pkg": pkg}


def test_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    graph = import_graph(
        _package(
            tmp_path,
            {
                "__init__.py": "from .a import f\n",
                "a.py": "from . import b\n\ndef f():\n    return b.g()\n",
                "b.py": "def g():\n    from .a import f  # lazy: still a cycle\n    return f\n",
                "c.py": "import pkg.a\nfrom pkg import b\n",
            },
        )
    )
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.a"},
        "pkg.c": {"pkg.a", "pkg.b"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_cycle_finder_accepts_a_layered_package(tmp_path):
    graph = import_graph(
        _package(
            tmp_path,
            {
                "__init__.py": "from . import top\n",
                "top.py": "from .mid import g\nfrom . import low\n",
                "mid.py": "from .low import h\n\ndef g():\n    return h()\n",
                "low.py": "import numpy\n\ndef h():\n    return 1\n",
            },
        )
    )
    assert graph["pkg.top"] == {"pkg.mid", "pkg.low"}
    assert graph["pkg.low"] == set()
    assert find_cycle(graph) is None


def test_relative_imports_resolve_in_subpackages():
    """``from ._jit import jit`` in kernels/x.py means fastscape.kernels._jit."""
    assert "fastscape.kernels._jit" in GRAPH["fastscape.kernels.mlp"]
    assert "fastscape.kernels.mlp" in GRAPH["fastscape._device"]
    assert "fastscape.data" in GRAPH["fastscape.models"]


# ----------------------------------------------------------------------------- the rules
def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", KERNELS)
def test_kernels_import_no_api_module(module):
    api = {m for m in GRAPH[module] if not m.startswith("fastscape.kernels")}
    assert not api, f"{module} imports API modules {sorted(api)}: kernels know nothing of the API"


def test_reference_imports_no_kernel_and_no_kernel_imports_it():
    assert not [m for m in GRAPH["fastscape.reference"] if m.startswith("fastscape.kernels")]
    assert not [m for m in KERNELS if "fastscape.reference" in GRAPH[m]]


def test_the_api_reaches_kernels_through_few_modules():
    """The dispatch seam (and the modules holding kernel constants) import kernels; the rest
    of the API goes through them. A new importer must be added here on purpose."""
    allowed = {
        "fastscape._device",  # the dispatch seam
        "fastscape.data",  # the GPU copies of a DeviceBatch
        "fastscape.models",  # activation and loss codes
        "fastscape.functions",  # analytic function codes
        "fastscape.curvature",  # Lanczos kernels, serial BLAS (its own package on main)
    }
    importers = {
        m
        for m, deps in GRAPH.items()
        if not m.startswith("fastscape.kernels")
        and any(d.startswith("fastscape.kernels") for d in deps)
    }
    stray = [m for m in importers if not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not stray, f"API modules importing kernels outside the seam: {sorted(stray)}"


def _kernel_files(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("stem", _kernel_files(ROOT / "kernels"))
def test_every_kernel_module_has_its_test(stem):
    own = TESTS / f"test_{stem.lstrip('_')}.py"
    if own.exists():
        return
    assert stem in GROUPED, f"kernels/{stem}.py has no tests/{own.name} (nor a GROUPED entry)"
    grouped, why = GROUPED[stem]
    assert why and (TESTS / grouped).exists(), f"kernels/{stem}.py: tests/{grouped} is missing"


@pytest.mark.parametrize("stem", _kernel_files(ROOT / "kernels" / "cuda"))
def test_every_cuda_twin_has_a_cpu_module_and_a_test(stem):
    assert (ROOT / "kernels" / f"{stem}.py").exists(), (
        f"kernels/cuda/{stem}.py names no CPU module kernels/{stem}.py"
    )
    if (TESTS / "cuda" / f"test_cuda_{stem}.py").exists():
        return
    assert stem in CUDA_GROUPED, f"kernels/cuda/{stem}.py has no tests/cuda/test_cuda_{stem}.py"
    grouped, why = CUDA_GROUPED[stem]
    assert why and (TESTS / "cuda" / grouped).exists(), f"tests/cuda/{grouped} is missing"


def test_grouped_entries_are_needed():
    """An entry for a module that is gone, or that has its own test now, is stale: drop it."""
    stale = [
        s
        for s in GROUPED
        if not (ROOT / "kernels" / f"{s}.py").exists()
        or (TESTS / f"test_{s.lstrip('_')}.py").exists()
    ]
    stale += [
        f"cuda/{s}"
        for s in CUDA_GROUPED
        if not (ROOT / "kernels" / "cuda" / f"{s}.py").exists()
        or (TESTS / "cuda" / f"test_cuda_{s}.py").exists()
    ]
    assert not stale, f"GROUPED entries no longer needed: {stale}"


def private_imports(packages: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, "module._name") for every ``from module import _name`` across modules, where
    ``_name`` is not itself a module (``from . import _device`` imports a module: fine)."""
    mods = modules(packages)
    out = set()
    for name, path in mods.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _source(package, node)
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{base}.{alias.name}" not in mods:
                    out.add((name, f"{base}.{alias.name}"))
    return out


#: Private names still allowed to be imported across modules (none: the test fails on any).
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def test_private_import_finder(tmp_path):
    pkgs = _package(
        tmp_path,
        {
            "__init__.py": "from . import _util\n",
            "_util.py": "def _helper():\n    pass\n\ndef public():\n    pass\n",
            "a.py": "from ._util import _helper, public\nfrom . import _util\n",
        },
    )
    assert private_imports(pkgs) == {("pkg.a", "pkg._util._helper")}


def test_no_private_name_is_imported_across_modules():
    new = private_imports(PACKAGES) - KNOWN_PRIVATE
    assert not new, f"private names imported across modules: {sorted(new)}"
