"""Deletion and Insertion (Petsiuk, Das and Saenko, "RISE", BMVC 2018), with their curves.

The pixels of each image are ranked by its map, highest first. After step ``s = 0 .. L`` of ``L``
steps, the ``k_s = round(s * P / L)`` top-ranked of the ``P`` pixels are changed (all channels
alike), and the model's probability ``p_s`` of the explained class is read:

- Deletion: the pixels are set to a baseline (default 0): a faithful map makes ``p`` fall fast;
  lower area is better.
- Insertion: starting from a blurred copy of the image, the pixels get their original values back:
  a faithful map makes ``p`` rise fast; higher area is better.

The area under the curve uses the trapezoid rule on ``x_s = s / L``:
``AUC = (1 / L) * (p_0 / 2 + p_1 + ... + p_{L-1} + p_L / 2)``, a number in ``[0, 1]``.

Ties. Pixels with equal map values (a Grad-CAM map is often zero on a quarter of the image or
more; a constant map is one tie) have no order of their own. With ``ties="random"`` (the default)
the curve is the expected curve over uniformly random orders of the tied pixels:
``p_s = E_T[p(x with the pixels ranked above G and T changed)]``, where ``G`` is the tie group that
``k_s`` cuts (``a`` pixels ranked above it, ``m = k_s - a`` of its ``g`` pixels changed) and ``T``
is a uniformly random ``m``-subset of ``G`` (the first ``m`` of a random order). The model is not
additive in the pixels, so this expectation has no closed form: a step that cuts no group is exact
(every order changes the same pixels); a step with ``C(g, m) <= n_orders`` subsets averages all
of them, exactly; any other step averages the ``n_orders`` seeded random orders of the group (the
same orders at every step, so each is a real deletion order). With ``ties="row-major"`` tied
pixels go in row-major order (top of the image first), the rule of earlier versions: it moves the
score of a map with many ties by where the ties lie, not by what the map says. When the top of the
image matters less to the model than the rest (as on the demo), deleting it first keeps the
probability up and inserting it first adds little, so the rule penalises such a map in both
curves; when the top matters more, it rewards it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Any

import numpy as np

from gradcampp.metrics._arrays import as_maps, as_numpy
from gradcampp.metrics._model import adapter_for, as_images, as_targets, check_batch_size


@dataclass(frozen=True)
class CausalCurves:
    """Deletion or insertion curves of ``N`` images.

    Attributes:
        fractions: ``(L + 1,)`` share of pixels changed after each step, from 0 to 1.
        curves: ``(N, L + 1)`` probability of the explained class after each step.
        auc: ``(N,)`` normalised trapezoid area under each curve.
        targets: ``(N,)`` the explained class indices.
        exact: ``(N,)`` bool, ``False`` where a curve averages sampled orders of tied pixels
            (``ties="random"`` and a tie group too large to enumerate), ``True`` otherwise.
    """

    fractions: np.ndarray
    curves: np.ndarray
    auc: np.ndarray
    targets: np.ndarray
    exact: np.ndarray

    @property
    def mean_auc(self) -> float:
        """The mean area over the images."""
        return float(self.auc.mean())


def curve_auc(curves: Any) -> np.ndarray:
    """Trapezoid area of curves sampled at ``L + 1`` evenly spaced points of ``[0, 1]``.

    ``AUC = (1 / L) * (c_0 / 2 + c_1 + ... + c_{L-1} + c_L / 2)``.

    Args:
        curves: ``(N, L + 1)`` values, ``L >= 1``.

    Returns:
        ``(N,)`` float64 areas.
    """
    curves = as_numpy(curves, "curves")
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must have shape (N, L + 1) with L >= 1, got {curves.shape}")
    steps = curves.shape[1] - 1
    return (curves.sum(axis=1) - 0.5 * (curves[:, 0] + curves[:, -1])) / steps


def pixel_ranks(maps: Any) -> np.ndarray:
    """Rank of every pixel in its map, 0 for the highest value; ties keep row-major order (the
    order of ``ties="row-major"``).

    Args:
        maps: ``(N, *S)``.

    Returns:
        ``(N, P)`` int64 ranks, ``P = prod(S)``.
    """
    maps = as_maps(maps)
    flat = maps.reshape(maps.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` matrix of a 1-D Gaussian blur with symmetric (mirror) boundaries."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size))
    period = 2 * size
    for i in range(size):
        j = (i + offsets) % period
        j = np.where(j >= size, period - 1 - j, j)
        np.add.at(matrix[i], j, weights)
    return matrix


def gaussian_blur(images: Any, sigma: float, *, channel_axis: int = 1) -> np.ndarray:
    """Separable Gaussian blur of each channel, mirror boundaries, kernel cut at ``3 sigma``.

    Args:
        images: ``(N, C, *S)`` (``channel_axis=1``) or ``(N, *S, C)`` (``channel_axis=-1``).
        sigma: standard deviation in pixels, > 0.
        channel_axis: the channel axis of ``images`` (not blurred).

    Returns:
        float32 array shaped like ``images``.

    Raises:
        ValueError: for a ``sigma`` that is not a positive number.
    """
    if not isinstance(sigma, int | float) or isinstance(sigma, bool) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    array = as_numpy(images, "images")
    channel = channel_axis % array.ndim
    for axis in range(1, array.ndim):
        if axis == channel:
            continue
        matrix = _blur_matrix(array.shape[axis], float(sigma))
        array = np.moveaxis(np.tensordot(matrix, np.moveaxis(array, axis, 0), axes=1), 0, axis)
    return array.astype(np.float32)


TIES = ("random", "row-major")


def _check_ties(ties: Any, n_orders: Any, seed: Any) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if isinstance(n_orders, bool) or not isinstance(n_orders, int | np.integer) or n_orders < 1:
        raise ValueError(f"n_orders must be a positive integer, got {n_orders!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def changed_sets(
    values: np.ndarray,
    counts: np.ndarray,
    *,
    ties: str = "random",
    n_orders: int = 8,
    rng: np.random.Generator | None = None,
) -> tuple[list[list[tuple[np.ndarray, float]]], bool]:
    """The pixels changed after each step of one map, with the weight of each alternative.

    Args:
        values: ``(P,)`` map values of one image, flattened row-major.
        counts: ``(L + 1,)`` number of changed pixels after each step, ``0 <= k_s <= P``.
        ties: ``"random"`` or ``"row-major"`` (see the module docstring).
        n_orders: random orders of a tie group that no enumeration covers.
        rng: the generator of those orders (``ties="random"`` only).

    Returns:
        per step, a list of ``(flat pixel indices, weight)`` whose weights sum to 1: the expected
        probability at that step is the weighted sum over the list; and whether every step is
        exact (no sampled orders).
    """
    n_pixels = values.size
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    new_group = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1
    starts = np.concatenate([[0], new_group])
    ends = np.concatenate([new_group, [n_pixels]])
    group_of = np.repeat(np.arange(starts.size), ends - starts)
    orders: dict[int, np.ndarray] = {}
    exact = True
    steps = []
    for k in (int(c) for c in counts):
        if ties == "row-major" or k in (0, n_pixels) or ranked[k - 1] != ranked[k]:
            steps.append([(order[:k], 1.0)])
            continue
        group = int(group_of[k - 1])
        low, high = int(starts[group]), int(ends[group])
        above, members, m = order[:low], order[low:high], k - low
        if comb(high - low, m) <= n_orders:
            chosen = [members[list(c)] for c in combinations(range(high - low), m)]
        else:
            exact = False
            if group not in orders:
                generator = rng if rng is not None else np.random.default_rng(0)
                orders[group] = np.stack(
                    [generator.permutation(high - low) for _ in range(n_orders)]
                )
            chosen = [members[perm[:m]] for perm in orders[group]]
        steps.append([(np.concatenate([above, c]), 1.0 / len(chosen)) for c in chosen])
    return steps, exact


def _curves(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any,
    start_from: str,
    fill: Any,
    steps: int,
    batch_size: int,
    apply_softmax: bool,
    blur_sigma: float,
    ties: str,
    n_orders: int,
    seed: int,
) -> CausalCurves:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    _check_ties(ties, n_orders, seed)
    adapter = adapter_for(model)
    batch_size = check_batch_size(batch_size)
    maps = as_maps(maps)
    x = as_images(images, maps.shape[1:], adapter.channel_axis)
    if x.shape[0] != maps.shape[0]:
        raise ValueError(f"got {x.shape[0]} images but {maps.shape[0]} maps")
    n, n_pixels = maps.shape[0], int(np.prod(maps.shape[1:]))
    if start_from == "image":  # deletion: image -> baseline
        start, end = x, _broadcast(fill, x.shape, "baseline")
    else:  # insertion: blurred (or given substrate) -> image
        start = (
            gaussian_blur(x, blur_sigma, channel_axis=adapter.channel_axis)
            if fill is None
            else _broadcast(fill, x.shape, "substrate")
        )
        end = x
    counts = (2 * np.arange(steps + 1) * n_pixels + steps) // (2 * steps)  # round(s P / L)
    labels = None if targets is None else as_targets(targets, n, _n_classes(adapter, x[:1]))
    if labels is None:
        labels = adapter.probabilities(x, batch_size, apply_softmax).argmax(axis=1)
    flat_maps = maps.reshape(n, -1)
    exact = np.ones(n, dtype=bool)

    def jobs() -> Iterator[tuple[int, int, np.ndarray, float]]:
        for i in range(n):
            rng = np.random.default_rng([int(seed), i])
            sets, exact[i] = changed_sets(
                flat_maps[i], counts, ties=ties, n_orders=n_orders, rng=rng
            )
            for s, alternatives in enumerate(sets):
                for pixels, weight in alternatives:
                    yield i, s, pixels, weight

    curves = np.zeros((n, steps + 1))
    pending: list[tuple[int, int, np.ndarray, float]] = []
    for job in jobs():
        pending.append(job)
        if len(pending) == batch_size:
            _run(adapter, pending, start, end, labels, curves, maps.shape[1:], apply_softmax)
            pending = []
    if pending:
        _run(adapter, pending, start, end, labels, curves, maps.shape[1:], apply_softmax)
    return CausalCurves(
        fractions=counts / n_pixels,
        curves=curves,
        auc=curve_auc(curves),
        targets=labels,
        exact=exact,
    )


def _run(
    adapter: Any,
    jobs: list[tuple[int, int, np.ndarray, float]],
    start: np.ndarray,
    end: np.ndarray,
    labels: np.ndarray,
    curves: np.ndarray,
    spatial: tuple[int, ...],
    apply_softmax: bool,
) -> None:
    """Run the model on one batch of partly changed images; add weighted probabilities."""
    images = np.array([job[0] for job in jobs])
    changed = np.zeros((len(jobs), int(np.prod(spatial))), dtype=bool)
    for row, (_, _, pixels, _) in enumerate(jobs):
        changed[row, pixels] = True
    changed = np.expand_dims(changed.reshape(len(jobs), *spatial), adapter.channel_axis)
    probs = adapter.probabilities(
        np.where(changed, end[images], start[images]), len(jobs), apply_softmax
    )
    kept = probs[np.arange(len(jobs)), labels[images]]
    weights = np.array([job[3] for job in jobs])
    np.add.at(curves, (images, np.array([job[1] for job in jobs])), weights * kept)


def _broadcast(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = as_numpy(value, what, dtype=np.float32)
    try:
        return np.broadcast_to(array, shape)
    except ValueError as error:
        raise ValueError(
            f"{what} must be a number or an array broadcastable to the images {shape}, "
            f"got shape {array.shape}"
        ) from error


def _n_classes(adapter: Any, x: np.ndarray) -> int:
    return adapter.probabilities(x, 1, False).shape[1]


def deletion(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any = None,
    *,
    steps: int = 32,
    baseline: Any = 0.0,
    batch_size: int = 64,
    apply_softmax: bool = True,
    ties: str = "random",
    n_orders: int = 8,
    seed: int = 0,
) -> CausalCurves:
    """Deletion curves and areas: top-ranked pixels set to ``baseline`` step by step (lower AUC
    is better).

    Args:
        model: a ``torch.nn.Module`` returning ``(N, K)`` scores; left as it was.
        images: ``(N, C, *S)`` model inputs.
        maps: ``(N, *S)`` explanation maps.
        targets: ``None`` (the class predicted on ``images``), an ``int`` or indices ``(N,)``.
        steps: ``L``, the number of steps (the model runs ``L + 1`` times per image).
        baseline: value of deleted pixels: a number, or an array broadcastable to the images.
        batch_size: images per forward pass.
        apply_softmax: ``False`` when the model already returns probabilities.
        ties: how pixels with equal map values are ordered: ``"random"`` (the expected curve over
            random orders of each tie group, see the module docstring) or ``"row-major"``.
        n_orders: random orders averaged where a tie group has more than ``n_orders`` possible
            subsets at a step (``ties="random"``); smaller groups are enumerated exactly.
        seed: seed of those orders (image ``i`` uses ``numpy.random.default_rng([seed, i])``).

    Returns:
        ``CausalCurves`` (``fractions (L + 1,)``, ``curves (N, L + 1)``, ``auc (N,)``,
        ``exact (N,)``).
    """
    return _curves(
        model,
        images,
        maps,
        targets,
        "image",
        baseline,
        steps,
        batch_size,
        apply_softmax,
        1.0,
        ties,
        n_orders,
        seed,
    )


def insertion(
    model: Any,
    images: Any,
    maps: Any,
    targets: Any = None,
    *,
    steps: int = 32,
    blur_sigma: float = 5.0,
    substrate: Any = None,
    batch_size: int = 64,
    apply_softmax: bool = True,
    ties: str = "random",
    n_orders: int = 8,
    seed: int = 0,
) -> CausalCurves:
    """Insertion curves and areas: top-ranked pixels copied step by step from the image into a
    blurred copy of it (higher AUC is better).

    Args:
        model: a ``torch.nn.Module`` returning ``(N, K)`` scores; left as it was.
        images: ``(N, C, *S)`` model inputs.
        maps: ``(N, *S)`` explanation maps.
        targets: ``None`` (the class predicted on ``images``), an ``int`` or indices ``(N,)``.
        steps: ``L``, the number of steps (the model runs ``L + 1`` times per image).
        blur_sigma: standard deviation in pixels of the Gaussian blur of the starting image.
        substrate: the starting image instead of the blur: an array broadcastable to the images.
        batch_size: images per forward pass.
        apply_softmax: ``False`` when the model already returns probabilities.
        ties: how pixels with equal map values are ordered: ``"random"`` (the expected curve over
            random orders of each tie group, see the module docstring) or ``"row-major"``.
        n_orders: random orders averaged where a tie group has more than ``n_orders`` possible
            subsets at a step (``ties="random"``); smaller groups are enumerated exactly.
        seed: seed of those orders (image ``i`` uses ``numpy.random.default_rng([seed, i])``).

    Returns:
        ``CausalCurves`` (``fractions (L + 1,)``, ``curves (N, L + 1)``, ``auc (N,)``,
        ``exact (N,)``).
    """
    return _curves(
        model,
        images,
        maps,
        targets,
        "blur",
        substrate,
        steps,
        batch_size,
        apply_softmax,
        blur_sigma,
        ties,
        n_orders,
        seed,
    )
