"""The PyTorch default-layer rule on the models where a plausible map came from the wrong tensor.

Random weights. Each model: the default layer docs/models.md states, a map equal to the one of
that layer named explicitly, or the documented warning or error.
"""

from __future__ import annotations

import pytest
import torch

from gradcampp import GradCAMPP
from gradcampp.backends.layout import Layout, TokenHint, read_layout
from gradcampp.backends.torch_backend import _is_norm

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def images(size, n=2, seed=1):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def default_layer(model, x):
    explainer = GradCAMPP(model)
    maps = explainer.explain(x)  # the predicted classes
    return explainer.backend.layer_name(x), maps


def test_token_hint_settles_an_ambiguous_count():
    # 17 tokens on a 64 x 64 input: 1 prefix + 4 x 4, or 8 prefix + 3 x 3
    assert read_layout((1, 17, 8), (64, 64)).ambiguous
    hinted = read_layout((1, 17, 8), (64, 64), TokenHint(prefix=1, grid=(4, 4)))
    assert hinted.layout == Layout("tokens", (4, 4), 1)
    assert read_layout((1, 17, 8), (64, 64), TokenHint(prefix=0)).layout is None


@pytest.mark.slow
def test_vgg_at_320_explains_the_map_before_the_adaptive_pool():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    x = images((320, 320), n=1)
    name, maps = default_layer(vgg, x)
    assert name == "features.30"  # 10 x 10, not avgpool's 7 x 7
    named = GradCAMPP(vgg, conv_layer="features.30").explain(x)
    torch.testing.assert_close(maps, named, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(1, 1\), before the adaptive pool 'avgpool'"):
        GradCAMPP(vgg).explain(images((32, 32), n=1), 0)


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 384])
def test_timm_vit_reads_its_own_token_layout(size):
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=2, dynamic_img_size=True
    ).eval()
    x = images((size, size), n=1)
    name, maps = default_layer(vit, x)
    assert name == "blocks.1.norm1"
    assert tuple(maps.shape) == (1, size, size)
    assert float(maps.max()) > 0


@pytest.mark.slow
def test_fallback_before_the_blocks_is_announced():
    torch.manual_seed(0)

    class Wrapped(torch.nn.Module):  # hides timm's attributes: counts alone are ambiguous
        def __init__(self):
            super().__init__()
            self.net = timm.create_model(
                "vit_tiny_patch16_224", pretrained=False, depth=2, dynamic_img_size=True
            )

        def forward(self, x):
            return self.net(x)

    model = Wrapped().eval()
    with pytest.warns(UserWarning, match=r"default layer is 'net\.patch_embed.*several ways") as w:
        name, _ = default_layer(model, images((64, 64), n=1))
    assert w[0].filename == __file__  # the user's line, however deep the choice is made
    assert name.startswith("net.patch_embed")


@pytest.mark.slow
def test_levit_default_is_a_token_stage_not_a_projection():
    torch.manual_seed(0)
    levit = timm.create_model("levit_128s", pretrained=False).eval()
    linear_norm = levit.stages[2].downsample.attn_downsample.kv
    assert type(linear_norm).__name__ == "LinearNorm" and not _is_norm(linear_norm)
    assert _is_norm(torch.nn.LayerNorm(4)) and _is_norm(torch.nn.BatchNorm1d(4))
    name, maps = default_layer(levit, images((224, 224), n=1))
    assert name == "stages"  # the last stage's tokens, 0 prefix + 4 x 4
    assert float(maps.max()) > 0


def test_compiled_model_is_explained_through_its_eager_module():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    compiled = torch.compile(resnet)
    x = images((64, 64))
    labels = torch.tensor([3, 7])
    eager = GradCAMPP(resnet, conv_layer="layer4").explain(x, labels)
    for name in ("layer4", "_orig_mod.layer4"):
        explainer = GradCAMPP(compiled, conv_layer=name)
        torch.testing.assert_close(explainer.explain(x, labels), eager, rtol=0, atol=1e-5)
        assert explainer.conv_layer is resnet.layer4
    assert default_layer(compiled, x)[0] == "layer4"
