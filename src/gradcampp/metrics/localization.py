"""Localisation against ground truth: pointing game, energy, Loc(delta), instance recalls.

Every function takes maps ``(N, *S)`` with at least two spatial axes (images ``(N, H, W)``,
volumes ``(N, D, H, W)``; one map needs its batch axis: ``maps[None]``, as a 2-D array would
otherwise be read as ``H`` one-dimensional maps) and ground-truth regions: bool masks
``(N, *S)``, or per image ``(k_i, *S)`` masks of its ``k_i`` instances (``boxes_to_masks`` turns
boxes into masks).
Where a metric needs one region per image it uses the union of the instances. Maps are min-max
normalised per image first (``E``, values in ``[0, 1]``; a constant map becomes all zeros), so
every score is invariant to a positive scale and offset of the map. Each function returns one
score per image, ``(N,)``; average them for a data set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradcampp.metrics._arrays import (
    as_maps,
    as_regions,
    check_fraction,
    minmax_normalize,
    union,
)


def _inputs(maps: Any, regions: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    maps = as_maps(maps)
    if maps.ndim < 3:
        raise ValueError(
            f"maps must have shape (N, H, W) (a batch of images; one map: maps[None]), got shape "
            f"{maps.shape}: a 2-D array would be read as {maps.shape[0]} one-dimensional maps"
        )
    regions = as_regions(regions, maps.shape[0], maps.shape[1:])
    for index, region in enumerate(regions):
        if not region.any():
            raise ValueError(f"the ground-truth region of image {index} is empty")
    return maps, regions


def _energy_shares(normalized: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``sum(E * mask) / sum(E)`` for each mask of one image; 0 when ``sum(E) == 0``."""
    total = normalized.sum()
    if total <= 0:
        return np.zeros(masks.shape[0])
    return (masks * normalized).reshape(masks.shape[0], -1).sum(axis=1) / total


def pointing_game(maps: Any, regions: Any, *, tolerance: float = 0.0) -> np.ndarray:
    """Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016).

    Image ``i`` is a hit when the map's maximum lies within ``tolerance`` pixels (Euclidean
    distance) of a ground-truth pixel: ``hit_i = max_{p in argmax E_i} min_{r in R_i} |p - r| <=
    tolerance``. When several pixels share the maximum, all must be within the tolerance; a
    constant map points nowhere and never hits. Zhang et al. use 15 pixels at 224 x 224.

    Args:
        maps: ``(N, *S)`` explanation maps, ``S`` of two or three axes.
        regions: ground truth, see the module docstring (instances are united).
        tolerance: distance in pixels, >= 0.

    Returns:
        ``(N,)`` bool hits; their mean is the pointing accuracy.

    Raises:
        ValueError: for shapes that do not fit, an empty region or a negative tolerance.
    """
    maps, regions = _inputs(maps, regions)
    tolerance = check_fraction(tolerance, "tolerance", high=np.inf)
    hits = np.zeros(maps.shape[0], dtype=bool)
    for i, (one_map, region) in enumerate(zip(maps, union(regions), strict=True)):
        top = one_map.max()
        if top == one_map.min():
            continue
        peaks = np.argwhere(one_map == top).astype(np.float64)
        truth = np.argwhere(region).astype(np.float64)
        dist2 = ((peaks[:, None, :] - truth[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        hits[i] = bool(np.all(dist2 <= tolerance**2))
    return hits


def energy_pointing_game(maps: Any, regions: Any) -> np.ndarray:
    """Energy-based pointing game (Wang et al., "Score-CAM", CVPR-W 2020).

    ``share_i = sum_{p in R_i} E_i(p) / sum_p E_i(p)``: the share of the normalised map's energy
    that falls inside the ground truth (0 for a constant map).

    Args:
        maps: ``(N, *S)`` explanation maps, ``S`` of two or three axes.
        regions: ground truth (instances are united).

    Returns:
        ``(N,)`` float64 shares in ``[0, 1]``.
    """
    maps, regions = _inputs(maps, regions)
    normalized = minmax_normalize(maps)
    truth = union(regions)
    return np.array([_energy_shares(e, t[None])[0] for e, t in zip(normalized, truth, strict=True)])


def loc_delta(maps: Any, regions: Any, delta: float, *, binarize: bool = False) -> np.ndarray:
    """Loc^c(delta) (Chattopadhyay et al., "Grad-CAM++", arXiv 1710.11063, Section 6).

    The paper defines, for an image and class ``c``,
    ``Loc^c(delta) = Internal_energy / (Bbox + External_energy)``, where the explanation map is
    first thresholded at ``delta`` by setting every value below ``delta`` to zero (the values
    above are kept), ``Internal_energy`` is the sum of the thresholded map over the bounding
    box(es), ``External_energy`` its sum outside, and ``Bbox`` the area of the box(es). Here:

    - ``binarize=False`` (default, the paper's): ``B(p) = E(p) * 1[E(p) >= delta]``;
    - ``binarize=True`` (the default of earlier versions of this package):
      ``B(p) = 1[E(p) > delta]``, every kept pixel counting 1 (the share of the box covered by
      the thresholded map, minus a penalty for what lies outside);

    then ``Loc = sum_{p in R} B(p) / (|R| + sum_{p not in R} B(p))`` with ``E`` the min-max
    normalised map and ``R`` the union of the boxes. 1 is reached only by a binarised map that
    fills the box exactly and nothing else; with the values kept, a map must also be 1 on the
    whole box.

    Args:
        maps: ``(N, *S)`` explanation maps, ``S`` of two or three axes.
        regions: ground truth (instances are united), usually boxes.
        delta: threshold in ``[0, 1]``.
        binarize: see above.

    Returns:
        ``(N,)`` float64 scores in ``[0, 1]``.
    """
    maps, regions = _inputs(maps, regions)
    delta = check_fraction(delta, "delta")
    normalized = minmax_normalize(maps)
    if binarize:
        values = (normalized > delta).astype(np.float64)
    else:
        values = normalized * (normalized >= delta)
    truth = union(regions)
    axes = tuple(range(1, maps.ndim))
    internal = (values * truth).sum(axis=axes)
    external = (values * ~truth).sum(axis=axes)
    return internal / (truth.sum(axis=axes) + external)


def _instance_inputs(maps: Any, regions: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """``_inputs``, refusing an empty instance mask (a missing instance cannot be found)."""
    maps, regions = _inputs(maps, regions)
    for index, region in enumerate(regions):
        empty = np.flatnonzero(~region.reshape(region.shape[0], -1).any(axis=1))
        if empty.size:
            raise ValueError(
                f"regions: instance {int(empty[0])} of image {index} is an empty mask "
                f"({empty.size} of its {region.shape[0]} instances are empty); every instance "
                "mask must hold at least one pixel"
            )
    return maps, regions


def instance_recall(maps: Any, regions: Any, *, min_share: float = 0.1) -> np.ndarray:
    """Share of the instances that each receive at least ``min_share`` of the map's energy.

    ``recall_i = (1 / k_i) * sum_j 1[sum_{p in R_ij} E_i(p) / sum_p E_i(p) >= min_share]`` over
    the ``k_i`` instance regions ``R_ij`` of image ``i``. It measures whether an explanation
    covers every instance of a class, not only the most salient one (Grad-CAM++'s claim for
    multi-instance images, paper section 4.3). A constant map covers nothing (recall 0).

    Args:
        maps: ``(N, *S)`` explanation maps, ``S`` of two or three axes.
        regions: per image, ``(k_i, *S)`` instance masks (or boxes turned into masks).
        min_share: the energy share an instance needs, in ``(0, 1]``.

    Returns:
        ``(N,)`` float64 recalls in ``[0, 1]``.

    Raises:
        ValueError: naming ``regions`` when an instance mask of an image is empty (a missing
            instance cannot be found; drop it instead), and for shapes that do not fit.
    """
    maps, regions = _instance_inputs(maps, regions)
    min_share = check_fraction(min_share, "min_share")
    if min_share == 0:
        raise ValueError("min_share must be > 0 (every instance would count as found)")
    normalized = minmax_normalize(maps)
    return np.array(
        [
            float(np.mean(_energy_shares(e, r) >= min_share))
            for e, r in zip(normalized, regions, strict=True)
        ]
    )


def instance_peak_recall(maps: Any, regions: Any, *, min_peak: float = 0.5) -> np.ndarray:
    """Share of the instances whose own peak reaches ``min_peak`` of the map's maximum.

    ``recall_i = (1 / k_i) * sum_j 1[max_{p in R_ij} E_i(p) >= min_peak]`` over the ``k_i``
    instance regions ``R_ij`` of image ``i``, with ``E`` the min-max normalised map (its maximum
    is 1). Where ``instance_recall`` asks how much of the map's energy an instance holds, this
    asks whether the map lights the instance up at all: a small instance with a bright spot
    counts, however little energy it holds. A constant map reaches nothing (recall 0).

    Args:
        maps: ``(N, *S)`` explanation maps.
        regions: per image, ``(k_i, *S)`` instance masks (or boxes turned into masks).
        min_peak: the normalised value an instance's brightest pixel needs, in ``(0, 1]``.

    Returns:
        ``(N,)`` float64 recalls in ``[0, 1]``.

    Raises:
        ValueError: naming ``regions`` when an instance mask of an image is empty, for
            ``min_peak`` outside ``(0, 1]`` and for shapes that do not fit.
    """
    maps, regions = _instance_inputs(maps, regions)
    min_peak = check_fraction(min_peak, "min_peak")
    if min_peak == 0:
        raise ValueError("min_peak must be > 0 (every instance would count as reached)")
    normalized = minmax_normalize(maps)
    recalls = []
    for e, r in zip(normalized, regions, strict=True):
        if not e.any():  # a constant map: no peak anywhere
            recalls.append(0.0)
            continue
        peaks = np.where(r, e[None], -np.inf).reshape(r.shape[0], -1).max(axis=1)
        recalls.append(float(np.mean(peaks >= min_peak)))
    return np.array(recalls)
