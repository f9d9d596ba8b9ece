"""Rasterise the demo's shape classes into exact boolean masks (NumPy only).

A pixel ``(row, col)`` belongs to a shape when its centre ``(col + 0.5, row + 0.5)`` lies inside
the shape's outline, so a mask is the exact sampling of the outline on the pixel grid.
"""

from __future__ import annotations

import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")

_STAR_POINTS = 5
_STAR_INNER_RATIO = 0.45


def polygon_vertices(name: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices of a regular outline centred at ``(cx, cy)`` with circumradius ``radius``.

    Vertex ``j`` of an ``m``-gon sits at ``(cx + r cos t_j, cy + r sin t_j)`` with
    ``t_j = angle + 2 pi j / m``; the star alternates the outer radius ``r`` and the inner radius
    ``0.45 r`` over ``2 * 5`` vertices.

    Args:
        name: ``"square"``, ``"triangle"`` or ``"star"``.
        cx, cy: centre in pixel units (x = column, y = row).
        radius: circumradius in pixels, > 0.
        angle: rotation in radians.

    Returns:
        float64 array ``(m, 2)`` of ``(x, y)`` vertices in order around the outline.

    Raises:
        ValueError: for another ``name`` (a circle has no vertices).
    """
    if name == "square":
        count, radii = 4, np.full(4, radius)
    elif name == "triangle":
        count, radii = 3, np.full(3, radius)
    elif name == "star":
        count = 2 * _STAR_POINTS
        radii = np.where(np.arange(count) % 2 == 0, radius, _STAR_INNER_RATIO * radius)
    else:
        raise ValueError(f"polygon_vertices expects 'square', 'triangle' or 'star', got {name!r}")
    theta = angle + 2.0 * np.pi * np.arange(count) / count
    return np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], axis=1)


def polygon_mask(vertices: np.ndarray, size: int) -> np.ndarray:
    """Pixels of a ``size x size`` grid whose centres lie inside a polygon (even-odd rule).

    A horizontal ray from the pixel centre ``(px, py)`` crosses edge ``(a, b)`` when
    ``(a_y > py) != (b_y > py)`` and ``px < a_x + (py - a_y) (b_x - a_x) / (b_y - a_y)``; the
    centre is inside when the number of crossings is odd.

    Args:
        vertices: ``(m, 2)`` array of ``(x, y)`` vertices, ``m >= 3``.
        size: side of the square grid in pixels.

    Returns:
        bool array ``(size, size)`` indexed ``[row, col]``.
    """
    centres = np.arange(size, dtype=np.float64) + 0.5
    px = centres[None, :]
    py = centres[:, None]
    inside = np.zeros((size, size), dtype=bool)
    nxt = np.roll(vertices, -1, axis=0)
    for (ax, ay), (bx, by) in zip(vertices, nxt, strict=True):
        if ay == by:
            continue
        straddles = (ay > py) != (by > py)
        x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= straddles & (px < x_cross)
    return inside


def shape_mask(
    name: str, cx: float, cy: float, radius: float, angle: float, size: int
) -> np.ndarray:
    """Exact mask of one shape instance on a ``size x size`` grid.

    A circle is ``(px - cx)^2 + (py - cy)^2 <= radius^2`` at the pixel centres; the other classes
    are the polygons of :func:`polygon_vertices`.

    Args:
        name: one of :data:`CLASSES`.
        cx, cy: centre in pixels (x = column, y = row).
        radius: circumradius in pixels.
        angle: rotation in radians (ignored for the circle).
        size: side of the grid.

    Returns:
        bool array ``(size, size)``.

    Raises:
        ValueError: for a name not in :data:`CLASSES`.
    """
    if name not in CLASSES:
        raise ValueError(f"shape name must be one of {CLASSES}, got {name!r}")
    if name == "circle":
        centres = np.arange(size, dtype=np.float64) + 0.5
        return (centres[None, :] - cx) ** 2 + (centres[:, None] - cy) ** 2 <= radius**2
    return polygon_mask(polygon_vertices(name, cx, cy, radius, angle), size)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``(x0, y0, x1, y1)`` of a non-empty mask, with ``x1``/``y1`` exclusive.

    Args:
        mask: bool array ``(H, W)`` with at least one True pixel.

    Returns:
        int64 array ``(4,)``.

    Raises:
        ValueError: when the mask is empty.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_box expects a mask with at least one pixel set, got an empty mask")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.int64)
