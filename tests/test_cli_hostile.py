"""``gradcampp explain`` against hostile and careless inputs: names, folders, links, broken models.

Each test states what the user gets: the exit status, a one-line message (never a traceback),
which files exist and that no input changed. The report's links are checked in a real browser
in ``test_report_browser.py``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")
pytest.importorskip("jinja2")

from cli_helpers import (  # noqa: E402
    GENERATED_NAMES,
    ISSUE_NAMES,
    digest,
    digests,
    error_lines,
    install_models,
    write_image,
)
from PIL import Image  # noqa: E402

from gradcampp.cli import (  # noqa: E402
    EXIT_MODEL,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_SKIPPED,
    EXIT_USAGE,
    main,
)
from gradcampp.outputs import CSV_TRIGGERS  # noqa: E402

TINY = ["--model", "hostile_models:make", "--size", "16", "-q"]


@pytest.fixture(autouse=True)
def models(tmp_path, monkeypatch):
    install_models(tmp_path / "models", monkeypatch)


def run(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_error(err: str, *fragments: str) -> None:
    """Exactly one error line on stderr, holding every fragment."""
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("gradcampp: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def links(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def check_report_links(out: Path) -> list[str]:
    """Every link in the report is ./-relative, URL-encoded and names a file in ``out``."""
    page = (out / "index.html").read_text(encoding="utf-8")
    found = links(page)
    local = [link for link in found if not link.startswith("https://")]
    assert len(local) == len(found) - 1  # the one external link: how the methods work
    for link in local:
        assert link.startswith("./"), link
        assert not re.search(r"[\s\"'<>#?\\]", link), link  # every special character encoded
        assert (out / unquote(link[2:])).is_file(), link
    return local


@pytest.fixture
def hostile_folder(tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    names = [name for name in ISSUE_NAMES + GENERATED_NAMES if not name.startswith(".")]
    for i, name in enumerate(names):
        write_image(folder / name, seed=i)
    write_image(os.path.join(os.fsencode(folder), b"latin1-\xe9t\xe9.png"), seed=99)
    return folder, len(names) + 1


def test_hostile_names_lose_nothing_and_inject_nothing(tmp_path, capsys, hostile_folder):
    folder, count = hostile_folder
    hidden = tmp_path / "..png"  # passed by name: a folder scan skips hidden files
    write_image(hidden, seed=123)
    before = digests(folder)
    out = tmp_path / "out"
    code, err = run(capsys, "explain", folder, hidden, *TINY, "--out", out)
    assert code == EXIT_OK, err
    assert digests(folder) == before  # no input touched
    records = [json.loads(p.read_text(encoding="utf-8")) for p in out.glob("*.json")]
    assert len(records) == count + 1
    assert len({r["name"].casefold() for r in records}) == count + 1  # distinct result names
    # each record's input is relative to the output folder and leads back to its file
    sources = set()
    for record in records:
        assert not os.path.isabs(record["input"])
        if "\\x" not in record["input"]:  # the non-UTF-8 name is shown with \xNN escapes
            sources.add(os.path.realpath(out / record["input"]))
    utf8_inputs = {os.path.realpath(folder / n) for n in os.listdir(folder)}
    utf8_inputs = {p for p in utf8_inputs if "\udce9" not in p} | {os.path.realpath(hidden)}
    assert sources == utf8_inputs
    assert any(r["input"].endswith("latin1-\\xe9t\\xe9.png") for r in records)
    # every result file name fits a file system and is printable
    for file in os.listdir(out):
        assert len(os.fsencode(file)) <= 255
        assert file.isprintable(), repr(file)
    # predictions.csv: every row, no cell a spreadsheet would run
    with open(out / "predictions.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert len(rows) == 1 + 5 * (count + 1)
    for row in rows[1:]:
        for cell in (row[0], row[1], row[4]):
            assert not cell.startswith(CSV_TRIGGERS), row
    assert any(row[0] == "'=HYPERLINK(1)" for row in rows)
    # the report: links encoded and resolvable, text escaped, no markup from a file name
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "javascript:" not in "".join(links(page))
    assert "<script>window" not in page and "<img src=x" not in page and "<svg" not in page
    assert "&lt;script&gt;window.pwned=2.png" in page
    assert len(check_report_links(out)) == 1 + (count + 1) * 4  # colour bar + 4 per image


def test_equal_names_from_two_folders_and_a_name_like_a_suffix(tmp_path, capsys):
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
    write_image(tmp_path / "d1" / "a.png", seed=1)
    write_image(tmp_path / "d2" / "a.png", seed=2)
    write_image(tmp_path / "d1" / "a-2.png", seed=3)
    out = tmp_path / "out"
    code, err = run(capsys, "explain", tmp_path / "d1", tmp_path / "d2", *TINY, "--out", out)
    assert code == EXIT_OK, err
    records = {
        json.loads(p.read_text())["input"]: json.loads(p.read_text()) for p in out.glob("*.json")
    }
    assert set(records) == {"../d1/a.png", "../d1/a-2.png", "../d2/a.png"}
    assert records["../d1/a-2.png"]["name"] == "a-2"  # keeps its own name
    assert records["../d1/a.png"]["name"] == "a"
    assert records["../d2/a.png"]["name"] == "a-3"
    pictures = {
        digest(out / record["files"]["input"]) for record in records.values()
    }  # three different pictures, none overwritten
    assert len(pictures) == 3


def test_out_equal_to_the_input_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["colorbar.png", "b.input.png", "c.gradcampp.png", "b.png", "c.png"]):
        write_image(folder / name, seed=i)
    before = digests(folder)
    for attempt in range(2):  # the second run must not take the first run's results for inputs
        code, err = run(capsys, "explain", folder, *TINY, "--out", folder)
        assert code == EXIT_OK, err
        after = digests(folder)
        assert {name: after[name] for name in before} == before  # inputs unchanged
        inputs = sorted(json.loads(p.read_text())["input"] for p in folder.glob("*.json"))
        assert inputs == sorted(n.decode() for n in before), attempt
    assert (folder / "index.html").is_file()
    assert (folder / "colorbar-2.png").is_file()  # the report's colour bar steps aside
    assert "./colorbar-2.png" in (folder / "index.html").read_text()


def test_output_folder_inside_the_input_folder_is_left_out(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a.png")
    out = folder / "results"
    for _ in range(2):
        code, err = run(capsys, "explain", folder, *TINY, "--out", out)
        assert code == EXIT_OK, err
    assert [p.name for p in out.glob("*.json")] == ["a.json"]


def test_non_utf8_name_is_explained_and_the_run_completes(tmp_path, capsys):
    folder = os.fsencode(tmp_path / "mixed")
    os.mkdir(folder)
    write_image(os.path.join(folder, b"caf\xe9.png"), seed=1)
    write_image(os.path.join(folder, b"plain.png"), seed=2)
    out = tmp_path / "out"
    code, err = run(capsys, "explain", os.fsdecode(folder), *TINY, "--out", out)
    assert code == EXIT_OK, err
    assert sorted(p.name for p in out.glob("*.json")) == ["caf_.json", "plain.json"]
    record = json.loads((out / "caf_.json").read_text(encoding="utf-8"))
    assert record["input"] == "../mixed/caf\\xe9.png"
    assert (out / "index.html").is_file()
    with open(out / "predictions.csv", encoding="utf-8") as file:
        assert len(file.read().splitlines()) == 1 + 2 * 5


def test_symlinks_in_out_are_replaced_not_written_through(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", out)
    assert code == EXIT_OK, err
    names = ("a.json", "a.input.jpg", "index.html", "predictions.csv")
    for name in names:  # files of gradcampp's (the manifest lists them) swapped for links
        (out / name).unlink()
        (out / name).symlink_to(victim)
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", out)
    assert code == EXIT_OK, err
    assert victim.read_text() == "precious"
    for name in names:
        assert not (out / name).is_symlink() and (out / name).is_file()
    assert json.loads((out / "a.json").read_text())["name"] == "a"
    # a manifest that is a link is replaced and not trusted: every file there is then foreign
    before = digests(out)
    (out / ".gradcampp-files").unlink()
    (out / ".gradcampp-files").symlink_to(victim)
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", out)
    assert code == EXIT_OK, err
    assert victim.read_text() == "precious"
    assert not (out / ".gradcampp-files").is_symlink()
    after = digests(out)
    assert {name: after[name] for name in before if name != b".gradcampp-files"} == {
        name: before[name] for name in before if name != b".gradcampp-files"
    }
    assert json.loads((out / "a-2.json").read_text())["name"] == "a-2"


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", blocker)
    assert code == EXIT_USAGE
    one_error(err, "is a file, not a directory")
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", blocker / "sub")
    assert code == EXIT_USAGE
    one_error(err, "a part of that path is a file")
    assert blocker.read_text() == "x"
    long_dir = tmp_path / ("d" * 300)
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", long_dir)
    assert code == EXIT_USAGE
    one_error(err, "cannot be created", "too long")


def test_read_only_out(tmp_path, capsys, monkeypatch):
    write_image(tmp_path / "a.png")
    out = tmp_path / "locked"
    out.mkdir()
    if os.geteuid() != 0:  # a real read-only folder (root writes anyway)
        out.chmod(0o555)
        try:
            code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", out)
        finally:
            out.chmod(0o755)
        assert code == EXIT_USAGE
        one_error(err, "is not writable", "ermission denied")
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", out)
    assert code == EXIT_USAGE
    one_error(err, "is not writable: Permission denied")
    assert list(out.iterdir()) == []


def test_long_file_name(tmp_path, capsys):
    name = "y" * 245 + ".png"
    write_image(tmp_path / name)
    out = tmp_path / "out"
    code, err = run(capsys, "explain", tmp_path / name, *TINY, "--top-k", "2", "--out", out)
    assert code == EXIT_OK, err
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["input"] == "../" + name
    assert all(len(file) <= 255 for file in os.listdir(out))
    assert len(record["files"]["overlays"]["gradcampp"]) == 2


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("hostile_models:raises", ["calling hostile_models:raises() failed", "no checkpoint"]),
        ("hostile_broken:make", ["importing module 'hostile_broken'", "cannot find the config"]),
        ("hostile_models:needs", ["must be callable without arguments", "needs depth"]),
        ("hostile_models:pair", ["returns a tuple of 2 items", "outputs[0]"]),
        ("hostile_models:flat", ["no module of the model outputs", "--layer"]),
    ],
)
def test_models_that_fail_exit_3_with_one_line(tmp_path, capsys, spec, fragments):
    write_image(tmp_path / "a.png")
    args = ["explain", tmp_path / "a.png", "--model", spec, "--size", "16", "-q"]
    code, err = run(capsys, *args, "--out", tmp_path / "o")
    assert code == EXIT_MODEL
    one_error(err, *fragments)


@pytest.mark.parametrize(
    ("extra", "code", "fragments"),
    [
        (["--size", "1"], EXIT_MODEL, ["for inputs of shape (3, 1, 1)", "larger --size"]),
        (["--device", "meta"], EXIT_MODEL, ["--device meta holds no data"]),
        (["--device", "nonsense"], EXIT_MODEL, ["unknown device 'nonsense'"]),
        (["--size", "100000"], EXIT_USAGE, ["at most 4096 pixels a side"]),
        (["--target", "\u00b2"], EXIT_MODEL, ["'\u00b2' is not a class index"]),
        (["--layer", "nosuch"], EXIT_MODEL, ["no layer named 'nosuch'", "top-level layers"]),
        (["--layer", "feature"], EXIT_MODEL, ["nearest names: 'features'"]),
        (["--cmap", "nosuchmap"], EXIT_USAGE, ["nosuchmap"]),
    ],
)
def test_bad_options_exit_with_one_line(tmp_path, capsys, extra, code, fragments):
    write_image(tmp_path / "a.png")
    args = ["explain", tmp_path / "a.png", "--model", "hostile_models:make", "--size", "16"]
    got, err = run(capsys, *args, *extra, "-q", "--out", tmp_path / "o")
    assert got == code
    if code == EXIT_USAGE and extra[0] == "--size":
        assert "at most 4096" in err  # argparse's own usage message
    else:
        one_error(err, *fragments)
    assert not (tmp_path / "o" / "index.html").exists()


def test_the_models_own_error_on_one_image_skips_only_that_image(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"ok{i}.png", seed=i)
    Image.fromarray(np.full((16, 20, 3), 255, np.uint8)).save(folder / "white.png")
    out = tmp_path / "out"
    args = ["--model", "hostile_models:picky", "--size", "16", "--batch-size", "4", "-q"]
    code, err = run(capsys, "explain", folder, *args, "--out", out)
    assert code == EXIT_SKIPPED
    assert "skipped" in err and "white.png" in err
    assert "the model failed on it (RuntimeError: input out of the range" in err
    assert sorted(p.name for p in out.glob("*.json")) == ["ok0.json", "ok1.json", "ok2.json"]
    assert "white.png" in (out / "index.html").read_text()  # listed as skipped


def test_only_failures_exit_4(tmp_path, capsys):
    Image.fromarray(np.full((16, 20, 3), 255, np.uint8)).save(tmp_path / "white.png")
    args = ["--model", "hostile_models:picky", "--size", "16", "-q"]
    code, err = run(capsys, "explain", tmp_path / "white.png", *args, "--out", tmp_path / "o")
    assert code == EXIT_NOTHING
    one_error(err, "no input could be read or explained")


def test_fifo_is_skipped_not_waited_on(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code, err = run(capsys, "explain", fifo, tmp_path / "a.png", *TINY, "--out", tmp_path / "o")
    assert code == EXIT_SKIPPED
    assert "pipe.png: not a regular file" in err
    assert (tmp_path / "o" / "a.json").is_file()


def test_class_names_with_bad_json_name_the_file(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    names = tmp_path / "names.json"
    names.write_text('["ant", "bee",]')
    args = ["--classes", names, "--out", tmp_path / "o"]
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, *args)
    assert code == EXIT_MODEL
    one_error(err, str(names), "is not valid JSON")


def test_wrong_architecture_weights_in_one_short_line(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    weights = tmp_path / "other.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict(), weights)
    args = ["--weights", weights, "--out", tmp_path / "o"]
    code, err = run(capsys, "explain", tmp_path / "a.png", *TINY, *args)
    assert code == EXIT_MODEL
    one_error(err, "are for another architecture", "6 tensor(s) missing", "2 unexpected")
    assert len(err) < 400


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("demo", "--weights is not used with --model demo"), ("m.keras", "not used with a .keras")],
)
def test_weights_refused_where_unused(tmp_path, capsys, spec, fragment):
    write_image(tmp_path / "a.png")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    args = ["--model", spec, "--weights", weights, "-q", "--out", tmp_path / "o"]
    code, err = run(capsys, "explain", tmp_path / "a.png", *args)
    assert code == EXIT_MODEL
    one_error(err, fragment)


@pytest.mark.slow
def test_torchvision_without_weights_warns_on_stderr(tmp_path, capsys):
    pytest.importorskip("torchvision")
    write_image(tmp_path / "a.png", size=(40, 40))
    args = ["--model", "torchvision:resnet18", "--size", "32", "-q", "--out", tmp_path / "o"]
    code, err = run(capsys, "explain", tmp_path / "a.png", *args)
    assert code == EXIT_OK
    (warning,) = [line for line in err.splitlines() if line.startswith("gradcampp: warning")]
    assert "random weights" in warning and "--weights" in warning


def test_paths_in_results_are_relative_to_the_output_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "a.png")
    monkeypatch.chdir(tmp_path / "in")  # a relative input and output, from another folder
    code, err = run(capsys, "explain", "a.png", *TINY, "--out", "../results/run1")
    assert code == EXIT_OK, err
    out = tmp_path / "results" / "run1"
    assert json.loads((out / "a.json").read_text())["input"] == "../../in/a.png"
    with open(out / "predictions.csv", newline="") as file:
        assert {row["input"] for row in csv.DictReader(file)} == {"../../in/a.png"}


def test_demo_help_lists_only_its_exit_codes():
    result = subprocess.run(
        [sys.executable, "-m", "gradcampp", "demo", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    codes = re.findall(r"^  (\d+)  ", result.stdout.split("exit status:")[1], re.MULTILINE)
    assert codes == ["0", "2", "3", "5", "130"]


@pytest.mark.parametrize(
    ("raised", "code", "fragment"),
    [
        (KeyError("oops"), 5, "unexpected KeyError: 'oops' (this is a bug in gradcampp"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_unexpected_errors_and_interrupts_end_in_one_line(
    tmp_path, capsys, monkeypatch, raised, code, fragment
):
    import gradcampp.engines.local

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(gradcampp.engines.local, "run_local", fail)
    monkeypatch.delenv("GRADCAMPP_TRACEBACK", raising=False)
    write_image(tmp_path / "a.png")
    got, err = run(capsys, "explain", tmp_path / "a.png", *TINY, "--out", tmp_path / "o")
    assert got == code
    one_error(err, fragment)


def test_demo_count_is_bounded(capsys):
    assert main(["demo", "--count", "100000"]) == EXIT_USAGE
    assert "--count: at most 1000" in capsys.readouterr().err
