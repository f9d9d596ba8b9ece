"""Result names, relative paths and CSV cells (``gradcampp.outputs``), as pure functions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gradcampp.outputs import (
    MAX_NAME_BYTES,
    blocked_names,
    csv_cell,
    display_path,
    free_run_file,
    relative_path,
    safe_stem,
    unique_names,
)


def test_equal_stems_get_numbers_that_no_input_owns():
    paths = [Path("d1/a.png"), Path("d2/a.png"), Path("d1/a-2.png"), Path("d3/A.jpg")]
    assert unique_names(paths) == ["a", "a-3", "a-2", "A-4"]


def test_names_whose_results_would_overwrite_an_input_in_out_are_passed_over(tmp_path):
    inputs = [tmp_path / n for n in ("b.png", "b.input.png", "c.png", "c.gradcampp.png", "e.png")]
    other = tmp_path / "elsewhere" / "e.json"  # not in out: no clash
    names = unique_names([*inputs, other], tmp_path, ["gradcampp", "gradcam"])
    assert names == ["b-2", "b.input", "c-2", "c.gradcampp", "e", "e-2"]


@pytest.mark.parametrize(
    ("file_name", "blocked"),
    [
        ("b.input.png", {"b"}),
        ("b.input.JPG", {"b"}),  # either picture format, whichever a run writes
        ("B.JSON", {"b"}),
        ("c.gradcam.npy", {"c"}),
        ("x.gradcampp.12-tabby_cat.png", {"x"}),
        ("y.gradcam.3-dog.jpg", {"y"}),
        ("z.gradcam.jpeg", set()),  # a run writes .jpg, never .jpeg
        ("x.gradcampp.12-tabby cat.png", set()),  # a slug has no spaces: no result is named so
        ("a.b.json", {"a.b"}),
        ("plain.png", set()),
    ],
)
def test_blocked_names(file_name, blocked):
    assert blocked_names([file_name], ["gradcampp", "gradcam"]) == blocked


def test_safe_stem_is_printable_utf8_and_short():
    assert safe_stem(Path(os.fsdecode(b"caf\xe9.png"))) == "caf_"
    assert safe_stem(Path("new\nline\t.png")) == "new_line_"
    assert safe_stem(Path("..png")) == "image"
    long = safe_stem(Path("\u00e9" * 200 + ".png"))
    assert len(long.encode()) <= MAX_NAME_BYTES and long == "\u00e9" * (MAX_NAME_BYTES // 2)


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(lead):
    assert csv_cell(f"{lead}SUM(A1)") == f"'{lead}SUM(A1)"
    assert csv_cell(f"a{lead}b") == f"a{lead}b"


def test_relative_and_display_paths(tmp_path):
    assert relative_path(tmp_path / "in" / "a.png", tmp_path / "out") == "../in/a.png"
    assert display_path(os.fsdecode(b"/x/caf\xe9.png")) == "/x/caf\\xe9.png"


def test_run_files_step_aside_for_inputs(tmp_path):
    inputs = [tmp_path / "colorbar.png", tmp_path / "colorbar-2.png", tmp_path / "x" / "index.png"]
    assert free_run_file(tmp_path, "colorbar.png", inputs) == "colorbar-3.png"
    assert free_run_file(tmp_path, "index.html", inputs) == "index.html"
