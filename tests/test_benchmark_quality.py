"""The quality benchmark's baseline map and table, on tiny inputs."""

import math

import numpy as np
import pytest

from benchmarks.quality import (
    COLUMNS,
    COMPARED,
    EXTRA_COLUMNS,
    REFERENCE,
    _seeds,
    cuts_a_tie,
    gaussian_map,
    paired_difference,
    paired_table,
    replication_table,
    table,
    verdict,
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


def test_paired_difference_is_the_mean_and_its_standard_error():
    mean, se = paired_difference(np.array([3.0, 5.0, 7.0]), np.array([1.0, 1.0, 1.0]))
    assert mean == 4.0
    assert math.isclose(se, 2.0 / math.sqrt(3))  # differences 2, 4, 6: std(ddof=1) = 2


def test_verdict_asks_for_the_same_sign_beyond_two_standard_errors_on_every_seed():
    assert verdict([(0.0, 0.0), (0.0, 0.0)]) == "identical"
    assert verdict([(1.0, 0.4), (2.0, 0.5)]) == "holds, +"
    assert verdict([(-1.0, 0.4), (-2.0, 0.5)]) == "holds, \u2212"
    assert verdict([(1.0, 0.4), (-2.0, 0.5)]) == "mixed"  # beyond on both, signs differ
    assert verdict([(1.0, 0.4), (1.0, 0.6)]) == "mixed"  # beyond on one seed only
    assert verdict([(1.0, 0.6), (-0.1, 0.6)]) == "within noise"


def _values(first: np.ndarray, second: np.ndarray) -> dict:
    n = len(COLUMNS) + len(EXTRA_COLUMNS)
    values = {COMPARED: [first] * n, REFERENCE: [second] * n}
    values[REFERENCE][2] = None
    return values


def test_replication_table_marks_what_holds_on_every_seed():
    up = _values(np.array([2.0, 3.0, 2.0, 3.0]), np.zeros(4))  # +2.5 ± 0.29
    noisy = _values(np.array([1.0, -1.0, 2.0, -2.0]), np.zeros(4))  # 0 ± 0.9
    runs = {"A": {0: up, 7: up}, "B": {0: up, 7: noisy}}
    lines = replication_table(runs, COMPARED, REFERENCE).splitlines()
    assert lines[0] == "| metric | A | B |"
    assert lines[2] == (
        "| Avg Drop % ↓ | **+2.5 ± 0.3*, +2.5 ± 0.3*: holds, +** | +2.5 ± 0.3*, +0.0 ± 0.9: mixed |"
    )
    # Win % vs Grad-CAM is compared with 50: 2.5 - 50 on every image
    assert lines[4].startswith(
        "| Win % vs Grad-CAM ↑ | **-47.5 ± 0.3*, -47.5 ± 0.3*: holds, \u2212**"
    )
    assert len(lines) == 2 + len(COLUMNS) + len(EXTRA_COLUMNS)


def test_seeds_must_be_distinct_integers():
    assert _seeds("0,7") == [0, 7]
    for bad in ("", "0,0", "a,1"):
        with pytest.raises(Exception, match="--seeds must be distinct integers"):
            _seeds(bad)
