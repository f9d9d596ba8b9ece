"""A self-contained demo: a generated shapes data set and a small CNN trained on it.

>>> from gradcampp.demo import CLASSES, generate_shapes, load_demo_model
>>> batch = generate_shapes(8, seed=0)
>>> model = load_demo_model()  # doctest: +SKIP

Generating images needs only NumPy; :func:`load_demo_model` needs PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcampp.demo.dataset import MAX_INSTANCES, ShapesBatch, generate_shapes
from gradcampp.demo.shapes import CLASSES

if TYPE_CHECKING:
    from gradcampp.demo.model import DemoCNN, DemoCNNFC

__all__ = ["CLASSES", "MAX_INSTANCES", "ShapesBatch", "generate_shapes", "load_demo_model"]


def load_demo_model(head: str = "gap") -> DemoCNN | DemoCNNFC:
    """A trained demo CNN (``torch.nn.Module``) in eval mode on the CPU: ``head="gap"`` (global
    average pooling, the default) or ``"fc"`` (flatten and a hidden fully connected layer); see
    :func:`gradcampp.demo.model.load_demo_model`."""
    from gradcampp.demo.model import load_demo_model as _load

    return _load(head)
