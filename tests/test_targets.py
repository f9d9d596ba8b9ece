"""Parsing of the targets argument."""

from __future__ import annotations

import numpy as np
import pytest

from gradcampp.targets import Classes, TopK, parse_targets


def test_forms_and_target_counts():
    assert parse_targets(None, 3).n_targets == 1
    assert parse_targets(2, 3).indices.tolist() == [[2], [2], [2]]
    assert parse_targets(np.array([0, 1, 2]), 3).indices.tolist() == [[0], [1], [2]]
    plan = parse_targets(TopK(4), 3)
    assert (plan.n_targets, plan.multi) == (4, True)
    plan = parse_targets(Classes([5, 6]), 3)
    assert plan.indices.tolist() == [[5, 6]] * 3 and plan.multi
    assert parse_targets(np.eye(3, dtype=np.float32), 3).weights.shape == (3, 3)
    assert parse_targets(len, 3).score_fn is len


@pytest.mark.parametrize(
    "targets,error,message",
    [
        (True, TypeError, "bool"),
        (np.array([0.5, 1.0]), TypeError, "integer class indices"),
        (np.ones((2, 3), dtype=int), TypeError, "Classes"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), ValueError, "finite"),
        (np.zeros((2, 2, 2)), ValueError, "shape"),
        (Classes(np.zeros((3, 2), dtype=int)), ValueError, r"\(2, T\)"),
        (Classes([1.5]), TypeError, "integer"),
        (np.array([0, -2]), ValueError, "non-negative"),
        (np.uint64(2**63), ValueError, "fit int64, got 9223372036854775808"),
        (2**70, ValueError, "fit int64"),
        (np.array([1, 2**64 - 1], dtype=np.uint64), ValueError, "fit int64"),
        (Classes(np.array([3, 2**63], dtype=np.uint64)), ValueError, "fit int64"),
    ],
)
def test_bad_targets(targets, error, message):
    with pytest.raises(error, match=message):
        parse_targets(targets, 2)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_topk_needs_positive_int(k):
    with pytest.raises(ValueError, match="positive integer"):
        TopK(k)
