"""report.html: a self-contained page whose numbers are report.json's, rendered by a real browser.

The browser tests drive Debian's Chromium (``/usr/bin/chromium``) with Playwright. They skip
where either is missing, except when ``FASTSCAPE_REQUIRE_BROWSER=1`` (CI sets it), where a
missing browser is a failure.
"""

from __future__ import annotations

import io as _io
import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastscape
from fastscape import datasets, directions, report
from fastscape.cli import main
from fastscape.curvature import spectral_density
from fastscape.landscape import slice_1d, surface_2d
from fastscape.paths import linear_path
from fastscape.training import fit

pytest.importorskip("plotly")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FAST = ["--points", "7", "--steps", "30", "--sharpness-directions", "8", "--quiet"]


@pytest.fixture(scope="module")
def results():
    X, y = datasets.blobs(n=120, seed=0)
    model = fastscape.MLP([2, 5, 2], "tanh", "softmax_ce")
    theta = fit(model, X, y, steps=200).theta
    d1, d2 = directions.pair(model, theta, seed=0)
    grid = np.linspace(-1.0, 1.0, 9)
    surf = surface_2d(model, theta, d1, d2, X, y, grid, grid[:7], progress=False)
    s1 = slice_1d(model, theta, d1, X, y, grid, progress=False)
    s2 = slice_1d(model, theta, d2, X, y, grid, progress=False)
    dens = spectral_density(model, theta, X, y, method="exact")
    path = linear_path(model, theta, theta + np.asarray(d1), X, y, ts=11, progress=False)
    cmap = SimpleNamespace(
        alphas=grid, betas=grid[:7], lambda_max=1.0 + surf.loss, lambda_min=-0.1 * surf.loss
    )
    return SimpleNamespace(surf=surf, s1=s1, s2=s2, density=dens, path=path, cmap=cmap)


def _payload():
    return {
        "command": "landscape",
        "surface": {"loss_at_theta": 0.1234567890123, "min": 1e-300, "max": 2.5},
        "curvature": {"top": [3.25, -0.5, 1 / 3], "converged": True, "index": None},
        "note": "a </script> inside a string stays text",
        "settings": {"points": 9, "format": ["png"]},
        "versions": {"fastscape": fastscape.__version__},
    }


def _write(tmp_path, results, **kw):
    args = dict(surface=results.surf, slices={"d1": results.s1, "d2": results.s2},
                density=results.density, top_eigenvalues=[1.0, 0.5],
                curvature_map=results.cmap, paths=[results.path])  # fmt: skip
    args.update(kw)
    return report.write_html(tmp_path / "report.html", _payload(), **args)


def _cells(page: str) -> dict[str, str]:
    import html

    return {
        html.unescape(k): html.unescape(v)
        for k, v in re.findall(r'<td data-key="([^"]*)">(.*?)</td>', page, flags=re.S)
    }


def _leaf(payload, key: str):
    value = payload
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value


# ----------------------------------------------------------------------------- the page itself
def test_page_is_self_contained_and_embeds_the_report_verbatim(tmp_path, results):
    page = _write(tmp_path, results).read_text(encoding="utf-8")
    # no network: no external script, stylesheet or font; Plotly's code is inline
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=", page)
    assert "Plotly" in page
    embedded = re.search(r'<script type="application/json" id="report-json">(.*?)</script>', page,
                         flags=re.S).group(1)  # fmt: skip
    assert json.loads(embedded) == _payload()
    # every figure of every section was placed
    for fid in ("surface-3d", "surface-contour", "slices", "spectrum", "cmap-max", "cmap-min",
                "cmap-ratio", "paths"):  # fmt: skip
        assert f'id="plot-{fid}"' in page, fid


def test_tables_show_every_number_of_the_report_exactly(tmp_path, results):
    page = _write(tmp_path, results).read_text(encoding="utf-8")
    cells = _cells(page)
    payload = _payload()
    # the tables hold exactly the leaves of the report, each as its JSON text
    assert set(cells) == {
        "command", "surface.loss_at_theta", "surface.min", "surface.max", "curvature.top",
        "curvature.converged", "curvature.index", "note", "settings.points", "settings.format",
        "versions.fastscape",
    }  # fmt: skip
    for key, text in cells.items():
        assert json.loads(text) == _leaf(payload, key), key
    # settings and versions come last
    order = re.findall(r'<section class="numbers" id="numbers-([^"]+)"', page)
    assert order[-2:] == ["settings", "versions"]


def test_sections_are_only_those_computed(tmp_path, results):
    page = report.write_html(tmp_path / "r.html", _payload(), paths=[results.path]).read_text()
    assert 'id="plot-paths"' in page
    assert "plot-surface-3d" not in page and "plot-spectrum" not in page


def test_bad_input_is_refused_before_writing(tmp_path, results):
    with pytest.raises(ValueError, match="JSON values only"):
        report.write_html(tmp_path / "r.html", {"x": float("nan")})
    with pytest.raises(ValueError, match="JSON values only"):
        report.write_html(tmp_path / "r.html", {"x": np.zeros(2)})
    with pytest.raises(TypeError, match="report must be a mapping"):
        report.write_html(tmp_path / "r.html", [1, 2])
    negative = results.surf.__class__(
        results.surf.alphas, results.surf.betas, results.surf.loss - 10.0
    )
    with pytest.raises(ValueError, match="positive loss on surface"):
        report.write_html(tmp_path / "r.html", {}, surface=negative, log=True)
    assert not (tmp_path / "r.html").exists()


def test_an_interrupted_write_leaves_the_old_page(tmp_path, results, monkeypatch):
    old = report.write_html(tmp_path / "report.html", {"run": 1})
    before = old.read_bytes()
    import plotly.io

    def broken(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(plotly.io, "to_html", broken)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, results)
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


# ----------------------------------------------------------------------------- the CLI
def test_cli_writes_the_page_beside_report_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["landscape", *FAST, "--out", str(out), "--html"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert "report.html" in rep["files"]
    page = (out / "report.html").read_text(encoding="utf-8")
    embedded = re.search(r'id="report-json">(.*?)</script>', page, flags=re.S).group(1)
    assert json.loads(embedded) == rep
    assert main(["landscape", *FAST, "--out", str(tmp_path / "no"), "--no-html"]) == 0
    assert not (tmp_path / "no" / "report.html").exists()
    assert "report.html" not in json.loads((tmp_path / "no" / "report.json").read_text())["files"]


def test_cli_html_without_plotly_fails_before_any_work(tmp_path):
    code = (
        "import sys; sys.modules['plotly'] = None\n"
        "from fastscape.cli import main\n"
        f"sys.exit(main(['landscape', '--html', '--quiet', '--out', {str(tmp_path / 'o')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--html needs Plotly" in proc.stderr
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- a real browser
def _browser():
    required = os.environ.get("FASTSCAPE_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("FASTSCAPE_REQUIRE_BROWSER=1 but playwright is not installed")
        pytest.skip("playwright is not installed")
    if not os.path.exists(CHROMIUM):
        if required:
            pytest.fail(f"FASTSCAPE_REQUIRE_BROWSER=1 but there is no browser at {CHROMIUM}")
        pytest.skip("Debian's chromium is not installed")
    return sync_playwright


# Chromium as this machine runs it: headless, no network at start-up, WebGL in software
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
]  # fmt: skip


def _not_blank(png: bytes) -> float:
    import matplotlib.image

    img = matplotlib.image.imread(_io.BytesIO(png), format="png")[..., :3]
    return float(img.std())


def test_the_page_renders_in_a_real_browser(tmp_path, capsys):
    sync_playwright = _browser()
    out = tmp_path / "run"
    assert main(["landscape", *FAST, "--out", str(out), "--html"]) == 0
    rep = json.loads((out / "report.json").read_text())
    problems, requests = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((out / "report.html").as_uri())
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".every(e => e._fullLayout !== undefined) && "
                "document.querySelectorAll('.js-plotly-plot').length === 4",
                timeout=60_000,
            )
            plots = page.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => "
                "[e.id, e.data.length, e.querySelectorAll('canvas').length])"
            )
            shots = {
                fid: _not_blank(page.locator(f"#plot-{fid}").screenshot())
                for fid in ("surface-3d", "surface-contour", "slices", "spectrum")
            }
            cells = page.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('td[data-key]'))"
                ".map(td => [td.dataset.key, td.textContent]))"
            )
            embedded = page.evaluate("JSON.parse(document.getElementById('report-json').text)")
        finally:
            browser.close()
    assert problems == [], problems
    # nothing was fetched but the page itself: it opens offline
    assert all(u.startswith("file://") or u.startswith("data:") for u in requests), requests
    assert [p[0] for p in plots] == [
        "plot-surface-3d", "plot-surface-contour", "plot-slices", "plot-spectrum",
    ]  # fmt: skip
    assert all(n >= 1 for _, n, _ in plots)
    assert plots[0][2] >= 1  # the 3D surface drew on a WebGL canvas
    for fid, spread in shots.items():
        assert spread > 0.02, f"{fid} looks blank (pixel std {spread:.3g})"
    # the numbers on the page are report.json's
    assert embedded == rep
    assert len(cells) > 20
    for key, text in cells.items():
        assert json.loads(text) == _leaf(rep, key), key
