"""Keras 3 on JAX: find the layer, run the model once, return A and dY/dA.

JAX has no tape to watch an intermediate tensor with, so the explained layer's output ``A`` is
routed through a differentiable handle: while the forward pass is traced, the layer's ``call``
returns ``A + delta`` with ``delta`` a zero array of ``A``'s shape, and the vector-Jacobian
product of the scores with respect to ``delta`` (``jax.vjp``) is ``dY/dA``. The model runs as
``model.stateless_call`` on the values of its variables, so nothing is written back to it; the
``T`` targets' gradients come from one ``jax.vmap``-ped backward pass. Class-based targets run as
one ``jax.jit``-compiled function per layer, kind of target and input shape; a callable target runs
eagerly (it may hold Python that does not trace).

The model is left as found: the shadowed ``call`` attributes are removed again in a ``finally``
block (``keras_graph.recording``), under ``model_lock(model)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras

from gradcampp.backends.keras_graph import (
    CLASS_OUTPUTS,
    KerasBase,
    graph_plan,
    recording,
    selector,
)
from gradcampp.concurrency import model_lock
from gradcampp.targets import TargetPlan


class KerasJaxBackend(KerasBase):
    """Activations and gradients of one layer of a Keras 3 model on the JAX backend.

    Arguments as ``keras_graph.KerasBase``.
    """

    def _state(self) -> tuple[list[Any], list[Any]]:
        """The values of the model's trainable and non-trainable variables."""
        model = self.model
        return (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )

    def _eager(self, x: Any) -> Any:
        """The probing pass, traced abstractly (``jax.eval_shape``): shapes are all it needs."""
        trainable, non_trainable = self._state()
        return jax.eval_shape(
            lambda tv, ntv, inputs: self.model.stateless_call(tv, ntv, inputs, training=False)[0],
            trainable,
            non_trainable,
            x,
        )

    def capture(self, x: Any, plan: TargetPlan, start: int, stop: int) -> tuple[Any, Any]:
        """Activations ``(n, K, *S)`` and gradients ``(n, T, K, *S)``, float32, channels-first.

        ``plan`` gives the ``T`` scores of samples ``start:stop`` from the model's outputs.
        """
        layer = self._layer_for(x)
        trainable, non_trainable = self._state()
        if plan.score_fn is not None:
            with model_lock(self.model):
                return self._run(
                    layer, lambda out: plan.scores(out, start, stop), trainable, non_trainable, x
                )
        mode, chosen = selector(plan, start, stop)
        key = (id(layer), mode, plan.n_targets, tuple(x.shape[1:]), str(x.dtype))
        with model_lock(self.model):  # tracing shadows the model's operations
            if key not in self._compiled:
                n_targets = plan.n_targets

                def run(tv: Any, ntv: Any, inputs: Any, *picked: Any) -> tuple[Any, Any]:
                    traced = graph_plan(mode, n_targets, picked)

                    def scores(outputs: Any) -> Any:
                        CLASS_OUTPUTS.check_outputs(outputs)  # (N, n_classes), or a clear error
                        return traced.scores(outputs, 0, None)

                    return self._run(layer, scores, tv, ntv, inputs)

                outputs = jax.eval_shape(
                    lambda tv, ntv, inputs: self._forward(layer, tv, ntv, inputs, None)[0],
                    trainable,
                    non_trainable,
                    x,
                )
                self._compiled[key] = (jax.jit(run), outputs)
            function, outputs = self._compiled[key]
            plan.check_outputs(outputs)
            return function(trainable, non_trainable, x, *chosen)

    def _forward(
        self, layer: Any, trainable: Any, non_trainable: Any, x: Any, delta: Any
    ) -> tuple[Any, Any]:
        """The model's outputs (or ``output_layer``'s) and the layer's output ``A + delta``."""
        acts: list[Any] = []
        read: list[Any] = []

        def record(seen: Any, output: Any) -> Any:
            replaced = None
            if seen is layer:
                if delta is not None and keras.ops.is_tensor(output):
                    replaced = output = output + delta
                acts.append(output)
            if seen is self._output_layer:
                read.append(output)
            return replaced

        watched = [layer] if self._output_layer is None else [layer, self._output_layer]
        with recording(watched, record):
            outputs, _ = self.model.stateless_call(trainable, non_trainable, x, training=False)
        if self._output_layer is not None:
            if not read:
                raise ValueError(
                    f"the forward pass never reached output_layer {self._output_layer.name!r}"
                )
            outputs = read[-1]
        return outputs, self._check_captured(acts, x, layer)

    def _run(
        self,
        layer: Any,
        score_of: Callable[[Any], Any],
        trainable: Any,
        non_trainable: Any,
        x: Any,
    ) -> tuple[Any, Any]:
        """One forward pass; the gradients of ``score_of(outputs)`` ``(n, T)`` w.r.t. the layer."""
        spec = jax.eval_shape(
            lambda tv, ntv, inputs: self._forward(layer, tv, ntv, inputs, None)[1],
            trainable,
            non_trainable,
            x,
        )

        def scores_of(delta: Any) -> tuple[Any, Any]:
            outputs, feature_maps = self._forward(layer, trainable, non_trainable, x, delta)
            return score_of(outputs), feature_maps

        delta = jnp.zeros(spec.shape, spec.dtype)
        scores, pullback, feature_maps = jax.vjp(scores_of, delta, has_aux=True)
        n_targets = scores.shape[1]
        cotangents = jnp.broadcast_to(
            jnp.eye(n_targets, dtype=scores.dtype)[:, None, :], (n_targets, *scores.shape)
        )
        grads = jax.vmap(lambda cotangent: pullback(cotangent)[0])(cotangents)  # (T, n, *S, K)
        acts_cf = jnp.moveaxis(feature_maps.astype(jnp.float32), -1, 1)
        grads_cf = jnp.moveaxis(jnp.moveaxis(grads.astype(jnp.float32), 0, 1), -1, 2)
        return acts_cf, grads_cf
