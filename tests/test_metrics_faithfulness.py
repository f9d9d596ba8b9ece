"""Average Drop, Increase in Confidence and Win %: hand-computed values on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from gradcampp.metrics import (
    average_drop,
    explanation_confidence,
    explanation_images,
    increase_in_confidence,
    win_percentage,
)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class SumLogit(torch.nn.Module):
    """Logits ``[sum(x), 0]``: probabilities ``sigmoid(sum x)`` and ``1 - sigmoid(sum x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * x.sum(dim=(1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_average_drop_increase_and_win_from_probabilities():
    y = [0.5, 0.8, 0.4]
    o = [0.25, 0.9, 0.1]
    # drops: 0.25/0.5 = 0.5, max(0, -0.1) = 0, 0.3/0.4 = 0.75 -> mean 1.25/3
    assert average_drop(y, o) == pytest.approx(100 * 1.25 / 3)
    assert increase_in_confidence(y, o) == pytest.approx(100 / 3)
    o_a = [0.3, 0.5, 0.2, 0.9]
    o_b = [0.1, 0.5, 0.4, 0.8]
    assert win_percentage(o_a, o_b) == pytest.approx(100 * 2.5 / 4)  # win, tie, loss, win
    assert win_percentage(o_a, o_b) + win_percentage(o_b, o_a) == pytest.approx(100)


def test_explanation_images_normalise_each_map_and_multiply_every_channel():
    images = np.ones((1, 2, 2, 2), dtype=np.float32)
    images[0, 1] = 2.0
    maps = np.array([[[1.0, 3.0], [5.0, 7.0]]])  # min-max -> [[0, 1/3], [2/3, 1]]
    expected = np.array([[0, 1 / 3], [2 / 3, 1]])
    out = explanation_images(images, maps)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], 2 * expected, rtol=1e-6)
    last = explanation_images(np.moveaxis(images, 1, -1), maps, channel_axis=-1)
    np.testing.assert_allclose(np.moveaxis(last, -1, 1), out)


def test_confidence_of_a_model_known_in_closed_form():
    model = SumLogit()
    images = np.ones((2, 1, 2, 2), dtype=np.float32)
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 9.0]]])
    # E sums: 0 + 1/3 + 2/3 + 1 = 2, and 0 + 0 + 0 + 1 = 1; the image sums are 4.
    conf = explanation_confidence(model, images, maps, targets=np.array([0, 1]))
    np.testing.assert_allclose(conf.y, [sigmoid(4), 1 - sigmoid(4)], rtol=1e-6)
    np.testing.assert_allclose(conf.o, [sigmoid(2), 1 - sigmoid(1)], rtol=1e-6)
    drop0 = (sigmoid(4) - sigmoid(2)) / sigmoid(4)  # the second image gains confidence: drop 0
    assert average_drop(conf.y, conf.o) == pytest.approx(100 * drop0 / 2, rel=1e-6)
    assert increase_in_confidence(conf.y, conf.o) == pytest.approx(50.0)


def test_confidence_defaults_to_the_predicted_class_and_does_not_depend_on_batch_size():
    model = SumLogit()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(7, 1, 3, 3)).astype(np.float32)
    maps = rng.uniform(size=(7, 3, 3))
    conf = explanation_confidence(model, images, maps, batch_size=3)
    np.testing.assert_array_equal(conf.targets, (images.sum(axis=(1, 2, 3)) < 0).astype(int))
    other = explanation_confidence(model, torch.from_numpy(images), torch.from_numpy(maps))
    np.testing.assert_allclose(conf.o, other.o, rtol=1e-6)
    assert np.all(conf.y >= 0.5)


def test_the_model_is_left_as_it_was():
    model = SumLogit().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explanation_confidence(model, np.ones((1, 1, 2, 2)), np.ones((1, 2, 2)), 0)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.scale.grad is None


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: average_drop([0.0, 0.5], [0.1, 0.2]), ValueError, "probabilities"),
        (lambda: average_drop([0.5], [0.1, 0.2]), ValueError, "one shape"),
        (lambda: average_drop([0.5, np.nan], [0.1, 0.2]), ValueError, r"^y must hold finite"),
        (lambda: average_drop([0.5, 0.4], [np.nan, 0.2]), ValueError, r"^o must hold finite"),
        (lambda: average_drop([0.5, 0.4], [0.1, 1.5]), ValueError, r"^o must hold prob"),
        (
            lambda: increase_in_confidence([np.inf, 0.4], [0.1, 0.2]),
            ValueError,
            r"^y must hold finite probabilities, got inf at index 0",
        ),
        (
            lambda: increase_in_confidence([0.5, 0.4], [0.1, np.nan]),
            ValueError,
            r"^o must hold finite probabilities, got nan at index 1",
        ),
        (lambda: win_percentage([np.nan, 0.4], [0.1, 0.2]), ValueError, r"^o_a must hold finite"),
        (lambda: win_percentage([0.5, 0.4], [0.1, -np.inf]), ValueError, r"^o_b must hold finite"),
        (lambda: win_percentage([0.5], [0.4], tolerance=-1e-3), ValueError, "tolerance"),
        (lambda: win_percentage([0.5], [0.1, 0.2]), ValueError, "one shape"),
        (
            lambda: explanation_confidence(object(), np.ones((1, 1, 2, 2)), np.ones((1, 2, 2))),
            TypeError,
            "torch.nn.Module",
        ),
        (
            lambda: explanation_confidence(SumLogit(), np.ones((1, 1, 2, 2)), np.ones((1, 3, 3))),
            ValueError,
            "do not match",
        ),
        (
            lambda: explanation_confidence(
                SumLogit(), np.ones((1, 1, 2, 2)), np.ones((1, 2, 2)), targets=[2]
            ),
            ValueError,
            r"\[0, 2\)",
        ),
        (
            lambda: explanation_confidence(
                SumLogit(), np.ones((1, 1, 2, 2)), np.ones((1, 2, 2)), targets=[0.5]
            ),
            TypeError,
            "integer",
        ),
        (
            lambda: explanation_confidence(
                SumLogit(), np.ones((1, 1, 2, 2)), np.full((1, 2, 2), np.nan)
            ),
            ValueError,
            "NaN",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_increase_in_confidence_does_not_depend_on_float_precision():
    # a near-certain image: the masked probability is above Y by 2.8e-9 in float64, equal in
    # float32 (spacing 6e-8 just below 1); with the default tolerance both count no increase
    y64 = np.array([0.9999999, 0.5])
    o64 = y64 + np.array([2.8e-9, 0.1])
    y32, o32 = y64.astype(np.float32), o64.astype(np.float32)
    assert o32[0] == y32[0] and o64[0] > y64[0]
    assert increase_in_confidence(y64, o64) == 50.0
    assert increase_in_confidence(y32, o32) == 50.0
    assert increase_in_confidence(y64, o64, tolerance=0) == 100.0  # exact, as in the paper
    assert increase_in_confidence([0.5], [0.5 + 2e-6]) == 100.0  # above the tolerance


def test_win_percentage_counts_differences_within_the_tolerance_as_ties():
    o_a = np.array([0.5 + 5e-7, 0.7, 0.2])
    o_b = np.array([0.5, 0.6, 0.3])
    assert win_percentage(o_a, o_b) == pytest.approx(100 * 1.5 / 3)
    assert win_percentage(o_b, o_a) == pytest.approx(100 * 1.5 / 3)
    assert win_percentage(o_a, o_b, tolerance=0) == pytest.approx(100 * 2 / 3)
    total = win_percentage(o_a, o_b, tolerance=0) + win_percentage(o_b, o_a, tolerance=0)
    assert total == pytest.approx(100)


def test_a_keras_model_on_the_torch_backend_is_refused_not_run_as_a_module():
    """On Keras's PyTorch backend a Keras model is also a ``torch.nn.Module``; the metrics (which
    run PyTorch models channels-first) must refuse it rather than read its channels-last input
    wrongly. ``KERAS_BACKEND`` is read at Keras's first import, hence the child process."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, torch, keras
from gradcampp.metrics import explanation_confidence
inputs = keras.Input((8, 8, 3))
model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
assert isinstance(model, torch.nn.Module)
try:
    explanation_confidence(model, np.ones((1, 8, 8, 3), np.float32), np.ones((1, 8, 8)))
except TypeError as error:
    print(error)
"""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "a Keras model (on any Keras backend) is not supported" in done.stdout
