"""Which score to explain: turning a user's ``targets`` into one scalar score per sample.

``explain(inputs, targets)`` accepts:

- ``None``: the predicted class (argmax of the model's ``(N, K)`` output);
- an ``int``: that class for every sample;
- integer class indices ``(N,)``;
- float weights ``(N, K)``, the score being ``sum_c output_c * weight_c`` (one-hot rows);
- a callable ``outputs -> (N,)`` returning the score of each sample (for segmentation, detection or
  multi-output models);
- ``TopK(k)``: the ``k`` highest-scoring classes of each sample;
- ``Classes(indices)``: several given classes per sample, ``(N, T)`` (or ``(T,)`` for all);
- ``SegmentationTarget(c)``, ``DetectionTarget(c, box)``: a class over a region of a dense output,
  the detected box of a class that best matches a given box (``gradcampp.dense_targets``);
- a list of ``N`` target objects, one per sample, each called on that sample's output alone and
  returning its scalar score: pytorch-grad-cam's convention (``ClassifierOutputTarget(281)`` and
  the others of ``gradcampp.pytorch_grad_cam.utils.model_targets``, or any such callable). Sample
  ``i``'s output is ``outputs[i]`` of the model's output tensor (its class scores, see below) or
  of a list of per-image outputs (torchvision detection).

Class scores are read from the model's output tensor, a Hugging Face ``ModelOutput``'s ``.logits``
or a dict's ``"out"`` (torchvision segmentation). On dense outputs ``(N, K, *S)`` a class index
``c`` explains the logits of ``c`` summed over the pixels predicted as ``c`` (as
``SegmentationTarget(c)``); ``None`` and ``TopK`` need one class per sample and are refused there.

The last two explain ``T`` scores per sample from one forward pass and return maps
``(N, T, *spatial)``; the others return ``(N, *spatial)``. A 2-D integer array is refused: it could
be one-hot rows or several classes per sample, so the caller says which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcampp._xp import constant_like, namespace, to_numpy
from gradcampp.backends.base import describe
from gradcampp.dense_targets import (
    DetectionTarget,
    SegmentationTarget,
    class_scores,
    default_class_axis,
    dense_class_scores,
)

__all__ = [
    "Classes",
    "DetectionTarget",
    "PlanRecorder",
    "SegmentationTarget",
    "TargetPlan",
    "TopK",
    "class_scores",
    "parse_targets",
]


@dataclass(frozen=True)
class TopK:
    """Explain the ``k`` highest-scoring classes of each sample, best first: maps ``(N, k, *S)``.

    Args:
        k: how many classes per sample, ``1 <= k <= n_classes``.

    Raises:
        ValueError: for a ``k`` that is not a positive integer.

    Examples:
        >>> maps = GradCAMPP(model).explain(images, TopK(3))  # doctest: +SKIP
        >>> maps.shape  # doctest: +SKIP
        (N, 3, H, W)
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValueError(f"TopK needs a positive integer k, got {self.k!r}")


@dataclass(frozen=True)
class Classes:
    """Explain several given classes per sample: ``indices`` ``(N, T)`` or ``(T,)`` for all samples.

    Maps come back as ``(N, T, *S)``, in the order of ``indices``.

    Args:
        indices: integer class indices, ``(T,)`` (the same classes for every sample) or ``(N, T)``
            (per sample); a list, NumPy array or tensor. Checked when ``explain`` is called:
            ``TypeError`` for non-integers, ``ValueError`` for a shape that does not fit.

    Examples:
        >>> maps = GradCAMPP(model).explain(images, Classes([0, 2]))  # doctest: +SKIP
        >>> maps.shape  # doctest: +SKIP
        (N, 2, H, W)
    """

    indices: Any


def _class_indices(value: Any, what: str) -> np.ndarray:
    array = to_numpy(value)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what} must hold integer class indices, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{what} must be non-negative class indices, got {int(array.min())}")
    if array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(
            f"{what} must be class indices that fit int64, got {int(array.max())} "
            f"(dtype {array.dtype})"
        )
    return array.astype(np.int64)


@dataclass(frozen=True)
class TargetPlan:
    """A parsed ``targets`` argument for ``n`` samples.

    Exactly one of ``indices`` ``(n, T)``, ``weights`` ``(n, K)``, ``top_k`` or ``score_fn`` is
    set; ``top_k = 1`` alone means "the predicted class". ``per_sample`` (``n`` callables on one
    sample's output each) comes with ``score_fn`` set to their whole-batch equivalent, so that a
    backend that tells callables from class targets by ``score_fn`` treats it as one.
    """

    n: int
    multi: bool
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None
    top_k: int | None = None
    score_fn: Callable[[Any], Any] | None = None
    per_sample: tuple[Callable[[Any], Any], ...] | None = None

    @property
    def n_targets(self) -> int:
        """Scores explained per sample (``T``)."""
        if self.indices is not None:
            return self.indices.shape[1]
        return self.top_k or 1

    def check_outputs(self, outputs: Any) -> None:
        """Check that class-based targets fit the model's outputs; raise a clear error if not."""
        if self.score_fn is not None or self.per_sample is not None:
            return
        outputs = class_scores(outputs)
        shape = tuple(getattr(outputs, "shape", ()))
        dense = len(shape) >= 3 and (self.indices is not None or self.weights is not None)
        if len(shape) != 2 and not dense:
            what = "None and TopK" if len(shape) >= 3 else "class targets"
            raise ValueError(
                f"{what} need a model output of shape (N, n_classes), got "
                f"{type(outputs).__name__} of shape {shape}; pass a class index, "
                "SegmentationTarget or DetectionTarget (gradcampp.targets), or a callable target "
                "outputs -> (N,) scores for other outputs"
            )
        n_classes = shape[default_class_axis(outputs)] if dense else shape[1]
        if self.indices is not None and self.indices.size and self.indices.max() >= n_classes:
            raise ValueError(
                f"class index {int(self.indices.max())} is out of range for a model with "
                f"{n_classes} outputs"
            )
        if self.weights is not None and self.weights.shape[1] != n_classes:
            raise ValueError(
                f"target weights must have one column per model output ({n_classes}), "
                f"got shape {self.weights.shape}"
            )
        if self.top_k is not None and self.top_k > n_classes:
            raise ValueError(
                f"TopK({self.top_k}) asks for more classes than the {n_classes} model outputs"
            )

    def scores(self, outputs: Any, start: int, stop: int | None) -> Any:
        """Scores ``(stop - start, T)`` of samples ``start:stop``, differentiable in ``outputs``.

        ``stop`` None means up to the last sample (a traced graph, whose batch size is symbolic).
        """
        if self.per_sample is not None:
            return _per_sample_scores(self.per_sample[start:stop], outputs)
        if self.score_fn is not None:
            count = outputs.shape[0] - start if stop is None else stop - start
            return _callable_scores(self.score_fn, outputs, count)
        outputs = class_scores(outputs)
        if len(outputs.shape) >= 3:
            return self._dense_scores(outputs, start, stop)
        xp = namespace(outputs)
        if self.weights is not None:
            weights = constant_like(self.weights[start:stop], outputs, xp)
            return xp.sum(outputs * weights, axis=1, keepdims=True)
        if self.indices is not None:
            chosen = constant_like(self.indices[start:stop], outputs, xp, xp.int64)
        else:
            order = xp.argsort(outputs, axis=1, descending=True, stable=True)
            chosen = order[:, : self.top_k]
        return xp.take_along_axis(outputs, chosen, axis=1)

    def _dense_scores(self, outputs: Any, start: int, stop: int | None) -> Any:
        """Scores ``(n, T)`` of class indices or weights on dense outputs ``(n, K, *S)``."""
        xp = namespace(outputs)
        n_classes = outputs.shape[default_class_axis(outputs)]
        if self.weights is not None:
            rows = [np.asarray(self.weights[start:stop], np.float32)]
        else:
            indices = np.asarray(self.indices[start:stop])  # type: ignore[index]
            eye = np.eye(n_classes, dtype=np.float32)
            rows = [eye[indices[:, t]] for t in range(indices.shape[1])]
        return xp.stack([dense_class_scores(outputs, row) for row in rows], axis=1)


def _per_sample_scores(targets: tuple[Callable[[Any], Any], ...], outputs: Any) -> Any:
    """Scores ``(n, 1)``: target ``i`` called on sample ``i``'s output, as pytorch-grad-cam does."""
    samples = outputs if isinstance(outputs, list | tuple) else class_scores(outputs)
    count = len(samples) if isinstance(samples, list | tuple) else samples.shape[0]
    if count != len(targets):
        raise ValueError(
            f"the model returned outputs for {count} samples, but {len(targets)} target objects "
            "were given for them; give one per input"
        )
    scores = []
    for i, target in enumerate(targets):
        score = target(samples[i])
        shape = getattr(score, "shape", None)
        if shape is None or math.prod(tuple(shape)) != 1:
            raise ValueError(
                f"target object {i} ({type(target).__name__}) must return one score for its "
                f"sample (a tensor with one element), got {describe(score)}"
            )
        scores.append(score)
    xp = namespace(*scores)
    return xp.reshape(xp.concat([xp.reshape(score, (1,)) for score in scores]), (-1, 1))


@dataclass(frozen=True)
class _PerSampleScores:
    """Target objects as one callable ``outputs -> (N,)`` on a whole batch's outputs."""

    targets: tuple[Callable[[Any], Any], ...]

    def __call__(self, outputs: Any) -> Any:
        return _per_sample_scores(self.targets, outputs)[:, 0]


def _callable_scores(score_fn: Callable[[Any], Any], outputs: Any, n: int) -> Any:
    scores = score_fn(outputs)
    shape = tuple(getattr(scores, "shape", ()))
    if shape != (n,):
        raise ValueError(
            f"a target callable must return one score per sample, shape ({n},); got "
            f"{type(scores).__name__} of shape {shape}"
        )
    return scores[:, None]


class PlanRecorder:
    """A ``TargetPlan`` that keeps what the model gave it: the outputs and the classes chosen.

    Handed to a backend's ``capture`` in place of ``plan``; afterwards ``outputs`` holds the
    model's outputs of the latest call (detached) and ``fixed_plan`` gives the same targets with
    ``None``/``TopK`` replaced by the classes chosen on those outputs, to score other inputs
    (noisy or augmented copies) for the same classes.
    """

    def __init__(self, plan: TargetPlan):
        self.plan = plan
        self.outputs: Any = None
        self._chosen: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plan, name)

    def check_outputs(self, outputs: Any) -> None:
        self.plan.check_outputs(outputs)

    def scores(self, outputs: Any, start: int, stop: int | None) -> Any:
        self.outputs = _detached(outputs)
        scores = self.plan.scores(outputs, start, stop)
        if self.plan.top_k is not None:
            values = class_scores(outputs)
            xp = namespace(values)
            order = xp.argsort(values, axis=1, descending=True, stable=True)
            self._chosen = to_numpy(order[:, : self.plan.top_k]).astype(np.int64)
        return scores

    def fixed_plan(self, start: int, stop: int) -> TargetPlan:
        """The plan with the classes chosen for samples ``start:stop`` in place of ``TopK``."""
        if self.plan.top_k is None:
            return self.plan
        if self._chosen is None:
            raise RuntimeError("fixed_plan() needs a scores() call first")
        indices = np.zeros((stop, self._chosen.shape[1]), dtype=np.int64)
        indices[start:stop] = self._chosen
        return TargetPlan(stop, multi=self.plan.multi, indices=indices)


def _detached(outputs: Any) -> Any:
    if hasattr(outputs, "detach"):
        return outputs.detach()
    if isinstance(outputs, list | tuple):
        return type(outputs)(_detached(value) for value in outputs)
    if isinstance(outputs, dict):
        return {key: _detached(value) for key, value in outputs.items()}
    return outputs


#: What ``targets`` may be, for error messages.
ACCEPTED = (
    "None, an int, class indices (N,), one-hot rows (N, n_classes), a callable outputs -> (N,) "
    "scores, TopK(k), Classes(indices), or a list of N target objects called on one sample's "
    "output each (as pytorch-grad-cam's ClassifierOutputTarget)"
)


def parse_targets(targets: Any, n: int) -> TargetPlan:
    """Validate ``targets`` for ``n`` samples (see the module docstring for the accepted forms).

    Args:
        targets: ``None``, an ``int``, indices ``(n,)``, float weights ``(n, K)``, a callable,
            ``TopK`` or ``Classes``.
        n: the number of samples.

    Returns:
        the ``TargetPlan`` that ``explain`` hands to the backend.

    Raises:
        TypeError: for integer ``(n, K)`` arrays, float ``(n,)`` arrays, bools or non-integer
            class indices.
        ValueError: for a length other than ``n``, negative indices, NaN/Inf weights or arrays
            of rank 3 or more.

    Examples:
        >>> parse_targets(TopK(2), 4).n_targets
        2
    """
    if targets is None:
        return TargetPlan(n, multi=False, top_k=1)
    if isinstance(targets, TopK):
        return TargetPlan(n, multi=True, top_k=int(targets.k))
    if callable(targets):
        return TargetPlan(n, multi=False, score_fn=targets)
    if isinstance(targets, list | tuple) and any(callable(item) for item in targets):
        if not all(callable(item) for item in targets):
            odd = next(item for item in targets if not callable(item))
            raise TypeError(
                "a list of targets must hold target objects (callables on one sample's output) "
                f"only, got a {type(odd).__name__} among them; targets may be {ACCEPTED}"
            )
        if len(targets) != n:
            raise ValueError(
                f"targets holds {len(targets)} target objects for {n} inputs; give one per input"
            )
        per_sample = tuple(targets)
        return TargetPlan(
            n, multi=False, score_fn=_PerSampleScores(per_sample), per_sample=per_sample
        )
    if isinstance(targets, Classes):
        indices = _class_indices(targets.indices, "Classes(indices)")
        if indices.ndim == 1:
            indices = np.broadcast_to(indices, (n, indices.size))
        if indices.ndim != 2 or indices.shape[0] != n or indices.shape[1] == 0:
            raise ValueError(
                f"Classes(indices) must have shape ({n}, T) or (T,) with T >= 1, "
                f"got {to_numpy(targets.indices).shape}"
            )
        return TargetPlan(n, multi=True, indices=indices)
    if isinstance(targets, bool):
        raise TypeError("targets must be a class index, not a bool")
    if isinstance(targets, int | np.integer):
        if int(targets) > np.iinfo(np.int64).max:
            raise ValueError(
                f"targets must be a class index that can fit int64, got {int(targets)}"
            )
        indices = _class_indices(np.full((n, 1), int(targets)), "targets")
        return TargetPlan(n, multi=False, indices=indices)
    try:
        array = to_numpy(targets)
    except (TypeError, ValueError) as error:
        raise TypeError(f"targets may be {ACCEPTED}; got {type(targets).__name__}") from error
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise TypeError(f"targets may be {ACCEPTED}; got {_kinds(targets)}")
    if array.ndim == 1:
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(
                "1-D targets must be integer class indices, got dtype "
                f"{array.dtype}; pass one-hot rows as a 2-D (N, n_classes) float array"
            )
        _check_length(array, n)
        return TargetPlan(n, multi=False, indices=_class_indices(array, "targets")[:, None])
    if array.ndim == 2:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                f"2-D targets must be float weights (one-hot rows), got dtype {array.dtype}; "
                "use array.astype(float) for one-hot rows, or Classes(indices) for several "
                "class indices per sample"
            )
        _check_length(array, n)
        if not np.isfinite(array).all():
            raise ValueError("target weights must be finite, got NaN or Inf")
        return TargetPlan(n, multi=False, weights=array)
    raise ValueError(f"targets may be {ACCEPTED}; got an array of shape {array.shape}")


def _kinds(targets: Any) -> str:
    """What ``targets`` holds, for messages: its type, and its items' types for a sequence."""
    if isinstance(targets, list | tuple | np.ndarray) and len(targets):
        kinds = sorted({type(item).__name__ for item in np.asarray(targets, dtype=object).flat})
        return f"a {type(targets).__name__} of {', '.join(kinds)}"
    return describe(targets)


def _check_length(array: np.ndarray, n: int) -> None:
    if array.shape[0] != n:
        raise ValueError(f"targets must have one entry per input ({n}), got {array.shape[0]}")
