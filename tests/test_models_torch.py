"""The models users have: vision transformers, Hugging Face, segmentation, detection.

Random weights only. Each model: the default layer by name, and a correct map (checked against a
reference written here with plain hooks and Eq. 19) or a ValueError; never a map from a tensor
that is not a feature map of the input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcampp import Classes, GradCAMPP, TopK
from gradcampp.targets import SegmentationTarget

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def reference_maps(model, layer, x, labels, to_grid):
    """Grad-CAM++ maps at ``layer``'s resolution, from plain hooks and Eq. 19 written out.

    ``to_grid`` turns the layer's output ``(N, ...)`` into ``(N, C, H, W)`` by hand.
    """
    kept = []
    handle = layer.register_forward_hook(lambda m, a, out: kept.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    logits = getattr(logits, "logits", logits)  # Hugging Face: a ModelOutput
    score = logits[torch.arange(len(labels)), labels].sum()
    (grad,) = torch.autograd.grad(score, kept[-1])
    a = to_grid(kept[-1].detach()).double()
    g = to_grid(grad).double()
    # Eq. 19: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), 0 where the denominator is 0
    denominator = 2 * g**2 + a.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = torch.where(denominator != 0, g**2 / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3))  # (N, C)
    return torch.relu((weights[:, :, None, None] * a).sum(dim=1)).float()


def assert_close_to_reference(ours, reference):
    assert ours.shape == reference.shape
    scale = reference.flatten(1).amax(dim=1)
    assert bool((scale > 0).all()), "a zero map tests nothing"
    error = (ours - reference).abs().flatten(1).amax(dim=1)
    assert bool((error <= 1e-3 * scale).all()), (error / scale).tolist()


def images(n, size, seed=1):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def vit_grid(tokens):
    """ViT-S/16 tokens (N, 197, 384) -> (N, 384, 14, 14): drop the class token, raster order."""
    return tokens[:, 1:].reshape(tokens.shape[0], 14, 14, -1).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False).eval()


@pytest.mark.slow
def test_vit_default_layer_is_the_last_blocks_tokens_and_matches_the_reference(vit):
    x = images(2, (224, 224))
    labels = torch.tensor([3, 7])
    explainer = GradCAMPP(vit)
    ours = explainer.explain(x, labels, upsample=False)
    assert explainer.backend.layer_name(x) == "blocks.11.norm1"
    assert explainer.conv_layer is vit.blocks[11].norm1
    reference = reference_maps(vit, vit.blocks[11].norm1, x, labels, vit_grid)
    assert_close_to_reference(ours, reference)
    named = GradCAMPP(vit, conv_layer="blocks.11.norm1", reshape_transform=vit_grid)
    assert_close_to_reference(named.explain(x, labels, upsample=False), reference)
    assert tuple(explainer.explain(x, labels).shape) == (2, 224, 224)


@pytest.mark.slow
def test_vit_layers_that_are_not_feature_maps_are_refused(vit):
    x = images(1, (224, 224))
    # the layer that was picked before: (N, heads, tokens, head_dim) read as an image
    with pytest.raises(ValueError, match=r"not a feature map.*reshape_transform"):
        GradCAMPP(vit, conv_layer="blocks.11.attn.k_norm").explain(x, 0)
    with pytest.raises(ValueError, match="reshape_transform must return"):
        GradCAMPP(vit, conv_layer="blocks.11.norm1", reshape_transform=lambda t: t).explain(x, 0)


@pytest.mark.slow
def test_deit_default_layer():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    x = images(1, (224, 224))
    explainer = GradCAMPP(model)
    maps = explainer.explain(x, 5, upsample=False)
    assert explainer.backend.layer_name(x) == "blocks.11.norm1"
    assert_close_to_reference(maps, reference_maps(model, model.blocks[11].norm1, x, [5], vit_grid))


@pytest.mark.slow
def test_swin_default_layer_is_the_channels_last_norm_and_matches_the_reference():
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    x = images(2, (224, 224), seed=2)
    labels = torch.tensor([1, 500])

    def nhwc_to_nchw(t):
        return t.permute(0, 3, 1, 2)

    reference = reference_maps(model, model.norm, x, labels, nhwc_to_nchw)
    explicit = GradCAMPP(model, conv_layer="norm", reshape_transform=nhwc_to_nchw)
    assert_close_to_reference(explicit.explain(x, labels, upsample=False), reference)
    automatic = GradCAMPP(model)
    assert_close_to_reference(automatic.explain(x, labels, upsample=False), reference)
    assert automatic.backend.layer_name(x) == "norm"


def _hf_resnet():
    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5
    )
    return transformers.ResNetForImageClassification(config).eval()


def test_hugging_face_outputs_are_read_through_logits():
    model = _hf_resnet()
    x = images(3, (32, 32))
    explainer = GradCAMPP(model)
    with torch.no_grad():
        logits = model(x).logits
    predicted = logits.argmax(dim=1)
    by_callable = explainer.explain(x, lambda o: o.logits[torch.arange(3), predicted])
    torch.testing.assert_close(explainer.explain(x), by_callable)
    torch.testing.assert_close(explainer.explain(x, predicted), by_callable)
    assert explainer.backend.layer_name(x) == "resnet.encoder.stages.1"
    top = explainer.explain(x, TopK(2))
    assert tuple(top.shape) == (3, 2, 32, 32)
    order = logits.argsort(dim=1, descending=True)[:, :2]
    torch.testing.assert_close(top, explainer.explain(x, Classes(order)))
    torch.testing.assert_close(top[:, 0], by_callable)


@pytest.mark.parametrize(
    "kind,layer",
    [("convnext", "convnext.encoder.stages.1"), ("vit", "vit.layers.1.layernorm_before")],
)
def test_hugging_face_default_layers(kind, layer):
    torch.manual_seed(0)
    if kind == "convnext":
        config = transformers.ConvNextConfig(
            hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5
        )
        model = transformers.ConvNextForImageClassification(config).eval()
    else:  # 32 x 32 images in 4 x 4 patches: 1 class token + an 8 x 8 grid
        config = transformers.ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=4,
            num_labels=5,
        )
        model = transformers.ViTForImageClassification(config).eval()
    x = images(2, (32, 32))
    explainer = GradCAMPP(model)
    maps = explainer.explain(x, upsample=False)
    assert explainer.backend.layer_name(x) == layer
    assert tuple(maps.shape) == (2, 8, 8) if kind == "vit" else (2, 2, 2)
    if kind == "vit":  # the patch-embedding convolution (the first layer) is not chosen
        module = dict(model.named_modules())[layer]
        predicted = model(x).logits.argmax(dim=1)

        def grid(tokens):
            return tokens[:, 1:].reshape(2, 8, 8, -1).permute(0, 3, 1, 2)

        assert_close_to_reference(maps, reference_maps(model, module, x, predicted, grid))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "fcn_resnet50"])
def test_segmentation_default_layer_is_the_backbones_last_map(name):
    torch.manual_seed(0)
    builder = getattr(torchvision.models.segmentation, name)
    model = builder(weights=None, weights_backbone=None, num_classes=4).eval()
    x = images(2, (48, 48))
    explainer = GradCAMPP(model)
    with pytest.raises(ValueError, match="SegmentationTarget"):
        explainer.explain(x)  # a dense output has no single predicted class
    maps = explainer.explain(x, 2)
    assert explainer.backend.layer_name(x) == "backbone.layer4"
    torch.testing.assert_close(maps, explainer.explain(x, SegmentationTarget(2)))

    def by_hand(outputs):
        logits = outputs["out"]
        return (logits[:, 2] * (logits.argmax(dim=1) == 2)).sum(dim=(1, 2))

    torch.testing.assert_close(maps, explainer.explain(x, by_hand))
    assert tuple(maps.shape) == (2, 48, 48) and bool(torch.isfinite(maps).all())


@pytest.mark.slow
def test_detection_default_layer_is_the_backbones_last_map():
    from gradcampp.targets import DetectionTarget

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=3,
        min_size=128,
        max_size=128,
        box_score_thresh=0.0,
    ).eval()
    x = images(1, (96, 96))  # resized to 128 x 128 inside the model
    explainer = GradCAMPP(model)
    with pytest.raises(ValueError, match="DetectionTarget"):
        explainer.explain(x)
    with torch.no_grad():
        detection = model(x)[0]
    box = detection["boxes"][0].tolist()
    label = int(detection["labels"][0])
    maps = explainer.explain(x, DetectionTarget(label, box))
    assert explainer.backend.layer_name(x) == "backbone.body.layer4"
    assert tuple(maps.shape) == (1, 96, 96) and float(maps.max()) > 0
    low = explainer.explain(x, DetectionTarget(label, box), upsample=False)
    assert tuple(low.shape) == (1, 4, 4)  # layer4 of the 128 x 128 image: stride 32


class _TokensOnly(torch.nn.Module):
    """Outputs that look like maps but are not: (N, heads, tokens, dim), a tiny token grid."""

    def __init__(self, tokens=17):
        super().__init__()
        self.tokens = tokens
        self.embed = torch.nn.Linear(3, 8)
        self.split = torch.nn.Identity()
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2)[:, : self.tokens])  # (N, tokens, 8)
        heads = self.split(t.reshape(t.shape[0], self.tokens, 2, 4).transpose(1, 2))
        return self.head(heads.transpose(1, 2).flatten(2).mean(dim=1))


def test_no_map_from_outputs_that_are_not_feature_maps():
    model = _TokensOnly().eval()
    x = images(1, (64, 64))
    # 17 tokens on 64 x 64 inputs: 1 + 4 x 4 or 8 + 3 x 3: ambiguous, and (1, 2, 17, 4) is no map
    with pytest.raises(ValueError, match=r"candidate layers: .*'split' \(1, 2, 17, 4\)"):
        GradCAMPP(model).explain(x, 0)
    with pytest.raises(ValueError, match=r"several ways.*reshape_transform.*t\[:, 1:\]"):
        GradCAMPP(model, conv_layer="embed").explain(x, 0)

    def grid(t):
        return t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    maps = GradCAMPP(model, conv_layer="embed", reshape_transform=grid).explain(x, 0)
    assert tuple(maps.shape) == (1, 64, 64)


class _ChannelsLast(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.to_nhwc = torch.nn.Identity()
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x):
        nhwc = self.to_nhwc(self.conv(x).permute(0, 2, 3, 1))
        return self.fc(nhwc.mean(dim=(1, 2)))


def test_channels_last_output_is_recognised_when_only_that_reading_fits():
    torch.manual_seed(0)
    model = _ChannelsLast().eval()
    x = images(2, (16, 12))
    # conv: (N, 5, 8, 6); to_nhwc: (N, 8, 6, 5), which as channels-first would be 6 x 5
    explainer = GradCAMPP(model)
    ours = explainer.explain(x, [0, 2], upsample=False)
    assert explainer.backend.layer_name(x) == "to_nhwc"
    reference = GradCAMPP(model, conv_layer="conv").explain(x, [0, 2], upsample=False)
    torch.testing.assert_close(ours, reference)
    assert np.isfinite(ours.numpy()).all()
