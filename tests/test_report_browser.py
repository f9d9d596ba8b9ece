"""The HTML report in a real headless Chromium: it loads, no image is broken, the grid shows.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``scripts/test.sh`` installs
them) and the ``selenium`` package. Set ``GRADCAMPP_SCREENSHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")
webdriver = pytest.importorskip("selenium.webdriver")

from PIL import Image  # noqa: E402

from gradcampp.cli import EXIT_OK, EXIT_SKIPPED, main  # noqa: E402

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


def test_demo_report_in_chromium(browser, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--count", "4", "-q"]) == EXIT_OK
    assert str((out / "index.html").resolve()) in capsys.readouterr().out
    state = _open(browser, out / "index.html", tmp_path / "demo-report.png")
    assert state["ready"] == "complete"
    broken = [src for src, complete, width in state["images"] if not complete or width == 0]
    assert broken == []
    assert state["headers"] == ["Image", "Grad-CAM++", "Grad-CAM", "Top classes"]
    assert state["rows"] == 6  # 4 single-instance + 2 multi-instance images
    assert len(state["images"]) == 1 + 6 * 3  # colour bar + (image, 2 overlays) per row
    assert state["shownImages"] == 1 + 6 * 3  # every picture at a readable size
    assert state["gridWidth"] > 800 and state["gridHeight"] > 6 * 200
    _check_screenshot(tmp_path / "demo-report.png")
    # the broken-image check does see a missing picture
    (out / "multi-00.gradcam.png").unlink()
    state = _open(browser, out / "index.html", tmp_path / "demo-broken.png")
    broken = [src for src, complete, width in state["images"] if not complete or width == 0]
    assert broken == ["multi-00.gradcam.png"]


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
    assert state["headers"] == [
        "Image",
        "Grad-CAM++ (class #1)",
        "Grad-CAM++ (class #2)",
        "Top classes",
    ]
    assert state["rows"] == 2
    assert len(state["images"]) == 1 + 2 * 3
    assert "broken.png" in browser.find_element("css selector", "h2.skipped + ul").text
    _check_screenshot(tmp_path / "explain-report.png")
