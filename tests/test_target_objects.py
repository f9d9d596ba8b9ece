"""pytorch-grad-cam's conventions in the main API: target objects, 1 x 1 layers, bilinear resize."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_gapnet  # noqa: E402

from gradcampp import GradCAM, GradCAMPP  # noqa: E402
from gradcampp.pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from gradcampp.resize import linear_taps, resize  # noqa: E402


def _inputs(n: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(21))


@pytest.mark.parametrize("batch_size", [32, 3])
def test_a_list_of_target_objects_equals_class_indices(batch_size):
    model = make_gapnet()
    x = _inputs()
    classes = [2, 0, 3, 1]
    explainer = GradCAMPP(model, batch_size=batch_size)
    by_objects = explainer.explain(x, [ClassifierOutputTarget(c) for c in classes])
    by_indices = explainer.explain(x, np.array(classes))
    assert float(by_indices.max()) > 0
    torch.testing.assert_close(by_objects, by_indices, rtol=0, atol=0)


def test_any_object_with_the_call_convention_is_accepted():
    """pytorch-grad-cam's own classes, and a plain function of one sample's output."""
    pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = make_gapnet()
    x = _inputs(2)
    theirs = GradCAM(model).explain(x, [pgc_targets.ClassifierOutputSoftmaxTarget(1)] * 2)
    mine = GradCAM(model).explain(x, [ClassifierOutputSoftmaxTarget(1)] * 2)
    torch.testing.assert_close(mine, theirs)

    def margin(row):  # one sample's logits (4,) -> a scalar
        return row[1] - row[0]

    weights = np.zeros((2, 4), np.float32)
    weights[:, 1], weights[:, 0] = 1.0, -1.0
    torch.testing.assert_close(
        GradCAM(model).explain(x, [margin, margin]), GradCAM(model).explain(x, weights)
    )


@pytest.mark.parametrize(
    "targets,error,message",
    [
        (["cat", "dog"], TypeError, "target objects called on one sample's output"),
        ([ClassifierOutputTarget(1), 2], TypeError, "target objects .* only, got a int"),
        ([ClassifierOutputTarget(1)], ValueError, "1 target objects for 2 inputs"),
        ([lambda row: row, lambda row: row], ValueError, "one score for its sample"),
        (object(), TypeError, "target objects called on one sample's output"),
    ],
)
def test_other_objects_get_an_error_naming_what_is_accepted(targets, error, message):
    with pytest.raises(error, match=message):
        GradCAMPP(make_gapnet()).explain(_inputs(2), targets)


def test_a_named_one_by_one_layer_warns_and_gives_the_constant_map():
    """Grad-CAM at GapNet's global pool: one cell, the map is relu(logit - bias) everywhere."""
    model = make_gapnet()
    x = _inputs(3)
    with pytest.warns(UserWarning, match="'pool' outputs a 1 x 1 map .* carries no location") as w:
        maps = GradCAM(model, conv_layer="pool").explain(x, np.array([0, 1, 2]))
    assert w[0].filename == __file__  # the warning names the user's line
    with torch.no_grad():
        logits = model(x)
    expected = torch.relu(logits[torch.arange(3), [0, 1, 2]] - model.fc.bias[[0, 1, 2]])
    assert maps.shape == (3, 8, 8)
    torch.testing.assert_close(maps, expected[:, None, None].expand(3, 8, 8).contiguous())
    with pytest.warns(UserWarning, match="carries no location"):
        plus = GradCAMPP(model, conv_layer="pool").explain(x, np.array([0, 1, 2]))
    assert torch.equal(plus, plus[:, :1, :1].expand_as(plus))  # constant per map


class _StridedNet(torch.nn.Module):
    """One convolution of stride 8, then ReLU, global pool and a linear layer.

    On 8 x 8 inputs its only map is 1 x 1.
    """

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=8, stride=8)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def test_the_default_layer_is_never_one_by_one():
    torch.manual_seed(0)
    model = _StridedNet().eval()
    with pytest.raises(ValueError, match="no module of the model outputs a feature map"):
        GradCAMPP(model).explain(_inputs(1), 0)


def _bilinear_references(maps: np.ndarray, size: tuple[int, int]) -> list[tuple[np.ndarray, float]]:
    """OpenCV's bilinear resize (when installed) and PyTorch's, each with its tolerance.

    PyTorch rounds the source position differently when it shrinks an axis (up to 3e-5 here).
    """
    results = []
    try:
        import cv2

        results.append((np.stack([cv2.resize(m, (size[1], size[0])) for m in maps]), 2e-6))
    except ImportError:
        pass
    tensor = torch.from_numpy(maps)[:, None]
    resized = torch.nn.functional.interpolate(tensor, size, mode="bilinear", align_corners=False)
    results.append((resized[:, 0].numpy(), 5e-5))
    return results


@pytest.mark.parametrize(
    "shape,size",
    [((7, 7), (224, 224)), ((2, 1), (40, 32)), ((13, 9), (5, 20)), ((300, 7), (257, 11))],
)
def test_linear_resize_is_opencv_bilinear(shape, size):
    maps = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    ours = resize(maps, size, method="linear")
    for reference, tolerance in _bilinear_references(maps, size):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance)


def test_linear_resize_of_volumes_and_signals_is_torch_linear():
    rng = np.random.default_rng(1)
    volume = rng.random((1, 1, 3, 4, 5), dtype=np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(volume), (7, 9, 2), mode="trilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(resize(volume, (7, 9, 2), method="linear"), expected, atol=2e-6)
    first, weights = linear_taps(4, 8)
    assert first.tolist() == [-1, 0, 0, 1, 1, 2, 2, 3]
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        resize(volume, (7, 9, 2), method="nearest")  # type: ignore[arg-type]


def test_reproducing_variant_resizes_bilinearly():
    torch.manual_seed(0)
    model = _StridedNet().eval()
    x = _inputs(2, 40)  # a 5 x 5 map
    explainer = GradCAMPP(model, conv_layer="conv", variant="pytorch-grad-cam")
    low = explainer.explain(x, 1, upsample=False)
    high = explainer.explain(x, 1)
    assert low.shape == (2, 5, 5) and float(low.max()) > 0
    expected = torch.nn.functional.interpolate(low[:, None], (40, 40), mode="bilinear")[:, 0]
    torch.testing.assert_close(high, expected)


@pytest.mark.slow
def test_keras_models_take_target_objects_too():
    """Per-sample callables reach the Keras backend as callables, not as predicted classes."""
    pytest.importorskip("keras")
    from keras_helpers import gap_model

    model = gap_model()
    x = np.random.default_rng(4).random((2, 9, 11, 3), dtype=np.float32)
    by_objects = GradCAMPP(model).explain(x, [lambda row: row[1], lambda row: row[3]])
    by_indices = GradCAMPP(model).explain(x, np.array([1, 3]))
    predicted = GradCAMPP(model).explain(x)
    np.testing.assert_allclose(np.asarray(by_objects), np.asarray(by_indices), rtol=1e-6)
    assert not np.allclose(np.asarray(by_objects), np.asarray(predicted))
