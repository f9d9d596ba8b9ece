"""Image files: finding them, reading them, preparing them for a model, writing PNGs.

Reading and writing need Pillow (``pip install "gradcampp[cli]"``), imported when first used.

Preprocessing turns a ``uint8`` RGB image into what a model takes, in two steps:

1. the *view*: the image as the model sees it, ``uint8`` ``(H, W, 3)``: either resized so that its
   shorter side is ``resize`` and centre-cropped to ``crop`` (torchvision's classification
   transforms), or resized straight to ``size``;
2. the *input*: ``(view / 255 - mean) / std`` per channel, float32, channels first ``(3, H, W)``
   or channels last ``(H, W, 3)``.

Maps are computed at the view's resolution, so overlays are drawn on the view.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(OSError):
    """An image file that is missing, unreadable or corrupt.

    Attributes:
        path: the file; reason: what is wrong with it (the message is ``"path: reason"``).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def _pil() -> object:
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - exercised only without Pillow
        raise ImportError(
            'reading and writing images needs Pillow: pip install "gradcampp[cli]"'
        ) from error
    return Image


def find_images(paths: Iterable[str | os.PathLike[str]], exclude: Path | None = None) -> list[Path]:
    """The image files named by ``paths``, in order, without duplicates.

    A file is taken as it is (whatever its suffix: a file that is no image is reported when read);
    a directory contributes its files with an image suffix (``IMAGE_SUFFIXES``), searched
    recursively and sorted, skipping hidden entries and anything under ``exclude`` (the output
    directory). A path that does not exist is kept, so that reading it reports the problem.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            add(path)
            continue
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(path).parts
            if any(part.startswith(".") for part in relative):
                continue
            if excluded is not None and file.resolve().is_relative_to(excluded):
                continue
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                add(file)
    return found


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at ``path`` as ``uint8`` RGB ``(H, W, 3)`` (grey and alpha converted).

    Raises:
        ImageReadError: when the file is missing, is not an image, or is truncated/corrupt.
    """
    image_module = _pil()
    try:
        from PIL import ImageOps

        with image_module.open(path) as image:  # type: ignore[attr-defined]
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB")  # photos stored rotated
    except FileNotFoundError as error:
        raise ImageReadError(path, "no such file") from error
    except IsADirectoryError as error:
        raise ImageReadError(path, "is a directory") from error
    except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError, ...
        detail = str(error).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
        raise ImageReadError(
            path, f"not a readable image ({detail or type(error).__name__})"
        ) from error
    return np.asarray(rgb, dtype=np.uint8)


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write ``rgb`` (``uint8``, or floats in ``[0, 1]``) ``(H, W, 3)`` as a PNG file."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    _pil().fromarray(array).save(path, format="PNG")  # type: ignore[attr-defined]


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or int(v) < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs (see the module docstring).

    Attributes:
        size: ``(H, W)`` of the view.
        resize: shorter side before a centre crop to ``size``; None resizes straight to ``size``.
        mean, std: per-channel statistics, applied to values in ``[0, 1]``.
        channels_last: inputs ``(H, W, 3)`` (Keras) instead of ``(3, H, W)`` (PyTorch).
    """

    size: tuple[int, int]
    resize: int | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels_last: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size, "size"))
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"{name} needs 3 values (R, G, B), got {len(values)}")
            object.__setattr__(self, name, values)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")

    def view(self, image: np.ndarray) -> np.ndarray:
        """``uint8`` ``(H, W, 3)`` image -> the ``uint8`` view ``(*size, 3)`` the model sees."""
        image_module = _pil()
        pil = image_module.fromarray(np.asarray(image, dtype=np.uint8))  # type: ignore[attr-defined]
        bilinear = image_module.Resampling.BILINEAR  # type: ignore[attr-defined]
        height, width = self.size
        if self.resize is None:
            pil = pil.resize((width, height), bilinear)
        else:
            scale = self.resize / min(pil.width, pil.height)
            scaled = (max(width, round(pil.width * scale)), max(height, round(pil.height * scale)))
            pil = pil.resize(scaled, bilinear)
            left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
            pil = pil.crop((left, top, left + width, top + height))
        return np.asarray(pil, dtype=np.uint8)

    def input(self, view: np.ndarray) -> np.ndarray:
        """The ``uint8`` view ``(H, W, 3)`` -> float32 input ``(3, H, W)`` or ``(H, W, 3)``."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        x = (view.astype(np.float32) / 255.0 - mean) / std
        return x if self.channels_last else np.ascontiguousarray(np.moveaxis(x, -1, 0))


def read_batches(
    paths: Sequence[Path], batch_size: int
) -> Iterator[list[tuple[Path, np.ndarray | ImageReadError]]]:
    """Read ``paths`` in groups of ``batch_size``: each entry is its image or the read error."""
    for start in range(0, len(paths), batch_size):
        group: list[tuple[Path, np.ndarray | ImageReadError]] = []
        for path in paths[start : start + batch_size]:
            try:
                group.append((path, read_image(path)))
            except ImageReadError as error:
                group.append((path, error))
        yield group
