"""The HTML report in a real headless Chromium: it loads, no image is broken, the grid shows.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``scripts/test.sh`` installs
them) and the ``selenium`` package. Set ``GRADCAMPP_SCREENSHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")
webdriver = pytest.importorskip("selenium.webdriver")

from PIL import Image  # noqa: E402

from gradcampp.cli import EXIT_OK, EXIT_SKIPPED, main  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import GENERATED_NAMES, ISSUE_NAMES, install_models, write_image  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="chromium and chromium-driver are not installed (scripts/test.sh installs them)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BROWSER_FLAGS, "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(browser, index: Path, screenshot: Path) -> dict:
    """Load ``index`` and return what the page shows; saves a screenshot."""
    browser.get(index.resolve().as_uri())
    state = browser.execute_script(
        """
        const images = Array.from(document.images);
        return {
            ready: document.readyState,
            images: images.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
            headers: Array.from(document.querySelectorAll('table.grid th')).map(h => h.textContent),
            rows: document.querySelectorAll('table.grid tbody tr').length,
            gridWidth: document.querySelector('table.grid').getBoundingClientRect().width,
            gridHeight: document.querySelector('table.grid').getBoundingClientRect().height,
            shownImages: images.filter(i => i.getBoundingClientRect().width >= 100).length,
        };
        """
    )
    assert browser.save_screenshot(str(screenshot))
    keep = os.environ.get("GRADCAMPP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(keep) / screenshot.name)
    return state


def _check_screenshot(path: Path) -> None:
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape[0] >= 500 and pixels.shape[1] >= 1000
    assert pixels.std() > 20  # a page with pictures, not a blank or error page


def _check_disagreement_column(browser, out: Path, tmp_path: Path) -> None:
    """The Disagreement column shows a number per row that matches the JSON records, in view,
    the rows where the methods differ most are marked, and the ordered list runs largest first."""
    import json

    shown = browser.execute_script(
        """
        const cells = Array.from(document.querySelectorAll('table.grid td.disagreement'));
        return {
            values: cells.map(c => c.querySelector('b').textContent),
            marked: Array.from(document.querySelectorAll('table.grid tr.differs')).map(r => r.id),
            ordered: Array.from(document.querySelectorAll('table.ordered td.value'))
                .map(c => c.textContent),
            reading: document.querySelector('p.reading').textContent,
            right: cells[0].getBoundingClientRect().right,
            viewport: document.documentElement.clientWidth,
        };
        """
    )
    names = sorted(p.name for p in out.glob("*.json"))
    assert len(shown["values"]) == 6 and len(names) == 6
    expected = {
        f"{json.loads((out / name).read_text())['explained'][0]['disagreement']:.3f}"
        for name in names
    }
    assert set(shown["values"]) == expected  # the JSON's numbers, to three decimals
    assert shown["ordered"] == sorted(shown["values"], key=float, reverse=True)
    assert len(shown["marked"]) == 1  # 10% of 6 rounds to 1: the largest is marked
    assert "On this run it ranges from" in shown["reading"]
    assert "should cover" not in shown["reading"]
    assert shown["right"] <= shown["viewport"]  # the column is on screen, not scrolled away
    cell = browser.find_element("css selector", "table.grid td.disagreement")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    picture = tmp_path / "demo-disagreement.png"
    picture.write_bytes(cell.screenshot_as_png)
    keep = os.environ.get("GRADCAMPP_SCREENSHOTS")
    if keep:
        shutil.copy(picture, Path(keep) / picture.name)
    with Image.open(picture) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert (pixels < 128).sum() > 30  # the number is drawn, in ink


def _check_narrow_window(browser, tmp_path: Path) -> None:
    """At 480 px the report stacks its cells: nothing scrolls sideways."""
    browser.set_window_size(480, 900)
    try:
        layout = browser.execute_script(
            "return [document.documentElement.clientWidth, document.documentElement.scrollWidth,"
            " document.querySelector('table.grid thead').getBoundingClientRect().height];"
        )
        assert browser.save_screenshot(str(tmp_path / "demo-480.png"))
    finally:
        browser.set_window_size(1280, 1000)
    keep = os.environ.get("GRADCAMPP_SCREENSHOTS")
    if keep:
        shutil.copy(tmp_path / "demo-480.png", Path(keep) / "demo-480.png")
    viewport, scroll_width, header_height = layout
    assert viewport <= 480
    assert scroll_width <= viewport, layout
    assert header_height == 0  # the header row gives way to a label on each cell


def test_demo_report_in_chromium(browser, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--count", "4", "-q"]) == EXIT_OK
    assert str((out / "index.html").resolve()) in capsys.readouterr().out
    state = _open(browser, out / "index.html", tmp_path / "demo-report.png")
    assert state["ready"] == "complete"
    broken = [src for src, complete, width in state["images"] if not complete or width == 0]
    assert broken == []
    assert state["headers"] == ["Image", "Grad-CAM++", "Grad-CAM", "Disagreement", "Top classes"]
    assert state["rows"] == 6  # 4 single-instance + 2 multi-instance images
    assert len(state["images"]) == 1 + 6 * 3  # colour bar + (image, 2 overlays) per row
    assert state["shownImages"] == 1 + 6 * 3  # every picture at a readable size
    assert state["gridWidth"] > 800 and state["gridHeight"] > 6 * 200
    _check_screenshot(tmp_path / "demo-report.png")
    _check_disagreement_column(browser, out, tmp_path)
    _check_narrow_window(browser, tmp_path)
    # the broken-image check does see a missing picture
    (out / "multi-00.gradcam.jpg").unlink()
    state = _open(browser, out / "index.html", tmp_path / "demo-broken.png")
    broken = [src for src, complete, width in state["images"] if not complete or width == 0]
    assert broken == ["./multi-00.gradcam.jpg"]


def test_explain_report_with_top_k_and_a_skipped_file(browser, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, size in enumerate([(120, 90), (90, 120)]):
        pixels = (np.random.default_rng(i).random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo {i} <&>.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(folder),
            "--model",
            "torchvision:resnet18",
            "--weights",
            str(weights),
            "--top-k",
            "2",
            "--size",
            "96",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == EXIT_SKIPPED
    state = _open(browser, out / "index.html", tmp_path / "explain-report.png")
    broken = [src for src, complete, width in state["images"] if not complete or width == 0]
    assert broken == []
    assert state["headers"] == ["Image", "Grad-CAM++", "Top classes"]  # classes stacked
    assert state["rows"] == 2
    assert len(state["images"]) == 1 + 2 * 3
    assert "broken.png" in browser.find_element("css selector", "h2.skipped + ul").text
    _check_screenshot(tmp_path / "explain-report.png")


def test_hostile_names_in_chromium_links_resolve_and_no_script_runs(browser, tmp_path, monkeypatch):
    install_models(tmp_path / "models", monkeypatch)
    folder = tmp_path / "hostile"
    folder.mkdir()
    names = ISSUE_NAMES + GENERATED_NAMES
    for i, name in enumerate(names):
        write_image(folder / name, seed=i)
    out = tmp_path / "out"
    args = ["explain", str(folder), str(folder / "..png"), "--model", "hostile_models:make"]
    assert main([*args, "--size", "16", "--out", str(out), "-q"]) == EXIT_OK
    browser.get((out / "index.html").resolve().as_uri())
    state = browser.execute_script(
        """
        return {
            title: document.title,
            pwned: window.pwned === undefined ? null : window.pwned,
            scripts: document.scripts.length,
            handlers: document.querySelectorAll('[onerror], [onload], svg').length,
            images: Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth]),
            links: Array.from(document.links).map(a => a.href),
        };
        """
    )
    assert state["title"] == "Grad-CAM++ explanations"
    assert state["pwned"] is None and state["scripts"] == 0 and state["handlers"] == 0
    assert len(state["images"]) == 1 + 2 * len(names)
    broken = [src for src, complete, width in state["images"] if not complete or width == 0]
    assert broken == []
    assert len(state["links"]) == 1 + 2 * len(names)  # method page + map and JSON per image
    for url in [src for src, _, _ in state["images"]] + state["links"]:
        parsed = urlparse(url)
        assert parsed.scheme in ("file", "https"), url  # never javascript:
        if parsed.scheme == "file":
            target = Path(unquote(parsed.path))
            assert target.is_file() and target.parent == out.resolve(), url
    # following the link of the file named like a script opens that file, and runs nothing
    link = browser.find_element(
        "css selector", 'a[href^="./javascript%3Aalert%28document.title%29"][href$=".json"]'
    )
    link.click()
    assert browser.current_url.startswith("file://")
    assert unquote(browser.current_url).endswith("/javascript:alert(document.title).json")
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 - reading the property raises when no alert shows


def test_top_k_3_with_both_methods_fits_1400_pixels(browser, tmp_path, monkeypatch):
    install_models(tmp_path / "models", monkeypatch)
    for i in range(3):
        write_image(tmp_path / f"photo{i}.png", size=(60, 40), seed=i)
    out = tmp_path / "out"
    args = ["explain", *(str(tmp_path / f"photo{i}.png") for i in range(3))]
    args += ["--model", "hostile_models:make", "--size", "32", "--method", "both", "--top-k", "3"]
    assert main([*args, "--out", str(out), "-q"]) == EXIT_OK
    browser.set_window_size(1400, 1000)
    try:
        state = _open(browser, out / "index.html", tmp_path / "top-k-both.png")
        layout = browser.execute_script(
            """
            const top = Array.from(document.querySelectorAll('table.grid th')).pop();
            return {
                viewport: document.documentElement.clientWidth,
                scrollWidth: document.documentElement.scrollWidth,
                topRight: top.getBoundingClientRect().right,
                topText: top.textContent,
                reading: document.querySelector('p.reading').textContent,
                methodLink: document.querySelector('p.reading a').href,
            };
            """
        )
    finally:
        browser.set_window_size(1280, 1000)
    assert state["headers"] == ["Image", "Grad-CAM++", "Grad-CAM", "Disagreement", "Top classes"]
    assert state["rows"] == 3
    assert len(state["images"]) == 1 + 3 * (1 + 2 * 3)
    assert layout["topText"] == "Top classes"
    assert layout["topRight"] <= layout["viewport"] <= 1400  # on screen, no sideways scrolling
    assert layout["scrollWidth"] <= layout["viewport"]
    assert "Grad-CAM++" in layout["reading"] and "mean" in layout["reading"]
    assert layout["methodLink"] == "https://arxiv.org/abs/1710.11063"
    _check_screenshot(tmp_path / "top-k-both.png")
    with Image.open(tmp_path / "top-k-both.png") as picture:
        assert picture.size[0] == layout["viewport"] or picture.size[0] <= 1400
