"""Explain the same Keras models on the Keras backend of this process (``KERAS_BACKEND``).

Run by ``tests/test_keras_backends.py``, once per backend, each in its own process (Keras reads
``KERAS_BACKEND`` when it is first imported). The first run writes each model's random weights
to ``WEIGHTS_DIR``, the later runs load them, so that every backend explains the same network.

Usage: ``python tests/keras_backend_runner.py WEIGHTS_DIR OUT.npz [MODEL ...]``; writes the maps
(NumPy), the default layer names, and the results of the model-unchanged and thread checks.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras
import numpy as np

from gradcampp import GradCAM, GradCAMPP, TopK
from gradcampp.backends.keras_graph import graph_operations

#: Each model and the input size it is explained at (ConvNeXt at 96: a 3 x 3 last map).
SIZES = {
    "cnn": 24,
    "MobileNetV2": 64,
    "ResNet50V2": 64,
    "ConvNeXtTiny": 96,
    "EfficientNetV2B0": 64,
}


def build(name: str) -> keras.Model:
    """The model ``name`` with seeded random weights, its logits as output."""
    keras.utils.set_random_seed(0)
    size = SIZES[name]
    if name == "cnn":
        inputs = keras.Input((size, size, 3))
        h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
        h = keras.layers.ReLU(name="relu1")(h)
        h = keras.layers.MaxPooling2D(2, name="pool1")(h)
        h = keras.layers.Conv2D(12, 3, padding="same", name="conv2")(h)
        skip = keras.layers.Conv2D(12, 1, name="skip")(keras.layers.MaxPooling2D(2)(inputs))
        h = keras.layers.ReLU(name="relu2")(h + skip)  # a graph operation before the head
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    application = getattr(keras.applications, name)
    kwargs: dict[str, Any] = {"weights": None, "input_shape": (size, size, 3)}
    kwargs["classifier_activation"] = None
    if name == "EfficientNetV2B0":
        kwargs["include_preprocessing"] = False
    return application(**kwargs)


def inputs(name: str, n: int = 2, seed: int = 1) -> np.ndarray:
    size = SIZES[name]
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, size, size, 3)).astype(np.float32)


def weights_of(model: keras.Model, directory: Path, name: str) -> None:
    """Load the model's weights from ``directory``, or write them there if absent."""
    path = directory / f"{name}.npz"
    if path.exists():
        with np.load(path) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    else:
        np.savez(path, *model.get_weights())


def snapshot(model: keras.Model) -> list[Any]:
    """What explaining must leave as it was: attributes of every operation, all weights."""
    found: list[Any] = [(op.name, sorted(vars(op))) for op in graph_operations(model)]
    return found + [keras.ops.convert_to_numpy(w) for w in model.weights]


def same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
        for x, y in zip(a, b, strict=True)
    )


def numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def explain(name: str, directory: Path) -> dict[str, np.ndarray]:
    model = build(name)
    weights_of(model, directory, name)
    x = inputs(name)
    labels = np.array([3, 7])
    results: dict[str, np.ndarray] = {}
    before = snapshot(model)
    plusplus = GradCAMPP(model)
    results[f"{name}/gradcampp"] = numpy(plusplus.explain(x))  # the predicted classes
    results[f"{name}/layer"] = np.array(plusplus.backend.layer_name(x))
    results[f"{name}/gradcam"] = numpy(GradCAM(model).explain(x))
    results[f"{name}/topk"] = numpy(plusplus.explain(x, TopK(3)))
    if name == "cnn":
        one_hot = np.eye(10, dtype=np.float32)[labels]
        results["cnn/indices"] = numpy(plusplus.explain(x, labels))
        results["cnn/one_hot"] = numpy(plusplus.explain(x, one_hot))
        results["cnn/callable"] = numpy(plusplus.explain(x, lambda out: out[:, 2] - out[:, 0]))
        results["cnn/xplique"] = numpy(GradCAMPP(model, variant="xplique").explain(x, labels))
        tensor = plusplus.explain(keras.ops.convert_to_tensor(x), labels)
        results["cnn/tensor_out"] = np.array(keras.ops.is_tensor(tensor))
        results["cnn/threads"] = np.array(threads_agree(plusplus, name))
    results[f"{name}/unchanged"] = np.array(same(before, snapshot(model)))
    return results


def threads_agree(explainer: GradCAMPP, name: str) -> bool:
    """Explanations run in 4 threads at once equal the same explanations run one by one."""
    batches = [inputs(name, 2, seed) for seed in range(4)]
    alone = [numpy(explainer.explain(batch, np.array([1, 2]))) for batch in batches]
    together: list[Any] = [None] * 4

    def work(i: int) -> None:
        together[i] = numpy(explainer.explain(batches[i], np.array([1, 2])))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return all(
        t is not None and np.allclose(t, a, rtol=0, atol=1e-6 * np.abs(a).max())
        for t, a in zip(together, alone, strict=True)
    )


def main(argv: list[str]) -> None:
    directory, out = Path(argv[0]), Path(argv[1])
    names = argv[2:] or list(SIZES)
    results: dict[str, np.ndarray] = {"backend": np.array(keras.backend.backend())}
    for name in names:
        results.update(explain(name, directory))
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1:])
