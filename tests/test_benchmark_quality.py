"""The quality benchmark's baseline map and table, on tiny inputs."""

import math

import numpy as np

from benchmarks.quality import COLUMNS, gaussian_map, table


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
