"""PyTorch backend: find the layer, run the model once, return its activations and gradients.

Cost: the forward pass runs under ``torch.no_grad()`` up to the explained layer; a forward hook
turns that layer's output into a fresh leaf tensor and switches gradient recording on, so that
only the layers after it record a graph. The gradients are taken through that head with respect to
the layer's output only (no parameter gradient is computed and no ``.grad`` is written), for all
targets in one vectorised backward pass or one pass per target, whichever was measured faster for
this model and shape on this machine (``score_gradients``).

The default layer is a feature map of the input or an error (see ``_probe``): channels-first maps,
channels-last maps and transformer tokens on the patch grid are recognised by their shapes
(``gradcampp.backends.layout``) and laid out as ``(N, C, *S)`` before anything else sees them; a
``reshape_transform`` given by the user replaces that reading.

The model is left exactly as found: the hook is removed, and the ``training`` flag of every
module is restored (the pass itself runs in eval mode), also when something raises. The forward
pass holds ``model_lock(model)`` and its hooks act in the calling thread only, so explanations in
several threads neither see nor disturb each other (see ``gradcampp.concurrency``).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradcampp._warnings import warn_user
from gradcampp.backends.base import Batch, describe, unknown_layer
from gradcampp.backends.hints import token_hint
from gradcampp.backends.layout import (
    Layout,
    Reading,
    TokenHint,
    read_layout,
    suggested_transform,
)
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan, class_scores

#: A user's ``reshape_transform``: the layer's output -> ``(N, C, *S)``.
ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the body with every module in eval mode, then restore each module's own flag.

    A model that is already in eval mode throughout is not touched (no attribute is set).
    """
    flags = [(module, module.training) for module in model.modules()]
    if not any(flag for _, flag in flags):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _resized_input(output: Any, x: torch.Tensor) -> tuple[int, ...] | None:
    """The spatial shape of a resized copy of the input a module returns, if it returns one.

    torchvision's detection models resize and pad their inputs in a ``transform`` module that
    returns ``(ImageList, targets)``; the feature maps after it are maps of that image.
    """
    images = output[0] if isinstance(output, tuple | list) and output else output
    tensors = getattr(images, "tensors", None)
    if isinstance(tensors, torch.Tensor) and tensors.ndim == x.ndim:
        return tuple(tensors.shape[2:])
    return None


#: Normalisation layers, by type: PyTorch's, and those timm defines in ``timm.layers.norm``. A
#: class is not a norm for its name (timm LeViT's ``LinearNorm`` is a linear projection).
NORM_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.LocalResponseNorm,
    torch.nn.RMSNorm,
)

#: Pools to a fixed output size: a grid that may differ from their input's.
ADAPTIVE_POOLS: tuple[type[torch.nn.Module], ...] = (
    torch.nn.AdaptiveAvgPool1d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.AdaptiveAvgPool3d,
    torch.nn.AdaptiveMaxPool1d,
    torch.nn.AdaptiveMaxPool2d,
    torch.nn.AdaptiveMaxPool3d,
)


def _is_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` normalises its input: by its type, never by its class name."""
    return isinstance(module, NORM_TYPES) or type(module).__module__ == "timm.layers.norm"


def _compiled_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The eager module that ``torch.compile`` wrapped ``model`` around, or ``None``."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else None


@dataclass
class _Seen:
    """One module call of the probing pass: what the probe needs to know, no tensor."""

    module: torch.nn.Module
    shape: tuple[int, ...] | None
    input_shape: tuple[int, ...] | None
    has_parameters: bool
    output_id: int  # the output's id: a container returns its last child's very tensor
    references: tuple[tuple[int, ...], ...]  # input sizes its output may be a map of
    reading: Reading | None = None


def _kind(event: _Seen) -> str | None:
    """The layout kind of a probed output, ``None`` when it is not a feature map."""
    if event.reading is None or event.reading.layout is None:
        return None
    return event.reading.layout.kind


def _probe_score(outputs: Any) -> torch.Tensor | None:
    """A score that depends on every input of the model's prediction, or ``None``."""
    scores = class_scores(outputs)
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
        return None
    if scores.ndim == 2:
        return scores.max(dim=1).values.sum()
    return scores.sum()


def _lay_out(tensor: torch.Tensor, layout: Layout, lead: int) -> torch.Tensor:
    """``tensor`` ``(*lead, ...)`` in ``layout``, as ``(*lead, C, *grid)``."""
    if layout.kind == "channels_first":
        return tensor
    if layout.kind == "tokens":
        tensor = tensor.narrow(lead, layout.prefix, tensor.shape[lead] - layout.prefix)
        tensor = tensor.reshape(*tensor.shape[:lead], *layout.grid, tensor.shape[-1])
    return tensor.movedim(-1, lead)


class TorchBackend:
    """Activations and gradients of one layer of a ``torch.nn.Module``.

    Args:
        model: the network; it maps a ``(N, C, *S)`` tensor to its outputs.
        conv_layer: ``None`` (the last module whose output has spatial extent, found by probing
            one forward pass), a name from ``model.named_modules()``, or a submodule.
        output_layer: ``None`` (scores are read from the model's output) or a submodule (name or
            module) whose output is used instead, e.g. the logits before a final softmax.
        reshape_transform: ``None`` (the layer's output is read as channels-first, channels-last
            or tokens on the patch grid, whichever alone fits the input) or a callable from the
            layer's output to ``(N, C, *S)``, applied to activations and gradients alike.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        conv_layer: str | torch.nn.Module | None = None,
        output_layer: str | torch.nn.Module | None = None,
        reshape_transform: ReshapeTransform | None = None,
    ):
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(
                "reshape_transform must be None or a callable from the layer's output to "
                f"(N, C, *spatial), got {type(reshape_transform).__name__}"
            )
        compiled = _compiled_module(model)
        if compiled is not None:  # torch.compile: explain its eager module (hooks would recompile)
            model = compiled
        self.model = model
        self.reshape_transform = reshape_transform
        self._names = {module: name for name, module in model.named_modules()}
        self._layer = self._resolve_layer(conv_layer, "conv_layer")
        self._output_layer = self._resolve_layer(output_layer, "output_layer")
        self._probed: dict[tuple[int, ...], torch.nn.Module] = {}
        self._references: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {}
        self.last_layer: torch.nn.Module | None = self._layer

    def _resolve_layer(
        self, layer: str | torch.nn.Module | None, what: str
    ) -> torch.nn.Module | None:
        if layer is None:
            return None
        if isinstance(layer, str):
            modules = dict(self.model.named_modules())
            if layer not in modules and layer.startswith("_orig_mod."):
                layer = layer.removeprefix("_orig_mod.")  # a name in the compiled wrapper
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

    def resolved_layer(self) -> torch.nn.Module | None:
        """The explained layer: the given one, else the default of the latest call (or ``None``)."""
        return self.last_layer

    def layer_name(self, x: torch.Tensor) -> str:
        """Name (in ``model.named_modules()``) of the layer explained for inputs like ``x``."""
        return self._names[self._layer_for(x)]

    @property
    def _device_and_dtype(self) -> tuple[torch.device | None, torch.dtype]:
        for tensor in itertools.chain(self.model.parameters(), self.model.buffers()):
            if tensor.is_floating_point():  # usually the first parameter: stop there
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
        self.last_layer = self._probed[key]
        return self._probed[key]

    def _observe(self, x: torch.Tensor) -> tuple[list[_Seen], Any]:
        """One pass over ``x`` that notes each module call's output shape; no tensor is kept."""
        seen: list[_Seen] = []
        references: list[tuple[int, ...]] = [tuple(x.shape[2:])]

        owner = threading.get_ident()

        def record(module: torch.nn.Module, args: Any, output: Any) -> None:
            if threading.get_ident() != owner:
                return  # another thread's pass: leave it alone
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            first = args[0] if args else None
            given = tuple(first.shape) if isinstance(first, torch.Tensor) else None
            own = next(module.parameters(recurse=False), None) is not None
            seen.append(_Seen(module, shape, given, own, id(output), tuple(references)))
            resized = _resized_input(output, x)
            if resized is not None and resized not in references:
                references.append(resized)

        with model_lock(self.model):
            handles = [
                module.register_forward_hook(record)
                for module in self.model.modules()
                if module is not self.model
            ]
            try:
                with eval_mode(self.model), torch.inference_mode(False), torch.no_grad():
                    outputs = self.model(x)
            finally:
                for handle in handles:
                    handle.remove()
        self._references[tuple(x.shape[1:])] = tuple(references)
        return seen, outputs

    def _probe(self, x: torch.Tensor) -> torch.nn.Module:
        """The default layer for inputs like ``x`` ``(1, C, *S)``: a feature map of the input.

        One pass notes every module's output. Candidates are the outputs that lie on a grid of
        the input (``layout.read_layout``: spatial shape = the input's divided by one stride, as
        channels-first, channels-last or tokens after a few prefix tokens) and that finish before
        the model's output layer (the last module with parameters of its own: the classifier or
        the layer that computes dense logits; nothing after it). On models whose output is not
        ``(N, n_classes)`` and that have a ``backbone`` (torchvision detection and segmentation),
        only the backbone's maps (of ``backbone.body`` where there is one) count: the default is
        the backbone's last feature map. The last candidate wins; when it is tokens
        (transformers), a second pass with gradients finds the last token layer whose patch
        tokens the predicted score depends on (preferring a normalisation layer: the first norm
        of the last block), since the tokens after the last attention reach the class token only.

        Raises:
            ValueError: naming the candidate layers, when no output qualifies.
        """
        seen, outputs = self._observe(x)
        with_parameters = [i for i, event in enumerate(seen) if event.has_parameters]
        head = with_parameters[-1] if with_parameters else len(seen)
        pool = seen[:head]
        scores = class_scores(outputs)
        is_classifier = isinstance(scores, torch.Tensor) and scores.ndim == 2
        backbone = dict(self.model.named_children()).get("backbone")
        if not is_classifier and isinstance(backbone, torch.nn.Module):
            prefix = "backbone.body." if hasattr(backbone, "body") else "backbone."
            pool = [event for event in pool if self._names[event.module].startswith(prefix)]
        for event in pool:
            if event.shape is not None and event.shape[0] == x.shape[0]:
                event.reading = self._read(event.shape, event.references)
        kinds = [_kind(event) for event in pool]
        maps = [i for i, kind in enumerate(kinds) if kind in ("channels_first", "channels_last")]
        after = maps[-1] + 1 if maps else 0
        tokens = [pool[i] for i in range(after, len(pool)) if kinds[i] == "tokens"]
        if tokens:
            chosen = self._token_layer(x, tokens)
            if chosen is not None:
                return chosen
        if maps:
            index = self._before_adaptive_pool(pool, maps[-1], x)
            self._warn_if_early(pool, index, bool(tokens))
            return pool[index].module
        raise ValueError(self._no_feature_map(x, seen, head))

    def _before_adaptive_pool(self, pool: list[_Seen], index: int, x: torch.Tensor) -> int:
        """``index``, or that of the map an adaptive pool at ``index`` pools to another grid.

        An adaptive pool (torchvision VGG's ``avgpool``, to 7 x 7) copies or averages cells of its
        input into a grid of a fixed size: the input is the feature map, the output only looks
        like one. Its input is the output of the latest call before it with that shape.

        Raises:
            ValueError: when the pool's input has no spatial extent (a 1 x 1 map spread over
                the pool's grid, e.g. VGG on 32 x 32 inputs).
        """
        event = pool[index]
        if not isinstance(event.module, ADAPTIVE_POOLS) or event.input_shape is None:
            return index
        if event.shape is None or event.input_shape[2:] == event.shape[2:]:
            return index  # the same grid: the pool changes nothing
        name = self._names[event.module]
        if math.prod(event.input_shape[2:]) <= 1:
            raise ValueError(
                f"the last feature map of inputs of shape {tuple(x.shape[1:])} per sample is "
                f"{event.input_shape[2:]}, before the adaptive pool {name!r} spreads it over "
                f"{event.shape[2:]}: it carries no location; pass larger inputs, or name an "
                "earlier layer as conv_layer"
            )
        for earlier in range(index - 1, -1, -1):
            if pool[earlier].shape == event.input_shape and _kind(pool[earlier]) is not None:
                while earlier > 0 and pool[earlier - 1].output_id == pool[earlier].output_id:
                    earlier -= 1  # the module that made the tensor, not its containers
                return earlier
        return index

    def _warn_if_early(self, pool: list[_Seen], index: int, tokens: bool) -> None:
        """Warn when later outputs than the chosen map were left out for their layout.

        Outputs that fit the input's grid in several ways (token counts with no layout stated by
        the model), or token layers that the score does not depend on, lie after the chosen map:
        the default then falls back before the model's blocks, and says so.
        """
        later = [
            self._names[event.module]
            for event in pool[index + 1 :]
            if event.reading is not None and event.reading.ambiguous
        ]
        if not later and not tokens:
            return
        name = self._names[pool[index].module]
        why = (
            f"the outputs of {', '.join(repr(n) for n in dict.fromkeys(later[-3:]))} fit the "
            "input's grid in several ways"
            if later
            else "the predicted score depends on no later token layer"
        )
        warn_user(
            f"the default layer is {name!r}, before later layers of the model: {why}; pass "
            "conv_layer (with a reshape_transform for tokens) to explain a later layer"
        )

    def _read(self, shape: tuple[int, ...], references: tuple[tuple[int, ...], ...]) -> Reading:
        """The reading of ``shape`` against the input size or a resized copy of the input."""
        first = read_layout(shape, references[0], self._hint(references[0]))
        if first.layout is not None or first.ambiguous:
            return first
        for spatial in references[1:]:
            reading = read_layout(shape, spatial)
            if reading.layout is not None and reading.layout.kind != "tokens":
                return reading
        return first

    def _hint(self, spatial: tuple[int, ...]) -> TokenHint | None:
        """The token layout the model states for inputs of spatial shape ``spatial``."""
        return token_hint(self.model, spatial)

    def _token_layer(self, x: torch.Tensor, tokens: list[_Seen]) -> torch.nn.Module | None:
        """The last token layer whose patch tokens the predicted score depends on.

        A normalisation layer is preferred among them; ``None`` when no score can be formed or
        none depends on its patch tokens.
        """
        modules = list(dict.fromkeys(event.module for event in tokens))
        kept: dict[torch.nn.Module, torch.Tensor] = {}

        owner = threading.get_ident()

        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            if threading.get_ident() == owner:
                kept[module] = output

        with model_lock(self.model):
            handles = [module.register_forward_hook(keep) for module in modules]
            try:
                with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
                    outputs = self.model(x.clone().requires_grad_(True))
            finally:
                for handle in handles:
                    handle.remove()
        with torch.inference_mode(False), torch.enable_grad():
            score = _probe_score(outputs)
            wanted = [m for m in modules if m in kept and kept[m].requires_grad]
            if score is None or not score.requires_grad or not wanted:
                return tokens[-1].module
            grads = torch.autograd.grad(score, [kept[m] for m in wanted], allow_unused=True)
        prefix = {event.module: event.reading.layout.prefix for event in tokens}  # type: ignore[union-attr]
        depends = [
            module
            for module, grad in zip(wanted, grads, strict=True)
            if grad is not None and bool(grad[:, prefix[module] :].ne(0).any())
        ]
        if not depends:
            return None
        norms = [module for module in depends if _is_norm(module)]
        return (norms or depends)[-1]

    def _no_feature_map(self, x: torch.Tensor, seen: list[_Seen], head: int) -> str:
        spatial = tuple(x.shape[2:])
        head_name = self._names[seen[head].module] if head < len(seen) else None
        listed = []
        for event in seen[:head]:
            if event.shape is None or len(event.shape) < 3:
                continue
            name = self._names[event.module]
            note = ""
            if event.reading is not None and event.reading.ambiguous:
                note = (
                    " (ambiguous: "
                    + "; ".join(layout.describe() for layout in event.reading.alternatives)
                    + ")"
                )
            listed.append(f"{name!r} {event.shape}{note}")
        message = (
            "no module of the model outputs a feature map of the input (spatial shape = the "
            f"input's {spatial} divided by one stride, channels-first, channels-last or as tokens "
            f"on such a grid) for inputs of shape {tuple(x.shape[1:])} per sample"
        )
        if head_name is not None:
            message += f", before its output layer {head_name!r}"
        if listed:
            message += "; candidate layers: " + ", ".join(dict.fromkeys(listed[-8:]))
        return message + "; pass conv_layer, with a reshape_transform for another layout"

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
        return self._laid_out(acts.detach().float(), grads, x)

    def _check_captured(self, captured: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        name = self._names[self._layer_for(x)]
        if not captured:
            raise ValueError(f"the forward pass never reached layer {name!r}")
        acts = captured[-1]
        if self._one_cell(tuple(acts.shape), x):
            return acts
        if acts.ndim < 3 or acts.shape[0] != x.shape[0] or math.prod(acts.shape[2:]) <= 1:
            raise ValueError(
                f"layer {name!r} outputs shape {tuple(acts.shape)}, which is not (N, C, *spatial) "
                f"with spatial extent for inputs of shape {tuple(x.shape)}; choose an earlier layer"
            )
        if self.reshape_transform is None:
            self._layout(tuple(acts.shape), x)  # a clear error before the backward pass
        return acts

    def _one_cell(self, shape: tuple[int, ...], x: torch.Tensor) -> bool:
        """Whether a layer the user named outputs a ``(N, C, 1, ...)`` map; warn if so.

        Such a map (CIFAR-size inputs on ImageNet networks) is one value per channel: its
        explanation is a constant map. The default layer is never one (``_probe``); a named one
        is explained, with a warning that the map carries no location.
        """
        if (
            self._layer is None
            or self.reshape_transform is not None
            or len(shape) != x.ndim
            or shape[0] != x.shape[0]
            or math.prod(shape[2:]) != 1
        ):
            return False
        warn_user(
            f"layer {self._names[self._layer]!r} outputs a 1 x 1 map {shape} for inputs of "
            f"spatial shape {tuple(x.shape[2:])}: its explanation is one value spread over the "
            "whole input and carries no location; choose an earlier layer with spatial extent"
        )
        return True

    def _layout(self, shape: tuple[int, ...], x: torch.Tensor) -> Layout:
        """How the explained layer's output of ``shape`` lies on the grid of inputs like ``x``."""
        spatial = tuple(x.shape[2:])
        key = tuple(x.shape[1:])
        if self._layer is not None and len(shape) == x.ndim and math.prod(shape[2:]) == 1:
            return Layout("channels_first", tuple(shape[2:]))  # a named 1 x 1 map (_one_cell)
        reading = read_layout(shape, spatial, self._hint(spatial))
        if reading.layout is None and not reading.ambiguous:
            if key not in self._references:  # a model that resizes its inputs (detection)
                self._observe(x[:1])
            reading = self._read(shape, self._references[key])
        if reading.layout is not None:
            return reading.layout
        name = self._names[self._layer_for(x)]
        if reading.ambiguous:
            options = "; ".join(layout.describe() for layout in reading.alternatives)
            raise ValueError(
                f"layer {name!r} outputs shape {shape}, which fits inputs of spatial shape "
                f"{spatial} in several ways ({options}); pass the one you mean as "
                f"reshape_transform, e.g. "
                f"{suggested_transform(shape, reading.alternatives[0])}"
            )
        raise ValueError(
            f"layer {name!r} outputs shape {shape}, which is not a feature map of inputs of "
            f"spatial shape {spatial}: neither (N, C, *S') nor (N, *S', C) nor tokens (N, L, D) "
            "with S' = the input's spatial shape divided by one stride; pass reshape_transform="
            "<a callable from the layer's output to (N, C, *S')>, or choose another layer"
        )

    def _laid_out(
        self, acts: torch.Tensor, grads: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations ``(n, *raw)`` and gradients ``(n, T, *raw)`` as ``(n, [T,] C, *S)``."""
        if self.reshape_transform is None:
            layout = self._layout(tuple(acts.shape), x)
            return _lay_out(acts, layout, 1), _lay_out(grads, layout, 2)
        transform = self.reshape_transform
        maps = transform(acts)
        per_target = [transform(grads[:, t]) for t in range(grads.shape[1])]
        name = self._names[self._layer_for(x)]
        for value in (maps, *per_target):
            if (
                not isinstance(value, torch.Tensor)
                or value.ndim != x.ndim
                or value.shape[0] != x.shape[0]
                or math.prod(value.shape[2:]) <= 1
                or value.shape != maps.shape
            ):
                raise ValueError(
                    f"reshape_transform must return (N, C, *spatial) tensors with {x.ndim - 2} "
                    f"spatial axes and spatial extent for the output {tuple(acts.shape)} of layer "
                    f"{name!r}, got {describe(value)}"
                )
        return maps.float(), torch.stack(per_target, dim=1).float()

    def _gradients(self, scores: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return score_gradients(scores, acts, self.model)


#: Per model: ``{(activation shape, targets, device, dtype): "batched" or "loop"}``, measured once.
_CHOICES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[Any, ...], str]] = (
    weakref.WeakKeyDictionary()
)
_CHOICES_LOCK = threading.Lock()
BACKWARD_PATHS = ("batched", "loop")


def backward_choices(model: torch.nn.Module) -> dict[tuple[Any, ...], str]:
    """The backward paths measured for ``model`` so far (a copy).

    Keys are ``(activation shape, number of targets, device, dtype)``; values ``"batched"`` (one
    vectorised pass, ``batched_gradients``) or ``"loop"`` (one pass per target,
    ``per_target_gradients``).
    """
    with _CHOICES_LOCK:
        return dict(_CHOICES.get(model, {}))


def set_backward_choice(model: torch.nn.Module, key: tuple[Any, ...] | None, path: str) -> None:
    """Fix the backward path of ``model`` for ``key`` (None: forget every choice of the model).

    Raises:
        ValueError: for a path other than ``"batched"`` or ``"loop"``.
    """
    if path not in BACKWARD_PATHS:
        raise ValueError(f"path must be one of {BACKWARD_PATHS}, got {path!r}")
    with _CHOICES_LOCK:
        if key is None:
            _CHOICES.pop(model, None)
        else:
            _CHOICES.setdefault(model, {})[key] = path


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - Apple GPUs only
        torch.mps.synchronize()


def _timed(run: Callable[[], torch.Tensor | None], device: torch.device) -> tuple[Any, float]:
    _synchronize(device)
    start = time.perf_counter()
    result = run()
    _synchronize(device)
    return result, time.perf_counter() - start


def _measure(scores: torch.Tensor, acts: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Run both paths twice, alternately (batched, loop, batched, loop); the faster by its best
    time, and its gradients. The graph is freed by the last pass."""
    device = scores.device
    batched, first = _timed(lambda: batched_gradients(scores, acts), device)
    if batched is None:  # not vectorisable: the loop is the only path
        return "loop", per_target_gradients(scores, acts)
    _, loop_first = _timed(lambda: per_target_gradients(scores, acts, retain_graph=True), device)
    _, second = _timed(lambda: batched_gradients(scores, acts), device)
    looped, loop_second = _timed(lambda: per_target_gradients(scores, acts), device)
    if min(first, second) <= min(loop_first, loop_second):
        return "batched", batched
    return "loop", looped


def score_gradients(
    scores: torch.Tensor, acts: torch.Tensor, model: torch.nn.Module | None = None
) -> torch.Tensor:
    """Gradients of each of ``T`` scores with respect to the layer's output, float32.

    ``grads[:, t] = d(sum_i scores[i, t]) / dA``, which is sample ``i``'s own gradient for models
    that treat samples independently (any model in eval mode).

    Two paths give the same numbers (to float32 rounding): one vectorised backward pass for all
    targets (``batched_gradients``: each weight read once, but one large matrix product) or one
    pass per target (``per_target_gradients``: ``T`` matrix-vector products, which some CPUs run
    faster for a single sample). Which one is faster depends on the machine, the head and the
    shapes, so it is measured, as cuDNN's benchmark mode does: the first call for a ``model``,
    activation shape, number of targets, device and dtype runs both paths twice and keeps the
    faster (``backward_choices``); later calls with the same key run only that one, so they give
    the same numbers as the first. Without ``model`` the batched path runs. A head whose backward
    pass cannot be vectorised always takes the loop.

    Args:
        scores: ``(n, T)`` scores, differentiable in ``acts``.
        acts: the layer's output ``(n, K, *S)``, a leaf that requires grad.
        model: the model the choice is remembered for (None: no measuring).

    Returns:
        gradients ``(n, T, K, *S)``, float32.

    Raises:
        ValueError: when the scores do not depend on ``acts``.
    """
    if not scores.requires_grad:
        raise ValueError("the explained score does not depend on the chosen layer")
    n_targets = scores.shape[1]
    if n_targets == 1:
        return per_target_gradients(scores, acts)
    if model is None:
        grads = batched_gradients(scores, acts)
        return grads if grads is not None else per_target_gradients(scores, acts)
    key = (tuple(acts.shape), n_targets, str(acts.device), str(acts.dtype))
    with _CHOICES_LOCK:
        chosen = _CHOICES.get(model, {}).get(key)
    if chosen is None:
        chosen, grads = _measure(scores, acts)
        with _CHOICES_LOCK:
            _CHOICES.setdefault(model, {})[key] = chosen
        return grads
    if chosen == "batched":
        grads = batched_gradients(scores, acts)
        if grads is not None:
            return grads
    return per_target_gradients(scores, acts)


def batched_gradients(scores: torch.Tensor, acts: torch.Tensor) -> torch.Tensor | None:
    """The gradients of all ``T`` scores in one vectorised vector-Jacobian product.

    The cotangent of target ``t`` is 1 in column ``t`` of every row and 0 elsewhere, so its
    vector-Jacobian product is ``d(sum_i scores[i, t]) / dA``; ``torch.autograd.grad`` with
    ``is_grads_batched=True`` runs the ``T`` products as one backward pass whose operations carry
    a leading target axis (a weight is read once for all targets).

    Args:
        scores: ``(n, T)`` scores, differentiable in ``acts``.
        acts: the layer's output ``(n, K, *S)``.

    Returns:
        gradients ``(n, T, K, *S)``, float32 (a view with the target axis second), or ``None``
        when the head's backward pass cannot be vectorised (an operation without a batching
        rule that can not fall back, such as ``.item()`` or data-dependent Python control flow in
        a custom ``autograd.Function``): the graph is kept, so the caller can then run one call per
        target.

    Raises:
        ValueError: when the scores do not depend on ``acts``.
    """
    n_targets = scores.shape[1]
    eye = torch.eye(n_targets, dtype=scores.dtype, device=scores.device)
    cotangents = eye[:, None, :].expand(n_targets, *scores.shape)
    try:
        (grad,) = torch.autograd.grad(
            scores,
            acts,
            grad_outputs=cotangents,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
    except Exception:  # not vectorisable; the per-target loop reports any real error
        return None
    if grad is None:
        raise ValueError("the explained score does not depend on the chosen layer")
    return grad.float().transpose(0, 1)


def per_target_gradients(
    scores: torch.Tensor, acts: torch.Tensor, retain_graph: bool = False
) -> torch.Tensor:
    """The gradients of the ``T`` scores, one ``torch.autograd.grad`` call per target.

    Args:
        scores: ``(n, T)`` scores, differentiable in ``acts``.
        acts: the layer's output ``(n, K, *S)``.
        retain_graph: keep the graph after the last target (to run another path after it).

    Returns:
        gradients ``(n, T, K, *S)``, float32.

    Raises:
        ValueError: when the scores do not depend on ``acts``.
    """
    n_targets = scores.shape[1]
    grads = []
    for t in range(n_targets):
        (grad,) = torch.autograd.grad(
            scores[:, t].sum(),
            acts,
            retain_graph=retain_graph or t < n_targets - 1,
            allow_unused=True,
        )
        if grad is None:
            raise ValueError("the explained score does not depend on the chosen layer")
        grads.append(grad.float())
    return torch.stack(grads, dim=1)
