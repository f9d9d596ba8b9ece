"""variant="xplique" reproduces xplique 2.0.2 on keras.applications networks with random weights."""

from __future__ import annotations

import warnings

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
xplique_attributions = pytest.importorskip("xplique.attributions")

import numpy as np  # noqa: E402
from keras_helpers import assert_maps_close, images  # noqa: E402

from gradcampp import GradCAM, GradCAMPP  # noqa: E402

ARCHITECTURES = {
    "ResNet50": keras.applications.ResNet50,
    "VGG16": keras.applications.VGG16,
}
LABELS = [3, 1, 4, 1, 5]  # five samples, batch_size 2: the last batch holds one


def _model(name: str, size: tuple[int, int]) -> keras.Model:
    keras.utils.set_random_seed(0)
    return ARCHITECTURES[name](weights=None, input_shape=(*size, 3), classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (64, 96)], ids=["square", "non-square"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_matches_xplique(name, size):
    model = _model(name, size)
    x = images(len(LABELS), size)
    one_hot = np.eye(10, dtype=np.float32)[LABELS]
    for ours, theirs in [
        (GradCAMPP, xplique_attributions.GradCAMPP),
        (GradCAM, xplique_attributions.GradCAM),
    ]:
        reference = theirs(model, batch_size=2)
        expected = reference.explain(x, one_hot).numpy()
        assert expected.shape == (len(LABELS), *size, 1)
        assert np.all(expected.max(axis=(1, 2, 3)) > 0), "a map that is zero tests nothing"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the model ends in a softmax
            explainer = ours(
                model, batch_size=2, variant="xplique", conv_layer=reference.conv_layer.name
            )
        got = explainer.explain(x, one_hot)
        assert isinstance(got, tf.Tensor) and got.dtype == tf.float32
        assert_maps_close(got, expected)
