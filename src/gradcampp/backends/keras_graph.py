"""What the Keras backends share on every Keras 3 backend (TensorFlow, JAX, PyTorch).

A Keras model is a graph of *operations*: layers, and operations that are not layers such as
the ``inputs + layer_scale(x)`` sum that ends each ConvNeXt block (``keras.ops.add``, named
``add_17`` or so). Both kinds run through ``Operation.__call__``, which calls the instance's
``call``; shadowing that attribute for the length of one forward pass records (or replaces) the
operation's output on any backend, eagerly or while a function is traced (``tf.function``,
``jax.jit``). This module finds the operations, resolves the ones a user names, records them,
and picks the default layer by probing one forward pass.

The default layer is the last operation to finish whose output ``(N, *S', K)`` has spatial extent
(``prod(S') > 1``): the last tensor of the image's feature map before the head, which is the input
of the head's global pooling on ``keras.applications`` models, also when it is an operation and
not a layer (ConvNeXt). When an operation returns the very tensor of the one before it (a nested
model returning its last layer's output), the inner, more specific operation is chosen.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import keras
import numpy as np

from gradcampp._warnings import warn_user
from gradcampp.backends.base import Batch, describe, unknown_layer
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan

#: What ``conv_layer``/``output_layer`` may be: a name (of a layer, of an operation such as
#: ``"add_17"``, or of a graph tensor), an index into ``model.layers``, a layer or operation, or a
#: tensor of the model's functional graph (``keras.KerasTensor``).
LayerRef: TypeAlias = Any

#: Called with ``(operation, output)`` for each recorded call; a value other than ``None``
#: replaces the operation's output.
Record: TypeAlias = Callable[[Any, Any], Any]


def graph_operations(model: keras.Model) -> list[Any]:
    """Every layer and operation inside ``model``, nested models included, parents first.

    Layers come from ``model._flatten_layers``; operations that are not layers (``keras.ops``
    calls on graph tensors) from the ``operations`` of each functional model, in graph order.
    """
    found: dict[int, Any] = {}
    for layer in [model, *model._flatten_layers(include_self=False, recursive=True)]:
        if layer is not model:
            found.setdefault(id(layer), layer)
        if isinstance(layer, keras.Model) and hasattr(layer, "_operations"):
            for operation in layer._operations:
                found.setdefault(id(operation), operation)
    return list(found.values())


def _call_attribute(operation: Any) -> str:
    """The method that ``Operation.__call__`` runs: ``quantized_call`` for quantized layers."""
    if getattr(operation, "quantization_mode", None) is not None:
        return "quantized_call"
    policy = getattr(operation, "dtype_policy", None)
    return "quantized_call" if getattr(policy, "quantization_mode", None) else "call"


@contextmanager
def recording(operations: Iterable[Any], record: Record) -> Iterator[None]:
    """Within the body, every call of each operation in ``operations`` reports ``record(op, out)``.

    A value other than ``None`` returned by ``record`` replaces the operation's output (the JAX
    and PyTorch backends route the output through a differentiable handle this way). Each
    operation's ``call`` is shadowed by an instance attribute for the length of the body; on exit
    (normal or by an exception) the attribute is deleted again, or the instance's own attribute
    restored when it had one, so the operations are exactly as before. Only calls made by the
    thread that entered the body are reported; callers hold the model's lock around it.
    """
    patched: list[tuple[Any, str, bool, Any]] = []
    owner = threading.get_ident()

    def wrap(operation: Any, call: Callable[..., Any]) -> Callable[..., Any]:
        def recorded_call(*args: Any, **kwargs: Any) -> Any:
            output = call(*args, **kwargs)
            if threading.get_ident() == owner:
                replaced = record(operation, output)
                if replaced is not None:
                    return replaced
            return output

        return recorded_call

    try:
        for operation in dict.fromkeys(operations):  # each operation once, in order
            name = _call_attribute(operation)
            own = name in vars(operation)
            own_value = vars(operation).get(name)
            object.__setattr__(operation, name, wrap(operation, getattr(operation, name)))
            patched.append((operation, name, own, own_value))
        yield
    finally:
        for operation, name, own, value in reversed(patched):
            if own:
                object.__setattr__(operation, name, value)
            else:
                object.__delattr__(operation, name)


def spatial_extent(value: Any, rank: int) -> bool:
    """Whether ``value`` is a channels-last tensor ``(N, *S, C)`` of rank ``rank``, prod(S) > 1."""
    if not keras.ops.is_tensor(value):
        return False
    shape = tuple(value.shape)
    if len(shape) != rank:
        return False
    spatial = shape[1:-1]
    return None in spatial or math.prod(spatial) > 1


def softmax_at(layer: Any) -> bool:
    """Whether ``layer`` (or the last layer of a functional model) ends in a softmax."""
    if isinstance(layer, keras.Model):
        try:
            layer.outputs  # noqa: B018 (functional and Sequential models only)
        except (AttributeError, ValueError):
            return False
        return bool(layer.layers) and softmax_at(layer.layers[-1])
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(getattr(layer, "activation", None), "__name__", None) == "softmax"


def check_shape(got: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    """Raise a ValueError when inputs of shape ``got`` do not fit the model's ``expected``."""

    def fits(shape: tuple[Any, ...]) -> bool:
        return len(shape) == len(expected) and all(
            e is None or e == g for e, g in zip(expected[1:], shape[1:], strict=True)
        )

    if fits(got):
        return
    message = (
        f"the model takes channels-last inputs of shape {expected} (N, *spatial, channels), "
        f"got shape {got}"
    )
    if fits((got[0], *got[2:], got[1])):
        message += "; these look channels-first: move the channel axis last"
        message += " (np.moveaxis(x, 1, -1))"
    raise ValueError(message)


class KerasBase:
    """Layer resolution and the default layer of a Keras 3 model, on any Keras backend.

    Subclasses run the model in their framework: ``_eager(x)`` (one forward pass, no gradient),
    ``zeros(shape, dtype)``, ``prepare(inputs)`` and ``capture(x, plan, start, stop)``.

    Args:
        model: a ``keras.Model`` (functional, Sequential or subclassed, possibly holding nested
            models) mapping channels-last inputs ``(N, *S, C)`` to its outputs.
        conv_layer: the explained layer: ``None`` (the default, see the module docstring), the
            name of a layer, of an operation (``"add_17"``) or of a tensor of the functional
            graph, an index into ``model.layers``, the layer or operation itself, or a graph
            tensor (``keras.KerasTensor``, e.g. ``model.get_layer("gap").input``).
        output_layer: ``None`` (scores read from the model's output) or a layer (same forms)
            whose output is used instead, e.g. the logits before a softmax.
        default: how the layer is chosen when ``conv_layer`` is ``None``: ``"probe"`` (above) or
            ``"xplique"``: the last layer of ``model.layers`` with a ``filters`` attribute, as
            xplique 2.0.2 chooses.

    Warns:
        UserWarning: once, when the scores are read after a softmax (gradients of probabilities
            mix in every other class); name the layer before it as ``output_layer``.

    Raises:
        TypeError: for a layer of the wrong type.
        ValueError: for a layer that is not in the model.
    """

    def __init__(
        self,
        model: keras.Model,
        conv_layer: LayerRef = None,
        output_layer: LayerRef = None,
        default: str = "probe",
    ):
        self.model = model
        self._layers = graph_operations(model)
        self._layer = self._resolve_layer(conv_layer, "conv_layer")
        if self._layer is None and default == "xplique":
            self._layer = self._xplique_default()
        self._output_layer = self._resolve_layer(output_layer, "output_layer")
        self.last_layer: Any = self._layer
        if softmax_at(model if self._output_layer is None else self._output_layer):
            warn_user(
                "the explained scores are read after a softmax, so their gradients mix in every "
                "other class; pass output_layer=<the layer before the softmax> (or build the model "
                "with classifier_activation=None) to explain the logits"
            )
        self._probed: dict[tuple[Any, ...], Any] = {}
        self._compiled: dict[tuple[Any, ...], Any] = {}  # per input shape (TensorFlow, JAX)

    # ----------------------------------------------------------------------------------- layers

    def _graph_tensors(self) -> dict[str, Any]:
        """The functional graph's tensors by name, mapped to the operation that produced them."""
        named: dict[str, Any] = {}
        for operation in self._layers:
            for node in getattr(operation, "_inbound_nodes", []):
                for tensor in getattr(node, "outputs", []):
                    name = getattr(tensor, "name", None)
                    if isinstance(name, str):
                        named.setdefault(name, tensor)
        return named

    def _resolve_layer(self, layer: LayerRef, what: str) -> Any:
        if layer is None:
            return None
        if isinstance(layer, bool):
            raise TypeError(f"{what} must be a layer name, index or layer, got a bool")
        if isinstance(layer, int | np.integer):
            top = self.model.layers
            if not -len(top) <= layer < len(top):
                raise ValueError(
                    f"{what} index {int(layer)} is out of range for a model with {len(top)} "
                    "layers in model.layers"
                )
            return self._check_format(top[int(layer)], what)
        if isinstance(layer, keras.KerasTensor):
            return self._from_tensor(layer, what)
        if isinstance(layer, str):
            for candidate in self._layers:
                if candidate.name == layer:
                    return self._check_format(candidate, what)
            tensors = self._graph_tensors()
            if layer in tensors:
                return self._from_tensor(tensors[layer], what)
            raise unknown_layer(what, layer, [candidate.name for candidate in self._layers])
        if isinstance(layer, keras.Operation):
            if not any(candidate is layer for candidate in self._layers):
                raise ValueError(f"{what} {layer.name!r} is not a layer of the model")
            return self._check_format(layer, what)
        raise TypeError(
            f"{what} must be None, a layer name (str, also of an operation), an index into "
            "model.layers (int), a keras layer or operation, or a tensor of the model's graph "
            f"(keras.KerasTensor), got {type(layer).__name__}"
        )

    def _from_tensor(self, tensor: Any, what: str) -> Any:
        """The operation that produces the graph tensor ``tensor`` (its only output)."""
        history = getattr(tensor, "_keras_history", None)
        operation = getattr(history, "operation", None)
        if operation is None or not any(candidate is operation for candidate in self._layers):
            raise ValueError(
                f"{what}: tensor {getattr(tensor, 'name', tensor)!r} is not produced by an "
                "operation of the model's graph"
            )
        if any(len(node.outputs) > 1 for node in operation._inbound_nodes):
            raise ValueError(
                f"{what}: operation {operation.name!r} produces several tensors; name an "
                f"operation with one output instead of tensor {tensor.name!r}"
            )
        return self._check_format(operation, what)

    def _xplique_default(self) -> Any:
        """xplique 2.0.2's default: the last layer of ``model.layers`` with ``filters``."""
        for layer in reversed(self.model.layers):
            if hasattr(layer, "filters"):
                return self._check_format(layer, "conv_layer")
        raise ValueError(
            "variant='xplique' takes xplique's default layer, the last layer of model.layers "
            "with a `filters` attribute (a convolution), and this model has none; pass "
            "conv_layer"
        )

    @staticmethod
    def _check_format(layer: Any, what: str) -> Any:
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            raise ValueError(
                f"{what} {layer.name!r} is channels_first; Keras models are explained "
                "channels-last, (N, *spatial, channels)"
            )
        return layer

    def resolved_layer(self) -> Any:
        """The explained layer: the given one, else the default for the declared input shape.

        ``None`` when the model declares no complete input shape and nothing was explained yet.
        """
        if self.last_layer is not None:
            return self.last_layer
        shape = self._input_shape()
        if shape is None or any(size is None for size in shape[1:]):
            return None
        return self._layer_for(self.zeros((1, *shape[1:]), self._input_dtype()))

    def layer_name(self, x: Any) -> str:
        """Name of the layer (or operation) explained for inputs like ``x`` ``(N, *S, C)``."""
        return str(self._layer_for(x).name)

    def _layer_for(self, x: Any) -> Any:
        if self._layer is not None:
            return self._layer
        key = (tuple(x.shape[1:]), str(x.dtype))
        if key not in self._probed:
            self._probed[key] = self._probe(x[:1])
        self.last_layer = self._probed[key]
        return self._probed[key]

    def _probe(self, x: Any) -> Any:
        """The last operation to finish whose output ``(1, *S, K)`` has spatial extent."""
        finished: list[tuple[Any, Any]] = []

        def record(operation: Any, output: Any) -> None:
            finished.append((operation, output))

        with model_lock(self.model), recording(self._layers, record):
            self._eager(x)
        rank = len(x.shape)
        spatial = [i for i, (_, out) in enumerate(finished) if spatial_extent(out, rank)]
        if not spatial:
            raise ValueError(
                "no layer of the model outputs a (N, *spatial, channels) tensor with spatial "
                f"extent for inputs of shape {tuple(x.shape[1:])} per sample; pass conv_layer"
            )
        index = spatial[-1]
        while index > 0 and finished[index - 1][1] is finished[index][1]:
            index -= 1
        return self._check_format(finished[index][0], "the last spatial layer")

    def _check_captured(self, acts: list[Any], x: Any, layer: Any) -> Any:
        if not acts:
            raise ValueError(f"the forward pass never reached layer {layer.name!r}")
        feature_maps = acts[-1]
        if not keras.ops.is_tensor(feature_maps):
            raise TypeError(
                f"layer {layer.name!r} returns {type(feature_maps).__name__}, not a tensor"
            )
        if not spatial_extent(feature_maps, len(x.shape)):
            raise ValueError(
                f"layer {layer.name!r} outputs shape {tuple(feature_maps.shape)}, which is not "
                f"(N, *spatial, channels) with spatial extent for inputs of shape "
                f"{tuple(x.shape)}; choose an earlier layer"
            )
        return feature_maps

    # ----------------------------------------------------------------------------------- inputs

    def _input_shape(self) -> tuple[Any, ...] | None:
        """The model's declared input shape ``(None, *S, C)``, or ``None`` if it declares none."""
        try:
            inputs = self.model.inputs
        except (AttributeError, ValueError):
            return None
        if not inputs:
            return None
        if len(inputs) != 1:
            raise TypeError(f"models with one input are supported, this one has {len(inputs)}")
        return tuple(inputs[0].shape)

    def _input_dtype(self) -> str:
        """The float dtype the model takes (its input's, else float32), as a name."""
        try:
            dtype = keras.backend.standardize_dtype(self.model.inputs[0].dtype)
        except (AttributeError, ValueError, TypeError, IndexError):
            return "float32"
        return dtype if "float" in dtype else "float32"

    def prepare(self, inputs: Any) -> Batch:
        """Validate channels-last ``inputs`` ``(N, *S, C)`` and convert them to a float tensor.

        ``inputs`` is a tensor of the Keras backend or a NumPy array (or nested sequence).
        ``Batch.finish`` turns maps ``(N, [T,] *S)`` into float32 ``(N, [T,] *S, 1)``, the shape
        xplique returns: a backend tensor for tensor inputs, NumPy for NumPy inputs.
        """
        if self.is_tensor(inputs):
            array = None
            shape, dtype = tuple(inputs.shape), keras.backend.standardize_dtype(inputs.dtype)
        else:
            try:
                array = np.asarray(inputs)
            except Exception as error:
                raise TypeError(
                    "inputs must be a tensor or a NumPy array, got " + type(inputs).__name__
                ) from error
            if array.dtype.kind not in "biufc":
                raise TypeError(f"inputs must be numeric, got {describe(inputs)}")
            shape, dtype = array.shape, str(array.dtype)
        if len(shape) not in (3, 4, 5):
            raise ValueError(
                "inputs must have shape (N, *spatial, channels) with 1, 2 or 3 spatial "
                f"dimensions, got shape {shape}"
            )
        if shape[0] == 0:
            raise ValueError(f"inputs hold no sample (shape {shape})")
        if dtype == "bool" or "complex" in dtype:
            raise TypeError(f"inputs must be real numbers, got dtype {dtype}")
        expected = self._input_shape()
        if expected is not None:
            check_shape(shape, expected)
        x = keras.ops.convert_to_tensor(inputs if array is None else array, self._input_dtype())
        total = keras.ops.sum(keras.ops.cast(x, "float32"))
        if not bool(keras.ops.isfinite(total)) and not bool(keras.ops.all(keras.ops.isfinite(x))):
            raise ValueError("inputs contain NaN or Inf")
        to_numpy = array is not None
        return Batch(x, tuple(shape[1:-1]), lambda maps: self.finish(maps, to_numpy))

    # ------------------------------------------------------------------- for the subclasses

    def is_tensor(self, value: Any) -> bool:
        """Whether ``value`` is a tensor of this backend."""
        return bool(keras.ops.is_tensor(value))

    def finish(self, maps: Any, to_numpy: bool) -> Any:
        """Maps ``(N, [T,] *S)`` as ``(N, [T,] *S, 1)``: NumPy when the inputs were NumPy."""
        maps = maps[..., None]
        return keras.ops.convert_to_numpy(maps) if to_numpy else maps

    def zeros(self, shape: tuple[int, ...], dtype: str) -> Any:
        """A zero tensor of this backend."""
        return keras.ops.zeros(shape, dtype)

    def _eager(self, x: Any) -> Any:
        """One forward pass over ``x``, in inference mode, without recording gradients."""
        return self.model(x, training=False)


#: Checks only what every class-based target needs: outputs of shape (N, n_classes).
CLASS_OUTPUTS = TargetPlan(0, multi=False, top_k=1)


def selector(plan: TargetPlan, start: int, stop: int) -> tuple[str, tuple[np.ndarray, ...]]:
    """The kind of a class-based ``plan`` and the arrays that select samples ``start:stop``."""
    if plan.weights is not None:
        return "weights", (np.asarray(plan.weights[start:stop], np.float32),)
    if plan.indices is not None:
        return "indices", (np.asarray(plan.indices[start:stop], np.int32),)
    return "top_k", ()


def graph_plan(mode: str, n_targets: int, chosen: tuple[Any, ...]) -> TargetPlan:
    """A plan whose selectors are the (traced) tensors ``chosen`` of one chunk."""
    if mode == "weights":
        return TargetPlan(0, multi=False, weights=chosen[0])
    if mode == "indices":
        return TargetPlan(0, multi=n_targets > 1, indices=chosen[0])
    return TargetPlan(0, multi=n_targets > 1, top_k=n_targets)
