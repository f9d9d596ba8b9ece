"""Cluttered, textured backgrounds for the demo's shapes (NumPy only)."""

from __future__ import annotations

import numpy as np


def smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in ``[0, 1]``: a ``(cells + 1)^2`` uniform grid, bilinearly upsampled.

    Grid node ``(i, j)`` sits at pixel position ``(i, j) * size / cells``; each pixel centre takes
    the bilinear interpolation of its four surrounding nodes.

    Args:
        rng: source of randomness.
        size: side of the output in pixels.
        cells: number of grid cells per side, >= 1.

    Returns:
        float64 array ``(size, size)``.
    """
    nodes = rng.random((cells + 1, cells + 1))
    pos = (np.arange(size) + 0.5) * cells / size
    i0 = np.minimum(pos.astype(np.int64), cells - 1)
    t = pos - i0
    rows = nodes[i0] * (1 - t)[:, None] + nodes[i0 + 1] * t[:, None]  # (size, cells + 1)
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def segment_mask(x0: float, y0: float, x1: float, y1: float, width: float, size: int) -> np.ndarray:
    """Pixels whose centres lie within ``width / 2`` of the segment ``(x0, y0)``-``(x1, y1)``.

    The distance from centre ``p`` is ``|p - (a + t (b - a))|`` with
    ``t = clip(<p - a, b - a> / |b - a|^2, 0, 1)``.

    Args:
        x0, y0, x1, y1: end points in pixels (x = column, y = row).
        width: stroke width in pixels.
        size: side of the grid.

    Returns:
        bool array ``(size, size)``.
    """
    centres = np.arange(size, dtype=np.float64) + 0.5
    px, py = centres[None, :], centres[:, None]
    dx, dy = x1 - x0, y1 - y0
    length2 = max(dx * dx + dy * dy, 1e-12)
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0.0, 1.0)
    return (px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2 <= (width / 2) ** 2


def textured_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A random textured and cluttered RGB background.

    Two random colours ``c1, c2`` are blended by a smooth field ``f``:
    ``c1 (1 - f) + c2 f``; stripes ``0.12 sin(2 pi <p, u> / period)`` with a random direction ``u``
    and period, per-pixel Gaussian noise (sigma 0.03) and 3 to 8 thin line segments in random
    colours are added on top; values are clipped to ``[0, 1]``.

    Args:
        rng: source of randomness.
        size: side of the image in pixels.

    Returns:
        ``(image, colours)``: float64 image ``(size, size, 3)`` in ``[0, 1]``, and the two blended
        base colours ``(2, 3)`` (shapes are drawn in colours far from both).
    """
    colours = rng.random((2, 3))
    field = smooth_field(rng, size, int(rng.integers(2, 7)))
    image = colours[0] * (1 - field[..., None]) + colours[1] * field[..., None]
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(0.08, 0.25) * size
    centres = np.arange(size, dtype=np.float64) + 0.5
    phase = (centres[None, :] * np.cos(theta) + centres[:, None] * np.sin(theta)) / period
    image += 0.12 * np.sin(2 * np.pi * phase + rng.uniform(0, 2 * np.pi))[..., None]
    image += rng.normal(0.0, 0.03, size=image.shape)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        width = rng.uniform(0.8, 2.0) * size / 64
        image[segment_mask(x0, y0, x1, y1, width, size)] = rng.random(3)
    return np.clip(image, 0.0, 1.0), colours
