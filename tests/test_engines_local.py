"""Large-run options of the local engine: --resume, --no-overlays, --report-sample, Parquet."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from gradcampp.cli import EXIT_OK, EXIT_USAGE, main
from gradcampp.demo import generate_shapes
from gradcampp.engines.run import sample_indices
from gradcampp.images import save_png
from gradcampp.maps import load_map
from gradcampp.parquet import map_of
from gradcampp.stages.write import upsample

N_IMAGES = 10


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Ten 64x64 demo images."""
    folder = tmp_path_factory.mktemp("shapes")
    batch = generate_shapes(N_IMAGES, seed=11)
    for i, image in enumerate(batch.images):
        save_png(folder / f"shape-{i:02d}.png", np.moveaxis(image, 0, -1))
    return folder


def explain(inputs: Path, out: Path, *extra: str) -> int:
    return main(["explain", str(inputs), "--model", "demo", "--out", str(out), "-q", *extra])


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory) -> Path:
    """A complete run with the default options, batch size 4."""
    out = tmp_path_factory.mktemp("reference")
    assert explain(shapes, out, "--batch-size", "4") == EXIT_OK
    return out


def csv_rows(out: Path) -> list[dict[str, str]]:
    """The rows of ``predictions.csv``, inputs resolved (they are relative to ``out``)."""
    with open(out / "predictions.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        row["input"] = str((out / row["input"]).resolve())
    return rows


def test_resume_explains_only_the_missing_images(shapes, reference, tmp_path):
    out = tmp_path / "out"
    assert explain(shapes, out, "--batch-size", "4") == EXIT_OK
    # a run killed mid-way: three images without their .json (one with a stray map), a
    # temporary file of an interrupted write, an old report
    missing = ["shape-01", "shape-05", "shape-09"]
    for name in missing:
        (out / f"{name}.json").unlink()
    (out / "shape-05.gradcampp.npy").unlink()
    (out / ".tmp-abcd1234.part").write_bytes(b"half")
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert explain(shapes, out, "--batch-size", "4", "--resume") == EXIT_OK
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        [*kept, *(f"{name}.json" for name in missing)]
    )
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # not rewritten
    assert not list(out.glob(".tmp-*"))
    for npy in reference.glob("*.npy"):
        expected = load_map(npy)  # float16 storage: one float16 step of the map's maximum
        atol = 1e-6 + 2.0**-11 * float(np.abs(expected).max())
        np.testing.assert_allclose(load_map(out / npy.name), expected, atol=atol, rtol=0)
    assert csv_rows(out) == csv_rows(reference)
    assert (out / "index.html").read_text() == (reference / "index.html").read_text()


def test_resume_reports_how_many_were_done(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert explain(shapes, out) == EXIT_OK
    (out / "shape-03.json").unlink()
    args = ["explain", str(shapes), "--model", "demo", "--out", str(out), "--resume"]
    assert main(args) == EXIT_OK
    assert f"Explained {N_IMAGES} image(s) ({N_IMAGES - 1} by an earlier run)" in (
        capsys.readouterr().out
    )


def test_resume_refuses_other_settings(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    assert explain(shapes, out) == EXIT_OK
    assert explain(shapes, out, "--resume", "--method", "both") == EXIT_USAGE
    message = capsys.readouterr().err
    assert "--resume" in message and "methods" in message and "gradcam" in message


def test_no_overlays_writes_maps_and_predictions_only(shapes, reference, tmp_path):
    out = tmp_path / "out"
    assert explain(shapes, out, "--no-overlays") == EXIT_OK
    assert (
        not list(out.glob("*.png"))
        and not list(out.glob("*.jpg"))
        and not (out / "index.html").exists()
    )
    assert len(list(out.glob("*.npy"))) == N_IMAGES
    record = json.loads((out / "shape-00.json").read_text())
    assert record["files"]["input"] is None and record["files"]["overlays"] == {"gradcampp": None}
    for npy in out.glob("*.npy"):
        expected = load_map(reference / npy.name)
        atol = 1e-6 + 2.0**-11 * float(np.abs(expected).max())
        np.testing.assert_allclose(load_map(npy), expected, atol=atol, rtol=0)
    assert csv_rows(out) == csv_rows(reference)


def test_report_sample_keeps_k_rows_spread_over_the_inputs(shapes, tmp_path):
    out = tmp_path / "out"
    assert explain(shapes, out, "--report-sample", "3") == EXIT_OK
    page = (out / "index.html").read_text()
    shown = re.findall(r'alt="(shape-\d\d)\.png"', page)
    assert shown == ["shape-00", "shape-04", "shape-09"]  # 0, 4.5, 9 rounded half to even
    assert "the report shows 3 of them" in page
    assert len({row["image"] for row in csv_rows(out)}) == N_IMAGES


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [(10, 3, [0, 4, 9]), (10, None, list(range(10))), (4, 9, [0, 1, 2, 3]), (7, 1, [0])],
)
def test_sample_indices(n, k, expected):
    assert sample_indices(n, k) == expected


def test_parquet_rows_equal_the_npy_maps(shapes, reference, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    for extra, layer_size in (((), True), (("--full-size",), False)):
        out = tmp_path / ("layer" if layer_size else "full")
        assert explain(shapes, out, "--format", "parquet", "--batch-size", "4", *extra) == EXIT_OK
        assert not list(out.glob("*.npy")) and not list(out.glob("shape-*.json"))
        parts = sorted((out / "explanations.parquet").glob("part-*.parquet"))
        assert len(parts) == 3  # groups of 4, 4 and 2 images
        rows = pq.read_table(out / "explanations.parquet").to_pylist()
        assert sorted(row["name"] for row in rows) == [f"shape-{i:02d}" for i in range(N_IMAGES)]
        for row in rows:
            stored = map_of(row, "gradcampp")
            expected = load_map(reference / f"{row['name']}.gradcampp.npy")
            if layer_size:  # the demo network's last feature map is 16x16 for 64x64 inputs
                assert stored.shape == (16, 16)
                stored = upsample(stored, (64, 64))
            # both stored as float16: each within 2**-12 of the maximum; the bicubic
            # upsampling's weights sum to at most 1.25 in magnitude per axis
            atol = 1e-6 + 2.0**-10 * float(np.abs(expected).max())
            np.testing.assert_allclose(stored, expected, atol=atol, rtol=0)
            record = json.loads((reference / f"{row['name']}.json").read_text())
            assert row["top_class_index"] == [c["class_index"] for c in record["top_classes"]]
            assert row["top_probability"] == pytest.approx(
                [c["probability"] for c in record["top_classes"]], abs=1e-9
            )
            assert (row["height"], row["width"], row["layer"]) == (64, 64, "features")
        assert csv_rows(out) == csv_rows(reference)


def test_parquet_keeps_the_disagreement_of_both_methods_for_the_report(shapes, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from gradcampp.disagreement import disagreement

    out = tmp_path / "both"
    args = ("--format", "parquet", "--full-size", "--method", "both", "--batch-size", "5")
    assert explain(shapes, out, *args) == EXIT_OK
    rows = pq.read_table(out / "explanations.parquet").to_pylist()
    assert len(rows) == N_IMAGES
    for row in rows:
        # computed on the float32 maps, before they are stored as float16 with their scales
        pp, gc = (map_of(row, m) for m in ("gradcampp", "gradcam"))
        assert row["explained_disagreement"] == [pytest.approx(disagreement(pp, gc), abs=1e-5)]
    first = (out / "index.html").read_text()
    assert f"Ordered by disagreement ({N_IMAGES})" in first
    # a resumed run reads the numbers back from the dataset: the same report
    assert explain(shapes, out, *args, "--resume") == EXIT_OK
    assert (out / "index.html").read_text() == first


def test_parquet_resume_adds_the_missing_rows_once(shapes, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    args = ("--format", "parquet", "--batch-size", "4", "--no-overlays")
    assert explain(shapes, out, *args) == EXIT_OK
    parts = sorted((out / "explanations.parquet").glob("part-*.parquet"))
    parts[1].unlink()  # a group that never finished
    assert explain(shapes, out, *args, "--resume") == EXIT_OK
    names = sorted(
        pq.read_table(out / "explanations.parquet", columns=["name"])["name"].to_pylist()
    )
    assert names == [f"shape-{i:02d}" for i in range(N_IMAGES)]
    assert len(list((out / "explanations.parquet").glob("part-*.parquet"))) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--workers", "2"), "--workers need --engine ray"),
        (("--address", "auto"), "--address need --engine ray"),
        (("--full-size",), "--full-size applies to --format parquet"),
    ],
)
def test_engine_option_errors(shapes, tmp_path, capsys, extra, message):
    assert explain(shapes, tmp_path / "out", *extra) == EXIT_USAGE
    assert message in capsys.readouterr().err
