"""The disagreement of two maps (1 - Pearson r) and the choice of the most different pairs."""

import math

import numpy as np
import pytest

from gradcampp.disagreement import disagreement, most_different

A = np.array([[0.0, 1.0], [2.0, 3.0]])


def test_disagreement_by_hand():
    assert disagreement(A, A) == 0.0
    assert math.isclose(disagreement(A, 5 * A + 7), 0.0, abs_tol=1e-12)  # scale and shift
    assert math.isclose(disagreement(A, -A), 2.0)
    # centred: (-1.5, -0.5, 0.5, 1.5) and (1, -1, -1, 1): uncorrelated
    assert math.isclose(disagreement(A, [[1.0, 0.0], [0.0, 1.0]]), 1.0)
    # centred b = (-1, -1, 1, 1): r = 4 / sqrt(5 * 4)
    r = 4 / math.sqrt(20)
    assert math.isclose(disagreement(A, [[0.0, 0.0], [1.0, 1.0]]), 1 - r)


def test_disagreement_is_undefined_for_a_constant_map_and_survives_extreme_scales():
    assert disagreement(A, np.zeros((2, 2))) is None
    assert disagreement(np.full((2, 2), 3.0), A) is None
    assert math.isclose(disagreement(A * 1e-300, A * 1e300), 0.0, abs_tol=1e-12)
    assert disagreement(np.float32(1e-30) * A.astype(np.float32), A) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (A, A[:1], r"one shape, got \(2, 2\) and \(1, 2\)"),
        (np.zeros(0), np.zeros(0), "empty"),
        (A, np.where(A > 2, np.nan, A), "NaN or Inf"),
    ],
)
def test_disagreement_refuses_bad_maps(a, b, match):
    with pytest.raises(ValueError, match=match):
        disagreement(a, b)


def test_most_different_marks_a_tenth_at_least_one_and_at_most_the_cap():
    assert most_different([0.1]) == []  # nothing to compare with
    assert most_different([0.1, None, 0.3]) == [2]
    values = [i / 100 for i in range(40)]
    assert most_different(values) == [39, 38, 37, 36]
    assert most_different(values, cap=2) == [39, 38]
    assert most_different([0.2, 0.5, 0.5]) == [1]  # ties keep input order
