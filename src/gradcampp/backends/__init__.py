"""Framework backends: each finds a layer, runs the model once and returns A and dY/dA."""

from __future__ import annotations

import sys
from typing import Any


def backend_for(model: Any, conv_layer: Any = None, output_layer: Any = None) -> Any:
    """The backend that serves ``model``: a ``torch.nn.Module`` or a Keras 3 ``keras.Model``.

    Frameworks are looked up among the modules already imported: a model of a framework that was
    never imported cannot exist, so neither PyTorch nor TensorFlow is imported to find out.

    Raises:
        TypeError: for any other model.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from gradcampp.backends.torch_backend import TorchBackend

        return TorchBackend(model, conv_layer, output_layer)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        from gradcampp.backends.keras_backend import KerasBackend

        return KerasBackend(model, conv_layer, output_layer)
    raise TypeError(f"model must be a torch.nn.Module or a keras.Model, got {type(model).__name__}")
