"""Separable bicubic resizing of N-d maps, the same in every framework.

An N-d resize is one 1-d resize per spatial axis. Along one axis every output sample is a weighted
sum of four input samples (its taps), so the cost and the memory are linear in the output's size:
the tap indices and weights are computed in NumPy (``cubic_taps``) and applied with the input's own
array namespace (four gathers, four products, three sums), so a PyTorch map stays on its GPU and a
TensorFlow map in TensorFlow. No ``(out, in)`` matrix is formed and no matrix product is used (in
TensorFlow a batch matrix product of a rank-4 map with a 2-d matrix corrupts memory under oneDNN on
AVX-512 CPUs: tensorflow/tensorflow issues 117700 and 123109).

The kernel is Keys' cubic convolution (Keys 1981) with ``a = -0.5``:

    k(t) = (a + 2)|t|^3 - (a + 3)|t|^2 + 1          for |t| <= 1,
    k(t) = a|t|^3 - 5a|t|^2 + 8a|t| - 4a            for 1 < |t| < 2,   0 otherwise,

sampled with half-pixel centres: output sample ``o`` reads input position
``x = (o + 0.5) * in / out - 0.5`` and its four neighbours ``floor(x) - 1 .. floor(x) + 2``, so

    out[o] = sum_{j=0..3} w_j(o) in[floor(x) - 1 + j].

Neighbours outside the input are dropped and the remaining weights renormalised to sum to one.
These are the semantics of ``tf.image.resize(..., method="bicubic")``; with ``kernel_table=True``
the weights are also looked up, as TensorFlow does, in a table of the kernel at 1024 fractional
offsets (the fraction rounded half-to-even), in float32 arithmetic.
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


def cubic_taps(n_in: int, n_out: int, kernel_table: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The four taps of each output sample of a 1-d resize from ``n_in`` to ``n_out`` samples.

    Output sample ``o`` is ``sum_j weights[j, o] * input[index[j, o]]``. Taps that fall outside
    the input get weight 0 (and an index clipped into range); the weights of each sample sum to
    one.

    Args:
        n_in: input length (>= 1).
        n_out: output length (>= 1).
        kernel_table: reproduce TensorFlow's float32 weight table instead of the exact kernel.

    Returns:
        ``index``: int64 ``(4, n_out)`` in ``[0, n_in)``; ``weights``: float64 ``(4, n_out)``
        (float32 values with ``kernel_table``). Memory and time are linear in ``n_out``.

    Raises:
        ValueError: for a length below 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize lengths must be >= 1, got {n_in} -> {n_out}")
    out = np.arange(n_out)
    offsets = np.arange(-1, 3)[:, None]
    if kernel_table:
        scale = np.float32(n_in) / np.float32(n_out)
        pos = (out.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        base = np.floor(pos).astype(np.int64)
        fraction = np.rint((pos - base.astype(np.float32)) * np.float32(TABLE_SIZE))
        offset = fraction.astype(np.int64)
        table = _float32_table()
        weights = np.stack(
            [
                table[offset, 1],
                table[offset, 0],
                table[TABLE_SIZE - offset, 0],
                table[TABLE_SIZE - offset, 1],
            ]
        )
    else:
        pos = (out + 0.5) * (n_in / n_out) - 0.5
        base = np.floor(pos).astype(np.int64)
        weights = keys_kernel(pos - (base + offsets))
    index = base + offsets
    weights = np.where((index >= 0) & (index < n_in), weights, 0)
    if kernel_table:
        weights = weights * (np.float32(1) / weights.sum(axis=0, dtype=np.float32))
    else:
        weights = weights / weights.sum(axis=0)
    return np.clip(index, 0, n_in - 1), weights.astype(np.float64)


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
        index, weights = cubic_taps(n_in, n_out, kernel_table)
        along = [1] * maps.ndim
        along[axis] = n_out
        resized = None
        for j in range(4):
            taps = xp.take(maps, constant_like(index[j], maps, xp, xp.int64), axis=axis)
            term = taps * xp.reshape(constant_like(weights[j], maps, xp), tuple(along))
            resized = term if resized is None else resized + term
        maps = resized
    return maps
