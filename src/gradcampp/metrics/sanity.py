"""Sanity check by cascading model randomisation (Adebayo et al., "Sanity checks for saliency
maps", NeurIPS 2018).

The layers of a copy of the model are re-initialised one after another, starting at the output
and keeping earlier randomisations (a cascade). After each step the explainer runs on the copy,
and each image's map is compared with the trained model's map by Spearman's rank correlation. An
explanation that depends on what the model learnt loses its correlation as the cascade goes
down; one that stays correlated reflects the input or the architecture, not the model. The
user's model is never modified: all randomisation happens on a deep copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcampp.metrics._arrays import as_maps, as_numpy
from gradcampp.metrics._model import adapter_for, as_targets, check_batch_size


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    starts = np.flatnonzero(new_group)
    ends = np.concatenate([starts[1:], [values.size]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of starts + 1 .. ends
    ranks = np.empty(values.size)
    ranks[order] = mean_rank[np.cumsum(new_group) - 1]
    return ranks


def spearman_correlation(maps_a: Any, maps_b: Any) -> np.ndarray:
    """Spearman's rank correlation between paired maps, one value per pair.

    ``rho_i = pearson(rank(a_i), rank(b_i))`` over the pixels, ties given their average rank.
    When either map is constant its ranking carries no information and ``rho_i = 0``.

    Args:
        maps_a, maps_b: ``(N, *S)`` maps of one shape.

    Returns:
        ``(N,)`` float64 correlations in ``[-1, 1]``.
    """
    a = as_maps(maps_a)
    b = as_maps(maps_b)
    if a.shape != b.shape:
        raise ValueError(f"maps_a and maps_b must have one shape, got {a.shape} and {b.shape}")
    out = np.zeros(a.shape[0])
    for i, (x, y) in enumerate(
        zip(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), strict=True)
    ):
        rx = average_ranks(x)
        ry = average_ranks(y)
        rx -= rx.mean()
        ry -= ry.mean()
        norm = np.sqrt((rx * rx).sum() * (ry * ry).sum())
        out[i] = (rx * ry).sum() / norm if norm > 0 else 0.0
    return out


@dataclass(frozen=True)
class SanityResult:
    """Correlations of a cascading randomisation.

    Attributes:
        layers: ``(L,)`` the randomised layers, in cascade order; step ``l`` has layers
            ``0 .. l`` randomised.
        correlations: ``(L, N)`` Spearman correlation of each image's map after step ``l`` with
            its map from the trained model.
    """

    layers: tuple[str, ...]
    correlations: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """``(L,)`` mean correlation after each step."""
        return self.correlations.mean(axis=1)


def _explain(explainer: Any, inputs: Any, targets: np.ndarray) -> np.ndarray:
    run = explainer.explain if hasattr(explainer, "explain") else explainer
    return as_maps(run(inputs, targets))


def cascading_randomization(
    make_explainer: Callable[[Any], Any],
    model: Any,
    inputs: Any,
    targets: Any = None,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> SanityResult:
    """Cascading randomisation from the top; Spearman correlation of each step's maps with the
    trained model's maps.

    Args:
        make_explainer: builds an explainer for a model, e.g. ``GradCAMPP`` or
            ``lambda m: GradCAM(m, conv_layer="features.4")`` (name layers by string: the copy
            has its own modules). The explainer's ``explain(inputs, targets)`` (or the explainer
            itself, if it is a plain callable) must return maps ``(N, *S)``.
        model: the trained ``torch.nn.Module``; it is deep-copied, never modified.
        inputs: ``(N, C, *S)`` model inputs.
        targets: ``None`` (the classes the trained model predicts, kept for every step), an
            ``int`` or class indices ``(N,)``.
        layers: names of the layers to randomise, in cascade order; ``None`` for every layer
            that owns parameters, from the output back to the input (in reverse order of
            registration, which is the forward order for sequential models).
        seed: seeds the re-initialisation (step ``l`` uses ``seed + l``).
        batch_size: samples per forward pass when predicting the targets.

    Returns:
        a ``SanityResult`` with ``layers`` and ``correlations (L, N)``.

    Raises:
        ValueError: for an unknown layer name or targets that do not fit.
    """
    adapter = adapter_for(model)
    batch_size = check_batch_size(batch_size)
    x = as_numpy(inputs, "inputs", dtype=np.float32)
    probs = adapter.probabilities(x, batch_size, False)
    n, n_classes = probs.shape
    labels = probs.argmax(axis=1) if targets is None else as_targets(targets, n, n_classes)
    trained = _explain(make_explainer(model), inputs, labels)

    copy = adapter.copy()
    copy_adapter = adapter_for(copy)
    available = dict(copy_adapter.layers())
    names = (
        [name for name, _ in reversed(copy_adapter.layers())] if layers is None else list(layers)
    )
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"layers {unknown} are not layers with parameters of the model; "
            f"available: {list(available)}"
        )
    correlations = []
    for step, name in enumerate(names):
        copy_adapter.randomize(available[name], seed + step)
        randomized = _explain(make_explainer(copy), inputs, labels)
        correlations.append(spearman_correlation(trained, randomized))
    return SanityResult(
        layers=tuple(names), correlations=np.array(correlations).reshape(len(names), n)
    )
