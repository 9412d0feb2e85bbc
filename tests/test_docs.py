"""The examples in README.md and docs/*.md run, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, match in enumerate(FENCE.finditer(path.read_text(encoding="utf-8"))):
            yield pytest.param(match.group(1), id=f"{path.name}-{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_example_runs(code, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


def test_quickstart_script_runs(capsys):
    import runpy

    matplotlib.use("Agg")
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    assert "λmax" in capsys.readouterr().out


def test_pictures_referenced_by_the_docs_exist():
    pictures = re.compile(r"!\[[^\]]*\]\(([^)]+\.png)\)")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in pictures.findall(path.read_text(encoding="utf-8")):
            target = path.parent / ref
            assert target.is_file(), f"{path.name} shows {ref}, which does not exist"
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
