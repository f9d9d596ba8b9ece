"""Small seeded Keras models for the Keras tests, and what explaining must leave unchanged."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
POOL = {
    1: keras.layers.GlobalAveragePooling1D,
    2: keras.layers.GlobalAveragePooling2D,
    3: keras.layers.GlobalAveragePooling3D,
}


def gap_model(
    size: tuple[int, ...] = (9, 11),
    channels: int = 3,
    features: int = 6,
    classes: int = 4,
    seed: int = 0,
    softmax: bool = False,
) -> keras.Model:
    """conv -> ReLU -> global average pool -> dense [-> softmax]: the closed-form case.

    Layer names: ``conv``, ``relu``, ``pool``, ``logits`` (and ``softmax``).
    """
    keras.utils.set_random_seed(seed)
    rank = len(size)
    inputs = keras.Input((*size, channels))
    hidden = CONV[rank](features, 3, padding="same", name="conv")(inputs)
    hidden = keras.layers.ReLU(name="relu")(hidden)
    hidden = POOL[rank](name="pool")(hidden)
    outputs = keras.layers.Dense(classes, name="logits")(hidden)
    if softmax:
        outputs = keras.layers.Softmax(name="softmax")(outputs)
    return keras.Model(inputs, outputs)


def images(n: int, size: tuple[int, ...], channels: int = 3, seed: int = 1) -> np.ndarray:
    """Seeded float32 inputs ``(n, *size, channels)``, uniform in [-1, 1)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, *size, channels)).astype(np.float32)


def snapshot(model: keras.Model) -> dict[str, Any]:
    """Everything about a model that explaining must leave as it was."""
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return {
        "attributes": [(layer.name, sorted(vars(layer))) for layer in layers],
        "trainable": [layer.trainable for layer in layers],
        "weights": [w.numpy() for w in model.weights],
    }


def assert_same_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["attributes"] == after["attributes"]
    assert before["trainable"] == after["trainable"]
    assert len(before["weights"]) == len(after["weights"])
    for a, b in zip(before["weights"], after["weights"], strict=True):
        np.testing.assert_array_equal(a, b)


def assert_maps_close(got: Any, expected: Any, rtol: float = 1e-5) -> None:
    """Each map of ``got`` within ``rtol`` times that map's largest magnitude of ``expected``.

    Maps are indexed by the leading axis; a map that is zero everywhere must be matched exactly.
    """
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    axes = tuple(range(1, expected.ndim))
    scale = np.abs(expected).max(axis=axes)
    error = np.abs(got - expected).max(axis=axes)
    assert np.all(error <= rtol * scale), (error, scale)
