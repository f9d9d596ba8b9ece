"""Scores for models that do not output ``(N, n_classes)``: segmentation and detection.

Both targets are callables ``outputs -> (N,)`` scores, passed as ``targets`` to ``explain``; they
run on PyTorch tensors and on TensorFlow tensors (Keras models) alike. ``class_scores`` finds the
tensor of scores inside the outputs that libraries wrap: a Hugging Face ``ModelOutput``
(``.logits``) or a dict with ``"out"`` (torchvision segmentation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcampp._xp import constant_like, namespace, to_numpy


def class_scores(outputs: Any) -> Any:
    """The score tensor in a model's ``outputs``.

    ``outputs`` itself when it has a shape; else a ``.logits`` attribute (Hugging Face
    ``ModelOutput``); else the ``"out"`` entry of a mapping (torchvision segmentation models);
    else ``outputs`` unchanged, for the caller to refuse.
    """
    if hasattr(outputs, "shape"):
        return outputs
    logits = getattr(outputs, "logits", None)
    if logits is not None and hasattr(logits, "shape"):
        return logits
    if isinstance(outputs, Mapping) and "out" in outputs:
        return outputs["out"]
    return outputs


def _is_tensorflow(value: Any) -> bool:
    return type(value).__module__.startswith("tensorflow")


def default_class_axis(scores: Any) -> int:
    """The class axis of dense scores: 1 for PyTorch/NumPy ``(N, K, *S)``, -1 for TensorFlow."""
    return -1 if _is_tensorflow(scores) else 1


def _class_max(scores: Any, axis: int) -> Any:
    """The largest score over the class axis, keeping that axis (size 1)."""
    if _is_tensorflow(scores):
        import tensorflow as tf

        return tf.reduce_max(scores, axis=axis, keepdims=True)
    return namespace(scores).max(scores, axis=axis, keepdims=True)


def _move_class_axis(value: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``value`` ``(n, K)`` reshaped to broadcast against scores of rank ``ndim``."""
    shape = [value.shape[0]] + [1] * (ndim - 1)
    shape[axis % ndim] = value.shape[1]
    return value.reshape(shape)


def dense_class_scores(scores: Any, weights: np.ndarray, axis: int | None = None) -> Any:
    """Per-sample scores of one class each, summed over the pixels predicted as that class.

    ``score_n = sum_p sum_c w_nc * y_ncp * [y_ncp = max_k y_nkp]``: for one-hot ``w_n`` the
    logits of class ``c`` summed over the pixels whose predicted class is ``c``.

    Args:
        scores: dense class scores ``(N, K, *S)`` (or ``(N, *S, K)`` with ``axis=-1``).
        weights: ``(N, K)`` class weights, one-hot rows for one class per sample.
        axis: the class axis; ``None`` for ``default_class_axis(scores)``.

    Returns:
        ``(N,)`` scores, differentiable in ``scores``.
    """
    axis = default_class_axis(scores) if axis is None else axis
    xp = namespace(scores)
    ndim = len(scores.shape)
    w = constant_like(_move_class_axis(np.asarray(weights), axis, ndim), scores, xp)
    predicted = xp.astype(scores >= _class_max(scores, axis), scores.dtype)
    per_pixel = xp.sum(scores * predicted * w, axis=axis % ndim)
    return xp.sum(per_pixel, axis=tuple(range(1, ndim - 1)))


@dataclass(frozen=True)
class SegmentationTarget:
    """The logits of one class summed over a region: ``sum_p y_{c,p} m_p`` per sample.

    Args:
        category: the class index ``c``.
        mask: the region ``m``: ``None`` for the pixels predicted as ``c`` (where ``c`` has the
            largest score), or weights (bool or float) of shape ``S`` (every sample) or
            ``(N, *S)``, ``S`` being the spatial shape of the model's output.
        class_axis: the class axis of the outputs: ``None`` for 1 on PyTorch outputs
            ``(N, K, *S)`` and -1 on TensorFlow outputs ``(N, *S, K)`` (Keras).

    Outputs may be a tensor, a dict with ``"out"`` (torchvision) or a ``ModelOutput``
    (``.logits``, Hugging Face).

    Examples:
        >>> maps = GradCAMPP(deeplab).explain(images, SegmentationTarget(15))  # doctest: +SKIP
    """

    category: int
    mask: Any = None
    class_axis: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.category, bool) or not isinstance(self.category, int | np.integer):
            raise TypeError(f"category must be a class index (int), got {self.category!r}")
        if self.category < 0:
            raise ValueError(f"category must be a non-negative class index, got {self.category}")

    def __call__(self, outputs: Any) -> Any:
        scores = class_scores(outputs)
        shape = tuple(getattr(scores, "shape", ()))
        if len(shape) < 3:
            raise ValueError(
                "SegmentationTarget needs dense class scores (N, K, *spatial) (or (N, *spatial, "
                f"K) on TensorFlow), got {type(scores).__name__} of shape {shape}"
            )
        axis = default_class_axis(scores) if self.class_axis is None else self.class_axis
        n_classes = shape[axis]
        if self.category >= n_classes:
            raise ValueError(
                f"category {self.category} is out of range for outputs with {n_classes} classes "
                f"(shape {shape}, class axis {axis})"
            )
        one_hot = np.zeros((shape[0], n_classes), np.float32)
        one_hot[:, self.category] = 1.0
        if self.mask is None:
            return dense_class_scores(scores, one_hot, axis)
        xp = namespace(scores)
        spatial = tuple(s for i, s in enumerate(shape) if i not in (0, axis % len(shape)))
        mask = to_numpy(self.mask).astype(np.float32)
        if mask.shape == spatial:
            mask = np.broadcast_to(mask, (shape[0], *spatial))
        if mask.shape != (shape[0], *spatial):
            raise ValueError(
                f"mask must have shape {spatial} or {(shape[0], *spatial)} (the outputs' spatial "
                f"shape), got {to_numpy(self.mask).shape}"
            )
        index: tuple[Any, ...] = (slice(None),) * (axis % len(shape)) + (self.category,)
        chosen = scores[index]
        weights = constant_like(np.ascontiguousarray(mask), chosen, xp)
        return xp.sum(chosen * weights, axis=tuple(range(1, len(shape) - 1)))


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Intersection over union of ``boxes`` ``(M, 4)`` with one ``box`` ``(4,)``.

    Boxes are ``(x1, y1, x2, y2)``.

    ``IoU = |A & B| / (|A| + |B| - |A & B|)``; 0 where the union is empty.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    box = np.asarray(box, np.float64)
    width = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    height = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = width * height
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _detections(outputs: Any, n: int | None = None) -> list[tuple[Any, Any, Any]]:
    """Per image: ``(boxes (M, 4), labels (M,), scores (M,))`` from a detector's outputs.

    Accepted: a list of dicts with ``boxes``, ``labels``, ``scores`` (torchvision), or one dict of
    batched tensors ``boxes (N, M, 4)``, ``labels``/``classes (N, M)``,
    ``scores``/``confidence (N, M)`` (KerasHub style, padded with label -1).
    """

    def entry(item: Mapping[str, Any], *names: str) -> Any:
        for name in names:
            if name in item:
                return item[name]
        raise ValueError(f"detection outputs need one of the keys {names}, got keys {sorted(item)}")

    if isinstance(outputs, Mapping):
        boxes = entry(outputs, "boxes")
        labels = entry(outputs, "labels", "classes")
        scores = entry(outputs, "scores", "confidence")
        return [(boxes[i], labels[i], scores[i]) for i in range(int(boxes.shape[0]))]
    if isinstance(outputs, Sequence) and all(isinstance(o, Mapping) for o in outputs):
        return [
            (entry(o, "boxes"), entry(o, "labels", "classes"), entry(o, "scores", "confidence"))
            for o in outputs
        ]
    raise ValueError(
        "DetectionTarget needs a detector's outputs: a list of dicts with boxes, labels and "
        f"scores per image, or a dict of batched tensors; got {type(outputs).__name__}"
    )


@dataclass(frozen=True)
class DetectionTarget:
    """The score of the detection of class ``category`` that best overlaps ``box``, by IoU.

    Per image, among the detected boxes labelled ``category``, the one with the largest
    intersection over union with the given box is chosen (the first on ties); its score (a
    differentiable output of the model) is explained.

    Args:
        category: the class label of the detection.
        box: ``(x1, y1, x2, y2)`` in input pixels, ``(4,)`` for every image or ``(N, 4)``.
        min_iou: the smallest IoU accepted; an image with no detection of ``category`` that
            overlaps its box by at least this much is an error (never a silent zero map).

    Outputs: torchvision detection models' list of ``{"boxes", "labels", "scores"}`` dicts, or a
    dict of batched tensors (``"classes"`` and ``"confidence"`` also accepted, boxes as
    ``(x1, y1, x2, y2)``), in PyTorch or TensorFlow.

    Examples:
        >>> target = DetectionTarget(1, [10, 20, 80, 90])
        >>> maps = GradCAMPP(detector).explain(image, target)  # doctest: +SKIP
    """

    category: int
    box: Any
    min_iou: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.category, bool) or not isinstance(self.category, int | np.integer):
            raise TypeError(f"category must be a class label (int), got {self.category!r}")
        box = to_numpy(self.box)
        if box.shape[-1:] != (4,) or box.ndim not in (1, 2):
            raise ValueError(f"box must have shape (4,) or (N, 4), got {box.shape}")
        if not 0.0 <= float(self.min_iou) <= 1.0:
            raise ValueError(f"min_iou must be in [0, 1], got {self.min_iou}")

    def __call__(self, outputs: Any) -> Any:
        per_image = _detections(outputs)
        boxes = to_numpy(self.box).astype(np.float64)
        if boxes.ndim == 2 and boxes.shape[0] != len(per_image):
            raise ValueError(
                f"box has {boxes.shape[0]} rows for {len(per_image)} images; pass (4,) or (N, 4)"
            )
        chosen = []
        for i, (det_boxes, labels, scores) in enumerate(per_image):
            box = boxes if boxes.ndim == 1 else boxes[i]
            same = to_numpy(labels).reshape(-1) == self.category
            iou = np.where(same, box_iou(to_numpy(det_boxes), box), -1.0)
            best = int(np.argmax(iou)) if iou.size else -1
            if best < 0 or iou[best] < self.min_iou or not same[best]:
                found = float(iou.max()) if same.any() else None
                raise ValueError(
                    f"image {i}: no detection of class {self.category} overlaps box "
                    f"{box.tolist()} with IoU >= {self.min_iou} (best IoU: {found}, "
                    f"{int(same.sum())} detections of that class)"
                )
            chosen.append(scores[best])
        xp = namespace(per_image[0][2])
        if _is_tensorflow(per_image[0][2]):
            import tensorflow as tf

            return tf.stack(chosen)
        return xp.stack(chosen)
