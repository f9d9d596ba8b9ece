"""The HTML report's contents: relative links, escaping, columns, refusal of broken rows."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from gradcampp.images import save_png
from gradcampp.report import Panel, ReportEntry, write_colorbar, write_report
from gradcampp.viz import colorize


def _pictures(root, names):
    for name in names:
        save_png(root / name, np.zeros((4, 4, 3), np.uint8))


def _entry(name="a<b>.png", image="a.png", panels=("a.x.png",)):
    return ReportEntry(
        name=name,
        image=image,
        panels=[Panel(p, "cat (90.0%)") for p in panels],
        predictions=[("cat", 0.9), ("dog & co", 0.1)],
        note="true: cat",
        files=[("map", "a.npy")],
    )


def test_report_links_relative_files_and_escapes_text(tmp_path):
    _pictures(tmp_path, ["a.png", "a.x.png"])
    (tmp_path / "a.npy").write_bytes(b"")
    index = write_report(tmp_path, [_entry()], columns=["Grad-CAM++"], details=["Model: m<1>"])
    page = index.read_text()
    assert index == tmp_path / "index.html"
    assert 'src="./a.png"' in page and 'src="./a.x.png"' in page
    assert 'src="./colorbar.png"' in page
    assert 'href="./a.npy"' in page
    assert str(tmp_path) not in page  # nothing absolute: the folder can be moved
    assert "a&lt;b&gt;.png" in page and "dog &amp; co" in page and "m&lt;1&gt;" in page
    assert "<th>Image</th><th>Grad-CAM++</th><th>Top classes</th>" in page
    assert 'href="https://arxiv.org/abs/1710.11063"' in page  # how to read the two methods
    assert "90.0%" in page and "10.0%" in page


def test_report_lists_skipped_inputs(tmp_path):
    _pictures(tmp_path, ["a.png", "a.x.png"])
    (tmp_path / "a.npy").write_bytes(b"")
    page = write_report(
        tmp_path, [_entry()], columns=["Grad-CAM++"], skipped=[("bad.jpg", "corrupt")]
    ).read_text()
    assert "Skipped (1)" in page and "bad.jpg: corrupt" in page


def test_report_refuses_missing_or_absolute_files_and_wrong_columns(tmp_path):
    _pictures(tmp_path, ["a.png", "a.x.png"])
    (tmp_path / "a.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path, [_entry(image="missing.png")], columns=["Grad-CAM++"])
    with pytest.raises(ValueError, match="relative"):
        write_report(tmp_path, [_entry(image=str(tmp_path / "a.png"))], columns=["Grad-CAM++"])
    with pytest.raises(ValueError, match="2 columns"):
        write_report(tmp_path, [_entry()], columns=["Grad-CAM++", "Grad-CAM"])


def test_colorbar_runs_from_low_to_high(tmp_path):
    from PIL import Image

    write_colorbar(tmp_path / "bar.png", "viridis")
    with Image.open(tmp_path / "bar.png") as picture:
        bar = np.asarray(picture)
    assert bar.shape == (16, 256, 3)
    np.testing.assert_array_equal(bar[0, 0], np.rint(colorize(0.0, "viridis") * 255))
    np.testing.assert_array_equal(bar[0, -1], np.rint(colorize(1.0, "viridis") * 255))


def test_report_says_how_to_compare_the_methods_only_when_both_are_shown(tmp_path):
    _pictures(tmp_path, ["a.png", "a.x.png", "a.y.png"])
    (tmp_path / "a.npy").write_bytes(b"")
    one = write_report(tmp_path, [_entry()], columns=["Grad-CAM++"]).read_text()
    both = write_report(
        tmp_path, [_entry(panels=("a.x.png", "a.y.png"))], columns=["Grad-CAM++", "Grad-CAM"]
    ).read_text()
    for page in (one, both):
        assert "<em>mean</em> gradient" in page and "How Grad-CAM++ works</a>" in page
    assert "Compare the two columns" not in one and "Compare the two columns" in both


def test_report_stacks_several_classes_in_each_method_column(tmp_path):
    names = ["a.png", "p1.png", "p2.png", "q1.png", "q2.png"]
    _pictures(tmp_path, names)
    (tmp_path / "a.npy").write_bytes(b"")
    page = write_report(
        tmp_path, [_entry(panels=names[1:])], columns=["Grad-CAM++", "Grad-CAM"]
    ).read_text()
    cells = re.findall(r"<td>(.*?)</td>", page, flags=re.S)
    assert [cell.count("<figure>") for cell in cells[:3]] == [1, 2, 2]
    assert "./p1.png" in cells[1] and "./p2.png" in cells[1] and "./q2.png" in cells[2]
    with pytest.raises(ValueError, match="3 panels for 2 columns"):
        write_report(tmp_path, [_entry(panels=names[1:4])], columns=["Grad-CAM++", "Grad-CAM"])
