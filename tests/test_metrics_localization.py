"""Pointing game, energy pointing game, Loc(delta) and instance recall by hand on a 4x4 map."""

import numpy as np
import pytest

from gradcampp.metrics import (
    boxes_to_masks,
    energy_pointing_game,
    instance_peak_recall,
    instance_recall,
    loc_delta,
    pointing_game,
)

# values 0..15 in row-major order; min-max normalised: E = value / 15
MAP = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
# box (x0, y0, x1, y1) = (1, 1, 3, 3): rows 1-2, columns 1-2, values 5, 6, 9, 10
BOX = boxes_to_masks([np.array([[1, 1, 3, 3]])], (4, 4))


def test_boxes_to_masks_uses_exclusive_ends_and_x_as_column():
    (mask,) = boxes_to_masks([[[0, 1, 2, 2]]], (3, 4))
    expected = np.zeros((1, 3, 4), dtype=bool)
    expected[0, 1, 0:2] = True
    np.testing.assert_array_equal(mask, expected)
    two = boxes_to_masks([np.array([[0, 0, 1, 1], [3, 2, 4, 3]])], (3, 4))[0]
    assert two.shape == (2, 3, 4)
    assert two.sum() == 2
    assert two[1, 2, 3]


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (0.0, 4 / (4 + 11)),  # E > 0: 15 pixels, 4 inside
        (0.25, 4 / (4 + 8)),  # E > 0.25: values 4..15, 12 pixels, 4 inside
        (0.5, 2 / (4 + 6)),  # E > 0.5: values 8..15, 8 pixels, 9 and 10 inside
        (1.0, 0.0),  # nothing above 1
    ],
)
def test_loc_delta_binarised_by_hand(delta, expected):
    np.testing.assert_allclose(loc_delta(MAP, BOX, delta, binarize=True), [expected])


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        # the paper's Loc^c(delta): values below delta set to 0, the others kept
        # delta 0: internal (5 + 6 + 9 + 10) / 15, external (120 - 30) / 15, box area 4
        (0.0, 30 / (60 + 90)),
        # delta 0.5: E >= 0.5 keeps values 8..15: internal (9 + 10), external 8 + 11 + ... + 15
        (0.5, 19 / (60 + 73)),
        # delta 0.6: E >= 0.6 keeps values 9..15 (9 / 15 = 0.6 is kept, not cut)
        (0.6, 19 / (60 + 65)),
        (1.0, 0.0),  # only the maximum (15, outside the box) is kept
    ],
)
def test_loc_delta_default_is_the_papers_with_the_values_kept(delta, expected):
    np.testing.assert_allclose(loc_delta(MAP, BOX, delta), [expected])
    np.testing.assert_allclose(loc_delta(MAP, BOX, delta, binarize=False), [expected])


def test_energy_pointing_game_by_hand():
    # energy (5 + 6 + 9 + 10) / (0 + 1 + ... + 15) = 30 / 120
    np.testing.assert_allclose(energy_pointing_game(MAP, BOX), [0.25])


def test_scores_ignore_a_positive_scale_and_offset_of_the_map():
    for metric in (energy_pointing_game, lambda m, b: loc_delta(m, b, 0.25)):
        np.testing.assert_allclose(metric(3 * MAP - 7, BOX), metric(MAP, BOX))


def test_pointing_game_with_a_tolerance():
    # the maximum (row 3, column 3) is sqrt(2) from the box corner (2, 2)
    assert not pointing_game(MAP, BOX)[0]
    assert not pointing_game(MAP, BOX, tolerance=1.0)[0]
    assert pointing_game(MAP, BOX, tolerance=1.5)[0]
    inside = MAP.copy()
    inside[0, 2, 1] = 99
    assert pointing_game(inside, BOX)[0]


def test_pointing_game_needs_every_tied_maximum_inside_and_a_non_constant_map():
    tied = np.zeros((1, 4, 4))
    tied[0, 1, 1] = tied[0, 0, 0] = 1.0
    assert not pointing_game(tied, BOX)[0]
    tied[0, 0, 0] = 0.0
    tied[0, 2, 2] = 1.0
    assert pointing_game(tied, BOX)[0]
    assert not pointing_game(np.ones((1, 4, 4)), BOX)[0]


def test_instance_recall_by_hand():
    # instance A: the box above (share 30 / 120); instance B: pixel (3, 3) alone (share 15 / 120)
    instances = boxes_to_masks([np.array([[1, 1, 3, 3], [3, 3, 4, 4]])], (4, 4))
    np.testing.assert_allclose(instance_recall(MAP, instances, min_share=0.1), [1.0])
    np.testing.assert_allclose(instance_recall(MAP, instances, min_share=0.2), [0.5])
    np.testing.assert_allclose(instance_recall(MAP, instances, min_share=0.3), [0.0])
    # the union counts for the energy game: (30 + 15) / 120
    np.testing.assert_allclose(energy_pointing_game(MAP, instances), [45 / 120])


def test_instance_peak_recall_by_hand():
    # instance A: the box above (peak 10 / 15); instance B: pixel (0, 0) alone (peak 0 / 15)
    instances = boxes_to_masks([np.array([[1, 1, 3, 3], [0, 0, 1, 1]])], (4, 4))
    np.testing.assert_allclose(instance_peak_recall(MAP, instances, min_peak=0.6), [0.5])
    np.testing.assert_allclose(instance_peak_recall(MAP, instances, min_peak=0.7), [0.0])
    # B holds no energy, A 30 / 120: by energy both fail at 0.3, by peak A is reached
    np.testing.assert_allclose(instance_recall(MAP, instances, min_share=0.3), [0.0])
    constant = np.full((1, 4, 4), 3.0)
    np.testing.assert_allclose(instance_peak_recall(constant, instances), [0.0])


def test_a_batch_of_images_with_union_masks_and_a_constant_map():
    maps = np.stack([MAP[0], np.full((4, 4), 2.0)])
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[:, 1:3, 1:3] = True
    np.testing.assert_allclose(energy_pointing_game(maps, masks), [0.25, 0.0])
    np.testing.assert_allclose(loc_delta(maps, masks, 0.0, binarize=True), [4 / 15, 0.0])
    np.testing.assert_allclose(loc_delta(maps, masks, 0.0), [30 / 150, 0.0])
    np.testing.assert_allclose(instance_recall(maps, list(masks)), [1.0, 0.0])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: loc_delta(MAP, BOX, 1.5), ValueError, r"delta must lie in \[0.0, 1.0\]"),
        (lambda: loc_delta(MAP, BOX, "0.5"), TypeError, "delta"),
        (lambda: pointing_game(MAP, BOX, tolerance=-1), ValueError, "tolerance"),
        (lambda: energy_pointing_game(MAP, np.zeros((1, 4, 4), bool)), ValueError, "empty"),
        (lambda: energy_pointing_game(MAP, np.ones((2, 4, 4), bool)), ValueError, "1 images"),
        (lambda: energy_pointing_game(MAP, np.ones((1, 3, 4), bool)), ValueError, "shape"),
        (lambda: instance_recall(MAP, BOX, min_share=0), ValueError, "min_share"),
        (lambda: instance_peak_recall(MAP, BOX, min_peak=0), ValueError, "min_peak"),
        (
            lambda: instance_peak_recall(MAP, [np.stack([BOX[0][0], np.zeros((4, 4), bool)])]),
            ValueError,
            r"regions: instance 1 of image 0 is an empty mask",
        ),
        (
            lambda: instance_recall(MAP, [np.stack([BOX[0][0], np.zeros((4, 4), bool)])]),
            ValueError,
            r"regions: instance 1 of image 0 is an empty mask",
        ),
        (lambda: boxes_to_masks([[[2, 0, 1, 1]]], (4, 4)), ValueError, "x1 >= x0"),
        # one map without its batch axis: (H, W) would be read as H one-dimensional maps
        (lambda: pointing_game(MAP[0], BOX[0][0]), ValueError, r"\(N, H, W\).*maps\[None\]"),
        (lambda: energy_pointing_game(MAP[0], BOX[0][0]), ValueError, r"maps\[None\]"),
        (lambda: loc_delta(MAP[0], BOX[0][0], 0.5), ValueError, r"got shape \(4, 4\)"),
        # an empty batch, and a box of three numbers
        (lambda: pointing_game(MAP[:0], BOX[:0]), ValueError, "maps must hold at least one map"),
        (lambda: boxes_to_masks([[0, 0, 2]], (4, 4)), ValueError, "boxes of image 0.*4 numbers"),
        (lambda: boxes_to_masks([], (4, 4)), ValueError, "boxes must hold the boxes of at least"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()
