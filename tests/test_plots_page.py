"""`dvc plots show` and `dvc plots diff` build a page that draws its charts offline: the
libraries are inlined from .dvc/plots/page.html (the project's html_template), not loaded
from a CDN. The browser check runs where chromium is installed and is skipped elsewhere."""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import shutil
import subprocess

import pytest

from tests.project import DIGITS, ROOT, Project

PLOTS_DIR = ROOT / ".dvc" / "plots"
VENDOR = json.loads((PLOTS_DIR / "vendor.json").read_text())
CHARTS = ("Loss", "Accuracy", "Learning_rate", "Confusion")  # the vega charts of dvc.yaml's plots: that must draw
CURVES = ("Loss", "Accuracy", "Learning_rate")  # per-epoch charts (.dvc/plots/epochs.json)
TEMPLATE = "plots/page.html"  # .dvc/config's plots.html_template, relative to .dvc/


def inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", html, flags=re.S)


def specs(html: str) -> dict[str, dict]:
    """The vega-lite spec that DVC put in each chart's div, by the div's id."""
    found = re.findall(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = (.*?);\s*'
                       r"vegaEmbed\(", html, flags=re.S)
    return {name: json.loads(spec) for name, spec in found}


def configured_template() -> str | None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    return config.get("plots", "html_template", fallback=None) if config.has_section("plots") else None


# the digits under class names whose sorted order is not theirs: the confusion chart must keep theirs
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("page") / "p", DIGITS)
    if configured_template() is None:  # until .dvc/config has the line (test_the_config_names_the_page)
        project.dvc("config", "plots.html_template", TEMPLATE)
    assert project.stage("fetch").returncode == 0
    folder = project.path.parent / "idx"  # the same digits as fetch.dataset idx, with names
    shutil.copytree(project.path / "data" / "raw", folder, ignore=shutil.ignore_patterns("dataset.json"))
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    project.set_params({"fetch": {"dataset": "idx", "source": str(folder)}, "train": {"epochs": 2}})  # 2: vega
    # ticks a 2-epoch axis at 1, 1.5 and 2
    project.repro()
    project.dvc("plots", "show", "-o", "page")
    return project


@pytest.fixture(scope="module")
def page(ran) -> str:
    return (ran.path / "page" / "index.html").read_text(encoding="utf-8")


def test_the_config_names_the_page():
    assert configured_template() == TEMPLATE, "add to .dvc/config: [plots] html_template = plots/page.html"


def test_the_template_is_the_vendored_libraries_unchanged():
    """page.html inlines exactly the files vendor.json records (vega, vega-lite, vega-embed,
    as npm ships them), each with its licence beside it, and keeps DVC's placeholders but
    `{scripts}` (DVC's CDN links)."""
    html = (PLOTS_DIR / "page.html").read_text(encoding="utf-8")
    blocks = inline_scripts(html)
    assert [hashlib.sha256(b.encode()).hexdigest() for b in blocks] == [v["sha256"] for v in VENDOR]
    assert [v["package"] for v in VENDOR] == ["vega", "vega-lite", "vega-embed"]
    assert [v["version"].split(".")[0] for v in VENDOR] == ["5", "5", "6"]  # the majors DVC's specs target
    for v in VENDOR:
        assert v["license"] in ("BSD-3-Clause", "MIT"), v
        assert (PLOTS_DIR / f"LICENSE.{v['package']}").is_file(), v["package"]
    assert html.count("{plot_divs}") == 1 and "{scripts}" not in html
    assert '<meta charset="utf-8">' in html  # the libraries hold non-ASCII text


def test_page_loads_nothing_from_the_network(page):
    tags = re.findall(r"<(?:script|link|img)\b[^>]*>", page)
    assert not [t for t in tags if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", t)], tags
    assert "cdn.jsdelivr.net" not in page


def test_page_inlines_the_libraries(page):
    inlined = {hashlib.sha256(b.encode()).hexdigest() for b in inline_scripts(page)}
    assert {v["sha256"] for v in VENDOR} <= inlined


def test_page_has_the_charts(page):
    found = specs(page)
    assert set(CHARTS) <= set(found), sorted(found)
    history = [r for r in found["Loss"]["data"]["values"]]
    assert {r["epoch"] for r in history} == {1, 2}
    cells = found["Confusion"]["data"]["values"]
    assert sum(c["count"] for c in cells) == 360 and len(cells) <= 100  # one record a cell, not an image
    assert "<DVC_METRIC" not in json.dumps(found)  # every anchor of the templates filled


def test_plots_diff_uses_the_same_page(ran):
    """Two runs on one chart (`dvc plots diff <rev>`) come offline too."""
    ran.commit("run")
    ran.dvc("plots", "diff", "HEAD", "-o", "diff")
    html = (ran.path / "diff" / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in html
    assert {v["sha256"] for v in VENDOR} <= {hashlib.sha256(b.encode()).hexdigest() for b in inline_scripts(html)}
    assert {c["rev"] for c in specs(html)["Confusion"]["data"]["values"]} == {"workspace", "HEAD"}


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (apt-get install chromium) for the browser check")
def test_charts_draw_in_a_browser_without_network(ran, tmp_path):
    """Headless chromium with every host unresolvable and a dead proxy: vega-embed still
    draws each chart (it turns each chart's div into .vega-embed with a canvas)."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
         "--dump-dom", (ran.path / "page" / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    for chart in CHARTS:
        div = re.search(rf'<div id="{chart}"[^>]*class="[^"]*vega-embed[^"]*"[^>]*>(.*?)</details>', dom, flags=re.S)
        assert div, f"{chart}: not drawn\n{proc.stderr[-2000:]}"
        marks = re.search(r'<(canvas|svg)\b[^>]*\bclass="marks"[^>]*>', div.group(1))  # the chart, not the menu icon
        assert marks and re.search(r'width="[1-9]', marks.group(0)), f"{chart}: no chart drawn in {div.group(0)[:300]}"
        if chart == "Confusion":  # drawn as SVG: both axes' labels, in the classes' own order
            axes = [re.findall(r">([^<>]+)</text>", labels)
                    for labels in re.findall(r'role-axis-label.*?</g>', div.group(1), flags=re.S)]
            assert axes == [list(NAMES), list(NAMES)], axes
        if chart in CURVES:  # drawn as SVG: the epoch axis ticks whole epochs (DVC's linear template: 1.5, 2.5, ...)
            labels = re.search(r'role-axis-label.*?</g>', div.group(1), flags=re.S)  # the x axis comes first
            assert labels, f"{chart}: no axis labels in the page (drawn on a canvas, not as SVG?)"
            epochs = re.findall(r">([^<>]+)</text>", labels.group(0))
            assert epochs == ["1", "2"], f"{chart}: {epochs}"  # not 1, 2, 2 (a tick at 1.5 labelled "d")
