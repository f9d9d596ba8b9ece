"""Per-image cost of each stage of an explain run on one CPU core: decode, explain, write.

The figures behind the throughput model in ``docs/ray.md``: how many images per second one core
decodes (a 500x375 JPEG, the typical ImageNet photo, read and reduced to the 224 px view), one
core explains with ResNet-50 (random weights, batch 8), and one core writes (``--format files``
with overlays, without overlays, and Parquet rows at the layer's resolution).

Run: ``python benchmarks/pipeline_stages.py``; writes ``benchmarks/results/pipeline_stages.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gradcampp.images import read_view
from gradcampp.recipe import ModelRecipe
from gradcampp.stages.explain import ExplainStage
from gradcampp.stages.settings import Settings
from gradcampp.stages.write import write_group

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline_stages.md"


def per_second(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-9)


def main() -> None:
    torch.set_num_threads(1)
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="gradcampp-stages-"))
    rng = np.random.default_rng(0)
    n = 32
    paths = []
    for i in range(n):  # smooth random photos, JPEG quality 90
        low = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        picture = Image.fromarray(low).resize((500, 375), Image.Resampling.BICUBIC)
        path = work / f"photo-{i:02d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
    recipe = ModelRecipe("torchvision:resnet50")
    loaded = recipe.load()
    start = time.perf_counter()
    views = [read_view(p, loaded.preprocess) for p in paths]
    decode = per_second(n, time.perf_counter() - start)
    rows = [f"| decode: 500x375 JPEG -> 224 px view | {decode:.0f} |"]
    sizes: list[str] = []
    parse = 0.0
    for label, settings in (
        ("explain + write, files with overlays", Settings(batch_size=8)),
        ("explain + write, files, --no-overlays", Settings(batch_size=8, overlays=False)),
        (
            "explain + write, Parquet 7x7 maps",
            Settings(batch_size=8, overlays=False, format="parquet"),
        ),
    ):
        explain = ExplainStage(loaded, settings)
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        explain(views[:8])  # warm-up
        explain_time = write_time = 0.0
        for g in range(0, n, 8):
            group = [(paths[i], f"photo-{i:02d}", views[i]) for i in range(g, g + 8)]
            start = time.perf_counter()
            found = explain(views[g : g + 8])
            explain_time += time.perf_counter() - start
            start = time.perf_counter()
            part = out / "explanations.parquet" / f"part-{g}.parquet"
            write_group(group, found, out, settings, loaded=loaded, layer=explain.layer, part=part)
            write_time += time.perf_counter() - start
        rows.append(f"| {label}: explain | {per_second(n, explain_time):.2f} |")
        rows.append(f"| {label}: write | {per_second(n, write_time):.0f} |")
        for kind, pattern in (
            (".npy maps", "*.npy"),
            ("PNG pictures", "*.png"),
            (".json records", "photo-*.json"),
            ("Parquet rows", "explanations.parquet/*.parquet"),
        ):
            files = list(out.glob(pattern))
            if files:
                size = sum(f.stat().st_size for f in files) / n / 1000
                sizes.append(f"| {label} | {kind} | {size:.1f} |")
        if settings.format == "files":
            texts = [f.read_text() for f in out.glob("photo-*.json")]
            start = time.perf_counter()
            for _ in range(20):
                for text in texts:
                    json.loads(text)
            parse = per_second(20 * len(texts), time.perf_counter() - start)
    shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    text = "\n".join(
        [
            "# Per-image cost of each stage (one CPU core)",
            "",
            "Command: `python benchmarks/pipeline_stages.py`. ResNet-50 with random weights, "
            "224 px, batch 8, one PyTorch thread; 32 images. The cores were shared with other "
            f"jobs (load average {load[0]:.1f} on {os.cpu_count()} cores): treat the rates as "
            "lower bounds.",
            "",
            "| stage | images/s on one core |",
            "|---|---:|",
            *rows,
            f"| driver: parse one image's JSON record | {parse:.0f} |",
            "",
            "| outputs | file kind | kB per image |",
            "|---|---|---:|",
            *sizes,
        ]
    )
    RESULTS.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
