"""The documentation site in a real headless Chromium with the network off.

Formulas must show as drawn maths, not raw TeX, with nothing fetched from other hosts; result tables
must fit the page; two pages are checked on their screenshots (a formula drawn in ink, a tutorial
figure in colour). Needs the Debian packages ``chromium`` and ``chromium-driver``
(``scripts/test.sh`` installs them) and ``selenium``. Set ``GRADCAMPP_SCREENSHOTS=DIR`` to keep
the screenshots.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("PIL")
webdriver = pytest.importorskip("selenium.webdriver")

from docs_site import built_site  # noqa: E402
from PIL import Image  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# No name resolves and no request leaves: the site must work from its own files.
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="chromium and chromium-driver are not installed (scripts/test.sh installs them)",
    ),
]

# What a page shows: its text, its formulas' sizes, and every resource it loaded.
PAGE_STATE = """
const article = document.querySelector('article') || document.body;
return {
    text: article.innerText,
    formulas: Array.from(article.querySelectorAll('math')).map(m => {
        const r = m.getBoundingClientRect();
        return [r.width, r.height];
    }),
    resources: performance.getEntriesByType('resource').map(e => e.name),
    location: document.location.href,
};
"""
RAW_TEX = ("\\(", "\\)", "\\[", "\\frac", "\\sum", "\\mathrm", "\\alpha", "$$", "^{", "_{")


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*OFFLINE_FLAGS, "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    yield driver
    driver.quit()


def _open(browser, site: Path, page: str) -> dict:
    browser.get((site / page / "index.html").as_uri())
    return browser.execute_script(PAGE_STATE)


def _keep(name: str, png: bytes) -> Image.Image:
    keep = os.environ.get("GRADCAMPP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / name).write_bytes(png)
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_raw_tex_would_be_seen(browser, tmp_path):
    page = tmp_path / "raw.html"
    page.write_text(r"<html><body><article><p>\(A^k_{ij}\)</p></article></body></html>")
    browser.get(page.as_uri())
    text = browser.execute_script(PAGE_STATE)["text"]
    assert [tex for tex in RAW_TEX if tex in text] == ["\\(", "\\)", "_{"]


@pytest.mark.parametrize(
    ("page", "least"),
    [("methods/gradcampp", 20), ("methods/gradcam", 3), ("metrics", 10), ("migrating", 5)],
)
def test_formulas_are_drawn_offline(browser, site, page, least):
    state = _open(browser, site, page)
    assert state["location"].startswith("file://")
    assert [tex for tex in RAW_TEX if tex in state["text"]] == []
    assert len(state["formulas"]) >= least
    assert all(width > 0 and height > 0 for width, height in state["formulas"])
    assert [url for url in state["resources"] if not url.startswith("file:")] == []


def test_a_display_formula_is_drawn_in_ink(browser, site):
    """Screenshot check of a maths page: Eq. 19 is drawn as a two-line fraction, in ink."""
    _open(browser, site, "methods/gradcampp")
    formula = browser.execute_script(
        "return Array.from(document.querySelectorAll('div.arithmatex'))"
        ".find(d => d.textContent.includes('relu'));"
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", formula)
    picture = _keep("docs-gradcampp-formula.png", formula.screenshot_as_png)
    pixels = np.asarray(picture, dtype=np.float32).mean(axis=2)
    ink = pixels < 128
    rows, cols = np.nonzero(ink)
    assert ink.sum() > 300  # glyphs, not an empty box
    assert cols.max() - cols.min() > 300  # a formula spanning the line, not one symbol
    assert rows.max() - rows.min() > 30  # a fraction: numerator over denominator
    page = _keep("docs-gradcampp.png", browser.get_screenshot_as_png())
    assert page.size[0] >= 1000


def test_display_formulas_fit_their_boxes_at_1400_pixels(browser, site):
    """No display formula of the maths pages needs sideways scrolling (which would hide its end,
    such as Eq. 19's closing parenthesis) in a 1400 px wide window."""
    browser.set_window_size(1400, 1000)
    try:
        overflowing = {}
        for page in ("methods/gradcampp", "methods/gradcam", "metrics", "cli"):
            _open(browser, site, page)
            boxes = browser.execute_script(
                "return Array.from(document.querySelectorAll('article div.arithmatex'))"
                ".map(d => [d.textContent.slice(0, 40), d.scrollWidth, d.clientWidth,"
                " d.querySelector('math').getBoundingClientRect().right,"
                " d.getBoundingClientRect().right]);"
            )
            assert boxes, page
            overflowing[page] = [box for box in boxes if box[1] > box[2] + 1 or box[3] > box[4] + 1]
    finally:
        browser.set_window_size(1280, 1000)
    assert overflowing == {"methods/gradcampp": [], "methods/gradcam": [], "metrics": [], "cli": []}


def test_api_examples_show_as_code(browser, site):
    state = _open(browser, site, "api/targets")
    assert ">>> maps = GradCAMPP(model).explain(images, TopK(3))" in state["text"]
    assert "doctest" not in state["text"]
    quotes = browser.execute_script("return document.querySelectorAll('article blockquote').length")
    assert quotes == 0


def test_the_benchmark_tables_fit_the_page(browser, site):
    _open(browser, site, "benchmarks")
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('article .md-typeset__scrollwrap'))"
        ".map(w => [w.scrollWidth, w.clientWidth]);"
    )
    assert len(widths) >= 5
    assert [w for w in widths if w[0] > w[1] + 1] == []  # nothing to scroll sideways


def test_a_tutorial_shows_its_figures(browser, site):
    """Screenshot check of a tutorial page: its figure loads and shows the coloured maps."""
    state = _open(browser, site, "tutorials/getting_started")
    assert "map maximum on the shape:" in state["text"]
    assert [url for url in state["resources"] if not url.startswith("file:")] == []
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('article img'))"
        ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )
    assert images and all(complete and width > 0 for _, complete, width in images)
    figure = browser.find_element("css selector", "article img[alt='Output of the cell above']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", figure)
    picture = _keep("docs-tutorial-figure.png", figure.screenshot_as_png)
    pixels = np.asarray(picture, dtype=np.float32)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 80).mean() > 0.2  # colour maps and images, not a blank panel
    page = _keep("docs-tutorial.png", browser.get_screenshot_as_png())
    assert np.asarray(page).std() > 20
