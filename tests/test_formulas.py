"""The Grad-CAM++ and Grad-CAM formulas against closed forms, autograd and plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_gapnet

from gradcampp import GradCAM, GradCAMPP
from gradcampp.formulas import class_activation_map, gradcam_weights, gradcampp_weights


def closed_form_map(model, x: torch.Tensor, cls: int) -> np.ndarray:
    """conv -> ReLU -> GAP -> linear: the paper map is
    relu(sum_{k: w_kc > 0} w_kc A^k / (2 + w_kc mean(A^k))), with constant 1 once exp(S^c) is
    dropped (g = w_kc / Z, sum_ab A^k = Z mean(A^k), so alpha relu(g) summed over Z pixels is
    relu(w_kc) / (2 + w_kc mean A^k))."""
    with torch.no_grad():
        acts = model.relu(model.conv(x)).double().numpy()
    w = model.fc.weight[cls].detach().double().numpy()
    spatial = tuple(range(2, acts.ndim))
    means = acts.mean(axis=spatial)  # (N, K)
    coef = np.where(w > 0, w / (2 + w * means), 0.0)  # (N, K)
    maps = np.einsum("nk,nk...->n...", coef, acts)
    return np.maximum(maps, 0)


@pytest.mark.parametrize("rank,size", [(1, (17,)), (2, (9, 11)), (3, (5, 6, 7))])
def test_paper_map_equals_closed_form(rank, size):
    model = make_gapnet(rank, seed=rank)
    torch.manual_seed(10 + rank)
    x = torch.randn(3, 3, *size)
    for cls in range(4):
        ours = GradCAMPP(model, conv_layer="relu").explain(x, cls, upsample=False).numpy()
        expected = closed_form_map(model, x, cls)
        assert ours.shape == (3, *size)
        scale = np.abs(expected).max(axis=tuple(range(1, rank + 1)), keepdims=True)
        assert np.all(np.abs(ours - expected) <= 1e-6 * np.maximum(scale, 1e-30))


@pytest.mark.parametrize("weight_scale", [1e-3, 1e-8, 1e-25])
def test_paper_map_exact_for_tiny_gradients(weight_scale):
    # With |g| = |w|/Z tiny, g^2 and g^3 underflow float32 (g = 1e-27 here at the smallest), and a
    # fixed epsilon in the denominator would dominate; Eq. 19 still gives alpha ~ 1/2.
    model = make_gapnet(seed=3)
    with torch.no_grad():
        model.fc.weight.mul_(weight_scale)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    ours = GradCAMPP(model, conv_layer="relu").explain(x, 1, upsample=False).numpy()
    expected = closed_form_map(model, x, 1)
    assert expected.max() > 0
    rel = np.abs(ours - expected).max() / np.abs(expected).max()
    assert rel <= 1e-6


def test_large_logits_and_zero_gradients_give_finite_maps():
    model = make_gapnet(seed=5)
    with torch.no_grad():
        model.fc.weight.mul_(1e5)
        model.fc.weight[2, :3] = 0.0  # channels 0-2 get exactly zero gradient for class 2
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert model(x).abs().max() > 1e4
    for explainer in (GradCAMPP(model, conv_layer="relu"), GradCAM(model, conv_layer="relu")):
        maps = explainer.explain(x, 2).numpy()
        assert np.isfinite(maps).all()
    np.testing.assert_allclose(
        GradCAMPP(model, conv_layer="relu").explain(x, 2, upsample=False).numpy(),
        closed_form_map(model, x, 2),
        rtol=0,
        atol=1e-6 * closed_form_map(model, x, 2).max(),
    )


def test_all_zero_activations_give_zero_maps():
    model = make_gapnet(seed=7)
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
    x = torch.randn(2, 3, 8, 8)
    for variant in ("paper", "xplique", "authors"):
        maps = GradCAMPP(model, conv_layer="relu", variant=variant).explain(x, 0).numpy()
        assert np.array_equal(maps, np.zeros_like(maps))


def _diagonal_derivatives(y_of_a, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """dY/dA, and the diagonal second and third derivatives d^nY/dA_e^n, by repeated autograd."""
    first = torch.autograd.grad(y_of_a(a), a, create_graph=True)[0].reshape(-1)
    second = torch.zeros_like(first)
    third = torch.zeros_like(first)
    for e in range(first.numel()):
        d2 = torch.autograd.grad(first[e], a, create_graph=True, allow_unused=True)[0]
        if d2 is None:
            continue
        d2 = d2.reshape(-1)[e]
        second[e] = d2
        if d2.requires_grad:
            d3 = torch.autograd.grad(d2, a, retain_graph=True, allow_unused=True)[0]
            third[e] = 0.0 if d3 is None else d3.reshape(-1)[e]
    return first.detach().reshape(a.shape), second.reshape(a.shape), third.reshape(a.shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eq19_alpha_from_autograd_higher_derivatives(seed):
    # A piecewise-linear head on the explained activations A (1, K, 3, 3): Y = exp(S(A)).
    # Eq. 10: alpha = Y'' / (2 Y'' + sum_ab A_ab Y''') with derivatives taken by autograd;
    # then w_k = sum_ij alpha relu(Y'). Our weights use g = dS/dA and omit exp(S): they must
    # equal w_k / exp(S).
    gen = torch.Generator().manual_seed(seed)
    k = 3
    mix = torch.randn(4, k, 1, 1, generator=gen, dtype=torch.float64)
    head = torch.randn(4, generator=gen, dtype=torch.float64)
    acts = torch.rand(1, k, 3, 3, generator=gen, dtype=torch.float64)

    def score(a):
        hidden = torch.relu(torch.nn.functional.conv2d(a, mix))  # (1, 4, 3, 3)
        return hidden.amax(dim=(2, 3)).mul(head).sum() * 0.5 + hidden.mean() * 0.25

    a = acts.clone().requires_grad_(True)
    dy, d2y, d3y = _diagonal_derivatives(lambda t: torch.exp(score(t)), a)
    sums = acts.sum(dim=(2, 3), keepdim=True)
    denom = 2 * d2y + sums * d3y
    alpha = torch.where(denom != 0, d2y / torch.where(denom != 0, denom, 1), 0)
    expected = (alpha * torch.relu(dy)).sum(dim=(2, 3))[0] / torch.exp(score(acts))

    b = acts.clone().requires_grad_(True)
    g = torch.autograd.grad(score(b), b)[0]
    ours = gradcampp_weights(acts, g[:, None])[0, 0]
    assert torch.count_nonzero(expected) > 0
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-14)


def _reference_weights(acts: np.ndarray, grads: np.ndarray, variant: str) -> np.ndarray:
    """Straight loops over channels, in float64, from the formulas as written in the docs."""
    n, t, k = grads.shape[:3]
    out = np.zeros((n, t, k))
    for i in range(n):
        for j in range(t):
            for c in range(k):
                a, g = acts[i, c].astype(np.float64), grads[i, j, c].astype(np.float64)
                if variant == "xplique":
                    d = 2 * g**2 + g**3 * a.mean()
                    d = d + (d == 0) * 1e-4
                    out[i, j, c] = np.mean(g**2 / d * np.maximum(g, 0))
                    continue
                d = g**2 * (2 + a.sum() * g)
                alpha = np.divide(g**2, d, out=np.zeros_like(g), where=d != 0)
                if variant == "authors":
                    norm = alpha[g > 0].sum()
                    alpha = alpha / (norm if norm != 0 else 1.0)
                out[i, j, c] = np.sum(alpha * np.maximum(g, 0))
    return out


@pytest.mark.parametrize("variant", ["paper", "xplique", "authors"])
def test_weights_match_plain_reference(variant):
    rng = np.random.default_rng(11)
    acts = rng.random((2, 5, 4, 3)).astype(np.float32)
    grads = rng.normal(size=(2, 3, 5, 4, 3)).astype(np.float32)
    grads[0, 0, 1] = 0.0  # a channel without gradient
    grads[1, 2, 2, 0, 0] = 0.0
    ours = gradcampp_weights(acts, grads, variant)
    np.testing.assert_allclose(ours, _reference_weights(acts, grads, variant), rtol=2e-5, atol=1e-7)
    assert ours.dtype == np.float32


def test_gradcam_weights_and_map():
    rng = np.random.default_rng(12)
    acts = rng.random((2, 4, 3, 5))
    grads = rng.normal(size=(2, 1, 4, 3, 5))
    w = gradcam_weights(grads)
    np.testing.assert_allclose(w, grads.mean(axis=(3, 4)))
    maps = class_activation_map(acts, w)
    expected = np.maximum(np.einsum("ntk,nkhw->nthw", w, acts), 0)
    np.testing.assert_allclose(maps, expected, rtol=1e-12)
    assert (class_activation_map(acts, w, relu=False) < 0).any()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant must be one of"):
        gradcampp_weights(np.ones((1, 1, 2)), np.ones((1, 1, 1, 2)), "cubic")
