"""Deletion and Insertion (Petsiuk, Das and Saenko, "RISE", BMVC 2018), with their curves.

The pixels of each image are ranked by its map, highest first (ties keep row-major order). After
step ``s = 0 .. L`` of ``L`` steps, the ``k_s = round(s * P / L)`` top-ranked of the ``P`` pixels
are changed (all channels alike), and the model's probability ``p_s`` of the explained class is
read:

- Deletion: the pixels are set to a baseline (default 0): a faithful map makes ``p`` fall fast;
  lower area is better.
- Insertion: starting from a blurred copy of the image, the pixels get their original values back:
  a faithful map makes ``p`` rise fast; higher area is better.

The area under the curve uses the trapezoid rule on ``x_s = s / L``:
``AUC = (1 / L) * (p_0 / 2 + p_1 + ... + p_{L-1} + p_L / 2)``, a number in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcampp.metrics._arrays import as_maps, as_numpy
from gradcampp.metrics._model import adapter_for, as_images, as_targets, check_batch_size


@dataclass(frozen=True)
class CausalCurves:
    """Deletion or insertion curves of ``N`` images.

    Attributes:
        fractions: ``(L + 1,)`` share of pixels changed after each step, from 0 to 1.
        curves: ``(N, L + 1)`` probability of the explained class after each step.
        auc: ``(N,)`` normalised trapezoid area under each curve.
        targets: ``(N,)`` the explained class indices.
    """

    fractions: np.ndarray
    curves: np.ndarray
    auc: np.ndarray
    targets: np.ndarray

    @property
    def mean_auc(self) -> float:
        """The mean area over the images."""
        return float(self.auc.mean())


def curve_auc(curves: Any) -> np.ndarray:
    """Trapezoid area of curves sampled at ``L + 1`` evenly spaced points of ``[0, 1]``.

    ``AUC = (1 / L) * (c_0 / 2 + c_1 + ... + c_{L-1} + c_L / 2)``.

    Args:
        curves: ``(N, L + 1)`` values, ``L >= 1``.

    Returns:
        ``(N,)`` float64 areas.
    """
    curves = as_numpy(curves, "curves")
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must have shape (N, L + 1) with L >= 1, got {curves.shape}")
    steps = curves.shape[1] - 1
    return (curves.sum(axis=1) - 0.5 * (curves[:, 0] + curves[:, -1])) / steps


def pixel_ranks(maps: Any) -> np.ndarray:
    """Rank of every pixel in its map, 0 for the highest value; ties keep row-major order.

    Args:
        maps: ``(N, *S)``.

    Returns:
        ``(N, P)`` int64 ranks, ``P = prod(S)``.
    """
    maps = as_maps(maps)
    flat = maps.reshape(maps.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` matrix of a 1-D Gaussian blur with symmetric (mirror) boundaries."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size))
    period = 2 * size
    for i in range(size):
        j = (i + offsets) % period
        j = np.where(j >= size, period - 1 - j, j)
        np.add.at(matrix[i], j, weights)
    return matrix


def gaussian_blur(images: Any, sigma: float, *, channel_axis: int = 1) -> np.ndarray:
    """Separable Gaussian blur of each channel, mirror boundaries, kernel cut at ``3 sigma``.

    Args:
        images: ``(N, C, *S)`` (``channel_axis=1``) or ``(N, *S, C)`` (``channel_axis=-1``).
        sigma: standard deviation in pixels, > 0.

    Returns:
        float32 array shaped like ``images``.
    """
    if not isinstance(sigma, int | float) or isinstance(sigma, bool) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    array = as_numpy(images, "images")
    channel = channel_axis % array.ndim
    for axis in range(1, array.ndim):
        if axis == channel:
            continue
        matrix = _blur_matrix(array.shape[axis], float(sigma))
        array = np.moveaxis(np.tensordot(matrix, np.moveaxis(array, axis, 0), axes=1), 0, axis)
    return array.astype(np.float32)


def _curves(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any,
    start_from: str,
    fill: Any,
    steps: int,
    batch_size: int,
    apply_softmax: bool,
    blur_sigma: float,
) -> CausalCurves:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    adapter = adapter_for(model)
    batch_size = check_batch_size(batch_size)
    maps = as_maps(maps)
    x = as_images(images, maps.shape[1:], adapter.channel_axis)
    if x.shape[0] != maps.shape[0]:
        raise ValueError(f"got {x.shape[0]} images but {maps.shape[0]} maps")
    n, n_pixels = maps.shape[0], int(np.prod(maps.shape[1:]))
    if start_from == "image":  # deletion: image -> baseline
        start, end = x, _broadcast(fill, x.shape, "baseline")
    else:  # insertion: blurred (or given substrate) -> image
        start = (
            gaussian_blur(x, blur_sigma, channel_axis=adapter.channel_axis)
            if fill is None
            else _broadcast(fill, x.shape, "substrate")
        )
        end = x
    ranks = pixel_ranks(maps)
    counts = (2 * np.arange(steps + 1) * n_pixels + steps) // (2 * steps)  # round(s P / L)
    labels = None if targets is None else as_targets(targets, n, _n_classes(adapter, x[:1]))
    if labels is None:
        labels = adapter.probabilities(x, batch_size, apply_softmax).argmax(axis=1)
    curves = np.empty((n, steps + 1))
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        rows = np.arange(hi - lo)
        for s, count in enumerate(counts):
            changed = (ranks[lo:hi] < count).reshape(hi - lo, *maps.shape[1:])
            changed = np.expand_dims(changed, adapter.channel_axis)
            probs = adapter.probabilities(
                np.where(changed, end[lo:hi], start[lo:hi]), batch_size, apply_softmax
            )
            curves[lo:hi, s] = probs[rows, labels[lo:hi]]
    return CausalCurves(
        fractions=counts / n_pixels, curves=curves, auc=curve_auc(curves), targets=labels
    )


def _broadcast(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = as_numpy(value, what, dtype=np.float32)
    try:
        return np.broadcast_to(array, shape)
    except ValueError as error:
        raise ValueError(
            f"{what} must be a number or an array broadcastable to the images {shape}, "
            f"got shape {array.shape}"
        ) from error


def _n_classes(adapter: Any, x: np.ndarray) -> int:
    return adapter.probabilities(x, 1, False).shape[1]


def deletion(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any = None,
    *,
    steps: int = 32,
    baseline: Any = 0.0,
    batch_size: int = 64,
    apply_softmax: bool = True,
) -> CausalCurves:
    """Deletion curves and areas: top-ranked pixels set to ``baseline`` step by step (lower AUC
    is better).

    Args:
        model: a ``torch.nn.Module`` returning ``(N, K)`` scores; left as it was.
        images: ``(N, C, *S)`` model inputs.
        maps: ``(N, *S)`` explanation maps.
        targets: ``None`` (the class predicted on ``images``), an ``int`` or indices ``(N,)``.
        steps: ``L``, the number of steps (the model runs ``L + 1`` times per image).
        baseline: value of deleted pixels: a number, or an array broadcastable to the images.
        batch_size: images per forward pass.
        apply_softmax: ``False`` when the model already returns probabilities.

    Returns:
        ``CausalCurves`` (``fractions (L + 1,)``, ``curves (N, L + 1)``, ``auc (N,)``).
    """
    return _curves(
        model, images, maps, targets, "image", baseline, steps, batch_size, apply_softmax, 1.0
    )


def insertion(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any = None,
    *,
    steps: int = 32,
    blur_sigma: float = 5.0,
    substrate: Any = None,
    batch_size: int = 64,
    apply_softmax: bool = True,
) -> CausalCurves:
    """Insertion curves and areas: top-ranked pixels copied step by step from the image into a
    blurred copy of it (higher AUC is better).

    Args:
        model, images, maps, targets, steps, batch_size, apply_softmax: as for ``deletion``.
        blur_sigma: standard deviation in pixels of the Gaussian blur of the starting image.
        substrate: the starting image instead of the blur: an array broadcastable to the images.

    Returns:
        ``CausalCurves`` (``fractions (L + 1,)``, ``curves (N, L + 1)``, ``auc (N,)``).
    """
    return _curves(
        model,
        images,
        maps,
        targets,
        "blur",
        substrate,
        steps,
        batch_size,
        apply_softmax,
        blur_sigma,
    )
