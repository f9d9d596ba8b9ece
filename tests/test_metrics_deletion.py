"""Deletion and Insertion: curves and areas integrated by hand on a model linear in the pixels."""

import numpy as np
import pytest
import torch

from gradcampp.metrics import curve_auc, deletion, gaussian_blur, insertion
from gradcampp.metrics.deletion import pixel_ranks


class MeanProbability(torch.nn.Module):
    """Returns probabilities ``[mean(x), 1 - mean(x)]`` directly (inputs in [0, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 1 - m], dim=1)


IMAGE = np.array([[[[1.0, 0.5], [0.25, 0.0]]]], dtype=np.float32)  # mean 0.4375
MAP = np.array([[[0.0, 1.0], [2.0, 3.0]]])  # ranks: (1,1), (1,0), (0,1), (0,0)


def test_curve_auc_is_the_normalised_trapezoid():
    np.testing.assert_allclose(curve_auc([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0]]), [0.5, 0.75])
    np.testing.assert_allclose(curve_auc([[0, 1, 1, 1, 1]]), [3.5 / 4])


def test_deletion_curve_and_area_by_hand():
    result = deletion(MeanProbability(), IMAGE, MAP, 0, steps=4, apply_softmax=False)
    # pixels 0.0, 0.25, 0.5, 1.0 are set to 0 in turn: mean 1.75/4, 1.75/4, 1.5/4, 1/4, 0
    expected = np.array([0.4375, 0.4375, 0.375, 0.25, 0.0])
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(result.curves[0], expected, rtol=1e-6)
    auc = (0.4375 / 2 + 0.4375 + 0.375 + 0.25 + 0.0 / 2) / 4
    np.testing.assert_allclose(result.auc, [auc], rtol=1e-6)
    assert result.mean_auc == pytest.approx(auc, rel=1e-6)


def test_insertion_curve_and_area_by_hand():
    result = insertion(
        MeanProbability(), IMAGE, MAP, 0, steps=4, substrate=0.0, apply_softmax=False
    )
    expected = np.array([0.0, 0.0, 0.0625, 0.1875, 0.4375])
    np.testing.assert_allclose(result.curves[0], expected, rtol=1e-6)
    np.testing.assert_allclose(result.auc, [(0.0625 + 0.1875 + 0.4375 / 2) / 4], rtol=1e-6)


def test_deletion_to_a_baseline_of_the_other_class_and_step_rounding():
    result = deletion(MeanProbability(), IMAGE, MAP, 1, steps=3, baseline=1.0, apply_softmax=False)
    # round(4/3) = 1 and round(8/3) = 3 pixels after steps 1 and 2
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.75, 1.0])
    # class 1 probability: 1 - mean; pixels 0.0, then 0.25 and 0.5, then 1.0 become 1
    np.testing.assert_allclose(result.curves[0], [0.5625, 0.3125, 0.0, 0.0], atol=1e-6)


def test_insertion_starts_from_the_blurred_image_and_ends_at_the_image():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(5, 1, 6, 6)).astype(np.float32)
    maps = rng.uniform(size=(5, 6, 6))
    result = insertion(MeanProbability(), images, maps, 0, steps=6, apply_softmax=False)
    blurred = gaussian_blur(images, 5.0)
    np.testing.assert_allclose(result.curves[:, 0], blurred.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(result.curves[:, -1], images.mean(axis=(1, 2, 3)), rtol=1e-5)
    small = insertion(
        MeanProbability(), images, maps, 0, steps=6, batch_size=2, apply_softmax=False
    )
    np.testing.assert_allclose(small.curves, result.curves, rtol=1e-6)


def test_ties_are_ranked_in_row_major_order():
    np.testing.assert_array_equal(pixel_ranks(np.array([[[1.0, 2.0], [2.0, 1.0]]])), [[2, 0, 1, 3]])


def test_gaussian_blur_matches_scipy_with_mirror_boundaries():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(2, 3, 9, 7))
    ours = gaussian_blur(images, 1.5)
    ref = ndimage.gaussian_filter(images, sigma=(0, 0, 1.5, 1.5), mode="reflect", truncate=3.0)
    # scipy's kernel radius is int(3 * 1.5 + 0.5) = 5; ours is ceil(4.5) = 5: the same taps
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    last = gaussian_blur(np.moveaxis(images, 1, -1), 1.5, channel_axis=-1)
    np.testing.assert_allclose(np.moveaxis(last, -1, 1), ours, atol=1e-6)


def test_softmax_is_applied_to_logits():
    class Logits(torch.nn.Module):
        def forward(self, x):
            s = x.sum(dim=(1, 2, 3))
            return torch.stack([s, torch.zeros_like(s)], dim=1)

    result = deletion(
        Logits(), np.ones((1, 1, 1, 2), dtype=np.float32), np.array([[[1.0, 0.0]]]), 0, steps=2
    )
    np.testing.assert_allclose(
        result.curves[0], 1 / (1 + np.exp(-np.array([2.0, 1.0, 0.0]))), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        deletion(MeanProbability(), IMAGE, MAP, 0, **kwargs)


def test_bad_blur_and_mismatched_counts_are_refused():
    with pytest.raises(ValueError, match="sigma"):
        insertion(MeanProbability(), IMAGE, MAP, 0, blur_sigma=0.0)
    with pytest.raises(ValueError, match="broadcastable"):
        deletion(MeanProbability(), IMAGE, MAP, 0, baseline=np.zeros(3))
    with pytest.raises(ValueError, match="1 images but 2 maps"):
        deletion(MeanProbability(), IMAGE, np.concatenate([MAP, MAP]), 0)
