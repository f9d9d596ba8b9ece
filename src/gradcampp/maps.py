"""Stored maps in half the bytes: float16 values beside a float32 scale per map.

Map values span many orders of magnitude (about 1e-11 for a random-weight MobileNetV2, up to 1e30
for unnormalised networks), beyond float16's range (6e-8 to 65504), so a map ``m`` is stored as

    scale = max |m|  (1 for a map of zeros),    values = float16(m / scale),

and read back as ``float32(values) * scale``. ``m / scale`` lies in ``[-1, 1]``, where float16's
spacing is at most ``2**-11``: the largest error is half of that, ``2**-12 * scale`` (2.4e-4 of the
map's maximum; plus float32's rounding of the product, ``2**-24`` relative), whatever the
magnitude, and float32 represents every scale from 1e-38 to 3e38.

In a ``.npy`` file (``save_map``) the stored form is one structured array: fields ``scale``
(``<f4``) and ``values`` (``<f2``, shape ``(H, W)``), with shape ``()`` for one map and ``(T,)``
for ``T`` maps. ``np.load`` reads it without pickle; ``load_map`` gives the float32 maps back:

    >>> from gradcampp.maps import load_map
    >>> maps = load_map("out/cat.gradcampp.npy")  # doctest: +SKIP

or, with NumPy alone: ``stored = np.load(path)``;
``stored["values"].astype(np.float32) * stored["scale"][..., None, None]``.

``map_dtype="float32"`` stores the plain float32 array instead, byte for byte as before.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gradcampp._files import write_atomically

MAP_DTYPES = ("float16", "float32")
DEFAULT_MAP_DTYPE = "float16"


def check_map_dtype(map_dtype: str) -> str:
    """``map_dtype`` if it is one of ``MAP_DTYPES``, else a ValueError naming them."""
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"map_dtype must be one of {MAP_DTYPES}, got {map_dtype!r}")
    return map_dtype


def _scales(array: np.ndarray) -> np.ndarray:
    """float32 ``max |m|`` of each map of ``(..., H, W)`` (1 for a map of zeros); ValueError for
    NaN or Inf (both reach the maximum or the minimum)."""
    if array.ndim < 2:
        raise ValueError(f"maps must have shape (..., H, W), got {array.shape}")
    if not array.size:
        return np.ones(array.shape[:-2], dtype=np.float32)
    peak = np.maximum(array.max(axis=(-2, -1)), -array.min(axis=(-2, -1)))
    if not np.isfinite(peak).all():
        raise ValueError("maps contain NaN or Inf")
    return np.where(peak > 0, peak, np.float32(1.0)).astype(np.float32)


def _halve_into(array: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """``out = float16(array / scale)``: the quotient rounded to float32, then to float16 (at most
    ``2**-12 + 2**-25`` from ``m / scale``), in one pass."""
    np.divide(array, scale[..., None, None], out=out, casting="unsafe")


def half_with_scale(maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``(..., H, W)`` -> float16 values ``(..., H, W)`` and float32 scales ``(...)``.

    ``scale = max |m|`` over each map's ``H x W`` values (1 where a map is all zeros) and
    ``values = float16(m / scale)``.

    Raises:
        ValueError: for fewer than two axes, or NaN or infinite values.
    """
    array = np.asarray(maps, dtype=np.float32)
    scale = _scales(array)
    values = np.empty(array.shape, dtype=np.float16)
    _halve_into(array, scale, values)
    return values, scale


def from_half(values: Any, scale: Any) -> np.ndarray:
    """float16 values ``(..., H, W)`` and scales ``(...)`` -> float32 maps ``(..., H, W)``."""
    scale = np.asarray(scale, dtype=np.float32)
    return np.asarray(values, dtype=np.float16).astype(np.float32) * scale[..., None, None]


def pack(maps: Any, map_dtype: str = DEFAULT_MAP_DTYPE) -> np.ndarray:
    """Maps ``(H, W)`` or ``(T, H, W)`` -> the array ``save_map`` writes (module docstring)."""
    check_map_dtype(map_dtype)
    array = np.ascontiguousarray(maps, dtype=np.float32)
    if map_dtype == "float32":
        return array
    scale = _scales(array)
    record = np.dtype([("scale", "<f4"), ("values", "<f2", array.shape[-2:])])
    packed = np.empty(array.shape[:-2], dtype=record)
    packed["scale"] = scale
    _halve_into(array, scale, packed["values"])
    return packed


def unpack(stored: np.ndarray) -> np.ndarray:
    """A stored map array (``pack``'s, or a plain float array) -> float32 maps.

    Raises:
        ValueError: for an array that is neither.
    """
    names = stored.dtype.names
    if names is None:
        if not np.issubdtype(stored.dtype, np.floating):
            raise ValueError(f"not a stored map: dtype {stored.dtype}")
        return np.asarray(stored, dtype=np.float32)
    if set(names) != {"scale", "values"} or stored["values"].ndim < 2:
        raise ValueError(f"not a stored map: fields {names}")
    return from_half(stored["values"], stored["scale"])


def save_map(path: str | os.PathLike[str], maps: Any, map_dtype: str = DEFAULT_MAP_DTYPE) -> None:
    """Write maps ``(H, W)`` or ``(T, H, W)`` to a ``.npy`` file, atomically.

    Args:
        path: the file.
        maps: float maps.
        map_dtype: ``"float16"`` (values and scales, half the bytes) or ``"float32"``.
    """
    packed = pack(maps, map_dtype)
    write_atomically(path, lambda file: np.save(file, packed, allow_pickle=False))


def load_map(path: str | os.PathLike[str]) -> np.ndarray:
    """The float32 maps ``(H, W)`` or ``(T, H, W)`` stored in a ``.npy`` file by gradcampp.

    Reads either stored form (float16 with scales, or plain float32), never a pickle.

    Raises:
        ValueError: when the file holds something else.
    """
    return unpack(np.load(path, allow_pickle=False))
