"""Pictures of explanations: colour maps, overlays and grids.

Only NumPy is needed to import this module. Colour maps come from matplotlib (imported when first
used; install it with ``pip install ".[viz]"`` in a gradcampp checkout), read once per name into a
256-entry lookup table (``colormap_lut``): colouring a map is then one table lookup per pixel.
Every function accepts NumPy arrays, PyTorch tensors (any device) and TensorFlow tensors, images
channels-first or channels-last.

An overlay blends a colour-mapped heatmap onto an image:

    out = (1 - alpha) * image + alpha * cmap((h - min h) / (max h - min h)),

with the image scaled to ``[0, 1]`` and the heatmap min-max normalised per map (a constant map
becomes all zeros), bicubically resized to the image's size when the two differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from gradcampp._xp import to_numpy
from gradcampp.resize import resize

__all__ = ["colorize", "colormap_lut", "normalize_map", "overlay", "plot_explanations", "to_rgb"]

_CHANNELS = (1, 3, 4)


def _numpy(value: Any, what: str) -> np.ndarray:
    """``value`` (NumPy, torch, TensorFlow or nested sequences) as a NumPy array."""
    array = to_numpy(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{what} must be a numeric array, got dtype {array.dtype}")
    return array


def _channels_first(shape: tuple[int, ...]) -> bool:
    """Whether a 3-D image shape is ``(C, H, W)`` rather than ``(H, W, C)``."""
    return shape[0] in _CHANNELS and shape[-1] not in _CHANNELS


def to_rgb(image: Any) -> np.ndarray:
    """An image as float32 RGB ``(H, W, 3)`` in ``[0, 1]``.

    Args:
        image: ``(H, W)`` grey, ``(H, W, C)`` or ``(C, H, W)`` with ``C`` in 1, 3, 4 (an alpha
            channel is dropped). ``uint8`` values are divided by 255; floats already in ``[0, 1]``
            are kept; any other range (e.g. a normalised network input) is min-max scaled.

    Returns:
        float32 array ``(H, W, 3)``.

    Raises:
        ValueError: for another rank or channel count, or NaN/Inf values.
    """
    array = _numpy(image, "image")
    if array.ndim == 3 and _channels_first(array.shape):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in _CHANNELS:
        raise ValueError(
            "image must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3 or 4, "
            f"got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        rgb = array.astype(np.float32) / 255.0
    else:
        rgb = array.astype(np.float32)
        if not np.all(np.isfinite(rgb)):
            raise ValueError("image contains NaN or Inf")
        low, high = float(rgb.min()), float(rgb.max())
        if low < 0.0 or high > 1.0:
            rgb = (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
    rgb = rgb[..., :3]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.ascontiguousarray(rgb)


def normalize_map(heatmap: Any, size: Sequence[int] | None = None) -> np.ndarray:
    """A heatmap as float32 ``(H, W)`` min-max scaled to ``[0, 1]``.

    Args:
        heatmap: ``(H, W)``, ``(H, W, 1)`` (xplique/Keras) or ``(1, H, W)``.
        size: ``(H', W')`` to resize to (bicubic, ``gradcampp.resize``) before scaling, or None.

    Returns:
        float32 ``(H, W)`` (or ``size``) with minimum 0 and maximum 1; all zeros for a constant map.

    Raises:
        ValueError: for another shape, or NaN/Inf values.
    """
    array = _numpy(heatmap, "heatmap").astype(np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), (H, W, 1) or (1, H, W), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("heatmap contains NaN or Inf")
    if size is not None and tuple(size) != array.shape:
        array = np.asarray(resize(array.astype(np.float64), tuple(size)), dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array)
    return (array - low) / (high - low)


LUT_SIZE = 256


@lru_cache(maxsize=32)
def _lut(cmap: str) -> np.ndarray:
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            'colour maps need matplotlib: pip install ".[viz]" in a gradcampp checkout'
        ) from error
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as error:
        raise ValueError(f"unknown matplotlib colour map {cmap!r}") from error
    if colormap.N == LUT_SIZE:  # its own entries: the colours matplotlib gives
        entries = colormap(np.arange(LUT_SIZE))
    else:  # the colour at the centre of each of the 256 bins
        entries = colormap((np.arange(LUT_SIZE) + 0.5) / LUT_SIZE)
    table = np.asarray(np.asarray(entries)[:, :3], dtype=np.float32)
    table.setflags(write=False)
    return table


def colormap_lut(cmap: str = "inferno") -> np.ndarray:
    """The colour map ``cmap`` as a read-only float32 RGB table ``(256, 3)``.

    Value ``v`` in ``[0, 1]`` takes entry ``min(floor(256 v), 255)``, as matplotlib indexes its
    own 256-entry maps (inferno, viridis, magma, plasma, ...): for those the table gives exactly
    matplotlib's colours. A map with another number of entries is sampled at the 256 bin centres.
    Built once per name (cached).

    Raises:
        ImportError: when matplotlib is not installed.
        ValueError: for an unknown colour map name.
    """
    return _lut(str(cmap))


def _lut_index(values: np.ndarray) -> np.ndarray:
    """Values (clipped to ``[0, 1]``) -> table indices ``min(floor(256 v), 255)``, ``intp``."""
    array = np.asarray(values)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    scaled = np.clip(array, 0.0, 1.0) * LUT_SIZE  # exact: a power of two
    return np.minimum(scaled.astype(np.intp), LUT_SIZE - 1)


def colorize(values: Any, cmap: str = "inferno") -> np.ndarray:
    """Map values in ``[0, 1]`` ``(...)`` to float32 RGB ``(...,  3)`` with a matplotlib colour map.

    One lookup in ``colormap_lut(cmap)`` per value.

    Args:
        values: array of any shape; values are clipped to ``[0, 1]``.
        cmap: a matplotlib colour map name. The default, ``"inferno"``, is perceptually uniform
            and readable in grey and by colour-blind viewers (as are viridis, magma, plasma).

    Raises:
        ImportError: when matplotlib is not installed.
        ValueError: for an unknown colour map name.
    """
    return np.take(colormap_lut(cmap), _lut_index(np.asarray(values)), axis=0)


def overlay(image: Any, heatmap: Any, cmap: str = "inferno", alpha: float = 0.5) -> np.ndarray:
    """Blend a colour-mapped heatmap onto an image (see the module docstring for the formula).

    Args:
        image: ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``; ``uint8`` or floats of any range.
        heatmap: ``(h, w)``, ``(h, w, 1)`` or ``(1, h, w)``; resized to ``(H, W)`` if needed.
        cmap: matplotlib colour map name.
        alpha: weight of the heatmap's colour, in ``[0, 1]``.

    Returns:
        RGB ``(H, W, 3)``: ``uint8`` for a ``uint8`` image, else float32 in ``[0, 1]``.

    Raises:
        ValueError: for shapes that do not fit, NaN/Inf, or ``alpha`` outside ``[0, 1]``.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    is_uint8 = _numpy(image, "image").dtype == np.uint8
    rgb = to_rgb(image)
    heat = colorize(normalize_map(heatmap, rgb.shape[:2]), cmap)
    blended = (1.0 - alpha) * rgb + alpha * heat
    if is_uint8:
        return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    return np.clip(blended, 0.0, 1.0).astype(np.float32)


def _batch(values: Any, what: str) -> np.ndarray:
    array = _numpy(values, what)
    return array if array.ndim > 0 else array[None]


def plot_explanations(
    images: Any,
    maps: Any,
    *,
    titles: Sequence[str] | None = None,
    cmap: str = "inferno",
    alpha: float = 0.5,
    cols: int = 5,
    img_size: float = 2.5,
    show_images: bool = False,
    colorbar: bool = True,
) -> Any:
    """Plot a grid of explanations overlaid on their images (as xplique's ``plot_attributions``).

    Args:
        images: ``(N, C, H, W)`` (PyTorch) or ``(N, H, W, C)`` (Keras), or ``(N, H, W)`` grey;
            ``uint8`` or floats of any range.
        maps: ``(N, h, w)``, ``(N, h, w, 1)`` (xplique/Keras) or ``(N, 1, h, w)``; NumPy, torch or
            TensorFlow. Each map is min-max normalised and resized to its image.
        titles: one title per image, or None.
        cmap: matplotlib colour map name.
        alpha: heatmap weight in ``[0, 1]``.
        cols: panels per row.
        img_size: inches per panel.
        show_images: also show each plain image in the panel before its overlay.
        colorbar: draw the colour map's scale beside the grid. Every map is min-max
            normalised on its own, so the scale reads from 0 (that map's minimum) to 1 (its
            maximum): colours compare places within a map, not values across maps.

    Returns:
        the ``matplotlib.figure.Figure`` (shown by notebooks; save it with ``savefig``).

    Raises:
        ValueError: when ``images`` and ``maps`` hold different numbers of samples, or
            ``titles`` has the wrong length.
    """
    import matplotlib.pyplot as plt

    image_batch = _batch(images, "images")
    map_batch = _batch(maps, "maps")
    if image_batch.shape[0] != map_batch.shape[0]:
        raise ValueError(
            f"images and maps must hold the same number of samples, got {image_batch.shape[0]} "
            f"images and {map_batch.shape[0]} maps"
        )
    n = image_batch.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must hold one title per image ({n}), got {len(titles)}")
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    per_sample = 2 if show_images else 1
    if show_images and cols % 2:
        cols = max(2, cols - 1)  # an image and its overlay stay on one row
    cols = min(cols, n * per_sample)
    rows = -(-n * per_sample // cols)
    width = cols * img_size + (0.6 if colorbar else 0.0)
    figure, axes = plt.subplots(
        rows, cols, figsize=(width, rows * img_size), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        panel = i * per_sample
        if show_images:
            axes.flat[panel].imshow(to_rgb(image_batch[i]))
            panel += 1
        axes.flat[panel].imshow(overlay(image_batch[i], map_batch[i], cmap=cmap, alpha=alpha))
        if titles is not None:
            axes.flat[panel].set_title(str(titles[i]))
    if colorbar:
        _add_colorbar(figure, axes, cmap, rows * img_size)
    return figure


COLORBAR_LABEL = ("each map scaled:", "0 = its minimum,", "1 = its maximum")
COLORBAR_SHRINK = 0.9


def colorbar_fontsize(height_inches: float, lines: Sequence[str] = COLORBAR_LABEL) -> float:
    """The colour bar label's font size (points) that keeps its longest line within the bar's
    length, ``COLORBAR_SHRINK * height_inches``: at most 10 pt, a character counted as 0.62 of
    the font size (wider than the average glyph of the default sans-serif font), 4 pt at
    least."""
    length_points = COLORBAR_SHRINK * height_inches * 72.0
    longest = max(len(line) for line in lines)
    return float(min(10.0, max(4.0, length_points / (0.62 * longest))))


def _add_colorbar(figure: Any, axes: Any, cmap: str, height_inches: float) -> Any:
    """A colour bar for normalised maps (0 to 1 in ``cmap``) on the right of ``axes``, its label
    sized to stay within the figure (``colorbar_fontsize``)."""
    import matplotlib
    from matplotlib.cm import ScalarMappable

    scale = ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=cmap)
    bar = figure.colorbar(
        scale, ax=list(axes.flat), fraction=0.05, shrink=COLORBAR_SHRINK, aspect=30
    )
    bar.set_ticks([0.0, 0.5, 1.0])
    bar.set_label("\n".join(COLORBAR_LABEL), fontsize=colorbar_fontsize(height_inches))
    return bar
