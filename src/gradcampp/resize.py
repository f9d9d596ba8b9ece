"""Separable bicubic resizing of N-d maps, the same in every framework.

An N-d resize is one 1-d resize per spatial axis. Along one axis every output sample is a weighted
sum of four input samples (its taps), so the cost and the memory are linear in the output's size.
The tap indices and weights are computed in NumPy (``cubic_taps``) and applied with the input's own
array namespace, so a PyTorch map stays on its GPU and a TensorFlow map in TensorFlow:

- a long axis by gathering, for each output sample, its window of four input samples and summing
  it against its weights, in pieces of bounded size (no ``(out, in)`` matrix);
- a short axis (``n_in * n_out <= SMALL_MATRIX``, a layer's 7 or 14 samples, say) by one product
  of the maps, reshaped to a matrix ``(rest, n_in)``, with the axis's small ``(n_in, n_out)``
  matrix of taps: faster there, and bounded in size.

Only rank-2 matrix products are used. In TensorFlow 2.20/2.21 a batch matrix product that
broadcasts (a rank-4 map times a 2-d matrix) corrupts memory under oneDNN on AVX-512 CPUs
(tensorflow/tensorflow issues 117700 and 123109); a product of two matrices is not affected.

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

``method="linear"`` interpolates between two taps instead, with the same half-pixel centres and the
samples outside the input replaced by the nearest edge sample:

    out[o] = (1 - f) in[clip(floor(x))] + f in[clip(floor(x) + 1)],   f = x - floor(x),

which is OpenCV's ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` and PyTorch's
``interpolate(..., mode="bilinear", align_corners=False)`` without antialiasing, one axis at a
time (the resize of pytorch-grad-cam).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from gradcampp._xp import constant_like, namespace, take

KEYS_A = -0.5
TABLE_SIZE = 1024
#: Values resized at a time along a long axis, and the fewest samples of a piece (``_resize_axis``).
CHUNK = 1 << 18
MIN_PIECE = 4096
#: Axes with ``n_in * n_out`` up to this many matrix entries are resized by a matrix product.
SMALL_MATRIX = 1 << 16

#: ``"cubic"``: Keys' kernel, four taps; ``"linear"``: two taps, edges repeated.
Method = Literal["cubic", "linear"]
METHODS: tuple[str, ...] = ("cubic", "linear")


def keys_kernel(t: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel ``k(t)`` (see the module docstring), element-wise.

    Args:
        t: offsets from the sample, any shape.
        a: the kernel's free parameter (``-0.5`` as in TensorFlow and Keys 1981).

    Returns:
        float64 array shaped like ``t``: ``k(0) = 1``, ``k(1) = k(2) = 0``.
    """
    t = np.abs(np.asarray(t, dtype=np.float64))
    return np.where(t <= 1, _near(t, a), np.where(t < 2, _far(t, a), 0.0))


def _near(t: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """``k(t)`` for ``0 <= t <= 1``: ``(a + 2) t^3 - (a + 3) t^2 + 1``."""
    return ((a + 2) * t - (a + 3)) * t * t + 1


def _far(t: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """``k(t)`` for ``1 <= t <= 2``: ``a t^3 - 5a t^2 + 8a t - 4a``."""
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a


@lru_cache(maxsize=1)
def _float32_table() -> np.ndarray:
    """TensorFlow's table: row ``i`` holds ``k(i/1024)`` and ``k(i/1024 + 1)`` in float32."""
    a = np.float32(KEYS_A)
    x = np.arange(TABLE_SIZE + 1, dtype=np.float32) / np.float32(TABLE_SIZE)
    near = ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + np.float32(1)
    x1 = x + np.float32(1)
    far = ((a * x1 - np.float32(5) * a) * x1 + np.float32(8) * a) * x1 - np.float32(4) * a
    return np.stack([near, far], axis=1)


def cubic_taps(
    n_in: int, n_out: int, kernel_table: bool = False, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The four taps of output samples ``start:stop`` of a 1-d resize from ``n_in`` to ``n_out``.

    Output sample ``o`` is ``sum_j weights[j, o] * input[clip(first[o] + j, 0, n_in - 1)]`` with
    ``first[o] = floor(x_o) - 1``. Taps that fall outside the input have weight 0; the weights of
    each sample sum to one.

    Args:
        n_in: input length (>= 1).
        n_out: output length (>= 1).
        kernel_table: reproduce TensorFlow's float32 weight table instead of the exact kernel.
        start: the first output sample wanted (default 0).
        stop: one past the last output sample wanted (default None: ``n_out``, so with
            ``start=0`` every sample).

    Returns:
        ``first``: int64 ``(m,)``, the index of each sample's first tap (may lie outside the
        input); ``weights``: float64 ``(4, m)`` (float32 values with ``kernel_table``), for the
        ``m = stop - start`` samples. Memory and time are linear in ``m``.

    Raises:
        ValueError: for a length below 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize lengths must be >= 1, got {n_in} -> {n_out}")
    if kernel_table:
        scale = np.float32(n_in) / np.float32(n_out)
        out = np.arange(start, n_out if stop is None else stop, dtype=np.float32)
        pos = (out + np.float32(0.5)) * scale - np.float32(0.5)
        base = np.floor(pos)
        offset = np.rint((pos - base) * np.float32(TABLE_SIZE)).astype(np.int64)
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
        pos = (np.arange(start, n_out if stop is None else stop) + 0.5) * (n_in / n_out) - 0.5
        base = np.floor(pos)
        t = pos - base  # in [0, 1): the taps lie at distances 1 + t, t, 1 - t, 2 - t
        weights = np.stack([_far(1 + t), _near(t), _near(1 - t), _far(2 - t)])
    first = base.astype(np.int64) - 1
    # samples whose taps reach outside the input: drop those taps and renormalise the rest
    # (TensorFlow renormalises every sample, in float32)
    rows = slice(None) if kernel_table else (first < 0) | (first + 3 >= n_in)
    index = first[rows] + np.arange(4)[:, None]
    kept = np.where((index >= 0) & (index < n_in), weights[:, rows], 0)
    if kernel_table:
        weights = kept * (np.float32(1) / kept.sum(axis=0, dtype=np.float32))
    else:
        weights[:, rows] = kept / kept.sum(axis=0)
    return first, weights.astype(np.float64, copy=False)


def linear_taps(
    n_in: int, n_out: int, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The two taps of output samples ``start:stop`` of a 1-d linear resize, ``n_in`` -> ``n_out``.

    Output sample ``o`` reads position ``x = (o + 0.5) n_in / n_out - 0.5`` and is
    ``(1 - f) input[clip(first[o])] + f input[clip(first[o] + 1)]`` with ``first[o] = floor(x)``,
    ``f = x - floor(x)`` and indices clipped to ``0 .. n_in - 1`` (edge samples repeated).

    Args:
        n_in: input length (>= 1).
        n_out: output length (>= 1).
        start: the first output sample wanted (default 0).
        stop: one past the last output sample wanted (default: ``n_out``).

    Returns:
        ``first``: int64 ``(m,)`` (may be ``-1`` or ``n_in - 1``: the clipped tap repeats the
        edge); ``weights``: float64 ``(2, m)``, each column summing to one.

    Raises:
        ValueError: for a length below 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize lengths must be >= 1, got {n_in} -> {n_out}")
    pos = (np.arange(start, n_out if stop is None else stop) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(pos)
    fraction = pos - base
    return base.astype(np.int64), np.stack([1.0 - fraction, fraction])


def _taps(
    method: str, n_in: int, n_out: int, kernel_table: bool, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    if method == "linear":
        return linear_taps(n_in, n_out, start, stop)
    first, weights = cubic_taps(n_in, n_out, kernel_table, start, stop)
    return first, weights


def resize(
    maps: Any, size: Sequence[int], *, kernel_table: bool = False, method: Method = "cubic"
) -> Any:
    """Bicubic (or linear) resize of the trailing ``len(size)`` axes of ``maps`` to ``size``.

    Along each axis, ``out[o] = sum_j w_j(o) in[clip(first(o) + j)]`` (see ``cubic_taps`` and
    ``linear_taps``): one gather of windows of taps and a weighted sum, linear in the output's
    size.

    Args:
        maps: array ``(..., *S_in)`` of any array-API namespace, floating point.
        size: the output spatial shape ``S_out``, one length per resized axis.
        kernel_table: use TensorFlow's 1024-entry weight table (see the module docstring);
            cubic only.
        method: ``"cubic"`` (Keys' kernel, four taps) or ``"linear"`` (two taps, OpenCV's and
            PyTorch's bilinear without antialiasing, applied per axis).

    Returns:
        array ``(..., *S_out)`` in the namespace, dtype and device of ``maps``.

    Raises:
        ValueError: when ``size`` has more axes than ``maps``, or for an unknown ``method``.

    Examples:
        >>> import numpy as np
        >>> resize(np.eye(2, dtype=np.float32), (4, 4)).shape
        (4, 4)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    xp = namespace(maps)
    size = tuple(int(s) for s in size)
    first_axis = maps.ndim - len(size)
    if first_axis < 0:
        raise ValueError(f"cannot resize {len(size)} axes of an array of rank {maps.ndim}")
    for axis, n_out in zip(range(first_axis, maps.ndim), size, strict=True):
        n_in = maps.shape[axis]
        if n_in == n_out:
            continue
        if n_in * n_out <= SMALL_MATRIX:
            maps = _resize_axis_small(maps, axis, n_out, kernel_table, xp, method)
        else:
            maps = _resize_axis(maps, axis, n_out, kernel_table, xp, method)
    return maps


@lru_cache(maxsize=16)
def _small_matrix(n_in: int, n_out: int, kernel_table: bool, method: str = "cubic") -> np.ndarray:
    """The ``(n_in, n_out)`` matrix of one axis's taps (``n_in * n_out <= SMALL_MATRIX``)."""
    first, weights = _taps(method, n_in, n_out, kernel_table)
    matrix = np.zeros((n_in, n_out))
    index = np.clip(first + np.arange(weights.shape[0])[:, None], 0, n_in - 1)
    np.add.at(matrix, (index, np.broadcast_to(np.arange(n_out), index.shape)), weights)
    matrix.flags.writeable = False
    return matrix


def _resize_axis_small(
    maps: Any, axis: int, n_out: int, kernel_table: bool, xp: Any, method: str = "cubic"
) -> Any:
    """``maps`` resized along a short ``axis`` by one product of two matrices.

    For the few input samples of a layer's map (7, 14, ...), multiplying ``(rest, n_in)`` by the
    axis's small ``(n_in, n_out)`` matrix of taps is faster than gathering. Both operands have
    rank 2, so TensorFlow runs a plain matrix product (no batch broadcasting, see the module
    docstring).
    """
    n_in = maps.shape[axis]
    moved = xp.moveaxis(maps, axis, -1)
    rest = moved.shape[:-1]
    matrix = constant_like(_small_matrix(n_in, n_out, kernel_table, method), maps, xp)
    product = xp.matmul(xp.reshape(moved, (-1, n_in)), matrix)
    return xp.moveaxis(xp.reshape(product, (*rest, n_out)), -1, axis)


def _resize_axis(
    maps: Any, axis: int, n_out: int, kernel_table: bool, xp: Any, method: str = "cubic"
) -> Any:
    """``maps`` resized along ``axis`` to ``n_out`` samples, by gathering windows of taps.

    The input, padded by two edge samples on each side, is laid out as overlapping windows of
    ``T`` samples (four for cubic, two for linear), ``U[..., i, j, ...] = padded[..., i + j, ...]``;
    output sample ``o`` then takes window ``first(o) + 2`` (one gather) and sums it against its
    ``T`` weights.

    Long axes are resized in pieces of about ``CHUNK`` values (at least ``MIN_PIECE`` samples
    along the axis): every temporary array then stays small and is reused from the allocator's
    pool instead of being mapped and faulted in afresh, which makes them several times faster.
    """
    n_in = maps.shape[axis]

    def along(start: int, stop: int | None) -> Any:
        return maps[(slice(None),) * axis + (slice(start, stop),)]

    padded = xp.concat(
        [along(0, 1), along(0, 1), maps, along(-1, None), along(-1, None)], axis=axis
    )
    n_taps = 2 if method == "linear" else 4
    windows = xp.stack(
        [padded[(slice(None),) * axis + (slice(j, j + n_in + 5 - n_taps),)] for j in range(n_taps)],
        axis=axis + 1,
    )  # (..., n_in + 5 - T, T, ...)
    step = max(MIN_PIECE, CHUNK // max(math.prod(maps.shape) // n_in, 1))
    shape = [1] * (maps.ndim + 1)
    pieces = []
    for start in range(0, n_out, step):
        first, weights = _taps(method, n_in, n_out, kernel_table, start, min(start + step, n_out))
        shape[axis], shape[axis + 1] = first.shape[0], n_taps
        index = constant_like(first + 2, maps, xp, xp.int64)
        weight = xp.reshape(constant_like(weights.T, maps, xp), tuple(shape))
        pieces.append(xp.sum(take(windows, index, axis, xp) * weight, axis=axis + 1))
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=axis)
