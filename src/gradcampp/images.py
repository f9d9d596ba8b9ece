"""Image files: finding them, reading them, preparing them for a model, writing PNGs.

Reading and writing need Pillow (``pip install ".[cli]"`` in a gradcampp checkout), imported
when first used.

Preprocessing turns a ``uint8`` RGB image into what a model takes, in two steps:

1. the *view*: the image as the model sees it, ``uint8`` ``(H, W, 3)``: either resized so that its
   shorter side is ``resize`` and centre-cropped to ``crop`` (torchvision's classification
   transforms), or resized straight to ``size``;
2. the *input*: ``(view / 255 - mean) / std`` per channel, float32, channels first ``(3, H, W)``
   or channels last ``(H, W, 3)``.

Maps are computed at the view's resolution, so overlays are drawn on the view.

``read_view`` reads a file and reduces it to the view at once, so that a batch holds views and
never full-resolution images. Before any pixel is decoded, the size in the file's header is
checked against ``MAX_PIXELS`` and ``MAX_ASPECT``; only regular files are opened. 16-bit and float
images are scaled to 8 bits, not clipped.

Reading at the speed of the decoder: a JPEG much larger than the view is decoded at a reduced size
(libjpeg scales the DCT by 1/2, 1/4 or 1/8, Pillow's ``draft``), never below ``DRAFT_MARGIN`` times
the resized image (within 2/255, mean absolute difference, of a full decode), then resized
once and cropped; other images give the same pixels as before. Grey images are resized as grey.
A 16-bit or float image is scaled to 8 bits strip by strip (``STRIP_PIXELS`` at a time),
so its peak memory is its decoded size plus one 8-bit copy, not several float64 copies.
"""

from __future__ import annotations

import os
import stat
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradcampp._files import write_atomically

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
            'reading and writing images needs Pillow: pip install ".[cli]" in a gradcampp checkout'
        ) from error
    return Image


def _output_subtree(folder: Path, excluded: Path | None) -> bool:
    """Whether ``excluded`` (the output directory) lies strictly inside ``folder``."""
    if excluded is None:
        return False
    root = folder.resolve()
    return excluded != root and excluded.is_relative_to(root)


def find_images(
    paths: Iterable[str | os.PathLike[str]],
    exclude: Path | None = None,
    skip: Iterable[Path] = (),
) -> list[Path]:
    """The image files named by ``paths``, in order, without duplicates.

    A file is taken as it is (whatever its suffix: a file that is no image is reported when read);
    a directory contributes its files with an image suffix (``IMAGE_SUFFIXES``), searched
    recursively and sorted, skipping hidden entries, the files in ``skip`` (results of an earlier
    run) and, when ``exclude`` (the output directory) lies inside the directory, everything under
    ``exclude``. An output directory equal to an input directory is searched like any other. A
    path that does not exist is kept, so that reading it reports the problem.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None
    skipped = {Path(file).resolve() for file in skip}

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
        leave_out = _output_subtree(path, excluded)
        for file in sorted(path.rglob("*")):
            relative = file.relative_to(path).parts
            if any(part.startswith(".") for part in relative):
                continue
            key = file.resolve()
            if key in skipped or (leave_out and key.is_relative_to(excluded)):  # type: ignore[arg-type]
                continue
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                add(file)
    return found


MAX_PIXELS = 100_000_000  # a 12000x8000 photo; decoded as RGB that is 300 MB
MAX_ASPECT = 50  # longer side / shorter side


def _check_header(path: str | os.PathLike[str], width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageReadError(path, f"the image is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageReadError(
            path,
            f"{width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; shrink the image first",
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageReadError(
            path,
            f"{width}x{height} pixels: an aspect ratio over {MAX_ASPECT}:1 leaves the model "
            "nothing it can see; crop the image first",
        )


STRIP_PIXELS = 1 << 20  # pixels converted at a time from 16-bit or float to 8 bits
DRAFT_MARGIN = 2  # a JPEG is decoded at no less than this many times the resized image's size
_HIGH_BIT_DEPTH = ("I", "F")


def _strips(image: object, rows: int, dtype: type = np.float64) -> Iterator[tuple[int, np.ndarray]]:
    """``(top, rows as dtype)`` of a Pillow image, ``rows`` rows at a time."""
    width, height = image.size  # type: ignore[attr-defined]
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        yield top, np.asarray(image.crop(box), dtype=dtype)  # type: ignore[attr-defined]


def _grey8(image: object, path: str | os.PathLike[str], notes: list[str]) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey Pillow image as ``uint8`` ``(H, W)``, scaled.

    16-bit grey is divided by 65535; 32-bit integer grey by 65535 when its values fit 16 bits;
    float grey in ``[0, 1]`` is kept; other integer or float data are scaled from their own
    minimum ``lo`` and maximum ``hi`` to ``[0, 1]`` (``(v - lo) / (hi - lo)``), and a note says so.
    Then ``rint(clip(unit, 0, 1) * 255)``. Done ``STRIP_PIXELS`` at a time, so that memory holds
    the decoded image, the ``uint8`` result and one strip, never a float copy of the image.
    """
    mode = image.mode  # type: ignore[attr-defined]
    width, height = image.size  # type: ignore[attr-defined]
    rows = max(1, STRIP_PIXELS // max(width, 1))
    low, high = 0.0, 0.0
    if not mode.startswith("I;16"):  # the range decides the scaling: one pass to find it
        lows, highs = [], []
        for _, values in _strips(image, rows):
            if values.size and not np.isfinite(values).all():
                raise ImageReadError(path, "the image holds NaN or infinite values")
            if values.size:
                lows.append(float(values.min()))
                highs.append(float(values.max()))
        low, high = (min(lows), max(highs)) if lows else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0.0 and high <= 65535.0):
        offset, divisor = 0.0, 65535.0
    elif mode == "F" and low >= 0.0 and high <= 1.0:
        offset, divisor = 0.0, 1.0
    else:
        offset, divisor = low, (high - low if high > low else 0.0)
        notes.append(
            f"{Path(path).name}: {mode} values in [{low:g}, {high:g}] scaled from their own "
            "minimum and maximum to the full range"
        )
    grey = np.zeros((height, width), dtype=np.uint8)
    if divisor == 65535.0:  # rint(v / 65535 * 255) = rint(v / 257), never a tie: in integers
        for top, values in _strips(image, rows, np.int64):
            grey[top : top + values.shape[0]] = (values + 128) // 257
        return grey
    if divisor == 0.0:
        return grey
    for top, values in _strips(image, rows):
        unit = values if (offset, divisor) == (0.0, 1.0) else (values - offset) / divisor
        grey[top : top + values.shape[0]] = np.rint(np.clip(unit, 0.0, 1.0) * 255.0)
    return grey


def _to_rgb8(image: object, path: str | os.PathLike[str], notes: list[str]) -> np.ndarray:
    """A decoded Pillow image as ``uint8`` RGB, high-bit-depth and float data scaled, not clipped.

    Integer (``I``, ``I;16``) and float (``F``) grey images go through ``_grey8``; everything
    else through Pillow's conversion to RGB (8-bit colour images, palettes, alpha, CMYK, 1-bit).
    """
    mode = image.mode  # type: ignore[attr-defined]
    if not mode.startswith(_HIGH_BIT_DEPTH):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)  # type: ignore[attr-defined]
    return np.repeat(_grey8(image, path, notes)[..., None], 3, axis=-1)


def _checked_file(path: str | os.PathLike[str]) -> None:
    """Raise ImageReadError unless ``path`` is a regular file (a FIFO or device could block)."""
    try:
        info = os.stat(path)
    except FileNotFoundError as error:
        raise ImageReadError(path, "no such file") from error
    except OSError as error:
        raise ImageReadError(path, f"cannot open it ({error.strerror or error})") from error
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(path, "is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(path, "not a regular file (a pipe, socket or device)")


@contextmanager
def _decoding(path: str | os.PathLike[str], max_pixels: int) -> Iterator[object]:
    """Pillow's ``Image`` module, with Pillow's errors turned into ``ImageReadError``."""
    image_module = _pil()
    try:
        with warnings.catch_warnings():
            # the header check applies gradcampp's own limit, with a clearer message
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)  # type: ignore[attr-defined]
            yield image_module
    except ImageReadError:
        raise
    except image_module.DecompressionBombError as error:  # type: ignore[attr-defined]
        raise ImageReadError(
            path, f"more than the limit of {max_pixels:,} pixels; shrink the image first ({error})"
        ) from error
    except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError, ...
        text = str(error)
        for form in (repr(str(path)), f"'{path}'", str(path)):
            text = text.replace(form, "")
        detail = text.strip(" :") or type(error).__name__
        raise ImageReadError(path, f"not a readable image ({detail})") from error


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    notes: list[str] | None = None,
) -> np.ndarray:
    """The image at ``path`` as ``uint8`` RGB ``(H, W, 3)`` (grey and alpha converted).

    High-bit-depth and float images are scaled to 8 bits, not clipped (see ``_to_rgb8``); a
    note on such scaling is appended to ``notes``. Only regular files are opened (a FIFO or a
    device would block or never end), and the size in the file's header is checked before any
    pixel is decoded.

    Raises:
        ImageReadError: when the file is missing, not a regular file, not an image, truncated or
            corrupt, has more than ``max_pixels`` pixels or an aspect ratio over ``MAX_ASPECT``.
    """
    _checked_file(path)
    with _decoding(path, max_pixels) as image_module:
        from PIL import ImageOps

        with image_module.open(path) as image:  # type: ignore[attr-defined]
            _check_header(path, image.width, image.height, max_pixels)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            rgb = _to_rgb8(image, path, notes if notes is not None else [])
    return rgb


#: zlib level 1 with run-length matching (``Z_RLE``): lossless like every PNG, about 3x faster
#: to encode than Pillow's default (level 6) and about as small on photographs and overlays,
#: whose PNG filters leave short runs (``benchmarks/pipeline_stages.py`` measures both).
PNG_OPTIONS: dict[str, int] = {"compress_level": 1, "compress_type": zlib.Z_RLE}


#: The formats of the pictures a run writes (``--pictures``): file suffix, Pillow format and
#: encoder options. JPEG at quality 95 without chroma subsampling (4:4:4, so the colour map's hues
#: stay sharp) takes about a third of a PNG's bytes and a tenth of its encoding time, within
#: about 1.5 levels of 255 on average; PNG is lossless (``benchmarks/pipeline_stages.py``).
PICTURE_FORMATS: dict[str, tuple[str, str, dict[str, int]]] = {
    "jpeg": (".jpg", "JPEG", {"quality": 95, "subsampling": 0}),
    "png": (".png", "PNG", PNG_OPTIONS),
}
DEFAULT_PICTURES = "jpeg"


def check_pictures(pictures: str) -> str:
    """``pictures`` if it is a key of ``PICTURE_FORMATS``, else a ValueError naming them."""
    if pictures not in PICTURE_FORMATS:
        raise ValueError(f"pictures must be one of {tuple(PICTURE_FORMATS)}, got {pictures!r}")
    return pictures


def save_picture(path: str | os.PathLike[str], rgb: np.ndarray, pictures: str = "png") -> None:
    """Write ``rgb`` (``uint8``, or floats in ``[0, 1]``) ``(H, W, 3)`` as a picture file.

    Encoded as ``PICTURE_FORMATS[pictures]`` says (``"png"``: lossless). The file is written
    under a temporary name and renamed onto ``path`` (``_files``): a symbolic link at ``path``
    is replaced, never written through.
    """
    _, fmt, options = PICTURE_FORMATS[check_pictures(pictures)]
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    picture = _pil().fromarray(array)  # type: ignore[attr-defined]
    write_atomically(path, lambda file: picture.save(file, format=fmt, **options))


def save_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write ``rgb`` as a lossless PNG file (:func:`save_picture`)."""
    save_picture(path, rgb, "png")


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
        tiny = float(np.finfo(np.float32).tiny)  # inputs are divided by std in float32
        if any(not tiny <= s <= float(np.finfo(np.float32).max) for s in self.std):
            raise ValueError(
                f"std values must be positive and normal numbers in float32 (at least {tiny:.3g}; "
                f"a smaller one is 0 there, and dividing by it gives Inf), got {self.std}"
            )

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """For an image of ``width`` x ``height``: the resized size ``(w, h)`` and the crop's
        top-left corner ``(left, top)`` in it (``(0, 0)`` and ``size`` without a crop)."""
        out_h, out_w = self.size
        if self.resize is None:
            return (out_w, out_h), (0, 0)
        scale = self.resize / min(width, height)
        scaled = (max(out_w, round(width * scale)), max(out_h, round(height * scale)))
        return scaled, ((scaled[0] - out_w) // 2, (scaled[1] - out_h) // 2)

    def view_of(
        self, picture: object, full_size: tuple[int, int] | None = None, reduction: float = 1.0
    ) -> np.ndarray:
        """A Pillow image (``"RGB"`` or ``"L"``) -> the ``uint8`` view ``(*size, 3)``.

        Args:
            picture: the decoded image, possibly decoded at a reduced size.
            full_size: the image's full ``(width, height)``; None: ``picture``'s own size.
            reduction: ``picture``'s scale relative to the full image (``1/s`` for a JPEG
                decoded at ``1/s`` of its size: full-image coordinate ``u`` is ``u * reduction``
                in ``picture``).

        One bilinear resize to the resized size, then the crop: exactly torchvision's order, and
        for a full image the same pixels as before reduced decoding existed.
        """
        image_module = _pil()
        full_w, full_h = full_size if full_size is not None else picture.size  # type: ignore[attr-defined]
        scaled, (left, top) = self.geometry(full_w, full_h)
        out_h, out_w = self.size
        box = (0.0, 0.0, full_w * reduction, full_h * reduction)
        bilinear = image_module.Resampling.BILINEAR  # type: ignore[attr-defined]
        resized = picture.resize(scaled, bilinear, box=box)  # type: ignore[attr-defined]
        if scaled != (out_w, out_h):
            resized = resized.crop((left, top, left + out_w, top + out_h))
        array = np.asarray(resized, dtype=np.uint8)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        return array

    def view(self, image: np.ndarray) -> np.ndarray:
        """``uint8`` ``(H, W, 3)`` image -> the ``uint8`` view ``(*size, 3)`` the model sees.

        With a centre crop the image is resized so that its shorter side is ``resize``, then
        cropped, exactly as torchvision's transforms do (``view_of``).
        """
        pil = _pil().fromarray(np.asarray(image, dtype=np.uint8))  # type: ignore[attr-defined]
        return self.view_of(pil)

    def input(self, view: np.ndarray) -> np.ndarray:
        """The ``uint8`` view ``(H, W, 3)`` -> float32 input ``(3, H, W)`` or ``(H, W, 3)``."""
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        x = (view.astype(np.float32) / 255.0 - mean) / std
        return x if self.channels_last else np.ascontiguousarray(np.moveaxis(x, -1, 0))


_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that exchange width and height


def _draft(image: object, preprocess: Preprocess, full: tuple[int, int]) -> float:
    """Ask a JPEG decoder for a reduced size when the view is much smaller; the reduction.

    The decoder scales by ``1/s``, ``s`` in 8, 4, 2, the largest that keeps the decoded image at
    least ``DRAFT_MARGIN`` times the resized one (``Preprocess.geometry``) on both axes. Returns
    ``1/s`` (1.0 for other formats and for images that are not much larger than the view).
    """
    if getattr(image, "format", None) not in ("JPEG", "MPO"):
        return 1.0
    (scaled_w, scaled_h), _ = preprocess.geometry(*full)
    want = (scaled_w * DRAFT_MARGIN, scaled_h * DRAFT_MARGIN)
    stored_w, stored_h = image.size  # type: ignore[attr-defined]
    if (stored_w, stored_h) != full:  # the file holds the picture turned by 90 degrees
        want = (want[1], want[0])
    if stored_w < 2 * want[0] or stored_h < 2 * want[1]:
        return 1.0
    drafted = image.draft(None, want)  # type: ignore[attr-defined]
    if drafted is None:
        return 1.0
    return float(drafted[1][2]) / stored_w


def read_view(
    path: str | os.PathLike[str],
    preprocess: Preprocess,
    *,
    max_pixels: int = MAX_PIXELS,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Read the image at ``path`` and reduce it at once to ``preprocess``'s ``uint8`` view.

    Only the view ``(*preprocess.size, 3)`` outlives the call, so a batch holds views, never
    full-resolution images. A JPEG much larger than the view is decoded at a reduced size
    (``_draft``) and resized once (``Preprocess.view_of``);
    grey images are resized as grey, 16-bit and float images converted to 8 bits strip by strip
    (``_grey8``). The view is within about 1/255 (mean absolute difference) of
    ``preprocess.view(read_image(path))``, and equal to it for images that are not drafted.
    Raises ``ImageReadError`` as ``read_image`` does, and also when preprocessing fails on the
    image.
    """
    _checked_file(path)
    with _decoding(path, max_pixels) as image_module:
        from PIL import ImageOps

        with image_module.open(path) as image:  # type: ignore[attr-defined]
            _check_header(path, image.width, image.height, max_pixels)
            orientation = image.getexif().get(0x0112)
            full = (image.width, image.height)
            if orientation in _SWAPPED:
                full = (image.height, image.width)
            reduction = _draft(image, preprocess, full)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            mode = image.mode
            if mode.startswith(_HIGH_BIT_DEPTH):
                grey = _grey8(image, path, notes if notes is not None else [])
                picture = image_module.fromarray(grey)  # type: ignore[attr-defined]
            elif mode in ("L", "RGB"):
                picture = image
            else:
                picture = image.convert("RGB")
            try:
                return preprocess.view_of(picture, full, reduction)
            except (ValueError, OSError, MemoryError) as error:
                raise ImageReadError(
                    path, f"cannot resize it to the model's view ({error})"
                ) from error
