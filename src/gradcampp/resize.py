"""Separable bicubic resizing of N-d maps, the same in every framework.

A resize along one axis is a matrix ``M`` of shape ``(out, in)``; an N-d resize applies one such
matrix per spatial axis. The matrices are built once in NumPy (float64) and applied with the
input's own array namespace, so a PyTorch map stays on its GPU and a TensorFlow map in TensorFlow.

The kernel is Keys' cubic convolution (Keys 1981) with ``a = -0.5``:

    k(t) = (a + 2)|t|^3 - (a + 3)|t|^2 + 1          for |t| <= 1,
    k(t) = a|t|^3 - 5a|t|^2 + 8a|t| - 4a            for 1 < |t| < 2,   0 otherwise,

sampled with half-pixel centres: output pixel ``o`` reads input position
``x = (o + 0.5) * in / out - 0.5`` and its four neighbours ``floor(x) - 1 .. floor(x) + 2``.
Neighbours outside the input are dropped and the remaining four-tap weights renormalised to sum to
one. These are the semantics of ``tf.image.resize(..., method="bicubic")``; with
``kernel_table=True`` the weights are also looked up, as TensorFlow does, in a table of the kernel
at 1024 fractional offsets (the fraction rounded half-to-even), in float32 arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from gradcampp._xp import constant_like, namespace

KEYS_A = -0.5
TABLE_SIZE = 1024


def keys_kernel(t: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel ``k(t)`` (see the module docstring), element-wise.

    Args:
        t: offsets from the sample, any shape.
        a: the kernel's free parameter (``-0.5`` as in TensorFlow and Keys 1981).

    Returns:
        float64 array shaped like ``t``: ``k(0) = 1``, ``k(1) = k(2) = 0``.
    """
    t = np.abs(np.asarray(t, dtype=np.float64))
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@lru_cache(maxsize=1)
def _float32_table() -> np.ndarray:
    """TensorFlow's table: row ``i`` holds ``k(i/1024)`` and ``k(i/1024 + 1)`` in float32."""
    a = np.float32(KEYS_A)
    x = np.arange(TABLE_SIZE + 1, dtype=np.float32) / np.float32(TABLE_SIZE)
    near = ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + np.float32(1)
    x1 = x + np.float32(1)
    far = ((a * x1 - np.float32(5) * a) * x1 + np.float32(8) * a) * x1 - np.float32(4) * a
    return np.stack([near, far], axis=1)


@lru_cache(maxsize=256)
def cubic_matrix(n_in: int, n_out: int, kernel_table: bool = False) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix that resizes one axis from ``n_in`` to ``n_out`` samples.

    Args:
        n_in: input length (>= 1).
        n_out: output length (>= 1).
        kernel_table: reproduce TensorFlow's float32 weight table instead of the exact kernel.

    Returns:
        float64 matrix whose rows sum to one (read-only; cached).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize lengths must be >= 1, got {n_in} -> {n_out}")
    out = np.arange(n_out)
    if kernel_table:
        scale = np.float32(n_in) / np.float32(n_out)
        pos = (out.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        base = np.floor(pos).astype(np.int64)
        offset = np.rint((pos - base.astype(np.float32)) * np.float32(TABLE_SIZE)).astype(np.int64)
        table = _float32_table()
        taps = np.stack(
            [
                table[offset, 1],
                table[offset, 0],
                table[TABLE_SIZE - offset, 0],
                table[TABLE_SIZE - offset, 1],
            ],
            axis=1,
        )
    else:
        pos = (out + 0.5) * (n_in / n_out) - 0.5
        base = np.floor(pos).astype(np.int64)
        taps = keys_kernel(pos[:, None] - (base[:, None] + np.arange(-1, 3)))
    index = base[:, None] + np.arange(-1, 3)
    taps = np.where((index >= 0) & (index < n_in), taps, 0)
    if kernel_table:
        taps = taps * (np.float32(1) / taps.sum(axis=1, keepdims=True, dtype=np.float32))
    else:
        taps = taps / taps.sum(axis=1, keepdims=True)
    matrix = np.zeros((n_out, n_in))
    rows = np.broadcast_to(out[:, None], index.shape)
    np.add.at(matrix, (rows, np.clip(index, 0, n_in - 1)), taps)
    matrix.flags.writeable = False
    return matrix


def resize(maps: Any, size: Sequence[int], *, kernel_table: bool = False) -> Any:
    """Bicubic resize of the trailing ``len(size)`` axes of ``maps`` to ``size``.

    Args:
        maps: array ``(..., *S_in)`` of any array-API namespace, floating point.
        size: the output spatial shape ``S_out``, one length per resized axis.
        kernel_table: use TensorFlow's 1024-entry weight table (see the module docstring).

    Returns:
        array ``(..., *S_out)`` in the namespace, dtype and device of ``maps``.

    Raises:
        ValueError: when ``size`` has more axes than ``maps``.

    Examples:
        >>> import numpy as np
        >>> resize(np.eye(2, dtype=np.float32), (4, 4)).shape
        (4, 4)
    """
    xp = namespace(maps)
    size = tuple(int(s) for s in size)
    first = maps.ndim - len(size)
    if first < 0:
        raise ValueError(f"cannot resize {len(size)} axes of an array of rank {maps.ndim}")
    for axis, n_out in zip(range(first, maps.ndim), size, strict=True):
        n_in = maps.shape[axis]
        if n_in == n_out:
            continue
        matrix_t = constant_like(cubic_matrix(n_in, n_out, kernel_table).T, maps, xp)
        maps = xp.moveaxis(xp.matmul(xp.moveaxis(maps, axis, -1), matrix_t), -1, axis)
    return maps
