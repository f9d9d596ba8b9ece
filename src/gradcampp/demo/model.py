"""The demo's small CNN (PyTorch) and its weights, shipped with the package as a NumPy ``.npz``."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradcampp.demo.shapes import CLASSES

WEIGHTS_PATH = Path(__file__).with_name("demo_cnn.npz")
FC_WEIGHTS_PATH = Path(__file__).with_name("demo_cnn_fc.npz")
HEADS = ("gap", "fc")
# (name, in channels, out channels, kernel, stride, max-pool after)
_CONVS = (
    ("conv1", 3, 16, 5, 2, False),
    ("conv2", 16, 32, 3, 1, True),
    ("conv3", 32, 64, 3, 1, False),
    ("conv4", 64, 64, 3, 1, False),
)


class DemoCNN(nn.Module):
    """Conv blocks -> global average pooling -> linear, for ``(N, 3, 64, 64)`` images in ``[0, 1]``.

    ``features``: ``conv1`` 5x5 stride 2 (3->16), ReLU; ``conv2`` 3x3 (16->32), ReLU, 2x2 max-pool;
    ``conv3`` 3x3 (32->64), ReLU; ``conv4`` 3x3 (64->64), ReLU. The output of ``features`` (the
    same tensor as ``features.relu4``'s, and the layer Grad-CAM++ explains by default) is 16x16 for
    64x64 inputs. Then the spatial mean of each of the 64 channels and a linear layer
    (``classifier``) to ``num_classes`` logits. Any input side divisible by 4 works.

    Args:
        num_classes: number of output logits.
        batch_norm: put a ``BatchNorm2d`` (``bn1`` ... ``bn4``) after each convolution, for
            training; :func:`fold_batch_norm` turns such a model into the plain one.
    """

    def __init__(self, num_classes: int = len(CLASSES), *, batch_norm: bool = False):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        for name, c_in, c_out, k, stride, pool in _CONVS:
            i = name[-1]
            layers.append((name, nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2)))
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm2d(c_out)))
            layers.append((f"relu{i}", nn.ReLU()))
            if pool:
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_CONVS[-1][2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, H, W)``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DemoCNNFC(nn.Module):
    """The :class:`DemoCNN` feature extractor with a VGG-style head: 4x4 max-pooling, flatten and a
    hidden fully connected layer, for ``(N, 3, 64, 64)`` images in ``[0, 1]``.

    ``features`` is the same stack as :class:`DemoCNN`'s (16x16 output for 64x64 inputs, the
    default layer of the explainers). The head computes
    ``logits = W2 relu(W1 flatten(maxpool4(A)) + b1) + b2`` with ``W1`` of shape
    ``(hidden, 64 * 4 * 4)`` (``classifier.fc1``) and ``W2`` of shape ``(num_classes, hidden)``
    (``classifier.fc2``). The pooling is a function call inside :meth:`forward`, not a module,
    so the last module with spatial output, and therefore the layer explained by default, is the
    16x16 ``features`` block, as for :class:`DemoCNN`.

    Why this head: after global average pooling and one linear layer, ``dY^c/dA^k_ij`` is the
    same at every position ``ij`` of a channel, so Grad-CAM++'s per-pixel weights ``alpha_ij^k``
    are constant over the map. Here the gradient is non-zero only at the maximum of each 4x4
    window and is scaled there by a weight that depends on the window's position (``W1``) and on
    which hidden units are active, as in VGG-16, whose ``pool5 -> fc6`` head the paper explains.
    Only 64x64 inputs work (the first fully connected layer fixes the grid to 4x4).

    Args:
        num_classes: number of output logits.
        hidden: width of the hidden fully connected layer.
    """

    def __init__(self, num_classes: int = len(CLASSES), *, hidden: int = 64):
        super().__init__()
        self.features = DemoCNN(num_classes).features
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(_CONVS[-1][2] * 16, hidden)),
                    ("relu", nn.ReLU()),
                    ("fc2", nn.Linear(hidden, num_classes)),
                ]
            )
        )

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """The head's input ``(N, 64 * 16)``: 4x4 max-pooled, flattened ``features`` output."""
        if features.shape[-2:] != (16, 16):
            raise ValueError(
                "DemoCNNFC needs 64x64 inputs (a 16x16 feature map), got a feature map of "
                f"shape {tuple(features.shape)}"
            )
        return torch.flatten(F.max_pool2d(features, 4), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, 64, 64)``."""
        return self.classifier(self.pooled(self.features(x)))


@torch.no_grad()
def fold_batch_norm(model: DemoCNN) -> DemoCNN:
    """The plain :class:`DemoCNN` computing what ``model`` (built with ``batch_norm=True``) computes
    in eval mode.

    Each ``conv -> bn`` pair becomes one convolution with ``w' = w s``, ``b' = (b - mu) s + beta``,
    ``s = gamma / sqrt(var + eps)`` per output channel. ``model`` is left unchanged.

    Args:
        model: a :class:`DemoCNN` with batch normalisation.

    Returns:
        a new :class:`DemoCNN` without batch normalisation, in eval mode.
    """
    plain = DemoCNN(model.classifier.out_features).eval()
    for name, *_ in _CONVS:
        conv, bn = model.features.get_submodule(name), model.features.get_submodule(f"bn{name[-1]}")
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        target = plain.features.get_submodule(name)
        target.weight.copy_(conv.weight * scale[:, None, None, None])
        target.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    plain.classifier.load_state_dict(model.classifier.state_dict())
    return plain


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model.state_dict()`` as float32 arrays to a compressed ``.npz`` (keys = names)."""
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    np.savez_compressed(path, **arrays)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an ``.npz`` written by :func:`save_weights` into ``model`` (strict keys); return it."""
    with np.load(path) as data:
        state = {k: torch.from_numpy(data[k].copy()) for k in data.files}
    model.load_state_dict(state, strict=True)
    return model


def load_demo_model(head: str = "gap") -> DemoCNN | DemoCNNFC:
    """A trained demo CNN, in eval mode on the CPU, with the weights shipped in the package.

    Args:
        head: ``"gap"`` for :class:`DemoCNN` (global average pooling and one linear layer, the
            default) or ``"fc"`` for :class:`DemoCNNFC` (max-pooling, flatten and a hidden fully
            connected layer; same convolutional features).

    Returns:
        a model whose logits index :data:`CLASSES`.

    Raises:
        ValueError: for an unknown ``head``.
        FileNotFoundError: when the package was installed without the weights file.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    model, path = (DemoCNN(), WEIGHTS_PATH) if head == "gap" else (DemoCNNFC(), FC_WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"the demo model's weights are missing: expected {path}")
    return load_weights(model, path).eval()
