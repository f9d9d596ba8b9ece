"""pytorch-grad-cam's image helpers (``pytorch_grad_cam.utils.image``), same arguments and results.

``scale_cam_image`` resizes with ``gradcampp.resize`` (linear, OpenCV's bilinear convention) and
``preprocess_image`` with PyTorch alone. ``show_cam_on_image`` colours the map with OpenCV's
``applyColorMap`` when OpenCV is installed (as it is wherever pytorch-grad-cam is); without it,
``COLORMAP_JET`` is computed here (``jet``), within one level of 255 of OpenCV's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gradcampp.resize import resize

__all__ = ["COLORMAP_JET", "jet", "preprocess_image", "scale_cam_image", "show_cam_on_image"]

#: OpenCV's code of the jet colour map (``cv2.COLORMAP_JET``).
COLORMAP_JET = 2


def scale_cam_image(cam: Any, target_size: Sequence[int] | None = None) -> np.ndarray:
    """Scale each map to ``[0, 1]`` and optionally resize it.

    Per map: ``m <- m - min(m)``, ``m <- m / (1e-7 + max(m))``, then, with ``target_size``
    ``(width, height)`` (or ``(depth, width, height)`` for volumes: the spatial shape reversed),
    a linear resize per axis with half-pixel centres and edge samples repeated (for 2-D maps,
    ``cv2.resize``'s bilinear interpolation; pytorch-grad-cam resizes volumes with SciPy's cubic
    spline ``zoom`` instead).

    Args:
        cam: maps ``(N, *S)``, NumPy or anything ``numpy.asarray`` reads.
        target_size: ``None`` or the output size, reversed (``(W, H)``).

    Returns:
        float32 maps ``(N, *S)`` or ``(N, *reversed(target_size))``.
    """
    maps = np.asarray(cam, dtype=np.float32)
    maps = maps - maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    maps = maps / (np.float32(1e-7) + maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True))
    if target_size is not None:
        size = tuple(int(s) for s in reversed(tuple(target_size)))
        if len(size) != maps.ndim - 1:
            raise ValueError(
                f"target_size must give one length per spatial axis of the maps {maps.shape[1:]} "
                f"(reversed: width first), got {tuple(target_size)}"
            )
        maps = resize(maps, size, method="linear")
    return np.asarray(maps, dtype=np.float32)


def preprocess_image(
    img: np.ndarray,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """An image ``(H, W, C)`` (or ``(H, W)``) as a normalised batch of one, ``(1, C, H, W)``.

    ``uint8`` images are divided by 255 first (as torchvision's ``ToTensor``); other dtypes are
    kept. Then ``(x - mean[c]) / std[c]`` per channel. The input is not modified.

    Args:
        img: the image, channels last.
        mean: one value per channel, subtracted.
        std: one value per channel, divided by.

    Returns:
        a tensor ``(1, C, H, W)``: float32 for ``uint8`` images, else the image's dtype.

    Raises:
        ValueError: for an image that is not 2-D or 3-D, or ``mean``/``std`` of the wrong length.
        TypeError: for an integer image other than ``uint8`` (which cannot be normalised).
    """
    array = np.asarray(img)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"img must be (H, W, C) or (H, W), got shape {np.shape(img)}")
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if tensor.dtype == torch.uint8:
        tensor = tensor.to(torch.get_default_dtype()) / 255
    elif not tensor.is_floating_point():
        raise TypeError(f"img must be uint8 or floating point, got dtype {array.dtype}")
    channels = tensor.shape[0]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got {len(mean)} and {len(std)}"
        )
    shift = torch.as_tensor(mean, dtype=tensor.dtype).reshape(-1, 1, 1)
    scale = torch.as_tensor(std, dtype=tensor.dtype).reshape(-1, 1, 1)
    return ((tensor - shift) / scale).unsqueeze(0)


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map, RGB in ``[0, 1]``, of ``values`` in ``[0, 1]``.

    ``red = clip(1.5 - |4v - 3|, 0, 1)``, ``green = clip(1.5 - |4v - 2|, 0, 1)``,
    ``blue = clip(1.5 - |4v - 1|, 0, 1)``: dark blue, blue, cyan, yellow, red, dark red.

    Args:
        values: any shape.

    Returns:
        float64 array ``(*values.shape, 3)``.
    """
    v = 4.0 * np.asarray(values, dtype=np.float64)
    return np.clip(1.5 - np.abs(np.stack([v - 3, v - 2, v - 1], axis=-1)), 0.0, 1.0)


def _heatmap_bgr(levels: np.ndarray, colormap: int) -> np.ndarray:
    """``uint8`` BGR colours of ``uint8`` levels ``(H, W)``: OpenCV's, or our ``jet``."""
    try:
        import cv2
    except ImportError:
        if colormap != COLORMAP_JET:
            raise ImportError(
                f"colormap {colormap} needs OpenCV (pip install opencv-python-headless); "
                f"without it only COLORMAP_JET ({COLORMAP_JET}) is available"
            ) from None
        rgb = jet(levels.astype(np.float64) / 255.0)
        return np.round(rgb[..., ::-1] * 255).astype(np.uint8)
    return np.asarray(cv2.applyColorMap(levels, colormap))


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlay a map on an image, as pytorch-grad-cam does.

    ``heatmap = colormap(uint8(255 mask)) / 255`` (BGR, or RGB with ``use_rgb``), then
    ``cam = (1 - image_weight) heatmap + image_weight img`` and ``uint8(255 cam / max(cam))``.

    Args:
        img: float image ``(H, W, 3)`` in ``[0, 1]``, RGB or BGR (say which with ``use_rgb``).
        mask: the map ``(H, W)`` in ``[0, 1]``.
        use_rgb: give the heatmap in RGB order (for an RGB ``img``); default BGR.
        colormap: an OpenCV colour map code (default ``COLORMAP_JET``).
        image_weight: the image's share of the blend, in ``[0, 1]``.

    Returns:
        ``uint8`` image ``(H, W, 3)``.

    Raises:
        ValueError: for an image with values above 1, an ``image_weight`` outside ``[0, 1]``, or
            a mask whose shape is not the image's ``(H, W)``.
    """
    img = np.asarray(img)
    mask = np.asarray(mask)
    if np.max(img) > 1:
        raise ValueError(
            f"img must be a float image with values in [0, 1], got a maximum of {np.max(img)}"
        )
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    if mask.shape != img.shape[:2]:
        raise ValueError(f"mask must have the image's shape {img.shape[:2]}, got {mask.shape}")
    heatmap = _heatmap_bgr((255 * mask).astype(np.uint8), colormap)
    if use_rgb:
        heatmap = heatmap[..., ::-1]
    blend = (1 - image_weight) * (np.float32(heatmap) / 255) + image_weight * img
    blend = blend / np.max(blend)
    return np.asarray(255 * blend).astype(np.uint8)
