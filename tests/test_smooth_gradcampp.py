"""Smooth Grad-CAM++ (Omeiza et al. 2019): ``GradCAMPP(model, smooth_samples=n, seed=s)``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import assert_same_snapshot, make_gapnet, snapshot  # noqa: E402

from gradcampp import Classes, GradCAMPP, TopK  # noqa: E402


def _inputs(n: int = 4, size: int = 10) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(11))


def _reference(model, x: torch.Tensor, classes, samples: int, noise: float, seed: int):
    """Smooth Grad-CAM++ written out directly (float64), at the layer ``conv``'s resolution.

    The noise follows GradCAMPP's documented stream: sample ``i`` draws its copies in order from
    ``default_rng(SeedSequence(seed).spawn(N)[i]).standard_normal(shape, float32)``, scaled by
    ``noise * (max(x_i) - min(x_i))``.
    """
    model = model.double()
    x = x.double()
    kept = {}
    handle = model.conv.register_forward_hook(lambda m, a, out: kept.__setitem__("a", out))
    try:
        with torch.no_grad():
            model(x)
        acts = kept["a"].clone()  # (N, K, h, w) of the clean input
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(x))]
        powers = [torch.zeros_like(acts) for _ in range(3)]
        spread = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).reshape(-1, 1, 1, 1)
        for _ in range(samples):
            draws = np.stack([rng.standard_normal(x.shape[1:], dtype=np.float32) for rng in rngs])
            noisy = x + torch.from_numpy(draws).double() * noise * spread
            logits = model(noisy)
            score = logits[torch.arange(len(x)), torch.as_tensor(classes)].sum()
            (g,) = torch.autograd.grad(score, kept["a"])
            for p in range(3):
                powers[p] += g ** (p + 1) / samples
    finally:
        handle.remove()
        model.float()
    d1, d2, d3 = powers
    sums = acts.sum(dim=(2, 3), keepdim=True)
    denominator = 2 * d2 + sums * d3
    alpha = torch.where(denominator != 0, d2 / denominator, torch.zeros_like(d2))
    weights = (alpha * d1.clamp(min=0)).sum(dim=(2, 3))
    return torch.relu((weights[:, :, None, None] * acts).sum(dim=1)).float()


def test_noise_level_zero_gives_grad_cam_plus_plus():
    model = make_gapnet()
    x = _inputs()
    plain = GradCAMPP(model, conv_layer="conv").explain(x, np.array([0, 1, 2, 3]))
    smooth = GradCAMPP(model, conv_layer="conv", smooth_samples=3, smooth_noise=0.0, seed=1)
    maps = smooth.explain(x, np.array([0, 1, 2, 3]))
    assert float(plain.max()) > 0
    torch.testing.assert_close(maps, plain, rtol=1e-5, atol=1e-5 * float(plain.max()))


def test_fixed_seed_equals_an_independent_implementation():
    model = make_gapnet()
    x = _inputs()
    classes = [3, 0, 1, 2]
    before = snapshot(model)
    explainer = GradCAMPP(model, conv_layer="conv", smooth_samples=5, smooth_noise=0.3, seed=7)
    maps = explainer.explain(x, np.array(classes), upsample=False)
    assert_same_snapshot(before, snapshot(model))
    expected = _reference(model, x, classes, samples=5, noise=0.3, seed=7)
    peak = float(expected.max())
    assert peak > 0
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5 * peak)
    # the noise matters here: the gradient at `conv` depends on the input through the ReLU
    plain = GradCAMPP(model, conv_layer="conv").explain(x, np.array(classes), upsample=False)
    assert float((maps - plain).abs().max()) > 1e-3 * peak


def test_maps_do_not_depend_on_batch_size_and_repeat_with_the_seed():
    model = make_gapnet()
    x = _inputs(5)
    options = {"conv_layer": "conv", "smooth_samples": 3, "smooth_noise": 0.2, "seed": 3}
    whole = GradCAMPP(model, batch_size=32, **options).explain(x, 1)
    chunked = GradCAMPP(model, batch_size=2, **options).explain(x, 1)
    torch.testing.assert_close(whole, chunked, rtol=1e-6, atol=1e-7)
    explainer = GradCAMPP(model, **options)
    torch.testing.assert_close(explainer.explain(x, 1), explainer.explain(x, 1))


def test_predicted_classes_come_from_the_clean_input():
    """``None``/``TopK`` explain the classes of the input itself on every noisy copy."""
    model = make_gapnet()
    x = _inputs()
    with torch.no_grad():
        top = model(x).topk(2, dim=1).indices.numpy()
    options = {"conv_layer": "conv", "smooth_samples": 4, "smooth_noise": 1.0, "seed": 5}
    by_topk = GradCAMPP(model, **options).explain(x, TopK(2))
    by_classes = GradCAMPP(model, **options).explain(x, Classes(top))
    torch.testing.assert_close(by_topk, by_classes)
    by_none = GradCAMPP(model, **options).explain(x)
    torch.testing.assert_close(by_none, by_topk[:, 0])


@pytest.mark.parametrize(
    "options,message",
    [
        ({"smooth_samples": -1}, "smooth_samples"),
        ({"smooth_samples": 1.5}, "smooth_samples"),
        ({"smooth_samples": True}, "smooth_samples"),
        ({"smooth_samples": 2, "smooth_noise": -0.1}, "smooth_noise"),
        ({"smooth_samples": 2, "smooth_noise": float("nan")}, "smooth_noise"),
        ({"smooth_samples": 2, "variant": "xplique"}, "variant='paper' only"),
    ],
)
def test_bad_smoothing_options(options, message):
    with pytest.raises(ValueError, match=message):
        GradCAMPP(make_gapnet(), **options)


def test_calls_in_several_threads_keep_their_own_noise():
    from concurrent.futures import ThreadPoolExecutor

    model = make_gapnet()
    explainer = GradCAMPP(model, conv_layer="conv", smooth_samples=3, smooth_noise=0.5, seed=9)
    inputs = [_inputs(3), _inputs(5, 12)]
    expected = [explainer.explain(x, 1) for x in inputs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda x: explainer.explain(x, 1), inputs * 3))
    for i, maps in enumerate(results):
        torch.testing.assert_close(maps, expected[i % 2], rtol=0, atol=0)
