"""Speed of Grad-CAM++ on a Keras model: gradcampp against xplique and a plain inference pass.

ResNet-50 (random seeded weights), a batch of 8 images of 224 x 224, on the CPU. Every method is
warmed up first (tracing and compilation are not timed), then the methods run in turns, round
robin, so that a load that comes and goes on a shared machine touches them alike; the median of
each method's times is reported with its ratio to a ``tf.function`` inference pass, in wall-clock
time and in CPU time of the process (which other processes on a shared machine disturb less).

Usage: ``PYTHONPATH=src python benchmarks/keras_speed.py [--repeats 7]`` prints a Markdown table
and writes it to ``benchmarks/results/keras_speed.md``. ``rows()`` returns the figures for a larger
benchmark to include.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the figures are CPU figures
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from gradcampp import GradCAMPP

RESULT = Path(__file__).parent / "results" / "keras_speed.md"


def _methods(batch: int, size: int, seed: int) -> dict[str, Callable[[], Any]]:
    """The timed calls, each returning a result that is forced to exist (``.numpy()``)."""
    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, size=(batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, size=batch)
    one_hot = np.eye(1000, dtype=np.float32)[labels]

    @tf.function
    def inference(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    methods: dict[str, Callable[[], Any]] = {
        "tf.function inference": lambda: inference(tf.constant(images)).numpy(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the softmax warning: the benchmark explains as xplique
        ours = GradCAMPP(model, batch_size=batch)
        ours_xplique = GradCAMPP(
            model, batch_size=batch, variant="xplique", conv_layer="conv5_block3_3_conv"
        )
    methods["gradcampp GradCAMPP (paper, default layer)"] = lambda: ours.explain(
        images, labels
    ).numpy()
    methods['gradcampp GradCAMPP (variant="xplique", xplique\'s layer)'] = lambda: (
        ours_xplique.explain(images, labels).numpy()
    )
    try:
        from xplique.attributions import GradCAMPP as XpliqueGradCAMPP
    except ImportError:
        return methods
    theirs = XpliqueGradCAMPP(model, batch_size=batch)
    methods["xplique 2.0.2 GradCAMPP"] = lambda: theirs.explain(images, one_hot).numpy()
    return methods


def rows(
    repeats: int = 7, warmup: int = 2, batch: int = 8, size: int = 224, seed: int = 0
) -> list[dict[str, Any]]:
    """Median seconds per call of each method, and its ratio to the inference pass.

    Returns:
        one dict per method: ``method``, ``median_s``, ``min_s``, ``max_s`` (wall-clock
        seconds), ``ratio`` (median over the median of ``tf.function`` inference), ``cpu_s``,
        ``cpu_ratio`` (the same for the CPU time of the process, all threads: less disturbed by
        other work on a shared machine),
        ``repeats``, ``model``, ``batch``, ``size``, ``device``.
    """
    methods = _methods(batch, size, seed)
    for call in methods.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, call in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    base = statistics.median(times["tf.function inference"])
    base_cpu = statistics.median(cpu["tf.function inference"])
    device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return [
        {
            "method": name,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "ratio": statistics.median(values) / base,
            "cpu_s": statistics.median(cpu[name]),
            "cpu_ratio": statistics.median(cpu[name]) / base_cpu,
            "repeats": repeats,
            "model": "ResNet-50",
            "batch": batch,
            "size": size,
            "device": device,
        }
        for name, values in times.items()
    ]


def markdown(table: list[dict[str, Any]]) -> str:
    """The rows of ``rows()`` as a Markdown table."""
    first = table[0]
    lines = [
        f"Keras/TensorFlow {tf.__version__}, {first['model']}, batch {first['batch']}, "
        f"{first['size']} x {first['size']}, {first['device']}, median of {first['repeats']} "
        "round-robin repetitions after warm-up.",
        "",
        "| method | median time (s) | fastest - slowest (s) | ratio to inference "
        "| median CPU time (s) | CPU-time ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method']} | {r['median_s']:.3f} | {r['min_s']:.3f} - {r['max_s']:.3f} "
        f"| {r['ratio']:.2f}x | {r['cpu_s']:.3f} | {r['cpu_ratio']:.2f}x |"
        for r in table
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    table = markdown(rows(args.repeats, args.warmup))
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("Command: `PYTHONPATH=src python benchmarks/keras_speed.py`\n\n" + table)


if __name__ == "__main__":
    main()
