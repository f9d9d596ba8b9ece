"""Throughput of ``gradcampp explain`` on the local engine and on Ray with 1 and 2 workers, in
both stage layouts.

On CPUs the Ray engine fuses its stages by default (each model actor reads, explains and writes
its groups: ``--ray-stages auto``, which is ``fused`` without GPUs); the ``split stages`` rows run
reading and writing as CPU tasks beside the model actors instead (``--ray-stages split``, the
default with GPUs), so the table shows what splitting costs on CPUs alone.

Every configuration runs the same job (default outputs: ``.npy`` maps, ``.json`` records,
overlays, ``predictions.csv``, the report) on generated shape images, with one PyTorch thread per
model (the local engine's process, or each Ray worker). Ray is started once before the timed runs
(its start-up, about 10-20 s here, is reported apart). Two rates per run:

- ``end-to-end``: images / wall time of the whole job (Ray: actors starting and loading the
  model included);
- ``steady``: images after the first group / time between the first and the last ``NAME.json``
  written (the pipeline's rate once it runs).

Run: ``python benchmarks/ray_throughput.py [--demo-images N] [--resnet-images N]``; writes
``benchmarks/results/ray_throughput.md`` (``--results PATH``: elsewhere, e.g. for a short check
run).
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
from gradcampp.engines.ray_engine import worker_processes  # noqa: E402
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
    parser.add_argument("--demo-images", type=int, default=960)
    parser.add_argument("--resnet-images", type=int, default=64)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file written")
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
    # the idle worker processes a local Ray of the engine keeps (enough for split stages' tasks)
    system = {"num_workers_soft_limit": worker_processes(2, "split")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config=system)
    ray_start = time.perf_counter() - start
    lines = []
    try:
        for label, recipe, size, n, batch in jobs:
            paths = write_images(work / f"in-{size}", n, size)
            settings = Settings(batch_size=batch)
            loaded = recipe.load()
            out = work / "out"
            runs = {"local engine": timed_run(recipe, paths, out, settings, "local", loaded=loaded)}
            for workers in (1, 2):
                for layout in ("fused", "split"):
                    name = f"Ray, {workers} worker{'s' if workers > 1 else ''}, {layout} stages"
                    runs[name] = timed_run(
                        recipe,
                        paths,
                        out,
                        settings,
                        "ray",
                        workers=workers,
                        stages=layout,
                        loaded=loaded,
                    )
            local, one, one_split, two, two_split = runs.values()
            lines.append(f"\n### {label}: {n} images, batch {batch}\n")
            lines.append("| engine | end-to-end images/s | steady images/s | wall s |")
            lines.append("|---|---:|---:|---:|")
            for name, r in runs.items():
                lines.append(f"| {name} | {r['end']:.2f} | {r['steady']:.2f} | {r['wall']:.1f} |")
            lines.append("")
            lines.append(
                "- Ray overhead with 1 worker, fused stages (the default on CPUs; steady rate "
                f"against the local engine): "
                f"{100 * (1 - one['steady'] / local['steady']):.1f}% (target: under 10%); "
                f"end-to-end: {100 * (1 - one['end'] / local['end']):.1f}%"
            )
            lines.append(
                f"- scaling, 2 workers against 1, fused (steady): "
                f"{two['steady'] / one['steady']:.2f}x "
                f"(target: at least 1.6x); end-to-end: {two['end'] / one['end']:.2f}x"
            )
            lines.append(
                "- split stages against fused (steady rate; below 1: splitting costs): "
                f"{one_split['steady'] / one['steady']:.2f}x with 1 worker, "
                f"{two_split['steady'] / two['steady']:.2f}x with 2; scaling, 2 workers "
                f"against 1, split: {two_split['steady'] / one_split['steady']:.2f}x"
            )
            print("\n".join(lines[-12:]), flush=True)
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
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
