"""``gradcampp.pytorch_grad_cam.utils.image`` against pytorch-grad-cam 1.5.7's helpers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
theirs = pytest.importorskip("pytorch_grad_cam.utils.image")
cv2 = pytest.importorskip("cv2")

from gradcampp.pytorch_grad_cam.utils import image as ours  # noqa: E402


def test_scale_cam_image_equals_theirs():
    rng = np.random.default_rng(0)
    cams = rng.random((3, 7, 5), dtype=np.float32) * 4 - 1
    cams[2] = 0.25  # a constant map: zeros after scaling
    for size in (None, (32, 40), (3, 2)):
        mine = ours.scale_cam_image(cams, size)
        reference = theirs.scale_cam_image(cams, size)
        assert mine.dtype == np.float32 and mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(ours.scale_cam_image(cams)[2], np.zeros((7, 5)))
    with pytest.raises(ValueError, match="one length per spatial axis"):
        ours.scale_cam_image(cams, (32, 40, 3))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_preprocess_image_equals_theirs(dtype):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (12, 9, 3)).astype(dtype)
    if dtype != np.uint8:
        img = img / 255
    copy = img.copy()
    for mean, std in (((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ([0.485, 0.456, 0.406], [0.2, 0.3, 0.4])):
        mine = ours.preprocess_image(img, mean=mean, std=std)
        reference = theirs.preprocess_image(img, mean=list(mean), std=list(std))
        assert mine.dtype == reference.dtype and mine.shape == (1, 3, 12, 9)
        torch.testing.assert_close(mine, reference)
    np.testing.assert_array_equal(img, copy)  # the input is not modified
    with pytest.raises(ValueError, match="one value per channel"):
        ours.preprocess_image(img, mean=[0.5], std=[0.5])


@pytest.mark.parametrize("use_rgb,weight", [(False, 0.5), (True, 0.5), (True, 0.8), (False, 0.0)])
def test_show_cam_on_image_equals_theirs(use_rgb, weight):
    rng = np.random.default_rng(2)
    img = rng.random((16, 20, 3), dtype=np.float32)
    mask = rng.random((16, 20), dtype=np.float32)
    mine = ours.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=weight)
    reference = theirs.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=weight)
    assert mine.dtype == np.uint8
    np.testing.assert_array_equal(mine, reference)
    other = ours.show_cam_on_image(img, mask, colormap=cv2.COLORMAP_VIRIDIS)
    np.testing.assert_array_equal(
        other, theirs.show_cam_on_image(img, mask, colormap=cv2.COLORMAP_VIRIDIS)
    )


def test_without_opencv_jet_is_within_one_level(monkeypatch):
    rng = np.random.default_rng(3)
    img = rng.random((16, 20, 3), dtype=np.float32)
    mask = np.linspace(0, 1, 320, dtype=np.float32).reshape(16, 20)
    reference = theirs.show_cam_on_image(img, mask, use_rgb=True)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    mine = ours.show_cam_on_image(img, mask, use_rgb=True)
    assert np.abs(mine.astype(int) - reference.astype(int)).max() <= 1
    with pytest.raises(ImportError, match="needs OpenCV"):
        ours.show_cam_on_image(img, mask, colormap=16)


@pytest.mark.parametrize(
    "img,mask,weight,message",
    [
        (np.full((4, 4, 3), 2.0), np.zeros((4, 4)), 0.5, r"values in \[0, 1\]"),
        (np.zeros((4, 4, 3)), np.zeros((4, 4)), 1.5, "image_weight"),
        (np.zeros((4, 4, 3)), np.zeros((5, 4)), 0.5, "mask must have the image's shape"),
    ],
)
def test_show_cam_on_image_errors(img, mask, weight, message):
    with pytest.raises(ValueError, match=message):
        ours.show_cam_on_image(img, mask, image_weight=weight)
