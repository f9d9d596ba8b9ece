"""Per-image CPU cost of each stage of an explain run, against the way it was done before.

One run on one machine measures, in CPU seconds of this process (``time.process_time``; one
PyTorch thread), each stage now and as it was done before reduced-size decoding and fast
writing; that earlier way is reproduced here as the baseline:

- **read**: a file to the model's 224 px view (resize 256, centre crop 224). Baseline: the whole
  image decoded (``read_image``), resized whole with Pillow's bilinear filter, then cropped. Now:
  ``read_view`` (JPEG decoded at a reduced size with ``draft``, one resize, the crop). Inputs: a
  4000x3000 (12 MP) phone-sized JPEG, smooth and with sensor noise (entropy decoding, which no
  reduction avoids, grows with the noise), a 500x375 JPEG and a 500x375 PNG. The mean absolute
  difference between the two views is printed too, and for the 12 MP files the *ceiling*: the
  time of a decode at 1/8 of the size alone, below which no libjpeg-based reading can go.
- **write**: one image's files from its explanation (ResNet-50, random weights, batch 8), for
  16 photographs: scikit-image's sample photos (astronaut, chelsea, coffee, rocket) at 500x375,
  each also mirrored and upside down. Baseline: colour maps by a matplotlib call per map,
  PNG pictures at Pillow's default level (6) and float32 maps. Now: the 256-entry colour
  table, JPEG pictures (quality 95, 4:4:4; or with ``--pictures png``, PNG level 1 with
  run-length matching), float16 maps with a float32 scale per map. For ``--format files`` with
  and without overlays and for Parquet rows (7x7 maps).
- **output**: bytes written per image in each case.
- **pictures**: one photograph's 224 px view and its overlay encoded in several ways: time,
  bytes and the error against the lossless picture.
- **explain**: ResNet-50 on one core (for scale; a GPU's rate is not measured here).

From the rates it derives how many CPU cores keep one GPU busy (the table in ``docs/ray.md``):
``cores = G x (t_read + t_write)``, with ``G`` a GPU's images/s. No GPU is measured here: ``G``
is a parameter, illustrated with timm's published inference rates on an RTX 4090 (see
``GPU_RATES``); explaining costs at least one inference pass, so real explain rates are lower
and the cores needed fewer.

Run: ``python benchmarks/pipeline_stages.py``; writes ``benchmarks/results/pipeline_stages.md``.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # measure this checkout, not an installed copy

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import gradcampp.images  # noqa: E402
import gradcampp.viz  # noqa: E402
from gradcampp.images import Preprocess, read_image, read_view  # noqa: E402
from gradcampp.recipe import ModelRecipe  # noqa: E402
from gradcampp.stages.explain import ExplainStage  # noqa: E402
from gradcampp.stages.settings import Settings  # noqa: E402
from gradcampp.stages.write import write_group  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline_stages.md"
N_IMAGES = 16  # explained once (two groups of 8), written REPEATS times in each way
REPEATS = 5
#: A GPU's images/s, from timm's published inference benchmark (RTX 4090, AMP, batch 1024,
#: PyTorch 2.4, CUDA 12.4: huggingface/pytorch-image-models,
#: results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv, ``infer_samples_per_sec`` at 224 px).
GPU_RATES = {"ResNet-50": 4217.6, "ViT-S/16": 7693.4}


def photo(width: int, height: int, seed: int, noise: float) -> np.ndarray:
    """A photo-like RGB image: smooth regions, sharp edges and ``noise`` (std, in levels)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 60), max(2, width // 60), 3), dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    edges = Image.fromarray(coarse[::-1]).resize((width, height), Image.Resampling.NEAREST)
    mask = (np.arange(width)[None, :] // max(1, width // 5) % 2).astype(bool)[..., None]
    mixed = np.where(mask, np.asarray(smooth), np.asarray(edges)).astype(np.float64)
    return np.clip(mixed + rng.normal(0.0, noise, mixed.shape), 0, 255).astype(np.uint8)


def old_view(pre: Preprocess, path: Path) -> np.ndarray:
    """The view as it was made before: full decode, the whole image resized, then cropped."""
    picture = Image.fromarray(read_image(path))
    height, width = pre.size
    scale = pre.resize / min(picture.width, picture.height)  # type: ignore[operator]
    scaled = (max(width, round(picture.width * scale)), max(height, round(picture.height * scale)))
    picture = picture.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    return np.asarray(picture.crop((left, top, left + width, top + height)))


def matplotlib_colorize(values: Any, cmap: str = "inferno") -> np.ndarray:
    """Colouring as it was done before: one matplotlib call per map."""
    import matplotlib

    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.asarray(np.asarray(matplotlib.colormaps[cmap](clipped))[..., :3], dtype=np.float32)


def photographs(count: int) -> list[np.ndarray]:
    """``count`` photographs of 500x375: scikit-image's sample photos, each as it is, mirrored,
    upside down and both."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    sized = [
        np.asarray(Image.fromarray(p).resize((500, 375), Image.Resampling.LANCZOS)) for p in photos
    ]
    variants = [lambda a: a, np.fliplr, np.flipud, lambda a: a[::-1, ::-1]]
    every = [np.ascontiguousarray(turn(p)) for turn in variants for p in sized]
    return every[:count]


@contextmanager
def earlier_writer() -> Iterator[None]:
    """Write as before: matplotlib colouring and Pillow's default PNG level."""
    colorize, png = gradcampp.viz.colorize, gradcampp.images.PICTURE_FORMATS["png"]
    gradcampp.viz.colorize = matplotlib_colorize  # type: ignore[assignment]
    gradcampp.images.PICTURE_FORMATS["png"] = (".png", "PNG", {})
    try:
        yield
    finally:
        gradcampp.viz.colorize = colorize  # type: ignore[assignment]
        gradcampp.images.PICTURE_FORMATS["png"] = png


def cpu_seconds(call: Callable[[], Any], repeats: int) -> float:
    """Median CPU time of ``call`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return statistics.median(times)


def paired(before: Callable[[], Any], now: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median CPU times of ``before`` and ``now``, measured alternately (load drifts cancel)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for call, spent in ((before, times[0]), (now, times[1])):
            start = time.process_time()
            call()
            spent.append(time.process_time() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def eighth_decode(path: Path) -> None:
    """Decode a JPEG at 1/8 of its size and nothing else: the least work a libjpeg decoder does
    (every coefficient is still entropy-decoded, so noisy files stay slow)."""
    with Image.open(path) as picture:
        picture.draft("RGB", (picture.width // 8, picture.height // 8))
        picture.load()


def read_rows(work: Path, pre: Preprocess) -> tuple[list[str], dict[str, float]]:
    cases = {
        "12 MP JPEG (4000x3000), smooth": ("big-smooth.jpg", photo(4000, 3000, 1, 2.0), 5),
        "12 MP JPEG (4000x3000), sensor noise": ("big-noisy.jpg", photo(4000, 3000, 2, 12.0), 5),
        "500x375 JPEG": ("small.jpg", photo(500, 375, 3, 4.0), 40),
        "500x375 PNG": ("small.png", photo(500, 375, 4, 4.0), 20),
    }
    rows, per_image = [], {}
    for label, (name, pixels, repeats) in cases.items():
        path = work / name
        Image.fromarray(pixels).save(path, quality=90)
        read_view(path, pre), old_view(pre, path)  # warm-up
        before, now = paired(
            lambda path=path: old_view(pre, path), lambda path=path: read_view(path, pre), repeats
        )
        difference = np.abs(read_view(path, pre).astype(int) - old_view(pre, path)).mean()
        rows.append(
            f"| read {label}, {path.stat().st_size / 1000:,.0f} kB | {1000 * before:.1f} | "
            f"{1000 * now:.1f} | "
            f"**{before / now:.1f}x** | {difference:.2f}/255 |"
        )
        per_image[label] = now
        if label.startswith("12 MP"):  # no JPEG reading can beat decoding at 1/8 alone
            floor = cpu_seconds(lambda path=path: eighth_decode(path), repeats)
            rows.append(
                f"| ceiling: decode at 1/8 alone, {label} | {1000 * before:.1f} | "
                f"{1000 * floor:.1f} | {before / floor:.1f}x | |"
            )
    return rows, per_image


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def write_rows(
    work: Path, loaded: Any, paths: list[Path], views: list[np.ndarray]
) -> tuple[list[str], list[str], dict[str, float], float]:
    modes = {
        "files with overlays (default)": {},
        "files with overlays, --pictures png": {"pictures": "png"},
        "files with overlays, --method both": {"methods": ("gradcampp", "gradcam")},
        "files, --no-overlays": {"overlays": False},
        "Parquet 7x7 maps, --no-overlays": {"overlays": False, "format": "parquet"},
    }
    rows, size_rows, per_image = [], [], {}
    explain_time = 0.0
    found_by_mode: dict[tuple[bool, tuple[str, ...]], list[Any]] = {}
    for label, options in modes.items():
        settings = Settings(batch_size=8, **options)
        key = (settings.layer_resolution, settings.methods)
        found: list[Any] = found_by_mode.get(key, [])
        if not found:  # maps at the input's size (files) or at the layer's (Parquet)
            explain_now = ExplainStage(loaded, settings)
            for g in range(0, N_IMAGES, 8):
                start = time.process_time()
                found.extend(explain_now(views[g : g + 8]))
                if not options:
                    explain_time += time.process_time() - start
            found_by_mode[key] = found
        writers = {}
        for way, map_dtype in (("before", "float32"), ("now", "float16")):
            earlier = {"pictures": "png"} if way == "before" else {}
            settings_way = Settings(batch_size=8, map_dtype=map_dtype, **{**options, **earlier})

            def write_all(
                way: str = way, settings_way: Settings = settings_way, found: list[Any] = found
            ) -> None:
                out = work / "out" / way
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                with earlier_writer() if way == "before" else nullcontext():
                    for g in range(0, N_IMAGES, 8):
                        group = [(paths[i], f"photo-{i:02d}", views[i]) for i in range(g, g + 8)]
                        part = out / "explanations.parquet" / f"part-{g}.parquet"
                        write_group(
                            group,
                            found[g : g + 8],
                            out,
                            settings_way,
                            loaded=loaded,
                            layer="layer4",
                            part=part,
                        )

            write_all()  # warm-up
            writers[way] = write_all
        seconds = paired(writers["before"], writers["now"], REPEATS)
        results = {
            way: (spent / N_IMAGES, folder_bytes(work / "out" / way) / N_IMAGES)
            for way, spent in zip(("before", "now"), seconds, strict=True)
        }
        (t_before, b_before), (t_now, b_now) = results["before"], results["now"]
        rows.append(
            f"| write {label} | {1000 * t_before:.1f} | {1000 * t_now:.1f} | "
            f"**{t_before / t_now:.1f}x** | |"
        )
        size_rows.append(
            f"| {label} | {b_before / 1000:.1f} | {b_now / 1000:.1f} | **{b_now / b_before:.2f}** |"
        )
        per_image[label] = t_now
    return rows, size_rows, per_image, explain_time / N_IMAGES


def picture_rows(view: np.ndarray, heat: np.ndarray) -> list[str]:
    """One row per encoding of ``view`` and of its overlay with ``heat``: the overlay's encoding
    time, both sizes and both errors against the lossless pictures (levels of 255)."""
    from gradcampp.viz import overlay

    png = gradcampp.images.PICTURE_FORMATS["png"][2]
    jpeg = gradcampp.images.PICTURE_FORMATS["jpeg"][2]
    ways = [
        ("PNG, Pillow's default (level 6), before", "PNG", {}),
        ("PNG level 1", "PNG", {"compress_level": 1}),
        ("PNG level 1, run-length matching (--pictures png)", "PNG", png),
        ("WebP lossless, fastest method", "WEBP", {"lossless": True, "method": 0}),
        ("JPEG quality 95, no chroma subsampling (default)", "JPEG", jpeg),
        ("JPEG quality 90", "JPEG", {"quality": 90}),
    ]
    pictures = {"view": view, "overlay": overlay(view, heat)}
    rows = []
    for label, fmt, options in ways:
        cells, seconds = [], 0.0
        for kind, picture in pictures.items():
            pil, buffer = Image.fromarray(picture), io.BytesIO()

            def encode(
                pil: Any = pil, buffer: io.BytesIO = buffer, fmt: str = fmt, options: dict = options
            ) -> None:
                buffer.seek(0)
                buffer.truncate()
                pil.save(buffer, format=fmt, **options)

            spent = cpu_seconds(encode, 20)
            seconds = spent if kind == "overlay" else seconds
            back = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=int)
            error = np.abs(back - picture)
            fidelity = "lossless" if not error.any() else f"{error.mean():.2f} / {error.max()}"
            cells.append((len(buffer.getvalue()) / 1000, fidelity))
        (view_kb, view_error), (overlay_kb, overlay_error) = cells
        rows.append(f"| {label} | {1000 * seconds:.2f} | {view_kb:.1f} | {overlay_kb:.1f} "
                    f"| {view_error} | {overlay_error} |")  # fmt: skip
    return rows


def main() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="gradcampp-stages-"))
    try:
        loaded = ModelRecipe("torchvision:resnet50").load()
        pre = loaded.preprocess
        read, read_time = read_rows(work, pre)
        paths = []
        for i, picture in enumerate(photographs(N_IMAGES)):
            path = work / f"photo-{i:02d}.jpg"
            Image.fromarray(picture).save(path, quality=90)
            paths.append(path)
        views = [read_view(p, pre) for p in paths]
        write, sizes, write_time, explain_time = write_rows(work, loaded, paths, views)
        grid = np.linspace(0, 3, 224)
        heat = np.maximum(np.sin(grid[:, None] * 2) * np.cos(grid[None, :] * 3), 0)
        pictures = picture_rows(views[0], heat.astype(np.float32))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    decode = read_time["500x375 JPEG"]
    cores = []
    for label, seconds in write_time.items():
        per_image = decode + seconds
        cells = " | ".join(f"{rate * per_image:.0f}" for rate in GPU_RATES.values())
        cores.append(f"| {label} | {1000 * per_image:.1f} | {1000 * per_image:.1f} | {cells} |")
    text = "\n".join(
        [
            "# Per-image CPU cost of each stage, before and now",
            "",
            "Command: `python benchmarks/pipeline_stages.py`. CPU seconds of one process"
            " (`time.process_time`, one PyTorch thread), median of repeated runs, both ways"
            " measured in the same run; the earlier way is reproduced by the script (full"
            " decode then resize; matplotlib colouring, Pillow's default PNG level, float32"
            f" maps). Load average after the run, this benchmark included: {load[0]:.1f} on"
            f" {os.cpu_count()} cores (above about 1.5, other jobs shared the cores: rates are"
            " then lower bounds, and the ratios are what to read).",
            "",
            "| stage | before, ms | now, ms | speed-up | view vs before (mean abs. diff.) |",
            "|---|---:|---:|---:|---:|",
            *read,
            *write,
            f"| explain, ResNet-50 on one core (batch 8) | | {1000 * explain_time:.0f} | | |",
            "",
            "| outputs (ResNet-50, 224 px, one method unless said) | before, kB/image |"
            " now, kB/image |"
            " now / before |",
            "|---|---:|---:|---:|",
            *sizes,
            "",
            "One photograph's 224 px view (astronaut) and its overlay, each encoded each way;"
            " error against the lossless picture in levels of 255, mean / largest:",
            "",
            "| encoding | ms (overlay) | view kB | overlay kB | view error | overlay error |",
            "|---|---:|---:|---:|---|---|",
            *pictures,
            "",
            "CPU cores that keep one GPU busy: `cores = G x (t_read + t_write)` per image, with"
            " `t_read` a 500x375 JPEG's read above and `G` the GPU's images/s. `G` was not"
            " measured here (no GPU): the columns take timm's published inference rates on an"
            " RTX 4090 (ResNet-50 4,218/s, ViT-S/16 7,693/s at 224 px, AMP, batch 1024;"
            " pytorch-image-models `results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv`)."
            " Explaining costs at least one inference pass, so a GPU explains fewer images a"
            " second and needs fewer cores; scale the columns by your own `G / 1000` from the"
            " CPU ms per image.",
            "",
            "| outputs | CPU ms per image (read + write) | cores per 1,000 images/s |"
            + "".join(
                f" cores for {name} at G = {rate:,.0f}/s |" for name, rate in GPU_RATES.items()
            ),
            "|---|---:|---:|" + "---:|" * len(GPU_RATES),
            *cores,
        ]
    )
    RESULTS.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
