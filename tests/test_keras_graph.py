"""Keras graph operations as explained layers: ConvNeXt's block output, named or by default."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_helpers import assert_maps_close, assert_same_snapshot, images, snapshot  # noqa: E402

from gradcampp import GradCAMPP  # noqa: E402


def eq19_map(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Eq. 19 written out in float64 on channels-last ``(N, H, W, K)`` arrays: ``(N, H, W, 1)``."""
    a, g = acts.astype(np.float64), grads.astype(np.float64)
    sums = a.sum(axis=(1, 2), keepdims=True)
    denominator = 2 * g**2 + sums * g**3
    safe = np.where(denominator != 0, denominator, 1.0)
    alpha = np.where(denominator != 0, g**2 / safe, 0.0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))  # (N, K)
    return np.maximum(np.einsum("nk,nhwk->nhw", weights, a), 0)[..., None]


@pytest.fixture(scope="module")
def convnext():
    keras.utils.set_random_seed(0)
    return keras.applications.ConvNeXtTiny(
        weights=None, input_shape=(96, 96, 3), classifier_activation=None
    )


@pytest.mark.slow
def test_convnext_default_is_the_last_block_sum(convnext):
    gap = next(
        layer for layer in convnext.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
    )
    block_sum = gap.input  # the last block's output: inputs + layer_scale(x), not a layer
    x = images(2, (96, 96), seed=3)
    before = snapshot(convnext)
    explainer = GradCAMPP(convnext)
    got = explainer.explain(x, upsample=False)
    assert explainer.conv_layer is block_sum._keras_history.operation
    assert not isinstance(explainer.conv_layer, keras.layers.Layer)

    # reference: a sub-model that outputs the block sum, and the head applied to it by hand
    features = keras.Model(convnext.inputs[0], block_sum)(x)
    head = convnext.layers[convnext.layers.index(gap) :]
    with tf.GradientTape() as tape:
        tape.watch(features)
        outputs = features
        for layer in head:
            outputs = layer(outputs)
        classes = tf.argmax(outputs, axis=1)
        score = tf.reduce_sum(tf.gather(outputs, classes, axis=1, batch_dims=1))
    grads = tape.gradient(score, features)
    expected = eq19_map(features.numpy(), grads.numpy())
    assert expected.max() > 0, "a zero map tests nothing"
    assert_maps_close(got, expected, rtol=1e-5)

    # the same tensor named by its operation's name, or given as the graph tensor itself
    by_name = GradCAMPP(convnext, conv_layer=explainer.conv_layer.name).explain(x, upsample=False)
    by_tensor = GradCAMPP(convnext, conv_layer=block_sum).explain(x, upsample=False)
    np.testing.assert_array_equal(by_name.numpy(), got.numpy())
    np.testing.assert_array_equal(by_tensor.numpy(), got.numpy())
    assert_same_snapshot(before, snapshot(convnext))


def test_graph_tensor_names_and_bad_tensors():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    total = h + keras.layers.Conv2D(4, 1, name="skip")(inputs)
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(total))
    model = keras.Model(inputs, outputs)
    x = images(2, (8, 8), seed=2)
    default = GradCAMPP(model).explain(x, 1)
    by_tensor_name = GradCAMPP(model, conv_layer=total.name).explain(x, 1)
    np.testing.assert_array_equal(by_tensor_name.numpy(), default.numpy())
    other = keras.layers.ReLU()(keras.Input((8, 8, 3)))
    with pytest.raises(ValueError, match="not produced by an operation of the model"):
        GradCAMPP(model, conv_layer=other)
    with pytest.raises(ValueError, match="no layer named 'nothing'"):
        GradCAMPP(model, conv_layer="nothing")
