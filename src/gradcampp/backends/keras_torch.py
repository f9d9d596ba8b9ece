"""Keras 3 on PyTorch: find the layer, run the model once, return A and dY/dA.

A Keras model on this backend is also a ``torch.nn.Module``, but its layers take channels-last
inputs and name themselves as Keras does; ``backends.backend_for`` therefore sends it here, not to
the PyTorch backend. The forward pass runs under ``torch.no_grad()`` up to the explained layer,
whose ``call`` (shadowed for the length of the pass, ``keras_graph.recording``) turns its output
into a fresh leaf tensor and switches gradient recording on, so that only the layers after it
record a graph; the gradients are taken with respect to that leaf alone
(``torch_backend.score_gradients``): no ``.grad`` is written, no weight gradient computed.

The model is left as found: the shadowed attributes are removed again in a ``finally`` block,
under ``model_lock(model)``; the wrapper acts in the calling thread only.
"""

from __future__ import annotations

from typing import Any

import torch

from gradcampp.backends.keras_graph import KerasBase, recording
from gradcampp.backends.torch_backend import score_gradients
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan


class KerasTorchBackend(KerasBase):
    """Activations and gradients of one layer of a Keras 3 model on the PyTorch backend.

    Arguments as ``keras_graph.KerasBase``.
    """

    def _eager(self, x: Any) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            return self.model(x, training=False)

    def capture(
        self, x: torch.Tensor, plan: TargetPlan, start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations ``(n, K, *S)`` and gradients ``(n, T, K, *S)``, float32, channels-first.

        ``plan`` gives the ``T`` scores of samples ``start:stop`` from the model's outputs.
        """
        layer = self._layer_for(x)
        captured: list[torch.Tensor] = []
        read: list[Any] = []

        def record(seen: Any, output: Any) -> Any:
            replaced = None
            if seen is layer and isinstance(output, torch.Tensor):
                leaf = output.detach().requires_grad_(True)
                captured.append(leaf)
                torch.set_grad_enabled(True)  # record the graph from here; no_grad() restores it
                replaced = output = leaf.clone()  # later in-place operations leave A intact
            elif seen is layer:
                captured.append(output)  # not a tensor: reported by _check_captured
            if seen is self._output_layer:
                read.append(output)
            return replaced

        watched = [layer] if self._output_layer is None else [layer, self._output_layer]
        with torch.inference_mode(False):
            with model_lock(self.model), recording(watched, record), torch.no_grad():
                outputs = self.model(x, training=False)
            acts = self._check_captured(captured, x, layer)
            if self._output_layer is not None:
                if not read:
                    raise ValueError(
                        f"the forward pass never reached output_layer {self._output_layer.name!r}"
                    )
                outputs = read[-1]
            plan.check_outputs(outputs)
            with torch.enable_grad():
                scores = plan.scores(outputs, start, stop)
                grads = score_gradients(scores, acts)  # (n, T, *S, K)
        return acts.detach().float().movedim(-1, 1), grads.movedim(-1, 2)
