"""How much two explanation maps of the same image and class disagree, and which disagree most.

The number is ``1 - r``, with ``r`` the Pearson correlation of the two maps over their pixels:

``d(a, b) = 1 - sum_p (a_p - mean(a)) (b_p - mean(b)) / sqrt(sum_p (a_p - mean(a))^2 *
sum_p (b_p - mean(b))^2)``

It is 0 when one map is the other times a positive factor plus a constant (the same picture at
the report's per-map scaling), 1 when the two are uncorrelated and 2 when one is the other
upside down; it does not change when either map is scaled or shifted. A constant map has no
correlation with anything, so there the number is undefined (``None``), never a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MOST_SHARE = 0.1  # the share of image-class pairs marked as differing most
MOST_CAP = 10  # and at most this many


def disagreement(a: Any, b: Any) -> float | None:
    """``1 - pearson(a, b)`` over every element of two maps of one shape (see the module).

    Args:
        a: a map ``(*S)``, e.g. ``(H, W)``; any real dtype.
        b: a map of the same shape.

    Returns:
        a float in ``[0, 2]``, or None when either map is constant (its correlation is
        undefined).

    Raises:
        ValueError: when the shapes differ, the maps are empty, or hold NaN or Inf.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"the two maps must have one shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("the maps are empty")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("the maps hold NaN or Inf")
    x = x.ravel() - x.mean()
    y = y.ravel() - y.mean()
    # scale first so that the products neither overflow nor underflow
    nx, ny = np.abs(x).max(), np.abs(y).max()
    if nx == 0 or ny == 0:
        return None
    x, y = x / nx, y / ny
    # sums of products, not BLAS dot products: OpenBLAS runs a dot product of this size on
    # several threads, about 1000x slower when other work holds the cores
    denominator = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    if denominator == 0:
        return None
    r = float(np.sum(x * y)) / denominator
    return float(min(2.0, max(0.0, 1.0 - r)))


def most_different(
    values: Sequence[float | None], share: float = MOST_SHARE, cap: int = MOST_CAP
) -> list[int]:
    """The indices of the largest values, largest first: ``max(1, round(share * n))`` of the
    ``n`` defined values, at most ``cap``; none when fewer than two values are defined (there
    is nothing to compare with). Ties keep input order."""
    defined = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(defined) < 2:
        return []
    k = min(cap, max(1, round(share * len(defined))))
    ranked = sorted(defined, key=lambda item: -item[1])
    return [i for i, _ in ranked[:k]]
