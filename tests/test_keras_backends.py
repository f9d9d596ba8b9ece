"""Keras 3 on TensorFlow, JAX and PyTorch: the same maps, default layers and guarantees.

Keras reads ``KERAS_BACKEND`` when it is first imported, so each backend explains the models of
``keras_backend_runner.py`` in its own process; TensorFlow runs first and writes the random
weights that the JAX and PyTorch runs load.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).with_name("keras_backend_runner.py")
SRC = Path(__file__).resolve().parents[1] / "src"
BACKENDS = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is not None]

#: The default layers docs/models.md states (ConvNeXt: the last block's sum, an operation whose
#: name ``add_<n>`` is numbered by the process).
DEFAULTS = {
    "cnn": "relu2",
    "MobileNetV2": "out_relu",
    "ResNet50V2": "post_relu",
    "EfficientNetV2B0": "top_activation",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
    pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="needs Keras 3"),
]


def _command(backend: str, directory: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    out = directory / f"{backend}.npz"
    return [sys.executable, str(RUNNER), str(directory), str(out)], env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Each backend's results; JAX and PyTorch run side by side after TensorFlow."""
    directory = tmp_path_factory.mktemp("keras-backends")
    command, env = _command("tensorflow", directory)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    running = {}
    for backend in BACKENDS:
        command, env = _command(backend, directory)
        running[backend] = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    for backend, process in running.items():
        try:
            _, errors = process.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, f"{backend}: {errors[-3000:]}"
    return {
        backend: dict(np.load(directory / f"{backend}.npz"))
        for backend in ("tensorflow", *BACKENDS)
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_maps_equal_tensorflow_maps(runs, backend):
    reference, got = runs["tensorflow"], runs[backend]
    assert str(got["backend"]) == backend
    maps = [key for key, value in reference.items() if value.dtype == np.float32]
    assert len(maps) == 5 * 3 + 4  # GradCAMPP, GradCAM, TopK(3) per model; 4 more on the CNN
    for key in maps:
        expected = reference[key]
        assert got[key].shape == expected.shape, key
        flat_expected = np.abs(expected.reshape(expected.shape[0], -1)).astype(np.float64)
        error = np.abs(got[key] - expected).reshape(expected.shape[0], -1).max(axis=1)
        # ConvNeXt's Grad-CAM map (random weights) is the positive part of a sum of channel terms
        # about 1000 times its maximum: float32 rounding of the backends' LayerNorms shows there.
        tolerance = 1e-3 if key == "ConvNeXtTiny/gradcam" else 1e-4
        assert np.all(error <= tolerance * flat_expected.max(axis=1)), (key, error)
    for model in ("cnn", "MobileNetV2", "ResNet50V2", "ConvNeXtTiny", "EfficientNetV2B0"):
        assert reference[f"{model}/topk"].max() > 0, f"{model}: a zero map tests nothing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_layers_are_the_same_and_documented(runs, backend):
    for model, name in DEFAULTS.items():
        assert str(runs["tensorflow"][f"{model}/layer"]) == name
        assert str(runs[backend][f"{model}/layer"]) == name
    convnext = str(runs["tensorflow"]["ConvNeXtTiny/layer"])
    assert convnext.startswith("add")
    assert str(runs[backend]["ConvNeXtTiny/layer"]) == convnext


@pytest.mark.parametrize("backend", ["tensorflow", *BACKENDS])
def test_model_unchanged_threads_agree_and_tensors_come_back(runs, backend):
    results = runs[backend]
    for model in ("cnn", "MobileNetV2", "ResNet50V2", "ConvNeXtTiny", "EfficientNetV2B0"):
        assert bool(results[f"{model}/unchanged"]), model
    assert bool(results["cnn/threads"])
    assert bool(results["cnn/tensor_out"])  # a backend tensor in, a backend tensor out
