"""The framework-specific part of the metrics: running a model, copying and randomising it.

Everything a metric needs from a model goes through ``adapter_for(model)``, which returns an
object with:

- ``channel_axis``: where the colour channels sit in the model's inputs (1 for PyTorch);
- ``probabilities(inputs, batch_size, apply_softmax) -> (N, K)`` float64 NumPy;
- ``copy()``: an independent deep copy of the model (for the sanity check);
- ``layers()``: ``(name, layer)`` pairs of the layers that own parameters, input side first;
- ``randomize(layer, seed)``: re-initialise one layer's parameters in place (used on copies only).

Only PyTorch is served here; another framework adds one adapter class and one branch.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``exp(z_c - max z) / sum_k exp(z_k - max z)`` of ``(N, K)`` logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=1, keepdims=True)


class TorchAdapter:
    """Runs a ``torch.nn.Module`` in eval mode under ``no_grad``; restores every module's flag."""

    channel_axis = 1

    def __init__(self, model: Any):
        self.model = model

    def _device_and_dtype(self) -> tuple[Any, Any]:
        import torch

        for tensor in (*self.model.parameters(), *self.model.buffers()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    def probabilities(
        self, inputs: np.ndarray, batch_size: int, apply_softmax: bool = True
    ) -> np.ndarray:
        """Class probabilities ``(N, K)``: the softmax of the outputs, or the outputs themselves
        when ``apply_softmax=False``."""
        import torch

        from gradcampp.backends.torch_backend import eval_mode

        device, dtype = self._device_and_dtype()
        rows = []
        with eval_mode(self.model), torch.no_grad():
            for start in range(0, inputs.shape[0], batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size]))
                out = self.model(chunk.to(device=device, dtype=dtype))
                if not isinstance(out, torch.Tensor) or out.ndim != 2:
                    raise ValueError(
                        "the model must return (N, n_classes) scores, got "
                        + (
                            f"shape {tuple(out.shape)}"
                            if hasattr(out, "shape")
                            else type(out).__name__
                        )
                    )
                rows.append(out.detach().double().cpu().numpy())
        outputs = np.concatenate(rows, axis=0)
        return softmax(outputs) if apply_softmax else outputs

    def copy(self) -> Any:
        return copy.deepcopy(self.model)

    def layers(self) -> list[tuple[str, Any]]:
        return [
            (name, module)
            for name, module in self.model.named_modules()
            if any(True for _ in module.parameters(recurse=False))
        ]

    def randomize(self, layer: Any, seed: int) -> None:
        """Re-initialise ``layer`` with its own ``reset_parameters`` (or a normal draw with each
        parameter's standard deviation), under a private random state seeded by ``seed``."""
        import torch

        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
                return
            for param in layer.parameters(recurse=False):
                scale = float(param.std()) if param.numel() > 1 else 1.0
                param.normal_(0.0, scale if scale > 0 else 1.0)


def adapter_for(model: Any) -> TorchAdapter:
    """The adapter that runs ``model``.

    Raises:
        TypeError: when ``model`` is not a framework model served here (a ``torch.nn.Module``).
    """
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):  # on Keras's torch backend, too
        raise TypeError(
            "the metrics run PyTorch models; a Keras model (on any Keras backend) is not "
            "supported by them"
        )
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return TorchAdapter(model)
    raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is a positive integer, else a ValueError."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def as_images(images: Any, maps_spatial: tuple[int, ...], channel_axis: int) -> np.ndarray:
    """Images as float32 NumPy whose spatial shape (all axes but 0 and the channel axis) matches
    the maps'.

    Raises:
        ValueError: when the shapes do not fit.
    """
    from gradcampp.metrics._arrays import as_numpy

    array = as_numpy(images, "images", dtype=np.float32)
    if array.ndim != len(maps_spatial) + 2:
        raise ValueError(
            f"images must have shape (N, C, *spatial) matching maps of spatial shape "
            f"{maps_spatial}, got shape {array.shape}"
        )
    spatial = tuple(np.delete(np.array(array.shape[1:]), channel_axis % array.ndim - 1))
    if spatial != tuple(maps_spatial):
        raise ValueError(
            f"images of shape {array.shape} (channel axis {channel_axis}) do not match maps of "
            f"spatial shape {maps_spatial}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("images contain NaN or Inf")
    return array


def as_targets(targets: Any, n: int, n_classes: int) -> np.ndarray:
    """Class indices ``(N,)`` int64 from an ``int`` or an integer array ``(N,)``.

    Raises:
        ValueError, TypeError: for another shape, non-integers or indices out of ``[0, K)``.
    """
    from gradcampp.metrics._arrays import as_numpy

    array = as_numpy(targets, "targets", dtype=None)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"targets must be integer class indices, got dtype {array.dtype}")
    if array.ndim == 0:
        array = np.full(n, int(array))
    if array.shape != (n,):
        raise ValueError(
            f"targets must be an int or class indices of shape ({n},), got {array.shape}"
        )
    if array.min() < 0 or array.max() >= n_classes:
        raise ValueError(
            f"targets must be class indices in [0, {n_classes}), got values in "
            f"[{array.min()}, {array.max()}]"
        )
    return array.astype(np.int64)
