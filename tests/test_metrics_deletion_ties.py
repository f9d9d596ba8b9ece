"""Deletion and Insertion with tied map values: the expected curve over random orders of ties."""

from itertools import permutations, product

import numpy as np
import pytest
import torch

from gradcampp.metrics import deletion, insertion
from gradcampp.metrics.deletion import changed_sets


class MaxProbability(torch.nn.Module):
    """Probabilities ``[max(x), 1 - max(x)]`` (inputs in [0, 1]): not additive in the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).max(dim=1).values
        return torch.stack([m, 1 - m], dim=1)


class RootMeanSquare(torch.nn.Module):
    """Probabilities ``[sqrt(mean(x^2)), 1 - ...]``: every pixel counts, not additively."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.square().mean(dim=(1, 2, 3)).sqrt()
        return torch.stack([m, 1 - m], dim=1)


class MeanProbability(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 1 - m], dim=1)


IMAGE = np.array([[[[0.9, 0.6], [0.3, 0.1]]]], dtype=np.float32)


def expected_curve_by_enumeration(image, one_map, steps, start, end, score):
    """Average of the curves of every order that ranks higher values first (ties in any order)."""
    values = one_map.reshape(-1)
    groups = [np.flatnonzero(values == v) for v in sorted(set(values), reverse=True)]
    n_pixels = values.size
    counts = [round(s * n_pixels / steps) for s in range(steps + 1)]
    curves = []
    for group_orders in product(*(permutations(g) for g in groups)):
        order = np.concatenate(group_orders).astype(int)
        curve = []
        for k in counts:
            x = start.reshape(-1).copy()
            x[order[:k]] = end.reshape(-1)[order[:k]]
            curve.append(score(x))
        curves.append(curve)
    return np.mean(curves, axis=0)


def test_deletion_with_a_tie_group_by_hand():
    tied = np.array([[[2.0, 1.0], [1.0, 1.0]]])  # the top pixel, then three tied pixels
    result = deletion(MaxProbability(), IMAGE, tied, 0, steps=4, apply_softmax=False)
    # step 1 leaves {0.6, 0.3, 0.1}: max 0.6; step 2 deletes one of the three at random:
    # max 0.3 if it was 0.6 (1 in 3), else 0.6: 0.5; step 3 leaves one of them: (0.6+0.3+0.1)/3
    np.testing.assert_allclose(result.curves[0], [0.9, 0.6, 0.5, 1 / 3, 0.0], rtol=1e-6)
    assert result.exact.tolist() == [True]
    enumerated = expected_curve_by_enumeration(
        IMAGE[0], tied[0], 4, IMAGE[0], np.zeros_like(IMAGE[0]), np.max
    )
    np.testing.assert_allclose(result.curves[0], enumerated, rtol=1e-6)
    # row-major: 0.6 (top right) goes first, then 0.3, then 0.1
    row_major = deletion(
        MaxProbability(), IMAGE, tied, 0, steps=4, apply_softmax=False, ties="row-major"
    )
    np.testing.assert_allclose(row_major.curves[0], [0.9, 0.6, 0.3, 0.1, 0.0], rtol=1e-6)


def test_insertion_with_a_tie_group_by_hand():
    tied = np.array([[[1.0, 1.0], [1.0, 0.0]]])  # three tied pixels first, then 0.1
    result = insertion(
        MaxProbability(), IMAGE, tied, 0, steps=4, substrate=0.0, apply_softmax=False
    )
    # one of {0.9, 0.6, 0.3} inserted: mean 0.6; two of them: max 0.9, 0.9 or 0.6: 0.8
    np.testing.assert_allclose(result.curves[0], [0.0, 0.6, 0.8, 0.9, 0.9], rtol=1e-6)
    row_major = insertion(
        MaxProbability(),
        IMAGE,
        tied,
        0,
        steps=4,
        substrate=0.0,
        apply_softmax=False,
        ties="row-major",
    )
    np.testing.assert_allclose(row_major.curves[0], [0.0, 0.9, 0.9, 0.9, 0.9], rtol=1e-6)


def test_two_tie_groups_match_the_enumeration_of_all_144_orders():
    rng = np.random.default_rng(3)
    image = rng.uniform(size=(1, 1, 3, 3)).astype(np.float32)
    # a group of 4 (value 2), a group of 3 (value 1), and two distinct values
    one_map = np.array([[5.0, 2.0, 1.0], [2.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    result = deletion(
        RootMeanSquare(), image, one_map[None], 0, steps=9, apply_softmax=False, n_orders=8
    )
    # every cut group has at most C(4, 2) = 6 <= 8 subsets: enumerated, exact
    assert result.exact.tolist() == [True]
    enumerated = expected_curve_by_enumeration(
        image[0], one_map, 9, image[0], np.zeros_like(image[0]), lambda x: np.sqrt(np.mean(x**2))
    )
    np.testing.assert_allclose(result.curves[0], enumerated, rtol=1e-5)
    row_major = deletion(
        RootMeanSquare(), image, one_map[None], 0, steps=9, apply_softmax=False, ties="row-major"
    )
    assert np.abs(row_major.curves[0] - enumerated).max() > 0.01


def test_large_tie_groups_average_seeded_orders():
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(3, 1, 4, 4)).astype(np.float32)
    constant = np.zeros((3, 4, 4))  # 16 tied pixels: C(16, 4) = 1820 subsets at step 1
    result = deletion(
        MeanProbability(), images, constant, 0, steps=4, apply_softmax=False, n_orders=400
    )
    assert not result.exact.any()
    # for a model linear in the pixels the expected curve is mean(x) * (1 - k / P)
    expected = images.mean(axis=(1, 2, 3))[:, None] * (1 - np.array([0, 0.25, 0.5, 0.75, 1]))
    np.testing.assert_allclose(result.curves, expected, atol=0.01)
    again = deletion(
        MeanProbability(), images, constant, 0, steps=4, apply_softmax=False, n_orders=400
    )
    np.testing.assert_array_equal(again.curves, result.curves)
    other = deletion(
        MeanProbability(), images, constant, 0, steps=4, apply_softmax=False, seed=1, n_orders=3
    )
    assert not np.allclose(other.curves[:, 1:4], result.curves[:, 1:4], atol=1e-9)


def test_batch_size_does_not_change_the_result():
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(4, 1, 4, 4)).astype(np.float32)
    maps = rng.integers(0, 3, size=(4, 4, 4)).astype(float)  # many ties
    one = deletion(MaxProbability(), images, maps, 0, steps=8, apply_softmax=False, batch_size=3)
    big = deletion(MaxProbability(), images, maps, 0, steps=8, apply_softmax=False, batch_size=64)
    np.testing.assert_allclose(one.curves, big.curves, rtol=1e-6)


def test_without_ties_both_rules_agree():
    rng = np.random.default_rng(6)
    images = rng.uniform(size=(2, 1, 4, 4)).astype(np.float32)
    maps = rng.permutation(32).reshape(2, 4, 4).astype(float)
    a = deletion(MaxProbability(), images, maps, 0, steps=16, apply_softmax=False)
    b = deletion(MaxProbability(), images, maps, 0, steps=16, apply_softmax=False, ties="row-major")
    np.testing.assert_array_equal(a.curves, b.curves)


def test_changed_sets_weights_sum_to_one():
    values = np.array([3.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    sets, exact = changed_sets(values, np.arange(7), n_orders=2, rng=np.random.default_rng(0))
    assert not exact  # C(4, 2) = 6 > 2 at k = 3
    for k, alternatives in enumerate(sets):
        assert sum(w for _, w in alternatives) == pytest.approx(1.0)
        assert all(len(pixels) == k for pixels, _ in alternatives)
        assert all(0 in pixels for pixels, _ in alternatives if k >= 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ties": "first"}, r"ties must be one of \('random', 'row-major'\), got 'first'"),
        ({"n_orders": 0}, "n_orders must be a positive integer, got 0"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_tie_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        deletion(MeanProbability(), IMAGE, np.zeros((1, 2, 2)), 0, **kwargs)


@pytest.mark.slow
def test_an_all_zero_map_scores_like_a_random_map_on_demo_images():
    torch.set_num_threads(1)
    from gradcampp.demo import generate_shapes, load_demo_model

    model = load_demo_model()
    batch = generate_shapes(100, 7, instances=(1, 4))
    zero = np.zeros((100, 64, 64))
    noise = np.random.default_rng(0).uniform(size=(100, 64, 64))
    common = {"steps": 8, "batch_size": 128}
    zero_auc = deletion(model, batch.images, zero, batch.labels, n_orders=2, **common).mean_auc
    noise_auc = deletion(model, batch.images, noise, batch.labels, **common).mean_auc
    # measured: 0.385 and 0.385 (n_orders=8); the map that says nothing earns nothing
    assert abs(zero_auc - noise_auc) < 0.05
    # with row-major ties the all-zero map deletes the top of the image first and scored 0.550
    row_major = deletion(model, batch.images, zero, batch.labels, ties="row-major", **common)
    assert row_major.mean_auc > noise_auc + 0.1
