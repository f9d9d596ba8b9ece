"""Framework backends: each finds a layer, runs the model once and returns A and dY/dA."""

from __future__ import annotations

import sys
from typing import Any


def backend_for(
    model: Any,
    conv_layer: Any = None,
    output_layer: Any = None,
    reshape_transform: Any = None,
    keras_default: str = "probe",
) -> Any:
    """The backend that serves ``model``: a ``torch.nn.Module`` or a Keras 3 ``keras.Model``.

    A Keras model is recognised first (on Keras's PyTorch backend it is a ``torch.nn.Module``
    too) and served on the backend Keras runs on: TensorFlow, JAX or PyTorch.

    ``reshape_transform`` (PyTorch only) maps the layer's output to ``(N, C, *S)``;
    ``keras_default`` says how a Keras backend picks the layer when ``conv_layer`` is ``None``:
    ``"probe"`` (the last layer with spatial extent) or ``"xplique"`` (xplique's choice).

    Frameworks are looked up among the modules already imported: a model of a framework that was
    never imported cannot exist, so neither PyTorch nor TensorFlow is imported to find out.

    Raises:
        TypeError: for any other model.
    """
    keras = sys.modules.get("keras")
    # first: a Keras model on the PyTorch backend is also a torch.nn.Module
    if keras is not None and isinstance(model, keras.Model):
        if reshape_transform is not None:
            raise TypeError(
                "reshape_transform applies to PyTorch models; Keras layers are read "
                "channels-last (N, *spatial, channels)"
            )
        return _keras_backend(keras.backend.backend())(
            model, conv_layer, output_layer, default=keras_default
        )
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from gradcampp.backends.torch_backend import TorchBackend

        return TorchBackend(model, conv_layer, output_layer, reshape_transform)
    raise TypeError(f"model must be a torch.nn.Module or a keras.Model, got {type(model).__name__}")


def _keras_backend(name: str) -> Any:
    """The backend class for Keras 3 running on ``name`` (``keras.backend.backend()``)."""
    if name == "tensorflow":
        from gradcampp.backends.keras_backend import KerasBackend

        return KerasBackend
    if name == "jax":
        from gradcampp.backends.keras_jax import KerasJaxBackend

        return KerasJaxBackend
    if name == "torch":
        from gradcampp.backends.keras_torch import KerasTorchBackend

        return KerasTorchBackend
    raise TypeError(
        "Keras models are explained on the TensorFlow, JAX and PyTorch backends, but Keras "
        f"runs on {name!r}; set KERAS_BACKEND to tensorflow, jax or torch"
    )
