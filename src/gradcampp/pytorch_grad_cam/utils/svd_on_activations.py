"""pytorch-grad-cam's ``utils.svd_on_activations``: the projection behind ``eigen_smooth``."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradcampp.formulas import first_component_map

__all__ = ["get_2d_projection"]


def get_2d_projection(activation_batch: Any) -> np.ndarray:
    """Each sample's ``(K, *S)`` activations projected on their first principal component.

    See ``gradcampp.formulas.first_component_map``; the input is not modified.

    Args:
        activation_batch: ``(N, K, *S)`` array.

    Returns:
        float32 maps ``(N, *S)``.
    """
    return first_component_map(np.asarray(activation_batch))
