"""Array helpers shared by the metrics: conversion to NumPy, map normalisation, regions.

Every metric works on NumPy arrays on the CPU: maps and images of any framework are converted once
at the entry point (``as_numpy``), so that the maths below is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradcampp._xp import to_numpy


def as_numpy(value: Any, what: str, dtype: Any = np.float64) -> np.ndarray:
    """``value`` (NumPy array, torch or TensorFlow tensor, nested sequence) as a NumPy array.

    Raises:
        TypeError: when ``value`` is not numeric.
    """
    array = to_numpy(value)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise TypeError(f"{what} must be a numeric array, got {type(value).__name__}")
    return array.astype(dtype, copy=False) if dtype is not None else array


def as_maps(maps: Any, n: int | None = None) -> np.ndarray:
    """Explanation maps ``(N, *S)`` as finite float64 NumPy; ``n`` checks the sample count.

    Raises:
        ValueError: for fewer than 2 dimensions, a wrong sample count, or NaN/Inf values.
    """
    array = as_numpy(maps, "maps")
    if array.ndim < 2:
        raise ValueError(f"maps must have shape (N, *spatial), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"maps must hold at least one map (N >= 1), got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"expected {n} maps (one per image), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("maps contain NaN or Inf")
    return array


def minmax_normalize(maps: np.ndarray) -> np.ndarray:
    """Rescale each map to ``[0, 1]``: ``(m - min m) / (max m - min m)`` per sample.

    A constant map (``max == min``) carries no ranking and becomes all zeros.

    Args:
        maps: ``(N, *S)`` float array.

    Returns:
        ``(N, *S)`` float64 array with values in ``[0, 1]``.
    """
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    out = np.where(span > 0, (flat - low) / safe, 0.0)
    return out.reshape(maps.shape)


def boxes_to_masks(boxes: Any, spatial: Sequence[int]) -> list[np.ndarray]:
    """Boolean masks of axis-aligned boxes.

    Args:
        boxes: per image, an integer array ``(k_i, 4)`` of ``(x0, y0, x1, y1)`` with ``x1``/``y1``
            exclusive (``x`` the column, ``y`` the row); a ``(N, k, 4)`` array also works.
        spatial: the image size ``(H, W)``.

    Returns:
        a list of ``N`` bool arrays ``(k_i, H, W)``, one mask per box (clipped to the
        image).

    Raises:
        ValueError: when no image is given, a box is not 4 numbers, or has ``x1 < x0`` or
            ``y1 < y0``.
    """
    if len(spatial) != 2:
        raise ValueError(f"boxes need a 2-D image size (H, W), got {tuple(spatial)}")
    height, width = (int(s) for s in spatial)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    if isinstance(boxes, np.ndarray) or hasattr(boxes, "shape"):
        boxes = list(as_numpy(boxes, "boxes", dtype=None))
    if len(boxes) == 0:
        raise ValueError("boxes must hold the boxes of at least one image, got none")
    masks = []
    for index, image_boxes in enumerate(boxes):
        array = as_numpy(image_boxes, "boxes", dtype=None)
        if array.size and (array.ndim not in (1, 2) or array.shape[-1] != 4):
            raise ValueError(
                f"boxes of image {index} must be (x0, y0, x1, y1), 4 numbers per box, as an "
                f"array (4,) or (k, 4); got shape {array.shape}"
            )
        array = array.reshape(-1, 4)
        if array.size and not np.all(array == np.round(array)):
            raise ValueError(f"boxes of image {index} must be integer pixel coordinates")
        array = array.astype(np.int64)
        if np.any(array[:, 2] < array[:, 0]) or np.any(array[:, 3] < array[:, 1]):
            raise ValueError(
                f"boxes of image {index} must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0, "
                f"got {array.tolist()}"
            )
        x0, y0, x1, y1 = (array[:, i, None, None] for i in range(4))
        masks.append((cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1))
    return masks


def as_regions(regions: Any, n: int, spatial: tuple[int, ...]) -> list[np.ndarray]:
    """Ground-truth regions as a list of ``N`` bool arrays ``(k_i, *S)`` (one mask per instance).

    Args:
        regions: a bool array ``(N, *S)`` (one region per image), ``(N, k, *S)``, or a sequence of
            ``N`` bool arrays each ``(*S)`` or ``(k_i, *S)``.
        n: the number of images.
        spatial: the spatial shape ``S`` of the maps.

    Raises:
        ValueError: for a wrong number of images or a spatial shape that differs from ``S``.
    """
    if isinstance(regions, np.ndarray) or hasattr(regions, "shape"):
        regions = list(as_numpy(regions, "regions", dtype=None))
    if len(regions) != n:
        raise ValueError(f"expected regions for {n} images, got {len(regions)}")
    out = []
    for index, region in enumerate(regions):
        array = as_numpy(region, "regions", dtype=None).astype(bool)
        if array.shape == spatial:
            array = array[None]
        if array.shape[1:] != spatial:
            raise ValueError(
                f"regions of image {index} must have shape {spatial} or (k, *{spatial}), "
                f"got {array.shape}"
            )
        out.append(array)
    return out


def union(regions: list[np.ndarray]) -> np.ndarray:
    """The union of each image's instance masks: ``(N, *S)`` bool."""
    return np.stack([region.any(axis=0) for region in regions])


def check_fraction(value: float, what: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float in ``[low, high]``, else a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{what} must be a number in [{low}, {high}], got {type(value).__name__}")
    if not low <= float(value) <= high:
        raise ValueError(f"{what} must lie in [{low}, {high}], got {value}")
    return float(value)
