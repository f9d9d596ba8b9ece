"""Faithfulness of the paper (Chattopadhyay et al., WACV 2018, section 4.1).

The explanation map ``E`` of an image is its map min-max normalised to ``[0, 1]`` and multiplied
into the image pixel by pixel (every channel alike). With ``Y_i`` the model's softmax probability
of the explained class ``c_i`` on image ``i`` and ``O_i`` the same probability on ``E_i * image_i``:

- Average Drop %            ``= 100 / N * sum_i max(0, Y_i - O_i) / Y_i``   (lower is better);
- % Increase in Confidence  ``= 100 / N * sum_i 1[O_i > Y_i + t]``          (higher is better);
- Win % of method A over B  ``= 100 / N * sum_i (1[O_i^A > O_i^B + t]``
  ``+ 1/2 * 1[|O_i^A - O_i^B| <= t])``: the share of images where A's drop in confidence
  ``(Y_i - O_i) / Y_i`` is the smaller one (the same ``Y_i`` for both), ties split evenly so
  that A's and B's Win % add up to 100 as in the paper's Table 1.

``t`` is a tolerance (default ``1e-6``, an argument of both functions): probabilities that differ
by no more than ``t`` count as equal. The paper compares exactly, which makes the result depend on
the precision of the softmax: a near-certain image (``Y = 0.9999999``) shows an "increase" of a few
``1e-9`` in float64 and a tie in float32, whose spacing just below 1 is ``6e-8``. ``1e-6`` is about
16 float32 steps there, and far below any change of confidence that means something.

``explanation_confidence`` runs the model and returns ``Y`` and ``O``; the three scores are pure
functions of them, so that ``Y`` is computed once when several methods are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcampp.metrics._arrays import as_maps, as_numpy, minmax_normalize
from gradcampp.metrics._model import adapter_for, as_images, as_targets, check_batch_size


@dataclass(frozen=True)
class Confidence:
    """Class probabilities before and after masking by the explanation.

    Attributes:
        y: ``(N,)`` probability of the explained class on the images.
        o: ``(N,)`` probability of the same class on the explanation-masked images.
        targets: ``(N,)`` the explained class indices.
    """

    y: np.ndarray
    o: np.ndarray
    targets: np.ndarray


def explanation_images(images: Any, maps: Any, *, channel_axis: int = 1) -> np.ndarray:
    """``E * image``: each map min-max normalised to ``[0, 1]`` and multiplied into its image.

    Args:
        images: ``(N, C, *S)`` (``channel_axis=1``) or ``(N, *S, C)`` (``channel_axis=-1``).
        maps: ``(N, *S)`` explanation maps (any real values; each is min-max normalised).
        channel_axis: the channel axis of ``images``.

    Returns:
        float32 NumPy array shaped like ``images``.

    Raises:
        ValueError: when the shapes do not fit.
    """
    maps = as_maps(maps)
    images = as_images(images, maps.shape[1:], channel_axis)
    if images.shape[0] != maps.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {maps.shape[0]} maps")
    weights = np.expand_dims(minmax_normalize(maps), channel_axis)
    return (images * weights).astype(np.float32)


def explanation_confidence(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any = None,
    *,
    batch_size: int = 64,
    apply_softmax: bool = True,
) -> Confidence:
    """Probabilities ``Y`` (images) and ``O`` (explanation-masked images) of the explained class.

    Args:
        model: a ``torch.nn.Module`` returning ``(N, K)`` scores; it is run in eval mode without
            gradients and left as it was.
        images: ``(N, C, *S)`` model inputs (NumPy or tensor).
        maps: ``(N, *S)`` explanation maps of ``targets``.
        targets: ``None`` (the class the model predicts on ``images``), an ``int``, or class
            indices ``(N,)``.
        batch_size: samples per forward pass.
        apply_softmax: ``True`` when the model returns logits; ``False`` when it already returns
            probabilities.

    Returns:
        a ``Confidence`` with ``y``, ``o`` and ``targets``, each ``(N,)``.

    Raises:
        ValueError, TypeError: for shapes, targets or a model that do not fit.
    """
    adapter = adapter_for(model)
    batch_size = check_batch_size(batch_size)
    maps = as_maps(maps)
    x = as_images(images, maps.shape[1:], adapter.channel_axis)
    masked = explanation_images(x, maps, channel_axis=adapter.channel_axis)
    before = adapter.probabilities(x, batch_size, apply_softmax)
    after = adapter.probabilities(masked, batch_size, apply_softmax)
    n, n_classes = before.shape
    labels = before.argmax(axis=1) if targets is None else as_targets(targets, n, n_classes)
    rows = np.arange(n)
    return Confidence(y=before[rows, labels], o=after[rows, labels], targets=labels)


DEFAULT_TOLERANCE = 1e-6


def _probabilities(value: Any, name: str) -> np.ndarray:
    """``value`` as a flat float64 array of finite probabilities in ``[0, 1]``."""
    array = as_numpy(value, name).reshape(-1)
    bad = ~np.isfinite(array)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must hold finite probabilities, got {array[index]} at index {index} "
            f"({int(bad.sum())} NaN or Inf values)"
        )
    if np.any(array < 0) or np.any(array > 1):
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got values from {array.min()} to "
            f"{array.max()}"
        )
    return array


def _check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float | np.floating):
        raise TypeError(f"tolerance must be a number, got {type(tolerance).__name__}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must lie in [0, 1), got {tolerance!r}")
    return float(tolerance)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"{names} must be non-empty and of one shape (N,), got {a.shape}, {b.shape}"
        )


def _pair(y: Any, o: Any) -> tuple[np.ndarray, np.ndarray]:
    y, o = _probabilities(y, "y"), _probabilities(o, "o")
    _same_shape(y, o, "y and o")
    if np.any(y <= 0):
        raise ValueError(
            f"y must hold probabilities in (0, 1] (it divides), got a minimum of {y.min()}"
        )
    return y, o


def average_drop(y: Any, o: Any) -> float:
    """Average Drop % ``= 100 * mean_i(max(0, Y_i - O_i) / Y_i)`` (lower is better).

    Args:
        y: ``(N,)`` probabilities of the explained class on the images, in ``(0, 1]``.
        o: ``(N,)`` the same on the explanation-masked images, in ``[0, 1]``.

    Returns:
        a float in ``[0, 100]``.

    Raises:
        ValueError: naming ``y`` or ``o`` when it holds NaN, Inf or values outside the ranges.
    """
    y, o = _pair(y, o)
    return float(100.0 * np.mean(np.maximum(0.0, y - o) / y))


def increase_in_confidence(y: Any, o: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """% Increase in Confidence ``= 100 * mean_i 1[O_i > Y_i + t]`` (higher is better).

    Args:
        y: ``(N,)`` probabilities of the explained class on the original images, in ``(0, 1]``.
        o: ``(N,)`` probabilities of the same class on the explanation-masked images.
        tolerance: ``t``, an increase of at most ``t`` is no increase (see the module
            docstring); ``0`` compares exactly, as the paper does.

    Returns:
        a float in ``[0, 100]``.

    Raises:
        ValueError: naming ``y`` or ``o`` when it holds NaN, Inf or values outside the ranges.
    """
    y, o = _pair(y, o)
    return float(100.0 * np.mean(o > y + _check_tolerance(tolerance)))


def win_percentage(o_a: Any, o_b: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Win % of method A over method B:
    ``100 * mean_i(1[O^A_i > O^B_i + t] + 0.5 * 1[|O^A_i - O^B_i| <= t])``.

    A wins image ``i`` when its drop in confidence is the smaller one, i.e. when the probability
    kept on its explanation, ``O^A_i``, is the larger (both share ``Y_i``). Ties (within the
    tolerance ``t``) count half. The drops compared are unclipped (``Y_i - O^A_i`` against
    ``Y_i - O^B_i``), unlike Average Drop's ``max(0, Y_i - O_i)``: where both masked images
    raise the probability, the larger rise wins.

    Args:
        o_a: ``(N,)`` probabilities on A's explanation-masked images.
        o_b: ``(N,)`` the same for B.
        tolerance: ``t``; ``0`` compares exactly.

    Returns:
        a float in ``[0, 100]``; ``win_percentage(a, b) + win_percentage(b, a) == 100``.

    Raises:
        ValueError: naming ``o_a`` or ``o_b`` when it holds NaN, Inf or values outside [0, 1].
    """
    o_a, o_b = _probabilities(o_a, "o_a"), _probabilities(o_b, "o_b")
    _same_shape(o_a, o_b, "o_a and o_b")
    t = _check_tolerance(tolerance)
    return float(100.0 * np.mean((o_a > o_b + t) + 0.5 * (np.abs(o_a - o_b) <= t)))
