"""Explaining a set of images and writing every result file (what the command line runs).

For each explained image ``NAME.ext`` (``NAME`` made unique within the run) the output directory
receives:

- ``NAME.input.png``: the image as the model saw it (resized/cropped);
- ``NAME.<method>.png``: the overlay of each method (``gradcampp``, ``gradcam``), or with several
  targets ``NAME.<method>.<rank>-<class>.png``;
- ``NAME.<method>.npy``: the raw float32 map at the model's input resolution, ``(H, W)``, or
  ``(T, H, W)`` for ``T`` explained classes;
- ``NAME.json``: the input path, the top classes with probabilities, the explained classes and
  the files written;

and for the run ``predictions.csv`` (one line per image and top class) and ``index.html``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from gradcampp.explainers import GradCAM, GradCAMPP
from gradcampp.model_specs import LoadedModel, ModelSpecError

METHODS: dict[str, tuple[type[GradCAM], str]] = {
    "gradcampp": (GradCAMPP, "Grad-CAM++"),
    "gradcam": (GradCAM, "Grad-CAM"),
}
MIN_DISPLAY = 192  # small inputs are enlarged to at least this many pixels in the pictures


class Progress:
    """A one-line progress bar on ``stream`` (shown only when enabled)."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None, width: int = 30):
        self.total, self.enabled, self.width = total, enabled and total > 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        filled = round(self.width * self.done / self.total)
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} images "
            f"({rate:.1f}/s)"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class RunResult:
    """What a run wrote: one record per explained image, and the skipped inputs with reasons."""

    out_dir: Path
    report: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    layer: str | None = None
    resumed: int = 0  # records of an earlier run into the same directory (--resume)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "class"


def unique_names(paths: Sequence[Path]) -> list[str]:
    """A file-name stem per path: its own stem, with ``-2``, ``-3``... where stems repeat."""
    counts: dict[str, int] = {}
    names = []
    for path in paths:
        stem = path.stem or "image"
        counts[stem] = counts.get(stem, 0) + 1
        names.append(stem if counts[stem] == 1 else f"{stem}-{counts[stem]}")
    return names


def _display(view: np.ndarray) -> np.ndarray:
    """The view enlarged (nearest neighbour) so that its shorter side is at least MIN_DISPLAY."""
    factor = max(1, -(-MIN_DISPLAY // min(view.shape[:2])))
    return np.repeat(np.repeat(view, factor, axis=0), factor, axis=1) if factor > 1 else view


def make_explainers(
    loaded: LoadedModel, methods: Sequence[str], layer: str | None, batch_size: int
) -> dict[str, GradCAM]:
    """One explainer per method; a bad layer name or an unsupported model -> ModelSpecError."""
    explainers = {}
    for method in methods:
        cls, _ = METHODS[method]
        try:
            explainers[method] = cls(loaded.model, conv_layer=layer, batch_size=batch_size)
        except ValueError as error:
            raise ModelSpecError(str(error).replace("conv_layer", "--layer", 1)) from error
        except TypeError as error:
            raise ModelSpecError(
                f"gradcampp cannot explain this model ({loaded.description}): {error}"
            ) from error
    return explainers


def _class_name(classes: Sequence[str] | None, index: int) -> str:
    return classes[index] if classes is not None and index < len(classes) else f"class {index}"


def explain_images(
    loaded: LoadedModel,
    paths: Sequence[Path],
    out_dir: Path,
    *,
    methods: Sequence[str] = ("gradcampp",),
    target: int | None = None,
    top_k: int | None = None,
    layer: str | None = None,
    batch_size: int = 16,
    show_top: int = 5,
    cmap: str = "inferno",
    alpha: float = 0.5,
    progress: bool = True,
    notes: Callable[[Path], str] | None = None,
    title: str = "Grad-CAM++ explanations",
    overlays: bool = True,
    format: str = "files",
    full_size: bool = False,
    resume: bool = False,
    report_sample: int | None = None,
) -> RunResult:
    """Explain ``paths`` with ``loaded`` in this process and write the files listed in the module
    docstring (the local engine, ``gradcampp.engines.local``).

    Args:
        loaded: the model with its preprocessing and class names.
        paths: image files; unreadable ones are skipped and listed in the result.
        out_dir: where to write (created if needed).
        methods: keys of ``METHODS``.
        target: explain this class index for every image; ``top_k``: explain the ``k`` most
            probable classes of each image; neither: the most probable class.
        layer: the explained layer's name, or None for the automatic choice.
        batch_size: images per forward pass.
        show_top: how many top classes to list per image.
        cmap, alpha: overlay colour map and heatmap weight.
        progress: show a progress bar on stderr (only for more than 3 images).
        notes: per input path, a text shown under its name in the report (e.g. ground truth).
        title: the report's title.
        overlays: write the PNG pictures and the report (False: maps and predictions only).
        format: ``"files"`` or ``"parquet"`` (see ``gradcampp.engines.parquet``).
        full_size: Parquet maps at the input's resolution instead of the layer's.
        resume: explain only what a previous run into ``out_dir`` left undone.
        report_sample: keep the report to this many images (None: all).

    Raises:
        ModelSpecError: bad layer, unsupported model, or a target outside the model's classes.
    """
    from gradcampp.engines.local import run_local
    from gradcampp.engines.work import Settings

    settings = Settings(
        methods=tuple(methods),
        target=target,
        top_k=top_k,
        layer=layer,
        batch_size=batch_size,
        show_top=show_top,
        cmap=cmap,
        alpha=alpha,
        overlays=overlays,
        format=format,
        full_size=full_size,
    )
    return run_local(
        loaded,
        paths,
        out_dir,
        settings,
        resume=resume,
        report_sample=report_sample,
        title=title,
        notes=notes,
        progress=progress,
    )
