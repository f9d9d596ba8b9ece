"""GradCAM and GradCAMPP on PyTorch models: values, shapes, dtypes, a model left alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import assert_same_snapshot, make_gapnet, snapshot

from gradcampp import Classes, GradCAM, GradCAMPP, TopK
from gradcampp.resize import resize

torchvision = pytest.importorskip("torchvision")


def _max_rel_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest difference of each map, relative to that map's maximum."""
    axes = tuple(range(1, theirs.ndim))
    scale = np.maximum(np.abs(theirs).max(axis=axes, keepdims=True), 1e-30)
    return float((np.abs(ours - theirs) / scale).max())


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch,layer", [("resnet18", "layer4"), ("vgg11", "features.19"), ("vgg11", "features.18")]
)
def test_gradcam_equals_captum_layer_gradcam(arch, layer):
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 500, 999])
    module = dict(model.named_modules())[layer]
    theirs = captum_attr.LayerGradCam(model, module).attribute(
        x, target=labels, relu_attributions=True
    )
    ours = GradCAM(model, conv_layer=layer).explain(x, labels, upsample=False)
    assert ours.shape == theirs.shape[:1] + theirs.shape[2:]
    assert theirs.max() > 0
    assert _max_rel_error(ours.numpy(), theirs[:, 0].detach().numpy()) <= 1e-5


def test_auto_layer_is_last_spatial_module():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    assert GradCAMPP(resnet).backend.layer_name(x) == "layer4"
    assert GradCAMPP(make_gapnet()).backend.layer_name(x) == "relu"


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_batch_size_does_not_change_results(batch_size):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(7, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    full = GradCAMPP(model, batch_size=32).explain(x, TopK(2))
    chunked = GradCAMPP(model, batch_size=batch_size).explain(x, TopK(2))
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-6 * float(full.max()))


def test_shapes_types_and_upsampling():
    model = make_gapnet()
    x = torch.randn(2, 3, 10, 14)
    maps = GradCAMPP(model).explain(x, [0, 3])
    assert maps.shape == (2, 10, 14) and maps.dtype == torch.float32
    low = GradCAMPP(model).explain(x, [0, 3], upsample=False)
    torch.testing.assert_close(maps, torch.clamp(resize(low, (10, 14)), min=0))
    as_numpy = GradCAMPP(model).explain(x.numpy(), np.array([0, 3]))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    np.testing.assert_allclose(as_numpy, maps.numpy(), rtol=1e-6, atol=1e-7)
    assert float(maps.min()) >= 0


def test_xplique_variant_is_unclipped_and_uses_tensorflow_table():
    model = make_gapnet(seed=4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    low = GradCAMPP(model, variant="xplique").explain(x, 1, upsample=False)
    high = GradCAMPP(model, variant="xplique").explain(x, 1)
    torch.testing.assert_close(high, resize(low, (4, 4), kernel_table=True))
    sharp = torch.zeros(1, 5, 5)
    sharp[0, 2, 2] = 1.0
    assert float(resize(sharp, (20, 20), kernel_table=True).min()) < 0  # bicubic overshoot


def test_targets_forms_agree():
    model = make_gapnet(seed=1)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    explainer = GradCAMPP(model)
    with torch.no_grad():
        logits = model(x)
    predicted = logits.argmax(dim=1)
    by_index = explainer.explain(x, predicted)
    torch.testing.assert_close(explainer.explain(x), by_index)
    torch.testing.assert_close(explainer.explain(x, torch.eye(4)[predicted]), by_index)
    torch.testing.assert_close(
        explainer.explain(x, lambda out: out.gather(1, predicted[:, None])[:, 0]), by_index
    )
    top = explainer.explain(x, TopK(3))
    assert top.shape == (4, 3, 8, 8)
    order = logits.argsort(dim=1, descending=True)[:, :3]
    for t in range(3):
        torch.testing.assert_close(top[:, t], explainer.explain(x, order[:, t]))
    pairs = explainer.explain(x, Classes([2, 0]))
    torch.testing.assert_close(pairs[:, 1], explainer.explain(x, 0))
    for cls in range(4):
        torch.testing.assert_close(explainer.explain(x, cls), explainer.explain(x, [cls] * 4))


def test_model_untouched_after_success_and_after_errors():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    before = snapshot(model)
    x = torch.randn(2, 3, 64, 64)
    GradCAMPP(model).explain(x, TopK(2))
    assert_same_snapshot(before, snapshot(model))

    def failing_score(outputs):
        raise RuntimeError("score failed")

    with pytest.raises(RuntimeError, match="score failed"):
        GradCAMPP(model).explain(x, failing_score)
    assert_same_snapshot(before, snapshot(model))
    with pytest.raises(ValueError, match="out of range"):
        GradCAMPP(model, conv_layer="layer3").explain(x, 1000)
    assert_same_snapshot(before, snapshot(model))
    # and it still works afterwards
    assert GradCAMPP(model).explain(x, 3).shape == (2, 64, 64)


def test_explain_runs_the_model_in_eval_mode():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    x = torch.randn(3, 3, 64, 64)
    expected = GradCAMPP(copy.deepcopy(model).eval()).explain(x, 1)
    torch.testing.assert_close(GradCAMPP(model.train()).explain(x, 1), expected)
    assert model.training


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_works_inside_grad_contexts(context):
    model = make_gapnet(seed=2)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    expected = GradCAMPP(model).explain(x, 1)
    with context():
        x_in = x.clone()
        maps = GradCAMPP(model).explain(x_in, 1)
        grad_mode = torch.is_grad_enabled()
    torch.testing.assert_close(maps.clone(), expected)
    assert grad_mode == (context is torch.enable_grad)


def test_inplace_relu_after_the_layer():
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    assert model.features[17].inplace  # the ReLU right after the explained conv
    x = torch.randn(2, 3, 64, 64)
    for cls in (GradCAMPP, GradCAM):
        torch.testing.assert_close(
            cls(model, conv_layer="features.16").explain(x, 7),
            cls(reference, conv_layer="features.16").explain(x, 7),
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models(dtype):
    model = make_gapnet(seed=8)
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    expected = GradCAMPP(model).explain(x, 2)
    low = copy.deepcopy(model).to(dtype)
    maps = GradCAMPP(low).explain(x, 2)
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert next(low.parameters()).dtype == dtype
    assert _max_rel_error(maps.numpy(), expected.numpy()) < 0.05


@pytest.mark.parametrize("rank,size", [(1, (30,)), (3, (6, 8, 10))])
def test_one_and_three_dimensional_inputs(rank, size):
    model = make_gapnet(rank)
    x = torch.randn(2, 3, *size)
    for explainer in (GradCAMPP(model), GradCAM(model)):
        maps = explainer.explain(x, TopK(2))
        assert maps.shape == (2, 2, *size)
        assert torch.isfinite(maps).all() and float(maps.min()) >= 0


class _Unused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_gapnet()
        self.spare = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize(
    "make_call,error,message",
    [
        (lambda m: GradCAMPP(m).explain(torch.randn(3, 8)), ValueError, "1, 2 or 3 spatial"),
        (lambda m: GradCAMPP(m).explain(torch.randn(0, 3, 8, 8)), ValueError, "no sample"),
        (lambda m: GradCAMPP(m).explain(torch.randn(2, 3, 8, 8), [1]), ValueError, "one entry"),
        (lambda m: GradCAMPP(m).explain(torch.randn(2, 3, 8, 8), [0.0, 1.0]), TypeError, "integer"),
        (lambda m: GradCAMPP(m).explain(torch.randn(2, 3, 8, 8), [0, 4]), ValueError, "range"),
        (lambda m: GradCAMPP(m).explain(torch.randn(2, 3, 8, 8), -1), ValueError, "non-negative"),
        (
            lambda m: GradCAMPP(m).explain(torch.randn(2, 3, 8, 8), np.eye(4, dtype=int)[:2]),
            TypeError,
            "Classes",
        ),
        (lambda m: GradCAMPP(m).explain(torch.full((1, 3, 8, 8), float("nan"))), ValueError, "NaN"),
        (lambda m: GradCAMPP(m).explain(torch.randn(2, 3, 8, 8), TopK(5)), ValueError, "TopK"),
        (
            lambda m: GradCAMPP(m, conv_layer="fc").explain(torch.randn(1, 3, 8, 8)),
            ValueError,
            "spatial extent",
        ),
        (
            lambda m: GradCAMPP(m, conv_layer="relu").explain(torch.randn(1, 3, 8, 8), lambda o: o),
            ValueError,
            "one score per sample",
        ),
        (lambda m: GradCAMPP(m, conv_layer="rleu"), ValueError, "nearest names: 'relu'"),
        (lambda m: GradCAMPP(m, conv_layer=3), TypeError, "conv_layer must be"),
        (lambda m: GradCAMPP(m, conv_layer=torch.nn.ReLU()), ValueError, "not a submodule"),
        (lambda m: GradCAMPP(m, batch_size=0), ValueError, "batch_size"),
        (lambda m: GradCAMPP(m, variant="fast"), ValueError, "variant"),
        (lambda m: GradCAM(m, variant="authors"), ValueError, "variant"),
        (lambda m: GradCAMPP(m).explain("images"), TypeError, "numeric"),
        (lambda m: GradCAMPP(lambda x: x), TypeError, "torch.nn.Module"),
    ],
)
def test_bad_input_gets_a_clear_error(make_call, error, message):
    with pytest.raises(error, match=message):
        make_call(make_gapnet())


def test_layer_the_forward_pass_never_reaches():
    model = _Unused()
    with pytest.raises(ValueError, match="never reached layer 'spare'"):
        GradCAMPP(model, conv_layer="spare").explain(torch.randn(1, 3, 8, 8))


def test_score_that_ignores_the_layer():
    model = make_gapnet()
    with pytest.raises(ValueError, match="does not depend"):
        GradCAMPP(model, conv_layer="relu").explain(
            torch.randn(2, 3, 8, 8), lambda out: torch.ones(2, requires_grad=True)
        )


def test_output_layer_reads_scores_before_a_softmax():
    net = make_gapnet(seed=9)
    with_softmax = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = GradCAMPP(net).explain(x, 1)
    ours = GradCAMPP(with_softmax, output_layer="0").explain(x, 1)
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(GradCAMPP(with_softmax).explain(x, 1), expected)


class _Scaled(torch.nn.Module):
    """A 2x2 max pool ``conv`` of the input times ``scale``, summed into one score per class:
    every gradient is 1, so Grad-CAM's map is the pooled, scaled input."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.conv = torch.nn.MaxPool2d(2)

    def forward(self, x):
        return self.conv(x * self.scale).sum(dim=(1, 2, 3))[:, None] * torch.ones(1, 2)


def test_a_map_that_overflows_in_the_resize_is_an_error():
    # A step from 0 to 3.3e38 (finite float32) overshoots by 7% under bicubic interpolation, past
    # the float32 limit: infinite values must not be returned.
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0
    model = _Scaled(3.3e38)
    low = GradCAM(model, conv_layer="conv").explain(x, 0, upsample=False)
    assert torch.isfinite(low).all() and float(low.max()) == pytest.approx(3.3e38, rel=1e-6)
    with pytest.raises(ValueError, match="not finite: the weighted sum of the feature maps"):
        GradCAM(model, conv_layer="conv").explain(x, 0)


def test_non_finite_activations_are_named_as_the_cause():
    model = _Scaled(float("inf"))
    with pytest.raises(ValueError, match="activations hold NaN or Inf"):
        GradCAM(model, conv_layer="conv").explain(torch.ones(1, 1, 8, 8), 0, upsample=False)
