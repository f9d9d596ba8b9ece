"""Several targets in one vectorised backward pass: the same numbers as one call per target."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision
from conftest import make_gapnet

from gradcampp import GradCAM, GradCAMPP
from gradcampp.backends import torch_backend
from gradcampp.formulas import gradcampp_weights
from gradcampp.targets import Classes, TopK

nn = torch.nn


class NormHead(nn.Module):
    """conv -> [explained] -> conv, BatchNorm, in-place ReLU, dropout, pool, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(
            nn.Conv2d(8, 12, 3, padding=1),
            nn.BatchNorm2d(12),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(12, 16),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(16, 7),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _ClipIfLarge(torch.autograd.Function):
    """Identity forward; a backward with data-dependent Python control flow (not vmappable)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        if grad.abs().max() > 1e6:  # a Python bool of a tensor: no batching rule
            return grad.clamp(-1e6, 1e6)
        return grad


class CustomHead(nn.Module):
    """A head whose backward pass cannot be vectorised over targets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        return self.fc(_ClipIfLarge.apply(a).mean(dim=(2, 3)))


def _seeded(factory, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return factory().eval()


def _resnet18() -> nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=10)


def _mobilenet() -> nn.Module:
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)


MODELS = {
    "gapnet": (lambda: make_gapnet(classes=8), "conv", 12),
    "norm_head": (NormHead, "features", 12),
    "resnet18": (_resnet18, "layer4", 64),
    "mobilenet_v3_small": (_mobilenet, "features", 64),
}


def _scores_and_acts(model: nn.Module, layer: str, x: torch.Tensor, k: int):
    """The backend's own capture up to the scores: (scores (n, k), acts) with the graph alive."""
    captured = []

    def hook(module, args, output):
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        torch.set_grad_enabled(True)
        return leaf.clone()

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            outputs = model(x)
    finally:
        handle.remove()
    with torch.enable_grad():
        scores = outputs.topk(k, dim=1).values
    return scores, captured[-1]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 4e-6)])
def test_batched_gradients_equal_the_per_target_loop(name, dtype, tolerance):
    # float64: the same numbers (1e-12 of the largest gradient); float32: only the summation
    # order of the matrix products differs (a few float32 roundings of the largest gradient).
    factory, layer, size = MODELS[name]
    model = _seeded(factory).to(dtype)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)
    scores, acts = _scores_and_acts(model, layer, x, 4)
    batched = torch_backend.batched_gradients(scores, acts)
    looped = torch_backend.per_target_gradients(scores, acts)
    assert batched is not None
    assert batched.shape == looped.shape == (3, 4, *acts.shape[1:])
    assert batched.dtype == torch.float32
    scale = looped.abs().max()
    assert scale > 0
    torch.testing.assert_close(batched, looped, rtol=0, atol=tolerance * float(scale))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("explainer", [GradCAMPP, GradCAM])
def test_explained_maps_equal_the_per_target_loop(name, explainer, monkeypatch):
    # In float64, so that the comparison is not drowned by float32 rounding: random-weight
    # networks give maps with heavy cancellation (a relu of a sum of many terms).
    factory, layer, size = MODELS[name]
    model = _seeded(factory).double()
    x = torch.randn(
        2, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    cam = explainer(model, conv_layer=layer)
    cam.explain(x, TopK(3))  # measures both paths once
    (key,) = torch_backend.backward_choices(model)
    torch_backend.set_backward_choice(model, key, "batched")
    calls = []
    real = torch_backend.batched_gradients

    def counted(scores, acts):
        calls.append(scores.shape)
        return real(scores, acts)

    monkeypatch.setattr(torch_backend, "batched_gradients", counted)
    fast = cam.explain(x, TopK(3))
    picked = cam.explain(x, Classes([[0, 2, 4], [1, 3, 5]]))
    assert calls == [(2, 3), (2, 3)]  # both calls went through the batched path
    torch_backend.set_backward_choice(model, key, "loop")
    slow = cam.explain(x, TopK(3))
    slow_picked = cam.explain(x, Classes([[0, 2, 4], [1, 3, 5]]))
    assert calls == [(2, 3), (2, 3)]  # and these through the loop
    assert fast.shape == (2, 3, size, size)
    for a, b in ((fast, slow), (picked, slow_picked)):
        scale = float(b.abs().max())
        assert scale > 0
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * scale)


def test_a_head_that_cannot_be_vectorised_falls_back_to_the_loop(monkeypatch):
    model = _seeded(CustomHead)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    scores, acts = _scores_and_acts(model, "conv", x, 3)
    assert torch_backend.batched_gradients(scores, acts) is None  # refused, graph kept
    looped = torch_backend.per_target_gradients(scores, acts)
    scores, acts = _scores_and_acts(model, "conv", x, 3)
    paths = []
    for name in ("batched_gradients", "per_target_gradients"):
        real = getattr(torch_backend, name)

        def spy(scores, acts, real=real, name=name):
            result = real(scores, acts)
            paths.append((name, result is not None))
            return result

        monkeypatch.setattr(torch_backend, name, spy)
    grads = torch_backend.score_gradients(scores, acts)
    assert paths == [("batched_gradients", False), ("per_target_gradients", True)]
    torch.testing.assert_close(grads, looped, rtol=0, atol=0)
    maps = GradCAMPP(model, conv_layer="conv").explain(x, TopK(3))
    assert maps.shape == (2, 3, 8, 8) and bool(torch.isfinite(maps).all())


def _spied(monkeypatch, slow: str | None = None) -> list[str]:
    """Record which path runs; ``slow`` (a path) is made 0.2 s slower."""
    used: list[str] = []
    for name, label in (("batched_gradients", "batched"), ("per_target_gradients", "loop")):
        real = getattr(torch_backend, name)

        def spy(*args, real=real, label=label, **kwargs):
            used.append(label)
            if label == slow:
                time.sleep(0.2)
            return real(*args, **kwargs)

        monkeypatch.setattr(torch_backend, name, spy)
    return used


@pytest.mark.parametrize("slow", ["batched", "loop"])
def test_backward_path_is_measured_once_per_shape_and_kept(slow, monkeypatch):
    model = make_gapnet(classes=12)
    torch_backend.set_backward_choice(model, None, "batched")  # nothing measured yet
    used = _spied(monkeypatch, slow)
    cam = GradCAMPP(model, conv_layer="conv")
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    first = cam.explain(x, TopK(4))
    assert used == ["batched", "loop", "batched", "loop"]  # both, twice, alternately
    kept = "loop" if slow == "batched" else "batched"
    assert torch_backend.backward_choices(model) == {
        ((2, 6, 6, 6), 4, "cpu", "torch.float32"): kept
    }
    used.clear()
    again = GradCAM(model, conv_layer="conv").explain(x, TopK(4))  # another explainer, same model
    second = cam.explain(x, TopK(4))
    assert used == [kept, kept]  # the choice is reused: no second measurement
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # the same path: the same numbers
    assert again.shape == (2, 4, 6, 6)
    used.clear()
    cam.explain(x[:1], TopK(4))  # another shape: measured again
    cam.explain(x, TopK(1))  # one target: nothing to choose
    assert used == ["batched", "loop", "batched", "loop", "loop"]
    assert len(torch_backend.backward_choices(model)) == 2


def test_both_paths_give_the_same_maps():
    model = _seeded(NormHead)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    cam = GradCAMPP(model, conv_layer="features")
    cam.explain(x, TopK(5))
    (key,) = torch_backend.backward_choices(model)
    maps = {}
    for path in torch_backend.BACKWARD_PATHS:
        torch_backend.set_backward_choice(model, key, path)
        maps[path] = cam.explain(x, TopK(5))
    scale = float(maps["loop"].abs().max())
    assert scale > 0
    torch.testing.assert_close(maps["batched"], maps["loop"], rtol=0, atol=4e-6 * scale)
    with pytest.raises(ValueError, match="path must be one of"):
        torch_backend.set_backward_choice(model, key, "fast")


def test_scores_that_do_not_depend_on_the_layer_are_an_error():
    acts = torch.randn(2, 3, 4, 4, requires_grad=True)
    other = torch.randn(2, 5, requires_grad=True)
    with pytest.raises(ValueError, match="does not depend"):
        torch_backend.score_gradients(other * 2, acts)
    with pytest.raises(ValueError, match="does not depend"):
        torch_backend.batched_gradients(other * 2, acts)


def _eq19_reference(acts: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Eq. 19 by loops in float64; alpha = 0 where its denominator is exactly zero."""
    n, t, k = grads.shape[:3]
    out = np.zeros((n, t, k))
    for i in range(n):
        for j in range(t):
            for c in range(k):
                a, g = acts[i, c].astype(np.float64), grads[i, j, c].astype(np.float64)
                d = g**2 * (2 + a.sum() * g)
                alpha = np.divide(g**2, d, out=np.zeros_like(g), where=d != 0)
                out[i, j, c] = np.sum(alpha * np.maximum(g, 0))
    return out


def test_eq19_guard_with_negative_channel_sums():
    # Channel 1 sums to -2 and has g = 1 at one pixel: 2 + s g = 0 there, so alpha = 0 (guard).
    acts = np.zeros((1, 3, 2, 2), dtype=np.float32)
    acts[0, 0] = 0.5
    acts[0, 1] = [[-1.0, -0.5], [-0.25, -0.25]]
    acts[0, 2] = [[1.0, -3.0], [0.5, 0.0]]
    grads = np.zeros((1, 2, 3, 2, 2), dtype=np.float32)
    grads[0, 0, :, 0, 0] = 1.0
    grads[0, 0, :, 1, 1] = 0.25
    grads[0, 1] = np.array([[0.5, -1.0], [2.0, 0.125]], dtype=np.float32)
    expected = _eq19_reference(acts, grads)
    ours = gradcampp_weights(acts, grads)
    assert np.all(np.isfinite(ours))
    # channel 1, target 0: the g = 1 term is guarded away, the g = 0.25 term is 0.25 / 1.5
    assert ours[0, 0, 1] == pytest.approx(0.25 / 1.5)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    torch_ours = gradcampp_weights(torch.from_numpy(acts), torch.from_numpy(grads))
    np.testing.assert_allclose(torch_ours.numpy(), expected, rtol=1e-6)


def test_eq19_does_not_modify_its_inputs():
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    grads = rng.normal(size=(2, 3, 4, 3, 3)).astype(np.float32)
    acts_copy, grads_copy = acts.copy(), grads.copy()
    np.testing.assert_allclose(gradcampp_weights(acts, grads), _eq19_reference(acts, grads), 1e-5)
    assert np.array_equal(acts, acts_copy) and np.array_equal(grads, grads_copy)
