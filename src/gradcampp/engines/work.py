"""The per-image work of an explain run, the same in every engine.

An engine (``gradcampp.engines.local`` in this process, ``gradcampp.engines.ray_engine`` on a
Ray cluster) hands groups of decoded images to an :class:`ImageWork`, which preprocesses them,
predicts, explains and writes each image's files; the engine then finishes the run from the
returned records (``gradcampp.engines.outputs``). Whatever engine runs it, an image gives the
same bytes.

Every file is written under a temporary hidden name in its final directory and then renamed
(``os.replace``), so a file that exists is complete. An image's ``NAME.json`` is written last:
its presence means every other file of the image is there (``--resume`` relies on it). With
``--format parquet`` the rows of one group go into one part file, renamed into place after the
group's pictures.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradcampp._xp import to_numpy
from gradcampp.images import save_png
from gradcampp.model_specs import LoadedModel, ModelSpecError
from gradcampp.pipeline import METHODS, _class_name, _display, _slug, make_explainers
from gradcampp.resize import resize
from gradcampp.targets import Classes
from gradcampp.viz import overlay

FORMATS = ("files", "parquet")
SHOW_TOP = 5


@dataclass(frozen=True)
class Settings:
    """What decides an image's outputs (sent to every worker, so it stays small and picklable).

    Attributes:
        methods: keys of ``gradcampp.pipeline.METHODS``, in column order.
        target: explain this class index for every image; ``top_k``: the ``k`` most probable
            classes of each image; neither: the most probable class.
        layer: the explained layer's name, or None for the automatic choice.
        batch_size: images per forward pass.
        show_top: how many top classes each record lists.
        cmap, alpha: overlay colour map and heatmap weight.
        overlays: write the PNG pictures (the input as the model saw it and one overlay per map).
        format: ``"files"`` (a ``.npy`` and a ``.json`` per image) or ``"parquet"`` (rows of a
            Parquet dataset, see ``gradcampp.engines.parquet``).
        full_size: Parquet maps at the input's resolution instead of the layer's.
    """

    methods: tuple[str, ...] = ("gradcampp",)
    target: int | None = None
    top_k: int | None = None
    layer: str | None = None
    batch_size: int = 16
    show_top: int = SHOW_TOP
    cmap: str = "inferno"
    alpha: float = 0.5
    overlays: bool = True
    format: str = "files"
    full_size: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {sorted(METHODS)}, got {list(self.methods)}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.target is not None and self.top_k is not None:
            raise ValueError("give target or top_k, not both")

    @property
    def needs_full_maps(self) -> bool:
        """Whether maps are needed at the input's resolution (files, overlays or full_size)."""
        return self.format == "files" or self.overlays or self.full_size


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary)`` on a hidden temporary name beside ``path``, then rename it to
    ``path``; on any error the temporary file is removed and ``path`` is left as it was."""
    temporary = _temporary(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file (see ``write_atomic``)."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` ``array`` to ``path`` through a temporary file (see ``write_atomic``)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.save(file, array)

    write_atomic(path, write)


def save_png_atomic(path: Path, rgb: np.ndarray) -> None:
    """``save_png`` through a temporary file (see ``write_atomic``)."""
    write_atomic(path, lambda tmp: save_png(tmp, rgb))


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of ``write_atomic`` (left behind by a killed run)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


@dataclass
class BatchMaps:
    """The predictions and maps of one group of ``N`` images.

    Attributes:
        probs: class probabilities ``(N, K)`` float64.
        order: class indices by decreasing probability ``(N, K)``.
        explained: the explained class indices ``(N, T)``.
        low: per method, float32 maps ``(N, T, h, w)`` at the explained layer's resolution.
        full: per method, float32 maps ``(N, T, H, W)`` at the input's resolution: the bicubic
            resize of ``low``, clipped at zero (what ``explain(..., upsample=True)`` returns), or
            None when ``Settings.needs_full_maps`` is false.
    """

    probs: np.ndarray
    order: np.ndarray
    explained: np.ndarray
    low: dict[str, np.ndarray]
    full: dict[str, np.ndarray] | None


def upsample(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Maps ``(..., h, w)`` at the layer's resolution -> ``(..., H, W)``: bicubic resize
    (``gradcampp.resize``) clipped at zero, float32, as ``explain(..., upsample=True)`` does.

    The products run in PyTorch when it is loaded (NumPy's stacked ``matmul`` is many times
    slower), else in NumPy; the two agree to float32 rounding.
    """
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.clamp_min(resize(torch.from_numpy(maps), tuple(size)), 0.0).numpy()
    return np.maximum(resize(maps, tuple(size)), np.float32(0.0))


class ImageWork:
    """A loaded model with its explainers, turning groups of decoded images into files.

    Args:
        loaded: the model with its preprocessing and class names.
        settings: what to compute and write.

    Raises:
        ModelSpecError: for a bad layer name or a model gradcampp cannot explain.
    """

    def __init__(self, loaded: LoadedModel, settings: Settings):
        self.loaded, self.settings = loaded, settings
        self.explainers = make_explainers(
            loaded, settings.methods, settings.layer, settings.batch_size
        )
        self.layer: str | None = None

    def explain(self, views: Sequence[np.ndarray]) -> BatchMaps:
        """Predict and explain ``views``: ``uint8`` ``(H, W, 3)`` images of the model's size.

        Raises:
            ModelSpecError: when the target or top-k does not fit the model's classes.
        """
        s, pre = self.settings, self.loaded.preprocess
        x = np.stack([pre.input(view) for view in views])
        probs = self.loaded.predict(x)
        n_classes = probs.shape[1]
        if s.target is not None and s.target >= n_classes:
            raise ModelSpecError(
                f"--target {s.target} is out of range: the model has {n_classes} classes"
            )
        if s.top_k is not None and s.top_k > n_classes:
            raise ModelSpecError(f"--top-k {s.top_k} exceeds the model's {n_classes} classes")
        order = np.argsort(-probs, axis=1, kind="stable")
        if s.target is not None:
            explained = np.full((len(views), 1), s.target, dtype=np.int64)
        else:
            explained = np.ascontiguousarray(order[:, : s.top_k or 1])
        low = {}
        for method, explainer in self.explainers.items():
            found = to_numpy(explainer.explain(x, Classes(explained), upsample=False))
            if found.ndim == 5 and found.shape[-1] == 1:  # Keras: (N, T, h, w, 1), as xplique
                found = found[..., 0]
            low[method] = np.asarray(found, dtype=np.float32)
            if self.layer is None and self.loaded.framework == "torch":
                import torch

                self.layer = explainer.backend.layer_name(torch.from_numpy(x[:1]))
        full = None
        if s.needs_full_maps:
            full = {method: upsample(maps, pre.size) for method, maps in low.items()}
        return BatchMaps(probs, order, explained, low, full)

    def run(
        self,
        images: Sequence[tuple[Path, str, np.ndarray]],
        out_dir: Path,
        part: Path | None = None,
    ) -> list[dict[str, Any]]:
        """Explain ``images`` (``(path, name, uint8 image)``) and write their files.

        Args:
            images: the decoded inputs with their unique output names.
            out_dir: the run's output directory.
            part: the Parquet part file of this group (``format="parquet"`` only).

        Returns:
            one record per image, in order (the content of ``NAME.json``).
        """
        if not images:
            return []
        pre = self.loaded.preprocess
        views = [pre.view(image) for _, _, image in images]
        maps = self.explain(views)
        records, rows = [], []
        for i, ((path, name, _), view) in enumerate(zip(images, views, strict=True)):
            record = self._write_image(out_dir, name, path, view, maps, i)
            records.append(record)
            if self.settings.format == "parquet":
                rows.append((record, self._row_maps(maps, i)))
        if self.settings.format == "parquet":
            from gradcampp.engines.parquet import write_part

            if part is None:
                raise ValueError("format='parquet' needs the part file of the group")
            write_part(part, rows, self.settings)
        return records

    def _row_maps(self, maps: BatchMaps, i: int) -> dict[str, np.ndarray]:
        source = maps.full if self.settings.full_size else maps.low
        assert source is not None
        return {method: source[method][i] for method in self.settings.methods}

    def _write_image(
        self, out_dir: Path, name: str, path: Path, view: np.ndarray, maps: BatchMaps, i: int
    ) -> dict[str, Any]:
        s, loaded = self.settings, self.loaded
        classes = loaded.classes
        top = [
            {
                "rank": rank + 1,
                "class_index": int(c),
                "class_name": _class_name(classes, int(c)),
                "probability": float(maps.probs[i, c]),
            }
            for rank, c in enumerate(maps.order[i, : s.show_top])
        ]
        explained = [
            {
                "class_index": int(c),
                "class_name": _class_name(classes, int(c)),
                "probability": float(maps.probs[i, c]),
            }
            for c in maps.explained[i]
        ]
        files = output_files(name, s, [e["class_name"] for e in explained])
        if s.overlays:
            display = _display(view)
            save_png_atomic(out_dir / files["input"], display)
            assert maps.full is not None
            for method in s.methods:
                names = files["overlays"][method]
                for t, png in enumerate(names if s.top_k else [names]):
                    picture = overlay(display, maps.full[method][i, t], cmap=s.cmap, alpha=s.alpha)
                    save_png_atomic(out_dir / png, picture)
        if s.format == "files":
            assert maps.full is not None
            for method in s.methods:
                per_image = maps.full[method][i]  # (T, H, W)
                save_npy_atomic(
                    out_dir / files["maps"][method], per_image if s.top_k else per_image[0]
                )
        record = {
            "input": str(path),
            "name": name,
            "model": loaded.description,
            "layer": self.layer,
            "size": list(view.shape[:2]),
            "top_classes": top,
            "explained": explained,
            "files": files,
        }
        if s.format == "files":
            write_text_atomic(out_dir / f"{name}.json", json.dumps(record, indent=2))
        return record


def output_files(name: str, settings: Settings, labels: Sequence[str]) -> dict[str, Any]:
    """The files an image named ``name`` gets, relative to the output directory.

    Args:
        name: the image's unique stem.
        settings: the run's settings.
        labels: the names of the explained classes, in order.

    Returns:
        ``{"input": png or None, "overlays": {method: png or [png per class] or None},
        "maps": {method: npy}}`` (``maps`` empty for Parquet output).
    """
    s = settings
    files: dict[str, Any] = {
        "input": f"{name}.input.png" if s.overlays else None,
        "overlays": {},
        "maps": {},
    }
    for method in s.methods:
        if s.overlays:
            pngs = [
                f"{name}.{method}" + (f".{t + 1}-{_slug(label)}" if s.top_k else "") + ".png"
                for t, label in enumerate(labels)
            ]
            files["overlays"][method] = pngs if s.top_k else pngs[0]
        else:
            files["overlays"][method] = None
        if s.format == "files":
            files["maps"][method] = f"{name}.{method}.npy"
    return files
