"""``gradcampp.pytorch_grad_cam`` against pytorch-grad-cam 1.5.7 itself, case by case.

The cases are pytorch-grad-cam's README example and its own test cases (torchvision ResNet-18,
VGG-11, DenseNet-161, MobileNet-V2 and EfficientNet-B0 with seeded random weights; batches of 1
and 4; 224 x 224, 128 x 128 and 40 x 32 inputs; its target objects; a one-channel input; several
target layers), each run twice with only the import changed. The default variant must give
pytorch-grad-cam's maps to 1e-4 of each map's maximum, and aug_smooth / eigen_smooth to 1e-3.
Every model, batch size, input size and target appears at least once; the full product would be
too slow for CI (DenseNet-161 alone at 224 x 224, batch 4, takes tens of seconds per call).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pgc = pytest.importorskip("pytorch_grad_cam")
pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

from conftest import assert_same_snapshot, snapshot  # noqa: E402

import gradcampp.pytorch_grad_cam as ours  # noqa: E402
from gradcampp.pytorch_grad_cam.utils import model_targets as our_targets  # noqa: E402

MAP_TOLERANCE = 1e-4  # of each map's maximum, for the reproducing variant
SMOOTH_TOLERANCE = 1e-3  # aug_smooth and eigen_smooth


class OneLogit(torch.nn.Module):
    """A classifier cut down to one logit ``(N, 1)``: a binary classifier or a regressor."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[:, :1]


def _model(arch: str, channels: int = 3, one_logit: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    if channels != 3:  # pytorch-grad-cam's one-channel test: ResNet-18 with a 1-channel conv1
        model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    model = OneLogit(model) if one_logit else model
    return model.eval()


def _layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    net = model.net if isinstance(model, OneLogit) else model
    return dict(net.named_modules())[name]


def _targets(kind: str, batch: int, module):
    """pytorch-grad-cam's targets, from pytorch-grad-cam (``module``) or from ours."""
    if kind == "none":
        return None
    if kind == "class":
        return [module.ClassifierOutputTarget(100 + i) for i in range(batch)]
    if kind == "softmax":
        return [module.ClassifierOutputSoftmaxTarget(7) for _ in range(batch)]
    if kind == "binary":
        return [module.BinaryClassifierOutputTarget(i % 2) for i in range(batch)]
    if kind == "raw":
        return [module.RawScoresOutputTarget() for _ in range(batch)]
    raise ValueError(kind)


def _compare(ours_maps: np.ndarray, theirs: np.ndarray, tolerance: float) -> None:
    assert ours_maps.dtype == np.float32 and ours_maps.shape == theirs.shape
    peak = theirs.reshape(len(theirs), -1).max(axis=1)
    error = np.abs(ours_maps - theirs).reshape(len(theirs), -1).max(axis=1)
    assert (error <= tolerance * np.maximum(peak, 1.0)).all(), (error, peak)


# (arch, layers, batch, input size (H, W), targets, method, one-channel / one-logit)
CASES = [
    ("resnet18", ["layer4.1"], 4, (224, 224), "none", "GradCAMPlusPlus", {}),
    ("resnet18", ["layer4.1", "layer4.0"], 1, (40, 32), "none", "GradCAM", {}),
    ("resnet18", ["layer4"], 2, (64, 64), "none", "GradCAMPlusPlus", {"channels": 1}),
    ("vgg11", ["features.19"], 4, (128, 128), "softmax", "GradCAMPlusPlus", {}),
    ("vgg11", ["features.19"], 1, (40, 32), "class", "GradCAMPlusPlus", {}),
    # not features.norm5 (nor MobileNet's features.18.1): an in-place ReLU follows it, which
    # pytorch-grad-cam on a CPU also applies to the activations it stored (they share memory with
    # the layer's output; on a GPU they are a copy); ours are the layer's output
    ("densenet161", ["features.denseblock4"], 1, (128, 128), "class", "GradCAMPlusPlus", {}),
    ("mobilenet_v2", ["features.18"], 4, (40, 32), "binary", "GradCAMPlusPlus", {"one_logit": 1}),
    ("efficientnet_b0", ["features.7.0"], 1, (128, 128), "raw", "GradCAM", {"one_logit": 1}),
    ("efficientnet_b0", ["features.7.0"], 4, (224, 224), "class", "GradCAMPlusPlus", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch,layers,batch,size,kind,method,options", CASES)
def test_maps_equal_pytorch_grad_cam(arch, layers, batch, size, kind, method, options):
    model = _model(arch, **options)
    channels = options.get("channels", 3)
    x = torch.randn(batch, channels, *size, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    cam = getattr(ours, method)(model=model, target_layers=[_layer(model, n) for n in layers])
    with cam:
        mine = cam(input_tensor=x, targets=_targets(kind, batch, our_targets))
        outputs = cam.outputs
    assert_same_snapshot(before, snapshot(model))  # model, grads and hooks untouched
    with getattr(pgc, method)(model=model, target_layers=[_layer(model, n) for n in layers]) as c:
        theirs = c(input_tensor=x, targets=_targets(kind, batch, pgc_targets))
        torch.testing.assert_close(outputs, c.outputs.detach())
    assert mine.shape == (batch, *size)
    # scaled maps peak near 1 (lower where the layer's map is within ~1e-7 of constant: its
    # range is then divided by 1e-7 + range)
    assert mine.min() >= 0.0 and float(mine.max()) > 0.3
    _compare(mine, theirs, MAP_TOLERANCE)


@pytest.mark.slow
def test_named_layer_with_a_one_by_one_output_warns_and_gives_their_constant_map():
    """DenseNet-161's last map at 40 x 32 is 1 x 1 (pytorch-grad-cam's own test sizes)."""
    model = _model("densenet161")
    x = torch.randn(1, 3, 40, 32, generator=torch.Generator().manual_seed(2))
    targets = [our_targets.ClassifierOutputTarget(3)]
    with ours.GradCAMPlusPlus(model=model, target_layers=[model.features.norm5]) as cam:
        with pytest.warns(UserWarning, match="carries no location"):
            mine = cam(input_tensor=x, targets=targets)
    with pgc.GradCAMPlusPlus(model=model, target_layers=[model.features.norm5]) as cam:
        theirs = cam(input_tensor=x, targets=[pgc_targets.ClassifierOutputTarget(3)])
    assert mine.shape == theirs.shape == (1, 40, 32)
    np.testing.assert_array_equal(mine, theirs)  # a constant map scales to zeros in both
    np.testing.assert_array_equal(mine, np.zeros((1, 40, 32), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,aug_smooth,eigen_smooth,kind",
    [
        ("GradCAMPlusPlus", True, False, "none"),
        ("GradCAMPlusPlus", False, True, "class"),
        ("GradCAM", True, True, "class"),
    ],
)
def test_aug_and_eigen_smooth_equal_pytorch_grad_cam(method, aug_smooth, eigen_smooth, kind):
    model = _model("resnet18")
    x = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(3))
    layers = [model.layer4[-1]]
    with getattr(ours, method)(model=model, target_layers=layers) as cam:
        mine = cam(x, _targets(kind, 2, our_targets), aug_smooth, eigen_smooth)
    with getattr(pgc, method)(model=model, target_layers=layers) as cam:
        theirs = cam(x, _targets(kind, 2, pgc_targets), aug_smooth, eigen_smooth)
    assert mine.shape == (2, 96, 64) and float(mine.max()) > 0.3  # a mean of six [0, 1] maps
    _compare(mine, theirs, SMOOTH_TOLERANCE)


def test_readme_example_runs_with_only_the_import_changed():
    """pytorch-grad-cam's README example, the imports rewritten, on a smaller network."""
    from gradcampp.pytorch_grad_cam import GradCAM
    from gradcampp.pytorch_grad_cam.utils.image import show_cam_on_image
    from gradcampp.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _model("resnet18")
    target_layers = [model.layer4[-1]]
    rgb_img = np.random.default_rng(0).random((224, 224, 3), dtype=np.float32)
    input_tensor = ours.utils.image.preprocess_image(rgb_img)
    targets = [ClassifierOutputTarget(281)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
        grayscale_cam = grayscale_cam[0, :]
        visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
        model_outputs = cam.outputs
    assert visualization.shape == (224, 224, 3) and visualization.dtype == np.uint8
    with torch.no_grad():
        torch.testing.assert_close(model_outputs, model(input_tensor))
    with pgc.GradCAM(model=model, target_layers=target_layers) as cam:
        theirs = cam(input_tensor=input_tensor, targets=[pgc_targets.ClassifierOutputTarget(281)])
    _compare(grayscale_cam[None], theirs, MAP_TOLERANCE)


class _TinySegmenter(torch.nn.Module):
    """Per-pixel logits ``(N, 3, H, W)`` from a small strided network."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x):
        logits = self.head(self.body(x))
        return torch.nn.functional.interpolate(logits, size=x.shape[2:], mode="bilinear")


class _TinyDetector(torch.nn.Module):
    """torchvision's detection output format: per image a dict of boxes, labels and scores."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU()
        )
        self.box = torch.nn.Linear(8, 4)
        self.score = torch.nn.Linear(8, 2)

    def forward(self, x):
        pooled = self.body(x).mean(dim=(2, 3))
        anchors = torch.tensor([[4.0, 4.0, 20.0, 20.0], [10.0, 2.0, 30.0, 14.0]])
        results = []
        for row in pooled:
            boxes, scores = anchors + self.box(row), self.score(row).sigmoid()
            results.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "scores": scores})
        return results


@pytest.mark.parametrize("method", ["GradCAMPlusPlus", "GradCAM"])
def test_segmentation_and_detection_targets_equal_pytorch_grad_cam(method):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    segmenter = _TinySegmenter().eval()
    mask = np.zeros((32, 32), np.float32)
    mask[8:20, 4:24] = 1
    results = []
    for module, library in ((our_targets, ours), (pgc_targets, pgc)):
        targets = [module.SemanticSegmentationTarget(1, mask) for _ in range(2)]
        with getattr(library, method)(segmenter, [segmenter.body[2]]) as cam:
            results.append(cam(x, targets))
    _compare(*results, MAP_TOLERANCE)

    detector = _TinyDetector().eval()
    boxes = np.array([[5.0, 5.0, 19.0, 21.0], [10.0, 3.0, 29.0, 15.0]], np.float32)
    results = []
    for module, library in ((our_targets, ours), (pgc_targets, pgc)):
        targets = [module.FasterRCNNBoxScoreTarget([1, 2], boxes) for _ in range(2)]
        with getattr(library, method)(detector, [detector.body[0]]) as cam:
            results.append(cam(x, targets))
    assert results[0].max() == pytest.approx(1.0, abs=1e-6)
    _compare(*results, MAP_TOLERANCE)


def test_target_objects_score_one_sample_as_theirs_do():
    """Each target object, called on one sample's output, gives pytorch-grad-cam's score."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 10, generator=generator)
    pairs = [
        ("ClassifierOutputTarget", (3,)),
        ("ClassifierOutputSoftmaxTarget", (4,)),
        ("ClassifierOutputReST", (5,)),
        ("BinaryClassifierOutputTarget", (0,)),
        ("BinaryClassifierOutputTarget", (1,)),
        ("RawScoresOutputTarget", ()),
        ("SoftmaxOutputTarget", ()),
    ]
    for name, args in pairs:
        for value in (logits[0], logits):  # one sample, and the batch form where it exists
            mine = getattr(our_targets, name)(*args)(value)
            theirs = getattr(pgc_targets, name)(*args)(value)
            torch.testing.assert_close(mine, theirs)
    dense = torch.randn(3, 8, 8, generator=generator)
    mask = (np.arange(64).reshape(8, 8) % 3 == 0).astype(np.float32)
    torch.testing.assert_close(
        our_targets.SemanticSegmentationTarget(2, mask)(dense),
        pgc_targets.SemanticSegmentationTarget(2, mask)(dense),
    )
    detections = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]]),
        "labels": torch.tensor([3, 4]),
        "scores": torch.tensor([0.9, 0.6]),
    }
    for labels, threshold in (([4], 0.5), ([3], 0.5), ([3, 4], 0.1), ([4], 0.99)):
        boxes = np.array([[6.0, 4.0, 19.0, 21.0], [1.0, 0.0, 10.0, 11.0]][: len(labels)])
        mine = our_targets.FasterRCNNBoxScoreTarget(labels, boxes, threshold)(detections)
        theirs = pgc_targets.FasterRCNNBoxScoreTarget(labels, boxes, threshold)(detections)
        torch.testing.assert_close(mine, theirs)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
    assert our_targets.FasterRCNNBoxScoreTarget([1], np.ones((1, 4)))(empty).tolist() == [0.0]


def test_eigen_projection_equals_theirs():
    svd = pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations")
    from gradcampp.pytorch_grad_cam.utils import get_2d_projection

    weighted = np.random.default_rng(8).standard_normal((3, 16, 5, 6)).astype(np.float32)
    weighted[0, 2, 1, 1] = np.nan  # read as 0 by both
    copy = weighted.copy()
    mine = get_2d_projection(weighted)
    np.testing.assert_array_equal(np.isnan(weighted), np.isnan(copy))  # input not modified
    np.testing.assert_allclose(mine, svd.get_2d_projection(weighted), rtol=0, atol=1e-5)
    assert mine.dtype == np.float32 and mine.shape == (3, 5, 6)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_hooks_are_released_after_with_and_after_an_exception():
    torch.manual_seed(0)
    model = _model("resnet18")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    for method in ("GradCAM", "GradCAMPlusPlus"):
        with getattr(ours, method)(model=model, target_layers=[model.layer4[-1]]) as cam:
            cam(input_tensor=x)
            assert _hook_count(model) == 0  # hooks live only during a call
        assert _hook_count(model) == 0
        with pytest.raises(RuntimeError, match="in the block"):
            with getattr(ours, method)(model=model, target_layers=[model.layer4[-1]]) as cam:
                cam(input_tensor=x)
                raise RuntimeError("raised in the block")
        assert _hook_count(model) == 0

        def failing(output):
            raise IndexError("a target that fails inside the call")

        # pytorch-grad-cam's __exit__ swallows an IndexError; ours lets it through
        with pytest.raises(IndexError, match="fails inside"):
            with getattr(ours, method)(model=model, target_layers=[model.layer4[-1]]) as cam:
                cam(input_tensor=x, targets=[failing])
        assert _hook_count(model) == 0


def test_paper_variant_changes_the_weights_only_by_the_epsilon_and_resize():
    """``variant="paper"``: Eq. 19 without pytorch-grad-cam's 1e-6; still scaled to [0, 1]."""
    model = _model("resnet18")
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    layers = [model.layer4[-1]]
    exact = ours.GradCAMPlusPlus(model, layers, variant="paper")(x)
    reproduced = ours.GradCAMPlusPlus(model, layers)(x)
    assert exact.shape == reproduced.shape == (2, 96, 96)
    assert exact.min() >= 0 and exact.max() == pytest.approx(1.0, abs=1e-6)
    # the reference: our own explainer's raw maps, upsampled bicubically, then min-max scaled
    from gradcampp import GradCAMPP

    raw = GradCAMPP(model, conv_layer=model.layer4[-1]).explain(x).numpy()
    low = raw.min(axis=(1, 2), keepdims=True)
    expected = (raw - low) / (raw - low).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exact, expected, atol=1e-5)
    assert np.abs(exact - reproduced).max() > 1e-3  # the epsilon and the resize do matter


@pytest.mark.parametrize(
    "make_call,error,message",
    [
        (lambda m: ours.GradCAMPlusPlus(m, m.layer4[-1]), TypeError, "list of modules"),
        (lambda m: ours.GradCAMPlusPlus(m, []), TypeError, "non-empty list"),
        (lambda m: ours.GradCAMPlusPlus(m, [m.layer4], variant="fast"), ValueError, "variant"),
        (lambda m: ours.GradCAM(lambda x: x, [m.layer4]), TypeError, "torch.nn.Module"),
        (
            lambda m: ours.GradCAM(m, [m.layer4])(
                torch.randn(2, 3, 32, 32), [our_targets.ClassifierOutputTarget(1)]
            ),
            ValueError,
            "1 target objects for 2 inputs",
        ),
        (
            lambda m: ours.GradCAM(m, [m.layer4])(torch.randn(1, 3, 32, 32), ["cat"]),
            TypeError,
            "target objects called on one sample's output",
        ),
        (
            lambda m: ours.GradCAM(m, [m.layer4])(
                torch.randn(1, 3, 32, 32), our_targets.ClassifierOutputTarget(1)
            ),
            TypeError,
            "list of one target object per input",
        ),
    ],
)
def test_bad_arguments_get_clear_errors(make_call, error, message):
    model = _model("resnet18")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # layer4 is 1 x 1 at 32 x 32
        with pytest.raises(error, match=message):
            make_call(model)
