"""The Keras backend: closed forms, layer choice, inputs, targets, errors and an untouched model."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import numpy as np  # noqa: E402
from keras_helpers import (  # noqa: E402
    assert_maps_close,
    assert_same_snapshot,
    gap_model,
    images,
    snapshot,
)

from gradcampp import Classes, GradCAM, GradCAMPP, TopK  # noqa: E402


def closed_form_map(model: keras.Model, x: np.ndarray, cls: int) -> np.ndarray:
    """conv -> ReLU -> GAP -> dense: the paper map is
    relu(sum_{k: w_kc > 0} w_kc A^k / (2 + w_kc mean(A^k))) (constant 1 once exp(S^c) is dropped:
    g = w_kc / Z and sum_ab A^k = Z mean(A^k)). Computed in float64 from the layer's activations.
    """
    acts = keras.Model(model.input, model.get_layer("relu").output)(x).numpy().astype(np.float64)
    w = model.get_layer("logits").kernel.numpy().astype(np.float64)[:, cls]  # (K,)
    spatial = tuple(range(1, acts.ndim - 1))
    means = acts.mean(axis=spatial)  # (N, K)
    coef = np.where(w > 0, w / (2 + w * means), 0.0)
    return np.maximum(np.einsum("nk,n...k->n...", coef, acts), 0)[..., None]


@pytest.mark.parametrize("size", [(17,), (9, 11), (5, 6, 7)], ids=["1d", "2d", "3d"])
def test_paper_map_equals_closed_form(size):
    model = gap_model(size, seed=len(size))
    x = images(3, size, seed=10 + len(size))
    explainer = GradCAMPP(model, conv_layer="relu")
    for cls in range(4):
        got = explainer.explain(x, cls, upsample=False)
        assert got.shape == (3, *size, 1)
        assert_maps_close(got, closed_form_map(model, x, cls))


def test_gradcam_equals_its_closed_form():
    # Grad-CAM on the same network: w_k = mean(g) = w_kc / Z * Z / Z = w_kc / Z, map
    # relu(sum_k w_kc A^k) / Z; compared up to the positive factor 1/Z through the map's shape.
    model = gap_model(seed=4)
    x = images(2, (9, 11))
    acts = keras.Model(model.input, model.get_layer("relu").output)(x).numpy()
    w = model.get_layer("logits").kernel.numpy()[:, 2]
    expected = np.maximum(acts @ w, 0)[..., None] / (9 * 11)
    got = GradCAM(model).explain(x, 2, upsample=False)
    assert_maps_close(got, expected)


# ----------------------------------------------------------------------------- PyTorch vs Keras


def _twin_networks(seed: int = 0):
    """The same network in PyTorch and Keras, with the Keras weights copied into PyTorch."""
    torch = pytest.importorskip("torch")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    k_model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(h))

    nn = torch.nn
    t_model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()
    with torch.no_grad():
        for t_index, name in [(0, "conv1"), (3, "conv2")]:
            kernel, bias = k_model.get_layer(name).get_weights()
            t_model[t_index].weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
            t_model[t_index].bias.copy_(torch.from_numpy(bias))
        kernel, bias = k_model.get_layer("fc").get_weights()
        t_model[7].weight.copy_(torch.from_numpy(kernel.T))
        t_model[7].bias.copy_(torch.from_numpy(bias))
    return torch, t_model, k_model


@pytest.mark.parametrize(
    "explainer,variant",
    [(GradCAMPP, "paper"), (GradCAMPP, "authors"), (GradCAM, "paper")],
)
@pytest.mark.parametrize(
    "n,size,batch_size", [(3, (12, 16), 32), (5, (9, 13), 2), (1, (20, 6), 32), (7, (16, 16), 3)]
)
def test_pytorch_and_keras_give_the_same_map(explainer, variant, n, size, batch_size):
    torch, t_model, k_model = _twin_networks()
    x = images(n, size)
    labels = np.array([0, 3, 4])[np.arange(n) % 3]
    k_maps = explainer(k_model, variant=variant, batch_size=batch_size).explain(x, labels)
    t_maps = explainer(t_model, variant=variant, batch_size=batch_size).explain(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(labels)
    )
    assert k_maps.shape == (n, *size, 1) and t_maps.shape == (n, *size)
    assert np.mean(np.max(k_maps, axis=(1, 2, 3)) > 0) >= 0.5  # mostly non-trivial maps
    assert_maps_close(k_maps[..., 0], t_maps.numpy())


def test_repeated_calls_in_one_process_are_finite_and_identical():
    # Resized maps (a stride-2 layer), three kinds of call, 40 times each on one explainer: with
    # TensorFlow's default oneDNN settings every result is finite and equal to the first.
    _, _, k_model = _twin_networks(seed=2)
    x = images(5, (12, 16), seed=4)
    calls = [
        (GradCAMPP(k_model, conv_layer="relu2"), None),
        (GradCAM(k_model, conv_layer="relu2"), None),
        (GradCAMPP(k_model, conv_layer="relu2"), TopK(3)),
    ]
    for explainer, targets in calls:
        first = explainer.explain(x, targets).numpy()
        assert first.shape[-3:-1] == (12, 16) and np.isfinite(first).all() and first.max() > 0
        for _ in range(39):
            np.testing.assert_array_equal(explainer.explain(x, targets).numpy(), first)


# ------------------------------------------------------------------------------ choice of layer


def _nested_model() -> tuple[keras.Model, keras.Model]:
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((10, 12, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in)
    inner = keras.Model(inner_in, keras.layers.ReLU(name="inner_relu")(h), name="backbone")
    outer_in = keras.Input((10, 12, 3))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(inner(outer_in))
    return keras.Model(outer_in, keras.layers.Dense(3, name="fc")(h)), inner


def test_default_layer_is_found_inside_a_nested_model():
    model, inner = _nested_model()
    x = images(2, (10, 12))
    default = GradCAMPP(model)
    assert default.backend.layer_name(tf.constant(x)) == "inner_relu"
    expected = default.explain(x, 1)
    for layer in ["inner_relu", inner.get_layer("inner_relu"), 1, "backbone"]:
        # by name, as a layer object, by index into model.layers (the nested model), by its name
        assert_maps_close(GradCAMPP(model, conv_layer=layer).explain(x, 1), expected)
    conv = GradCAMPP(model, conv_layer="inner_conv").explain(x, 1)
    assert not np.allclose(conv, expected)  # a different layer gives a different map


def test_subclassed_and_sequential_models():
    model = gap_model(seed=6)
    x = images(2, (9, 11))
    expected = GradCAMPP(model, conv_layer="relu").explain(x, 0)

    class Subclassed(keras.Model):
        def __init__(self, source: keras.Model):
            super().__init__()
            self.conv, self.relu = source.get_layer("conv"), source.get_layer("relu")
            self.pool, self.logits = source.get_layer("pool"), source.get_layer("logits")

        def call(self, inputs):
            return self.logits(self.pool(self.relu(self.conv(inputs))))

    sequential = keras.Sequential(
        [keras.Input((9, 11, 3))] + [model.get_layer(n) for n in ("conv", "relu", "pool", "logits")]
    )
    for other in (Subclassed(model), sequential):
        explainer = GradCAMPP(other)
        assert explainer.backend.layer_name(tf.constant(x)) == "relu"
        assert_maps_close(explainer.explain(x, 0), expected)


def test_bad_layers_are_refused():
    model = gap_model()
    with pytest.raises(ValueError, match=r"no layer named 'rleu'.*'relu'"):
        GradCAMPP(model, conv_layer="rleu")
    with pytest.raises(ValueError, match="out of range"):
        GradCAMPP(model, conv_layer=17)
    with pytest.raises(ValueError, match="not a layer of the model"):
        GradCAMPP(model, conv_layer=keras.layers.ReLU())
    with pytest.raises(TypeError, match="layer name"):
        GradCAMPP(model, conv_layer=2.0)
    with pytest.raises(ValueError, match="'pool' outputs shape"):
        GradCAMPP(model, conv_layer="pool").explain(images(1, (9, 11)), 0)


# ------------------------------------------------------------------------------- output_layer


def test_output_layer_is_where_the_score_is_read():
    with pytest.warns(UserWarning, match="softmax") as caught:
        on_softmax = GradCAMPP(gap_model(seed=7, softmax=True), conv_layer="relu")
        x = images(3, (9, 11))
        softmax_maps = on_softmax.explain(x, [0, 1, 2])
        on_softmax.explain(x, [0, 1, 2])
    [warned] = [w for w in caught if "softmax" in str(w.message)]  # once
    assert warned.filename == __file__  # the user's line, not gradcampp's

    logits_model = gap_model(seed=7)
    expected = GradCAMPP(logits_model, conv_layer="relu").explain(x, [0, 1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no softmax warning once the logits are named
        at_logits = GradCAMPP(
            gap_model(seed=7, softmax=True), conv_layer="relu", output_layer="logits"
        )
    assert_maps_close(at_logits.explain(x, [0, 1, 2]), expected)
    assert not np.allclose(softmax_maps, expected)  # the softmax changes the gradients


# ---------------------------------------------------------------------------- inputs, targets


def test_inputs_and_datasets_give_the_same_maps():
    model = gap_model(seed=8)
    x = images(5, (9, 11))
    labels = np.array([0, 3, 1, 2, 2])
    expected = GradCAMPP(model, batch_size=2).explain(x, labels)
    assert isinstance(expected, tf.Tensor) and expected.dtype == tf.float32
    assert expected.shape == (5, 9, 11, 1)
    explainer = GradCAMPP(model, batch_size=2)
    pairs = tf.data.Dataset.from_tensor_slices((x, labels))
    for inputs in (tf.constant(x), tf.constant(x, tf.float64), pairs, pairs.batch(2)):
        targets = None if isinstance(inputs, tf.data.Dataset) else labels
        assert_maps_close(explainer.explain(inputs, targets), expected, rtol=1e-6)
    only_x = tf.data.Dataset.from_tensor_slices(x).batch(3)
    assert_maps_close(explainer.explain(only_x, labels), expected, rtol=1e-6)
    one_hot = tf.data.Dataset.from_tensor_slices((x, np.eye(4, dtype=np.float32)[labels]))
    assert_maps_close(explainer.explain(one_hot), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="pass targets=None"):
        explainer.explain(pairs, labels)


def test_several_targets_per_sample():
    model = gap_model(seed=9)
    x = images(3, (9, 11))
    explainer = GradCAMPP(model)
    classes = explainer.explain(x, Classes([2, 0]))
    assert classes.shape == (3, 2, 9, 11, 1)
    assert_maps_close(classes[:, 0], explainer.explain(x, 2))
    assert_maps_close(classes[:, 1], explainer.explain(x, 0))
    top = explainer.explain(x, TopK(3))
    assert top.shape == (3, 3, 9, 11, 1)
    assert_maps_close(top[:, 0], explainer.explain(x))  # the best class is the predicted one
    order = np.argsort(-model(x).numpy(), axis=1, kind="stable")
    assert_maps_close(top[:, 2], explainer.explain(x, order[:, 2]))
    score = explainer.explain(x, lambda outputs: outputs[:, 1] - outputs[:, 3])
    expected = explainer.explain(x, np.tile(np.float32([0, 1, 0, -1]), (3, 1)))
    assert_maps_close(score, expected)


def test_integer_labels_never_broadcast_against_classes():
    # Three samples and three classes: (N,) labels are one class per sample, not a row of weights.
    model = gap_model(seed=10, classes=3)
    x = images(3, (9, 11))
    explainer = GradCAMPP(model)
    got = explainer.explain(x, np.array([2, 0, 1]))
    for i, label in enumerate([2, 0, 1]):
        assert_maps_close(got[i : i + 1], explainer.explain(x[i : i + 1], label))
    with pytest.raises(TypeError, match="one-hot rows"):
        explainer.explain(x, np.eye(3, dtype=np.int64))  # integer one-hot rows: say which
    with pytest.raises(TypeError, match="integer class indices"):
        explainer.explain(x, np.array([1.0, 0.0, 0.0]))  # one float row for three samples
    with pytest.raises(ValueError, match=r"one entry per input \(3\), got 2"):
        explainer.explain(x, np.array([1, 2]))
    with pytest.raises(ValueError, match="out of range"):
        explainer.explain(x, 3)


def test_bad_inputs_are_refused():
    model = gap_model(seed=11)
    explainer = GradCAMPP(model)
    channels_first = images(2, (9, 11)).transpose(0, 3, 1, 2)
    with pytest.raises(ValueError, match="channels-first"):
        explainer.explain(channels_first, 0)
    with pytest.raises(ValueError, match=r"\(None, 9, 11, 3\)"):
        explainer.explain(images(2, (8, 11)), 0)
    with pytest.raises(ValueError, match="no sample"):
        explainer.explain(np.zeros((0, 9, 11, 3), np.float32), 0)
    with pytest.raises(ValueError, match="NaN"):
        explainer.explain(np.full((1, 9, 11, 3), np.nan, np.float32), 0)
    with pytest.raises(TypeError, match="numeric"):
        explainer.explain(np.array([object()]), 0)
    with pytest.raises(TypeError, match=r"keras\.Model"):
        GradCAMPP(object())


# ------------------------------------------------------------------------- an untouched model


class FailOnDemand(keras.layers.Layer):
    """The identity, which raises while ``fail`` is set: an error in the middle of a pass."""

    fail = False

    def call(self, inputs):
        if FailOnDemand.fail:
            raise RuntimeError("forced failure")
        return inputs


def test_model_is_untouched_also_after_an_error():
    keras.utils.set_random_seed(12)
    inputs = keras.Input((9, 11, 3))
    h = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(5, 3, name="conv")(inputs))
    h = FailOnDemand(name="fail")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    x = images(2, (9, 11))
    before = snapshot(model)
    explainer = GradCAMPP(model, conv_layer="relu")
    FailOnDemand.fail = True
    try:
        with pytest.raises(RuntimeError, match="forced failure"):
            explainer.explain(x, 1)  # raises while the compiled pass is traced
    finally:
        FailOnDemand.fail = False
    assert_same_snapshot(before, snapshot(model))

    def failing_score(outputs):
        raise RuntimeError("score failure")

    with pytest.raises(RuntimeError, match="score failure"):
        explainer.explain(x, failing_score)  # raises after the eager forward pass
    assert_same_snapshot(before, snapshot(model))

    maps = explainer.explain(x, 1)  # explaining works again, with the same result as a new one
    assert_maps_close(maps, GradCAMPP(model, conv_layer="relu").explain(x, 1), rtol=0)
    assert float(tf.reduce_max(maps)) > 0
    assert_same_snapshot(before, snapshot(model))
    np.testing.assert_array_equal(model(x), model(x))


def test_pytorch_models_do_not_import_tensorflow():
    pytest.importorskip("torch")
    code = (
        "import sys, torch\n"
        "from gradcampp import GradCAMPP\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),\n"
        "    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
        "maps = GradCAMPP(net).explain(torch.rand(2, 3, 8, 8), 1)\n"
        "assert maps.shape == (2, 8, 8)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "False"]
