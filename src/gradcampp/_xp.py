"""The array namespace that the framework-neutral maths runs in.

``formulas`` and ``resize`` are written against the Python array API standard. This module hands
them the namespace that matches their input, so that the same lines run on NumPy arrays, PyTorch
tensors (through ``array_api_compat``) and TensorFlow tensors, on the input's own device.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np


def namespace(*arrays: Any) -> Any:
    """Return the array-API namespace of ``arrays`` (NumPy, PyTorch or TensorFlow)."""
    if any(type(a).__module__.startswith("tensorflow") for a in arrays):
        from gradcampp.backends import tf_namespace

        return tf_namespace
    return array_api_compat.array_namespace(*arrays)


def constant_like(value: Any, like: Any, xp: Any, dtype: Any = None) -> Any:
    """Return the NumPy array ``value`` in namespace ``xp``, on the device of ``like``.

    The dtype is ``dtype`` if given, else that of ``like``.
    """
    dtype = like.dtype if dtype is None else dtype
    if isinstance(value, np.ndarray) and not value.flags.writeable:  # frameworks refuse it
        value = value.copy()
    if hasattr(xp, "constant_like"):
        return xp.constant_like(value, like, dtype)
    if getattr(xp, "__name__", "").startswith("jax"):  # int64 is int32 unless x64 is enabled
        import jax

        return xp.asarray(value, dtype=jax.dtypes.canonicalize_dtype(dtype))
    return xp.asarray(value, dtype=dtype, device=array_api_compat.device(like))


def take(x: Any, indices: Any, axis: int, xp: Any) -> Any:
    """Elements of ``x`` at the non-negative 1-d ``indices`` along ``axis``, in namespace ``xp``.

    PyTorch tensors go to ``torch.index_select`` directly: the array-API wrapper would first add a
    pass over ``indices`` for negative values, which never occur here.
    """
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.index_select(x, axis % x.ndim, indices)
    return xp.take(x, indices, axis=axis)


def to_numpy(value: Any) -> np.ndarray:
    """``value`` (NumPy array, PyTorch or TensorFlow tensor, nested sequence) as NumPy."""
    if hasattr(value, "detach"):  # torch tensors, wherever they live
        value = value.detach().cpu()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)
