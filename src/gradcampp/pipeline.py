"""Explaining a set of images and writing every result file (what the command line runs).

For each explained image ``NAME.ext`` (``NAME`` made unique within the run, see
``gradcampp.outputs``) the output directory receives:

- ``NAME.input.png``: the image as the model saw it (resized/cropped);
- ``NAME.<method>.png``: the overlay of each method (``gradcampp``, ``gradcam``), or with several
  targets ``NAME.<method>.<rank>-<class>.png``;
- ``NAME.<method>.npy``: the raw map at the model's input resolution, ``(H, W)``, or
  ``(T, H, W)`` for ``T`` explained classes: float16 values with a float32 scale per map by
  default, plain float32 with ``map_dtype="float32"`` (``gradcampp.maps``; read either with
  ``gradcampp.maps.load_map``);
- ``NAME.json``: the input path (relative to the output directory), the top classes with
  probabilities, the explained classes (with both methods, each with the ``disagreement`` of its
  two maps, ``gradcampp.disagreement``) and the files written;

and for the run ``predictions.csv`` (one line per image and top class) and ``index.html``.

The work is split into steps that any engine can run: ``read_views`` (read and reduce images),
``explain_views`` / ``explain_views_isolated`` (one forward and backward pass for a batch),
``write_image_results`` (one image's files, each written atomically) and ``write_run_files``
(the CSV and the report). ``explain_images`` chains them in this process.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gradcampp
from gradcampp._files import write_text
from gradcampp.disagreement import disagreement
from gradcampp.explainers import GradCAM, GradCAMPP
from gradcampp.images import ImageReadError, Preprocess, read_view, save_png
from gradcampp.maps import DEFAULT_MAP_DTYPE, save_map
from gradcampp.model_specs import LoadedModel, ModelSpecError
from gradcampp.outputs import (
    add_to_manifest,
    csv_cell,
    display_path,
    free_run_file,
    relative_path,
)
from gradcampp.report import Panel, ReportEntry, write_report
from gradcampp.targets import Classes
from gradcampp.viz import overlay

METHODS: dict[str, tuple[type[GradCAM], str]] = {
    "gradcampp": (GradCAMPP, "Grad-CAM++"),
    "gradcam": (GradCAM, "Grad-CAM"),
}
MIN_DISPLAY = 192  # small inputs are enlarged to at least this many pixels in the pictures
_PACKAGE_DIR = Path(gradcampp.__file__).resolve().parent


def progress_bar(total: int, enabled: bool, description: str = "explaining") -> Any:
    """A ``tqdm.auto`` progress bar over ``total`` images on stderr (a widget in notebooks).

    Disabled (drawing nothing) when ``enabled`` is false; without tqdm installed, a silent
    stand-in with the same ``update``/``close`` methods.
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the cli and demo extras
        return _NoBar()
    return tqdm(total=total, disable=not enabled, unit="image", desc=description, leave=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class RunResult:
    """What a run wrote: one record per explained image, and the skipped inputs with reasons.

    Attributes:
        out_dir: the output directory; report: its ``index.html`` (None before it is written).
        records: the JSON record of each explained image, in order.
        skipped: ``(input, reason)`` for each input that was not explained.
        layer: the explained layer's name (PyTorch models).
        notes: remarks on inputs that were explained (e.g. a float image's scaling).
        resumed: how many of the records an earlier run wrote (``--resume``).
    """

    out_dir: Path
    report: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    layer: str | None = None
    notes: list[str] = field(default_factory=list)
    resumed: int = 0


@dataclass
class ImageExplanation:
    """One image's prediction and maps.

    Attributes:
        probs: class probabilities ``(K,)``; order: class indices by decreasing probability.
        explained: the explained class indices ``(T,)``.
        maps: per method, float32 maps ``(T, H, W)`` at the view's resolution.
    """

    probs: np.ndarray
    order: np.ndarray
    explained: np.ndarray
    maps: dict[str, np.ndarray]


@dataclass
class ImageResults:
    """What ``write_image_results`` wrote for one image: its record, report row and CSV rows."""

    record: dict[str, Any]
    entry: ReportEntry
    csv_rows: list[list[Any]]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "class"


def _display(view: np.ndarray) -> np.ndarray:
    """The view enlarged (nearest neighbour) so that its shorter side is at least MIN_DISPLAY."""
    factor = max(1, -(-MIN_DISPLAY // min(view.shape[:2])))
    return np.repeat(np.repeat(view, factor, axis=0), factor, axis=1) if factor > 1 else view


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _layer_names(loaded: LoadedModel) -> list[str]:
    if loaded.framework == "torch":
        return [name for name, _ in loaded.model.named_modules() if name]
    return [layer.name for layer in getattr(loaded.model, "layers", [])]


def check_layer_name(loaded: LoadedModel, layer: str | None) -> None:
    """Raise ModelSpecError naming the nearest layer names when ``layer`` is not in the model."""
    if layer is None:
        return
    names = _layer_names(loaded)
    if not names or layer in names:
        return
    near = difflib.get_close_matches(layer, names, n=5, cutoff=0.6)
    if near:
        hint = "nearest names: " + ", ".join(repr(name) for name in near)
    else:
        top = [name for name in names if "." not in name][:12]
        hint = "no name is close to it; the model's top-level layers are " + ", ".join(
            repr(name) for name in top
        )
        dotted = [name for name in names if "." in name]
        if dotted:
            hint += f" (dotted names reach inner ones, e.g. {dotted[-1]!r})"
    raise ModelSpecError(f"--layer: the model has no layer named {layer!r}; {hint}")


def make_explainers(
    loaded: LoadedModel, methods: Sequence[str], layer: str | None, batch_size: int
) -> dict[str, GradCAM]:
    """One explainer per method; a bad layer name or an unsupported model -> ModelSpecError."""
    check_layer_name(loaded, layer)
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


def read_views(
    paths: Sequence[Path], preprocess: Preprocess, notes: list[str] | None = None
) -> Iterator[tuple[Path, np.ndarray | ImageReadError]]:
    """Each path with its view (``images.read_view``), or the ``ImageReadError`` it raised."""
    for path in paths:
        try:
            yield path, read_view(path, preprocess, notes=notes)
        except ImageReadError as error:
            yield path, error


def explain_views(
    loaded: LoadedModel,
    explainers: dict[str, GradCAM],
    views: Sequence[np.ndarray],
    target: int | None = None,
    top_k: int | None = None,
    upsample: bool = True,
) -> list[ImageExplanation]:
    """Predict and explain a batch of ``uint8`` views ``(H, W, 3)`` in one pass per method.

    ``upsample=False`` keeps the maps at the explained layer's resolution.

    Raises:
        ModelSpecError: when the target or ``top_k`` does not fit the model's classes, or the
            model does not return class scores.
        Exception: whatever the model or the explainer raises on these inputs.
    """
    pre = loaded.preprocess
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
        explained = np.full((len(views), 1), target, dtype=np.int64)
    else:
        explained = np.ascontiguousarray(order[:, : top_k or 1])
    maps = {}
    for method, explainer in explainers.items():
        found = np.asarray(
            explainer.explain(x, Classes(explained), upsample=upsample), dtype=np.float32
        )
        if found.ndim == 5 and found.shape[-1] == 1:  # Keras: (N, T, H, W, 1), as xplique
            found = found[..., 0]
        maps[method] = found
    return [
        ImageExplanation(probs[i], order[i], explained[i], {m: maps[m][i] for m in maps})
        for i in range(len(views))
    ]


def _raised_by_gradcampp(error: BaseException) -> bool:
    """Whether ``error`` was raised by gradcampp's own code (not by the model or a library)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    return Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE_DIR)


def explain_views_isolated(
    loaded: LoadedModel,
    explainers: dict[str, GradCAM],
    views: Sequence[np.ndarray],
    target: int | None = None,
    top_k: int | None = None,
    upsample: bool = True,
) -> list[ImageExplanation | str]:
    """``explain_views``, with an image that fails kept apart: its entry is the reason (text).

    The batch is tried whole; if it raises, each image is tried alone, so that one image the
    model fails on costs only that image.

    Raises:
        ModelSpecError: for errors of the model as a whole: a ModelSpecError, or an error of
            gradcampp itself (e.g. no layer with spatial extent) on every image of the batch.
    """
    try:
        return list(explain_views(loaded, explainers, views, target, top_k, upsample))
    except ModelSpecError:
        raise
    except Exception as error:
        if len(views) == 1:
            failures: list[ImageExplanation | str | BaseException] = [error]
        else:
            failures = []
            for view in views:
                try:
                    failures.extend(
                        explain_views(loaded, explainers, [view], target, top_k, upsample)
                    )
                except ModelSpecError:
                    raise
                except Exception as single:
                    failures.append(single)
    errors = [item for item in failures if isinstance(item, BaseException)]
    if len(errors) == len(failures) and all(_raised_by_gradcampp(e) for e in errors):
        message = str(errors[0]).replace("conv_layer", "--layer (or a larger --size)", 1)
        raise ModelSpecError(message) from errors[0]
    if len(errors) == len(failures):
        _check_input_size(loaded, views[0], errors[0])
    return [
        (
            f"the model failed on it ({_first_line(item)})"
            if not _raised_by_gradcampp(item)
            else f"cannot explain it ({_first_line(item)})"
        )
        if isinstance(item, BaseException)
        else item
        for item in failures
    ]


def _check_input_size(loaded: LoadedModel, view: np.ndarray, error: BaseException) -> None:
    """Raise ModelSpecError when the model fails on a blank input of ``view``'s size with the
    same ``error`` it gave on every image: then the size, not the images, is what it cannot take
    (e.g. ``--size 1`` on a network whose pooling layers need more pixels)."""
    try:
        loaded.predict(loaded.preprocess.input(np.zeros_like(view))[None])
    except ModelSpecError:
        raise
    except Exception as blank:
        if _first_line(blank) == _first_line(error):
            height, width = view.shape[:2]
            raise ModelSpecError(
                f"the model fails on every input of {height}x{width} pixels, whatever it shows "
                f"({_first_line(error)}); the size comes from --size or the model's "
                "preprocessing: give a size the model takes (a larger --size)"
            ) from error


def result_file_names(name: str, methods: Sequence[str], labels: Sequence[str] | None) -> dict:
    """The files of one image: ``input``, ``json``, and per method its ``map`` and ``overlays``.

    ``labels``: the explained class names when each target has its own overlay (``--top-k``);
    None for one overlay per method.
    """
    files: dict[str, Any] = {"input": f"{name}.input.png", "json": f"{name}.json"}
    for method in methods:
        files[method] = {
            "map": f"{name}.{method}.npy",
            "overlays": [f"{name}.{method}.png"]
            if labels is None
            else [
                f"{name}.{method}.{rank}-{_slug(label)}.png"
                for rank, label in enumerate(labels, start=1)
            ],
        }
    return files


def method_disagreements(maps: dict[str, np.ndarray]) -> list[float | None] | None:
    """Per explained class, ``gradcampp.disagreement.disagreement`` of the Grad-CAM++ and the
    Grad-CAM map (``maps[m]``: ``(T, H, W)``); None unless both methods ran."""
    if "gradcampp" not in maps or "gradcam" not in maps:
        return None
    return [disagreement(a, b) for a, b in zip(maps["gradcampp"], maps["gradcam"], strict=True)]


def save_npy(path: Path, array: np.ndarray, map_dtype: str = "float32") -> None:
    """Write maps ``array`` as a ``.npy`` file, atomically (``gradcampp.maps.save_map``)."""
    save_map(path, array, map_dtype)


def write_image_results(
    out_dir: Path,
    name: str,
    path: Path,
    view: np.ndarray,
    found: ImageExplanation,
    *,
    loaded: LoadedModel,
    layer: str | None,
    several: bool,
    show_top: int = 5,
    cmap: str = "inferno",
    alpha: float = 0.5,
    note: str = "",
    overlays: bool = True,
    per_image_files: bool = True,
    map_dtype: str = DEFAULT_MAP_DTYPE,
) -> ImageResults:
    """Write one image's files (module docstring), each atomically; return what was written.

    Args:
        out_dir: the output directory; name: the image's result name; path: the input file.
        view: the ``uint8`` view the model saw; found: its explanation.
        loaded: the model (class names, description); layer: the explained layer's name.
        several: whether each explained class gets its own overlay (``--top-k``).
        show_top: top classes listed; cmap, alpha: overlays; note: text under the name.
        overlays: write the pictures (``NAME.input.png`` and the overlays); per_image_files:
            write ``NAME.<method>.npy`` and ``NAME.json`` (False: the caller stores the maps and
            the record elsewhere, e.g. in Parquet).
        map_dtype: how ``NAME.<method>.npy`` stores the maps (``gradcampp.maps``).

    Raises:
        OSError: when a file cannot be written; the files of this image written so far are
            removed again.
    """
    methods = list(found.maps)
    labels = [_class_name(loaded.classes, int(c)) for c in found.explained]
    files = result_file_names(name, methods, labels if several else None)
    every = (
        [files["input"], *(o for m in methods for o in files[m]["overlays"])] if overlays else []
    )
    if per_image_files:
        every += [files["json"], *(files[m]["map"] for m in methods)]
    add_to_manifest(out_dir, every)
    written: list[Path] = []

    def claim(file: str) -> Path:
        written.append(out_dir / file)
        return out_dir / file

    ranked = [
        (rank, int(c), _class_name(loaded.classes, int(c)), float(found.probs[c]))
        for rank, c in enumerate(found.order[:show_top], start=1)
    ]
    top = [
        {"rank": rank, "class_index": c, "class_name": label, "probability": prob}
        for rank, c, label, prob in ranked
    ]
    input_text = relative_path(path, out_dir)
    try:
        display = _display(view)
        if overlays:
            save_png(claim(files["input"]), display)
        panels = []
        for method in methods:
            per_image = found.maps[method]  # (T, H, W)
            if per_image_files:
                save_npy(
                    claim(files[method]["map"]), per_image if several else per_image[0], map_dtype
                )
            if not overlays:
                continue
            for t, (png, c) in enumerate(
                zip(files[method]["overlays"], found.explained, strict=True)
            ):
                save_png(claim(png), overlay(display, per_image[t], cmap=cmap, alpha=alpha))
                rank = f"#{t + 1} " if several else ""
                panels.append(Panel(png, f"{rank}{labels[t]} ({100 * found.probs[c]:.1f}%)"))
        explained: list[dict[str, Any]] = [
            {"class_index": int(c), "class_name": label, "probability": float(found.probs[c])}
            for c, label in zip(found.explained, labels, strict=True)
        ]
        compared = method_disagreements(found.maps)
        for item, value in zip(explained, compared or [], strict=False):
            item["disagreement"] = value  # 1 - Pearson r of the two maps; null: a constant map
        record = {
            "input": input_text,
            "name": name,
            "model": loaded.description,
            "layer": layer,
            "size": list(view.shape[:2]),
            "top_classes": top,
            "explained": explained,
            "files": {
                "input": files["input"] if overlays else None,
                "overlays": {
                    m: (files[m]["overlays"] if several else files[m]["overlays"][0])
                    if overlays
                    else None
                    for m in methods
                },
                "maps": {m: files[m]["map"] for m in methods} if per_image_files else {},
            },
        }
        if per_image_files:
            write_text(claim(files["json"]), json.dumps(record, indent=2, ensure_ascii=False))
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    csv_rows: list[list[Any]] = [
        [csv_cell(name), csv_cell(input_text), rank, c, csv_cell(label), f"{prob:.6f}"]
        for rank, c, label, prob in ranked
    ]
    entry = ReportEntry(
        name=display_path(path.name),
        image=files["input"],
        panels=panels,
        predictions=[(label, prob) for _, _, label, prob in ranked],
        note=note,
        disagreement=compared or (),
        files=[
            *((f"{METHODS[m][1]} map (.npy)", files[m]["map"]) for m in methods),
            ("predictions (.json)", files["json"]),
        ]
        if per_image_files
        else [],
    )
    return ImageResults(record, entry, csv_rows)


def write_run_files(
    out_dir: Path,
    inputs: Sequence[Path],
    results: Sequence[ImageResults],
    *,
    methods: Sequence[str],
    several: bool,
    result: RunResult,
    model_description: str,
    title: str,
    cmap: str,
) -> Path:
    """Write ``predictions.csv`` and the report of a run; returns the report's path.

    A run file whose name an input in ``out_dir`` already has gets another name
    (``outputs.free_run_file``), so that no input is overwritten.
    """
    csv_name = free_run_file(out_dir, "predictions.csv", inputs)
    index_name = free_run_file(out_dir, "index.html", inputs)
    colorbar_name = free_run_file(out_dir, "colorbar.png", inputs)
    add_to_manifest(out_dir, [csv_name, index_name, colorbar_name])
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\r\n")
    writer.writerow(["image", "input", "rank", "class_index", "class_name", "probability"])
    for item in results:
        writer.writerows(item.csv_rows)
    write_text(out_dir / csv_name, table.getvalue())
    details = [f"Model: {model_description}"]
    if result.layer is not None:
        details.append(f"Explained layer: {result.layer}")
    details.append(
        f"{len(result.records)} image(s) explained"
        + (f", {len(result.skipped)} skipped" if result.skipped else "")
    )
    return write_report(
        out_dir,
        [item.entry for item in results],
        columns=[METHODS[m][1] for m in methods],
        title=title,
        details=details,
        skipped=result.skipped,
        cmap=cmap,
        index_name=index_name,
        colorbar_name=colorbar_name,
    )


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
    map_dtype: str = DEFAULT_MAP_DTYPE,
) -> RunResult:
    """Explain ``paths`` with ``loaded`` in this process and write the files listed in the module
    docstring (the local engine, ``gradcampp.engines.local``, which chains the steps above).

    Memory is bounded by the batch: each image is reduced to the model's view as it is read.

    Args:
        loaded: the model with its preprocessing and class names.
        paths: image files; unreadable ones, and ones the model fails on, are skipped and
            listed in the result.
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
        overlays: write the pictures and the report (False: maps and predictions only).
        format: ``"files"`` or ``"parquet"`` (see ``gradcampp.engines.parquet``).
        full_size: Parquet maps at the input's resolution instead of the layer's.
        resume: explain only what a previous run into ``out_dir`` left undone.
        report_sample: keep the report to this many images (None: all).
        map_dtype: how maps are stored: ``"float16"`` (with a float32 scale per map, half the
            bytes) or ``"float32"`` (see ``gradcampp.maps``).

    Raises:
        ModelSpecError: bad layer, unsupported model, or a target outside the model's classes.
        ValueError: ``resume`` into a run with other settings.
        OSError: when the run files cannot be written.
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
        map_dtype=map_dtype,
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
