"""Image files as the command line reads them: bit depths, size limits and memory.

The thin-image and ``--size`` cases run in a child process under a memory limit
(``resource.setrlimit``), set once everything is imported, a little above what the process uses
then: a run that held an image at full resolution, or resized a thin image whole, would fail.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from cli_helpers import install_models, write_image, write_model_modules
from PIL import Image

from gradcampp.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, main
from gradcampp.images import MAX_PIXELS, ImageReadError, read_image
from gradcampp.maps import load_map

TINY = ["--model", "hostile_models:make", "-q"]


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    install_models(tmp_path / "models", monkeypatch)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels (no pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_16_bit_png_is_scaled_not_clipped(tmp_path, capsys, tiny_model):
    ramp = np.repeat(np.linspace(0, 65535, 256).round().astype(np.uint16)[None], 8, axis=0)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as picture:
        assert picture.mode == "I;16"
    rgb = read_image(tmp_path / "ramp16.png")
    expected = np.rint(ramp / 65535 * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=-1))
    out = tmp_path / "out"
    code = main(
        ["explain", str(tmp_path / "ramp16.png"), *TINY, "--size", "8x256", "--out", str(out)]
    )
    assert code == EXIT_OK
    with Image.open(out / "ramp16.input.jpg") as picture:
        seen = np.asarray(picture)
    assert len(np.unique(seen)) > 200  # a ramp, not {0, 255}
    assert capsys.readouterr().err == ""


def test_float_tiff_in_unit_range_is_kept_and_others_are_scaled_with_a_warning(
    tmp_path, capsys, tiny_model
):
    unit = np.linspace(0, 1, 16 * 20, dtype=np.float32).reshape(16, 20)
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "unit.tif")[..., 0], np.rint(unit * 255))
    wide = unit * 4 - 1  # values in [-1, 3]
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    notes: list[str] = []
    rgb = read_image(tmp_path / "wide.tif", notes=notes)
    np.testing.assert_array_equal(rgb[..., 0], np.rint((wide + 1) / 4 * 255))
    assert notes == [
        "wide.tif: F values in [-1, 3] scaled from their own minimum and maximum to the full range"
    ]
    out = tmp_path / "out"
    args = ["explain", str(tmp_path / "unit.tif"), str(tmp_path / "wide.tif"), *TINY]
    assert main([*args, "--size", "16", "--out", str(out)]) == EXIT_OK
    err = capsys.readouterr().err
    assert err.splitlines() == [f"gradcampp: warning: {notes[0]}"]


def test_header_limits_refuse_before_decoding(tmp_path):
    png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageReadError, match=f"more than the limit of {MAX_PIXELS:,}"):
        read_image(tmp_path / "huge.png")
    png_header_only(tmp_path / "thin.png", 20000, 1)
    with pytest.raises(ImageReadError, match="aspect ratio over 50:1"):
        read_image(tmp_path / "thin.png")


LIMITED_RUN = """
import contextlib, io, json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch, torchvision, PIL.Image, matplotlib.pyplot, jinja2, tqdm.auto
import gradcampp.engines.local
from gradcampp.cli import main
import hostile_models

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

limit = status("VmPeak:") + 768 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append([code, err.getvalue()])
print("RESULT " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """Three runs in one child process under a memory limit: ``{case: (exit code, stderr)}``."""
    root = tmp_path_factory.mktemp("limited")
    write_model_modules(root / "models")
    folder = root / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((1, 20000, 3), np.uint8)).save(folder / "thin.png")
    Image.fromarray(np.zeros((40, 2000, 3), np.uint8)).save(folder / "narrow.png")  # 50:1, fine
    for i in range(2):
        write_image(folder / f"ok{i}.png", size=(64, 48), seed=i)
    tiny = [str(folder / "ok0.png"), "--model", "hostile_models:make", "-q"]
    runs = {
        # torchvision's recipe: shorter side to 256, centre crop 224 (the narrow image becomes
        # 256 x 12800 before the crop; the thin one would become 256 x 5,120,000)
        "thin": ["explain", str(folder), "--model", "torchvision:resnet18", "-q"],
        "huge size": ["explain", *tiny, "--size", "100000"],
        "large size": ["explain", *tiny, "--size", "512"],
    }
    argvs = [[*argv, "--out", str(root / case.replace(" ", "-"))] for case, argv in runs.items()]
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_RUN, str(root / "models"), json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-3000:]
    outcomes = json.loads(lines[0][len("RESULT ") :])
    return root, {case: tuple(outcome) for case, outcome in zip(runs, outcomes, strict=True)}


@pytest.mark.slow
def test_thin_image_under_a_memory_limit_skips_only_itself(limited):
    root, outcomes = limited
    code, err = outcomes["thin"]
    assert "Traceback" not in err
    assert code == EXIT_SKIPPED, err
    assert "thin.png: 20000x1 pixels: an aspect ratio over 50:1" in err
    out = root / "thin"
    assert sorted(p.name for p in out.glob("*.json")) == ["narrow.json", "ok0.json", "ok1.json"]
    assert json.loads((out / "narrow.json").read_text())["size"] == [224, 224]


@pytest.mark.slow
def test_huge_size_is_refused_under_a_memory_limit(limited):
    root, outcomes = limited
    code, err = outcomes["huge size"]
    assert code == EXIT_USAGE
    assert "--size: at most 4096 pixels a side" in err and "Traceback" not in err
    code, err = outcomes["large size"]
    assert code == EXIT_OK, err
    assert load_map(root / "large-size" / "ok0.gradcampp.npy").shape == (512, 512)
