"""How to load a run's model in any process: the driver and every Ray worker."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gradcampp.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from gradcampp.model_specs import DEFAULT_SIZE, LoadedModel, ModelSpecError, load_model


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
    torch = sys.modules.get("torch")
    keras = sys.modules.get("keras")
    is_keras = keras is not None and isinstance(model, keras.Model)  # a torch.nn.Module on torch
    if torch is not None and isinstance(model, torch.nn.Module) and not is_keras:
        from gradcampp.model_specs import _finish_torch

        return LoadedModel(
            _finish_torch(model, device),
            Preprocess(size=(DEFAULT_SIZE, DEFAULT_SIZE), mean=IMAGENET_MEAN, std=IMAGENET_STD),
            None,
            description,
            "torch",
        )
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        from gradcampp.model_specs import _keras_loaded

        return _keras_loaded(model, description)
    raise ModelSpecError(
        f"the model factory {description} returned {type(model).__name__}, not a "
        "torch.nn.Module, a Keras model or a LoadedModel"
    )
