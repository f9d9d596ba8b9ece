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


def _entry(name="a<b>.png", image="a.png", panels=("a.x.png",), disagreement=()):
    return ReportEntry(
        name=name,
        image=image,
        panels=[Panel(p, "cat (90.0%)") for p in panels],
        predictions=[("cat", 0.9), ("dog & co", 0.1)],
        note="true: cat",
        files=[("map", "a.npy")],
        disagreement=disagreement,
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
        tmp_path,
        [_entry(panels=("a.x.png", "a.y.png"), disagreement=(0.25,))],
        columns=["Grad-CAM++", "Grad-CAM"],
    ).read_text()
    for page in (one, both):
        assert "<em>mean</em> gradient" in page and "How Grad-CAM++ works</a>" in page
        assert "should cover" not in page  # what the page says comes from the run, not a paper
    assert "Disagreement" not in one and "1 \u2212 r" not in one
    only_gradcam = write_report(tmp_path, [_entry()], columns=["Grad-CAM"]).read_text()
    assert "Grad-CAM weights each feature map by its <em>mean</em> gradient." in only_gradcam
    assert "Grad-CAM++ weights" not in only_gradcam and "Disagreement" not in only_gradcam
    assert "<th>Disagreement</th>" in both
    assert "On this run it is 0.250 for the one image and class." in both


def _row_of(page: str, row_id: str) -> str:
    return re.search(rf'<tr id="{row_id}"[^>]*>(.*?)</tr>', page, flags=re.S).group(0)


def test_report_orders_and_marks_the_images_where_the_methods_differ_most(tmp_path):
    names = [f"{k}{i}.png" for i in range(4) for k in "ixy"]
    _pictures(tmp_path, names)
    values = [0.010, 0.300, None, 0.020]
    entries = [
        ReportEntry(
            name=f"img{i}.png",
            image=f"i{i}.png",
            panels=[Panel(f"x{i}.png", f"class {i}"), Panel(f"y{i}.png", f"class {i}")],
            predictions=[("cat", 0.9)],
            disagreement=(value,),
        )
        for i, value in enumerate(values)
    ]
    page = write_report(tmp_path, entries, columns=["Grad-CAM++", "Grad-CAM"]).read_text()
    assert "<th>Image</th><th>Grad-CAM++</th><th>Grad-CAM</th><th>Disagreement</th>" in page
    # 10% of 3 defined values rounds to 0: at least the largest one is marked
    assert 'class="differs"' in _row_of(page, "row-2") and "differs most" in _row_of(page, "row-2")
    for other in ("row-1", "row-3", "row-4"):
        assert "differs" not in _row_of(page, other)
    assert "<b>undefined (a constant map)</b>" in _row_of(page, "row-3")
    ordered = re.search(r'<table class="ordered">(.*?)</table>', page, flags=re.S).group(1)
    links = re.findall(r'<a href="#(row-\d)">', ordered)
    assert links == ["row-2", "row-4", "row-1", "row-3"]  # largest first, undefined last
    assert (
        "On this run it ranges from 0.010 to 0.300 (median 0.020) over 3 images and classes; "
        "the largest is marked “differs most”" in page
    )
    assert "1 pair(s) have a constant map" in page
    bad = ReportEntry(
        "a", "i0.png", [Panel("x0.png"), Panel("y0.png")], [], disagreement=(0.1, 0.2)
    )
    with pytest.raises(ValueError, match="2 disagreement values for 1 explained classes"):
        write_report(tmp_path, [bad], columns=["Grad-CAM++", "Grad-CAM"])


def test_report_stacks_several_classes_in_each_method_column(tmp_path):
    names = ["a.png", "p1.png", "p2.png", "q1.png", "q2.png"]
    _pictures(tmp_path, names)
    (tmp_path / "a.npy").write_bytes(b"")
    page = write_report(
        tmp_path, [_entry(panels=names[1:])], columns=["Grad-CAM++", "Grad-CAM"]
    ).read_text()
    cells = re.findall(r"<td(?: data-label=\"[^\"]*\")?>(.*?)</td>", page, flags=re.S)
    assert [cell.count("<figure>") for cell in cells[:3]] == [1, 2, 2]
    assert "./p1.png" in cells[1] and "./p2.png" in cells[1] and "./q2.png" in cells[2]
    with pytest.raises(ValueError, match="3 panels for 2 columns"):
        write_report(tmp_path, [_entry(panels=names[1:4])], columns=["Grad-CAM++", "Grad-CAM"])
