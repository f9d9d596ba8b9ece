"""Reading a file straight to the model's view: the same view as a full decode, less work.

The reference is the way views were made before reduced-size decoding: the whole image decoded
(``read_image``), resized whole with Pillow's bilinear filter, then centre-cropped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image

from gradcampp.images import ImageReadError, Preprocess, read_image, read_view

CROP = Preprocess(size=(224, 224), resize=256)  # torchvision's classification recipe
STRAIGHT = Preprocess(size=(96, 128))  # resized straight to 96x128, no crop


def full_decode_view(path: Path, pre: Preprocess) -> np.ndarray:
    """The view as it was made before: full decode, resize the whole image, crop."""
    picture = Image.fromarray(read_image(path))
    height, width = pre.size
    bilinear = Image.Resampling.BILINEAR
    if pre.resize is None:
        return np.asarray(picture.resize((width, height), bilinear))
    scale = pre.resize / min(picture.width, picture.height)
    scaled = (max(width, round(picture.width * scale)), max(height, round(picture.height * scale)))
    picture = picture.resize(scaled, bilinear)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return np.asarray(picture.crop((left, top, left + width, top + height)))


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like RGB image: smooth shapes, sharp edges and sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    edges = np.asarray(
        Image.fromarray(coarse[::-1]).resize((width, height), Image.Resampling.NEAREST)
    )
    mask = (np.arange(width)[None, :] // max(1, width // 7) % 2).astype(bool)[..., None]
    mixed = np.where(mask, smooth, edges).astype(np.float64)
    return np.clip(mixed + rng.normal(0.0, 12.0, mixed.shape), 0, 255).astype(np.uint8)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


SIZES = [(64, 48), (500, 375), (1200, 900), (3000, 2000)]


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("pre", [CROP, STRAIGHT], ids=["crop", "straight"])
def test_jpeg_view_within_two_levels_of_the_full_decode(tmp_path, width, height, pre):
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo(width, height, seed=width)).save(path, quality=90)
    view = read_view(path, pre)
    assert view.shape == (*pre.size, 3)
    assert mean_difference(view, full_decode_view(path, pre)) <= 2.0


@pytest.mark.parametrize(("width", "height"), SIZES[:3])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_png_view_equals_the_full_decode(tmp_path, width, height, mode):
    path = tmp_path / "picture.png"
    Image.fromarray(photo(width, height, seed=3)).convert(mode).save(path)
    for pre in (CROP, STRAIGHT):
        # no reduced decoding for PNG: one resize of the crop gives the same pixels
        np.testing.assert_array_equal(read_view(path, pre), full_decode_view(path, pre))


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize(("width", "height"), [(400, 300), (2400, 1600)])
def test_exif_rotated_jpeg_view(tmp_path, orientation, width, height):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(photo(width, height, seed=orientation)).save(path, quality=92, exif=exif)
    for pre in (CROP, STRAIGHT):
        reference = full_decode_view(path, pre)
        assert mean_difference(read_view(path, pre), reference) <= 2.0
    upright = read_image(path)  # turned by the orientation: width and height exchanged for 6, 8
    assert upright.shape[:2] == ((width, height) if orientation in (6, 8) else (height, width))


def test_large_jpeg_is_decoded_at_a_reduced_size(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    sizes = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    path = tmp_path / "large.jpg"
    Image.fromarray(photo(2400, 1600, seed=1)).save(path, quality=90)
    read_view(path, CROP)
    # 256 px shorter side, twice that at least: 1/2 of 2400x1600 (1/4 would give 400 < 512)
    assert sizes == [(1200, 800)]


def test_sixteen_bit_and_float_views(tmp_path):
    ramp = np.linspace(0, 65535, 300 * 200).round().astype(np.uint16).reshape(200, 300)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    np.testing.assert_array_equal(
        read_view(tmp_path / "ramp16.png", CROP), full_decode_view(tmp_path / "ramp16.png", CROP)
    )
    wide = (np.linspace(-3.0, 5.0, 300 * 200, dtype=np.float32)).reshape(200, 300)
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tif")
    notes: list[str] = []
    view = read_view(tmp_path / "wide.tif", STRAIGHT, notes=notes)
    np.testing.assert_array_equal(view, full_decode_view(tmp_path / "wide.tif", STRAIGHT))
    assert notes == ["wide.tif: F values in [-3, 5] scaled from their own minimum and maximum "
                     "to the full range"]  # fmt: skip


def test_guards_still_apply(tmp_path):
    path = tmp_path / "thin.jpg"
    Image.fromarray(np.zeros((10, 600, 3), np.uint8)).save(path)
    with pytest.raises(ImageReadError, match="aspect ratio over 50:1"):
        read_view(path, CROP)
    with pytest.raises(ImageReadError, match="more than the limit of 1,000"):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "many.jpg")
        read_view(tmp_path / "many.jpg", CROP, max_pixels=1000)


MEMORY_RUN = r"""
import json, resource, sys
import numpy as np
from PIL import Image
from gradcampp.images import Preprocess, read_view

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

pre = Preprocess(size=(224, 224), resize=256)
read_view(sys.argv[2], pre)  # a small image first: every code path is loaded
limit = status("VmSize:") + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
view = read_view(sys.argv[1], pre)
print("RESULT " + json.dumps([int(view[..., 0].sum()), status("VmHWM:")]))
"""


@pytest.mark.slow
def test_sixteen_bit_grey_png_decodes_within_an_eight_bit_budget(tmp_path):
    # 10000 x 9999 16-bit grey: 200 MB decoded. The child's address space may grow by 400 MB
    # after reading a small image: about what the same image as 8-bit RGB needs (300 MB decoded,
    # plus the view), a tenth of the 4 GB that converting through float64 copies took.
    values = np.zeros((9999, 10000), np.uint16)
    values[::7, ::3] = 40000
    Image.fromarray(values).save(tmp_path / "g16.png", compress_level=1)
    Image.fromarray(np.zeros((30, 30), np.uint16)).save(tmp_path / "small.png")
    del values
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_RUN,
            str(tmp_path / "g16.png"),
            str(tmp_path / "small.png"),
            str(400 * 2**20),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-2000:]
    total, _ = json.loads(lines[0][len("RESULT ") :])
    assert total > 0  # the bright dots survive the 16 -> 8 bit scaling and the resize
