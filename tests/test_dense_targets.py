"""SegmentationTarget and DetectionTarget: exact scores on tiny hand-built models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcampp import GradCAM
from gradcampp.targets import DetectionTarget, SegmentationTarget, parse_targets

pytest.importorskip("torchvision")


def test_segmentation_score_is_the_class_logits_over_its_predicted_pixels():
    logits = torch.tensor(
        [[[[1.0, 5.0], [0.0, 2.0]], [[3.0, 1.0], [4.0, 2.5]]]]  # (1, 2 classes, 2, 2)
    )
    # class 0 wins at (0, 1) only; class 1 at (0, 0), (1, 0), (1, 1)
    assert SegmentationTarget(0)(logits).tolist() == [5.0]
    assert SegmentationTarget(1)(logits).tolist() == [3.0 + 4.0 + 2.5]
    assert SegmentationTarget(0)({"out": logits}).tolist() == [5.0]
    mask = np.array([[1, 0], [0, 1]], dtype=bool)
    assert SegmentationTarget(0, mask=mask)(logits).tolist() == [1.0 + 2.0]
    with pytest.raises(ValueError, match="out of range"):
        SegmentationTarget(2)(logits)
    with pytest.raises(ValueError, match="mask must have shape"):
        SegmentationTarget(0, mask=np.ones((3, 3)))(logits)
    with pytest.raises(ValueError, match="dense class scores"):
        SegmentationTarget(0)(torch.zeros(2, 3))


def test_class_index_on_a_dense_output_is_the_segmentation_score():
    logits = torch.tensor([[[[1.0, 5.0], [0.0, 2.0]], [[3.0, 1.0], [4.0, 2.5]]]])
    plan = parse_targets(1, 1)
    plan.check_outputs({"out": logits})
    assert plan.scores({"out": logits}, 0, 1).tolist() == [[9.5]]
    with pytest.raises(ValueError, match="None and TopK"):
        parse_targets(None, 1).check_outputs(logits)


class _Segmenter(torch.nn.Module):
    """1x1 conv features -> 1x1 conv logits: Grad-CAM of a class is known in closed form."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 2, 1, bias=False)
        self.classifier = torch.nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1))
            self.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]])[:, :, None, None])

    def forward(self, x):
        return {"out": self.classifier(self.features(x))}


def test_segmentation_map_in_closed_form():
    model = _Segmenter().eval()
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])  # (1, 1, 2, 2)
    # A_0 = x, A_1 = 2x; y_0 = A_0 = x, y_1 = -A_1 = -2x: class 0 wins where x > 0
    # score_0 = sum over x > 0 of A_0: dscore/dA_0 = [x > 0], dscore/dA_1 = 0
    # Grad-CAM: w_0 = mean([x > 0]) = 3/4, w_1 = 0; map = relu(3/4 * x)
    maps = GradCAM(model, conv_layer="features").explain(x, SegmentationTarget(0), upsample=False)
    expected = torch.relu(0.75 * x[:, 0])
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(
        GradCAM(model, conv_layer="features").explain(x, 0, upsample=False), expected
    )


class _Detector(torch.nn.Module):
    """Three fixed boxes; the score of each is the mean of one feature channel over its box."""

    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
    labels = torch.tensor([1, 1, 2])

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(1, 3, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1))

    def forward(self, x):
        a = self.features(x)  # (N, 3, 4, 4)
        scores = torch.stack(
            [a[:, 0, :2, :2].mean((1, 2)), a[:, 1, 2:, 2:].mean((1, 2)), a[:, 2].mean((1, 2))],
            dim=1,
        )
        return [
            {"boxes": self.boxes, "labels": self.labels, "scores": scores[i]}
            for i in range(x.shape[0])
        ]


def test_detection_score_is_the_best_matching_box_of_the_class():
    model = _Detector().eval()
    x = torch.arange(32, dtype=torch.float32).reshape(2, 1, 4, 4)
    with torch.no_grad():
        outputs = model(x)
    # class 1 boxes against [1, 1, 4, 4]: IoU 1/12 (box 0) and 4/9 (box 1): box 1 is chosen
    target = DetectionTarget(1, [1.0, 1.0, 4.0, 4.0], min_iou=0.3)
    np.testing.assert_allclose(
        target(outputs).numpy(), [2 * x[0, 0, 2:, 2:].mean(), 2 * x[1, 0, 2:, 2:].mean()]
    )
    # per-image boxes: image 0 asks for the upper-left one
    per_image = DetectionTarget(1, [[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]])
    np.testing.assert_allclose(
        per_image(outputs).numpy(), [x[0, 0, :2, :2].mean(), 2 * x[1, 0, 2:, 2:].mean()]
    )
    with pytest.raises(ValueError, match="no detection of class 2"):
        DetectionTarget(2, [0.0, 0.0, 1.0, 1.0])(outputs)  # IoU 1/16 < 0.5
    # Grad-CAM at the features: the score is the mean of channel 1 over the lower-right 2 x 2:
    # gradient 1/4 there, 0 elsewhere: w_1 = 1/16, map = relu(A_1 / 16) = relu(2 x / 16)
    maps = GradCAM(model, conv_layer="features").explain(x, target, upsample=False)
    torch.testing.assert_close(maps, torch.relu(x[:, 0] / 8))


def test_targets_on_tensorflow_outputs():
    tf = pytest.importorskip("tensorflow")
    logits = tf.constant(
        np.moveaxis(
            np.array([[[[1.0, 5.0], [0.0, 2.0]], [[3.0, 1.0], [4.0, 2.5]]]], np.float32), 1, -1
        )
    )
    assert SegmentationTarget(1)(logits).numpy().tolist() == [9.5]  # channels-last on TensorFlow
    outputs = {
        "boxes": tf.constant([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]]]),
        "classes": tf.constant([[4, 4]]),
        "confidence": tf.constant([[0.25, 0.75]]),
    }
    assert DetectionTarget(4, [1.0, 1.0, 3.0, 3.0])(outputs).numpy().tolist() == [0.75]
