"""The quality benchmark's baseline map and table, on tiny inputs."""

import math

import numpy as np

from benchmarks.quality import (
    COLUMNS,
    COMPARED,
    EXTRA_COLUMNS,
    REFERENCE,
    cuts_a_tie,
    gaussian_map,
    paired_table,
    table,
)


def test_gaussian_map_is_centred_with_the_given_sigma():
    maps = gaussian_map(2, 5, 1.0)
    assert maps.shape == (2, 5, 5)
    assert maps[0, 2, 2] == 1.0
    assert math.isclose(maps[1, 2, 3], math.exp(-0.5))
    assert math.isclose(maps[0, 0, 0], math.exp(-4.0))  # distance^2 = 8
    even = gaussian_map(1, 4, 1.0)[0]
    np.testing.assert_allclose(even, even[::-1, ::-1])
    assert even[1, 1] == even.max()


def test_table_has_a_row_per_method_and_a_standard_error_row():
    row = [10.0, 20.0, np.nan, *([0.5] * (len(COLUMNS) - 3))]
    text = table({"A": row, "B": row}, {"A": [1.0] * len(COLUMNS), "B": [2.0] * len(COLUMNS)})
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[2].startswith("| A | 10.0 | 20.0 | — | 0.500 |")
    assert lines[4].startswith("| ± s.e. (largest) | 2.0 | 2.0 | 2.0 | 2.000 |")


def test_cuts_a_tie_finds_steps_inside_tie_groups():
    counts = np.array([0, 2, 4])  # 4 pixels, 2 steps
    maps = np.array(
        [
            [[3.0, 2.0], [1.0, 0.0]],  # no ties
            [[1.0, 1.0], [0.0, 0.0]],  # two groups of 2: the cut at 2 falls between them
            [[1.0, 0.0], [0.0, 0.0]],  # a group of 3 ranked 2nd to 4th: the cut at 2 is inside
        ]
    )
    assert cuts_a_tie(maps, counts).tolist() == [False, False, True]


def test_paired_table_reports_the_mean_difference_and_its_standard_error():
    n = len(COLUMNS) + len(EXTRA_COLUMNS)
    ones, zeros = np.ones(4), np.zeros(4)
    values = {
        COMPARED: [np.array([1.0, 2.0, 3.0, 4.0])] + [ones] * (n - 1),
        REFERENCE: [zeros] + [ones] * (n - 1),
    }
    values[REFERENCE][2] = None  # Win % vs Grad-CAM has no reference value
    lines = paired_table(values).splitlines()
    assert len(lines) == 2 + n - 1
    # differences 1, 2, 3, 4: mean 2.5, s.e. = std(ddof=1) / 2 = 1.29 / 2
    assert lines[2] == "| Avg Drop % ↓ | +2.5 | 0.6 | yes |"
    assert lines[3].endswith("| +0.0 | 0.0 | no (identical on every image) |")
