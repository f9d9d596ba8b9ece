"""Throughput of ``gradcampp explain`` on the local engine and on Ray with 1 and 2 workers.

Every configuration runs the same job (default outputs: ``.npy`` maps, ``.json`` records,
overlays, ``predictions.csv``, the report) on generated shape images, with one PyTorch thread per
model (the local engine's process, or each Ray worker). Ray is started once before the timed runs
(its start-up, about 10-20 s here, is reported apart). Two rates per run:

- ``end-to-end``: images / wall time of the whole job (Ray: actors starting and loading the
  model included);
- ``steady``: images after the first group / time between the first and the last ``NAME.json``
  written (the pipeline's rate once it runs).

Run: ``python benchmarks/ray_throughput.py [--demo-images N] [--resnet-images N]``; writes
``benchmarks/results/ray_throughput.md``.
"""

from __future__ import annotations

import os

# one thread per model everywhere: PyTorch (set below), and the BLAS/OpenMP pools of this process
# and of the Ray workers it starts (they inherit the environment)
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gradcampp.demo import generate_shapes  # noqa: E402
from gradcampp.engines import run_job  # noqa: E402
from gradcampp.images import save_png  # noqa: E402
from gradcampp.recipe import ModelRecipe  # noqa: E402
from gradcampp.stages.settings import Settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ray_throughput.md"


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    batch = generate_shapes(n, seed=3, size=size)
    paths = []
    for i, image in enumerate(batch.images):
        path = folder / f"img-{i:04d}.png"
        save_png(path, np.moveaxis(image, 0, -1))
        paths.append(path)
    return paths


def timed_run(recipe, paths, out, settings, engine, **options) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = run_job(recipe, paths, out, settings, engine=engine, progress=False, **options)
    wall = time.perf_counter() - start
    assert len(result.records) == len(paths) and not result.skipped
    stamps = sorted(p.stat().st_mtime for p in out.glob("img-*.json"))
    first_group = settings.batch_size
    steady = (len(stamps) - first_group) / max(stamps[-1] - stamps[first_group - 1], 1e-9)
    return {"end": len(paths) / wall, "steady": steady, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-images", type=int, default=320)
    parser.add_argument("--resnet-images", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    work = Path(tempfile.mkdtemp(prefix="gradcampp-ray-bench-"))
    jobs = [
        ("demo network, 64 px", ModelRecipe("demo"), 64, args.demo_images, 16),
        (
            "ResNet-50 (random weights), 224 px",
            ModelRecipe("torchvision:resnet50", size=(224, 224)),
            224,
            args.resnet_images,
            4,
        ),
    ]
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    lines = []
    try:
        for label, recipe, size, n, batch in jobs:
            paths = write_images(work / f"in-{size}", n, size)
            settings = Settings(batch_size=batch)
            loaded = recipe.load()
            runs = {
                "local engine": timed_run(
                    recipe, paths, work / "out", settings, "local", loaded=loaded
                ),
                "Ray, 1 worker": timed_run(
                    recipe, paths, work / "out", settings, "ray", workers=1, loaded=loaded
                ),
                "Ray, 2 workers": timed_run(
                    recipe, paths, work / "out", settings, "ray", workers=2, loaded=loaded
                ),
            }
            local, one, two = runs.values()
            lines.append(f"\n### {label}: {n} images, batch {batch}\n")
            lines.append("| engine | end-to-end images/s | steady images/s | wall s |")
            lines.append("|---|---:|---:|---:|")
            for name, r in runs.items():
                lines.append(f"| {name} | {r['end']:.2f} | {r['steady']:.2f} | {r['wall']:.1f} |")
            lines.append("")
            lines.append(
                f"- Ray overhead with 1 worker (steady rate against the local engine): "
                f"{100 * (1 - one['steady'] / local['steady']):.1f}% (target: under 10%); "
                f"end-to-end: {100 * (1 - one['end'] / local['end']):.1f}%"
            )
            lines.append(
                f"- scaling, 2 workers against 1 (steady): {two['steady'] / one['steady']:.2f}x "
                f"(target: at least 1.6x); end-to-end: {two['end'] / one['end']:.2f}x"
            )
            print("\n".join(lines[-9:]), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    header = [
        "# Ray engine throughput",
        "",
        "Command: `python benchmarks/ray_throughput.py` "
        f"(`--demo-images {args.demo_images} --resnet-images {args.resnet_images}`).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, ray {ray.__version__}; one PyTorch thread per model. "
        f"Load average after the run, this benchmark's own Ray processes included: "
        f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} cores (above about "
        "3, other jobs shared the cores, and the rates are lower and noisier).",
        "",
        f"Local Ray start (`ray.init(num_cpus=2)`, not in the rates): {ray_start:.1f} s.",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
