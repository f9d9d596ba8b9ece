"""The read stage: input path -> the model's view of the image, or the reason it is skipped.

An image is reduced to the model's input size as it is read (``gradcampp.images.read_view``),
so memory is bounded by the views in flight, not by the images' sizes. Reading needs only the
model's preprocessing (``Preprocess``), never the model: an engine runs it where decoding is
cheap (a CPU task), apart from the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from gradcampp.images import ImageReadError, Preprocess, read_view
from gradcampp.outputs import display_path


def read_views(
    paths: Sequence[Path], preprocess: Preprocess, notes: list[str] | None = None
) -> Iterator[tuple[Path, np.ndarray | ImageReadError]]:
    """Each path with its view (``images.read_view``: ``uint8 (H, W, 3)``), or the
    ``ImageReadError`` it raised; ``notes`` collects remarks (e.g. how a float image was scaled)."""
    for path in paths:
        try:
            yield path, read_view(path, preprocess, notes=notes)
        except ImageReadError as error:
            yield path, error


def read_group(
    items: Sequence[tuple[Path, str]], preprocess: Preprocess, notes: list[str] | None = None
) -> tuple[list[tuple[Path, str, np.ndarray]], list[tuple[str, str]]]:
    """Read a group of inputs ``(path, unique name)``.

    Returns:
        ``(views, skipped)``: ``(path, name, uint8 view (H, W, 3))`` of each readable input, in
        order, and ``(shown path, reason)`` of each unreadable one (``outputs.display_path``).
    """
    views: list[tuple[Path, str, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    read = read_views([path for path, _ in items], preprocess, notes)
    for (path, name), (_, view) in zip(items, read, strict=True):
        if isinstance(view, ImageReadError):
            skipped.append((display_path(path), view.reason))
        else:
            views.append((Path(path), name, view))
    return views, skipped
