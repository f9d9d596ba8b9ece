"""How to load a run's model in any process: the driver and every Ray worker."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gradcampp.model_specs import (
    LoadedModel,
    ModelSpecError,
    _is_keras,
    _keras_loaded,
    _torch_loaded,
    load_model,
)


@dataclass(frozen=True)
class ModelRecipe:
    """A picklable description of a model, loaded with :meth:`load` where it is used.

    Attributes:
        spec: a model spec as ``gradcampp explain --model`` takes it (``demo``,
            ``torchvision:NAME``, ``package.module:callable``, a model file), or a function
            without arguments returning a ``torch.nn.Module``, a Keras model or a
            ``gradcampp.model_specs.LoadedModel`` (sent to Ray workers with cloudpickle).
        weights, allow_pickle: as ``--weights`` and ``--allow-pickle``.
        device: the torch device of the model (``"cpu"``, ``"cuda"``, ``"auto"``).
        classes: class names replacing the model's own (``--classes``).
        size, mean, std: preprocessing overrides (``--size``, ``--mean``, ``--std``).
    """

    spec: str | Callable[[], Any]
    weights: str | None = None
    allow_pickle: bool = False
    device: str = "cpu"
    classes: tuple[str, ...] | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def load(self, device: str | None = None) -> LoadedModel:
        """The loaded model, on ``device`` (default: the recipe's).

        Raises:
            ModelSpecError: for a spec, weights file or device that cannot be used.
        """
        device = self.device if device is None else device
        if callable(self.spec):
            loaded = _from_factory(self.spec, device)
        else:
            loaded = load_model(
                self.spec, weights=self.weights, allow_pickle=self.allow_pickle, device=device
            )
        if self.classes is not None:
            loaded.classes = self.classes
        pre = loaded.preprocess
        if self.size is not None:
            pre = replace(pre, size=self.size, resize=None)
        if self.mean is not None:
            pre = replace(pre, mean=self.mean)
        if self.std is not None:
            pre = replace(pre, std=self.std)
        loaded.preprocess = pre
        return loaded


def _from_factory(factory: Callable[[], Any], device: str) -> LoadedModel:
    model = factory()
    description = getattr(factory, "__qualname__", type(factory).__name__)
    if isinstance(model, LoadedModel):
        return model
    # Keras first: on Keras's PyTorch backend a Keras model is a torch.nn.Module too
    if _is_keras(model):
        return _keras_loaded(model, description)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return _torch_loaded(model, device, description)
    raise ModelSpecError(
        f"the model factory {description} returned {type(model).__name__}, not a "
        "torch.nn.Module, a Keras model or a LoadedModel"
    )
