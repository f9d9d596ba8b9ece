"""The demo's shapes generator: determinism, ground truth consistent with the pixels, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gradcampp.demo import CLASSES, MAX_INSTANCES, ShapesBatch, generate_shapes
from gradcampp.demo.shapes import mask_box, shape_mask


def _equal(a: ShapesBatch, b: ShapesBatch) -> bool:
    return (
        len(a) == len(b)
        and np.array_equal(a.images, b.images)
        and np.array_equal(a.labels, b.labels)
        and all(
            np.array_equal(x, y) for x, y in zip(a.instance_masks, b.instance_masks, strict=True)
        )
        and all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    )


@pytest.fixture(scope="module")
def batch() -> ShapesBatch:
    return generate_shapes(60, seed=5)


def test_same_seed_gives_the_same_batch_and_prefixes_agree(batch):
    assert _equal(batch, generate_shapes(60, seed=5))
    head = generate_shapes(7, seed=5)
    assert np.array_equal(head.images, batch.images[:7])
    assert np.array_equal(head.labels, batch.labels[:7])


def test_another_seed_gives_other_images(batch):
    other = generate_shapes(60, seed=6)
    assert not np.array_equal(other.images, batch.images)


def test_types_shapes_and_ranges(batch):
    assert batch.images.dtype == np.float32
    assert batch.images.shape == (60, 3, 64, 64)
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.labels.dtype == np.int64 and batch.labels.shape == (60,)
    assert set(batch.labels.tolist()) == set(range(len(CLASSES)))
    counts = [m.shape[0] for m in batch.instance_masks]
    assert min(counts) == 1 and max(counts) == MAX_INSTANCES
    for masks, boxes in zip(batch.instance_masks, batch.boxes, strict=True):
        assert masks.dtype == bool and masks.shape[1:] == (64, 64)
        assert boxes.shape == (masks.shape[0], 4) and boxes.dtype == np.int64


@pytest.mark.parametrize(("instances", "low", "high"), [(1, 1, 1), ((2, 4), 2, 4), (3, 3, 3)])
def test_instance_counts_follow_the_argument(instances, low, high):
    got = generate_shapes(25, seed=1, instances=instances, size=48)
    counts = {m.shape[0] for m in got.instance_masks}
    assert counts <= set(range(low, high + 1))
    assert got.images.shape == (25, 3, 48, 48)


def test_boxes_are_the_tight_boxes_of_the_masks(batch):
    for masks, boxes in zip(batch.instance_masks, batch.boxes, strict=True):
        for mask, box in zip(masks, boxes, strict=True):
            rows, cols = np.nonzero(mask)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            # the box is inside the image, and every mask pixel is inside the box
            assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64
            assert mask[box[1] : box[3], box[0] : box[2]].sum() == mask.sum()


def test_instances_are_disjoint_and_large_enough(batch):
    for masks in batch.instance_masks:
        assert masks.sum(axis=0).max() == 1
        assert masks.sum(axis=(1, 2)).min() >= 40  # radius >= ~6 px at 64x64


def test_pixels_inside_a_mask_have_one_colour_that_stops_at_its_border(batch):
    for image, masks in zip(batch.images, batch.instance_masks, strict=True):
        for mask in masks:
            inside = image[:, mask]  # (3, pixels)
            colour = inside[:, :1]
            assert np.array_equal(inside, np.broadcast_to(colour, inside.shape))
            # the ring of pixels just outside the mask is (almost) never that colour
            grown = mask.copy()
            grown[1:] |= mask[:-1]
            grown[:-1] |= mask[1:]
            grown[:, 1:] |= mask[:, :-1]
            grown[:, :-1] |= mask[:, 1:]
            ring = image[:, grown & ~mask]
            same = np.all(ring == colour, axis=0)
            assert same.mean() < 0.05


def test_instance_fill_ratio_matches_the_class(batch):
    # area / box area of the exact outlines: circle pi/4; the rest depend on rotation
    for label, masks, boxes in zip(batch.labels, batch.instance_masks, batch.boxes, strict=True):
        for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
            fill = mask.sum() / ((x1 - x0) * (y1 - y0))
            if CLASSES[label] == "circle":
                assert abs(fill - np.pi / 4) < 0.08
            elif CLASSES[label] == "star":
                assert fill < 0.6


@pytest.mark.parametrize(
    ("name", "area_over_r2"),
    [
        ("circle", np.pi),
        ("square", 2.0),
        ("triangle", 3 * np.sqrt(3) / 4),
        ("star", 5 * 0.45 * np.sin(np.pi / 5)),  # 10 triangles r * 0.45 r * sin(36 deg) / 2
    ],
)
def test_large_masks_have_the_analytic_area(name, area_over_r2):
    r = 80.0
    mask = shape_mask(name, 100.3, 99.7, r, 0.3, 200)
    assert abs(mask.sum() / (area_over_r2 * r * r) - 1) < 0.01


def test_mask_box_of_an_empty_mask_raises():
    with pytest.raises(ValueError, match="empty"):
        mask_box(np.zeros((8, 8), dtype=bool))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": -1, "seed": 0}, ValueError, "n must be >= 0"),
        ({"n": 2.0, "seed": 0}, TypeError, "n must be an int"),
        ({"n": 2, "seed": -3}, ValueError, "seed"),
        ({"n": 2, "seed": 0, "size": 8}, ValueError, "size"),
        ({"n": 2, "seed": 0, "instances": 0}, ValueError, "instances"),
        ({"n": 2, "seed": 0, "instances": (3, 2)}, ValueError, "instances"),
        ({"n": 2, "seed": 0, "instances": (1, 5)}, ValueError, "instances"),
        ({"n": 2, "seed": 0, "instances": "two"}, TypeError, "instances"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        generate_shapes(**kwargs)


def test_generating_does_not_import_torch():
    code = (
        "import sys; from gradcampp.demo import generate_shapes; generate_shapes(2, 0); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
