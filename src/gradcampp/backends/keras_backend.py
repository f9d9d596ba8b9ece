"""Keras 3 backend (TensorFlow): find the layer, run the model once, return A and dY/dA.

Cost: one forward pass, compiled with ``tf.function`` once per input shape and kind of target. The
explained layer's ``call`` is wrapped while the function is traced (and only then) so that its
output is recorded and watched by a ``tf.GradientTape`` that watches nothing else
(``watch_accessed_variables=False``): the tape records only the layers after the explained one,
and the compiled graph back-propagates through that head alone, with respect to the layer's output
only; no weight gradient is computed. Activations and gradients are returned channels-first, so
that ``gradcampp.formulas`` serves PyTorch and Keras alike.

Targets given as a callable run eagerly (the callable may hold Python that does not trace), with
the same wrapping for the length of the call. Finding the default layer wraps every layer for one
eager pass over a single sample, once per input shape.

The model is left exactly as found: the wrapped ``call`` attributes are removed again (or the
instance's own ones put back) in a ``finally`` block, also when the forward pass, the score or the
gradient raises; nothing is stored on the model or its layers. While they are wrapped the backend
holds ``model_lock(model)``, and the wrappers record calls made by the wrapping thread only, so
explanations in several threads neither see nor disturb each other.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import keras
import numpy as np
import tensorflow as tf

from gradcampp.backends.base import Batch, describe, unknown_layer
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan

LayerRef: TypeAlias = str | int | keras.layers.Layer | None

#: Checks only what every class-based target needs: outputs of shape (N, n_classes).
_CLASS_OUTPUTS = TargetPlan(0, multi=False, top_k=1)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer inside ``model``, nested models and their layers included, parents first."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def _call_attribute(layer: keras.layers.Layer) -> str:
    """The method that ``Layer.__call__`` runs: ``quantized_call`` for quantized layers."""
    policy = getattr(layer, "dtype_policy", None)
    return "quantized_call" if getattr(policy, "quantization_mode", None) else "call"


@contextmanager
def recording(
    layers: Iterable[keras.layers.Layer], record: Callable[[keras.layers.Layer, Any], None]
) -> Iterator[None]:
    """Within the body, every call of each layer in ``layers`` reports ``record(layer, output)``.

    Each layer's ``call`` is shadowed by an instance attribute for the length of the body; on exit
    (normal or by an exception) the attribute is deleted again, or the instance's own attribute
    restored when it had one, so the layers are exactly as before. Only calls made by the thread
    that entered the body are reported; callers hold the model's lock around it.
    """
    patched: list[tuple[keras.layers.Layer, str, bool, Any]] = []
    owner = threading.get_ident()

    def wrap(layer: keras.layers.Layer, call: Callable[..., Any]) -> Callable[..., Any]:
        def recorded_call(*args: Any, **kwargs: Any) -> Any:
            output = call(*args, **kwargs)
            if threading.get_ident() == owner:
                record(layer, output)
            return output

        return recorded_call

    try:
        for layer in dict.fromkeys(layers):  # each layer once, in order
            name = _call_attribute(layer)
            own = name in vars(layer)
            own_value = vars(layer).get(name)
            object.__setattr__(layer, name, wrap(layer, getattr(layer, name)))
            patched.append((layer, name, own, own_value))
        yield
    finally:
        for layer, name, own, value in reversed(patched):
            if own:
                object.__setattr__(layer, name, value)
            else:
                object.__delattr__(layer, name)


def _spatial_extent(value: Any, rank: int) -> bool:
    """Whether ``value`` is a channels-last tensor ``(N, *S, C)`` of rank ``rank``, prod(S) > 1."""
    if not isinstance(value, tf.Tensor) or value.shape.rank != rank:
        return False
    spatial = value.shape[1:-1]
    return None in spatial or math.prod(spatial) > 1


def _softmax_at(layer: Any) -> bool:
    """Whether ``layer`` (or the last layer of a functional model) ends in a softmax."""
    if isinstance(layer, keras.Model):
        try:
            layer.outputs  # noqa: B018 (functional and Sequential models only)
        except (AttributeError, ValueError):
            return False
        return bool(layer.layers) and _softmax_at(layer.layers[-1])
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(getattr(layer, "activation", None), "__name__", None) == "softmax"


class KerasBackend:
    """Activations and gradients of one layer of a Keras 3 model on the TensorFlow backend.

    Args:
        model: a ``keras.Model`` (functional, Sequential or subclassed, possibly holding nested
            models) mapping channels-last inputs ``(N, *S, C)`` to its outputs.
        conv_layer: the explained layer: ``None`` (the last layer, nested ones included, whose
            output ``(N, *S', K)`` has spatial extent, found by probing one forward pass), a
            layer name (searched in nested models too), an index into ``model.layers``, or the
            layer itself.
        output_layer: ``None`` (scores read from the model's output) or a layer (same forms)
            whose output is used instead, e.g. the logits before a softmax.
        default: how the layer is chosen when ``conv_layer`` is ``None``: ``"probe"`` (above)
            or ``"xplique"``: the last layer of ``model.layers`` with a ``filters`` attribute,
            as xplique 2.0.2 chooses.

    Warns:
        UserWarning: once, when the scores are read after a softmax (gradients of probabilities
            mix in every other class); name the layer before it as ``output_layer``.

    Raises:
        TypeError: for a Keras model on another backend than TensorFlow, or a layer of the wrong
            type.
        ValueError: for a layer that is not in the model.
    """

    def __init__(
        self,
        model: keras.Model,
        conv_layer: LayerRef = None,
        output_layer: LayerRef = None,
        default: str = "probe",
    ):
        if keras.backend.backend() != "tensorflow":
            raise TypeError(
                "Keras models are explained on the TensorFlow backend, but Keras runs on "
                f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow"
            )
        self.model = model
        self._layers = _all_layers(model)
        self._layer = self._resolve_layer(conv_layer, "conv_layer")
        if self._layer is None and default == "xplique":
            self._layer = self._xplique_default()
        self._output_layer = self._resolve_layer(output_layer, "output_layer")
        self.last_layer: keras.layers.Layer | None = self._layer
        if _softmax_at(model if self._output_layer is None else self._output_layer):
            warnings.warn(
                "the explained scores are read after a softmax, so their gradients mix in every "
                "other class; pass output_layer=<the layer before the softmax> (or build the model "
                "with classifier_activation=None) to explain the logits",
                UserWarning,
                stacklevel=4,
            )
        self._probed: dict[tuple[Any, ...], keras.layers.Layer] = {}
        self._compiled: dict[tuple[Any, ...], Any] = {}

    def _resolve_layer(self, layer: LayerRef, what: str) -> keras.layers.Layer | None:
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
        if isinstance(layer, str):
            for candidate in self._layers:
                if candidate.name == layer:
                    return self._check_format(candidate, what)
            raise unknown_layer(what, layer, [candidate.name for candidate in self._layers])
        if isinstance(layer, keras.layers.Layer):
            if not any(candidate is layer for candidate in self._layers):
                raise ValueError(f"{what} {layer.name!r} is not a layer of the model")
            return self._check_format(layer, what)
        raise TypeError(
            f"{what} must be None, a layer name (str), an index into model.layers (int) or a "
            f"keras layer, got {type(layer).__name__}"
        )

    def _xplique_default(self) -> keras.layers.Layer:
        """xplique 2.0.2's default: the last layer of ``model.layers`` with ``filters``."""
        for layer in reversed(self.model.layers):
            if hasattr(layer, "filters"):
                return self._check_format(layer, "conv_layer")
        raise ValueError(
            "variant='xplique' takes xplique's default layer, the last layer of model.layers "
            "with a `filters` attribute (a convolution), and this model has none; pass "
            "conv_layer"
        )

    def resolved_layer(self) -> keras.layers.Layer | None:
        """The explained layer: the given one, else the default for the declared input shape.

        ``None`` when the model declares no complete input shape and nothing was explained yet.
        """
        if self.last_layer is not None:
            return self.last_layer
        shape = self._input_shape()
        if shape is None or any(size is None for size in shape[1:]):
            return None
        return self._layer_for(tf.zeros((1, *shape[1:]), self._input_dtype()))

    @staticmethod
    def _check_format(layer: keras.layers.Layer, what: str) -> keras.layers.Layer:
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            raise ValueError(
                f"{what} {layer.name!r} is channels_first; Keras models are explained "
                "channels-last, (N, *spatial, channels)"
            )
        return layer

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

    def _input_dtype(self) -> tf.DType:
        try:
            dtype = tf.as_dtype(self.model.inputs[0].dtype)
        except (AttributeError, ValueError, TypeError, IndexError):
            return tf.float32
        return dtype if dtype.is_floating else tf.float32

    def prepare(self, inputs: Any) -> Batch:
        """Validate channels-last ``inputs`` ``(N, *S, C)`` and convert them to a float tensor.

        ``inputs`` is a ``tf.Tensor``, a NumPy array (or nested sequence), or a ``tf.data.Dataset``
        whose elements are inputs or ``(input, target)`` pairs, batched or not; the dataset's
        targets are then returned in ``Batch.targets`` (NumPy, ``(N,)`` or ``(N, n_classes)``).
        ``Batch.finish`` turns maps ``(N, [T,] *S)`` into a float32 ``tf.Tensor``
        ``(N, [T,] *S, 1)``: the shape xplique returns.
        """
        expected = self._input_shape()
        targets = None
        if isinstance(inputs, tf.data.Dataset):
            x, targets = _read_dataset(inputs, None if expected is None else len(expected))
        elif isinstance(inputs, tf.Tensor | tf.Variable):
            x = tf.convert_to_tensor(inputs)
        else:
            try:
                array = np.asarray(inputs)
            except Exception as error:
                raise TypeError(
                    "inputs must be a tf.Tensor, a NumPy array or a tf.data.Dataset, got "
                    f"{type(inputs).__name__}"
                ) from error
            if array.dtype == object:
                raise TypeError(f"inputs must be numeric, got {describe(inputs)}")
            x = tf.convert_to_tensor(array)
        if x.shape.rank not in (3, 4, 5):
            raise ValueError(
                "inputs must have shape (N, *spatial, channels) with 1, 2 or 3 spatial "
                f"dimensions, got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"inputs hold no sample (shape {tuple(x.shape)})")
        if x.dtype == tf.bool or x.dtype.is_complex or x.dtype == tf.string:
            raise TypeError(f"inputs must be real numbers, got dtype {x.dtype.name}")
        if expected is not None:
            _check_shape(tuple(x.shape), expected)
        x = tf.cast(x, self._input_dtype())
        # one summing pass decides in the common case; the element-wise test runs on a bad sum only
        if not bool(tf.math.is_finite(tf.reduce_sum(tf.cast(x, tf.float32)))) and not bool(
            tf.reduce_all(tf.math.is_finite(x))
        ):
            raise ValueError("inputs contain NaN or Inf")
        return Batch(x, tuple(x.shape[1:-1]), lambda maps: tf.expand_dims(maps, -1), targets)

    # ----------------------------------------------------------------------------------- layers

    def layer_name(self, x: tf.Tensor) -> str:
        """Name of the layer explained for inputs like ``x`` ``(N, *S, C)``."""
        return self._layer_for(x).name

    def _layer_for(self, x: tf.Tensor) -> keras.layers.Layer:
        if self._layer is not None:
            return self._layer
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in self._probed:
            self._probed[key] = self._probe(x[:1])
        self.last_layer = self._probed[key]
        return self._probed[key]

    def _probe(self, x: tf.Tensor) -> keras.layers.Layer:
        """The last layer to finish whose output ``(1, *S, K)`` has spatial extent.

        When a nested model or block returns the very tensor of one of its layers, that inner
        layer is chosen (the same activations, under the most specific name).
        """
        finished: list[tuple[keras.layers.Layer, Any]] = []
        record = lambda layer, output: finished.append((layer, output))  # noqa: E731
        with model_lock(self.model), recording(self._layers, record):
            self.model(x, training=False)
        spatial = [i for i, (_, out) in enumerate(finished) if _spatial_extent(out, x.shape.rank)]
        if not spatial:
            raise ValueError(
                "no layer of the model outputs a (N, *spatial, channels) tensor with spatial "
                f"extent for inputs of shape {tuple(x.shape[1:])} per sample; pass conv_layer"
            )
        index = spatial[-1]
        while index > 0 and finished[index - 1][1] is finished[index][1]:
            index -= 1
        return self._check_format(finished[index][0], "the last spatial layer")

    # ---------------------------------------------------------------------------------- capture

    def capture(
        self, x: tf.Tensor, plan: TargetPlan, start: int, stop: int
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Activations ``(n, K, *S)`` and gradients ``(n, T, K, *S)``, float32, channels-first.

        ``plan`` gives the ``T`` scores of samples ``start:stop`` from the model's outputs.
        """
        layer = self._layer_for(x)
        if plan.score_fn is not None:
            acts, grads, _ = self._run(x, layer, lambda out: plan.scores(out, start, stop))
            return acts, grads
        mode, selector = _selector(plan, start, stop)
        function = self._function(layer, mode, plan.n_targets, x, selector)
        plan.check_outputs(function.structured_outputs[2])
        acts, grads, _ = function(x, *selector)
        return acts, grads

    def _function(
        self,
        layer: keras.layers.Layer,
        mode: str,
        n_targets: int,
        x: tf.Tensor,
        selector: tuple[tf.Tensor, ...],
    ) -> Any:
        """The compiled capture for one layer, kind of target and per-sample input shape."""
        key = (id(layer), mode, n_targets, tuple(x.shape[1:]), x.dtype)
        with model_lock(self.model):  # tracing wraps the model's layers
            if key not in self._compiled:

                def run(inputs: tf.Tensor, *chosen: tf.Tensor) -> tuple[Any, ...]:
                    plan = _graph_plan(mode, n_targets, chosen)

                    def scores(outputs: Any) -> Any:
                        _CLASS_OUTPUTS.check_outputs(outputs)  # (N, n_classes), or a clear error
                        return plan.scores(outputs, 0, None)

                    return self._run(inputs, layer, scores)

                specs = [tf.TensorSpec((None, *x.shape[1:]), x.dtype)]
                specs += [tf.TensorSpec((None, *s.shape[1:]), s.dtype) for s in selector]
                self._compiled[key] = tf.function(run).get_concrete_function(*specs)
            return self._compiled[key]

    def _run(
        self, x: tf.Tensor, layer: keras.layers.Layer, score_of: Callable[[Any], Any]
    ) -> tuple[tf.Tensor, tf.Tensor, Any]:
        """One forward pass; the gradients of ``score_of(outputs)`` ``(n, T)`` w.r.t. the layer."""
        acts: list[tf.Tensor] = []
        read: list[Any] = []
        tape = tf.GradientTape(watch_accessed_variables=False, persistent=True)

        def record(seen: keras.layers.Layer, output: Any) -> None:
            if seen is layer:
                if not isinstance(output, tf.Tensor):
                    raise TypeError(
                        f"layer {layer.name!r} returns {type(output).__name__}, not a tensor"
                    )
                tape.watch(output)
                acts.append(output)
            if seen is self._output_layer:
                read.append(output)

        watched = [layer] if self._output_layer is None else [layer, self._output_layer]
        with model_lock(self.model), tape, recording(watched, record):
            outputs = self.model(x, training=False)
            if self._output_layer is not None:
                if not read:
                    raise ValueError(
                        f"the forward pass never reached output_layer {self._output_layer.name!r}"
                    )
                outputs = read[-1]
            feature_maps = self._check_captured(acts, x, layer)
            scores = score_of(outputs)
            per_target = [scores[:, t] for t in range(scores.shape[1])]
        grads = [tape.gradient(score, feature_maps) for score in per_target]
        if any(grad is None for grad in grads):
            raise ValueError(f"the explained score does not depend on layer {layer.name!r}")
        rank = feature_maps.shape.rank
        first = [0, rank - 1, *range(1, rank - 1)]
        acts_cf = tf.transpose(tf.cast(feature_maps, tf.float32), first)
        grads_cf = tf.transpose(
            tf.cast(tf.stack(grads, axis=1), tf.float32), [0, 1, rank, *range(2, rank)]
        )
        return acts_cf, grads_cf, outputs

    @staticmethod
    def _check_captured(
        acts: list[tf.Tensor], x: tf.Tensor, layer: keras.layers.Layer
    ) -> tf.Tensor:
        if not acts:
            raise ValueError(f"the forward pass never reached layer {layer.name!r}")
        feature_maps = acts[-1]
        if not _spatial_extent(feature_maps, x.shape.rank):
            raise ValueError(
                f"layer {layer.name!r} outputs shape {tuple(feature_maps.shape)}, which is not "
                f"(N, *spatial, channels) with spatial extent for inputs of shape "
                f"{tuple(x.shape)}; choose an earlier layer"
            )
        return feature_maps


def _selector(plan: TargetPlan, start: int, stop: int) -> tuple[str, tuple[tf.Tensor, ...]]:
    """The kind of a class-based ``plan`` and the tensors that select samples ``start:stop``."""
    if plan.weights is not None:
        return "weights", (tf.constant(plan.weights[start:stop], tf.float32),)
    if plan.indices is not None:
        return "indices", (tf.constant(plan.indices[start:stop], tf.int64),)
    return "top_k", ()


def _graph_plan(mode: str, n_targets: int, chosen: tuple[tf.Tensor, ...]) -> TargetPlan:
    """A plan whose selectors are the (symbolic) tensors ``chosen`` of one chunk."""
    if mode == "weights":
        return TargetPlan(0, multi=False, weights=chosen[0])
    if mode == "indices":
        return TargetPlan(0, multi=n_targets > 1, indices=chosen[0])
    return TargetPlan(0, multi=n_targets > 1, top_k=n_targets)


def _check_shape(got: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
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
        message += " (np.moveaxis(x, 1, -1) or tf.transpose)"
    raise ValueError(message)


def _read_dataset(dataset: tf.data.Dataset, rank: int | None) -> tuple[tf.Tensor, Any]:
    """All inputs (and targets, if the elements are pairs) of ``dataset``, stacked.

    The dataset is batched when its inputs have the model's input ``rank``; for models that do
    not declare one, when their leading dimension is unknown (as ``Dataset.batch`` leaves it).
    """
    spec = dataset.element_spec
    pairs = isinstance(spec, tuple)
    if pairs and len(spec) != 2:
        raise ValueError(
            "a dataset must hold inputs or (input, target) pairs, got elements of "
            f"{len(spec)} parts"
        )
    x_spec = spec[0] if pairs else spec
    if not isinstance(x_spec, tf.TensorSpec):
        raise TypeError(f"a dataset's inputs must be tensors, got {x_spec}")
    shape = x_spec.shape
    if rank is not None:
        batched = shape.rank == rank
    else:
        batched = bool(shape.rank) and shape[0] is None
    xs, ys = [], []
    for element in dataset:
        xs.append(element[0] if pairs else element)
        if pairs:
            ys.append(np.asarray(element[1]))
    if not xs:
        raise ValueError("the dataset holds no sample")
    x = tf.concat(xs, axis=0) if batched else tf.stack(xs)
    if not pairs:
        return x, None
    targets = np.concatenate(ys) if batched else np.stack(ys)
    return x, targets
