"""The array API functions that ``formulas``, ``resize`` and ``targets`` call, for TensorFlow.

``gradcampp._xp.namespace`` returns this module for ``tf.Tensor`` arguments, so the
framework-neutral maths runs as TensorFlow operations on the tensors' own device, eagerly or
inside a ``tf.function``. Each function follows the array API standard's signature and semantics
for the arguments it accepts; only what the library calls is provided.

Python scalars mixed with tensors (``where(c, x, 0.0)``, ``maximum(x, 0.0)``) take the dtype of
the tensor argument, as the standard's type promotion rules say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

int32 = tf.int32
int64 = tf.int64
float32 = tf.float32
float64 = tf.float64

Axis = int | tuple[int, ...] | None


def asarray(obj: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> tf.Tensor:
    """``obj`` (tensor, NumPy array, scalar or nested sequence) as a tensor of ``dtype``.

    ``device`` is a TensorFlow device string (``None``: TensorFlow's placement); ``copy`` is
    accepted for the standard's signature (TensorFlow tensors are immutable).
    """
    if device:
        with tf.device(device):
            return asarray(obj, dtype)
    if isinstance(obj, tf.Tensor | tf.Variable):
        return obj if dtype is None or obj.dtype == dtype else tf.cast(obj, dtype)
    return tf.convert_to_tensor(obj, dtype=dtype)


def constant_like(value: Any, like: tf.Tensor, dtype: Any = None) -> tf.Tensor:
    """``value`` (NumPy array or tensor) as a tensor of ``dtype`` (default ``like.dtype``).

    Placed on ``like``'s device when it has one (eager tensors); inside a ``tf.function`` the
    constant is left to TensorFlow's placement.
    """
    dtype = like.dtype if dtype is None else tf.as_dtype(dtype)
    device = getattr(like, "device", "") if tf.executing_eagerly() else ""
    if isinstance(value, np.ndarray) and value.dtype != np.dtype(dtype.as_numpy_dtype):
        value = value.astype(dtype.as_numpy_dtype)
    return asarray(value, dtype, device or None)


def astype(x: tf.Tensor, dtype: Any, /, *, copy: Any = True) -> tf.Tensor:
    """``x`` cast to ``dtype``."""
    return tf.cast(x, dtype)


def _operands(x: Any, y: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Two operands as tensors; a Python scalar takes the other operand's dtype."""
    if isinstance(x, int | float) and not isinstance(x, np.generic):
        y = asarray(y)
        return tf.constant(x, dtype=y.dtype), y
    x = asarray(x)
    if isinstance(y, int | float) and not isinstance(y, np.generic):
        return x, tf.constant(y, dtype=x.dtype)
    return x, asarray(y)


def where(condition: tf.Tensor, x1: Any, x2: Any, /) -> tf.Tensor:
    """Element-wise ``x1`` where ``condition`` holds, else ``x2`` (broadcast)."""
    x1, x2 = _operands(x1, x2)
    return tf.where(condition, x1, x2)


def maximum(x1: Any, x2: Any, /) -> tf.Tensor:
    """Element-wise maximum (broadcast)."""
    x1, x2 = _operands(x1, x2)
    return tf.maximum(x1, x2)


def sum(x: tf.Tensor, /, *, axis: Axis = None, dtype: Any = None, keepdims: bool = False):
    """Sum over ``axis`` (all axes for ``None``)."""
    if dtype is not None:
        x = tf.cast(x, dtype)
    return tf.reduce_sum(x, axis=axis, keepdims=keepdims)


def mean(x: tf.Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> tf.Tensor:
    """Arithmetic mean over ``axis`` (all axes for ``None``)."""
    return tf.reduce_mean(x, axis=axis, keepdims=keepdims)


def all(x: tf.Tensor, /, *, axis: Axis = None, keepdims: bool = False) -> tf.Tensor:
    """Whether every element along ``axis`` is true (non-zero)."""
    return tf.reduce_all(tf.cast(x, tf.bool), axis=axis, keepdims=keepdims)


def isfinite(x: tf.Tensor, /) -> tf.Tensor:
    """Element-wise test for finite values (integers are always finite)."""
    if not x.dtype.is_floating and not x.dtype.is_complex:
        return tf.ones_like(x, dtype=tf.bool)
    return tf.math.is_finite(x)


def matmul(x1: tf.Tensor, x2: tf.Tensor, /) -> tf.Tensor:
    """Matrix product over the last two axes, for operands of one rank and equal batch axes.

    Broadcasting batch products are refused: TensorFlow 2.20/2.21 run them (a rank-4 tensor times
    a 2-d matrix, say) through oneDNN kernels that read past their operands' buffers on AVX-512
    CPUs and corrupt the heap (tensorflow/tensorflow issues 117700 and 123109). Products whose
    operands have the same rank and the same batch axes involve no broadcast and are not affected.
    """
    if x1.shape.rank != x2.shape.rank or x1.shape[:-2] != x2.shape[:-2]:
        raise ValueError(
            "matmul takes operands of one rank with equal batch axes (no broadcasting), got "
            f"shapes {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    return tf.linalg.matmul(x1, x2)


def take(x: tf.Tensor, indices: tf.Tensor, /, *, axis: int | None = None) -> tf.Tensor:
    """Elements of ``x`` at the 1-d ``indices`` along ``axis`` (``x`` flattened for ``None``)."""
    if axis is None:
        return tf.gather(tf.reshape(x, [-1]), indices)
    return tf.gather(x, indices, axis=axis % x.shape.rank)


def reshape(x: tf.Tensor, /, shape: Sequence[int], *, copy: Any = None) -> tf.Tensor:
    """``x`` with shape ``shape`` (one entry may be ``-1``)."""
    return tf.reshape(x, shape)


def moveaxis(x: tf.Tensor, source: int, destination: int, /) -> tf.Tensor:
    """``x`` with axis ``source`` moved to position ``destination`` (single axes)."""
    ndim = x.shape.rank
    source, destination = source % ndim, destination % ndim
    order = [axis for axis in range(ndim) if axis != source]
    order.insert(destination, source)
    return x if order == list(range(ndim)) else tf.transpose(x, order)


def concat(arrays: Sequence[tf.Tensor], /, *, axis: int | None = 0) -> tf.Tensor:
    """Tensors joined along ``axis`` (flattened first for ``axis=None``)."""
    if axis is None:
        return tf.concat([tf.reshape(a, [-1]) for a in arrays], axis=0)
    return tf.concat(list(arrays), axis=axis)


def stack(arrays: Sequence[tf.Tensor], /, *, axis: int = 0) -> tf.Tensor:
    """Tensors of one shape joined along a new axis ``axis``."""
    return tf.stack(list(arrays), axis=axis)


def argsort(
    x: tf.Tensor, /, *, axis: int = -1, descending: bool = False, stable: bool = True
) -> tf.Tensor:
    """Indices (int64) that sort ``x`` along ``axis``; ties keep their order when ``stable``."""
    direction = "DESCENDING" if descending else "ASCENDING"
    return tf.cast(tf.argsort(x, axis=axis, direction=direction, stable=stable), tf.int64)


def take_along_axis(x: tf.Tensor, indices: tf.Tensor, /, *, axis: int = -1) -> tf.Tensor:
    """Values of ``x`` at ``indices`` along ``axis``; the other axes of both must match."""
    ndim = x.shape.rank
    axis = axis % ndim
    moved = moveaxis(x, axis, -1)
    picked = tf.gather(moved, moveaxis(indices, axis, -1), axis=ndim - 1, batch_dims=ndim - 1)
    return moveaxis(picked, -1, axis)
