"""``gradcampp demo`` end to end: files, shapes, and maps that find the shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from PIL import Image

from gradcampp.cli import EXIT_OK, main
from gradcampp.demo import CLASSES
from gradcampp.demo_run import demo_batches, demo_names
from gradcampp.maps import load_map

COUNT = 16  # single-instance images; COUNT // 2 multi-instance ones follow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    code = main(["demo", "--out", str(out), "--count", str(COUNT), "--seed", "3"])
    return out, code


def test_demo_exits_cleanly_and_prints_the_report(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--count", "2", "-q"]) == EXIT_OK
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"Report: {(out / 'index.html').resolve()}"]
    assert (out / "index.html").is_file()


def test_demo_writes_every_file_with_its_shape(demo_run):
    out, code = demo_run
    assert code == EXIT_OK
    names = demo_names(COUNT)
    assert len(names) == COUNT + COUNT // 2
    single, multi = demo_batches(COUNT, 3)
    generated = np.concatenate([single.images, multi.images])
    for name, image in zip(names, generated, strict=True):
        with Image.open(out / "inputs" / f"{name}.png") as picture:
            written = np.asarray(picture, dtype=np.float32) / 255.0
        np.testing.assert_allclose(written, np.moveaxis(image, 0, -1), atol=0.5 / 255 + 1e-6)
        for method in ("gradcampp", "gradcam"):
            raw = load_map(out / f"{name}.{method}.npy")
            assert raw.shape == (64, 64) and raw.dtype == np.float32 and raw.max() > 0
            with Image.open(out / f"{name}.{method}.jpg") as picture:
                assert picture.size == (192, 192) and picture.mode == "RGB"
        record = json.loads((out / f"{name}.json").read_text())
        assert [row["class_name"] for row in record["top_classes"]] != []
        assert {row["class_name"] for row in record["top_classes"]} == set(CLASSES)
    page = (out / "index.html").read_text()
    assert page.count('<tr id="row-') == len(names)  # one row per image
    assert f"Ordered by disagreement ({len(names)})" in page  # both methods: one number each
    assert "Grad-CAM++" in page and "Grad-CAM</th>" in page


def _records(out, names):
    return [json.loads((out / f"{name}.json").read_text()) for name in names]


def test_demo_network_recognises_the_shapes(demo_run):
    out, _ = demo_run
    single, multi = demo_batches(COUNT, 3)
    labels = np.concatenate([single.labels, multi.labels])
    predicted = [r["top_classes"][0]["class_index"] for r in _records(out, demo_names(COUNT))]
    correct = np.asarray(predicted) == labels
    assert correct.mean() >= 0.8, correct


@pytest.mark.parametrize("method", ["gradcampp", "gradcam"])
def test_maps_peak_inside_a_shape(demo_run, method):
    out, _ = demo_run
    single, multi = demo_batches(COUNT, 3)
    names = demo_names(COUNT)
    masks = [*single.instance_masks, *multi.instance_masks]
    hits = []
    for name, instance_masks in zip(names, masks, strict=True):
        raw = load_map(out / f"{name}.{method}.npy")
        peak = np.unravel_index(np.argmax(raw), raw.shape)
        hits.append(bool(instance_masks.any(axis=0)[peak]))
    # "most": the map's maximum lies on a drawn shape for at least 70% of the images
    assert np.mean(hits[:COUNT]) >= 0.7, hits[:COUNT]
    assert np.mean(hits[COUNT:]) >= 0.7, hits[COUNT:]
