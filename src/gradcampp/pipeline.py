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

import csv
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from gradcampp.explainers import GradCAM, GradCAMPP
from gradcampp.images import ImageReadError, read_batches, save_png
from gradcampp.model_specs import LoadedModel, ModelSpecError
from gradcampp.report import Panel, ReportEntry, write_report
from gradcampp.targets import Classes
from gradcampp.viz import overlay

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
) -> RunResult:
    """Explain ``paths`` with ``loaded`` and write the files listed in the module docstring.

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

    Raises:
        ModelSpecError: bad layer, unsupported model, or a target outside the model's classes.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    explainers = make_explainers(loaded, methods, layer, batch_size)
    result = RunResult(out_dir, None)
    names = dict(zip(paths, unique_names(paths), strict=True))
    entries: list[ReportEntry] = []
    csv_rows: list[list[Any]] = []
    bar = Progress(len(paths), progress and len(paths) > 3)
    for group in read_batches(paths, batch_size):
        good = []
        for path, image in group:
            if isinstance(image, ImageReadError):
                result.skipped.append((str(path), image.reason))
            else:
                good.append((path, image))
        if good:
            _explain_group(
                loaded,
                explainers,
                good,
                names,
                out_dir,
                target,
                top_k,
                show_top,
                cmap,
                alpha,
                notes,
                result,
                entries,
                csv_rows,
            )
        bar.update(len(group))
    bar.close()
    with open(out_dir / "predictions.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "input", "rank", "class_index", "class_name", "probability"])
        writer.writerows(csv_rows)
    columns = _columns(methods, top_k)
    details = [f"Model: {loaded.description}"]
    if result.layer is not None:
        details.append(f"Explained layer: {result.layer}")
    details.append(
        f"{len(result.records)} image(s) explained"
        + (f", {len(result.skipped)} skipped" if result.skipped else "")
    )
    result.report = write_report(
        out_dir,
        entries,
        columns=columns,
        title=title,
        details=details,
        skipped=result.skipped,
        cmap=cmap,
    )
    return result


def _columns(methods: Sequence[str], top_k: int | None) -> list[str]:
    ranks = range(1, (top_k or 1) + 1)
    return [
        METHODS[m][1] + (f" (class #{rank})" if top_k else "") for m in methods for rank in ranks
    ]


def _explain_group(
    loaded: LoadedModel,
    explainers: dict[str, GradCAM],
    good: list[tuple[Path, np.ndarray]],
    names: dict[Path, str],
    out_dir: Path,
    target: int | None,
    top_k: int | None,
    show_top: int,
    cmap: str,
    alpha: float,
    notes: Callable[[Path], str] | None,
    result: RunResult,
    entries: list[ReportEntry],
    csv_rows: list[list[Any]],
) -> None:
    pre = loaded.preprocess
    views = [pre.view(image) for _, image in good]
    x = np.stack([pre.input(view) for view in views])
    probs = loaded.predict(x)
    n_classes = probs.shape[1]
    if target is not None and target >= n_classes:
        raise ModelSpecError(
            f"--target {target} is out of range: the model has {n_classes} classes"
        )
    if top_k is not None and top_k > n_classes:
        raise ModelSpecError(f"--top-k {top_k} exceeds the model's {n_classes} classes")
    order = np.argsort(-probs, axis=1, kind="stable")
    if target is not None:
        explained = np.full((len(good), 1), target, dtype=np.int64)
    else:
        explained = np.ascontiguousarray(order[:, : top_k or 1])
    maps = {}
    for method, explainer in explainers.items():
        found = np.asarray(explainer.explain(x, Classes(explained)), dtype=np.float32)
        if found.ndim == 5 and found.shape[-1] == 1:  # Keras: (N, T, H, W, 1), as xplique
            found = found[..., 0]
        maps[method] = found
        if result.layer is None:
            if loaded.framework == "torch":
                import torch

                result.layer = explainer.backend.layer_name(torch.from_numpy(x[:1]))
    for i, ((path, _), view) in enumerate(zip(good, views, strict=True)):
        name = names[path]
        display = _display(view)
        input_file = f"{name}.input.png"
        save_png(out_dir / input_file, display)
        top: list[dict[str, Any]] = [
            {
                "rank": rank + 1,
                "class_index": int(c),
                "class_name": _class_name(loaded.classes, int(c)),
                "probability": float(probs[i, c]),
            }
            for rank, c in enumerate(order[i, :show_top])
        ]
        for row in top:
            csv_rows.append(
                [
                    name,
                    str(path),
                    row["rank"],
                    row["class_index"],
                    row["class_name"],
                    f"{row['probability']:.6f}",
                ]
            )
        files: dict[str, Any] = {"input": input_file, "overlays": {}, "maps": {}}
        panels = []
        for method in explainers:
            per_image = maps[method][i]  # (T, H, W)
            map_file = f"{name}.{method}.npy"
            np.save(out_dir / map_file, per_image if top_k else per_image[0])
            files["maps"][method] = map_file
            overlays = []
            for t, c in enumerate(explained[i]):
                label = _class_name(loaded.classes, int(c))
                suffix = f".{t + 1}-{_slug(label)}" if top_k else ""
                png = f"{name}.{method}{suffix}.png"
                save_png(out_dir / png, overlay(display, per_image[t], cmap=cmap, alpha=alpha))
                overlays.append(png)
                panels.append(Panel(png, f"{label} ({100 * probs[i, c]:.1f}%)"))
            files["overlays"][method] = overlays if top_k else overlays[0]
        record = {
            "input": str(path),
            "name": name,
            "model": loaded.description,
            "layer": result.layer,
            "size": list(view.shape[:2]),
            "top_classes": top,
            "explained": [
                {"class_index": int(c), "class_name": _class_name(loaded.classes, int(c))}
                for c in explained[i]
            ],
            "files": files,
        }
        (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        result.records.append(record)
        entries.append(
            ReportEntry(
                name=path.name,
                image=input_file,
                panels=panels,
                predictions=[(row["class_name"], row["probability"]) for row in top],
                note=notes(path) if notes is not None else "",
                files=[
                    *((f"{METHODS[m][1]} map (.npy)", files["maps"][m]) for m in explainers),
                    ("predictions (.json)", f"{name}.json"),
                ],
            )
        )
