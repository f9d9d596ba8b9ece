"""Speed of Grad-CAM++ on a Keras model: gradcampp against xplique and a plain inference pass.

ResNet-50 (random seeded weights), a batch of 8 images of 224 x 224, on the CPU. Every method is
warmed up first (tracing and compilation are not timed), then the methods run in turns, round
robin, so that a load that comes and goes on a shared machine touches them alike; the median of
each method's times is reported with its ratio to a ``tf.function`` inference pass, in wall-clock
time and in CPU time of the process (which other processes on a shared machine disturb less).

Usage: ``PYTHONPATH=src python benchmarks/keras_speed.py [--repeats 7]`` prints a Markdown table
and writes it to ``benchmarks/results/keras_speed.md``. ``rows()`` returns the figures for a larger
benchmark to include.

``--backends`` measures instead, on each Keras backend (TensorFlow, JAX, PyTorch; each in its own
process, since Keras reads ``KERAS_BACKEND`` once), one explanation of MobileNetV2 (random seeded
weights, batch 8, 224 x 224, default layer, class indices) relative to that backend's own
compiled or eager inference pass (``tf.function``; ``jax.jit`` of ``model.stateless_call``; the
model's call under ``torch.no_grad()``), and writes ``benchmarks/results/keras_backends_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the figures are CPU figures
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from gradcampp import GradCAMPP

RESULT = Path(__file__).parent / "results" / "keras_speed.md"
BACKENDS_RESULT = Path(__file__).parent / "results" / "keras_backends_speed.md"


def _methods(batch: int, size: int, seed: int) -> dict[str, Callable[[], Any]]:
    """The timed calls, each returning a result that is forced to exist (``.numpy()``)."""
    import tensorflow as tf

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
    import tensorflow as tf

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


def _inference(model: keras.Model) -> Any:
    """This backend's inference pass: a function of channels-last inputs, forced to NumPy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(lambda x: model(x, training=False))
        return lambda x: compiled(x).numpy()
    if backend == "jax":
        import jax

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
        jitted = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        return lambda x: np.asarray(jitted(*state, x))
    import torch

    def eager(x: Any) -> Any:
        with torch.no_grad():
            return model(x, training=False).cpu().numpy()

    return eager


def backend_row(
    repeats: int = 7, warmup: int = 2, batch: int = 8, size: int = 224, seed: int = 0
) -> dict[str, Any]:
    """One explanation against one inference pass of MobileNetV2 on this process's backend."""
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(
        rng.uniform(-1, 1, size=(batch, size, size, 3)).astype(np.float32)
    )
    labels = rng.integers(0, 1000, size=batch)
    infer = _inference(model)
    explainer = GradCAMPP(model, batch_size=batch)
    methods = {
        "inference": lambda: infer(x),
        "explain": lambda: keras.ops.convert_to_numpy(explainer.explain(x, labels)),
    }
    for call in methods.values():
        for _ in range(warmup):
            call()
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, call in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    row: dict[str, Any] = {
        "backend": keras.backend.backend(),
        "layer": explainer.backend.layer_name(x),
    }
    for name in methods:
        row[f"{name}_s"] = statistics.median(wall[name])
        row[f"{name}_cpu_s"] = statistics.median(cpu[name])
    row["ratio"] = row["explain_s"] / row["inference_s"]
    row["cpu_ratio"] = row["explain_cpu_s"] / row["inference_cpu_s"]
    return row


def backends_table(repeats: int, warmup: int) -> str:
    """``backend_row`` on TensorFlow, JAX and PyTorch, each in its own process, as Markdown."""
    rows_ = []
    for backend in ("tensorflow", "jax", "torch"):
        env = dict(os.environ, KERAS_BACKEND=backend)
        command = [sys.executable, __file__, "--backend-row", "--repeats", str(repeats)]
        command += ["--warmup", str(warmup)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{backend}: {done.stderr[-2000:]}")
        rows_.append(json.loads(done.stdout.strip().splitlines()[-1]))
    device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    lines = [
        f"Keras {keras.__version__}, MobileNetV2 (random weights), batch 8, 224 x 224, {device}; "
        f"median of {repeats} round-robin repetitions after {warmup} warm-up calls; each backend "
        "in its own process.",
        "",
        "| backend | default layer | inference (s) | explanation (s) | ratio "
        "| inference CPU (s) | explanation CPU (s) | CPU-time ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['backend']} | `{r['layer']}` | {r['inference_s']:.3f} | {r['explain_s']:.3f} "
        f"| {r['ratio']:.2f}x | {r['inference_cpu_s']:.3f} | {r['explain_cpu_s']:.3f} "
        f"| {r['cpu_ratio']:.2f}x |"
        for r in rows_
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--backends", action="store_true", help="MobileNetV2 on each backend")
    parser.add_argument("--backend-row", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend_row:
        print(json.dumps(backend_row(args.repeats, args.warmup)))
        return
    if args.backends:
        table = backends_table(args.repeats, args.warmup)
        print(table)
        output = args.output or BACKENDS_RESULT
        command = "PYTHONPATH=src python benchmarks/keras_speed.py --backends"
        command += f" --repeats {args.repeats} --warmup {args.warmup}"
        output.write_text(f"Command: `{command}`\n\n" + table)
        return
    args.output = args.output or RESULT
    table = markdown(rows(args.repeats, args.warmup))
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("Command: `PYTHONPATH=src python benchmarks/keras_speed.py`\n\n" + table)


if __name__ == "__main__":
    main()
