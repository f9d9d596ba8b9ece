"""``gradcampp explain`` and ``demo`` against an attacker and a careless user: nothing written
outside ``--out``, nothing of the user's replaced, no run that blocks, untrusted records redone.

Each test states the exit status, the one error line (or the warnings), and the files inside and
outside ``--out`` before and after, byte for byte where they must not change (``tree``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")
pytest.importorskip("jinja2")

from cli_helpers import (
    MODEL_MODULE,
    digest,
    error_lines,
    install_models,
    tree,
    write_image,
)

from gradcampp.cli import EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from gradcampp.maps import load_map

TINY = ["--model", "hostile_models:make", "--size", "16", "-q"]
RESULTS = (".json", ".npy", ".jpg", ".png", ".csv", ".html")


@pytest.fixture(autouse=True)
def models(tmp_path, monkeypatch):
    install_models(tmp_path / "models", monkeypatch)


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a blocked open or read is interrupted after ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(capsys, *args) -> tuple[int, str]:
    with deadline(60):
        code = main([os.fsdecode(a) if isinstance(a, Path) else str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_error(err: str, *fragments: str) -> str:
    """Exactly one line on stderr, an error holding every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gradcampp: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def warnings_of(err: str) -> list[str]:
    assert error_lines(err) == [], err
    return [line for line in err.splitlines() if line.startswith("gradcampp: warning: ")]


def images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_image(folder / name, seed=i)


def results(out: Path) -> dict[str, str]:
    """sha256 of the result files (not the manifest or the run file) in ``out``."""
    return {p.name: digest(p) for p in out.iterdir() if p.is_file() and p.suffix in RESULTS}


def assert_same_results(out: Path, reference: Path, redone: set[str]) -> None:
    """``out`` holds the result files of ``reference``: byte for byte, except for the images in
    ``redone``, explained again in another batch (float32 rounding): maps to 2e-5 of their
    largest value, the same classes, probabilities to 1e-6, pictures to 2 levels."""
    from PIL import Image

    assert sorted(results(out)) == sorted(results(reference))
    for name in results(reference):
        new, old = out / name, reference / name
        if name.split(".")[0] not in redone or name.endswith((".csv", ".html")):
            if not name.endswith((".csv", ".html")):
                assert digest(new) == digest(old), name
        elif name.endswith(".npy"):
            a, b = load_map(new), load_map(old)  # + one float16 step of the stored maps
            atol = (2e-5 + 2.0**-11) * float(b.max())
            np.testing.assert_allclose(a, b, rtol=0, atol=atol)
        elif name.endswith((".jpg", ".png")):
            a = np.asarray(Image.open(new), dtype=int)
            b = np.asarray(Image.open(old), dtype=int)
            assert np.abs(a - b).max() <= 2, name
        else:
            a, b = json.loads(new.read_text()), json.loads(old.read_text())
            for record in (a, b):
                for row in record["top_classes"] + record["explained"]:
                    row["probability"] = round(row["probability"], 6)
            assert a == b, name


# --- security --------------------------------------------------------------------------------


def test_link_to_a_folder_named_like_the_dataset_is_not_followed(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    images(tmp_path / "in", ["a.png"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "part-precious.parquet").write_bytes(b"the user's own data")
    (elsewhere / ".tmp-precious.part").write_bytes(b"also the user's")
    out = tmp_path / "out"
    out.mkdir()
    (out / "explanations.parquet").symlink_to(elsewhere, target_is_directory=True)
    before = tree(tmp_path)
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, "--format", "parquet", "--out", out)
    assert code == EXIT_USAGE
    one_error(err, "explanations.parquet is a symbolic link", "never through a link")
    assert tree(tmp_path) == before  # nothing written, inside --out or through the link


def test_a_link_named_like_a_result_in_the_inputs_folder_is_kept(tmp_path, capsys):
    picture = tmp_path / "elsewhere" / "picture.png"
    images(picture.parent, ["picture.png"])
    folder = tmp_path / "photos"
    images(folder, ["b.png"])
    (folder / "b.input.jpg").symlink_to(picture)
    before = tree(tmp_path)
    code, err = run(capsys, "explain", folder, *TINY, "--out", folder)
    assert code == EXIT_OK, err
    after = tree(tmp_path)
    assert after["photos/b.input.jpg"] == ("link", str(picture))  # the user's link is kept
    assert {k: after[k] for k in before} == before  # nothing that was there changed
    record = json.loads((folder / "b-2.json").read_text())
    assert (record["name"], record["input"]) == ("b-2", "b.png")
    assert (folder / "b-2.input.jpg").is_file()
    new = set(after) - set(before)
    assert all(k.startswith("photos/") for k in new)  # nothing outside --out


def test_model_module_in_the_current_folder_does_not_shadow_packages(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "cwd_models.py").write_text(textwrap.dedent(MODEL_MODULE))
    for package in ("tqdm", "jinja2"):  # a planted module writes a file when it runs
        (work / f"{package}.py").write_text(
            f"open({str(tmp_path / ('ran-' + package))!r}, 'w').close()\n"
            "raise ImportError('planted')\n"
        )
    write_image(work / "a.png")
    command = [sys.executable, "-m", "gradcampp", "explain", "a.png", "--model"]
    command += ["cwd_models:make", "--size", "16", "--out", "out"]
    result = subprocess.run(
        command, cwd=work, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert not (tmp_path / "ran-tqdm").exists() and not (tmp_path / "ran-jinja2").exists()
    assert "tqdm" not in sys.modules or "ran-" not in str(sys.modules["tqdm"])
    assert json.loads((work / "out" / "a.json").read_text())["model"] == "cwd_models:make"


# --- data loss -------------------------------------------------------------------------------


def test_files_in_out_that_gradcampp_did_not_write_are_never_replaced(tmp_path, capsys):
    folder = tmp_path / "photos"
    images(folder, ["cat.png", "dog.png"])
    (folder / "cat.json").write_text('{"shapes": [{"label": "cat"}]}')  # LabelMe-style
    (folder / "index.html").write_text("<p>my album</p>")
    (folder / "predictions.csv").write_text("image,label\ncat,cat\n")
    before = tree(tmp_path)
    for _ in range(2):  # the second run replaces its own results, still none of the user's
        code, err = run(capsys, "explain", folder, *TINY, "--out", folder)
        assert code == EXIT_OK, err
        after = tree(tmp_path)
        assert {k: after[k] for k in before} == before
    assert json.loads((folder / "cat-2.json").read_text())["input"] == "cat.png"
    assert json.loads((folder / "dog.json").read_text())["input"] == "dog.png"
    assert (folder / "index-2.html").is_file() and (folder / "predictions-2.csv").is_file()
    assert "./cat-2.input.jpg" in (folder / "index-2.html").read_text()


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    images(tmp_path / "in", ["a.png"])
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    code, err = run(capsys, "explain", "in", *TINY, "--out", "")
    assert code == EXIT_USAGE
    one_error(err, "--out", "must name a directory, got ''")
    assert tree(tmp_path) == before


# --- special files ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--model", "--model keras", "--weights", "--classes"])
def test_a_fifo_as_a_model_weights_or_classes_file_is_refused(tmp_path, capsys, option):
    images(tmp_path / "in", ["a.png"])
    fifo = tmp_path / ("m.keras" if option.endswith("keras") else "m.pt")
    os.mkfifo(fifo)
    args = {
        "--model": ["--model", fifo],
        "--model keras": ["--model", fifo],
        "--weights": ["--model", "hostile_models:make", "--weights", fifo],
        "--classes": ["--model", "hostile_models:make", "--classes", fifo],
    }[option]
    before = tree(tmp_path)
    code, err = run(capsys, "explain", tmp_path / "in", *args, "-q", "--out", tmp_path / "o")
    assert code == EXIT_MODEL
    one_error(err, str(fifo), "is not a regular file (a pipe, socket or device)")
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("o")} == before


def test_a_device_as_the_model_is_refused_before_it_is_read(tmp_path, capsys):
    images(tmp_path / "in", ["a.png"])
    code, err = run(
        capsys, "explain", tmp_path / "in", "--model", "/dev/zero", "-q", "--out", tmp_path / "o"
    )
    assert code == EXIT_MODEL
    one_error(err, "model file /dev/zero is not a regular file")


def first_run(tmp_path, capsys, *extra) -> Path:
    images(tmp_path / "in", ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"])
    out = tmp_path / "out"
    code, err = run(
        capsys, "explain", tmp_path / "in", *TINY, "--batch-size", "2", *extra, "--out", out
    )
    assert code == EXIT_OK, err
    return out


@pytest.mark.parametrize("name", [".gradcampp-files", ".gradcampp-run"])
def test_a_fifo_in_out_stops_resume_with_one_line(tmp_path, capsys, name):
    out = first_run(tmp_path, capsys)
    (out / name).unlink()
    os.mkfifo(out / name)
    before = tree(tmp_path)
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, "--resume", "--out", out)
    assert code == EXIT_USAGE
    one_error(err, name, "is not a regular file (a pipe, socket or device)")
    assert tree(tmp_path) == before


def test_a_fifo_in_place_of_a_record_is_redone(tmp_path, capsys):
    out = first_run(tmp_path, capsys)
    shutil.copytree(out, tmp_path / "reference")
    (out / "b.json").unlink()
    os.mkfifo(out / "b.json")
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, "--resume", "--out", out)
    assert code == EXIT_OK, err
    (warning,) = warnings_of(err)
    assert "b.json is not a regular file" in warning and "explained again" in warning
    assert_same_results(out, tmp_path / "reference", {"b"})  # the record rewritten


# --- the run file and the records that --resume reads ----------------------------------------


RUN_FILES = [
    (b"garbage", "is not valid JSON"),
    (b"null", "holds a JSON NoneType"),
    (b"[1, 2]", "holds a JSON list"),
    (b"7", "holds a JSON int"),
    (b'"text"', "holds a JSON str"),
    (b'{"model": "x"}', "keys missing or unknown"),
    (b'{"model": "x\x00"}', "is not valid JSON"),
]


@pytest.mark.parametrize(
    ("content", "fragment", "format"),
    [(*case, "files") for case in RUN_FILES] + [(*case, "parquet") for case in RUN_FILES[:2]],
)
def test_a_run_file_that_does_not_parse_stops_resume(tmp_path, capsys, content, fragment, format):
    if format == "parquet":
        pytest.importorskip("pyarrow")
    out = first_run(tmp_path, capsys, "--format", format)
    (out / ".gradcampp-run").write_bytes(content)
    before = tree(tmp_path)
    code, err = run(
        capsys, "explain", tmp_path / "in", *TINY, "--resume", "--format", format, "--out", out
    )
    assert code == EXIT_USAGE
    one_error(err, "--resume:", ".gradcampp-run", fragment, "remove it to start afresh")
    assert tree(tmp_path) == before  # nothing explained twice, nothing replaced


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_records_that_do_not_match_the_schema_are_redone_and_said(tmp_path, capsys):
    out = first_run(tmp_path, capsys)
    shutil.copytree(out, tmp_path / "reference")
    outside = tree(tmp_path / "in")
    edit_json(out / "a.json", lambda r: r.update(name="z"))
    edit_json(out / "b.json", lambda r: r.pop("top_classes"))
    edit_json(out / "c.json", lambda r: r["top_classes"][0].update(probability="0.9"))
    edit_json(out / "d.json", lambda r: r["files"]["overlays"].update(extra="x.png"))
    npy = (out / "e.gradcampp.npy").read_bytes()
    (out / "e.gradcampp.npy").write_bytes(npy[: len(npy) // 2])  # truncated
    (out / "f.json").write_text("[1, 2, 3]")
    with open(out / ".gradcampp-files", "ab") as file:
        file.write(b"bad\x00line\n")  # a NUL byte in the manifest
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, "--resume", "--out", out)
    assert code == EXIT_OK, err
    found = warnings_of(err)
    assert len(found) == 6, err
    expected = {
        "a.json": "name 'z' is not 'a'",
        "b.json": "keys missing or unknown: 'top_classes'",
        "c.json": "probability '0.9' is not a number in [0, 1]",
        "d.json": "files are not the ones gradcampp writes",
        "e.json": "e.gradcampp.npy is truncated",
        "f.json": "holds a JSON list",
    }
    for (file, reason), line in zip(sorted(expected.items()), found, strict=True):
        assert f"--resume: {file} is not a record gradcampp wrote" in line, line
        assert reason in line and "is explained again" in line, line
    assert_same_results(out, tmp_path / "reference", set("abcdef"))
    assert tree(tmp_path / "in") == outside


@pytest.mark.parametrize(
    ("pictures", "victim", "kind"),
    [("jpeg", "a.input.jpg", "JPEG"), ("png", "a.gradcampp.png", "PNG")],
)
def test_a_truncated_picture_is_redone(tmp_path, capsys, pictures, victim, kind):
    out = first_run(tmp_path, capsys, "--pictures", pictures)
    shutil.copytree(out, tmp_path / "reference")
    data = (out / victim).read_bytes()
    (out / victim).write_bytes(data[: len(data) // 2])
    code, err = run(
        capsys, "explain", tmp_path / "in", *TINY, "--batch-size", "2",
        "--pictures", pictures, "--resume", "--out", out,
    )  # fmt: skip
    assert code == EXIT_OK, err
    [line] = warnings_of(err)
    assert "--resume: a.json is not a record gradcampp wrote" in line, line
    assert f"{victim} is not a whole {kind} file" in line and "is explained again" in line, line
    assert_same_results(out, tmp_path / "reference", {"a"})


def test_resume_with_other_pictures_stops_and_names_the_difference(tmp_path, capsys):
    out = first_run(tmp_path, capsys)
    before = tree(tmp_path)
    code, err = run(
        capsys, "explain", tmp_path / "in", *TINY, "--pictures", "png", "--resume", "--out", out
    )
    assert code == EXIT_USAGE
    one_error(err, "--resume:", "pictures: 'jpeg' then, 'png' now", "rerun with the same options")
    assert tree(tmp_path) == before


def test_a_run_file_without_the_newer_settings_holds_what_earlier_runs_used(tmp_path, capsys):
    earlier = ("--pictures", "png", "--map-dtype", "float32")  # what every run wrote before
    out = first_run(tmp_path, capsys, *earlier)
    settings = json.loads((out / ".gradcampp-run").read_text())
    del settings["pictures"], settings["map_dtype"]  # as earlier versions recorded it
    (out / ".gradcampp-run").write_text(json.dumps(settings))
    inodes = {p.name: p.stat().st_ino for p in out.glob("[a-f].*")}
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, *earlier, "--resume", "--out", out)
    assert code == EXIT_OK and warnings_of(err) == [], err
    assert {p.name: p.stat().st_ino for p in out.glob("[a-f].*")} == inodes  # none redone
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, "--resume", "--out", out)
    assert code == EXIT_USAGE
    one_error(err, "map_dtype: 'float32' then, 'float16' now", "pictures: 'png' then, 'jpeg' now")


def test_a_record_with_a_disagreement_out_of_range_is_redone(tmp_path, capsys):
    out = first_run(tmp_path, capsys, "--method", "both")
    before = json.loads((out / "a.json").read_text())["explained"][0]["disagreement"]
    assert 0.0 <= before <= 2.0
    edit_json(out / "a.json", lambda r: r["explained"][0].update(disagreement="high"))
    edit_json(out / "b.json", lambda r: r["explained"][0].pop("disagreement"))
    both = ("--method", "both")
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, *both, "--resume", "--out", out)
    assert code == EXIT_OK, err
    found = warnings_of(err)
    assert len(found) == 2, err
    assert "a.json" in found[0] and "disagreement 'high' is not a number in [0, 2]" in found[0]
    assert "b.json" in found[1] and "disagreement missing" in found[1]
    after = json.loads((out / "a.json").read_text())["explained"][0]["disagreement"]
    assert after == pytest.approx(before, abs=1e-5)


def test_parquet_resume_removes_a_broken_part_and_keeps_a_stray_file(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from gradcampp.parquet import map_of, read_dataset

    out = first_run(tmp_path, capsys, "--format", "parquet", "--no-overlays")
    dataset = out / "explanations.parquet"
    reference = {row["name"]: row for row in read_dataset(out).to_pylist()}
    parts = sorted(dataset.glob("part-*.parquet"))
    assert len(parts) == 3  # six images, two per group
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # a damaged part file
    (dataset / "notes.txt").write_text("mine")
    code, err = run(
        capsys,
        "explain",
        tmp_path / "in",
        *TINY,
        "--batch-size",
        "2",
        "--resume",
        "--format",
        "parquet",
        "--no-overlays",
        "--out",
        out,
    )
    assert code == EXIT_OK, err
    stray, broken = warnings_of(err)
    assert "'notes.txt', which gradcampp did not write" in stray and "read_dataset" in stray
    assert f"{parts[1].name} cannot be trusted (it cannot be read" in broken
    assert "its images are explained again" in broken
    assert (dataset / "notes.txt").read_text() == "mine"
    assert not parts[1].exists()
    rows = read_dataset(out).to_pylist()
    assert sorted(row["name"] for row in rows) == sorted(reference)  # each image once
    for row in rows:
        old = map_of(reference[row["name"]], "gradcampp")
        np.testing.assert_allclose(map_of(row, "gradcampp"), old, atol=2e-5 * float(old.max()))


# --- install hints and one-line messages ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["demo"], "the demo needs torch"), (["explain", "a.png", "--model", "demo"], "needs torch")],
)
def test_demo_without_torch_exits_3_naming_the_extra(tmp_path, argv, fragment):
    write_image(tmp_path / "a.png")
    script = (
        "import sys; sys.modules['torch'] = None\n"  # as after pip install ".[cli]"
        "from gradcampp.cli import main\n"
        f"sys.exit(main({[*argv, '-q', '--out', 'demo']!r}))\n"
    )
    before = tree(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_MODEL
    one_error(result.stderr, fragment, 'pip install ".[demo]" in a gradcampp checkout')
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("demo")} == before
    assert not list(tmp_path.glob("demo/*.json"))


def test_install_hints_name_a_command_a_user_can_run():
    source = Path(__file__).resolve().parents[1] / "src" / "gradcampp"
    texts = [p.read_text(encoding="utf-8") for p in source.rglob("*.py")]
    assert not [t for t in texts if 'install "gradcampp[' in t]  # not on a package index yet
    assert sum('".[' in t for t in texts) >= 5


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["explain"], "the following arguments are required: IMAGES_OR_DIRS, --model"),
        (["explain", "a.png", "--model", "demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["explain", "a.png", "--model", "demo", "--alpha", "2"], "--alpha: expected a number"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, fragment):
    code, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    line = err.strip()
    assert "\n" not in line and fragment in line, err
    assert line.endswith("--help)")


def test_a_std_that_is_zero_in_float32_is_a_usage_error(tmp_path, capsys):
    images(tmp_path / "in", ["a.png"])
    code, err = run(
        capsys, "explain", tmp_path / "in", *TINY, "--std", "1e-300", "--out", tmp_path / "o"
    )
    assert code == EXIT_USAGE
    line = err.strip()
    assert "\n" not in line and "--std" in line and "1e-300" in line and "float32" in line
    assert not (tmp_path / "o").exists()


def test_infinite_class_scores_end_in_one_line(tmp_path, capsys):
    images(tmp_path / "in", ["a.png", "b.png"])
    args = ["--model", "hostile_models:infinite", "--size", "16", "-q", "--out", tmp_path / "o"]
    code, err = run(capsys, "explain", tmp_path / "in", *args)
    assert code == EXIT_MODEL
    one_error(err, "the model returned infinite class scores")
    assert not list((tmp_path / "o").glob("*.json"))


def test_a_size_the_demo_network_cannot_take_has_its_own_message(tmp_path, capsys):
    images(tmp_path / "in", ["a.png", "b.png"])
    args = ["--model", "demo", "--size", "1", "-q", "--out", tmp_path / "o"]
    code, err = run(capsys, "explain", tmp_path / "in", *args)
    assert code == EXIT_MODEL
    one_error(err, "the model fails on every input of 1x1 pixels", "a larger --size")
    assert not list((tmp_path / "o").glob("*.json"))


def test_parquet_resume_without_a_run_file_explains_each_image_once(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    from gradcampp.parquet import read_dataset

    out = first_run(tmp_path, capsys, "--format", "parquet", "--no-overlays")
    (out / ".gradcampp-run").unlink()
    args = ["--resume", "--format", "parquet", "--no-overlays", "--out", out]
    code, err = run(capsys, "explain", tmp_path / "in", *TINY, *args)
    assert code == EXIT_OK, err
    names = [row["name"] for row in read_dataset(out, columns=["name"]).to_pylist()]
    assert sorted(names) == ["a", "b", "c", "d", "e", "f"]  # not twice


def test_demo_leaves_a_folder_of_the_users_named_inputs_alone(tmp_path, capsys):
    out = tmp_path / "demo"
    images(out / "inputs", ["single-00.png"])  # the user's, named as a demo image would be
    before = tree(tmp_path)
    code, err = run(capsys, "demo", "--count", "1", "-q", "--out", out)
    assert code == EXIT_USAGE
    one_error(err, "inputs is a folder gradcampp did not make", "choose another --out")
    assert tree(tmp_path) == before


def test_docs_list_every_exit_status_of_the_command():
    import re

    from gradcampp.cli import EXIT_CODES

    root = Path(__file__).resolve().parents[1]
    codes = re.findall(r"^  (\d+)  ", EXIT_CODES, re.MULTILINE)
    table = (root / "docs" / "cli.md").read_text(encoding="utf-8").split("### Exit status")[1]
    assert re.findall(r"^\| (\d+) \|", table, re.MULTILINE) == codes
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    sentence = readme.split("one line on stderr and an exit status: ")[1].split(". ")[0]
    assert re.findall(r"(\d+) \(", sentence) == codes
