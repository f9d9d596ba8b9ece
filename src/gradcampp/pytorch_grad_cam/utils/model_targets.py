"""pytorch-grad-cam's target objects (``pytorch_grad_cam.utils.model_targets``).

A target object is called on **one sample's output** and returns that sample's score, a tensor
with one element (or, for ``ClassifierOutputTarget`` and its softmax twin, also on a batch
``(N, n_classes)``, returning ``(N,)``). A list of ``N`` of them is what
``cam(input_tensor, targets)`` and ``gradcampp``'s own ``explain(inputs, targets)`` accept:
target ``i`` scores sample ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
]


class ClassifierOutputTarget:
    """The raw score (logit) of class ``category``.

    Called on one sample's scores ``(n_classes,)`` it returns ``scores[category]``; on a batch
    ``(N, n_classes)``, ``scores[:, category]``.
    """

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        if model_output.ndim == 1:
            return model_output[self.category]
        return model_output[:, self.category]


class ClassifierOutputSoftmaxTarget:
    """The softmax probability of class ``category``: ``softmax(scores)[category]``.

    Called on one sample ``(n_classes,)`` or a batch ``(N, n_classes)`` (then ``(N,)``).
    """

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(model_output, dim=-1)
        if model_output.ndim == 1:
            return probabilities[self.category]
        return probabilities[:, self.category]


class ClassifierOutputReST:
    """The logit of ``category`` minus the cross-entropy loss of that class.

    ``s_c - CE(s, c) = 2 s_c - logsumexp(s)`` for one sample's scores ``s`` ``(n_classes,)``; on
    a batch ``(N, n_classes)``, one value per row.
    """

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        chosen = model_output[..., self.category]
        return 2 * chosen - torch.logsumexp(model_output, dim=-1)


class BinaryClassifierOutputTarget:
    """The output of a one-logit binary classifier, negated for class 0.

    Returns ``model_output`` for ``category == 1`` and ``-model_output`` otherwise.
    """

    def __init__(self, category: int):
        self.category = category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output if self.category == 1 else -model_output


class SoftmaxOutputTarget:
    """``softmax(model_output)`` over the last axis (one score only for one-class outputs)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget:
    """The model's output itself (a sample's single score, for regression-like heads)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output


class SemanticSegmentationTarget:
    """The logits of ``category`` summed over the pixels of ``mask``.

    Args:
        category: the class (channel of the sample's output ``(n_classes, H, W)``).
        mask: ``(H, W)`` NumPy array (or tensor) of pixel weights, usually 0/1.

    Called on one sample's output ``(n_classes, H, W)``:
    ``sum_ij model_output[category, i, j] * mask[i, j]``.
    """

    def __init__(self, category: int, mask: Any):
        self.category = category
        self.mask = torch.as_tensor(mask)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(device=model_output.device)
        return (model_output[self.category, :, :] * mask).sum()


def _iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU ``(M,)`` of one ``box`` ``(4,)`` with ``boxes`` ``(M, 4)``, ``(x1, y1, x2, y2)``."""
    low = torch.maximum(boxes[:, :2], box[:2])
    high = torch.minimum(boxes[:, 2:], box[2:])
    inter = (high - low).clamp(min=0).prod(dim=1)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    area = (box[2:] - box[:2]).prod()
    return inter / (areas + area - inter)


class FasterRCNNBoxScoreTarget:
    """How well one image's detections still match given boxes (torchvision detection outputs).

    For each given box and label, the detection with the highest IoU is found; if that IoU
    exceeds ``iou_threshold`` and its label is the given one, ``IoU + detection score`` is added.
    The result, a tensor of shape ``(1,)``, is 0 when nothing matches or nothing was detected.

    Args:
        labels: the class of each box.
        bounding_boxes: boxes ``(M, 4)``, ``(x1, y1, x2, y2)`` in input pixels.
        iou_threshold: the IoU a detection must exceed to count.

    Called on one image's output: a dict with ``boxes`` ``(D, 4)``, ``labels`` ``(D,)`` and
    ``scores`` ``(D,)``.
    """

    def __init__(self, labels: Sequence[int], bounding_boxes: Any, iou_threshold: float = 0.5):
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold

    def __call__(self, model_outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        boxes = model_outputs["boxes"]
        total = torch.zeros(1, device=boxes.device, dtype=boxes.dtype)
        if len(boxes) == 0:
            return total
        for box, label in zip(self.bounding_boxes, self.labels, strict=False):
            given = torch.as_tensor(box, device=boxes.device, dtype=boxes.dtype)
            ious = _iou(given.reshape(4), boxes)
            best = int(ious.argmax())
            if bool(ious[best] > self.iou_threshold) and int(model_outputs["labels"][best]) == int(
                label
            ):
                total = total + ious[best] + model_outputs["scores"][best]
        return total
