"""Channel weights and class activation maps, as pure functions on arrays.

Every function here takes arrays from any array-API namespace (NumPy, PyTorch, TensorFlow) and
returns arrays of the same namespace, on the same device. Nothing here knows about models.

Shapes used throughout:

- ``acts``: activations ``A`` of the explained layer, ``(N, K, *S)``: ``N`` samples, ``K`` channels,
  spatial shape ``S`` of rank 1, 2 or 3.
- ``grads``: gradients ``g = dY^c / dA`` of ``T`` class scores, ``(N, T, K, *S)``.
- ``weights``: channel weights ``w_k^c``, ``(N, T, K)``.
- maps: ``(N, T, *S)``.

The Grad-CAM++ weights of Chattopadhyay et al. (WACV 2018, arXiv 1710.11063, Eq. 19) are

    alpha_ij^k = g_ij^2 / (2 g_ij^2 + (sum_ab A_ab^k) g_ij^3),
    w_k = sum_ij alpha_ij^k relu(g_ij),

where ``g`` is the gradient of the raw class score ``S^c``: the paper passes the score through
``exp`` so that its second and third derivatives become powers of ``g`` for piecewise-linear
heads, and the factor ``exp(S^c)`` that this puts on every weight is a positive per-sample constant
which we leave out (it overflows float32 once ``S^c > 88``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from gradcampp._xp import namespace

Variant = Literal["paper", "xplique", "authors", "pytorch-grad-cam"]
VARIANTS: tuple[str, ...] = ("paper", "xplique", "authors", "pytorch-grad-cam")

#: The constant that xplique 2.0.2 adds to a Grad-CAM++ denominator that is exactly zero.
XPLIQUE_EPSILON = 1e-4
#: The constant that pytorch-grad-cam 1.5.7 adds to every Grad-CAM++ denominator.
PYTORCH_GRAD_CAM_EPSILON = 1e-6


def _spatial_axes(array: Any, first: int) -> tuple[int, ...]:
    return tuple(range(first, array.ndim))


def gradcam_weights(grads: Any) -> Any:
    """Grad-CAM channel weights (Selvaraju et al. 2017, Eq. 1): ``w_k = mean_ij g_ij^k``.

    Args:
        grads: gradients ``(N, T, K, *S)``.

    Returns:
        weights ``(N, T, K)``.
    """
    xp = namespace(grads)
    return xp.mean(grads, axis=_spatial_axes(grads, 3))


def gradcampp_weights(acts: Any, grads: Any, variant: Variant = "paper") -> Any:
    """Grad-CAM++ channel weights.

    ``variant="paper"`` (Eq. 19): for ``g > 0`` the product ``alpha relu(g)`` simplifies to
    ``g / (2 + s_k g)`` with ``s_k = sum_ab A_ab^k``, so

        w_k = sum_{ij: g_ij > 0, 2 + s_k g_ij != 0} g_ij / (2 + s_k g_ij).

    The terms whose Eq. 19 denominator ``g^2 (2 + s_k g)`` is exactly zero get ``alpha = 0`` (a
    guard, no epsilon). Evaluating the simplified quotient keeps the result exact when ``g^2`` or
    ``g^3`` would underflow float32, as they do for the gradients of trained networks.

    ``variant="xplique"`` reproduces xplique 2.0.2: means instead of both sums,

        D = 2 g^2 + g^3 mean_ab A_ab^k,  D <- D + 1e-4 where D == 0,
        w_k = mean_ij (g^2 / D) relu(g).

    ``variant="pytorch-grad-cam"`` reproduces pytorch-grad-cam 1.5.7: a constant ``1e-6`` added
    to every denominator, and alpha zero where ``g == 0``,

        alpha = g^2 / (2 g^2 + s_k g^3 + 1e-6),  w_k = sum_ij alpha_ij relu(g_ij).

    ``variant="authors"`` follows the paper authors' published code: alpha as in Eq. 19 (zero
    where its denominator is zero), then divided per channel by its sum over the pixels where
    ``g > 0`` (channels with no such pixel keep alpha unchanged):
    ``w_k = sum_ij alpha'_ij relu(g_ij)``.

    Args:
        acts: activations ``(N, K, *S)``.
        grads: gradients ``(N, T, K, *S)``.
        variant: ``"paper"``, ``"xplique"``, ``"authors"`` or ``"pytorch-grad-cam"``.

    Returns:
        weights ``(N, T, K)``, with the dtype of ``grads``.

    Raises:
        ValueError: for an unknown ``variant``.
    """
    xp = namespace(acts, grads)
    axes = _spatial_axes(grads, 3)
    a = acts[:, None, ...]
    if variant == "xplique":
        g2 = grads * grads
        denom = 2.0 * g2 + g2 * grads * xp.mean(a, axis=axes, keepdims=True)
        denom = denom + xp.astype(denom == 0, denom.dtype) * XPLIQUE_EPSILON
        return xp.mean(g2 / denom * xp.maximum(grads, 0.0), axis=axes)
    if variant not in ("paper", "authors", "pytorch-grad-cam"):
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    sums = xp.sum(a, axis=axes, keepdims=True)
    if variant == "pytorch-grad-cam":
        g2 = grads * grads
        alpha = g2 / (2.0 * g2 + sums * (g2 * grads) + PYTORCH_GRAD_CAM_EPSILON)
        alpha = xp.where(grads != 0, alpha, 0.0)
        return xp.sum(alpha * xp.maximum(grads, 0.0), axis=axes)
    if variant == "paper":
        # relu(g) / (2 + s relu(g)): g / (2 + s g) where g > 0, and 0 where g <= 0; a zero
        # denominator (g > 0, s g = -2) is divided into infinity, which gives the guard's 0.
        # Only a negative channel sum can make 2 + s g zero for g > 0, so the guard's extra passes
        # run only then; the two arrays below are fresh, so they are updated in place.
        positive_part = xp.maximum(grads, 0.0)
        denom = sums * positive_part
        denom += 2.0
        if not bool(xp.all(sums >= 0)):
            denom = xp.where(denom == 0, float("inf"), denom)
        positive_part /= denom
        return xp.sum(positive_part, axis=axes)
    denom = 2.0 + sums * grads
    defined = (grads != 0) & (denom != 0)
    alpha = xp.where(defined, 1.0 / xp.where(defined, denom, 1.0), 0.0)
    positive = grads > 0
    norm = xp.sum(xp.where(positive, alpha, 0.0), axis=axes, keepdims=True)
    alpha = alpha / xp.where(norm != 0, norm, 1.0)
    return xp.sum(xp.where(positive, alpha * grads, 0.0), axis=axes)


def smooth_gradcampp_weights(acts: Any, d1: Any, d2: Any, d3: Any) -> Any:
    """Smooth Grad-CAM++ channel weights (Omeiza et al. 2019, arXiv 1908.01224).

    The gradients of ``n`` noisy copies ``x + e_m`` of the input (``e_m`` Gaussian) are averaged
    before Eq. 19 is applied: with ``g_m = dS^c/dA`` at copy ``m``,

        D1 = mean_m g_m,  D2 = mean_m g_m^2,  D3 = mean_m g_m^3,
        alpha_ij^k = D2_ij / (2 D2_ij + (sum_ab A_ab^k) D3_ij),
        w_k = sum_ij alpha_ij^k relu(D1_ij),

    with ``A`` the activations of the input itself and ``alpha = 0`` where its denominator is
    exactly zero (a guard, no epsilon). Without noise (``g_m = g``) this is Eq. 19.

    Args:
        acts: activations of the clean input ``(N, K, *S)``.
        d1: the mean of ``g`` over the noisy copies, ``(N, T, K, *S)``.
        d2: the mean of ``g^2``, ``(N, T, K, *S)``.
        d3: the mean of ``g^3``, ``(N, T, K, *S)``.

    Returns:
        weights ``(N, T, K)``, with the dtype of ``d1``.
    """
    xp = namespace(acts, d1, d2, d3)
    axes = _spatial_axes(d1, 3)
    sums = xp.sum(acts[:, None, ...], axis=axes, keepdims=True)
    denom = 2.0 * d2 + sums * d3
    defined = (d2 != 0) & (denom != 0)
    alpha = xp.where(defined, d2 / xp.where(defined, denom, 1.0), 0.0)
    return xp.sum(alpha * xp.maximum(d1, 0.0), axis=axes)


def first_component_map(weighted: Any) -> Any:
    """Projection of weighted activations on their first principal component (eigen-smoothing).

    For one map, the ``P`` positions are rows of a ``(P, K)`` matrix ``M`` with
    ``M[p, k] = w_k A^k_p``; its column means are subtracted and ``M = U diag(s) V^T`` is its
    singular value decomposition. The map is ``M v_1`` (``v_1`` the first right singular vector),
    the signed coordinate of each position along the direction of greatest variance. The sign of a
    singular vector is arbitrary; it is the one LAPACK's ``gesdd`` returns through
    ``numpy.linalg.svd``, as in pytorch-grad-cam 1.5.7's ``eigen_smooth``. NaN entries are read
    as 0.

    Args:
        weighted: ``w_k A^k`` as a NumPy array ``(N, K, *S)``.

    Returns:
        float32 maps ``(N, *S)``.
    """
    weighted = np.asarray(weighted)
    weighted = np.where(np.isnan(weighted), 0, weighted).astype(weighted.dtype, copy=False)
    n, k, *spatial = weighted.shape
    maps = np.empty((n, *spatial), dtype=np.float32)
    for i in range(n):
        rows = weighted[i].reshape(k, -1).T
        rows = rows - rows.mean(axis=0)
        _, _, vt = np.linalg.svd(rows, full_matrices=True)
        maps[i] = (rows @ vt[0, :]).reshape(spatial)
    return maps


def class_activation_map(acts: Any, weights: Any, relu: bool = True) -> Any:
    """Weighted sum of the feature maps: ``phi = relu(sum_k w_k A^k)``.

    Args:
        acts: activations ``(N, K, *S)``.
        weights: channel weights ``(N, T, K)``.
        relu: clip negative values to zero, as Grad-CAM and Grad-CAM++ do.

    Returns:
        maps ``(N, T, *S)``.
    """
    xp = namespace(acts, weights)
    n, k, *spatial = acts.shape
    flat = xp.reshape(acts, (n, k, -1))
    maps = xp.reshape(xp.matmul(weights, flat), (n, weights.shape[1], *spatial))
    return xp.maximum(maps, 0.0) if relu else maps
