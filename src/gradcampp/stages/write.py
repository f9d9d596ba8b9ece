"""The write stage: an image's explanation -> its files (or its Parquet row), atomically.

For each explained image ``NAME.ext`` (``NAME`` made unique within the run, see
``gradcampp.outputs``) the output directory receives:

- ``NAME.input.jpg``: the image as the model saw it (resized/cropped);
- ``NAME.<method>.jpg``: the overlay of each method (``gradcampp``, ``gradcam``), or with several
  targets ``NAME.<method>.<rank>-<class>.jpg``;
- (the pictures are ``.png`` files instead with ``pictures="png"``: lossless, about three times
  the bytes; ``gradcampp.images.PICTURE_FORMATS``)
- ``NAME.<method>.npy``: the raw map at the model's input resolution, ``(H, W)``, or
  ``(T, H, W)`` for ``T`` explained classes: float16 values with a float32 scale per map by
  default, plain float32 with ``map_dtype="float32"`` (``gradcampp.maps``; read either with
  ``gradcampp.maps.load_map``);
- ``NAME.json``: the input path (relative to the output directory), the top classes with
  probabilities, the explained classes (with both methods, each with the ``disagreement`` of its
  two maps, ``gradcampp.disagreement``) and the files written.

With ``--format parquet`` the maps and the record of a group's images go into one part file of
the dataset instead (``gradcampp.parquet``), beside the pictures.

Every file is written atomically (``gradcampp._files``: a temporary name, then a rename), so a
file that exists is complete, and an image's ``NAME.json`` is written last: its presence means
every other file of the image is there (``--resume`` relies on it); a Parquet part file is
renamed into place after its group's pictures. Whatever engine runs it, an image gives the same
bytes. The run's own files (``predictions.csv``, the report) are written once the images are
done, by ``gradcampp.engines.run.finish_run``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._files import write_text
from gradcampp.disagreement import disagreement
from gradcampp.images import DEFAULT_PICTURES, save_picture
from gradcampp.maps import DEFAULT_MAP_DTYPE, save_map
from gradcampp.model_specs import LoadedModel
from gradcampp.outputs import (
    add_to_manifest,
    class_name,
    display_path,
    relative_path,
    result_file_names,
)
from gradcampp.resize import resize
from gradcampp.stages.explain import ImageExplanation, first_line
from gradcampp.stages.settings import Settings
from gradcampp.viz import overlay

MIN_DISPLAY = 192  # small inputs are enlarged to at least this many pixels in the pictures


def _display(view: np.ndarray) -> np.ndarray:
    """The view enlarged (nearest neighbour) so that its shorter side is at least MIN_DISPLAY."""
    factor = max(1, -(-MIN_DISPLAY // min(view.shape[:2])))
    return np.repeat(np.repeat(view, factor, axis=0), factor, axis=1) if factor > 1 else view


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
    overlays: bool = True,
    pictures: str = DEFAULT_PICTURES,
    per_image_files: bool = True,
    map_dtype: str = DEFAULT_MAP_DTYPE,
) -> dict[str, Any]:
    """Write one image's files (module docstring), each atomically; return its record.

    Args:
        out_dir: the output directory; name: the image's result name; path: the input file.
        view: the ``uint8`` view the model saw; found: its explanation.
        loaded: the model (class names, description); layer: the explained layer's name.
        several: whether each explained class gets its own overlay (``--top-k``).
        show_top: top classes listed; cmap, alpha: overlays.
        overlays: write the pictures (``NAME.input.jpg`` and the overlays); pictures: their
            format (``gradcampp.images.PICTURE_FORMATS``); per_image_files:
            write ``NAME.<method>.npy`` and ``NAME.json`` (False: the caller stores the maps and
            the record elsewhere, e.g. in Parquet).
        map_dtype: how ``NAME.<method>.npy`` stores the maps (``gradcampp.maps``).

    Raises:
        OSError: when a file cannot be written; the files of this image written so far are
            removed again.
    """
    methods = list(found.maps)
    labels = [class_name(loaded.classes, int(c)) for c in found.explained]
    files = result_file_names(name, methods, labels if several else None, pictures=pictures)
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
        (rank, int(c), class_name(loaded.classes, int(c)), float(found.probs[c]))
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
            save_picture(claim(files["input"]), display, pictures)
        for method in methods:
            per_image = found.maps[method]  # (T, H, W)
            if per_image_files:
                save_npy(
                    claim(files[method]["map"]), per_image if several else per_image[0], map_dtype
                )
            if not overlays:
                continue
            for t, picture in enumerate(files[method]["overlays"]):
                shown = overlay(display, per_image[t], cmap=cmap, alpha=alpha)
                save_picture(claim(picture), shown, pictures)
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
    return record


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of ``gradcampp._files`` (left by a killed run)."""
    return path.name.startswith(".tmp-") and path.name.endswith(".part")


def upsample(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Maps ``(..., h, w)`` at the layer's resolution -> ``(..., H, W)``: bicubic resize
    (``gradcampp.resize``) clipped at zero, float32, as ``explain(..., upsample=True)`` does.

    The products run in PyTorch when it is loaded, else in NumPy; the two agree to float32
    rounding.
    """
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.clamp_min(resize(torch.from_numpy(maps), tuple(size)), 0.0).numpy()
    return np.maximum(resize(maps, tuple(size)), np.float32(0.0))


@dataclass
class GroupResult:
    """What ``write_group`` wrote: a record per explained image, the skipped inputs
    ``(input, reason)``, in order."""

    records: list[dict[str, Any]]
    skipped: list[tuple[str, str]]


def write_group(
    views: Sequence[tuple[Path, str, np.ndarray]],
    found: Sequence[ImageExplanation | str],
    out_dir: Path,
    settings: Settings,
    *,
    loaded: LoadedModel,
    layer: str | None,
    part: Path | None = None,
) -> GroupResult:
    """Write the files of a group of images, each image's atomically.

    Args:
        views: ``(input path, unique name, uint8 view (H, W, 3))`` of each image.
        found: the explain stage's result for each view: its explanation, or the reason (text)
            it could not be explained (then the image is skipped).
        out_dir: the run's output directory.
        settings: the run's settings.
        loaded: the model (class names and description go into the records).
        layer: the explained layer's name.
        part: the Parquet part file of this group (``format="parquet"`` only).

    Returns:
        the records of the images written and the images skipped with the reason; an image
        whose files cannot be written is skipped (its files written so far are removed).

    Raises:
        ValueError: ``format="parquet"`` without ``part``.
        OSError: when the Parquet part file cannot be written.
    """
    result = GroupResult([], [])
    s = settings
    rows = []
    for (path, name, view), item in zip(views, found, strict=True):
        if isinstance(item, str):
            result.skipped.append((display_path(path), item))
            continue
        shown = item
        if s.layer_resolution and s.overlays:
            size = view.shape[:2]
            shown = ImageExplanation(
                item.probs,
                item.order,
                item.explained,
                {m: upsample(maps, size) for m, maps in item.maps.items()},
            )
        try:
            done = write_image_results(
                out_dir,
                name,
                path,
                view,
                shown,
                loaded=loaded,
                layer=layer,
                several=s.top_k is not None,
                show_top=s.show_top,
                cmap=s.cmap,
                alpha=s.alpha,
                overlays=s.overlays,
                pictures=s.pictures,
                per_image_files=s.format == "files",
                map_dtype=s.map_dtype,
            )
        except OSError as error:
            reason = f"cannot write its results ({error.strerror or error})"
            result.skipped.append((display_path(path), reason))
            continue
        except Exception as error:  # any other failure costs this image only
            reason = f"cannot write its results ({first_line(error)})"
            result.skipped.append((display_path(path), reason))
            continue
        result.records.append(done)
        rows.append((done, item.maps))
    if s.format == "parquet" and rows:
        from gradcampp.parquet import write_part

        if part is None:
            raise ValueError("format='parquet' needs the part file of the group")
        write_part(part, rows, s)
    return result
