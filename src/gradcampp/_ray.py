"""Importing Ray Data, with an error that says how to install it (for ``gradcampp.ray`` and the
Ray engine alike)."""

from __future__ import annotations

from typing import Any


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ImportError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(
            f'--engine ray needs Ray Data: pip install ".[ray]" in a gradcampp checkout ({error})'
        ) from error
    return ray
