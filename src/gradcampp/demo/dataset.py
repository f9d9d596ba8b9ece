"""The demo's procedurally generated data set: 1 to 4 same-class shapes on cluttered backgrounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcampp.demo.background import textured_background
from gradcampp.demo.shapes import CLASSES, mask_box, shape_mask

MAX_INSTANCES = 4
_MIN_COLOUR_DISTANCE = 0.5
# Circumradius range, as a fraction of the image side, for 1, 2, 3 and 4 instances per image.
_RADIUS_RANGE = {1: (0.11, 0.21), 2: (0.11, 0.18), 3: (0.11, 0.16), 4: (0.11, 0.15)}


@dataclass(frozen=True)
class ShapesBatch:
    """A batch of generated images with their ground truth.

    Attributes:
        images: float32 ``(n, 3, size, size)`` in ``[0, 1]``, channels first (model input).
        labels: int64 ``(n,)``, index into :data:`CLASSES`; all instances of an image share it.
        instance_masks: ``n`` bool arrays ``(k_i, size, size)``, one exact mask per drawn instance;
            the instances of one image never overlap.
        boxes: ``n`` int64 arrays ``(k_i, 4)`` of tight boxes ``(x0, y0, x1, y1)`` of the masks,
            ``x1`` and ``y1`` exclusive.
    """

    images: np.ndarray
    labels: np.ndarray
    instance_masks: list[np.ndarray]
    boxes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)


def _instance_range(instances: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(instances, bool):
        raise TypeError(f"instances must be an int or a (low, high) pair, got {instances!r}")
    if isinstance(instances, int | np.integer):
        low = high = int(instances)
    elif isinstance(instances, tuple | list) and len(instances) == 2:
        low, high = (int(v) for v in instances)
    else:
        raise TypeError(f"instances must be an int or a (low, high) pair, got {instances!r}")
    if not 1 <= low <= high <= MAX_INSTANCES:
        raise ValueError(
            f"instances must lie in 1..{MAX_INSTANCES} with low <= high, got {instances!r}"
        )
    return low, high


def _pick_colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random colour at least 0.5 (Euclidean, RGB in [0, 1]) from each colour in ``avoid``."""
    best, best_distance = rng.random(3), -1.0
    for attempt in range(64):
        colour = best if attempt == 0 else rng.random(3)
        distance = float(np.min(np.linalg.norm(avoid - colour, axis=1)))
        if distance >= _MIN_COLOUR_DISTANCE:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _place(rng: np.random.Generator, count: int, size: int) -> list[tuple[float, float, float]]:
    """Centres and radii ``(cx, cy, r)`` of ``count`` discs inside the image, 2 px apart or more.

    Each shape lies inside its circumscribed disc, so disjoint discs give disjoint shapes.
    When 200 tries do not fit them all, the radius range shrinks by 10% and placement restarts.
    """
    low, high = (f * size for f in _RADIUS_RANGE[count])
    while True:
        placed: list[tuple[float, float, float]] = []
        for _ in range(200):
            r = rng.uniform(low, high)
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if all(np.hypot(cx - x, cy - y) >= r + s + 2 for x, y, s in placed):
                placed.append((cx, cy, r))
                if len(placed) == count:
                    return placed
        low, high = 0.9 * low, 0.9 * high


def _draw_one(rng: np.random.Generator, count: int, label: int, size: int):
    image, base_colours = textured_background(rng, size)
    masks = []
    for cx, cy, r in _place(rng, count, size):
        mask = shape_mask(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * np.pi), size)
        image[mask] = _pick_colour(rng, base_colours)
        masks.append(mask)
    boxes = np.stack([mask_box(m) for m in masks])
    return image.transpose(2, 0, 1).astype(np.float32), np.stack(masks), boxes


def generate_shapes(
    n: int, seed: int, *, instances: int | tuple[int, int] = (1, MAX_INSTANCES), size: int = 64
) -> ShapesBatch:
    """Generate ``n`` images, each with 1 to 4 instances of one shape class.

    Image ``i`` is drawn from its own generator ``np.random.default_rng([seed, i])``, so the
    batch is deterministic, and the first ``m`` images of ``generate_shapes(n, seed)`` are those of
    ``generate_shapes(m, seed)`` (same ``instances`` and ``size``). Per image: a class uniformly
    from :data:`CLASSES`, an instance count uniformly from the ``instances`` range, a textured
    cluttered background, then each instance with a random centre, circumradius (about 0.11 to
    0.21 of ``size``, smaller when there are more instances), rotation and flat colour far from
    the background's base colours; instances never overlap and lie fully inside the image.

    Args:
        n: number of images, >= 0.
        seed: non-negative integer seed.
        instances: instances per image: an int, or an inclusive ``(low, high)`` range within 1..4.
        size: side of the square images in pixels, >= 16.

    Returns:
        a :class:`ShapesBatch`.

    Raises:
        TypeError: for a non-integer ``n``, ``seed`` or ``size``, or a malformed ``instances``.
        ValueError: for a negative ``n`` or ``seed``, ``size < 16`` or instances outside 1..4.
    """
    for name, value in (("n", n), ("seed", seed), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    low, high = _instance_range(instances)

    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    instance_masks, boxes = [], []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        labels[i] = rng.integers(len(CLASSES))
        count = int(rng.integers(low, high + 1))
        images[i], masks, image_boxes = _draw_one(rng, count, int(labels[i]), size)
        instance_masks.append(masks)
        boxes.append(image_boxes)
    return ShapesBatch(images, labels, instance_masks, boxes)
