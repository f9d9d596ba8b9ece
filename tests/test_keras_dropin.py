"""xplique's constructor, unchanged: positional order, ``.conv_layer`` and its default layer."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
xplique_attributions = pytest.importorskip("xplique.attributions")

import numpy as np  # noqa: E402
from keras_helpers import assert_maps_close, gap_model, images  # noqa: E402

from gradcampp import GradCAM, GradCAMPP  # noqa: E402

LABELS = [3, 1, 4]


def _model(name: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    build = getattr(keras.applications, name)
    return build(weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ResNet50", "VGG16"])
def test_default_layer_and_maps_equal_xplique(name):
    model = _model(name)
    x = images(len(LABELS), (64, 64))
    one_hot = np.eye(10, dtype=np.float32)[LABELS]
    for ours, theirs in [
        (GradCAMPP, xplique_attributions.GradCAMPP),
        (GradCAM, xplique_attributions.GradCAM),
    ]:
        reference = theirs(model, None, 2)
        expected = reference.explain(x, one_hot).numpy()
        assert np.sum(expected.max(axis=(1, 2, 3)) > 0) >= 2, "zero maps test little"
        explainer = ours(model, None, 2, variant="xplique")
        assert explainer.conv_layer is reference.conv_layer
        assert_maps_close(explainer.explain(x, one_hot), expected, rtol=1e-5)
    # the other variants keep our default: the last layer with spatial extent
    assert GradCAMPP(model).conv_layer is not reference.conv_layer


def test_positional_order_is_xpliques():
    model = gap_model(softmax=True)  # conv, relu, pool, logits, softmax
    x = images(2, (9, 11))
    at_logits = GradCAMPP(model, output_layer="logits", batch_size=1, conv_layer="relu")
    expected = at_logits.explain(x, [0, 3])
    positional = GradCAMPP(model, -2, 1, None, "relu")  # xplique: the layer before the softmax
    np.testing.assert_array_equal(positional.explain(x, [0, 3]), expected)
    assert positional.conv_layer is model.get_layer("relu")
    assert positional.batch_size == 1
    with pytest.raises(TypeError, match="operator"):
        GradCAMPP(model, -2, 1, lambda m, x, y: m(x))
    with pytest.raises(TypeError, match="reshape_transform applies to PyTorch"):
        GradCAMPP(model, -2, reshape_transform=lambda t: t)


def test_conv_layer_of_the_default_is_found_from_the_declared_input_shape():
    model = gap_model()
    assert GradCAMPP(model).conv_layer is model.get_layer("relu")
    assert GradCAMPP(model, variant="xplique").conv_layer is model.get_layer("conv")
    no_filters = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="filters"):
        GradCAMPP(no_filters, variant="xplique")
