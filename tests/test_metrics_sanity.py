"""Spearman rank correlation by hand; cascading randomisation on a small random CNN."""

import numpy as np
import pytest
import torch

from gradcampp import GradCAMPP
from gradcampp.metrics import cascading_randomization, spearman_correlation
from gradcampp.metrics.sanity import average_ranks


def test_average_ranks_share_ties():
    np.testing.assert_allclose(average_ranks(np.array([10.0, 20.0, 20.0, 5.0])), [2, 3.5, 3.5, 1])


def test_spearman_by_hand():
    a = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    b = np.array([[[1.0, 3.0], [2.0, 4.0]]])
    # rank differences 0, 1, 1, 0: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    np.testing.assert_allclose(spearman_correlation(a, b), [0.8])
    np.testing.assert_allclose(spearman_correlation(a, np.exp(a)), [1.0])
    np.testing.assert_allclose(spearman_correlation(a, -a), [-1.0])
    np.testing.assert_allclose(spearman_correlation(a, np.zeros_like(a)), [0.0])


def test_spearman_with_ties_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=(3, 5, 5)).astype(float)
    b = rng.integers(0, 4, size=(3, 5, 5)).astype(float)
    expected = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(spearman_correlation(a, b), expected, rtol=1e-12)


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )


def test_cascade_goes_from_the_top_and_leaves_the_model_untouched():
    model = small_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = cascading_randomization(lambda m: GradCAMPP(m, conv_layer="2"), model, x, 1)
    assert result.layers == ("6", "2", "0")
    assert result.correlations.shape == (3, 3)
    assert np.all(np.abs(result.correlations) <= 1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(module.training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())
    # once every layer is random, the maps no longer follow the trained ones
    assert result.mean[-1] < 0.9


def test_a_map_that_ignores_the_model_fails_the_check_with_correlation_one():
    model = small_cnn()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))

    def input_mean(m):
        return lambda inputs, targets: inputs.mean(dim=1)

    result = cascading_randomization(input_mean, model, x, layers=["6", "0"])
    np.testing.assert_allclose(result.correlations, 1.0)
    assert result.layers == ("6", "0")


def test_randomisation_is_seeded():
    model = small_cnn()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    first = cascading_randomization(GradCAMPP, model, x, seed=5)
    second = cascading_randomization(GradCAMPP, model, x, seed=5)
    np.testing.assert_array_equal(first.correlations, second.correlations)


def test_unknown_layer_is_refused():
    with pytest.raises(ValueError, match="not layers with parameters"):
        cascading_randomization(GradCAMPP, small_cnn(), torch.rand(1, 3, 6, 6), layers=["1"])


def test_layers_without_reset_parameters_get_a_normal_draw_of_their_own_scale():
    from gradcampp.metrics._model import adapter_for

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((1000,), 3.0) + torch.arange(1000) % 2)

        def forward(self, x):
            return x * self.weight[0]

    model = torch.nn.Sequential(Scale())
    adapter = adapter_for(model)
    copy = adapter.copy()
    layer = dict(adapter_for(copy).layers())["0"]
    spread = float(layer.weight.detach().std())
    adapter.randomize(layer, seed=0)
    assert torch.all(model[0].weight >= 3.0)  # the original is untouched
    assert abs(float(layer.weight.detach().mean())) < 0.1
    assert float(layer.weight.detach().std()) == pytest.approx(spread, rel=0.1)
