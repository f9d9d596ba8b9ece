"""Keras 3 on TensorFlow: find the layer, run the model once, return A and dY/dA.

Cost: one forward pass, compiled with ``tf.function`` once per input shape and kind of target. The
explained layer's ``call`` is wrapped while the function is traced (and only then) so that its
output is recorded and watched by a ``tf.GradientTape`` that watches nothing else
(``watch_accessed_variables=False``): the tape records only the layers after the explained one,
and the compiled graph back-propagates through that head alone, with respect to the layer's output
only; no weight gradient is computed. Activations and gradients are returned channels-first, so
that ``gradcampp.formulas`` serves PyTorch and Keras alike.

Targets given as a callable run eagerly (the callable may hold Python that does not trace), with
the same wrapping for the length of the call. Finding the default layer wraps every layer and
operation for one eager pass over a single sample, once per input shape (``keras_graph``).

The model is left exactly as found: the wrapped ``call`` attributes are removed again (or the
instance's own ones put back) in a ``finally`` block, also when the forward pass, the score or the
gradient raises; nothing is stored on the model or its layers. While they are wrapped the backend
holds ``model_lock(model)``, and the wrappers record calls made by the wrapping thread only, so
explanations in several threads neither see nor disturb each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from gradcampp.backends.base import Batch, describe
from gradcampp.backends.keras_graph import (
    CLASS_OUTPUTS,
    KerasBase,
    LayerRef,
    check_shape,
    graph_plan,
    recording,
    selector,
)
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan

__all__ = ["KerasBackend", "LayerRef", "recording"]


class KerasBackend(KerasBase):
    """Activations and gradients of one layer of a Keras 3 model on the TensorFlow backend.

    Arguments as ``keras_graph.KerasBase``: the model, ``conv_layer`` (a layer or operation of
    the graph, or ``None`` for the default), ``output_layer`` and ``default``.
    """

    def zeros(self, shape: tuple[int, ...], dtype: str) -> tf.Tensor:
        return tf.zeros(shape, dtype)

    def _input_dtype(self) -> Any:
        return tf.as_dtype(super()._input_dtype())

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
            check_shape(tuple(x.shape), expected)
        x = tf.cast(x, self._input_dtype())
        # one summing pass decides in the common case; the element-wise test runs on a bad sum only
        if not bool(tf.math.is_finite(tf.reduce_sum(tf.cast(x, tf.float32)))) and not bool(
            tf.reduce_all(tf.math.is_finite(x))
        ):
            raise ValueError("inputs contain NaN or Inf")
        return Batch(x, tuple(x.shape[1:-1]), lambda maps: tf.expand_dims(maps, -1), targets)

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
        layer: Any,
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
                    plan = graph_plan(mode, n_targets, chosen)

                    def scores(outputs: Any) -> Any:
                        CLASS_OUTPUTS.check_outputs(outputs)  # (N, n_classes), or a clear error
                        return plan.scores(outputs, 0, None)

                    return self._run(inputs, layer, scores)

                specs = [tf.TensorSpec((None, *x.shape[1:]), x.dtype)]
                specs += [tf.TensorSpec((None, *s.shape[1:]), s.dtype) for s in selector]
                self._compiled[key] = tf.function(run).get_concrete_function(*specs)
            return self._compiled[key]

    def _run(
        self, x: tf.Tensor, layer: Any, score_of: Callable[[Any], Any]
    ) -> tuple[tf.Tensor, tf.Tensor, Any]:
        """One forward pass; the gradients of ``score_of(outputs)`` ``(n, T)`` w.r.t. the layer."""
        acts: list[tf.Tensor] = []
        read: list[Any] = []
        tape = tf.GradientTape(watch_accessed_variables=False, persistent=True)

        def record(seen: Any, output: Any) -> None:
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


def _selector(plan: TargetPlan, start: int, stop: int) -> tuple[str, tuple[tf.Tensor, ...]]:
    """``keras_graph.selector`` with its arrays as tensors (class indices as int64)."""
    mode, arrays = selector(plan, start, stop)
    dtype = tf.int64 if mode == "indices" else tf.float32
    return mode, tuple(tf.constant(a, dtype) for a in arrays)


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
