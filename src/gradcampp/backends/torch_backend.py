"""PyTorch backend: find the layer, run the model once, return its activations and gradients.

Cost: the forward pass runs under ``torch.no_grad()`` up to the explained layer; a forward hook
turns that layer's output into a fresh leaf tensor and switches gradient recording on, so that
only the layers after it record a graph. Each target then needs one ``torch.autograd.grad`` call
through that head, with respect to the layer's output only: no parameter gradient is computed and
no ``.grad`` is written.

The model is left exactly as found: the hook is removed, and the ``training`` flag of every
module is restored (the pass itself runs in eval mode), also when something raises. The forward
pass holds ``model_lock(model)`` and its hooks act in the calling thread only, so explanations in
several threads neither see nor disturb each other (see ``gradcampp.concurrency``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from gradcampp.backends.base import Batch, describe, unknown_layer
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the body with every module in eval mode, then restore each module's own flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _has_spatial_extent(shape: tuple[int, ...], rank: int) -> bool:
    return len(shape) == rank and math.prod(shape[2:]) > 1


class TorchBackend:
    """Activations and gradients of one layer of a ``torch.nn.Module``.

    Args:
        model: the network; it maps a ``(N, C, *S)`` tensor to its outputs.
        conv_layer: ``None`` (the last module whose output has spatial extent, found by probing
            one forward pass), a name from ``model.named_modules()``, or a submodule.
        output_layer: ``None`` (scores are read from the model's output) or a submodule (name or
            module) whose output is used instead, e.g. the logits before a final softmax.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        conv_layer: str | torch.nn.Module | None = None,
        output_layer: str | torch.nn.Module | None = None,
    ):
        self.model = model
        self._names = {module: name for name, module in model.named_modules()}
        self._layer = self._resolve_layer(conv_layer, "conv_layer")
        self._output_layer = self._resolve_layer(output_layer, "output_layer")
        self._probed: dict[tuple[int, ...], torch.nn.Module] = {}

    def _resolve_layer(
        self, layer: str | torch.nn.Module | None, what: str
    ) -> torch.nn.Module | None:
        if layer is None:
            return None
        if isinstance(layer, str):
            modules = dict(self.model.named_modules())
            if layer not in modules or layer == "":
                raise unknown_layer(what, layer, [name for name in modules if name], "module")
            return modules[layer]
        if isinstance(layer, torch.nn.Module):
            if layer not in self._names:
                raise ValueError(f"{what} {type(layer).__name__} is not a submodule of the model")
            return layer
        raise TypeError(
            f"{what} must be None, a module name (str) or a torch.nn.Module, "
            f"got {type(layer).__name__}"
        )

    def layer_name(self, x: torch.Tensor) -> str:
        """Name (in ``model.named_modules()``) of the layer explained for inputs like ``x``."""
        return self._names[self._layer_for(x)]

    @property
    def _device_and_dtype(self) -> tuple[torch.device | None, torch.dtype]:
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
        return None, torch.get_default_dtype()

    def prepare(self, inputs: Any) -> Batch:
        """Validate ``inputs`` ``(N, C, *S)`` and move them to the model's device and dtype."""
        if isinstance(inputs, torch.Tensor):
            x = inputs.detach()
            finish: Callable[[Any], Any] = lambda maps: maps.to(inputs.device)  # noqa: E731
        else:
            try:
                array = np.asarray(inputs)
            except Exception as error:
                raise TypeError(
                    f"inputs must be a torch.Tensor or a NumPy array, got {type(inputs).__name__}"
                ) from error
            if array.dtype.kind not in "biufc":
                raise TypeError(f"inputs must be numeric, got {describe(inputs)}")
            x = torch.from_numpy(np.ascontiguousarray(array))
            finish = lambda maps: maps.cpu().numpy()  # noqa: E731
        if x.ndim not in (3, 4, 5):
            raise ValueError(
                "inputs must have shape (N, C, *spatial) with 1, 2 or 3 spatial dimensions, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"inputs hold no sample (shape {tuple(x.shape)})")
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"inputs must be real numbers, got dtype {x.dtype}")
        device, dtype = self._device_and_dtype
        x = x.to(device=device or x.device, dtype=dtype)
        # one summing pass decides in the common case; the element-wise test runs on a bad sum only
        if not bool(torch.isfinite(x.sum(dtype=torch.float32))) and not bool(
            torch.isfinite(x).all()
        ):
            raise ValueError("inputs contain NaN or Inf")
        return Batch(x, tuple(x.shape[2:]), finish)

    def _layer_for(self, x: torch.Tensor) -> torch.nn.Module:
        if self._layer is not None:
            return self._layer
        key = tuple(x.shape[1:])
        if key not in self._probed:
            self._probed[key] = self._probe(x[:1])
        return self._probed[key]

    def _probe(self, x: torch.Tensor) -> torch.nn.Module:
        """The last module to finish whose output is ``(1, C, *S)`` with spatial extent."""
        finished: list[torch.nn.Module] = []
        owner = threading.get_ident()

        def record(module: torch.nn.Module, args: Any, output: Any) -> None:
            if threading.get_ident() != owner:
                return
            if isinstance(output, torch.Tensor) and _has_spatial_extent(output.shape, x.ndim):
                finished.append(module)

        with model_lock(self.model):
            handles = [
                module.register_forward_hook(record)
                for module in self.model.modules()
                if module is not self.model
            ]
            try:
                with eval_mode(self.model), torch.inference_mode(False), torch.no_grad():
                    self.model(x)
            finally:
                for handle in handles:
                    handle.remove()
        if not finished:
            raise ValueError(
                "no module of the model outputs a (N, C, *spatial) tensor with spatial extent "
                f"for inputs of shape {tuple(x.shape[1:])} per sample; pass conv_layer"
            )
        return finished[-1]

    def capture(
        self, x: torch.Tensor, plan: TargetPlan, start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations ``(n, K, *S)`` and gradients ``(n, T, K, *S)``, float32, for ``x``.

        ``plan`` gives the ``T`` scores of samples ``start:stop`` from the model's outputs.
        """
        captured: list[torch.Tensor] = []
        read: list[Any] = []
        owner = threading.get_ident()

        def hook(module: torch.nn.Module, args: Any, output: Any) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None  # another thread's pass: leave it alone
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {self._names[layer]!r} returns {type(output).__name__}, not a tensor"
                )
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            torch.set_grad_enabled(True)  # record the graph from here on; no_grad() restores it
            return leaf.clone()  # a copy, so that in-place layers after this one leave A intact

        def read_output(module: torch.nn.Module, args: Any, output: Any) -> None:
            if threading.get_ident() == owner:
                read.append(output)

        with torch.inference_mode(False):
            layer = self._layer_for(x)
            with model_lock(self.model):
                handles = [layer.register_forward_hook(hook)]
                if self._output_layer is not None:
                    handles.append(self._output_layer.register_forward_hook(read_output))
                try:
                    with eval_mode(self.model), torch.no_grad():
                        outputs = self.model(x.clone() if x.is_inference() else x)
                finally:
                    for handle in handles:
                        handle.remove()
            acts = self._check_captured(captured, x)
            if self._output_layer is not None:
                if not read:
                    raise ValueError(
                        "the forward pass never reached output_layer "
                        f"{self._names[self._output_layer]!r}"
                    )
                outputs = read[-1]
            plan.check_outputs(outputs)
            with torch.enable_grad():
                scores = plan.scores(outputs, start, stop)
                grads = self._gradients(scores, acts)
        return acts.detach().float(), grads

    def _check_captured(self, captured: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        name = self._names[self._layer_for(x)]
        if not captured:
            raise ValueError(f"the forward pass never reached layer {name!r}")
        acts = captured[-1]
        if not _has_spatial_extent(tuple(acts.shape), x.ndim) or acts.shape[0] != x.shape[0]:
            raise ValueError(
                f"layer {name!r} outputs shape {tuple(acts.shape)}, which is not (N, C, *spatial) "
                f"with spatial extent for inputs of shape {tuple(x.shape)}; choose an earlier layer"
            )
        return acts

    def _gradients(self, scores: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        if not scores.requires_grad:
            raise ValueError("the explained score does not depend on the chosen layer")
        n_targets = scores.shape[1]
        grads = []
        for t in range(n_targets):
            (grad,) = torch.autograd.grad(
                scores[:, t].sum(), acts, retain_graph=t < n_targets - 1, allow_unused=True
            )
            if grad is None:
                raise ValueError("the explained score does not depend on the chosen layer")
            grads.append(grad.float())
        return torch.stack(grads, dim=1)
