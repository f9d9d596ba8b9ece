"""Shared fixtures: small seeded PyTorch models whose maps can be computed by hand."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
# torchvision must be imported before TensorFlow: the other order crashes the interpreter with the
# wheels of torchvision 0.29.1 and tensorflow 2.20 (a segmentation fault on import).
pytest.importorskip("torchvision")
nn = torch.nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class GapNet(nn.Module):
    """conv -> ReLU -> global average pool -> linear: the closed-form case of Grad-CAM++."""

    def __init__(self, rank: int = 2, channels: int = 3, features: int = 6, classes: int = 4):
        super().__init__()
        self.conv = _CONV[rank](channels, features, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.pool = _POOL[rank](1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def make_gapnet(rank: int = 2, seed: int = 0, **kwargs) -> GapNet:
    torch.manual_seed(seed)
    return GapNet(rank, **kwargs).eval()


@pytest.fixture
def gapnet() -> GapNet:
    return make_gapnet()


def snapshot(model: nn.Module) -> dict:
    """Everything about a model that explaining must leave unchanged."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for a, b in zip(before["grad"], after["grad"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
